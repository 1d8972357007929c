//! `ApiError`: every error the API returns, each with a stable code and
//! status. Converting an error has no side effects; logging of failed
//! requests happens in the request middleware.
//!
//! The codes of the HTTP edge itself (the rest come from validation and the
//! store): `invalid_json`, `invalid_body`, `invalid_path`, `invalid_query`
//! (400, malformed or out-of-range input; bounds in [`crate::limits`]),
//! `route_not_found` (404), `method_not_allowed` (405, with `Allow`),
//! `request_timeout` (408, the body did not arrive in time),
//! `payload_too_large` (413, over `--max-body-bytes`), `unauthorized` (401,
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

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("{what} `{id}` not found")]
    NotFound { what: &'static str, id: String },
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
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
        code: &'static str,
        message: String,
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
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
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
                code: "request_timeout",
                message: message("the request did not arrive in time"),
            },
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::Other {
                status,
                code: "unsupported_media_type",
                message: message("unsupported content type"),
            },
            StatusCode::SERVICE_UNAVAILABLE => ApiError::Unavailable(message("unavailable")),
            s if s.is_server_error() => ApiError::Internal(message("unexpected error")),
            _ => ApiError::Other {
                status,
                code: "bad_request",
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
            ApiError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { code, .. } | ApiError::Conflict { code, .. } => code,
            ApiError::NotFound {
                what: "workflow", ..
            } => "workflow_not_found",
            ApiError::NotFound { what: "run", .. } => "run_not_found",
            ApiError::NotFound { what: "step", .. } => "step_not_found",
            ApiError::NotFound { what: "token", .. } => "token_not_found",
            ApiError::NotFound { what: "lease", .. } => "stale_lease",
            ApiError::NotFound { .. } => "not_found",
            ApiError::TooLarge => "payload_too_large",
            ApiError::Timeout(_) => "request_timeout",
            ApiError::RouteNotFound(_) => "route_not_found",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::Other { code, .. } => code,
            ApiError::Unauthorized { .. } => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
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
                code: "corrupt_row",
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
                code: self.code().to_owned(),
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
        response.extensions_mut().insert(ErrorCode(self.code()));
        response
    }
}

/// Attached to error responses so the logging middleware can name the code.
#[derive(Debug, Clone, Copy)]
pub struct ErrorCode(pub &'static str);
