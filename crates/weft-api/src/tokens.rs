//! Wire types of API token management (`POST /v1/tokens`, `GET /v1/tokens`,
//! `DELETE /v1/tokens/{id}`, admin only). A token's secret appears once, in
//! [`CreatedToken::token`]; nothing else ever shows it. Times are RFC 3339.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /v1/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreateTokenRequest {
    /// Unique among live tokens; recorded as the actor of what it does.
    pub name: String,
    /// `admin`, `operator`, `viewer` or `worker`.
    pub role: String,
    /// For worker tokens: the only queues it may poll. Absent: any queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queues: Option<Vec<String>>,
    /// Seconds from now until the token is refused. Absent: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_seconds: Option<u64>,
}

/// A token as listed: everything but its secret.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenInfo {
    /// The `<id>` of `weft_<id>_<secret>`.
    pub token_id: String,
    /// The token's name, unique among live tokens; recorded as the actor of
    /// what the token does.
    pub name: String,
    /// `admin`, `operator`, `viewer` or `worker`.
    pub role: String,
    /// For worker tokens, the queues it may poll; absent is any queue.
    pub queues: Option<Vec<String>>,
    /// When it was created (RFC 3339 UTC).
    pub created_at: String,
    /// The name of the token that created it, `anonymous` (authentication
    /// off), `cli:<user>` (`weft tokens create --database-url`) or
    /// `WEFT_BOOTSTRAP_TOKEN`.
    pub created_by: String,
    /// When it stops being accepted (RFC 3339 UTC); absent: never.
    pub expires_at: Option<String>,
    /// When it was revoked (RFC 3339 UTC); absent while it is live.
    pub revoked_at: Option<String>,
    /// The last successful use, written at most about once a minute.
    pub last_used_at: Option<String>,
}

/// The answer to `POST /v1/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedToken {
    /// The token to send as `Authorization: Bearer <token>`. Shown only
    /// here: the server keeps a hash of it.
    pub token: String,
    /// The new token as [`TokenList`] will list it.
    pub info: TokenInfo,
}

/// The answer to `GET /v1/tokens`: every token, revoked ones included,
/// oldest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenList {
    /// The tokens, oldest first.
    pub tokens: Vec<TokenInfo>,
}
