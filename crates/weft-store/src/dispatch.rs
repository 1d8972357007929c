//! The worker side of the store: claiming ready steps under a lease,
//! heartbeats, results, step logs, and the engine's sweeps for due timers,
//! expired leases and attempts past their deadline.
//!
//! Fencing: every result names its lease. The lease row exists only while its
//! attempt is out; reaping or a timeout deletes it, so a late worker's result
//! finds no lease and is rejected (`stale_lease`) without touching state.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;
use weft_api::{AttemptTiming, HeartbeatResponse, Task, WorkerTiming};
use weft_core::{
    AttemptStatus, Reason, StepStatus, machine::Event, observe::Observation,
    trace::format_traceparent,
};

use crate::{
    Error, Problem, Result, Store, args,
    db::{Arg, Dialect, Tx, placeholders},
    results::{EndedAttempt, observed_timing, previous_span_id},
    rfc3339,
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

/// A worker's report that an attempt failed.
#[derive(Debug, Clone)]
pub struct FailReport {
    pub reason: Reason,
    pub message: String,
    pub retryable: bool,
    pub timing: Option<WorkerTiming>,
}

#[derive(Debug, Clone)]
pub struct WorkerSeen {
    pub worker_id: String,
    pub queues: Vec<String>,
    pub handlers: Vec<String>,
    pub last_seen_ms: i64,
}

struct LeaseRow {
    run_id: String,
    position: i64,
    attempt: i64,
}

impl Store {
    /// Claims up to `max_tasks` ready steps for a worker. Returns at once;
    /// long polling is the engine's business.
    pub async fn claim(&self, request: &ClaimRequest) -> Result<Vec<Task>> {
        let started = std::time::Instant::now();
        if request.queues.is_empty() || request.handlers.is_empty() || request.max_tasks == 0 {
            return Ok(Vec::new());
        }
        let n_queues = request.queues.len();
        let filter = format!(
            "status = 'ready' AND queue IN ({}) AND handler IN ({})",
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
            let attempt = row.int("n_attempts")? + 1;
            let lease_ms = step_def
                .heartbeat_timeout_ms
                .unwrap_or(self.settings().lease.as_millis() as u64)
                as i64;
            let deadline = step_def.timeout_ms.map(|t| now + t as i64);
            let ready_at = row.opt_int("ready_at")?.unwrap_or(now);
            let claim = NewAttempt {
                run_id: run_id.clone(),
                position,
                attempt,
                lease_id: uuid::Uuid::new_v4().to_string(),
                span_id: random_hex(8),
                step: step_def.name.clone(),
                queue: step_def.queue.clone(),
                ready_at,
                lease_ms,
                deadline,
            };
            tracing::debug!(
                component = "engine", run_id = %run_id, trace_id = %run.trace_id, workflow = %run.workflow,
                step = %step_def.name, attempt, worker_id = %request.worker_id, "attempt claimed"
            );
            tasks.push(Claimed {
                queue: step_def.queue.clone(),
                queue_wait_ms: (now - ready_at).max(0),
                task: Task {
                    lease_id: claim.lease_id.clone(),
                    run_id: run_id.clone(),
                    trace_id: run.trace_id.clone(),
                    workflow: run.workflow.clone(),
                    step: step_def.name.clone(),
                    attempt,
                    handler: step_def.handler().unwrap_or_default().to_owned(),
                    input,
                    traceparent: format_traceparent(&run.trace_id, &claim.span_id),
                    deadline: deadline.map(rfc3339),
                    timeout_ms: step_def.timeout_ms.map(|t| t as i64),
                    lease_ms,
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
        let mut sql = String::from(
            "UPDATE weft_steps SET status = 'running', n_attempts = n_attempts + 1, updated_at = $1 \
             WHERE (run_id, position) IN (",
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
            sql.push_str("($1, $2, 'running', ");
            sql.push_str(&tuple[1..]);
            values.extend(args![
                &a.run_id,
                a.position,
                a.attempt,
                &a.lease_id,
                &a.span_id,
                a.ready_at,
                a.deadline
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
                a.lease_ms,
                now + a.lease_ms,
                a.deadline,
                &a.span_id,
                a.ready_at
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
            .filter(|(_, info)| info.status == "pending")
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
                        .filter(|r| r.text("status").is_ok_and(|s| s == "pending"))
                        .map(|r| r.text("run_id"))
                        .collect::<Result<_>>()?;
                    if !locked.is_empty() {
                        let sql = format!(
                            "UPDATE weft_runs SET status = 'running', started_at = $1, updated_at = $1 \
                             WHERE run_id IN ({})",
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
                        "UPDATE weft_runs SET status = 'running', started_at = $1, updated_at = $1 \
                         WHERE run_id IN ({}) AND +status = 'pending' RETURNING run_id",
                        placeholders(2, pending.len())
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
            events.push(EventRow {
                run_id: a.run_id.clone(),
                kind: "attempt.claimed",
                at: now,
                step: Some(a.step.clone()),
                attempt: Some(a.attempt),
                data: serde_json::json!({"worker_id": worker_id, "span_id": a.span_id, "queue_wait_ms": (now - a.ready_at).max(0)}),
            });
            let info = runs.get_mut(&a.run_id).expect("loaded with the claim");
            if info.status == "pending" {
                info.status = "running".to_owned();
                if started.contains(&a.run_id) {
                    events.push(EventRow {
                        run_id: a.run_id.clone(),
                        kind: "run.started",
                        at: now,
                        step: None,
                        attempt: None,
                        data: serde_json::json!({}),
                    });
                }
            }
        }
        insert_events(tx, &events).await?;
        Ok(started.len())
    }

    /// Renews a lease. Answers `cancel_requested` when the run has ended or
    /// the attempt no longer counts; a lease that is gone is a conflict.
    pub async fn heartbeat(&self, lease_id: &str) -> Result<HeartbeatResponse> {
        let now = self.now_ms();
        let mut tx = self.pool().begin().await?;
        let row = tx
            .fetch_optional(
                "SELECT l.lease_ms, l.deadline_at, a.status AS attempt_status, r.status AS run_status FROM weft_leases l \
                 JOIN weft_attempts a ON a.lease_id = l.lease_id JOIN weft_runs r ON r.run_id = l.run_id \
                 WHERE l.lease_id = $1",
                args![lease_id],
            )
            .await?
            .ok_or_else(|| Error::stale_lease(lease_id))?;
        let run_ended = row
            .status("run_status", weft_core::RunStatus::parse)?
            .is_terminal();
        // Past its start-to-close deadline the attempt no longer counts, even
        // before the reaper has ended it: the worker should stop now.
        let timed_out = row
            .opt_int("deadline_at")?
            .is_some_and(|deadline| deadline <= now);
        let cancel_requested = run_ended
            || timed_out
            || row.status("attempt_status", AttemptStatus::parse)? != AttemptStatus::Running;
        if !cancel_requested {
            tx.execute(
                "UPDATE weft_leases SET expires_at = $2 + lease_ms WHERE lease_id = $1",
                args![lease_id, now],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(HeartbeatResponse { cancel_requested })
    }

    /// Keeps a worker's log lines for an attempt (stderr of exec handlers).
    pub async fn append_logs(&self, lease_id: &str, lines: &[String]) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let row = self
            .pool()
            .fetch_optional(
                "SELECT l.run_id, l.attempt, s.name FROM weft_leases l JOIN weft_steps s ON s.run_id = l.run_id AND s.position = l.position \
                 WHERE l.lease_id = $1",
                args![lease_id],
            )
            .await?
            .ok_or_else(|| Error::stale_lease(lease_id))?;
        let now = self.now_ms();
        let mut tx = self.pool().begin().await?;
        for chunk in lines.chunks(200) {
            let mut sql =
                String::from("INSERT INTO weft_logs (run_id, step, attempt, at, line) VALUES ");
            let mut values = args![
                row.text("run_id")?,
                row.text("name")?,
                row.int("attempt")?,
                now
            ];
            for (i, line) in chunk.iter().enumerate() {
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!("($1, $2, $3, $4, ${})", 5 + i));
                // Lines are capped so one chatty handler cannot bloat the store.
                values.push(Arg::from(truncate(line, 8192)));
            }
            tx.execute(&sql, values).await?;
        }
        tx.commit().await
    }

    /// Fires due timers: retry backoffs and sleeps. Idempotent, so any number
    /// of engines may run it. Returns how many were fired.
    pub async fn fire_due_timers(&self, limit: u32) -> Result<usize> {
        let now = self.now_ms();
        let (skip, mut values) = self.not_corrupt("run_id", 2);
        values.insert(0, Arg::from(now));
        let due = self
            .pool()
            .fetch_all(
                &format!(
                    "SELECT run_id, position FROM weft_steps WHERE due_at <= $1 AND status IN ('retrying', 'waiting'){skip} ORDER BY due_at LIMIT {limit}"
                ),
                values,
            )
            .await?;
        let mut fired = 0;
        for row in due {
            match self.fire_timer(&row, now).await {
                Ok(n) => fired += n,
                // A corrupt run is skipped (logged once); the others fire.
                Err(err @ Error::Corrupt(_)) => {
                    let err = match row.run_id() {
                        Some(run_id) => err.in_run(&run_id),
                        None => err,
                    };
                    self.skip_corrupt("timers", &err);
                }
                Err(err) => return Err(err),
            }
        }
        Ok(fired)
    }

    /// Fires one due timer row; returns 1 if it changed the run.
    async fn fire_timer(&self, row: &crate::db::Row, now: i64) -> Result<usize> {
        let mut tx = self.pool().begin().await?;
        let mut run = match self.lock_run(&mut tx, &row.text("run_id")?).await {
            Ok(run) => run,
            Err(Error::NotFound { .. }) => return Ok(0),
            Err(err) => return Err(err),
        };
        if run.state.status.is_terminal() {
            return Ok(0);
        }
        let step = usize::try_from(row.int("position")?)
            .ok()
            .filter(|&p| p < run.state.steps.len())
            .ok_or_else(|| {
                row.corrupt(
                    "position",
                    Problem::WrongType {
                        expected: "a step of the run's definition",
                    },
                )
            })?;
        let applied = self
            .apply_event(
                &mut tx,
                &mut run,
                Event::TimerFired { step },
                now,
                Vec::new(),
            )
            .await?;
        tx.commit().await?;
        // A fired sleep may finish the run.
        self.observe_applied(&run, &applied, now);
        if applied.made_ready {
            self.wake_pollers();
        }
        Ok(usize::from(!applied.effects.is_empty()))
    }

    /// Ends attempts whose lease lapsed (worker gone: `lease_expired`, or
    /// `heartbeat_timeout` when the step declared one) or whose start-to-close
    /// deadline passed (`timeout`). Idempotent. Returns how many were reaped.
    pub async fn reap(&self, limit: u32) -> Result<usize> {
        let now = self.now_ms();
        let (skip, mut values) = self.not_corrupt("run_id", 2);
        values.insert(0, Arg::from(now));
        let rows = self
            .pool()
            .fetch_all(
                &format!(
                    "SELECT lease_id, run_id FROM weft_leases WHERE (expires_at <= $1 OR deadline_at <= $1){skip} ORDER BY expires_at LIMIT {limit}"
                ),
                values,
            )
            .await?;
        let mut reaped = 0;
        for row in rows {
            match self.reap_lease(&row, now).await {
                Ok(n) => reaped += n,
                // A corrupt run is skipped (logged once); the others are reaped.
                Err(err @ Error::Corrupt(_)) => {
                    let err = match row.run_id() {
                        Some(run_id) => err.in_run(&run_id),
                        None => err,
                    };
                    self.skip_corrupt("reaper", &err);
                }
                Err(err) => return Err(err),
            }
        }
        Ok(reaped)
    }

    /// Reaps one lapsed lease row; returns 1 if its attempt was ended.
    async fn reap_lease(&self, row: &crate::db::Row, now: i64) -> Result<usize> {
        {
            let lease_id = row.text("lease_id")?;
            let mut tx = self.pool().begin().await?;
            let Some(mut run) = self.lock_run_of_lease(&mut tx, &lease_id).await? else {
                return Ok(0); // finished or reaped meanwhile
            };
            // Read again under the run lock: a heartbeat or a result may have come.
            let check = tx
                .fetch_optional(
                    "SELECT l.position, l.attempt, l.expires_at, l.deadline_at, a.status, a.span_id, a.worker_id, \
                     a.claimed_at, a.ready_at \
                     FROM weft_leases l JOIN weft_attempts a ON a.lease_id = l.lease_id WHERE l.lease_id = $1",
                    args![&lease_id],
                )
                .await?;
            let Some(check) = check else { return Ok(0) };
            let lease = LeaseRow {
                run_id: run.run_id.clone(),
                position: check.int("position")?,
                attempt: check.int("attempt")?,
            };
            let timed_out = check.opt_int("deadline_at")?.is_some_and(|d| d <= now);
            let expired = check.int("expires_at")? <= now;
            if !timed_out && !expired {
                return Ok(0); // renewed by a heartbeat in the meantime
            }
            tx.execute(
                "DELETE FROM weft_leases WHERE lease_id = $1",
                args![&lease_id],
            )
            .await?;
            let position = usize::try_from(lease.position)
                .ok()
                .filter(|&p| p < run.state.steps.len() && p < run.def.steps.len())
                .ok_or_else(|| {
                    check.corrupt(
                        "position",
                        Problem::WrongType {
                            expected: "a step of the run's definition",
                        },
                    )
                })?;
            if check.status("status", AttemptStatus::parse)? != AttemptStatus::Running
                || run.state.steps[position].status != StepStatus::Running
            {
                tx.commit().await?; // an attempt of an ended run: just drop its lease
                return Ok(0);
            }
            let step_def = &run.def.steps[position];
            let step_name = step_def.name.clone();
            let step_def_queue = step_def.queue.clone();
            let (reason, message) = if timed_out {
                (
                    Reason::Timeout,
                    format!(
                        "attempt exceeded its start-to-close timeout of {} ms",
                        step_def.timeout_ms.unwrap_or(0)
                    ),
                )
            } else if step_def.heartbeat_timeout_ms.is_some() {
                (
                    Reason::HeartbeatTimeout,
                    "no heartbeat within the step's heartbeat_timeout".to_owned(),
                )
            } else {
                (
                    Reason::LeaseExpired,
                    "the worker stopped renewing its lease (it crashed or lost the network)"
                        .to_owned(),
                )
            };
            let claimed_at = check.int("claimed_at")?;
            let timing = attempt_timing(
                check.opt_int("ready_at")?.unwrap_or(claimed_at),
                claimed_at,
                now,
                now,
                None,
            );
            tx.execute(
                "UPDATE weft_attempts SET status = 'failed', reason = $2, error = $3, finished_at = $4, timing = $5 WHERE lease_id = $1",
                args![&lease_id, reason.as_str(), &message, now, serde_json::to_string(&timing).expect("timing serializes")],
            )
            .await?;
            let mut events = Vec::with_capacity(2);
            if !timed_out {
                events.push(EventRow {
                    run_id: lease.run_id.clone(),
                    kind: "lease.expired",
                    at: now,
                    step: Some(step_name.clone()),
                    attempt: Some(lease.attempt),
                    data: serde_json::json!({"reason": reason.as_str()}),
                });
            }
            events.push(EventRow {
                run_id: lease.run_id.clone(),
                kind: "attempt.failed",
                at: now,
                step: Some(step_name.clone()),
                attempt: Some(lease.attempt),
                data: serde_json::json!({"reason": reason.as_str(), "error": message, "retryable": true}),
            });
            tracing::info!(component = "engine", run_id = %lease.run_id, trace_id = %run.trace_id, workflow = %run.workflow, step = %step_name, attempt = lease.attempt, reason = reason.as_str(), error = %message, "attempt reaped");
            let previous_span_id =
                previous_span_id(&mut tx, &lease.run_id, lease.position, lease.attempt).await?;
            let event = Event::AttemptFailed {
                step: position,
                reason,
                message: message.clone(),
                retryable: true,
            };
            let applied = self
                .apply_event(&mut tx, &mut run, event, now, events)
                .await?;
            tx.commit().await?;
            if !timed_out {
                self.observer().observe(&Observation::LeaseExpired {
                    queue: &step_def_queue,
                });
            }
            let ended = EndedAttempt {
                position,
                attempt: lease.attempt,
                span_id: check.text("span_id")?,
                previous_span_id,
                worker_id: check.text("worker_id")?,
                claimed_at,
                status: AttemptStatus::Failed,
                reason: Some(reason),
                error: Some(message),
                timing: observed_timing(&timing),
            };
            self.observer()
                .observe(&Observation::AttemptFinished(ended.record(&run, now)));
            self.observe_applied(&run, &applied, now);
            if applied.made_ready {
                self.wake_pollers();
            }
            Ok(1)
        }
    }

    /// Records that a worker polled, for "who serves this queue" views.
    pub async fn touch_worker(
        &self,
        worker_id: &str,
        queues: &[String],
        handlers: &[String],
    ) -> Result<()> {
        self.pool()
            .execute(
                "INSERT INTO weft_workers (worker_id, queues, handlers, last_seen_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (worker_id) DO UPDATE SET queues = $2, handlers = $3, last_seen_at = $4",
                args![worker_id, queues.join(","), handlers.join(","), self.now_ms()],
            )
            .await
            .map(|_| ())
    }

    pub async fn workers_seen(&self, since_ms: i64) -> Result<Vec<WorkerSeen>> {
        let rows = self
            .pool()
            .fetch_all(
                "SELECT worker_id, queues, handlers, last_seen_at FROM weft_workers WHERE last_seen_at >= $1 ORDER BY worker_id",
                args![since_ms],
            )
            .await?;
        let split = |s: String| {
            s.split(',')
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect()
        };
        rows.into_iter()
            .map(|r| {
                Ok(WorkerSeen {
                    worker_id: r.text("worker_id")?,
                    queues: split(r.text("queues")?),
                    handlers: split(r.text("handlers")?),
                    last_seen_ms: r.int("last_seen_at")?,
                })
            })
            .collect::<Result<_>>()
    }
}

/// A task with what the claim's observation needs.
/// An attempt being claimed, before it is written.
struct NewAttempt {
    run_id: String,
    position: i64,
    attempt: i64,
    lease_id: String,
    span_id: String,
    step: String,
    queue: String,
    ready_at: i64,
    lease_ms: i64,
    deadline: Option<i64>,
}

struct Claimed {
    task: Task,
    queue: String,
    queue_wait_ms: i64,
}

struct RunInfo {
    trace_id: String,
    baggage: Option<String>,
    workflow: String,
    version: i64,
    status: String,
    input: Value,
}

/// A claimed step row's run (joined to it); a corrupt row is an error.
fn run_info(row: &crate::db::Row) -> Result<RunInfo> {
    Ok(RunInfo {
        trace_id: row.text("trace_id")?,
        baggage: row.opt_text("baggage")?,
        workflow: row.text("workflow")?,
        version: row.int("version")?,
        status: row
            .status("run_status", weft_core::RunStatus::parse)?
            .as_str()
            .to_owned(),
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

/// Builds an attempt's timing buckets. Worker-reported numbers are clamped to
/// the engine's own window (claim → result received): they are shown, never
/// trusted to move state.
pub(crate) fn attempt_timing(
    ready_at: i64,
    claimed_at: i64,
    received_ms: i64,
    committed_ms: i64,
    worker: Option<&WorkerTiming>,
) -> AttemptTiming {
    let window = (received_ms - claimed_at).max(0);
    let clamp = |v: Option<i64>| v.map(|ms| ms.clamp(0, window));
    let handler_ms = clamp(worker.and_then(|w| w.handler_ms));
    let dispatch_ms =
        clamp(worker.and_then(|w| w.dispatch_ms)).map(|d| d.min(window - handler_ms.unwrap_or(0)));
    AttemptTiming {
        queue_wait_ms: (claimed_at - ready_at).max(0),
        dispatch_ms,
        handler_ms,
        ingest_ms: (committed_ms - received_ms).max(0),
        total_ms: (committed_ms - claimed_at).max(0),
    }
}

pub(crate) fn truncate(line: &str, max: usize) -> String {
    if line.len() <= max {
        return line.to_owned();
    }
    let mut end = max;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &line[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_clamps_worker_numbers() {
        let worker = WorkerTiming {
            dispatch_ms: Some(5),
            handler_ms: Some(1_000_000),
        };
        let t = attempt_timing(100, 150, 400, 410, Some(&worker));
        assert_eq!(t.queue_wait_ms, 50);
        assert_eq!(t.handler_ms, Some(250));
        assert_eq!(t.dispatch_ms, Some(0));
        assert_eq!(t.ingest_ms, 10);
        assert_eq!(t.total_ms, 260);
        let negative = WorkerTiming {
            dispatch_ms: Some(-3),
            handler_ms: Some(-1),
        };
        let t = attempt_timing(100, 150, 400, 410, Some(&negative));
        assert_eq!((t.dispatch_ms, t.handler_ms), (Some(0), Some(0)));
    }
}
