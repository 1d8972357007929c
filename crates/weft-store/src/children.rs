//! The children of `for_each` steps (`weft_children`, one row per item,
//! keyed by run, step position and index): the rows the machine's child
//! effects write, the child events a child attempt's end is told to its run
//! as, and the outputs gathered once when the last child completes. The
//! parent step row holds the counts (`children_*` columns); nothing here
//! reads all of a step's children except that one gathering. Claiming
//! children is in `claim.rs`, beside the claim of steps.

use serde_json::Value;
use weft_core::{
    AttemptKind, Definition, Reason, RunId, RunState, RunStatus, StepStatus, UndoStatus,
    fan_out::Children,
    machine::{Effect, Event},
};

use crate::{
    Error, Problem, Result, args,
    db::{Arg, Row, Tx},
};

/// The step row's count columns, in [`count_args`]'s order.
pub(crate) const COUNT_COLUMNS: &str = "children_total, children_dispatched, children_in_flight, children_completed, \
     children_failed, children_undone, children_undo_failed";

/// A step row's children counts (`None` for a step not fanned out).
pub(crate) fn counts(row: &Row) -> Result<Option<Children>> {
    let Some(total) = row.opt_int("children_total")? else {
        return Ok(None);
    };
    let count = |column: &'static str| -> Result<u32> {
        let n = row.opt_int(column)?.unwrap_or(0);
        u32::try_from(n).map_err(|_| {
            row.corrupt(
                column,
                Problem::WrongType {
                    expected: "a count of children",
                },
            )
        })
    };
    Ok(Some(Children {
        total: u32::try_from(total).map_err(|_| {
            row.corrupt(
                "children_total",
                Problem::WrongType {
                    expected: "a count of children",
                },
            )
        })?,
        dispatched: count("children_dispatched")?,
        in_flight: count("children_in_flight")?,
        completed: count("children_completed")?,
        failed: count("children_failed")?,
        undone: count("children_undone")?,
        undo_failed: count("children_undo_failed")?,
    }))
}

/// The values of [`COUNT_COLUMNS`] for a step's counts (NULLs for none).
pub(crate) fn count_args(children: Option<Children>) -> Vec<Arg> {
    match children {
        None => args![
            None::<i64>,
            None::<i64>,
            None::<i64>,
            None::<i64>,
            None::<i64>,
            None::<i64>,
            None::<i64>
        ],
        Some(c) => args![
            c.total,
            c.dispatched,
            c.in_flight,
            c.completed,
            c.failed,
            c.undone,
            c.undo_failed
        ],
    }
}

/// What the functions here read of a run locked by its caller.
pub(crate) struct RunView<'a> {
    pub run_id: RunId,
    pub def: &'a Definition,
    pub state: &'a RunState,
}

/// Writes the children rows the effects of one transition change. Called
/// under the run lock before the run's attempts are ended, so a claim that
/// holds a ready child's row finishes first (its attempt is then ended with
/// the run's others).
pub(crate) async fn write_effects(
    tx: &mut Tx,
    run: RunView<'_>,
    effects: &[Effect],
    now: i64,
) -> Result<()> {
    let run_id = run.run_id;
    for effect in effects {
        match effect {
            Effect::StepFannedOut { step, items, ready } => {
                let def = &run.def.steps[*step];
                // A retried run expands again: its old children go.
                tx.execute(
                    "DELETE FROM weft_children WHERE run_id = $1 AND position = $2",
                    args![run_id, *step],
                )
                .await?;
                const COLUMNS: usize = 4;
                let indexed: Vec<(usize, &Value)> = items.iter().enumerate().collect();
                for chunk in indexed.chunks(500) {
                    let mut sql = String::from(
                        "INSERT INTO weft_children (run_id, position, queue, handler, updated_at, idx, status, item, ready_at) \
                         VALUES ",
                    );
                    let mut values =
                        args![run_id, *step, &def.queue, def.handler().unwrap_or(""), now];
                    for (i, (index, item)) in chunk.iter().enumerate() {
                        if i > 0 {
                            sql.push_str(", ");
                        }
                        sql.push_str("($1, $2, $3, $4, $5, ");
                        let mut tuple = String::new();
                        crate::db::push_tuple(&mut tuple, 6 + COLUMNS * i, COLUMNS);
                        sql.push_str(&tuple[1..]);
                        let is_ready = (*index as u32) < *ready;
                        let status = if is_ready {
                            StepStatus::Ready
                        } else {
                            StepStatus::Pending
                        };
                        values.extend(args![
                            *index,
                            status.as_str(),
                            item.to_string(),
                            is_ready.then_some(now)
                        ]);
                    }
                    tx.execute(&sql, values).await?;
                }
            }
            Effect::ChildrenReady { step, count, .. } => {
                // The next `count` pending children by index: `from..` while
                // every child before them was made ready, and past the
                // completed ones a retried step keeps.
                ready_next(tx, run_id, *step, *count, now).await?;
            }
            Effect::ChildrenRetried { step, ready, .. } => {
                // The children that did not complete run again, afresh.
                tx.execute(
                    "UPDATE weft_children SET status = $3, reason = NULL, error = NULL, n_attempts = 0, \
                     ready_at = NULL, updated_at = $4 WHERE run_id = $1 AND position = $2 AND status <> $5",
                    args![
                        run_id,
                        *step,
                        StepStatus::Pending.as_str(),
                        now,
                        StepStatus::Completed.as_str()
                    ],
                )
                .await?;
                ready_next(tx, run_id, *step, *ready, now).await?;
            }
            Effect::ChildRetrying {
                step,
                index,
                due_at,
                ..
            } => {
                // Ready again, claimable once its backoff is over.
                set_child(tx, run_id, *step, *index, StepStatus::Ready, *due_at, now).await?;
            }
            Effect::ChildReleased { step, index } => {
                // The released attempt spends none of the child's budget.
                tx.execute(
                    "UPDATE weft_children SET status = $4, ready_at = $5, updated_at = $5, \
                     n_attempts = n_attempts - 1 WHERE run_id = $1 AND position = $2 AND idx = $3",
                    args![run_id, *step, *index, StepStatus::Ready.as_str(), now],
                )
                .await?;
            }
            Effect::ChildCompleted {
                step,
                index,
                output,
            } => {
                tx.execute(
                    "UPDATE weft_children SET status = $4, output = $5, updated_at = $6 \
                     WHERE run_id = $1 AND position = $2 AND idx = $3",
                    args![
                        run_id,
                        *step,
                        *index,
                        StepStatus::Completed.as_str(),
                        output.to_string(),
                        now
                    ],
                )
                .await?;
            }
            Effect::ChildFailed {
                step,
                index,
                reason,
                message,
            } => {
                tx.execute(
                    "UPDATE weft_children SET status = $4, reason = $5, error = $6, updated_at = $7 \
                     WHERE run_id = $1 AND position = $2 AND idx = $3",
                    args![
                        run_id,
                        *step,
                        *index,
                        StepStatus::Failed.as_str(),
                        reason.as_str(),
                        crate::db::storable_text(message.clone()),
                        now
                    ],
                )
                .await?;
            }
            Effect::StepCompensating { step } if run.def.steps[*step].fan_out.is_some() => {
                // One undo per completed child: those not undone yet, or
                // whose undo failed (a retried compensation).
                tx.execute(
                    "UPDATE weft_children SET undo = $3, undo_attempts = 0, ready_at = $4, updated_at = $4 \
                     WHERE run_id = $1 AND position = $2 AND status = $5 AND (undo IS NULL OR undo = $6)",
                    args![
                        run_id,
                        *step,
                        UndoStatus::Ready.as_str(),
                        now,
                        StepStatus::Completed.as_str(),
                        UndoStatus::Failed.as_str()
                    ],
                )
                .await?;
            }
            Effect::ChildCompensating { step, index } => {
                // Handed back: ready again, the attempt unspent.
                tx.execute(
                    "UPDATE weft_children SET undo = $4, ready_at = $5, updated_at = $5, \
                     undo_attempts = undo_attempts - 1 WHERE run_id = $1 AND position = $2 AND idx = $3",
                    args![run_id, *step, *index, UndoStatus::Ready.as_str(), now],
                )
                .await?;
            }
            Effect::ChildCompensationRetrying {
                step,
                index,
                due_at,
                ..
            } => {
                set_child_undo(
                    tx,
                    run_id,
                    (*step, *index),
                    UndoStatus::Ready,
                    None,
                    *due_at,
                )
                .await?;
            }
            Effect::ChildCompensated { step, index } => {
                set_child_undo(
                    tx,
                    run_id,
                    (*step, *index),
                    UndoStatus::Completed,
                    None,
                    now,
                )
                .await?;
            }
            Effect::ChildCompensationFailed {
                step,
                index,
                message,
                ..
            } => {
                set_child_undo(
                    tx,
                    run_id,
                    (*step, *index),
                    UndoStatus::Failed,
                    Some(message),
                    now,
                )
                .await?;
            }
            Effect::CompensationCancelled { .. } => {
                // The children's undos not done will not run.
                tx.execute(
                    "UPDATE weft_children SET undo = $2, updated_at = $3 \
                     WHERE run_id = $1 AND undo IN ($4, $5)",
                    args![
                        run_id,
                        UndoStatus::Cancelled.as_str(),
                        now,
                        UndoStatus::Ready.as_str(),
                        UndoStatus::Running.as_str()
                    ],
                )
                .await?;
            }
            Effect::StepFailed { step, .. } | Effect::StepCancelled { step, .. }
                if run.def.steps[*step].fan_out.is_some() =>
            {
                // The children not finished will not run (their attempts
                // still out are cancelled: `attempt::step_ended`).
                let reason = match effect {
                    Effect::StepCancelled { reason, .. } => *reason,
                    _ => Reason::UpstreamFailed,
                };
                tx.execute(
                    "UPDATE weft_children SET status = $3, reason = $4, updated_at = $5 \
                     WHERE run_id = $1 AND position = $2 AND status IN ($6, $7, $8)",
                    args![
                        run_id,
                        *step,
                        StepStatus::Cancelled.as_str(),
                        reason.as_str(),
                        now,
                        StepStatus::Pending.as_str(),
                        StepStatus::Ready.as_str(),
                        StepStatus::Running.as_str()
                    ],
                )
                .await?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Makes the first `count` pending children of step `position`, by index,
/// ready. The status is a literal in the SQL text, so that the partial index
/// `weft_children_pending` serves it (a bound parameter cannot match a
/// partial index in a cached generic plan).
async fn ready_next(
    tx: &mut Tx,
    run_id: RunId,
    position: usize,
    count: u32,
    now: i64,
) -> Result<()> {
    if count == 0 {
        return Ok(());
    }
    let pending = StepStatus::Pending.as_str();
    tx.execute(
        &format!(
            "UPDATE weft_children SET status = $3, ready_at = $4, updated_at = $4 \
             WHERE run_id = $1 AND position = $2 AND status = '{pending}' AND idx IN \
             (SELECT idx FROM weft_children WHERE run_id = $1 AND position = $2 AND status = '{pending}' \
              ORDER BY idx LIMIT $5)"
        ),
        args![
            run_id,
            position,
            StepStatus::Ready.as_str(),
            now,
            i64::from(count)
        ],
    )
    .await?;
    Ok(())
}

/// Sets the undo of child `index` of step `position` (and its error);
/// `ready_at` is when a ready undo may be claimed.
async fn set_child_undo(
    tx: &mut Tx,
    run_id: RunId,
    (position, index): (usize, u32),
    undo: UndoStatus,
    error: Option<&String>,
    ready_at: i64,
) -> Result<()> {
    tx.execute(
        "UPDATE weft_children SET undo = $4, ready_at = $5, updated_at = $5, \
         error = COALESCE($6, error) WHERE run_id = $1 AND position = $2 AND idx = $3",
        args![
            run_id,
            position,
            index,
            undo.as_str(),
            ready_at,
            error.map(|e| crate::db::storable_text(e.clone()))
        ],
    )
    .await?;
    Ok(())
}

async fn set_child(
    tx: &mut Tx,
    run_id: RunId,
    step: usize,
    index: u32,
    status: StepStatus,
    ready_at: i64,
    now: i64,
) -> Result<()> {
    tx.execute(
        "UPDATE weft_children SET status = $4, ready_at = $5, updated_at = $6 \
         WHERE run_id = $1 AND position = $2 AND idx = $3",
        args![run_id, step, index, status.as_str(), ready_at, now],
    )
    .await?;
    Ok(())
}

/// Whether child `index` of step `position` is running, and its step too:
/// only then does a result of its attempt count.
pub(crate) async fn is_running(
    tx: &mut Tx,
    run: RunView<'_>,
    position: usize,
    index: i64,
) -> Result<bool> {
    if run.state.status.is_terminal() {
        return Ok(false);
    }
    if undoing(run.state, position) {
        return Ok(undo_of(tx, run.run_id, position, index).await? == Some(UndoStatus::Running));
    }
    if run.state.steps[position].status != StepStatus::Running {
        return Ok(false);
    }
    let row = tx
        .fetch_optional(
            "SELECT status FROM weft_children WHERE run_id = $1 AND position = $2 AND idx = $3",
            args![run.run_id, position, index],
        )
        .await?;
    Ok(match row {
        Some(row) => row.status("status", StepStatus::parse)? == StepStatus::Running,
        None => false,
    })
}

/// Whether the `for_each` step at `position` is being undone child by
/// child: its run compensating, the step `compensating`.
fn undoing(state: &RunState, position: usize) -> bool {
    state.status == RunStatus::Compensating
        && state.steps[position].status == StepStatus::Compensating
        && state.steps[position].children.is_some()
}

/// Where the undo of child `index` of step `position` stands.
async fn undo_of(
    tx: &mut Tx,
    run_id: RunId,
    position: usize,
    index: i64,
) -> Result<Option<UndoStatus>> {
    let Some(row) = tx
        .fetch_optional(
            "SELECT undo FROM weft_children WHERE run_id = $1 AND position = $2 AND idx = $3",
            args![run_id, position, index],
        )
        .await?
    else {
        return Ok(None);
    };
    row.opt_text("undo")?
        .map(|text| {
            UndoStatus::parse(&text).ok_or_else(|| row.corrupt("undo", Problem::UnknownValue(text)))
        })
        .transpose()
}

/// What the attempt out for child `index` of step `position` runs: its
/// step's `compensate` handler while the child's undo is running.
pub(crate) async fn attempt_kind(
    tx: &mut Tx,
    run: RunView<'_>,
    position: usize,
    index: i64,
) -> Result<AttemptKind> {
    Ok(
        if undoing(run.state, position)
            && undo_of(tx, run.run_id, position, index).await? == Some(UndoStatus::Running)
        {
            AttemptKind::Compensate
        } else {
            AttemptKind::Forward
        },
    )
}

/// The child event an attempt's end of child `index` of step `position` is
/// told to its run as (the plain step's `event` turned into its child's);
/// `None` when the child no longer runs (its step failed or was retried
/// meanwhile): the attempt's end is recorded and nothing else changes. The
/// last child to complete has every output read here, in index order.
pub(crate) async fn child_event(
    tx: &mut Tx,
    run: RunView<'_>,
    position: usize,
    index: i64,
    event: Event,
    max_output_bytes: u64,
) -> Result<Option<Event>> {
    let run_id = run.run_id;
    let Some(row) = tx
        .fetch_optional(
            "SELECT status, n_attempts, undo, undo_attempts FROM weft_children \
             WHERE run_id = $1 AND position = $2 AND idx = $3",
            args![run_id, position, index],
        )
        .await?
    else {
        return Ok(None);
    };
    if undoing(run.state, position) {
        return undo_event(&row, index, event);
    }
    if row.status("status", StepStatus::parse)? != StepStatus::Running
        || run.state.steps[position].status != StepStatus::Running
    {
        return Ok(None);
    }
    let index_u32 = u32::try_from(index).map_err(|_| {
        row.corrupt(
            "idx",
            Problem::WrongType {
                expected: "a child index",
            },
        )
    })?;
    let attempts = u32::try_from(row.int("n_attempts")?).unwrap_or(u32::MAX);
    Ok(Some(match event {
        Event::AttemptCompleted { step, output } => {
            let counts = run.state.steps[position].children.unwrap_or_default();
            let gathered = if counts.completed + 1 == counts.total {
                Some(gather(tx, run_id, position, index_u32, &output).await?)
            } else {
                None
            };
            Event::ChildCompleted {
                step,
                index: index_u32,
                output,
                gathered,
                max_output_bytes,
            }
        }
        Event::AttemptFailed {
            step,
            reason,
            message,
            retryable,
        } => Event::ChildFailed {
            step,
            index: index_u32,
            reason,
            message,
            retryable,
            attempts,
        },
        Event::AttemptReleased { step } => Event::ChildReleased {
            step,
            index: index_u32,
        },
        other => other,
    }))
}

/// The child undo event an undo attempt's end of child `index` (its row
/// `row`) is told to its run as; `None` when the child's undo no longer runs
/// (the compensation was cancelled meanwhile).
fn undo_event(row: &Row, index: i64, event: Event) -> Result<Option<Event>> {
    let running = row.opt_text("undo")?.as_deref() == Some(UndoStatus::Running.as_str());
    if !running {
        return Ok(None);
    }
    let index = u32::try_from(index).map_err(|_| {
        row.corrupt(
            "idx",
            Problem::WrongType {
                expected: "a child index",
            },
        )
    })?;
    let attempts = u32::try_from(row.int("undo_attempts")?).unwrap_or(u32::MAX);
    Ok(Some(match event {
        Event::AttemptCompleted { step, .. } => Event::ChildUndoCompleted { step, index },
        Event::AttemptFailed {
            step,
            reason,
            message,
            retryable,
        } => Event::ChildUndoFailed {
            step,
            index,
            reason,
            message,
            retryable,
            attempts,
        },
        Event::AttemptReleased { step } => Event::ChildUndoReleased { step, index },
        other => other,
    }))
}

/// Every child's output in index order, `last`'s being `output` (its row
/// is written by the transition that follows).
async fn gather(
    tx: &mut Tx,
    run_id: RunId,
    position: usize,
    last: u32,
    output: &Value,
) -> Result<Vec<Value>> {
    let rows = tx
        .fetch_all(
            "SELECT idx, output FROM weft_children WHERE run_id = $1 AND position = $2 ORDER BY idx",
            args![run_id, position],
        )
        .await?;
    rows.into_iter()
        .map(|row| {
            if row.int("idx")? == i64::from(last) {
                return Ok(output.clone());
            }
            row.opt_text("output")?
                .map(|text| {
                    serde_json::from_str(&text).map_err(|err| {
                        Error::corrupt(
                            "child output",
                            Some(run_id.to_string()),
                            Problem::BadJson(err.to_string()),
                        )
                    })
                })
                .transpose()
                .map(|v| v.unwrap_or(Value::Null))
        })
        .collect()
}
