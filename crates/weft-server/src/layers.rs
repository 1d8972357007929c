//! The server's middleware, outermost first: the request's frame (its id,
//! its log line, the JSON error shape), the caller's identity (session
//! cookie, token, forgery protection) and each route's guard (HTTP metrics,
//! per-caller limits, access). Each is one `from_fn` layer: every layer
//! boxes a future and clones its inner service per request.

use std::{sync::Arc, time::Instant};

use axum::{
    extract::{MatchedPath, Request, State},
    http::{HeaderValue, header},
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::{ApiError, Metrics, REQUEST_ID, auth, error, ratelimit, routes};

/// Longest client-supplied `x-request-id` kept; a longer one, or one with
/// other characters than letters, digits and `-_.:/+=@`, is replaced by a
/// generated id (it is echoed, logged and stored with the run).
pub const MAX_REQUEST_ID_LEN: usize = 128;

fn valid_request_id(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_REQUEST_ID_LEN
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=@".contains(b))
}

/// The request's frame, the outermost layer:
/// - its id: a client's `x-request-id` is kept when it is one header of at
///   most [`MAX_REQUEST_ID_LEN`] letters, digits and `-_.:/+=@`, else a
///   UUID is generated; the answer echoes it;
/// - every line logged while handling the request carries the id, and the
///   request itself is logged with its status, duration and error code;
/// - an error answer is given the JSON error shape ([`json_errors`]).
pub(crate) async fn frame(mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let headers = request.headers_mut();
    let mut ids = headers.get_all(&REQUEST_ID).iter();
    let id = match (ids.next(), ids.next()) {
        (Some(id), None) if valid_request_id(id) => id.clone(),
        _ => {
            let id = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
                .expect("a UUID is a header value");
            headers.insert(&REQUEST_ID, id.clone());
            id
        }
    };
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let request_id = id.to_str().unwrap_or_default();
    let span = tracing::info_span!("request", request_id = %request_id);
    let response = tracing::Instrument::instrument(next.run(request), span).await;
    let mut response = json_errors(response).await;
    let status = response.status().as_u16();
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    let code = response
        .extensions()
        .get::<error::ResponseCode>()
        .map(|c| c.0.as_str());
    if status >= 500 {
        tracing::error!(component = "server", request_id, method = %method, path, status, elapsed_ms, code, "request failed");
    } else if status >= 400 {
        tracing::info!(component = "server", request_id, method = %method, path, status, elapsed_ms, code, "request rejected");
    } else {
        tracing::debug!(component = "server", request_id, method = %method, path, status, elapsed_ms, "request");
    }
    if !response.headers().contains_key(&REQUEST_ID) {
        response.headers_mut().insert(&REQUEST_ID, id);
    }
    response
}

/// Gives every error answer that did not come from an [`ApiError`] (axum's
/// own 405, a rejection of a layer) the JSON error shape with a stable code,
/// keeping its status and headers (`Allow` of a 405).
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error())
        || response.extensions().get::<error::ResponseCode>().is_some()
    {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/html"));
    if is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let mut answer = ApiError::from_status(parts.status, text).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            answer.headers_mut().insert(name.clone(), value.clone());
        }
    }
    answer
}

/// The identity layer, one middleware outside the router:
/// 1. the session cookie's step ([`crate::sessions::prepare`]);
/// 2. authentication ([`auth::Authenticator::authenticate`]);
/// 3. forgery protection ([`crate::forgery::judge`]);
///
/// and a browser's dashboard page refused 401 is sent to sign in
/// ([`crate::sessions::page_answer`]).
pub(crate) async fn identify(
    State(auth): State<Arc<auth::Authenticator>>,
    request: Request,
    next: Next,
) -> Response {
    let page = crate::sessions::is_page_request(&request);
    let response = match crate::sessions::prepare(request).await {
        Err(refused) => refused.into_response(),
        Ok(mut request) => {
            auth.authenticate(&mut request).await;
            match crate::forgery::judge(&request) {
                Err(refused) => refused.into_response(),
                Ok(()) => next.run(request).await,
            }
        }
    };
    crate::sessions::page_answer(page, response)
}

/// What a route's guard needs: who may call each route, the per-caller
/// limits and the HTTP metrics.
#[derive(Clone)]
pub(crate) struct Guard {
    pub(crate) accesses: Arc<routes::RouteAccessMap>,
    pub(crate) limits: ratelimit::Limits,
    pub(crate) metrics: Metrics,
}

/// The guard of every route, one route layer, so it sees the matched
/// template (unmatched paths never become labels). In order:
/// 1. counts the request by method, route template and status, with its
///    duration, whatever answers it (a 429 or 401 included);
/// 2. the per-caller limits ([`ratelimit::admit`]), after authentication
///    (an outer layer), since limits are kept per caller;
/// 3. the route's access ([`auth::check_access`]), unless the method is not
///    routed there (axum answers that 405).
pub(crate) async fn guard_route(
    State(guard): State<Guard>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    let allowed = |request: &Request| match guard.accesses.get(route, &method)? {
        Some(access) => auth::check_access(access, request),
        None => Ok(()),
    };
    let response = match ratelimit::admit(&guard.limits, &request) {
        Err(refused) => refused.into_response(),
        Ok(slot) => match allowed(&request) {
            Err(refused) => refused.into_response(),
            Ok(()) => {
                let response = next.run(request).await;
                drop(slot);
                response
            }
        },
    };
    guard.metrics.http_request(
        method.as_str(),
        route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}
