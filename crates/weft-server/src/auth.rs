//! Who is calling: the caller's [`Principal`] (a token's name, its [`Role`]
//! and, for worker tokens, its queues), put into every request's extensions
//! before a handler runs, from the request's `Authorization: Bearer` token
//! ([`Authenticator::authenticate`]); each route's [`Access`], declared in
//! the route table, checked in one place ([`check_access`]). Handlers read
//! the principal to record the actor of an action and to decide what to
//! redact; they never check roles themselves (the worker protocol's queue
//! and lease checks are data, not roles: [`Principal::check_queues`],
//! [`Principal::check_lease`]).

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    extract::Request,
    http::{HeaderMap, header},
};
use weft_store::Store;

use crate::ApiError;

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

/// Whether requests must carry an API token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMode {
    /// Every route but the open ones (health probes, `/openapi.json`, and
    /// `/metrics` when [`AuthConfig::metrics_open`]) needs a token whose
    /// role allows it.
    Required,
    /// No token is checked: every caller is [`Principal::anonymous`].
    #[default]
    Off,
}

impl AuthMode {
    /// `required` or `off`, as in `--auth`.
    pub const fn as_str(self) -> &'static str {
        match self {
            AuthMode::Required => "required",
            AuthMode::Off => "off",
        }
    }

    /// Parses `required` or `off`.
    pub fn parse(text: &str) -> Option<AuthMode> {
        [AuthMode::Required, AuthMode::Off]
            .into_iter()
            .find(|mode| mode.as_str() == text)
    }
}

/// Default of [`AuthConfig::cache_ttl`]: how long a token row read from the
/// database is trusted before it is read again, so the longest a revocation
/// made on another server takes to reach this one.
pub const DEFAULT_TOKEN_CACHE_TTL: Duration = Duration::from_secs(5);

/// A token's `last_used_at` is written at most this often per server.
pub const LAST_USED_INTERVAL_MS: i64 = 60_000;

/// How callers are authenticated. Its `Debug` hides the bootstrap token.
#[derive(Clone)]
pub struct AuthConfig {
    /// Whether a token is required.
    pub mode: AuthMode,
    /// The key of the token hashes; needed to check tokens (auth required)
    /// and to create them (`POST /v1/tokens`).
    pub pepper: Option<weft_store::Pepper>,
    /// How long a token row is trusted before it is read again (see
    /// [`DEFAULT_TOKEN_CACHE_TTL`]).
    pub cache_ttl: Duration,
    /// `/metrics` is served without a token (for a scraper); otherwise it
    /// needs the viewer role.
    pub metrics_open: bool,
    /// `WEFT_BOOTSTRAP_TOKEN`: an admin token (named [`BOOTSTRAP_NAME`])
    /// stored at startup if it is not yet, so a server with an empty token
    /// table can be reached.
    pub bootstrap_token: Option<String>,
}

/// Shortest `WEFT_BOOTSTRAP_TOKEN` accepted, in characters.
pub const MIN_BOOTSTRAP_LEN: usize = 24;

/// The name of the admin token stored from `WEFT_BOOTSTRAP_TOKEN`.
pub const BOOTSTRAP_NAME: &str = "bootstrap";

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("mode", &self.mode)
            .field("pepper", &self.pepper)
            .field("cache_ttl", &self.cache_ttl)
            .field("metrics_open", &self.metrics_open)
            .field(
                "bootstrap_token",
                &self.bootstrap_token.as_ref().map(|_| "[hidden]"),
            )
            .finish()
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            mode: AuthMode::Off,
            pepper: None,
            cache_ttl: DEFAULT_TOKEN_CACHE_TTL,
            metrics_open: true,
            bootstrap_token: None,
        }
    }
}

/// Why a server with authentication required cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// No pepper was configured.
    #[error(
        "authentication is required but no token pepper is configured: set WEFT_TOKEN_PEPPER \
         or --token-pepper-file (the same on every server and for `weft tokens --database-url`)"
    )]
    NoPepper,
    /// The database holds no live token and no bootstrap token was given.
    #[error(
        "authentication is required but the database holds no live API token, so nobody could \
         call this server: create an admin token with `weft tokens create NAME --role admin \
         --database-url <this database>` (with the same pepper), or start once with \
         WEFT_BOOTSTRAP_TOKEN=<a long random secret> to store it as the admin token `bootstrap` \
         (or run with --auth off on a loopback address)"
    )]
    NoTokens,
    /// The bootstrap token is too short to be a secret.
    #[error(
        "WEFT_BOOTSTRAP_TOKEN must be at least {MIN_BOOTSTRAP_LEN} characters (a long random \
         secret, e.g. `openssl rand -hex 32`)"
    )]
    WeakBootstrap,
    /// The store failed (a bootstrap token whose name `bootstrap` is taken
    /// by another live token: revoke that one first).
    #[error("cannot prepare authentication")]
    Store(#[source] weft_store::Error),
}

/// Checks that a server with authentication required can be called at all,
/// storing the bootstrap token first when one is configured.
///
/// # Errors
///
/// [`StartupError::NoPepper`] or [`StartupError::NoTokens`], and store
/// failures.
pub async fn prepare(store: &Store, config: &AuthConfig) -> Result<(), StartupError> {
    if config.mode == AuthMode::Off {
        return Ok(());
    }
    let pepper = config.pepper.as_ref().ok_or(StartupError::NoPepper)?;
    if let Some(token) = &config.bootstrap_token {
        if token.trim().chars().count() < MIN_BOOTSTRAP_LEN {
            return Err(StartupError::WeakBootstrap);
        }
        let new = weft_store::NewToken {
            name: BOOTSTRAP_NAME.to_owned(),
            role: Role::Admin.as_str().to_owned(),
            queues: None,
            expires_at: None,
            created_by: "WEFT_BOOTSTRAP_TOKEN".to_owned(),
        };
        store
            .accept_token(&new, token, pepper)
            .await
            .map_err(StartupError::Store)?;
    }
    if store
        .live_token_count(store.now_ms())
        .await
        .map_err(StartupError::Store)?
        == 0
    {
        return Err(StartupError::NoTokens);
    }
    Ok(())
}

/// Who may call a route, declared once beside it in the route table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, token or not (health probes, the OpenAPI document).
    Open,
    /// `/metrics`: open, or the viewer role, as [`AuthConfig::metrics_open`] says.
    Metrics,
    /// Callers whose role is at least this one: `viewer` < `operator` <
    /// `admin`; `worker` routes take worker tokens, and admins.
    Role(Role),
}

impl Access {
    /// What the access is once `/metrics`'s flag is known.
    pub fn resolve(self, metrics_open: bool) -> Access {
        match self {
            Access::Metrics if metrics_open => Access::Open,
            Access::Metrics => Access::Role(Role::Viewer),
            other => other,
        }
    }

    /// Whether a caller with `role` may call a route of this access.
    pub fn allows(self, role: Role) -> bool {
        match self {
            Access::Open => true,
            Access::Metrics | Access::Role(Role::Viewer) => {
                matches!(role, Role::Viewer | Role::Operator | Role::Admin)
            }
            Access::Role(Role::Operator) => matches!(role, Role::Operator | Role::Admin),
            Access::Role(Role::Admin) => role == Role::Admin,
            Access::Role(Role::Worker) => matches!(role, Role::Worker | Role::Admin),
        }
    }

    /// How the OpenAPI document and errors name it: `open`, `viewer`, ...
    pub fn describe(self) -> &'static str {
        match self {
            Access::Open => "open (no token needed)",
            Access::Metrics => "viewer, or open with --metrics-open",
            Access::Role(Role::Viewer) => "viewer, operator or admin",
            Access::Role(Role::Operator) => "operator or admin",
            Access::Role(Role::Admin) => "admin",
            Access::Role(Role::Worker) => "worker or admin",
        }
    }
}

/// Why a request carries no [`Principal`]: put into its extensions instead,
/// and answered by [`check_access`] on routes that are not open.
#[derive(Debug, Clone)]
pub(crate) enum Refused {
    /// No valid token: 401.
    Unauthorized {
        message: String,
        invalid_token: bool,
    },
    /// The token could not be checked (the database is down): 503.
    Unavailable(String),
}

impl Refused {
    fn error(&self) -> ApiError {
        match self {
            Refused::Unauthorized {
                message,
                invalid_token,
            } => ApiError::Unauthorized {
                message: message.clone(),
                invalid_token: *invalid_token,
            },
            Refused::Unavailable(message) => ApiError::Unavailable(message.clone()),
        }
    }
}

impl From<weft_store::Error> for Refused {
    fn from(err: weft_store::Error) -> Self {
        Refused::Unavailable(format!("cannot check the API token: {err}"))
    }
}

/// One token row as last read, and when.
struct Cached {
    token: weft_store::StoredToken,
    read: Instant,
    /// The `last_used_at` this server last wrote or read, epoch ms.
    last_used_ms: i64,
}

/// Checks API tokens against the store, keeping each token row it read for
/// [`AuthConfig::cache_ttl`].
pub(crate) struct Authenticator {
    store: Store,
    config: AuthConfig,
    cache: Mutex<HashMap<String, Cached>>,
}

impl Authenticator {
    pub(crate) fn new(store: Store, config: AuthConfig) -> Arc<Self> {
        Arc::new(Self {
            store,
            config,
            cache: Mutex::new(HashMap::new()),
        })
    }

    pub(crate) fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// Drops a token's cached row (after it is revoked here), so this
    /// server refuses it at once.
    pub(crate) fn forget(&self, token_id: &str) {
        self.cache
            .lock()
            .expect("token cache lock")
            .remove(token_id);
    }

    /// Authentication: puts the caller's [`Principal`] into the request's
    /// extensions (with authentication off [`Principal::anonymous`], else
    /// the token's), or a [`Refused`] for a request without a valid token,
    /// which [`check_access`] answers on every route that is not open.
    pub(crate) async fn authenticate(&self, request: &mut Request) {
        match self.identify(request.headers()).await {
            Ok(principal) => {
                request.extensions_mut().insert(principal);
            }
            Err(refused) => {
                request.extensions_mut().insert(refused);
            }
        }
    }

    /// The caller of a request with these headers.
    async fn identify(&self, headers: &HeaderMap) -> Result<Principal, Refused> {
        if self.config.mode == AuthMode::Off {
            return Ok(Principal::anonymous());
        }
        let missing = || Refused::Unauthorized {
            message: "this server requires an API token: send `Authorization: Bearer <token>` \
                      (the CLI and workers send --token or WEFT_TOKEN)"
                .to_owned(),
            invalid_token: false,
        };
        let invalid = |message: &str| Refused::Unauthorized {
            message: message.to_owned(),
            invalid_token: true,
        };
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(missing());
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                let (scheme, rest) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            })
            .filter(|t| !t.is_empty() && t.len() <= MAX_TOKEN_LEN)
            .ok_or_else(|| invalid("the Authorization header must be `Bearer <token>`"))?;
        let Some(pepper) = &self.config.pepper else {
            return Err(Refused::Unavailable(
                "this server has no token pepper configured".to_owned(),
            ));
        };
        let (token_id, secret) = pepper.split(token);
        let (stored, touch) = self.row(&token_id).await?;
        let Some(stored) = stored else {
            return Err(invalid("the API token is not valid"));
        };
        if !stored.verify(pepper, secret) {
            return Err(invalid("the API token is not valid"));
        }
        let now = self.store.now_ms();
        if let Some(why) = stored.record.refused_at(now) {
            return Err(invalid(&format!(
                "the API token `{}` is {why}",
                stored.record.name
            )));
        }
        let Some(role) = Role::parse(&stored.record.role) else {
            tracing::error!(component = "server", token_id = %token_id, "a stored token has an unknown role");
            return Err(invalid("the API token is not valid"));
        };
        if touch {
            self.touch(&token_id, now);
        }
        Ok(Principal {
            name: stored.record.name,
            role,
            queues: stored.record.queues,
            token_id: Some(token_id),
        })
    }

    /// The token row, from the cache while fresh; also whether its last use
    /// is due to be written.
    async fn row(
        &self,
        token_id: &str,
    ) -> Result<(Option<weft_store::StoredToken>, bool), Refused> {
        let now = self.store.now_ms();
        let due = |last: i64| now - last >= LAST_USED_INTERVAL_MS;
        {
            let cache = self.cache.lock().expect("token cache lock");
            if let Some(cached) = cache.get(token_id)
                && cached.read.elapsed() < self.config.cache_ttl
            {
                return Ok((Some(cached.token.clone()), due(cached.last_used_ms)));
            }
        }
        let read = self.store.token(token_id).await?;
        let mut cache = self.cache.lock().expect("token cache lock");
        let Some(token) = read else {
            cache.remove(token_id);
            return Ok((None, false));
        };
        let last_used_ms = cache
            .get(token_id)
            .map(|c| c.last_used_ms)
            .into_iter()
            .chain(token.record.last_used_at)
            .max()
            .unwrap_or(0);
        cache.insert(
            token_id.to_owned(),
            Cached {
                token: token.clone(),
                read: Instant::now(),
                last_used_ms,
            },
        );
        Ok((Some(token), due(last_used_ms)))
    }

    /// Writes a token's last use off the request's path.
    fn touch(&self, token_id: &str, now: i64) {
        if let Some(cached) = self
            .cache
            .lock()
            .expect("token cache lock")
            .get_mut(token_id)
        {
            cached.last_used_ms = now;
        }
        let store = self.store.clone();
        let token_id = token_id.to_owned();
        tokio::spawn(async move {
            if let Err(err) = store.touch_token(&token_id, now).await {
                tracing::warn!(component = "server", token_id, error = %err, "cannot record a token's last use");
            }
        });
    }
}

/// Longest bearer token read, in bytes.
const MAX_TOKEN_LEN: usize = 512;

/// The one place a route's [`Access`] is checked, by the server's route
/// guard on each route of the table. `Err` is 401 `unauthorized` without a
/// valid token, 403 `forbidden` when the token's role does not allow the
/// route.
pub(crate) fn check_access(access: Access, request: &Request) -> Result<(), ApiError> {
    if access == Access::Open {
        return Ok(());
    }
    match request.extensions().get::<Principal>() {
        Some(principal) if access.allows(principal.role) => Ok(()),
        Some(principal) => Err(ApiError::Forbidden(format!(
            "the token `{}` has the role {}; this call needs {}",
            principal.name,
            principal.role,
            access.describe()
        ))),
        None => Err(match request.extensions().get::<Refused>() {
            Some(refused) => refused.error(),
            None => ApiError::Internal("the request was not authenticated".to_owned()),
        }),
    }
}

impl Principal {
    /// Checks that a worker may poll these queues: any queue unless its
    /// token names some. `Err` is 403 `forbidden`.
    pub fn check_queues(&self, queues: &[String]) -> Result<(), ApiError> {
        let Some(allowed) = &self.queues else {
            return Ok(());
        };
        let outside: Vec<&str> = queues
            .iter()
            .filter(|q| !allowed.contains(q))
            .map(String::as_str)
            .collect();
        if outside.is_empty() {
            return Ok(());
        }
        Err(ApiError::Forbidden(format!(
            "the token `{}` may poll only the queues {}; not {}",
            self.name,
            allowed.join(", "),
            outside.join(", ")
        )))
    }

    /// The leases among `lease_ids` that this caller may not report on:
    /// those claimed with another token. With authentication off (no token)
    /// every lease is the caller's. Leases that do not exist are left to
    /// the store to answer (`stale_lease`).
    pub async fn foreign_leases(
        &self,
        store: &Store,
        lease_ids: &[&str],
    ) -> Result<Vec<String>, ApiError> {
        let Some(mine) = &self.token_id else {
            return Ok(Vec::new());
        };
        Ok(store
            .lease_tokens(lease_ids)
            .await?
            .into_iter()
            .filter(|(_, token)| token.as_ref() != Some(mine))
            .map(|(lease, _)| lease)
            .collect())
    }

    /// [`Principal::foreign_leases`] for one lease: `Err` is 403
    /// `forbidden` when another token claimed it.
    pub async fn check_lease(&self, store: &Store, lease_id: &str) -> Result<(), ApiError> {
        if self.foreign_leases(store, &[lease_id]).await?.is_empty() {
            Ok(())
        } else {
            Err(Principal::foreign_lease(lease_id))
        }
    }

    /// The 403 `forbidden` answer for a lease claimed with another token.
    pub fn foreign_lease(lease_id: &str) -> ApiError {
        ApiError::Forbidden(format!(
            "lease `{lease_id}` was claimed with another token; only that token may report on it"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::{Access, AuthConfig, AuthMode, Role};

    #[test]
    fn roles_by_access() {
        let check = |access: Access, allowed: &[Role]| {
            for role in Role::ALL {
                assert_eq!(
                    access.allows(role),
                    allowed.contains(&role),
                    "{access:?} {role}"
                );
            }
        };
        check(Access::Open, &Role::ALL);
        check(
            Access::Role(Role::Viewer),
            &[Role::Viewer, Role::Operator, Role::Admin],
        );
        check(Access::Role(Role::Operator), &[Role::Operator, Role::Admin]);
        check(Access::Role(Role::Admin), &[Role::Admin]);
        check(Access::Role(Role::Worker), &[Role::Worker, Role::Admin]);
        assert_eq!(Access::Metrics.resolve(true), Access::Open);
        assert_eq!(Access::Metrics.resolve(false), Access::Role(Role::Viewer));
        assert_eq!(AuthMode::parse("required"), Some(AuthMode::Required));
        assert_eq!(AuthMode::parse("on"), None);
    }

    #[test]
    fn debug_hides_secrets() {
        let config = AuthConfig {
            bootstrap_token: Some("a-bootstrap-secret".into()),
            pepper: Some(weft_store::Pepper::new("a-pepper-secret-of-length").unwrap()),
            ..AuthConfig::default()
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("secret"), "{shown}");
    }

    #[test]
    fn role_names_round_trip() {
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::parse("root"), None);
    }
}
