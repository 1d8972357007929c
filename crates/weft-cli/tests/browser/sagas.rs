//! The run page of sagas and fan-out in Chromium: a compensated saga's
//! nodes and its undo bars in the order they ran, with the run's original
//! failure; a failed undo skipped from the page (comment, confirmation)
//! making the run `compensated`; and a 50-item `for_each` run drawn as one
//! node with its children's counts and one Gantt row, under the page-weight
//! budget.

use fantoccini::Locator;
use serde_json::{Value, json};
use weft_worker::{HandlerError, TaskContext};

use crate::{
    Browser,
    harness::{Env, SdkWorker, step},
};

/// Undone in reverse: `charge` first, then `reserve`; `ship` always fails.
const SAGA: &str = "\
name: dash_saga
steps:
  - {name: reserve, handler: saga.do, compensate: saga.undo}
  - {name: charge, handler: saga.do, compensate: saga.undo, depends_on: [reserve]}
  - {name: ship, handler: saga.ship, depends_on: [charge]}
";

/// As `SAGA`, but `charge`'s undo can never succeed.
const SAGA_STUCK: &str = "\
name: dash_saga_stuck
steps:
  - {name: reserve, handler: saga.do, compensate: saga.undo}
  - {name: charge, handler: saga.do, compensate: saga.undo_broken, depends_on: [reserve]}
  - {name: ship, handler: saga.ship, depends_on: [charge]}
";

/// One child per item; the item `"bad"` fails for good.
const FAN: &str = "\
name: dash_fan
steps:
  - {name: work, handler: fan.work, for_each: 'input.items', max_items: 100}
";

/// The page-weight budget of a page before its data (issue 14): 150 KB.
const PAGE_BUDGET: u64 = 150 * 1024;

fn worker(env: &Env) -> SdkWorker {
    SdkWorker::spawn(
        env.sdk_worker("saga-worker")
            .handler("saga.do", |ctx: TaskContext| async move {
                Ok(json!({"done": ctx.task.step}))
            })
            .handler("saga.ship", |_: TaskContext| async move {
                Err::<Value, _>(HandlerError::permanent(
                    "the carrier refused <script>x</script>",
                ))
            })
            .handler("saga.undo", |ctx: TaskContext| async move {
                Ok(json!({"undone": ctx.task.step}))
            })
            .handler("saga.undo_broken", |_: TaskContext| async move {
                Err::<Value, _>(HandlerError::permanent("the refund API is gone"))
            })
            .handler("fan.work", |ctx: TaskContext| async move {
                match ctx.input().get("item") {
                    Some(Value::String(s)) if s == "bad" => {
                        Err(HandlerError::permanent("item bad is malformed"))
                    }
                    item => Ok(json!({"item": item})),
                }
            })
            .build(),
    )
}

/// A screenshot of the whole page (a taller window), then the usual one.
async fn tall_shot(browser: &Browser, name: &str) {
    browser
        .client
        .set_window_size(1200, 1700)
        .await
        .expect("a taller window");
    browser.shot(name).await;
    browser
        .client
        .set_window_size(1200, 700)
        .await
        .expect("the usual window");
}

/// The steps the page's elements matching `css` name, in page order.
async fn steps_of(browser: &Browser, css: &str) -> Vec<String> {
    let found = browser
        .js(&format!(
            "return [...document.querySelectorAll('{css}')].map(e => e.dataset.step)"
        ))
        .await;
    serde_json::from_value(found).expect("a list of step names")
}

/// A compensated saga's page: the undone nodes, the undo bars on the time
/// axis in the order they ran (linked to the attempts they undo) and the
/// Undo section with the original failure.
async fn compensated_saga_page(env: &Env, browser: &Browser) {
    let run_id = env.start_run("dash_saga", json!({})).await;
    let run = env.wait_finished(&run_id).await;
    assert_eq!(run.status, "compensated", "{run:#?}");
    browser.goto(env, &format!("/runs/{run_id}")).await;
    tall_shot(browser, "run-saga").await;
    // The undo bars and the chain alone (README's saga screenshot).
    for (css, name) in [("#gantt", "run-saga-gantt"), ("#undo", "run-saga-undo")] {
        let png = browser
            .client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("find {css}: {e}"))
            .screenshot()
            .await
            .expect("a screenshot of the element");
        std::fs::write(browser.shots.join(format!("{name}.png")), png).expect("save it");
    }
    let status = |s: &str| {
        format!("return document.querySelector('#dag .node[data-step={s}]').dataset.status")
    };
    assert_eq!(browser.js(&status("reserve")).await, json!("compensated"));
    assert_eq!(browser.js(&status("charge")).await, json!("compensated"));
    assert_eq!(browser.js(&status("ship")).await, json!("failed"));
    let fill = browser
        .js("return getComputedStyle(document.querySelector('#dag .node[data-step=charge] rect')).fill")
        .await;
    assert_eq!(
        fill,
        json!("rgb(240, 230, 255)"),
        "a compensated step is violet"
    );
    // One undo bar per undo, in the order they ran: charge, then reserve.
    let undo_rows = "#gantt .row[data-kind=compensate]";
    assert_eq!(
        steps_of(browser, undo_rows).await,
        ["charge", "reserve"],
        "undos in reverse DAG order"
    );
    let xs = browser
        .js(&format!(
            "return [...document.querySelectorAll('{undo_rows} rect.seg')].map(r => [r.dataset.kind, +r.getAttribute('x')])"
        ))
        .await;
    let xs: Vec<(String, f64)> = serde_json::from_value(xs).expect("the undo bars");
    assert_eq!(xs.len(), 2, "{xs:?}");
    assert!(xs.iter().all(|(k, _)| k == "undo"), "{xs:?}");
    assert!(xs[0].1 <= xs[1].1, "charge's undo starts first: {xs:?}");
    // Each undo bar is labelled as the undo of its step and linked to the
    // forward attempt it undoes.
    let charge = step(&run, "charge");
    let forward = charge
        .attempts
        .iter()
        .find(|a| a.kind == "forward")
        .expect("charge's forward attempt");
    let link = browser
        .js(&format!(
            "return document.querySelector('{undo_rows}[data-step=charge] a').getAttribute('href')"
        ))
        .await;
    assert_eq!(link, json!(format!("#attempt-charge-{}", forward.attempt)));
    assert_eq!(
        browser
            .count(&format!(
                "#step-charge tr#attempt-charge-{}",
                forward.attempt
            ))
            .await,
        1,
        "the forward attempt the link points at"
    );
    let title = browser
        .js(&format!(
            "return document.querySelector('{undo_rows}[data-step=charge] rect title').textContent"
        ))
        .await;
    assert!(
        title
            .as_str()
            .is_some_and(|t| t.starts_with(&format!("undo of charge #{}", forward.attempt))),
        "{title}"
    );
    // The Undo section: the chain in order, each completed, and why the run
    // failed in the first place (the error shown as text).
    assert_eq!(
        steps_of(browser, "#undo-chain tbody tr").await,
        ["charge", "reserve"]
    );
    let cause = browser.text("#undo .undo-cause").await;
    assert!(
        cause.contains("handler_error") && cause.contains("<script>x</script>"),
        "{cause}"
    );
    assert_eq!(
        browser.count("#undo-chain tr[data-undo=completed]").await,
        2
    );
    // A compensated run has nothing to retry or skip.
    assert_eq!(browser.count("#run-actions button").await, 0);
}

/// A run whose undo failed: retry offered for the failed undos, and the
/// undo skipped from the page with a comment makes the run `compensated`.
async fn skip_undo_from_the_page(env: &Env, browser: &Browser) {
    let run_id = env.start_run("dash_saga_stuck", json!({})).await;
    let run = env.wait_finished(&run_id).await;
    assert_eq!(run.status, "failed", "{run:#?}");
    assert_eq!(run.reason.as_deref(), Some("compensation_failed"));
    browser.goto(env, &format!("/runs/{run_id}")).await;
    browser.shot("run-saga-undo-failed").await;
    assert_eq!(
        browser.text("#run-actions button[data-act=retry]").await,
        "Retry failed undos"
    );
    assert_eq!(
        browser
            .count("#run-actions [data-undo=charge] button[data-act=skip-undo]")
            .await,
        1
    );
    assert_eq!(
        browser
            .js("return document.querySelector('#dag .node[data-step=charge]').dataset.undo")
            .await,
        json!("failed"),
        "the failed undo is marked on its node"
    );
    assert!(
        browser
            .text("#undo-chain tr[data-step=charge]")
            .await
            .contains("the refund API is gone")
    );
    browser
        .click("#run-actions [data-undo=charge] button[data-act=skip-undo]")
        .await;
    let question = browser.confirm(Some("refunded by hand")).await;
    assert!(
        question.starts_with("Skip the undo of step charge?"),
        "{question}"
    );
    browser
        .until(
            "the page shows the run compensated",
            "return document.getElementById('run-status').textContent === 'compensated'",
        )
        .await;
    let run = env.client.get_run(&run_id).await.expect("the run");
    assert_eq!(run.status, "compensated");
    assert_eq!(step(&run, "charge").undo.as_deref(), Some("skipped"));
    assert_eq!(
        browser
            .js("return document.querySelector('#dag .node[data-step=charge]').dataset.undo")
            .await,
        json!("skipped")
    );
    let people = browser.text("#run-people").await;
    assert!(
        people.contains("compensation.skipped") && people.contains("refunded by hand"),
        "{people}"
    );
    browser.shot("run-saga-undo-skipped").await;
}

/// The page's weight in bytes, uncompressed: the document and every
/// resource it loaded (Resource Timing's `decodedBodySize`).
async fn page_weight(browser: &Browser) -> u64 {
    let bytes = browser
        .js("return performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource')).reduce((n, e) => n + e.decodedBodySize, 0)")
        .await;
    bytes.as_u64().expect("a byte count")
}

/// A 50-item fan-out: one node with its counts, one Gantt row, the
/// children's counts in the steps table, under the weight budget; a failing
/// child's error shown in the step.
async fn for_each_page(env: &Env, browser: &Browser) {
    let items: Vec<Value> = (0..50).map(|i| json!(i)).collect();
    let run_id = env.start_run("dash_fan", json!({ "items": items })).await;
    let run = env.wait_finished(&run_id).await;
    assert_eq!(run.status, "completed", "{run:#?}");
    let attempts = step(&run, "work").attempts.len();
    browser.goto(env, &format!("/runs/{run_id}")).await;
    tall_shot(browser, "run-for-each").await;
    assert_eq!(
        browser.count("#dag .node").await,
        1,
        "one node for 50 children"
    );
    assert_eq!(
        browser.text("#dag .node[data-step=work] text").await,
        "work · 50/50 ✓ 0 ✗"
    );
    assert_eq!(
        browser.count("#gantt .row[data-step=work]").await,
        1,
        "the children collapse into one row"
    );
    assert_eq!(
        browser
            .js("return document.querySelector('#gantt .row[data-step=work]').dataset.kind")
            .await,
        json!("children")
    );
    assert!(
        browser
            .text("#steps tr[data-step=work] .children")
            .await
            .starts_with("children 50/50 ✓ 0 ✗")
    );
    // The critical path goes through the fan-out as one span, not one
    // segment per child.
    let on_path = browser.count("#critical-path .seg-label").await;
    assert!((1..=3).contains(&on_path), "{on_path} segments on the path");
    // The attempts table is capped, the rest in the run's JSON.
    assert_eq!(
        browser.count("#step-work table.attempts tbody tr").await,
        20
    );
    let html_bytes = browser
        .js("return document.documentElement.outerHTML.length")
        .await;
    let weight = page_weight(browser).await;
    println!(
        "page weight of a 50-item for_each run ({attempts} attempts): {weight} bytes loaded, {html_bytes} characters of HTML"
    );
    assert!(
        weight > 0 && weight <= PAGE_BUDGET,
        "the page weighs {weight} bytes"
    );

    // A child that fails for good: the node counts it and the step names
    // it with its error.
    let run_id = env
        .start_run("dash_fan", json!({ "items": [1, 2, "bad", 4] }))
        .await;
    let run = env.wait_finished(&run_id).await;
    assert_eq!(run.status, "failed", "{run:#?}");
    browser.goto(env, &format!("/runs/{run_id}")).await;
    let failed = browser
        .js("return document.querySelector('#dag .node[data-step=work]').dataset.childrenFailed")
        .await;
    assert_eq!(failed, json!("1"));
    let listed = browser
        .js("return [...document.querySelectorAll('#step-work .failed-children li')].map(l => l.textContent)")
        .await;
    let listed: Vec<String> = serde_json::from_value(listed).expect("the failed children");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert!(
        listed[0].starts_with("work[2]") && listed[0].contains("item bad is malformed"),
        "{listed:?}"
    );
    browser.shot("run-for-each-failed").await;
}

/// Registers the workflows and runs the pages; `full` adds the skip and
/// the fan-out (the Postgres smoke runs the compensated saga only).
pub(crate) async fn saga_and_fan_out_pages(env: &Env, browser: &Browser, full: bool) {
    env.register(SAGA).await;
    env.register(SAGA_STUCK).await;
    env.register(FAN).await;
    let _worker = worker(env);
    compensated_saga_page(env, browser).await;
    if full {
        skip_undo_from_the_page(env, browser).await;
        for_each_page(env, browser).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_sagas_and_fan_out_in_chromium() {
    let db = weft_testkit::sqlite_database();
    let env = Env::start(&db.url).await;
    let browser = Browser::start(&env).await;
    saga_and_fan_out_pages(&env, &browser, true).await;
    browser.client.close().await.expect("end the session");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_sagas_smoke_on_postgres() {
    let cluster = weft_testkit::PgCluster::start();
    let url = cluster.create_database();
    let env = Env::start(&url).await;
    let browser = Browser::start(&env).await;
    saga_and_fan_out_pages(&env, &browser, false).await;
    browser.client.close().await.expect("end the session");
    drop(env);
    drop(cluster);
}
