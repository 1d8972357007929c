//! What a page's buttons need to know of who is looking, decided on the
//! server when the page is rendered: whether the caller's role may act on
//! runs (operator or admin; with authentication off everyone may), and the
//! session's CSRF token the script sends with each action.

use std::convert::Infallible;

use axum::{extract::FromRequestParts, http::request::Parts};
use serde::Serialize;

use crate::{
    auth::{Access, Principal, Role},
    forgery::SessionCsrf,
};

/// The viewer of a page, as its template sees it (`session`).
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct PageSession {
    /// The caller may start, cancel, retry, approve and reject runs: the
    /// routes of those actions allow its role.
    pub(crate) can_act: bool,
    /// The CSRF token of the session cookie the page was asked with (`None`
    /// without one, e.g. authentication off or a bearer token): sent back as
    /// `X-Weft-CSRF` by the page's script.
    pub(crate) csrf: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for PageSession {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        let can_act = parts
            .extensions
            .get::<Principal>()
            .is_some_and(|p| Access::Role(Role::Operator).allows(p.role));
        Ok(PageSession {
            can_act,
            csrf: parts.extensions.get::<SessionCsrf>().map(|c| c.0.clone()),
        })
    }
}
