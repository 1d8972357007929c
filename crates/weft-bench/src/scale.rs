//! Scenario G, scale: the list and show queries an operator runs
//! (`weft runs --status failed`, `weft run ID`, a trace id lookup) timed
//! through the HTTP API with N runs (default 1,000,000) in the store.
//!
//! Seeding: two real runs are made first through the server and an SDK
//! worker (one completed, one failed), so every row a run owns has the shape
//! the engine writes. Their rows, in every `weft_*` table with a `run_id`
//! column, are then copied N times by `INSERT ... SELECT` over a generated
//! series (`generate_series` on Postgres, a recursive CTE on SQLite), in
//! chunks, with new run ids (UUIDv7 layout, time-ordered), trace and span
//! ids, workflow, input and times shifted to the copy's creation time. One
//! copy in `failed_every` is of the failed run; workflows rotate over
//! `bench_scale_0..`, except one copy in 1,000 (never a failed one with the
//! default `failed_every`), which belongs to `bench_scale_rare`: a filter on
//! a rare workflow is where an index or plan choice shows. The ids are
//! arithmetic on the copy's index, so the driver can name any seeded run
//! without asking the database.
//!
//! This is the one place weft-bench speaks SQL: it writes to the server's
//! own migrated database over its own connection, and with `--g-explain`
//! prints the plans of the statements behind the timed requests (copies of
//! weft-store's, see `explained`); `--g-try-sql` runs SQL (an index to try)
//! on the seeded database before the timed queries.

use std::{
    collections::BTreeMap,
    str::FromStr,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection as _};
use tokio_util::sync::CancellationToken;
use weft_client::Client;

use crate::{
    harness::{self, Server},
    scenarios::Common,
    stats::{self, round},
};

/// Target from issue 5, carried in the result line and the report.
pub const TARGET_MS: f64 = 50.0;

pub struct ScaleArgs {
    /// Runs to seed.
    pub runs: usize,
    /// Timed repetitions of each query.
    pub reps: usize,
    /// Workflows the seeded runs rotate over.
    pub workflows: usize,
    /// One seeded run in this many is failed.
    pub failed_every: usize,
    /// Rows of `weft_runs` per seeding statement.
    pub chunk: usize,
    /// Print and record the query plans of the list and lookup queries.
    pub explain: bool,
    /// Statements run on the seeded database before the timed queries (an
    /// index to try); the result line's `config` then says so.
    pub try_sql: Vec<String>,
}

const HANDLER: &str = "bench.scale";
/// Seeded runs are created this far apart (ms), ending a minute before now.
const SPACING_MS: i64 = 1000;
const MOD48: i64 = 1 << 48;

/// The rare workflow: copies with `i % RARE_EVERY == RARE_AT`.
const RARE: &str = "bench_scale_rare";
const RARE_EVERY: i64 = 1000;
const RARE_AT: i64 = 501;
/// Seeded runs carry metadata `customer` = `c<i % CUSTOMERS>` (so each
/// customer has runs / CUSTOMERS runs, 100 of a million) and `region` = `eu`
/// (every run): the metadata filters' selective and unselective keys.
const CUSTOMERS: i64 = 10_000;

fn workflow_name(k: usize) -> String {
    format!("bench_scale_{k}")
}

fn manifest(name: &str) -> String {
    format!("name: {name}\nsteps:\n  - name: only\n    handler: {HANDLER}\n")
}

/// A seeded run's ids, as the seeding SQL computes them (see `Seed::ids`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct SeededIds {
    run_id: String,
    trace_id: String,
}

fn seeded_ids(i: i64, created: i64) -> SeededIds {
    let n = i + 1;
    SeededIds {
        run_id: format!(
            "{:08x}-{:04x}-7{:03x}-{:x}{:03x}-{:012x}",
            created / 65536,
            created % 65536,
            (i * 2_654_435_761) % 4096,
            8 + i % 4,
            (i * 40_503) % 4096,
            (i * 2_246_822_519) % MOD48
        ),
        trace_id: format!(
            "{:012x}{:012x}{:08x}",
            (n * 2_654_435_761) % MOD48,
            (n * 2_246_822_519) % MOD48,
            (n * 3_266_489_917) % (1 << 32)
        ),
    }
}

/// The seeding connection: one session, so its temp tables stay visible.
enum Conn {
    Pg(sqlx::PgConnection),
    Sqlite(sqlx::SqliteConnection),
}

impl Conn {
    async fn connect(url: &str) -> Result<Conn> {
        if url.starts_with("sqlite:") {
            let options = sqlx::sqlite::SqliteConnectOptions::from_str(url)?
                .busy_timeout(Duration::from_secs(120))
                .synchronous(sqlx::sqlite::SqliteSynchronous::Off)
                .disable_statement_logging();
            Ok(Conn::Sqlite(options.connect().await?))
        } else {
            let options =
                sqlx::postgres::PgConnectOptions::from_str(url)?.disable_statement_logging();
            Ok(Conn::Pg(options.connect().await?))
        }
    }

    fn is_pg(&self) -> bool {
        matches!(self, Conn::Pg(_))
    }

    async fn execute(&mut self, sql: &str) -> Result<u64> {
        let done = match self {
            Conn::Pg(c) => sqlx::query(AssertSqlSafe(sql))
                .execute(c)
                .await
                .map(|r| r.rows_affected()),
            Conn::Sqlite(c) => sqlx::query(AssertSqlSafe(sql))
                .execute(c)
                .await
                .map(|r| r.rows_affected()),
        };
        done.with_context(|| format!("seeding SQL failed: {sql}"))
    }

    async fn pairs(&mut self, sql: &str) -> Result<Vec<(String, String)>> {
        let rows = match self {
            Conn::Pg(c) => {
                sqlx::query_as::<_, (String, String)>(AssertSqlSafe(sql))
                    .fetch_all(c)
                    .await
            }
            Conn::Sqlite(c) => {
                sqlx::query_as::<_, (String, String)>(AssertSqlSafe(sql))
                    .fetch_all(c)
                    .await
            }
        };
        rows.with_context(|| format!("query failed: {sql}"))
    }

    async fn count(&mut self, sql: &str) -> Result<i64> {
        let n = match self {
            Conn::Pg(c) => {
                sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql))
                    .fetch_one(c)
                    .await
            }
            Conn::Sqlite(c) => {
                sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql))
                    .fetch_one(c)
                    .await
            }
        };
        n.with_context(|| format!("query failed: {sql}"))
    }

    /// The plans of a statement. Postgres: `EXPLAIN ANALYZE` of the custom
    /// plan (values inlined) and of the generic plan (prepared with
    /// `plan_cache_mode = force_generic_plan`), the one a cached prepared
    /// statement such as the server's switches to after five executions when
    /// it does not look costlier. SQLite: `EXPLAIN QUERY PLAN`.
    async fn plan(&mut self, q: &Explained) -> Result<Vec<String>> {
        let lines = match self {
            Conn::Pg(c) => {
                let explain = "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)";
                let mut lines = vec!["custom plan (values inlined):".to_owned()];
                lines.extend(
                    sqlx::query_scalar::<_, String>(AssertSqlSafe(format!(
                        "{explain} {}",
                        q.inlined()
                    )))
                    .fetch_all(&mut *c)
                    .await?,
                );
                lines.push("generic plan (prepared, force_generic_plan):".to_owned());
                let values: Vec<String> = q.params.iter().map(|v| format!("'{v}'")).collect();
                sqlx::raw_sql(AssertSqlSafe(format!(
                    "SET plan_cache_mode = force_generic_plan; PREPARE bench_explain AS {}",
                    q.sql
                )))
                .execute(&mut *c)
                .await?;
                let generic = sqlx::query_scalar::<_, String>(AssertSqlSafe(format!(
                    "{explain} EXECUTE bench_explain({})",
                    values.join(", ")
                )))
                .fetch_all(&mut *c)
                .await;
                sqlx::raw_sql("DEALLOCATE bench_explain; RESET plan_cache_mode")
                    .execute(&mut *c)
                    .await?;
                lines.extend(generic?);
                Ok(lines)
            }
            Conn::Sqlite(c) => {
                let explain = format!("EXPLAIN QUERY PLAN {}", q.inlined());
                sqlx::query(AssertSqlSafe(explain))
                    .fetch_all(c)
                    .await
                    .map(|rows| {
                        rows.iter()
                            .map(|row| {
                                sqlx::Row::try_get::<String, _>(row, "detail").unwrap_or_default()
                            })
                            .collect()
                    })
            }
        };
        lines.with_context(|| format!("EXPLAIN failed: {}", q.sql))
    }

    /// `expr` (a non-negative integer) as `width` lowercase hex digits.
    fn hex(&self, expr: &str, width: usize) -> String {
        if self.is_pg() {
            format!("lpad(to_hex({expr}), {width}, '0')")
        } else {
            format!("printf('%0{width}x', {expr})")
        }
    }

    async fn close(self) {
        let _ = match self {
            Conn::Pg(c) => c.close().await,
            Conn::Sqlite(c) => c.close().await,
        };
    }
}

/// What seeding needs to know: the templates and the generated columns.
struct Seed {
    completed: String,
    failed: String,
    /// `weft_*` tables holding rows of a run, and their columns.
    tables: Vec<(String, Vec<String>)>,
    /// Rows of the two templates per table, once `templates` ran.
    template_rows: BTreeMap<String, i64>,
    base_ms: i64,
    failed_every: usize,
    workflows: usize,
}

impl Seed {
    fn created(&self, i: i64) -> i64 {
        self.base_ms + i * SPACING_MS
    }

    /// The CTE `g` of copies `lo..hi`: index, creation time, template kind
    /// (1 failed, 0 completed), ids and workflow; the same arithmetic as
    /// `seeded_ids`.
    fn ids(&self, conn: &Conn, lo: usize, hi: usize) -> String {
        let h = |e: &str, w| conn.hex(e, w);
        let created = format!("({} + i * {SPACING_MS})", self.base_ms);
        let run_id = format!(
            "{} || '-' || {} || '-7' || {} || '-' || {} || {} || '-' || {}",
            h(&format!("{created} / 65536"), 8),
            h(&format!("{created} % 65536"), 4),
            h("(i * 2654435761) % 4096", 3),
            h("8 + i % 4", 1),
            h("(i * 40503) % 4096", 3),
            h(&format!("(i * 2246822519) % {MOD48}"), 12),
        );
        let trace_id = format!(
            "{} || {} || {}",
            h(&format!("((i + 1) * 2654435761) % {MOD48}"), 12),
            h(&format!("((i + 1) * 2246822519) % {MOD48}"), 12),
            h("((i + 1) * 3266489917) % 4294967296", 8),
        );
        let span_id = format!(
            "{} || {}",
            h(&format!("((i + 1) * 668265263) % {MOD48}"), 12),
            h("(i + 1) % 65536", 4),
        );
        let (recursive, series) = if conn.is_pg() {
            (
                String::new(),
                format!("generate_series({lo}::bigint, {}::bigint) AS s(i)", hi - 1),
            )
        } else {
            (
                format!(
                    "s(i) AS (SELECT {lo} UNION ALL SELECT i + 1 FROM s WHERE i < {}), ",
                    hi - 1
                ),
                "s".to_owned(),
            )
        };
        format!(
            "WITH RECURSIVE {recursive}g AS (SELECT i, {created} AS created, \
             CASE WHEN i % {fe} = 0 THEN 1 ELSE 0 END AS kind, \
             {run_id} AS run_id, {trace_id} AS trace_id, {span_id} AS span_id, \
             CASE WHEN i % {RARE_EVERY} = {RARE_AT} THEN '{RARE}' \
             ELSE 'bench_scale_' || ((i / {fe}) % {w}) END AS workflow FROM {series})",
            fe = self.failed_every,
            w = self.workflows,
        )
    }

    /// The expression a copy's column takes from its template row `t` and generated ids `g`.
    fn column(table: &str, column: &str) -> Option<String> {
        Some(match column {
            "seq" => return None,
            "run_id" | "trace_id" | "workflow" => format!("g.{column}"),
            "span_id" if table == "weft_runs" => "g.span_id".to_owned(),
            "span_id" => "substr(g.trace_id, 17, 16)".to_owned(),
            "lease_id" => "g.run_id || '/' || t.lease_id".to_owned(),
            "idempotency_key" | "request_id" => "NULL".to_owned(),
            "value" if table == "weft_run_metadata" => format!(
                "CASE WHEN t.key = 'customer' THEN 'c' || (g.i % {CUSTOMERS}) ELSE t.value END"
            ),
            "input" if table == "weft_runs" => {
                "'{\"i\":' || g.i || CASE WHEN g.kind = 1 THEN ',\"fail\":true}' ELSE '}' END"
                    .to_owned()
            }
            c if c == "at" || c.ends_with("_at") => {
                format!("t.{c} + (g.created - t.bench_t0)")
            }
            c => format!("t.{c}"),
        })
    }

    async fn templates(&mut self, conn: &mut Conn) -> Result<()> {
        let mut rows = BTreeMap::new();
        for (table, _) in &self.tables {
            let tpl = format!("bench_tpl_{table}");
            conn.execute(&format!("DROP TABLE IF EXISTS {tpl}")).await?;
            conn.execute(&format!(
                "CREATE TEMP TABLE {tpl} AS SELECT CASE WHEN x.run_id = '{f}' THEN 1 ELSE 0 END AS bench_kind, \
                 r.created_at AS bench_t0, x.* FROM {table} x JOIN weft_runs r ON r.run_id = x.run_id \
                 WHERE x.run_id IN ('{c}', '{f}')",
                f = self.failed,
                c = self.completed,
            ))
            .await?;
            let n = conn.count(&format!("SELECT COUNT(*) FROM {tpl}")).await?;
            rows.insert(table.clone(), n);
        }
        self.template_rows = rows;
        Ok(())
    }

    /// Copies the templates' rows for copies `lo..hi`; rows written per table.
    async fn chunk(
        &self,
        conn: &mut Conn,
        lo: usize,
        hi: usize,
        written: &mut BTreeMap<String, u64>,
    ) -> Result<()> {
        let with = self.ids(conn, lo, hi);
        conn.execute("BEGIN").await?;
        for (table, columns) in &self.tables {
            if self.template_rows.get(table).copied().unwrap_or(0) == 0 {
                continue;
            }
            let (names, exprs): (Vec<&str>, Vec<String>) = columns
                .iter()
                .filter_map(|c| Self::column(table, c).map(|e| (c.as_str(), e)))
                .unzip();
            let sql = format!(
                "{with} INSERT INTO {table} ({}) SELECT {} FROM g JOIN bench_tpl_{table} t ON t.bench_kind = g.kind",
                names.join(", "),
                exprs.join(", "),
            );
            *written.entry(table.clone()).or_default() += conn.execute(&sql).await?;
        }
        conn.execute("COMMIT").await?;
        Ok(())
    }
}

/// `weft_*` tables with a `run_id` column (weft_runs first) and their columns.
async fn run_tables(conn: &mut Conn) -> Result<Vec<(String, Vec<String>)>> {
    let sql = if conn.is_pg() {
        "SELECT table_name::text, column_name::text FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name LIKE 'weft\\_%' \
         ORDER BY table_name, ordinal_position"
    } else {
        "SELECT m.name, p.name FROM sqlite_master m, pragma_table_info(m.name) p \
         WHERE m.type = 'table' AND m.name LIKE 'weft\\_%' ESCAPE '\\' ORDER BY m.name, p.cid"
    };
    let mut tables: Vec<(String, Vec<String>)> = Vec::new();
    for (table, column) in conn.pairs(sql).await? {
        match tables.last_mut() {
            Some((t, columns)) if *t == table => columns.push(column),
            _ => tables.push((table, vec![column])),
        }
    }
    tables.retain(|(_, columns)| columns.iter().any(|c| c == "run_id"));
    tables.sort_by_key(|(t, _)| (t != "weft_runs", t.clone()));
    if tables.first().map(|(t, _)| t.as_str()) != Some("weft_runs") {
        bail!("no weft_runs table in the server's database");
    }
    Ok(tables)
}

/// Makes the two template runs through the server: one completed, one failed.
async fn template_runs(
    server: &Server,
    client: &Client,
    common: &Common,
) -> Result<(String, String)> {
    let worker = weft_worker::Worker::builder(Client::new(&server.url))
        .concurrency(4)
        .worker_id("weft-bench-g")
        .handler(HANDLER, |ctx: weft_worker::TaskContext| {
            let fail = ctx.run_input()["fail"] == json!(true);
            async move {
                if fail {
                    Err(weft_worker::HandlerError::permanent(
                        "weft-bench: the seeded failure",
                    ))
                } else {
                    Ok(json!({"ok": true}))
                }
            }
        })
        .build();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(worker.run(shutdown.clone()));
    let outcome = async {
        let mut ids = Vec::new();
        for (input, expect) in [
            (json!({"template": "completed"}), "completed"),
            (json!({"template": "failed", "fail": true}), "failed"),
        ] {
            let request = weft_api::StartRunRequest {
                input,
                idempotency_key: None,
                metadata: [("customer", "template"), ("region", "eu")]
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
            };
            let run_id = client.start_run(&workflow_name(0), &request).await?.run_id;
            let started = Instant::now();
            loop {
                let run = client.get_run(&run_id).await?;
                if matches!(run.status.as_str(), "completed" | "failed" | "cancelled") {
                    if run.status != expect {
                        bail!("template run {run_id} ended {}, not {expect}", run.status);
                    }
                    break;
                }
                if started.elapsed() > common.timeout {
                    bail!("template run {run_id} did not end");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            ids.push(run_id);
        }
        Ok((ids[0].clone(), ids[1].clone()))
    }
    .await;
    shutdown.cancel();
    let _ = task.await;
    outcome
}

/// xorshift64*: enough to pick runs without a dependency.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1;
        Rng(seed)
    }

    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1) as u64) as usize
    }
}

/// The timed queries, in the order each repetition runs them.
const QUERIES: &[(&str, &str)] = &[
    (
        "list_failed",
        "GET /v1/runs?status=failed (first page, default limit 50)",
    ),
    (
        "list_workflow_failed",
        "GET /v1/runs?workflow=W&status=failed (first page; W one of the seeded workflows at random)",
    ),
    (
        "list_rare_completed",
        "GET /v1/runs?workflow=bench_scale_rare&status=completed (a workflow with 0.1% of the runs)",
    ),
    (
        "list_rare_failed",
        "GET /v1/runs?workflow=bench_scale_rare&status=failed (a workflow with 0.1% of the runs and no failed ones: an empty page)",
    ),
    ("get_run", "GET /v1/runs/{run_id} of a random seeded run"),
    (
        "get_run_by_trace",
        "GET /v1/runs/{trace_id} of a random seeded run (resolves the trace's newest run)",
    ),
    (
        "list_trace",
        "GET /v1/runs?trace_id=T of a random seeded run",
    ),
    (
        "run_events",
        "GET /v1/runs/{run_id}/events of a random seeded run",
    ),
    ("list_all", "GET /v1/runs (first page, no filter)"),
    (
        "list_meta",
        "GET /v1/runs?meta.customer=C (C one of 10,000 customers at random: 0.01% of the runs; first page of 50)",
    ),
    (
        "list_meta_and",
        "GET /v1/runs?meta.customer=C&meta.region=eu&status=failed (a selective and an unselective metadata pair ANDed, with a status)",
    ),
    (
        "overview",
        "Store::overview_between(last hour, 12 buckets), uncached: the dashboard overview's one bounded query and its summary, in process",
    ),
    (
        "counts_hour",
        "Store::count_runs_by_status(since 1h, cap 10,000), uncached: the runs list's counts per status, in process",
    ),
    (
        "counts_all",
        "Store::count_runs_by_status(no window, cap 10,000), uncached: every status's count capped, in process",
    ),
];

/// One query of kind `kind` against random seeded runs; checks the answer.
async fn query(
    client: &Client,
    store: &weft_store::Store,
    seed: &Seed,
    n: usize,
    rng: &mut Rng,
    kind: &str,
) -> Result<()> {
    let i = rng.below(n) as i64;
    let ids = seeded_ids(i, seed.created(i));
    let failed = i % seed.failed_every as i64 == 0;
    match kind {
        "list_failed" | "list_workflow_failed" => {
            let mut filter = vec![("status", "failed".to_owned())];
            if kind == "list_workflow_failed" {
                filter.insert(0, ("workflow", workflow_name(rng.below(seed.workflows))));
            }
            let list = client.list_runs(&filter).await?;
            if list.runs.is_empty() || list.runs.iter().any(|r| r.status != "failed") {
                bail!("{kind}: expected a page of failed runs");
            }
        }
        "list_rare_completed" | "list_rare_failed" => {
            let status = if kind == "list_rare_failed" {
                "failed"
            } else {
                "completed"
            };
            let list = client
                .list_runs(&[("workflow", RARE.to_owned()), ("status", status.to_owned())])
                .await?;
            if list
                .runs
                .iter()
                .any(|r| r.status != status || r.workflow != RARE)
            {
                bail!("{kind}: a run of another workflow or status came back");
            }
        }
        "get_run" | "get_run_by_trace" => {
            let id = if kind == "get_run" {
                &ids.run_id
            } else {
                &ids.trace_id
            };
            let run = client
                .get_run(id)
                .await
                .with_context(|| format!("GET /v1/runs/{id} (seeded run {i})"))?;
            let expect = if failed { "failed" } else { "completed" };
            if run.run_id != ids.run_id || run.status != expect || run.steps.is_empty() {
                bail!(
                    "{kind}: seeded run {i} came back as {} {}",
                    run.run_id,
                    run.status
                );
            }
        }
        "list_trace" => {
            let list = client
                .list_runs(&[("trace_id", ids.trace_id.clone())])
                .await?;
            if list.runs.len() != 1 || list.runs[0].run_id != ids.run_id {
                bail!("list_trace: seeded run {i} not found by its trace id");
            }
        }
        "run_events" => {
            let events = client.run_events(&ids.run_id, None).await?;
            if events.events.is_empty() {
                bail!("run_events: seeded run {i} has no history");
            }
        }
        "list_all" => {
            client.list_runs(&[]).await?;
        }
        "overview" => {
            let now = store.now_ms();
            let overview = store.overview_between(now - 3_600_000, now, 12).await?;
            if overview.workflows.is_empty() {
                bail!("overview: no runs in the last hour");
            }
        }
        "counts_hour" | "counts_all" => {
            let filter = weft_store::CountFilter {
                since_ms: (kind == "counts_hour").then(|| store.now_ms() - 3_600_000),
                ..Default::default()
            };
            let counts = store.count_runs_by_status(&filter, 10_000).await?;
            if counts.iter().all(|c| c.count == 0) {
                bail!("{kind}: nothing counted");
            }
        }
        "list_meta" | "list_meta_and" => {
            let customer = format!("c{}", rng.below(CUSTOMERS as usize));
            let mut filter = vec![("meta.customer", customer.clone())];
            if kind == "list_meta_and" {
                filter.push(("meta.region", "eu".to_owned()));
                filter.push(("status", "failed".to_owned()));
            }
            let list = client.list_runs(&filter).await?;
            if kind == "list_meta" && list.runs.is_empty() && n as i64 >= CUSTOMERS {
                bail!("list_meta: no run of customer {customer}");
            }
            if list.runs.iter().any(|r| {
                r.metadata.get("customer") != Some(&customer)
                    || (kind == "list_meta_and" && r.status != "failed")
            }) {
                bail!("{kind}: a run of another customer or status came back");
            }
        }
        other => bail!("unknown query {other}"),
    }
    Ok(())
}

/// G's store: `args.runs` finished runs seeded beside two real ones.
pub(crate) struct Seeded {
    client: Client,
    seed: Seed,
    conn: Conn,
    /// Seconds the inserts took, then the ANALYZE.
    pub insert_s: f64,
    pub analyze_s: f64,
    /// Runs in the store once seeded, and how many failed.
    pub total_runs: i64,
    pub failed_runs: i64,
    /// Rows written per table.
    pub written: BTreeMap<String, u64>,
}

impl Seeded {
    /// Ends the seeding connection.
    pub(crate) async fn close(self) {
        self.conn.close().await;
    }
}

/// Registers G's workflows, makes the two template runs and copies them
/// `args.runs` times into the server's database (see the module doc).
pub(crate) async fn seed_store(
    server: &Server,
    common: &Common,
    url: &str,
    args: &ScaleArgs,
) -> Result<Seeded> {
    if args.runs == 0 || args.workflows == 0 || args.failed_every == 0 || args.chunk == 0 {
        bail!("--g-runs, --g-workflows, --g-failed-every and --g-chunk must be at least 1");
    }
    let client = Client::new(&server.url);
    for name in (0..args.workflows)
        .map(workflow_name)
        .chain([RARE.to_owned()])
    {
        let put = client
            .put_workflow(&name, &manifest(&name))
            .await
            .with_context(|| format!("registering {name}"))?;
        if put.version != 1 {
            bail!(
                "{} registered as version {}, expected 1 on a fresh database",
                put.name,
                put.version
            );
        }
    }
    let (completed, failed) = template_runs(server, &client, common).await?;

    let mut conn = Conn::connect(url)
        .await
        .context("opening a seeding connection to the server's database")?;
    let tables = run_tables(&mut conn).await?;
    let mut seed = Seed {
        completed,
        failed,
        tables,
        template_rows: BTreeMap::new(),
        base_ms: chrono::Utc::now().timestamp_millis() - 60_000 - args.runs as i64 * SPACING_MS,
        failed_every: args.failed_every,
        workflows: args.workflows,
    };
    seed.templates(&mut conn).await?;
    eprintln!(
        "[weft-bench]   G template rows (completed + failed run): {}",
        seed.template_rows
            .iter()
            .map(|(t, n)| format!("{t} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let started = Instant::now();
    let mut written = BTreeMap::new();
    let mut progress = harness::Progress::new("G seed runs", args.runs as u64);
    let mut lo = 0;
    while lo < args.runs {
        let hi = (lo + args.chunk).min(args.runs);
        seed.chunk(&mut conn, lo, hi, &mut written).await?;
        lo = hi;
        progress.show(lo as u64);
    }
    let insert_s = started.elapsed().as_secs_f64();
    // Postgres: what autovacuum would do soon after a bulk load; SQLite: the
    // store runs no ANALYZE, so neither does the bench.
    let analyze_started = Instant::now();
    if conn.is_pg() {
        for (table, _) in &seed.tables {
            conn.execute(&format!("ANALYZE {table}")).await?;
        }
    }
    let analyze_s = analyze_started.elapsed().as_secs_f64();
    for sql in &args.try_sql {
        let t = Instant::now();
        conn.execute(sql).await?;
        eprintln!(
            "[weft-bench]   G --g-try-sql ({:.1}s): {sql}",
            t.elapsed().as_secs_f64()
        );
    }
    let total_runs = conn.count("SELECT COUNT(*) FROM weft_runs").await?;
    let failed_runs = conn
        .count(&format!(
            "SELECT COUNT(*) FROM weft_runs WHERE status = '{}'",
            weft_core::RunStatus::Failed.as_str()
        ))
        .await?;
    eprintln!(
        "[weft-bench]   G seeded {} runs ({failed_runs} failed) in {insert_s:.1}s (+ {analyze_s:.1}s ANALYZE); rows: {}",
        args.runs,
        written
            .iter()
            .map(|(t, n)| format!("{t} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(Seeded {
        client,
        seed,
        conn,
        insert_s,
        analyze_s,
        total_runs,
        failed_runs,
        written,
    })
}

pub async fn scale(server: &Server, common: &Common, url: &str, args: &ScaleArgs) -> Result<Value> {
    let Seeded {
        client,
        seed,
        mut conn,
        insert_s,
        analyze_s,
        total_runs,
        failed_runs,
        written,
    } = seed_store(server, common, url, args).await?;
    let mut rng = Rng::new();
    // Warm-up, unrecorded: connections, the definition cache, the first pages.
    for _ in 0..3 {
        for (kind, _) in QUERIES {
            query(&client, &server.store, &seed, args.runs, &mut rng, kind).await?;
        }
    }
    let mut samples: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut progress = harness::Progress::new("G queries", args.reps as u64);
    for rep in 0..args.reps {
        for (kind, _) in QUERIES {
            let t = Instant::now();
            query(&client, &server.store, &seed, args.runs, &mut rng, kind).await?;
            samples
                .entry(kind)
                .or_default()
                .push(t.elapsed().as_secs_f64() * 1000.0);
        }
        progress.show(rep as u64 + 1);
    }
    let plans = if args.explain {
        let ids = seeded_ids(1, seed.created(1));
        let mut plans = serde_json::Map::new();
        for q in explained(&ids.trace_id) {
            let plan = conn.plan(&q).await?;
            eprintln!(
                "[weft-bench]   G plan of {}: {} -- with {:?}",
                q.name, q.sql, q.params
            );
            for line in &plan {
                eprintln!("[weft-bench]       {line}");
            }
            plans.insert(q.name.to_owned(), json!(plan));
        }
        Some(Value::Object(plans))
    } else {
        None
    };
    conn.close().await;
    let mut queries = serde_json::Map::new();
    for (kind, description) in QUERIES {
        let ms = &samples[kind];
        let mut summary = stats::latency_summary(ms);
        summary["within_target"] = json!(stats::percentile(ms, 99.0) <= TARGET_MS);
        summary["query"] = json!(description);
        queries.insert((*kind).to_owned(), summary);
    }
    let config = if args.try_sql.is_empty() {
        common.backend.as_str().to_owned()
    } else {
        format!(
            "{}, with --g-try-sql: {}",
            common.backend.as_str(),
            args.try_sql.join("; ")
        )
    };
    let mut result = json!({
        "test": "G",
        "config": config,
        "try_sql": args.try_sql,
        "n": args.runs,
        "runs_in_store": total_runs,
        "failed_runs": failed_runs,
        "workflows": args.workflows,
        "seed_s": round(insert_s, 1),
        "seed_runs_per_s": round(args.runs as f64 / insert_s, 0),
        "analyze_s": round(analyze_s, 1),
        "seed_rows": written,
        "seed_method": "rows of one completed and one failed real run copied N times by INSERT ... SELECT over a generated series, in chunks; Postgres then ANALYZEd",
        "reps": args.reps,
        "target_ms": TARGET_MS,
        "target_on": "p99",
        "measure": "client-side HTTP round trip (weft-client), one request at a time, after 3 unrecorded rounds",
        "queries": queries,
    });
    if let Some(plans) = plans {
        result["plans"] = plans;
    }
    Ok(result)
}

/// A statement behind a timed request, as the server sends it: SQL with
/// `$n` placeholders and the values bound to them.
struct Explained {
    name: &'static str,
    sql: String,
    params: Vec<String>,
}

impl Explained {
    /// The SQL with the values inlined (SQLite's plan, Postgres's custom plan).
    fn inlined(&self) -> String {
        let mut sql = self.sql.clone();
        for (i, value) in self.params.iter().enumerate().rev() {
            sql = sql.replace(&format!("${}", i + 1), &format!("'{value}'"));
        }
        sql
    }
}

/// The statements behind the timed list and lookup requests, for `--g-explain`:
/// copies of `weft_store::Store::list_runs` and `resolve_run_id`, so re-check
/// them against crates/weft-store/src/runs.rs when a plan looks surprising.
fn explained(trace_id: &str) -> Vec<Explained> {
    let select = "SELECT run_id, trace_id, workflow, version, status, reason, error, input, output, request_id, created_at, started_at, finished_at FROM weft_runs WHERE 1 = 1";
    let page = "ORDER BY run_id DESC LIMIT 51";
    let one = |name, sql: String, params: &[&str]| Explained {
        name,
        sql,
        params: params.iter().map(|p| (*p).to_owned()).collect(),
    };
    let by_workflow = format!("{select} AND workflow = $1 AND status = $2 {page}");
    vec![
        one(
            "list_failed",
            format!("{select} AND status = $1 {page}"),
            &["failed"],
        ),
        one(
            "list_workflow_failed",
            by_workflow.clone(),
            &["bench_scale_1", "failed"],
        ),
        one(
            "list_rare_completed",
            by_workflow.clone(),
            &[RARE, "completed"],
        ),
        one("list_rare_failed", by_workflow, &[RARE, "failed"]),
        one(
            "list_trace",
            format!("{select} AND trace_id = $1 {page}"),
            &[trace_id],
        ),
        one(
            "list_meta",
            "SELECT r.run_id, r.status FROM weft_run_metadata m0 CROSS JOIN weft_runs r \
             WHERE r.run_id = m0.run_id AND m0.key = $1 AND m0.value = $2 ORDER BY m0.run_id DESC LIMIT 51"
                .to_owned(),
            &["customer", "c42"],
        ),
        one(
            "resolve_trace",
            "SELECT run_id FROM weft_runs WHERE trace_id = $1 ORDER BY run_id DESC LIMIT 1"
                .to_owned(),
            &[trace_id],
        ),
    ]
}

/// Each query's `p50 / p99` of a result line, `; `-separated, flagging
/// those over target (scenarios G and H).
pub fn query_summaries<'a>(r: &Value, kinds: impl IntoIterator<Item = &'a str>) -> String {
    let queries: Vec<String> = kinds
        .into_iter()
        .map(|kind| {
            let q = &r["queries"][kind];
            let flag = if q["within_target"] == json!(false) {
                " (over target)"
            } else {
                ""
            };
            format!("{kind} p50 {} / p99 {} ms{flag}", q["p50_ms"], q["p99_ms"])
        })
        .collect();
    queries.join("; ")
}

/// The human line for stderr.
pub fn summary(r: &Value) -> String {
    let queries = query_summaries(r, QUERIES.iter().map(|(kind, _)| *kind));
    format!(
        "G {}: {} runs in the store (seeded in {}s); target p99 <= {TARGET_MS} ms: {}; foreign CPU {} cores",
        r["backend"].as_str().unwrap_or("?"),
        r["runs_in_store"],
        r["seed_s"],
        queries,
        r["foreign_cpu_cores"],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_ids_look_like_the_engine_ids() {
        let ids = seeded_ids(0, 1_700_000_000_000);
        assert!(uuid_like(&ids.run_id), "{}", ids.run_id);
        assert_eq!(ids.trace_id.len(), 32);
        assert!(
            ids.trace_id
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_ne!(seeded_ids(1, 1_700_000_001_000), ids);
        // Later copies sort after earlier ones, as UUIDv7s do.
        assert!(seeded_ids(1, 1_700_000_001_000).run_id > ids.run_id);
    }

    fn uuid_like(s: &str) -> bool {
        let parts: Vec<usize> = s.split('-').map(str::len).collect();
        parts == [8, 4, 4, 4, 12] && s.as_bytes()[14] == b'7'
    }
}
