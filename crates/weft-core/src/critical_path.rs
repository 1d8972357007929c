//! The critical path of a run: the chain of steps, and of the waits inside
//! each (queue wait, running, backoff, sleep or approval), that set the run's
//! duration. Not the longest path by duration: starting at the step that
//! ended last, each step is followed back to the dependency whose completion
//! made it ready (the one that ended last), so every segment on the path is
//! time the run could not have saved without shortening that segment.
//!
//! A pure function of plain views (epoch-ms times, no IO); the dashboard and
//! `weft run` build the views from a run's attempt rows and its step events
//! (`StepTimes::from_events`).

use crate::EventKind;

/// What a stretch of time on the critical path was spent on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentKind {
    /// Ready, waiting for a worker to claim it.
    QueueWait,
    /// Claimed by a worker until its result was committed.
    Running,
    /// Between a failed attempt and the step being ready again.
    Backoff,
    /// A sleep or an approval.
    Wait,
}

impl SegmentKind {
    /// The stable name shown in the CLI and used as a CSS class.
    pub fn as_str(self) -> &'static str {
        match self {
            SegmentKind::QueueWait => "queue_wait",
            SegmentKind::Running => "running",
            SegmentKind::Backoff => "backoff",
            SegmentKind::Wait => "wait",
        }
    }
}

/// One attempt's times (epoch ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptTimes {
    pub attempt: i64,
    pub claimed_ms: i64,
    /// When its result was committed; `None` while it runs.
    pub finished_ms: Option<i64>,
}

/// One step's times (epoch ms), from its attempt rows and step events.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StepTimes {
    pub name: String,
    pub depends_on: Vec<String>,
    /// Every time the step became ready (`step.ready`), oldest first.
    pub ready_ms: Vec<i64>,
    /// When it began a sleep or an approval wait (`step.waiting`).
    pub waiting_ms: Option<i64>,
    /// When it ended: completed, failed, skipped or cancelled.
    pub ended_ms: Option<i64>,
    /// Its attempts, oldest first.
    pub attempts: Vec<AttemptTimes>,
}

/// One stretch of the critical path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub step: String,
    /// The attempt it belongs to (queue wait and running), if any.
    pub attempt: Option<i64>,
    pub kind: SegmentKind,
    pub start_ms: i64,
    pub end_ms: i64,
}

impl Segment {
    /// Its length in milliseconds.
    pub fn duration_ms(&self) -> i64 {
        self.end_ms - self.start_ms
    }
}

/// The critical path: its steps and segments in time order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CriticalPath {
    /// Step names, first to last.
    pub steps: Vec<String>,
    /// Non-empty stretches of time, first to last.
    pub segments: Vec<Segment>,
    /// From the first step's start to the last step's end (ms).
    pub total_ms: i64,
}

impl StepTimes {
    /// Fills the event-derived times of `steps` from a run's history:
    /// `(event type, step, at ms)` in history order. Only events after the
    /// last `run.retried` count (a retried run starts its path again).
    pub fn from_events<'a>(
        steps: &mut [StepTimes],
        events: impl IntoIterator<Item = (&'a str, Option<&'a str>, i64)>,
    ) {
        let events: Vec<_> = events.into_iter().collect();
        let start = events
            .iter()
            .rposition(|(kind, _, _)| EventKind::parse(kind) == Some(EventKind::RunRetried))
            .map_or(0, |i| i + 1);
        for step in steps.iter_mut() {
            step.ready_ms.clear();
            step.waiting_ms = None;
            step.ended_ms = None;
        }
        for (kind, name, at) in &events[start..] {
            let Some(step) = name.and_then(|n| steps.iter_mut().find(|s| s.name == n)) else {
                continue;
            };
            match EventKind::parse(kind) {
                Some(EventKind::StepReady) => step.ready_ms.push(*at),
                Some(EventKind::StepWaiting) => step.waiting_ms = step.waiting_ms.or(Some(*at)),
                Some(
                    EventKind::StepCompleted
                    | EventKind::StepFailed
                    | EventKind::StepSkipped
                    | EventKind::StepCancelled,
                ) => step.ended_ms = Some(*at),
                _ => {}
            }
        }
        if start > 0 {
            // Attempts before the retry belong to the earlier path.
            for step in steps.iter_mut() {
                let first = step.ready_ms.first().copied().or(step.waiting_ms);
                step.attempts
                    .retain(|a| first.is_some_and(|f| a.claimed_ms >= f));
            }
        }
    }

    /// When the step entered the run: first ready, waiting or claimed; a step
    /// skipped at once enters when it ends.
    fn entered_ms(&self) -> Option<i64> {
        [
            self.ready_ms.first().copied(),
            self.waiting_ms,
            self.attempts.first().map(|a| a.claimed_ms),
        ]
        .into_iter()
        .flatten()
        .min()
        .or(self.ended_ms)
    }
}

/// The critical path of a run whose steps are `steps` (definition order),
/// judged at `now_ms` (an unfinished step's end). Empty when no step started.
pub fn critical_path(steps: &[StepTimes], now_ms: i64) -> CriticalPath {
    let end_of = |s: &StepTimes| {
        s.ended_ms
            .unwrap_or(now_ms.max(s.entered_ms().unwrap_or(0)))
    };
    // The step that ended last (later in the definition on a tie).
    let Some(mut current) = (0..steps.len())
        .filter(|&i| steps[i].entered_ms().is_some())
        .max_by_key(|&i| (end_of(&steps[i]), i))
    else {
        return CriticalPath::default();
    };
    let mut chain = vec![current];
    while chain.len() <= steps.len() {
        // The dependency whose completion made this step ready.
        let next = steps[current]
            .depends_on
            .iter()
            .filter_map(|d| steps.iter().position(|s| &s.name == d))
            .filter(|&i| steps[i].ended_ms.is_some() && !chain.contains(&i))
            .max_by_key(|&i| (steps[i].ended_ms, i));
        match next {
            Some(i) => {
                chain.push(i);
                current = i;
            }
            None => break,
        }
    }
    chain.reverse();
    let mut segments = Vec::new();
    for &i in &chain {
        step_segments(&steps[i], end_of(&steps[i]), &mut segments);
    }
    let first = chain
        .first()
        .and_then(|&i| steps[i].entered_ms())
        .unwrap_or(0);
    let last = chain.last().map_or(first, |&i| end_of(&steps[i]));
    CriticalPath {
        steps: chain.iter().map(|&i| steps[i].name.clone()).collect(),
        segments,
        total_ms: (last - first).max(0),
    }
}

fn step_segments(step: &StepTimes, end: i64, out: &mut Vec<Segment>) {
    let Some(entered) = step.entered_ms() else {
        return;
    };
    let mut push = |kind, attempt, start: i64, stop: i64| {
        if stop > start {
            out.push(Segment {
                step: step.name.clone(),
                attempt,
                kind,
                start_ms: start,
                end_ms: stop,
            });
        }
    };
    if step.attempts.is_empty() {
        let kind = if step.waiting_ms.is_some() {
            SegmentKind::Wait
        } else {
            SegmentKind::QueueWait
        };
        push(kind, None, entered, end);
        return;
    }
    let mut at = entered;
    for attempt in &step.attempts {
        // The latest time it became ready before this claim; a later one
        // than the previous attempt's end means a backoff in between.
        let ready = step
            .ready_ms
            .iter()
            .copied()
            .filter(|&r| r <= attempt.claimed_ms)
            .max()
            .unwrap_or(at)
            .max(at);
        push(SegmentKind::Backoff, None, at, ready);
        push(
            SegmentKind::QueueWait,
            Some(attempt.attempt),
            ready,
            attempt.claimed_ms,
        );
        let finished = attempt
            .finished_ms
            .unwrap_or(end)
            .min(end.max(attempt.claimed_ms));
        push(
            SegmentKind::Running,
            Some(attempt.attempt),
            attempt.claimed_ms,
            finished,
        );
        at = finished.max(at);
    }
    if step.ended_ms.is_none() && at < end {
        // Not over: backing off, then queued again if it became ready.
        match step.ready_ms.iter().copied().filter(|&r| r >= at).max() {
            Some(ready) => {
                push(SegmentKind::Backoff, None, at, ready);
                push(SegmentKind::QueueWait, None, ready, end);
            }
            None => push(SegmentKind::Backoff, None, at, end),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(name: &str, deps: &[&str]) -> StepTimes {
        StepTimes {
            name: name.to_owned(),
            depends_on: deps.iter().map(|d| (*d).to_owned()).collect(),
            ..StepTimes::default()
        }
    }

    fn attempt(attempt: i64, claimed_ms: i64, finished_ms: i64) -> AttemptTimes {
        AttemptTimes {
            attempt,
            claimed_ms,
            finished_ms: Some(finished_ms),
        }
    }

    fn render(path: &CriticalPath) -> String {
        path.segments
            .iter()
            .map(|s| {
                format!(
                    "{}#{} {} {}..{}",
                    s.step,
                    s.attempt.map_or("-".to_owned(), |a| a.to_string()),
                    s.kind.as_str(),
                    s.start_ms,
                    s.end_ms
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn a_fan_in_follows_the_dependency_that_ended_last_not_the_longest() {
        // `slow` runs long but ends early; `late` is short but queued long,
        // so it is what made `join` ready.
        let mut slow = step("slow", &[]);
        slow.ready_ms = vec![0];
        slow.attempts = vec![attempt(1, 0, 500)];
        slow.ended_ms = Some(500);
        let mut late = step("late", &[]);
        late.ready_ms = vec![0];
        late.attempts = vec![attempt(1, 700, 800)];
        late.ended_ms = Some(800);
        let mut join = step("join", &["slow", "late"]);
        join.ready_ms = vec![800];
        join.attempts = vec![attempt(1, 810, 900)];
        join.ended_ms = Some(900);
        let path = critical_path(&[slow, late, join], 1_000);
        assert_eq!(path.steps, ["late", "join"]);
        assert_eq!(path.total_ms, 900);
        assert_eq!(
            render(&path),
            "late#1 queue_wait 0..700\nlate#1 running 700..800\n\
             join#1 queue_wait 800..810\njoin#1 running 810..900"
        );
    }

    #[test]
    fn retries_show_their_backoff_and_waits_their_wait() {
        let mut charge = step("charge", &[]);
        charge.ready_ms = vec![100, 400];
        charge.attempts = vec![attempt(1, 120, 200), attempt(2, 410, 450)];
        charge.ended_ms = Some(450);
        let mut approve = step("approve", &["charge"]);
        approve.waiting_ms = Some(450);
        approve.ended_ms = Some(2_000);
        let mut ship = step("ship", &["approve"]);
        ship.ready_ms = vec![2_000];
        ship.attempts = vec![attempt(1, 2_000, 2_100)];
        ship.ended_ms = Some(2_100);
        let path = critical_path(&[charge, approve, ship], 5_000);
        assert_eq!(path.steps, ["charge", "approve", "ship"]);
        assert_eq!(path.total_ms, 2_000);
        assert_eq!(
            render(&path),
            "charge#1 queue_wait 100..120\ncharge#1 running 120..200\n\
             charge#- backoff 200..400\ncharge#2 queue_wait 400..410\ncharge#2 running 410..450\n\
             approve#- wait 450..2000\nship#1 running 2000..2100"
        );
        let sum: i64 = path.segments.iter().map(Segment::duration_ms).sum();
        assert_eq!(sum, path.total_ms, "the segments cover the path");
    }

    #[test]
    fn an_unfinished_run_ends_its_path_now() {
        let mut fetch = step("fetch", &[]);
        fetch.ready_ms = vec![0];
        fetch.attempts = vec![attempt(1, 10, 50)];
        fetch.ended_ms = Some(50);
        let mut work = step("work", &["fetch"]);
        work.ready_ms = vec![50];
        work.attempts = vec![AttemptTimes {
            attempt: 1,
            claimed_ms: 60,
            finished_ms: None,
        }];
        let never = step("never", &["work"]);
        let path = critical_path(&[fetch, work, never], 300);
        assert_eq!(path.steps, ["fetch", "work"]);
        assert_eq!(path.segments.last().map(|s| s.end_ms), Some(300));
        assert_eq!(path.total_ms, 300);
        assert_eq!(
            critical_path(&[step("a", &[])], 10),
            CriticalPath::default()
        );
    }

    #[test]
    fn events_fill_the_times_and_a_retry_starts_over() {
        let mut steps = vec![step("a", &[])];
        steps[0].attempts = vec![attempt(1, 5, 10), attempt(2, 105, 110)];
        StepTimes::from_events(
            &mut steps,
            [
                ("step.ready", Some("a"), 0),
                ("step.failed", Some("a"), 10),
                ("run.retried", None, 100),
                ("step.ready", Some("a"), 100),
                ("step.completed", Some("a"), 110),
            ],
        );
        assert_eq!(steps[0].ready_ms, [100]);
        assert_eq!(steps[0].ended_ms, Some(110));
        assert_eq!(steps[0].attempts.len(), 1);
        let path = critical_path(&steps, 200);
        assert_eq!(
            render(&path),
            "a#2 queue_wait 100..105\na#2 running 105..110"
        );
    }
}
