//! Secrets kept out of every surface people read: a run whose input and
//! step output hold secrets, quoted by a handler in its error message, its
//! stderr and its output, seen through the API (run, events, logs, SSE,
//! diagnosis), the dashboard and the links it offers, the server's log and
//! the spans exported over OTLP. The worker still gets the clear input.

use std::process::Command;

use serde_json::json;

use crate::{
    collector::Collector,
    harness::{Env, PATIENCE, Proc, WEFT, step, wait_until},
};

/// Every secret of the scenario carries one of these markers; `[redacted]`
/// carries none.
const MARKERS: [&str; 2] = ["SECRET", "424242"];

fn leaks(text: &str) -> Option<&'static str> {
    MARKERS.into_iter().find(|marker| text.contains(marker))
}

#[track_caller]
fn assert_clean(surface: &str, text: &str) {
    if let Some(marker) = leaks(text) {
        panic!("{surface} shows a secret (`{marker}`):\n{text}");
    }
}

const MANIFEST: &str = "\
name: leaky
steps:
  - name: leak
    handler: s.leak
  - name: charge
    handler: s.charge
    depends_on: [leak]
    retry: { max_attempts: 2, initial: 4s, jitter: false }
";

pub async fn secrets_stay_out_of_every_surface(db_url: String) {
    let collector = Collector::start_http().await;
    let endpoint = collector.endpoint();
    let otel = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
    ];
    // Anonymous callers are admins: `--redact-api` makes the API redact
    // for them as it does for viewers and operators. A configured pattern
    // masks account numbers no input names.
    let env = Env::start_with_env(
        &db_url,
        &["--redact-api", "--redact-patterns", r"acct-\d{6}"],
        &otel,
    )
    .await;
    env.register(MANIFEST).await;
    // The step output holds a secret under a sensitive key and quotes the
    // input's secret as free text; its stderr quotes the input.
    let leak = env.script(
        "leak.sh",
        r#"IN=$(cat)
echo "debug: leak got $IN" >&2
printf '{"api_token": "OUT-SECRET-3", "note": "paid with IN-SECRET-2"}\n'"#,
    );
    // The failing step quotes its whole task (input and the first step's
    // output, JSON-escaped) in its error message and its stderr, plus a
    // bearer token and an account number that only the patterns know.
    let stdin_copy = env.path("charge-stdin.json");
    let charge = env.script(
        "charge.sh",
        &format!(
            r#"IN=$(cat)
printf '%s' "$IN" > '{}'
echo "debug: charge got $IN" >&2
echo "Authorization: Bearer PATTERN-SECRET-TOKEN-1 for acct-424242" >&2
ESC=$(printf '%s' "$IN" | sed 's/\\/\\\\/g; s/"/\\"/g')
printf '{{"error": {{"message": "cannot charge acct-424242 with %s", "retryable": true}}}}\n' "$ESC"
exit 1"#,
            stdin_copy.display()
        ),
    );
    let handlers = env.handlers_file("handlers.toml", &[("s.leak", &leak), ("s.charge", &charge)]);
    let mut worker = Command::new(WEFT);
    worker
        .arg("worker")
        .arg("--handlers")
        .arg(&handlers)
        .args(["--url", &env.server.url, "--worker-id", "w-secrets"])
        .envs(otel);
    let _worker = Proc::spawn("worker w-secrets", worker, env.path("worker.log"));

    let run_id = env
        .start_run(
            "leaky",
            json!({"user": "ann", "password": "pw\"IN-SECRET-1", "card": {"api_key": "IN-SECRET-2"}}),
        )
        .await;
    let base = env.server.url.clone();
    // Followed live from the start: the stream's masker must learn the
    // secret of `leak`'s output when that step completes.
    let live_stream = tokio::spawn({
        let http = env.http.clone();
        let url = format!("{base}/v1/runs/{run_id}/events/stream");
        async move {
            let response = http.get(&url).send().await.expect("GET the stream");
            response.text().await.expect("the stream to its end")
        }
    });
    let get = |path: String| {
        let http = env.http.clone();
        async move {
            let response = http.get(&path).send().await.expect("GET");
            assert!(
                response.status().is_success(),
                "GET {path}: {}",
                response.status()
            );
            response.text().await.expect("a body")
        }
    };

    // While the failing step waits for its retry, the diagnosis quotes its
    // last error.
    env.wait_run(&run_id, "charge to be retrying", PATIENCE, |run| {
        step(run, "charge").status == "retrying"
    })
    .await;
    let diagnosis = get(format!("{base}/v1/runs/{run_id}/diagnosis")).await;
    assert!(diagnosis.contains("last error"), "{diagnosis}");
    assert!(diagnosis.contains("[redacted]"), "{diagnosis}");
    assert_clean("the run's diagnosis", &diagnosis);
    let diagnostics = get(format!("{base}/v1/diagnostics?limit=500")).await;
    assert!(diagnostics.contains(&run_id), "{diagnostics}");
    assert_clean("the diagnostics", &diagnostics);

    let run = env.wait_finished(&run_id).await;
    assert_eq!(run.status, "failed");
    let charge_step = step(&run, "charge");
    assert_eq!(charge_step.attempts.len(), 2);
    let error = charge_step.error.clone().unwrap_or_default();
    assert!(
        error.starts_with("cannot charge [redacted] with") && error.contains("[redacted]"),
        "{error}"
    );

    // The worker was given the clear input and the clear output of `leak`.
    let task = std::fs::read_to_string(&stdin_copy).expect("the task the handler got");
    for secret in [r#"pw\"IN-SECRET-1"#, "IN-SECRET-2", "OUT-SECRET-3"] {
        assert!(task.contains(secret), "the task lacks {secret}: {task}");
    }

    // The API: run detail (also when asking for clear data), history, logs
    // and the event stream.
    let shown = get(format!("{base}/v1/runs/{run_id}")).await;
    assert!(shown.contains("[redacted]"), "{shown}");
    assert_clean("the run", &shown);
    assert_clean(
        "the run asked with redact=false",
        &get(format!("{base}/v1/runs/{run_id}?redact=false")).await,
    );
    let events = get(format!("{base}/v1/runs/{run_id}/events")).await;
    assert!(
        events.contains("attempt.failed") && events.contains("run.failed"),
        "{events}"
    );
    assert_clean("the history", &events);
    let logs = get(format!("{base}/v1/runs/{run_id}/logs")).await;
    assert!(
        logs.contains("debug: charge got") && logs.contains("Bearer [redacted]"),
        "{logs}"
    );
    assert_clean("the logs", &logs);
    let stream = get(format!("{base}/v1/runs/{run_id}/events/stream")).await;
    assert!(stream.contains("run.failed"), "{stream}");
    assert_clean("the event stream", &stream);
    let live = live_stream.await.expect("the live stream");
    assert!(
        live.contains("step.completed") && live.contains("run.failed"),
        "{live}"
    );
    assert_clean("the event stream followed live", &live);
    assert_clean("the run list", &get(format!("{base}/v1/runs")).await);

    // The dashboard, and every API link it offers.
    let page = get(format!("{base}/runs/{run_id}")).await;
    assert!(
        page.contains("Logs") && page.contains("[redacted]"),
        "{page}"
    );
    assert_clean("the dashboard's run page", &page);
    assert_clean("the dashboard's run list", &get(format!("{base}/")).await);
    let links: Vec<String> = page
        .split("href=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .filter(|href| href.starts_with("/v1/"))
        .map(|href| href.replace("&amp;", "&"))
        .collect();
    assert!(links.len() >= 3, "the page links to the API: {links:?}");
    for link in links {
        assert_clean(
            &format!("the dashboard's link {link}"),
            &get(format!("{base}{link}")).await,
        );
    }

    // The server's log: the failure lines quote the error, masked.
    let log = wait_until("the run's failure in the server log", PATIENCE, || {
        let log = env.server.proc.output();
        async move { log.contains("run failed").then_some(log) }
    })
    .await;
    assert!(log.contains("cannot charge [redacted]"), "{log}");
    assert_clean("the server log", &log);

    // The spans: the run's, each attempt's and the worker's, with their
    // attributes, events and status.
    let spans = collector
        .wait_for(&run.trace_id, "the run's and attempts' spans", |spans| {
            let named = |name: &str| spans.iter().filter(|s| s.name == name).count();
            named("workflow.leaky") == 1
                && named("step.charge") == 2
                && named("execute s.charge") == 2
        })
        .await;
    let attempt_span = spans
        .iter()
        .find(|s| s.name == "step.charge")
        .expect("an attempt span");
    assert!(attempt_span.error, "{attempt_span:?}");
    assert!(
        attempt_span.text.contains("cannot charge [redacted]"),
        "the span carries the masked error: {}",
        attempt_span.text
    );
    for span in &spans {
        assert_clean(&format!("span {}", span.name), &span.text);
    }
}

/// With authentication on, what the API shows depends on the caller's role:
/// viewers and operators get redacted answers (run, events, logs, the event
/// stream, the diagnosis), admins the clear data (without `--redact-api`).
pub async fn secrets_by_role(db_url: String) {
    use crate::auth::{secured, token};
    let env = secured(&db_url, &[]).await;
    env.register(
        "name: quoting\nsteps:\n  - name: charge\n    handler: q.charge\n    retry: { max_attempts: 1 }\n",
    )
    .await;
    let charge = env.script(
        "charge.sh",
        r#"IN=$(cat)
echo "debug: charge got $IN" >&2
ESC=$(printf '%s' "$IN" | sed 's/\\/\\\\/g; s/"/\\"/g')
printf '{"error": {"message": "cannot charge with %s", "retryable": false}}\n' "$ESC"
exit 1"#,
    );
    let handlers = env.handlers_file("handlers.toml", &[("q.charge", &charge)]);
    let worker_token = token(&env, "w", "worker", None, None).await;
    let _worker = env.exec_worker_with(&handlers, "w-roles", &["--token", &worker_token]);
    let run_id = env
        .start_run(
            "quoting",
            json!({"user": "ann", "password": "ROLE-SECRET-1"}),
        )
        .await;
    let run = env.wait_finished(&run_id).await;
    assert_eq!(run.status, "failed");
    let viewer = token(&env, "v", "viewer", None, None).await;
    let operator = token(&env, "o", "operator", None, None).await;
    let base = env.server.url.clone();
    let paths = [
        format!("/v1/runs/{run_id}"),
        format!("/v1/runs/{run_id}/events"),
        format!("/v1/runs/{run_id}/logs"),
        format!("/v1/runs/{run_id}/events/stream"),
        format!("/v1/runs/{run_id}/diagnosis"),
    ];
    let read = |path: String, bearer: String| {
        let http = env.http.clone();
        let url = format!("{base}{path}");
        async move {
            let response = http
                .get(&url)
                .bearer_auth(bearer)
                .send()
                .await
                .expect("GET");
            assert!(
                response.status().is_success(),
                "GET {url}: {}",
                response.status()
            );
            response.text().await.expect("a body")
        }
    };
    for (role, bearer) in [("viewer", &viewer), ("operator", &operator)] {
        for path in &paths {
            let text = read(path.clone(), bearer.clone()).await;
            assert!(
                !text.contains("ROLE-SECRET-1"),
                "{role} reads the secret at {path}:\n{text}"
            );
        }
    }
    // An admin sees the clear data, free text included.
    let text = read(paths[0].clone(), crate::auth::ADMIN.to_owned()).await;
    assert!(
        text.contains("ROLE-SECRET-1"),
        "the admin's answer is clear:\n{text}"
    );
}

/// A redaction pattern that does not compile stops the server at startup,
/// naming the pattern, from the flag or from the variable (one per line).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_redaction_pattern_stops_the_server() {
    let db = weft_testkit::sqlite_database();
    let run = |flag: Option<&str>, variable: Option<&str>| {
        let mut command = tokio::process::Command::new(WEFT);
        command
            .args([
                "server",
                "--database-url",
                &db.url,
                "--listen",
                "127.0.0.1:0",
            ])
            .env_remove("WEFT_REDACT_PATTERNS")
            .kill_on_drop(true);
        if let Some(pattern) = flag {
            command.args(["--redact-patterns", pattern]);
        }
        if let Some(patterns) = variable {
            command.env("WEFT_REDACT_PATTERNS", patterns);
        }
        async move {
            tokio::time::timeout(PATIENCE, command.output())
                .await
                .expect("the server exits at once")
                .expect("run the weft binary")
        }
    };
    for output in [
        run(Some("acct-(\\d+"), None).await,
        run(None, Some("card-\\d{4}\nacct-(\\d+")).await,
    ] {
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{stderr}");
        assert!(
            stderr.contains("redaction pattern `acct-(\\d+`"),
            "the error names the pattern: {stderr}"
        );
    }
}
