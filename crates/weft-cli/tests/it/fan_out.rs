//! Dynamic fan-out (`for_each`) end to end: a 1,000-item list run by the
//! SDK worker in process with `max_parallel: 10` (never more than 10
//! children out at once, judged from the attempt rows), the outputs handed
//! to the dependant in order, `weft run` collapsing and expanding the
//! children; a failing child, an empty list, a non-list and a list over
//! `max_items`.

use std::time::Duration;

use serde_json::{Value, json};
use weft_worker::{HandlerError, TaskContext};

use crate::harness::{Env, SdkWorker, WEFT, ms, step};

const EACH: &str = "name: each
steps:
  - {name: list, handler: list}
  - {name: work, handler: work, depends_on: [list], for_each: 'steps.list.items', max_items: 1000, max_parallel: 10}
  - {name: after, handler: after, depends_on: [work]}
";

const FROM_INPUT: &str = "name: from_input
steps:
  - {name: work, handler: work, for_each: 'input.items', max_items: 3}
";

/// The SDK worker: `list` yields `input.n` items, `work` doubles its item
/// after a short pause (and fails for good on `input.fail_at`), `after`
/// returns what it received from `work`.
fn worker(env: &Env) -> SdkWorker {
    SdkWorker::spawn(
        env.sdk_worker("sdk-fan")
            .concurrency(32)
            .handler("list", |ctx: TaskContext| async move {
                let n = ctx.task.input["input"]["n"].as_i64().unwrap_or(0);
                Ok(json!({ "items": (0..n).collect::<Vec<_>>() }))
            })
            .handler("work", |ctx: TaskContext| async move {
                let item = ctx.task.input["item"].clone();
                if item == ctx.task.input["input"]["fail_at"] {
                    return Err(HandlerError::permanent(format!("item {item} is bad")));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
                Ok(json!({ "doubled": item.as_i64().map(|i| i * 2), "index": ctx.task.input["index"] }))
            })
            .handler("after", |ctx: TaskContext| async move {
                Ok(ctx.task.input["steps"]["work"].clone())
            })
            .build(),
    )
}

async fn weft(env: &Env, args: &[&str]) -> String {
    let output = tokio::process::Command::new(WEFT)
        .args(args)
        .args(["--url", &env.server.url])
        .env_remove("WEFT_TOKEN")
        .env("NO_COLOR", "1")
        .kill_on_drop(true)
        .output()
        .await
        .expect("run the weft binary");
    assert!(output.status.success(), "weft {args:?}: {output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub async fn for_each_thousand_items_ten_at_a_time(db_url: String) {
    let env = Env::start(&db_url).await;
    env.register(EACH).await;
    let sdk = worker(&env);
    let run_id = env.start_run("each", json!({"n": 1000})).await;
    let run = env
        .wait_run(
            &run_id,
            "a terminal status",
            Duration::from_secs(240),
            |run| crate::harness::is_terminal(&run.status),
        )
        .await;
    sdk.stop().await;
    assert_eq!(run.status, "completed", "{:?}", run.error);

    // The dependant got the 1,000 outputs, in index order.
    let expected: Vec<Value> = (0..1000)
        .map(|i| json!({"doubled": i * 2, "index": i}))
        .collect();
    assert_eq!(
        step(&run, "after").output,
        Some(Value::Array(expected.clone()))
    );
    let work = step(&run, "work");
    assert_eq!(work.output, Some(Value::Array(expected)));
    let counts = work.children.expect("a for_each step has its counts");
    assert_eq!(
        (
            counts.total,
            counts.completed,
            counts.in_flight,
            counts.pending,
            counts.failed
        ),
        (1000, 1000, 0, 0, 0)
    );

    // One attempt per child, each with its index; never more than 10 out
    // at once, judged from the rows' claim and end times.
    assert_eq!(work.attempts.len(), 1000);
    let mut indexes: Vec<i64> = work
        .attempts
        .iter()
        .map(|a| a.index.expect("index"))
        .collect();
    indexes.sort_unstable();
    assert_eq!(indexes, (0..1000).collect::<Vec<_>>());
    let mut edges: Vec<(i64, i32)> = Vec::new();
    for a in &work.attempts {
        assert_eq!(a.status, "completed");
        let claimed = ms(&a.claimed_at);
        let finished = ms(a.finished_at.as_deref().expect("finished"));
        // [claimed, finished): an end and a claim in the same ms do not overlap.
        edges.push((claimed, 1));
        edges.push((finished, -1));
    }
    edges.sort_unstable();
    let (mut out, mut most) = (0, 0);
    for (_, delta) in edges {
        out += delta;
        most = most.max(out);
    }
    assert!(
        most <= 10,
        "{most} children ran at once, over max_parallel 10"
    );
    assert!(most >= 2, "the children ran one at a time ({most})");

    // `weft run` shows one row of counts; `--children` each child.
    let collapsed = weft(&env, &["run", &run_id]).await;
    assert!(collapsed.contains("work[1000]"), "{collapsed}");
    assert!(collapsed.contains("1000 completed"), "{collapsed}");
    assert!(!collapsed.contains("work[999]"), "{collapsed}");
    let expanded = weft(&env, &["run", &run_id, "--children"]).await;
    assert!(expanded.contains("work[999]"), "{expanded}");
    assert!(expanded.contains("work[0]"), "{expanded}");
}

pub async fn for_each_failures_and_edge_lists(db_url: String) {
    let env = Env::start(&db_url).await;
    env.register(EACH).await;
    env.register(FROM_INPUT).await;
    let sdk = worker(&env);

    // The first permanent child failure fails the step and the run.
    let failing = env.start_run("each", json!({"n": 30, "fail_at": 12})).await;
    let run = env.wait_finished(&failing).await;
    assert_eq!(
        (run.status.as_str(), run.reason.as_deref()),
        ("failed", Some("handler_error"))
    );
    let error = run.error.clone().unwrap_or_default();
    assert!(error.starts_with("work[12]: item 12 is bad"), "{error}");
    let work = step(&run, "work");
    assert_eq!(work.status, "failed");
    let counts = work.children.expect("counts");
    assert_eq!(counts.failed, 1);
    assert!(counts.completed < 30);
    assert_eq!(step(&run, "after").status, "cancelled");
    let failed: Vec<Option<i64>> = work
        .attempts
        .iter()
        .filter(|a| a.status == "failed")
        .map(|a| a.index)
        .collect();
    assert_eq!(failed, [Some(12)]);

    // An empty list completes the step with `[]`.
    let empty = env.start_run("from_input", json!({"items": []})).await;
    let run = env.wait_finished(&empty).await;
    assert_eq!(run.status, "completed");
    assert_eq!(step(&run, "work").output, Some(json!([])));
    assert_eq!(run.output, Some(json!({"work": []})));

    // Not a list, and over `max_items`: the step fails with `condition_error`.
    for (items, message) in [
        (json!("abc"), "must yield a list, got a string"),
        (json!([1, 2, 3, 4]), "yielded 4 items, over `max_items` 3"),
    ] {
        let id = env.start_run("from_input", json!({ "items": items })).await;
        let run = env.wait_finished(&id).await;
        assert_eq!(
            (run.status.as_str(), run.reason.as_deref()),
            ("failed", Some("condition_error"))
        );
        let error = run.error.clone().unwrap_or_default();
        assert!(error.contains(message), "{error}");
        assert!(error.contains("input.items"), "{error}");
        assert!(step(&run, "work").attempts.is_empty());
    }
    sdk.stop().await;
}
