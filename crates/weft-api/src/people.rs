//! What the API knows of the people behind requests: the headers that name
//! a client and an actor, and the audit log of actions that have no run.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// Sent by every Weft client (weft-client, the worker SDK, the CLI, the
/// dashboard's scripts) on every request, value `<name>/<version>`. A POST,
/// PUT or DELETE without it must have a JSON or YAML content type, else the
/// server answers 403 `client_header_required` (forgery protection).
pub const CLIENT_HEADER: &str = "x-weft-client";

/// The person a caller acts for (`weft … --actor NAME`; with authentication
/// off the CLI sends the OS user). With authentication on it is recorded as
/// `on_behalf_of` beside the token's name; with it off it is the `actor`.
/// At most 256 characters, no control characters (else 400 `invalid_actor`).
pub const ACTOR_HEADER: &str = "x-weft-actor";

/// The CSRF token of a dashboard session, required beside the session
/// cookie on a POST, PUT or DELETE (or as the `csrf` field of a form).
pub const CSRF_HEADER: &str = "x-weft-csrf";

/// One entry of the audit log (`GET /v1/audit`): an action that has no run,
/// such as a registration or a token change.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    /// Increasing with time; the order of the log.
    pub id: i64,
    /// When (RFC 3339 UTC).
    pub at: String,
    /// Who: the token's name, or with authentication off the caller's
    /// `X-Weft-Actor` (or `anonymous`).
    pub actor: String,
    /// The person the token acted for (`X-Weft-Actor` with authentication on).
    pub on_behalf_of: Option<String>,
    /// What: `workflow.registered`, `token.created`, `token.revoked`.
    pub action: String,
    /// On what: a workflow's name, a token's id.
    pub target: String,
    /// The action's particulars (a workflow's version, a token's role).
    #[schema(value_type = Object)]
    pub detail: Value,
}

/// A page of the audit log, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditList {
    /// At most the request's `limit` (default 50, at most 1000) entries,
    /// newest first.
    pub entries: Vec<AuditEntry>,
    /// Pass as `cursor` for the next (older) page; `null` on the last page.
    pub next_cursor: Option<String>,
}
