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

/// The dashboard's side: the runs list's metadata filter (with its counts,
/// and the sensitive and malformed filters refused as visible errors), the
/// run page's metadata (a sensitive value redacted), and `/overview`:
/// started, failure rate and p95 per workflow with its SVG charts.
pub async fn dashboard_metadata_and_overview(db_url: String) {
    let env = crate::harness::Env::start(&db_url).await;
    env.register("name: ov\nsteps:\n  - {name: s, handler: ov.h}\n")
        .await;
    env.register("name: ov_other\nsteps:\n  - {name: s, handler: ov.h}\n")
        .await;
    let worker = crate::harness::SdkWorker::spawn(
        env.sdk_worker("ov-worker")
            .handler("ov.h", |ctx: weft_worker::TaskContext| async move {
                if ctx.task.input["input"]["fail"] == json!(true) {
                    return Err(weft_worker::HandlerError::permanent("asked to fail"));
                }
                Ok(json!({}))
            })
            .build(),
    );
    let start =
        |workflow: &'static str, input: Value, pairs: &'static [(&'static str, &'static str)]| {
            let client = env.client.clone();
            async move {
                client
                    .start_run(
                        workflow,
                        &StartRunRequest {
                            input,
                            metadata: meta(pairs),
                            ..Default::default()
                        },
                    )
                    .await
                    .unwrap()
                    .run_id
            }
        };
    let a = start(
        "ov",
        json!({}),
        &[("customer", "42"), ("api_token", SECRET)],
    )
    .await;
    let b = start("ov", json!({}), &[("customer", "42")]).await;
    let failed = start("ov", json!({"fail": true}), &[("customer", "42")]).await;
    let other = start("ov", json!({}), &[("customer", "7")]).await;
    let elsewhere = start("ov_other", json!({}), &[]).await;
    for id in [&a, &b, &failed, &other, &elsewhere] {
        env.wait_finished(id).await;
    }
    let get = |path: String| {
        let http = env.http.clone();
        let url = format!("{}{path}", env.server.url);
        async move {
            let response = http.get(url).send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };

    // The runs list, filtered by metadata.
    let (status, page) = get("/?meta=customer%3D42".into()).await;
    assert_eq!(status, 200, "{page}");
    for id in [&a, &b, &failed] {
        assert!(page.contains(id.as_str()), "{id} listed:\n{page}");
    }
    assert!(
        !page.contains(other.as_str()) && !page.contains(elsewhere.as_str()),
        "{page}"
    );
    assert!(
        page.contains("completed <b>2</b>") && page.contains("failed <b>1</b>"),
        "{page}"
    );
    assert!(
        page.contains("name=\"meta\" value=\"customer=42\""),
        "the filter is kept:\n{page}"
    );
    let (status, page) = get("/?meta=customer%3D42+tier%3Dgold".into()).await;
    assert_eq!(status, 200);
    assert!(page.contains("no runs match"), "{page}");
    let (status, page) = get(format!("/?meta=api_token%3D{SECRET}")).await;
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("is sensitive"), "{page}");
    let (status, page) = get("/?meta=customer".into()).await;
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("is not key=value"), "{page}");

    // The run page shows the metadata, the sensitive value redacted.
    let (status, page) = get(format!("/runs/{a}")).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("id=\"run-metadata\""), "{page}");
    assert!(page.contains("api_token=[redacted]"), "{page}");
    assert!(!page.contains(SECRET), "{page}");
    assert!(
        page.contains("?meta=customer%3D42\">customer=42</a>"),
        "{page}"
    );

    // The overview.
    let (status, page) = get("/overview".into()).await;
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("href=\"/overview\" aria-current=\"page\""),
        "{page}"
    );
    let row = page
        .split("<tr data-workflow=\"ov\">")
        .nth(1)
        .and_then(|rest| rest.split("</tr>").next())
        .unwrap_or_else(|| panic!("a row for ov:\n{page}"));
    assert!(row.contains("</a></td><td>4</td>"), "4 started:\n{row}");
    assert!(
        row.contains("<td>3</td><td>1</td><td>0</td>"),
        "3 completed, 1 failed:\n{row}"
    );
    assert!(row.contains("25.0%"), "failure rate 1 of 4:\n{row}");
    assert_eq!(row.matches("<svg class=\"spark\"").count(), 3, "{row}");
    assert_eq!(
        row.matches("<rect ").count(),
        36,
        "12 bars per chart:\n{row}"
    );
    assert!(
        row.contains("<title>4 runs</title>"),
        "all four in one bar:\n{row}"
    );
    assert!(page.contains("<tr data-workflow=\"ov_other\">"), "{page}");
    worker.stop().await;
}
