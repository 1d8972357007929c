//! The runs list: filters (workflow, status, time range, one search box for a
//! run id or a trace id), counts per status, cursor pagination; the script
//! re-fetches the first page to keep its rows live.

use std::collections::BTreeMap;

use axum::{
    extract::{Query, State, rejection::QueryRejection},
    http::StatusCode,
    response::{IntoResponse, Redirect},
};
use minijinja::context;
use serde::Serialize;
use weft_core::{RunStatus, redact::Redactor};
use weft_store::{CountFilter, RunFilter};

use super::{PageResult, format, href, render};
use crate::AppState;

/// Each status count stops here (shown `10,000+`): bounded index walks.
pub(crate) const COUNT_CAP: u32 = 10_000;
const PAGE_SIZE: u32 = 50;

/// The filters as typed, echoed back into the form.
#[derive(Debug, Default, Serialize)]
struct Filters {
    workflow: String,
    status: String,
    since: String,
    until: String,
    q: String,
    /// Metadata filters, `key=value` pairs separated by spaces or commas.
    meta: String,
    cursor: String,
}

#[derive(Serialize)]
struct RunRow {
    run_id: String,
    trace_id: String,
    workflow: String,
    version: i64,
    status: String,
    reason: String,
    created: String,
    duration: String,
}

#[derive(Serialize)]
struct CountView {
    status: &'static str,
    shown: String,
    href: String,
}

/// What the filters mean, or the message shown for the first invalid one.
struct Parsed {
    list: RunFilter,
    counts: CountFilter,
}

fn parse(f: &Filters, now: i64, redactor: &Redactor) -> Result<Parsed, String> {
    for (field, value) in [
        ("workflow", &f.workflow),
        ("search", &f.q),
        ("from", &f.since),
        ("to", &f.until),
        ("metadata", &f.meta),
    ] {
        if value.len() > crate::limits::MAX_QUERY_TEXT_LEN || value.chars().any(char::is_control) {
            return Err(format!(
                "the {field} filter must be at most {} characters with no control characters",
                crate::limits::MAX_QUERY_TEXT_LEN
            ));
        }
    }
    let status = match f.status.as_str() {
        "" => None,
        s => Some(RunStatus::parse(s).ok_or_else(|| {
            let all: Vec<_> = RunStatus::ALL.iter().map(|s| s.as_str()).collect();
            format!("no such status `{s}` (one of {})", all.join(", "))
        })?),
    };
    let instant = |text: &str, what: &str| -> Result<Option<i64>, String> {
        if text.is_empty() {
            return Ok(None);
        }
        format::parse_instant(text, now).map(Some).ok_or_else(|| {
            format!("the {what} time `{text}` is not a time: use 2026-11-29T17:00, an RFC 3339 instant or a duration ago such as 1h")
        })
    };
    let since_ms = instant(&f.since, "from")?;
    let until_ms = instant(&f.until, "to")?;
    if let (Some(a), Some(b)) = (since_ms, until_ms)
        && a >= b
    {
        return Err("the from time must be before the to time".to_owned());
    }
    let q = f.q.trim();
    let trace_id = if q.is_empty() {
        None
    } else if let Ok(trace_id) = q.parse::<weft_core::TraceId>() {
        Some(trace_id)
    } else {
        return Err(format!(
            "`{q}` is neither a run id nor a trace id (32 lowercase hex digits)"
        ));
    };
    let cursor = match f.cursor.as_str() {
        "" => None,
        c => Some(
            c.parse::<weft_core::RunId>()
                .map_err(|_| format!("`{c}` is not a cursor from this page"))?,
        ),
    };
    // Run ids are UUIDv7: "created before" is "run id below" that instant's
    // smallest id, the same key range the cursor walks.
    let cursor = match (cursor, until_ms.map(weft_core::RunId::floor)) {
        (Some(c), Some(u)) => Some(c.min(u)),
        (c, u) => c.or(u),
    };
    let metadata = parse_meta(&f.meta, redactor)?;
    let workflow = (!f.workflow.is_empty()).then(|| f.workflow.clone());
    Ok(Parsed {
        list: RunFilter {
            workflow: workflow.clone(),
            status,
            trace_id,
            since_ms,
            until_ms: None,
            metadata: metadata.clone(),
            limit: Some(PAGE_SIZE),
            cursor,
        },
        counts: CountFilter {
            workflow,
            trace_id,
            since_ms,
            until_ms,
            metadata,
        },
    })
}

/// The metadata filter field: `key=value` pairs separated by spaces or
/// commas, each held to the bounds of a start's metadata. Sensitive keys
/// are refused: the dashboard shows their values redacted, so it does not
/// let anyone test guesses of them.
fn parse_meta(text: &str, redactor: &Redactor) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    for item in text.split([' ', ',']).filter(|s| !s.is_empty()) {
        let Some((key, value)) = item.split_once('=') else {
            return Err(format!("the metadata filter `{item}` is not key=value"));
        };
        weft_core::metadata::check_key(key).map_err(|e| e.0)?;
        weft_core::metadata::check_value(key, value).map_err(|e| e.0)?;
        if redactor.is_sensitive(key) {
            return Err(format!(
                "metadata `{key}` is sensitive: its values are redacted here, so runs cannot be filtered on it"
            ));
        }
        pairs.push((key.to_owned(), value.to_owned()));
    }
    if pairs.len() > weft_core::metadata::MAX_KEYS {
        return Err(format!(
            "at most {} metadata filters are allowed",
            weft_core::metadata::MAX_KEYS
        ));
    }
    Ok(pairs)
}

pub(crate) async fn runs_page(
    State(state): State<AppState>,
    session: super::session::PageSession,
    query: Result<Query<BTreeMap<String, String>>, QueryRejection>,
) -> PageResult {
    let raw = match query {
        Ok(Query(raw)) => raw,
        Err(err) => return Err(super::PageError::bad_request(err.body_text())),
    };
    let get = |k: &str| raw.get(k).cloned().unwrap_or_default();
    let f = Filters {
        workflow: get("workflow"),
        status: get("status"),
        since: get("since"),
        until: get("until"),
        q: get("q").trim().to_owned(),
        meta: get("meta").trim().to_owned(),
        cursor: get("cursor"),
    };
    let store = state.store();
    // A run id or a trace id (the newest run of that trace) in the search
    // box opens that run.
    if let Ok(id) = f.q.trim().parse::<weft_core::RunRef>() {
        return match store.resolve_run_id(id).await {
            Ok(id) => Ok(Redirect::to(&format!("/runs/{id}")).into_response()),
            Err(weft_store::Error::NotFound { .. }) => Ok(page(
                &state,
                &session,
                &f,
                StatusCode::NOT_FOUND,
                Some(format!("no run `{}`", f.q)),
                Vec::new(),
                Vec::new(),
                None,
                Vec::new(),
            )
            .await),
            Err(err) => Err(err.into()),
        };
    }
    let now = store.now_ms();
    let parsed = match parse(&f, now, &state.config.redactor) {
        Ok(p) => p,
        Err(message) => {
            return Ok(page(
                &state,
                &session,
                &f,
                StatusCode::BAD_REQUEST,
                Some(message),
                Vec::new(),
                Vec::new(),
                None,
                Vec::new(),
            )
            .await);
        }
    };
    // A workflow that was never registered is a typo, not an empty list.
    if let Some(workflow) = &parsed.list.workflow {
        match store.get_workflow(workflow, None).await {
            Ok(_) => {}
            Err(weft_store::Error::NotFound { .. }) => {
                let message = format!("no workflow `{workflow}` is registered");
                let page = page(
                    &state,
                    &session,
                    &f,
                    StatusCode::BAD_REQUEST,
                    Some(message),
                    Vec::new(),
                    Vec::new(),
                    None,
                    Vec::new(),
                );
                return Ok(page.await);
            }
            Err(err) => return Err(err.into()),
        }
    }
    let list = store.list_runs(&parsed.list).await?;
    let counts = store.cached_run_counts(&parsed.counts, COUNT_CAP).await?;
    // Bulk cancel and retry of what the filters match, counted like the list.
    let bulk = super::bulk::buttons(
        &super::bulk::BulkFilter {
            workflow: parsed.counts.workflow.as_deref(),
            status: parsed.list.status,
            trace_id: parsed.counts.trace_id,
            since_ms: parsed.counts.since_ms,
            until_ms: parsed.counts.until_ms,
            metadata: &parsed.counts.metadata,
        },
        &counts,
    );
    let base = |status: &str| {
        href(
            "/",
            &[
                ("workflow", &f.workflow),
                ("status", status),
                ("since", &f.since),
                ("until", &f.until),
                ("q", &f.q),
                ("meta", &f.meta),
            ],
        )
    };
    let counts = counts
        .iter()
        .map(|c| CountView {
            status: c.status.as_str(),
            shown: format::count(c.count, c.capped),
            href: base(c.status.as_str()),
        })
        .collect();
    let rows = list
        .runs
        .iter()
        .map(|r| {
            let created = r.created_at_ms;
            let end = r.finished_at_ms.unwrap_or(now);
            RunRow {
                run_id: r.run_id.to_string(),
                trace_id: r.trace_id.to_string(),
                workflow: r.workflow.clone(),
                version: r.version,
                status: r.status.as_str().to_owned(),
                reason: r.reason.clone().unwrap_or_default(),
                created: format::short_time(&weft_store::rfc3339(r.created_at_ms)),
                duration: format::human_ms(end - created),
            }
        })
        .collect();
    Ok(page(
        &state,
        &session,
        &f,
        StatusCode::OK,
        None,
        rows,
        counts,
        list.next_cursor.map(|id| id.to_string()),
        bulk,
    )
    .await)
}

#[allow(clippy::too_many_arguments)]
async fn page(
    state: &AppState,
    session: &super::session::PageSession,
    f: &Filters,
    status: StatusCode,
    error: Option<String>,
    runs: Vec<RunRow>,
    counts: Vec<CountView>,
    next_cursor: Option<String>,
    bulk: Vec<super::bulk::BulkButton>,
) -> axum::response::Response {
    let workflows: Vec<String> = state
        .store()
        .list_workflows()
        .await
        .map(|l| l.into_iter().map(|w| w.name).collect())
        .unwrap_or_default();
    let keep = |cursor: &str| {
        href(
            "/",
            &[
                ("workflow", &f.workflow),
                ("status", &f.status),
                ("since", &f.since),
                ("until", &f.until),
                ("q", &f.q),
                ("meta", &f.meta),
                ("cursor", cursor),
            ],
        )
    };
    let statuses: Vec<&str> = RunStatus::ALL.iter().map(|s| s.as_str()).collect();
    render(
        status,
        "runs.html",
        "Runs",
        "runs",
        error.as_deref(),
        context! {
            f, runs, counts, statuses, workflows,
            counts_note => format!("counts per status for these filters, each stopping at {}, at most {} s old", format::count(i64::from(COUNT_CAP), false), weft_store::COUNTS_TTL.as_secs()),
            live => error.is_none() && f.cursor.is_empty(),
            cursor => !f.cursor.is_empty(),
            first_href => keep(""),
            next_href => next_cursor.as_deref().map(keep),
            session, bulk,
        },
    )
}
