//! A run's history one bounded page at a time: the events after a `seq`,
//! before a `seq`, or the newest ones, read from the `(run_id, seq)` index
//! with a `LIMIT`, and whether older and newer events lie outside the page
//! (so a reader can page both ways without counting the whole history).

use serde_json::Value;

use crate::{Result, Store, args, db::Row, run_views::HistoryEvent};

/// The most events one history page holds (a larger limit is lowered to it).
pub const MAX_HISTORY_PAGE: u32 = 1000;

/// Where a page of a run's history starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryFrom {
    /// The oldest events: those with a `seq` greater than this (`0` for
    /// the very first), oldest first.
    After(i64),
    /// The events just before this `seq` (the page ends at the one before
    /// it), oldest first.
    Before(i64),
    /// The newest events of the run, oldest first.
    Newest,
}

/// One page of a run's history.
#[derive(Debug, Clone, Default)]
pub struct HistoryPage {
    /// At most the limit's events, in `seq` order.
    pub events: Vec<HistoryEvent>,
    /// Whether the run has events older than the page's first (page back
    /// with `HistoryFrom::Before(first seq)`).
    pub has_older: bool,
    /// Whether the run had events newer than the page's last when it was
    /// read (page on with `HistoryFrom::After(last seq)`). An empty page
    /// has neither.
    pub has_newer: bool,
}

impl HistoryPage {
    /// The `seq` of the page's first event.
    pub fn first_seq(&self) -> Option<i64> {
        self.events.first().map(|e| e.seq)
    }

    /// The `seq` of the page's last event.
    pub fn last_seq(&self) -> Option<i64> {
        self.events.last().map(|e| e.seq)
    }
}

const COLUMNS: &str = "seq, type, at, step, attempt, data";

/// A history (`weft_events`) or log (`weft_logs`) row, decoded.
pub(crate) fn event(r: &Row) -> Result<HistoryEvent> {
    Ok(HistoryEvent {
        seq: r.int("seq")?,
        kind: r.text("type")?,
        at_ms: r.int("at")?,
        step: r.opt_text("step")?,
        attempt: r.opt_int("attempt")?,
        data: {
            let text = r.text("data")?;
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        },
    })
}

impl Store {
    /// A page of at most `limit` (1 to [`MAX_HISTORY_PAGE`]; outside that
    /// range it is clamped) events of the run `id` (a run id or a trace id),
    /// from `from`. Two index range reads, whatever the history's length.
    /// Errors: `NotFound` for an unknown run; `Corrupt` for an event row
    /// that does not decode.
    pub async fn run_history_page(
        &self,
        id: impl Into<weft_core::RunRef>,
        from: HistoryFrom,
        limit: u32,
    ) -> Result<HistoryPage> {
        let run_id = self.resolve_run_id(id).await?;
        let limit = i64::from(limit.clamp(1, MAX_HISTORY_PAGE));
        let take = limit + 1;
        let (sql, cursor, backwards) = match from {
            HistoryFrom::After(seq) => (
                format!(
                    "SELECT {COLUMNS} FROM weft_events WHERE run_id = $1 AND seq > $2 ORDER BY seq LIMIT {take}"
                ),
                seq,
                false,
            ),
            HistoryFrom::Before(seq) => (
                format!(
                    "SELECT {COLUMNS} FROM weft_events WHERE run_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT {take}"
                ),
                seq,
                true,
            ),
            HistoryFrom::Newest => (
                format!(
                    "SELECT {COLUMNS} FROM weft_events WHERE run_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT {take}"
                ),
                i64::MAX,
                true,
            ),
        };
        let rows = self.pool().fetch_all(&sql, args![&run_id, cursor]).await?;
        let beyond = rows.len() as i64 > limit;
        let mut events = rows
            .iter()
            .take(limit as usize)
            .map(event)
            .collect::<Result<Vec<_>>>()
            .map_err(|err| err.in_run(run_id))?;
        if backwards {
            events.reverse();
        }
        let (Some(first), Some(last)) =
            (events.first().map(|e| e.seq), events.last().map(|e| e.seq))
        else {
            return Ok(HistoryPage::default());
        };
        // The side the page was read towards is known from the extra row;
        // the other side is one probe of the index.
        let exists = |sql: &'static str, seq: i64| async move {
            Ok::<bool, crate::Error>(
                self.pool()
                    .fetch_optional(sql, args![&run_id, seq])
                    .await?
                    .is_some(),
            )
        };
        let (has_older, has_newer) = match from {
            HistoryFrom::After(_) => (
                exists(
                    "SELECT seq FROM weft_events WHERE run_id = $1 AND seq < $2 LIMIT 1",
                    first,
                )
                .await?,
                beyond,
            ),
            HistoryFrom::Before(_) => (
                beyond,
                exists(
                    "SELECT seq FROM weft_events WHERE run_id = $1 AND seq > $2 LIMIT 1",
                    last,
                )
                .await?,
            ),
            HistoryFrom::Newest => (beyond, false),
        };
        Ok(HistoryPage {
            events,
            has_older,
            has_newer,
        })
    }
}

impl Store {
    /// Every event of the run `id` whose kind is one of `kinds`, in `seq`
    /// order: what a reader that needs only the run's and steps' own events
    /// reads without the per-attempt and per-child ones (which grow with a
    /// `for_each` step's items). Errors as [`Store::run_history_page`].
    pub async fn run_events_of_kinds(
        &self,
        id: impl Into<weft_core::RunRef>,
        kinds: &[weft_core::EventKind],
    ) -> Result<Vec<HistoryEvent>> {
        let run_id = self.resolve_run_id(id).await?;
        if kinds.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {COLUMNS} FROM weft_events WHERE run_id = $1 AND type IN ({}) ORDER BY seq",
            crate::db::placeholders(2, kinds.len())
        );
        let mut values: Vec<crate::db::Arg> = vec![run_id.into()];
        values.extend(kinds.iter().map(|k| crate::db::Arg::from(k.as_str())));
        let rows = self.pool().fetch_all(&sql, values).await?;
        rows.iter()
            .map(event)
            .collect::<Result<Vec<_>>>()
            .map_err(|err| err.in_run(run_id))
    }
}
