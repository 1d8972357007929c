//! Per-caller limits over real HTTP: a caller over its request rate gets
//! 429 `rate_limited` with `Retry-After` while other callers and the health
//! probes are unaffected, and a caller holding its most long polls gets 429
//! for one more. Callers here have no token, so the server keys them by
//! peer address (`--rate-limit-anonymous peer`); each test client binds its
//! own loopback address (127.0.0.x) to be a distinct caller.

use std::{net::IpAddr, time::Duration};

use serde_json::{Value, json};

use crate::harness::Env;

/// A plain HTTP client whose connections come from `source`.
fn client_from(source: [u8; 4]) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .local_address(IpAddr::from(source))
        .timeout(Duration::from_secs(30))
        .build()
        .expect("an HTTP client builds")
}

async fn get(client: &reqwest::Client, url: &str) -> (u16, Option<String>, Value) {
    let response = client.get(url).send().await.expect("an answer");
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.json().await.unwrap_or(Value::Null);
    (status, retry_after, body)
}

/// One caller over its rate is answered 429 with `Retry-After`; another
/// caller, and the first one's health probes, are not.
pub async fn over_the_rate_is_429_for_that_caller_only(db_url: String) {
    let env = Env::start_with(
        &db_url,
        &[
            "--rate-limit-anonymous",
            "peer",
            "--rate-limit",
            "1",
            "--rate-limit-burst",
            "5",
        ],
    )
    .await;
    let runs = format!("{}/v1/runs", env.server.url);
    let noisy = client_from([127, 0, 0, 1]);
    let quiet = client_from([127, 0, 0, 2]);

    let mut statuses = Vec::new();
    let mut limited = None;
    for _ in 0..12 {
        let (status, retry_after, body) = get(&noisy, &runs).await;
        statuses.push(status);
        if status == 429 && limited.is_none() {
            limited = Some((retry_after, body));
        }
    }
    assert!(
        statuses[..5].iter().all(|s| *s == 200),
        "the burst is served: {statuses:?}"
    );
    let (retry_after, body) = limited.unwrap_or_else(|| panic!("no 429 in {statuses:?}"));
    assert_eq!(body["error"]["code"], json!("rate_limited"), "{body}");
    let retry_after: u64 = retry_after
        .expect("a Retry-After header")
        .parse()
        .expect("whole seconds");
    assert!((1..=2).contains(&retry_after), "{retry_after}");

    // The typed client reads the code and the wait.
    let err = env
        .client
        .list_runs(&[])
        .await
        .expect_err("still over the rate");
    assert_eq!(err.status(), Some(429));
    assert_eq!(err.code(), Some("rate_limited"));
    assert!(err.retry_after() >= Some(Duration::from_secs(1)), "{err:?}");

    // Another caller, and the limited caller's probes, are served.
    let (status, _, _) = get(&quiet, &runs).await;
    assert_eq!(status, 200, "another caller is unaffected");
    for probe in ["/health/live", "/health/ready", "/health"] {
        let (status, _, _) = get(&noisy, &format!("{}{probe}", env.server.url)).await;
        assert_eq!(status, 200, "{probe} is never limited");
    }

    // The 429s are counted by route like any answer.
    let metrics = quiet
        .get(format!("{}/metrics", env.server.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.contains("route=\"/v1/runs\"") && l.contains("status=\"429\"")),
        "{metrics}"
    );
}

/// A caller holding its most long polls gets 429 for one more, and can poll
/// again once one returns; another caller's polls are not counted with its.
pub async fn long_polls_are_capped_per_caller(db_url: String) {
    let env = Env::start_with(
        &db_url,
        &[
            "--rate-limit-anonymous",
            "peer",
            "--max-concurrent-polls",
            "2",
        ],
    )
    .await;
    let poll_url = format!("{}/v1/worker/poll", env.server.url);
    let poll = |source: [u8; 4], worker_id: &str, wait_ms: u64| {
        let client = client_from(source);
        let url = poll_url.clone();
        let worker_id = worker_id.to_owned();
        async move {
            let response = client
                .post(&url)
                .json(&json!({
                    "worker_id": worker_id,
                    "handlers": ["nothing.here"],
                    "wait_ms": wait_ms,
                }))
                .send()
                .await
                .expect("an answer");
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
            let body: Value = response.json().await.unwrap_or(Value::Null);
            (status, retry_after, body)
        }
    };
    // Two polls held open by 127.0.0.3 (nothing is ready: they wait).
    let first = tokio::spawn(poll([127, 0, 0, 3], "held-1", 4000));
    let second = tokio::spawn(poll([127, 0, 0, 3], "held-2", 4000));
    // Both are parked once the server lists both workers (a poll's slot is
    // taken before it reaches the store, which records the worker).
    wait_for_workers(&env.client, &["held-1", "held-2"]).await;
    let (status, retry_after, body) = poll([127, 0, 0, 3], "third", 100).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], json!("rate_limited"), "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("long polls"),
        "{body}"
    );
    assert_eq!(retry_after.as_deref(), Some("1"));
    // Another caller polls meanwhile.
    let (status, _, body) = poll([127, 0, 0, 4], "other", 100).await;
    assert_eq!(status, 200, "{body}");
    // Once the held polls return, the caller may poll again.
    for held in [first, second] {
        let (status, _, body) = held.await.unwrap();
        assert_eq!(status, 200, "{body}");
    }
    let (status, _, body) = poll([127, 0, 0, 3], "third", 100).await;
    assert_eq!(status, 200, "{body}");
}

/// Waits until the server lists every worker of `ids`.
async fn wait_for_workers(client: &weft_client::Client, ids: &[&str]) {
    crate::harness::wait_until(
        "the held polls' workers listed",
        crate::harness::PATIENCE,
        || async {
            let list = client
                .list_workers(&[("all", "true".to_owned())])
                .await
                .ok()?;
            ids.iter()
                .all(|id| list.workers.iter().any(|w| w.worker_id == *id))
                .then_some(())
        },
    )
    .await;
}

/// With authentication required, limits are kept per token: an operator
/// token over its rate gets 429 while another token is served, and a worker
/// token holding its one allowed long poll gets 429 for a second one.
pub async fn limits_are_kept_per_token(db_url: String) {
    let admin_token = "limits-bootstrap-admin-0123456789abcdef";
    let env = Env::start_with_env(
        &db_url,
        &[
            "--auth",
            "required",
            "--rate-limit",
            "1",
            "--rate-limit-burst",
            "4",
            "--max-concurrent-polls",
            "1",
        ],
        &[("WEFT_BOOTSTRAP_TOKEN", admin_token)],
    )
    .await;
    let admin = env.client.clone().with_token(Some(admin_token.to_owned()));
    let create = |name: &str, role: &str| weft_api::CreateTokenRequest {
        name: name.to_owned(),
        role: role.to_owned(),
        queues: None,
        expires_in_seconds: None,
    };
    let noisy = admin
        .create_token(&create("noisy", "operator"))
        .await
        .unwrap();
    let quiet = admin
        .create_token(&create("quiet", "operator"))
        .await
        .unwrap();
    let worker = admin
        .create_token(&create("poller", "worker"))
        .await
        .unwrap();
    let as_token = |token: &str| env.client.clone().with_token(Some(token.to_owned()));

    let noisy = as_token(&noisy.token);
    let mut limited = None;
    for _ in 0..12 {
        if let Err(err) = noisy.list_runs(&[]).await {
            limited = Some(err);
            break;
        }
    }
    let err = limited.expect("the noisy token is limited");
    assert_eq!(err.status(), Some(429), "{err:?}");
    assert_eq!(err.code(), Some("rate_limited"));
    assert!(err.retry_after() >= Some(Duration::from_secs(1)), "{err:?}");
    // Same address, another token: served.
    as_token(&quiet.token)
        .list_runs(&[])
        .await
        .expect("another token is unaffected");

    // The worker token's one long poll is held; a second one is refused.
    let poller = as_token(&worker.token);
    let request = |wait_ms: u64| weft_api::PollRequest {
        worker_id: "poller-1".to_owned(),
        queues: vec!["default".to_owned()],
        handlers: vec!["nothing.here".to_owned()],
        max_tasks: 1,
        wait_ms,
        host: None,
        pid: None,
        version: None,
        concurrency: None,
    };
    let held = {
        let poller = poller.clone();
        let request = request(3000);
        tokio::spawn(async move { poller.poll(&request).await })
    };
    wait_for_workers(&admin, &["poller-1"]).await;
    let refused = poller
        .poll(&request(100))
        .await
        .expect_err("a second concurrent poll");
    assert_eq!(refused.status(), Some(429), "{refused:?}");
    assert_eq!(refused.code(), Some("rate_limited"));
    held.await.unwrap().expect("the held poll is answered");
}
