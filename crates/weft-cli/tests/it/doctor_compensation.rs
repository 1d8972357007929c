//! `weft doctor` on a compensating run end to end: an undo that no live
//! worker serves is `no_worker_for_handler`, naming the step's `compensate`
//! handler and the command to inspect the queue's workers; once a worker
//! serves it, the undo runs and the run is `compensated`.

use std::process::Command;

use serde_json::{Value, json};

use crate::harness::{Env, PATIENCE, WEFT, wait_until};

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

const STUCK: &str = "\
name: stuck_undo
steps:
  - { name: reserve, handler: stuck.do, compensate: stuck.refund }
  - { name: ship, handler: stuck.do, depends_on: [reserve], retry: { max_attempts: 1 } }
";

/// A run compensating while no worker serves its `compensate` handler is
/// diagnosed `no_worker_for_handler` (stalled, exit 1) naming that handler;
/// a worker that serves it then finishes the compensation.
pub async fn doctor_sees_an_undo_no_worker_serves(db_url: String) {
    let env = Env::start(&db_url).await;
    env.register(STUCK).await;
    let forward = env.script(
        "do.sh",
        "cat > /dev/null\nif [ \"$WEFT_STEP\" = ship ]; then echo 'no truck' >&2; exit 1; fi\necho '{}'",
    );
    let refund = env.script("refund.sh", "cat > /dev/null\necho '{}'");
    let only_forward = env.handlers_file("forward.toml", &[("stuck.do", &forward)]);
    let _worker = env.exec_worker(&only_forward, "exec-forward");
    let run_id = env.start_run("stuck_undo", json!({})).await;

    let (code, d) = wait_until("the undo diagnosed", PATIENCE, || {
        let (code, d) = cli(&env, &["doctor", &run_id]);
        async move { (d["cause"] == "no_worker_for_handler").then_some((code, d)) }
    })
    .await;
    assert_eq!(code, 1, "a stalled run exits 1: {d:#}");
    assert_eq!(d["status"], "compensating", "{d:#}");
    assert_eq!(d["stalled"], json!(true), "{d:#}");
    let steps = d["steps"].as_array().expect("the steps diagnosed");
    let reserve = steps
        .iter()
        .find(|s| s["step"] == "reserve")
        .unwrap_or_else(|| panic!("the undo of reserve diagnosed: {d:#}"));
    let evidence = reserve["evidence"].as_str().unwrap();
    assert!(
        evidence.contains("compensate handler stuck.refund")
            && evidence.contains("none serves handler stuck.refund"),
        "{evidence}"
    );
    assert_eq!(reserve["command"], "weft workers --queue default");
    // Every stalled run: the compensating one is counted too.
    let (code, all) = cli(&env, &["doctor"]);
    assert_eq!(code, 1, "{all:#}");
    assert_eq!(all["stalled"], 1, "{all:#}");

    // A worker that serves the compensate handler finishes it.
    let both = env.handlers_file(
        "both.toml",
        &[("stuck.do", &forward), ("stuck.refund", &refund)],
    );
    let _refunder = env.exec_worker(&both, "exec-refund");
    let run = env.wait_finished(&run_id).await;
    assert_eq!(run.status, "compensated", "{run:#?}");
}
