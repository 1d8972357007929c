//! Starting runs and reading them back: list with filters and cursor
//! pagination, detail with steps and attempts, history and step logs; and the
//! operator's verbs on a run (cancel, retry, approve, reject).

use std::collections::HashMap;

use serde_json::{Map, Value};
use weft_core::{
    AttemptStatus, RunId, RunRef, RunStatus, StepStatus, TraceId, machine::Event,
    trace::TraceParent,
};

use crate::{
    Actor, Error, Problem, Result, Store, StoredTiming, args,
    db::{Arg, Row, placeholders},
    run_views::{AttemptView, HistoryEvent, LogLine, RunInfo, RunPage, RunView, StepView},
};

/// A request to start a run.
#[derive(Debug, Clone, Default)]
pub struct NewRun {
    pub workflow: String,
    pub input: Value,
    pub idempotency_key: Option<String>,
    /// The caller's trace context: the run joins that trace.
    pub parent: Option<TraceParent>,
    /// The run's trace id when it has no `parent` but its trace id was
    /// chosen up front (the server's request span, sampled out); random when
    /// `None`.
    pub trace_id: Option<TraceId>,
    /// The caller's W3C `baggage` header, handed to every attempt's worker.
    pub baggage: Option<String>,
    pub request_id: Option<String>,
    /// Who started it, recorded in the `run.created` event and log line.
    pub actor: Option<crate::Actor>,
    /// Keys and values to find the run by, written with it (checked by the
    /// caller against `weft_core::metadata::check`).
    pub metadata: weft_core::metadata::Metadata,
}

#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub workflow: Option<String>,
    pub status: Option<RunStatus>,
    pub trace_id: Option<TraceId>,
    /// Only runs created at or after this time (epoch ms).
    pub since_ms: Option<i64>,
    /// Only runs created before this time (epoch ms).
    pub until_ms: Option<i64>,
    /// Only runs whose metadata has each of these `(key, value)` pairs.
    pub metadata: Vec<(String, String)>,
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<RunId>,
}

const RUN_COLUMNS: &str = "run_id, trace_id, workflow, version, status, reason, error, input, output, request_id, created_at, started_at, finished_at";

fn run_summary(row: &Row) -> Result<RunInfo> {
    Ok(RunInfo {
        run_id: row.id("run_id")?,
        trace_id: row.id("trace_id")?,
        workflow: row.text("workflow")?,
        version: row.int("version")?,
        status: row.status("status", RunStatus::parse)?,
        reason: row.opt_text("reason")?,
        created_at_ms: row.int("created_at")?,
        started_at_ms: row.opt_int("started_at")?,
        finished_at_ms: row.opt_int("finished_at")?,
        metadata: Default::default(),
    })
}

fn json_or_null(text: Option<String>) -> Option<Value> {
    text.map(|t| serde_json::from_str(&t).unwrap_or(Value::String(t)))
}

impl Store {
    pub async fn list_runs(&self, filter: &RunFilter) -> Result<RunPage> {
        let limit = filter.limit.unwrap_or(50).clamp(1, 1000) as usize;
        let columns = RUN_COLUMNS
            .split(", ")
            .map(|c| format!("r.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut values: Vec<Arg> = Vec::new();
        // With a metadata filter the page is read from the metadata index of
        // its first pair, newest first (the join order is written out: the
        // matching entries, then each one's run); the other pairs are probes.
        let (mut sql, order_key, rest) = match filter.metadata.split_first() {
            Some(((key, value), rest)) => {
                values.push(key.into());
                values.push(value.into());
                (
                    format!(
                        "SELECT {columns} FROM weft_run_metadata m0 CROSS JOIN weft_runs r \
                         WHERE r.run_id = m0.run_id AND m0.key = $1 AND m0.value = $2"
                    ),
                    "m0.run_id",
                    rest,
                )
            }
            None => (
                format!("SELECT {columns} FROM weft_runs r WHERE 1 = 1"),
                "r.run_id",
                &[][..],
            ),
        };
        crate::metadata::push_filters(&mut sql, &mut values, rest);
        let mut push = |sql: &mut String, clause: &str, value: Arg| {
            values.push(value);
            sql.push_str(&clause.replace('?', &format!("${}", values.len())));
        };
        if let Some(workflow) = &filter.workflow {
            push(&mut sql, " AND r.workflow = ?", workflow.into());
        }
        if let Some(status) = filter.status {
            push(&mut sql, " AND r.status = ?", status.as_str().into());
        }
        if let Some(trace_id) = &filter.trace_id {
            push(&mut sql, " AND r.trace_id = ?", trace_id.into());
        }
        if let Some(since) = filter.since_ms {
            push(&mut sql, " AND r.created_at >= ?", since.into());
        }
        if let Some(until) = filter.until_ms {
            push(&mut sql, " AND r.created_at < ?", until.into());
        }
        if let Some(cursor) = filter.cursor {
            push(&mut sql, &format!(" AND {order_key} < ?"), cursor.into());
        }
        sql.push_str(&format!(" ORDER BY {order_key} DESC LIMIT {}", limit + 1));
        let rows = self.pool().fetch_all_planned(&sql, values).await?;
        // A corrupt run is left out of the page (and logged once), so that
        // one bad row does not hide every other run; the cursor still moves
        // past it.
        let more = rows.len() > limit;
        let page = &rows[..rows.len().min(limit)];
        let mut runs: Vec<RunInfo> = page
            .iter()
            .filter_map(|row| match run_summary(row) {
                Ok(run) => Some(run),
                Err(err @ Error::Corrupt(_)) => {
                    self.skip_corrupt("list runs", &err);
                    None
                }
                Err(_) => None,
            })
            .collect();
        let ids: Vec<RunId> = runs.iter().map(|r| r.run_id).collect();
        let mut metadata = self.metadata_of(&ids).await?;
        for run in &mut runs {
            run.metadata = metadata.remove(&run.run_id).unwrap_or_default();
        }
        let next_cursor = if more {
            page.last().and_then(|row| row.id("run_id").ok())
        } else {
            None
        };
        Ok(RunPage { runs, next_cursor })
    }

    /// Resolves a run id or a trace id (the newest run of that trace) to a
    /// run id; `NotFound` when no such run exists.
    pub async fn resolve_run_id(&self, id: impl Into<RunRef>) -> Result<RunId> {
        let id = &id.into();
        let row = match id {
            RunRef::Trace(trace_id) => self
                .pool()
                .fetch_optional(
                    "SELECT run_id FROM weft_runs WHERE trace_id = $1 ORDER BY run_id DESC LIMIT 1",
                    args![trace_id],
                )
                .await?,
            RunRef::Run(run_id) => {
                self.pool()
                    .fetch_optional(
                        "SELECT run_id FROM weft_runs WHERE run_id = $1",
                        args![run_id],
                    )
                    .await?
            }
        };
        row.map(|r| r.id("run_id"))
            .transpose()?
            .ok_or_else(|| Error::NotFound {
                what: "run",
                id: id.to_string(),
            })
    }

    /// The run id of `id` for a read that answers `NotFound` itself: only a
    /// trace id is looked up (a run id needs no query of its own).
    pub(crate) async fn run_id_for_read(&self, id: &RunRef) -> Result<RunId> {
        match id {
            RunRef::Trace(_) => self.resolve_run_id(id).await,
            RunRef::Run(run_id) => Ok(*run_id),
        }
    }

    /// The run with its steps and attempts; `NotFound` when no such run exists.
    pub async fn get_run(&self, id: impl Into<RunRef>) -> Result<RunView> {
        let id = &id.into();
        let run_id = self.run_id_for_read(id).await?;
        // A corrupt row of any of the run's tables names the run.
        self.run_detail(run_id, id)
            .await
            .map_err(|err| err.in_run(run_id))
    }

    async fn run_detail(&self, run_id: RunId, id: &RunRef) -> Result<RunView> {
        let row = self.run_row(run_id, id).await?;
        let def = self
            .definition(&row.text("workflow")?, row.int("version")?)
            .await?;
        let step_rows = self
            .pool()
            .fetch_all(
                &format!(
                    "SELECT position, status, reason, output, error, due_at, undo, {} FROM weft_steps \
                     WHERE run_id = $1 ORDER BY position",
                    crate::children::COUNT_COLUMNS
                ),
                args![&run_id],
            )
            .await?;
        let attempt_rows = self
            .pool()
            .fetch_all(
                "SELECT position, attempt, status, reason, worker_id, span_id, claimed_at, finished_at, error, timing, item_index, kind, undoes_attempt \
                 FROM weft_attempts WHERE run_id = $1 ORDER BY position, attempt",
                args![&run_id],
            )
            .await?;
        // The run's first claim (its schedule-to-start time), from the
        // attempts already read rather than a query of its own.
        let mut first_claim: Option<i64> = None;
        let mut attempts: HashMap<i64, Vec<AttemptView>> = HashMap::new();
        for a in attempt_rows {
            let claimed_at = a.int("claimed_at")?;
            first_claim = Some(first_claim.map_or(claimed_at, |first| first.min(claimed_at)));
            attempts
                .entry(a.int("position")?)
                .or_default()
                .push(AttemptView {
                    attempt: a.int("attempt")?,
                    index: a.opt_int("item_index")?,
                    status: a.status("status", AttemptStatus::parse)?,
                    reason: a.opt_text("reason")?,
                    worker_id: a.text("worker_id")?,
                    span_id: a.id("span_id")?,
                    claimed_at_ms: claimed_at,
                    finished_at_ms: a.opt_int("finished_at")?,
                    error: a.opt_text("error")?,
                    timing: a
                        .opt_text("timing")?
                        .and_then(|t| serde_json::from_str::<StoredTiming>(&t).ok()),
                    kind: a.status("kind", weft_core::AttemptKind::parse)?,
                    undoes_attempt: a.opt_int("undoes_attempt")?,
                });
        }
        let steps = step_rows
            .iter()
            .map(|s| {
                let position = s.int("position")?;
                let step_def = usize::try_from(position)
                    .ok()
                    .and_then(|p| def.steps.get(p))
                    .ok_or_else(|| {
                        s.corrupt(
                            "position",
                            Problem::WrongType {
                                expected: "a step of the run's definition",
                            },
                        )
                    })?;
                Ok(StepView {
                    name: step_def.name.clone(),
                    kind: step_def.kind.as_str(),
                    handler: step_def.handler().map(str::to_owned),
                    queue: step_def.queue.clone(),
                    depends_on: step_def.depends_on.clone(),
                    status: s.status("status", StepStatus::parse)?,
                    reason: s.opt_text("reason")?,
                    output: json_or_null(s.opt_text("output")?),
                    error: s.opt_text("error")?,
                    due_at_ms: s.opt_int("due_at")?,
                    compensate: step_def.compensate.clone(),
                    undo: s
                        .opt_text("undo")?
                        .map(|u| {
                            weft_core::UndoStatus::parse(&u)
                                .ok_or_else(|| s.corrupt("undo", Problem::UnknownValue(u)))
                        })
                        .transpose()?,
                    attempts: attempts.remove(&position).unwrap_or_default(),
                    children: crate::children::counts(s)?,
                })
            })
            .collect::<Result<_>>()?;
        let created = row.int("created_at")?;
        Ok(RunView {
            run_id: row.id("run_id")?,
            trace_id: row.id("trace_id")?,
            workflow: row.text("workflow")?,
            version: row.int("version")?,
            status: row.status("status", RunStatus::parse)?,
            reason: row.opt_text("reason")?,
            error: row.opt_text("error")?,
            input: json_or_null(Some(row.text("input")?)).unwrap_or(Value::Null),
            output: json_or_null(row.opt_text("output")?),
            created_at_ms: created,
            started_at_ms: row.opt_int("started_at")?,
            finished_at_ms: row.opt_int("finished_at")?,
            request_id: row.opt_text("request_id")?,
            metadata: self.metadata_of_row(run_id, &row).await?,
            schedule_to_start_ms: first_claim.map(|t| (t - created).max(0)),
            end_to_end_ms: row.opt_int("finished_at")?.map(|t| (t - created).max(0)),
            steps,
        })
    }

    pub async fn run_events(
        &self,
        id: impl Into<RunRef>,
        after_seq: Option<i64>,
    ) -> Result<Vec<HistoryEvent>> {
        let id = &id.into();
        let run_id = self.resolve_run_id(id).await?;
        let rows = self
            .pool()
            .fetch_all(
                "SELECT seq, type, at, step, attempt, data FROM weft_events WHERE run_id = $1 AND seq > $2 ORDER BY seq",
                args![&run_id, after_seq.unwrap_or(0)],
            )
            .await?;
        rows.iter().map(crate::history::event).collect()
    }

    pub async fn run_logs(
        &self,
        id: impl Into<RunRef>,
        step: Option<&str>,
    ) -> Result<Vec<LogLine>> {
        let id = &id.into();
        let run_id = self.resolve_run_id(id).await?;
        let rows = match step {
            Some(step) => {
                self.pool()
                    .fetch_all(
                        "SELECT seq, at, step, attempt, line FROM weft_logs WHERE run_id = $1 AND step = $2 ORDER BY seq",
                        args![&run_id, step],
                    )
                    .await?
            }
            None => {
                self.pool()
                    .fetch_all("SELECT seq, at, step, attempt, line FROM weft_logs WHERE run_id = $1 ORDER BY seq", args![&run_id])
                    .await?
            }
        };
        rows.iter().map(crate::log_pages::line).collect()
    }

    /// Applies an operator's event (cancel, retry, approve, reject) to a run;
    /// every event it writes carries `stamp` (who acted, and why).
    async fn operate(
        &self,
        id: &RunRef,
        stamp: Option<Map<String, Value>>,
        make_event: impl FnOnce(&crate::transition::LockedRun) -> Result<Event>,
    ) -> Result<RunInfo> {
        let run_id = self.resolve_run_id(id).await?;
        let now = self.now_ms();
        let mut tx = self.begin().await?;
        let mut run = self.lock_run(&mut tx, run_id).await?;
        let event = make_event(&run)?;
        let action = event_name(&event);
        run.stamp = stamp;
        let applied = self
            .apply_event(&mut tx, &mut run, event, now, Vec::new())
            .await?;
        tx.commit().await?;
        if let Some(stamp) = &run.stamp {
            let text = |key: &str| stamp.get(key).and_then(Value::as_str);
            tracing::info!(
                component = "engine",
                run_id = %run_id,
                trace_id = %run.trace_id,
                action,
                actor = text("actor"),
                on_behalf_of = text("on_behalf_of"),
                "run {action} by {}",
                text("actor").unwrap_or("anonymous")
            );
        }
        self.observe_applied(&run, &applied, now);
        if applied.made_ready {
            self.wake_pollers();
        }
        let row = self.run_row(run_id, id).await?;
        let mut summary = run_summary(&row)?;
        summary.metadata = self.metadata_of_row(run_id, &row).await?;
        Ok(summary)
    }

    /// Cancels a pending or running run. Running attempts learn it from their
    /// next heartbeat (`cancel_requested`).
    pub async fn cancel_run(&self, id: impl Into<RunRef>) -> Result<RunInfo> {
        let id = &id.into();
        self.operate(id, None, |_| Ok(Event::Cancel)).await
    }

    /// [`Store::cancel_run`] by a person, recorded as `actor` (and
    /// `on_behalf_of`) in the events it writes and its log line.
    pub async fn cancel_run_as(&self, id: impl Into<RunRef>, actor: &Actor) -> Result<RunInfo> {
        let id = &id.into();
        self.operate(id, Some(actor.event_fields()), |_| Ok(Event::Cancel))
            .await
    }

    /// Re-runs a failed or cancelled run from its failed and cancelled steps.
    pub async fn retry_run(&self, id: impl Into<RunRef>) -> Result<RunInfo> {
        let id = &id.into();
        self.operate(id, None, |_| Ok(Event::Retry)).await
    }

    /// [`Store::retry_run`] by a person, recorded like [`Store::cancel_run_as`].
    pub async fn retry_run_as(&self, id: impl Into<RunRef>, actor: &Actor) -> Result<RunInfo> {
        let id = &id.into();
        self.operate(id, Some(actor.event_fields()), |_| Ok(Event::Retry))
            .await
    }

    /// Marks the failed compensation of `step` as skipped (an operator's
    /// escape hatch for an undo that can never succeed), recorded with its
    /// actor and `comment`: a run whose failed undos are all skipped ends
    /// `compensated`. `Conflict` `no_failed_compensation` unless the step's
    /// undo failed.
    pub async fn skip_compensation_as(
        &self,
        id: impl Into<RunRef>,
        step: &str,
        comment: Option<String>,
        actor: &Actor,
    ) -> Result<RunInfo> {
        let id = &id.into();
        let mut stamp = actor.event_fields();
        if let Some(comment) = &comment {
            stamp.insert("comment".into(), comment.clone().into());
        }
        self.operate(id, Some(stamp), |run| {
            let position = run.def.step_index(step).ok_or_else(|| Error::NotFound {
                what: "step",
                id: step.to_owned(),
            })?;
            Ok(Event::SkipCompensation { step: position })
        })
        .await
    }

    /// Approves or rejects a waiting approval step.
    pub async fn decide(
        &self,
        id: impl Into<RunRef>,
        step: &str,
        approve: bool,
        message: Option<String>,
    ) -> Result<RunInfo> {
        let id = &id.into();
        self.decide_inner(id, step, approve, message, None).await
    }

    /// [`Store::decide`] by a person: the events it writes carry `actor`
    /// (and `on_behalf_of`) and the decision's `comment`, if any.
    pub async fn decide_as(
        &self,
        id: impl Into<RunRef>,
        step: &str,
        approve: bool,
        comment: Option<String>,
        actor: &Actor,
    ) -> Result<RunInfo> {
        let id = &id.into();
        let mut stamp = actor.event_fields();
        if let Some(comment) = &comment {
            stamp.insert("comment".into(), comment.clone().into());
        }
        self.decide_inner(id, step, approve, comment, Some(stamp))
            .await
    }

    async fn decide_inner(
        &self,
        id: &RunRef,
        step: &str,
        approve: bool,
        message: Option<String>,
        stamp: Option<Map<String, Value>>,
    ) -> Result<RunInfo> {
        self.operate(id, stamp, |run| {
            let position = run.def.step_index(step).ok_or_else(|| Error::NotFound {
                what: "step",
                id: step.to_owned(),
            })?;
            Ok(if approve {
                Event::Approve { step: position }
            } else {
                Event::Reject {
                    step: position,
                    message: message
                        .unwrap_or_else(|| weft_core::Reason::Rejected.as_str().to_owned()),
                }
            })
        })
        .await
    }

    /// The statuses of the given runs, for bulk checks in tests and tools.
    pub async fn run_statuses(&self, run_ids: &[RunId]) -> Result<HashMap<RunId, String>> {
        if run_ids.is_empty() {
            return Ok(HashMap::new());
        }
        let sql = format!(
            "SELECT run_id, status FROM weft_runs WHERE run_id IN ({})",
            placeholders(1, run_ids.len())
        );
        let rows = self
            .pool()
            .fetch_all(&sql, run_ids.iter().map(Arg::from).collect())
            .await?;
        rows.iter()
            .map(|r| Ok((r.id("run_id")?, r.text("status")?)))
            .collect::<Result<_>>()
    }
}

impl Store {
    /// The run's row; `id` is what the caller asked for, for the error.
    /// With `has_metadata` (1 or 0), so that a run without metadata costs no
    /// second read.
    async fn run_row(&self, run_id: RunId, id: &RunRef) -> Result<Row> {
        self.pool()
            .fetch_optional(
                &format!(
                    "SELECT {RUN_COLUMNS}, CASE WHEN EXISTS (SELECT 1 FROM weft_run_metadata m \
                     WHERE m.run_id = weft_runs.run_id) THEN 1 ELSE 0 END AS has_metadata \
                     FROM weft_runs WHERE run_id = $1"
                ),
                args![run_id],
            )
            .await?
            .ok_or_else(|| Error::NotFound {
                what: "run",
                id: id.to_string(),
            })
    }
}

impl Store {
    /// The metadata of the run whose [`Store::run_row`] is `row`.
    async fn metadata_of_row(
        &self,
        run_id: RunId,
        row: &Row,
    ) -> Result<weft_core::metadata::Metadata> {
        if row.int("has_metadata")? == 0 {
            return Ok(Default::default());
        }
        Ok(self
            .metadata_of(std::slice::from_ref(&run_id))
            .await?
            .remove(&run_id)
            .unwrap_or_default())
    }
}

/// The action an operator's event is, for its log line.
fn event_name(event: &Event) -> &'static str {
    match event {
        Event::Cancel => "cancelled",
        Event::Retry => "retried",
        Event::Approve { .. } => "approved",
        Event::Reject { .. } => "rejected",
        Event::SkipCompensation { .. } => "compensation skipped",
        _ => "changed",
    }
}
