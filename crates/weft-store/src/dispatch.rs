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
    AttemptStatus, Reason, StepStatus,
    machine::Event,
    observe::{AttemptRecord, Observation, Timing},
    trace::format_traceparent,
};

use crate::{
    Error, Result, Store, args,
    db::{Arg, Dialect, Tx, placeholders},
    now_ms, rfc3339,
    runs::random_hex,
    transition::insert_event,
};

#[derive(Debug, Clone)]
pub struct ClaimRequest {
    pub worker_id: String,
    pub queues: Vec<String>,
    pub handlers: Vec<String>,
    pub max_tasks: u32,
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
            Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
            Dialect::Sqlite => "",
        };
        let sql = format!(
            "SELECT run_id, position, name, queue, handler, n_attempts, ready_at FROM weft_steps \
             WHERE {filter} ORDER BY ready_at LIMIT {}{lock}",
            request.max_tasks.min(100)
        );
        let mut tx = self.pool().begin().await?;
        let rows = tx.fetch_all(&sql, values).await?;
        // The claim time is read only once the rows are ours: read before the
        // transaction, it could predate the commit that made a step ready
        // (a dependant "claimed" before its dependency finished).
        let now = now_ms();
        let mut tasks = Vec::with_capacity(rows.len());
        let mut runs: HashMap<String, RunInfo> = HashMap::new();
        for row in rows {
            let run_id = row.text("run_id");
            if !runs.contains_key(&run_id) {
                let info = load_run_info(&mut tx, &run_id).await?;
                runs.insert(run_id.clone(), info);
            }
            let run = runs.get_mut(&run_id).expect("just inserted");
            let def = self
                .definition_in(&mut tx, &run.workflow, run.version)
                .await?;
            let position = row.int("position");
            let step_def = &def.steps[position as usize];
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
                            .opt_text("output")
                            .and_then(|t| serde_json::from_str(&t).ok())
                            .unwrap_or(Value::Null);
                        (r.text("name"), output)
                    })
                    .collect()
            };
            let input =
                weft_core::machine::task_input(&def, position as usize, &run.input, &outputs);
            let attempt = row.int("n_attempts") + 1;
            let lease_id = uuid::Uuid::new_v4().to_string();
            let span_id = random_hex(8);
            let lease_ms = step_def
                .heartbeat_timeout_ms
                .unwrap_or(self.settings().lease.as_millis() as u64)
                as i64;
            let deadline = step_def.timeout_ms.map(|t| now + t as i64);
            let ready_at = row.opt_int("ready_at").unwrap_or(now);
            tx.execute(
                "UPDATE weft_steps SET status = 'running', n_attempts = $3, updated_at = $4 WHERE run_id = $1 AND position = $2",
                args![&run_id, position, attempt, now],
            )
            .await?;
            tx.execute(
                "INSERT INTO weft_attempts (run_id, position, attempt, lease_id, span_id, worker_id, status, ready_at, claimed_at, deadline_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, 'running', $7, $8, $9)",
                args![&run_id, position, attempt, &lease_id, &span_id, &request.worker_id, ready_at, now, deadline],
            )
            .await?;
            tx.execute(
                "INSERT INTO weft_leases (lease_id, run_id, position, attempt, worker_id, queue, lease_ms, expires_at, deadline_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                args![&lease_id, &run_id, position, attempt, &request.worker_id, &step_def.queue, lease_ms, now + lease_ms, deadline],
            )
            .await?;
            let data = serde_json::json!({"worker_id": request.worker_id, "span_id": span_id, "queue_wait_ms": (now - ready_at).max(0)});
            insert_event(
                &mut tx,
                &run_id,
                "attempt.claimed",
                now,
                Some(&step_def.name),
                Some(attempt),
                &data,
            )
            .await?;
            if run.status == "pending" {
                // This transaction holds step locks, so on Postgres it must not
                // wait for the run row: a cancel holds that lock while it waits
                // for these steps, a deadlock. When the row is locked, whoever
                // holds it moves the run on (cancel; another claim), or the
                // machine marks it started with this attempt's result.
                let sql = match self.dialect() {
                    Dialect::Postgres => {
                        "UPDATE weft_runs SET status = 'running', started_at = $2, updated_at = $2 WHERE run_id = \
                         (SELECT run_id FROM weft_runs WHERE run_id = $1 AND status = 'pending' FOR UPDATE SKIP LOCKED)"
                    }
                    Dialect::Sqlite => {
                        "UPDATE weft_runs SET status = 'running', started_at = $2, updated_at = $2 WHERE run_id = $1 AND status = 'pending'"
                    }
                };
                let changed = tx.execute(sql, args![&run_id, now]).await?;
                if changed > 0 {
                    insert_event(
                        &mut tx,
                        &run_id,
                        "run.started",
                        now,
                        None,
                        None,
                        &serde_json::json!({}),
                    )
                    .await?;
                }
                run.status = "running".to_owned();
            }
            tracing::debug!(
                component = "engine", run_id = %run_id, trace_id = %run.trace_id, workflow = %run.workflow,
                step = %step_def.name, attempt, worker_id = %request.worker_id, "attempt claimed"
            );
            tasks.push(Claimed {
                queue: step_def.queue.clone(),
                queue_wait_ms: (now - ready_at).max(0),
                task: Task {
                    lease_id,
                    run_id: run_id.clone(),
                    trace_id: run.trace_id.clone(),
                    workflow: run.workflow.clone(),
                    step: step_def.name.clone(),
                    attempt,
                    handler: step_def.handler().unwrap_or_default().to_owned(),
                    input,
                    traceparent: format_traceparent(&run.trace_id, &span_id),
                    deadline: deadline.map(rfc3339),
                    timeout_ms: step_def.timeout_ms.map(|t| t as i64),
                    lease_ms,
                    baggage: run.baggage.clone(),
                },
            });
        }
        tx.commit().await?;
        for task in &tasks {
            self.observer().observe(&Observation::AttemptClaimed {
                queue: &task.queue,
                queue_wait_ms: task.queue_wait_ms,
            });
        }
        self.observe_operation("claim", started);
        Ok(tasks.into_iter().map(|claimed| claimed.task).collect())
    }

    /// Renews a lease. Answers `cancel_requested` when the run has ended or
    /// the attempt no longer counts; a lease that is gone is a conflict.
    pub async fn heartbeat(&self, lease_id: &str) -> Result<HeartbeatResponse> {
        let now = now_ms();
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
        let run_ended =
            weft_core::RunStatus::parse(&row.text("run_status")).is_none_or(|s| s.is_terminal());
        // Past its start-to-close deadline the attempt no longer counts, even
        // before the reaper has ended it: the worker should stop now.
        let timed_out = row
            .opt_int("deadline_at")
            .is_some_and(|deadline| deadline <= now);
        let cancel_requested = run_ended || timed_out || row.text("attempt_status") != "running";
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

    /// Loads a lease after locking its run, or fails with `stale_lease`.
    async fn locked_lease(
        &self,
        tx: &mut Tx,
        lease_id: &str,
    ) -> Result<(LeaseRow, crate::transition::LockedRun)> {
        let run_id = tx
            .fetch_optional(
                "SELECT run_id FROM weft_leases WHERE lease_id = $1",
                args![lease_id],
            )
            .await?
            .ok_or_else(|| Error::stale_lease(lease_id))?
            .text("run_id");
        let run = self.lock_run(tx, &run_id).await?;
        // Read again under the run lock: the reaper may have taken it meanwhile.
        let row = tx
            .fetch_optional(
                "SELECT run_id, position, attempt FROM weft_leases WHERE lease_id = $1",
                args![lease_id],
            )
            .await?
            .ok_or_else(|| Error::stale_lease(lease_id))?;
        Ok((
            LeaseRow {
                run_id: row.text("run_id"),
                position: row.int("position"),
                attempt: row.int("attempt"),
            },
            run,
        ))
    }

    /// Records a successful attempt and moves the run on.
    pub async fn complete(
        &self,
        lease_id: &str,
        output: Value,
        timing: Option<WorkerTiming>,
        received_ms: i64,
    ) -> Result<()> {
        let outcome = Outcome::Completed(output);
        self.finish_attempt(lease_id, outcome, timing, received_ms)
            .await
    }

    /// Records a failed attempt: the step retries or fails per its policy.
    pub async fn fail(&self, lease_id: &str, report: FailReport, received_ms: i64) -> Result<()> {
        let timing = report.timing.clone();
        self.finish_attempt(lease_id, Outcome::Failed(report), timing, received_ms)
            .await
    }

    async fn finish_attempt(
        &self,
        lease_id: &str,
        outcome: Outcome,
        timing: Option<WorkerTiming>,
        received_ms: i64,
    ) -> Result<()> {
        let started = std::time::Instant::now();
        let mut tx = self.pool().begin().await?;
        let (lease, mut run) = self.locked_lease(&mut tx, lease_id).await?;
        let now = now_ms();
        let attempt_row = tx
            .fetch_optional(
                "SELECT status, span_id, worker_id, ready_at, claimed_at, deadline_at FROM weft_attempts WHERE lease_id = $1",
                args![lease_id],
            )
            .await?
            .ok_or_else(|| Error::stale_lease(lease_id))?;
        tx.execute(
            "DELETE FROM weft_leases WHERE lease_id = $1",
            args![lease_id],
        )
        .await?;
        let position = lease.position as usize;
        let step_name = run.def.steps[position].name.clone();
        if attempt_row.text("status") != "running"
            || run.state.steps[position].status != StepStatus::Running
        {
            // The run ended (cancelled or failed elsewhere) while this attempt
            // was out: release the lease, record nothing else.
            tx.commit().await?;
            return Err(Error::Conflict {
                code: "attempt_not_running",
                message: format!(
                    "attempt {} of step `{step_name}` no longer counts: its run is {}",
                    lease.attempt, run.state.status
                ),
            });
        }
        // A result that arrives after the start-to-close deadline is the
        // timeout the reaper would have recorded a moment later: record it as
        // such, so the outcome does not depend on which came first.
        let late = attempt_row
            .opt_int("deadline_at")
            .is_some_and(|deadline| received_ms > deadline);
        let outcome = match outcome {
            Outcome::Completed(_) | Outcome::Failed(_) if late => Outcome::Failed(FailReport {
                reason: Reason::Timeout,
                message: "the result arrived after the step's start-to-close timeout".to_owned(),
                retryable: true,
                timing: timing.clone(),
            }),
            other => other,
        };
        let claimed_at = attempt_row.int("claimed_at");
        let ready_at = attempt_row.opt_int("ready_at").unwrap_or(claimed_at);
        let timing = attempt_timing(ready_at, claimed_at, received_ms, now, timing.as_ref());
        let timing_json = serde_json::to_string(&timing).expect("timing serializes");
        let (status, event, kind, reason, error, data) = match outcome {
            Outcome::Completed(output) => (
                "completed",
                Event::AttemptCompleted {
                    step: position,
                    output,
                },
                "attempt.completed",
                None,
                None,
                serde_json::json!({"timing": timing}),
            ),
            Outcome::Failed(report) => (
                "failed",
                Event::AttemptFailed {
                    step: position,
                    reason: report.reason,
                    message: report.message.clone(),
                    retryable: report.retryable,
                },
                "attempt.failed",
                Some(report.reason.as_str()),
                Some(report.message.clone()),
                serde_json::json!({"timing": timing, "reason": report.reason.as_str(), "error": report.message, "retryable": report.retryable}),
            ),
        };
        tx.execute(
            "UPDATE weft_attempts SET status = $2, reason = $3, error = $4, finished_at = $5, timing = $6 WHERE lease_id = $1",
            args![lease_id, status, reason, error.clone(), now, timing_json],
        )
        .await?;
        insert_event(
            &mut tx,
            &lease.run_id,
            kind,
            now,
            Some(&step_name),
            Some(lease.attempt),
            &data,
        )
        .await?;
        let previous_span_id =
            previous_span_id(&mut tx, &lease.run_id, lease.position, lease.attempt).await?;
        let applied = self.apply_event(&mut tx, &mut run, event, now).await?;
        tx.commit().await?;
        let (span_id, worker_id) = (attempt_row.text("span_id"), attempt_row.text("worker_id"));
        self.observer()
            .observe(&Observation::AttemptFinished(AttemptRecord {
                run_id: &run.run_id,
                trace_id: &run.trace_id,
                run_span_id: &run.span_id,
                run_parent_span_id: run.parent_span_id.as_deref(),
                span_id: &span_id,
                previous_span_id: previous_span_id.as_deref(),
                workflow: &run.workflow,
                version: run.version,
                step: &step_name,
                attempt: lease.attempt,
                queue: &run.def.steps[position].queue,
                worker_id: &worker_id,
                claimed_at_ms: claimed_at,
                finished_at_ms: now,
                status: if status == "completed" {
                    AttemptStatus::Completed
                } else {
                    AttemptStatus::Failed
                },
                reason: reason.and_then(Reason::parse),
                error: error.as_deref(),
                timing: observed_timing(&timing),
            }));
        self.observe_applied(&run, &applied, now);
        self.observe_operation(
            if status == "completed" {
                "complete"
            } else {
                "fail"
            },
            started,
        );
        if applied.made_ready {
            self.wake_pollers();
        }
        if late {
            return Err(Error::Conflict {
                code: "deadline_exceeded",
                message: format!(
                    "attempt {} of step `{step_name}` reported after its deadline; it was recorded as timed out",
                    lease.attempt
                ),
            });
        }
        Ok(())
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
        let now = now_ms();
        let mut tx = self.pool().begin().await?;
        for chunk in lines.chunks(200) {
            let mut sql =
                String::from("INSERT INTO weft_logs (run_id, step, attempt, at, line) VALUES ");
            let mut values = args![
                row.text("run_id"),
                row.text("name"),
                row.int("attempt"),
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
        let now = now_ms();
        let due = self
            .pool()
            .fetch_all(
                &format!(
                    "SELECT run_id, position FROM weft_steps WHERE due_at <= $1 AND status IN ('retrying', 'waiting') ORDER BY due_at LIMIT {limit}"
                ),
                args![now],
            )
            .await?;
        let mut fired = 0;
        for row in due {
            let mut tx = self.pool().begin().await?;
            let mut run = match self.lock_run(&mut tx, &row.text("run_id")).await {
                Ok(run) => run,
                Err(Error::NotFound { .. }) => continue,
                Err(err) => return Err(err),
            };
            if run.state.status.is_terminal() {
                continue;
            }
            let applied = self
                .apply_event(
                    &mut tx,
                    &mut run,
                    Event::TimerFired {
                        step: row.int("position") as usize,
                    },
                    now,
                )
                .await?;
            tx.commit().await?;
            // A fired sleep may finish the run.
            self.observe_applied(&run, &applied, now);
            fired += usize::from(!applied.effects.is_empty());
            if applied.made_ready {
                self.wake_pollers();
            }
        }
        Ok(fired)
    }

    /// Ends attempts whose lease lapsed (worker gone: `lease_expired`, or
    /// `heartbeat_timeout` when the step declared one) or whose start-to-close
    /// deadline passed (`timeout`). Idempotent. Returns how many were reaped.
    pub async fn reap(&self, limit: u32) -> Result<usize> {
        let now = now_ms();
        let rows = self
            .pool()
            .fetch_all(
                &format!(
                    "SELECT lease_id FROM weft_leases WHERE expires_at <= $1 OR deadline_at <= $1 ORDER BY expires_at LIMIT {limit}"
                ),
                args![now],
            )
            .await?;
        let mut reaped = 0;
        for row in rows {
            let lease_id = row.text("lease_id");
            let mut tx = self.pool().begin().await?;
            let (lease, mut run) = match self.locked_lease(&mut tx, &lease_id).await {
                Ok(found) => found,
                Err(Error::Conflict { .. } | Error::NotFound { .. }) => continue,
                Err(err) => return Err(err),
            };
            let check = tx
                .fetch_optional(
                    "SELECT l.expires_at, l.deadline_at, a.status, a.span_id, a.worker_id, a.claimed_at, a.ready_at \
                     FROM weft_leases l JOIN weft_attempts a ON a.lease_id = l.lease_id WHERE l.lease_id = $1",
                    args![&lease_id],
                )
                .await?;
            let Some(check) = check else { continue };
            let timed_out = check.opt_int("deadline_at").is_some_and(|d| d <= now);
            let expired = check.int("expires_at") <= now;
            if !timed_out && !expired {
                continue; // renewed by a heartbeat in the meantime
            }
            tx.execute(
                "DELETE FROM weft_leases WHERE lease_id = $1",
                args![&lease_id],
            )
            .await?;
            let position = lease.position as usize;
            if check.text("status") != "running"
                || run.state.steps[position].status != StepStatus::Running
            {
                tx.commit().await?; // an attempt of an ended run: just drop its lease
                continue;
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
            let claimed_at = check.int("claimed_at");
            let timing = attempt_timing(
                check.opt_int("ready_at").unwrap_or(claimed_at),
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
            if !timed_out {
                insert_event(
                    &mut tx,
                    &lease.run_id,
                    "lease.expired",
                    now,
                    Some(&step_name),
                    Some(lease.attempt),
                    &serde_json::json!({"reason": reason.as_str()}),
                )
                .await?;
            }
            insert_event(
                &mut tx,
                &lease.run_id,
                "attempt.failed",
                now,
                Some(&step_name),
                Some(lease.attempt),
                &serde_json::json!({"reason": reason.as_str(), "error": message, "retryable": true}),
            )
            .await?;
            tracing::info!(component = "engine", run_id = %lease.run_id, workflow = %run.workflow, step = %step_name, attempt = lease.attempt, reason = reason.as_str(), "attempt reaped");
            let previous_span_id =
                previous_span_id(&mut tx, &lease.run_id, lease.position, lease.attempt).await?;
            let event = Event::AttemptFailed {
                step: position,
                reason,
                message: message.clone(),
                retryable: true,
            };
            let applied = self.apply_event(&mut tx, &mut run, event, now).await?;
            tx.commit().await?;
            if !timed_out {
                self.observer().observe(&Observation::LeaseExpired {
                    queue: &step_def_queue,
                });
            }
            let (span_id, worker_id) = (check.text("span_id"), check.text("worker_id"));
            self.observer()
                .observe(&Observation::AttemptFinished(AttemptRecord {
                    run_id: &run.run_id,
                    trace_id: &run.trace_id,
                    run_span_id: &run.span_id,
                    run_parent_span_id: run.parent_span_id.as_deref(),
                    span_id: &span_id,
                    previous_span_id: previous_span_id.as_deref(),
                    workflow: &run.workflow,
                    version: run.version,
                    step: &step_name,
                    attempt: lease.attempt,
                    queue: &step_def_queue,
                    worker_id: &worker_id,
                    claimed_at_ms: claimed_at,
                    finished_at_ms: now,
                    status: AttemptStatus::Failed,
                    reason: Some(reason),
                    error: Some(&message),
                    timing: observed_timing(&timing),
                }));
            self.observe_applied(&run, &applied, now);
            reaped += 1;
            if applied.made_ready {
                self.wake_pollers();
            }
        }
        Ok(reaped)
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
                args![worker_id, queues.join(","), handlers.join(","), now_ms()],
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
        Ok(rows
            .into_iter()
            .map(|r| WorkerSeen {
                worker_id: r.text("worker_id"),
                queues: split(r.text("queues")),
                handlers: split(r.text("handlers")),
                last_seen_ms: r.int("last_seen_at"),
            })
            .collect())
    }
}

/// A task with what the claim's observation needs.
struct Claimed {
    task: Task,
    queue: String,
    queue_wait_ms: i64,
}

enum Outcome {
    Completed(Value),
    Failed(FailReport),
}

struct RunInfo {
    trace_id: String,
    baggage: Option<String>,
    workflow: String,
    version: i64,
    status: String,
    input: Value,
}

async fn load_run_info(tx: &mut Tx, run_id: &str) -> Result<RunInfo> {
    let row = tx
        .fetch_optional(
            "SELECT trace_id, baggage, workflow, version, status, input FROM weft_runs WHERE run_id = $1",
            args![run_id],
        )
        .await?
        .ok_or_else(|| Error::NotFound {
            what: "run",
            id: run_id.to_owned(),
        })?;
    Ok(RunInfo {
        trace_id: row.text("trace_id"),
        baggage: row.opt_text("baggage"),
        workflow: row.text("workflow"),
        version: row.int("version"),
        status: row.text("status"),
        input: serde_json::from_str(&row.text("input")).unwrap_or(Value::Null),
    })
}

/// The span id of the attempt before `attempt` of the same step, if any: a
/// retry's span links to it.
async fn previous_span_id(
    tx: &mut Tx,
    run_id: &str,
    position: i64,
    attempt: i64,
) -> Result<Option<String>> {
    if attempt <= 1 {
        return Ok(None);
    }
    let row = tx
        .fetch_optional(
            "SELECT span_id FROM weft_attempts WHERE run_id = $1 AND position = $2 AND attempt = $3",
            args![run_id, position, attempt - 1],
        )
        .await?;
    Ok(row.map(|r| r.text("span_id")))
}

fn observed_timing(timing: &AttemptTiming) -> Timing {
    Timing {
        queue_wait_ms: timing.queue_wait_ms,
        dispatch_ms: timing.dispatch_ms,
        handler_ms: timing.handler_ms,
        ingest_ms: timing.ingest_ms,
        total_ms: timing.total_ms,
    }
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

fn truncate(line: &str, max: usize) -> String {
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
