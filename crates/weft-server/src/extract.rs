//! Request extractors whose rejections are `ApiError`s, so malformed JSON,
//! wrong content and oversized bodies get the same `{"error": ...}` shape
//! and a 4xx, never axum's plain-text rejections.

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Request},
    http::request::Parts,
};
use serde::de::DeserializeOwned;

use crate::{
    ApiError,
    limits::{self, Validate},
};
use weft_core::ErrorCode;

/// How long reading a request body may take; installed as a request
/// extension by the router (see `Config::body_read_timeout`).
#[derive(Debug, Clone, Copy)]
pub struct BodyReadTimeout(pub std::time::Duration);

/// A JSON body, checked against the bounds of [`Validate`] before a handler
/// sees it. An empty body (no bytes) deserializes from `{}` so optional-only
/// requests (e.g. starting a run with no input) can omit it; the OpenAPI
/// document marks those bodies optional.
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Validate + utoipa::ToSchema,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = body_bytes(req, state).await?;
        // Only a body of no bytes at all: whitespace alone is not JSON.
        let bytes: &[u8] = if bytes.is_empty() { b"{}" } else { &bytes };
        let invalid = |err: &dyn std::fmt::Display| {
            ApiError::bad_request(
                ErrorCode::InvalidJson,
                format!("request body is not valid JSON for this endpoint: {err}"),
            )
        };
        let mut value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|err| invalid(&err))?;
        crate::conform::conform(&T::name(), &mut value).map_err(|err| invalid(&err))?;
        let value: T = serde_json::from_value(value).map_err(|err| invalid(&err))?;
        value.validate()?;
        Ok(Json(value))
    }
}

/// The raw body, with the size limit mapped to 413 and a body that does not
/// arrive within the [`BodyReadTimeout`] to 408.
pub async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    let timeout = req
        .extensions()
        .get::<BodyReadTimeout>()
        .map_or(crate::DEFAULT_BODY_READ_TIMEOUT, |t| t.0);
    let read = Bytes::from_request(req, state);
    let Ok(result) = tokio::time::timeout(timeout, read).await else {
        return Err(ApiError::Timeout(timeout.as_secs()));
    };
    result.map_err(|rejection| {
        if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge
        } else {
            ApiError::bad_request(ErrorCode::InvalidBody, rejection.body_text())
        }
    })
}

/// Path parameters with a JSON error on mismatch; every parameter is at
/// most [`limits::MAX_PATH_PARAM_LEN`] bytes with no control characters.
pub struct Path<T>(pub T);

impl<S, T> FromRequestParts<S> for Path<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let raw = axum::extract::RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|rejection| {
                ApiError::bad_request(ErrorCode::InvalidPath, rejection.body_text())
            })?;
        for (key, value) in &raw {
            limits::check_text(
                ErrorCode::InvalidPath,
                key,
                value,
                1,
                limits::MAX_PATH_PARAM_LEN,
            )?;
        }
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Path(value))
            .map_err(|rejection| {
                ApiError::bad_request(ErrorCode::InvalidPath, rejection.body_text())
            })
    }
}

/// Query parameters with a JSON error on mismatch, checked against the
/// bounds of [`Validate`].
pub struct Query<T>(pub T);

impl<S, T> FromRequestParts<S> for Query<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Validate,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| {
                ApiError::bad_request(ErrorCode::InvalidQuery, rejection.body_text())
            })
            .and_then(|axum::extract::Query(value): axum::extract::Query<T>| {
                value.validate()?;
                Ok(Query(value))
            })
    }
}

/// The run a path names, by its run id or trace id, parsed once here. Text
/// that is neither names no run: 404 `run_not_found`, as an unknown id does.
pub(crate) fn run_ref(id: &str) -> Result<weft_core::RunRef, ApiError> {
    id.parse().map_err(|_| ApiError::NotFound {
        what: "run",
        id: id.to_owned(),
    })
}
