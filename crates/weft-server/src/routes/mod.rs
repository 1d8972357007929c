//! The HTTP surface: every route of the API, the worker protocol, health and
//! the dashboard, registered in one table with who may call each route
//! ([`Access`]); the handlers live beside it by concern.

use std::collections::HashMap;

use axum::{
    Router,
    handler::Handler,
    http::Method,
    routing::{MethodFilter, MethodRouter, on},
};

use crate::{
    ApiError, AppState,
    auth::{Access, Role},
};
mod actions;
mod audit;
mod bulk;
mod compensation;
mod health;
mod openapi;
mod runs;
mod stream;
mod tokens;
mod worker;
mod workflows;

pub(crate) use health::{exposition_endpoint, metrics_endpoint};
pub use openapi::openapi_document;

pub(crate) type ApiResult<T> = Result<T, ApiError>;

/// One route of the table: its method, path template and who may call it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteAccess {
    /// The HTTP method.
    pub method: Method,
    /// The path template as routed, e.g. `/v1/runs/{id}`.
    pub path: &'static str,
    /// Who may call it.
    pub access: Access,
}

/// One route with its handler.
struct Route {
    access: RouteAccess,
    handler: MethodRouter<AppState>,
}

/// A route of `method` at `path`, callable as `access` says.
fn at<H, T>(method: Method, path: &'static str, access: Access, handler: H) -> Route
where
    H: Handler<T, AppState>,
    T: 'static,
{
    let filter = MethodFilter::try_from(method.clone()).expect("a routable method");
    Route {
        access: RouteAccess {
            method,
            path,
            access,
        },
        handler: on(filter, handler),
    }
}

/// Every route, each with its access declared once, here.
#[rustfmt::skip]
fn table() -> Vec<Route> {
    use crate::dashboard as dash;
    use crate::diagnostics as diag;
    use Access::Open;
    use Method as M;
    const VIEWER: Access = Access::Role(Role::Viewer);
    const OPERATOR: Access = Access::Role(Role::Operator);
    const ADMIN: Access = Access::Role(Role::Admin);
    const WORKER: Access = Access::Role(Role::Worker);
    vec![
        at(M::GET,    "/v1/workflows",                          VIEWER,   workflows::list_workflows),
        at(M::PUT,    "/v1/workflows/{name}",                   ADMIN,    workflows::put_workflow),
        at(M::GET,    "/v1/workflows/{name}",                   VIEWER,   workflows::get_workflow),
        at(M::POST,   "/v1/workflows/{name}/runs",              OPERATOR, runs::start_run),
        at(M::POST,   "/v1/workflows/{name}/runs/batch",        OPERATOR, runs::start_runs),
        at(M::GET,    "/v1/runs",                               VIEWER,   runs::list_runs),
        at(M::GET,    "/v1/runs/{id}",                          VIEWER,   runs::get_run),
        at(M::GET,    "/v1/runs/{id}/events",                   VIEWER,   runs::run_events),
        at(M::GET,    "/v1/runs/{id}/events/stream",            VIEWER,   stream::run_event_stream),
        at(M::GET,    "/v1/runs/{id}/logs",                     VIEWER,   runs::run_logs),
        at(M::POST,   "/v1/runs/cancel",                        OPERATOR, bulk::cancel_runs),
        at(M::POST,   "/v1/runs/retry",                         OPERATOR, bulk::retry_runs),
        at(M::POST,   "/v1/runs/{id}/cancel",                   OPERATOR, actions::cancel_run),
        at(M::POST,   "/v1/runs/{id}/retry",                    OPERATOR, actions::retry_run),
        at(M::POST,   "/v1/runs/{id}/steps/{step}/approve",     OPERATOR, actions::approve_step),
        at(M::POST,   "/v1/runs/{id}/steps/{step}/reject",      OPERATOR, actions::reject_step),
        at(M::POST,   "/v1/runs/{id}/steps/{step}/compensation/skip", OPERATOR, compensation::skip_compensation),
        at(M::GET,    "/v1/runs/{id}/diagnosis",                VIEWER,   diag::run_diagnosis),
        at(M::GET,    "/v1/diagnostics",                        VIEWER,   diag::diagnostics),
        at(M::GET,    "/v1/workers",                            VIEWER,   diag::list_workers),
        at(M::GET,    "/v1/queues",                             VIEWER,   diag::list_queues),
        at(M::POST,   "/v1/tokens",                             ADMIN,    tokens::create_token),
        at(M::GET,    "/v1/tokens",                             ADMIN,    tokens::list_tokens),
        at(M::DELETE, "/v1/tokens/{id}",                        ADMIN,    tokens::revoke_token),
        at(M::GET,    "/v1/audit",                              ADMIN,    audit::list_audit),
        at(M::POST,   "/v1/worker/poll",                        WORKER,   worker::poll),
        at(M::POST,   "/v1/worker/leases/{lease_id}/heartbeat", WORKER,   worker::heartbeat),
        at(M::POST,   "/v1/worker/leases/{lease_id}/complete",  WORKER,   worker::complete),
        at(M::POST,   "/v1/worker/leases/{lease_id}/fail",      WORKER,   worker::fail),
        at(M::POST,   "/v1/worker/leases/{lease_id}/release",   WORKER,   worker::release),
        at(M::POST,   "/v1/worker/leases/{lease_id}/logs",      WORKER,   worker::append_logs),
        at(M::POST,   "/v1/worker/results",                     WORKER,   worker::results),
        at(M::GET,    "/health/live",                           Open,     health::live),
        at(M::GET,    "/health/ready",                          Open,     health::ready),
        at(M::GET,    "/healthz",                               Open,     health::ready),
        at(M::GET,    "/health",                                Open,     health::health),
        at(M::GET,    "/openapi.json",                          Open,     openapi::openapi),
        at(M::GET,    "/metrics",                               Access::Metrics, health::metrics),
        at(M::GET,    "/",                                      VIEWER,   dash::runs_page),
        at(M::GET,    "/runs/{id}",                             VIEWER,   dash::run_page),
        at(M::GET,    "/workflows",                             VIEWER,   dash::workflows_page),
        at(M::GET,    "/workflows/{name}",                      VIEWER,   dash::workflow_page),
        at(M::GET,    "/workers",                               VIEWER,   dash::workers_page),
        at(M::GET,    "/stuck",                                 VIEWER,   dash::stuck_page),
        at(M::GET,    "/overview",                              VIEWER,   dash::overview_page),
        at(M::GET,    "/static/{file}",                         Open,     dash::asset),
        at(M::GET,    "/signin",                                Open,     crate::sessions::signin_page),
        at(M::POST,   "/signin",                                Open,     crate::sessions::signin),
        at(M::POST,   "/signout",                               Open,     crate::sessions::signout),
    ]
}

/// Every route the server serves and who may call it, as declared in the
/// table (`/metrics` as [`Access::Metrics`], before its flag resolves it).
pub fn route_table() -> Vec<RouteAccess> {
    table().into_iter().map(|route| route.access).collect()
}

/// The router of every route in the table, and who may call each of them:
/// the server's route guard checks a request's access there before its
/// handler runs (`metrics_open` resolves `/metrics`'s).
pub(crate) fn routes(metrics_open: bool) -> (Router<AppState>, RouteAccessMap) {
    let mut router = Router::new();
    let mut accesses = RouteAccessMap::default();
    for route in table() {
        let access = route.access.access.resolve(metrics_open);
        accesses
            .by_path
            .entry(route.access.path)
            .or_default()
            .push((route.access.method, access));
        router = router.route(route.access.path, route.handler);
    }
    (router.fallback(not_found), accesses)
}

/// Who may call each route, by path template and method.
#[derive(Debug, Default)]
pub(crate) struct RouteAccessMap {
    by_path: HashMap<&'static str, Vec<(Method, Access)>>,
}

impl RouteAccessMap {
    /// The access of `method` at the matched `path` template: a HEAD is
    /// served by the path's GET route. `Ok(None)` for a method the path
    /// does not route (axum answers it 405, which needs no access). `Err`
    /// (500 `internal`) for a path the table does not know, which the
    /// router cannot have matched: no request passes unchecked.
    pub(crate) fn get(&self, path: &str, method: &Method) -> Result<Option<Access>, ApiError> {
        let routes = self.by_path.get(path).ok_or_else(|| {
            ApiError::Internal(format!("the route `{path}` has no access declared"))
        })?;
        let find = |wanted: &Method| {
            routes
                .iter()
                .find(|(method, _)| method == wanted)
                .map(|(_, access)| *access)
        };
        Ok(find(method).or_else(|| {
            (*method == Method::HEAD)
                .then(|| find(&Method::GET))
                .flatten()
        }))
    }
}

/// Unknown routes. A path under a resource whose name holds a raw `/` gets
/// a hint: names may contain `/` but it must be sent as `%2F`.
async fn not_found(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    let path = uri.path();
    let shown: String = path.chars().take(200).collect();
    let nested = ["/v1/workflows/", "/v1/runs/", "/v1/worker/leases/"]
        .iter()
        .any(|prefix| path.starts_with(prefix));
    let hint = if nested {
        "; a `/` inside a workflow, step or run name must be sent percent-encoded as %2F"
    } else {
        ""
    };
    ApiError::RouteNotFound(format!("no route for {method} {shown}{hint}"))
}

#[cfg(test)]
mod tests {
    use axum::http::Method;

    use crate::auth::{Access, Role};

    /// Every viewer route outside the API is a dashboard page, so a browser
    /// without a session is sent to sign in there (`dashboard::is_page`).
    #[test]
    fn every_viewer_route_outside_the_api_is_a_dashboard_page() {
        for route in super::route_table() {
            let viewer = route.access == Access::Role(Role::Viewer);
            if route.method == Method::GET && viewer && !route.path.starts_with("/v1/") {
                let path = route.path.replace("{id}", "abc").replace("{name}", "pay");
                assert!(crate::dashboard::is_page(&path), "{path}");
            }
        }
    }

    /// The route guard finds each route's declared access by template and
    /// method; a HEAD takes its GET's, a method not routed there needs none
    /// (axum answers 405), and a template the table does not know fails
    /// closed.
    #[test]
    fn the_access_map_answers_each_route_of_the_table() {
        for metrics_open in [false, true] {
            let (_, map) = super::routes(metrics_open);
            for route in super::route_table() {
                let want = route.access.resolve(metrics_open);
                assert_eq!(map.get(route.path, &route.method).unwrap(), Some(want));
            }
        }
        let (_, map) = super::routes(false);
        let viewer = Some(Access::Role(Role::Viewer));
        assert_eq!(map.get("/v1/runs/{id}", &Method::HEAD).unwrap(), viewer);
        assert_eq!(map.get("/v1/runs/{id}", &Method::PATCH).unwrap(), None);
        assert!(map.get("/v1/nowhere", &Method::GET).is_err());
    }
}
