//! An attempt's life, decided: what claiming a ready step does, how an
//! attempt ends (a worker's result, a result after the deadline, a lapsed
//! lease, a release, its run ending) and its timing buckets.
//!
//! Invariant: the store decides none of this. The claim stays one set-based
//! SQL statement per kind of row (it takes no run lock), but what it writes
//! for each claimed row is the [`Claim`] decided here; every end of an
//! attempt is an [`End`] decided here, which the store writes as it is (one
//! function) and whose [`End::event`] it applies to the run through
//! `machine::apply`.

use serde_json::{Map, Value};

use crate::{
    AttemptKind, AttemptStatus, Reason, RunStatus, StepStatus, UndoStatus, definition::StepDef,
    event::EventKind, machine::Event, machine::StepState, observe::Timing,
};

/// Most releases one step may have (over its whole life) before a release
/// counts as a failed attempt (reason `worker_shutdown`), so a
/// crash-looping worker cannot cycle a step for ever.
pub const MAX_RELEASES: u32 = 3;

/// Most bytes of a worker's error message kept (in the attempt, the step,
/// the run and the history event, each): a handler that puts megabytes of
/// output in its error must not bloat every row that quotes it.
pub const MAX_ERROR_BYTES: usize = 16 * 1024;

/// The statuses a claim writes: the step's, its new attempt's, and the
/// run's when the claim starts it.
pub const CLAIMED_STEP: StepStatus = StepStatus::Running;
/// See [`CLAIMED_STEP`].
pub const CLAIMED_ATTEMPT: AttemptStatus = AttemptStatus::Running;
/// See [`CLAIMED_STEP`].
pub const STARTED_RUN: RunStatus = RunStatus::Running;
/// The undo status a claim of a step's compensation writes (the step row
/// itself stays `compensating`).
pub const CLAIMED_UNDO: UndoStatus = UndoStatus::Running;
/// The undo status a claim of a compensation looks for.
pub const READY_UNDO: UndoStatus = UndoStatus::Ready;

/// What claiming one ready step decides. Times are epoch ms, durations ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    /// The new attempt's number, from 1 over the step's whole life.
    pub attempt: i64,
    /// How long the lease lasts without a heartbeat: the step's
    /// `heartbeat_timeout`, else the server's lease.
    pub lease_ms: i64,
    /// When the lease lapses unless renewed.
    pub expires_at: i64,
    /// When the attempt times out (start-to-close), if the step has a timeout.
    pub deadline_at: Option<i64>,
    /// When the step became ready (the claim time for a row without one).
    pub ready_at: i64,
    /// Ready → claimed.
    pub queue_wait_ms: i64,
    /// The run was still pending: this claim starts it (`run.started`).
    pub starts_run: bool,
    /// Whether the attempt runs the step's handler or its `compensate`
    /// handler.
    pub kind: AttemptKind,
}

/// Decides the claim of a ready step whose row says `n_attempts` attempts so
/// far and `ready_at`, in a run of status `run_status`, at `now`; `kind`
/// says whether the step's handler or its undo (a step whose undo is
/// `ready`) is claimed.
pub fn claim(
    kind: AttemptKind,
    step: &StepDef,
    run_status: RunStatus,
    n_attempts: i64,
    ready_at: Option<i64>,
    now: i64,
    default_lease_ms: u64,
) -> Claim {
    let lease_ms = step.heartbeat_timeout_ms.unwrap_or(default_lease_ms) as i64;
    let ready_at = ready_at.unwrap_or(now);
    Claim {
        attempt: n_attempts + 1,
        lease_ms,
        expires_at: now + lease_ms,
        deadline_at: step.timeout_ms.map(|t| now + t as i64),
        ready_at,
        queue_wait_ms: (now - ready_at).max(0),
        starts_run: run_status == RunStatus::Pending,
        kind,
    }
}

impl Claim {
    /// The claim in a run's in-memory state (what the claim's SQL writes to
    /// the rows): the step runs one more attempt; a pending run starts.
    pub fn apply(&self, run_status: &mut RunStatus, step: &mut StepState) {
        match self.kind {
            AttemptKind::Forward => step.status = CLAIMED_STEP,
            AttemptKind::Compensate => step.undo = Some(CLAIMED_UNDO),
        }
        step.n_attempts += 1;
        if self.starts_run {
            *run_status = STARTED_RUN;
        }
    }

    /// The history events the claim writes: `attempt.claimed`, then
    /// `run.started` when it starts the run.
    pub fn events(&self) -> impl Iterator<Item = EventKind> {
        std::iter::once(EventKind::AttemptClaimed)
            .chain(self.starts_run.then_some(EventKind::RunStarted))
    }

    /// The `attempt.claimed` payload (`kind` only for a compensation).
    pub fn data(&self, worker_id: &str, span_id: crate::SpanId) -> Value {
        let mut data = serde_json::json!({
            "worker_id": worker_id,
            "span_id": span_id.to_string(),
            "queue_wait_ms": self.queue_wait_ms,
        });
        if self.kind == AttemptKind::Compensate {
            data["kind"] = self.kind.as_str().into();
        }
        data
    }
}

/// What a worker reported for an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    Completed(Value),
    Failed {
        reason: Reason,
        message: String,
        retryable: bool,
    },
}

/// How an attempt ended: what its row and its history event record, and the
/// event its run's state machine gets.
#[derive(Debug, Clone, PartialEq)]
pub struct End {
    /// The attempt row's final status.
    pub status: AttemptStatus,
    pub reason: Option<Reason>,
    /// The error the attempt row and its event keep (at most
    /// [`MAX_ERROR_BYTES`]).
    pub error: Option<String>,
    pub retryable: bool,
    /// The attempt's history event (`attempt.completed`, `attempt.failed`,
    /// `attempt.released`); `None` when its run ended while it was out.
    pub kind: Option<EventKind>,
    /// A `lease.expired` event comes first: the worker stopped renewing.
    pub lease_expired: bool,
    /// A result (or a release) after the start-to-close deadline, recorded
    /// as the timeout the reaper would have recorded; the worker is told
    /// `deadline_exceeded`.
    pub late: bool,
    /// For a release: the step's releases, this one included.
    pub releases: Option<u32>,
    /// Whether the event carries the timing buckets (a lapsed attempt's
    /// would only say how long it was out).
    timing_in_event: bool,
    /// What the run's state machine is told; `None` when the run's own end
    /// ended the attempt.
    pub event: Option<Event>,
}

impl End {
    /// The attempt's history event payload; `timing` is its timing buckets
    /// as stored.
    pub fn data(&self, timing: Value) -> Value {
        let mut map = Map::new();
        if self.timing_in_event {
            map.insert("timing".into(), timing);
        }
        if self.status != AttemptStatus::Completed {
            if let Some(reason) = self.reason {
                map.insert("reason".into(), reason.as_str().into());
            }
            map.insert(
                "error".into(),
                self.error.clone().unwrap_or_default().into(),
            );
            if let Some(releases) = self.releases {
                map.insert("releases".into(), releases.into());
            }
            map.insert("retryable".into(), self.retryable.into());
        }
        Value::Object(map)
    }

    /// The `lease.expired` payload, when [`End::lease_expired`].
    pub fn lease_expired_data(&self) -> Value {
        serde_json::json!({"reason": self.reason.map(Reason::as_str)})
    }
}

/// A worker's error message as stored: cut to [`MAX_ERROR_BYTES`] at a
/// character boundary, with `…` marking the cut.
pub fn stored_error(message: String) -> String {
    if message.len() <= MAX_ERROR_BYTES {
        message
    } else {
        truncate(&message, MAX_ERROR_BYTES)
    }
}

/// `line` cut to at most `max` bytes at a character boundary, `…` marking a cut.
pub fn truncate(line: &str, max: usize) -> String {
    if line.len() <= max {
        return line.to_owned();
    }
    let mut end = max;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &line[..end])
}

/// The size in bytes of `value` serialised as compact JSON (as stored).
pub fn json_size(value: &Value) -> u64 {
    struct Count(u64);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    serde_json::to_writer(&mut count, value).expect("a JSON value serializes");
    count.0
}

/// Whether attempt `attempt` is the one step `step` is running now: a
/// result or release for any other no longer counts (its run ended, or it
/// was retried since).
pub fn still_counts(step: &StepState, attempt: i64) -> bool {
    (step.status == StepStatus::Running || step.undoing()) && i64::from(step.n_attempts) == attempt
}

/// A worker's result for the attempt of step `position`, received at
/// `received_ms`, under a lease with deadline `deadline_at`. After the
/// deadline it is the timeout the reaper would have recorded a moment later
/// (so the outcome does not depend on which came first); an output over
/// `max_output_bytes` is a permanent `invalid_output` failure.
pub fn result(
    position: usize,
    report: Report,
    received_ms: i64,
    deadline_at: Option<i64>,
    max_output_bytes: u64,
) -> End {
    let late = deadline_at.is_some_and(|deadline| received_ms > deadline);
    let (reason, message, retryable) = match report {
        _ if late => (
            Reason::Timeout,
            "the result arrived after the step's start-to-close timeout".to_owned(),
            true,
        ),
        Report::Completed(output) if json_size(&output) > max_output_bytes => (
            Reason::InvalidOutput,
            format!(
                "the step's output is {} bytes of JSON, over the server's limit of {max_output_bytes} bytes (max_output_bytes)",
                json_size(&output)
            ),
            false,
        ),
        Report::Completed(output) => {
            return End {
                status: AttemptStatus::Completed,
                reason: None,
                error: None,
                retryable: false,
                kind: Some(EventKind::AttemptCompleted),
                lease_expired: false,
                late: false,
                releases: None,
                timing_in_event: true,
                event: Some(Event::AttemptCompleted {
                    step: position,
                    output,
                }),
            };
        }
        Report::Failed {
            reason,
            message,
            retryable,
        } => (reason, stored_error(message), retryable),
    };
    failed(position, reason, message, retryable, late)
}

fn failed(position: usize, reason: Reason, message: String, retryable: bool, late: bool) -> End {
    End {
        status: AttemptStatus::Failed,
        reason: Some(reason),
        error: Some(message.clone()),
        retryable,
        kind: Some(EventKind::AttemptFailed),
        lease_expired: false,
        late,
        releases: None,
        timing_in_event: true,
        event: Some(Event::AttemptFailed {
            step: position,
            reason,
            message,
            retryable,
        }),
    }
}

/// The attempt of step `step` (at `position`) whose lease lapses at
/// `expires_at` and which times out at `deadline_at`, judged at `now`:
/// `None` while neither has passed (a heartbeat renewed it). Past its
/// deadline it failed with `timeout`; otherwise its worker stopped renewing
/// the lease: `heartbeat_timeout` when the step declares one, else
/// `lease_expired`. Either is retryable.
pub fn lapse(
    step: &StepDef,
    position: usize,
    expires_at: i64,
    deadline_at: Option<i64>,
    now: i64,
) -> Option<End> {
    let timed_out = deadline_at.is_some_and(|d| d <= now);
    if !timed_out && expires_at > now {
        return None;
    }
    let (reason, message) = if timed_out {
        (
            Reason::Timeout,
            format!(
                "attempt exceeded its start-to-close timeout of {} ms",
                step.timeout_ms.unwrap_or(0)
            ),
        )
    } else if step.heartbeat_timeout_ms.is_some() {
        (
            Reason::HeartbeatTimeout,
            "no heartbeat within the step's heartbeat_timeout".to_owned(),
        )
    } else {
        (
            Reason::LeaseExpired,
            "the worker stopped renewing its lease (it crashed or lost the network)".to_owned(),
        )
    };
    Some(End {
        lease_expired: !timed_out,
        timing_in_event: false,
        ..failed(position, reason, message, true, false)
    })
}

/// A running attempt of step `position` handed back by its worker (shutting
/// down), received at `received_ms`, the step having had `releases` released
/// attempts before. After the deadline it is a late result (a timeout). The
/// first [`MAX_RELEASES`] releases of a step are free: the attempt ends
/// `released` and the step is ready again at once, its budget untouched;
/// past that the release is a failed attempt with reason `worker_shutdown`,
/// retried per the step's policy.
pub fn release(
    position: usize,
    releases: u32,
    message: Option<String>,
    received_ms: i64,
    deadline_at: Option<i64>,
) -> End {
    if deadline_at.is_some_and(|deadline| received_ms > deadline) {
        let report = Report::Failed {
            reason: Reason::Timeout,
            message: String::new(),
            retryable: true,
        };
        return result(position, report, received_ms, deadline_at, u64::MAX);
    }
    let message = stored_error(
        message
            .filter(|m| !m.trim().is_empty())
            .unwrap_or_else(|| "the worker shut down before the attempt finished".to_owned()),
    );
    let counted = releases >= MAX_RELEASES;
    let event = if counted {
        Event::AttemptFailed {
            step: position,
            reason: Reason::WorkerShutdown,
            message: format!(
                "released {releases} times already (at most {MAX_RELEASES}), so this release counts as a failed attempt: {message}"
            ),
            retryable: true,
        }
    } else {
        Event::AttemptReleased { step: position }
    };
    End {
        status: if counted {
            AttemptStatus::Failed
        } else {
            AttemptStatus::Released
        },
        reason: Some(Reason::WorkerShutdown),
        error: Some(message),
        retryable: true,
        kind: Some(if counted {
            EventKind::AttemptFailed
        } else {
            EventKind::AttemptReleased
        }),
        lease_expired: false,
        late: false,
        releases: Some(releases + 1),
        timing_in_event: true,
        event: Some(event),
    }
}

/// The attempts still out when their run went from `before` to `after`:
/// when the run failed or was cancelled just now they end `cancelled`
/// (their leases stay, so the next heartbeat answers `cancel_requested`). A
/// completed run has no attempt out. A run that begins compensating ends
/// only the attempts of the steps it cancels ([`step_ended`]).
pub fn run_ended(before: RunStatus, after: RunStatus) -> Option<End> {
    (after.is_terminal() && !before.is_terminal() && after != RunStatus::Completed).then_some(End {
        status: AttemptStatus::Cancelled,
        reason: Some(Reason::Cancelled),
        error: None,
        retryable: false,
        kind: None,
        lease_expired: false,
        late: false,
        releases: None,
        timing_in_event: false,
        event: None,
    })
}

/// The attempts out for a step that went from `before` to `after` while its
/// run did not end: a running step cancelled (its run began compensating),
/// or a `for_each` step that stopped running (a child failed for good or it
/// was cancelled, and it may already be `compensating`: its running
/// children are cancelled), ends them `cancelled`, like [`run_ended`].
pub fn step_ended(before: &StepState, after: &StepState) -> Option<End> {
    (before.status == StepStatus::Running
        && (after.status == StepStatus::Cancelled
            || (after.status != StepStatus::Running && after.children.is_some())))
    .then(|| run_ended(RunStatus::Running, RunStatus::Cancelled))
    .flatten()
}

/// An attempt's timing buckets: `ready_at` → `claimed_at` → result received
/// (`received_ms`) → committed (`committed_ms`), epoch ms. The worker's own
/// numbers (`dispatch_ms`, `handler_ms`) are clamped to the engine's window
/// (claim → result received): they are shown, never trusted to move state.
pub fn timing(
    ready_at: i64,
    claimed_at: i64,
    received_ms: i64,
    committed_ms: i64,
    dispatch_ms: Option<i64>,
    handler_ms: Option<i64>,
) -> Timing {
    let window = (received_ms - claimed_at).max(0);
    let clamp = |v: Option<i64>| v.map(|ms| ms.clamp(0, window));
    let handler_ms = clamp(handler_ms);
    let dispatch_ms = clamp(dispatch_ms).map(|d| d.min(window - handler_ms.unwrap_or(0)));
    Timing {
        queue_wait_ms: (claimed_at - ready_at).max(0),
        dispatch_ms,
        handler_ms,
        ingest_ms: (committed_ms - received_ms).max(0),
        total_ms: (committed_ms - claimed_at).max(0),
    }
}

/// What a heartbeat decides for a lease: whether the worker should stop
/// (its run ended, its deadline passed, or its attempt no longer counts)
/// and otherwise until when the lease is renewed (epoch ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    pub cancel_requested: bool,
    /// `Some(now + lease_ms)` unless the worker should stop.
    pub renew_until: Option<i64>,
}

/// Decides a heartbeat at `now` for an attempt of kind `kind` and status
/// `attempt` in a run of status `run`, its lease lasting `lease_ms`, its
/// deadline `deadline_at`. Past the deadline the attempt no longer counts
/// even before the reaper has ended it: the worker should stop now. A
/// forward attempt of a compensating run is asked to stop and its lease is
/// not renewed (its result still counts until the lease lapses).
pub fn heartbeat(
    run: RunStatus,
    kind: AttemptKind,
    attempt: AttemptStatus,
    deadline_at: Option<i64>,
    lease_ms: i64,
    now: i64,
) -> Heartbeat {
    let cancel_requested = run.is_terminal()
        || (run == RunStatus::Compensating && kind == AttemptKind::Forward)
        || deadline_at.is_some_and(|deadline| deadline <= now)
        || attempt != AttemptStatus::Running;
    Heartbeat {
        cancel_requested,
        renew_until: (!cancel_requested).then_some(now + lease_ms),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_clamps_worker_numbers() {
        let t = timing(100, 150, 400, 410, Some(5), Some(1_000_000));
        assert_eq!(t.queue_wait_ms, 50);
        assert_eq!(t.handler_ms, Some(250));
        assert_eq!(t.dispatch_ms, Some(0));
        assert_eq!(t.ingest_ms, 10);
        assert_eq!(t.total_ms, 260);
        let t = timing(100, 150, 400, 410, Some(-3), Some(-1));
        assert_eq!((t.dispatch_ms, t.handler_ms), (Some(0), Some(0)));
    }

    #[test]
    fn heartbeats() {
        use AttemptStatus as A;
        use RunStatus as R;
        let check = |run, attempt, deadline, expected| {
            assert_eq!(
                heartbeat(run, AttemptKind::Forward, attempt, deadline, 100, 1000),
                expected
            );
        };
        let renewed = Heartbeat {
            cancel_requested: false,
            renew_until: Some(1100),
        };
        let stop = Heartbeat {
            cancel_requested: true,
            renew_until: None,
        };
        check(R::Running, A::Running, None, renewed);
        check(R::Running, A::Running, Some(1001), renewed);
        check(R::Running, A::Running, Some(1000), stop);
        check(R::Cancelled, A::Cancelled, None, stop);
        check(R::Running, A::Cancelled, None, stop);
        check(R::Failed, A::Running, None, stop);
        check(R::Compensating, A::Running, None, stop);
        assert_eq!(
            heartbeat(
                R::Compensating,
                AttemptKind::Compensate,
                A::Running,
                None,
                100,
                1000
            ),
            renewed
        );
    }

    #[test]
    fn truncation_keeps_characters_whole() {
        assert_eq!(truncate("héllo", 2), "h…");
        assert_eq!(truncate("hello", 5), "hello");
        assert_eq!(
            stored_error("x".repeat(MAX_ERROR_BYTES + 3)).len(),
            MAX_ERROR_BYTES + 3
        );
    }
}
