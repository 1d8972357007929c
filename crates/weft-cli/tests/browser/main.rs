//! The dashboard in a real headless Chromium (Debian's `chromium`, driven
//! over WebDriver by `chromedriver` through fantoccini), against a real
//! `weft server` with an SDK worker over real HTTP: the runs list's filters
//! and its error, the run page's DAG nodes and colours, selecting a node, the
//! Gantt's segments, the critical path, a live update arriving while the page
//! stays open (no reload, scroll and selection kept), a workflow diff,
//! workers and queues, and stuck runs; the actions and their roles are in
//! `actions.rs`. Screenshots of each page are saved
//! under the test's output (`$CARGO_TARGET_TMPDIR/dashboard-screenshots`).

// The end-to-end harness and the dashboard scenario's seed, shared with the
// `it` suite (which uses the rest of them).
#[allow(dead_code)]
#[path = "../it/harness.rs"]
mod harness;

#[allow(dead_code)]
#[path = "../it/dashboard.rs"]
mod dashboard;

mod actions;
mod sagas;

use std::{
    net::TcpListener,
    path::PathBuf,
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use weft_worker::TaskContext;

use crate::harness::{Env, PATIENCE, Proc, SdkWorker, wait_until};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Held until the live test lets its first step finish.
static GATE: AtomicBool = AtomicBool::new(false);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// chromedriver and a session of headless Chromium; both end on drop.
struct Browser {
    client: Client,
    _driver: Proc,
    shots: PathBuf,
}

impl Browser {
    async fn start(env: &Env) -> Browser {
        assert!(
            std::path::Path::new(CHROMIUM).exists() && std::path::Path::new(CHROMEDRIVER).exists(),
            "the browser tests need Debian's chromium and chromium-driver (.ci/run installs them)"
        );
        let port = free_port();
        let mut command = Command::new(CHROMEDRIVER);
        command.arg(format!("--port={port}"));
        let driver = Proc::spawn("chromedriver", command, env.path("chromedriver.log"));
        let url = format!("http://127.0.0.1:{port}");
        let http = harness::http_client();
        wait_until("chromedriver answers", PATIENCE, || async {
            http.get(format!("{url}/status"))
                .send()
                .await
                .ok()
                .map(|_| ())
        })
        .await;
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".to_owned(),
            json!({
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,700"],
            }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&url)
            .await
            .expect("a Chromium session");
        let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots");
        std::fs::create_dir_all(&shots).expect("the screenshot directory");
        Browser {
            client,
            _driver: driver,
            shots,
        }
    }

    async fn goto(&self, env: &Env, path: &str) {
        self.client
            .goto(&format!("{}{path}", env.server.url))
            .await
            .unwrap_or_else(|e| panic!("open {path}: {e}"));
    }

    async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, Vec::new())
            .await
            .unwrap_or_else(|e| panic!("script `{script}`: {e}"))
    }

    async fn count(&self, css: &str) -> usize {
        self.client
            .find_all(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("find {css}: {e}"))
            .len()
    }

    async fn text(&self, css: &str) -> String {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("find {css}: {e}"))
            .text()
            .await
            .expect("its text")
    }

    async fn shot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("a screenshot");
        std::fs::write(self.shots.join(format!("{name}.png")), png).expect("save the screenshot");
    }

    /// Polls a script until it returns `true`.
    async fn until(&self, what: &str, script: &str) {
        wait_until(what, PATIENCE, || async {
            (self.js(script).await == Value::Bool(true)).then_some(())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_chromium() {
    let db = weft_testkit::sqlite_database();
    let env = Env::start(&db.url).await;
    let worker = dashboard::seed(&env).await;
    env.register(
        "name: dash_live\nsteps:\n  - name: hold\n    handler: dash.gate\n  - name: after\n    handler: dash.step\n    depends_on: [hold]\n",
    )
    .await;
    let gate = SdkWorker::spawn(
        env.sdk_worker("gate-worker")
            .handler("dash.gate", |_: TaskContext| async move {
                while !GATE.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Ok(json!({"held": true}))
            })
            .build(),
    );
    let run_id = env
        .start_run(
            "dash",
            json!({"api_key": dashboard::SECRET, "note": dashboard::SCRIPT}),
        )
        .await;
    let run = env.wait_finished(&run_id).await;
    assert_eq!(run.status, "completed");
    let stuck_id = env.start_run("dash_stuck", json!({})).await;
    let browser = Browser::start(&env).await;

    // Runs list: both runs, then the status filter through the form.
    browser.goto(&env, "/").await;
    browser.shot("runs").await;
    assert!(browser.count("#runs-body tr[data-run]").await >= 2);
    browser
        .client
        .find(Locator::Css("select[name=status]"))
        .await
        .expect("the status filter")
        .select_by_value("completed")
        .await
        .expect("choose completed");
    browser
        .client
        .find(Locator::Css("#filters button"))
        .await
        .expect("the filter button")
        .click()
        .await
        .expect("filter");
    browser
        .until(
            "the filtered list",
            "return location.search.includes('status=completed')",
        )
        .await;
    assert_eq!(browser.count("#runs-body tr[data-run]").await, 1);
    assert_eq!(
        browser
            .count(&format!("#runs-body tr[data-run=\"{run_id}\"]"))
            .await,
        1
    );
    // The first page keeps its rows live: a run started now appears
    // without a reload.
    browser.goto(&env, "/").await;
    browser.js("window.__kept = 'runs'; return true").await;
    let new_id = env.start_run("dash_stuck", json!({"late": true})).await;
    browser
        .until(
            "the new run's row appears",
            &format!("return !!document.querySelector('#runs-body tr[data-run=\"{new_id}\"]')"),
        )
        .await;
    assert_eq!(
        browser.js("return window.__kept").await,
        json!("runs"),
        "no reload"
    );
    // An invalid filter is shown, not ignored.
    browser.goto(&env, "/?status=bogus").await;
    browser.shot("runs-error").await;
    assert!(
        browser
            .text("#page-error")
            .await
            .contains("no such status `bogus`")
    );
    assert_eq!(browser.count("#runs-body tr[data-run]").await, 0);

    // Run page: one node per step, coloured by status; the critical path.
    browser.goto(&env, &format!("/runs/{run_id}")).await;
    // The whole page for review (README's screenshot), then back to a
    // window the page scrolls in.
    browser
        .client
        .set_window_size(1200, 1500)
        .await
        .expect("a taller window");
    browser.shot("run").await;
    browser
        .client
        .set_window_size(1200, 700)
        .await
        .expect("the usual window");
    assert_eq!(browser.count("#dag .node").await, 5);
    let fill = browser
        .js("return getComputedStyle(document.querySelector('#dag .node[data-step=left] rect')).fill")
        .await;
    assert_eq!(
        fill,
        json!("rgb(218, 251, 225)"),
        "a completed step is green"
    );
    let crit = browser
        .js("return [...document.querySelectorAll('#dag .node.crit')].map(n => n.dataset.step)")
        .await;
    assert_eq!(crit, json!(["fetch", "left", "join", "notify"]));
    assert!(browser.count("#dag .edge.crit").await >= 3);
    // The Gantt: one row per attempt and the critical path lane, with a
    // backoff gap and a failed handler segment on `left`.
    assert_eq!(browser.count("#gantt .row").await, 7);
    assert_eq!(
        browser
            .count("#gantt .row[data-step=left][data-attempt='2'] .seg[data-kind=backoff]")
            .await,
        1
    );
    assert_eq!(
        browser
            .count("#gantt .row[data-step=left][data-attempt='1'] .seg[data-kind=failed]")
            .await,
        1
    );
    for kind in ["queue_wait", "dispatch", "handler", "ingest"] {
        assert!(
            browser
                .count(&format!("#gantt .seg[data-kind={kind}]"))
                .await
                >= 5,
            "{kind}"
        );
    }
    let crit_rows = browser
        .js("return [...document.querySelectorAll('#gantt .row.crit')].map(r => r.dataset.step)")
        .await;
    assert_eq!(
        crit_rows,
        json!(["fetch", "left", "left", "join", "notify", ""])
    );
    // The <script> in the error is text.
    assert!(browser.text("#step-left summary").await.contains("left"));
    assert_eq!(browser.js("return window.__weftAlerted === undefined && document.querySelectorAll('main script').length === 0").await, json!(true));
    // Selecting a node opens its step.
    browser
        .client
        .find(Locator::Css("#dag .node[data-step=right]"))
        .await
        .expect("the right node")
        .click()
        .await
        .expect("click the node");
    browser.until("the step opens", "return document.getElementById('step-right').open && document.querySelector('#dag .node[data-step=right]').classList.contains('selected')").await;
    assert_eq!(
        browser.js("return location.hash").await,
        json!("#step-right")
    );
    browser.shot("run-selected").await;

    // A live run: the page stays open (no reload), keeps its scroll and
    // selection, and shows the run end when it ends.
    let live_id = env.start_run("dash_live", json!({})).await;
    env.wait_run(&live_id, "hold running", PATIENCE, |r| {
        r.steps[0].status == "running"
    })
    .await;
    browser.goto(&env, &format!("/runs/{live_id}")).await;
    assert_eq!(browser.text("#run-status").await, "running");
    browser.js("window.__kept = 'same page'; return true").await;
    browser
        .client
        .find(Locator::Css("#dag .node[data-step=hold]"))
        .await
        .expect("the hold node")
        .click()
        .await
        .expect("select hold");
    browser.js("window.scrollTo(0, 300); return true").await;
    let scroll_before = browser.js("return window.scrollY").await;
    assert!(
        scroll_before.as_f64().unwrap_or(0.0) > 0.0,
        "the page scrolls: {scroll_before}"
    );
    GATE.store(true, Ordering::SeqCst);
    browser
        .until(
            "the status turns completed in place",
            "return document.getElementById('run-status').textContent === 'completed'",
        )
        .await;
    browser.shot("run-live-ended").await;
    assert_eq!(
        browser.js("return window.__kept").await,
        json!("same page"),
        "no reload"
    );
    assert_eq!(
        browser.js("return window.scrollY").await,
        scroll_before,
        "scroll kept"
    );
    assert_eq!(
        browser.js("return document.querySelector('#dag .node[data-step=hold]').classList.contains('selected') && document.getElementById('step-hold').open").await,
        json!(true),
        "selection kept"
    );
    assert_eq!(browser.count("#dag .node.st-completed").await, 2);
    // The Gantt grew a critical path lane in place, its size with it.
    let rows = browser.count("#gantt .row").await;
    assert_eq!(rows, 3, "two attempts and the critical path lane");
    let height = browser
        .js("return Number(document.getElementById('gantt').getAttribute('height'))")
        .await;
    assert_eq!(height.as_f64(), Some((24 + rows * 20) as f64), "{height}");

    // Workflows and a diff between two versions.
    browser.goto(&env, "/workflows").await;
    browser.shot("workflows").await;
    assert_eq!(browser.count("#workflows tr[data-workflow=dash]").await, 1);
    browser.goto(&env, "/workflows/dash?version=2&diff=1").await;
    browser.shot("workflow-diff").await;
    assert!(browser.text("#diff").await.contains("+"));
    let inserted = browser
        .js("return [...document.querySelectorAll('#diff .d-insert')].map(l => l.textContent).join('\\n')")
        .await;
    assert!(
        inserted.as_str().unwrap_or("").contains("notify"),
        "{inserted}"
    );

    // Workers and queues; stuck runs with the fixing command.
    browser.goto(&env, "/workers").await;
    browser.shot("workers").await;
    assert_eq!(
        browser.count("#workers tr[data-worker=dash-worker]").await,
        1
    );
    assert_eq!(browser.count("#queues tr[data-queue=default]").await, 1);
    browser.goto(&env, "/stuck").await;
    browser.shot("stuck").await;
    assert!(browser.count(&format!("tr[data-run=\"{stuck_id}\"]")).await >= 1);
    assert!(browser.text(".command").await.starts_with("weft "));

    browser.client.close().await.expect("end the session");
    gate.stop().await;
    worker.stop().await;
}

/// The smoke subset on PostgreSQL: the runs list and a run page's graph,
/// Gantt and critical path render the same from the other backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_smoke_on_postgres() {
    let cluster = weft_testkit::PgCluster::start();
    let url = cluster.create_database();
    let env = Env::start(&url).await;
    let worker = dashboard::seed(&env).await;
    let run_id = env.start_run("dash", json!({"n": 1})).await;
    assert_eq!(env.wait_finished(&run_id).await.status, "completed");
    let browser = Browser::start(&env).await;
    browser.goto(&env, "/?workflow=dash").await;
    assert_eq!(
        browser
            .count(&format!("#runs-body tr[data-run=\"{run_id}\"]"))
            .await,
        1
    );
    browser.goto(&env, &format!("/runs/{run_id}")).await;
    browser.shot("run-postgres").await;
    assert_eq!(browser.count("#dag .node.st-completed").await, 5);
    assert_eq!(browser.count("#gantt .row").await, 7);
    let crit = browser
        .js("return [...document.querySelectorAll('#dag .node.crit')].map(n => n.dataset.step)")
        .await;
    assert_eq!(crit, json!(["fetch", "left", "join", "notify"]));
    browser.client.close().await.expect("end the session");
    worker.stop().await;
    drop(env);
    drop(cluster);
}

/// Starts `n` runs of `workflow` with `metadata`, waits for them to end.
async fn runs_with_metadata(
    env: &Env,
    workflow: &str,
    n: usize,
    metadata: &[(&str, &str)],
) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let started = env
            .client
            .start_run(
                workflow,
                &weft_api::StartRunRequest {
                    input: json!({"i": i}),
                    metadata: metadata
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                    ..Default::default()
                },
            )
            .await
            .expect("start a run");
        ids.push(started.run_id);
    }
    for id in &ids {
        env.wait_finished(id).await;
    }
    ids
}

/// The runs list's metadata filter typed into its field, the run page's
/// metadata (a sensitive value redacted), and the overview reached from
/// the nav with its charts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_filter_and_overview_in_chromium() {
    let db = weft_testkit::sqlite_database();
    let env = Env::start(&db.url).await;
    let worker = dashboard::seed(&env).await;
    let gold = runs_with_metadata(
        &env,
        "dash",
        2,
        &[("customer", "42"), ("api_token", dashboard::SECRET)],
    )
    .await;
    let other = runs_with_metadata(&env, "dash", 1, &[("customer", "7")]).await;
    let browser = Browser::start(&env).await;

    browser.goto(&env, "/").await;
    assert_eq!(browser.count("#runs-body tr[data-run]").await, 3);
    let field = browser
        .client
        .find(Locator::Css("input[name=meta]"))
        .await
        .expect("the metadata filter");
    field.send_keys("customer=42").await.expect("type a filter");
    browser
        .client
        .find(Locator::Css("#filters button"))
        .await
        .expect("the filter button")
        .click()
        .await
        .expect("filter");
    browser
        .until(
            "the filtered list",
            "return location.search.includes('meta=customer%3D42')",
        )
        .await;
    browser.shot("runs-metadata").await;
    assert_eq!(browser.count("#runs-body tr[data-run]").await, 2);
    for id in &gold {
        assert_eq!(
            browser
                .count(&format!("#runs-body tr[data-run=\"{id}\"]"))
                .await,
            1
        );
    }
    assert_eq!(
        browser
            .count(&format!("#runs-body tr[data-run=\"{}\"]", other[0]))
            .await,
        0
    );

    browser.goto(&env, &format!("/runs/{}", gold[0])).await;
    let shown = browser.text("#run-metadata").await;
    assert!(
        shown.contains("api_token=[redacted]") && shown.contains("customer=42"),
        "{shown}"
    );
    assert!(!shown.contains(dashboard::SECRET), "{shown}");

    browser
        .client
        .find(Locator::Css("nav a[href='/overview']"))
        .await
        .expect("the overview link")
        .click()
        .await
        .expect("open the overview");
    browser
        .until("the overview", "return location.pathname === '/overview'")
        .await;
    browser.shot("overview").await;
    assert_eq!(
        browser
            .count("#overview tr[data-workflow=dash] svg.spark")
            .await,
        3
    );
    assert_eq!(
        browser
            .count("#overview tr[data-workflow=dash] svg.spark rect")
            .await,
        36
    );
    let started = browser
        .js("return document.querySelector('#overview tr[data-workflow=dash] td:nth-child(2)').textContent")
        .await;
    assert_eq!(started, json!("3"));
    browser.client.close().await.expect("end the session");
    worker.stop().await;
}

/// The overview and the metadata filter render the same from PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_and_overview_smoke_on_postgres() {
    let cluster = weft_testkit::PgCluster::start();
    let url = cluster.create_database();
    let env = Env::start(&url).await;
    let worker = dashboard::seed(&env).await;
    let ids = runs_with_metadata(&env, "dash", 1, &[("customer", "42")]).await;
    runs_with_metadata(&env, "dash", 1, &[("customer", "7")]).await;
    let browser = Browser::start(&env).await;
    browser.goto(&env, "/?meta=customer%3D42").await;
    assert_eq!(browser.count("#runs-body tr[data-run]").await, 1);
    assert_eq!(
        browser
            .count(&format!("#runs-body tr[data-run=\"{}\"]", ids[0]))
            .await,
        1
    );
    browser.goto(&env, "/overview").await;
    browser.shot("overview-postgres").await;
    assert_eq!(
        browser
            .count("#overview tr[data-workflow=dash] svg.spark")
            .await,
        3
    );
    browser.client.close().await.expect("end the session");
    worker.stop().await;
    drop(env);
    drop(cluster);
}
