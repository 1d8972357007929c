//! Saga compensation of a `for_each` step end to end through the exec
//! worker: each completed child undone once by the `compensate` handler,
//! with its own `item`, `index`, output and idempotency key (checked in the
//! handlers' side-effect file), the run `compensated`.

use std::{fs, path::Path};

use serde_json::json;

use crate::harness::{Env, step};

/// The side-effect file's lines, sorted (children run in parallel).
fn sorted_lines(path: &Path) -> Vec<String> {
    let mut lines: Vec<String> = fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

const EACH_SAGA: &str = "\
name: each_saga
steps:
  - { name: work, handler: each.do, compensate: each.undo, for_each: 'input.items', max_parallel: 2 }
  - { name: ship, handler: each.ship, depends_on: [work], retry: { max_attempts: 1 } }
";

/// A 5-item `for_each` with a `compensate` handler, and a later step that
/// fails: each of the 5 completed children is undone exactly once, with
/// its item, index, output and the compensate phase's idempotency key with
/// its index; the step and the run end `compensated`.
pub async fn for_each_children_compensated_once_each(db_url: String) {
    let env = Env::start(&db_url).await;
    env.register(EACH_SAGA).await;
    let dir = env.dir.path().display().to_string();
    // A child's index and item, read from its compact JSON input.
    let forward = env.script(
        "do.sh",
        &format!(
            r#"input=$(cat)
index=$(printf '%s' "$input" | grep -o '"index":[0-9]*' | cut -d: -f2)
echo "do $index" >> "{dir}/effects.log"
printf '{{"done": %s}}\n' "$index""#
        ),
    );
    let undo = env.script(
        "undo.sh",
        &format!(
            r#"input=$(cat)
index=$(printf '%s' "$input" | grep -o '"index":[0-9]*' | cut -d: -f2)
echo "undo $index $WEFT_IDEMPOTENCY_KEY" >> "{dir}/effects.log"
printf '%s' "$input" > "{dir}/undo-$index.json"
echo '{{}}'"#
        ),
    );
    let ship = env.script("ship.sh", "echo 'no truck' >&2\nexit 1");
    let handlers = env.handlers_file(
        "handlers.toml",
        &[
            ("each.do", &forward),
            ("each.undo", &undo),
            ("each.ship", &ship),
        ],
    );
    let _worker = env.exec_worker(&handlers, "exec-1");
    let items = json!(["a", "b", "c", "d", "e"]);
    let run_id = env.start_run("each_saga", json!({ "items": items })).await;
    let run = env.wait_finished(&run_id).await;
    assert_eq!(run.status, "compensated", "{run:#?}");
    assert_eq!(run.reason.as_deref(), Some("handler_error"));

    let mut expected: Vec<String> = (0..5).map(|i| format!("do {i}")).collect();
    expected.extend((0..5).map(|i| {
        format!(
            "undo {i} {}",
            weft_core::idempotency::key(
                run_id.parse().unwrap(),
                "work",
                weft_core::idempotency::Phase::Compensate,
                Some(i)
            )
        )
    }));
    expected.sort();
    assert_eq!(
        sorted_lines(&env.path("effects.log")),
        expected,
        "each child done and undone exactly once"
    );
    for i in 0..5usize {
        let input: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(env.path(&format!("undo-{i}.json"))).unwrap())
                .unwrap();
        assert_eq!(input["step"], "work");
        assert_eq!(input["index"], json!(i));
        assert_eq!(input["item"], items[i]);
        assert_eq!(input["output"], json!({ "done": i }));
        assert_eq!(input["error"]["reason"], "handler_error");
    }
    let work = step(&run, "work");
    assert_eq!(work.status, "compensated", "{work:#?}");
    assert_eq!(work.undo.as_deref(), Some("completed"));
    let undos: Vec<_> = work
        .attempts
        .iter()
        .filter(|a| a.kind == "compensate")
        .collect();
    assert_eq!(undos.len(), 5, "{work:#?}");
    assert!(undos.iter().all(|a| a.status == "completed"));
    let mut indices: Vec<i64> = undos.iter().filter_map(|a| a.index).collect();
    indices.sort();
    assert_eq!(indices, [0, 1, 2, 3, 4]);
    let events = env.client.run_events(&run_id, None).await.expect("events");
    let compensated = events
        .events
        .iter()
        .filter(|e| e.kind == "child.compensated")
        .count();
    assert_eq!(compensated, 5);
}
