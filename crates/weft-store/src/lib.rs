//! Durable state: workflow versions, runs, steps, attempts, leases and the
//! append-only history, on SQLite (embedded default) or PostgreSQL.
//!
//! Invariants:
//! - Every state change and its history event are written in one transaction.
//! - Transitions of a run are serialised by locking the run row (`FOR UPDATE`
//!   on Postgres; SQLite has a single writer), then applying one event of the
//!   pure state machine in `weft_core::machine` and persisting its effects.
//! - Claims take ready steps with `FOR UPDATE SKIP LOCKED`, so any number of
//!   servers can share one database and no attempt is handed out twice.
//! - A lease is the only right to report an attempt's result: a result for a
//!   lease that is gone (expired, reaped, re-claimed) is rejected as stale.

mod attempts;
mod audit;
mod children;
mod claim;
mod claim_hint;
mod conditions;
pub mod db;
mod diagnosis;
mod error;
mod follow;
mod gauges;
mod history;
mod latency;
mod leases;
mod log_pages;
mod metadata;
mod migrate;
mod overview;
mod results;
mod run_counts;
mod run_views;
mod runs;
mod sql;
mod starts;
mod sweeps;
mod time;
mod timing;
mod tokens;
mod transition;
mod waiters;
mod workers;
mod workflows;

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::Duration,
};

use tokio::sync::Notify;
use weft_core::{Definition, observe::Observer};

pub use audit::{Actor, AuditAction, AuditFilter, AuditPage, AuditRecord};
pub use claim::{ClaimRequest, ClaimedTask};
pub use db::{Dialect, PoolOptions};
pub use diagnosis::{CauseCount, P99_TTL, Page, Summary};
pub use error::{Corruption, Error, Problem};
pub use follow::RunFollow;
pub use history::{HistoryFrom, HistoryPage, MAX_HISTORY_PAGE};
pub use leases::Heartbeat;
pub use log_pages::{LogPage, LogTail, MAX_COUNTED_LINES, MAX_LOG_PAGE};
pub use overview::{
    OVERVIEW_MAX_RUNS, OVERVIEW_TTL, Overview, OverviewRun, WorkflowOverview, quantile, summarize,
};
pub use results::{FailReport, Outcome, Recorded, ReportedTiming, WorkerResult};
pub use run_counts::{COUNTS_TTL, CountFilter, StatusCount};
pub use run_views::{AttemptView, HistoryEvent, LogLine, RunInfo, RunPage, RunView, StepView};
pub use runs::{NewRun, RunFilter};
pub use starts::{MAX_STARTS_PER_BATCH, StartedRun};
pub use time::{ManualClock, SystemClock, now_ms, parse_rfc3339, rfc3339};
pub use timing::StoredTiming;
pub use tokens::{NewToken, Pepper, StoredToken, TOKEN_PREFIX, TokenRecord};
pub use weft_core::attempt::MAX_ERROR_BYTES;
pub use workers::{QueueCounts, THROUGHPUT_WINDOW_MS, WorkerMeta, WorkerRecord};
pub use workflows::{Registered, WorkflowInfo, WorkflowVersion};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Engine-wide settings the store needs to hand out leases and judge results.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long a claimed attempt's lease lasts without a heartbeat, for steps
    /// that declare no `heartbeat_timeout` of their own.
    pub lease: Duration,
    /// Largest step output accepted, in bytes of its serialised JSON. Handed
    /// to workers on every task (`Task.max_output_bytes`); a `complete` whose
    /// output is larger is recorded as a permanent failure with reason
    /// `invalid_output`. Keep it below the server's body limit:
    /// [`max_output_bytes_for`] derives it.
    pub max_output_bytes: u64,
    /// The redaction rule: log lines that quote an error mask the run
    /// input's secret values with it.
    pub redactor: weft_core::redact::Redactor,
    /// The clock every row's time is read from ([`SystemClock`] by default).
    /// On PostgreSQL the store corrects it to the database's clock
    /// ([`Store::sync_clock`]), so servers whose own clocks disagree still
    /// agree on lease and timer deadlines.
    pub clock: Arc<dyn weft_core::clock::Clock>,
    /// How often a follower of a run's history ([`Store::follow_run`], the
    /// SSE stream) reads it again without a wake-up, for events written by
    /// other servers; this server's own commits wake it at once. 500 ms by
    /// default.
    pub follow_recheck: Duration,
}

/// Bytes of a result request that are not the output itself (lease id,
/// timing, JSON framing), kept free under the body limit.
pub const OUTPUT_ENVELOPE_BYTES: u64 = 64 * 1024;

/// The largest output that still fits in a request of `max_body_bytes`:
/// the body limit minus [`OUTPUT_ENVELOPE_BYTES`] (at least 1 KiB).
pub fn max_output_bytes_for(max_body_bytes: u64) -> u64 {
    max_body_bytes
        .saturating_sub(OUTPUT_ENVELOPE_BYTES)
        .max(1024)
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(30),
            // The server's default body limit is 4 MiB.
            max_output_bytes: max_output_bytes_for(4 * 1024 * 1024),
            redactor: weft_core::redact::Redactor::default(),
            clock: Arc::new(SystemClock),
            follow_recheck: Duration::from_millis(500),
        }
    }
}

/// The store: a cheap-to-clone handle over a connection pool.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    pool: db::Pool,
    /// On PostgreSQL, a few connections of their own for lease renewals, so
    /// that a heartbeat never queues for a connection behind transactions
    /// waiting on a busy run's lock (its lease would lapse meanwhile). On
    /// SQLite, whose one writer serializes everything anyway, `None`.
    lease_pool: Option<db::Pool>,
    settings: Settings,
    definitions: RwLock<HashMap<(String, i64), Arc<Definition>>>,
    observer: std::sync::OnceLock<Arc<dyn Observer>>,
    /// Woken whenever steps may have become ready: by this process's own
    /// commits, and on Postgres by `NOTIFY weft_ready` from any server.
    ready: Notify,
    /// The group-commit queue of `start_run`, started on first use.
    starts: std::sync::OnceLock<starts::StartQueue>,
    /// Callers waiting for runs to end.
    run_waiters: waiters::RunWaiters,
    /// Whether claims look for undos and `for_each` children.
    saga_hint: claim_hint::SagaHint,
    /// Followers of runs' histories (the SSE stream).
    run_followers: Arc<follow::RunFollowers>,
    /// Milliseconds added to `settings.clock` to read the database's clock
    /// (PostgreSQL; 0 on SQLite, whose file lives with its one writer).
    clock_offset_ms: std::sync::atomic::AtomicI64,
    /// Runs whose rows were found corrupt, so that each is logged once, not
    /// on every sweep.
    corrupt_runs: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Recent claim and commit durations, for `database_slow`.
    latencies: latency::Latencies,
    /// Each step's recent p99, for `running_long`.
    p99s: diagnosis::P99Cache,
    /// Recent counts of runs per status, for the runs list.
    run_counts: run_counts::CountCache,
    /// The last overview of the dashboard.
    overview: overview::OverviewCache,
}

/// Connections of a PostgreSQL store's lease pool (beside its main pool).
const LEASE_POOL_SIZE: u32 = 4;

impl Store {
    /// Connects (creating an SQLite file if needed) and applies migrations.
    pub async fn connect(url: &str, settings: Settings) -> Result<Store> {
        Self::connect_with(url, settings, &PoolOptions::default()).await
    }

    pub async fn connect_with(
        url: &str,
        settings: Settings,
        options: &PoolOptions,
    ) -> Result<Store> {
        let pool = db::Pool::connect(url, options).await?;
        let lease_pool = match pool.dialect() {
            Dialect::Postgres => Some(
                db::Pool::connect(
                    url,
                    &PoolOptions {
                        max_connections: LEASE_POOL_SIZE,
                        ..options.clone()
                    },
                )
                .await?,
            ),
            Dialect::Sqlite => None,
        };
        let store = Store {
            inner: Arc::new(Inner {
                pool,
                lease_pool,
                settings,
                definitions: RwLock::new(HashMap::new()),
                observer: std::sync::OnceLock::new(),
                ready: Notify::new(),
                starts: std::sync::OnceLock::new(),
                run_waiters: waiters::RunWaiters::default(),
                saga_hint: Default::default(),
                run_followers: Default::default(),
                clock_offset_ms: std::sync::atomic::AtomicI64::new(0),
                corrupt_runs: Default::default(),
                latencies: Default::default(),
                p99s: Default::default(),
                run_counts: Default::default(),
                overview: Default::default(),
            }),
        };
        store.migrate().await?;
        store.sync_clock().await?;
        Ok(store)
    }

    /// The time every row is written and judged by, in epoch milliseconds:
    /// the settings' clock, on PostgreSQL corrected to the database's clock
    /// as last measured by [`Store::sync_clock`]. Servers sharing a database
    /// therefore agree on lease and timer deadlines even when their own
    /// clocks are skewed.
    pub fn now_ms(&self) -> i64 {
        self.inner.settings.clock.now_ms()
            + self
                .inner
                .clock_offset_ms
                .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Measures how far the settings' clock is from the database's and
    /// corrects [`Store::now_ms`] by it (PostgreSQL; a no-op on SQLite).
    /// Called on connect and by the engine every few seconds. Returns the
    /// correction in milliseconds; its error is half the round trip.
    ///
    /// Errors: [`Error::Unavailable`] when the database cannot be reached
    /// (the last correction stays in force).
    pub async fn sync_clock(&self) -> Result<i64> {
        if self.dialect() != Dialect::Postgres {
            return Ok(0);
        }
        let clock = &self.inner.settings.clock;
        let before = clock.now_ms();
        let row = self
            .pool()
            .fetch_optional(
                "SELECT (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT AS now_ms",
                Vec::new(),
            )
            .await?;
        let after = clock.now_ms();
        let Some(row) = row else {
            return Ok(self
                .inner
                .clock_offset_ms
                .load(std::sync::atomic::Ordering::Relaxed));
        };
        let offset = row.int("now_ms")? - (before + (after - before) / 2);
        self.inner
            .clock_offset_ms
            .store(offset, std::sync::atomic::Ordering::Relaxed);
        Ok(offset)
    }

    /// Installs the observer that turns transitions into metrics. Once per
    /// store; later calls are ignored.
    pub fn set_observer(&self, observer: Arc<dyn Observer>) {
        let _ = self.inner.observer.set(observer);
    }

    pub(crate) fn observer(&self) -> &dyn Observer {
        match self.inner.observer.get() {
            Some(observer) => observer.as_ref(),
            None => &weft_core::observe::Nothing,
        }
    }

    pub(crate) fn observe_operation(&self, op: &'static str, started: std::time::Instant) {
        let elapsed = started.elapsed();
        self.inner.latencies.record(op, elapsed);
        self.observer()
            .observe(&weft_core::observe::Observation::Operation { op, elapsed });
    }

    /// This server's claim and commit latencies over the last minute (p99 and
    /// maximum), the evidence of `database_slow`.
    pub fn operation_latency(&self) -> Vec<weft_core::diagnosis::LatencyView> {
        self.inner.latencies.views()
    }

    pub(crate) fn p99_cache(&self) -> &diagnosis::P99Cache {
        &self.inner.p99s
    }

    pub fn dialect(&self) -> Dialect {
        self.inner.pool.dialect()
    }

    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    pub(crate) fn pool(&self) -> &db::Pool {
        &self.inner.pool
    }

    /// The pool lease renewals use: their own on PostgreSQL.
    pub(crate) fn lease_pool(&self) -> &db::Pool {
        self.inner.lease_pool.as_ref().unwrap_or(&self.inner.pool)
    }

    /// Resolves when steps may have become ready. Create the future before
    /// looking for work, then await it, so that no wake-up is missed.
    pub fn ready_notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.inner.ready.notified()
    }

    /// Notes that a sweep, the claim or a listing skipped a row because it
    /// is corrupt: logged once per run (once per distinct error for a row
    /// that names no run), so that one bad row neither stalls the engine nor
    /// floods the log. Returns whether this was the first time.
    pub fn skip_corrupt(&self, during: &str, err: &Error) -> bool {
        let key = match err.corrupt_run() {
            Some(run_id) => run_id.to_owned(),
            None => err.to_string(),
        };
        let first = self
            .inner
            .corrupt_runs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key);
        if first {
            tracing::error!(
                component = "store",
                run_id = err.corrupt_run().unwrap_or(""),
                during,
                error = %err,
                "corrupt row skipped"
            );
        }
        first
    }

    /// `AND <column> NOT IN (...)` over the runs found corrupt so far, with
    /// placeholders from `$first`, and its arguments: sweeps leave those
    /// runs out, so a bad row never fills a sweep's batch on every tick.
    pub(crate) fn not_corrupt(&self, column: &str, first: usize) -> (String, Vec<db::Arg>) {
        let runs = self.corrupt_runs();
        if runs.is_empty() {
            return (String::new(), Vec::new());
        }
        (
            format!(
                " AND {column} NOT IN ({})",
                db::placeholders(first, runs.len())
            ),
            runs.into_iter().map(db::Arg::from).collect(),
        )
    }

    /// The runs found corrupt so far (see [`Store::skip_corrupt`]).
    pub fn corrupt_runs(&self) -> Vec<String> {
        let mut runs: Vec<String> = self
            .inner
            .corrupt_runs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .cloned()
            .collect();
        runs.sort();
        runs
    }

    pub(crate) fn wake_pollers(&self) {
        self.inner.ready.notify_waiters();
    }

    /// On Postgres, relays `NOTIFY weft_ready` from every server to this
    /// process's pollers until `shutdown` resolves. On SQLite there is only
    /// one process, and this returns at once.
    pub async fn listen_for_ready(&self, shutdown: impl std::future::Future<Output = ()>) {
        let db::Pool::Postgres(pool) = &self.inner.pool else {
            return;
        };
        tokio::pin!(shutdown);
        loop {
            let mut listener = match sqlx::postgres::PgListener::connect_with(pool).await {
                Ok(listener) => listener,
                Err(err) => {
                    tracing::warn!(component = "engine", error = %err, "cannot LISTEN for ready steps; retrying");
                    tokio::select! {
                        _ = &mut shutdown => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            if let Err(err) = listener.listen("weft_ready").await {
                tracing::warn!(component = "engine", error = %err, "LISTEN weft_ready failed; retrying");
                continue;
            }
            loop {
                tokio::select! {
                    _ = &mut shutdown => return,
                    received = listener.recv() => match received {
                        Ok(_) => self.wake_pollers(),
                        Err(err) => {
                            tracing::warn!(component = "engine", error = %err, "lost the LISTEN connection; reconnecting");
                            // Notifications may have been missed while down.
                            self.wake_pollers();
                            break;
                        }
                    },
                }
            }
        }
    }

    /// Runs one SQL statement as it is, outside every rule of the store; returns
    /// the rows changed. For tests that damage a row on purpose (and repair
    /// tools), never for the store's own work.
    #[doc(hidden)]
    pub async fn execute_unchecked(&self, sql: &str) -> Result<u64> {
        self.pool().execute(sql, Vec::new()).await
    }

    /// A cheap round trip, for readiness checks.
    pub async fn ping(&self) -> Result<()> {
        self.pool()
            .fetch_all("SELECT 1 AS one", Vec::new())
            .await
            .map(|_| ())
    }

    /// Connections open and idle, for the pool gauge: the main pool's and,
    /// on PostgreSQL, the lease pool's together (every connection this
    /// server holds to the database).
    pub fn pool_connections(&self) -> (u32, u32) {
        let (open, idle) = self.inner.pool.connections();
        match &self.inner.lease_pool {
            Some(leases) => {
                let (lease_open, lease_idle) = leases.connections();
                (open + lease_open, idle + lease_idle)
            }
            None => (open, idle),
        }
    }

    pub async fn close(&self) {
        self.inner.pool.close().await;
        if let Some(pool) = &self.inner.lease_pool {
            pool.close().await;
        }
    }
}
