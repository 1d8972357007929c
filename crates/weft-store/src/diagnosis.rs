//! The diagnosis rules of `weft_core::diagnosis` in aggregate SQL: every
//! run not moving gets its worst step's cause computed by the database in one
//! statement (counts per cause and the page of run ids asked for), so
//! `GET /v1/diagnostics` and `weft_runs_stalled` never load the runs one by
//! one; only the page's runs are then read in detail and diagnosed by the
//! pure rules for their evidence. And the p99 of a step's recent attempts,
//! which `running_long` compares with, cached per minute.
//!
//! Invariant: the CASE below is the same decision as
//! `weft_core::diagnosis::diagnose`, in the same order; the worker-dependent
//! part comes from `WorkerFacts` and the p99 from [`Store::step_p99s`], both
//! shared with the pure rules. The store conformance suite checks on both
//! backends that the two count every cause alike over a mixed population.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
    time::{Duration, Instant},
};

use weft_core::diagnosis::{
    self, Cause, ChildUndo, P99_ATTEMPTS, RunView, Thresholds, WorkerFacts, WorkerView,
};

use crate::{Result, Store, args, db::Arg};
use weft_core::{AttemptStatus, Reason, RunStatus, StepStatus, UndoStatus};

/// The statuses and reasons the rules' SQL compares with, from their enums
/// (SQL text is never typed with them).
const S_PENDING: &str = StepStatus::Pending.as_str();
const S_READY: &str = StepStatus::Ready.as_str();
const S_RUNNING: &str = StepStatus::Running.as_str();
const S_RETRYING: &str = StepStatus::Retrying.as_str();
const S_WAITING: &str = StepStatus::Waiting.as_str();
const R_PENDING: &str = RunStatus::Pending.as_str();
const R_RUNNING: &str = RunStatus::Running.as_str();
const R_CANCELLED: &str = RunStatus::Cancelled.as_str();
const R_COMPENSATING: &str = RunStatus::Compensating.as_str();
const U_READY: &str = UndoStatus::Ready.as_str();
const K_COMPENSATE: &str = weft_core::AttemptKind::Compensate.as_str();
const U_RUNNING: &str = UndoStatus::Running.as_str();
const A_COMPLETED: &str = AttemptStatus::Completed.as_str();
const A_FAILED: &str = AttemptStatus::Failed.as_str();
const WHY_LEASE: &str = Reason::LeaseExpired.as_str();
const WHY_HEARTBEAT: &str = Reason::HeartbeatTimeout.as_str();
const WHY_CANCELLED: &str = Reason::Cancelled.as_str();

/// How long a step's p99 is reused before it is read again.
pub const P99_TTL: Duration = Duration::from_secs(60);

/// How long "too few attempts for a p99" is reused: a step's first runs
/// should not wait a minute to count.
const P99_UNKNOWN_TTL: Duration = Duration::from_secs(5);

/// A step's rank and since folded into one sortable integer
/// (`rank * KEY + since`), so a run's worst step is a plain `MIN` per run;
/// `since` is clamped to `0..KEY` (epoch ms before the year 2286).
const KEY: i64 = 10_000_000_000_000;

/// Separates a queue from a handler (and a workflow from a step) in the keys
/// the statement compares; identifiers never hold control characters.
const SEP: &str = "\u{1f}";

/// A run of a page: its `since` and id, the order within its group.
type Listed = (i64, weft_core::RunId);

/// A (workflow, step) pair.
type StepKey = (String, String);

/// The p99 of each (workflow, step) asked lately, with when it was read.
#[derive(Default)]
pub(crate) struct P99Cache {
    entries: Mutex<HashMap<StepKey, (Instant, Option<i64>)>>,
}

/// Which runs of the diagnosis to list beside the counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    /// Runs per (cause, stalled) group; 0 for the counts alone.
    pub limit: usize,
    /// Runs skipped at the head of each group.
    pub offset: usize,
    /// Only this cause's runs are listed (all are still counted).
    pub cause: Option<Cause>,
    /// Only stalled runs are listed.
    pub stalled_only: bool,
}

/// How the summary statement is planned on PostgreSQL: for each call's
/// values (a listing's page and filters), or once, from a prepared
/// statement (the gauge reading's counts).
#[derive(Debug, Clone, Copy)]
enum Plan {
    PerCall,
    Prepared,
}

/// One (cause, stalled) group of runs: how many, and the page's run ids,
/// worst first (the longest stuck first, then by run id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CauseCount {
    pub cause: Cause,
    /// A stalled cause, or a wait past its threshold (an old approval).
    pub stalled: bool,
    pub count: u64,
    pub run_ids: Vec<weft_core::RunId>,
}

/// Every run not moving, by its worst step's cause.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Groups worst first: stalled before waiting, then by cause rank.
    pub groups: Vec<CauseCount>,
}

impl Summary {
    /// Runs with an unfinished step (or a cancelled run's live lease).
    pub fn examined(&self) -> u64 {
        self.groups.iter().map(|g| g.count).sum()
    }

    /// Runs whose worst step is stalled.
    pub fn stalled(&self) -> u64 {
        self.groups
            .iter()
            .filter(|g| g.stalled)
            .map(|g| g.count)
            .sum()
    }
}

/// Numbered arguments of one statement.
#[derive(Default)]
struct Params(Vec<Arg>);

impl Params {
    fn push(&mut self, value: impl Into<Arg>) -> String {
        self.0.push(value.into());
        format!("${}", self.0.len())
    }

    /// `expr IN (...)` over `values`; false for an empty list.
    fn is_in<'a>(&mut self, expr: &str, values: impl IntoIterator<Item = &'a String>) -> String {
        let list: Vec<String> = values.into_iter().map(|v| self.push(v)).collect();
        if list.is_empty() {
            "1 = 0".to_owned()
        } else {
            format!("{expr} IN ({})", list.join(", "))
        }
    }
}

fn rank(cause: Cause) -> String {
    cause.rank().to_string()
}

impl Store {
    /// The p99 duration (ms) of each (workflow, step)'s latest
    /// [`P99_ATTEMPTS`] completed attempts (by run, newest first), `None`
    /// when there are too few (`weft_core::diagnosis::p99_of`). Read at most
    /// once a minute per pair.
    pub async fn step_p99s(
        &self,
        keys: impl IntoIterator<Item = (String, String)>,
    ) -> Result<HashMap<(String, String), Option<i64>>> {
        let mut out = HashMap::new();
        let mut missing = Vec::new();
        {
            let mut cache = self
                .p99_cache()
                .entries
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            cache.retain(|_, (at, p99)| {
                at.elapsed()
                    < if p99.is_some() {
                        P99_TTL
                    } else {
                        P99_UNKNOWN_TTL
                    }
            });
            for key in keys {
                match cache.get(&key) {
                    Some((_, p99)) => {
                        out.insert(key, *p99);
                    }
                    None => missing.push(key),
                }
            }
        }
        for (workflow, step) in missing {
            if out.contains_key(&(workflow.clone(), step.clone())) {
                continue;
            }
            // Newest runs first through (workflow, run_id): run ids are
            // time-ordered (UUIDv7), and the walk stops at the limit.
            let rows = self
                .pool()
                .fetch_all(
                    &format!(
                        "SELECT a.finished_at - a.claimed_at AS ms FROM weft_runs r \
                         JOIN weft_steps s ON s.run_id = r.run_id \
                         JOIN weft_attempts a ON a.run_id = s.run_id AND a.position = s.position \
                         WHERE r.workflow = $1 AND s.name = $2 AND a.status = '{A_COMPLETED}' \
                         AND a.finished_at IS NOT NULL ORDER BY r.run_id DESC LIMIT {P99_ATTEMPTS}"
                    ),
                    args![&workflow, &step],
                )
                .await?;
            let durations: Vec<u64> = rows
                .iter()
                .filter_map(|r| self.or_skip("diagnosis", r.int("ms")))
                .map(|ms| u64::try_from(ms).unwrap_or(0))
                .collect();
            let p99 = diagnosis::p99_of(durations);
            self.p99_cache()
                .entries
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert((workflow.clone(), step.clone()), (Instant::now(), p99));
            out.insert((workflow, step), p99);
        }
        Ok(out)
    }

    /// Sets [`weft_core::diagnosis::StepView::p99_ms`] on the running steps
    /// of `views`.
    pub(crate) async fn fill_p99s(&self, views: &mut [RunView]) -> Result<()> {
        let keys: Vec<(String, String)> = views
            .iter()
            .flat_map(|v| {
                v.steps
                    .iter()
                    .filter(|s| s.status == weft_core::StepStatus::Running)
                    .map(|s| (v.workflow.clone(), s.name.clone()))
            })
            .collect();
        if keys.is_empty() {
            return Ok(());
        }
        let p99s = self.step_p99s(keys).await?;
        for view in views.iter_mut() {
            for step in &mut view.steps {
                if step.status == weft_core::StepStatus::Running {
                    step.p99_ms = p99s
                        .get(&(view.workflow.clone(), step.name.clone()))
                        .copied()
                        .flatten();
                }
            }
        }
        Ok(())
    }

    /// Every run not moving, each under its worst step's cause as
    /// `weft_core::diagnosis::diagnose` would name it, counted by the
    /// database in one statement, with the run ids `page` asks for.
    /// `workers` are all workers recently seen (liveness is judged here).
    pub async fn diagnosis_summary(
        &self,
        workers: &[WorkerView],
        t: &Thresholds,
        page: &Page,
    ) -> Result<Summary> {
        self.summary(workers, t, page, Plan::PerCall).await
    }

    /// The counts of [`Store::diagnosis_summary`] for the gauge reading, which
    /// runs it every few seconds: from a prepared statement, so PostgreSQL
    /// need not plan it each time (planning it took about 4 ms, longer
    /// than running it on a quiet database).
    pub(crate) async fn diagnosis_counts(
        &self,
        workers: &[WorkerView],
        t: &Thresholds,
    ) -> Result<Summary> {
        self.summary(workers, t, &Page::default(), Plan::Prepared)
            .await
    }

    async fn summary(
        &self,
        workers: &[WorkerView],
        t: &Thresholds,
        page: &Page,
        plan: Plan,
    ) -> Result<Summary> {
        let started = Instant::now();
        let (sql, args) = self.summary_statement(workers, t, page).await?;
        let rows = match plan {
            Plan::PerCall => self.pool().fetch_all_planned(&sql, args).await?,
            Plan::Prepared => self.pool().fetch_all(&sql, args).await?,
        };
        self.summary_of(&rows, page, started)
    }

    /// The statement [`Store::diagnosis_summary`] runs, with its arguments.
    pub(crate) async fn summary_statement(
        &self,
        workers: &[WorkerView],
        t: &Thresholds,
        page: &Page,
    ) -> Result<(String, Vec<Arg>)> {
        let now = self.now_ms();
        let facts = WorkerFacts::of(workers, t, now);
        // The p99 of each step running now, from the cache (the few running
        // steps first: CROSS JOIN keeps SQLite from walking the active runs).
        let running = self
            .pool()
            .fetch_all(
                &format!(
                    "SELECT DISTINCT r.workflow, s.name FROM weft_steps s CROSS JOIN weft_runs r \
                     WHERE r.run_id = s.run_id AND s.status = '{S_RUNNING}' AND r.status = '{R_RUNNING}'"
                ),
                Vec::new(),
            )
            .await?;
        let keys: Vec<(String, String)> = running
            .iter()
            .filter_map(|r| {
                self.or_skip(
                    "diagnosis",
                    (|| Ok((r.text("workflow")?, r.text("name")?)))(),
                )
            })
            .collect();
        let p99s: Vec<(String, i64)> = self
            .step_p99s(keys)
            .await?
            .into_iter()
            .filter_map(|((w, s), p)| p.map(|p| (format!("{w}{SEP}{s}"), p)))
            .collect();

        let mut p = Params::default();
        let now_arg = p.push(now);
        let k = p.push(t.repeat_attempts.max(2));
        let saturated = p.push(t.saturated_ms);
        let overdue = p.push(t.overdue_timer_ms);
        let long = p.push(t.running_long_ms);
        let approval = p.push(t.approval_ms);
        let sep = p.push(SEP);
        let live = p.is_in("b.queue", &facts.queues);
        let pair = format!("b.queue || {sep} || COALESCE(b.handler, '')");
        let served_keys: Vec<String> = facts
            .served
            .iter()
            .map(|(q, h)| format!("{q}{SEP}{h}"))
            .collect();
        let full_keys: Vec<String> = facts
            .full
            .iter()
            .map(|(q, h)| format!("{q}{SEP}{h}"))
            .collect();
        let served = p.is_in(&pair, &served_keys);
        let full = p.is_in(&pair, &full_keys);
        let p99_values: Vec<String> = p99s
            .iter()
            .map(|(key, ms)| format!("({}, {})", p.push(key), p.push(*ms)))
            .collect();
        let (p99_cte, p99_join, p99_col) = if p99_values.is_empty() {
            (String::new(), String::new(), "CAST(NULL AS BIGINT)")
        } else {
            (
                format!("p99 (k, ms) AS (VALUES {}), ", p99_values.join(", ")),
                format!("LEFT JOIN p99 ON p99.k = r.workflow || {sep} || s.name"),
                "p99.ms",
            )
        };
        let (skip_active, skip_args) = self.not_corrupt("run_id", p.0.len() + 1);
        let skip_cancelled = skip_active.replace(" run_id NOT IN", " r.run_id NOT IN");
        p.0.extend(skip_args);
        // Cancelled runs are found from the few lease rows (CROSS JOIN keeps
        // SQLite from walking every run instead).
        // The last `k` attempts of a ready or retrying step (they are all
        // finished): all lost their lease, or all failed alike.
        let last_k =
            "a.run_id = b.run_id AND a.position = b.position AND a.attempt > b.n_attempts - "
                .to_owned()
                + &k;
        let repeated = format!(
            "b.status IN ('{S_READY}', '{S_RETRYING}') AND b.n_attempts - b.attempt_base >= {k}"
        );
        let lost = format!(
            "(SELECT COUNT(*) FROM weft_attempts a WHERE {last_k} \
             AND a.reason IN ('{WHY_LEASE}', '{WHY_HEARTBEAT}')) = {k}"
        );
        let same = format!(
            "(SELECT COUNT(*) FROM weft_attempts a JOIN weft_attempts f ON f.run_id = a.run_id \
             AND f.position = a.position AND f.attempt = b.n_attempts - {k} + 1 \
             WHERE {last_k} AND a.status = '{A_FAILED}' AND f.status = '{A_FAILED}' AND f.reason IS NOT NULL \
             AND f.reason NOT IN ('{WHY_LEASE}', '{WHY_HEARTBEAT}', '{WHY_CANCELLED}') \
             AND a.reason = f.reason AND (a.error = f.error OR (a.error IS NULL AND f.error IS NULL))) = {k}"
        );
        // The same for a child undo a `for_each` step is judged by
        // (`b.child`): its last `k` undo attempts, of the `b.child_spent`
        // spent since its undo began.
        let among_last_k = |a: &str, cmp: &str| {
            format!(
                "(SELECT COUNT(*) FROM weft_attempts a2 WHERE a2.run_id = {a}.run_id \
                 AND a2.position = {a}.position AND a2.item_index = {a}.item_index \
                 AND a2.kind = {a}.kind AND a2.attempt > {a}.attempt) {cmp}"
            )
        };
        let child_last_k = format!(
            "a.run_id = b.run_id AND a.position = b.position AND a.item_index = b.child \
             AND a.kind = '{K_COMPENSATE}' AND {}",
            among_last_k("a", &format!("< {k}"))
        );
        let child_repeated = format!(
            "b.child IS NOT NULL AND b.status IN ('{S_READY}', '{S_RETRYING}') AND b.child_spent >= {k}"
        );
        let child_lost = format!(
            "(SELECT COUNT(*) FROM weft_attempts a WHERE {child_last_k} \
             AND a.reason IN ('{WHY_LEASE}', '{WHY_HEARTBEAT}')) = {k}"
        );
        let child_same = format!(
            "(SELECT COUNT(*) FROM weft_attempts a JOIN weft_attempts f ON f.run_id = a.run_id \
             AND f.position = a.position AND f.item_index = a.item_index AND f.kind = a.kind \
             AND {first} \
             WHERE {child_last_k} AND a.status = '{A_FAILED}' AND f.status = '{A_FAILED}' AND f.reason IS NOT NULL \
             AND f.reason NOT IN ('{WHY_LEASE}', '{WHY_HEARTBEAT}', '{WHY_CANCELLED}') \
             AND a.reason = f.reason AND (a.error = f.error OR (a.error IS NULL AND f.error IS NULL))) = {k}",
            first = among_last_k("f", &format!("= {k} - 1"))
        );
        let rank_case = format!(
            "CASE \
             WHEN b.run_status = '{R_CANCELLED}' THEN {cancel} \
             WHEN {repeated} AND {lost} THEN {lease_loop} \
             WHEN {repeated} AND {same} THEN {poison} \
             WHEN {child_repeated} AND {child_lost} THEN {lease_loop} \
             WHEN {child_repeated} AND {child_same} THEN {poison} \
             WHEN b.status = '{S_PENDING}' THEN {deps} \
             WHEN b.status = '{S_READY}' AND NOT ({live}) THEN {no_queue} \
             WHEN b.status = '{S_READY}' AND NOT ({served}) THEN {no_handler} \
             WHEN b.status = '{S_READY}' AND ({full}) AND {now_arg} - COALESCE(b.ready_at, b.updated_at) > {saturated} THEN {sat} \
             WHEN b.status = '{S_READY}' THEN {queued} \
             WHEN b.status = '{S_WAITING}' AND b.due_at IS NULL THEN {approval_rank} \
             WHEN b.status IN ('{S_RETRYING}', '{S_WAITING}') AND {now_arg} - COALESCE(b.due_at, b.updated_at) > {overdue} THEN {overdue_rank} \
             WHEN b.status = '{S_RETRYING}' THEN {retrying} \
             WHEN b.status = '{S_WAITING}' THEN {timer} \
             WHEN b.status = '{S_RUNNING}' AND ({now_arg} - b.held_since > {long} \
                  OR (b.p99 IS NOT NULL AND {now_arg} - b.held_since > b.p99)) THEN {running_long} \
             WHEN b.status = '{S_RUNNING}' THEN {running} \
             END",
            cancel = rank(Cause::CancelPending),
            lease_loop = rank(Cause::LeaseExpiredLoop),
            poison = rank(Cause::PoisonInput),
            deps = rank(Cause::WaitingDependencies),
            no_queue = rank(Cause::NoWorkerForQueue),
            no_handler = rank(Cause::NoWorkerForHandler),
            sat = rank(Cause::WorkerSaturated),
            queued = rank(Cause::Queued),
            approval_rank = rank(Cause::WaitingApproval),
            overdue_rank = rank(Cause::OverdueTimer),
            retrying = rank(Cause::Retrying),
            timer = rank(Cause::WaitingTimer),
            running_long = rank(Cause::RunningLong),
            running = rank(Cause::Running),
        );
        let since_case = format!(
            "CASE \
             WHEN c.rank IN ({cancel}, {running_long}, {running}) THEN c.held_since \
             WHEN c.rank IN ({lease_loop}, {poison}) AND c.child IS NOT NULL THEN \
                  (SELECT COALESCE(f.finished_at, f.claimed_at) FROM weft_attempts f \
                  WHERE f.run_id = c.run_id AND f.position = c.position AND f.item_index = c.child \
                  AND f.kind = '{K_COMPENSATE}' AND {first}) \
             WHEN c.rank IN ({lease_loop}, {poison}) THEN (SELECT COALESCE(a.finished_at, a.claimed_at) \
                  FROM weft_attempts a WHERE a.run_id = c.run_id AND a.position = c.position \
                  AND a.attempt = c.n_attempts - {k} + 1) \
             WHEN c.rank IN ({no_queue}, {no_handler}, {sat}, {queued}) THEN COALESCE(c.ready_at, c.updated_at) \
             WHEN c.rank = {overdue_rank} THEN COALESCE(c.due_at, c.updated_at) \
             ELSE c.updated_at END",
            cancel = rank(Cause::CancelPending),
            running_long = rank(Cause::RunningLong),
            running = rank(Cause::Running),
            lease_loop = rank(Cause::LeaseExpiredLoop),
            poison = rank(Cause::PoisonInput),
            no_queue = rank(Cause::NoWorkerForQueue),
            no_handler = rank(Cause::NoWorkerForHandler),
            sat = rank(Cause::WorkerSaturated),
            queued = rank(Cause::Queued),
            overdue_rank = rank(Cause::OverdueTimer),
            first = among_last_k("f", &format!("= {k} - 1")),
        );
        let stalled_ranks: Vec<String> = Cause::ALL
            .iter()
            .filter(|c| c.is_stalled())
            .map(|c| rank(*c))
            .collect();
        let stalled_case = format!(
            "CASE WHEN k / {KEY} IN ({}) OR (k / {KEY} = {} AND {now_arg} - k % {KEY} > {approval}) \
             THEN 1 ELSE 0 END",
            stalled_ranks.join(", "),
            rank(Cause::WaitingApproval)
        );
        // A compensating run's steps are judged by their undo, as the pure
        // rules see them (`diagnosis::undo_status`), by its compensate handler.
        let undo_status = {
            let arms: String = UndoStatus::ALL
                .iter()
                .filter_map(|u| {
                    weft_core::diagnosis::undo_status(Some(*u))
                        .map(|st| format!(" WHEN '{}' THEN '{}'", u.as_str(), st.as_str()))
                })
                .collect();
            format!("(CASE s.undo{arms} END)")
        };
        // A `for_each` step whose undo is ready is undone child by child: it
        // is judged by its children's undos, in the pure rules' order
        // (`diagnosis::child_undo`): one due (its `ready_at`), else one
        // running (its lease), else one backing off (its due time).
        let child_cond = |kind: ChildUndo| match kind {
            ChildUndo::Due => {
                format!("ch.undo = '{U_READY}' AND COALESCE(ch.ready_at, 0) <= {now_arg}")
            }
            ChildUndo::Running => format!("ch.undo = '{U_RUNNING}'"),
            ChildUndo::BackingOff => {
                format!("ch.undo = '{U_READY}' AND ch.ready_at > {now_arg}")
            }
        };
        let child_undos = |cond: &str, what: &str| {
            format!(
                "(SELECT {what} FROM weft_children ch WHERE ch.run_id = s.run_id \
                 AND ch.position = s.position AND {cond})"
            )
        };
        let by_children = format!(
            "r.status = '{R_COMPENSATING}' AND s.children_total IS NOT NULL AND s.undo = '{U_READY}'"
        );
        let child_status = {
            let arms: String = diagnosis::CHILD_UNDO_ORDER
                .iter()
                .map(|(kind, status)| {
                    format!(
                        " WHEN EXISTS {} THEN '{}'",
                        child_undos(&child_cond(*kind), "1"),
                        status.as_str()
                    )
                })
                .collect();
            format!("(CASE{arms} END)")
        };
        // The child a due or backing-off status names (`child_undo`'s
        // choice: earliest `ready_at`, lowest index), for its repeated
        // failures.
        let chosen = |kind: ChildUndo| {
            child_undos(
                &format!("{} ORDER BY ch.ready_at, ch.idx LIMIT 1", child_cond(kind)),
                "ch.idx",
            )
        };
        let child_index = format!(
            "CASE WHEN EXISTS {due} THEN {due_child} WHEN EXISTS {running} THEN NULL ELSE {off_child} END",
            due = child_undos(&child_cond(ChildUndo::Due), "1"),
            due_child = chosen(ChildUndo::Due),
            running = child_undos(&child_cond(ChildUndo::Running), "1"),
            off_child = chosen(ChildUndo::BackingOff),
        );
        let child_ready_at = child_undos(&child_cond(ChildUndo::Due), "MIN(ch.ready_at)");
        let child_due_at = child_undos(&child_cond(ChildUndo::BackingOff), "MIN(ch.ready_at)");
        // `b0` and `c` are MATERIALIZED: inlined, every later mention of
        // their `status` and `rank` columns copied the CASE that computes
        // them, subqueries and all, into each expression that mentions them
        // (on PostgreSQL, thousands of subplans per step row: 98 s over
        // 10,000 active runs, from the gauge refresh). Materialized, each is
        // computed once per row.
        let sql = format!(
            "WITH {p99_cte}\
             active AS (\
               SELECT run_id, workflow, status FROM weft_runs WHERE status IN ('{R_PENDING}', '{R_RUNNING}', '{R_COMPENSATING}'){skip_active} \
               UNION ALL SELECT DISTINCT r.run_id, r.workflow, r.status FROM weft_leases l \
               CROSS JOIN weft_runs r WHERE r.run_id = l.run_id AND r.status = '{R_CANCELLED}'{skip_cancelled}), \
             b0 AS MATERIALIZED (\
               SELECT r.run_id, r.status AS run_status, s.position, \
               CASE WHEN {by_children} THEN {child_status} \
               WHEN r.status = '{R_COMPENSATING}' THEN {undo_status} ELSE s.status END AS status, s.queue, \
               CASE WHEN r.status = '{R_COMPENSATING}' THEN s.compensate_handler ELSE s.handler END AS handler, \
               s.n_attempts, CASE WHEN r.status = '{R_COMPENSATING}' AND s.children_total IS NULL THEN s.undo_base \
               WHEN r.status = '{R_COMPENSATING}' THEN s.n_attempts ELSE s.attempt_base END AS attempt_base, \
               CASE WHEN {by_children} THEN {child_ready_at} ELSE s.ready_at END AS ready_at, \
               CASE WHEN {by_children} THEN {child_due_at} ELSE s.due_at END AS due_at, \
               CASE WHEN {by_children} THEN {child_index} END AS child, \
               s.updated_at, {p99_col} AS p99, \
               CASE WHEN l.lease_id IS NOT NULL THEN COALESCE(l.claimed_at, la.claimed_at, 0) \
               ELSE s.updated_at END AS held_since \
               FROM active r JOIN weft_steps s ON s.run_id = r.run_id \
               LEFT JOIN weft_leases l ON l.run_id = s.run_id AND l.position = s.position \
               LEFT JOIN weft_attempts la ON la.lease_id = l.lease_id {p99_join} \
               WHERE (r.status NOT IN ('{R_CANCELLED}', '{R_COMPENSATING}') \
                 AND s.status IN ('{S_PENDING}', '{S_READY}', '{S_RUNNING}', '{S_RETRYING}', '{S_WAITING}')) \
               OR (r.status = '{R_COMPENSATING}' AND {undo_status} IS NOT NULL) \
               OR (r.status = '{R_CANCELLED}' AND l.lease_id IS NOT NULL)), \
             b AS (SELECT b0.*, (SELECT ch.undo_attempts FROM weft_children ch WHERE ch.run_id = b0.run_id \
               AND ch.position = b0.position AND ch.idx = b0.child) AS child_spent FROM b0), \
             c AS MATERIALIZED (SELECT b.*, {rank_case} AS rank FROM b), \
             d0 AS (SELECT c.run_id, c.rank, {since_case} AS since FROM c WHERE c.rank IS NOT NULL), \
             d AS (SELECT run_id, rank, CASE WHEN since < 0 THEN 0 WHEN since >= {KEY} THEN {KEY} - 1 \
               ELSE since END AS since FROM d0), \
             w AS (SELECT run_id, MIN(rank * {KEY} + since) AS k FROM d GROUP BY run_id), \
             runs AS (SELECT run_id, k / {KEY} AS rank, k % {KEY} AS since, {stalled_case} AS stalled FROM w) "
        );
        // The counts alone (the gauge, `weft status`) are grouped by the
        // database; a page needs each run's place in its group, which is
        // cheaper to sort here than with a window over every run.
        let sql = if page.limit == 0 {
            format!(
                "{sql}SELECT CAST(rank AS BIGINT) AS rank, CAST(stalled AS BIGINT) AS stalled, \
                 COUNT(*) AS n FROM runs GROUP BY rank, stalled"
            )
        } else {
            format!(
                "{sql}SELECT run_id, CAST(rank AS BIGINT) AS rank, CAST(since AS BIGINT) AS since, \
                 CAST(stalled AS BIGINT) AS stalled FROM runs"
            )
        };
        Ok((sql, p.0))
    }

    /// The summary `rows` of [`Store::summary_statement`] make.
    fn summary_of(
        &self,
        rows: &[crate::db::Row],
        page: &Page,
        started: Instant,
    ) -> Result<Summary> {
        // (worst first, rank, stalled) → the group and, for a page, its runs
        // with their `since`.
        let mut groups: BTreeMap<(bool, u8, bool), (CauseCount, Vec<Listed>)> = BTreeMap::new();
        for row in rows {
            let decoded = (|| -> Result<_> {
                let n = if page.limit == 0 { row.int("n")? } else { 1 };
                let run = if page.limit == 0 {
                    None
                } else {
                    Some((row.int("since")?, row.id("run_id")?))
                };
                Ok((row.int("rank")?, row.int("stalled")? == 1, n, run))
            })();
            let Some((rank, stalled, n, run)) = self.or_skip("diagnosis", decoded) else {
                continue;
            };
            let Some(cause) = Cause::ALL
                .iter()
                .copied()
                .find(|c| i64::from(c.rank()) == rank)
            else {
                continue;
            };
            let (group, runs) = groups
                .entry((!stalled, cause.rank(), stalled))
                .or_insert_with(|| {
                    (
                        CauseCount {
                            cause,
                            stalled,
                            count: 0,
                            run_ids: Vec::new(),
                        },
                        Vec::new(),
                    )
                });
            group.count += u64::try_from(n).unwrap_or(0);
            runs.extend(run);
        }
        let groups = groups
            .into_values()
            .map(|(mut group, mut runs)| {
                let listed = page.cause.is_none_or(|c| c == group.cause)
                    && (!page.stalled_only || group.stalled);
                if listed {
                    runs.sort_unstable();
                    group.run_ids = runs
                        .into_iter()
                        .skip(page.offset)
                        .take(page.limit)
                        .map(|(_, id)| id)
                        .collect();
                }
                group
            })
            .collect();
        self.observe_operation("diagnosis", started);
        Ok(Summary { groups })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Settings;

    /// The subqueries in the plan of the summary statement: the `SubPlan`
    /// nodes of PostgreSQL's plan, the subquery lines of SQLite's.
    async fn subplans(store: &Store) -> usize {
        let (sql, args) = store
            .summary_statement(&[], &Thresholds::default(), &Page::default())
            .await
            .expect("the statement");
        let (explain, column, marker) = match store.pool().dialect() {
            crate::Dialect::Postgres => ("EXPLAIN", "QUERY PLAN", "SubPlan"),
            crate::Dialect::Sqlite => ("EXPLAIN QUERY PLAN", "detail", "SUBQUERY"),
        };
        store
            .pool()
            .fetch_all(&format!("{explain} {sql}"), args)
            .await
            .expect("the plan")
            .iter()
            .filter(|row| row.text(column).expect("a plan line").contains(marker))
            .count()
    }

    /// Each subquery of the statement is planned once, not once per mention
    /// of the column it computes. Inlined, the CTEs copied the CASE of a
    /// step's status into every later expression naming it: thousands of
    /// subplans, evaluated per step row (98 s for 10,000 active runs on
    /// PostgreSQL, run by every gauge refresh).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_summary_plans_each_subquery_once() {
        let cluster = tokio::task::spawn_blocking(weft_testkit::PgCluster::start)
            .await
            .expect("start PostgreSQL");
        let sqlite = weft_testkit::sqlite_database();
        for url in [cluster.create_database(), sqlite.url.clone()] {
            let store = Store::connect(&url, Settings::default())
                .await
                .expect("connect");
            let n = subplans(&store).await;
            assert!((1..100).contains(&n), "{n} subqueries in the plan on {url}");
            store.close().await;
        }
    }
}
