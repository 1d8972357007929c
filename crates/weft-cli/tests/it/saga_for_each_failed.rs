//! Saga compensation of a `for_each` step that did not complete, end to end
//! through the exec worker: a child failing for good, or a cancel under
//! `compensate_on: [cancel]`, stops the step, and each child that had
//! completed is undone exactly once by the `compensate` handler (checked in
//! the handlers' side-effect file), children that did not complete never;
//! a failed child undo is retried alone by `weft retry`.

use std::{fs, path::Path, time::Duration};

use serde_json::json;

use crate::harness::{Env, PATIENCE, WEFT, step, wait_until};

/// The side-effect file's lines, sorted.
fn sorted_lines(path: &Path) -> Vec<String> {
    let mut lines: Vec<String> = fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

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

const FAILING_EACH: &str = "\
name: failing_each
steps:
  - { name: work, handler: fe.do, compensate: fe.undo, for_each: 'input.items', max_parallel: 1, retry: { max_attempts: 1 }, compensate_retry: { max_attempts: 1 } }
  - { name: after, handler: fe.do, depends_on: [work] }
";

const CANCELLED_EACH: &str = "\
name: cancelled_each
compensate_on: [failure, cancel]
steps:
  - { name: work, handler: fe.do, compensate: fe.undo, for_each: 'input.items', max_parallel: 1 }
";

/// The forward handler: child `index` appends `do <index>`; the child whose
/// index is in the file `fail-do` fails, the one in `block-do` waits for
/// the file `go` (up to 60 s). The undo appends `undo <index>`, or fails
/// while the file `fail-undo-<index>` exists.
fn handlers(env: &Env) -> std::path::PathBuf {
    let dir = env.dir.path().display().to_string();
    let forward = env.script(
        "do.sh",
        &format!(
            r#"input=$(cat)
index=$(printf '%s' "$input" | grep -o '"index":[0-9]*' | cut -d: -f2)
if [ "$index" = "$(cat "{dir}/fail-do" 2>/dev/null)" ]; then echo "child $index broke" >&2; exit 1; fi
if [ "$index" = "$(cat "{dir}/block-do" 2>/dev/null)" ]; then
  echo "running $index" >> "{dir}/running.log"
  i=0; while [ ! -e "{dir}/go" ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
fi
echo "do $index" >> "{dir}/effects.log"
printf '{{"done": %s}}\n' "$index""#
        ),
    );
    let undo = env.script(
        "undo.sh",
        &format!(
            r#"input=$(cat)
index=$(printf '%s' "$input" | grep -o '"index":[0-9]*' | cut -d: -f2)
if [ -e "{dir}/fail-undo-$index" ]; then echo "no refund for $index" >&2; exit 1; fi
echo "undo $index" >> "{dir}/effects.log"
echo '{{}}'"#
        ),
    );
    env.handlers_file("handlers.toml", &[("fe.do", &forward), ("fe.undo", &undo)])
}

/// A 5-item `for_each` (one child at a time) whose child 3 fails for good:
/// the step fails, children 0–2 (completed) are undone once each, 3 and 4
/// never; the undo of child 1 failing makes the run `compensation_failed`
/// with the step back to `failed` (its forward reason kept, its undo
/// `failed`); `weft retry` then undoes child 1 alone and the run ends
/// `compensated`, keeping the reason `handler_error`.
pub async fn failed_for_each_undoes_its_completed_children(db_url: String) {
    let env = Env::start(&db_url).await;
    env.register(FAILING_EACH).await;
    let handlers = handlers(&env);
    fs::write(env.path("fail-do"), "3").unwrap();
    fs::write(env.path("fail-undo-1"), "").unwrap();
    let _worker = env.exec_worker(&handlers, "exec-1");
    let run_id = env
        .start_run(
            "failing_each",
            json!({ "items": ["a", "b", "c", "d", "e"] }),
        )
        .await;
    let run = env.wait_finished(&run_id).await;
    assert_eq!(run.status, "failed", "{run:#?}");
    assert_eq!(run.reason.as_deref(), Some("compensation_failed"));
    let work = step(&run, "work");
    assert_eq!(work.status, "failed", "{work:#?}");
    assert_eq!(work.reason.as_deref(), Some("handler_error"), "{work:#?}");
    assert_eq!(work.undo.as_deref(), Some("failed"), "{work:#?}");
    assert_eq!(
        sorted_lines(&env.path("effects.log")),
        ["do 0", "do 1", "do 2", "undo 0", "undo 2"],
        "the completed children 0 and 2 undone once each, 1's undo failed"
    );
    let events = env.client.run_events(&run_id, None).await.expect("events");
    let kinds: Vec<&str> = events.events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "child.compensated").count(),
        2,
        "{kinds:?}"
    );
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == "child.compensation_failed")
            .count(),
        1,
        "{kinds:?}"
    );
    assert!(kinds.contains(&"step.compensating"), "{kinds:?}");
    assert!(kinds.contains(&"step.compensation_failed"), "{kinds:?}");

    // `weft run` shows the undo chain with the failed step in it.
    let out = weft(&env, &["run", &run_id]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("undo"), "{text}");

    fs::remove_file(env.path("fail-undo-1")).unwrap();
    let out = weft(&env, &["retry", &run_id]).await;
    assert!(out.status.success(), "{out:?}");
    let run = env
        .wait_run(&run_id, "compensated", PATIENCE, |r| {
            r.status == "compensated"
        })
        .await;
    assert_eq!(run.reason.as_deref(), Some("handler_error"), "{run:#?}");
    let work = step(&run, "work");
    assert_eq!(work.status, "compensated", "{work:#?}");
    assert_eq!(work.undo.as_deref(), Some("completed"), "{work:#?}");
    assert_eq!(
        sorted_lines(&env.path("effects.log")),
        ["do 0", "do 1", "do 2", "undo 0", "undo 1", "undo 2"],
        "each completed child undone exactly once; 3 and 4 never"
    );
    let mut undone: Vec<i64> = work
        .attempts
        .iter()
        .filter(|a| a.kind == "compensate" && a.status == "completed")
        .filter_map(|a| a.index)
        .collect();
    undone.sort();
    assert_eq!(undone, [0, 1, 2], "{work:#?}");
    assert_eq!(step(&run, "after").status, "cancelled");
}

/// A `for_each` cancelled while child 2 runs, under
/// `compensate_on: [cancel]`: child 2's attempt is cancelled (its handler
/// asked to stop) and never undone; children 0 and 1 are undone once each;
/// the run ends `compensated` with reason `cancelled`.
pub async fn cancelled_for_each_undoes_its_completed_children(db_url: String) {
    let env = Env::start(&db_url).await;
    env.register(CANCELLED_EACH).await;
    let handlers = handlers(&env);
    fs::write(env.path("block-do"), "2").unwrap();
    let _worker = env.exec_worker(&handlers, "exec-1");
    let run_id = env
        .start_run("cancelled_each", json!({ "items": [10, 11, 12, 13] }))
        .await;
    wait_until("child 2 running", PATIENCE, || {
        let running = fs::read_to_string(env.path("running.log")).unwrap_or_default();
        async move { running.contains("running 2").then_some(()) }
    })
    .await;
    let out = weft(&env, &["cancel", &run_id]).await;
    assert!(out.status.success(), "{out:?}");
    let run = env.wait_finished(&run_id).await;
    // Let a handler that ignored its cancel finish: its result is late.
    fs::write(env.path("go"), "").unwrap();
    assert_eq!(run.status, "compensated", "{run:#?}");
    assert_eq!(run.reason.as_deref(), Some("cancelled"));
    let work = step(&run, "work");
    assert_eq!(work.status, "compensated", "{work:#?}");
    assert_eq!(work.undo.as_deref(), Some("completed"), "{work:#?}");
    let child_2: Vec<_> = work
        .attempts
        .iter()
        .filter(|a| a.kind == "forward" && a.index == Some(2))
        .collect();
    assert_eq!(child_2.len(), 1, "{work:#?}");
    assert_eq!(child_2[0].status, "cancelled", "{work:#?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let effects = sorted_lines(&env.path("effects.log"));
    assert!(
        effects
            .iter()
            .filter(|l| l.starts_with("undo"))
            .eq(["undo 0", "undo 1"].iter()),
        "children 0 and 1 undone once each, 2 never: {effects:?}"
    );
}
