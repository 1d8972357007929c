//! The engine's background loops and the long poll: it fires due timers
//! (retry backoffs, sleeps), reaps expired leases and attempts past their
//! deadline, relays Postgres wake-ups, and holds worker polls open until work
//! arrives. It also reads the database gauges when `/metrics` is scraped.
//! The rules themselves live in `weft-core`; the engine only decides *when*
//! to apply them.
//!
//! Every loop is idempotent and safe to run in many servers over one database:
//! each transition re-checks its precondition under the run's row lock.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicI64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio_util::sync::CancellationToken;
use weft_store::{ClaimRequest, Store, now_ms};

/// How often the store's clock is re-measured against the database's.
const CLOCK_SYNC_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);
/// A clock further than this from the database's is logged (milliseconds).
const CLOCK_SKEW_WARN_MS: i64 = 1_000;
/// How long a scrape waits for a reading of the database gauges before it
/// answers with the last values (the reading goes on, and the next scrape
/// shows it).
const GAUGE_SCRAPE_WAIT: Duration = Duration::from_secs(2);
/// Rows of workers gone longer than the retention are deleted every tenth
/// of the retention, within these bounds.
const WORKER_FORGET_EVERY: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(60));

#[derive(Debug, Clone)]
pub struct Config {
    /// How often the timer and reaper sweeps run.
    pub tick: Duration,
    /// The longest a poll sleeps between claims without a wake-up, covering
    /// a missed notification.
    pub poll_recheck: Duration,
    /// The longest a worker may ask the server to hold a poll.
    pub max_poll_wait: Duration,
    /// The oldest a scrape's database gauges may be: a `/metrics` scrape
    /// re-reads them when the last reading is older than this, and
    /// otherwise shows that reading.
    pub gauge_interval: Duration,
    /// The thresholds of the diagnosis rules (`weft doctor`, `weft_runs_stalled`).
    pub diagnosis: weft_core::diagnosis::Thresholds,
    /// Worker rows not heard from for this long are deleted.
    pub worker_retention: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            tick: Duration::from_millis(200),
            poll_recheck: Duration::from_secs(1),
            max_poll_wait: Duration::from_secs(30),
            gauge_interval: Duration::from_secs(5),
            diagnosis: weft_core::diagnosis::Thresholds::default(),
            worker_retention: Duration::from_secs(24 * 3600),
        }
    }
}

/// A cheap-to-clone handle on the engine.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    config: Config,
    /// Epoch ms of the last completed sweep, for readiness.
    last_tick_ms: AtomicI64,
    workers_touched: Mutex<HashMap<String, Instant>>,
    /// Cancelled when `run` sees its shutdown: parked polls answer at once.
    stopping: CancellationToken,
    /// When the database gauges were last read (or tried); held across a
    /// reading, so concurrent scrapes share one.
    gauges_read: tokio::sync::Mutex<Option<Instant>>,
}

impl Engine {
    pub fn new(store: Store, config: Config) -> Engine {
        Engine {
            inner: Arc::new(Inner {
                store,
                config,
                last_tick_ms: AtomicI64::new(0),
                workers_touched: Mutex::new(HashMap::new()),
                stopping: CancellationToken::new(),
                gauges_read: tokio::sync::Mutex::new(None),
            }),
        }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Epoch ms of the last finished sweep (0 before the first).
    pub fn last_tick_ms(&self) -> i64 {
        self.inner.last_tick_ms.load(Ordering::Relaxed)
    }

    /// Runs the loops until `shutdown` is cancelled; then long polls
    /// parked in [`Engine::poll`] answer at once (with no tasks).
    pub async fn run(self, shutdown: CancellationToken) {
        let stopping = self.inner.stopping.clone();
        let relay = shutdown.clone();
        tokio::spawn(async move {
            relay.cancelled().await;
            stopping.cancel();
        });
        let listen = {
            let store = self.inner.store.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move { store.listen_for_ready(shutdown.cancelled_owned()).await })
        };
        let forget = {
            let store = self.inner.store.clone();
            let shutdown = shutdown.clone();
            let retention = self.inner.config.worker_retention;
            let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
            tokio::spawn(async move {
                let every = (retention / 10).clamp(WORKER_FORGET_EVERY.0, WORKER_FORGET_EVERY.1);
                let mut interval = tokio::time::interval(every);
                interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = interval.tick() => {}
                    }
                    if let Err(err) = store
                        .forget_workers(now_ms().saturating_sub(retention_ms))
                        .await
                    {
                        tracing::debug!(component = "engine", error = %err, "could not forget gone workers");
                    }
                }
            })
        };
        // Keeps the store's clock on the database's (PostgreSQL), so lease
        // and timer deadlines mean the same to every server.
        let clock = {
            let store = self.inner.store.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let mut interval = tokio::time::interval(CLOCK_SYNC_INTERVAL);
                interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = interval.tick() => {}
                    }
                    match store.sync_clock().await {
                        Ok(offset) if offset.abs() > CLOCK_SKEW_WARN_MS => tracing::warn!(
                            component = "engine",
                            offset_ms = offset,
                            "this server's clock is off the database's; times are corrected to the database's clock"
                        ),
                        Ok(_) => {}
                        Err(err) => {
                            tracing::debug!(component = "engine", error = %err, "clock sync failed; keeping the last correction")
                        }
                    }
                }
            })
        };
        let mut interval = tokio::time::interval(self.inner.config.tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = interval.tick() => {}
            }
            if self.sweep().await {
                self.inner.last_tick_ms.store(now_ms(), Ordering::Relaxed);
            }
        }
        let _ = listen.await;
        let _ = forget.await;
        let _ = clock.await;
        tracing::info!(component = "engine", "engine stopped");
    }

    /// Brings the database gauges (`weft_runs_active`, `weft_steps_ready`,
    /// `weft_runs_stalled`, ...) up to date for a `/metrics` scrape: they are
    /// read again when the last reading is older than
    /// [`Config::gauge_interval`], one reading at a time however many
    /// scrapes arrive. Read on scrape rather than on a timer, as Prometheus
    /// asks of values taken from another system ("Writing exporters":
    /// metrics are pulled when Prometheus scrapes, not on the exporter's own
    /// timer), so an unscraped server puts no load on the database.
    ///
    /// Waits at most 2 s; a slower reading (or an unreachable database,
    /// logged) leaves the last values in place for this scrape.
    pub async fn collect_gauges(&self) {
        let engine = self.clone();
        let reading = tokio::spawn(async move { engine.read_gauges_if_stale().await });
        if tokio::time::timeout(GAUGE_SCRAPE_WAIT, reading)
            .await
            .is_err()
        {
            tracing::warn!(
                component = "engine",
                wait_ms = GAUGE_SCRAPE_WAIT.as_millis() as u64,
                "the database gauges took too long to read; this scrape shows the last reading"
            );
        }
    }

    async fn read_gauges_if_stale(&self) {
        let mut last = self.inner.gauges_read.lock().await;
        if last.is_some_and(|at| at.elapsed() < self.inner.config.gauge_interval) {
            return;
        }
        if let Err(err) = self
            .inner
            .store
            .refresh_gauges_with(&self.inner.config.diagnosis)
            .await
        {
            tracing::warn!(component = "engine", error = %err, "gauge reading failed");
        }
        // A failed reading counts too: the scrapes queued behind it while
        // the database was unreachable do not each try again.
        *last = Some(Instant::now());
    }

    /// One pass of every sweep; true when all of them reached the database.
    pub async fn sweep(&self) -> bool {
        let store = &self.inner.store;
        let mut ok = true;
        loop {
            match store.fire_due_timers(200).await {
                Ok(200..) => continue,
                Ok(_) => break,
                Err(err) => {
                    tracing::warn!(component = "engine", error = %err, "timer sweep failed");
                    ok = false;
                    break;
                }
            }
        }
        loop {
            match store.reap(200).await {
                Ok(200..) => continue,
                Ok(_) => break,
                Err(err) => {
                    tracing::warn!(component = "engine", error = %err, "lease reaper failed");
                    ok = false;
                    break;
                }
            }
        }
        ok
    }

    /// Claims work for a worker, waiting up to `wait` for some to arrive.
    pub async fn poll(
        &self,
        request: &ClaimRequest,
        wait: Duration,
    ) -> Result<Vec<weft_store::ClaimedTask>, weft_store::Error> {
        self.touch_worker(request).await;
        let wait = wait.min(self.inner.config.max_poll_wait);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Register interest before looking, so a commit between the claim
            // and the wait still wakes us.
            let notified = self.inner.store.ready_notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let tasks = self.inner.store.claim(request).await?;
            if !tasks.is_empty() {
                return Ok(tasks);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            let nap = (deadline - now).min(self.inner.config.poll_recheck);
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep(nap) => {}
                // Shutting down: answer now rather than hold the worker.
                _ = self.inner.stopping.cancelled() => return Ok(Vec::new()),
            }
        }
    }

    /// Records the worker as seen at most every few seconds: a write per poll
    /// would be a write per empty long-poll wake-up.
    async fn touch_worker(&self, request: &ClaimRequest) {
        let due = {
            let mut touched = self.inner.workers_touched.lock().expect("workers lock");
            let due = touched
                .get(&request.worker_id)
                .is_none_or(|t| t.elapsed() > Duration::from_secs(5));
            if due {
                touched.insert(request.worker_id.clone(), Instant::now());
            }
            due
        };
        if due
            && let Err(err) = self
                .inner
                .store
                .record_worker(
                    &request.worker_id,
                    &request.queues,
                    &request.handlers,
                    &request.meta,
                )
                .await
        {
            tracing::debug!(component = "engine", error = %err, "could not record worker");
        }
    }
}
