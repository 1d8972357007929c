//! The run's event stream (`GET /v1/runs/{id}/events/stream`) over real
//! HTTP: woken by the server's own commits (its re-check set to an hour, so
//! only the commit notification can deliver), fed by the re-check for
//! events another server wrote, and ended by an SSE `error` event when the
//! store fails instead of going quiet.

use std::time::Duration;

use serde_json::{Value, json};
use weft_store::{Dialect, Settings, Store};

use crate::harness::{Env, Server};

const GATES: &str = "\
name: gates
steps:
  - {name: a, kind: approval}
  - {name: b, kind: approval, depends_on: [a]}
";

/// Reads server-sent events off a response, one at a time.
struct SseReader {
    response: reqwest::Response,
    buffer: String,
}

impl SseReader {
    async fn open(env: &Env, base: &str, run_id: &str) -> SseReader {
        let response = env
            .http
            .get(format!("{base}/v1/runs/{run_id}/events/stream"))
            .send()
            .await
            .expect("open the event stream");
        assert_eq!(response.status().as_u16(), 200);
        SseReader {
            response,
            buffer: String::new(),
        }
    }

    /// The next event's type and data, or `None` once the stream ended.
    /// Panics after 30 s without one (nothing here waits on a timer that long).
    async fn next(&mut self) -> Option<(String, Value)> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut kind = String::from("message");
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        kind = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                return Some((kind, serde_json::from_str(&data).expect("JSON data")));
            }
            let chunk = tokio::time::timeout(Duration::from_secs(30), self.response.chunk())
                .await
                .expect("an event or the end of the stream within 30s")
                .expect("read the stream")?;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Reads until an event of `kind` about `step` arrives; panics if the
    /// stream ends first.
    async fn until(&mut self, kind: &str, step: &str) -> Value {
        let mut seen = Vec::new();
        while let Some((k, data)) = self.next().await {
            if k == kind && data["step"] == step {
                return data;
            }
            seen.push(k);
        }
        panic!("the stream ended before {kind} of {step}; saw {seen:?}");
    }
}

/// Makes the run's history unreadable behind the servers' backs: a
/// wrong-typed `at` on SQLite, a NULL past a dropped NOT NULL on PostgreSQL.
async fn corrupt_history(db_url: &str, run_id: &str) {
    let store = Store::connect(db_url, Settings::default())
        .await
        .expect("connect to the database");
    let statements: Vec<String> = match store.dialect() {
        Dialect::Sqlite => vec![format!(
            "UPDATE weft_events SET at = 'garbled' WHERE run_id = '{run_id}'"
        )],
        Dialect::Postgres => vec![
            "ALTER TABLE weft_events ALTER COLUMN at DROP NOT NULL".to_owned(),
            format!("UPDATE weft_events SET at = NULL WHERE run_id = '{run_id}'"),
        ],
    };
    for sql in &statements {
        store.execute_unchecked(sql).await.expect(sql);
    }
    store.close().await;
}

pub async fn event_stream_wakes_on_commits(db_url: String) {
    // Server A re-reads only hourly: what reaches its streams in this test
    // came through its commit notifications.
    let env = Env::start_with(&db_url, &["--stream-recheck", "1h"]).await;
    let other_dir = env.path("other");
    std::fs::create_dir_all(&other_dir).unwrap();
    let mut other = Server::start(&db_url, &other_dir, &["--stream-recheck", "100ms"], &[]).await;
    env.register(GATES).await;
    let a = env.server.url.clone();

    // Same server: each decision reaches the open stream, which ends with
    // the run.
    let run = env.start_run("gates", json!({})).await;
    let mut stream = SseReader::open(&env, &a, &run).await;
    stream.until("step.waiting", "a").await;
    env.client.decide(&run, "a", true, None).await.unwrap();
    stream.until("step.completed", "a").await;
    stream.until("step.waiting", "b").await;
    env.client
        .decide(&run, "b", true, Some("done".into()))
        .await
        .unwrap();
    stream.until("step.completed", "b").await;
    let mut rest = Vec::new();
    while let Some((kind, _)) = stream.next().await {
        rest.push(kind);
    }
    assert_eq!(rest, ["run.completed"], "the stream ends with the run");

    // Written by server A, followed on server B: the re-check brings it.
    let run = env.start_run("gates", json!({})).await;
    let mut stream = SseReader::open(&env, &other.url, &run).await;
    stream.until("step.waiting", "a").await;
    env.client.decide(&run, "a", true, None).await.unwrap();
    stream.until("step.completed", "a").await;
    stream.until("step.waiting", "b").await;
    drop(stream);

    // A store error ends the stream with an `error` event, not silence.
    let run = env.start_run("gates", json!({})).await;
    let mut stream = SseReader::open(&env, &a, &run).await;
    stream.until("step.waiting", "a").await;
    corrupt_history(&db_url, &run).await;
    env.client.decide(&run, "a", true, None).await.unwrap();
    // Events already sent before the damage may come first.
    let (kind, data) = loop {
        let (kind, data) = stream.next().await.expect("an error event");
        if kind == "error" || kind == "step.completed" {
            break (kind, data);
        }
    };
    assert_eq!(kind, "error", "{data}");
    assert_eq!(data["error"]["code"], "corrupt_row", "{data}");
    assert!(
        stream.next().await.is_none(),
        "the stream ends after its error"
    );
    let log = env.server.proc.output();
    assert!(
        log.contains("event stream ended by a store error"),
        "no log line of the stream's end in:\n{log}"
    );
    other.kill();
}
