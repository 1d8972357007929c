//! Forgery protection, with authentication on or off: a web page on another
//! site must not be able to make a visitor's browser change anything here
//! (cross-site request forgery), nor reach a server on a loopback address
//! through a name it controls (DNS rebinding).
//!
//! Every request on a loopback listener must be addressed to a loopback
//! `Host` (`localhost`, `127.0.0.1`, `[::1]`, any port), else 403
//! `host_not_allowed`. Every POST, PUT, PATCH and DELETE of an authenticated
//! caller (with authentication off, everyone) must:
//! - carry no `Origin`, or one whose host and port are the request's `Host`
//!   (403 `origin_mismatch`);
//! - and carry [`CLIENT_HEADER`] (any value), or a content type a browser
//!   cannot send cross-site without asking first (anything but
//!   `application/x-www-form-urlencoded`, `multipart/form-data` and
//!   `text/plain`, e.g. JSON or YAML), or be a dashboard form whose CSRF
//!   token the session step (`sessions.rs`) verified; else 403
//!   `client_header_required`. A body-less POST (cancel, retry) thus needs
//!   the header: weft-client, the worker SDK, the CLI and the dashboard send
//!   it.

use std::net::{IpAddr, SocketAddr};

use axum::{
    extract::Request,
    http::{HeaderMap, Method, StatusCode, header},
};

use weft_core::ErrorCode;

use crate::{ApiError, auth::Principal};

/// The header every Weft client sends (only its presence is checked). A
/// browser cannot add it to a cross-site request without a CORS preflight,
/// which this server never grants.
pub(crate) use weft_api::CLIENT_HEADER;

/// The address of the listener a request came in on, put into the request's
/// extensions by [`crate::serve_with`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct ListenerAddr(pub SocketAddr);

/// Put into a request's extensions by the session step when a cookie-carried
/// write came with the right CSRF token.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CsrfVerified;

/// Put into a request's extensions by the session step when it came with a
/// session cookie (and no `Authorization` header): that session's CSRF token,
/// for a dashboard page to hand its script.
#[derive(Debug, Clone)]
pub(crate) struct SessionCsrf(pub String);

fn forbidden(code: ErrorCode, message: String) -> ApiError {
    ApiError::Other {
        status: StatusCode::FORBIDDEN,
        code,
        message,
    }
}

/// The check of the identity layer (`identify` in `layers.rs`), after
/// authentication; see the module documentation. `Err` is the 403 to answer.
pub(crate) fn judge(request: &Request) -> Result<(), ApiError> {
    let headers = request.headers();
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let loopback_listener = request
        .extensions()
        .get::<ListenerAddr>()
        .is_some_and(|addr| addr.0.ip().is_loopback());
    if loopback_listener
        && let Some(host) = host
        && !is_loopback_host(host)
    {
        return Err(forbidden(
            ErrorCode::HostNotAllowed,
            format!(
                "this server listens on a loopback address and answers only requests addressed to \
                 localhost, 127.0.0.1 or [::1], not `{}` (protection against DNS rebinding)",
                shown(host)
            ),
        ));
    }
    // A caller without a valid token (authentication on) can change nothing:
    // authentication answers it 401 on every route that is not open.
    if is_safe(request.method()) || request.extensions().get::<Principal>().is_none() {
        return Ok(());
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("null");
        if !host.is_some_and(|host| same_origin(origin, host)) {
            return Err(forbidden(
                ErrorCode::OriginMismatch,
                format!(
                    "a {} from the web page at `{}` is refused: its Origin is not this server's Host",
                    request.method(),
                    shown(origin)
                ),
            ));
        }
    }
    if headers.contains_key(CLIENT_HEADER)
        || !cors_safelisted(headers)
        || request.extensions().get::<CsrfVerified>().is_some()
    {
        return Ok(());
    }
    Err(forbidden(
        ErrorCode::ClientHeaderRequired,
        format!(
            "a {} must carry the `X-Weft-Client` header or a JSON or YAML content type \
             (protection against cross-site request forgery)",
            request.method()
        ),
    ))
}

fn is_safe(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// At most 200 characters of a header value, for a message.
fn shown(value: &str) -> String {
    value.chars().take(200).collect()
}

/// Whether the content type is one a browser sends cross-site without a
/// preflight (the CORS-safelisted ones), or is absent.
fn cors_safelisted(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return true;
    };
    let Ok(value) = value.to_str() else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim();
    [
        "application/x-www-form-urlencoded",
        "multipart/form-data",
        "text/plain",
    ]
    .iter()
    .any(|safe| essence.eq_ignore_ascii_case(safe))
}

/// Splits `host[:port]` (with `[v6]` brackets) into the host, lowercased,
/// and the port, if written.
fn split_authority(authority: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (host, port)
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok()?),
        None => None,
    };
    if host.is_empty() {
        return None;
    }
    Some((host.to_ascii_lowercase(), port))
}

/// Whether `host` (a `Host` header) names this machine's loopback.
fn is_loopback_host(host: &str) -> bool {
    let Some((name, _)) = split_authority(host) else {
        return false;
    };
    name == "localhost"
        || name
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback() || ip.to_canonical().is_loopback())
}

/// Whether an `Origin` (`scheme://host[:port]`) has the host and port of the
/// `Host` header. The scheme's default port stands for a port not written,
/// in both, so `https://weft.example.com` matches `weft.example.com` behind
/// a TLS-terminating proxy.
fn same_origin(origin: &str, host: &str) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => 80,
        "https" => 443,
        _ => return false,
    };
    let (Some((origin_host, origin_port)), Some((host_name, host_port))) =
        (split_authority(authority), split_authority(host))
    else {
        return false;
    };
    origin_host == host_name
        && origin_port.unwrap_or(default_port) == host_port.unwrap_or(default_port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for host in [
            "localhost",
            "LOCALHOST:8080",
            "127.0.0.1",
            "127.0.0.1:9",
            "127.5.6.7:80",
            "[::1]",
            "[::1]:8080",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "10.0.0.1:80",
            "[::2]:1",
            "",
            "127.0.0.1:x",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn origins_against_hosts() {
        assert!(same_origin("http://127.0.0.1:8080", "127.0.0.1:8080"));
        assert!(same_origin("https://weft.example.com", "weft.example.com"));
        assert!(same_origin(
            "https://weft.example.com",
            "Weft.Example.com:443"
        ));
        assert!(same_origin("http://[::1]:9", "[::1]:9"));
        assert!(!same_origin("http://evil.example", "127.0.0.1:8080"));
        assert!(!same_origin("http://127.0.0.1:8081", "127.0.0.1:8080"));
        assert!(!same_origin(
            "https://weft.example.com",
            "weft.example.com:80"
        ));
        assert!(!same_origin("null", "127.0.0.1:8080"));
        assert!(!same_origin("file://x", "x"));
    }

    #[test]
    fn safelisted_content_types() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, value.parse().unwrap());
            cors_safelisted(&headers)
        };
        assert!(cors_safelisted(&HeaderMap::new()));
        assert!(with("text/plain"));
        assert!(with("Text/Plain; charset=utf-8"));
        assert!(with("application/x-www-form-urlencoded"));
        assert!(with("multipart/form-data; boundary=x"));
        assert!(!with("application/json"));
        assert!(!with("application/yaml"));
    }
}
