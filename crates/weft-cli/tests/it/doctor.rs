//! `weft doctor` end to end: each cause built for real (no worker, a worker
//! without the handler, an approval, a sleep, a handler failing the same way
//! every time, workers killed mid-step), then asserted through the CLI (exit
//! status, cause, evidence, command), the API and `weft_runs_stalled`.

use std::process::Command;

use serde_json::{Value, json};
use weft_worker::TaskContext;

use crate::harness::{Env, PATIENCE, SdkWorker, WEFT, kill_group, step, wait_until};

/// Thresholds of 1–2 s; the liveness window stays above the SDK worker's
/// 5 s poll wait plus the 5 s write throttle, so a polling worker stays live.
const FLAGS: &[&str] = &[
    "--gauge-interval",
    "200ms",
    "--worker-live-window",
    "12s",
    "--running-long-after",
    "2s",
    "--timer-overdue-after",
    "2s",
    "--saturated-after",
    "2s",
    "--approval-stalled-after",
    "1h",
];

/// Runs `weft ARGS --url URL --json`; returns the exit code and the JSON.
fn cli(env: &Env, args: &[&str]) -> (i32, Value) {
    let out = Command::new(WEFT)
        .args(args)
        .args(["--url", &env.server.url, "--json"])
        .output()
        .expect("run weft");
    let text = String::from_utf8_lossy(&out.stdout);
    let json = serde_json::from_str(&text).unwrap_or_else(|err| {
        panic!(
            "weft {args:?} printed no JSON ({err}): {text}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), json)
}

/// Runs `weft ARGS --url URL` (human output); returns exit code and stdout.
fn cli_text(env: &Env, args: &[&str]) -> (i32, String) {
    let out = Command::new(WEFT)
        .args(args)
        .args(["--url", &env.server.url])
        .output()
        .expect("run weft");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Waits until `weft doctor RUN` names `cause` for its worst step; returns
/// the exit code and the diagnosis.
async fn wait_cause(env: &Env, run_id: &str, cause: &str) -> (i32, Value) {
    wait_until(&format!("run {run_id} diagnosed {cause}"), PATIENCE, || {
        let (code, d) = cli(env, &["doctor", run_id]);
        async move { (d["cause"] == cause).then_some((code, d)) }
    })
    .await
}

/// The value of `weft_runs_stalled{reason}` on /metrics.
async fn stalled_gauge(env: &Env, reason: &str) -> Option<f64> {
    let text = env
        .http
        .get(format!("{}/metrics", env.server.url))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let prefix = format!("weft_runs_stalled{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

async fn wait_gauge(env: &Env, reason: &str, want: f64) {
    wait_until(
        &format!("weft_runs_stalled{{reason=\"{reason}\"}} = {want}"),
        PATIENCE,
        || async move { (stalled_gauge(env, reason).await == Some(want)).then_some(()) },
    )
    .await;
}

fn only_step<'a>(d: &'a Value, name: &str) -> &'a Value {
    d["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["step"] == name)
        .unwrap_or_else(|| panic!("no step {name} in {d:#}"))
}

pub async fn doctor_no_worker_handler_approval_sleep(db_url: String) {
    let env = Env::start_with(&db_url, FLAGS).await;
    env.register("name: dr_orphan\nsteps:\n  - {name: only, handler: dr.nobody, queue: drq}\n")
        .await;
    env.register("name: dr_gate\nsteps:\n  - {name: ok, kind: approval}\n")
        .await;
    env.register("name: dr_nap\nsteps:\n  - {name: nap, kind: sleep, duration: 1h}\n")
        .await;
    let orphan = env.start_run("dr_orphan", json!({})).await;
    let gate = env.start_run("dr_gate", json!({})).await;
    let nap = env.start_run("dr_nap", json!({})).await;

    // No worker at all.
    let (code, d) = wait_cause(&env, &orphan, "no_worker_for_queue").await;
    assert_eq!(code, 1, "a stalled run exits 1: {d:#}");
    let s = only_step(&d, "only");
    assert_eq!(s["stalled"], true);
    assert!(
        s["evidence"]
            .as_str()
            .unwrap()
            .contains("no live worker polls queue drq"),
        "{s:#}"
    );
    assert_eq!(
        s["command"],
        "weft worker --handlers handlers.toml --queue drq"
    );
    wait_gauge(&env, "no_worker_for_queue", 1.0).await;
    let (_, text) = cli_text(&env, &["status"]);
    assert!(text.contains("queues without workers  drq"), "{text}");

    // Healthy waits: shown, exit 0, not in the gauge.
    let (code, d) = wait_cause(&env, &gate, "waiting_approval").await;
    assert_eq!((code, &d["stalled"]), (0, &json!(false)), "{d:#}");
    assert_eq!(
        only_step(&d, "ok")["command"],
        format!("weft approve {gate} ok")
    );
    let (code, d) = wait_cause(&env, &nap, "waiting_timer").await;
    assert_eq!(code, 0, "{d:#}");
    let s = only_step(&d, "nap");
    assert!(
        s["evidence"]
            .as_str()
            .unwrap()
            .starts_with("sleeping until due in"),
        "{s:#}"
    );
    assert_eq!(s["command"], format!("weft run {nap}"));
    assert_eq!(stalled_gauge(&env, "waiting_approval").await, Some(0.0));

    // A worker polls the queue, but without the handler.
    let worker = SdkWorker::spawn(
        env.sdk_worker("dr-other")
            .queue("drq")
            .concurrency(3)
            .handler("dr.other", |_ctx: TaskContext| async move { Ok(json!({})) })
            .build(),
    );
    let (code, d) = wait_cause(&env, &orphan, "no_worker_for_handler").await;
    assert_eq!(code, 1);
    let s = only_step(&d, "only");
    assert!(
        s["evidence"]
            .as_str()
            .unwrap()
            .contains("poll queue drq but none serves handler dr.nobody"),
        "{s:#}"
    );
    assert_eq!(s["command"], "weft workers --queue drq");
    wait_gauge(&env, "no_worker_for_handler", 1.0).await;
    wait_gauge(&env, "no_worker_for_queue", 0.0).await;

    // The worker as the store knows it, and its queue.
    let (code, workers) = cli(&env, &["workers", "--queue", "drq"]);
    assert_eq!(code, 0);
    let w = &workers["workers"][0];
    assert_eq!(w["worker_id"], "dr-other", "{workers:#}");
    assert_eq!(w["concurrency"], 3);
    assert_eq!(w["pid"], std::process::id());
    assert_eq!(w["live"], true);
    assert!(w["host"].is_string() && w["version"].is_string(), "{w:#}");
    let (_, queues) = cli(&env, &["queues", "--queue", "drq"]);
    let q = &queues["queues"][0];
    assert_eq!(
        (&q["queue"], &q["ready"], &q["pollers"], &q["handlers"]),
        (&json!("drq"), &json!(1), &json!(1), &json!(["dr.other"])),
        "{queues:#}"
    );

    // Every stalled run, grouped, worst first; exit 1.
    let (code, all) = cli(&env, &["doctor"]);
    assert_eq!(code, 1, "{all:#}");
    assert_eq!(all["stalled"], 1, "{all:#}");
    // Under the default database threshold (500 ms), no system finding.
    assert_eq!(all["findings"], json!([]), "{all:#}");
    assert_eq!(
        all["causes"][0]["cause"], "no_worker_for_handler",
        "{all:#}"
    );
    assert_eq!(all["causes"][0]["runs"][0]["run_id"], orphan.as_str());
    // `weft run` says why under its steps.
    let (_, text) = cli_text(&env, &["run", &orphan]);
    assert!(
        text.lines()
            .any(|l| l.starts_with("why  only: no_worker_for_handler (stalled)")),
        "{text}"
    );
    let (code, text) = cli_text(&env, &["doctor"]);
    assert_eq!(code, 1);
    assert!(text.contains("no_worker_for_handler — 1 run(s)"), "{text}");
    let (_, text) = cli_text(&env, &["status"]);
    assert!(
        text.contains("stuck runs  1 (no_worker_for_handler 1); see `weft doctor`"),
        "{text}"
    );
    let doc: Value = env
        .http
        .get(format!("{}/openapi.json", env.server.url))
        .send()
        .await
        .expect("openapi")
        .json()
        .await
        .expect("openapi json");
    for path in [
        "/v1/workers",
        "/v1/queues",
        "/v1/runs/{id}/diagnosis",
        "/v1/diagnostics",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is not documented");
    }

    // Approving ends the gate's wait; the diagnosis of a finished run is empty.
    let (code, _) = cli(&env, &["approve", &gate, "ok"]);
    assert_eq!(code, 0);
    env.wait_finished(&gate).await;
    let (code, d) = cli(&env, &["doctor", &gate]);
    assert_eq!((code, &d["cause"]), (0, &Value::Null), "{d:#}");
    worker.stop().await;
}

pub async fn doctor_poison_input_and_lease_expired_loop(db_url: String) {
    let env = Env::start_with(&db_url, FLAGS).await;
    env.register(
        "\
name: dr_poison
steps:
  - name: parse
    handler: dr.poison
    retry: { max_attempts: 5, initial: 2s, max: 1m, multiplier: 10, jitter: false }
",
    )
    .await;
    env.register(
        "\
name: dr_crash
steps:
  - name: work
    handler: dr.crash
    retry: { max_attempts: 5, initial: 100ms, max: 100ms, jitter: false }
",
    )
    .await;
    let poison = env.script(
        "poison.sh",
        "cat > /dev/null\necho 'bad input: no field id' >&2\nexit 1",
    );
    let pid_file = env.path("crash.pid");
    let crash = env.script(
        "crash.sh",
        &format!(
            "cat > /dev/null\necho $$ > {}\nsleep 60",
            pid_file.display()
        ),
    );
    let handlers = env.handlers_file(
        "handlers.toml",
        &[("dr.poison", &poison), ("dr.crash", &crash)],
    );

    // The same failure twice: poison_input while it backs off (20 s).
    let mut worker = env.exec_worker(&handlers, "dr-exec-1");
    let poisoned = env.start_run("dr_poison", json!({})).await;
    let (code, d) = wait_cause(&env, &poisoned, "poison_input").await;
    assert_eq!(code, 1, "{d:#}");
    let s = only_step(&d, "parse");
    let evidence = s["evidence"].as_str().unwrap();
    assert!(
        evidence.starts_with("the last 2 attempts failed the same way: handler_error:")
            && evidence.contains("bad input: no field id"),
        "{s:#}"
    );
    assert_eq!(s["command"], format!("weft logs {poisoned} --step parse"));
    wait_gauge(&env, "poison_input", 1.0).await;
    let (_, cancelled) = cli(&env, &["cancel", &poisoned]);
    assert_eq!(cancelled["status"], "cancelled");

    // A worker killed mid-step, twice: the leases lapse, the step loops.
    let crashing = env.start_run("dr_crash", json!({})).await;
    for attempt in 1..=2usize {
        let pid: i32 = wait_until("the handler to start", PATIENCE, || {
            let pid_file = pid_file.clone();
            async move { std::fs::read_to_string(&pid_file).ok()?.trim().parse().ok() }
        })
        .await;
        let _ = std::fs::remove_file(&pid_file);
        worker.kill();
        kill_group(pid);
        env.wait_run(&crashing, "the lease to lapse", PATIENCE, |run| {
            step(run, "work").attempts.len() == attempt
                && step(run, "work").attempts[attempt - 1].reason.as_deref()
                    == Some("lease_expired")
        })
        .await;
        if attempt == 1 {
            worker = env.exec_worker(&handlers, "dr-exec-2");
        }
    }
    let (code, d) = wait_cause(&env, &crashing, "lease_expired_loop").await;
    assert_eq!(code, 1, "{d:#}");
    let s = only_step(&d, "work");
    assert_eq!(
        s["evidence"],
        "the last 2 attempts lost their lease (workers dr-exec-1, dr-exec-2): a worker crashing on it"
    );
    assert_eq!(s["command"], format!("weft logs {crashing} --step work"));
    wait_gauge(&env, "lease_expired_loop", 1.0).await;
    let (code, all) = cli(&env, &["doctor", "--cause", "lease_expired_loop"]);
    assert_eq!(code, 1);
    assert_eq!(
        all["causes"][0]["runs"][0]["run_id"],
        crashing.as_str(),
        "{all:#}"
    );
}

pub async fn doctor_running_long_saturated_cancel_pending(db_url: String) {
    // A wider liveness window: the stubborn worker below polls only once.
    let mut flags = FLAGS.to_vec();
    flags[3] = "60s";
    let env = Env::start_with(&db_url, &flags).await;
    env.register("name: dr_slow\nsteps:\n  - {name: grind, handler: dr.slow}\n")
        .await;
    let first = env.start_run("dr_slow", json!({})).await;
    // A worker with one slot that takes the step, heartbeats its lease and
    // never finishes (nor stops when the run is cancelled).
    let tasks = env
        .client
        .poll(&weft_api::PollRequest {
            worker_id: "dr-stubborn".to_owned(),
            queues: vec!["default".to_owned()],
            handlers: vec!["dr.slow".to_owned()],
            max_tasks: 1,
            wait_ms: 5000,
            host: Some("box-7".to_owned()),
            pid: Some(7),
            version: Some("0.0.0".to_owned()),
            concurrency: Some(1),
        })
        .await
        .expect("poll")
        .tasks;
    assert_eq!(tasks.len(), 1);
    let lease = tasks[0].lease_id.clone();
    let beats = {
        let client = env.client.clone();
        tokio::spawn(async move {
            loop {
                let _ = client.heartbeat(&lease).await;
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        })
    };

    let (code, d) = wait_cause(&env, &first, "running_long").await;
    assert_eq!(code, 1, "{d:#}");
    let s = only_step(&d, "grind");
    let evidence = s["evidence"].as_str().unwrap();
    assert!(
        evidence.starts_with("attempt 1 running on worker dr-stubborn for")
            && evidence.contains("last heartbeat")
            && evidence.ends_with("; past the 2.0s threshold"),
        "{s:#}"
    );
    assert_eq!(s["command"], format!("weft logs {first} --step grind"));
    wait_gauge(&env, "running_long", 1.0).await;

    // Its one slot is taken: the next run's step waits on a full worker.
    let second = env.start_run("dr_slow", json!({})).await;
    let (code, d) = wait_cause(&env, &second, "worker_saturated").await;
    assert_eq!(code, 1, "{d:#}");
    let s = only_step(&d, "grind");
    assert!(
        s["evidence"]
            .as_str()
            .unwrap()
            .ends_with("1 live worker(s) serve it, all 1 slots in use"),
        "{s:#}"
    );
    assert_eq!(s["command"], "weft queues --queue default");
    wait_gauge(&env, "worker_saturated", 1.0).await;
    let (_, workers) = cli(&env, &["workers"]);
    let w = &workers["workers"][0];
    assert_eq!(
        (&w["slots_in_use"], &w["concurrency"], &w["host"]),
        (&json!(1), &json!(1), &json!("box-7")),
        "{workers:#}"
    );
    assert!(w["last_heartbeat"].is_string(), "{w:#}");

    // Cancelled, but the handler holds on to its lease.
    let (_, cancelled) = cli(&env, &["cancel", &first]);
    assert_eq!(cancelled["status"], "cancelled");
    let (code, d) = wait_cause(&env, &first, "cancel_pending").await;
    assert_eq!(code, 1, "{d:#}");
    let s = only_step(&d, "grind");
    assert!(
        s["evidence"]
            .as_str()
            .unwrap()
            .starts_with("run cancelled; worker dr-stubborn still holds the lease of attempt 1"),
        "{s:#}"
    );
    assert_eq!(s["command"], "weft workers --queue default");
    wait_gauge(&env, "cancel_pending", 1.0).await;
    let (code, all) = cli(&env, &["doctor"]);
    assert_eq!((code, &all["stalled"]), (1, &json!(2)), "{all:#}");
    beats.abort();
}

/// `weft start --wait` on a run no worker can take says why instead of
/// hanging silently.
pub async fn doctor_start_wait_says_why(db_url: String) {
    let env = Env::start_with(&db_url, FLAGS).await;
    env.register("name: dr_wait\nsteps:\n  - {name: only, handler: dr.none, queue: drw}\n")
        .await;
    let out_path = env.path("start-wait.out");
    let mut child = Command::new(WEFT)
        .args(["start", "dr_wait", "--wait", "--url", &env.server.url])
        .stdout(std::fs::File::create(&out_path).expect("output file"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run weft start --wait");
    let text = wait_until("weft start --wait to explain the stall", PATIENCE, || {
        let out_path = out_path.clone();
        async move {
            let text = std::fs::read_to_string(&out_path).ok()?;
            text.contains("why  only: no_worker_for_queue (stalled)")
                .then_some(text)
        }
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        text.contains("weft worker --handlers handlers.toml --queue drw"),
        "{text}"
    );
}

/// A server whose engine does not sweep (its tick is an hour): a sleep's
/// timer goes overdue. Beside it the healthy waits that have no scenario of
/// their own (a step waiting on its dependencies, a step in backoff) and an
/// approval past its threshold, which turns stalled.
pub async fn doctor_overdue_timer_dependencies_retrying_stale_approval(db_url: String) {
    // The harness leaves its own tick out when a scenario sets one.
    let mut flags = FLAGS.to_vec();
    let approval = flags.len() - 1;
    assert_eq!(flags[approval - 1], "--approval-stalled-after");
    flags[approval] = "1s";
    flags.extend(["--engine-tick", "1h"]);
    let env = Env::start_with(&db_url, &flags).await;
    env.register("name: dr_snooze\nsteps:\n  - {name: nap, kind: sleep, duration: 1s}\n")
        .await;
    env.register(
        "name: dr_chain\nsteps:\n  - {name: first, handler: dr.none, queue: drdeps}\n  - {name: second, handler: dr.none, queue: drdeps, depends_on: [first]}\n",
    )
    .await;
    env.register(
        "\
name: dr_flaky
steps:
  - name: call
    handler: dr.flaky
    queue: drflaky
    retry: { max_attempts: 4, initial: 10m, max: 10m, jitter: false }
",
    )
    .await;
    env.register("name: dr_stale_gate\nsteps:\n  - {name: sign, kind: approval}\n")
        .await;
    let snooze = env.start_run("dr_snooze", json!({})).await;
    let chain = env.start_run("dr_chain", json!({})).await;
    let flaky = env.start_run("dr_flaky", json!({})).await;
    let gate = env.start_run("dr_stale_gate", json!({})).await;

    // The sleep was due a second after it started and nothing fired it.
    let (code, d) = wait_cause(&env, &snooze, "overdue_timer").await;
    assert_eq!((code, &d["stalled"]), (1, &json!(true)), "{d:#}");
    let s = only_step(&d, "nap");
    let evidence = s["evidence"].as_str().unwrap();
    assert!(
        evidence.starts_with("timer due ")
            && evidence.ends_with(" ago and not fired: is the engine sweeping?"),
        "{s:#}"
    );
    assert_eq!(s["command"], "weft status");
    wait_gauge(&env, "overdue_timer", 1.0).await;
    let (_, text) = cli_text(&env, &["run", &snooze]);
    assert!(
        text.lines()
            .any(|l| l.starts_with("why  nap: overdue_timer (stalled)")),
        "{text}"
    );

    // The second step waits on the first, which no worker takes.
    let (code, d) = wait_cause(&env, &chain, "no_worker_for_queue").await;
    assert_eq!(code, 1, "{d:#}");
    let s = only_step(&d, "second");
    assert_eq!(
        (&s["cause"], &s["stalled"], &s["evidence"]),
        (
            &json!("waiting_dependencies"),
            &json!(false),
            &json!("waits on first (ready)")
        ),
        "{d:#}"
    );
    assert_eq!(s["command"], format!("weft run {chain}"));

    // One failure, then ten minutes of backoff: retrying, a healthy wait.
    let worker = SdkWorker::spawn(
        env.sdk_worker("dr-flaky")
            .queue("drflaky")
            .handler("dr.flaky", |ctx: TaskContext| async move {
                Err::<Value, _>(weft_worker::HandlerError::retryable(format!(
                    "upstream 503 on attempt {}",
                    ctx.task.attempt
                )))
            })
            .build(),
    );
    let (code, d) = wait_cause(&env, &flaky, "retrying").await;
    assert_eq!((code, &d["stalled"]), (0, &json!(false)), "{d:#}");
    let s = only_step(&d, "call");
    let evidence = s["evidence"].as_str().unwrap();
    assert!(
        evidence.starts_with("attempt 2 of 4 next, in ")
            && evidence.ends_with("; last error handler_error: upstream 503 on attempt 1"),
        "{s:#}"
    );
    assert_eq!(s["command"], format!("weft logs {flaky} --step call"));
    worker.stop().await;

    // An approval older than its threshold (1 s here) is stalled.
    let (code, d) = wait_until("the approval to go stale", PATIENCE, || {
        let (code, d) = cli(&env, &["doctor", &gate]);
        async move { (d["stalled"] == true).then_some((code, d)) }
    })
    .await;
    assert_eq!(
        (code, &d["cause"]),
        (1, &json!("waiting_approval")),
        "{d:#}"
    );
    assert_eq!(
        only_step(&d, "sign")["command"],
        format!("weft approve {gate} sign")
    );
    wait_gauge(&env, "waiting_approval", 1.0).await;
    // Healthy waits are shown but never counted as stalled.
    let (code, all) = cli(&env, &["doctor"]);
    assert_eq!((code, &all["stalled"]), (1, &json!(3)), "{all:#}");
}

/// `database_slow` is a system finding: with its threshold at 0 ms every
/// claim and commit this server measures is slow, so one run worked is
/// enough for `weft doctor` and `weft status` to say so.
pub async fn doctor_database_slow(db_url: String) {
    let mut flags = FLAGS.to_vec();
    flags.extend(["--database-slow-after", "0ms"]);
    let env = Env::start_with(&db_url, &flags).await;
    // Nothing measured yet: no finding.
    let (code, all) = cli(&env, &["doctor"]);
    assert_eq!((code, &all["findings"]), (0, &json!([])), "{all:#}");
    env.register("name: dr_quick\nsteps:\n  - {name: one, handler: dr.quick}\n")
        .await;
    let worker = SdkWorker::spawn(
        env.sdk_worker("dr-quick")
            .handler("dr.quick", |_ctx: TaskContext| async move { Ok(json!({})) })
            .build(),
    );
    let run = env.start_run("dr_quick", json!({})).await;
    env.wait_finished(&run).await;
    worker.stop().await;
    // Its one attempt is the queue's throughput of the last minute.
    let (_, queues) = cli(&env, &["queues", "--queue", "default"]);
    assert_eq!(
        queues["queues"][0]["throughput_last_minute"], 1,
        "{queues:#}"
    );

    let (code, all) = cli(&env, &["doctor"]);
    assert_eq!((code, &all["stalled"]), (1, &json!(0)), "{all:#}");
    let finding = &all["findings"][0];
    assert_eq!(finding["cause"], "database_slow", "{all:#}");
    assert_eq!(finding["command"], "weft status");
    let evidence = finding["evidence"].as_str().unwrap();
    assert!(
        evidence.contains("claim p99 ")
            && evidence.contains("commit p99 ")
            && evidence.ends_with("; threshold 0 ms"),
        "{evidence}"
    );
    let (code, text) = cli_text(&env, &["doctor"]);
    assert_eq!(code, 1);
    assert!(
        text.contains("STALLED: database_slow: claim p99 "),
        "{text}"
    );
    let (_, text) = cli_text(&env, &["status"]);
    assert!(
        text.lines()
            .any(|l| l.starts_with("database_slow  claim p99 ")),
        "{text}"
    );
    // A run's own diagnosis never names it.
    let (code, d) = cli(&env, &["doctor", &run]);
    assert_eq!((code, &d["cause"]), (0, &Value::Null), "{d:#}");
}

/// `running_long` from the step's own history: with the threshold at an
/// hour, an attempt is long once it runs past the p99 of the step's last
/// completed attempts (20 quick ones here).
pub async fn doctor_running_long_past_p99(db_url: String) {
    let mut flags = FLAGS.to_vec();
    let long = flags
        .iter()
        .position(|f| *f == "--running-long-after")
        .expect("the flag is set")
        + 1;
    flags[long] = "1h";
    let env = Env::start_with(&db_url, &flags).await;
    env.register("name: dr_history\nsteps:\n  - {name: fetch, handler: dr.fetch}\n")
        .await;
    let worker = SdkWorker::spawn(
        env.sdk_worker("dr-history")
            .concurrency(4)
            .handler("dr.fetch", |ctx: TaskContext| async move {
                if ctx.input()["input"]["hang"] == true {
                    tokio::time::sleep(std::time::Duration::from_secs(120)).await;
                }
                Ok(json!({}))
            })
            .build(),
    );
    let mut quick = Vec::new();
    for _ in 0..weft_core::diagnosis::P99_MIN_SAMPLES {
        quick.push(env.start_run("dr_history", json!({})).await);
    }
    for run in &quick {
        env.wait_finished(run).await;
    }
    let hung = env.start_run("dr_history", json!({"hang": true})).await;
    let (code, d) = wait_cause(&env, &hung, "running_long").await;
    assert_eq!(code, 1, "{d:#}");
    let s = only_step(&d, "fetch");
    let evidence = s["evidence"].as_str().unwrap();
    assert!(
        evidence.starts_with("attempt 1 running on worker dr-history for")
            && evidence.contains("last heartbeat")
            && evidence.contains("; past the p99 of this step's recent attempts ("),
        "{s:#}"
    );
    assert_eq!(s["command"], format!("weft logs {hung} --step fetch"));
    wait_gauge(&env, "running_long", 1.0).await;
    let (code, all) = cli(&env, &["doctor", "--cause", "running_long"]);
    assert_eq!(code, 1);
    assert_eq!(
        all["causes"][0]["runs"][0]["run_id"],
        hung.as_str(),
        "{all:#}"
    );
    drop(worker);
}
