//! Workflows: each with its versions, its runs in the last day and their
//! failure rate (bounded counts); a version's manifest; a diff between two
//! versions (`similar`, line by line over the canonical YAML); starting a run
//! of the latest version with a JSON input.

use axum::{
    extract::{Path, Query, State, rejection::QueryRejection},
    http::StatusCode,
};
use minijinja::context;
use serde::{Deserialize, Serialize};
use weft_core::RunStatus;
use weft_store::CountFilter;

use super::{PageError, PageResult, format, render};
use crate::AppState;

const WINDOW_MS: i64 = 24 * 3_600_000;

#[derive(Serialize)]
struct WorkflowRow {
    name: String,
    version: i64,
    steps: usize,
    created: String,
    description: String,
    runs: String,
    failed: String,
    failure_rate: String,
}

pub(crate) async fn workflows_page(State(state): State<AppState>) -> PageResult {
    let store = state.store();
    let now = store.now_ms();
    let mut rows = Vec::new();
    for w in store
        .list_workflows()
        .await?
        .into_iter()
        .map(crate::convert::workflow_summary)
    {
        let filter = CountFilter {
            workflow: Some(w.name.clone()),
            since_ms: Some(now - WINDOW_MS),
            ..CountFilter::default()
        };
        let counts = store
            .count_runs_by_status(&filter, super::runs::COUNT_CAP)
            .await?;
        let total: i64 = counts.iter().map(|c| c.count).sum();
        let capped = counts.iter().any(|c| c.capped);
        let failed = counts
            .iter()
            .find(|c| c.status == RunStatus::Failed)
            .map_or(0, |c| c.count);
        let ended: i64 = counts
            .iter()
            .filter(|c| c.status.is_terminal())
            .map(|c| c.count)
            .sum();
        rows.push(WorkflowRow {
            name: w.name.clone(),
            version: w.version,
            steps: w.steps,
            created: format::short_time(&w.created_at),
            description: w.description.clone().unwrap_or_default(),
            runs: format::count(total, capped),
            failed: format::count(failed, false),
            failure_rate: if ended == 0 {
                "-".to_owned()
            } else {
                format!("{:.1} %", failed as f64 * 100.0 / ended as f64)
            },
        });
    }
    Ok(render(
        StatusCode::OK,
        "workflows.html",
        "Workflows",
        "workflows",
        None,
        context! {
            workflows => rows,
            window => "(24 h)",
            note => format!("runs created in the last 24 hours; failure rate of those that ended; counts stop at {}", format::count(i64::from(super::runs::COUNT_CAP), false)),
        },
    ))
}

#[derive(Deserialize)]
pub(crate) struct VersionQuery {
    version: Option<String>,
    diff: Option<String>,
}

fn version_arg(text: Option<&str>, what: &str) -> Result<Option<i64>, PageError> {
    match text.filter(|t| !t.is_empty()) {
        None => Ok(None),
        Some(t) => t
            .trim_start_matches('v')
            .parse::<i64>()
            .ok()
            .filter(|v| *v > 0)
            .map(Some)
            .ok_or_else(|| {
                PageError::bad_request(format!("the {what} `{t}` is not a version number"))
            }),
    }
}

/// The manifest as YAML (`serde-saphyr`, the crate that parses manifests):
/// stable, one field per line, so a diff shows the fields that changed.
fn manifest_text(manifest: &serde_json::Value) -> String {
    serde_saphyr::to_string(manifest)
        .unwrap_or_else(|_| serde_json::to_string_pretty(manifest).unwrap_or_default())
}

pub(crate) async fn workflow_page(
    State(state): State<AppState>,
    session: super::session::PageSession,
    Path(name): Path<String>,
    query: Result<Query<VersionQuery>, QueryRejection>,
) -> PageResult {
    let Query(query) = query.map_err(|e| PageError::bad_request(e.body_text()))?;
    let store = state.store();
    let version = version_arg(query.version.as_deref(), "version")?;
    let diff_from = version_arg(query.diff.as_deref(), "diff")?;
    let detail = crate::convert::workflow_detail(store.get_workflow(&name, version).await?);
    let manifest = manifest_text(&detail.manifest);
    let diff = match diff_from {
        None => None,
        Some(other) => {
            let older = store.get_workflow(&name, Some(other)).await?;
            let before = manifest_text(&older.manifest);
            let lines: Vec<_> = similar::TextDiff::from_lines(&before, &manifest)
                .iter_all_changes()
                .map(|c| {
                    let (tag, sign) = match c.tag() {
                        similar::ChangeTag::Delete => ("delete", "-"),
                        similar::ChangeTag::Insert => ("insert", "+"),
                        similar::ChangeTag::Equal => ("equal", " "),
                    };
                    context! { tag, sign, text => c.value().trim_end_matches('\n') }
                })
                .collect();
            Some(lines)
        }
    };
    let default_other = detail
        .versions
        .iter()
        .copied()
        .filter(|v| *v < detail.version)
        .max();
    Ok(render(
        StatusCode::OK,
        "workflow.html",
        &format!("Workflow {}", detail.name),
        "workflows",
        None,
        context! {
            name => detail.name,
            version => detail.version,
            versions => detail.versions,
            description => detail.description,
            created => format::short_time(&detail.created_at),
            manifest,
            diff,
            diff_from => diff_from.or(default_other),
            latest => detail.versions.iter().max().is_none_or(|v| *v == detail.version),
            start_url => format!("/v1/workflows/{}/runs", super::encode(&name)),
            session,
        },
    ))
}
