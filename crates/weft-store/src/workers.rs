//! Workers and queues as the store knows them, and the reads behind a run's
//! diagnosis. A worker row is written by the poll path at most every few
//! seconds (the engine throttles it); slots in use and the last heartbeat are
//! read from the lease rows, so nothing is written per task or heartbeat.

use std::collections::{BTreeMap, HashMap};

use weft_core::{
    AttemptStatus, RunRef, RunStatus, StepStatus, UndoStatus,
    definition::StepKind,
    diagnosis::{
        AttemptView, ChildUndoView, LeaseView, RunView, StepKindView, StepView, WorkerView,
    },
};

use crate::{Error, Result, Store, args, db::placeholders};

/// What the diagnosis views of a batch of runs are built from, by run id and
/// step position: attempts, leases, and the child undos not settled (with
/// each child's lease, by index), read at `now`.
struct StepFacts {
    attempts_of: HashMap<(weft_core::RunId, i64), Vec<AttemptView>>,
    child_attempts: HashMap<(weft_core::RunId, i64, i64), Vec<AttemptView>>,
    lease_of: HashMap<(weft_core::RunId, i64), LeaseView>,
    children_of: HashMap<(weft_core::RunId, i64), Vec<ChildUndoView>>,
    child_lease: HashMap<(weft_core::RunId, i64, i64), LeaseView>,
    now: i64,
}

/// What a worker says about itself in its polls (every field optional).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerMeta {
    pub host: Option<String>,
    pub pid: Option<u32>,
    pub version: Option<String>,
    pub concurrency: Option<u32>,
}

/// One worker row with its lease figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerRecord {
    pub worker_id: String,
    pub meta: WorkerMeta,
    pub queues: Vec<String>,
    pub handlers: Vec<String>,
    /// Epoch ms.
    pub first_seen_ms: i64,
    /// Epoch ms of the last recorded poll.
    pub last_poll_ms: i64,
    /// Live leases held.
    pub slots_in_use: u32,
    /// Epoch ms of the latest heartbeat (or claim) among its live leases.
    pub last_heartbeat_ms: Option<i64>,
}

impl WorkerRecord {
    /// The view the diagnosis rules take.
    pub fn view(&self) -> WorkerView {
        WorkerView {
            worker_id: self.worker_id.clone(),
            queues: self.queues.clone(),
            handlers: self.handlers.clone(),
            concurrency: self.meta.concurrency,
            slots_in_use: self.slots_in_use,
            last_poll_ms: self.last_poll_ms,
        }
    }
}

/// Per-queue figures: ready and running steps, the oldest ready step and
/// the throughput.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueCounts {
    pub ready: i64,
    pub running: i64,
    /// Epoch ms the oldest ready step became ready.
    pub oldest_ready_ms: Option<i64>,
    /// Attempts completed within [`THROUGHPUT_WINDOW_MS`] before now.
    pub completed_last_minute: i64,
}

/// The window of [`QueueCounts::completed_last_minute`], in milliseconds.
pub const THROUGHPUT_WINDOW_MS: i64 = 60_000;

fn split(s: Option<String>) -> Vec<String> {
    s.unwrap_or_default()
        .split(',')
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Run ids per `IN (...)` statement.
const CHUNK: usize = 400;

impl Store {
    /// Records a worker's poll: its queues, handlers and what it said about
    /// itself; `first_seen_at` is kept from the first write.
    pub async fn record_worker(
        &self,
        worker_id: &str,
        queues: &[String],
        handlers: &[String],
        meta: &WorkerMeta,
    ) -> Result<()> {
        let now = self.now_ms();
        self.pool()
            .execute(
                "INSERT INTO weft_workers (worker_id, queues, handlers, last_seen_at, host, pid, version, concurrency, first_seen_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $4) \
                 ON CONFLICT (worker_id) DO UPDATE SET queues = $2, handlers = $3, last_seen_at = $4, \
                 host = $5, pid = $6, version = $7, concurrency = $8",
                args![
                    worker_id,
                    queues.join(","),
                    handlers.join(","),
                    now,
                    meta.host.clone(),
                    meta.pid.map(i64::from),
                    meta.version.clone(),
                    meta.concurrency.map(i64::from)
                ],
            )
            .await
            .map(|_| ())
    }

    /// Workers that polled at or after `since_ms`, with their lease figures,
    /// by worker id.
    pub async fn list_workers(&self, since_ms: i64) -> Result<Vec<WorkerRecord>> {
        let pool = self.pool();
        let rows = pool
            .fetch_all(
                "SELECT worker_id, queues, handlers, last_seen_at, host, pid, version, concurrency, first_seen_at \
                 FROM weft_workers WHERE last_seen_at >= $1 ORDER BY worker_id",
                args![since_ms],
            )
            .await?;
        let leases: HashMap<String, (i64, Option<i64>)> = pool
            .fetch_all(
                "SELECT worker_id, COUNT(*) AS n, MAX(expires_at - lease_ms) AS beat FROM weft_leases GROUP BY worker_id",
                Vec::new(),
            )
            .await?
            .into_iter()
            .map(|r| Ok((r.text("worker_id")?, (r.int("n")?, r.opt_int("beat")?))))
            .collect::<Result<_>>()?;
        rows.into_iter()
            .map(|r| -> Result<WorkerRecord> {
                let id = r.text("worker_id")?;
                let (n, beat) = leases.get(&id).copied().unwrap_or((0, None));
                let last = r.int("last_seen_at")?;
                Ok(WorkerRecord {
                    meta: WorkerMeta {
                        host: r.opt_text("host")?,
                        pid: r.opt_int("pid")?.and_then(|p| u32::try_from(p).ok()),
                        version: r.opt_text("version")?,
                        concurrency: r
                            .opt_int("concurrency")?
                            .and_then(|c| u32::try_from(c).ok()),
                    },
                    queues: split(r.opt_text("queues")?),
                    handlers: split(r.opt_text("handlers")?),
                    first_seen_ms: r.opt_int("first_seen_at")?.unwrap_or(last),
                    last_poll_ms: last,
                    slots_in_use: u32::try_from(n).unwrap_or(u32::MAX),
                    last_heartbeat_ms: beat,
                    worker_id: id,
                })
            })
            .collect::<Result<_>>()
    }

    /// Deletes worker rows not heard from since `before_ms`; returns how many.
    pub async fn forget_workers(&self, before_ms: i64) -> Result<u64> {
        self.pool()
            .execute(
                "DELETE FROM weft_workers WHERE last_seen_at < $1",
                args![before_ms],
            )
            .await
    }

    /// Ready and running steps and completed attempts of the last minute, per
    /// queue (only queues with any of them).
    pub async fn queue_counts(&self) -> Result<BTreeMap<String, QueueCounts>> {
        let pool = self.pool();
        let mut out: BTreeMap<String, QueueCounts> = BTreeMap::new();
        for r in pool
            .fetch_all(
                &format!(
                    "SELECT queue, COUNT(*) AS n, MIN(ready_at) AS oldest FROM weft_steps WHERE status = '{}' GROUP BY queue",
                    weft_core::StepStatus::Ready.as_str()
                ),
                Vec::new(),
            )
            .await?
        {
            let q = out.entry(r.text("queue")?).or_default();
            q.ready = r.int("n")?;
            q.oldest_ready_ms = r.opt_int("oldest")?;
        }
        for r in pool
            .fetch_all(
                &format!(
                    "SELECT queue, COUNT(*) AS n FROM weft_steps WHERE status = '{}' GROUP BY queue",
                    weft_core::StepStatus::Running.as_str()
                ),
                Vec::new(),
            )
            .await?
        {
            out.entry(r.text("queue")?).or_default().running = r.int("n")?;
        }
        // From the completed attempts' own rows (weft_attempts_completed):
        // nothing is counted on the result path.
        for r in pool
            .fetch_all(
                &format!(
                    "SELECT s.queue, COUNT(*) AS n FROM weft_attempts a \
                     JOIN weft_steps s ON s.run_id = a.run_id AND s.position = a.position \
                     WHERE a.status = '{}' AND a.finished_at >= $1 GROUP BY s.queue",
                    weft_core::AttemptStatus::Completed.as_str()
                ),
                args![self.now_ms() - THROUGHPUT_WINDOW_MS],
            )
            .await?
        {
            out.entry(r.text("queue")?)
                .or_default()
                .completed_last_minute = r.int("n")?;
        }
        Ok(out)
    }

    /// The runs a diagnosis covers: every run not terminal, and cancelled
    /// runs whose leases are still live; `run_id` narrows it to one run (any
    /// status). At most `limit` runs, by run id.
    pub async fn diagnosis_views(
        &self,
        run_id: Option<&RunRef>,
        limit: usize,
    ) -> Result<Vec<RunView>> {
        let pool = self.pool();
        let runs = match run_id {
            Some(id) => {
                let id = self.resolve_run_id(id).await?;
                pool.fetch_all(
                    "SELECT run_id, workflow, version, status FROM weft_runs WHERE run_id = $1",
                    args![id],
                )
                .await?
            }
            None => {
                use weft_core::RunStatus;
                pool.fetch_all(
                    &format!(
                        "SELECT run_id, workflow, version, status FROM weft_runs WHERE status IN ({}) \
                         UNION SELECT run_id, workflow, version, status FROM weft_runs WHERE status = '{}' \
                         AND run_id IN (SELECT run_id FROM weft_leases) ORDER BY run_id LIMIT $1",
                        crate::sql::quoted(&[
                            RunStatus::Pending.as_str(),
                            RunStatus::Running.as_str(),
                            RunStatus::Compensating.as_str()
                        ]),
                        RunStatus::Cancelled.as_str()
                    ),
                    args![limit as i64],
                )
                .await?
            }
        };
        self.views_of_rows(runs).await
    }

    /// The [`RunView`]s of these runs (any status), in the order given; runs
    /// that do not exist or have a corrupt row are left out.
    pub async fn diagnosis_views_of(&self, run_ids: &[weft_core::RunId]) -> Result<Vec<RunView>> {
        let mut runs = Vec::with_capacity(run_ids.len());
        for chunk in run_ids.chunks(CHUNK) {
            runs.extend(
                self.pool()
                    .fetch_all(
                        &format!(
                            "SELECT run_id, workflow, version, status FROM weft_runs WHERE run_id IN ({})",
                            placeholders(1, chunk.len())
                        ),
                        chunk.iter().map(crate::db::Arg::from).collect(),
                    )
                    .await?,
            );
        }
        let mut views = self.views_of_rows(runs).await?;
        let order: HashMap<weft_core::RunId, usize> =
            run_ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        views.sort_by_key(|v| order.get(&v.run_id).copied());
        Ok(views)
    }

    /// The views of run rows (`run_id, workflow, version, status`), with the
    /// p99 of each running step.
    async fn views_of_rows(&self, runs: Vec<crate::db::Row>) -> Result<Vec<RunView>> {
        let pool = self.pool();
        let mut views = Vec::with_capacity(runs.len());
        for chunk in runs.chunks(CHUNK) {
            let ids: Vec<weft_core::RunId> = chunk
                .iter()
                .map(|r| r.id("run_id"))
                .collect::<Result<_>>()?;
            // Runs with a corrupt row: skipped (and logged once), never
            // failing the whole diagnosis or the gauges built on it.
            let mut bad: std::collections::HashSet<weft_core::RunId> = Default::default();
            let skip =
                |err: Error, bad: &mut std::collections::HashSet<weft_core::RunId>| -> Result<()> {
                    if !matches!(err, Error::Corrupt(_)) {
                        return Err(err);
                    }
                    self.skip_corrupt("diagnosis", &err);
                    if let Some(run_id) = err.corrupt_run().and_then(|id| id.parse().ok()) {
                        bad.insert(run_id);
                    }
                    Ok(())
                };
            let list = placeholders(1, ids.len());
            let args = || ids.iter().map(crate::db::Arg::from).collect::<Vec<_>>();
            let steps = pool
                .fetch_all(
                    &format!(
                        "SELECT run_id, position, name, queue, handler, status, attempt_base, ready_at, due_at, updated_at, \
                         undo, compensate_handler, children_total \
                         FROM weft_steps WHERE run_id IN ({list}) ORDER BY run_id, position"
                    ),
                    args(),
                )
                .await?;
            let attempts = pool
                .fetch_all(
                    &format!(
                        "SELECT a.run_id, a.position, a.attempt, a.status, a.reason, a.error, a.worker_id, a.claimed_at, a.finished_at, \
                         a.item_index, a.kind \
                         FROM weft_attempts a JOIN weft_steps s ON s.run_id = a.run_id AND s.position = a.position \
                         WHERE a.run_id IN ({list}) AND ((s.status IN ({unfinished}) \
                         AND a.attempt > s.attempt_base) \
                         OR (s.status = '{compensating}' AND s.children_total IS NULL AND a.kind = '{compensate}' \
                         AND a.attempt > s.undo_base) \
                         OR (s.status = '{compensating}' AND s.children_total IS NOT NULL AND a.kind = '{compensate}')) \
                         ORDER BY a.run_id, a.position, a.attempt",
                        unfinished = crate::sql::quoted(&[
                            weft_core::StepStatus::Ready.as_str(),
                            weft_core::StepStatus::Running.as_str(),
                            weft_core::StepStatus::Retrying.as_str(),
                            weft_core::StepStatus::Waiting.as_str(),
                        ]),
                        // A step's undo is judged by its undo attempts since
                        // the undo began (or was retried), as forward
                        // attempts are since the run's last retry.
                        compensating = weft_core::StepStatus::Compensating.as_str(),
                        compensate = weft_core::AttemptKind::Compensate.as_str(),
                    ),
                    args(),
                )
                .await?;
            let leases = pool
                .fetch_all(
                    &format!(
                        "SELECT l.run_id, l.position, l.attempt, l.worker_id, l.lease_ms, l.expires_at, l.item_index, \
                         COALESCE(l.claimed_at, a.claimed_at) AS claimed_at \
                         FROM weft_leases l LEFT JOIN weft_attempts a ON a.lease_id = l.lease_id WHERE l.run_id IN ({list})"
                    ),
                    args(),
                )
                .await?;
            // The child undos not settled of `for_each` steps being undone.
            let child_undos = pool
                .fetch_all(
                    &format!(
                        "SELECT run_id, position, idx, undo, ready_at, undo_attempts FROM weft_children \
                         WHERE run_id IN ({list}) AND undo IN ({unsettled})",
                        unsettled = crate::sql::quoted(&[
                            UndoStatus::Ready.as_str(),
                            UndoStatus::Running.as_str(),
                        ])
                    ),
                    args(),
                )
                .await?;
            let mut attempts_of: HashMap<(weft_core::RunId, i64), Vec<AttemptView>> =
                HashMap::new();
            let mut child_attempts: HashMap<(weft_core::RunId, i64, i64), Vec<AttemptView>> =
                HashMap::new();
            for a in attempts {
                // A child's undo attempts are its own (`child_attempts`).
                let child = match (a.opt_int("item_index"), a.opt_text("kind")) {
                    (Ok(Some(index)), Ok(Some(kind)))
                        if kind == weft_core::AttemptKind::Compensate.as_str() =>
                    {
                        Some(index)
                    }
                    _ => None,
                };
                let view = (|| -> Result<_> {
                    Ok((
                        (a.id("run_id")?, a.int("position")?),
                        AttemptView {
                            attempt: a.int("attempt")? as u32,
                            status: a.status("status", AttemptStatus::parse)?,
                            reason: a.opt_text("reason")?,
                            message: a.opt_text("error")?,
                            worker_id: a.text("worker_id")?,
                            claimed_at: a.int("claimed_at")?,
                            finished_at: a.opt_int("finished_at")?,
                        },
                    ))
                })();
                match view {
                    Ok(((run, position), view)) => match child {
                        Some(index) => child_attempts
                            .entry((run, position, index))
                            .or_default()
                            .push(view),
                        None => attempts_of.entry((run, position)).or_default().push(view),
                    },
                    Err(err) => skip(err, &mut bad)?,
                }
            }
            let mut lease_of: HashMap<(weft_core::RunId, i64), LeaseView> = HashMap::new();
            let mut child_lease: HashMap<(weft_core::RunId, i64, i64), LeaseView> = HashMap::new();
            for l in leases {
                let view = (|| -> Result<_> {
                    Ok((
                        (l.id::<weft_core::RunId>("run_id")?, l.int("position")?),
                        l.opt_int("item_index")?,
                        LeaseView {
                            worker_id: l.text("worker_id")?,
                            attempt: l.int("attempt")? as u32,
                            claimed_at: l.opt_int("claimed_at")?.unwrap_or(0),
                            last_heartbeat_ms: l.int("expires_at")? - l.int("lease_ms")?,
                        },
                    ))
                })();
                match view {
                    Ok((key, index, view)) => {
                        if let Some(index) = index {
                            child_lease.insert((key.0, key.1, index), view.clone());
                        }
                        lease_of.insert(key, view);
                    }
                    Err(err) => skip(err, &mut bad)?,
                }
            }
            let mut children_of: HashMap<(weft_core::RunId, i64), Vec<ChildUndoView>> =
                HashMap::new();
            for c in child_undos {
                let view = (|| -> Result<_> {
                    let key = (c.id::<weft_core::RunId>("run_id")?, c.int("position")?);
                    let index = c.int("idx")?;
                    let undo = c.status("undo", UndoStatus::parse)?;
                    let claimed_at = child_lease
                        .get(&(key.0, key.1, index))
                        .map(|l| l.claimed_at);
                    // Its undo attempts since its undo began (or was
                    // retried): the last `undo_attempts` of them.
                    let spent = usize::try_from(c.int("undo_attempts")?).unwrap_or(0);
                    if let Some(list) = child_attempts.get_mut(&(key.0, key.1, index)) {
                        let old = list.len().saturating_sub(spent);
                        list.drain(..old);
                    }
                    Ok((
                        key,
                        ChildUndoView {
                            index: u32::try_from(index).unwrap_or(u32::MAX),
                            undo,
                            ready_at: c.opt_int("ready_at")?,
                            claimed_at,
                        },
                    ))
                })();
                match view {
                    Ok((key, view)) => children_of.entry(key).or_default().push(view),
                    Err(err) => skip(err, &mut bad)?,
                }
            }
            let mut facts = StepFacts {
                attempts_of,
                child_attempts,
                lease_of,
                children_of,
                child_lease,
                now: self.now_ms(),
            };
            let mut steps_of: HashMap<weft_core::RunId, Vec<&crate::db::Row>> = HashMap::new();
            for s in &steps {
                steps_of.entry(s.id("run_id")?).or_default().push(s);
            }
            for run in chunk {
                let id = run.id("run_id")?;
                if bad.contains(&id) {
                    continue;
                }
                let rows = steps_of.remove(&id).unwrap_or_default();
                let view = self.run_view(run, id, rows, &mut facts).await;
                match view {
                    Ok(view) => views.push(view),
                    Err(err) => skip(err, &mut bad)?,
                }
            }
        }
        self.fill_p99s(&mut views).await?;
        Ok(views)
    }

    /// One run's [`RunView`] from its rows; a corrupt row is an error.
    async fn run_view(
        &self,
        run: &crate::db::Row,
        id: weft_core::RunId,
        rows: Vec<&crate::db::Row>,
        facts: &mut StepFacts,
    ) -> Result<RunView> {
        let StepFacts {
            attempts_of,
            child_attempts,
            lease_of,
            children_of,
            child_lease,
            now,
        } = facts;
        let now = *now;
        let status = run.status("status", RunStatus::parse)?;
        let def = self
            .definition(&run.text("workflow")?, run.int("version")?)
            .await
            .ok();
        let status_of: HashMap<String, StepStatus> = rows
            .iter()
            .map(|s| Ok((s.text("name")?, s.status("status", StepStatus::parse)?)))
            .collect::<Result<_>>()?;
        let mut step_views = Vec::new();
        for s in rows {
            let position = s.int("position")?;
            let step_status = status_of[&s.text("name")?];
            let key = (id, position);
            let mut lease = lease_of.remove(&key);
            let (mut ready_at, mut due_at) = (s.opt_int("ready_at")?, s.opt_int("due_at")?);
            let mut child = None;
            let mut child_attempts_of = None;
            // A compensating run's steps are diagnosed by their undo.
            let undoing = status == RunStatus::Compensating;
            let step_status = if undoing {
                let undo = s
                    .opt_text("undo")?
                    .map(|text| {
                        UndoStatus::parse(&text)
                            .ok_or_else(|| s.corrupt("undo", crate::Problem::UnknownValue(text)))
                    })
                    .transpose()?;
                let children = children_of.remove(&key).unwrap_or_default();
                if undo == Some(UndoStatus::Ready) && s.opt_int("children_total")?.is_some() {
                    // Undone child by child: judged by one child's undo.
                    let Some((c, status)) = weft_core::diagnosis::child_undo(&children, now) else {
                        continue;
                    };
                    child = Some(c.index);
                    child_attempts_of = Some(
                        child_attempts
                            .remove(&(id, position, i64::from(c.index)))
                            .unwrap_or_default(),
                    );
                    lease = child_lease
                        .get(&(id, position, i64::from(c.index)))
                        .cloned();
                    ready_at = c.ready_at.filter(|_| status == StepStatus::Ready);
                    due_at = c.ready_at.filter(|_| status == StepStatus::Retrying);
                    status
                } else {
                    match weft_core::diagnosis::undo_status(undo) {
                        Some(status) => status,
                        None => continue,
                    }
                }
            } else {
                step_status
            };
            let unfinished = matches!(
                step_status,
                StepStatus::Pending
                    | StepStatus::Ready
                    | StepStatus::Running
                    | StepStatus::Retrying
                    | StepStatus::Waiting
            );
            let wanted = if status == RunStatus::Cancelled {
                lease.is_some()
            } else {
                unfinished
            };
            if !wanted {
                continue;
            }
            let step_def = def.as_ref().and_then(|d| d.steps.get(position as usize));
            let kind = match step_def.map(|d| &d.kind) {
                Some(StepKind::Sleep { .. }) => StepKindView::Sleep,
                Some(StepKind::Approval) => StepKindView::Approval,
                _ => StepKindView::Task,
            };
            step_views.push(StepView {
                name: s.text("name")?,
                kind,
                queue: s.text("queue")?,
                handler: if undoing {
                    s.opt_text("compensate_handler")?
                } else {
                    s.opt_text("handler")?
                },
                status: step_status,
                depends_on: step_def
                    .filter(|_| !undoing)
                    .map(|d| {
                        d.depends_on
                            .iter()
                            .map(|n| {
                                (
                                    n.clone(),
                                    status_of.get(n).copied().unwrap_or(StepStatus::Pending),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                attempts: match child_attempts_of {
                    Some(attempts) => attempts,
                    None => attempts_of.remove(&key).unwrap_or_default(),
                },
                max_attempts: step_def.map_or(1, |d| {
                    if undoing {
                        d.compensate_retry.max_attempts
                    } else {
                        d.retry.max_attempts
                    }
                }),
                ready_at,
                due_at,
                updated_at: s.int("updated_at")?,
                lease,
                p99_ms: None,
                child,
            });
        }
        Ok(RunView {
            run_id: id,
            workflow: run.text("workflow")?,
            status,
            steps: step_views,
        })
    }
}
