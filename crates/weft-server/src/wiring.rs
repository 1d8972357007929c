//! Builds a whole Weft server in process from configuration structs: the
//! store (connected and migrated), the engine over it, the router over the
//! engine, and the bound listener. The one place this wiring is written;
//! `weft server`, `weft dev`, the benchmark harness and the end-to-end tests
//! all start from [`Wiring::build`].

use std::{net::SocketAddr, sync::Arc};

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use weft_core::observe::{Fanout, Observer};
use weft_engine::Engine;
use weft_store::{PoolOptions, Settings, Store};

use crate::{Config, ServeOptions};

/// Which database the store opens and how it pools connections.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `sqlite://path.db` (created when missing) or
    /// `postgres://user:password@host:port/db`.
    pub database_url: String,
    /// The store's own settings (the lease duration).
    pub settings: Settings,
    /// Pool size and how long a query waits for a connection.
    pub pool: PoolOptions,
}

impl StoreConfig {
    /// The database at `database_url` with default settings and pool.
    pub fn new(database_url: impl Into<String>) -> Self {
        Self {
            database_url: database_url.into(),
            settings: Settings::default(),
            pool: PoolOptions::default(),
        }
    }
}

/// Everything an in-process server is built from.
pub struct Wiring {
    /// The database.
    pub store: StoreConfig,
    /// The engine's sweep, poll and gauge intervals.
    pub engine: weft_engine::Config,
    /// The HTTP side and the signals: metrics, redaction, observers and the
    /// trace pipeline. When `server.tracing` is set, the trace spans built
    /// from committed rows ([`weft_telemetry::traces::Tracing::row_spans`])
    /// observe the store first, then `server.observer`, if any.
    pub server: Config,
    /// The address to listen on, `host:port`; port 0 picks a free port
    /// (read it from [`Wired::addr`]).
    pub listen: String,
    /// How the listener's connections are served (the header read timeout).
    pub serve: ServeOptions,
}

/// Why a server could not be built.
#[derive(Debug, thiserror::Error)]
pub enum WiringError {
    /// The database could not be opened or migrated.
    #[error("cannot open the database at {database_url}")]
    Store {
        /// The URL as configured (it may hold a password: redact it before
        /// logging the error).
        database_url: String,
        /// What the store answered.
        #[source]
        source: weft_store::Error,
    },
    /// Authentication is required but cannot work: no pepper, or no token
    /// anyone could call the server with (see [`crate::auth::prepare`]).
    #[error(transparent)]
    Auth(#[from] crate::auth::StartupError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}")]
    Listen {
        /// The address as configured.
        addr: String,
        /// What the operating system answered.
        #[source]
        source: std::io::Error,
    },
}

/// A server built but not yet running: nothing is served and no sweep runs
/// until [`Wired::spawn`] (or the caller's own loop) starts them.
pub struct Wired {
    /// The connected, migrated store (also reachable as `engine.store()`).
    pub store: Store,
    /// The engine; [`Engine::run`] runs its sweeps.
    pub engine: Engine,
    /// The router with every route and middleware, the store's observers
    /// installed.
    pub app: Router,
    /// The bound listener.
    pub listener: TcpListener,
    /// The address the listener is bound to (the real port when 0 was asked).
    pub addr: SocketAddr,
    /// The serve options from [`Wiring::serve`], for a caller that runs its
    /// own serve loop with [`crate::serve_with`].
    pub serve: ServeOptions,
}

impl Wiring {
    /// Opens the store (running its migrations), checks that authentication
    /// can work (storing the bootstrap token), builds the engine and the
    /// router, and binds the listener, in that order.
    ///
    /// # Errors
    ///
    /// [`WiringError::Store`] when the database cannot be opened or migrated,
    /// [`WiringError::Auth`] when authentication is required but cannot work,
    /// [`WiringError::Listen`] when the address cannot be bound (the store is
    /// then closed again).
    pub async fn build(self) -> Result<Wired, WiringError> {
        let Wiring {
            store: store_config,
            engine: engine_config,
            mut server,
            listen,
            serve,
        } = self;
        let store = Store::connect_with(
            &store_config.database_url,
            store_config.settings,
            &store_config.pool,
        )
        .await
        .map_err(|source| WiringError::Store {
            database_url: store_config.database_url.clone(),
            source,
        })?;
        if let Err(err) = crate::auth::prepare(&store, &server.auth).await {
            store.close().await;
            return Err(err.into());
        }
        let engine = Engine::new(store.clone(), engine_config);
        let listener = match TcpListener::bind(&listen).await {
            Ok(listener) => listener,
            Err(source) => {
                store.close().await;
                return Err(WiringError::Listen {
                    addr: listen,
                    source,
                });
            }
        };
        let addr = listener
            .local_addr()
            .map_err(|source| WiringError::Listen {
                addr: listen.clone(),
                source,
            })?;
        if let Some(tracing) = &server.tracing {
            let row_spans: Arc<dyn Observer> = Arc::new(tracing.row_spans());
            server.observer = Some(match server.observer.take() {
                Some(other) => Arc::new(Fanout(vec![row_spans, other])),
                None => row_spans,
            });
        }
        let app = crate::router(engine.clone(), server);
        Ok(Wired {
            store,
            engine,
            app,
            listener,
            addr,
            serve,
        })
    }
}

impl Wired {
    /// Runs the engine's sweeps and serves HTTP, each on its own task, until
    /// `shutdown` is cancelled (in-flight requests then finish; see
    /// [`crate::serve_with`]).
    pub fn spawn(self, shutdown: CancellationToken) -> Running {
        let engine = tokio::spawn(self.engine.run(shutdown.clone()));
        let http = tokio::spawn(crate::serve_with(
            self.listener,
            self.app,
            shutdown,
            self.serve,
        ));
        Running {
            store: self.store,
            addr: self.addr,
            engine,
            http,
        }
    }
}

/// A server started by [`Wired::spawn`].
pub struct Running {
    /// The store the server runs on (for direct reads in tests and benches).
    pub store: Store,
    /// The address the server listens on.
    pub addr: SocketAddr,
    engine: tokio::task::JoinHandle<()>,
    http: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// The server's URL as a client on this machine reaches it; see
    /// [`local_url`].
    pub fn url(&self) -> String {
        local_url(self.addr)
    }

    /// Waits for the engine and the HTTP server to stop (after the
    /// `shutdown` given to [`Wired::spawn`] is cancelled), then closes the
    /// store's pool.
    ///
    /// # Errors
    ///
    /// The HTTP server's own failure (`accept` or serve error), after the
    /// store is closed all the same.
    pub async fn wait(self) -> std::io::Result<()> {
        let _ = self.engine.await;
        let served = match self.http.await {
            Ok(served) => served,
            Err(join) => Err(std::io::Error::other(join)),
        };
        self.store.close().await;
        served
    }
}

/// `http://{addr}` for a listen address, with a wildcard address (`0.0.0.0`,
/// `::`) replaced by IPv4 loopback so a client on this machine can reach it.
pub fn local_url(mut addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    format!("http://{addr}")
}
