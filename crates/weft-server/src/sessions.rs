//! The dashboard's sign-in: a form (`GET/POST /signin`, `POST /signout`)
//! that takes an API token and keeps it in a session cookie, and the CSRF
//! protection of what that cookie may do.
//!
//! The cookie [`SESSION_COOKIE`] holds the token itself (`HttpOnly`,
//! `SameSite=Strict`, `Path=/`, `Max-Age` [`SESSION_MAX_AGE_S`], `Secure`
//! when the server serves TLS or [`crate::Config::secure_cookies`] is set): every request it
//! authenticates is checked like a bearer token, so a revoked token stops
//! working within the token cache's time, with no session table to keep in
//! step. A request without an `Authorization` header that carries the cookie
//! is authenticated with it:
//! - a GET or HEAD (the API's reads, the dashboard's pages, the SSE stream,
//!   which a browser's `EventSource` cannot send a header with) always;
//! - a POST, PUT or DELETE only with the session's CSRF token, in the
//!   [`weft_api::CSRF_HEADER`] header or, for a dashboard form, its `csrf`
//!   field; without it the request is refused 403 `csrf_token_invalid`.
//!
//! The CSRF token is HMAC-SHA256 of a fixed label keyed by the session's
//! token (hex): only a page that was served the token's session can know it,
//! every server computes the same one, and it needs no stored state. The
//! sign-in form itself is guarded by a double-submit nonce
//! ([`SIGNIN_COOKIE`] and the form's `csrf` field).

use axum::{
    Extension,
    body::Body,
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::{
    ApiError, AppState,
    auth::Principal,
    forgery::{CsrfVerified, SessionCsrf},
};
use weft_core::ErrorCode;

/// The session cookie's name; its value is the API token.
pub const SESSION_COOKIE: &str = "weft_session";

/// The sign-in form's double-submit cookie (a random nonce, `Path=/signin`).
pub const SIGNIN_COOKIE: &str = "weft_signin";

/// How long a session cookie lasts, in seconds (12 hours); the token's own
/// expiry and revocation end it sooner.
pub const SESSION_MAX_AGE_S: u64 = 12 * 60 * 60;

/// Largest form body the session step reads for its `csrf` field, in bytes.
const MAX_FORM_BYTES: usize = 16 * 1024;

/// Longest token kept in a cookie, in bytes.
const MAX_TOKEN_LEN: usize = 512;

/// The CSRF token of a session whose cookie holds `token`: lowercase hex of
/// HMAC-SHA256(key = token, message = `weft-dashboard-csrf-v1`).
pub fn csrf_token(token: &str) -> String {
    hex::encode(csrf_mac(token).finalize().into_bytes())
}

fn csrf_mac(token: &str) -> Hmac<Sha256> {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(token.as_bytes()).expect("HMAC takes any key");
    mac.update(b"weft-dashboard-csrf-v1");
    mac
}

/// Whether `given` is the CSRF token of `token`'s session (constant time).
fn csrf_matches(token: &str, given: &str) -> bool {
    hex::decode(given.trim()).is_ok_and(|bytes| csrf_mac(token).verify_slice(&bytes).is_ok())
}

/// A cookie's value in a request's `Cookie` headers.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim_matches('"').to_owned())
        .filter(|value| !value.is_empty())
}

/// Whether a token can be kept in a cookie as it is: visible ASCII without
/// `;`, `,`, `"`, `\` or spaces, 1 to 512 bytes.
fn cookie_safe(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= MAX_TOKEN_LEN
        && token
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b';' | b',' | b'"' | b'\\'))
}

fn forbidden_csrf(message: &str) -> ApiError {
    ApiError::Other {
        status: StatusCode::FORBIDDEN,
        code: ErrorCode::CsrfTokenInvalid,
        message: message.to_owned(),
    }
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

/// A form body's field.
fn form_field(body: &[u8], name: &str) -> Option<String> {
    form_urlencoded::parse(body)
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

/// The session step of the identity layer (`identify` in `layers.rs`),
/// before authentication: see the module documentation. It puts
/// `Authorization: Bearer <token>` on the requests the cookie may
/// authenticate, and [`CsrfVerified`] on writes whose CSRF token matched;
/// `Err` is the answer to a request refused here (403
/// `csrf_token_invalid`, 413 `too_large` for an oversized form).
pub(crate) async fn prepare(mut request: Request) -> Result<Request, ApiError> {
    let safe = matches!(*request.method(), Method::GET | Method::HEAD);
    let signin = request.method() == Method::POST && request.uri().path() == "/signin";
    if request.headers().contains_key(header::AUTHORIZATION) && !signin {
        // A bearer header cannot be sent cross-site: the cookie is not used.
        return Ok(request);
    }
    if signin {
        let (request, body) = read_form(request).await?;
        return signin_prepare(request, &body);
    }
    let Some(token) = cookie(request.headers(), SESSION_COOKIE).filter(|t| cookie_safe(t)) else {
        return Ok(request);
    };
    // A page served to this session hands its script the CSRF token.
    request
        .extensions_mut()
        .insert(SessionCsrf(csrf_token(&token)));
    if !safe {
        let from_header = request
            .headers()
            .get(weft_api::CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let given = match from_header {
            Some(given) => Some(given),
            None if is_form(request.headers()) => {
                let (read, body) = read_form(request).await?;
                request = read;
                form_field(&body, "csrf")
            }
            None => None,
        };
        match given {
            Some(given) if csrf_matches(&token, &given) => {
                request.extensions_mut().insert(CsrfVerified);
            }
            _ => {
                return Err(forbidden_csrf(
                    "a POST, PUT or DELETE signed in with the dashboard's session cookie must carry \
                     the session's CSRF token (`X-Weft-CSRF` or the form's `csrf` field)",
                ));
            }
        }
    }
    if let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}")) {
        request.headers_mut().insert(header::AUTHORIZATION, value);
    }
    Ok(request)
}

/// A browser's GET of a dashboard page ([`crate::dashboard::is_page`]).
pub(crate) fn is_page_request(request: &Request) -> bool {
    request.method() == Method::GET
        && crate::dashboard::is_page(request.uri().path())
        && request
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/html"))
}

/// The answer to a browser's dashboard page (`page`, from
/// [`is_page_request`]): a 401 (no valid session) becomes a 303 to the
/// sign-in form, its stale cookie cleared; any other answer is kept.
pub(crate) fn page_answer(page: bool, response: Response) -> Response {
    if !(page && response.status() == StatusCode::UNAUTHORIZED) {
        return response;
    }
    let mut redirect = Redirect::to("/signin").into_response();
    set_cookie(
        &mut redirect,
        format!("{SESSION_COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict"),
    );
    redirect
}

/// `POST /signin`: the double-submit nonce must match, then the form's token
/// is the request's bearer token, so authentication judges it before the
/// handler runs.
fn signin_prepare(mut request: Request, body: &[u8]) -> Result<Request, ApiError> {
    let nonce = cookie(request.headers(), SIGNIN_COOKIE);
    let given = form_field(body, "csrf");
    match (nonce, given) {
        (Some(nonce), Some(given))
            if nonce.len() == given.len()
                && nonce
                    .bytes()
                    .zip(given.bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0 =>
        {
            request.extensions_mut().insert(CsrfVerified);
        }
        _ => {
            return Err(forbidden_csrf(
                "the sign-in form's CSRF token is missing or stale: load /signin again",
            ));
        }
    }
    request.headers_mut().remove(header::AUTHORIZATION);
    if let Some(token) = form_field(body, "token").map(|t| t.trim().to_owned())
        && cookie_safe(&token)
        && let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}"))
    {
        request.headers_mut().insert(header::AUTHORIZATION, value);
        request.extensions_mut().insert(SigninToken(token));
    }
    Ok(request)
}

/// The token a sign-in form carried, for the handler to put in the cookie.
#[derive(Clone)]
pub(crate) struct SigninToken(String);

/// Reads a form body (at most [`MAX_FORM_BYTES`]) and puts it back.
async fn read_form(request: Request) -> Result<(Request, axum::body::Bytes), ApiError> {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_FORM_BYTES)
        .await
        .map_err(|_| ApiError::TooLarge)?;
    let request = Request::from_parts(parts, Body::from(bytes.clone()));
    Ok((request, bytes))
}

fn set_cookie(response: &mut Response, value: String) {
    if let Ok(value) = HeaderValue::from_str(&value) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

fn secure(state: &AppState) -> &'static str {
    if state.config.tls || state.config.secure_cookies {
        "; Secure"
    } else {
        ""
    }
}

/// The sign-in page: the form (with a fresh double-submit nonce), or, for a
/// signed-in session, who it is and the sign-out form.
pub(crate) async fn signin_page(
    State(state): State<AppState>,
    principal: Option<Extension<Principal>>,
    headers: HeaderMap,
) -> Response {
    let session = cookie(&headers, SESSION_COOKIE).filter(|t| cookie_safe(t));
    if let (Some(Extension(principal)), Some(token)) = (principal, session) {
        return crate::dashboard::render(
            StatusCode::OK,
            "signin.html",
            "sign in",
            "signin",
            None,
            minijinja::context! {
                signed_in => true,
                anonymous => principal.is_anonymous(),
                name => principal.name,
                role => principal.role.as_str(),
                csrf => csrf_token(&token),
            },
        );
    }
    form_page(&state, StatusCode::OK, None)
}

fn form_page(state: &AppState, status: StatusCode, problem: Option<&str>) -> Response {
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let mut response = crate::dashboard::render(
        status,
        "signin.html",
        "sign in",
        "signin",
        problem,
        minijinja::context! {
            signed_in => false,
            csrf => nonce,
            hours => SESSION_MAX_AGE_S / 3600,
        },
    );
    set_cookie(
        &mut response,
        format!(
            "{SIGNIN_COOKIE}={nonce}; Path=/signin; Max-Age=600; HttpOnly; SameSite=Strict{}",
            secure(state)
        ),
    );
    response
}

/// `POST /signin` (form: `token`, `csrf`): a valid token is kept in the
/// session cookie and the browser sent to the runs page (303); a token that
/// is not valid gets the form again, 401.
pub(crate) async fn signin(
    State(state): State<AppState>,
    principal: Option<Extension<Principal>>,
    token: Option<Extension<SigninToken>>,
) -> Response {
    let (Some(Extension(SigninToken(token))), Some(Extension(principal))) = (token, principal)
    else {
        return form_page(
            &state,
            StatusCode::UNAUTHORIZED,
            Some("That token is not valid (unknown, expired or revoked)."),
        );
    };
    tracing::info!(component = "server", actor = %principal.name, role = %principal.role, "dashboard sign-in");
    let mut response = Redirect::to("/").into_response();
    set_cookie(
        &mut response,
        format!(
            "{SESSION_COOKIE}={token}; Path=/; Max-Age={SESSION_MAX_AGE_S}; HttpOnly; SameSite=Strict{}",
            secure(&state)
        ),
    );
    set_cookie(
        &mut response,
        format!("{SIGNIN_COOKIE}=; Path=/signin; Max-Age=0; HttpOnly; SameSite=Strict"),
    );
    response
}

/// `POST /signout` (form: `csrf`): clears the session cookie and sends the
/// browser to the sign-in page (303).
pub(crate) async fn signout(State(state): State<AppState>) -> Response {
    let mut response = Redirect::to("/signin").into_response();
    set_cookie(
        &mut response,
        format!(
            "{SESSION_COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict{}",
            secure(&state)
        ),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csrf_tokens_are_bound_to_their_session() {
        let token = csrf_token("weft_abc_secret");
        assert_eq!(token.len(), 64);
        assert!(csrf_matches("weft_abc_secret", &token));
        assert!(!csrf_matches("weft_abc_other", &token));
        assert!(!csrf_matches("weft_abc_secret", "00"));
        assert!(!csrf_matches("weft_abc_secret", "not hex"));
    }

    #[test]
    fn dashboard_pages_are_told_from_api_reads() {
        let request = |method: Method, path: &str, accept: &str| {
            Request::builder()
                .method(method)
                .uri(path)
                .header(header::ACCEPT, accept)
                .body(Body::empty())
                .unwrap()
        };
        let html = "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8";
        assert!(is_page_request(&request(Method::GET, "/", html)));
        assert!(is_page_request(&request(Method::GET, "/runs/abc", html)));
        assert!(!is_page_request(&request(Method::GET, "/v1/runs", html)));
        assert!(!is_page_request(&request(
            Method::GET,
            "/",
            "application/json"
        )));
        assert!(!is_page_request(&request(Method::POST, "/", html)));
    }

    #[test]
    fn cookies_are_read_by_name() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            "a=1; weft_session=tok; b=2".parse().unwrap(),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE).as_deref(), Some("tok"));
        assert_eq!(cookie(&headers, "c"), None);
        assert!(cookie_safe("weft_0123_abcDEF"));
        assert!(!cookie_safe("a;b"));
        assert!(!cookie_safe("a b"));
        assert!(!cookie_safe(""));
    }
}
