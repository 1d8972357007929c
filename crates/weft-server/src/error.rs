//! `ApiError`: every error the API returns, each with a stable code and
//! status. Converting an error has no side effects; logging of failed
//! requests happens in the request middleware.

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

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
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
            ApiError::NotFound { what: "lease", .. } => "stale_lease",
            ApiError::NotFound { .. } => "not_found",
            ApiError::TooLarge => "payload_too_large",
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
        response.extensions_mut().insert(ErrorCode(self.code()));
        response
    }
}

/// Attached to error responses so the logging middleware can name the code.
#[derive(Debug, Clone, Copy)]
pub struct ErrorCode(pub &'static str);
