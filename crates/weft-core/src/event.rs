//! The closed vocabulary of history event kinds (`weft_events.type`, the
//! SSE event names, `weft events catalog`), each with what it means and the
//! fields of its `data` payload.
//!
//! Invariant: this is a public contract. A kind or a payload field, once
//! here, keeps its name and meaning; later changes only add.

use std::fmt;

/// One field of an event's `data` object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// The JSON key.
    pub name: &'static str,
    /// The JSON shape: `integer`, `string`, `boolean`, `array` or `object`.
    pub shape: &'static str,
    /// Whether every event of the kind carries it.
    pub always: bool,
    /// What it holds, with its unit.
    pub description: &'static str,
}

const fn field(
    name: &'static str,
    shape: &'static str,
    always: bool,
    description: &'static str,
) -> Field {
    Field {
        name,
        shape,
        always,
        description,
    }
}

const REASON: Field = field(
    "reason",
    "string",
    true,
    "why, one of the closed set of reasons (handler_error, timeout, lease_expired, ...)",
);
const ERROR: Field = field("error", "string", true, "the error message, at most 16 KiB");
const RETRYABLE: Field = field(
    "retryable",
    "boolean",
    true,
    "whether the failure may be retried under the step's policy",
);
const TIMING: Field = field(
    "timing",
    "object",
    true,
    "the attempt's timing buckets in ms: queue_wait_ms, dispatch_ms, handler_ms, ingest_ms, total_ms",
);
const CONDITION_MS: Field = field(
    "condition_ms",
    "integer",
    false,
    "present when this event records the decision of the step's `when`: the time its evaluation took, ms",
);
const INDEX: Field = field(
    "index",
    "integer",
    true,
    "the child's index in its `for_each` list, from 0",
);
const RELEASES: Field = field(
    "releases",
    "integer",
    true,
    "how many attempts of the step have been released, this one included",
);

/// The fields any event carries, whatever its kind, when a person's action
/// wrote it (a start, cancel, retry, approval, rejection or skip, and every
/// event that action's transition wrote), or an approval's `timeout` decided:
/// who acted, for whom, and the decision's comment.
pub const ACTION_FIELDS: &[Field] = &[
    field(
        "actor",
        "string",
        false,
        "who acted: the token's name (the `X-Weft-Actor` header with authentication off), or `timeout` when an approval's timeout decided",
    ),
    field(
        "on_behalf_of",
        "string",
        false,
        "whom the actor acted for (the `X-Weft-Actor` header beside a token), when known",
    ),
    field(
        "comment",
        "string",
        false,
        "the decision's comment, as they wrote it",
    ),
];

macro_rules! event_kinds {
    ($($(#[$meta:meta])* $variant:ident => $text:literal, $description:literal, [$($field:expr),* $(,)?];)+) => {
        /// The kind of a history event: `<subject>.<what happened>`, where the
        /// subject is the run, one of its steps, an attempt of a step, or an
        /// attempt's lease.
        /// Ordered as in the catalogue.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum EventKind { $($(#[$meta])* $variant),+ }

        impl EventKind {
            /// Every kind, in catalogue order.
            pub const ALL: &'static [EventKind] = &[$(EventKind::$variant),+];

            /// The kind as stored and sent: `run.started`, `attempt.failed`, ...
            pub const fn as_str(self) -> &'static str {
                match self { $(EventKind::$variant => $text),+ }
            }

            /// The kind named `text`, if it is one.
            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some(EventKind::$variant),)+ _ => None }
            }

            /// What an event of this kind means, one sentence.
            pub const fn description(self) -> &'static str {
                match self { $(EventKind::$variant => $description),+ }
            }

            /// The fields of its `data` object (beyond the columns every event
            /// has: `seq`, `type`, `at`, `step`, `attempt`).
            pub const fn fields(self) -> &'static [Field] {
                match self { $(EventKind::$variant => { const FIELDS: &[Field] = &[$($field),*]; FIELDS }),+ }
            }
        }
    };
}

event_kinds! {
    RunCreated => "run.created", "The run was created from a stored version of its workflow.", [
        field("version", "integer", true, "the workflow version the run follows"),
        field("request_id", "string", false, "the id of the request that started it"),
    ];
    RunStarted => "run.started", "The run began: its first step was claimed or began waiting.", [];
    RunCompleted => "run.completed", "Every step is done and every failure (if any) was consumed by a completed `handles_failure` step; the run's output is its leaves' outputs.", [];
    RunFailed => "run.failed", "Nothing more can progress and a step's failure was not consumed by a completed `handles_failure` step: the run failed with that failure's reason and error.", [REASON, ERROR];
    RunCancelled => "run.cancelled", "The run was cancelled by a caller.", [];
    RunRetried => "run.retried", "A failed or cancelled run was retried: its failed and cancelled steps start again.", [];
    StepReady => "step.ready", "The step may be claimed by a worker; `attempt` is the attempt it is ready for.", [CONDITION_MS];
    StepSkipped => "step.skipped", "The step's `when` condition was false, or its trigger rule `any_failed` cannot hold (no dependency failed): it is done, with a null output.", [CONDITION_MS];
    StepWaiting => "step.waiting", "A sleep step began its sleep, or an approval step began waiting for a decision.", [
        field("until_ms", "integer", false, "when a sleep ends, or when an approval with a `timeout` is decided by it, epoch ms (absent for an approval without one)"),
        CONDITION_MS,
    ];
    StepCompleted => "step.completed", "The step finished with an output.", [];
    StepRetrying => "step.retrying", "An attempt failed and the step will be ready again after its backoff.", [
        field("due_at_ms", "integer", true, "when the step is ready again, epoch ms"),
        field("delay_ms", "integer", true, "the backoff, ms"),
    ];
    StepFailed => "step.failed", "The step failed for good (no attempts left, a permanent failure, a rejection or a `when` that could not be evaluated: reason `condition_error`).", [REASON, CONDITION_MS];
    StepCancelled => "step.cancelled", "The step will not run: its run was cancelled, or a dependency failed and its trigger rule needs them to succeed (reason `upstream_failed`).", [REASON];
    StepFannedOut => "step.fanned_out", "A `for_each` step's list was evaluated: the step runs as one child per item (`step[i]`), the first `ready` of them ready now, the rest as others end (`max_parallel`).", [
        field("count", "integer", true, "how many children (items)"),
        field("ready", "integer", true, "how many of them are ready now"),
    ];
    StepChildrenRetried => "step.children_retried", "A retried `for_each` step keeps its completed children and their outputs; the others run again (each with a fresh budget), the first `ready` of them ready now.", [
        field("count", "integer", true, "how many children run again"),
        field("ready", "integer", true, "how many of them are ready now"),
    ];
    ChildReady => "child.ready", "A pending child of a `for_each` step took the slot another one freed and may be claimed.", [INDEX];
    ChildRetrying => "child.retrying", "A child's attempt failed and the child will be ready again after its backoff.", [
        INDEX,
        field("due_at_ms", "integer", true, "when the child is ready again, epoch ms"),
        field("delay_ms", "integer", true, "the backoff, ms"),
    ];
    ChildCompleted => "child.completed", "A child of a `for_each` step finished with an output; the step completes when all have, its output their outputs in index order.", [INDEX];
    ChildFailed => "child.failed", "A child failed for good: its step fails and the children still out are cancelled.", [INDEX, REASON, ERROR];
    AttemptClaimed => "attempt.claimed", "A worker claimed the step under a lease: an attempt began.", [
        field("worker_id", "string", true, "the worker that claimed it"),
        field("index", "integer", false, "for an attempt of a `for_each` child: the child's index"),
        field("span_id", "string", true, "the attempt's span id, 16 hex digits"),
        field("queue_wait_ms", "integer", true, "ready → claimed, ms"),
        field("kind", "string", false, "`compensate` when the attempt runs the step's `compensate` handler (absent for the step's own handler)"),
    ];
    AttemptCompleted => "attempt.completed", "The attempt's worker reported success under its live lease.", [TIMING,
        field("index", "integer", false, "for an attempt of a `for_each` child: the child's index"),
    ];
    AttemptFailed => "attempt.failed", "The attempt failed: its worker reported an error, its result came after its deadline, its lease lapsed, or it was released once too often.", [
        field("timing", "object", false, "the attempt's timing buckets in ms (absent when its lease lapsed)"),
        REASON, ERROR, RETRYABLE,
        field("releases", "integer", false, "present when a release counted as this failure: the step's releases, this one included"),
        field("index", "integer", false, "for an attempt of a `for_each` child: the child's index"),
    ];
    AttemptReleased => "attempt.released", "The attempt's worker shut down and handed it back; the step is ready again and the attempt spent none of its budget.", [TIMING, REASON, ERROR, RELEASES, RETRYABLE,
        field("index", "integer", false, "for an attempt of a `for_each` child: the child's index"),
    ];
    CompensationStarted => "compensation.started", "The run failed (or was cancelled under `compensate_on: [cancel]`) and its completed steps with a `compensate` handler are being undone; the run is `compensating`.", [
        field("reason", "string", true, "the run's failure reason, which a compensated run keeps"),
        field("steps", "array", true, "the steps to undo, by name"),
    ];
    StepCompensating => "step.compensating", "The step's compensation is ready to be claimed: every completed dependant's undo is done; `attempt` is the attempt it is ready for.", [];
    StepCompensated => "step.compensated", "The step's compensation completed.", [];
    StepCompensationFailed => "step.compensation_failed", "The step's compensation failed for good (no `compensate_retry` attempts left or a permanent failure).", [REASON, ERROR];
    CompensationCompleted => "compensation.completed", "Every undo completed (or was skipped): the run is `compensated`, keeping its failure reason.", [
        field("reason", "string", true, "the run's original failure reason"),
    ];
    CompensationFailed => "compensation.failed", "Every undo was attempted and some failed for good: the run fails with reason `compensation_failed` (a `run.failed` follows).", [
        field("failed", "array", true, "the steps whose undo failed, by name"),
        field("reason", "string", true, "the run's original failure reason"),
    ];
    CompensationSkipped => "compensation.skipped", "An operator marked the step's failed undo as skipped (`weft compensation skip`).", [
        field("actor", "string", false, "who skipped it"),
        field("comment", "string", false, "why, as they wrote it"),
    ];
    CompensationCancelled => "compensation.cancelled", "The run was cancelled while compensating: the undos not yet done will not run.", [
        field("not_run", "array", true, "the steps whose undo did not run, by name"),
    ];
    ChildCompensating => "child.compensating", "The undo of a completed child of a `for_each` step is ready (again) to be claimed by the step's `compensate` handler.", [INDEX];
    ChildCompensationRetrying => "child.compensation_retrying", "A child's undo attempt failed and the undo will be ready again after its backoff (`compensate_retry`).", [
        INDEX,
        field("due_at_ms", "integer", true, "when the undo is ready again, epoch ms"),
        field("delay_ms", "integer", true, "the backoff, ms"),
    ];
    ChildCompensated => "child.compensated", "The undo of a completed child of a `for_each` step completed; the step is compensated once every completed child's undo is.", [INDEX];
    ChildCompensationFailed => "child.compensation_failed", "A child's undo failed for good; the step's compensation fails once every child's undo has settled, the others still attempted.", [INDEX, REASON, ERROR];
    LeaseExpired => "lease.expired", "The attempt's lease lapsed without a result (its worker stopped renewing it); an `attempt.failed` follows.", [
        field("reason", "string", true, "lease_expired, or heartbeat_timeout when the step declares one"),
    ];
}

impl EventKind {
    /// Whether an event of this kind may carry the `data` key `key`: one of
    /// its own fields or one of [`ACTION_FIELDS`].
    pub fn carries(self, key: &str) -> bool {
        self.fields()
            .iter()
            .chain(ACTION_FIELDS)
            .any(|f| f.name == key)
    }

    /// Whether an event of this kind ends its run (a live stream ends with it).
    pub fn ends_run(self) -> bool {
        matches!(
            self,
            EventKind::RunCompleted
                | EventKind::RunFailed
                | EventKind::RunCancelled
                | EventKind::CompensationCompleted
        )
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_and_are_unique() {
        let mut seen = std::collections::BTreeSet::new();
        for kind in EventKind::ALL {
            assert_eq!(EventKind::parse(kind.as_str()), Some(*kind));
            assert!(seen.insert(kind.as_str()), "{kind} twice");
            assert!(!kind.description().is_empty());
            let names: std::collections::BTreeSet<_> =
                kind.fields().iter().map(|f| f.name).collect();
            assert_eq!(names.len(), kind.fields().len(), "{kind}: a field twice");
        }
        assert_eq!(EventKind::parse("step.running"), None);
        assert!(EventKind::RunCancelled.carries("actor"));
        assert!(EventKind::StepReady.carries("condition_ms"));
        assert!(!EventKind::StepReady.carries("due_at_ms"));
        assert_eq!(EventKind::ALL.len(), 36);
    }
}
