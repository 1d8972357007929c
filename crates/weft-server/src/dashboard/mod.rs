//! The server-rendered dashboard: the runs list, a run's page (its graph,
//! attempt timeline, critical path, steps and history), workflows and their
//! versions, workers and queues, and stuck runs. Pages are minijinja
//! templates with HTML auto-escaping, embedded in the binary with the CSS and
//! the one small script (live updates); every page reads without JavaScript.

use std::sync::OnceLock;

use axum::{
    extract::Path,
    http::{StatusCode, header},
    response::{Html, IntoResponse, Response},
};
use minijinja::{AutoEscape, Environment, context};
use serde::Serialize;

use crate::ApiError;

mod bulk;
pub(crate) mod dag;
pub(crate) mod format;
mod history;
mod ops;
mod overview;
mod payload;
mod run;
mod runs;
mod session;
mod workflows;

pub(crate) use ops::{stuck_page, workers_page};
pub(crate) use overview::overview_page;

/// Whether `path` is one of the dashboard's pages (`/`, `/runs/{id}`,
/// `/workflows`, `/workflows/{name}`, `/workers`, `/stuck`, `/overview`), the ones the
/// route table lists with these handlers: a browser asking for one without a
/// session is sent to sign in.
pub(crate) fn is_page(path: &str) -> bool {
    path == "/"
        || path == "/workflows"
        || path == "/workers"
        || path == "/stuck"
        || path == "/overview"
        || path.starts_with("/runs/")
        || path.starts_with("/workflows/")
}
pub(crate) use run::{run_page, step_times};
pub(crate) use runs::runs_page;
pub(crate) use workflows::{workflow_page, workflows_page};

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("templates/base.html")),
    ("error.html", include_str!("templates/error.html")),
    ("runs.html", include_str!("templates/runs.html")),
    ("run.html", include_str!("templates/run.html")),
    ("workflows.html", include_str!("templates/workflows.html")),
    ("workflow.html", include_str!("templates/workflow.html")),
    ("workers.html", include_str!("templates/workers.html")),
    ("stuck.html", include_str!("templates/stuck.html")),
    ("overview.html", include_str!("templates/overview.html")),
    ("signin.html", include_str!("templates/signin.html")),
];

const CSS: &str = include_str!("static/dashboard.css");
const JS: &str = include_str!("static/dashboard.js");

/// Changes whenever the assets do, so they can be cached for long.
fn asset_version() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| {
        // FNV-1a over both assets.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in CSS.bytes().chain(JS.bytes()) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        format!("{h:016x}")
    })
}

fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_auto_escape_callback(|_| AutoEscape::Html);
        // An absent value (`None`) shows as nothing, not as `none`.
        env.set_formatter(|out, state, value| {
            if value.is_none() || value.is_undefined() {
                Ok(())
            } else {
                minijinja::escape_formatter(out, state, value)
            }
        });
        for (name, source) in TEMPLATES {
            env.add_template(name, source)
                .unwrap_or_else(|e| panic!("dashboard template {name}: {e}"));
        }
        env
    })
}

/// A page rendered with `status`; `ctx` adds to `title`, `page` and `error`.
pub(crate) fn render(
    status: StatusCode,
    template: &str,
    title: &str,
    page: &str,
    error: Option<&str>,
    ctx: impl Serialize,
) -> Response {
    let rendered = env().get_template(template).and_then(|t| {
        t.render(context! {
            title, page, error,
            asset_version => asset_version(),
            ..minijinja::Value::from_serialize(&ctx)
        })
    });
    match rendered {
        Ok(html) => (status, Html(html)).into_response(),
        Err(err) => {
            tracing::error!(error = %err, template, "dashboard template failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be rendered",
            )
                .into_response()
        }
    }
}

/// A page's failure, shown as a page with its status (400 for a bad filter).
pub(crate) struct PageError {
    status: StatusCode,
    message: String,
}

impl PageError {
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        PageError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
}

impl PageError {
    pub(crate) fn with_status(status: StatusCode, message: impl Into<String>) -> Self {
        PageError {
            status,
            message: message.into(),
        }
    }
}

impl From<ApiError> for PageError {
    fn from(err: ApiError) -> Self {
        PageError {
            status: err.status(),
            message: err.to_string(),
        }
    }
}

impl From<weft_store::Error> for PageError {
    fn from(err: weft_store::Error) -> Self {
        ApiError::from(err).into()
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let title = self.status.canonical_reason().unwrap_or("error");
        render(
            self.status,
            "error.html",
            title,
            "error",
            Some(&self.message),
            context! {},
        )
    }
}

pub(crate) type PageResult = Result<Response, PageError>;

pub(crate) async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "dashboard.css" => (CSS, "text/css; charset=utf-8"),
        "dashboard.js" => (JS, "text/javascript; charset=utf-8"),
        _ => return (StatusCode::NOT_FOUND, "no such asset").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            // Pages link them with `?v=<hash of the assets>`.
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        body,
    )
        .into_response()
}

/// Builds a dashboard URL from a path and its non-empty query pairs.
pub(crate) fn href(path: &str, pairs: &[(&str, &str)]) -> String {
    let query: Vec<String> = pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect();
    if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", query.join("&"))
    }
}

/// Percent-encodes a query value.
pub(crate) fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_template_parses_and_escapes() {
        let env = super::env();
        let html = env
            .get_template("error.html")
            .unwrap()
            .render(minijinja::context! { title => "<b>x</b>", page => "error", error => "<script>alert(1)</script>" })
            .unwrap();
        assert!(html.contains("&lt;script&gt;alert(1)&lt;"), "{html}");
        assert!(!html.contains("<script>alert"), "{html}");
        let shown = env
            .render_str(
                "[{{ a }}|{{ b }}]",
                minijinja::context! { a => None::<String>, b => "<i>" },
            )
            .unwrap();
        assert_eq!(
            shown, "[|&lt;i&gt;]",
            "none shows as nothing, the rest escaped"
        );
        for (name, _) in super::TEMPLATES {
            env.get_template(name).unwrap();
        }
        assert_eq!(
            super::href("/", &[("workflow", "a b&c"), ("status", "")]),
            "/?workflow=a%20b%26c"
        );
    }

    /// Every page loads the same stylesheet and script: with a page's own
    /// HTML (a few KB before its data) they stay far below 150 KB.
    #[test]
    fn the_assets_stay_small() {
        let assets = super::CSS.len() + super::JS.len();
        assert!(assets < 32 * 1024, "CSS + JS are {assets} bytes");
    }
}
