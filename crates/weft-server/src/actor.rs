//! Who acts: the [`weft_store::Actor`] of a request, from the caller's
//! [`Principal`] and the `X-Weft-Actor` header. With authentication on the
//! actor is the token's name and the header, if sent, is kept beside it as
//! `on_behalf_of`; with authentication off (the anonymous caller) the header
//! is the actor (the CLI sends the OS user), else `anonymous`.

use axum::{extract::FromRequestParts, http::request::Parts};
use weft_api::ACTOR_HEADER;
use weft_core::ErrorCode;
use weft_store::Actor;

use crate::{ApiError, auth::Principal, limits};

/// Longest `X-Weft-Actor`, in characters.
pub const MAX_ACTOR_LEN: usize = 256;

/// Extracts the acting [`Actor`]; 400 `invalid_actor` for an `X-Weft-Actor`
/// that is empty, not UTF-8, too long or has control characters.
pub(crate) struct Acting(pub Actor);

impl<S: Send + Sync> FromRequestParts<S> for Acting {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let principal = parts
            .extensions
            .get::<Principal>()
            .cloned()
            .unwrap_or_else(Principal::anonymous);
        let said = match parts.headers.get(ACTOR_HEADER) {
            None => None,
            Some(value) => {
                let invalid = || {
                    ApiError::bad_request(
                        ErrorCode::InvalidActor,
                        format!(
                            "`X-Weft-Actor` must be 1 to {MAX_ACTOR_LEN} characters of UTF-8 text without control characters"
                        ),
                    )
                };
                let text = std::str::from_utf8(value.as_bytes()).map_err(|_| invalid())?;
                let text = text.trim();
                if text.is_empty() || text.chars().any(char::is_control) {
                    return Err(invalid());
                }
                limits::check_len(ErrorCode::InvalidActor, "X-Weft-Actor", text, MAX_ACTOR_LEN)?;
                Some(text.to_owned())
            }
        };
        Ok(Acting(actor_of(&principal, said)))
    }
}

/// The rule of the module documentation.
pub(crate) fn actor_of(principal: &Principal, said: Option<String>) -> Actor {
    if principal.is_anonymous() {
        Actor {
            name: said.unwrap_or_else(|| principal.name.clone()),
            on_behalf_of: None,
        }
    } else {
        Actor {
            name: principal.name.clone(),
            on_behalf_of: said,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;

    #[test]
    fn token_name_wins_and_the_header_is_on_behalf_of() {
        let token = Principal {
            name: "ci".into(),
            role: Role::Operator,
            queues: None,
            token_id: Some("abc".into()),
        };
        assert_eq!(
            actor_of(&token, Some("alice".into())),
            Actor {
                name: "ci".into(),
                on_behalf_of: Some("alice".into())
            }
        );
        assert_eq!(actor_of(&token, None), Actor::named("ci"));
        let anonymous = Principal::anonymous();
        assert_eq!(
            actor_of(&anonymous, Some("bob".into())),
            Actor::named("bob")
        );
        assert_eq!(actor_of(&anonymous, None), Actor::named("anonymous"));
    }
}
