//! The idempotency key handlers get (`WEFT_IDEMPOTENCY_KEY` in the exec
//! worker, `TaskContext::idempotency_key` in the SDK): the same for every
//! attempt of a step through its retries, and different for different
//! steps and runs.

use std::sync::{Arc, Mutex};

use serde_json::json;
use weft_core::idempotency::{Phase, key};
use weft_worker::{HandlerError, TaskContext};

use crate::harness::{Env, SdkWorker, step};

const KEYED: &str = "\
name: keyed
steps:
  - name: exec_a
    handler: keyed.exec
    retry: { max_attempts: 2, initial: 50ms, max: 50ms, jitter: false }
  - name: exec_b
    handler: keyed.exec
    retry: { max_attempts: 2, initial: 50ms, max: 50ms, jitter: false }
  - name: sdk_c
    handler: keyed.sdk
    retry: { max_attempts: 2, initial: 50ms, max: 50ms, jitter: false }
";

/// Each step fails its first attempt and succeeds on its second; every
/// attempt writes the key it saw to a side-effect file (exec) or a list
/// (SDK). Then a second run of the same workflow.
pub async fn idempotency_key_is_stable_per_step(db_url: String) {
    let env = Env::start(&db_url).await;
    env.register(KEYED).await;
    let seen_file = env.path("seen.txt");
    let script = env.script(
        "keyed.sh",
        &format!(
            r#"cat > /dev/null
echo "$WEFT_RUN_ID $WEFT_STEP $WEFT_ATTEMPT $WEFT_IDEMPOTENCY_KEY" >> {}
if [ "$WEFT_ATTEMPT" -lt 2 ]; then exit 1; fi
echo "{{\"key\": \"$WEFT_IDEMPOTENCY_KEY\"}}""#,
            seen_file.display()
        ),
    );
    let handlers = env.handlers_file("handlers.toml", &[("keyed.exec", &script)]);
    let _exec = env.exec_worker(&handlers, "exec-1");
    let sdk_seen: Arc<Mutex<Vec<(String, i64, String)>>> = Arc::default();
    let record = sdk_seen.clone();
    let sdk = SdkWorker::spawn(
        env.sdk_worker("sdk-1")
            .handler("keyed.sdk", move |ctx: TaskContext| {
                let record = record.clone();
                async move {
                    let attempt = ctx.task.attempt;
                    let key = ctx.idempotency_key().to_owned();
                    record
                        .lock()
                        .unwrap()
                        .push((ctx.task.run_id.clone(), attempt, key.clone()));
                    if attempt < 2 {
                        return Err(HandlerError::retryable("first attempt fails"));
                    }
                    Ok(json!({"key": key}))
                }
            })
            .build(),
    );

    let first = env.start_run("keyed", json!({})).await;
    let second = env.start_run("keyed", json!({})).await;
    let runs = [
        env.wait_finished(&first).await,
        env.wait_finished(&second).await,
    ];
    sdk.stop().await;

    let seen = std::fs::read_to_string(&seen_file).expect("the side-effect file");
    let sdk_seen = sdk_seen.lock().unwrap().clone();
    let mut all_keys = std::collections::HashSet::new();
    for run in &runs {
        assert_eq!(run.status, "completed", "{run:#?}");
        for name in ["exec_a", "exec_b", "sdk_c"] {
            let s = step(run, name);
            assert_eq!(s.attempts.len(), 2, "{name}: {:#?}", s.attempts);
            let expected = key(run.run_id.parse().unwrap(), name, Phase::Forward, None);
            // Both attempts saw the one key, which the output carries too.
            let keys: Vec<String> = if name == "sdk_c" {
                sdk_seen
                    .iter()
                    .filter(|(r, _, _)| r == &run.run_id)
                    .map(|(_, _, k)| k.clone())
                    .collect()
            } else {
                seen.lines()
                    .filter_map(|l| {
                        let parts: Vec<&str> = l.split(' ').collect();
                        (parts[0] == run.run_id && parts[1] == name).then(|| parts[3].to_owned())
                    })
                    .collect()
            };
            assert_eq!(
                keys,
                [expected.clone(), expected.clone()],
                "{name}:\n{seen}"
            );
            assert_eq!(s.output, Some(json!({"key": expected})));
            assert_eq!(expected.len(), 36, "a UUID: {expected}");
            all_keys.insert(expected);
        }
    }
    // Three steps times two runs: six different keys.
    assert_eq!(all_keys.len(), 6, "{all_keys:#?}");
}
