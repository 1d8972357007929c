//! A run with a 1,000-item `for_each` step (thousands of history events)
//! over real HTTP: its run page, with the dashboard's CSS and script, stays
//! under the 150 KB page budget; the history table shows one page of the
//! newest events and its older links, followed without JavaScript, reach
//! the run's first event, each event once; and `GET /v1/runs/{id}/events`
//! pages with `limit` and `next_after` (bad limits are 400
//! `invalid_limit`), while the client still reads the whole history. The
//! page's other sections that grow with the children stay bounded too: a
//! `for_each` step's child undos are one Gantt row, and a step's long log
//! lines are cut (the whole in the step's logs JSON, paged like the
//! history).

use std::{collections::BTreeSet, time::Duration};

use serde_json::{Value, json};
use weft_worker::{HandlerError, TaskContext};

use crate::harness::{Env, SdkWorker};

const BIG_FAN: &str = "name: big_fan
steps:
  - {name: work, handler: big.work, for_each: 'input.items', max_items: 1000, max_parallel: 50}
";

/// Each child logs a 5 KB line; `boom` fails for good, so every completed
/// child is undone.
const FAN_UNDO: &str = "name: big_fan_undo
steps:
  - {name: work, handler: big.work_loud, compensate: big.undo, for_each: 'input.items', max_items: 100, max_parallel: 20}
  - {name: boom, handler: big.boom, depends_on: [work]}
";

/// The page budget of issue 14: HTML + CSS + JS, uncompressed.
const PAGE_BUDGET: usize = 150 * 1024;

/// The run page's history page size (`dashboard::history::HISTORY_PAGE`).
const HISTORY_PAGE: usize = 100;

async fn get(env: &Env, path: &str) -> (u16, String) {
    let response = env
        .http
        .get(format!("{}{path}", env.server.url))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = response.status().as_u16();
    (status, response.text().await.expect("a body"))
}

/// The `seq`s of the history table's rows, in page order.
fn row_seqs(page: &str) -> Vec<i64> {
    page.split("<tr data-seq=\"")
        .skip(1)
        .map(|rest| {
            rest[..rest.find('"').expect("a closing quote")]
                .parse()
                .expect("a seq")
        })
        .collect()
}

/// The `href` of the element with `id`, if the page has it.
fn link(page: &str, id: &str) -> Option<String> {
    let needle = format!("id=\"{id}\" href=\"");
    let rest = &page[page.find(&needle)? + needle.len()..];
    Some(rest[..rest.find('"')?].replace("&amp;", "&"))
}

pub async fn thousand_children_run_page_is_paged(db_url: String) {
    // This test is about the page, not leases: a lease longer than the
    // suite's 1 s keeps a busy 2-core machine from failing a child whose
    // heartbeat came late.
    let env = Env::start_with(&db_url, &["--lease-timeout", "10s"]).await;
    env.register(BIG_FAN).await;
    let worker = SdkWorker::spawn(
        env.sdk_worker("sdk-big-fan")
            .concurrency(50)
            .handler("big.work", |ctx: TaskContext| async move {
                let item = ctx.task.input["item"].clone();
                ctx.log(vec![format!("child {item} says {}", "x".repeat(200))])
                    .await;
                Ok(json!({ "item": item }))
            })
            .build(),
    );
    let items: Vec<Value> = (0..1000).map(|i| json!(i)).collect();
    let run_id = env.start_run("big_fan", json!({ "items": items })).await;
    let run = env
        .wait_run(
            &run_id,
            "a terminal status",
            Duration::from_secs(300),
            |run| crate::harness::is_terminal(&run.status),
        )
        .await;
    worker.stop().await;
    assert_eq!(run.status, "completed", "{:?}", run.error);

    // The whole history, through the client (which follows the pages).
    let all: Vec<i64> = env
        .client
        .run_events(&run_id, None)
        .await
        .expect("the history")
        .events
        .iter()
        .map(|e| e.seq)
        .collect();
    assert!(all.len() > 2000, "{} events", all.len());
    assert!(
        all.windows(2).all(|w| w[0] < w[1]),
        "in seq order, once each"
    );

    // The page, its CSS and its script: under the budget.
    let (status, page) = get(&env, &format!("/runs/{run_id}")).await;
    assert_eq!(status, 200, "{page}");
    let (_, css) = get(&env, "/static/dashboard.css").await;
    let (_, js) = get(&env, "/static/dashboard.js").await;
    let weight = page.len() + css.len() + js.len();
    println!(
        "run page of a 1,000-child run ({} events): {weight} bytes (HTML {}, CSS {}, JS {})",
        all.len(),
        page.len(),
        css.len(),
        js.len()
    );
    assert!(weight <= PAGE_BUDGET, "the page weighs {weight} bytes");

    // The newest page of the history, then back page by page to the first
    // event, without JavaScript: each event once, in order.
    let newest = row_seqs(&page);
    assert_eq!(newest, all[all.len() - HISTORY_PAGE..], "the newest events");
    assert!(link(&page, "history-newer").is_none(), "nothing is newer");
    let mut seen: Vec<i64> = newest;
    let mut current = page;
    let mut pages = 1;
    while let Some(older) = link(&current, "history-older") {
        assert!(older.starts_with("?before="), "{older}");
        let (status, body) = get(&env, &format!("/runs/{run_id}{older}")).await;
        assert_eq!(status, 200, "{body}");
        let rows = row_seqs(&body);
        assert!(!rows.is_empty() && rows.len() <= HISTORY_PAGE, "{older}");
        assert!(link(&body, "history-newer").is_some(), "a way back");
        seen.splice(0..0, rows);
        current = body;
        pages += 1;
        assert!(pages <= all.len() / HISTORY_PAGE + 1, "paging does not end");
    }
    assert_eq!(seen, all, "the older links reach the first event");
    assert!(
        current.contains("run.created"),
        "the oldest page starts the run"
    );

    // The oldest link goes straight there; a newer link from it goes on.
    let oldest = link(&row_page(&env, &run_id).await, "history-oldest").expect("an oldest link");
    let (_, first_page) = get(&env, &format!("/runs/{run_id}{oldest}")).await;
    assert_eq!(row_seqs(&first_page), all[..HISTORY_PAGE]);
    let newer = link(&first_page, "history-newer").expect("a newer link");
    let (_, second) = get(&env, &format!("/runs/{run_id}{newer}")).await;
    assert_eq!(row_seqs(&second), all[HISTORY_PAGE..2 * HISTORY_PAGE]);
    for bad in ["?before=-1", "?after=x", "?before=1&after=2"] {
        let (status, body) = get(&env, &format!("/runs/{run_id}{bad}")).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }

    // The API: a page of `limit` events with the next cursor, followed to
    // the end (where `next_after` is null); no `limit` is at most 1,000.
    let first = env
        .client
        .run_events_page(&run_id, None, Some(10))
        .await
        .expect("a page of 10");
    let page_seqs =
        |events: &[weft_api::EventRecord]| events.iter().map(|e| e.seq).collect::<Vec<_>>();
    assert_eq!(page_seqs(&first.events), all[..10]);
    assert_eq!(first.next_after, Some(all[9]));
    let default = env
        .client
        .run_events_page(&run_id, None, None)
        .await
        .expect("the default page");
    assert_eq!(default.events.len(), 1000);
    assert_eq!(default.next_after, Some(all[999]));
    let mut paged: Vec<i64> = Vec::new();
    let mut after = None;
    let mut requests = 0;
    loop {
        let page = env
            .client
            .run_events_page(&run_id, after, Some(700))
            .await
            .expect("a page");
        requests += 1;
        paged.extend(page_seqs(&page.events));
        match page.next_after {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(paged, all);
    assert_eq!(requests, all.len().div_ceil(700));
    let unique: BTreeSet<i64> = paged.iter().copied().collect();
    assert_eq!(unique.len(), all.len());
    for bad in ["limit=0", "limit=1001", "limit=-1", "limit=ten"] {
        let (status, body) = get(&env, &format!("/v1/runs/{run_id}/events?{bad}")).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(
            body.contains("invalid_limit") || body.contains("invalid_query"),
            "{bad}: {body}"
        );
    }
    let (status, body) = get(&env, &format!("/v1/runs/{run_id}/events?limit=0")).await;
    assert_eq!(status, 400);
    assert!(body.contains("\"invalid_limit\""), "{body}");
}

/// A compensated 60-child run: its 60 child undos are one Gantt row (with
/// the step's forward row, not one row per undo), its 5 KB log lines are
/// cut on the page with the way to the whole, and the page stays light.
pub async fn child_undos_and_long_log_lines_stay_bounded(db_url: String) {
    let env = Env::start(&db_url).await;
    env.register(FAN_UNDO).await;
    let worker = SdkWorker::spawn(
        env.sdk_worker("sdk-big-fan-undo")
            .concurrency(20)
            .handler("big.work_loud", |ctx: TaskContext| async move {
                let item = ctx.task.input["item"].clone();
                ctx.log(vec![format!("child {item}: {}", "y".repeat(5000))])
                    .await;
                Ok(json!({ "item": item }))
            })
            .handler("big.undo", |_: TaskContext| async move {
                Ok(json!({"undone": true}))
            })
            .handler("big.boom", |_: TaskContext| async move {
                Err::<Value, _>(HandlerError::permanent("boom"))
            })
            .build(),
    );
    let items: Vec<Value> = (0..60).map(|i| json!(i)).collect();
    let run_id = env
        .start_run("big_fan_undo", json!({ "items": items }))
        .await;
    let run = env
        .wait_run(
            &run_id,
            "a terminal status",
            Duration::from_secs(120),
            |run| crate::harness::is_terminal(&run.status),
        )
        .await;
    worker.stop().await;
    assert_eq!(run.status, "compensated", "{:?}", run.error);
    let undos = crate::harness::step(&run, "work")
        .attempts
        .iter()
        .filter(|a| a.kind == "compensate")
        .count();
    assert_eq!(undos, 60, "each child undone");

    let page = row_page(&env, &run_id).await;
    let undo_rows = page
        .matches("data-step=\"work\" data-attempt=\"\" data-kind=\"compensate\"")
        .count();
    let per_attempt_undo_rows = page
        .matches("data-kind=\"compensate\" data-undoes=")
        .count();
    assert_eq!(
        (undo_rows, per_attempt_undo_rows),
        (1, 0),
        "the child undos are one Gantt row"
    );
    assert!(page.contains("undo work ×60"), "the row says how many");
    // Long lines are cut, the way to the whole given; never 5 KB of one.
    assert!(
        !page.contains(&"y".repeat(2000)),
        "a long line reached the page whole"
    );
    assert!(
        page.contains(&"y".repeat(900)),
        "the start of a line is shown"
    );
    assert!(
        page.contains("lines over 1 KB cut") || page.contains("earlier ones"),
        "the page says lines were left out"
    );
    assert!(page.contains(&format!("/v1/runs/{run_id}/logs?step=work")));
    // The step's logs JSON, the page's way to the whole: paged with
    // `limit` and `next_after`, the client reading every page.
    let all = env
        .client
        .run_logs(&run_id, Some("work"))
        .await
        .expect("every line");
    assert_eq!(all.lines.len(), 60);
    assert_eq!(all.next_after, None);
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = env
            .client
            .run_logs_page(&run_id, Some("work"), after, Some(25))
            .await
            .expect("a page of lines");
        assert!(page.lines.len() <= 25);
        paged.extend(page.lines.into_iter().map(|l| l.seq));
        match page.next_after {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(paged, all.lines.iter().map(|l| l.seq).collect::<Vec<_>>());
    for bad in ["limit=0", "limit=1001"] {
        let (status, body) = get(&env, &format!("/v1/runs/{run_id}/logs?{bad}")).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body.contains("\"invalid_limit\""), "{bad}: {body}");
    }
    println!(
        "run page of a compensated 60-child run: {} bytes of HTML",
        page.len()
    );
    assert!(page.len() <= PAGE_BUDGET / 2, "{} bytes", page.len());
}

/// The run page's newest page.
async fn row_page(env: &Env, run_id: &str) -> String {
    let (status, page) = get(env, &format!("/runs/{run_id}")).await;
    assert_eq!(status, 200, "{page}");
    page
}
