//! The audit log of actions that have no run (registrations, token
//! changes): `GET /v1/audit`, newest first, filtered and paged.

use axum::{Json, extract::State};
use serde::Deserialize;
use weft_api::{AuditList, ErrorBody};
use weft_core::ErrorCode;
use weft_store::{AuditAction, AuditFilter};

use super::{ApiResult, runs::parse_since};
use crate::{
    ApiError, AppState,
    extract::Query,
    limits::{self, Validate},
};

#[derive(Deserialize)]
pub(crate) struct AuditQuery {
    /// `workflow.registered`, `token.created` or `token.revoked`.
    action: Option<String>,
    /// The token's name (or, with authentication off, the caller's actor).
    actor: Option<String>,
    /// RFC 3339 time, or a duration back from now such as `1h`.
    since: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

impl Validate for AuditQuery {
    fn validate(&self) -> ApiResult<()> {
        for (field, value) in [
            ("action", &self.action),
            ("actor", &self.actor),
            ("since", &self.since),
            ("cursor", &self.cursor),
        ] {
            if let Some(value) = value {
                limits::check_text(
                    ErrorCode::InvalidQuery,
                    field,
                    value,
                    0,
                    limits::MAX_QUERY_TEXT_LEN,
                )?;
            }
        }
        if let Some(limit) = self.limit {
            limits::check_range(
                ErrorCode::InvalidLimit,
                "limit",
                limit,
                1,
                limits::MAX_LIST_LIMIT,
            )?;
        }
        Ok(())
    }
}

#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(("action" = Option<String>, Query, description = "`workflow.registered`, `token.created` or `token.revoked`"), ("actor" = Option<String>, Query, max_length = 256, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$"), ("since" = Option<String>, Query, description = "RFC 3339 time, or a duration back from now (`90s`, `1h30m`)"), ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000), ("cursor" = Option<String>, Query, max_length = 256, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")), responses((status = 200, body = AuditList, description = "Newest first; `next_cursor` pages back"), (status = 400, body = ErrorBody)))]
pub(crate) async fn list_audit(
    State(state): State<AppState>,
    Query(query): Query<AuditQuery>,
) -> ApiResult<Json<AuditList>> {
    let action = match &query.action {
        None => None,
        Some(text) => Some(AuditAction::parse(text).ok_or_else(|| {
            let known: Vec<&str> = AuditAction::ALL.iter().map(|a| a.as_str()).collect();
            ApiError::bad_request(
                ErrorCode::InvalidAction,
                format!(
                    "unknown audit action `{text}` (one of {})",
                    known.join(", ")
                ),
            )
        })?),
    };
    let since_ms = match &query.since {
        None => None,
        Some(text) => Some(parse_since(text, state.store().now_ms())?),
    };
    let filter = AuditFilter {
        action,
        actor: query.actor,
        since_ms,
        limit: query.limit,
        cursor: query.cursor,
    };
    let page = state.store().list_audit(&filter).await?;
    Ok(Json(crate::convert::audit_list(page)))
}
