//! Approval timeouts and sleeps over real HTTP against a real `weft server`:
//! an approval's `timeout` decides by its `on_timeout` (the events name the
//! actor `timeout`, `weft run` shows it), and a sleep says until when in
//! the API and `weft run` and wakes on time after a kill -9 of the server.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Env, PATIENCE, WEFT, ms, step};

/// The stdout of `weft <args> --url <server>`, which must succeed.
async fn weft_ok(env: &Env, args: &[&str]) -> String {
    let output = tokio::process::Command::new(WEFT)
        .args(args)
        .args(["--url", &env.server.url])
        .env_remove("WEFT_TOKEN")
        .env("NO_COLOR", "1")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), output)
        .await
        .expect("the CLI finishes within 60s")
        .expect("run the weft binary");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "`weft {}` failed: {stdout}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

async fn history(env: &Env, run_id: &str) -> Vec<weft_api::EventRecord> {
    env.client
        .run_events(run_id, None)
        .await
        .expect("read the history")
        .events
}

/// The first event of `kind` about `step`, panicking with the history if none.
fn find<'a>(
    events: &'a [weft_api::EventRecord],
    kind: &str,
    step: Option<&str>,
) -> &'a weft_api::EventRecord {
    events
        .iter()
        .find(|e| e.kind == kind && (step.is_none() || e.step.as_deref() == step))
        .unwrap_or_else(|| panic!("no {kind} event of {step:?} in {events:#?}"))
}

const GATE_REJECT: &str = "\
name: gate-reject
steps:
  - {name: ok, kind: approval, timeout: 1s}
  - {name: after, handler: never.runs, depends_on: [ok]}
";

const GATE_APPROVE: &str = "\
name: gate-approve
steps:
  - {name: ok, kind: approval, timeout: 1s, on_timeout: approve}
  - {name: after, kind: sleep, duration: 10ms, depends_on: [ok]}
";

/// An approval nobody decides is decided by its `timeout`: `reject` (the
/// default) fails the step and the run with `approval_timeout`, `approve`
/// completes it with `{"approved": true, "by": "timeout"}`; either way the
/// events name the actor `timeout` and `weft run` shows it. A person's
/// decision before the timeout keeps its actor and comment.
pub async fn approval_timeouts(db_url: String) {
    let env = Env::start(&db_url).await;
    env.register(GATE_REJECT).await;
    env.register(GATE_APPROVE).await;

    let rejected = env.start_run("gate-reject", json!({})).await;
    let approved = env.start_run("gate-approve", json!({})).await;
    // Decided in time by a person: the timeout never fires.
    let decided = env.start_run("gate-approve", json!({})).await;
    env.client
        .clone()
        .with_actor(Some("bob".into()))
        .decide(&decided, "ok", false, Some("not this one".into()))
        .await
        .expect("reject in time");

    // The waiting approval says when its timeout decides.
    let waiting = env.client.get_run(&approved).await.unwrap();
    if step(&waiting, "ok").status == "waiting" {
        let due = step(&waiting, "ok").due_at.as_deref().expect("a due_at");
        assert!(ms(due) >= ms(&waiting.created_at) + 1000, "{due}");
    }

    let run = env.wait_finished(&rejected).await;
    assert_eq!(run.status, "failed", "{run:#?}");
    assert_eq!(run.reason.as_deref(), Some("approval_timeout"));
    let ok = step(&run, "ok");
    assert_eq!(ok.status, "failed");
    assert_eq!(ok.reason.as_deref(), Some("approval_timeout"));
    assert_eq!(ok.due_at, None);
    assert_eq!(step(&run, "after").status, "cancelled");
    let events = history(&env, &rejected).await;
    let failed = find(&events, "step.failed", Some("ok"));
    assert_eq!(failed.data["reason"], "approval_timeout");
    assert_eq!(failed.data["actor"], "timeout");
    let run_failed = find(&events, "run.failed", None);
    assert_eq!(run_failed.data["reason"], "approval_timeout");
    assert_eq!(run_failed.data["actor"], "timeout");
    let shown = weft_ok(&env, &["run", &rejected]).await;
    assert!(shown.contains("approval_timeout"), "{shown}");
    assert!(shown.contains("by timeout"), "{shown}");

    let run = env.wait_finished(&approved).await;
    assert_eq!(run.status, "completed", "{run:#?}");
    assert_eq!(
        step(&run, "ok").output,
        Some(json!({"approved": true, "by": "timeout"}))
    );
    let events = history(&env, &approved).await;
    let completed = find(&events, "step.completed", Some("ok"));
    assert_eq!(completed.data["actor"], "timeout");
    // The sleep after it was not decided by anyone.
    assert!(
        find(&events, "step.completed", Some("after"))
            .data
            .get("actor")
            .is_none()
    );
    let shown = weft_ok(&env, &["run", &approved]).await;
    assert!(shown.contains("by timeout"), "{shown}");

    // The person's early rejection stands, with its actor and comment, and
    // the timeout that would have approved it later changes nothing.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let run = env.client.get_run(&decided).await.unwrap();
    assert_eq!(run.status, "failed");
    assert_eq!(run.reason.as_deref(), Some("rejected"));
    let events = history(&env, &decided).await;
    let failed = find(&events, "step.failed", Some("ok"));
    assert_eq!(failed.data["actor"], "bob");
    assert_eq!(failed.data["comment"], "not this one");
    assert!(
        events
            .iter()
            .all(|e| e.data.get("actor") != Some(&Value::from("timeout"))),
        "{events:#?}"
    );
    let shown = weft_ok(&env, &["run", &decided]).await;
    assert!(
        shown.contains("by bob") && shown.contains("\"not this one\""),
        "{shown}"
    );
}

const NAP: &str = "\
name: nap
steps:
  - {name: nap, kind: sleep, duration: 4s}
  - {name: gate, kind: approval, timeout: 4s, on_timeout: approve}
";

/// A sleep says until when (API `due_at`, `weft run`, the dashboard), and
/// it and an approval's timeout fire on time after the server is killed
/// with kill -9 and started again.
pub async fn sleep_until_survives_restart(db_url: String) {
    let mut env = Env::start(&db_url).await;
    env.register(NAP).await;
    let run_id = env.start_run("nap", json!({})).await;
    let run = env.client.get_run(&run_id).await.unwrap();
    let nap = step(&run, "nap");
    assert_eq!(nap.status, "waiting");
    let until = nap.due_at.clone().expect("a sleeping step has a due_at");
    let wake = ms(&until);
    assert!(wake >= ms(&run.created_at) + 4000, "{until}");
    let shown = weft_ok(&env, &["run", &run_id]).await;
    assert!(shown.contains(&format!("waiting until {until}")), "{shown}");
    // So does the dashboard's run page (to the second, as it shows times).
    let page = env
        .http
        .get(format!("{}/runs/{run_id}", env.server.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let short = until.replace('T', " ");
    assert!(page.contains(&format!("until {}", &short[..19])), "{page}");

    env.server.kill();
    env.server.restart().await;
    let run = env
        .wait_run(&run_id, "the sleep to end", PATIENCE, |r| {
            r.status != "running"
        })
        .await;
    assert_eq!(run.status, "completed", "{run:#?}");
    // The approval's timeout was a timer row too: decided after the restart.
    assert_eq!(
        step(&run, "gate").output,
        Some(json!({"approved": true, "by": "timeout"}))
    );
    let events = history(&env, &run_id).await;
    let woke = find(&events, "step.completed", Some("nap"));
    assert!(
        ms(&woke.at) >= wake,
        "woke at {} before its time {until}",
        woke.at
    );
    let waiting = find(&events, "step.waiting", Some("nap"));
    assert_eq!(waiting.data["until_ms"], json!(wake));
}
