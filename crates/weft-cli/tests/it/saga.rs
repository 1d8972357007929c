//! Saga compensation end to end through the exec worker: a failed run's
//! completed steps undone in reverse DAG order (checked in the handlers'
//! side-effect file), a failing undo and its `weft retry`, parallel undos,
//! a rejected approval compensated, and a server killed mid-compensation.

use std::{fs, path::Path, time::Duration};

use serde_json::{Value, json};

use crate::harness::{Env, PATIENCE, WEFT, is_terminal, step, wait_until};

/// Runs the CLI with `args` against this server.
async fn weft(env: &Env, args: &[&str]) -> std::process::Output {
    let output = tokio::process::Command::new(WEFT)
        .args(args)
        .args(["--url", &env.server.url])
        .env_remove("WEFT_TOKEN")
        .env("NO_COLOR", "1")
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(60), output)
        .await
        .unwrap_or_else(|_| panic!("`weft {}` did not finish within 60s", args.join(" ")))
        .expect("run the weft binary")
}

/// The side-effect file's lines.
fn lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A handler that appends `<verb> <step>` to the side-effect file (and the
/// undo's input to `<step>.undo.json`), then prints its output; it fails
/// when the file `fail-<verb>-<step>` exists in the directory.
fn recorder(env: &Env, verb: &str) -> std::path::PathBuf {
    let dir = env.dir.path().display().to_string();
    env.script(
        &format!("{verb}.sh"),
        &format!(
            r#"input=$(cat)
if [ -e "{dir}/fail-{verb}-$WEFT_STEP" ]; then
  echo "{verb} of $WEFT_STEP failed on purpose" >&2
  exit 1
fi
if [ -e "{dir}/slow-{verb}" ]; then sleep 1; fi
echo "{verb} $WEFT_STEP" >> "{dir}/effects.log"
if [ "{verb}" = "undo" ]; then printf '%s' "$input" > "{dir}/$WEFT_STEP.undo.json"; fi
printf '{{"{verb}": "%s"}}\n' "$WEFT_STEP""#
        ),
    )
}

const CHAIN: &str = "\
name: chain
steps:
  - { name: s1, handler: saga.do, compensate: saga.undo }
  - { name: s2, handler: saga.do, compensate: saga.undo, depends_on: [s1] }
  - { name: s3, handler: saga.do, compensate: saga.undo, depends_on: [s2], retry: { max_attempts: 1 } }
  - { name: s4, handler: saga.do, compensate: saga.undo, depends_on: [s3] }
";

/// Env with the chain's handlers and an exec worker serving them.
async fn chain_env(db_url: &str) -> (Env, crate::harness::Proc) {
    let env = Env::start(db_url).await;
    env.register(CHAIN).await;
    let forward = recorder(&env, "do");
    let undo = recorder(&env, "undo");
    let handlers = env.handlers_file(
        "handlers.toml",
        &[("saga.do", &forward), ("saga.undo", &undo)],
    );
    let worker = env.exec_worker(&handlers, "exec-1");
    (env, worker)
}

/// A 4-step saga failing at step 3 undoes 2 then 1 and ends `compensated`,
/// keeping its failure reason; the undo rows are attempts of kind
/// `compensate` pointing at the forward attempt; retry is then a 409.
pub async fn saga_chain_compensates_in_reverse(db_url: String) {
    let (env, _worker) = chain_env(&db_url).await;
    fs::write(env.path("fail-do-s3"), "").unwrap();
    let run_id = env.start_run("chain", json!({"order": 7})).await;
    let run = env.wait_finished(&run_id).await;
    assert_eq!(run.status, "compensated", "{run:#?}");
    assert_eq!(run.reason.as_deref(), Some("handler_error"));
    assert_eq!(
        lines(&env.path("effects.log")),
        ["do s1", "do s2", "undo s2", "undo s1"]
    );
    for name in ["s1", "s2"] {
        let s = step(&run, name);
        assert_eq!(s.status, "compensated", "{s:#?}");
        assert_eq!(s.undo.as_deref(), Some("completed"));
        let kinds: Vec<_> = s.attempts.iter().map(|a| a.kind.as_str()).collect();
        assert_eq!(kinds, ["forward", "compensate"]);
        assert_eq!(s.attempts[1].undoes_attempt, Some(1));
        assert_eq!(s.attempts[1].status, "completed");
    }
    assert_eq!(step(&run, "s3").status, "failed");
    assert_eq!(step(&run, "s4").status, "cancelled");
    assert_eq!(step(&run, "s4").undo, None);
    // The server's log tells the compensation, joined by run and trace id.
    let log = wait_until("the compensation lines in the server log", PATIENCE, || {
        let log = env.server.proc.output();
        async move { log.contains("run compensated").then_some(log) }
    })
    .await;
    for message in ["compensation started", "run compensated"] {
        let line = log
            .lines()
            .find(|l| l.contains(message) && l.contains(&run_id))
            .unwrap_or_else(|| panic!("no `{message}` line for the run in:\n{log}"));
        assert!(line.contains(&run.trace_id), "{line}");
        assert!(line.contains("handler_error"), "{line}");
    }
    // The undo's input: the run's input, the step, its output, the failure.
    let input: Value =
        serde_json::from_str(&fs::read_to_string(env.path("s2.undo.json")).unwrap()).unwrap();
    assert_eq!(input["input"], json!({"order": 7}));
    assert_eq!(input["step"], "s2");
    assert_eq!(input["output"], json!({"do": "s2"}));
    assert_eq!(input["error"]["reason"], "handler_error");
    // The history tells the undo chain in order.
    let kinds: Vec<String> = env
        .client
        .run_events(&run_id, None)
        .await
        .expect("events")
        .events
        .iter()
        .filter(|e| e.kind.starts_with("compensation.") || e.kind.starts_with("step.compensat"))
        .map(|e| format!("{} {}", e.kind, e.step.clone().unwrap_or_default()))
        .collect();
    assert_eq!(
        kinds,
        [
            "compensation.started ",
            "step.compensating s2",
            "step.compensated s2",
            "step.compensating s1",
            "step.compensated s1",
            "compensation.completed ",
        ]
    );
    // `weft run` shows the undo chain.
    let out = weft(&env, &["run", &run_id]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("compensated"), "{stdout}");
    assert!(stdout.contains("undo: s2 → s1"), "{stdout}");
    // A compensated run is not retried.
    let response = env
        .http
        .post(format!("{}/v1/runs/{run_id}/retry", env.server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 409);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "run_compensated", "{body}");
}

/// An undo that fails for good ends the run `failed` with reason
/// `compensation_failed`, the other undos still done; `weft retry` retries
/// the failed undo only and the run ends `compensated`.
pub async fn failing_compensation_then_retry(db_url: String) {
    let (env, _worker) = chain_env(&db_url).await;
    fs::write(env.path("fail-do-s3"), "").unwrap();
    fs::write(env.path("fail-undo-s2"), "").unwrap();
    let run_id = env.start_run("chain", json!({})).await;
    let run = env.wait_finished(&run_id).await;
    assert_eq!(run.status, "failed", "{run:#?}");
    assert_eq!(run.reason.as_deref(), Some("compensation_failed"));
    assert_eq!(step(&run, "s2").status, "failed");
    assert_eq!(
        step(&run, "s2").reason.as_deref(),
        Some("compensation_failed")
    );
    assert_eq!(step(&run, "s2").undo.as_deref(), Some("failed"));
    assert_eq!(step(&run, "s1").status, "compensated");
    // The default compensate_retry is the step's retry: 3 attempts.
    let undos = step(&run, "s2")
        .attempts
        .iter()
        .filter(|a| a.kind == "compensate")
        .count();
    assert_eq!(undos, 3);
    assert_eq!(
        lines(&env.path("effects.log")),
        ["do s1", "do s2", "undo s1"]
    );

    fs::remove_file(env.path("fail-undo-s2")).unwrap();
    let out = weft(&env, &["retry", &run_id]).await;
    assert!(out.status.success(), "{out:?}");
    let run = env
        .wait_run(&run_id, "compensated", PATIENCE, |r| {
            r.status == "compensated"
        })
        .await;
    assert_eq!(run.reason.as_deref(), Some("handler_error"));
    assert_eq!(
        lines(&env.path("effects.log")),
        ["do s1", "do s2", "undo s1", "undo s2"],
        "only the failed undo ran again"
    );
    assert_eq!(step(&run, "s1").attempts.len(), 2);
}

const BRANCHES: &str = "\
name: branches
steps:
  - { name: root, handler: saga.do, compensate: saga.undo }
  - { name: left, handler: saga.do, compensate: saga.wait_other, depends_on: [root] }
  - { name: right, handler: saga.do, compensate: saga.wait_other, depends_on: [root] }
  - { name: join, handler: saga.fail, depends_on: [left, right], retry: { max_attempts: 1 } }
";

/// Independent undos run at once (each waits for the other to have started,
/// and fails if it never does); their common dependency is undone after both.
pub async fn parallel_compensations(db_url: String) {
    let env = Env::start(&db_url).await;
    env.register(BRANCHES).await;
    let dir = env.dir.path().display().to_string();
    let forward = recorder(&env, "do");
    let undo = recorder(&env, "undo");
    let fail = env.script("fail.sh", "cat > /dev/null\necho no >&2\nexit 1");
    let wait_other = env.script(
        "wait_other.sh",
        &format!(
            r#"cat > /dev/null
touch "{dir}/started-$WEFT_STEP"
if [ "$WEFT_STEP" = left ]; then other=right; else other=left; fi
i=0
while [ ! -e "{dir}/started-$other" ]; do
  i=$((i + 1))
  if [ $i -gt 200 ]; then echo "the other undo never started" >&2; exit 1; fi
  sleep 0.05
done
echo "undo $WEFT_STEP" >> "{dir}/effects.log"
echo '{{}}'"#
        ),
    );
    let handlers = env.handlers_file(
        "handlers.toml",
        &[
            ("saga.do", &forward),
            ("saga.undo", &undo),
            ("saga.fail", &fail),
            ("saga.wait_other", &wait_other),
        ],
    );
    let _worker = env.exec_worker(&handlers, "exec-1");
    let run_id = env.start_run("branches", json!({})).await;
    let run = env.wait_finished(&run_id).await;
    assert_eq!(run.status, "compensated", "{run:#?}");
    let effects = lines(&env.path("effects.log"));
    assert_eq!(effects.len(), 6, "{effects:?}");
    assert_eq!(effects[5], "undo root", "{effects:?}");
    let mut undone: Vec<_> = effects[3..5].to_vec();
    undone.sort();
    assert_eq!(undone, ["undo left", "undo right"]);
}

const APPROVAL: &str = "\
name: approved_order
steps:
  - { name: reserve, handler: saga.do, compensate: saga.undo }
  - { name: review, kind: approval, depends_on: [reserve] }
  - { name: ship, handler: saga.do, compensate: saga.undo, depends_on: [review] }
";

/// A rejected approval fails the run with reason `rejected` and the
/// completed steps before it are undone.
pub async fn rejected_approval_compensates(db_url: String) {
    let env = Env::start(&db_url).await;
    env.register(APPROVAL).await;
    let forward = recorder(&env, "do");
    let undo = recorder(&env, "undo");
    let handlers = env.handlers_file(
        "handlers.toml",
        &[("saga.do", &forward), ("saga.undo", &undo)],
    );
    let _worker = env.exec_worker(&handlers, "exec-1");
    let run_id = env.start_run("approved_order", json!({})).await;
    env.wait_run(&run_id, "review waiting", PATIENCE, |r| {
        step(r, "review").status == "waiting"
    })
    .await;
    let out = weft(
        &env,
        &["reject", &run_id, "review", "--comment", "too risky"],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let run = env.wait_finished(&run_id).await;
    assert_eq!(run.status, "compensated", "{run:#?}");
    assert_eq!(run.reason.as_deref(), Some("rejected"));
    assert_eq!(
        lines(&env.path("effects.log")),
        ["do reserve", "undo reserve"]
    );
}

/// The server killed (-9) while an undo runs: after a restart the run ends
/// `compensated`, each undo done once.
pub async fn server_killed_during_compensation(db_url: String) {
    let (mut env, _worker) = chain_env(&db_url).await;
    fs::write(env.path("fail-do-s3"), "").unwrap();
    fs::write(env.path("slow-undo"), "").unwrap();
    let run_id = env.start_run("chain", json!({})).await;
    env.wait_run(&run_id, "an undo running", PATIENCE, |r| {
        r.status == "compensating" && r.steps.iter().any(|s| s.undo.as_deref() == Some("running"))
    })
    .await;
    env.server.kill();
    env.server.restart().await;
    let run = env
        .wait_run(&run_id, "finished", PATIENCE, |r| is_terminal(&r.status))
        .await;
    assert_eq!(run.status, "compensated", "{run:#?}");
    assert_eq!(
        lines(&env.path("effects.log")),
        ["do s1", "do s2", "undo s2", "undo s1"],
        "each undo ran once"
    );
}

/// The README's order saga, as shipped in examples/, applies and
/// compensates: ship fails, charge then reserve are undone.
pub async fn order_saga_example(db_url: String) {
    let env = Env::start(&db_url).await;
    let manifest = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/order-saga.yaml"),
    )
    .expect("examples/order-saga.yaml");
    env.register(&manifest).await;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let log = env.path("order.log");
    let handlers = root.join("handlers.toml");
    let worker = {
        let mut command = tokio::process::Command::new(WEFT);
        command
            .current_dir(&root)
            .arg("worker")
            .arg("--handlers")
            .arg(&handlers)
            .args(["--url", &env.server.url, "--worker-id", "exec-saga"])
            .env("SAGA_LOG", &log)
            .kill_on_drop(true)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        command.spawn().expect("spawn the exec worker")
    };
    let run_id = env
        .start_run("order-saga", json!({"order_id": "o-1", "amount": 42}))
        .await;
    let run = env.wait_finished(&run_id).await;
    drop(worker);
    assert_eq!(run.status, "compensated", "{run:#?}");
    assert_eq!(
        lines(&log),
        ["reserve o-1", "charge o-1 42", "refund o-1", "release o-1"]
    );
}

/// `weft compensation skip` marks a failed undo skipped, with its actor and
/// comment in the history: the run ends `compensated`. Skipping an undo
/// that did not fail is a 409.
pub async fn skip_a_failed_compensation(db_url: String) {
    let (env, _worker) = chain_env(&db_url).await;
    fs::write(env.path("fail-do-s3"), "").unwrap();
    fs::write(env.path("fail-undo-s2"), "").unwrap();
    let run_id = env.start_run("chain", json!({})).await;
    let run = env.wait_finished(&run_id).await;
    assert_eq!(run.reason.as_deref(), Some("compensation_failed"));

    let out = weft(&env, &["compensation", "skip", &run_id, "s1"]).await;
    assert!(!out.status.success(), "s1's undo did not fail: {out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no_failed_compensation"),
        "{out:?}"
    );

    let out = weft(
        &env,
        &[
            "compensation",
            "skip",
            &run_id,
            "s2",
            "--comment",
            "refunded by hand",
        ],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let run = env.client.get_run(&run_id).await.unwrap();
    assert_eq!(run.status, "compensated", "{run:#?}");
    assert_eq!(run.reason.as_deref(), Some("handler_error"));
    assert_eq!(step(&run, "s2").undo.as_deref(), Some("skipped"));
    let events = env.client.run_events(&run_id, None).await.unwrap().events;
    let skipped = events
        .iter()
        .find(|e| e.kind == "compensation.skipped")
        .expect("a compensation.skipped event");
    assert_eq!(skipped.step.as_deref(), Some("s2"));
    assert_eq!(skipped.data["comment"], "refunded by hand");
    assert!(skipped.data["actor"].is_string(), "{:?}", skipped.data);
    assert_eq!(events.last().unwrap().kind, "compensation.completed");
}

/// The undo chain in the trace and the metrics: each undo is a
/// `compensate.<step>` span under the run span, linked to the span of the
/// forward attempt it undoes; `weft_compensations_total` counts the undos,
/// `weft_step_attempts_total` does not.
pub async fn compensation_spans_and_metrics(db_url: String) {
    let collector = crate::collector::Collector::start_http().await;
    let endpoint = collector.endpoint();
    let env = Env::start_with_env(
        &db_url,
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ],
    )
    .await;
    env.register(CHAIN).await;
    let forward = recorder(&env, "do");
    let undo = recorder(&env, "undo");
    let handlers = env.handlers_file(
        "handlers.toml",
        &[("saga.do", &forward), ("saga.undo", &undo)],
    );
    let _worker = env.exec_worker(&handlers, "exec-1");
    fs::write(env.path("fail-do-s3"), "").unwrap();
    let run_id = env.start_run("chain", json!({})).await;
    let run = env.wait_finished(&run_id).await;
    assert_eq!(run.status, "compensated", "{run:#?}");
    let spans = collector
        .wait_for(&run.trace_id, "the run's and undos' spans", |spans| {
            spans.iter().any(|s| s.name == "compensate.s1")
                && spans.iter().any(|s| s.name == "compensate.s2")
                && spans.iter().any(|s| s.name == "workflow.chain")
        })
        .await;
    let run_span = spans
        .iter()
        .find(|s| s.name == "workflow.chain")
        .expect("the run span");
    for name in ["s1", "s2"] {
        let forward = step(&run, name)
            .attempts
            .iter()
            .find(|a| a.kind == "forward")
            .unwrap();
        let undo_attempt = step(&run, name)
            .attempts
            .iter()
            .find(|a| a.kind == "compensate")
            .unwrap();
        let span = spans
            .iter()
            .find(|s| s.name == format!("compensate.{name}"))
            .unwrap();
        assert_eq!(span.parent_span_id, run_span.span_id, "{span:#?}");
        assert_eq!(span.span_id, undo_attempt.span_id);
        assert_eq!(
            span.links,
            std::slice::from_ref(&forward.span_id),
            "{span:#?}"
        );
        assert_eq!(span.attr("weft.attempt_kind"), Some("compensate"));
    }

    let metrics = env
        .http
        .get(format!("{}/metrics", env.server.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |prefix: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(prefix))
            .map(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(0.0)
            })
            .sum()
    };
    assert_eq!(
        value(r#"weft_compensations_total{workflow="chain",step="s2",status="completed"}"#),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        value(r#"weft_compensations_total{workflow="chain",step="s1",status="completed"}"#),
        1.0
    );
    // s1 ran one forward attempt: the undo is not among the step attempts.
    assert_eq!(
        value(r#"weft_step_attempts_total{workflow="chain",step="s1","#),
        1.0,
        "{metrics}"
    );
}
