//! End-to-end: a row damaged behind the server's back (an unknown status on
//! SQLite, a NULL past a dropped NOT NULL on PostgreSQL) is answered as a
//! JSON 500 `corrupt_row` naming the run, never a dropped connection; the
//! list, other runs, the engine's sweeps and readiness carry on, and the
//! server logs the bad run once.

use std::time::Duration;

use serde_json::{Value, json};
use weft_api::{CompleteRequest, PollRequest};
use weft_store::{Dialect, Settings, Store};

use crate::harness::*;

const ONE: &str = "\
name: one
steps:
  - name: only
    handler: h.fake
    retry: { max_attempts: 1 }
";

/// Damages the run's row through a connection of its own.
async fn corrupt_run(db_url: &str, run_id: &str) {
    let store = Store::connect(db_url, Settings::default())
        .await
        .expect("connect to the database");
    let statements: Vec<String> = match store.dialect() {
        Dialect::Sqlite => {
            vec![format!(
                "UPDATE weft_runs SET status = 'bogus' WHERE run_id = '{run_id}'"
            )]
        }
        Dialect::Postgres => vec![
            "ALTER TABLE weft_runs ALTER COLUMN trace_id DROP NOT NULL".to_owned(),
            format!("UPDATE weft_runs SET trace_id = NULL WHERE run_id = '{run_id}'"),
        ],
    };
    for sql in &statements {
        store.execute_unchecked(sql).await.expect(sql);
    }
    store.close().await;
}

async fn get(env: &Env, path: &str) -> (u16, Value) {
    let response = env
        .http
        .get(format!("{}{path}", env.server.url))
        .send()
        .await
        .expect("the server answers, and does not drop the connection");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

pub async fn a_corrupt_row_is_a_json_500_and_the_engine_goes_on(db_url: String) {
    let env = Env::start_with(&db_url, &["--gauge-interval", "200ms"]).await;
    env.register(ONE).await;
    let bad = env.start_run("one", json!({})).await;
    corrupt_run(&db_url, &bad).await;
    let good = env.start_run("one", json!({})).await;

    // The bad run: a JSON 500 with a stable code and a message naming it.
    for _ in 0..2 {
        let (status, body) = get(&env, &format!("/v1/runs/{bad}")).await;
        assert_eq!(status, 500, "{body}");
        assert_eq!(body["error"]["code"], "corrupt_row", "{body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(&bad), "{message}");
    }

    // The claim skips the bad run and hands out the good one, which completes.
    let poll = PollRequest {
        worker_id: "w".to_owned(),
        queues: vec!["default".to_owned()],
        handlers: vec!["h.fake".to_owned()],
        max_tasks: 10,
        wait_ms: 5000,
        host: None,
        pid: None,
        version: None,
        concurrency: None,
    };
    let tasks = env.client.poll(&poll).await.expect("poll").tasks;
    assert_eq!(tasks.len(), 1, "only the good run's step is claimed");
    assert_eq!(tasks[0].run_id, good);
    env.client
        .complete(
            &tasks[0].lease_id,
            &CompleteRequest {
                output: json!({"ok": true}),
                timing: None,
            },
        )
        .await
        .expect("complete");
    let run = env.wait_finished(&good).await;
    assert_eq!(run.status, "completed");

    // The list and other runs keep working; the sweeps go on (timers,
    // reaper, and the gauges each scrape reads) and readiness stays green.
    let (status, body) = get(&env, "/v1/runs").await;
    assert_eq!(status, 200, "{body}");
    let listed: Vec<&str> = body["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .filter_map(|r| r["run_id"].as_str())
        .collect();
    assert!(listed.contains(&good.as_str()), "{body}");
    // Each scrape 300 ms apart reads the gauges again (200 ms interval),
    // over the bad run each time.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (status, _) = get(&env, "/metrics").await;
        assert_eq!(status, 200);
    }
    let (status, body) = get(&env, "/health/ready").await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = get(&env, &format!("/v1/runs/{good}")).await;
    assert_eq!(status, 200);

    // Logged once, however many sweeps and polls met it.
    let _ = env.client.poll(&PollRequest { wait_ms: 0, ..poll }).await;
    let output = env.server.proc.output();
    let logged = output.matches("corrupt row skipped").count();
    assert_eq!(logged, 1, "the bad run is logged once:\n{output}");
    assert!(!output.contains("panicked"), "{output}");
}
