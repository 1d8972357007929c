//! Starting runs. Every start goes through one queue per store: whatever
//! starts arrive while a transaction is being written are written together
//! in the next one (group commit), so concurrent callers share a commit and
//! a lone caller waits for nobody. `start_runs` is the explicit batch.

use std::sync::{Arc, Weak};

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use weft_core::{RunId, RunState, SpanId, TraceId, machine::Event, observe::Observation};

use crate::{
    Error, Inner, Problem, Result, Store, args,
    db::Tx,
    runs::NewRun,
    transition::{Applied, EventRow, LockedRun},
};

/// A started run, or the run an idempotency key matched: what a start
/// answers (the server turns it into `StartedRun`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartedRun {
    /// The run's id: a UUIDv7.
    pub run_id: RunId,
    /// The run's trace id.
    pub trace_id: TraceId,
    /// False when an idempotency key matched an existing run.
    pub created: bool,
}

/// Most starts written in one transaction.
pub const MAX_STARTS_PER_BATCH: usize = 500;

type Waiter = oneshot::Sender<Result<StartedRun>>;

/// The sending end of a store's start queue.
pub(crate) struct StartQueue {
    sender: mpsc::UnboundedSender<(NewRun, Waiter)>,
}

impl StartQueue {
    /// The queue and its writer task, which holds the store only weakly.
    pub(crate) fn spawn(inner: Weak<Inner>) -> StartQueue {
        let (sender, receiver) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(inner, receiver));
        StartQueue { sender }
    }
}

async fn write_loop(inner: Weak<Inner>, mut receiver: mpsc::UnboundedReceiver<(NewRun, Waiter)>) {
    while let Some(first) = receiver.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_STARTS_PER_BATCH {
            match receiver.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let Some(inner) = inner.upgrade() else { return };
        let store = Store { inner };
        let (runs, waiters): (Vec<NewRun>, Vec<Waiter>) = batch.into_iter().unzip();
        match store.write_starts(&runs, false, false).await {
            Ok(answers) => {
                for (waiter, answer) in waiters.into_iter().zip(answers) {
                    let _ = waiter.send(answer);
                }
            }
            // The batch failed whole: each start alone gets its own answer.
            Err(_) if runs.len() > 1 => {
                for (new, waiter) in runs.into_iter().zip(waiters) {
                    let answer = match store
                        .write_starts(std::slice::from_ref(&new), false, false)
                        .await
                    {
                        Ok(mut answers) => answers.pop().expect("one answer"),
                        Err(err) => Err(err),
                    };
                    let _ = waiter.send(answer);
                }
            }
            Err(err) => {
                if let Some(waiter) = waiters.into_iter().next() {
                    let _ = waiter.send(Err(err));
                }
            }
        }
    }
}

/// A run written in the open transaction, to report once it commits.
struct Written {
    run: LockedRun,
    applied: Applied,
}

impl Store {
    /// Starts one run; concurrent starts share a transaction.
    pub async fn start_run(&self, new: NewRun) -> Result<StartedRun> {
        let queue = self
            .inner
            .starts
            .get_or_init(|| StartQueue::spawn(Arc::downgrade(&self.inner)));
        let (waiter, answer) = oneshot::channel();
        let workflow = new.workflow.clone();
        let actor = new.actor.clone();
        queue
            .sender
            .send((new, waiter))
            .map_err(|_| Error::Unavailable(sqlx::Error::PoolClosed))?;
        let started = answer
            .await
            .map_err(|_| Error::Unavailable(sqlx::Error::PoolClosed))??;
        // Logged here, in the caller's span (its request id), not the writer's.
        if started.created {
            log_created(&workflow, actor.as_ref(), &started);
        }
        Ok(started)
    }

    /// Starts several runs in one transaction. Each gets its own answer (an
    /// unknown workflow fails only its own start); an error of the database
    /// fails the whole batch and writes nothing.
    pub async fn start_runs(&self, batch: &[NewRun]) -> Result<Vec<Result<StartedRun>>> {
        self.write_starts(batch, true, false).await
    }

    /// Starts several runs in one transaction, all or none: the first start
    /// refused (unknown workflow, an idempotency key reused with another
    /// input) is the answer and nothing is written.
    pub async fn start_runs_all_or_none(&self, batch: &[NewRun]) -> Result<Vec<StartedRun>> {
        self.write_starts(batch, true, true)
            .await?
            .into_iter()
            .collect()
    }

    /// Writes a batch of starts. With `all_or_none`, a refused start rolls
    /// the whole batch back (its answers are returned, nothing committed).
    async fn write_starts(
        &self,
        batch: &[NewRun],
        log: bool,
        all_or_none: bool,
    ) -> Result<Vec<Result<StartedRun>>> {
        let started = std::time::Instant::now();
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.now_ms();
        let mut tx = self.begin().await?;
        let mut answers = Vec::with_capacity(batch.len());
        let mut written = Vec::new();
        for new in batch {
            match self.write_start(&mut tx, new, now).await {
                Ok((answer, run)) => {
                    answers.push(Ok(answer));
                    written.extend(run);
                }
                Err(
                    err @ (Error::NotFound { .. }
                    | Error::Invalid { .. }
                    | Error::Conflict {
                        code: weft_core::ErrorCode::IdempotencyKeyReused,
                        ..
                    }),
                ) => answers.push(Err(err)),
                Err(err) => return Err(err),
            }
        }
        if all_or_none && answers.iter().any(Result::is_err) {
            drop(tx); // rolled back: nothing of the batch is written
            return Ok(answers);
        }
        tx.commit().await?;
        let mut made_ready = false;
        for Written { run, applied } in &written {
            self.observer().observe(&Observation::RunStarted {
                workflow: &run.workflow,
            });
            self.observe_applied(run, applied, now);
            self.observe_operation("start_run", started);
            made_ready |= applied.made_ready;
        }
        if made_ready {
            self.wake_pollers();
        }
        if log {
            for (new, answer) in batch.iter().zip(&answers) {
                if let Ok(started) = answer
                    && started.created
                {
                    log_created(&new.workflow, new.actor.as_ref(), started);
                }
            }
        }
        Ok(answers)
    }

    /// Writes one start into `tx`: the run row, its steps in their first
    /// state and its first events; or finds the run an idempotency key
    /// already started (then nothing is written).
    async fn write_start(
        &self,
        tx: &mut Tx,
        new: &NewRun,
        now: i64,
    ) -> Result<(StartedRun, Option<Written>)> {
        let version = self.latest_version(tx, &new.workflow).await?;
        let def = self.definition_in(tx, &new.workflow, version).await?;
        if let Some(existing) = existing_run(tx, new).await? {
            return Ok((existing, None));
        }
        let run_id = RunId::new(now);
        let (trace_id, parent_span_id) = match &new.parent {
            Some(parent) => (parent.trace_id, Some(parent.parent_span_id)),
            None => (new.trace_id.unwrap_or_else(TraceId::random), None),
        };
        let span_id = SpanId::random();
        let inserted = tx
            .execute(
                &format!(
                    "INSERT INTO weft_runs (run_id, trace_id, span_id, parent_span_id, workflow, version, status, input, \
                     idempotency_key, request_id, created_at, updated_at, baggage) \
                     VALUES ($1, $2, $3, $4, $5, $6, '{}', $7, $8, $9, $10, $10, $11) \
                     ON CONFLICT (workflow, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING",
                    weft_core::RunStatus::Pending.as_str()
                ),
                args![
                    &run_id,
                    &trace_id,
                    &span_id,
                    parent_span_id,
                    &new.workflow,
                    version,
                    new.input.to_string(),
                    new.idempotency_key.clone(),
                    new.request_id.clone(),
                    now,
                    new.baggage.clone()
                ],
            )
            .await?;
        if inserted == 0 {
            // Another transaction with the same key committed first: its run.
            let existing = existing_run(tx, new)
                .await?
                .ok_or_else(|| Error::Conflict {
                    code: weft_core::ErrorCode::ConcurrentUpdate,
                    message: "idempotent start raced; try again".into(),
                })?;
            return Ok((existing, None));
        }
        crate::metadata::write(tx, run_id, &new.metadata).await?;
        let mut data = serde_json::Map::new();
        data.insert("version".into(), version.into());
        if let Some(request_id) = &new.request_id {
            data.insert("request_id".into(), request_id.clone().into());
        }
        if let Some(actor) = &new.actor {
            data.extend(actor.event_fields());
        }
        let created = EventRow {
            run_id,
            kind: weft_core::EventKind::RunCreated,
            at: now,
            step: None,
            attempt: None,
            data: Value::Object(data),
        };
        let mut run = LockedRun {
            run_id,
            trace_id,
            span_id,
            parent_span_id,
            created_at: now,
            workflow: new.workflow.clone(),
            version,
            state: RunState::new(&def, new.input.clone()),
            def,
            steps_stored: false,
            stamp: None,
        };
        // The machine decides the steps' first state; they are inserted as such.
        let applied = self
            .apply_event(tx, &mut run, Event::Start, now, vec![created])
            .await?;
        Ok((
            StartedRun {
                run_id,
                trace_id,
                created: true,
            },
            Some(Written { run, applied }),
        ))
    }
}

fn log_created(workflow: &str, actor: Option<&crate::Actor>, started: &StartedRun) {
    tracing::info!(component = "engine", run_id = %started.run_id, trace_id = %started.trace_id, workflow, actor = actor.map(|a| a.name.as_str()), on_behalf_of = actor.and_then(|a| a.on_behalf_of.as_deref()), "run created");
}

/// The run an idempotency key already started, if any. The key is bound to
/// its first input: a start with the same key and a different input (as
/// canonical JSON: key order ignored) is refused, `idempotency_key_reused`.
async fn existing_run(tx: &mut Tx, new: &NewRun) -> Result<Option<StartedRun>> {
    let Some(key) = &new.idempotency_key else {
        return Ok(None);
    };
    let Some(row) = tx
        .fetch_optional(
            "SELECT run_id, trace_id, input FROM weft_runs WHERE workflow = $1 AND idempotency_key = $2",
            args![&new.workflow, key],
        )
        .await?
    else {
        return Ok(None);
    };
    let stored: Value = serde_json::from_str(&row.text("input")?)
        .map_err(|err| row.corrupt("input", Problem::BadJson(err.to_string())))?;
    // `Value` equality compares objects by key, whatever their order.
    if stored != new.input {
        return Err(Error::Conflict {
            code: weft_core::ErrorCode::IdempotencyKeyReused,
            message: format!(
                "idempotency key `{key}` already started run {} of `{}` with a different input",
                row.text("run_id")?,
                new.workflow
            ),
        });
    }
    Ok(Some(StartedRun {
        run_id: row.id("run_id")?,
        trace_id: row.id("trace_id")?,
        created: false,
    }))
}
