//! `weft doctor` on undos end to end through the exec worker: a `for_each`
//! step undone child by child is diagnosed by one child's undo (no worker
//! for its compensate handler, then backing off before a retry), named
//! `work[i]`, never as a `queued` step; a plain step's undo that fails the
//! same way twice is `poison_input`, like a forward attempt.

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

/// The diagnosis of step `name` in `weft doctor RUN`'s JSON.
fn step_of<'a>(d: &'a Value, name: &str) -> &'a Value {
    d["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["step"] == name))
        .unwrap_or_else(|| panic!("step {name} diagnosed: {d:#}"))
}

const EACH: &str = "\
name: each_undo_doctor
steps:
  - { name: work, handler: du.do, compensate: du.undo, for_each: 'input.items', compensate_retry: { max_attempts: 3, initial: 1h, max: 1h, jitter: false } }
  - { name: after, handler: du.do, depends_on: [work], retry: { max_attempts: 1 } }
";

const CHAIN: &str = "\
name: undo_poison
steps:
  - { name: reserve, handler: du.do, compensate: du.undo, compensate_retry: { max_attempts: 5, backoff: exponential, initial: 1s, max: 1h, jitter: false } }
  - { name: after, handler: du.do, depends_on: [reserve], retry: { max_attempts: 1 } }
";

/// The forward handler fails step `after`; the undo always fails alike.
fn scripts(env: &Env) -> (std::path::PathBuf, std::path::PathBuf) {
    let forward = env.script(
        "do.sh",
        "cat > /dev/null\nif [ \"$WEFT_STEP\" = after ]; then echo 'no truck' >&2; exit 1; fi\necho '{}'",
    );
    let undo = env.script(
        "undo.sh",
        "cat > /dev/null\necho 'refund refused: card closed' >&2\nexit 1",
    );
    (forward, undo)
}

/// A two-item `for_each` being undone while no worker serves its
/// compensate handler: `no_worker_for_handler`, naming the undo of
/// `work[0]`; once a worker serves it and the undo fails, that child's undo
/// backs off: `retrying`, not `queued`.
pub async fn doctor_on_child_undos(db_url: String) {
    let env = Env::start(&db_url).await;
    env.register(EACH).await;
    let (forward, undo) = scripts(&env);
    let only_forward = env.handlers_file("forward.toml", &[("du.do", &forward)]);
    let _worker = env.exec_worker(&only_forward, "exec-forward");
    let run_id = env
        .start_run("each_undo_doctor", json!({ "items": ["a", "b"] }))
        .await;

    let (code, d) = wait_until("the child undo diagnosed", PATIENCE, || {
        let (code, d) = cli(&env, &["doctor", &run_id]);
        async move { (d["cause"] == "no_worker_for_handler").then_some((code, d)) }
    })
    .await;
    assert_eq!(code, 1, "a stalled run exits 1: {d:#}");
    assert_eq!(d["status"], "compensating", "{d:#}");
    let work = step_of(&d, "work");
    let evidence = work["evidence"].as_str().unwrap();
    assert!(
        evidence.contains("undo of work[0] by compensate handler du.undo")
            && evidence.contains("none serves handler du.undo"),
        "{evidence}"
    );

    let undoer = env.handlers_file("undo.toml", &[("du.undo", &undo)]);
    let _undoer = env.exec_worker(&undoer, "exec-undo");
    let d = wait_until("both child undos backing off", PATIENCE, || {
        let (_, d) = cli(&env, &["doctor", &run_id]);
        async move { (d["cause"] == "retrying").then_some(d) }
    })
    .await;
    let evidence = step_of(&d, "work")["evidence"].as_str().unwrap().to_owned();
    assert!(
        evidence.contains("undo of work[")
            && evidence.contains("backing off")
            && evidence.contains("refund refused: card closed"),
        "{evidence}"
    );
    assert_eq!(d["stalled"], json!(false), "{d:#}");
}

/// A step's undo failing the same way twice is `poison_input` (stalled),
/// with the undo's error as evidence.
pub async fn doctor_on_a_poisoned_undo(db_url: String) {
    let env = Env::start(&db_url).await;
    env.register(CHAIN).await;
    let (forward, undo) = scripts(&env);
    let both = env.handlers_file("both.toml", &[("du.do", &forward), ("du.undo", &undo)]);
    let _worker = env.exec_worker(&both, "exec-1");
    let run_id = env.start_run("undo_poison", json!({})).await;
    let (code, d) = wait_until("the undo diagnosed poison_input", PATIENCE, || {
        let (code, d) = cli(&env, &["doctor", &run_id]);
        async move { (d["cause"] == "poison_input").then_some((code, d)) }
    })
    .await;
    assert_eq!(code, 1, "{d:#}");
    assert_eq!(d["status"], "compensating", "{d:#}");
    let evidence = step_of(&d, "reserve")["evidence"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        evidence.contains("undo by compensate handler du.undo")
            && evidence.contains("failed the same way")
            && evidence.contains("refund refused: card closed"),
        "{evidence}"
    );
}
