//! Dynamic fan-out (`for_each`): a step expanded at run time into one child
//! per item of a list, each child with its own attempts.
//!
//! The parent step holds the counts ([`Children`]); a child transition is
//! decided from them alone, never from the other children, so it costs the
//! same for the 1st and the 10,000th child. Children become ready in index
//! order through a window of `max_parallel`: a child is made ready only when
//! one in flight ends, so never more than `max_parallel` are ready, running
//! or waiting out a retry at once, whoever claims them. The outputs are
//! gathered once, when the last child completes, in index order.
//!
//! Compensation (sagas): each completed child is a unit to undo. When the
//! step's undo is ready, the store makes the undo of every completed child
//! ready (`weft_children.undo`), each dispatched to the `compensate` handler
//! with that child's `item`, `index` and `output`; the parent counts the
//! undos settled ([`Children::undone`], [`Children::undo_failed`]) against
//! [`Children::completed`], so no transition reads the children.

use serde_json::Value;

use crate::{Reason, definition::FanOut};

/// A fan-out parent's counts, stored on its step row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Children {
    /// Children in all, one per item.
    pub total: u32,
    /// Children made ready so far: indices `0..dispatched`; the rest are
    /// pending.
    pub dispatched: u32,
    /// Children made ready and not yet ended: ready, running or waiting for
    /// a retry.
    pub in_flight: u32,
    /// Children completed.
    pub completed: u32,
    /// Children failed for good (the first fails the parent).
    pub failed: u32,
    /// Completed children whose undo completed, while the step is being
    /// compensated (one undo per completed child).
    pub undone: u32,
    /// Completed children whose undo failed for good.
    pub undo_failed: u32,
}

impl Children {
    /// Pending children: not yet made ready.
    pub fn pending(&self) -> u32 {
        self.total - self.dispatched
    }

    /// Whether every child completed.
    pub fn all_completed(&self) -> bool {
        self.completed == self.total
    }

    /// Whether the undo of every completed child has settled (completed or
    /// failed for good).
    pub fn undos_settled(&self) -> bool {
        self.undone + self.undo_failed >= self.completed
    }
}

/// What a `for_each` list expands into when the parent becomes ready.
#[derive(Debug, Clone, PartialEq)]
pub enum Expansion {
    /// One child per item; the first `ready` of them are ready at once.
    Children {
        items: Vec<Value>,
        counts: Children,
        ready: u32,
    },
    /// An empty list: the parent completes with `[]`.
    Empty,
    /// The parent fails with this reason and message.
    Fail { reason: Reason, message: String },
}

/// Decides what a parent's evaluated `for_each` list expands into: over
/// `max_items` or not a list (`evaluated` is the evaluator's answer) fails
/// it with reason `condition_error`.
pub fn expand(
    fan_out: &FanOut,
    evaluated: Result<Vec<Value>, crate::condition::EvalError>,
) -> Expansion {
    let items = match evaluated {
        Ok(items) => items,
        Err(err) => {
            return Expansion::Fail {
                reason: Reason::ConditionError,
                message: format!("`for_each` could not be evaluated: {}", err.0),
            };
        }
    };
    if items.is_empty() {
        return Expansion::Empty;
    }
    if items.len() > fan_out.max_items as usize {
        return Expansion::Fail {
            reason: Reason::ConditionError,
            message: format!(
                "`for_each` `{}` yielded {} items, over `max_items` {}",
                crate::condition::excerpt(&fan_out.expression),
                items.len(),
                fan_out.max_items
            ),
        };
    }
    let total = items.len() as u32;
    let ready = fan_out.max_parallel.map_or(total, |m| m.min(total));
    Expansion::Children {
        items,
        counts: Children {
            total,
            dispatched: ready,
            in_flight: ready,
            completed: 0,
            failed: 0,
            undone: 0,
            undo_failed: 0,
        },
        ready,
    }
}

/// How a child's attempt ended, as the parent's counts need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildEnd {
    Completed,
    /// Failed with budget left: it waits and runs again, still in flight.
    Retrying,
    /// Failed for good.
    Failed,
}

/// What a child's end means for its parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Children `from..from + count` become ready (count may be 0).
    Dispatch { from: u32, count: u32 },
    /// Every child completed: gather the outputs and complete the parent.
    Gather,
    /// The parent fails; its children still in flight are cancelled.
    FailParent,
}

/// Applies one child's end to its parent's counts and decides what follows:
/// the next pending child takes the slot a completed child frees.
pub fn child_ended(counts: &mut Children, end: ChildEnd) -> Next {
    match end {
        ChildEnd::Retrying => Next::Dispatch {
            from: counts.dispatched,
            count: 0,
        },
        ChildEnd::Failed => {
            counts.in_flight = counts.in_flight.saturating_sub(1);
            counts.failed += 1;
            Next::FailParent
        }
        ChildEnd::Completed => {
            counts.in_flight = counts.in_flight.saturating_sub(1);
            counts.completed += 1;
            if counts.all_completed() {
                return Next::Gather;
            }
            let from = counts.dispatched;
            let count = u32::from(counts.pending() > 0);
            counts.dispatched += count;
            counts.in_flight += count;
            Next::Dispatch { from, count }
        }
    }
}

/// The parent's output: the children's outputs in index order, as one JSON
/// list. Over `max_output_bytes` it fails with `invalid_output`.
pub fn gather(outputs: Vec<Value>, max_output_bytes: u64) -> Result<Value, (Reason, String)> {
    let output = Value::Array(outputs);
    let size = crate::attempt::json_size(&output);
    if size > max_output_bytes {
        return Err((
            Reason::InvalidOutput,
            format!(
                "the children's gathered outputs are {size} bytes of JSON, over the limit of {max_output_bytes}"
            ),
        ));
    }
    Ok(output)
}

/// A child's task input: the parent's task input with `item` and `index`.
pub fn child_input(mut parent_input: Value, item: Value, index: u32) -> Value {
    if let Some(map) = parent_input.as_object_mut() {
        map.insert("item".into(), item);
        map.insert("index".into(), index.into());
    }
    parent_input
}

/// `step[i]`, how a child is named in the CLI and logs.
pub fn child_name(step: &str, index: u32) -> String {
    format!("{step}[{index}]")
}

#[cfg(test)]
mod tests {
    use std::fmt::Write;

    use serde_json::json;

    use super::*;
    use crate::condition::EvalError;

    fn fan_out(max_items: u32, max_parallel: Option<u32>) -> FanOut {
        FanOut {
            expression: "steps.list.items".into(),
            max_items,
            max_parallel,
        }
    }

    fn line(counts: &Children, next: &Next) -> String {
        format!(
            "{next:?} total={} dispatched={} in_flight={} completed={} failed={}",
            counts.total, counts.dispatched, counts.in_flight, counts.completed, counts.failed
        )
    }

    /// Runs children ends against a parent and returns its text trace.
    fn trace(expansion: Expansion, ends: &[ChildEnd]) -> String {
        let Expansion::Children {
            mut counts, ready, ..
        } = expansion
        else {
            return format!("{expansion:?}\n");
        };
        let mut out = format!("expand ready={ready} total={}\n", counts.total);
        for end in ends {
            let next = child_ended(&mut counts, *end);
            writeln!(out, "{end:?} -> {}", line(&counts, &next)).unwrap();
        }
        out
    }

    #[test]
    fn a_window_of_max_parallel_moves_in_index_order() {
        let items = (0..4).map(|i| json!(i)).collect();
        let got = trace(
            expand(&fan_out(10, Some(2)), Ok(items)),
            &[
                ChildEnd::Completed,
                ChildEnd::Retrying,
                ChildEnd::Completed,
                ChildEnd::Completed,
                ChildEnd::Completed,
            ],
        );
        assert_eq!(
            got,
            "expand ready=2 total=4\n\
             Completed -> Dispatch { from: 2, count: 1 } total=4 dispatched=3 in_flight=2 completed=1 failed=0\n\
             Retrying -> Dispatch { from: 3, count: 0 } total=4 dispatched=3 in_flight=2 completed=1 failed=0\n\
             Completed -> Dispatch { from: 3, count: 1 } total=4 dispatched=4 in_flight=2 completed=2 failed=0\n\
             Completed -> Dispatch { from: 4, count: 0 } total=4 dispatched=4 in_flight=1 completed=3 failed=0\n\
             Completed -> Gather total=4 dispatched=4 in_flight=0 completed=4 failed=0\n"
        );
    }

    #[test]
    fn no_max_parallel_makes_every_child_ready_at_once() {
        let got = trace(
            expand(&fan_out(10, None), Ok(vec![json!("a"), json!("b")])),
            &[ChildEnd::Completed, ChildEnd::Completed],
        );
        assert_eq!(
            got,
            "expand ready=2 total=2\n\
             Completed -> Dispatch { from: 2, count: 0 } total=2 dispatched=2 in_flight=1 completed=1 failed=0\n\
             Completed -> Gather total=2 dispatched=2 in_flight=0 completed=2 failed=0\n"
        );
    }

    #[test]
    fn the_first_permanent_failure_fails_the_parent() {
        let items = (0..3).map(|i| json!(i)).collect();
        let got = trace(
            expand(&fan_out(10, Some(3)), Ok(items)),
            &[ChildEnd::Completed, ChildEnd::Failed],
        );
        assert_eq!(
            got,
            "expand ready=3 total=3\n\
             Completed -> Dispatch { from: 3, count: 0 } total=3 dispatched=3 in_flight=2 completed=1 failed=0\n\
             Failed -> FailParent total=3 dispatched=3 in_flight=1 completed=1 failed=1\n"
        );
    }

    #[test]
    fn empty_lists_over_max_items_and_errors() {
        assert_eq!(expand(&fan_out(2, None), Ok(vec![])), Expansion::Empty);
        assert_eq!(
            trace(
                expand(&fan_out(2, None), Ok(vec![json!(1), json!(2), json!(3)])),
                &[]
            ),
            "Fail { reason: ConditionError, message: \"`for_each` `steps.list.items` yielded 3 items, over `max_items` 2\" }\n"
        );
        let Expansion::Fail { reason, message } = expand(
            &fan_out(2, None),
            Err(EvalError(
                "`for_each` `x`: must yield a list, got a map".into(),
            )),
        ) else {
            panic!("an evaluation error fails the parent");
        };
        assert_eq!(reason, Reason::ConditionError);
        assert!(message.contains("must yield a list"), "{message}");
    }

    #[test]
    fn gathered_outputs_keep_index_order_and_the_output_limit() {
        assert_eq!(
            gather(vec![json!(0), json!({"a": 1})], 100),
            Ok(json!([0, {"a": 1}]))
        );
        let (reason, message) = gather(vec![json!("x".repeat(50))], 10).unwrap_err();
        assert_eq!(reason, Reason::InvalidOutput);
        assert!(message.contains("over the limit of 10"), "{message}");
    }

    #[test]
    fn a_for_each_list_is_evaluated_with_the_condition_rules() {
        let input = json!({"xs": [1, "a", {"b": null}], "n": 2});
        let steps = json!({"list": {"items": [true]}});
        assert_eq!(
            crate::condition::evaluate_list(
                "input.xs",
                &crate::condition::Vars::new(input.clone(), steps.clone())
            ),
            Ok(vec![json!(1), json!("a"), json!({"b": null})])
        );
        assert_eq!(
            crate::condition::evaluate_list(
                "steps.list.items.map(x, !x)",
                &crate::condition::Vars::new(input.clone(), steps.clone())
            ),
            Ok(vec![json!(false)])
        );
        let err = crate::condition::evaluate_list(
            "input.n",
            &crate::condition::Vars::new(input.clone(), steps.clone()),
        )
        .unwrap_err();
        assert_eq!(
            err.0,
            "`for_each` `input.n`: must yield a list, got the number 2"
        );
        let err = crate::condition::evaluate_list(
            "input.nope",
            &crate::condition::Vars::new(input.clone(), steps.clone()),
        )
        .unwrap_err();
        assert!(err.0.starts_with("`for_each` `input.nope`: "), "{}", err.0);
    }

    #[test]
    fn a_child_input_adds_item_and_index() {
        assert_eq!(
            child_input(json!({"input": 1, "steps": {}}), json!("x"), 7),
            json!({"input": 1, "steps": {}, "item": "x", "index": 7})
        );
        assert_eq!(child_name("ship", 3), "ship[3]");
    }
}
