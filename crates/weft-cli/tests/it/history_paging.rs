//! A run with a 1,000-item `for_each` step (thousands of history events)
//! over real HTTP: its run page, with the dashboard's CSS and script, stays
//! under the 150 KB page budget; the history table shows one page of the
//! newest events and its older links, followed without JavaScript, reach
//! the run's first event, each event once; and `GET /v1/runs/{id}/events`
//! pages with `limit` and `next_after` (bad limits are 400
//! `invalid_limit`), while the client still reads the whole history.

use std::{collections::BTreeSet, time::Duration};

use serde_json::{Value, json};
use weft_worker::TaskContext;

use crate::harness::{Env, SdkWorker};

const BIG_FAN: &str = "name: big_fan
steps:
  - {name: work, handler: big.work, for_each: 'input.items', max_items: 1000, max_parallel: 50}
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
    let env = Env::start(&db_url).await;
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

/// The run page's newest page.
async fn row_page(env: &Env, run_id: &str) -> String {
    let (status, page) = get(env, &format!("/runs/{run_id}")).await;
    assert_eq!(status, 200, "{page}");
    page
}
