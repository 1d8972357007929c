//! `ErrorCode`: the catalogue of every error code the API answers with (the
//! `error.code` of an error body), one variant each with its wire string and
//! what it means. Manifest validation (here), the store's refusals and the
//! server's own checks all name their codes from it, so the codes clients
//! match on are one closed, documented set (`/openapi.json` lists them).
//!
//! The wire strings are a public contract: a code is never renamed or
//! reused for another meaning; new codes are additive.

use std::fmt;

macro_rules! error_codes {
    ($( $variant:ident = $code:literal : $doc:literal, )+) => {
        /// Every error code the API answers with; [`ErrorCode::as_str`] is the
        /// string sent in the error body's `code`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum ErrorCode {
            $( #[doc = $doc] $variant, )+
        }

        impl ErrorCode {
            /// Every code, in catalogue order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)+];

            /// The code as sent on the wire, e.g. `run_not_found`.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( ErrorCode::$variant => $code, )+
                }
            }

            /// What the code means and the HTTP status it comes with, one
            /// sentence for people (the OpenAPI description of the code).
            pub const fn description(self) -> &'static str {
                match self {
                    $( ErrorCode::$variant => $doc, )+
                }
            }
        }
    };
}

error_codes! {
    // Manifest validation (400, with the field's path in the message).
    InvalidManifest = "invalid_manifest": "400: the manifest is not UTF-8, not YAML or JSON, or not a mapping.",
    InvalidName = "invalid_name": "400: a workflow, step, queue or token name is empty, too long or has characters outside the allowed set.",
    InvalidDescription = "invalid_description": "400: the workflow's description is over its length bound.",
    MissingField = "missing_field": "400: a required manifest field is absent.",
    InvalidType = "invalid_type": "400: a manifest field has the wrong JSON type.",
    UnknownField = "unknown_field": "400: a manifest field this step kind does not accept.",
    EmptyWorkflow = "empty_workflow": "400: the workflow has no steps.",
    TooManySteps = "too_many_steps": "400: the workflow has more steps than the server allows.",
    DuplicateStep = "duplicate_step": "400: two steps share a name.",
    UnknownDependency = "unknown_dependency": "400: `depends_on` names a step the workflow does not have.",
    DuplicateDependency = "duplicate_dependency": "400: `depends_on` names the same step twice.",
    Cycle = "cycle": "400: the steps' dependencies form a cycle.",
    MissingHandler = "missing_handler": "400: a task step has no `handler`.",
    InvalidKind = "invalid_kind": "400: a step's `kind` is not `task`, `sleep` or `approval`.",
    InvalidRetry = "invalid_retry": "400: a step's `retry` policy is malformed or out of bounds.",
    InvalidDuration = "invalid_duration": "400: a duration (`timeout`, `heartbeat_timeout`, `duration`, backoff) does not parse or is out of bounds.",
    InvalidWhen = "invalid_when": "400: a step's `when` condition does not compile.",
    WhenTooComplex = "when_too_complex": "400: a step's `when` condition is over the static size or nesting limits.",
    // Not found (404).
    WorkflowNotFound = "workflow_not_found": "404: no workflow (or workflow version) of that name.",
    RunNotFound = "run_not_found": "404: no run with that run id or trace id.",
    StepNotFound = "step_not_found": "404: the run has no step of that name.",
    TokenNotFound = "token_not_found": "404: no API token of that name or id.",
    NotFound = "not_found": "404: the named resource does not exist.",
    RouteNotFound = "route_not_found": "404: no route for this method and path.",
    // Conflicts with the current state (409; nothing was changed).
    Conflict = "conflict": "409: the write conflicts with a row written meanwhile.",
    StaleLease = "stale_lease": "409 (404 for an unknown lease id): the lease is no longer held (expired, reaped, or its attempt ended); the result changed nothing.",
    AttemptNotRunning = "attempt_not_running": "409: the lease's attempt is no longer running (its run ended meanwhile).",
    DeadlineExceeded = "deadline_exceeded": "409: the step's start-to-close timeout has passed; the attempt was recorded as timed out.",
    IdempotencyKeyReused = "idempotency_key_reused": "409: the idempotency key was used for a start with a different workflow or input.",
    ConcurrentUpdate = "concurrent_update": "409: a concurrent write raced this one; try again.",
    DynamicStepReference = "dynamic_step_reference": "400: a `when` reads `steps` or `upstream` by a computed key or as a whole.",
    UnknownStepReference = "unknown_step_reference": "400: a `when` names a step outside the step's ancestors.",
    InvalidCompensateOn = "invalid_compensate_on": "400: the workflow's `compensate_on` is not a list of `failure` and `cancel`.",
    InvalidValue = "invalid_value": "400: a manifest field has a value outside its allowed words.",
    InvalidTriggerRule = "invalid_trigger_rule": "400: a step's `run_if` is unknown, or `handles_failure` is set on a step that never runs after a failure.",
    InvalidForEach = "invalid_for_each": "400: a step's `for_each`, `max_items` or `max_parallel` is malformed or out of bounds.",
    RunCompensated = "run_compensated": "409: the run's compensation began, so its forward steps cannot run again (retry of a compensated run).",
    NoFailedCompensation = "no_failed_compensation": "409: the step has no failed compensation to skip.",
    CountChanged = "count_changed": "409: the number of runs matching a bulk action's filter is not the expected count.",
    TooManyRuns = "too_many_runs": "400: a bulk action matched more runs than it may act on at once.",
    InvalidExpected = "invalid_expected": "400: see the message.",
    InvalidUntil = "invalid_until": "400: see the message.",
    InvalidMetadata = "invalid_metadata": "400: run metadata has too many keys, or a key or value out of bounds.",
    InvalidState = "invalid_state": "409: the action does not apply to the run or step in its current state.",
    TokenNameTaken = "token_name_taken": "409: an API token of that name exists already.",
    // Malformed or out-of-range requests (400).
    BadRequest = "bad_request": "400: the request cannot be served (a status no other code describes).",
    InvalidJson = "invalid_json": "400: the body is not JSON, or not the JSON types the document states.",
    InvalidBody = "invalid_body": "400: the body is JSON but does not match the operation's schema.",
    InvalidPath = "invalid_path": "400: a path parameter is malformed or over its length bound.",
    InvalidQuery = "invalid_query": "400: a query parameter is malformed or out of range.",
    InvalidCursor = "invalid_cursor": "400: the cursor is not one this API handed out.",
    InvalidTraceId = "invalid_trace_id": "400: a trace id filter is not 32 lowercase hex digits with one not zero (W3C Trace Context).",
    InvalidLimit = "invalid_limit": "400: `limit` is outside its bounds.",
    InvalidStatus = "invalid_status": "400: the status filter is not a known status.",
    InvalidSince = "invalid_since": "400: `since` is neither an RFC 3339 time nor a duration.",
    InvalidVersion = "invalid_version": "400: the workflow version is not a positive integer.",
    InvalidCause = "invalid_cause": "400: the diagnosis cause filter is not a known cause.",
    InvalidAction = "invalid_action": "400: the audit action filter is not a known action.",
    InvalidActor = "invalid_actor": "400: the `X-Weft-Actor` header is malformed or over its length bound.",
    InvalidIdempotencyKey = "invalid_idempotency_key": "400: the idempotency key is empty, too long or has control characters.",
    InvalidBatch = "invalid_batch": "400: a batch start has no runs or more than the server allows.",
    InvalidMessage = "invalid_message": "400: a comment or message is over its length bound.",
    InvalidWorkerId = "invalid_worker_id": "400: the poll's `worker_id` is empty, too long or has control characters.",
    NoHandlers = "no_handlers": "400: the poll names no handlers.",
    TooManyHandlers = "too_many_handlers": "400: the poll names more handlers than the server allows.",
    InvalidHandler = "invalid_handler": "400: a handler name in the poll is empty or over its length bound.",
    InvalidQueues = "invalid_queues": "400: the queue list is empty, too long, or holds a malformed name.",
    InvalidMaxTasks = "invalid_max_tasks": "400: the poll's `max_tasks` is outside its bounds.",
    InvalidWait = "invalid_wait": "400: `wait_ms` is outside its bounds.",
    InvalidWorkerMeta = "invalid_worker_meta": "400: the poll's host, version, pid or concurrency is malformed or out of bounds.",
    InvalidTiming = "invalid_timing": "400: a reported timing is outside its bounds.",
    InvalidLeaseId = "invalid_lease_id": "400: a lease id in the batch is empty, too long or has control characters.",
    InvalidErrorKind = "invalid_error_kind": "400: the result's `error.kind` is not one of the worker failure kinds.",
    TooManyResults = "too_many_results": "400: the results batch is over its item bound.",
    TooManyLines = "too_many_lines": "400: the log batch is over its line bound.",
    LineTooLong = "line_too_long": "400: a log line is over its length bound.",
    InvalidRole = "invalid_role": "400: the token role is not `admin`, `operator`, `viewer` or `worker`.",
    InvalidExpiry = "invalid_expiry": "400: the token's `expires_in_seconds` is outside its bounds.",
    NameMismatch = "name_mismatch": "400: the manifest's `name` differs from the workflow name in the path.",
    // The HTTP edge.
    MethodNotAllowed = "method_not_allowed": "405: the route does not accept this method (see `Allow`).",
    RequestTimeout = "request_timeout": "408: the request body did not arrive in time.",
    PayloadTooLarge = "payload_too_large": "413: the body is over the server's `--max-body-bytes`.",
    UnsupportedMediaType = "unsupported_media_type": "415: the body's content type is not one this route reads.",
    RateLimited = "rate_limited": "429: the caller is over its request rate or its concurrent long polls (see `Retry-After`).",
    TlsRequired = "tls_required": "400: plain HTTP was sent to a port that serves HTTPS only.",
    // Authentication and forgery checks.
    Unauthorized = "unauthorized": "401: the API token is missing, malformed, unknown, expired or revoked (see `WWW-Authenticate`).",
    Forbidden = "forbidden": "403: the token's role or queues do not allow the call, or the lease was claimed by another token.",
    HostNotAllowed = "host_not_allowed": "403: the `Host` header names a host this server does not answer for (DNS rebinding).",
    OriginMismatch = "origin_mismatch": "403: a cross-site browser request (its `Origin` is not this server).",
    ClientHeaderRequired = "client_header_required": "403: a write without `X-Weft-Client` (or a session's CSRF token).",
    CsrfTokenInvalid = "csrf_token_invalid": "403: the dashboard form's CSRF token is missing or does not match the session.",
    NoTokenPepper = "no_token_pepper": "503: the server has no token pepper to hash API tokens with.",
    // The server and its database.
    Unavailable = "unavailable": "503: the database cannot be reached or the server is shutting down; try again.",
    CorruptRow = "corrupt_row": "500: a stored row does not decode; the message names the column and run, never the stored values.",
    Internal = "internal": "500: an unexpected error; the server log has the details.",
}

impl ErrorCode {
    /// The code whose wire string is `code`, if the catalogue has it.
    pub fn parse(code: &str) -> Option<ErrorCode> {
        Self::ALL.iter().copied().find(|c| c.as_str() == code)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for ErrorCode {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorCode;

    #[test]
    fn codes_are_unique_snake_case_and_parse_back() {
        let mut seen = std::collections::BTreeSet::new();
        for code in ErrorCode::ALL {
            let s = code.as_str();
            assert!(seen.insert(s), "`{s}` twice");
            assert!(
                !s.is_empty() && s.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "`{s}` is not snake_case"
            );
            assert_eq!(ErrorCode::parse(s), Some(*code));
            assert!(!code.description().is_empty());
        }
        assert_eq!(ErrorCode::parse("no_such_code"), None);
    }
}
