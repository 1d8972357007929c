//! Who is calling: the caller's [`Principal`] (a token's name, its [`Role`]
//! and, for worker tokens, its queues), put into every request's extensions
//! before a handler runs. Handlers read it to record the actor of an action
//! and to decide what to redact; they never check roles themselves.

use std::fmt;

use axum::{extract::Request, middleware::Next, response::Response};

/// What a caller may do. Each role includes the ones before it in this
/// order, except [`Role::Worker`], which may only speak the worker protocol:
/// `viewer` reads runs, workflows, logs (redacted) and metrics; `operator`
/// also starts, cancels, retries, approves, rejects and signals; `admin` also
/// registers workflows and manages tokens and webhooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Reads runs, workflows, logs (redacted) and metrics.
    Viewer,
    /// A viewer that also acts on runs.
    Operator,
    /// Everything, including registrations and token management.
    Admin,
    /// Only the worker protocol, for the queues the token names.
    Worker,
}

impl Role {
    /// Every role, in the order documented above.
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Operator, Role::Admin, Role::Worker];

    /// The role's name as written in flags, the database and the API.
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
            Role::Worker => "worker",
        }
    }

    /// Parses a role's name; `None` for anything else.
    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.as_str() == text)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The caller of one request. With authentication off every caller is
/// [`Principal::anonymous`], an admin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's name (recorded as `actor` in history and the audit log),
    /// or [`ANONYMOUS`] when authentication is off.
    pub name: String,
    /// What the caller may do.
    pub role: Role,
    /// For worker tokens, the queues the token may poll; `None` is any queue.
    pub queues: Option<Vec<String>>,
    /// The token's id (the `<id>` of `weft_<id>_<secret>`); `None` when
    /// authentication is off. Leases are bound to it.
    pub token_id: Option<String>,
}

/// The name of the caller when authentication is off.
pub const ANONYMOUS: &str = "anonymous";

impl Principal {
    /// The caller when authentication is off: an admin with no token.
    pub fn anonymous() -> Self {
        Self {
            name: ANONYMOUS.to_owned(),
            role: Role::Admin,
            queues: None,
            token_id: None,
        }
    }

    /// Whether the caller came without a token (authentication off).
    pub fn is_anonymous(&self) -> bool {
        self.token_id.is_none()
    }
}

/// Puts the caller's [`Principal`] into the request's extensions. With
/// authentication off (today the only mode) that is
/// [`Principal::anonymous`].
pub(crate) async fn authenticate(mut request: Request, next: Next) -> Response {
    request.extensions_mut().insert(Principal::anonymous());
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::Role;

    #[test]
    fn role_names_round_trip() {
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::parse("root"), None);
    }
}
