//! People and browsers, over real HTTP against a real `weft server`: writes
//! that cannot be forged from another site (custom header or JSON/YAML
//! content type, Origin against Host, loopback Host on a loopback
//! listener), the actor of every action in a run's history and in `weft run`,
//! the audit log (`GET /v1/audit`, `weft audit`), and the dashboard's
//! sign-in with its session cookie and CSRF token.

use std::{process::Output, time::Duration};

use serde_json::{Value, json};

use crate::harness::{Env, WEFT, browser_client};

/// Runs the CLI with `args` and `--url` for this server, no token.
async fn weft(env: &Env, args: &[&str]) -> Output {
    let output = tokio::process::Command::new(WEFT)
        .args(args)
        .args(["--url", &env.server.url])
        .env_remove("WEFT_TOKEN")
        .env_remove("WEFT_ACTOR")
        .env("NO_COLOR", "1")
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(60), output)
        .await
        .unwrap_or_else(|_| panic!("`weft {}` did not finish within 60s", args.join(" ")))
        .expect("run the weft binary")
}

/// The stdout of a CLI call that must succeed.
async fn weft_ok(env: &Env, args: &[&str]) -> String {
    let output = weft(env, args).await;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "`weft {}` failed: {stdout}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The run id `weft start --json` printed.
async fn cli_start(env: &Env, workflow: &str, extra: &[&str]) -> String {
    let mut args = vec!["start", workflow, "--json"];
    args.extend_from_slice(extra);
    let out = weft_ok(env, &args).await;
    let started: Value = serde_json::from_str(&out).expect("start --json prints JSON");
    started["run_id"].as_str().expect("a run_id").to_owned()
}

/// The OS user, as `id -un` says.
fn os_user() -> String {
    let out = std::process::Command::new("id")
        .arg("-un")
        .output()
        .expect("run id -un");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

async fn history(env: &Env, run_id: &str) -> Vec<weft_api::EventRecord> {
    env.client
        .run_events(run_id, None)
        .await
        .expect("read the history")
        .events
}

/// The first event of `kind`, panicking with the history if there is none.
fn find<'a>(events: &'a [weft_api::EventRecord], kind: &str) -> &'a weft_api::EventRecord {
    events
        .iter()
        .find(|e| e.kind == kind)
        .unwrap_or_else(|| panic!("no {kind} event in {events:#?}"))
}

async fn error_code(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    (
        status,
        body["error"]["code"].as_str().unwrap_or("").to_owned(),
    )
}

const GATE: &str = "name: gate\nsteps:\n  - {name: ok, kind: approval}\n";

/// Every action by a person records its actor (and comment) in the run's
/// history, shown by `weft run`; with authentication off the CLI names the
/// OS user, or `--actor`.
pub async fn actors_in_history(db_url: String) {
    let env = Env::start(&db_url).await;
    env.register(GATE).await;
    let me = os_user();

    // Start: `--actor`, else the OS user.
    let run = cli_start(&env, "gate", &["--actor", "alice"]).await;
    let events = history(&env, &run).await;
    let created = find(&events, "run.created");
    assert_eq!(created.data["actor"], "alice");
    assert!(created.data.get("on_behalf_of").is_none());
    let mine = cli_start(&env, "gate", &[]).await;
    assert_eq!(
        find(&history(&env, &mine).await, "run.created").data["actor"],
        me.as_str()
    );

    // Approve with a comment.
    weft_ok(
        &env,
        &[
            "approve",
            &run,
            "ok",
            "--comment",
            "ship it",
            "--actor",
            "bob",
        ],
    )
    .await;
    let events = history(&env, &run).await;
    let completed = find(&events, "run.completed");
    assert_eq!(completed.data["actor"], "bob");
    assert_eq!(completed.data["comment"], "ship it");
    let step = find(&events, "step.completed");
    assert_eq!(step.data["comment"], "ship it");

    // `weft run` says who did what.
    let shown = weft_ok(&env, &["run", &run]).await;
    assert!(shown.contains("by alice"), "{shown}");
    assert!(shown.contains("by bob"), "{shown}");
    assert!(shown.contains("\"ship it\""), "{shown}");

    // So does the dashboard's run page.
    let page = env
        .http
        .get(format!("{}/runs/{run}", env.server.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let actions = &page[page.find("<h2>Actions</h2>").expect("an Actions section")..];
    assert!(actions.contains("<td>alice</td>"), "{actions}");
    assert!(
        actions.contains("<td>bob</td>") && actions.contains("ship it"),
        "{actions}"
    );

    // Reject over HTTP with today's `message` field and the actor header.
    let rejected = env
        .http
        .post(format!("{}/v1/runs/{mine}/steps/ok/reject", env.server.url))
        .header("x-weft-actor", "carol")
        .json(&json!({"message": "not today"}))
        .send()
        .await
        .unwrap();
    assert_eq!(rejected.status().as_u16(), 200);
    let events = history(&env, &mine).await;
    let failed = find(&events, "run.failed");
    assert_eq!(failed.data["actor"], "carol");
    assert_eq!(failed.data["comment"], "not today");
    let detail = env.client.get_run(&mine).await.unwrap();
    assert!(
        detail.error.as_deref().unwrap_or("").contains("not today"),
        "{:?}",
        detail.error
    );

    // Cancel (CLI, the OS user) and retry (the client, an actor of its own).
    let third = cli_start(&env, "gate", &["--actor", "dave"]).await;
    weft_ok(&env, &["cancel", &third]).await;
    env.client
        .clone()
        .with_actor(Some("erin".into()))
        .retry_run(&third)
        .await
        .expect("retry");
    let events = history(&env, &third).await;
    assert_eq!(find(&events, "run.cancelled").data["actor"], me.as_str());
    assert_eq!(find(&events, "run.retried").data["actor"], "erin");

    // A bad actor header changes nothing.
    let too_long = "x".repeat(300);
    let refused = env
        .http
        .post(format!("{}/v1/runs/{third}/cancel", env.server.url))
        .header("x-weft-actor", too_long)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(refused).await, (400, "invalid_actor".to_owned()));
    assert_eq!(env.client.get_run(&third).await.unwrap().status, "running");

    // The server's log line of each action names its actor.
    let log = env.server.proc.output();
    assert!(
        log.lines()
            .any(|l| l.contains("run retried") && l.contains("erin")),
        "no log line of the retry by erin in:\n{log}"
    );
}

/// Registrations land in the audit log, read by `GET /v1/audit` (filters,
/// pages) and `weft audit`.
pub async fn audit_log(db_url: String) {
    let env = Env::start(&db_url).await;
    let manifest = env.path("audited.yaml");
    std::fs::write(
        &manifest,
        "name: audited\nsteps:\n  - {name: a, handler: h}\n",
    )
    .unwrap();
    let path = manifest.display().to_string();
    weft_ok(&env, &["apply", "-f", &path, "--actor", "erin"]).await;
    // Unchanged: no entry.
    weft_ok(&env, &["apply", "-f", &path, "--actor", "erin"]).await;
    let v2 = env
        .http
        .put(format!("{}/v1/workflows/audited", env.server.url))
        .header("content-type", "application/yaml")
        .header("x-weft-actor", "frank")
        .body("name: audited\nsteps:\n  - {name: a, handler: h}\n  - {name: b, handler: h}\n")
        .send()
        .await
        .unwrap();
    assert_eq!(v2.status().as_u16(), 201);
    env.register("name: other\nsteps:\n  - {name: a, handler: h}\n")
        .await;

    let get = |query: &'static str| {
        let (http, url) = (env.http.clone(), env.server.url.clone());
        async move {
            let response = http
                .get(format!("{url}/v1/audit{query}"))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let (status, all) = get("").await;
    assert_eq!(status, 200, "{all}");
    let seen: Vec<(String, String, i64)> = all["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().unwrap().to_owned(),
                e["target"].as_str().unwrap().to_owned(),
                e["detail"]["version"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("anonymous".to_owned(), "other".to_owned(), 1),
            ("frank".to_owned(), "audited".to_owned(), 2),
            ("erin".to_owned(), "audited".to_owned(), 1),
        ]
    );
    assert!(
        all["entries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["action"] == "workflow.registered")
    );

    let (_, erin) = get("?actor=erin").await;
    assert_eq!(erin["entries"].as_array().unwrap().len(), 1);
    let (_, recent) = get("?since=1h&action=workflow.registered").await;
    assert_eq!(recent["entries"].as_array().unwrap().len(), 3);
    let (_, future) = get("?since=2999-01-01T00:00:00Z").await;
    assert_eq!(future["entries"].as_array().unwrap().len(), 0);
    let (_, first) = get("?limit=2").await;
    assert_eq!(first["entries"].as_array().unwrap().len(), 2);
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let page = env
        .http
        .get(format!(
            "{}/v1/audit?limit=2&cursor={cursor}",
            env.server.url
        ))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(page["entries"][0]["actor"], "erin");
    assert!(page["next_cursor"].is_null());
    for (query, code) in [
        ("?action=run.started", "invalid_action"),
        ("?cursor=abc", "invalid_cursor"),
        ("?limit=0", "invalid_limit"),
        ("?since=yesterday", "invalid_since"),
    ] {
        let (status, body) = get(query).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some(code)),
            "{query}"
        );
    }

    // The CLI: JSON, filters, and a table.
    let json_out = weft_ok(&env, &["audit", "--json", "--by", "frank"]).await;
    let list: Value = serde_json::from_str(&json_out).unwrap();
    assert_eq!(list["entries"].as_array().unwrap().len(), 1);
    assert_eq!(list["entries"][0]["target"], "audited");
    let table = weft_ok(&env, &["audit"]).await;
    assert!(table.contains("workflow.registered"), "{table}");
    assert!(table.contains("erin") && table.contains("frank"), "{table}");
}

/// A POST, PUT or DELETE without `X-Weft-Client` and with a content type a
/// browser may send cross-site is refused; so is one from another Origin,
/// and any request on a loopback listener addressed to another host. Weft's
/// own CLI and workers go through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_writes_are_refused() {
    let db = weft_testkit::sqlite_database();
    let env = Env::start(&db.url).await;
    env.register(GATE).await;
    env.register("name: work\nsteps:\n  - {name: a, handler: t.ok}\n")
        .await;
    let run = env.start_run("gate", json!({})).await;
    let browser = browser_client();
    let url = &env.server.url;
    let host = url.trim_start_matches("http://").to_owned();

    // What a page on another site can send without a preflight.
    let cancel = format!("{url}/v1/runs/{run}/cancel");
    let bare = browser.post(&cancel).send().await.unwrap();
    assert_eq!(
        error_code(bare).await,
        (403, "client_header_required".to_owned())
    );
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "Text/Plain; charset=utf-8",
    ] {
        let forged = browser
            .post(format!("{url}/v1/workflows/gate/runs"))
            .header("content-type", content_type)
            .body("{\"input\": {}}")
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_code(forged).await,
            (403, "client_header_required".to_owned()),
            "{content_type}"
        );
    }
    let form_put = browser
        .put(format!("{url}/v1/workflows/gate"))
        .header("content-type", "text/plain")
        .body("name: gate\nsteps:\n  - {name: other, kind: approval}\n")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(form_put).await.0, 403);
    assert_eq!(env.client.get_run(&run).await.unwrap().status, "running");
    assert_eq!(env.client.get_workflow("gate").await.unwrap().version, 1);

    // Another Origin is refused even with JSON.
    let cross = browser
        .post(format!("{url}/v1/workflows/gate/runs"))
        .header("origin", "http://evil.example")
        .json(&json!({"input": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(cross).await, (403, "origin_mismatch".to_owned()));
    let null_origin = browser
        .post(&cancel)
        .header("origin", "null")
        .header("x-weft-client", "x")
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(null_origin).await,
        (403, "origin_mismatch".to_owned())
    );

    // DNS rebinding: a loopback listener answers only loopback names.
    for evil in ["evil.example", "evil.example:80", "10.1.2.3"] {
        let rebound = browser
            .get(format!("{url}/v1/runs"))
            .header("host", evil)
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_code(rebound).await,
            (403, "host_not_allowed".to_owned()),
            "{evil}"
        );
    }
    let port = env.server.port;
    for name in [
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
        host.clone(),
    ] {
        let fine = browser
            .get(format!("{url}/v1/runs"))
            .header("host", name.as_str())
            .send()
            .await
            .unwrap();
        assert_eq!(fine.status().as_u16(), 200, "{name}");
    }

    // What goes through: a same-origin JSON write, a YAML registration, the
    // custom header on a body-less POST.
    let same_origin = browser
        .post(format!("{url}/v1/workflows/gate/runs"))
        .header("origin", format!("http://{host}"))
        .json(&json!({"input": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(same_origin.status().as_u16(), 202);
    let yaml = browser
        .put(format!("{url}/v1/workflows/gate"))
        .header("content-type", "application/yaml")
        .body("name: gate\nsteps:\n  - {name: ok, kind: approval}\n  - {name: two, kind: approval, depends_on: [ok]}\n")
        .send()
        .await
        .unwrap();
    assert_eq!(yaml.status().as_u16(), 201);
    let with_header = browser
        .post(&cancel)
        .header("x-weft-client", "curl")
        .send()
        .await
        .unwrap();
    assert_eq!(with_header.status().as_u16(), 200);
    assert_eq!(env.client.get_run(&run).await.unwrap().status, "cancelled");

    // Weft's own clients: the CLI (body-less retry) and a worker.
    weft_ok(&env, &["retry", &run]).await;
    weft_ok(&env, &["cancel", &run]).await;
    let ok = env.script("ok.sh", "cat > /dev/null\necho '{\"done\": true}'");
    let handlers = env.handlers_file("handlers.toml", &[("t.ok", &ok)]);
    let _worker = env.exec_worker(&handlers, "w-forgery");
    let work = cli_start(&env, "work", &[]).await;
    let done = env.wait_finished(&work).await;
    assert_eq!(done.status, "completed");
}

/// The `Set-Cookie` headers of a response.
fn set_cookies(response: &reqwest::Response) -> Vec<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

/// The `value` of the hidden `csrf` field of a page's form.
fn hidden_csrf(page: &str) -> String {
    let at = page
        .find("name=\"csrf\" value=\"")
        .unwrap_or_else(|| panic!("no csrf field in:\n{page}"));
    let rest = &page[at + "name=\"csrf\" value=\"".len()..];
    rest[..rest.find('"').unwrap()].to_owned()
}

/// Sign-in sets the session cookie (HttpOnly, SameSite=Strict, Path=/); the
/// cookie alone authenticates reads but never a write without the session's
/// CSRF token; sign-out clears it. The sign-in form has a CSRF nonce of its
/// own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_sign_in_session_and_csrf() {
    let db = weft_testkit::sqlite_database();
    let env = Env::start(&db.url).await;
    env.register(GATE).await;
    let run = env.start_run("gate", json!({})).await;
    let browser = browser_client();
    let url = &env.server.url;
    let token = "weft_e2e_0123456789abcdef";

    // The form, with its nonce in a cookie and in a hidden field.
    let form = browser.get(format!("{url}/signin")).send().await.unwrap();
    assert_eq!(form.status().as_u16(), 200);
    let cookies = set_cookies(&form);
    let nonce_cookie = cookies
        .iter()
        .find(|c| c.starts_with("weft_signin="))
        .expect("the sign-in nonce cookie")
        .clone();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/signin"] {
        assert!(nonce_cookie.contains(attribute), "{nonce_cookie}");
    }
    let nonce = nonce_cookie["weft_signin=".len()..nonce_cookie.find(';').unwrap()].to_owned();
    let page = form.text().await.unwrap();
    assert_eq!(hidden_csrf(&page), nonce);
    let runs_page = browser.get(format!("{url}/")).send().await.unwrap();
    assert!(runs_page.text().await.unwrap().contains("href=\"/signin\""));

    // A sign-in without the nonce, or with another, is refused.
    let sign_in = |cookie: Option<String>, csrf: &str| {
        let mut request = browser
            .post(format!("{url}/signin"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("origin", url.as_str())
            .body(format!("token={token}&csrf={csrf}"));
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        request.send()
    };
    let forged = sign_in(Some(format!("weft_signin={nonce}")), "0000")
        .await
        .unwrap();
    assert_eq!(
        error_code(forged).await,
        (403, "csrf_token_invalid".to_owned())
    );
    let no_cookie = sign_in(None, &nonce).await.unwrap();
    assert_eq!(no_cookie.status().as_u16(), 403);
    assert!(
        set_cookies(&no_cookie)
            .iter()
            .all(|c| !c.starts_with("weft_session="))
    );

    // Signed in: the session cookie, with the right attributes.
    let signed = sign_in(Some(format!("weft_signin={nonce}")), &nonce)
        .await
        .unwrap();
    assert_eq!(signed.status().as_u16(), 303);
    assert_eq!(signed.headers()["location"], "/");
    let cookies = set_cookies(&signed);
    let session = cookies
        .iter()
        .find(|c| c.starts_with("weft_session="))
        .unwrap_or_else(|| panic!("no session cookie in {cookies:?}"));
    assert!(
        session.starts_with(&format!("weft_session={token};")),
        "{session}"
    );
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(
            session.split("; ").any(|a| a == attribute),
            "{attribute} in {session}"
        );
    }
    assert!(
        !session.contains("Secure"),
        "plain HTTP: no Secure flag: {session}"
    );
    let session_cookie = format!("weft_session={token}");

    // Reads with the cookie: the API, a dashboard page, the event stream.
    for path in [
        "/v1/runs".to_owned(),
        format!("/runs/{run}"),
        format!("/v1/runs/{run}/events"),
        format!("/v1/runs/{run}/events/stream"),
    ] {
        let read = browser
            .get(format!("{url}{path}"))
            .header("cookie", &session_cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(read.status().as_u16(), 200, "{path}");
    }

    // A write with the cookie alone is refused, whatever else it carries.
    let cancel = format!("{url}/v1/runs/{run}/cancel");
    for (name, value) in [
        ("x-weft-client", "x"),
        ("content-type", "application/json"),
        ("x-weft-csrf", "00ff"),
    ] {
        let refused = browser
            .post(&cancel)
            .header("cookie", &session_cookie)
            .header(name, value)
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_code(refused).await,
            (403, "csrf_token_invalid".to_owned()),
            "{name}"
        );
    }
    assert_eq!(env.client.get_run(&run).await.unwrap().status, "running");

    // The signed-in page hands out the session's CSRF token; with it the
    // write goes through (as the dashboard's own request would).
    let page = browser
        .get(format!("{url}/signin"))
        .header("cookie", &session_cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Signed in"), "{page}");
    let csrf = hidden_csrf(&page);
    assert_eq!(csrf.len(), 64);
    let accepted = browser
        .post(&cancel)
        .header("cookie", &session_cookie)
        .header("x-weft-csrf", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status().as_u16(), 200);
    assert_eq!(env.client.get_run(&run).await.unwrap().status, "cancelled");

    // Sign-out: a form post with the token; without it, or from another
    // site, refused.
    let sign_out = |csrf: String, origin: &str| {
        browser
            .post(format!("{url}/signout"))
            .header("cookie", &session_cookie)
            .header("origin", origin)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("csrf={csrf}"))
            .send()
    };
    let wrong = sign_out("ab".repeat(32), url).await.unwrap();
    assert_eq!(
        error_code(wrong).await,
        (403, "csrf_token_invalid".to_owned())
    );
    let cross = sign_out(csrf.clone(), "http://evil.example").await.unwrap();
    assert_eq!(error_code(cross).await, (403, "origin_mismatch".to_owned()));
    let out = sign_out(csrf, url).await.unwrap();
    assert_eq!(out.status().as_u16(), 303);
    assert_eq!(out.headers()["location"], "/signin");
    let cleared = set_cookies(&out);
    assert!(
        cleared
            .iter()
            .any(|c| c.starts_with("weft_session=;") && c.contains("Max-Age=0")),
        "{cleared:?}"
    );
}
