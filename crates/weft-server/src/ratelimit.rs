//! Per-caller limits, so that one misbehaving client cannot starve the
//! others: a request rate per caller (a token bucket: GCRA from the
//! `governor` crate) and a cap on the long polls one caller holds open at
//! once. Both answer 429 `rate_limited` with `Retry-After` (seconds).
//!
//! A caller is its token (`Principal::token_id`). Callers without a token
//! (authentication off) are exempt unless [`Anonymous::PeerAddress`] keys
//! them by their IP address. Health probes are never limited. The counts
//! live in this process: with N servers behind a balancer a caller gets up
//! to N times the rate.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    num::NonZeroU32,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::extract::{ConnectInfo, Request};
use governor::{DefaultKeyedRateLimiter, Quota, clock::Clock as _};

use crate::{ApiError, auth::Principal};

/// Default of [`Config::requests_per_second`].
pub const DEFAULT_REQUESTS_PER_SECOND: u32 = 200;

/// Default of [`Config::burst`].
pub const DEFAULT_BURST: u32 = 400;

/// Default of [`Config::max_concurrent_polls`].
pub const DEFAULT_MAX_CONCURRENT_POLLS: u32 = 64;

/// Paths never limited: the probes of orchestrators and load balancers.
const EXEMPT_PATHS: [&str; 4] = ["/health/live", "/health/ready", "/healthz", "/health"];

/// Whether requests to `path` are never limited (health probes).
pub(crate) fn is_exempt(path: &str) -> bool {
    EXEMPT_PATHS.contains(&path)
}

/// The worker protocol's long poll, whose concurrent requests are capped.
const POLL_PATH: &str = "/v1/worker/poll";

/// How callers without a token (authentication off) are limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Anonymous {
    /// Not limited: with authentication off every caller is trusted (a
    /// loopback or `weft dev` server, where workers, the CLI and benchmarks
    /// share one address).
    #[default]
    Exempt,
    /// Keyed by the peer's IP address (behind a reverse proxy that is the
    /// proxy's address: all its clients share one limit).
    PeerAddress,
}

impl Anonymous {
    /// The name as written in `--rate-limit-anonymous`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Anonymous::Exempt => "exempt",
            Anonymous::PeerAddress => "peer",
        }
    }

    /// Parses `exempt` or `peer`; `None` for anything else.
    pub fn parse(text: &str) -> Option<Anonymous> {
        [Anonymous::Exempt, Anonymous::PeerAddress]
            .into_iter()
            .find(|mode| mode.as_str() == text)
    }
}

/// The limits of one server process.
#[derive(Debug, Clone)]
pub struct Config {
    /// Requests per second one caller may send, sustained; `None` sets no
    /// rate.
    pub requests_per_second: Option<NonZeroU32>,
    /// Requests one caller may send at once, above its rate, before it is
    /// held to the rate (the bucket's size).
    pub burst: NonZeroU32,
    /// Long polls (`POST /v1/worker/poll`) one caller may hold open at once;
    /// `None` sets no cap. Worker processes sharing one token share it.
    pub max_concurrent_polls: Option<NonZeroU32>,
    /// How callers without a token are limited.
    pub anonymous: Anonymous,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            requests_per_second: NonZeroU32::new(DEFAULT_REQUESTS_PER_SECOND),
            burst: NonZeroU32::new(DEFAULT_BURST).expect("not zero"),
            max_concurrent_polls: NonZeroU32::new(DEFAULT_MAX_CONCURRENT_POLLS),
            anonymous: Anonymous::Exempt,
        }
    }
}

/// Who a limit is kept for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Caller {
    /// A token, by its id.
    Token(String),
    /// A caller without a token, by its IP address.
    Peer(IpAddr),
}

/// The limiters of one router; cheap to clone.
#[derive(Clone)]
pub(crate) struct Limits {
    inner: Arc<Inner>,
}

struct Inner {
    rate: Option<DefaultKeyedRateLimiter<Caller>>,
    max_polls: Option<u32>,
    /// Long polls open now, per caller; a caller with none has no entry.
    polls: Mutex<HashMap<Caller, u32>>,
    anonymous: Anonymous,
    /// Rate checks made, to forget idle callers now and then.
    checks: AtomicU64,
}

/// How often (in checks) callers whose bucket is full again are forgotten,
/// so the table does not grow with every address ever seen.
const FORGET_EVERY: u64 = 1024;

impl Limits {
    pub(crate) fn new(config: &Config) -> Limits {
        let rate = config.requests_per_second.map(|rate| {
            DefaultKeyedRateLimiter::keyed(Quota::per_second(rate).allow_burst(config.burst))
        });
        Limits {
            inner: Arc::new(Inner {
                rate,
                max_polls: config.max_concurrent_polls.map(NonZeroU32::get),
                polls: Mutex::new(HashMap::new()),
                anonymous: config.anonymous,
                checks: AtomicU64::new(0),
            }),
        }
    }

    fn caller(&self, request: &Request) -> Option<Caller> {
        let principal = request.extensions().get::<Principal>();
        if let Some(token_id) = principal.and_then(|p| p.token_id.as_ref()) {
            return Some(Caller::Token(token_id.clone()));
        }
        match self.inner.anonymous {
            Anonymous::Exempt => None,
            Anonymous::PeerAddress => request
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(peer)| Caller::Peer(peer.ip())),
        }
    }

    /// `Err(wait)` when the caller is over its rate: the time until its
    /// next request would be allowed.
    fn check_rate(&self, caller: &Caller) -> Result<(), Duration> {
        let Some(rate) = &self.inner.rate else {
            return Ok(());
        };
        if self.inner.checks.fetch_add(1, Ordering::Relaxed) % FORGET_EVERY == FORGET_EVERY - 1 {
            rate.retain_recent();
            rate.shrink_to_fit();
        }
        rate.check_key(caller)
            .map_err(|not_until| not_until.wait_time_from(rate.clock().now()))
    }

    /// A slot for one more long poll of `caller`, held until dropped (`None`
    /// when long polls are not capped); `Err(max)` when the caller already
    /// holds the most allowed.
    fn poll_slot(&self, caller: Caller) -> Result<Option<PollSlot>, u32> {
        let Some(max) = self.inner.max_polls else {
            return Ok(None);
        };
        let mut polls = self.inner.polls.lock().expect("poll counts lock");
        let open = polls.entry(caller.clone()).or_insert(0);
        if *open >= max {
            return Err(max);
        }
        *open += 1;
        Ok(Some(PollSlot {
            limits: self.clone(),
            caller,
        }))
    }
}

/// One open long poll of a caller; dropping it frees the slot.
pub(crate) struct PollSlot {
    limits: Limits,
    caller: Caller,
}

impl Drop for PollSlot {
    fn drop(&mut self) {
        let mut polls = self.limits.inner.polls.lock().expect("poll counts lock");
        if let Some(open) = polls.get_mut(&self.caller) {
            *open -= 1;
            if *open == 0 {
                polls.remove(&self.caller);
            }
        }
    }
}

/// Whole seconds to tell a client to wait: rounded up, at least 1.
fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

/// A request's admission, called by the server's route guard after
/// authentication (it reads the [`Principal`]): `Ok` with the caller's long
/// poll slot, if any, to hold until the answer is sent; `Err` is 429
/// `rate_limited` with `Retry-After` for a caller over its rate, or already
/// holding its most long polls.
pub(crate) fn admit(limits: &Limits, request: &Request) -> Result<Option<PollSlot>, ApiError> {
    let path = request.uri().path();
    if is_exempt(path) {
        return Ok(None);
    }
    let Some(caller) = limits.caller(request) else {
        return Ok(None);
    };
    if let Err(wait) = limits.check_rate(&caller) {
        return Err(ApiError::RateLimited {
            message: "this caller is over its request rate (--rate-limit); \
                      try again after the Retry-After delay"
                .to_owned(),
            retry_after_secs: retry_after_secs(wait),
        });
    }
    if path != POLL_PATH {
        return Ok(None);
    }
    limits
        .poll_slot(caller)
        .map_err(|max| ApiError::RateLimited {
            message: format!(
                "this caller already holds {max} long polls open (--max-concurrent-polls); \
             try again after the Retry-After delay"
            ),
            retry_after_secs: 1,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::{
        extract::State,
        middleware::Next,
        response::{IntoResponse, Response},
    };

    /// The route guard's use of [`admit`], alone.
    async fn limit(State(limits): State<Limits>, request: Request, next: Next) -> Response {
        match admit(&limits, &request) {
            Err(refused) => refused.into_response(),
            Ok(slot) => {
                let response = next.run(request).await;
                drop(slot);
                response
            }
        }
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        for (wait_ms, secs) in [(0, 1), (5, 1), (999, 1), (1000, 1), (1001, 2), (2500, 3)] {
            assert_eq!(
                retry_after_secs(Duration::from_millis(wait_ms)),
                secs,
                "{wait_ms} ms"
            );
        }
    }

    #[test]
    fn anonymous_modes_round_trip() {
        for mode in [Anonymous::Exempt, Anonymous::PeerAddress] {
            assert_eq!(Anonymous::parse(mode.as_str()), Some(mode));
        }
        assert_eq!(Anonymous::parse("ip"), None);
    }

    #[test]
    fn poll_slots_are_counted_per_caller_and_freed_on_drop() {
        let limits = Limits::new(&Config {
            max_concurrent_polls: NonZeroU32::new(2),
            ..Config::default()
        });
        let a = Caller::Token("a".to_owned());
        let b = Caller::Token("b".to_owned());
        let slot = |caller: &Caller| limits.poll_slot(caller.clone());
        let first = slot(&a).expect("first slot");
        let second = slot(&a).expect("second slot");
        assert_eq!(slot(&a).err(), Some(2), "a third is refused");
        assert!(slot(&b).is_ok(), "another caller is not");
        drop(first);
        let third = slot(&a).expect("a freed slot is reused");
        drop((second, third));
        assert!(
            limits.inner.polls.lock().unwrap().is_empty(),
            "callers with no open poll are forgotten"
        );
    }

    #[tokio::test]
    async fn uncapped_long_polls_are_never_refused() {
        // `--max-concurrent-polls 0` turns the cap off: every poll passes.
        let limits = Limits::new(&Config {
            requests_per_second: None,
            max_concurrent_polls: None,
            ..Config::default()
        });
        let held: Vec<_> = (0..100)
            .map(|_| limits.poll_slot(Caller::Token("a".to_owned())))
            .collect();
        assert!(held.iter().all(|s| matches!(s, Ok(None))));
        let answers = statuses(&limits, Some(token("a")), POLL_PATH, 3).await;
        assert!(
            answers.iter().all(|(status, _)| *status == 200),
            "{answers:?}"
        );
    }

    #[test]
    fn rate_is_kept_per_caller() {
        let limits = Limits::new(&Config {
            requests_per_second: NonZeroU32::new(1),
            burst: NonZeroU32::new(3).unwrap(),
            ..Config::default()
        });
        let a = Caller::Token("a".to_owned());
        let b = Caller::Peer(IpAddr::from([127, 0, 0, 2]));
        for _ in 0..3 {
            assert_eq!(limits.check_rate(&a), Ok(()));
        }
        let wait = limits
            .check_rate(&a)
            .expect_err("the fourth is over the burst");
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        assert_eq!(limits.check_rate(&b), Ok(()), "b has its own bucket");
    }

    /// Answers of the middleware for requests by `principal` (none: no
    /// `Principal` at all) to `path`, through a real router.
    async fn statuses(
        limits: &Limits,
        principal: Option<Principal>,
        path: &str,
        n: usize,
    ) -> Vec<(u16, Option<String>)> {
        use axum::{Router, body::Body, middleware, routing::get};
        use tower::ServiceExt as _;
        let mut app = Router::new()
            .route("/v1/runs", get(|| async { "ok" }))
            .route(POLL_PATH, get(|| async { "ok" }))
            .route("/health/ready", get(|| async { "ok" }))
            .route_layer(middleware::from_fn_with_state(limits.clone(), limit));
        if let Some(principal) = principal {
            app = app.layer(axum::Extension(principal));
        }
        let mut answers = Vec::new();
        for _ in 0..n {
            let request = axum::http::Request::get(path).body(Body::empty()).unwrap();
            let response = app.clone().oneshot(request).await.unwrap();
            let retry_after = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
            answers.push((response.status().as_u16(), retry_after));
        }
        answers
    }

    fn token(id: &str) -> Principal {
        Principal {
            name: format!("token {id}"),
            role: crate::auth::Role::Worker,
            queues: None,
            token_id: Some(id.to_owned()),
        }
    }

    #[tokio::test]
    async fn callers_are_keyed_by_token_and_anonymous_ones_exempt() {
        let limits = Limits::new(&Config {
            requests_per_second: NonZeroU32::new(1),
            burst: NonZeroU32::new(2).unwrap(),
            ..Config::default()
        });
        let a = statuses(&limits, Some(token("a")), "/v1/runs", 3).await;
        assert_eq!(a[..2], [(200, None), (200, None)]);
        assert_eq!(a[2], (429, Some("1".to_owned())));
        // Token b has its own bucket; a's probes are not limited.
        let b = statuses(&limits, Some(token("b")), "/v1/runs", 2).await;
        assert!(b.iter().all(|(status, _)| *status == 200), "{b:?}");
        let probes = statuses(&limits, Some(token("a")), "/health/ready", 3).await;
        assert!(
            probes.iter().all(|(status, _)| *status == 200),
            "{probes:?}"
        );
        // Without a token (authentication off), exempt by default.
        let anonymous = statuses(&limits, Some(Principal::anonymous()), "/v1/runs", 5).await;
        assert!(
            anonymous.iter().all(|(status, _)| *status == 200),
            "{anonymous:?}"
        );
    }
}
