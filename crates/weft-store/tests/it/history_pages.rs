//! A run's history read one bounded page at a time
//! (`Store::run_history_page`): the newest page, pages after and before a
//! `seq` cursor, whether older and newer events lie outside each page, the
//! limit clamped to its bounds, another run's events never mixed in, and
//! paging back from the newest page reaching the oldest event.

use serde_json::json;
use weft_store::{HistoryFrom, MAX_HISTORY_PAGE, Store};

use crate::support::{claim, complete, register, start};

const CHAIN: &str = "
name: chain
steps:
  - {name: a, handler: h}
  - {name: b, handler: h, depends_on: [a]}
  - {name: c, handler: h, depends_on: [b]}
  - {name: d, handler: h, depends_on: [c]}
";

/// Runs one `chain` run to its end (two of them interleaved, so the seqs
/// of one run are not contiguous); answers both run ids.
async fn two_runs(store: &Store) -> (String, String) {
    register(store, CHAIN).await;
    let one = start(store, "chain", json!({})).await;
    let two = start(store, "chain", json!({})).await;
    for _ in 0..4 {
        for task in claim(store, &["h"]).await {
            complete(store, &task, json!({})).await;
        }
    }
    (one, two)
}

async fn check_history_pages(store: Store) {
    let (run_id, other) = two_runs(&store).await;
    let all = store.run_events(&run_id, None).await.expect("all events");
    let seqs: Vec<i64> = all.iter().map(|e| e.seq).collect();
    assert!(seqs.len() > 10, "{seqs:?}");
    let n = seqs.len();

    // The newest page: the last 3 events, oldest first, older ones left.
    let newest = store
        .run_history_page(&run_id, HistoryFrom::Newest, 3)
        .await
        .expect("newest page");
    let page_seqs =
        |p: &weft_store::HistoryPage| p.events.iter().map(|e| e.seq).collect::<Vec<_>>();
    assert_eq!(page_seqs(&newest), seqs[n - 3..]);
    assert!(newest.has_older && !newest.has_newer);
    assert_eq!(newest.events[2].kind, all[n - 1].kind);

    // From the start: the first 4, newer ones left, nothing older.
    let first = store
        .run_history_page(&run_id, HistoryFrom::After(0), 4)
        .await
        .expect("first page");
    assert_eq!(page_seqs(&first), seqs[..4]);
    assert!(!first.has_older && first.has_newer);
    assert_eq!(first.events[0].kind, "run.created");

    // After a cursor in the middle: the next 4, both sides left.
    let middle = store
        .run_history_page(&run_id, HistoryFrom::After(seqs[3]), 4)
        .await
        .expect("middle page");
    assert_eq!(page_seqs(&middle), seqs[4..8]);
    assert!(middle.has_older && middle.has_newer);

    // Before a cursor: the 4 just before it.
    let before = store
        .run_history_page(&run_id, HistoryFrom::Before(seqs[8]), 4)
        .await
        .expect("page before");
    assert_eq!(page_seqs(&before), seqs[4..8]);
    assert!(before.has_older && before.has_newer);

    // A page that ends exactly at the last event says nothing is newer.
    let tail = store
        .run_history_page(&run_id, HistoryFrom::After(seqs[n - 5]), 4)
        .await
        .expect("tail page");
    assert_eq!(page_seqs(&tail), seqs[n - 4..]);
    assert!(tail.has_older && !tail.has_newer);

    // Paging back from the newest page reaches the oldest event, each
    // event once, and no event of the other run.
    let mut seen: Vec<i64> = Vec::new();
    let mut from = HistoryFrom::Newest;
    for _ in 0..n {
        let page = store
            .run_history_page(&run_id, from, 3)
            .await
            .expect("a page back");
        seen.splice(0..0, page_seqs(&page));
        if !page.has_older {
            break;
        }
        from = HistoryFrom::Before(page.first_seq().expect("a page with events"));
    }
    assert_eq!(seen, seqs, "paging back reads the whole history in order");

    // The limit is clamped: 0 reads one event, a huge one at most the cap.
    let one = store
        .run_history_page(&run_id, HistoryFrom::After(0), 0)
        .await
        .expect("limit 0");
    assert_eq!(page_seqs(&one), seqs[..1]);
    let everything = store
        .run_history_page(&run_id, HistoryFrom::After(0), u32::MAX)
        .await
        .expect("a huge limit");
    assert_eq!(page_seqs(&everything), seqs);
    assert!(!everything.has_older && !everything.has_newer);
    assert!(everything.events.len() <= MAX_HISTORY_PAGE as usize);

    // Past the end: an empty page with nothing either side; the other run
    // pages its own events only; an unknown run is `NotFound`.
    let past = store
        .run_history_page(&run_id, HistoryFrom::After(seqs[n - 1]), 10)
        .await
        .expect("past the end");
    assert!(past.events.is_empty() && !past.has_older && !past.has_newer);
    let theirs = store
        .run_history_page(&other, HistoryFrom::After(0), 1000)
        .await
        .expect("the other run");
    assert!(theirs.events.iter().all(|e| !seqs.contains(&e.seq)));
    let missing = store
        .run_history_page(&uuid::Uuid::now_v7().to_string(), HistoryFrom::Newest, 10)
        .await;
    assert!(
        matches!(missing, Err(weft_store::Error::NotFound { .. })),
        "{missing:?}"
    );
}

conformance!(check_history_pages);
