//! Bounds on every list, string and number a request carries, checked before
//! a handler (and so SQL) sees it: a request outside them is answered 400
//! with a stable code. Each bound is stated in `/openapi.json` too (the
//! request schemas of `weft-api` get these constants from
//! `routes/openapi.rs`, and the parameters of `routes/` carry the same
//! numbers; a test compares them).
//!
//! Lengths count characters (Unicode scalar values), as JSON Schema's
//! `maxLength` does.

use weft_api::{
    CompleteRequest, DecisionRequest, FailRequest, LogsRequest, PollRequest, ReleaseRequest,
    ResultsRequest, StartRunRequest, StartRunsRequest, TaskError, TaskResult, WorkerTiming,
};
use weft_core::ErrorCode;

use crate::ApiError;

/// Longest path parameter (workflow name, run id, step, lease id), in characters.
pub const MAX_PATH_PARAM_LEN: usize = 256;
/// Longest `worker_id`.
pub const MAX_WORKER_ID_LEN: usize = 256;
/// Longest handler or queue name in a poll (manifests allow 128; see
/// `weft_core::definition`).
pub const MAX_NAME_LEN: usize = 128;
/// Most handler names in one poll.
pub const MAX_HANDLERS_PER_POLL: usize = 1000;
/// Most queue names in one poll.
pub const MAX_QUEUES_PER_POLL: usize = 100;
/// Most tasks one poll may ask for.
pub const MAX_TASKS_PER_POLL: u32 = 100;
/// Longest `wait_ms` of a poll or of `GET /v1/runs/{id}`, in milliseconds.
pub const MAX_WAIT_MS: u64 = 60_000;
/// Longest idempotency key.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 256;
/// Most runs in one batch start.
pub const MAX_RUNS_PER_START: usize = weft_store::MAX_STARTS_PER_BATCH;
/// Most results in one `POST /v1/worker/results`.
pub const MAX_RESULTS_PER_BATCH: usize = 1000;
/// Longest lease id in a results batch.
pub const MAX_LEASE_ID_LEN: usize = 256;
/// Longest error message a worker reports, in characters.
pub const MAX_ERROR_MESSAGE_LEN: usize = 262_144;
/// Most log lines in one request.
pub const MAX_LOG_LINES: usize = 10_000;
/// Longest log line, in characters.
pub const MAX_LOG_LINE_LEN: usize = 65_536;
/// Longest free-text message of an approval decision or a release.
pub const MAX_MESSAGE_LEN: usize = 4096;
/// Largest worker-measured duration (`dispatch_ms`, `handler_ms`): 366 days.
pub const MAX_TIMING_MS: i64 = 366 * 86_400_000;
/// Largest `limit` of a run list.
pub const MAX_LIST_LIMIT: u32 = 1000;
/// Largest process id a worker may report (Linux's `PID_MAX_LIMIT`, 2^22).
pub const MAX_PID: u32 = 4_194_304;
/// Most slots a worker may say it has (`PollRequest.concurrency`).
pub const MAX_WORKER_CONCURRENCY: u32 = 100_000;
/// Longest `cursor`, `since`, `trace_id` or filter value of a run list.
pub const MAX_QUERY_TEXT_LEN: usize = 256;

/// The regular expression (ECMA 262, as in the OpenAPI document) of text
/// that carries no control characters: identifiers and names.
pub const NO_CONTROL_PATTERN: &str = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$";

/// A request type's bounds.
pub trait Validate {
    /// `Err` is a 400 naming the field and the bound.
    fn validate(&self) -> Result<(), ApiError>;
}

/// Checks a string's length in characters and that it carries no control
/// characters (identifiers end up in URLs, logs and metric labels).
pub fn check_text(
    code: ErrorCode,
    field: &str,
    value: &str,
    min: usize,
    max: usize,
) -> Result<(), ApiError> {
    let len = value.chars().count();
    if len < min || len > max {
        return Err(ApiError::bad_request(
            code,
            format!("`{field}` must be {min} to {max} characters (has {len})"),
        ));
    }
    // Unicode's control characters: C0, DEL and C1 (`char::is_control`),
    // as NO_CONTROL_PATTERN says.
    if value.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            code,
            format!("`{field}` must not contain control characters"),
        ));
    }
    Ok(())
}

/// Checks a free-text field's length only (control characters are kept).
pub fn check_len(code: ErrorCode, field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    let len = value.chars().count();
    if len > max {
        return Err(ApiError::bad_request(
            code,
            format!("`{field}` is {len} characters; at most {max}"),
        ));
    }
    Ok(())
}

/// Checks a list's size.
pub fn check_count(
    code: ErrorCode,
    field: &str,
    len: usize,
    min: usize,
    max: usize,
) -> Result<(), ApiError> {
    if len < min || len > max {
        return Err(ApiError::bad_request(
            code,
            format!("`{field}` must have {min} to {max} items (has {len})"),
        ));
    }
    Ok(())
}

/// Checks a number's range.
pub fn check_range<T: PartialOrd + std::fmt::Display>(
    code: ErrorCode,
    field: &str,
    value: T,
    min: T,
    max: T,
) -> Result<(), ApiError> {
    if value < min || value > max {
        return Err(ApiError::bad_request(
            code,
            format!("`{field}` must be from {min} to {max} (is {value})"),
        ));
    }
    Ok(())
}

impl Validate for StartRunRequest {
    fn validate(&self) -> Result<(), ApiError> {
        if let Some(key) = &self.idempotency_key {
            check_text(
                ErrorCode::InvalidIdempotencyKey,
                "idempotency_key",
                key,
                1,
                MAX_IDEMPOTENCY_KEY_LEN,
            )?;
        }
        crate::metadata::check(&self.metadata)
    }
}

impl Validate for StartRunsRequest {
    fn validate(&self) -> Result<(), ApiError> {
        check_count(
            ErrorCode::InvalidBatch,
            "runs",
            self.runs.len(),
            1,
            MAX_RUNS_PER_START,
        )?;
        self.runs.iter().try_for_each(Validate::validate)
    }
}

impl Validate for DecisionRequest {
    fn validate(&self) -> Result<(), ApiError> {
        if let Some(comment) = &self.comment {
            check_len(
                ErrorCode::InvalidMessage,
                "comment",
                comment,
                MAX_MESSAGE_LEN,
            )?;
        }
        if let Some(message) = &self.message {
            check_len(
                ErrorCode::InvalidMessage,
                "message",
                message,
                MAX_MESSAGE_LEN,
            )?;
        }
        Ok(())
    }
}

impl Validate for ReleaseRequest {
    fn validate(&self) -> Result<(), ApiError> {
        if let Some(message) = &self.message {
            check_len(
                ErrorCode::InvalidMessage,
                "message",
                message,
                MAX_MESSAGE_LEN,
            )?;
        }
        Ok(())
    }
}

impl Validate for PollRequest {
    fn validate(&self) -> Result<(), ApiError> {
        check_text(
            ErrorCode::InvalidWorkerId,
            "worker_id",
            &self.worker_id,
            1,
            MAX_WORKER_ID_LEN,
        )?;
        if self.handlers.is_empty() {
            return Err(ApiError::bad_request(
                ErrorCode::NoHandlers,
                "a worker must name the handlers it serves",
            ));
        }
        check_count(
            ErrorCode::TooManyHandlers,
            "handlers",
            self.handlers.len(),
            1,
            MAX_HANDLERS_PER_POLL,
        )?;
        for handler in &self.handlers {
            check_text(
                ErrorCode::InvalidHandler,
                "handlers[]",
                handler,
                1,
                MAX_NAME_LEN,
            )?;
        }
        check_count(
            ErrorCode::InvalidQueues,
            "queues",
            self.queues.len(),
            1,
            MAX_QUEUES_PER_POLL,
        )?;
        for queue in &self.queues {
            check_text(ErrorCode::InvalidQueues, "queues[]", queue, 1, MAX_NAME_LEN)?;
        }
        check_range(
            ErrorCode::InvalidMaxTasks,
            "max_tasks",
            self.max_tasks,
            1,
            MAX_TASKS_PER_POLL,
        )?;
        check_range(
            ErrorCode::InvalidWait,
            "wait_ms",
            self.wait_ms,
            0,
            MAX_WAIT_MS,
        )?;
        if let Some(host) = &self.host {
            check_text(
                ErrorCode::InvalidWorkerMeta,
                "host",
                host,
                1,
                MAX_NAME_LEN * 2,
            )?;
        }
        if let Some(version) = &self.version {
            check_text(
                ErrorCode::InvalidWorkerMeta,
                "version",
                version,
                1,
                MAX_NAME_LEN,
            )?;
        }
        if let Some(pid) = self.pid {
            check_range(ErrorCode::InvalidWorkerMeta, "pid", pid, 1, MAX_PID)?;
        }
        if let Some(concurrency) = self.concurrency {
            check_range(
                ErrorCode::InvalidWorkerMeta,
                "concurrency",
                concurrency,
                1,
                MAX_WORKER_CONCURRENCY,
            )?;
        }
        Ok(())
    }
}

impl Validate for WorkerTiming {
    fn validate(&self) -> Result<(), ApiError> {
        for (field, value) in [
            ("timing.dispatch_ms", self.dispatch_ms),
            ("timing.handler_ms", self.handler_ms),
        ] {
            if let Some(ms) = value {
                check_range(ErrorCode::InvalidTiming, field, ms, 0, MAX_TIMING_MS)?;
            }
        }
        Ok(())
    }
}

impl Validate for TaskError {
    fn validate(&self) -> Result<(), ApiError> {
        check_len(
            ErrorCode::InvalidMessage,
            "error.message",
            &self.message,
            MAX_ERROR_MESSAGE_LEN,
        )
    }
}

impl Validate for CompleteRequest {
    fn validate(&self) -> Result<(), ApiError> {
        self.timing.as_ref().map_or(Ok(()), Validate::validate)
    }
}

impl Validate for FailRequest {
    fn validate(&self) -> Result<(), ApiError> {
        self.error.validate()?;
        self.timing.as_ref().map_or(Ok(()), Validate::validate)
    }
}

impl Validate for TaskResult {
    fn validate(&self) -> Result<(), ApiError> {
        check_text(
            ErrorCode::InvalidLeaseId,
            "results[].lease_id",
            &self.lease_id,
            1,
            MAX_LEASE_ID_LEN,
        )?;
        if let Some(error) = &self.error {
            error.validate()?;
        }
        self.timing.as_ref().map_or(Ok(()), Validate::validate)
    }
}

impl Validate for ResultsRequest {
    fn validate(&self) -> Result<(), ApiError> {
        check_count(
            ErrorCode::TooManyResults,
            "results",
            self.results.len(),
            0,
            MAX_RESULTS_PER_BATCH,
        )?;
        self.results.iter().try_for_each(Validate::validate)
    }
}

impl Validate for LogsRequest {
    fn validate(&self) -> Result<(), ApiError> {
        check_count(
            ErrorCode::TooManyLines,
            "lines",
            self.lines.len(),
            0,
            MAX_LOG_LINES,
        )?;
        for line in &self.lines {
            check_len(ErrorCode::LineTooLong, "lines[]", line, MAX_LOG_LINE_LEN)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_count_characters_and_refuse_control_characters() {
        assert!(check_text(ErrorCode::InvalidQuery, "f", &"é".repeat(128), 1, 128).is_ok());
        assert!(check_text(ErrorCode::InvalidQuery, "f", &"é".repeat(129), 1, 128).is_err());
        assert!(check_text(ErrorCode::InvalidQuery, "f", "", 1, 128).is_err());
        assert!(check_text(ErrorCode::InvalidQuery, "f", "a\u{0}b", 1, 128).is_err());
        assert!(check_text(ErrorCode::InvalidQuery, "f", "a\nb", 1, 128).is_err());
        assert!(check_len(ErrorCode::InvalidQuery, "f", "a\nb", 3).is_ok());
    }

    #[test]
    fn a_poll_with_too_many_handlers_is_refused_with_its_code() {
        let poll = PollRequest {
            worker_id: "w".to_owned(),
            queues: vec!["default".to_owned()],
            handlers: (0..40_000).map(|i| format!("h{i}")).collect(),
            max_tasks: 1,
            wait_ms: 0,
            host: None,
            pid: None,
            version: None,
            concurrency: None,
        };
        let err = poll.validate().unwrap_err();
        assert_eq!(
            (err.status().as_u16(), err.code().as_str()),
            (400, "too_many_handlers")
        );
    }
}
