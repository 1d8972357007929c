//! A run's page: the graph laid out from the definition with nodes coloured
//! by status, a Gantt of every attempt on one time axis (queue wait,
//! dispatch, handler, ingest, backoff gaps, waits), the critical path in
//! both, each step's input, output, error, attempts, logs and timing, and the
//! history. The script follows the run's SSE stream while it is not over.

use std::collections::BTreeMap;

use axum::{
    extract::{Path, Query, State, rejection::QueryRejection},
    http::StatusCode,
};
use minijinja::context;
use serde::Serialize;
use serde_json::Value;
use weft_api::{RunDetail, StepDetail};
use weft_core::{
    RunStatus, StepKind, StepStatus,
    critical_path::{self, AttemptTimes, CriticalPath, StepTimes},
};

use super::{
    PageResult, dag, format,
    history::{self, HISTORY_PAGE, HistoryQuery},
    payload::{MAX_LOG_LINE_BYTES, MAX_LOG_LINES, MAX_SHOWN_BYTES, clip, log_tail},
    render,
};
use crate::{AppState, convert};

const GANTT_WIDTH: f64 = 700.0;
const GANTT_LABELS: f64 = 150.0;
const ROW_HEIGHT: f64 = 20.0;

fn ms(t: &str) -> Option<i64> {
    weft_store::parse_rfc3339(t)
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

/// The critical path's input from a run's rows and history: each step's
/// forward attempts (undos run after the run's outcome is set); a `for_each`
/// step's children as one span, from its first claim to its last end (still
/// open while a child runs).
pub(crate) fn step_times(run: &RunDetail, events: &[weft_api::EventRecord]) -> Vec<StepTimes> {
    let mut steps: Vec<StepTimes> = run
        .steps
        .iter()
        .map(|s| {
            let mut attempts: Vec<AttemptTimes> = s
                .attempts
                .iter()
                .filter(|a| !is_undo(a))
                .filter_map(|a| {
                    Some(AttemptTimes {
                        attempt: a.attempt,
                        claimed_ms: ms(&a.claimed_at)?,
                        finished_ms: a.finished_at.as_deref().and_then(ms),
                    })
                })
                .collect();
            if s.children.is_some() && !attempts.is_empty() {
                let open = attempts.iter().any(|a| a.finished_ms.is_none());
                attempts = vec![AttemptTimes {
                    attempt: attempts.iter().map(|a| a.attempt).min().unwrap_or(1),
                    claimed_ms: attempts.iter().map(|a| a.claimed_ms).min().unwrap_or(0),
                    finished_ms: if open {
                        None
                    } else {
                        attempts.iter().filter_map(|a| a.finished_ms).max()
                    },
                }];
            }
            StepTimes {
                name: s.name.clone(),
                depends_on: s.depends_on.clone(),
                attempts,
                ..StepTimes::default()
            }
        })
        .collect();
    let parsed: Vec<(&str, Option<&str>, i64)> = events
        .iter()
        .filter_map(|e| Some((e.kind.as_str(), e.step.as_deref(), ms(&e.at)?)))
        .collect();
    StepTimes::from_events(&mut steps, parsed);
    steps
}

#[derive(Serialize)]
struct Seg {
    kind: &'static str,
    x: f64,
    w: f64,
    title: String,
}

#[derive(Serialize)]
struct Row {
    label: String,
    step: String,
    attempt: String,
    y: f64,
    crit: bool,
    segs: Vec<Seg>,
    /// `forward`, `compensate` (an undo) or `children` (a `for_each`
    /// step's children, one row).
    kind: &'static str,
    /// For an undo: the forward attempt it undoes.
    undoes: Option<i64>,
}

/// One row before it is placed: label, step, attempt, on the critical
/// path, segments, kind, the attempt an undo undoes.
type RowParts = (
    String,
    String,
    String,
    bool,
    Vec<Seg>,
    &'static str,
    Option<i64>,
);

/// The most failed children's attempts one `for_each` row marks.
const MAX_CHILD_MARKS: usize = 20;
/// The most attempts a `for_each` step's attempts table lists.
const MAX_CHILD_ATTEMPTS: usize = 20;
/// The most failed children whose errors a `for_each` step shows.
const MAX_FAILED_CHILDREN: usize = 5;

/// Whether an attempt is an undo (saga compensation).
fn is_undo(a: &weft_api::AttemptDetail) -> bool {
    a.kind == "compensate"
}

#[derive(Serialize)]
struct Tick {
    x: f64,
    label: String,
}

#[derive(Serialize)]
struct Gantt {
    width: f64,
    height: f64,
    span: String,
    rows: Vec<Row>,
    ticks: Vec<Tick>,
    kinds: Vec<&'static str>,
}

fn gantt(run: &RunDetail, times: &[StepTimes], path: &CriticalPath, t0: i64, t1: i64) -> Gantt {
    let span = (t1 - t0).max(1) as f64;
    let plot = GANTT_WIDTH - GANTT_LABELS - 10.0;
    let x = |t: i64| GANTT_LABELS + ((t - t0).max(0) as f64 / span * plot).min(plot);
    let seg = |kind: &'static str, a: i64, b: i64, what: &str| Seg {
        kind,
        x: x(a),
        w: (x(b) - x(a)).max(1.0),
        title: format!(
            "{what} {}: {}",
            kind.replace('_', " "),
            format::human_ms(b - a)
        ),
    };
    let on_path = |step: &str, attempt: Option<i64>| {
        path.segments
            .iter()
            .any(|s| s.step == step && (attempt.is_none() || s.attempt == attempt))
    };
    let mut rows: Vec<RowParts> = Vec::new();
    let mut undos: Vec<(i64, &StepDetail, &weft_api::AttemptDetail)> = Vec::new();
    // A `for_each` step's child undos: one row, like its children.
    let mut child_undos: Vec<(i64, RowParts)> = Vec::new();
    for (step, st) in run.steps.iter().zip(times) {
        if let Some(children) = &step.children {
            if let Some(row) = child_undo_row(step, children.total, t1, &seg) {
                child_undos.push(row);
            }
        } else {
            for a in step.attempts.iter().filter(|a| is_undo(a)) {
                if let Some(claimed) = ms(&a.claimed_at) {
                    undos.push((claimed, step, a));
                }
            }
        }
        let forward: Vec<&weft_api::AttemptDetail> =
            step.attempts.iter().filter(|a| !is_undo(a)).collect();
        // A `for_each` step's children: one row with their count, the
        // span of their attempts and a mark per failed attempt (capped).
        if let Some(children) = &step.children {
            let claims: Vec<(i64, i64, &str)> = forward
                .iter()
                .filter_map(|a| {
                    let claimed = ms(&a.claimed_at)?;
                    let end = a.finished_at.as_deref().and_then(ms).unwrap_or(t1);
                    Some((claimed, end, a.status.as_str()))
                })
                .collect();
            let what = format!("{} ({} children)", step.name, children.total);
            let mut segs = Vec::new();
            if let (Some(first), Some(last)) = (
                claims.iter().map(|c| c.0).min(),
                claims.iter().map(|c| c.1).max(),
            ) {
                segs.push(seg("children", first, last, &what));
            }
            segs.extend(
                claims
                    .iter()
                    .filter(|c| c.2 == "failed")
                    .take(MAX_CHILD_MARKS)
                    .map(|c| seg("failed", c.0, c.1, &what)),
            );
            rows.push((
                format!("{} ×{}", step.name, children.total),
                step.name.clone(),
                String::new(),
                on_path(&step.name, None),
                segs,
                "children",
                None,
            ));
            continue;
        }
        if forward.is_empty() {
            if let Some(start) = st.waiting_ms {
                let end = st.ended_ms.unwrap_or(t1);
                rows.push((
                    format!("{} (wait)", step.name),
                    step.name.clone(),
                    String::new(),
                    on_path(&step.name, None),
                    vec![seg("wait", start, end, &step.name)],
                    "forward",
                    None,
                ));
            }
            continue;
        }
        let mut prev_end: Option<i64> = None;
        for a in forward {
            let Some(claimed) = ms(&a.claimed_at) else {
                continue;
            };
            let finished = a.finished_at.as_deref().and_then(ms);
            let what = format!("{} #{}", step.name, a.attempt);
            let mut segs = Vec::new();
            let queued = claimed - a.timing.as_ref().map_or(0, |t| t.queue_wait_ms);
            if let Some(prev) = prev_end
                && queued > prev
            {
                segs.push(seg("backoff", prev, queued, &what));
            }
            match (&a.timing, finished) {
                (Some(t), Some(end)) => {
                    segs.push(seg("queue_wait", queued, claimed, &what));
                    let dispatch = t.dispatch_ms.unwrap_or(0);
                    match t.handler_ms {
                        Some(handler) => {
                            segs.push(seg("dispatch", claimed, claimed + dispatch, &what));
                            let kind = if a.status == "failed" {
                                "failed"
                            } else {
                                "handler"
                            };
                            segs.push(seg(
                                kind,
                                claimed + dispatch,
                                claimed + dispatch + handler,
                                &what,
                            ));
                        }
                        None => {
                            let kind = if a.status == "failed" {
                                "failed"
                            } else {
                                "running"
                            };
                            segs.push(seg(kind, claimed, end - t.ingest_ms, &what));
                        }
                    }
                    segs.push(seg("ingest", end - t.ingest_ms, end, &what));
                }
                (_, end) => {
                    let kind = if a.status == "failed" {
                        "failed"
                    } else {
                        "running"
                    };
                    segs.push(seg(kind, claimed, end.unwrap_or(t1), &what));
                }
            }
            prev_end = Some(finished.unwrap_or(t1));
            rows.push((
                format!("{} #{}", step.name, a.attempt),
                step.name.clone(),
                a.attempt.to_string(),
                on_path(&step.name, Some(a.attempt)),
                segs,
                "forward",
                None,
            ));
        }
        // Still backing off, or ready again and waiting for a worker.
        if let (Some(prev), false) = (prev_end, st.ended_ms.is_some())
            && step.undo.is_none()
            && !matches!(step.status.as_str(), "running")
            && prev < t1
            && let Some(row) = rows.last_mut()
        {
            row.4.push(seg("backoff", prev, t1, &step.name));
        }
    }
    // The undos on the same axis, in the order they ran, each marked as
    // the undo of its step's forward attempt.
    undos.sort_by_key(|u| (u.0, u.2.attempt));
    let mut undo_rows: Vec<(i64, RowParts)> = child_undos;
    for (claimed, step, a) in undos {
        let end = a.finished_at.as_deref().and_then(ms).unwrap_or(t1);
        let what = match a.undoes_attempt {
            Some(n) => format!("undo of {} #{n} (attempt #{})", step.name, a.attempt),
            None => format!("undo of {} (attempt #{})", step.name, a.attempt),
        };
        let kind = if a.status == "failed" {
            "undo_failed"
        } else {
            "undo"
        };
        undo_rows.push((
            claimed,
            (
                format!("undo {} #{}", step.name, a.attempt),
                step.name.clone(),
                a.attempt.to_string(),
                false,
                vec![seg(kind, claimed, end, &what)],
                "compensate",
                a.undoes_attempt,
            ),
        ));
    }
    // Stable: rows claimed at the same time keep their attempt order.
    undo_rows.sort_by_key(|r| r.0);
    rows.extend(undo_rows.into_iter().map(|r| r.1));
    if !path.segments.is_empty() {
        rows.push((
            "critical path".to_owned(),
            String::new(),
            String::new(),
            true,
            path.segments
                .iter()
                .map(|s| {
                    let mut g = seg(s.kind.as_str(), s.start_ms, s.end_ms, &s.step);
                    g.kind = s.kind.as_str();
                    g
                })
                .collect(),
            "critical",
            None,
        ));
    }
    let rows: Vec<Row> = rows
        .into_iter()
        .enumerate()
        .map(
            |(i, (label, step, attempt, crit, segs, kind, undoes))| Row {
                label,
                step,
                attempt,
                y: 18.0 + i as f64 * ROW_HEIGHT,
                crit,
                segs,
                kind,
                undoes,
            },
        )
        .collect();
    let ticks = (0..=4)
        .map(|i| {
            let t = t0 + (t1 - t0) * i / 4;
            Tick {
                x: x(t),
                label: format!("+{}", format::human_ms(t - t0)),
            }
        })
        .collect();
    Gantt {
        width: GANTT_WIDTH,
        height: 24.0 + rows.len() as f64 * ROW_HEIGHT,
        span: format::human_ms(t1 - t0),
        rows,
        ticks,
        kinds: vec![
            "queue_wait",
            "dispatch",
            "handler",
            "ingest",
            "running",
            "failed",
            "backoff",
            "wait",
            "children",
            "undo",
            "undo_failed",
        ],
    }
}

/// The one Gantt row of a `for_each` step's child undos (`None` when none
/// ran): the span from the first undo's claim to the last one's end, and a
/// mark per failed undo (capped), so that the rows do not grow with the
/// children. Keyed by its first claim, to sit among the other undos.
fn child_undo_row(
    step: &StepDetail,
    total: i64,
    t1: i64,
    seg: &dyn Fn(&'static str, i64, i64, &str) -> Seg,
) -> Option<(i64, RowParts)> {
    let claims: Vec<(i64, i64, bool)> = step
        .attempts
        .iter()
        .filter(|a| is_undo(a))
        .filter_map(|a| {
            let claimed = ms(&a.claimed_at)?;
            let end = a.finished_at.as_deref().and_then(ms).unwrap_or(t1);
            Some((claimed, end, a.status == "failed"))
        })
        .collect();
    let first = claims.iter().map(|c| c.0).min()?;
    let last = claims.iter().map(|c| c.1).max()?;
    let what = format!("undo of {} ({} undo attempts)", step.name, claims.len());
    let mut segs = vec![seg("undo", first, last, &what)];
    segs.extend(
        claims
            .iter()
            .filter(|c| c.2)
            .take(MAX_CHILD_MARKS)
            .map(|c| seg("undo_failed", c.0, c.1, &what)),
    );
    Some((
        first,
        (
            format!("undo {} ×{total}", step.name),
            step.name.clone(),
            String::new(),
            false,
            segs,
            "compensate",
            None,
        ),
    ))
}

#[derive(Serialize)]
struct NodeView {
    name: String,
    label: String,
    status: String,
    /// The step's undo when it failed or was skipped (marked on the node).
    undo_mark: Option<String>,
    /// A `for_each` step's children counts.
    children: Option<weft_api::ChildCounts>,
    crit: bool,
    x: f64,
    y: f64,
    w: f64,
    h: f64,
    cx: f64,
    cy: f64,
}

#[derive(Serialize)]
struct EdgeView {
    from: String,
    to: String,
    d: String,
    crit: bool,
}

pub(crate) async fn run_page(
    State(state): State<AppState>,
    session: super::session::PageSession,
    Path(id): Path<String>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> PageResult {
    // Text that is neither a run id nor a trace id names no run: 404.
    let id: weft_core::RunRef = id
        .parse()
        .map_err(|_| weft_store::Error::NotFound { what: "run", id })?;
    let from = match query {
        Ok(Query(query)) => query.from()?,
        Err(err) => return Err(super::PageError::bad_request(err.body_text())),
    };
    let store = state.store();
    let run_id = store.resolve_run_id(&id).await?;
    let id = weft_core::RunRef::Run(run_id);
    let raw = convert::run_detail(store.get_run(&id).await?);
    // The run's and steps' own events (not one per child or attempt) for
    // the critical path, actions and undo chain; one page for the table.
    let events = convert::events(
        store
            .run_events_of_kinds(&id, &history::page_kinds())
            .await?,
    );
    let page = store.run_history_page(&id, from, HISTORY_PAGE).await?;
    // Each step's last log lines (never every line of the run), with a
    // capped count of the earlier ones.
    let mut tails = Vec::new();
    for step in raw.steps.iter().filter(|s| !s.attempts.is_empty()) {
        let tail = store
            .step_log_tail(run_id, &step.name, MAX_LOG_LINES as u32)
            .await?;
        tails.push((step.name.clone(), tail));
    }
    let def = store.definition(&raw.workflow, raw.version).await?;
    // Every value and free text a person sees goes through `crate::present`:
    // the key rule, and the secrets of the run's input and outputs masked.
    let presenter = crate::present::RunPresenter::new(&state.config.redactor, &raw);
    let text = |t: &str| presenter.text(t);
    let mut run = raw.clone();
    presenter.run(&mut run);
    let now = store.now_ms();
    let terminal = RunStatus::parse(&run.status).is_some_and(|s| s.is_terminal());
    let t0 = ms(&run.created_at).unwrap_or(now);
    let end = run.finished_at.as_deref().and_then(ms).unwrap_or(now);
    let t1 = end.max(t0 + 1);
    let times = step_times(&run, &events);
    let path = critical_path::critical_path(&times, if terminal { end } else { now });

    // The graph, from the definition's steps and dependencies.
    let shape: Vec<(String, Vec<String>)> = def
        .steps
        .iter()
        .map(|s| (s.name.clone(), s.depends_on.clone()))
        .collect();
    let step_of = |name: &str| run.steps.iter().find(|s| s.name == name);
    // A `for_each` step is one node with its children's counts.
    let label_of = |name: &str| match step_of(name).and_then(|s| s.children) {
        Some(c) => children_label(name, &c),
        None => name.to_owned(),
    };
    let laid = dag::layout_labelled(&shape, label_of);
    let status_of =
        |name: &str| step_of(name).map_or_else(|| "pending".to_owned(), |s| s.status.clone());
    let crit_edge =
        |from: &str, to: &str| path.steps.windows(2).any(|w| w[0] == from && w[1] == to);
    let nodes: Vec<NodeView> = laid
        .nodes
        .iter()
        .map(|n| NodeView {
            label: label_of(&n.name),
            status: status_of(&n.name),
            undo_mark: step_of(&n.name)
                .and_then(|s| s.undo.clone())
                .filter(|u| matches!(u.as_str(), "failed" | "skipped")),
            children: step_of(&n.name).and_then(|s| s.children),
            crit: path.steps.contains(&n.name),
            x: n.x,
            y: n.y,
            w: n.w,
            h: n.h,
            cx: n.x + n.w / 2.0,
            cy: n.y + n.h / 2.0,
            name: n.name.clone(),
        })
        .collect();
    let edges: Vec<EdgeView> = laid
        .edges
        .iter()
        .map(|e| EdgeView {
            crit: crit_edge(&e.from, &e.to),
            from: e.from.clone(),
            to: e.to.clone(),
            d: e.d.clone(),
        })
        .collect();

    // Each step's input as the claim builds it, then redacted.
    let outputs: BTreeMap<String, weft_core::machine::Upstream> = raw
        .steps
        .iter()
        .filter_map(|s| {
            let upstream = weft_core::machine::Upstream {
                status: weft_core::StepStatus::parse(&s.status)?,
                reason: s.reason.as_deref().and_then(weft_core::Reason::parse),
                error: s.error.clone(),
                output: s.output.clone(),
            };
            Some((s.name.clone(), upstream))
        })
        .collect();
    let mut by_step: BTreeMap<&str, StepLogs> = BTreeMap::new();
    for (step, tail) in &tails {
        let lines = convert::log_lines(tail.lines.clone())
            .into_iter()
            .map(|line| {
                let shown = clip(text(&line.line), MAX_LOG_LINE_BYTES);
                serde_json::json!({
                    "at": format::short_time(&line.at),
                    "attempt": line.attempt,
                    "bytes": shown.text.len(),
                    "cut": shown.clipped.is_some(),
                    "line": shown.text,
                })
            })
            .collect();
        by_step.insert(
            step.as_str(),
            StepLogs {
                lines,
                earlier: tail.earlier,
                capped: tail.earlier_capped,
            },
        );
    }
    let steps: Vec<Value> = run
        .steps
        .iter()
        .map(|s| {
            step_view(
                s, &def, &raw.input, &outputs, &presenter, &text, &by_step, &path,
            )
        })
        .collect();

    let history = history::view(page, from, &presenter);
    let actions = actions(&events, &presenter);
    // The buttons that apply to the run's state (the role is `session`'s).
    let status = RunStatus::parse(&run.status);
    let undo = undo_view(&run, &events, &text);
    let buttons = context! {
        cancel => matches!(status, Some(RunStatus::Pending | RunStatus::Running | RunStatus::Compensating)),
        retry => matches!(status, Some(RunStatus::Failed | RunStatus::Cancelled)),
        retry_undos => run.reason.as_deref() == Some("compensation_failed"),
        // A failed undo an operator may mark as skipped (with a comment).
        skip_undos => run.steps.iter()
            .filter(|s| s.undo.as_deref() == Some("failed"))
            .map(|s| context! {
                name => s.name,
                url => format!("/v1/runs/{}/steps/{}/compensation/skip", run.run_id, super::encode(&s.name)),
            })
            .collect::<Vec<_>>(),
        approvals => run.steps.iter()
            .filter(|s| {
                s.kind == StepKind::Approval.as_str()
                    && StepStatus::parse(&s.status) == Some(StepStatus::Waiting)
            })
            .map(|s| {
                let url = format!("/v1/runs/{}/steps/{}/", run.run_id, super::encode(&s.name));
                context! { name => s.name, approve => format!("{url}approve"), reject => format!("{url}reject") }
            })
            .collect::<Vec<_>>(),
    };
    let trace_url =
        crate::present::trace_url(state.config.trace_url_template.as_deref(), &run.trace_id);
    let gantt = gantt(&run, &times, &path, t0, t1);
    let critical = context! {
        steps => path.steps,
        total => format::human_ms(path.total_ms),
        segments => path.segments.iter().map(|s| context! {
            step => s.step, kind => s.kind.as_str(), dur => format::human_ms(s.duration_ms()),
        }).collect::<Vec<_>>(),
    };
    let legend = [
        "completed",
        "running",
        "ready",
        "retrying",
        "waiting",
        "failed",
        "skipped",
        "cancelled",
        "pending",
        "compensating",
        "compensated",
    ];
    Ok(render(
        StatusCode::OK,
        "run.html",
        &format!("Run {}", run.run_id),
        "run",
        None,
        context! {
            run => context! {
                run_id => run.run_id, trace_id => run.trace_id, trace_url,
                workflow => run.workflow, version => run.version,
                status => run.status, reason => run.reason, terminal,
                error => run.error.as_deref().map(text),
                created => format::short_time(&run.created_at),
                took => format::human_ms(end - t0) + if terminal { "" } else { " so far" },
                metadata => run.metadata.iter().map(|(key, value)| context! {
                    key, value,
                    // A redacted value finds nothing: no link.
                    href => (!state.config.redactor.is_sensitive(key))
                        .then(|| super::href("/", &[("meta", &format!("{key}={value}"))])),
                }).collect::<Vec<_>>(),
            },
            dag => context! { width => laid.width, height => laid.height, nodes, edges },
            gantt, critical, steps, history, legend, actions, buttons, session, undo,
        },
    ))
}

/// Who did what on the run: one row per person's action (the history
/// events one action writes share their time and actor).
fn actions(
    events: &[weft_api::EventRecord],
    presenter: &crate::present::RunPresenter,
) -> Vec<Value> {
    let mut rows = Vec::new();
    let mut last: Option<(&str, &str)> = None;
    for event in events {
        let text = |key: &str| event.data.get(key).and_then(|v| v.as_str());
        let Some(actor) = text("actor") else { continue };
        if last == Some((event.at.as_str(), actor)) {
            continue;
        }
        last = Some((event.at.as_str(), actor));
        rows.push(serde_json::json!({
            "at": format::short_time(&event.at),
            "kind": event.kind,
            "step": event.step,
            "actor": actor,
            "on_behalf_of": text("on_behalf_of"),
            "comment": text("comment").map(|c| presenter.text(c)),
        }));
    }
    rows
}

#[allow(clippy::too_many_arguments)]
fn step_view(
    s: &StepDetail,
    def: &weft_core::Definition,
    run_input: &Value,
    outputs: &BTreeMap<String, weft_core::machine::Upstream>,
    presenter: &crate::present::RunPresenter,
    text: &dyn Fn(&str) -> String,
    logs: &BTreeMap<&str, StepLogs>,
    path: &CriticalPath,
) -> Value {
    let input = def
        .steps
        .iter()
        .position(|d| d.name == s.name)
        .filter(|_| !s.attempts.is_empty())
        .map(|i| presenter.shown(&weft_core::machine::task_input(def, i, run_input, outputs)));
    let step_logs = logs.get(s.name.as_str());
    let lines: &[Value] = step_logs.map_or(&[], |l| l.lines.as_slice());
    let earlier = step_logs.map_or(0, |l| l.earlier);
    // The last lines, within the page's bounds of lines and bytes.
    let sizes: Vec<usize> = lines
        .iter()
        .map(|l| l["bytes"].as_u64().unwrap_or(0) as usize)
        .collect();
    let shown_lines = log_tail(&sizes);
    let dur = |v: Option<i64>| v.map_or_else(|| "-".to_owned(), format::human_ms);
    // A `for_each` step lists its first attempts only; all are in the JSON.
    let cap = if s.children.is_some() {
        MAX_CHILD_ATTEMPTS
    } else {
        usize::MAX
    };
    let attempts: Vec<Value> = s
        .attempts
        .iter()
        .take(cap)
        .map(|a| {
            let t = a.timing.as_ref();
            serde_json::json!({
                "attempt": a.attempt,
                "index": a.index,
                "undo": is_undo(a),
                "undoes": a.undoes_attempt,
                "status": a.status,
                "reason": a.reason,
                "worker": a.worker_id,
                "claimed": format::short_time(&a.claimed_at),
                "queue_wait": dur(t.map(|t| t.queue_wait_ms)),
                "dispatch": dur(t.and_then(|t| t.dispatch_ms)),
                "handler": dur(t.and_then(|t| t.handler_ms)),
                "ingest": dur(t.map(|t| t.ingest_ms)),
                "total": dur(t.map(|t| t.total_ms)),
                "error": a.error.as_deref().map(text),
            })
        })
        .collect();
    serde_json::json!({
        "name": s.name,
        "kind": s.kind,
        "handler": s.handler,
        "queue": s.queue,
        "deps": s.depends_on,
        "status": s.status,
        "reason": s.reason,
        "due": s.due_at.as_deref().map(format::short_time),
        "input": clip(input.as_ref().map(pretty).unwrap_or_default(), MAX_SHOWN_BYTES),
        "output": clip(s.output.as_ref().map(pretty).unwrap_or_default(), MAX_SHOWN_BYTES),
        "error": s.error.as_deref().map(|e| clip(text(e), MAX_SHOWN_BYTES)),
        "attempts": attempts,
        "attempt_count": s.attempts.len(),
        "attempts_left_out": s.attempts.len().saturating_sub(attempts.len()),
        "undo": s.undo,
        "children": s.children.map(|c| serde_json::json!({
            "label": children_label(&s.name, &c),
            "total": c.total, "pending": c.pending, "in_flight": c.in_flight,
            "completed": c.completed, "failed": c.failed,
        })),
        "failed_children": failed_children(s, text),
        "logs": &lines[lines.len() - shown_lines..],
        "logs_left_out": earlier + (lines.len() - shown_lines) as u64,
        "logs_left_out_capped": step_logs.is_some_and(|l| l.capped),
        "logs_cut": lines[lines.len() - shown_lines..].iter().any(|l| l["cut"] == true),
        "name_q": super::encode(&s.name),
        "crit": path.steps.contains(&s.name),
    })
}

/// A step's last log lines as shown, and how many came before them
/// (`capped`: at least that many).
struct StepLogs {
    lines: Vec<Value>,
    earlier: u64,
    capped: bool,
}

/// A `for_each` node's text: `work · 998/1000 ✓ 2 ✗`.
fn children_label(name: &str, c: &weft_api::ChildCounts) -> String {
    format!("{name} · {}/{} ✓ {} ✗", c.completed, c.total, c.failed)
}

/// A `for_each` step's first failed children (by index): the child whose
/// latest attempt failed, with that attempt's error.
fn failed_children(s: &StepDetail, text: &dyn Fn(&str) -> String) -> Vec<Value> {
    if s.children.is_none_or(|c| c.failed == 0) {
        return Vec::new();
    }
    let mut latest: BTreeMap<i64, &weft_api::AttemptDetail> = BTreeMap::new();
    for a in s.attempts.iter().filter(|a| !is_undo(a)) {
        if let Some(i) = a.index {
            let e = latest.entry(i).or_insert(a);
            if a.attempt > e.attempt {
                *e = a;
            }
        }
    }
    latest
        .into_iter()
        .filter(|(_, a)| a.status == "failed")
        .take(MAX_FAILED_CHILDREN)
        .map(|(i, a)| {
            serde_json::json!({
                "index": i,
                "attempt": a.attempt,
                "reason": a.reason,
                "error": a.error.as_deref().map(|e| clip(text(e), MAX_SHOWN_BYTES)),
            })
        })
        .collect()
}

/// The run's undo chain: one row per step being undone, in the order its
/// undo first ran (those not run yet last, in reverse manifest order), with
/// its `undo` status, attempts and last error; and the run's original
/// failure (the reason `compensation.started` recorded). `None` when the
/// run never compensated.
fn undo_view(
    run: &RunDetail,
    events: &[weft_api::EventRecord],
    text: &dyn Fn(&str) -> String,
) -> Option<Value> {
    let started = events
        .iter()
        .find(|e| e.kind == weft_core::EventKind::CompensationStarted.as_str());
    if started.is_none() && run.steps.iter().all(|s| s.undo.is_none()) {
        return None;
    }
    let reason = started
        .and_then(|e| e.data.get("reason"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| run.reason.clone());
    // The failure that started it: the first step that failed going forward.
    let error = run
        .steps
        .iter()
        .find(|s| s.status == "failed" && s.reason.as_deref() != Some("compensation_failed"))
        .and_then(|s| s.error.clone())
        .or_else(|| {
            (run.reason.as_deref() != Some("compensation_failed"))
                .then(|| run.error.clone())
                .flatten()
        });
    let mut rows: Vec<(i64, usize, Value)> = run
        .steps
        .iter()
        .enumerate()
        .filter(|(_, s)| s.undo.is_some())
        .map(|(i, s)| {
            let undos: Vec<&weft_api::AttemptDetail> =
                s.attempts.iter().filter(|a| is_undo(a)).collect();
            let first = undos
                .iter()
                .filter_map(|a| ms(&a.claimed_at))
                .min()
                .unwrap_or(i64::MAX);
            let last = undos.last();
            let row = serde_json::json!({
                "step": s.name,
                "undo": s.undo,
                "attempts": undos.len(),
                "undoes": last.and_then(|a| a.undoes_attempt),
                "error": last.and_then(|a| a.error.as_deref()).map(|e| clip(text(e), MAX_SHOWN_BYTES)),
                "started": last.map(|a| format::short_time(&a.claimed_at)),
            });
            (first, usize::MAX - i, row)
        })
        .collect();
    rows.sort_by_key(|r| (r.0, r.1));
    Some(serde_json::json!({
        "reason": reason,
        "error": error.map(|e| clip(text(&e), MAX_SHOWN_BYTES)),
        "rows": rows.into_iter().map(|r| r.2).collect::<Vec<_>>(),
    }))
}
