//! `when` conditions evaluated off the async runtime: a small process-wide
//! pool of threads runs [`weft_core::condition::evaluate`], each evaluation
//! with a time limit. The iteration budget of `weft_core::condition::LIMITS`
//! bounds what an evaluation can do; the time limit and the pool bound what
//! the library does between two counted iterations, so no condition holds a
//! run's transaction, or an async worker thread, for longer than
//! [`TIME_LIMIT`].

use std::{
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicBool, Ordering},
        mpsc::{self, RecvTimeoutError, SyncSender, TrySendError},
    },
    time::{Duration, Instant},
};

use serde_json::Value;
use weft_core::condition::{self, EvalError, Evaluate, Evaluation, Vars};

/// Longest one condition may take, queueing for a thread included.
pub const TIME_LIMIT: Duration = Duration::from_millis(500);
/// Threads evaluating conditions, for the whole process.
pub const THREADS: usize = 2;
/// Evaluations that may wait for a thread; past that a condition fails at once.
pub const QUEUE: usize = 32;

struct Job {
    /// `when` (a boolean) or `for_each` (a list).
    field: condition::Field,
    /// Set by the caller when it stops waiting: the evaluation then stops at
    /// its next iteration.
    cancel: Arc<AtomicBool>,
    expression: String,
    vars: Vars,
    deadline: Instant,
    reply: SyncSender<Result<Value, EvalError>>,
}

fn pool() -> &'static SyncSender<Job> {
    static POOL: OnceLock<SyncSender<Job>> = OnceLock::new();
    POOL.get_or_init(|| {
        let (sender, receiver) = mpsc::sync_channel::<Job>(QUEUE);
        let receiver = Arc::new(Mutex::new(receiver));
        for i in 0..THREADS {
            let receiver = receiver.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("weft-condition-{i}"))
                // The parser and evaluator recurse per level of the tree.
                .stack_size(8 * 1024 * 1024)
                .spawn(move || {
                    loop {
                        let job = {
                            let Ok(receiver) = receiver.lock() else {
                                return;
                            };
                            match receiver.recv() {
                                Ok(job) => job,
                                Err(_) => return,
                            }
                        };
                        // Its caller has given up on it.
                        if Instant::now() >= job.deadline {
                            continue;
                        }
                        // A panic in the library fails this condition, not the thread.
                        let result = std::panic::catch_unwind(|| {
                            condition::resolve(
                                job.field,
                                &job.expression,
                                &job.vars,
                                &condition::LIMITS,
                                &job.cancel,
                            )
                        })
                        .unwrap_or_else(|_| {
                            Err(EvalError(format!(
                                "`{}` `{}`: the condition evaluator failed on it",
                                job.field.as_str(),
                                condition::excerpt(&job.expression)
                            )))
                        });
                        let _ = job.reply.send(result);
                    }
                });
            if let Err(err) = spawned {
                tracing::error!(component = "store", error = %err, "cannot start a condition thread");
            }
        }
        sender
    })
}

/// Evaluates on the pool and waits at most `time_limit` for the answer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pooled {
    pub time_limit: Duration,
}

impl Default for Pooled {
    fn default() -> Self {
        Pooled {
            time_limit: TIME_LIMIT,
        }
    }
}

impl Evaluate for Pooled {
    fn evaluate(&self, expression: &str, vars: &Vars) -> Evaluation {
        let started = Instant::now();
        let result = self.decide(expression, vars);
        Evaluation {
            result,
            condition_ms: Some(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)),
        }
    }

    fn evaluate_list(&self, expression: &str, vars: &Vars) -> Result<Vec<Value>, EvalError> {
        let value = self.resolve(condition::Field::ForEach, expression, vars)?;
        condition::items(expression, value)
    }
}

impl Pooled {
    /// A `when`'s answer from the pool, within the time limit.
    fn decide(&self, expression: &str, vars: &Vars) -> Result<bool, EvalError> {
        self.resolve(condition::Field::When, expression, vars)
            .and_then(|value| condition::decide(expression, value))
    }

    /// Evaluates `expression` on the pool to its JSON value, within the
    /// time limit.
    fn resolve(
        &self,
        field: condition::Field,
        expression: &str,
        vars: &Vars,
    ) -> Result<Value, EvalError> {
        // Refuse oversized data before copying it to another thread.
        condition::check_data(expression, vars)?;
        let fail = |message: String| {
            EvalError(format!(
                "`{}` `{}`: {message}",
                field.as_str(),
                condition::excerpt(expression)
            ))
        };
        let (reply, answer) = mpsc::sync_channel(1);
        let cancel = Arc::new(AtomicBool::new(false));
        let job = Job {
            field,
            cancel: cancel.clone(),
            expression: expression.to_owned(),
            vars: vars.clone(),
            deadline: Instant::now() + self.time_limit,
            reply,
        };
        match pool().try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(fail(format!(
                    "no condition evaluator is free ({THREADS} threads busy, {QUEUE} evaluations waiting)"
                )));
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(fail("the condition evaluators have stopped".to_owned()));
            }
        }
        match answer.recv_timeout(self.time_limit) {
            Ok(result) => result,
            // Disconnected: the job reached a thread after its deadline.
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                cancel.store(true, Ordering::Relaxed);
                Err(fail(format!(
                    "not decided within {} ms, the time limit for a condition",
                    self.time_limit.as_millis()
                )))
            }
        }
    }
}

/// Runs `f`, which may wait on the pool, without stalling the async runtime:
/// on a multi-threaded runtime the worker thread hands its other tasks off
/// first (`block_in_place`); elsewhere (a current-thread runtime in tests,
/// no runtime) it simply runs.
pub(crate) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decides_on_the_pool() {
        let input = json!({"l": [1, 2, 3]});
        assert_eq!(
            Pooled::default().decide(
                "input.l.all(x, x > 0)",
                &Vars::new(input.clone(), json!({}))
            ),
            Ok(true)
        );
        let err = Pooled::default()
            .decide("input.missing > 1", &Vars::new(input.clone(), json!({})))
            .unwrap_err();
        assert!(err.0.contains("input.missing"), "{err}");
    }

    #[test]
    fn a_slow_condition_times_out_and_frees_its_thread() {
        // Few iterations, each slow: a regex over ~900 KB, 5,000 times.
        let input = json!({"l": (0..5000).collect::<Vec<_>>(), "s": "a".repeat(900_000)});
        let slow = "input.l.exists(x, input.s.matches('a*b$'))";
        let started = Instant::now();
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let input = input.clone();
                std::thread::spawn(move || {
                    Pooled {
                        time_limit: Duration::from_millis(20),
                    }
                    .decide(slow, &Vars::new(input.clone(), json!({})))
                })
            })
            .collect();
        for handle in handles {
            let err = handle.join().unwrap().unwrap_err();
            assert!(err.0.contains("20 ms"), "names the limit: {err}");
            assert!(
                err.0.contains("input.s.matches"),
                "names the expression: {err}"
            );
        }
        // Cancelled at their next iteration, the threads are free again
        // long before the slow conditions would have ended (each runs for
        // many seconds uncut): a quick condition queued behind them gets a
        // thread well within its own limit. The margins are wide so that a
        // loaded machine does not fail the test.
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{:?}",
            started.elapsed()
        );
        let quick = Pooled {
            time_limit: Duration::from_secs(2),
        };
        assert_eq!(
            quick.decide("input.l.size() > 0", &Vars::new(input.clone(), json!({}))),
            Ok(true)
        );
    }

    #[test]
    fn heavy_conditions_fail_fast_and_in_parallel() {
        let input = json!({"l": (0..4000).collect::<Vec<_>>()});
        let started = Instant::now();
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let input = input.clone();
                std::thread::spawn(move || {
                    Pooled::default().decide(
                        "input.l.all(x, input.l.all(y, x + y >= 0))",
                        &Vars::new(input.clone(), json!({})),
                    )
                })
            })
            .collect();
        for handle in handles {
            let err = handle.join().unwrap().unwrap_err();
            assert!(
                err.0.contains("iterations")
                    || err.0.contains("time limit")
                    || err.0.contains("no condition evaluator"),
                "{err}"
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }
}
