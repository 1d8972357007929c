//! API token management: create (the token shown once), list, revoke. Admin
//! only (declared in the route table). A revocation takes effect on this
//! server at once and on the others within their token cache's time
//! (`--token-cache`).

use axum::{Extension, Json, extract::State, http::StatusCode};
use weft_api::{CreateTokenRequest, CreatedToken, ErrorBody, TokenInfo, TokenList};
use weft_core::ErrorCode;

use super::ApiResult;
use crate::{
    ApiError, AppState,
    auth::{Principal, Role},
    extract::{self, Path},
    limits::{self, Validate},
};

/// Longest token lifetime accepted, in seconds (10 years).
pub const MAX_TOKEN_LIFETIME_SECONDS: u64 = 10 * 365 * 24 * 3600;

/// Most queues a worker token may name.
pub const MAX_TOKEN_QUEUES: usize = 64;

impl Validate for CreateTokenRequest {
    fn validate(&self) -> ApiResult<()> {
        limits::check_text(
            ErrorCode::InvalidName,
            "name",
            &self.name,
            1,
            limits::MAX_NAME_LEN,
        )?;
        if Role::parse(&self.role).is_none() {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidRole,
                format!(
                    "`role` must be one of {}, not `{}`",
                    Role::ALL.map(Role::as_str).join(", "),
                    self.role
                ),
            ));
        }
        if let Some(queues) = &self.queues {
            if self.role != Role::Worker.as_str() {
                return Err(ApiError::bad_request(
                    ErrorCode::InvalidQueues,
                    "`queues` applies to worker tokens only",
                ));
            }
            limits::check_count(
                ErrorCode::InvalidQueues,
                "queues",
                queues.len(),
                1,
                MAX_TOKEN_QUEUES,
            )?;
            for queue in queues {
                limits::check_text(
                    ErrorCode::InvalidQueues,
                    "queues[]",
                    queue,
                    1,
                    limits::MAX_NAME_LEN,
                )?;
            }
        }
        if let Some(seconds) = self.expires_in_seconds {
            limits::check_range(
                ErrorCode::InvalidExpiry,
                "expires_in_seconds",
                seconds,
                1,
                MAX_TOKEN_LIFETIME_SECONDS,
            )?;
        }
        Ok(())
    }
}

/// Creates a token; its text is in the answer and nowhere else, ever.
#[utoipa::path(post, path = "/v1/tokens", tag = "tokens", request_body = CreateTokenRequest, responses((status = 201, body = CreatedToken, description = "Created: `token` is shown only in this answer"), (status = 400, body = ErrorBody, description = "`invalid_name`, `invalid_role`, `invalid_queues`, `invalid_expiry`"), (status = 409, body = ErrorBody, description = "`token_name_taken`: a live token has this name; `no_token_pepper`: the server has no pepper to hash tokens with")))]
pub(crate) async fn create_token(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    crate::actor::Acting(actor): crate::actor::Acting,
    extract::Json(request): extract::Json<CreateTokenRequest>,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    let Some(pepper) = &state.auth.config().pepper else {
        return Err(ApiError::Conflict {
            code: ErrorCode::NoTokenPepper,
            message: "this server has no token pepper to hash tokens with: set WEFT_TOKEN_PEPPER or --token-pepper-file".to_owned(),
        });
    };
    let expires_at = request
        .expires_in_seconds
        .map(|s| state.store().now_ms() + (s as i64) * 1000);
    let new = weft_store::NewToken {
        name: request.name,
        role: request.role,
        queues: request.queues,
        expires_at,
        created_by: caller.name.clone(),
    };
    let (record, token) = state.store().create_token(&new, pepper).await?;
    let detail = serde_json::json!({"name": record.name, "role": record.role, "queues": record.queues, "expires_at": record.expires_at});
    state
        .store()
        .append_audit(
            &actor,
            weft_store::AuditAction::TokenCreated,
            &record.token_id,
            detail,
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            token,
            info: crate::convert::token_info(&record),
        }),
    ))
}

/// Every token, revoked ones included, without their secrets.
#[utoipa::path(get, path = "/v1/tokens", tag = "tokens", responses((status = 200, body = TokenList)))]
pub(crate) async fn list_tokens(State(state): State<AppState>) -> ApiResult<Json<TokenList>> {
    let tokens = state.store().list_tokens().await?;
    Ok(Json(TokenList {
        tokens: tokens.iter().map(crate::convert::token_info).collect(),
    }))
}

/// Revokes a token by its id or by the name of a live token. Revoking a
/// revoked token answers it unchanged.
#[utoipa::path(delete, path = "/v1/tokens/{id}", tag = "tokens", params(("id" = String, Path, description = "The token's id, or the name of a live token", min_length = 1, max_length = 256, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")), responses((status = 200, body = TokenInfo, description = "Revoked"), (status = 404, body = ErrorBody, description = "`token_not_found`")))]
pub(crate) async fn revoke_token(
    State(state): State<AppState>,
    Path(id): Path<String>,
    crate::actor::Acting(actor): crate::actor::Acting,
) -> ApiResult<Json<TokenInfo>> {
    let record = state.store().revoke_token(&id).await?;
    state.auth.forget(&record.token_id);
    let detail = serde_json::json!({"name": record.name});
    state
        .store()
        .append_audit(
            &actor,
            weft_store::AuditAction::TokenRevoked,
            &record.token_id,
            detail,
        )
        .await?;
    Ok(Json(crate::convert::token_info(&record)))
}
