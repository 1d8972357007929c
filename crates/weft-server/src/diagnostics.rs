//! Workers, queues and why runs are not moving: `GET /v1/workers`,
//! `GET /v1/queues`, `GET /v1/runs/{id}/diagnosis` and `GET /v1/diagnostics`,
//! every diagnosis from `weft_core::diagnosis` under the engine's thresholds.
//! Their routes (viewer) are in the route table (`routes/mod.rs`).

use std::collections::{BTreeMap, BTreeSet};

use axum::{Extension, Json, extract::State};
use serde::Deserialize;
use weft_api::{
    CauseGroup, Diagnostics, ErrorBody, QueueInfo, QueueList, RunDiagnosisView, StepDiagnosisView,
    SystemFindingView, WorkerInfo, WorkerList,
};
use weft_core::ErrorCode;
use weft_core::diagnosis::{self, Cause, RunDiagnosis, Thresholds};
use weft_store::{Page, WorkerRecord, rfc3339};

use crate::{
    ApiError, AppState,
    auth::Principal,
    extract::{Path, Query},
    present::{self, RunPresenter},
};

type ApiResult<T> = Result<T, ApiError>;

/// The most runs `GET /v1/diagnostics` lists per cause (`limit`).
pub const MAX_DIAGNOSTICS_LIMIT: u32 = 500;

/// The furthest `GET /v1/diagnostics` pages into one cause (`offset`).
pub const MAX_DIAGNOSTICS_OFFSET: u32 = 10_000;

#[derive(utoipa::OpenApi)]
#[openapi(paths(list_workers, list_queues, run_diagnosis, diagnostics))]
pub(crate) struct DiagnosticsDoc;

fn thresholds(state: &AppState) -> Thresholds {
    state.engine.config().diagnosis
}

#[derive(Deserialize)]
pub(crate) struct WorkersQuery {
    queue: Option<String>,
    /// Also workers past the liveness window (until their retention ends).
    #[serde(default)]
    all: bool,
}

fn worker_info(w: &WorkerRecord, t: &Thresholds, now: i64) -> WorkerInfo {
    WorkerInfo {
        worker_id: w.worker_id.clone(),
        host: w.meta.host.clone(),
        pid: w.meta.pid,
        version: w.meta.version.clone(),
        queues: w.queues.clone(),
        handlers: w.handlers.clone(),
        concurrency: w.meta.concurrency,
        slots_in_use: w.slots_in_use,
        first_seen: rfc3339(w.first_seen_ms),
        last_poll: rfc3339(w.last_poll_ms),
        last_heartbeat: w.last_heartbeat_ms.map(rfc3339),
        live: w.view().is_live(now, t),
    }
}

#[utoipa::path(get, path = "/v1/workers", tag = "workers", params(("queue" = Option<String>, Query, description = "Only workers polling this queue", min_length = 1, max_length = 128, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$"), ("all" = Option<bool>, Query, description = "Also workers no longer live")), responses((status = 200, body = WorkerList)))]
pub(crate) async fn list_workers(
    State(state): State<AppState>,
    Query(query): Query<WorkersQuery>,
) -> ApiResult<Json<WorkerList>> {
    let t = thresholds(&state);
    let now = state.store().now_ms();
    let since = if query.all { 0 } else { now - t.worker_live_ms };
    let workers = state
        .store()
        .list_workers(since)
        .await?
        .iter()
        .filter(|w| query.queue.as_ref().is_none_or(|q| w.queues.contains(q)))
        .map(|w| worker_info(w, &t, now))
        .collect();
    Ok(Json(WorkerList { workers }))
}

#[derive(Deserialize)]
pub(crate) struct QueuesQuery {
    queue: Option<String>,
}

#[utoipa::path(get, path = "/v1/queues", tag = "workers", params(("queue" = Option<String>, Query, description = "Only this queue", min_length = 1, max_length = 128, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")), responses((status = 200, body = QueueList)))]
pub(crate) async fn list_queues(
    State(state): State<AppState>,
    Query(query): Query<QueuesQuery>,
) -> ApiResult<Json<QueueList>> {
    let t = thresholds(&state);
    let now = state.store().now_ms();
    let store = state.store();
    let counts = store.queue_counts().await?;
    let workers = store.list_workers(now - t.worker_live_ms).await?;
    let mut names: BTreeSet<String> = counts.keys().cloned().collect();
    let mut pollers: BTreeMap<&str, (u32, BTreeSet<&str>)> = BTreeMap::new();
    for w in &workers {
        for q in &w.queues {
            names.insert(q.clone());
            let entry = pollers.entry(q.as_str()).or_default();
            entry.0 += 1;
            entry.1.extend(w.handlers.iter().map(String::as_str));
        }
    }
    let queues = names
        .into_iter()
        .filter(|q| query.queue.as_ref().is_none_or(|want| want == q))
        .map(|q| {
            let c = counts.get(&q).cloned().unwrap_or_default();
            let (n, handlers) = pollers.get(q.as_str()).cloned().unwrap_or_default();
            QueueInfo {
                ready: c.ready,
                running: c.running,
                oldest_ready_age_seconds: c
                    .oldest_ready_ms
                    .map_or(0.0, |o| (now - o).max(0) as f64 / 1000.0),
                pollers: n,
                handlers: handlers.into_iter().map(str::to_owned).collect(),
                throughput_last_minute: c.completed_last_minute,
                queue: q,
            }
        })
        .collect();
    Ok(Json(QueueList { queues }))
}

/// The wire form of one run's diagnosis.
pub(crate) fn view(d: &RunDiagnosis, t: &Thresholds, now: i64) -> RunDiagnosisView {
    RunDiagnosisView {
        run_id: d.run_id.to_string(),
        workflow: d.workflow.clone(),
        status: d.status.as_str().to_owned(),
        cause: d.cause.map(|c| c.as_str().to_owned()),
        stalled: d.stalled,
        stuck_since: d.since_ms.map(rfc3339),
        steps: d
            .steps
            .iter()
            .map(|s| StepDiagnosisView {
                step: s.step.clone(),
                cause: s.cause.as_str().to_owned(),
                stalled: diagnosis::is_stalled(s, t, now),
                since: rfc3339(s.since_ms),
                evidence: s.evidence.clone(),
                command: s.command.clone(),
            })
            .collect(),
    }
}

/// One run's diagnosis under the engine's thresholds.
async fn diagnose_one(
    state: &AppState,
    run_id: &weft_core::RunRef,
) -> ApiResult<Option<(RunDiagnosis, Thresholds, i64)>> {
    let t = thresholds(state);
    let store = state.store();
    let views = store.diagnosis_views(Some(run_id), 1).await?;
    let now = store.now_ms();
    let workers = live_workers(state, &t, now).await?;
    Ok(views
        .first()
        .map(|r| (diagnosis::diagnose(r, &workers, &t, now), t, now)))
}

async fn live_workers(
    state: &AppState,
    t: &Thresholds,
    now: i64,
) -> ApiResult<Vec<diagnosis::WorkerView>> {
    Ok(state
        .store()
        .list_workers(now - t.worker_live_ms)
        .await?
        .iter()
        .map(WorkerRecord::view)
        .collect())
}

#[utoipa::path(get, path = "/v1/runs/{id}/diagnosis", tag = "runs", params(("id" = String, Path, description = "Run id or trace id", min_length = 1, max_length = 256, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")), responses((status = 200, body = RunDiagnosisView), (status = 404, body = ErrorBody)))]
pub(crate) async fn run_diagnosis(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Json<RunDiagnosisView>> {
    let id = crate::extract::run_ref(&id)?;
    let (run, t, now) = diagnose_one(&state, &id).await?.ok_or(ApiError::NotFound {
        what: "run",
        id: id.to_string(),
    })?;
    let mut shown = view(&run, &t, now);
    redact_evidence(&state, &caller, std::slice::from_mut(&mut shown)).await?;
    Ok(Json(shown))
}

/// Masks the evidence of diagnoses shown to a caller who gets redacted
/// data: evidence that quotes a handler's error is masked with its run's
/// secrets (the run is read for it), the rest with the patterns.
async fn redact_evidence(
    state: &AppState,
    caller: &Principal,
    views: &mut [RunDiagnosisView],
) -> ApiResult<()> {
    // Infallible today; a Result so a store read may fail the request later.
    if !present::redacts(&state.config, caller) {
        return Ok(());
    }
    let patterns = state.config.redactor.pattern_masker();
    for view in views {
        if present::quotes_errors(view) {
            let run = match view.run_id.parse::<weft_core::RunRef>() {
                Ok(id) => state.store().get_run(id).await.ok(),
                Err(_) => None,
            };
            match run {
                Some(run) => {
                    RunPresenter::new(&state.config.redactor, &crate::convert::run_detail(run))
                        .diagnosis(view)
                }
                // The run is gone or unreadable: withhold the evidence.
                None => {
                    for step in &mut view.steps {
                        step.evidence = weft_core::redact::REDACTED.to_owned();
                    }
                }
            }
        } else {
            for step in &mut view.steps {
                step.evidence = patterns.mask_owned(std::mem::take(&mut step.evidence));
            }
        }
    }
    Ok(())
}

#[derive(Deserialize)]
pub(crate) struct DiagnosticsQuery {
    /// Runs listed per cause.
    limit: Option<u32>,
    /// Skip this many runs of each cause.
    offset: Option<u32>,
    /// Only this cause.
    cause: Option<String>,
    /// Only stalled causes.
    #[serde(default)]
    stalled: bool,
}

#[utoipa::path(get, path = "/v1/diagnostics", tag = "runs", params(("limit" = Option<u32>, Query, description = "Runs listed per cause (default 20, at most 500; 0 for the counts alone)", minimum = 0, maximum = 500), ("offset" = Option<u32>, Query, description = "Skip this many runs of each cause", minimum = 0, maximum = 10000), ("cause" = Option<String>, Query, description = "Only this cause", min_length = 1, max_length = 128, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$"), ("stalled" = Option<bool>, Query, description = "Only stalled causes")), responses((status = 200, body = Diagnostics), (status = 400, body = ErrorBody)))]
pub(crate) async fn diagnostics(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Query(query): Query<DiagnosticsQuery>,
) -> ApiResult<Json<Diagnostics>> {
    let want = match query.cause.as_deref() {
        Some(c) => Some(Cause::parse(c).ok_or_else(|| {
            ApiError::bad_request(ErrorCode::InvalidCause, format!("no such cause `{c}`"))
        })?),
        None => None,
    };
    let limit = query.limit.unwrap_or(20).min(MAX_DIAGNOSTICS_LIMIT) as usize;
    let offset = query.offset.unwrap_or(0) as usize;
    let t = thresholds(&state);
    let store = state.store();
    let now = store.now_ms();
    let workers = live_workers(&state, &t, now).await?;
    // Counts and the page's run ids from the aggregate form of the rules;
    // only the listed runs are read in detail, for their evidence.
    let summary = store
        .diagnosis_summary(
            &workers,
            &t,
            &Page {
                limit,
                offset,
                cause: want,
                stalled_only: query.stalled,
            },
        )
        .await?;
    let listed: Vec<weft_core::RunId> = summary
        .groups
        .iter()
        .flat_map(|g| g.run_ids.iter().copied())
        .collect();
    let mut detail: BTreeMap<weft_core::RunId, RunDiagnosis> = store
        .diagnosis_views_of(&listed)
        .await?
        .iter()
        .map(|r| (r.run_id, diagnosis::diagnose(r, &workers, &t, now)))
        .collect();
    let mut causes: Vec<CauseGroup> = summary
        .groups
        .iter()
        .filter(|g| want.is_none_or(|w| w == g.cause) && (!query.stalled || g.stalled))
        .map(|g| CauseGroup {
            cause: g.cause.as_str().to_owned(),
            stalled: g.stalled,
            count: g.count,
            runs: g
                .run_ids
                .iter()
                .filter_map(|id| detail.remove(id))
                .map(|r| view(&r, &t, now))
                .collect(),
        })
        .collect();
    for group in &mut causes {
        redact_evidence(&state, &caller, &mut group.runs).await?;
    }
    let findings = diagnosis::system_findings(&state.store().operation_latency(), &t)
        .into_iter()
        .map(|f| SystemFindingView {
            cause: f.cause.as_str().to_owned(),
            evidence: f.evidence,
            command: f.command,
        })
        .collect();
    Ok(Json(Diagnostics {
        stalled: summary.stalled(),
        examined: summary.examined(),
        truncated: false,
        findings,
        causes,
    }))
}

/// A `queue` filter is a queue name.
fn check_queue_filter(queue: Option<&str>) -> ApiResult<()> {
    match queue {
        Some(queue) => crate::limits::check_text(
            ErrorCode::InvalidQuery,
            "queue",
            queue,
            1,
            crate::limits::MAX_NAME_LEN,
        ),
        None => Ok(()),
    }
}

impl crate::limits::Validate for WorkersQuery {
    fn validate(&self) -> ApiResult<()> {
        check_queue_filter(self.queue.as_deref())
    }
}

impl crate::limits::Validate for QueuesQuery {
    fn validate(&self) -> ApiResult<()> {
        check_queue_filter(self.queue.as_deref())
    }
}

impl crate::limits::Validate for DiagnosticsQuery {
    fn validate(&self) -> ApiResult<()> {
        if let Some(limit) = self.limit {
            crate::limits::check_range(
                ErrorCode::InvalidLimit,
                "limit",
                limit,
                0,
                MAX_DIAGNOSTICS_LIMIT,
            )?;
        }
        if let Some(offset) = self.offset {
            crate::limits::check_range(
                ErrorCode::InvalidQuery,
                "offset",
                offset,
                0,
                MAX_DIAGNOSTICS_OFFSET,
            )?;
        }
        if let Some(cause) = &self.cause {
            crate::limits::check_text(
                ErrorCode::InvalidQuery,
                "cause",
                cause,
                1,
                crate::limits::MAX_NAME_LEN,
            )?;
        }
        Ok(())
    }
}
