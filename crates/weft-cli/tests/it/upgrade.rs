//! End-to-end: a database written by a released `weft` (the fixtures in
//! `tests/fixtures/upgrade/`, made by `scripts/make-upgrade-fixture`) opens
//! with this build, which migrates it, answers every run, history and log
//! read as that release did, and carries its waiting runs on: the approval
//! gate, the run parked on a queue nobody served and the failed run's retry.

use std::{path::PathBuf, time::Duration};

use serde_json::Value;

use crate::harness::*;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/upgrade")
        .join(name)
}

fn answers(backend: &str) -> Value {
    let text = std::fs::read_to_string(fixture(&format!("{backend}-answers.json")))
        .expect("the recorded answers");
    serde_json::from_str(&text).expect("the recorded answers are JSON")
}

/// Fields that are computed at read time, not stored: they may differ.
const VOLATILE: &[&str] = &["trace_url"];

/// Checks that everything `old` says, `new` says too (new fields may be
/// added); returns the paths that differ.
fn contained(old: &Value, new: &Value, path: &str, diffs: &mut Vec<String>) {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            for (key, value) in o {
                if VOLATILE.contains(&key.as_str()) {
                    continue;
                }
                match n.get(key) {
                    Some(found) => contained(value, found, &format!("{path}.{key}"), diffs),
                    None => diffs.push(format!("{path}.{key}: missing")),
                }
            }
        }
        (Value::Array(o), Value::Array(n)) if o.len() == n.len() => {
            for (i, (a, b)) in o.iter().zip(n).enumerate() {
                contained(a, b, &format!("{path}[{i}]"), diffs);
            }
        }
        _ if old == new => {}
        _ => diffs.push(format!("{path}: was {old}, now {new}")),
    }
}

async fn get(env: &Env, path: &str) -> Value {
    let response = env
        .http
        .get(format!("{}{path}", env.server.url))
        .send()
        .await
        .expect("the server answers");
    assert_eq!(response.status().as_u16(), 200, "GET {path}");
    response.json().await.expect("a JSON answer")
}

async fn post(env: &Env, path: &str) {
    let response = env
        .http
        .post(format!("{}{path}", env.server.url))
        .json(&serde_json::json!({}))
        .send()
        .await
        .expect("the server answers");
    assert_eq!(response.status().as_u16(), 200, "POST {path}");
}

async fn upgrade_from_fixture(backend: &str, db_url: &str) {
    let env = Env::start(db_url).await;
    let recorded = answers(backend);
    let mut diffs = Vec::new();
    let mut ids = std::collections::BTreeMap::new();
    for (name, old) in recorded.as_object().expect("answers by run") {
        let id = old["run"]["run_id"].as_str().expect("a run id").to_owned();
        for (what, path) in [
            ("run", format!("/v1/runs/{id}")),
            ("events", format!("/v1/runs/{id}/events")),
            ("logs", format!("/v1/runs/{id}/logs")),
        ] {
            let new = get(&env, &path).await;
            contained(&old[what], &new, &format!("{name}.{what}"), &mut diffs);
        }
        ids.insert(name.clone(), id);
    }
    assert!(
        diffs.is_empty(),
        "{backend}: the upgraded database reads differently:\n{}",
        diffs.join("\n")
    );
    let listed = get(&env, "/v1/runs?limit=100").await;
    assert_eq!(
        listed["runs"].as_array().map(Vec::len),
        Some(recorded.as_object().unwrap().len())
    );

    // The runs that were waiting carry on with this build.
    let ok = env.script("ok.sh", "cat >/dev/null\necho '{\"done\": true}'");
    let fail = env.script(
        "fail.sh",
        "cat >/dev/null\necho '{\"error\": {\"message\": \"card declined\", \"retryable\": true}}'\nexit 1",
    );
    let handlers = env.handlers_file("handlers.toml", &[("u.ok", &ok), ("u.fail", &fail)]);
    let _worker = env.exec_worker(&handlers, "upgraded");
    let _parked_worker = env.exec_worker_with(&handlers, "parked", &["--queue", "nobody"]);

    post(
        &env,
        &format!("/v1/runs/{}/steps/gate/approve", ids["waiting"]),
    )
    .await;
    let waiting = env.wait_finished(&ids["waiting"]).await;
    assert_eq!(waiting.status, "completed", "the approved run finishes");
    assert_eq!(step(&waiting, "c").status, "completed");

    let parked = env.wait_finished(&ids["parked"]).await;
    assert_eq!(parked.status, "completed", "the parked run is served");

    post(&env, &format!("/v1/runs/{}/retry", ids["failed"])).await;
    let retried = env
        .wait_run(
            &ids["failed"],
            "the retry fails again",
            Duration::from_secs(30),
            |run| run.status == "failed" && step(run, "charge").attempts.len() > 2,
        )
        .await;
    assert_eq!(
        step(&retried, "charge").attempts.len(),
        4,
        "two more attempts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_database_of_the_last_release() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("weft.db");
    std::fs::copy(fixture("sqlite.db"), &path).expect("copy the fixture database");
    upgrade_from_fixture("sqlite", &format!("sqlite://{}", path.display())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_database_of_the_last_release() {
    let cluster = weft_testkit::PgCluster::start();
    let url = cluster.create_database();
    let dump = std::fs::read_to_string(fixture("postgres.sql")).expect("the fixture dump");
    cluster.run_script(&url, &dump);
    upgrade_from_fixture("postgres", &url).await;
    drop(cluster);
}
