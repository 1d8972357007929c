//! Bulk cancel and retry of a filtered list of runs (`POST /v1/runs/cancel`,
//! `POST /v1/runs/retry`): only the runs the filter matches and the action
//! applies to, only when their number is the one the caller confirmed, each
//! recorded with its actor as the single action would be; and the CLI's
//! form, `weft cancel|retry --workflow … [--yes]`.

use serde_json::json;
use weft_api::BulkActionRequest;

use crate::harness::{Env, WEFT};

/// Runs the CLI against this server with no terminal on standard input.
async fn weft(env: &Env, args: &[&str]) -> (i32, String, String) {
    let output = tokio::process::Command::new(WEFT)
        .args(args)
        .args(["--url", &env.server.url])
        .env_remove("WEFT_TOKEN")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(std::time::Duration::from_secs(60), output)
        .await
        .expect("the CLI finishes")
        .expect("run the weft binary");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

const HOLD: &str = "name: bulk_hold\nsteps:\n  - name: orphan\n    handler: bulk.nobody\n";
const OTHER: &str = "name: bulk_other\nsteps:\n  - name: orphan\n    handler: bulk.nobody\n";

fn filter(workflow: &str, expected: u32) -> BulkActionRequest {
    BulkActionRequest {
        workflow: Some(workflow.to_owned()),
        expected,
        ..BulkActionRequest::default()
    }
}

pub async fn bulk_cancel_and_retry(db_url: String) {
    let env = Env::start(&db_url).await;
    env.register(HOLD).await;
    env.register(OTHER).await;
    let mut held = Vec::new();
    for i in 0..3 {
        held.push(env.start_run("bulk_hold", json!({"n": i})).await);
        // Well apart: `until` below is a time between two of them (run
        // ids, which the time range walks, and `created_at` may differ by
        // a few milliseconds).
        tokio::time::sleep(std::time::Duration::from_millis(80)).await;
    }
    let other = env.start_run("bulk_other", json!({})).await;

    // A count that is not the number matching changes nothing.
    let stale = env
        .client
        .cancel_runs(&filter("bulk_hold", 2))
        .await
        .expect_err("a stale count is refused");
    assert_eq!(stale.status(), Some(409));
    assert_eq!(stale.code(), Some("count_changed"));
    assert!(stale.to_string().contains("3 runs match now"), "{stale}");
    for id in &held {
        assert_eq!(env.client.get_run(id).await.unwrap().status, "pending");
    }
    // A status the action does not apply to matches nothing.
    let none = env
        .client
        .cancel_runs(&BulkActionRequest {
            status: Some("completed".to_owned()),
            ..filter("bulk_hold", 0)
        })
        .await
        .expect("nothing to cancel");
    assert_eq!((none.matched, none.runs.len()), (0, 0));
    // A filter in the future matches nothing either; a bad one is a 400.
    let later = env
        .client
        .cancel_runs(&BulkActionRequest {
            since: Some("2999-01-01T00:00:00Z".to_owned()),
            ..filter("bulk_hold", 0)
        })
        .await
        .expect("nothing that late");
    assert_eq!(later.matched, 0);
    let bad = env
        .client
        .cancel_runs(&BulkActionRequest {
            status: Some("bogus".to_owned()),
            ..filter("bulk_hold", 0)
        })
        .await
        .expect_err("an unknown status");
    assert_eq!(bad.code(), Some("invalid_status"));
    let typo = env
        .client
        .cancel_runs(&filter("bulk_hlod", 0))
        .await
        .expect_err("an unknown workflow");
    assert_eq!(typo.code(), Some("workflow_not_found"));
    // A dry run counts and changes nothing.
    let dry = env
        .client
        .cancel_runs(&BulkActionRequest {
            dry_run: true,
            ..filter("bulk_hold", 0)
        })
        .await
        .expect("a dry run");
    assert_eq!((dry.matched, dry.runs.len()), (3, 3));
    assert!(dry.runs.iter().all(|r| r.status == "pending"));

    // The confirmed count: the three are cancelled, the other workflow's
    // run is not, and each carries the actor.
    let done = env
        .client
        .clone()
        .with_actor(Some("alice".to_owned()))
        .cancel_runs(&filter("bulk_hold", 3))
        .await
        .expect("bulk cancel");
    assert_eq!(done.matched, 3);
    assert!(done.refused.is_empty(), "{:?}", done.refused);
    let mut cancelled: Vec<String> = done.runs.iter().map(|r| r.run_id.clone()).collect();
    cancelled.sort();
    let mut expected = held.clone();
    expected.sort();
    assert_eq!(cancelled, expected);
    for id in &held {
        let events = env.client.run_events(id, None).await.unwrap().events;
        let event = events
            .iter()
            .find(|e| e.kind == "run.cancelled")
            .expect("run.cancelled");
        assert_eq!(event.data["actor"], "alice");
    }
    assert_eq!(env.client.get_run(&other).await.unwrap().status, "pending");

    // Retry of the cancelled ones, up to a time that excludes the newest.
    let newest = env.client.get_run(&held[2]).await.unwrap().created_at;
    let until = weft_store::rfc3339(crate::harness::ms(&newest) - 40);
    let retried = env
        .client
        .retry_runs(&BulkActionRequest {
            until: Some(until),
            status: Some("cancelled".to_owned()),
            ..filter("bulk_hold", 2)
        })
        .await
        .expect("bulk retry");
    assert_eq!(retried.matched, 2);
    assert_eq!(retried.runs.len(), 2);
    assert!(retried.runs.iter().all(|r| r.run_id != held[2]));
    assert_eq!(
        env.client.get_run(&held[2]).await.unwrap().status,
        "cancelled"
    );

    // The CLI: without --yes and no terminal to ask, it says how many and
    // does nothing; with --yes it acts.
    let (code, _, err) = weft(&env, &["retry", "--workflow", "bulk_hold"]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("1 run(s) match: pass --yes"), "{err}");
    let (code, out, err) = weft(&env, &["retry", "--workflow", "bulk_hold", "--yes"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("1 of 1 run(s) retried"), "{out}");
    assert_ne!(
        env.client.get_run(&held[2]).await.unwrap().status,
        "cancelled"
    );
    let (code, _, err) = weft(&env, &["cancel"]).await;
    assert_eq!(code, 2, "a run id or a filter is needed: {err}");
}

/// A bulk action narrowed by run metadata acts on exactly the runs `GET
/// /v1/runs?meta.k=v` lists; a field the filter does not know is refused,
/// never ignored (it would widen the action to every run of the workflow).
pub async fn bulk_by_metadata(db_url: String) {
    let env = Env::start(&db_url).await;
    env.register("name: bulk_meta\nsteps:\n  - name: orphan\n    handler: bulk.nobody\n")
        .await;
    let start = |customer: &str| weft_api::StartRunRequest {
        input: json!({}),
        metadata: [("customer".to_owned(), customer.to_owned())].into(),
        ..Default::default()
    };
    let mut ours = Vec::new();
    for _ in 0..2 {
        ours.push(
            env.client
                .start_run("bulk_meta", &start("42"))
                .await
                .unwrap()
                .run_id,
        );
    }
    let theirs = env
        .client
        .start_run("bulk_meta", &start("7"))
        .await
        .unwrap()
        .run_id;
    let by_customer = |expected: u32, dry_run: bool| BulkActionRequest {
        metadata: [("customer".to_owned(), "42".to_owned())].into(),
        dry_run,
        ..filter("bulk_meta", expected)
    };

    let dry = env
        .client
        .cancel_runs(&by_customer(0, true))
        .await
        .expect("a dry run");
    assert_eq!(dry.matched, 2, "{:?}", dry.runs);
    let done = env
        .client
        .cancel_runs(&by_customer(2, false))
        .await
        .expect("bulk cancel by metadata");
    let mut cancelled: Vec<String> = done.runs.iter().map(|r| r.run_id.clone()).collect();
    cancelled.sort();
    ours.sort();
    assert_eq!(cancelled, ours);
    assert_eq!(env.client.get_run(&theirs).await.unwrap().status, "pending");

    // A misspelt filter field, and an out-of-bounds metadata key: 400, and
    // nothing is done.
    for (body, code) in [
        (
            json!({"workflow": "bulk_meta", "meta": {"customer": "7"}, "expected": 1}),
            "invalid_json",
        ),
        (
            json!({"workflow": "bulk_meta", "metadata": {"bad key": "7"}, "expected": 1}),
            "invalid_metadata",
        ),
    ] {
        let answer = env
            .http
            .post(format!("{}/v1/runs/cancel", env.server.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status().as_u16(), 400, "{body}");
        let error: serde_json::Value = answer.json().await.unwrap();
        assert_eq!(error["error"]["code"], code, "{body}: {error}");
    }
    assert_eq!(env.client.get_run(&theirs).await.unwrap().status, "pending");

    // The CLI's form: `--meta KEY=VALUE` narrows it the same way.
    let (code, out, err) = weft(
        &env,
        &[
            "cancel",
            "--workflow",
            "bulk_meta",
            "--meta",
            "customer=7",
            "--yes",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("1 of 1 run(s) cancelled"), "{out}");
    assert_eq!(
        env.client.get_run(&theirs).await.unwrap().status,
        "cancelled"
    );
}
