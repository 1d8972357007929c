//! The `weft` CLI against a live server: `start --wait` exit statuses,
//! `run` by trace id, `runs --json`, and `events` with its catalogue.

use std::{process::Output, time::Duration};

use serde_json::{Value, json};

use crate::harness::{Env, WEFT};

/// Runs the CLI with `args` and `--url` for this server; fails the test if it hangs.
async fn weft(env: &Env, args: &[&str]) -> Output {
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

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The run id `weft start` printed (`run_id   <id>`).
fn printed_run_id(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|line| line.strip_prefix("run_id"))
        .map(|rest| {
            rest.split_whitespace()
                .next()
                .expect("an id after run_id")
                .to_owned()
        })
        .unwrap_or_else(|| panic!("no run_id line in:\n{stdout}"))
}

pub async fn cli_start_wait_run_runs(db_url: String) {
    let env = Env::start(&db_url).await;
    env.register("name: cli-ok\nsteps:\n  - name: greet\n    handler: cli.ok\n")
        .await;
    env.register("name: cli-fail\nsteps:\n  - name: explode\n    handler: cli.fail\n")
        .await;
    let ok = env.script(
        "ok.sh",
        "input=$(cat)\nprintf '{\"greeting\": \"hello\", \"task\": %s}\\n' \"$input\"",
    );
    let fail = env.script(
        "fail.sh",
        "cat > /dev/null\necho 'cannot continue: bad input' >&2\nexit 100",
    );
    let handlers = env.handlers_file("handlers.toml", &[("cli.ok", &ok), ("cli.fail", &fail)]);
    let _worker = env.exec_worker(&handlers, "exec-1");

    // A succeeding workflow: exit status 0, the run id on stdout.
    let output = weft(
        &env,
        &["start", "cli-ok", "--input", r#"{"who": "e2e"}"#, "--wait"],
    )
    .await;
    let (stdout, stderr) = text(&output);
    assert!(
        output.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    let ok_id = printed_run_id(&stdout);
    let run = env
        .client
        .get_run(&ok_id)
        .await
        .expect("the printed run exists");
    assert_eq!(run.status, "completed");
    assert_eq!(run.input, json!({"who": "e2e"}));
    assert_eq!(run.steps[0].output.as_ref().unwrap()["greeting"], "hello");
    assert!(
        stdout.contains(&run.trace_id),
        "the trace id is printed too:\n{stdout}"
    );
    assert!(
        stdout.contains("completed"),
        "progress names the outcome:\n{stdout}"
    );

    // A failing workflow (exit 100: permanent): non-zero, no retries.
    let output = weft(&env, &["start", "cli-fail", "--wait"]).await;
    let (stdout, stderr) = text(&output);
    assert!(
        !output.status.success(),
        "a failed run exits non-zero\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let fail_id = printed_run_id(&stdout);
    let run = env
        .client
        .get_run(&fail_id)
        .await
        .expect("the printed run exists");
    assert_eq!(
        (run.status.as_str(), run.reason.as_deref()),
        ("failed", Some("handler_error"))
    );
    assert_eq!(
        run.steps[0].attempts.len(),
        1,
        "exit status 100 is not retried"
    );
    assert!(
        run.steps[0]
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("cannot continue"),
        "{:?}",
        run.steps[0].error
    );

    // `weft run` takes a trace id.
    let ok_run = env.client.get_run(&ok_id).await.expect("get run");
    let output = weft(&env, &["run", &ok_run.trace_id]).await;
    let (stdout, stderr) = text(&output);
    assert!(
        output.status.success(),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stdout.contains(&ok_id),
        "`weft run <trace_id>` shows the run id:\n{stdout}"
    );
    assert!(
        stdout.contains("completed") && stdout.contains("greet"),
        "{stdout}"
    );
    let output = weft(&env, &["run", &ok_run.trace_id, "--json"]).await;
    let detail: Value =
        serde_json::from_slice(&output.stdout).expect("`weft run --json` prints JSON");
    assert_eq!(detail["run_id"], ok_id.as_str());
    assert_eq!(detail["steps"][0]["name"], "greet");

    // `weft runs --json`: a `runs` array, newest first.
    let output = weft(&env, &["runs", "--json"]).await;
    let (stdout, stderr) = text(&output);
    assert!(
        output.status.success(),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let list: Value =
        serde_json::from_str(&stdout).unwrap_or_else(|err| panic!("not JSON ({err}):\n{stdout}"));
    let runs = list["runs"].as_array().expect("a runs array");
    let ids: Vec<&str> = runs
        .iter()
        .map(|r| r["run_id"].as_str().expect("run_id"))
        .collect();
    assert_eq!(ids, [fail_id.as_str(), ok_id.as_str()]);
    assert_eq!(runs[0]["status"], "failed");
    assert_eq!(runs[1]["status"], "completed");
    let output = weft(&env, &["runs", "--json", "--status", "failed"]).await;
    let list: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(list["runs"].as_array().map(Vec::len), Some(1));

    // `weft events catalog`: every kind with its fields, and every event of
    // these runs' histories (`weft events <id>`) is of a kind it lists, its
    // required fields present.
    let output = weft(&env, &["events", "catalog", "--json"]).await;
    let (stdout, stderr) = text(&output);
    assert!(
        output.status.success(),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let catalog: Value =
        serde_json::from_str(&stdout).unwrap_or_else(|err| panic!("not JSON ({err}):\n{stdout}"));
    let kinds: std::collections::BTreeMap<&str, &Value> = catalog["kinds"]
        .as_array()
        .expect("a kinds array")
        .iter()
        .map(|k| (k["kind"].as_str().expect("kind"), k))
        .collect();
    assert_eq!(kinds.len(), weft_core::EventKind::ALL.len(), "{stdout}");
    assert!(kinds.contains_key("compensation.started"), "{stdout}");
    assert!(!kinds.contains_key("step.running"), "no kind nobody writes");
    let mut seen = std::collections::BTreeSet::new();
    for id in [&ok_id, &fail_id] {
        let output = weft(&env, &["events", id, "--json"]).await;
        let history: Value = serde_json::from_slice(&output.stdout).expect("JSON");
        for event in history["events"].as_array().expect("events") {
            let kind = event["type"].as_str().expect("type");
            let entry = kinds
                .get(kind)
                .unwrap_or_else(|| panic!("{kind} is not in the catalogue"));
            for field in entry["fields"].as_array().expect("fields") {
                if field["required"] == true {
                    let name = field["name"].as_str().expect("name");
                    assert!(
                        event["data"].get(name).is_some(),
                        "{kind} without {name}: {event}"
                    );
                }
            }
            seen.insert(kind.to_owned());
        }
    }
    for kind in [
        "run.created",
        "run.started",
        "step.ready",
        "attempt.claimed",
        "attempt.completed",
        "attempt.failed",
        "step.failed",
        "run.failed",
        "run.completed",
    ] {
        assert!(seen.contains(kind), "{kind} in {seen:?}");
    }
    let output = weft(&env, &["events", "catalog"]).await;
    let (stdout, _) = text(&output);
    assert!(
        output.status.success()
            && stdout.contains("lease.expired")
            && stdout.contains("queue_wait_ms"),
        "{stdout}"
    );
    // A run's history still prints as text.
    let output = weft(&env, &["events", &ok_id]).await;
    let (stdout, stderr) = text(&output);
    assert!(
        output.status.success() && stdout.contains("attempt.completed"),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
}
