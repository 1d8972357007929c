//! The dashboard's actions in Chromium: cancel, retry and approve from the
//! run page's buttons (each through its confirmation dialog), bulk cancel of
//! a filtered runs list with the count confirmed, starting a run from a
//! workflow's page, the manifest as YAML, a `<script>` in a comment shown as
//! text; and, with authentication on, the buttons per role: a viewer sees
//! none and its forged POST is refused, an operator acts as itself, and a
//! write without the session's CSRF token is refused.

use fantoccini::Locator;
use serde_json::{Value, json};
use weft_client::Client;
use weft_worker::TaskContext;

use crate::{
    Browser,
    harness::{Env, PATIENCE, SdkWorker, wait_until},
};

/// A run that waits for a worker nobody runs: stays `pending` (its step
/// ready, never claimed) until cancelled.
pub(crate) const HOLD: &str = "name: act_hold\nsteps:\n  - name: orphan\n    handler: act.nobody\n";
/// A run that waits for a person.
pub(crate) const GATE: &str = "name: act_gate\nsteps:\n  - {name: ok, kind: approval}\n";

/// A step with a 20 KB output and 250 log lines.
pub(crate) const BIG: &str = "name: act_big\nsteps:\n  - name: big\n    handler: act.big\n";

const COMMENT: &str = "<script>window.__weftAlerted = 1</script> looks right";

const ADMIN: &str = "bootstrap-admin-token-for-the-dashboard-roles-0123456789";
const PEPPER: &str = "a dashboard-roles pepper of at least sixteen bytes";

impl Browser {
    pub(crate) async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("find {css}: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    async fn type_into(&self, css: &str, text: &str) {
        let field = self
            .client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("find {css}: {e}"));
        field.clear().await.expect("clear the field");
        field.send_keys(text).await.expect("type into the field");
    }

    /// Answers the open confirmation dialog: its question, after typing
    /// `comment` if given and pressing Confirm.
    pub(crate) async fn confirm(&self, comment: Option<&str>) -> String {
        self.until(
            "the confirmation opens",
            "const d = document.getElementById('confirm'); return !!d && d.open",
        )
        .await;
        let question = self.text("#confirm-text").await;
        if let Some(comment) = comment {
            self.type_into("#confirm-comment", comment).await;
        }
        self.click("#confirm-ok").await;
        self.until(
            "the confirmation closes",
            "return !document.getElementById('confirm').open",
        )
        .await;
        question
    }

    /// A POST from the page's own script context (same origin, the session
    /// cookie sent by the browser); answers `[status, error code]`.
    async fn fetch_post(&self, path: &str, with_csrf: bool) -> Value {
        let csrf = if with_csrf {
            "if (document.body.dataset.csrf) h['X-Weft-CSRF'] = document.body.dataset.csrf;"
        } else {
            ""
        };
        self.js(&format!(
            "const h = {{'Content-Type': 'application/json', 'X-Weft-Client': 'forged'}}; {csrf}
             return fetch('{path}', {{method: 'POST', headers: h, body: '{{}}', credentials: 'same-origin'}})
               .then(async r => [r.status, ((await r.json()).error || {{}}).code || null]);"
        ))
        .await
    }

    async fn sign_in(&self, env: &Env, token: &str) {
        self.client
            .delete_all_cookies()
            .await
            .expect("forget the last session");
        self.goto(env, "/signin").await;
        self.type_into("input[name=token]", token).await;
        self.click("form[action='/signin'] button").await;
        self.until(
            "signed in, on the runs page",
            "return location.pathname === '/' && document.body.dataset.page === 'runs'",
        )
        .await;
    }
}

async fn status_of(env: &Env, run_id: &str) -> String {
    env.client.get_run(run_id).await.expect("the run").status
}

/// Cancel then retry from the run page, approve an approval with a comment
/// (shown as text in the actions table); `full` adds bulk cancel, starting a
/// run from the workflow page and the YAML manifest.
pub(crate) async fn actions_by_button(env: &Env, browser: &Browser, full: bool) {
    env.register(HOLD).await;
    env.register(GATE).await;

    // Cancel from the run page: the dialog, then the run and the page change.
    let held = env.start_run("act_hold", json!({})).await;
    browser.goto(env, &format!("/runs/{held}")).await;
    browser.js("window.__kept = 'run page'; return true").await;
    assert_eq!(
        browser.count("#run-actions button[data-act=cancel]").await,
        1
    );
    assert_eq!(
        browser.count("#run-actions button[data-act=retry]").await,
        0,
        "retry does not apply to a running run"
    );
    browser.shot("run-actions").await;
    browser.click("#run-actions button[data-act=cancel]").await;
    // Backing out of the dialog changes nothing.
    browser
        .until(
            "the confirmation opens",
            "return document.getElementById('confirm').open",
        )
        .await;
    browser.shot("run-confirm").await;
    browser.click("#confirm button[value=back]").await;
    browser
        .until(
            "the confirmation closes",
            "return !document.getElementById('confirm').open",
        )
        .await;
    assert_eq!(status_of(env, &held).await, "pending");
    browser.click("#run-actions button[data-act=cancel]").await;
    let question = browser.confirm(None).await;
    assert!(question.starts_with("Cancel this run?"), "{question}");
    browser
        .until(
            "the status turns cancelled in place",
            "return document.getElementById('run-status').textContent === 'cancelled'",
        )
        .await;
    assert_eq!(status_of(env, &held).await, "cancelled");
    assert_eq!(
        browser.js("return window.__kept").await,
        json!("run page"),
        "no reload"
    );
    let people = browser.text("#run-people").await;
    assert!(
        people.contains("cancelled") && people.contains("anonymous"),
        "{people}"
    );
    // Retry now applies, cancel no longer.
    assert_eq!(
        browser.count("#run-actions button[data-act=cancel]").await,
        0
    );
    browser.click("#run-actions button[data-act=retry]").await;
    browser.confirm(None).await;
    wait_until("the run is retried", PATIENCE, || async {
        (status_of(env, &held).await == "running").then_some(())
    })
    .await;
    browser
        .until(
            "the page shows it running again",
            "return document.getElementById('run-status').textContent === 'running' && !!document.querySelector('#run-actions button[data-act=cancel]')",
        )
        .await;
    let people = browser.text("#run-people").await;
    assert!(people.contains("retried"), "{people}");
    // Approve a waiting approval with a comment; it shows in the actions
    // table as text.
    let gated = env.start_run("act_gate", json!({})).await;
    env.wait_run(&gated, "the approval waits", PATIENCE, |r| {
        r.steps[0].status == "waiting"
    })
    .await;
    browser.goto(env, &format!("/runs/{gated}")).await;
    assert_eq!(
        browser
            .count("#run-actions [data-approval=ok] button")
            .await,
        2
    );
    // An action the API refuses is shown, and changes nothing: a comment
    // past the API's 4096 characters (the field's maxlength bypassed).
    browser
        .click("#run-actions [data-approval=ok] button[data-act=approve]")
        .await;
    browser
        .until(
            "the confirmation opens",
            "return document.getElementById('confirm').open",
        )
        .await;
    browser
        .js("document.getElementById('confirm-comment').value = 'x'.repeat(5000); return true")
        .await;
    browser.click("#confirm-ok").await;
    browser
        .until(
            "the refusal is shown",
            "const e = document.getElementById('action-error'); return !e.hidden && e.textContent.includes('invalid_message, HTTP 400')",
        )
        .await;
    browser.shot("run-action-error").await;
    let still = env.client.get_run(&gated).await.expect("the run");
    assert_eq!(still.steps[0].status, "waiting", "nothing changed");
    browser
        .click("#run-actions [data-approval=ok] button[data-act=approve]")
        .await;
    browser
        .until(
            "the confirmation opens",
            "return document.getElementById('confirm').open",
        )
        .await;
    browser.type_into("#confirm-comment", COMMENT).await;
    // README's screenshot of the actions (docs/dashboard-actions.png).
    browser.shot("run-approve-dialog").await;
    let question = browser.text("#confirm-text").await;
    browser.click("#confirm-ok").await;
    assert_eq!(question, "Approve step ok?");
    browser
        .until(
            "the run completes in place",
            "return document.getElementById('run-status').textContent === 'completed'",
        )
        .await;
    assert_eq!(status_of(env, &gated).await, "completed");
    let people = browser.text("#run-people").await;
    assert!(people.contains(COMMENT), "the comment as text: {people}");
    assert_eq!(
        browser
            .js("return window.__weftAlerted === undefined && document.querySelectorAll('main script').length === 0")
            .await,
        json!(true),
        "a <script> in a comment is text"
    );
    assert_eq!(
        browser.count("#run-actions button").await,
        0,
        "nothing applies to a completed run"
    );
    browser.shot("run-approved").await;
    let events = env
        .client
        .run_events(&gated, None)
        .await
        .expect("events")
        .events;
    assert!(
        events
            .iter()
            .any(|e| e.data.get("comment").and_then(Value::as_str) == Some(COMMENT)),
        "the comment is in the history"
    );
    if !full {
        return;
    }

    // Bulk cancel of a filtered list: the count is confirmed, then every
    // matching run is cancelled, and no other.
    // `held`, retried above, is running again: it is one of them.
    let mut bulk = vec![held.clone()];
    for i in 0..3 {
        bulk.push(env.start_run("act_hold", json!({"n": i})).await);
    }
    let other = env.start_run("act_gate", json!({})).await;
    browser.goto(env, "/?workflow=act_hold").await;
    assert_eq!(browser.count("#runs-body tr[data-run]").await, 4);
    assert_eq!(
        browser.text("#bulk-cancel").await,
        "Cancel 4 matching",
        "the count of the filtered runs"
    );
    browser.shot("runs-bulk").await;
    browser.click("#bulk-cancel").await;
    let question = browser.confirm(None).await;
    assert!(
        question.starts_with("Cancel 4 matching run(s)?"),
        "{question}"
    );
    for id in &bulk {
        let id = id.clone();
        wait_until("the bulk cancel", PATIENCE, || {
            let id = id.clone();
            async move { (status_of(env, &id).await == "cancelled").then_some(()) }
        })
        .await;
    }
    assert_ne!(
        status_of(env, &other).await,
        "cancelled",
        "outside the filter"
    );
    browser
        .until(
            "the page reloads with the filters kept",
            "return location.search === '?workflow=act_hold' && [...document.querySelectorAll('#runs-body tr[data-run] .badge')].every(b => b.textContent === 'cancelled')",
        )
        .await;
    // Retry, from the cancelled list.
    browser
        .goto(env, "/?workflow=act_hold&status=cancelled")
        .await;
    let shown = browser.text("#bulk-retry").await;
    assert!(shown.starts_with("Retry "), "{shown}");

    // Start a run from the workflow page: invalid JSON is refused before
    // anything is sent, then a valid input starts the run and opens it.
    browser.goto(env, "/workflows/act_gate").await;
    let manifest = browser.text("#manifest").await;
    assert!(
        manifest.contains("name: act_gate") && manifest.contains("kind: approval"),
        "the manifest as YAML: {manifest}"
    );
    assert!(
        !manifest.trim_start().starts_with('{'),
        "not JSON: {manifest}"
    );
    browser.click("#start-run summary").await;
    browser.type_into("#start-input", "{\"order\": 42,").await;
    browser.click("#start-button").await;
    browser
        .until(
            "the JSON error is shown",
            "const e = document.getElementById('action-error'); return !e.hidden && e.textContent.startsWith('The input is not valid JSON')",
        )
        .await;
    browser.shot("workflow-start-error").await;
    browser
        .type_into("#start-input", "{\"order\": 42, \"note\": \"<b>x</b>\"}")
        .await;
    browser.click("#start-button").await;
    browser.confirm(None).await;
    browser
        .until(
            "the new run's page opens",
            "return location.pathname.startsWith('/runs/') && !!document.getElementById('run-status')",
        )
        .await;
    let path = browser.js("return location.pathname").await;
    let started = path
        .as_str()
        .unwrap_or("")
        .trim_start_matches("/runs/")
        .to_owned();
    let run = env.client.get_run(&started).await.expect("the started run");
    assert_eq!(run.workflow, "act_gate");
    assert_eq!(run.input, json!({"order": 42, "note": "<b>x</b>"}));
    browser.shot("workflow-started").await;

    // Large payloads are clipped with a link to the whole; times toggle
    // between UTC, local and relative.
    env.register(BIG).await;
    let worker = SdkWorker::spawn(
        env.sdk_worker("act-worker")
            .handler("act.big", |ctx: TaskContext| async move {
                let lines: Vec<String> = (0..250).map(|i| format!("line {i}")).collect();
                ctx.log(lines).await;
                Ok(json!({"blob": "x".repeat(20_000)}))
            })
            .build(),
    );
    let big = env.start_run("act_big", json!({})).await;
    assert_eq!(env.wait_finished(&big).await.status, "completed");
    browser.goto(env, &format!("/runs/{big}#step-big")).await;
    let clipped = browser
        .js("return [...document.querySelectorAll('#step-big .clipped')].map(e => e.textContent)")
        .await;
    let clipped: Vec<&str> = clipped
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        clipped
            .iter()
            .any(|c| c.starts_with("the first 4 KB of 19.5 KB")),
        "{clipped:?}"
    );
    assert!(
        clipped
            .iter()
            .any(|c| c.starts_with("the last 200 lines; 50 earlier ones")),
        "{clipped:?}"
    );
    let whole = browser
        .js("return fetch(document.querySelector('#step-big .clipped a[href*=logs]').href).then(r => r.json()).then(j => j.lines.length)")
        .await;
    assert_eq!(whole, json!(250), "the link has every line");
    assert!(
        browser
            .js("return document.body.innerHTML.length")
            .await
            .as_u64()
            .unwrap_or(0)
            < 40_000,
        "the page stays small"
    );
    worker.stop().await;

    browser.goto(env, "/?workflow=act_hold").await;
    let utc = browser.text("#runs-body time.t").await;
    assert_eq!(browser.text("#tz-toggle").await, "UTC");
    browser.click("#tz-toggle").await;
    assert_eq!(browser.text("#tz-toggle").await, "local");
    assert_eq!(browser.text("#runs thead .tz").await, "(local)");
    let title = browser
        .js("return document.querySelector('#runs-body time.t').title")
        .await;
    assert_eq!(title, json!(format!("{utc} UTC")), "the UTC instant kept");
    browser.click("#tz-toggle").await;
    let relative = browser.text("#runs-body time.t").await;
    assert!(relative.ends_with(" ago"), "{relative}");
    // The choice is kept across pages.
    browser.goto(env, &format!("/runs/{big}")).await;
    let created = browser.text("#run-facts time.t").await;
    assert!(created.ends_with(" ago"), "{created}");
    browser.click("#tz-toggle").await;
    assert_eq!(browser.text("#run-facts time.t").await.len(), 19);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_actions_in_chromium() {
    let db = weft_testkit::sqlite_database();
    let env = Env::start(&db.url).await;
    let browser = Browser::start(&env).await;
    actions_by_button(&env, &browser, true).await;
    browser.client.close().await.expect("end the session");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_actions_smoke_on_postgres() {
    let cluster = weft_testkit::PgCluster::start();
    let url = cluster.create_database();
    let env = Env::start(&url).await;
    let browser = Browser::start(&env).await;
    actions_by_button(&env, &browser, false).await;
    browser.shot("run-approved-postgres").await;
    browser.client.close().await.expect("end the session");
    drop(env);
    drop(cluster);
}

/// With authentication on: what each role sees and may do from the pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_actions_by_role() {
    let db = weft_testkit::sqlite_database();
    let mut env = Env::start_with_env(
        &db.url,
        &["--auth", "required"],
        &[
            ("WEFT_BOOTSTRAP_TOKEN", ADMIN),
            ("WEFT_TOKEN_PEPPER", PEPPER),
        ],
    )
    .await;
    env.client = Client::new(&env.server.url).with_token(Some(ADMIN.to_owned()));
    env.register(HOLD).await;
    env.register(GATE).await;
    let token = |name: &'static str, role: &'static str| {
        let client = env.client.clone();
        async move {
            client
                .create_token(&weft_api::CreateTokenRequest {
                    name: name.to_owned(),
                    role: role.to_owned(),
                    queues: None,
                    expires_in_seconds: None,
                })
                .await
                .unwrap_or_else(|e| panic!("create token {name}: {e}"))
                .token
        }
    };
    let viewer = token("watcher", "viewer").await;
    let operator = token("ops-oncall", "operator").await;
    let held = env.start_run("act_hold", json!({})).await;
    let browser = Browser::start(&env).await;

    // A viewer: no buttons anywhere, and a POST with its cookie (and even
    // its CSRF token) is refused for its role.
    browser.sign_in(&env, &viewer).await;
    assert_eq!(browser.count("#bulk").await, 0, "no bulk buttons");
    browser.goto(&env, &format!("/runs/{held}")).await;
    assert_eq!(
        browser.count("#run-actions button").await,
        0,
        "no run buttons"
    );
    assert_eq!(browser.count("#confirm").await, 0);
    browser.shot("run-viewer").await;
    let forged = browser
        .fetch_post(&format!("/v1/runs/{held}/cancel"), true)
        .await;
    assert_eq!(forged, json!([403, "forbidden"]));
    browser.goto(&env, "/workflows/act_gate").await;
    assert_eq!(browser.count("#start-run").await, 0, "no start form");
    assert_eq!(status_of(&env, &held).await, "pending");

    // An operator: a write without the session's CSRF token is refused;
    // the buttons work and record the token's name as the actor.
    browser.sign_in(&env, &operator).await;
    assert_eq!(browser.count("#bulk button").await, 2);
    browser.goto(&env, &format!("/runs/{held}")).await;
    let no_csrf = browser
        .fetch_post(&format!("/v1/runs/{held}/cancel"), false)
        .await;
    assert_eq!(no_csrf, json!([403, "csrf_token_invalid"]));
    assert_eq!(status_of(&env, &held).await, "pending");
    browser.click("#run-actions button[data-act=cancel]").await;
    browser.confirm(None).await;
    browser
        .until(
            "the status turns cancelled in place",
            "return document.getElementById('run-status').textContent === 'cancelled'",
        )
        .await;
    browser.shot("run-operator").await;
    let events = env
        .client
        .run_events(&held, None)
        .await
        .expect("events")
        .events;
    let cancelled = events
        .iter()
        .find(|e| e.kind == "run.cancelled")
        .expect("run.cancelled");
    assert_eq!(cancelled.data["actor"], "ops-oncall");
    // Bulk retry as the operator, over the API the buttons call: a stale
    // count changes nothing.
    let stale = browser
        .js("return fetch('/v1/runs/retry', {method: 'POST', headers: {'Content-Type': 'application/json', 'X-Weft-CSRF': document.body.dataset.csrf}, body: JSON.stringify({workflow: 'act_hold', expected: 5})}).then(async r => [r.status, (await r.json()).error.code])")
        .await;
    assert_eq!(stale, json!([409, "count_changed"]));
    assert_eq!(status_of(&env, &held).await, "cancelled");
    browser.client.close().await.expect("end the session");
}
