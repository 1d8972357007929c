//! DAG ordering: a fan-out / fan-in workflow (a -> b, c -> d) run by the exec
//! worker and by the SDK worker; the join step starts only after both
//! branches finished and receives both of their outputs.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::{Value, json};
use weft_api::RunDetail;
use weft_worker::TaskContext;

use crate::harness::{Env, SdkWorker, ms, step};

const DIAMOND: &str = "\
name: diamond
steps:
  - name: a
    handler: diamond.step
  - name: b
    handler: diamond.step
    depends_on: [a]
  - name: c
    handler: diamond.step
    depends_on: [a]
  - name: d
    handler: diamond.step
    depends_on: [b, c]
";

/// Checks a finished diamond run, and `order` (the `start X` / `end X` lines
/// the handlers wrote) against the DAG.
fn assert_diamond(run: &RunDetail, input: &Value, order: &[String]) {
    assert_eq!(run.status, "completed", "run: {run:#?}");
    let names: Vec<&str> = run.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "c", "d"], "steps come in manifest order");
    for s in &run.steps {
        assert_eq!(s.status, "completed", "step {}", s.name);
        assert_eq!(s.attempts.len(), 1, "step {} ran once", s.name);
        assert_eq!(s.attempts[0].status, "completed");
        assert!(s.attempts[0].finished_at.is_some());
        // Timing buckets: worker-reported handler time fits in the engine's total.
        let timing = s.attempts[0]
            .timing
            .as_ref()
            .unwrap_or_else(|| panic!("step {} has attempt timing", s.name));
        let handler_ms = timing
            .handler_ms
            .unwrap_or_else(|| panic!("step {}: the worker reported handler_ms", s.name));
        assert!(handler_ms <= timing.total_ms, "step {}: {timing:?}", s.name);
        if s.name == "b" || s.name == "c" {
            assert!(
                handler_ms >= 250,
                "step {} sleeps 300 ms: {timing:?}",
                s.name
            );
        }
    }
    assert!(
        run.timing.end_to_end_ms.is_some_and(|ms| ms >= 300),
        "run timing: {:?}",
        run.timing
    );
    assert!(
        run.timing.schedule_to_start_ms.is_some(),
        "run timing: {:?}",
        run.timing
    );

    // Timestamps: each attempt is claimed only after its dependencies finished.
    let finished = |name: &str| {
        ms(step(run, name).attempts[0]
            .finished_at
            .as_deref()
            .expect("finished_at"))
    };
    let claimed = |name: &str| ms(&step(run, name).attempts[0].claimed_at);
    for branch in ["b", "c"] {
        let (claimed_at, a_finished) = (claimed(branch), finished("a"));
        assert!(
            claimed_at >= a_finished,
            "{branch} claimed at {claimed_at}, before a finished at {a_finished}"
        );
    }
    for attempt in &step(run, "d").attempts {
        let claimed_d = ms(&attempt.claimed_at);
        assert!(
            claimed_d >= finished("b"),
            "d claimed at {claimed_d} before b finished at {}",
            finished("b")
        );
        assert!(
            claimed_d >= finished("c"),
            "d claimed at {claimed_d} before c finished at {}",
            finished("c")
        );
    }

    // Inputs: the join step got the run input and both branches' outputs.
    let d_output = step(run, "d").output.as_ref().expect("d has an output");
    assert_eq!(d_output["step"], "d");
    let d_input = &d_output["input"];
    assert_eq!(&d_input["input"], input);
    let deps: Vec<&String> = d_input["steps"]
        .as_object()
        .expect("steps is an object")
        .keys()
        .collect();
    assert_eq!(
        deps,
        ["b", "c"],
        "d receives exactly its dependencies' outputs"
    );
    assert_eq!(d_input["steps"]["b"]["step"], "b");
    assert_eq!(d_input["steps"]["c"]["step"], "c");
    assert_eq!(
        d_input["steps"]["b"]["input"]["steps"]["a"]["step"], "a",
        "b received a's output"
    );
    let a_input = &step(run, "a").output.as_ref().expect("a has an output")["input"];
    assert_eq!(
        a_input["steps"],
        json!({}),
        "a root step has no upstream outputs"
    );
    assert_eq!(&a_input["input"], input);

    // The handlers' own view of the order.
    let at = |line: &str| {
        order
            .iter()
            .position(|l| l == line)
            .unwrap_or_else(|| panic!("`{line}` missing from {order:?}"))
    };
    assert_eq!(
        order.len(),
        8,
        "each step started and ended once: {order:?}"
    );
    for branch in ["b", "c"] {
        assert!(
            at(&format!("start {branch}")) > at("end a"),
            "order: {order:?}"
        );
        assert!(
            at("start d") > at(&format!("end {branch}")),
            "order: {order:?}"
        );
    }
}

pub async fn dag_order_exec_worker(db_url: String) {
    let env = Env::start(&db_url).await;
    env.register(DIAMOND).await;
    let order_file = env.path("order.txt");
    // b and c take a while, so a premature d would show.
    let script = env.script(
        "step.sh",
        &format!(
            r#"input=$(cat)
order={order}
echo "start $WEFT_STEP" >> "$order"
echo "running $WEFT_STEP attempt $WEFT_ATTEMPT" >&2
case "$WEFT_STEP" in b|c) sleep 0.3 ;; esac
echo "end $WEFT_STEP" >> "$order"
printf '{{"step": "%s", "attempt": %s, "input": %s}}\n' "$WEFT_STEP" "$WEFT_ATTEMPT" "$input""#,
            order = order_file.display()
        ),
    );
    let handlers = env.handlers_file("handlers.toml", &[("diamond.step", &script)]);
    let _worker = env.exec_worker(&handlers, "exec-1");

    let input = json!({"order": 42, "note": "fan out, fan in"});
    let run_id = env.start_run("diamond", input.clone()).await;
    let run = env.wait_finished(&run_id).await;
    let order: Vec<String> = std::fs::read_to_string(&order_file)
        .expect("handlers wrote the order file")
        .lines()
        .map(str::to_owned)
        .collect();
    assert_diamond(&run, &input, &order);
    for s in &run.steps {
        assert_eq!(s.attempts[0].worker_id, "exec-1");
    }
    // Lookup by trace_id gives the same run.
    let by_trace = env
        .client
        .get_run(&run.trace_id)
        .await
        .expect("get the run by trace_id");
    assert_eq!(by_trace.run_id, run_id);
    assert_eq!(run.trace_id.len(), 32);
}

pub async fn dag_order_sdk_worker(db_url: String) {
    let env = Env::start(&db_url).await;
    env.register(DIAMOND).await;
    let order = Arc::new(Mutex::new(Vec::<String>::new()));
    let log = order.clone();
    let handler = move |ctx: TaskContext| {
        let log = log.clone();
        async move {
            let name = ctx.task.step.clone();
            log.lock().unwrap().push(format!("start {name}"));
            if name == "b" || name == "c" {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            log.lock().unwrap().push(format!("end {name}"));
            Ok(json!({"step": name, "attempt": ctx.task.attempt, "input": ctx.input().clone()}))
        }
    };
    let worker = SdkWorker::spawn(
        env.sdk_worker("sdk-1")
            .handler("diamond.step", handler)
            .concurrency(4)
            .build(),
    );

    let input = json!({"order": 7});
    let run_id = env.start_run("diamond", input.clone()).await;
    let run = env.wait_finished(&run_id).await;
    worker.stop().await;
    let order = order.lock().unwrap().clone();
    assert_diamond(&run, &input, &order);
    for s in &run.steps {
        assert_eq!(s.attempts[0].worker_id, "sdk-1");
    }
}
