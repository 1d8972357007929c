//! Run metadata end to end, with authentication on: a start (one or a
//! batch) carries it, out-of-bounds metadata is a 400 `invalid_metadata`
//! that starts nothing, `GET /v1/runs?meta.k=v` finds the runs (pairs
//! ANDed, with `since`/`until`), a sensitive key's value is redacted for a
//! viewer (who cannot filter on it either), and `weft start --meta` /
//! `weft runs --meta` / `weft run` carry and show it.

use std::{collections::BTreeMap, time::Duration};

use serde_json::{Value, json};
use weft_api::{StartRunRequest, StartRunsRequest};

use crate::{
    auth::{ADMIN, secured, token},
    harness::{WEFT, http_client},
};

const SECRET: &str = "tok_live_9f8e7d6c5b4a";

fn meta(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Status and body of a request with `token`.
async fn call(
    base: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
    token: &str,
) -> (u16, Value) {
    let http = http_client();
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = http
        .request(method, format!("{base}{path}"))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("the server answers");
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

fn run_ids(list: &Value) -> Vec<&str> {
    list["runs"]
        .as_array()
        .unwrap_or_else(|| panic!("a run list: {list}"))
        .iter()
        .map(|r| r["run_id"].as_str().unwrap())
        .collect()
}

pub async fn run_metadata_api_and_cli(db_url: String) {
    let env = secured(&db_url, &[]).await;
    env.register("name: meta\nsteps:\n  - {name: s, handler: meta.h}\n")
        .await;
    let base = env.server.url.clone();
    let start = |metadata: BTreeMap<String, String>| StartRunRequest {
        input: json!({}),
        metadata,
        ..Default::default()
    };
    let gold = env
        .client
        .start_run(
            "meta",
            &start(meta(&[
                ("customer", "42"),
                ("api_token", SECRET),
                ("tier", "gold"),
            ])),
        )
        .await
        .unwrap()
        .run_id;
    let batch = env
        .client
        .start_runs(
            "meta",
            &StartRunsRequest {
                runs: vec![
                    start(meta(&[("customer", "42"), ("tier", "silver")])),
                    start(meta(&[("customer", "7")])),
                ],
            },
        )
        .await
        .unwrap();
    let silver = batch.runs[0].run_id.clone();
    let seven = batch.runs[1].run_id.clone();

    // Out of bounds: 400 invalid_metadata, and nothing is started.
    let (_, before) = call(&base, "GET", "/v1/runs?limit=1000", None, ADMIN).await;
    let too_many: serde_json::Map<String, Value> =
        (0..17).map(|i| (format!("k{i}"), json!("v"))).collect();
    for bad in [
        json!({"k y": "v"}),
        json!({".k": "v"}),
        json!({"": "v"}),
        json!({"k".repeat(65): "v"}),
        json!({"k": "v".repeat(257)}),
        json!({"k": "a\nb"}),
        json!({"k": 42}),
        Value::Object(too_many),
    ] {
        let (status, body) = call(
            &base,
            "POST",
            "/v1/workflows/meta/runs",
            Some(json!({"input": {}, "metadata": bad})),
            ADMIN,
        )
        .await;
        assert_eq!(status, 400, "{bad}: {body}");
        let code = body["error"]["code"].as_str().unwrap_or_default();
        assert!(
            code == "invalid_metadata" || code == "invalid_json",
            "{bad}: {body}"
        );
        let (status, body) = call(
            &base,
            "POST",
            "/v1/workflows/meta/runs/batch",
            Some(json!({"runs": [{"metadata": {"ok": "1"}}, {"metadata": bad}]})),
            ADMIN,
        )
        .await;
        assert_eq!(status, 400, "batch {bad}: {body}");
    }
    let (_, after) = call(&base, "GET", "/v1/runs?limit=1000", None, ADMIN).await;
    assert_eq!(
        run_ids(&after),
        run_ids(&before),
        "a refused start writes nothing"
    );
    assert_eq!(run_ids(&after).len(), 3);

    // The admin (no --redact-api) sees the metadata as started.
    let (status, list) = call(&base, "GET", "/v1/runs?meta.customer=42", None, ADMIN).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(run_ids(&list), vec![silver.as_str(), gold.as_str()]);
    assert_eq!(list["runs"][1]["metadata"]["api_token"], SECRET);
    let (_, both) = call(
        &base,
        "GET",
        "/v1/runs?meta.customer=42&meta.tier=gold&workflow=meta",
        None,
        ADMIN,
    )
    .await;
    assert_eq!(run_ids(&both), vec![gold.as_str()]);
    let (_, paged) = call(
        &base,
        "GET",
        "/v1/runs?meta.customer=42&limit=1",
        None,
        ADMIN,
    )
    .await;
    assert_eq!(run_ids(&paged), vec![silver.as_str()]);
    let cursor = paged["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let (_, next) = call(
        &base,
        "GET",
        &format!("/v1/runs?meta.customer=42&limit=1&cursor={cursor}"),
        None,
        ADMIN,
    )
    .await;
    assert_eq!(run_ids(&next), vec![gold.as_str()]);
    assert!(next["next_cursor"].is_null(), "{next}");
    let (_, secret_filter) = call(
        &base,
        "GET",
        &format!("/v1/runs?meta.api_token={SECRET}"),
        None,
        ADMIN,
    )
    .await;
    assert_eq!(
        run_ids(&secret_filter),
        vec![gold.as_str()],
        "the admin may"
    );

    // A viewer: the sensitive value redacted in the list and the detail,
    // and no filtering on it.
    let viewer = token(&env, "meta-viewer", "viewer", None, None).await;
    let (status, list) = call(&base, "GET", "/v1/runs?meta.customer=42", None, &viewer).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(run_ids(&list), vec![silver.as_str(), gold.as_str()]);
    assert_eq!(list["runs"][1]["metadata"]["api_token"], "[redacted]");
    assert_eq!(list["runs"][1]["metadata"]["customer"], "42");
    assert!(!list.to_string().contains(SECRET), "{list}");
    let (status, detail) = call(&base, "GET", &format!("/v1/runs/{gold}"), None, &viewer).await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["metadata"]["api_token"], "[redacted]");
    assert_eq!(detail["metadata"]["tier"], "gold");
    assert!(!detail.to_string().contains(SECRET), "{detail}");
    let (status, refused) = call(
        &base,
        "GET",
        &format!("/v1/runs?meta.api_token={SECRET}"),
        None,
        &viewer,
    )
    .await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["error"]["code"], "invalid_metadata");

    // Bad filters, and until.
    for (query, code) in [
        ("meta.a%20b=1", "invalid_metadata"),
        ("meta.=1", "invalid_metadata"),
        ("until=yesterday", "invalid_until"),
    ] {
        let (status, body) = call(&base, "GET", &format!("/v1/runs?{query}"), None, ADMIN).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some(code)),
            "{query}: {body}"
        );
    }
    let (_, old) = call(&base, "GET", "/v1/runs?until=1h", None, ADMIN).await;
    assert!(run_ids(&old).is_empty(), "{old}");
    let (_, window) = call(
        &base,
        "GET",
        "/v1/runs?since=1h&until=2099-01-01T00:00:00Z&meta.customer=7",
        None,
        ADMIN,
    )
    .await;
    assert_eq!(run_ids(&window), vec![seven.as_str()]);

    // The CLI: start --meta, runs --meta, run shows it.
    let weft = |args: Vec<String>| {
        let base = base.clone();
        async move {
            let output = tokio::process::Command::new(WEFT)
                .args(&args)
                .args(["--url", &base])
                .env("WEFT_TOKEN", ADMIN)
                .env("NO_COLOR", "1")
                .kill_on_drop(true)
                .output();
            let output = tokio::time::timeout(Duration::from_secs(60), output)
                .await
                .expect("the CLI finishes")
                .expect("run the weft binary");
            let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
            let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
            (output.status.success(), stdout, stderr)
        }
    };
    let args = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let (ok, stdout, stderr) = weft(args(&[
        "start",
        "meta",
        "--meta",
        "customer=99",
        "--meta",
        "region=eu west",
        "--json",
    ]))
    .await;
    assert!(ok, "{stdout}{stderr}");
    let started: Value = serde_json::from_str(&stdout).unwrap();
    let cli_run = started["run_id"].as_str().unwrap().to_owned();
    let (ok, stdout, stderr) = weft(args(&["runs", "--meta", "customer=99", "--json"])).await;
    assert!(ok, "{stdout}{stderr}");
    let listed: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(run_ids(&listed), vec![cli_run.as_str()]);
    assert_eq!(listed["runs"][0]["metadata"]["region"], "eu west");
    let (ok, stdout, _) = weft(args(&[
        "runs",
        "--meta",
        "customer=99",
        "--meta",
        "region=eu west",
    ]))
    .await;
    assert!(ok && stdout.contains(&cli_run), "{stdout}");
    let (ok, stdout, _) = weft(args(&["runs", "--meta", "customer=100"])).await;
    assert!(ok && !stdout.contains(&cli_run), "{stdout}");
    let (ok, stdout, stderr) = weft(args(&["run", &cli_run])).await;
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains("metadata  customer=99 region=eu west"),
        "{stdout}"
    );
    let (ok, _, stderr) = weft(args(&["start", "meta", "--meta", "bad key=1"])).await;
    assert!(!ok && stderr.contains("invalid_metadata"), "{stderr}");
    let (ok, _, stderr) = weft(args(&["start", "meta", "--meta", "novalue"])).await;
    assert!(!ok && stderr.contains("KEY=VALUE"), "{stderr}");
}
