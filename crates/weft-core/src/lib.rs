//! Weft's domain: workflow definitions and their validation, run/step/attempt
//! states, retry policy, `when` conditions and the run state machine.
//!
//! Invariant: this crate does no IO. No tokio, no sqlx, no HTTP, no clock and no
//! randomness of its own: time and jitter come in as arguments, so every rule
//! here is a pure function that tests can drive with data.

pub mod attempt;
pub mod clock;
pub mod condition;
pub mod critical_path;
pub mod definition;
pub mod diagnosis;
pub mod duration;
pub mod error_code;
pub mod event;
pub mod fan_out;
pub mod idempotency;
pub mod ids;
pub mod machine;
pub mod mask;
pub mod metadata;
pub mod observe;
pub mod redact;
pub mod retry;
pub mod status;
pub mod trace;
#[cfg(test)]
mod traces;
#[cfg(test)]
mod traces_compensation;
#[cfg(test)]
mod traces_fan_out_undo;

pub use definition::{Definition, StepDef, StepKind, ValidationError};
pub use error_code::ErrorCode;
pub use event::EventKind;
pub use ids::{IdError, RunId, RunRef, SpanId, TraceId};
pub use machine::{Effect, Event, RunState, StepState, compensation};
pub use retry::{Backoff, RetryPolicy};
pub use status::{AttemptKind, AttemptStatus, Reason, RunStatus, StepStatus, UndoStatus};
