//! `ApiError`: every error the API returns, each with a stable code and
//! status. Converting an error has no side effects; logging of failed
//! requests happens in the request middleware.
//!
//! The codes of the HTTP edge itself (the rest come from validation and the
//! store): `invalid_json`, `invalid_body`, `invalid_path`, `invalid_query`
//! (400, malformed or out-of-range input; bounds in [`crate::limits`]),
//! `route_not_found` (404), `method_not_allowed` (405, with `Allow`),
//! `request_timeout` (408, the body did not arrive in time),
//! `payload_too_large` (413, over `--max-body-bytes`), `rate_limited` (429,
//! a caller over its request rate or long-poll cap, with `Retry-After`),
//! `tls_required` (400, plain HTTP sent to an HTTPS port), `unauthorized` (401,
//! a missing, malformed, unknown, expired or revoked API token; answered with
//! `WWW-Authenticate: Bearer`), `forbidden` (403, the token's role or queues
//! do not allow the call, or the lease was claimed by another token),
//! `unavailable` (503),
//! `corrupt_row` (500, a stored row does not decode: the message names the
//! column and run, never the stored values) and `internal` (500).

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use weft_api::{ErrorBody, ErrorDetail};
use weft_core::ErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest { code: ErrorCode, message: String },
    #[error("{what} `{id}` not found")]
    NotFound { what: &'static str, id: String },
    #[error("{message}")]
    Conflict { code: ErrorCode, message: String },
    #[error("request body is larger than the server allows (see --max-body-bytes)")]
    TooLarge,
    #[error("the request body did not arrive within {0} s")]
    Timeout(u64),
    #[error("{0}")]
    RouteNotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    /// Any other status a layer answered, with its stable code.
    #[error("{message}")]
    Other {
        status: StatusCode,
        code: ErrorCode,
        message: String,
    },
    /// The caller is over one of its limits (`ratelimit.rs`).
    #[error("{message}")]
    RateLimited {
        message: String,
        /// Sent as `Retry-After`, in whole seconds.
        retry_after_secs: u64,
    },
    /// No valid API token: 401 `unauthorized`, with `WWW-Authenticate`.
    #[error("{message}")]
    Unauthorized {
        message: String,
        /// The token was presented but refused (RFC 6750 `invalid_token`),
        /// rather than missing.
        invalid_token: bool,
    },
    /// The caller's role or queues do not allow this call: 403 `forbidden`.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn bad_request(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code,
            message: message.into(),
        }
    }

    /// The JSON error for a bare status a layer or axum answered (`text`
    /// is its plain-text body, if any).
    pub fn from_status(status: StatusCode, text: String) -> Self {
        let message = |default: &str| {
            if text.is_empty() {
                default.to_owned()
            } else {
                text.clone()
            }
        };
        match status {
            StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed(message(
                "this route does not accept this method (see the Allow header)",
            )),
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge,
            StatusCode::NOT_FOUND => ApiError::RouteNotFound(message("no such route")),
            StatusCode::REQUEST_TIMEOUT => ApiError::Other {
                status,
                code: ErrorCode::RequestTimeout,
                message: message("the request did not arrive in time"),
            },
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::Other {
                status,
                code: ErrorCode::UnsupportedMediaType,
                message: message("unsupported content type"),
            },
            StatusCode::SERVICE_UNAVAILABLE => {
                ApiError::Unavailable(message(ErrorCode::Unavailable.as_str()))
            }
            s if s.is_server_error() => ApiError::Internal(message("unexpected error")),
            _ => ApiError::Other {
                status,
                code: ErrorCode::BadRequest,
                message: message("the request cannot be served"),
            },
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::RouteNotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Other { status, .. } => *status,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The catalogue code the error body carries.
    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::BadRequest { code, .. } | ApiError::Conflict { code, .. } => *code,
            ApiError::NotFound {
                what: "workflow", ..
            } => ErrorCode::WorkflowNotFound,
            ApiError::NotFound { what: "run", .. } => ErrorCode::RunNotFound,
            ApiError::NotFound { what: "step", .. } => ErrorCode::StepNotFound,
            ApiError::NotFound { what: "token", .. } => ErrorCode::TokenNotFound,
            ApiError::NotFound { what: "lease", .. } => ErrorCode::StaleLease,
            ApiError::NotFound { .. } => ErrorCode::NotFound,
            ApiError::TooLarge => ErrorCode::PayloadTooLarge,
            ApiError::Timeout(_) => ErrorCode::RequestTimeout,
            ApiError::RouteNotFound(_) => ErrorCode::RouteNotFound,
            ApiError::MethodNotAllowed(_) => ErrorCode::MethodNotAllowed,
            ApiError::Other { code, .. } => *code,
            ApiError::RateLimited { .. } => ErrorCode::RateLimited,
            ApiError::Unauthorized { .. } => ErrorCode::Unauthorized,
            ApiError::Forbidden(_) => ErrorCode::Forbidden,
            ApiError::Unavailable(_) => ErrorCode::Unavailable,
            ApiError::Internal(_) => ErrorCode::Internal,
        }
    }
}

impl From<weft_store::Error> for ApiError {
    fn from(err: weft_store::Error) -> Self {
        use weft_store::Error as E;
        match err {
            E::NotFound { what, id } => ApiError::NotFound { what, id },
            E::Conflict { code, message } => ApiError::Conflict { code, message },
            E::Invalid { code, message } => ApiError::BadRequest { code, message },
            E::Unavailable(_) => ApiError::Unavailable(err.to_string()),
            E::Corrupt(_) => ApiError::Other {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                code: ErrorCode::CorruptRow,
                message: err.to_string(),
            },
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<weft_core::ValidationError> for ApiError {
    fn from(err: weft_core::ValidationError) -> Self {
        ApiError::BadRequest {
            code: err.code,
            message: err.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code().as_str().to_owned(),
                message: self.to_string(),
            },
        };
        let mut response = (self.status(), Json(body)).into_response();
        if matches!(self, ApiError::Timeout(_)) {
            // Part of the body is still unread: the connection cannot be reused.
            response.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
        }
        if let ApiError::RateLimited {
            retry_after_secs, ..
        } = &self
        {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(*retry_after_secs),
            );
        }
        if let ApiError::Unauthorized { invalid_token, .. } = &self {
            let challenge = if *invalid_token {
                "Bearer realm=\"weft\", error=\"invalid_token\""
            } else {
                "Bearer realm=\"weft\""
            };
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static(challenge),
            );
        }
        response.extensions_mut().insert(ResponseCode(self.code()));
        response
    }
}

/// Attached to error responses so the logging middleware can name the code.
#[derive(Debug, Clone, Copy)]
pub struct ResponseCode(pub ErrorCode);
