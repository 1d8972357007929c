//! Authentication and authorization end to end: every route of the server's
//! route table called by every kind of caller (no token, a bad one, an
//! expired one, a revoked one, and a token of each role), worker tokens held
//! to their queues and to the leases they claimed, a revocation reaching a
//! second server within its token cache, the startup refusals, and the CLI
//! and exec worker sending their tokens.

use std::process::Command;

use serde_json::{Value, json};
use weft_client::Client;
use weft_server::auth::{Access, Role};

use crate::harness::{Env, PATIENCE, Proc, Server, WEFT, http_client, wait_until};

/// The bootstrap admin token every scenario's server starts with.
pub(crate) const ADMIN: &str = "bootstrap-admin-token-for-the-e2e-suite-0123456789";
/// The pepper of every scenario's servers.
const PEPPER: &str = "an e2e pepper of at least sixteen bytes";

const PAY: &str = "\
name: pay
steps:
  - name: charge
    handler: pay.charge
";

const SCOPED: &str = "\
name: scoped
queue: a
steps:
  - name: s
    handler: scoped.h
    heartbeat_timeout: 60s
";

/// A server with authentication required, the bootstrap admin token, a
/// short token cache, and its client holding the admin token.
pub(crate) async fn secured(db_url: &str, extra: &[&str]) -> Env {
    let mut flags = vec!["--auth", "required", "--token-cache", "300ms"];
    flags.extend_from_slice(extra);
    let mut env = Env::start_with_env(
        db_url,
        &flags,
        &[
            ("WEFT_BOOTSTRAP_TOKEN", ADMIN),
            ("WEFT_TOKEN_PEPPER", PEPPER),
        ],
    )
    .await;
    env.client = Client::new(&env.server.url).with_token(Some(ADMIN.to_owned()));
    env
}

/// Status, error code and `WWW-Authenticate` of one answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    code: Option<String>,
    challenge: Option<String>,
    body: Value,
}

async fn call(
    http: &reqwest::Client,
    base: &str,
    method: &str,
    path: &str,
    body: Option<(&str, Vec<u8>)>,
    token: Option<&str>,
) -> Answer {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
    let mut request = http.request(method, format!("{base}{path}"));
    if let Some((content_type, bytes)) = body {
        request = request.header("content-type", content_type).body(bytes);
    }
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("the server answers");
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // An event stream never ends: its body is not read.
    let is_stream = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let body = if is_stream {
        Value::Null
    } else {
        let bytes = response.bytes().await.unwrap_or_default();
        serde_json::from_slice(&bytes).unwrap_or(Value::Null)
    };
    Answer {
        status,
        code: body["error"]["code"].as_str().map(str::to_owned),
        challenge,
        body,
    }
}

/// Who may call a route, by the product's contract (the role
/// table), written independently of the server's declarations.
fn contract(method: &str, path: &str) -> Access {
    const OPEN: [&str; 8] = [
        "/health/live",
        "/health/ready",
        "/healthz",
        "/health",
        "/openapi.json",
        "/signin",
        "/signout",
        // The dashboard's CSS and script: no data.
        "/static/{file}",
    ];
    if OPEN.contains(&path) {
        Access::Open
    } else if path.starts_with("/v1/worker/") {
        Access::Role(Role::Worker)
    } else if path.starts_with("/v1/tokens")
        || path == "/v1/audit"
        || (method == "PUT" && path.starts_with("/v1/workflows/"))
    {
        Access::Role(Role::Admin)
    } else if method == "GET" {
        // Reads, the dashboard and (without --metrics-open) /metrics.
        Access::Role(Role::Viewer)
    } else {
        Access::Role(Role::Operator)
    }
}

/// Whether a caller of `role` may call a route of `access`, by the
/// contract: viewer < operator < admin; worker routes take worker tokens
/// and admins.
fn permitted(access: Access, role: Role) -> bool {
    match access {
        Access::Open => true,
        Access::Metrics | Access::Role(Role::Viewer) => role != Role::Worker,
        Access::Role(Role::Operator) => matches!(role, Role::Operator | Role::Admin),
        Access::Role(Role::Admin) => role == Role::Admin,
        Access::Role(Role::Worker) => matches!(role, Role::Worker | Role::Admin),
    }
}

/// A request to a route of the table: its concrete path and body. Panics
/// for a route this test does not know, so a new route gets a case here.
fn sample(
    method: &str,
    path: &str,
    run_id: &str,
    n: u32,
) -> (String, Option<(&'static str, Vec<u8>)>) {
    let json_body = |value: Value| Some(("application/json", serde_json::to_vec(&value).unwrap()));
    let concrete = path
        .replace("{name}", "pay")
        .replace(
            "{id}",
            if path.starts_with("/v1/tokens") {
                "0000000000000000"
            } else {
                run_id
            },
        )
        .replace("{step}", "charge")
        .replace("{file}", "dashboard.css")
        .replace("{lease_id}", "no-such-lease");
    let body = match (method, path) {
        ("GET", _) | ("DELETE", _) => None,
        ("PUT", "/v1/workflows/{name}") => Some(("application/yaml", PAY.as_bytes().to_vec())),
        ("POST", "/v1/workflows/{name}/runs") => json_body(json!({"input": {}})),
        ("POST", "/v1/workflows/{name}/runs/batch") => json_body(json!({"runs": [{"input": {}}]})),
        ("POST", "/v1/runs/{id}/cancel" | "/v1/runs/{id}/retry") => None,
        ("POST", "/v1/runs/cancel" | "/v1/runs/retry") => {
            json_body(json!({"workflow": "pay", "status": "completed", "expected": 0}))
        }
        (
            "POST",
            "/v1/runs/{id}/steps/{step}/approve"
            | "/v1/runs/{id}/steps/{step}/reject"
            | "/v1/runs/{id}/steps/{step}/compensation/skip",
        ) => json_body(json!({})),
        // The dashboard's sign-in: open, but a form without its CSRF nonce
        // is refused 403 `csrf_token_invalid` (not a matter of roles).
        ("POST", "/signin") => Some((
            "application/x-www-form-urlencoded",
            b"token=x&csrf=y".to_vec(),
        )),
        ("POST", "/signout") => None,
        ("POST", "/v1/tokens") => json_body(json!({"name": format!("made-{n}"), "role": "viewer"})),
        ("POST", "/v1/worker/poll") => json_body(
            json!({"worker_id": "w", "queues": ["a"], "handlers": ["scoped.h"], "max_tasks": 1, "wait_ms": 0}),
        ),
        ("POST", "/v1/worker/leases/{lease_id}/heartbeat") => None,
        ("POST", "/v1/worker/leases/{lease_id}/complete") => json_body(json!({"output": {}})),
        ("POST", "/v1/worker/leases/{lease_id}/fail") => {
            json_body(json!({"error": {"message": "no"}}))
        }
        ("POST", "/v1/worker/leases/{lease_id}/release") => json_body(json!({})),
        ("POST", "/v1/worker/leases/{lease_id}/logs") => json_body(json!({"lines": ["x"]})),
        ("POST", "/v1/worker/results") => {
            json_body(json!({"results": [{"lease_id": "no-such-lease", "output": {}}]}))
        }
        (method, path) => panic!(
            "no sample request for {method} {path}: add one to this test (and declare its role in the route table)"
        ),
    };
    (concrete, body)
}

/// Creates a token through the API; returns its text.
pub(crate) async fn token(
    env: &Env,
    name: &str,
    role: &str,
    queues: Option<&[&str]>,
    expires: Option<u64>,
) -> String {
    env.client
        .create_token(&weft_api::CreateTokenRequest {
            name: name.to_owned(),
            role: role.to_owned(),
            queues: queues.map(|q| q.iter().map(|s| (*s).to_owned()).collect()),
            expires_in_seconds: expires,
        })
        .await
        .unwrap_or_else(|err| panic!("create token {name}: {err}"))
        .token
}

/// Every route × {no token, malformed, unknown, expired, revoked, viewer,
/// operator, admin, worker}: open routes answer everyone; the rest answer
/// 401 `unauthorized` (with `WWW-Authenticate: Bearer`) without a valid
/// token, 403 `forbidden` to a role the route does not allow, and the
/// handler's own answer (never 401/403; 2xx for reads) to the roles it does.
pub async fn every_route_by_every_caller(db_url: String) {
    let env = secured(&db_url, &[]).await;
    env.register(PAY).await;
    env.register(SCOPED).await;
    let run_id = env.start_run("pay", json!({})).await;
    let viewer = token(&env, "viewer", "viewer", None, None).await;
    let operator = token(&env, "operator", "operator", None, None).await;
    let worker = token(&env, "worker", "worker", Some(&["a"]), None).await;
    let expired = token(&env, "expired", "admin", None, Some(1)).await;
    let revoked = token(&env, "revoked", "admin", None, None).await;
    let http = http_client();
    let base = env.server.url.clone();
    // Used once (so this server has it cached), then revoked: refused at once.
    assert_eq!(
        call(&http, &base, "GET", "/v1/runs", None, Some(&revoked))
            .await
            .status,
        200
    );
    env.client.revoke_token("revoked").await.expect("revoke");
    wait_until("the expired token to be refused", PATIENCE, || async {
        (call(&http, &base, "GET", "/v1/runs", None, Some(&expired))
            .await
            .status
            == 401)
            .then_some(())
    })
    .await;

    let refused: [(&str, Option<&str>); 5] = [
        ("no token", None),
        ("a malformed token", Some("not-a-weft-token")),
        (
            "an unknown token",
            Some(
                "weft_0000000000000000_0000000000000000000000000000000000000000000000000000000000000000",
            ),
        ),
        ("an expired token", Some(&expired)),
        ("a revoked token", Some(&revoked)),
    ];
    let roles: [(Role, &str); 4] = [
        (Role::Viewer, &viewer),
        (Role::Operator, &operator),
        (Role::Admin, ADMIN),
        (Role::Worker, &worker),
    ];
    let table = weft_server::route_table();
    assert!(table.len() >= 30, "the route table lists every route");
    // Every documented operation is in the table (a route added outside
    // it would have no declared access).
    let doc = call(&http, &base, "GET", "/openapi.json", None, None)
        .await
        .body;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("an operation map").keys() {
            let method = method.to_ascii_uppercase();
            assert!(
                table
                    .iter()
                    .any(|r| r.path == path && r.method.as_str() == method),
                "{method} {path} is documented but not in the route table"
            );
            let op = &item[method.to_ascii_lowercase()];
            assert!(
                op.get("security").is_some(),
                "{method} {path} declares no security"
            );
        }
    }
    let mut n = 0;
    let mut checked = 0;
    for route in &table {
        let method = route.method.as_str();
        let declared = route.access.resolve(false);
        let expected = contract(method, route.path);
        assert_eq!(
            declared, expected,
            "{method} {} is declared {declared:?}, the contract says otherwise",
            route.path
        );
        for (who, bearer) in &refused {
            n += 1;
            let (path, body) = sample(method, route.path, &run_id, n);
            let answer = call(&http, &base, method, &path, body, *bearer).await;
            if expected == Access::Open {
                let csrf = answer.code.as_deref() == Some("csrf_token_invalid");
                assert!(
                    answer.status != 401 && (answer.status != 403 || csrf),
                    "{method} {path} is open but {who} got {answer:?}"
                );
            } else {
                assert_eq!(answer.status, 401, "{method} {path} with {who}: {answer:?}");
                assert_eq!(
                    answer.code.as_deref(),
                    Some("unauthorized"),
                    "{method} {path} with {who}"
                );
                assert!(
                    answer
                        .challenge
                        .as_deref()
                        .is_some_and(|c| c.starts_with("Bearer")),
                    "{method} {path} with {who}: no WWW-Authenticate: Bearer ({answer:?})"
                );
            }
            checked += 1;
        }
        for (role, bearer) in &roles {
            n += 1;
            let (path, body) = sample(method, route.path, &run_id, n);
            let answer = call(&http, &base, method, &path, body, Some(bearer)).await;
            if permitted(expected, *role) {
                let csrf = answer.code.as_deref() == Some("csrf_token_invalid");
                assert!(
                    answer.status != 401 && (answer.status != 403 || csrf),
                    "{method} {path} allows {role} but answered {answer:?}"
                );
                if method == "GET" {
                    assert!(
                        (200..300).contains(&answer.status),
                        "{method} {path} as {role}: {answer:?}"
                    );
                }
            } else {
                assert_eq!(answer.status, 403, "{method} {path} as {role}: {answer:?}");
                assert_eq!(
                    answer.code.as_deref(),
                    Some("forbidden"),
                    "{method} {path} as {role}"
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, table.len() * 9);

    // With --metrics-open, /metrics needs no token; everything else still does.
    drop(env);
    let env = secured(&db_url, &["--metrics-open"]).await;
    let base = env.server.url.clone();
    assert_eq!(
        call(&http, &base, "GET", "/metrics", None, None)
            .await
            .status,
        200
    );
    assert_eq!(
        call(&http, &base, "GET", "/v1/runs", None, None)
            .await
            .status,
        401
    );
}

/// A worker token polls only its queues, and only the token that claimed a
/// lease may heartbeat it, report on it, release it or log to it; in a
/// results batch each foreign lease is answered 403 on its own.
pub async fn worker_tokens_keep_to_their_queues_and_leases(db_url: String) {
    let env = secured(&db_url, &[]).await;
    env.register(SCOPED).await;
    env.start_run("scoped", json!({})).await;
    env.start_run("scoped", json!({})).await;
    let mine = token(&env, "worker-mine", "worker", Some(&["a"]), None).await;
    let theirs = token(&env, "worker-theirs", "worker", Some(&["a"]), None).await;
    let http = http_client();
    let base = env.server.url.clone();
    let json_body = |value: Value| Some(("application/json", serde_json::to_vec(&value).unwrap()));
    let poll = |queues: Value| {
        json_body(
            json!({"worker_id": "w", "queues": queues, "handlers": ["scoped.h"], "max_tasks": 1, "wait_ms": 0}),
        )
    };

    let other_queue = call(
        &http,
        &base,
        "POST",
        "/v1/worker/poll",
        poll(json!(["a", "b"])),
        Some(&mine),
    )
    .await;
    assert_eq!(other_queue.status, 403, "{other_queue:?}");
    assert_eq!(other_queue.code.as_deref(), Some("forbidden"));
    assert!(
        other_queue.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains('b')
    );

    let mut leases = Vec::new();
    for bearer in [&mine, &theirs] {
        let polled = call(
            &http,
            &base,
            "POST",
            "/v1/worker/poll",
            poll(json!(["a"])),
            Some(bearer),
        )
        .await;
        assert_eq!(polled.status, 200, "{polled:?}");
        let task = &polled.body["tasks"][0];
        leases.push((
            task["lease_id"].as_str().expect("a task").to_owned(),
            task["run_id"].as_str().unwrap().to_owned(),
        ));
    }
    let ((my_lease, my_run), (their_lease, _)) = (&leases[0], &leases[1]);
    for (verb, body) in [
        ("heartbeat", None),
        ("complete", json_body(json!({"output": {"forged": true}}))),
        ("fail", json_body(json!({"error": {"message": "forged"}}))),
        ("release", json_body(json!({}))),
        ("logs", json_body(json!({"lines": ["forged"]}))),
    ] {
        for bearer in [theirs.as_str(), ADMIN] {
            let answer = call(
                &http,
                &base,
                "POST",
                &format!("/v1/worker/leases/{my_lease}/{verb}"),
                body.clone(),
                Some(bearer),
            )
            .await;
            assert_eq!(
                answer.status, 403,
                "{verb} of another token's lease: {answer:?}"
            );
            assert_eq!(answer.code.as_deref(), Some("forbidden"));
        }
    }
    let batch = call(
        &http,
        &base,
        "POST",
        "/v1/worker/results",
        json_body(json!({"results": [
            {"lease_id": my_lease, "output": {"forged": true}},
            {"lease_id": their_lease, "output": {"theirs": true}},
        ]})),
        Some(&theirs),
    )
    .await;
    assert_eq!(batch.status, 200, "{batch:?}");
    let answers = batch.body["results"]
        .as_array()
        .expect("one answer per result");
    assert_eq!(answers[0]["lease_id"], json!(my_lease));
    assert_eq!(answers[0]["status"], json!(403));
    assert_eq!(answers[0]["error"]["code"], json!("forbidden"));
    assert_eq!(answers[1]["lease_id"], json!(their_lease));
    assert_eq!(answers[1]["status"], json!(200), "{batch:?}");

    let run = env.client.get_run(my_run).await.expect("the run");
    assert_eq!(run.status, "running", "nothing forged reached the run");
    let heartbeat = call(
        &http,
        &base,
        "POST",
        &format!("/v1/worker/leases/{my_lease}/heartbeat"),
        None,
        Some(&mine),
    )
    .await;
    assert_eq!(heartbeat.status, 200, "{heartbeat:?}");
    let done = call(
        &http,
        &base,
        "POST",
        &format!("/v1/worker/leases/{my_lease}/complete"),
        json_body(json!({"output": {"mine": true}})),
        Some(&mine),
    )
    .await;
    assert_eq!(done.status, 200, "{done:?}");
    let run = env.wait_finished(my_run).await;
    assert_eq!(run.status, "completed");
    assert_eq!(run.steps[0].output, Some(json!({"mine": true})));
}

/// A token revoked through one server is refused by another sharing the
/// database once its token cache (300 ms here) lapses, and by the first at
/// once; `weft tokens list` shows it revoked.
pub async fn revocation_reaches_every_server(db_url: String) {
    let env = secured(&db_url, &[]).await;
    let other = Server::start(
        &db_url,
        env.dir.path(),
        &["--auth", "required", "--token-cache", "300ms"],
        &[("WEFT_TOKEN_PEPPER", PEPPER)],
    )
    .await;
    let viewer = token(&env, "short-lived-viewer", "viewer", None, None).await;
    let http = http_client();
    for base in [&env.server.url, &other.url] {
        let answer = call(&http, base, "GET", "/v1/runs", None, Some(&viewer)).await;
        assert_eq!(answer.status, 200, "{answer:?}");
    }
    let revoked = env
        .client
        .revoke_token("short-lived-viewer")
        .await
        .expect("revoke");
    assert!(revoked.revoked_at.is_some());
    let here = call(
        &http,
        &env.server.url,
        "GET",
        "/v1/runs",
        None,
        Some(&viewer),
    )
    .await;
    assert_eq!(
        here.status, 401,
        "the revoking server refuses at once: {here:?}"
    );
    wait_until(
        "the other server to refuse the revoked token",
        PATIENCE,
        || async {
            let answer = call(&http, &other.url, "GET", "/v1/runs", None, Some(&viewer)).await;
            (answer.status == 401).then_some(())
        },
    )
    .await;
    let listed = env.client.list_tokens().await.expect("list");
    let shown = listed
        .tokens
        .iter()
        .find(|t| t.name == "short-lived-viewer")
        .expect("listed");
    assert!(shown.revoked_at.is_some());
    assert_eq!(shown.created_by, "bootstrap");
    assert!(shown.last_used_at.is_some(), "its use was recorded");
}

/// Runs the CLI with `args`; returns its exit code, stdout and stderr.
fn weft(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(WEFT)
        .args(args)
        .env_remove("WEFT_TOKEN")
        .env_remove("WEFT_URL")
        .env_remove("WEFT_DATABASE_URL")
        .env_remove("WEFT_AUTH")
        .env_remove("WEFT_TOKEN_PEPPER")
        .env_remove("WEFT_BOOTSTRAP_TOKEN")
        .envs(env.iter().copied())
        .output()
        .expect("run weft");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Starts `weft server` on `listen`; waits for it to exit or to log that
/// it started. Returns the process and whether it started.
async fn server_on(
    dir: &std::path::Path,
    name: &str,
    db_url: &str,
    listen: &str,
    extra: &[&str],
) -> (Proc, bool) {
    let mut command = Command::new(WEFT);
    command
        .args(["server", "--database-url", db_url, "--listen", listen])
        .args(extra);
    let mut proc = Proc::spawn(name, command, dir.join(format!("{name}.log")));
    let started = wait_until("the server to start or exit", PATIENCE, || {
        let exited = proc.exited().is_some();
        let started = proc.output().contains("server started");
        async move { (exited || started).then_some(started) }
    })
    .await;
    (proc, started)
}

/// A non-loopback listener without a token to check refuses to start and
/// says why; so does auth required with no token; `--auth off` given
/// explicitly starts open. A first admin token made with `weft tokens
/// create --database-url` lets the server start with auth on by default; the
/// CLI and an exec worker then send their tokens.
pub async fn startup_refusals_and_the_cli(db_url: String) {
    let dir = tempfile::Builder::new()
        .prefix("weft-auth-")
        .tempdir()
        .expect("temp dir");
    let port = weft_testkit::free_port();
    let wildcard = format!("0.0.0.0:{port}");
    let loopback = format!("127.0.0.1:{port}");

    let (mut proc, started) = server_on(dir.path(), "open-wildcard", &db_url, &wildcard, &[]).await;
    assert!(
        !started,
        "a non-loopback server without tokens must not start"
    );
    assert!(!proc.wait_exit(PATIENCE).await.expect("it exits").success());
    let said = proc.output();
    assert!(
        said.contains("not a loopback address") && said.contains("--auth off"),
        "{said}"
    );
    assert!(said.contains("weft tokens create"), "{said}");

    let (mut proc, started) = server_on(
        dir.path(),
        "required-empty",
        &db_url,
        &loopback,
        &["--auth", "required"],
    )
    .await;
    assert!(!started);
    assert!(!proc.wait_exit(PATIENCE).await.expect("it exits").success());
    assert!(
        proc.output().contains("WEFT_BOOTSTRAP_TOKEN"),
        "{}",
        proc.output()
    );

    let (mut proc, started) = server_on(
        dir.path(),
        "weak-bootstrap",
        &db_url,
        &loopback,
        &["--auth", "required", "--bootstrap-token", "short"],
    )
    .await;
    assert!(!started);
    assert!(!proc.wait_exit(PATIENCE).await.expect("it exits").success());
    assert!(
        proc.output().contains("at least 24 characters"),
        "{}",
        proc.output()
    );

    let (mut proc, started) = server_on(
        dir.path(),
        "explicitly-open",
        &db_url,
        &wildcard,
        &["--auth", "off"],
    )
    .await;
    assert!(
        started,
        "--auth off given explicitly starts: {}",
        proc.output()
    );
    let open = call(
        &http_client(),
        &format!("http://{loopback}"),
        "GET",
        "/v1/runs",
        None,
        None,
    )
    .await;
    assert_eq!(open.status, 200, "{open:?}");
    proc.kill();

    // The first admin token, written to the database directly.
    let (code, stdout, stderr) = weft(
        &[
            "tokens",
            "create",
            "root",
            "--role",
            "admin",
            "--database-url",
            &db_url,
        ],
        &[("WEFT_TOKEN_PEPPER", PEPPER)],
    );
    assert_eq!(code, 0, "{stderr}");
    let root = stdout.trim().to_owned();
    assert!(root.starts_with("weft_"), "{stdout}");
    assert!(stderr.contains("shown only now"), "{stderr}");

    let mut command = Command::new(WEFT);
    command
        .args([
            "server",
            "--database-url",
            &db_url,
            "--listen",
            &wildcard,
            "--lease-timeout",
            "2s",
        ])
        .env("WEFT_TOKEN_PEPPER", PEPPER);
    let mut server = Proc::spawn("secured-wildcard", command, dir.path().join("secured.log"));
    let url = format!("http://{loopback}");
    let http = http_client();
    wait_until("the secured server", PATIENCE, || {
        let exited = server.exited().is_some();
        let output = server.output();
        let ready = output.contains("server started");
        async move {
            assert!(!exited, "the server exited: {output}");
            ready.then_some(())
        }
    })
    .await;
    assert_eq!(
        call(&http, &url, "GET", "/v1/runs", None, None)
            .await
            .status,
        401,
        "auth is on by default"
    );
    assert_eq!(
        call(&http, &url, "GET", "/v1/runs", None, Some(&root))
            .await
            .status,
        200
    );

    // The CLI sends --token; an exec worker with a worker token runs a step.
    let (code, _, stderr) = weft(&["tokens", "list", "--url", &url], &[]);
    assert_ne!(code, 0, "no token: refused");
    assert!(stderr.contains("unauthorized"), "{stderr}");
    let (code, stdout, stderr) = weft(
        &[
            "tokens", "create", "runner", "--role", "worker", "--queues", "default", "--url", &url,
            "--token", &root,
        ],
        &[],
    );
    assert_eq!(code, 0, "{stderr}");
    let runner = stdout.trim().to_owned();
    let script = dir.path().join("charge.sh");
    std::fs::write(&script, "#!/bin/sh\necho '{\"charged\": true}'\n").unwrap();
    let handlers = dir.path().join("handlers.toml");
    std::fs::write(
        &handlers,
        format!(
            "[handlers]\n\"pay.charge\" = {{ command = [\"sh\", {:?}] }}\n",
            script.display().to_string()
        ),
    )
    .unwrap();
    let client = Client::new(&url).with_token(Some(root.clone()));
    client
        .put_workflow("pay", PAY)
        .await
        .expect("register with the root token");
    let mut worker_command = Command::new(WEFT);
    worker_command
        .arg("worker")
        .arg("--handlers")
        .arg(&handlers)
        .args(["--url", &url, "--worker-id", "runner-1", "--token", &runner]);
    let _worker = Proc::spawn("worker", worker_command, dir.path().join("worker.log"));
    let (code, stdout, stderr) = weft(
        &["start", "pay", "--wait", "--url", &url, "--token", &root],
        &[],
    );
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let (code, stdout, stderr) = weft(
        &["tokens", "list", "--json", "--url", &url],
        &[("WEFT_TOKEN", &root)],
    );
    assert_eq!(code, 0, "{stderr}");
    let listed: Value = serde_json::from_str(&stdout).expect("JSON");
    let tokens = listed["tokens"].as_array().expect("tokens");
    let find = |name: &str| {
        tokens
            .iter()
            .find(|t| t["name"] == json!(name))
            .cloned()
            .expect("listed")
    };
    assert!(
        find("root")["created_by"]
            .as_str()
            .unwrap()
            .starts_with("cli:")
    );
    assert!(find("root")["last_used_at"].is_string(), "{listed}");
    assert_eq!(find("runner")["created_by"], json!("root"));
    assert_eq!(find("runner")["queues"], json!(["default"]));
    assert!(
        find("runner")["last_used_at"].is_string(),
        "the worker's polls count as use: {listed}"
    );
    assert!(
        !stdout.contains(&root[root.len() - 20..]),
        "a listing never shows a secret"
    );
    server.kill();
}
