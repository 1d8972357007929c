//! The run page's history table, one bounded page at a time: the newest
//! [`HISTORY_PAGE`] events by default (a live run's page keeps showing what
//! just happened as the stream refreshes it), with links to older and newer
//! pages on a `seq` cursor (`?before=SEQ`, `?after=SEQ`, `?after=0` for the
//! oldest) that work without JavaScript; and the event kinds the rest of
//! the page is computed from, which do not grow with a `for_each` step's
//! children.

use serde::{Deserialize, Serialize};
use weft_core::EventKind;
use weft_store::{HistoryFrom, HistoryPage};

use super::{
    PageError, format,
    payload::{MAX_EVENT_BYTES, Shown, clip},
};
use crate::{convert, present::RunPresenter};

/// The most history events one run page shows. At most 512 bytes of data
/// each plus the row's markup, a page of them stays well under the 150 KB
/// page budget (about 70 KB at worst), while a run of a few steps still
/// shows its whole history on one page.
pub(crate) const HISTORY_PAGE: u32 = 100;

/// The run page's query: which page of the history it shows.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct HistoryQuery {
    /// The page of events just before this `seq`.
    before: Option<i64>,
    /// The page of events after this `seq` (`0`: the oldest).
    after: Option<i64>,
}

impl HistoryQuery {
    /// Where the page starts; 400 for a negative cursor or both given.
    pub(crate) fn from(&self) -> Result<HistoryFrom, PageError> {
        match (self.before, self.after) {
            (None, None) => Ok(HistoryFrom::Newest),
            (Some(seq), None) if seq >= 0 => Ok(HistoryFrom::Before(seq)),
            (None, Some(seq)) if seq >= 0 => Ok(HistoryFrom::After(seq)),
            (Some(_), Some(_)) => Err(PageError::bad_request(
                "give the history's `before` or `after`, not both",
            )),
            _ => Err(PageError::bad_request(
                "`before` and `after` are a history event's seq (0 or more)",
            )),
        }
    }
}

/// The events the run page computes its critical path, people's actions
/// and undo chain from: the run's and steps' own events, without the
/// per-attempt and per-child ones (one or more per `for_each` item).
pub(crate) fn page_kinds() -> Vec<EventKind> {
    EventKind::ALL
        .iter()
        .copied()
        .filter(|kind| {
            !matches!(
                kind,
                EventKind::ChildReady
                    | EventKind::ChildRetrying
                    | EventKind::ChildCompleted
                    | EventKind::ChildFailed
                    | EventKind::ChildCompensating
                    | EventKind::ChildCompensationRetrying
                    | EventKind::ChildCompensated
                    | EventKind::ChildCompensationFailed
                    | EventKind::AttemptClaimed
                    | EventKind::AttemptCompleted
                    | EventKind::AttemptFailed
                    | EventKind::AttemptReleased
                    | EventKind::LeaseExpired
            )
        })
        .collect()
}

/// One row of the history table.
#[derive(Serialize)]
struct Row {
    seq: i64,
    at: String,
    kind: String,
    step: Option<String>,
    attempt: Option<i64>,
    data: Shown,
}

/// The history table's page: its rows and the links around it.
#[derive(Serialize)]
pub(crate) struct HistoryView {
    rows: Vec<Row>,
    /// `#first to #last` of the shown events, `None` when none.
    range: Option<String>,
    /// Links (query strings) to the oldest, older, newer and newest pages,
    /// each `None` where there is no such page.
    oldest: Option<String>,
    older: Option<String>,
    newer: Option<String>,
    newest: Option<String>,
    /// Whether this is not the newest page (live updates then keep the
    /// page where it is).
    paged: bool,
}

/// The table of `page`, its data redacted by `presenter`, read from `from`.
pub(crate) fn view(page: HistoryPage, from: HistoryFrom, presenter: &RunPresenter) -> HistoryView {
    let link = |query: String| Some(format!("?{query}#history"));
    let (first, last) = (page.first_seq(), page.last_seq());
    let newest_page = from == HistoryFrom::Newest;
    let older = page.has_older;
    let newer = page.has_newer;
    let mut events = convert::events(page.events);
    presenter.events(&mut events);
    HistoryView {
        range: first.zip(last).map(|(a, b)| format!("#{a} to #{b}")),
        oldest: older.then(|| link("after=0".to_owned())).flatten(),
        older: first
            .filter(|_| older)
            .and_then(|seq| link(format!("before={seq}"))),
        newer: last
            .filter(|_| newer)
            .and_then(|seq| link(format!("after={seq}"))),
        newest: (!newest_page && newer)
            .then(|| Some("?#history".to_owned()))
            .flatten(),
        paged: !newest_page,
        rows: events
            .into_iter()
            .map(|e| Row {
                seq: e.seq,
                at: format::short_time(&e.at),
                data: clip(e.data.to_string(), MAX_EVENT_BYTES),
                kind: e.kind,
                step: e.step,
                attempt: e.attempt,
            })
            .collect(),
    }
}
