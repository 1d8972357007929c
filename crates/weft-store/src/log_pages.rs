//! A run's step logs one bounded page at a time: the lines after a `seq`
//! (of the run, or of one step) with a `LIMIT`, and a step's last lines
//! with a capped count of the earlier ones, so that no reader loads every
//! line of a run whose `for_each` children each logged.

use crate::{Result, Store, args, db::Row, run_views::LogLine};

/// The most log lines one page holds (a larger limit is lowered to it).
pub const MAX_LOG_PAGE: u32 = 1000;

/// The most earlier lines [`Store::step_log_tail`] counts; past it the
/// count says "at least this many".
pub const MAX_COUNTED_LINES: u64 = 10_000;

/// One page of a run's log lines.
#[derive(Debug, Clone, Default)]
pub struct LogPage {
    /// At most the limit's lines, in `seq` order.
    pub lines: Vec<LogLine>,
    /// Whether more lines followed the page's last when it was read (page
    /// on after its `seq`).
    pub has_newer: bool,
}

/// A step's last log lines and how many came before them.
#[derive(Debug, Clone, Default)]
pub struct LogTail {
    /// At most the asked number of the step's last lines, in `seq` order.
    pub lines: Vec<LogLine>,
    /// How many of the step's lines came before `lines`, counted up to
    /// [`MAX_COUNTED_LINES`].
    pub earlier: u64,
    /// Whether `earlier` stopped at [`MAX_COUNTED_LINES`] (there are at
    /// least that many).
    pub earlier_capped: bool,
}

/// A history (`weft_events`) or log (`weft_logs`) row, decoded.
pub(crate) fn line(r: &Row) -> Result<LogLine> {
    Ok(LogLine {
        seq: r.int("seq")?,
        at_ms: r.int("at")?,
        step: r.text("step")?,
        attempt: r.int("attempt")?,
        line: r.text("line")?,
    })
}

impl Store {
    /// At most `limit` (clamped to 1 ..= [`MAX_LOG_PAGE`]) log lines of the
    /// run `id` (a run id or a trace id), of `step` only when given, with a
    /// `seq` greater than `after`. Errors: `NotFound` for an unknown run;
    /// `Corrupt` for a row that does not decode.
    pub async fn run_logs_page(
        &self,
        id: impl Into<weft_core::RunRef>,
        step: Option<&str>,
        after: i64,
        limit: u32,
    ) -> Result<LogPage> {
        let run_id = self.resolve_run_id(id).await?;
        let limit = limit.clamp(1, MAX_LOG_PAGE) as usize;
        let take = limit + 1;
        let rows = match step {
            Some(step) => {
                self.pool()
                    .fetch_all(
                        &format!("SELECT seq, at, step, attempt, line FROM weft_logs WHERE run_id = $1 AND step = $2 AND seq > $3 ORDER BY seq LIMIT {take}"),
                        args![&run_id, step, after],
                    )
                    .await?
            }
            None => {
                self.pool()
                    .fetch_all(
                        &format!("SELECT seq, at, step, attempt, line FROM weft_logs WHERE run_id = $1 AND seq > $2 ORDER BY seq LIMIT {take}"),
                        args![&run_id, after],
                    )
                    .await?
            }
        };
        let lines = rows
            .iter()
            .take(limit)
            .map(line)
            .collect::<Result<Vec<_>>>()
            .map_err(|err| err.in_run(run_id))?;
        Ok(LogPage {
            has_newer: rows.len() > limit,
            lines,
        })
    }

    /// The last `n` log lines of `step` in the run `run_id`, and how many
    /// came before them (counted up to [`MAX_COUNTED_LINES`]). Errors:
    /// `Corrupt` for a row that does not decode.
    pub async fn step_log_tail(
        &self,
        run_id: weft_core::RunId,
        step: &str,
        n: u32,
    ) -> Result<LogTail> {
        let rows = self
            .pool()
            .fetch_all(
                &format!("SELECT seq, at, step, attempt, line FROM weft_logs WHERE run_id = $1 AND step = $2 ORDER BY seq DESC LIMIT {n}"),
                args![run_id, step],
            )
            .await?;
        let mut lines = rows
            .iter()
            .map(line)
            .collect::<Result<Vec<_>>>()
            .map_err(|err| err.in_run(run_id))?;
        lines.reverse();
        let Some(first) = lines.first().map(|l| l.seq) else {
            return Ok(LogTail::default());
        };
        let counted = self
            .pool()
            .fetch_optional(
                &format!(
                    "SELECT COUNT(*) AS n FROM (SELECT seq FROM weft_logs WHERE run_id = $1 AND step = $2 AND seq < $3 LIMIT {}) AS earlier",
                    MAX_COUNTED_LINES
                ),
                args![run_id, step, first],
            )
            .await?
            .map(|r| r.int("n"))
            .transpose()?
            .unwrap_or(0);
        let earlier = u64::try_from(counted).unwrap_or(0);
        Ok(LogTail {
            lines,
            earlier,
            earlier_capped: earlier >= MAX_COUNTED_LINES,
        })
    }
}
