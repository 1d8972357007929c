//! The dashboard over real HTTP against a real server and an SDK worker:
//! every page's status, the runs list's filters and their errors (400, shown),
//! the run page's graph, attempt segments, critical path and escaping, the
//! workflows list and a version diff, workers and queues, stuck runs; and the
//! critical path section of `weft run`.

use std::time::Duration;

use serde_json::json;
use weft_worker::{HandlerError, TaskContext};

use crate::harness::{Env, PATIENCE, SdkWorker, WEFT};

pub const SECRET: &str = "tok_dash_8f3a2c91";
pub const SCRIPT: &str = "<script>alert('weft')</script>";

/// A diamond whose `left` step fails once (backoff) then succeeds.
pub const DASH_V1: &str = "\
name: dash
steps:
  - name: fetch
    handler: dash.step
  - name: left
    handler: dash.step
    depends_on: [fetch]
    retry: { max_attempts: 3, initial: 300ms, max: 300ms, jitter: false }
  - name: right
    handler: dash.step
    depends_on: [fetch]
  - name: join
    handler: dash.step
    depends_on: [left, right]
";

pub const DASH_V2: &str = "\
name: dash
description: v2 adds a notify step
steps:
  - name: fetch
    handler: dash.step
  - name: left
    handler: dash.step
    depends_on: [fetch]
    retry: { max_attempts: 3, initial: 300ms, max: 300ms, jitter: false }
  - name: right
    handler: dash.step
    depends_on: [fetch]
  - name: join
    handler: dash.step
    depends_on: [left, right]
  - name: notify
    handler: dash.step
    depends_on: [join]
";

/// Registers the workflows and starts the worker; returns it.
pub async fn seed(env: &Env) -> SdkWorker {
    env.register(DASH_V1).await;
    env.register(DASH_V2).await;
    env.register("name: dash_stuck\nsteps:\n  - name: orphan\n    handler: dash.nobody\n")
        .await;
    SdkWorker::spawn(
        env.sdk_worker("dash-worker")
            .handler("dash.step", |ctx: TaskContext| async move {
                let step = ctx.task.step.clone();
                ctx.log(vec![format!("{step} uses {SECRET} and says {SCRIPT}")])
                    .await;
                if step == "left" && ctx.task.attempt == 1 {
                    return Err(HandlerError::retryable(format!("boom {SCRIPT}")));
                }
                if step == "right" {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok(json!({"step": step, "note": SCRIPT}))
            })
            .build(),
    )
}

async fn get(env: &Env, path: &str) -> (u16, String) {
    let response = env
        .http
        .get(format!("{}{path}", env.server.url))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = response.status().as_u16();
    (status, response.text().await.expect("a body"))
}

fn assert_escaped(page: &str, what: &str) {
    assert!(
        !page.contains("<script>alert"),
        "{what}: a <script> from user data reached the page unescaped:\n{page}"
    );
    assert!(
        !page.contains(SECRET),
        "{what}: the secret is shown:\n{page}"
    );
}

pub async fn dashboard_pages(db_url: String) {
    let env = Env::start(&db_url).await;
    let worker = seed(&env).await;
    let run_id = env
        .start_run("dash", json!({"api_key": SECRET, "note": SCRIPT}))
        .await;
    let run = env.wait_finished(&run_id).await;
    assert_eq!(run.status, "completed", "{run:#?}");
    let stuck_id = env.start_run("dash_stuck", json!({})).await;

    // The runs list: rows, counts, durations in human units.
    let (status, page) = get(&env, "/").await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains(&run_id) && page.contains(&stuck_id), "{page}");
    assert!(
        page.contains("completed <b>1</b>"),
        "counts per status:\n{page}"
    );
    assert!(
        page.contains(" s</td>") || page.contains(" ms</td>"),
        "human durations:\n{page}"
    );
    assert!(
        page.contains("data-live=\"1\""),
        "the first page is live:\n{page}"
    );
    assert_escaped(&page, "runs list");

    // Filters: workflow, status, time range, the search box.
    let (status, page) = get(&env, "/?workflow=dash&status=completed&since=1h").await;
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains(&run_id) && !page.contains(&stuck_id),
        "{page}"
    );
    let (_, page) = get(&env, "/?until=2000-01-01T00:00").await;
    assert!(
        !page.contains(&run_id),
        "a range before the run excludes it:\n{page}"
    );
    assert!(page.contains("completed <b>0</b>"), "{page}");
    let (_, page) = get(&env, &format!("/?q={}", run.trace_id)).await;
    assert!(
        page.contains(&run_id) && !page.contains(&stuck_id),
        "{page}"
    );
    let response = env
        .http
        .get(format!("{}/?q={run_id}", env.server.url))
        .send()
        .await
        .expect("search by run id");
    assert_eq!(
        response.url().path(),
        format!("/runs/{run_id}"),
        "a run id opens its page"
    );

    // Invalid filters are answered with a visible error and a 400.
    for (query, says) in [
        ("/?status=bogus", "no such status `bogus`"),
        ("/?since=yesterday", "is not a time"),
        ("/?q=not-an-id", "neither a run id nor a trace id"),
        ("/?cursor=nope", "is not a cursor"),
        ("/?since=1h&until=2h", "must be before"),
        ("/?workflow=nope", "no workflow `nope` is registered"),
    ] {
        let (status, page) = get(&env, query).await;
        assert_eq!(status, 400, "{query}:\n{page}");
        assert!(
            page.contains("role=\"alert\"") && page.contains(says),
            "{query}:\n{page}"
        );
    }
    let (status, page) = get(&env, "/?status=%3Cscript%3Ealert(1)%3C/script%3E").await;
    assert_eq!(status, 400);
    assert_escaped(&page, "a status filter echoed in its error");

    // The run page: one node per step coloured by status, the Gantt's
    // segments, the critical path, escaped errors, logs and outputs.
    let (status, page) = get(&env, &format!("/runs/{run_id}")).await;
    assert_eq!(status, 200, "{page}");
    assert_escaped(&page, "run page");
    assert_eq!(
        page.matches("class=\"node st-completed").count(),
        5,
        "v2's five steps:\n{page}"
    );
    for kind in [
        "queue_wait",
        "dispatch",
        "handler",
        "ingest",
        "backoff",
        "failed",
    ] {
        assert!(
            page.contains(&format!("data-kind=\"{kind}\"")),
            "segment {kind}:\n{page}"
        );
    }
    assert_eq!(
        page.matches("<g class=\"row").count(),
        7,
        "6 attempts and the critical path lane:\n{page}"
    );
    assert!(
        page.contains("&lt;script&gt;"),
        "the <script> is shown as text:\n{page}"
    );
    assert!(page.contains("[redacted]"), "{page}");
    let crit = page
        .split("id=\"critical-path\"")
        .nth(1)
        .and_then(|p| p.split("</p>").next())
        .expect("a critical path section");
    assert!(
        crit.contains(">fetch</a> → <a href=\"#step-left\" data-step=\"left\">left</a> → <a href=\"#step-join\" data-step=\"join\">join</a> → "),
        "the retried branch is the critical path:\n{crit}"
    );
    assert!(!crit.contains(">right</a>"), "{crit}");
    assert!(crit.contains("left backoff"), "{crit}");
    assert!(
        page.contains("class=\"node st-completed crit\" data-step=\"left\""),
        "{page}"
    );
    assert!(page.contains("class=\"edge crit\" d=\""), "{page}");
    assert!(page.contains("step.retrying"), "the history table:\n{page}");
    assert!(
        !page.contains("data-follow"),
        "a finished run is not followed"
    );

    // The stuck run's page is followed live; an unknown run is a 404 page.
    let (_, page) = get(&env, &format!("/runs/{stuck_id}")).await;
    assert!(
        page.contains(&format!(
            "data-follow=\"/v1/runs/{stuck_id}/events/stream\""
        )),
        "{page}"
    );
    let (status, page) = get(&env, "/runs/0190b5a0-0000-7000-8000-000000000000").await;
    assert_eq!(status, 404, "{page}");

    // Workflows: list with run counts and failure rate, manifest, diff.
    let (status, page) = get(&env, "/workflows").await;
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("data-workflow=\"dash\"") && page.contains("0.0 %"),
        "{page}"
    );
    let (status, page) = get(&env, "/workflows/dash?version=2&diff=1").await;
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("class=\"d-insert\">+") && page.contains("notify"),
        "{page}"
    );
    let (status, _) = get(&env, "/workflows/dash?version=x").await;
    assert_eq!(status, 400);
    let (status, _) = get(&env, "/workflows/nope").await;
    assert_eq!(status, 404);

    // Workers, queues and stuck runs.
    let (status, page) = get(&env, "/workers").await;
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("data-worker=\"dash-worker\"") && page.contains("data-queue=\"default\""),
        "{page}"
    );
    let (status, page) = get(&env, "/stuck").await;
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains(&stuck_id) && page.contains("weft "),
        "the diagnosis and its command:\n{page}"
    );

    // Assets are embedded and cacheable.
    let response = env
        .http
        .get(format!("{}/static/dashboard.js", env.server.url))
        .send()
        .await
        .expect("the script");
    assert_eq!(response.status().as_u16(), 200);
    assert!(
        response.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("max-age"),
        "{:?}",
        response.headers()
    );

    // Cursor pages: 50 runs a page, the next page keeps the filters.
    let batch = weft_api::StartRunsRequest {
        runs: (0..55)
            .map(|i| weft_api::StartRunRequest {
                input: json!({"i": i}),
                idempotency_key: None,
                ..Default::default()
            })
            .collect(),
    };
    env.client
        .start_runs("dash_stuck", &batch)
        .await
        .expect("start a batch");
    let (_, page) = get(&env, "/?workflow=dash_stuck").await;
    assert_eq!(page.matches("<tr data-run=").count(), 50, "{page}");
    let next = page
        .split("id=\"older\" href=\"")
        .nth(1)
        .and_then(|p| p.split('"').next())
        .expect("a link to older runs")
        .replace("&amp;", "&")
        .replace("&#x2f;", "/");
    assert!(
        next.contains("workflow=dash_stuck") && next.contains("cursor="),
        "{next}"
    );
    let (status, older) = get(&env, &next).await;
    assert_eq!(status, 200, "{older}");
    assert_eq!(
        older.matches("<tr data-run=").count(),
        6,
        "the rest, with the first stuck run:\n{older}"
    );
    assert!(
        older.contains(&stuck_id) && !older.contains("id=\"older\""),
        "{older}"
    );
    assert!(!older.contains("data-live"), "older pages are not live");

    // `weft run` prints the same critical path.
    let output = tokio::process::Command::new(WEFT)
        .args(["run", &run_id, "--url", &env.server.url])
        .env_remove("WEFT_TOKEN")
        .output();
    let output = tokio::time::timeout(PATIENCE, output)
        .await
        .expect("weft run ends")
        .expect("weft run");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    assert!(
        text.contains("critical path  fetch → left → join → notify"),
        "{text}"
    );
    assert!(text.contains("backoff"), "{text}");
    worker.stop().await;
}
