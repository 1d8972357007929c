//! Claiming ready steps for a worker: one set-based statement per kind of
//! row for the whole batch (steps `FOR UPDATE SKIP LOCKED`, no run lock), so
//! claims never wait on each other or on a run. What each claimed row gets
//! (attempt number, lease, deadline, whether the claim starts its run, the
//! history events) is decided by `weft_core::attempt::claim`.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;
use weft_core::{EventKind, RunStatus, StepStatus, attempt, observe::Observation};

use crate::{
    Error, Problem, Result, Store, args,
    db::{Arg, Dialect, Tx, placeholders},
    runs::random_hex,
    transition::{EventRow, insert_events},
};

#[derive(Debug, Clone, Default)]
pub struct ClaimRequest {
    pub worker_id: String,
    pub queues: Vec<String>,
    pub handlers: Vec<String>,
    pub max_tasks: u32,
    /// What the worker said about itself, recorded with its row.
    pub meta: crate::WorkerMeta,
    /// The API token the worker polled with, stored on each lease claimed:
    /// only that token may report the lease's result. `None` with
    /// authentication off.
    pub token_id: Option<String>,
}

/// A claimed attempt, everything its worker is handed (the server turns it
/// into the API's `Task`).
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedTask {
    /// The lease the worker reports under.
    pub lease_id: String,
    pub run_id: String,
    /// The run's trace id, 32 lowercase hex digits.
    pub trace_id: String,
    pub workflow: String,
    pub step: String,
    /// 1 for the first attempt of the step.
    pub attempt: i64,
    pub handler: String,
    /// `{"input": <run input>, "steps": {<name>: <output>}}`.
    pub input: Value,
    /// The attempt span's id, 16 lowercase hex digits (with `trace_id`, the
    /// worker's `traceparent`).
    pub span_id: String,
    /// The step's start-to-close deadline, epoch ms, when it has a timeout.
    pub deadline_at_ms: Option<i64>,
    /// The step's timeout, if any.
    pub timeout_ms: Option<i64>,
    /// How long the lease lives without a heartbeat.
    pub lease_ms: i64,
    /// The W3C baggage the run was started with.
    pub baggage: Option<String>,
    /// The largest output the server accepts, in bytes.
    pub max_output_bytes: u64,
}

impl Store {
    /// Claims up to `max_tasks` ready steps for a worker. Returns at once;
    /// long polling is the engine's business.
    pub async fn claim(&self, request: &ClaimRequest) -> Result<Vec<ClaimedTask>> {
        let started = std::time::Instant::now();
        if request.queues.is_empty() || request.handlers.is_empty() || request.max_tasks == 0 {
            return Ok(Vec::new());
        }
        let n_queues = request.queues.len();
        let filter = format!(
            "status = '{}' AND queue IN ({}) AND handler IN ({})",
            StepStatus::Ready.as_str(),
            placeholders(1, n_queues),
            placeholders(1 + n_queues, request.handlers.len())
        );
        let mut values: Vec<Arg> = request.queues.iter().map(Arg::from).collect();
        values.extend(request.handlers.iter().map(Arg::from));
        if self.dialect() == Dialect::Sqlite {
            // Look on a reader first, so an idle poll never takes SQLite's write lock.
            let probe = format!("SELECT 1 AS one FROM weft_steps WHERE {filter} LIMIT 1");
            if self
                .pool()
                .fetch_optional(&probe, values.clone())
                .await?
                .is_none()
            {
                return Ok(Vec::new());
            }
        }
        let lock = match self.dialect() {
            Dialect::Postgres => " FOR UPDATE OF s SKIP LOCKED",
            Dialect::Sqlite => "",
        };
        // The steps with their runs, in one round trip; only the steps are
        // locked. Runs found corrupt are left out, so they never fill a batch.
        let (skip, skip_values) = self.not_corrupt("s.run_id", values.len() + 1);
        values.extend(skip_values);
        let sql = format!(
            "SELECT s.run_id, s.position, s.n_attempts, s.ready_at, r.trace_id, r.baggage, r.workflow, \
             r.version, r.status AS run_status, r.input \
             FROM weft_steps s JOIN weft_runs r ON r.run_id = s.run_id \
             WHERE s.{}{skip} ORDER BY s.ready_at LIMIT {}{lock}",
            filter
                .replace(" AND queue", " AND s.queue")
                .replace(" AND handler", " AND s.handler"),
            request.max_tasks.min(100)
        );
        let mut tx = self.pool().begin().await?;
        let rows = tx.fetch_all(&sql, values).await?;
        if rows.is_empty() {
            tx.commit().await?;
            return Ok(Vec::new());
        }
        // The claim time is read only once the rows are ours: read before the
        // transaction, it could predate the commit that made a step ready
        // (a dependant "claimed" before its dependency finished).
        let now = self.now_ms();
        // The runs of the claimed rows, by run id. A run with a corrupt row
        // is left out of this claim (logged once) and its steps untouched:
        // one bad row never stops the others being claimed.
        let mut runs: HashMap<String, RunInfo> = HashMap::new();
        let mut bad: std::collections::HashSet<String> = Default::default();
        for row in &rows {
            let run_id = row.text("run_id")?;
            if runs.contains_key(&run_id) || bad.contains(&run_id) {
                continue;
            }
            match run_info(row).and_then(|info| check_step_row(row).map(|()| info)) {
                Ok(info) => {
                    runs.insert(run_id, info);
                }
                Err(err @ Error::Corrupt(_)) => {
                    self.skip_corrupt("claim", &err);
                    bad.insert(run_id);
                }
                Err(err) => return Err(err),
            }
        }
        let rows: Vec<_> = rows
            .into_iter()
            .filter(|row| {
                row.text("run_id").is_ok_and(|id| !bad.contains(&id)) && check_step_row(row).is_ok()
            })
            .collect();
        if rows.is_empty() {
            tx.commit().await?;
            return Ok(Vec::new());
        }
        let mut tasks = Vec::with_capacity(rows.len());
        let mut attempts = Vec::with_capacity(rows.len());
        for row in &rows {
            let run_id = row.text("run_id")?;
            let run = runs.get(&run_id).ok_or_else(|| Error::NotFound {
                what: "run",
                id: run_id.clone(),
            })?;
            let def = self
                .definition_in(&mut tx, &run.workflow, run.version)
                .await?;
            let position = row.int("position")?;
            let Some(step_def) = usize::try_from(position)
                .ok()
                .and_then(|p| def.steps.get(p))
            else {
                let err = row.corrupt(
                    "position",
                    Problem::WrongType {
                        expected: "a step of the run's definition",
                    },
                );
                self.skip_corrupt("claim", &err);
                continue;
            };
            let outputs = if step_def.deps.is_empty() {
                BTreeMap::new()
            } else {
                let sql = format!(
                    "SELECT name, output FROM weft_steps WHERE run_id = $1 AND position IN ({})",
                    placeholders(2, step_def.deps.len())
                );
                let mut values = args![&run_id];
                values.extend(step_def.deps.iter().map(|&d| Arg::from(d)));
                tx.fetch_all(&sql, values)
                    .await?
                    .into_iter()
                    .map(|r| {
                        let output = r
                            .opt_text("output")?
                            .and_then(|t| serde_json::from_str(&t).ok())
                            .unwrap_or(Value::Null);
                        Ok((r.text("name")?, output))
                    })
                    .collect::<Result<_>>()?
            };
            let input =
                weft_core::machine::task_input(&def, position as usize, &run.input, &outputs);
            let decided = attempt::claim(
                step_def,
                run.status,
                row.int("n_attempts")?,
                row.opt_int("ready_at")?,
                now,
                self.settings().lease.as_millis() as u64,
            );
            let attempt = decided.attempt;
            let claim = NewAttempt {
                run_id: run_id.clone(),
                position,
                attempt,
                lease_id: uuid::Uuid::new_v4().to_string(),
                span_id: random_hex(8),
                step: step_def.name.clone(),
                queue: step_def.queue.clone(),
                claim: decided,
            };
            tracing::debug!(
                component = "engine", run_id = %run_id, trace_id = %run.trace_id, workflow = %run.workflow,
                step = %step_def.name, attempt, worker_id = %request.worker_id, "attempt claimed"
            );
            tasks.push(Claimed {
                queue: step_def.queue.clone(),
                queue_wait_ms: decided.queue_wait_ms,
                task: ClaimedTask {
                    lease_id: claim.lease_id.clone(),
                    run_id: run_id.clone(),
                    trace_id: run.trace_id.clone(),
                    workflow: run.workflow.clone(),
                    step: step_def.name.clone(),
                    attempt,
                    handler: step_def.handler().unwrap_or_default().to_owned(),
                    input,
                    span_id: claim.span_id.clone(),
                    deadline_at_ms: decided.deadline_at,
                    timeout_ms: step_def.timeout_ms.map(|t| t as i64),
                    lease_ms: decided.lease_ms,
                    baggage: run.baggage.clone(),
                    max_output_bytes: self.settings().max_output_bytes,
                },
            });
            attempts.push(claim);
        }
        let started_runs = self
            .write_claims(&mut tx, request, &attempts, &mut runs, now)
            .await?;
        tx.commit().await?;
        for task in &tasks {
            self.observer().observe(&Observation::AttemptClaimed {
                queue: &task.queue,
                queue_wait_ms: task.queue_wait_ms,
            });
        }
        if started_runs > 0 {
            tracing::debug!(
                component = "engine",
                started_runs,
                "runs started by a claim"
            );
        }
        self.observe_operation("claim", started);
        Ok(tasks.into_iter().map(|claimed| claimed.task).collect())
    }

    /// Writes a batch of claims: the steps go `running`, each attempt and
    /// its lease are inserted, pending runs start, with their history rows,
    /// each kind in one statement. Returns how many runs started.
    async fn write_claims(
        &self,
        tx: &mut Tx,
        request: &ClaimRequest,
        attempts: &[NewAttempt],
        runs: &mut HashMap<String, RunInfo>,
        now: i64,
    ) -> Result<usize> {
        let worker_id = &request.worker_id;
        let mut sql = format!(
            "UPDATE weft_steps SET status = '{}', n_attempts = n_attempts + 1, updated_at = $1 \
             WHERE (run_id, position) IN (",
            attempt::CLAIMED_STEP.as_str()
        );
        let mut values = args![now];
        for (i, a) in attempts.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            crate::db::push_tuple(&mut sql, 2 + 2 * i, 2);
            values.extend(args![&a.run_id, a.position]);
        }
        sql.push(')');
        tx.execute(&sql, values).await?;

        const ATTEMPT_COLUMNS: usize = 7;
        let mut sql = String::from(
            "INSERT INTO weft_attempts (worker_id, claimed_at, status, run_id, position, attempt, lease_id, span_id, \
             ready_at, deadline_at) VALUES ",
        );
        let mut values = args![worker_id, now];
        for (i, a) in attempts.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            let mut tuple = String::new();
            crate::db::push_tuple(&mut tuple, 3 + ATTEMPT_COLUMNS * i, ATTEMPT_COLUMNS);
            sql.push_str("($1, $2, '");
            sql.push_str(attempt::CLAIMED_ATTEMPT.as_str());
            sql.push_str("', ");
            sql.push_str(&tuple[1..]);
            values.extend(args![
                &a.run_id,
                a.position,
                a.attempt,
                &a.lease_id,
                &a.span_id,
                a.claim.ready_at,
                a.claim.deadline_at
            ]);
        }
        tx.execute(&sql, values).await?;

        const LEASE_COLUMNS: usize = 10;
        let mut sql = String::from(
            "INSERT INTO weft_leases (worker_id, claimed_at, token_id, lease_id, run_id, position, attempt, queue, lease_ms, \
             expires_at, deadline_at, span_id, ready_at) VALUES ",
        );
        let mut values = args![worker_id, now, request.token_id.as_deref()];
        for (i, a) in attempts.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            let mut tuple = String::new();
            crate::db::push_tuple(&mut tuple, 4 + LEASE_COLUMNS * i, LEASE_COLUMNS);
            sql.push_str("($1, $2, $3, ");
            sql.push_str(&tuple[1..]);
            values.extend(args![
                &a.lease_id,
                &a.run_id,
                a.position,
                a.attempt,
                &a.queue,
                a.claim.lease_ms,
                a.claim.expires_at,
                a.claim.deadline_at,
                &a.span_id,
                a.claim.ready_at
            ]);
        }
        tx.execute(&sql, values).await?;

        // Runs still pending start with their first claim. This transaction
        // holds step locks, so on Postgres it must not wait for a run row: a
        // cancel holds that lock while it waits for these steps, a deadlock.
        // A run whose row is locked is moved on by whoever holds it (cancel;
        // another claim), or the machine marks it started with this attempt's
        // result.
        let pending: Vec<&String> = runs
            .iter()
            .filter(|(_, info)| info.status == RunStatus::Pending)
            .map(|(id, _)| id)
            .collect();
        let mut started: Vec<String> = Vec::new();
        if !pending.is_empty() {
            // Only the primary key may pick these rows: with `status` in the
            // condition the planner can choose the active-runs index and walk
            // every pending run (stale statistics make that look cheap).
            started = match self.dialect() {
                Dialect::Postgres => {
                    let sql = format!(
                        "SELECT run_id, status FROM weft_runs WHERE run_id IN ({}) FOR UPDATE SKIP LOCKED",
                        placeholders(1, pending.len())
                    );
                    let locked: Vec<String> = tx
                        .fetch_all(&sql, pending.iter().map(|id| Arg::from(*id)).collect())
                        .await?
                        .into_iter()
                        .filter(|r| {
                            r.text("status")
                                .is_ok_and(|s| s == RunStatus::Pending.as_str())
                        })
                        .map(|r| r.text("run_id"))
                        .collect::<Result<_>>()?;
                    if !locked.is_empty() {
                        let sql = format!(
                            "UPDATE weft_runs SET status = '{}', started_at = $1, updated_at = $1 \
                             WHERE run_id IN ({})",
                            attempt::STARTED_RUN.as_str(),
                            placeholders(2, locked.len())
                        );
                        let mut values = args![now];
                        values.extend(locked.iter().map(Arg::from));
                        tx.execute(&sql, values).await?;
                    }
                    locked
                }
                Dialect::Sqlite => {
                    // `+status`: not an index column for the planner.
                    let sql = format!(
                        "UPDATE weft_runs SET status = '{}', started_at = $1, updated_at = $1 \
                         WHERE run_id IN ({}) AND +status = '{}' RETURNING run_id",
                        attempt::STARTED_RUN.as_str(),
                        placeholders(2, pending.len()),
                        RunStatus::Pending.as_str()
                    );
                    let mut values = args![now];
                    values.extend(pending.iter().map(|id| Arg::from(*id)));
                    tx.fetch_all(&sql, values)
                        .await?
                        .into_iter()
                        .map(|r| r.text("run_id"))
                        .collect::<Result<_>>()?
                }
            };
        }
        let mut events = Vec::with_capacity(attempts.len() + started.len());
        for a in attempts {
            let info = runs.get_mut(&a.run_id).expect("loaded with the claim");
            // Of several claims of one pending run, the first starts it; and
            // only if its row was ours to update (see above).
            let starts_run = info.status == RunStatus::Pending && started.contains(&a.run_id);
            if a.claim.starts_run {
                info.status = attempt::STARTED_RUN;
            }
            for kind in a.claim.events() {
                let (step, attempt, data) = match kind {
                    EventKind::AttemptClaimed => (
                        Some(a.step.clone()),
                        Some(a.attempt),
                        a.claim.data(worker_id, &a.span_id),
                    ),
                    _ if starts_run => (None, None, serde_json::json!({})),
                    _ => continue,
                };
                events.push(EventRow {
                    run_id: a.run_id.clone(),
                    kind,
                    at: now,
                    step,
                    attempt,
                    data,
                });
            }
        }
        insert_events(tx, &events).await?;
        Ok(started.len())
    }
}

/// An attempt being claimed, before it is written.
struct NewAttempt {
    run_id: String,
    position: i64,
    attempt: i64,
    lease_id: String,
    span_id: String,
    step: String,
    queue: String,
    /// What the core decided for it.
    claim: attempt::Claim,
}

/// A task with what the claim's observation needs.
struct Claimed {
    task: ClaimedTask,
    queue: String,
    queue_wait_ms: i64,
}

struct RunInfo {
    trace_id: String,
    baggage: Option<String>,
    workflow: String,
    version: i64,
    status: RunStatus,
    input: Value,
}

/// A claimed step row's run (joined to it); a corrupt row is an error.
fn run_info(row: &crate::db::Row) -> Result<RunInfo> {
    Ok(RunInfo {
        trace_id: row.text("trace_id")?,
        baggage: row.opt_text("baggage")?,
        workflow: row.text("workflow")?,
        version: row.int("version")?,
        status: row.status("run_status", RunStatus::parse)?,
        input: serde_json::from_str(&row.text("input")?).unwrap_or(Value::Null),
    })
}

/// Checks the step columns the claim reads, so that a corrupt step row is
/// found before anything is written.
fn check_step_row(row: &crate::db::Row) -> Result<()> {
    row.int("position")?;
    row.int("n_attempts")?;
    row.opt_int("ready_at")?;
    Ok(())
}
