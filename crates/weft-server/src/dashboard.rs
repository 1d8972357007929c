//! A small server-rendered dashboard: the runs list with filters and a run
//! page with its steps, attempts, errors and an attempt timeline. Plain HTML
//! from the same store reads as the API, no scripts; pages of unfinished runs
//! refresh themselves.

use std::fmt::Write;

use axum::{
    extract::State,
    response::{Html, IntoResponse, Response},
};
use serde::Deserialize;
use weft_core::RunStatus;
use weft_store::RunFilter;

use crate::{
    ApiError, AppState,
    extract::{Path, Query},
};

/// Escapes text for HTML (elements and quoted attributes).
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:2rem;color:#222}table{border-collapse:collapse;margin:1rem 0}\
td,th{padding:.3rem .7rem;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}th{background:#f4f4f4}\
code{font-size:12px}.completed{color:#1a7f37}.failed{color:#cf222e}.cancelled{color:#777}.running,.ready{color:#0969da}\
.retrying,.waiting{color:#9a6700}.bar{position:relative;height:14px;background:#f4f4f4;width:600px}\
.bar span{position:absolute;top:0;height:14px}.q{background:#d0d7de}.x{background:#54aeff}.f{background:#ff8182}\
form input,form select{margin-right:.5rem}a{color:#0969da}";

/// A whole dashboard page: the title, the header with its links, `body`
/// (HTML), refreshed every 2 s when `refresh`.
pub(crate) fn page(title: &str, refresh: bool, body: &str) -> Response {
    let meta = if refresh {
        "<meta http-equiv=\"refresh\" content=\"2\">"
    } else {
        ""
    };
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\">{meta}<title>{} · Weft</title><style>{STYLE}</style></head>\
         <body><p style=\"float:right\"><a href=\"/signin\">sign in</a></p><h1><a href=\"/\">Weft</a> · {}</h1>{body}</body></html>",
        escape(title),
        escape(title)
    ))
    .into_response()
}

#[derive(Deserialize)]
pub(crate) struct RunsQuery {
    workflow: Option<String>,
    status: Option<String>,
    trace_id: Option<String>,
    cursor: Option<String>,
}

impl crate::limits::Validate for RunsQuery {
    fn validate(&self) -> Result<(), ApiError> {
        for (field, value) in [
            ("workflow", &self.workflow),
            ("status", &self.status),
            ("trace_id", &self.trace_id),
            ("cursor", &self.cursor),
        ] {
            if let Some(value) = value {
                crate::limits::check_text(
                    "invalid_query",
                    field,
                    value,
                    0,
                    crate::limits::MAX_QUERY_TEXT_LEN,
                )?;
            }
        }
        Ok(())
    }
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

pub(crate) async fn runs_page(
    State(state): State<AppState>,
    Query(query): Query<RunsQuery>,
) -> Result<Response, ApiError> {
    let status = non_empty(query.status.clone()).and_then(|s| RunStatus::parse(&s));
    let filter = RunFilter {
        workflow: non_empty(query.workflow.clone()),
        status,
        trace_id: non_empty(query.trace_id.clone()),
        since_ms: None,
        limit: Some(50),
        cursor: non_empty(query.cursor.clone()),
    };
    let list = state.store().list_runs(&filter).await?;
    let mut body = String::new();
    let selected = |s: &str| {
        if query.status.as_deref() == Some(s) {
            " selected"
        } else {
            ""
        }
    };
    let _ = write!(
        body,
        "<form><input name=\"workflow\" placeholder=\"workflow\" value=\"{}\"><select name=\"status\"><option value=\"\">any status</option>",
        escape(query.workflow.as_deref().unwrap_or(""))
    );
    for s in RunStatus::ALL {
        let _ = write!(
            body,
            "<option{}>{}</option>",
            selected(s.as_str()),
            s.as_str()
        );
    }
    let _ = write!(
        body,
        "</select><input name=\"trace_id\" placeholder=\"trace id\" size=\"34\" value=\"{}\"><button>Filter</button></form>",
        escape(query.trace_id.as_deref().unwrap_or(""))
    );
    body.push_str("<table><tr><th>run</th><th>workflow</th><th>status</th><th>reason</th><th>created</th><th>finished</th><th>trace id</th></tr>");
    for run in &list.runs {
        let _ = write!(
            body,
            "<tr><td><a href=\"/runs/{id}\"><code>{id}</code></a></td><td>{wf} v{v}</td><td class=\"{st}\">{st}</td><td>{reason}</td><td>{created}</td><td>{finished}</td><td><code>{trace}</code></td></tr>",
            id = escape(&run.run_id),
            wf = escape(&run.workflow),
            v = run.version,
            st = escape(&run.status),
            reason = escape(run.reason.as_deref().unwrap_or("")),
            created = escape(&run.created_at),
            finished = escape(run.finished_at.as_deref().unwrap_or("")),
            trace = escape(&run.trace_id),
        );
    }
    body.push_str("</table>");
    if let Some(cursor) = &list.next_cursor {
        let _ = write!(
            body,
            "<a href=\"/?cursor={}\">older runs →</a>",
            escape(cursor)
        );
    }
    Ok(page("runs", false, &body))
}

pub(crate) async fn run_page(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let mut run = state.store().get_run(&id).await?;
    // The page always redacts: inputs, outputs, errors and log lines alike.
    let presenter = crate::present::RunPresenter::new(&state.config.redactor, &run);
    presenter.run(&mut run);
    let terminal = RunStatus::parse(&run.status).is_some_and(|s| s.is_terminal());
    let millis = |t: &str| weft_store::parse_rfc3339(t);
    let start = millis(&run.created_at).unwrap_or(0);
    let end = run
        .finished_at
        .as_deref()
        .and_then(millis)
        .unwrap_or_else(weft_store::now_ms)
        .max(start + 1);
    let span = (end - start) as f64;
    let pct = |t: i64| ((t - start).max(0) as f64 / span * 100.0).min(100.0);
    let mut body = String::new();
    // With a trace URL template the trace id links to the trace backend.
    let trace = match crate::present::trace_url(
        state.config.trace_url_template.as_deref(),
        &run.trace_id,
    ) {
        Some(url) => format!(
            "<a href=\"{}\"><code>{}</code></a>",
            escape(&url),
            escape(&run.trace_id)
        ),
        None => format!("<code>{}</code>", escape(&run.trace_id)),
    };
    let _ = write!(
        body,
        "<table><tr><th>run</th><td><code>{}</code></td></tr><tr><th>trace id</th><td>{}</td></tr>\
         <tr><th>workflow</th><td>{} v{}</td></tr><tr><th>status</th><td class=\"{st}\">{st} {}</td></tr>\
         <tr><th>created</th><td>{}</td></tr><tr><th>took</th><td>{}</td></tr><tr><th>error</th><td>{}</td></tr>\
         <tr><th>input</th><td><code>{}</code></td></tr><tr><th>output</th><td><code>{}</code></td></tr></table>",
        escape(&run.run_id),
        trace,
        escape(&run.workflow),
        run.version,
        escape(run.reason.as_deref().unwrap_or("")),
        escape(&run.created_at),
        run.timing
            .end_to_end_ms
            .map_or_else(|| "-".to_owned(), |ms| format!("{ms} ms")),
        escape(run.error.as_deref().unwrap_or("")),
        escape(&run.input.to_string()),
        escape(
            &run.output
                .as_ref()
                .map_or_else(String::new, ToString::to_string)
        ),
        st = escape(&run.status),
    );
    body.push_str("<h2>Steps</h2><table><tr><th>step</th><th>attempt</th><th>status</th><th>reason</th><th>worker</th><th>queued / handler / total</th><th>timeline (grey queued, blue running, red failed)</th><th>error</th></tr>");
    for step in &run.steps {
        let deps = if step.depends_on.is_empty() {
            String::new()
        } else {
            format!(
                "<br><small>after {}</small>",
                escape(&step.depends_on.join(", "))
            )
        };
        if step.attempts.is_empty() {
            let _ = write!(
                body,
                "<tr><td>{}{deps}</td><td></td><td class=\"{st}\">{st}</td><td>{}</td><td></td><td></td><td></td><td>{}</td></tr>",
                escape(&step.name),
                escape(step.reason.as_deref().unwrap_or("")),
                escape(step.error.as_deref().unwrap_or("")),
                st = escape(&step.status),
            );
        }
        for attempt in &step.attempts {
            let claimed = millis(&attempt.claimed_at).unwrap_or(start);
            let finished = attempt
                .finished_at
                .as_deref()
                .and_then(millis)
                .unwrap_or(end);
            let queued = claimed - attempt.timing.as_ref().map_or(0, |t| t.queue_wait_ms);
            let run_class = if attempt.status == "failed" { "f" } else { "x" };
            let timing = attempt.timing.as_ref().map_or_else(String::new, |t| {
                format!(
                    "{} / {} / {} ms",
                    t.queue_wait_ms,
                    t.handler_ms
                        .map_or_else(|| "-".to_owned(), |h| h.to_string()),
                    t.total_ms
                )
            });
            let _ = write!(
                body,
                "<tr><td>{}{deps}</td><td>{}</td><td class=\"{st}\">{st}</td><td>{}</td><td>{}</td><td>{timing}</td>\
                 <td><div class=\"bar\"><span class=\"q\" style=\"left:{:.2}%;width:{:.2}%\"></span><span class=\"{run_class}\" style=\"left:{:.2}%;width:{:.2}%\"></span></div></td><td>{}</td></tr>",
                escape(&step.name),
                attempt.attempt,
                escape(attempt.reason.as_deref().unwrap_or("")),
                escape(&attempt.worker_id),
                pct(queued),
                (pct(claimed) - pct(queued)).max(0.0),
                pct(claimed),
                (pct(finished) - pct(claimed)).max(0.3),
                escape(attempt.error.as_deref().unwrap_or("")),
                st = escape(&attempt.status),
            );
        }
    }
    body.push_str("</table>");
    let mut events = state.store().run_events(&run.run_id, None).await?;
    presenter.events(&mut events);
    actions(&mut body, &events);
    let mut logs = state.store().run_logs(&run.run_id, None).await?;
    presenter.logs(&mut logs);
    if !logs.is_empty() {
        body.push_str("<h2>Logs</h2><table><tr><th>at</th><th>step</th><th>line</th></tr>");
        for line in logs.iter().rev().take(200).rev() {
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}#{}</td><td><code>{}</code></td></tr>",
                escape(&line.at),
                escape(&line.step),
                line.attempt,
                escape(&line.line)
            );
        }
        body.push_str("</table>");
    }
    // The links ask for redacted data, as this page shows it, whatever the
    // caller's role would otherwise see.
    let _ = write!(
        body,
        "<p><a href=\"/v1/runs/{id}?redact=true\">JSON</a> · <a href=\"/v1/runs/{id}/events?redact=true\">history</a> · <a href=\"/v1/runs/{id}/logs?redact=true\">logs</a></p>",
        id = escape(&run.run_id)
    );
    Ok(page(&format!("run {}", run.run_id), !terminal, &body))
}

/// Who did what on the run: one row per person's action (the history
/// events it wrote share their time and actor).
fn actions(body: &mut String, events: &[weft_api::EventRecord]) {
    let mut rows = String::new();
    let mut last: Option<(&str, &str)> = None;
    for event in events {
        let text = |key: &str| event.data.get(key).and_then(|v| v.as_str());
        let Some(actor) = text("actor") else { continue };
        if last == Some((event.at.as_str(), actor)) {
            continue;
        }
        last = Some((event.at.as_str(), actor));
        let on_behalf_of = text("on_behalf_of")
            .map(|o| format!(" <small>on behalf of {}</small>", escape(o)))
            .unwrap_or_default();
        let _ = write!(
            rows,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}{on_behalf_of}</td><td>{}</td></tr>",
            escape(&event.at),
            escape(&event.kind),
            escape(event.step.as_deref().unwrap_or("")),
            escape(actor),
            escape(text("comment").unwrap_or("")),
        );
    }
    if !rows.is_empty() {
        let _ = write!(
            body,
            "<h2>Actions</h2><table><tr><th>at</th><th>action</th><th>step</th><th>by</th><th>comment</th></tr>{rows}</table>"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn escapes_html() {
        assert_eq!(
            escape("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
    }
}
