//! Claiming ready steps for a worker: one set-based statement per kind of
//! row for the whole batch (steps `FOR UPDATE SKIP LOCKED`, no run lock), so
//! claims never wait on each other or on a run. What each claimed row gets
//! (attempt number, lease, deadline, whether the claim starts its run, the
//! history events) is decided by `weft_core::attempt::claim`.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;
use weft_core::{
    AttemptKind, AttemptStatus, EventKind, Reason, RunId, RunStatus, SpanId, StepStatus, TraceId,
    attempt, observe::Observation,
};

use crate::{
    Error, Problem, Result, Store, args,
    claim_hint::Kinds,
    db::{Arg, Dialect, Tx, placeholders},
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
    pub run_id: RunId,
    /// The run's trace id, 32 lowercase hex digits.
    pub trace_id: TraceId,
    pub workflow: String,
    pub step: String,
    /// 1 for the first attempt of the step.
    pub attempt: i64,
    pub handler: String,
    /// `{"input": <run input>, "steps": {<name>: <output>}}`.
    pub input: Value,
    /// The attempt span's id, 16 lowercase hex digits (with `trace_id`, the
    /// worker's `traceparent`).
    pub span_id: SpanId,
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
    /// Stable per (run, step, phase, `for_each` index): see
    /// `weft_core::idempotency::key`.
    pub idempotency_key: String,
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
        let queues = placeholders(1, n_queues);
        let handlers = placeholders(1 + n_queues, request.handlers.len());
        // A step is claimable when it is ready for its handler, or when its
        // undo is ready for its `compensate` handler. Each is its own
        // statement, walking its own partial index in `ready_at` order: one
        // statement with both under an OR would sort every ready row.
        let forward = |p: &str| {
            format!(
                "{p}status = '{}' AND {p}queue IN ({queues}) AND {p}handler IN ({handlers})",
                StepStatus::Ready.as_str(),
            )
        };
        // A `for_each` step is undone child by child (`claim_child_undos`).
        let undo = |p: &str| {
            format!(
                "{p}undo = '{}' AND {p}queue IN ({queues}) AND {p}compensate_handler IN ({handlers}) \
                 AND {p}children_total IS NULL",
                attempt::READY_UNDO.as_str(),
            )
        };
        let mut values: Vec<Arg> = request.queues.iter().map(Arg::from).collect();
        values.extend(request.handlers.iter().map(Arg::from));
        let kinds = if self.dialect() == Dialect::Sqlite {
            // Look on a reader first, so an idle poll never takes SQLite's
            // write lock, and see which kinds of work are there (ready
            // children of `for_each` steps are filtered like steps).
            let probe = format!(
                "SELECT EXISTS (SELECT 1 FROM weft_steps WHERE {}) AS f, \
                 EXISTS (SELECT 1 FROM weft_steps WHERE {}) AS u, \
                 EXISTS (SELECT 1 FROM weft_children WHERE {}) AS c, \
                 EXISTS (SELECT 1 FROM weft_children c JOIN weft_steps s \
                 ON s.run_id = c.run_id AND s.position = c.position \
                 WHERE c.undo = '{}' AND c.queue IN ({queues}) AND s.compensate_handler IN ({handlers})) AS cu",
                forward(""),
                undo(""),
                forward(""),
                attempt::READY_UNDO.as_str(),
            );
            let Some(found) = self.pool().fetch_optional(&probe, values.clone()).await? else {
                return Ok(Vec::new());
            };
            let kinds = Kinds {
                forward: found.int("f")? != 0,
                undo: found.int("u")? != 0,
                children: found.int("c")? != 0,
                child_undos: found.int("cu")? != 0,
            };
            if !kinds.any() {
                return Ok(Vec::new());
            }
            kinds
        } else if self.inner.saga_hint.wanted(self.now_ms()) {
            Kinds::ALL
        } else {
            Kinds {
                forward: true,
                ..Kinds::NONE
            }
        };
        let lock = match self.dialect() {
            Dialect::Postgres => " FOR UPDATE OF s SKIP LOCKED",
            Dialect::Sqlite => "",
        };
        // The steps with their runs, in one round trip each; only the steps
        // are locked. Runs found corrupt are left out, so they never fill a
        // batch. Undos first: they are few, and a failed run waits on them.
        let (skip, skip_values) = self.not_corrupt("s.run_id", values.len() + 1);
        values.extend(skip_values);
        let select = |filter: String, limit: u32| {
            format!(
                "SELECT s.run_id, s.position, s.n_attempts, s.ready_at, s.undo, \
                 CASE WHEN s.undo = '{undo_ready}' THEN s.output END AS undo_output, \
                 r.trace_id, r.baggage, r.workflow, \
                 r.version, r.status AS run_status, r.reason AS run_reason, r.error AS run_error, r.input \
                 FROM weft_steps s JOIN weft_runs r ON r.run_id = s.run_id \
                 WHERE {filter}{skip} ORDER BY s.ready_at LIMIT {limit}{lock}",
                undo_ready = attempt::READY_UNDO.as_str(),
            )
        };
        let max_tasks = request.max_tasks.min(100);
        let mut tx = self.begin().await?;
        let mut rows = Vec::new();
        if kinds.undo {
            rows = tx
                .fetch_all(&select(undo("s."), max_tasks), values.clone())
                .await?;
        }
        if kinds.forward && (rows.len() as u32) < max_tasks {
            let more = max_tasks - rows.len() as u32;
            rows.extend(tx.fetch_all(&select(forward("s."), more), values).await?);
        }
        // The claim time is read only once the rows are ours: read before the
        // transaction, it could predate the commit that made a step ready
        // (a dependant "claimed" before its dependency finished).
        let now = self.now_ms();
        // The runs of the claimed rows, by run id. A run with a corrupt row
        // is left out of this claim (logged once) and its steps untouched:
        // one bad row never stops the others being claimed.
        let mut runs: HashMap<RunId, RunInfo> = HashMap::new();
        let rows = self.runs_of_rows(rows, &mut runs, check_step_row)?;
        let mut tasks = Vec::with_capacity(rows.len());
        let mut attempts = Vec::with_capacity(rows.len());
        for row in &rows {
            let run_id = row.id("run_id")?;
            let run = runs.get(&run_id).ok_or_else(|| Error::NotFound {
                what: "run",
                id: run_id.to_string(),
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
            let kind = if row.opt_text("undo")?.as_deref() == Some(attempt::READY_UNDO.as_str()) {
                AttemptKind::Compensate
            } else {
                AttemptKind::Forward
            };
            let outputs = if kind == AttemptKind::Compensate {
                BTreeMap::new()
            } else {
                dependency_outputs(&mut tx, run_id, &step_def.deps).await?
            };
            let (input, undoes_attempt) = match kind {
                AttemptKind::Forward => (
                    weft_core::machine::task_input(&def, position as usize, &run.input, &outputs),
                    None,
                ),
                AttemptKind::Compensate => {
                    let output = row
                        .opt_text("undo_output")?
                        .and_then(|t| serde_json::from_str(&t).ok())
                        .unwrap_or(Value::Null);
                    let input = weft_core::compensation::task_input(
                        &run.input,
                        &step_def.name,
                        &output,
                        run.reason,
                        run.error.as_deref(),
                    );
                    // The forward attempt it undoes: the one that completed.
                    let undoes = tx
                        .fetch_optional(
                            &format!(
                                "SELECT MAX(attempt) AS attempt FROM weft_attempts \
                                 WHERE run_id = $1 AND position = $2 AND kind = '{}' AND status = '{}'",
                                AttemptKind::Forward.as_str(),
                                AttemptStatus::Completed.as_str()
                            ),
                            args![&run_id, position],
                        )
                        .await?
                        .map(|r| r.opt_int("attempt"))
                        .transpose()?
                        .flatten();
                    (input, undoes)
                }
            };
            let decided = attempt::claim(
                kind,
                step_def,
                run.status,
                row.int("n_attempts")?,
                row.opt_int("ready_at")?,
                now,
                self.settings().lease.as_millis() as u64,
            );
            let (claim, task) = self.claimed(
                run_id,
                run,
                step_def,
                Target {
                    position,
                    item_index: None,
                    undoes_attempt,
                },
                decided,
                input,
            );
            tracing::debug!(
                component = "engine", run_id = %run_id, trace_id = %run.trace_id, workflow = %run.workflow,
                step = %step_def.name, attempt = decided.attempt, worker_id = %request.worker_id, "attempt claimed"
            );
            tasks.push(task);
            attempts.push(claim);
        }
        let room = (request.max_tasks.min(100) as usize).saturating_sub(attempts.len());
        if kinds.children && room > 0 {
            self.claim_children(&mut tx, request, room, &mut runs, &mut tasks, &mut attempts)
                .await?;
        }
        let room = (request.max_tasks.min(100) as usize).saturating_sub(attempts.len());
        if kinds.child_undos && room > 0 {
            self.claim_child_undos(&mut tx, request, room, &mut runs, &mut tasks, &mut attempts)
                .await?;
        }
        if attempts
            .iter()
            .any(|a| a.item_index.is_some() || a.claim.kind == AttemptKind::Compensate)
        {
            // More of the same may follow (siblings, the next undos).
            self.inner.saga_hint.note(now);
        }
        if attempts.is_empty() {
            tx.commit().await?;
            return Ok(Vec::new());
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
        runs: &mut HashMap<RunId, RunInfo>,
        now: i64,
    ) -> Result<usize> {
        let worker_id = &request.worker_id;
        let (children, attempts_of_steps): (Vec<&NewAttempt>, Vec<&NewAttempt>) =
            attempts.iter().partition(|a| a.item_index.is_some());
        let (undos, children): (Vec<&NewAttempt>, Vec<&NewAttempt>) = children
            .into_iter()
            .partition(|a| a.claim.kind == AttemptKind::Compensate);
        if !undos.is_empty() {
            let mut sql = format!(
                "UPDATE weft_children SET undo = '{}', undo_attempts = undo_attempts + 1, updated_at = $1 \
                 WHERE (run_id, position, idx) IN (",
                attempt::CLAIMED_UNDO.as_str()
            );
            let mut values = args![now];
            for (i, a) in undos.iter().enumerate() {
                if i > 0 {
                    sql.push_str(", ");
                }
                crate::db::push_tuple(&mut sql, 2 + 3 * i, 3);
                values.extend(args![&a.run_id, a.position, a.item_index]);
            }
            sql.push(')');
            tx.execute(&sql, values).await?;
        }
        if !children.is_empty() {
            let mut sql = format!(
                "UPDATE weft_children SET status = '{}', n_attempts = n_attempts + 1, updated_at = $1 \
                 WHERE (run_id, position, idx) IN (",
                attempt::CLAIMED_STEP.as_str()
            );
            let mut values = args![now];
            for (i, a) in children.iter().enumerate() {
                if i > 0 {
                    sql.push_str(", ");
                }
                crate::db::push_tuple(&mut sql, 2 + 3 * i, 3);
                values.extend(args![&a.run_id, a.position, a.item_index]);
            }
            sql.push(')');
            tx.execute(&sql, values).await?;
        }
        // A claimed undo leaves the step `compensating`; its undo runs.
        let mut sql = format!(
            "UPDATE weft_steps SET \
             status = CASE WHEN undo = '{ready}' THEN status ELSE '{step}' END, \
             undo = CASE WHEN undo = '{ready}' THEN '{running}' ELSE undo END, \
             n_attempts = n_attempts + 1, updated_at = $1 \
             WHERE (run_id, position) IN (",
            ready = attempt::READY_UNDO.as_str(),
            step = attempt::CLAIMED_STEP.as_str(),
            running = attempt::CLAIMED_UNDO.as_str(),
        );
        let mut values = args![now];
        for (i, a) in attempts_of_steps.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            crate::db::push_tuple(&mut sql, 2 + 2 * i, 2);
            values.extend(args![&a.run_id, a.position]);
        }
        sql.push(')');
        if !attempts_of_steps.is_empty() {
            tx.execute(&sql, values).await?;
        }

        const ATTEMPT_COLUMNS: usize = 10;
        let mut sql = String::from(
            "INSERT INTO weft_attempts (worker_id, claimed_at, status, run_id, position, attempt, lease_id, span_id, \
             ready_at, deadline_at, item_index, kind, undoes_attempt) VALUES ",
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
                a.claim.deadline_at,
                a.item_index,
                a.claim.kind.as_str(),
                a.undoes_attempt
            ]);
        }
        tx.execute(&sql, values).await?;

        const LEASE_COLUMNS: usize = 11;
        let mut sql = String::from(
            "INSERT INTO weft_leases (worker_id, claimed_at, token_id, lease_id, run_id, position, attempt, queue, lease_ms, \
             expires_at, deadline_at, span_id, ready_at, item_index) VALUES ",
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
                a.claim.ready_at,
                a.item_index
            ]);
        }
        tx.execute(&sql, values).await?;

        // Runs still pending start with their first claim. This transaction
        // holds step locks, so on Postgres it must not wait for a run row: a
        // cancel holds that lock while it waits for these steps, a deadlock.
        // A run whose row is locked is moved on by whoever holds it (cancel;
        // another claim), or the machine marks it started with this attempt's
        // result.
        let pending: Vec<RunId> = runs
            .iter()
            .filter(|(_, info)| info.status == RunStatus::Pending)
            .map(|(id, _)| *id)
            .collect();
        let mut started: Vec<RunId> = Vec::new();
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
                    let locked: Vec<RunId> = tx
                        .fetch_all(&sql, pending.iter().map(|id| Arg::from(*id)).collect())
                        .await?
                        .into_iter()
                        .filter(|r| {
                            r.text("status")
                                .is_ok_and(|s| s == RunStatus::Pending.as_str())
                        })
                        .map(|r| r.id("run_id"))
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
                        .map(|r| r.id("run_id"))
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
                    EventKind::AttemptClaimed => {
                        let mut data = a.claim.data(worker_id, a.span_id);
                        if let (Some(index), Some(map)) = (a.item_index, data.as_object_mut()) {
                            map.insert("index".into(), index.into());
                        }
                        (Some(a.step.clone()), Some(a.attempt), data)
                    }
                    _ if starts_run => (None, None, serde_json::json!({})),
                    _ => continue,
                };
                events.push(EventRow {
                    run_id: a.run_id,
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

impl Store {
    /// Claims up to `room` ready children of `for_each` steps into the
    /// batch (`tasks`, `attempts`; their runs into `runs`): the child rows
    /// `FOR UPDATE SKIP LOCKED` as steps are, those whose backoff is over.
    /// How many run at once is held by the parent's window (`max_parallel`
    /// children ready at most, see `weft_core::fan_out`), so the claim needs
    /// no count of its own. Each child's attempt is numbered from its
    /// step's sequence (`children_claimed`, advanced here only).
    async fn claim_children(
        &self,
        tx: &mut Tx,
        request: &ClaimRequest,
        room: usize,
        runs: &mut HashMap<RunId, RunInfo>,
        tasks: &mut Vec<Claimed>,
        attempts: &mut Vec<NewAttempt>,
    ) -> Result<()> {
        let n_queues = request.queues.len();
        let before = self.now_ms();
        let mut values: Vec<Arg> = vec![Arg::from(before)];
        values.extend(request.queues.iter().map(Arg::from));
        values.extend(request.handlers.iter().map(Arg::from));
        let (skip, skip_values) = self.not_corrupt("c.run_id", values.len() + 1);
        values.extend(skip_values);
        let lock = match self.dialect() {
            Dialect::Postgres => " FOR UPDATE OF c SKIP LOCKED",
            Dialect::Sqlite => "",
        };
        let sql = format!(
            "SELECT c.run_id, c.position, c.idx, c.item, c.ready_at, r.trace_id, r.baggage, r.workflow, \
             r.version, r.status AS run_status, r.reason AS run_reason, r.error AS run_error, r.input \
             FROM weft_children c JOIN weft_runs r ON r.run_id = c.run_id \
             WHERE c.status = '{}' AND c.ready_at <= $1 AND c.queue IN ({}) AND c.handler IN ({}){skip} \
             ORDER BY c.ready_at LIMIT {room}{lock}",
            StepStatus::Ready.as_str(),
            placeholders(2, n_queues),
            placeholders(2 + n_queues, request.handlers.len()),
        );
        let rows = tx.fetch_all(&sql, values).await?;
        // A run with a corrupt row is left out (logged once), as in `claim`:
        // one bad row never stops the other children being claimed.
        let rows = self.runs_of_rows(rows, runs, check_child_row)?;
        if rows.is_empty() {
            return Ok(());
        }
        // Read once the rows are ours (see `claim`): a child made ready by a
        // sibling's end is claimed no earlier than that end.
        let now = self.now_ms();
        let mut next = reserve_attempt_numbers(tx, &rows).await?;
        // The task input of each step, built once for all its children.
        let mut inputs: HashMap<(RunId, i64), Value> = HashMap::new();
        for row in &rows {
            let run_id = row.id("run_id")?;
            let run = &runs[&run_id];
            let def = self.definition_in(tx, &run.workflow, run.version).await?;
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
            let key = (run_id, position);
            if let std::collections::hash_map::Entry::Vacant(e) = inputs.entry(key) {
                let outputs = dependency_outputs(tx, run_id, &step_def.deps).await?;
                let input =
                    weft_core::machine::task_input(&def, position as usize, &run.input, &outputs);
                e.insert(input);
            }
            let index = row.int("idx")?;
            let item: Value = serde_json::from_str(&row.text("item")?).unwrap_or(Value::Null);
            let input = weft_core::fan_out::child_input(inputs[&key].clone(), item, index as u32);
            let sequence = next.get_mut(&key).expect("counted above");
            let decided = attempt::claim(
                AttemptKind::Forward,
                step_def,
                run.status,
                *sequence,
                row.opt_int("ready_at")?,
                now,
                self.settings().lease.as_millis() as u64,
            );
            *sequence += 1;
            let (claim, task) = self.claimed(
                run_id,
                run,
                step_def,
                Target {
                    position,
                    item_index: Some(index),
                    undoes_attempt: None,
                },
                decided,
                input,
            );
            tracing::debug!(
                component = "engine", run_id = %run_id, trace_id = %run.trace_id, workflow = %run.workflow,
                step = %step_def.name, index, attempt = decided.attempt, worker_id = %request.worker_id,
                "child attempt claimed"
            );
            tasks.push(task);
            attempts.push(claim);
        }
        Ok(())
    }
}

impl Store {
    /// Claims up to `room` ready undos of completed `for_each` children
    /// (their step being compensated) into the batch, as `claim_children`
    /// claims children: each an attempt of the step's `compensate` handler
    /// with the child's `item`, `index` and `output`, numbered from the
    /// step's sequence, its idempotency key the compensate phase's with the
    /// index.
    async fn claim_child_undos(
        &self,
        tx: &mut Tx,
        request: &ClaimRequest,
        room: usize,
        runs: &mut HashMap<RunId, RunInfo>,
        tasks: &mut Vec<Claimed>,
        attempts: &mut Vec<NewAttempt>,
    ) -> Result<()> {
        let n_queues = request.queues.len();
        let before = self.now_ms();
        let mut values: Vec<Arg> = vec![Arg::from(before)];
        values.extend(request.queues.iter().map(Arg::from));
        values.extend(request.handlers.iter().map(Arg::from));
        let (skip, skip_values) = self.not_corrupt("c.run_id", values.len() + 1);
        values.extend(skip_values);
        let lock = match self.dialect() {
            Dialect::Postgres => " FOR UPDATE OF c SKIP LOCKED",
            Dialect::Sqlite => "",
        };
        let sql = format!(
            "SELECT c.run_id, c.position, c.idx, c.item, c.output, c.ready_at, r.trace_id, r.baggage, r.workflow, \
             r.version, r.status AS run_status, r.reason AS run_reason, r.error AS run_error, r.input \
             FROM weft_children c JOIN weft_runs r ON r.run_id = c.run_id \
             JOIN weft_steps s ON s.run_id = c.run_id AND s.position = c.position \
             WHERE c.undo = '{}' AND c.ready_at <= $1 AND c.queue IN ({}) AND s.compensate_handler IN ({}){skip} \
             ORDER BY c.ready_at LIMIT {room}{lock}",
            attempt::READY_UNDO.as_str(),
            placeholders(2, n_queues),
            placeholders(2 + n_queues, request.handlers.len()),
        );
        let rows = tx.fetch_all(&sql, values).await?;
        if rows.is_empty() {
            return Ok(());
        }
        let now = self.now_ms();
        let mut next = reserve_attempt_numbers(tx, &rows).await?;
        for row in &rows {
            let run_id = row.id("run_id")?;
            if let std::collections::hash_map::Entry::Vacant(e) = runs.entry(run_id) {
                e.insert(run_info(row)?);
            }
            let run = &runs[&run_id];
            let def = self.definition_in(tx, &run.workflow, run.version).await?;
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
            let index = row.int("idx")?;
            let item: Value = serde_json::from_str(&row.text("item")?).unwrap_or(Value::Null);
            let output: Value = row
                .opt_text("output")?
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or(Value::Null);
            let input = weft_core::fan_out::child_input(
                weft_core::compensation::task_input(
                    &run.input,
                    &step_def.name,
                    &output,
                    run.reason,
                    run.error.as_deref(),
                ),
                item,
                index as u32,
            );
            // The forward attempt it undoes: the one of this child that completed.
            let undoes = tx
                .fetch_optional(
                    &format!(
                        "SELECT MAX(attempt) AS attempt FROM weft_attempts \
                         WHERE run_id = $1 AND position = $2 AND item_index = $3 AND kind = '{}' AND status = '{}'",
                        AttemptKind::Forward.as_str(),
                        AttemptStatus::Completed.as_str()
                    ),
                    args![&run_id, position, index],
                )
                .await?
                .map(|r| r.opt_int("attempt"))
                .transpose()?
                .flatten();
            let key = (run_id, position);
            let sequence = next.get_mut(&key).expect("counted above");
            let decided = attempt::claim(
                AttemptKind::Compensate,
                step_def,
                run.status,
                *sequence,
                row.opt_int("ready_at")?,
                now,
                self.settings().lease.as_millis() as u64,
            );
            *sequence += 1;
            let (claim, task) = self.claimed(
                run_id,
                run,
                step_def,
                Target {
                    position,
                    item_index: Some(index),
                    undoes_attempt: undoes,
                },
                decided,
                input,
            );
            tracing::debug!(
                component = "engine", run_id = %run_id, trace_id = %run.trace_id, workflow = %run.workflow,
                step = %step_def.name, index, attempt = decided.attempt, worker_id = %request.worker_id,
                "child undo claimed"
            );
            tasks.push(task);
            attempts.push(claim);
        }
        Ok(())
    }
}

impl Store {
    /// One claimed attempt, alike for a step, a `for_each` child and an
    /// undo: the row to write and the task to send. The handler and the
    /// idempotency key's phase follow the attempt's kind.
    fn claimed(
        &self,
        run_id: RunId,
        run: &RunInfo,
        step_def: &weft_core::definition::StepDef,
        at: Target,
        decided: attempt::Claim,
        input: Value,
    ) -> (NewAttempt, Claimed) {
        let Target {
            position,
            item_index,
            undoes_attempt,
        } = at;
        let (handler, phase) = match decided.kind {
            AttemptKind::Forward => (
                step_def.handler().unwrap_or_default().to_owned(),
                weft_core::idempotency::Phase::Forward,
            ),
            AttemptKind::Compensate => (
                step_def.compensate.clone().unwrap_or_default(),
                weft_core::idempotency::Phase::Compensate,
            ),
        };
        let claim = NewAttempt {
            run_id,
            position,
            attempt: decided.attempt,
            lease_id: uuid::Uuid::new_v4().to_string(),
            span_id: SpanId::random(),
            step: step_def.name.clone(),
            queue: step_def.queue.clone(),
            claim: decided,
            item_index,
            undoes_attempt,
        };
        let task = ClaimedTask {
            lease_id: claim.lease_id.clone(),
            run_id,
            trace_id: run.trace_id,
            workflow: run.workflow.clone(),
            step: step_def.name.clone(),
            attempt: decided.attempt,
            handler,
            input,
            span_id: claim.span_id,
            deadline_at_ms: decided.deadline_at,
            timeout_ms: step_def.timeout_ms.map(|t| t as i64),
            lease_ms: decided.lease_ms,
            baggage: run.baggage.clone(),
            max_output_bytes: self.settings().max_output_bytes,
            idempotency_key: weft_core::idempotency::key(
                run_id,
                &step_def.name,
                phase,
                item_index.map(|i| i as u64),
            ),
        };
        let claimed = Claimed {
            task,
            queue: step_def.queue.clone(),
            queue_wait_ms: decided.queue_wait_ms,
        };
        (claim, claimed)
    }
}

/// Reserves attempt numbers for claimed `for_each` children (and their
/// undos): one sequence per step, advanced by how many of its children this
/// claim takes. Answers each step's first number, `(run_id, position)` → n.
async fn reserve_attempt_numbers(
    tx: &mut Tx,
    rows: &[crate::db::Row],
) -> Result<HashMap<(RunId, i64), i64>> {
    let mut per_step: BTreeMap<(RunId, i64), i64> = BTreeMap::new();
    for row in rows {
        *per_step
            .entry((row.id("run_id")?, row.int("position")?))
            .or_default() += 1;
    }
    let mut next = HashMap::new();
    for ((run_id, position), n) in &per_step {
        let row = tx
            .fetch_optional(
                "UPDATE weft_steps SET children_claimed = COALESCE(children_claimed, 0) + $3 \
                 WHERE run_id = $1 AND position = $2 RETURNING children_claimed",
                args![run_id, *position, *n],
            )
            .await?
            .ok_or_else(|| Error::NotFound {
                what: "step",
                id: format!("{run_id}/{position}"),
            })?;
        next.insert((*run_id, *position), row.int("children_claimed")? - n);
    }
    Ok(next)
}

/// A step's dependencies as its task input reads them (output, status,
/// reason, error), by name.
async fn dependency_outputs(
    tx: &mut Tx,
    run_id: RunId,
    deps: &[usize],
) -> Result<BTreeMap<String, weft_core::machine::Upstream>> {
    if deps.is_empty() {
        return Ok(BTreeMap::new());
    }
    let sql = format!(
        "SELECT name, output, status, reason, error FROM weft_steps \
         WHERE run_id = $1 AND position IN ({})",
        placeholders(2, deps.len())
    );
    let mut values = args![run_id];
    values.extend(deps.iter().map(|&d| Arg::from(d)));
    tx.fetch_all(&sql, values)
        .await?
        .into_iter()
        .map(|r| {
            let output = r
                .opt_text("output")?
                .and_then(|t| serde_json::from_str(&t).ok());
            let upstream = weft_core::machine::Upstream {
                status: r.status("status", StepStatus::parse)?,
                reason: crate::transition::opt_reason(&r)?,
                error: r.opt_text("error")?,
                output,
            };
            Ok((r.text("name")?, upstream))
        })
        .collect()
}

/// Where a claimed attempt goes: its step, its `for_each` child (`None` for
/// the step's own attempt) and, for an undo, the forward attempt it undoes.
struct Target {
    position: i64,
    item_index: Option<i64>,
    undoes_attempt: Option<i64>,
}

/// An attempt being claimed, before it is written.
struct NewAttempt {
    run_id: RunId,
    position: i64,
    attempt: i64,
    lease_id: String,
    span_id: SpanId,
    step: String,
    queue: String,
    /// What the core decided for it.
    claim: attempt::Claim,
    /// A `for_each` child's index; `None` for a step's own attempt.
    item_index: Option<i64>,
    /// For a compensation: the forward attempt it undoes.
    undoes_attempt: Option<i64>,
}

/// A task with what the claim's observation needs.
struct Claimed {
    task: ClaimedTask,
    queue: String,
    queue_wait_ms: i64,
}

struct RunInfo {
    trace_id: TraceId,
    baggage: Option<String>,
    workflow: String,
    version: i64,
    status: RunStatus,
    /// The run's failure, which a compensation's input carries.
    reason: Option<Reason>,
    error: Option<String>,
    input: Value,
}

/// A claimed step row's run (joined to it); a corrupt row is an error.
fn run_info(row: &crate::db::Row) -> Result<RunInfo> {
    Ok(RunInfo {
        trace_id: row.id("trace_id")?,
        baggage: row.opt_text("baggage")?,
        workflow: row.text("workflow")?,
        version: row.int("version")?,
        status: row.status("run_status", RunStatus::parse)?,
        reason: row.opt_text("run_reason")?.and_then(|r| Reason::parse(&r)),
        error: row.opt_text("run_error")?,
        input: serde_json::from_str(&row.text("input")?).unwrap_or(Value::Null),
    })
}

/// Checks the step columns the claim reads, so that a corrupt step row is
/// found before anything is written.
impl Store {
    /// Adds the runs of claimed `rows` to `runs` (each run's fields read from
    /// its first row) and answers the rows to claim. A run with a corrupt
    /// row (or a row `check` refuses) is left out with all its rows and
    /// logged once: one bad row never stops the others being claimed.
    fn runs_of_rows(
        &self,
        rows: Vec<crate::db::Row>,
        runs: &mut HashMap<RunId, RunInfo>,
        check: fn(&crate::db::Row) -> Result<()>,
    ) -> Result<Vec<crate::db::Row>> {
        let mut bad: std::collections::HashSet<RunId> = Default::default();
        for row in &rows {
            let run_id = row.id("run_id")?;
            if runs.contains_key(&run_id) || bad.contains(&run_id) {
                continue;
            }
            match run_info(row).and_then(|info| check(row).map(|()| info)) {
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
        Ok(rows
            .into_iter()
            .filter(|row| row.id("run_id").is_ok_and(|id| !bad.contains(&id)) && check(row).is_ok())
            .collect())
    }
}

fn check_step_row(row: &crate::db::Row) -> Result<()> {
    row.int("position")?;
    row.int("n_attempts")?;
    row.opt_int("ready_at")?;
    Ok(())
}

/// Checks the child columns the claim reads, so that a corrupt child row is
/// found before anything is written.
fn check_child_row(row: &crate::db::Row) -> Result<()> {
    row.int("position")?;
    row.int("idx")?;
    row.text("item")?;
    row.opt_int("ready_at")?;
    Ok(())
}
