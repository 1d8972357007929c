//! A run's history read one bounded page at a time
//! (`Store::run_history_page`): the newest page, pages after and before a
//! `seq` cursor, whether older and newer events lie outside each page, the
//! limit clamped to its bounds, another run's events never mixed in, and
//! paging back from the newest page reaching the oldest event; and step
//! logs paged the same way, with a step's last lines and the count before.

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
async fn two_runs(store: &Store) -> (weft_core::RunId, weft_core::RunId) {
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
        .run_history_page(
            weft_core::RunId::new(store.now_ms()),
            HistoryFrom::Newest,
            10,
        )
        .await;
    assert!(
        matches!(missing, Err(weft_store::Error::NotFound { .. })),
        "{missing:?}"
    );
}

conformance!(check_history_pages);

const TWO: &str = "
name: two
steps:
  - {name: a, handler: h}
  - {name: b, handler: h}
";

/// Step logs one bounded page at a time (`Store::run_logs_page`), of the
/// run or of one step, and a step's last lines with the count of the
/// earlier ones (`Store::step_log_tail`).
async fn check_log_pages(store: Store) {
    register(&store, TWO).await;
    let run_id = start(&store, "two", json!({})).await;
    let mut tasks = claim(&store, &["h"]).await;
    tasks.sort_by(|x, y| x.step.cmp(&y.step));
    assert_eq!(tasks.len(), 2);
    // a0..a9 and b0..b4, interleaved.
    for i in 0..10 {
        store
            .append_logs(&tasks[0].lease_id, &[format!("a{i}")])
            .await
            .expect("a's line");
        if i < 5 {
            store
                .append_logs(&tasks[1].lease_id, &[format!("b{i}")])
                .await
                .expect("b's line");
        }
    }
    let all = store.run_logs(&run_id, None).await.expect("all lines");
    assert_eq!(all.len(), 15);
    let text =
        |lines: &[weft_store::LogLine]| lines.iter().map(|l| l.line.clone()).collect::<Vec<_>>();

    // The run's lines 4 at a time, then the rest; the cursor is a seq.
    let first = store
        .run_logs_page(&run_id, None, 0, 4)
        .await
        .expect("a page");
    assert_eq!(text(&first.lines), text(&all[..4]));
    assert!(first.has_newer);
    let rest = store
        .run_logs_page(&run_id, None, all[3].seq, 1000)
        .await
        .expect("the rest");
    assert_eq!(text(&rest.lines), text(&all[4..]));
    assert!(!rest.has_newer);

    // One step's lines, paged: only its own.
    let a = store
        .run_logs_page(&run_id, Some("a"), 0, 6)
        .await
        .expect("a's page");
    assert_eq!(text(&a.lines), ["a0", "a1", "a2", "a3", "a4", "a5"]);
    assert!(a.has_newer);
    let a_rest = store
        .run_logs_page(&run_id, Some("a"), a.lines[5].seq, 6)
        .await
        .expect("a's rest");
    assert_eq!(text(&a_rest.lines), ["a6", "a7", "a8", "a9"]);
    assert!(!a_rest.has_newer);
    // Limits are clamped.
    let one = store
        .run_logs_page(&run_id, Some("b"), 0, 0)
        .await
        .expect("limit 0");
    assert_eq!(text(&one.lines), ["b0"]);

    // A step's tail: its last 3 lines and the 7 before them; a tail longer
    // than the step is all of it; a step without lines has none.
    let tail = store.step_log_tail(run_id, "a", 3).await.expect("a's tail");
    assert_eq!(text(&tail.lines), ["a7", "a8", "a9"]);
    assert_eq!((tail.earlier, tail.earlier_capped), (7, false));
    let whole = store
        .step_log_tail(run_id, "b", 200)
        .await
        .expect("b's tail");
    assert_eq!(text(&whole.lines), ["b0", "b1", "b2", "b3", "b4"]);
    assert_eq!(whole.earlier, 0);
    let none = store
        .step_log_tail(run_id, "nonesuch", 200)
        .await
        .expect("no lines");
    assert!(none.lines.is_empty() && none.earlier == 0);
}

conformance!(check_log_pages);
