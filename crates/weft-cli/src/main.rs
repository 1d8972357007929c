//! The `weft` binary: argument parsing, environment and wiring. Every flag
//! that configures a process has an environment variable behind it; this is
//! the only place in Weft that reads the environment.

mod audit;
mod bulk;
mod compensation;
mod demo;
mod doctor;
mod events;
mod fan_out;
mod output;
mod serve;
mod table;
mod tokens;
mod transport;

use std::{io::Write as _, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use serde_json::Value;
use weft_api::StartRunRequest;
use weft_client::Client;

#[derive(Parser)]
#[command(
    name = "weft",
    version,
    about = "Weft: durable workflows you can see into"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The server the client commands talk to unless `--url` or `WEFT_URL` says otherwise.
pub(crate) const DEFAULT_URL: &str = "http://127.0.0.1:8080";

#[derive(Args, Clone)]
struct ClientArgs {
    /// The Weft server to talk to.
    #[arg(long, env = "WEFT_URL", default_value = DEFAULT_URL, global = true, value_parser = server_url)]
    url: String,
    /// API token, when the server requires one.
    #[arg(long, env = "WEFT_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// The person these actions are for, recorded in history and the audit
    /// log: beside the token's name as `on_behalf_of`, or, with no token, as
    /// the actor (default: the OS user).
    #[arg(long, env = "WEFT_ACTOR", global = true, value_parser = audit::actor_name)]
    actor: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// Also trust the CA certificates in this PEM file (for an https:// URL
    /// whose certificate a private CA signed).
    #[arg(long, env = "WEFT_CA_CERT", global = true)]
    ca_cert: Option<PathBuf>,
}

/// Checks a `--url` / `WEFT_URL` value: an http(s) URL with a host, so a
/// bare `localhost:8080` is refused up front rather than as an unreachable server.
fn server_url(text: &str) -> Result<String, String> {
    let rest = text
        .strip_prefix("http://")
        .or_else(|| text.strip_prefix("https://"));
    match rest {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') => Ok(text.to_owned()),
        _ => Err(format!(
            "the server's URL must start with http:// or https:// and name a host, like {DEFAULT_URL}"
        )),
    }
}

impl ClientArgs {
    fn client(&self) -> Result<Client> {
        Ok(
            transport::client(&self.url, self.ca_cert.as_deref(), self.token.clone())?
                .with_actor(audit::actor(self.actor.as_deref(), self.token.is_some())),
        )
    }
}

#[derive(Args, Clone)]
pub struct ServerArgs {
    /// Database URL: sqlite://FILE (embedded) or postgres://...
    #[arg(long, env = "WEFT_DATABASE_URL", default_value = "sqlite://weft.db")]
    pub database_url: String,
    /// Address the HTTP server listens on.
    #[arg(long, env = "WEFT_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Lease length for steps without a heartbeat_timeout (e.g. 30s).
    #[arg(long, env = "WEFT_LEASE_TIMEOUT", default_value = "30s")]
    pub lease_timeout: String,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "WEFT_MAX_BODY_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// How long a client may take to send a request's headers; then the
    /// connection is closed (e.g. 10s).
    #[arg(long, env = "WEFT_HEADER_READ_TIMEOUT", default_value = "10s")]
    pub header_read_timeout: String,
    /// How long a client may take to send a request's body; then it is
    /// answered 408 (e.g. 30s). Long polls and streams are not cut by it.
    #[arg(long, env = "WEFT_BODY_READ_TIMEOUT", default_value = "30s")]
    pub body_read_timeout: String,
    /// How often timers and the lease reaper run (e.g. 200ms).
    #[arg(long, env = "WEFT_ENGINE_TICK", default_value = "200ms")]
    pub engine_tick: String,
    /// How often an event stream reads its run's history again for events
    /// written by other servers (e.g. 500ms); this server's own commits
    /// reach its streams at once.
    #[arg(long, env = "WEFT_STREAM_RECHECK", default_value = "500ms")]
    pub stream_recheck: String,
    /// Longest a worker's poll is held when there is no work (e.g. 30s); a
    /// poll asking for longer is answered after this.
    #[arg(long, env = "WEFT_MAX_POLL_WAIT", default_value = "30s")]
    pub max_poll_wait: String,
    /// The oldest the database gauges of /metrics may be (e.g. 5s): a scrape
    /// reads them again from the database when its last reading is older.
    #[arg(long, env = "WEFT_GAUGE_INTERVAL", default_value = "5s")]
    pub gauge_interval: String,
    /// Largest database connection pool. On PostgreSQL the server opens up
    /// to 4 more, kept for lease renewals (heartbeats).
    #[arg(long, env = "WEFT_DB_POOL_SIZE", default_value_t = 16)]
    pub db_pool_size: u32,
    /// Also serve /metrics on this separate address (it is always on the main port too).
    #[arg(long, env = "WEFT_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// How many distinct workflow names metric labels keep before folding into `other`.
    #[arg(long, env = "WEFT_METRICS_MAX_WORKFLOWS", default_value_t = 200)]
    pub metrics_max_workflows: usize,
    /// Extra sensitive keys to redact, comma-separated (password, secret, token,
    /// api_key and authorization always are).
    #[arg(long, env = "WEFT_REDACT_KEYS", default_value = "")]
    pub redact_keys: String,
    /// Redact inputs and outputs in API responses too (the dashboard always does).
    #[arg(long, env = "WEFT_REDACT_API")]
    pub redact_api: bool,
    /// Mark the dashboard's session cookies `Secure` though this server
    /// serves plain HTTP: behind a proxy that terminates TLS (with
    /// `--tls-cert` they are `Secure` anyway).
    #[arg(long, env = "WEFT_SECURE_COOKIES")]
    pub secure_cookies: bool,
    /// Extra regular expressions masked as `[redacted]` in free text (errors,
    /// log lines, events), besides the built-in ones (bearer tokens,
    /// `password=…`-style pairs, Weft tokens, database URL passwords). Repeat
    /// the flag, or put one per line in the variable. A capture group named
    /// `secret` masks only that group.
    #[arg(
        long = "redact-patterns",
        env = "WEFT_REDACT_PATTERNS",
        value_delimiter = '\n'
    )]
    pub redact_patterns: Vec<String>,
    /// Link to a run's trace, e.g. `http://jaeger:16686/trace/{trace_id}`: run
    /// details and the dashboard then carry it.
    #[arg(long, env = "WEFT_TRACE_URL_TEMPLATE")]
    pub trace_url_template: Option<String>,
    #[command(flatten)]
    pub diagnosis: DiagnosisArgs,
    #[command(flatten)]
    pub transport: transport::TransportArgs,
    #[command(flatten)]
    pub auth: tokens::AuthArgs,
}

/// Thresholds of `weft doctor`, the diagnosis endpoints and `weft_runs_stalled`.
#[derive(Args, Clone, Debug)]
pub struct DiagnosisArgs {
    /// A worker counts as live while it polled within this window (longer than its poll wait, 20s).
    #[arg(long, env = "WEFT_WORKER_LIVE_WINDOW", default_value = "45s")]
    pub worker_live_window: String,
    /// A step attempt running longer than this is `running_long`.
    #[arg(long, env = "WEFT_RUNNING_LONG_AFTER", default_value = "1h")]
    pub running_long_after: String,
    /// An approval waiting longer than this counts as stalled.
    #[arg(long, env = "WEFT_APPROVAL_STALLED_AFTER", default_value = "24h")]
    pub approval_stalled_after: String,
    /// A timer due longer ago than this is `overdue_timer` (the engine is not sweeping).
    #[arg(long, env = "WEFT_TIMER_OVERDUE_AFTER", default_value = "1m")]
    pub timer_overdue_after: String,
    /// A ready step waiting on busy workers longer than this is `worker_saturated`.
    #[arg(long, env = "WEFT_SATURATED_AFTER", default_value = "5m")]
    pub saturated_after: String,
    /// Claims or commits whose p99 over the last minute is above this make
    /// `database_slow` (a finding of `weft doctor` and `weft status`).
    #[arg(long, env = "WEFT_DATABASE_SLOW_AFTER", default_value = "500ms")]
    pub database_slow_after: String,
    /// Worker rows not heard from for this long are deleted.
    #[arg(long, env = "WEFT_WORKER_RETENTION", default_value = "24h")]
    pub worker_retention: String,
}

#[derive(Subcommand)]
enum Command {
    /// Server + worker + example workflows on the embedded SQLite: try Weft in one command.
    Dev {
        #[command(flatten)]
        server: ServerArgs,
        /// Do not start demo runs.
        #[arg(long)]
        no_demo: bool,
        /// The CA that signed --tls-cert, for the in-process worker and the
        /// printed commands (when the system does not trust it already).
        #[arg(long, env = "WEFT_CA_CERT")]
        ca_cert: Option<PathBuf>,
    },
    /// The HTTP API, worker protocol and engine loops.
    Server {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// A worker that runs handlers as external commands, listed in a TOML file.
    Worker {
        /// The handlers file (`[handlers]` name = command).
        #[arg(long)]
        handlers: PathBuf,
        /// Queues to serve (repeatable).
        #[arg(long = "queue", default_value = "default")]
        queues: Vec<String>,
        /// Tasks run at once.
        #[arg(long, env = "WEFT_WORKER_CONCURRENCY", default_value_t = 8)]
        concurrency: usize,
        /// A stable id for this worker (default: host-pid-random).
        #[arg(long, env = "WEFT_WORKER_ID")]
        worker_id: Option<String>,
        /// Serve this worker's own metrics (tasks by handler and outcome,
        /// handler time, polls) at /metrics on this address.
        #[arg(long, env = "WEFT_WORKER_METRICS_LISTEN")]
        metrics_listen: Option<String>,
        /// On SIGTERM or SIGINT, how long running handlers may finish (e.g.
        /// 30s); the rest get SIGTERM, then SIGKILL, and their steps are
        /// released to run again without spending an attempt.
        #[arg(long, env = "WEFT_SHUTDOWN_GRACE", default_value = "30s")]
        shutdown_grace: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Internal: runs one exec handler command and kills its process group
    /// when the worker that started it dies.
    #[command(name = "__supervise", hide = true)]
    Supervise {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        argv: Vec<String>,
    },
    /// Apply database migrations and exit.
    Migrate {
        #[arg(long, env = "WEFT_DATABASE_URL", default_value = "sqlite://weft.db")]
        database_url: String,
    },
    /// Register workflow manifests (YAML or JSON).
    Apply {
        #[arg(short = 'f', long = "file", required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List registered workflows.
    Workflows {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Start a run.
    Start {
        workflow: String,
        /// Run input: inline JSON, or @FILE.
        #[arg(long)]
        input: Option<String>,
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Metadata to find the run by later (`weft runs --meta KEY=VALUE`); repeatable.
        #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = parse_meta)]
        meta: Vec<(String, String)>,
        /// Follow the run's progress; exit non-zero unless it completes.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List runs, newest first.
    Runs {
        #[arg(long)]
        workflow: Option<String>,
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        trace_id: Option<String>,
        /// RFC 3339 time or a duration back from now, like 1h.
        #[arg(long)]
        since: Option<String>,
        /// Only runs created before this: RFC 3339 time or a duration back from now.
        #[arg(long)]
        until: Option<String>,
        /// Only runs started with this metadata; repeatable (all must match).
        #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = parse_meta)]
        meta: Vec<(String, String)>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Continue a listing where the previous page ended (the cursor it printed).
        #[arg(long)]
        cursor: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// One run: steps, attempts, errors, timing and a timeline. Takes a run_id or a trace_id.
    Run {
        id: String,
        /// Link to the trace, e.g. `http://jaeger:16686/trace/{trace_id}`, when the server gives none.
        #[arg(long, env = "WEFT_TRACE_URL_TEMPLATE")]
        trace_url_template: Option<String>,
        /// List each `for_each` child's attempts as `step[i]` instead of one
        /// row of counts per step.
        #[arg(long)]
        children: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Log lines of a run's steps.
    Logs {
        id: String,
        #[arg(long)]
        step: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// The history of a run, one event per line; `weft events catalog`
    /// lists every event kind with its payload fields.
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Events {
        #[command(subcommand)]
        command: Option<events::EventsCommand>,
        #[arg(required = true)]
        id: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Follow a run's steps until it finishes.
    Watch {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Cancel a run, or with a filter instead of an id every pending or
    /// running run it matches (counted, shown and confirmed first).
    Cancel {
        #[arg(required_unless_present_any = ["workflow", "status", "trace_id", "since", "until", "meta"], conflicts_with_all = ["workflow", "status", "trace_id", "since", "until", "meta", "yes"])]
        id: Option<String>,
        #[command(flatten)]
        filter: bulk::BulkArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Retry a failed or cancelled run from its failed steps, or with a
    /// filter instead of an id every failed or cancelled run it matches.
    Retry {
        #[arg(required_unless_present_any = ["workflow", "status", "trace_id", "since", "until", "meta"], conflicts_with_all = ["workflow", "status", "trace_id", "since", "until", "meta", "yes"])]
        id: Option<String>,
        #[command(flatten)]
        filter: bulk::BulkArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Approve a waiting approval step.
    Approve {
        id: String,
        step: String,
        /// Why, recorded in the run's history.
        #[arg(long, alias = "message")]
        comment: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Reject a waiting approval step (the run fails with reason `rejected`).
    Reject {
        id: String,
        step: String,
        /// Why, recorded in the run's history and as the run's error.
        #[arg(long, alias = "message")]
        comment: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// The audit log of actions without a run (registrations, token changes), newest first.
    Audit {
        #[command(flatten)]
        filter: audit::AuditArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Workers the server has heard from: host, pid, queues, handlers, slots, last poll.
    Workers {
        /// Only workers polling this queue.
        #[arg(long)]
        queue: Option<String>,
        /// Also workers no longer live.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Queues: ready and running steps, oldest ready age, live pollers, attempts
    /// completed in the last minute, handlers served.
    Queues {
        /// Only this queue.
        #[arg(long)]
        queue: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Why runs are not moving: every stalled run by cause, worst first, with the
    /// command that resolves it (or one run's diagnosis), and system findings
    /// (database_slow). Exits 1 when something is stalled.
    Doctor {
        /// One run (run_id) instead of all.
        id: Option<String>,
        /// Only this cause (e.g. no_worker_for_queue).
        #[arg(long)]
        cause: Option<String>,
        /// Runs shown per cause.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Skip this many runs of each cause.
        #[arg(long, default_value_t = 0)]
        offset: u32,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Saga compensation: skip a failed undo (`weft compensation skip RUN STEP`).
    Compensation {
        #[command(subcommand)]
        command: compensation::CompensationCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// API tokens: create (shown once), list, revoke.
    Tokens {
        #[command(subcommand)]
        command: tokens::TokensCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Server health: status, version, uptime and each check.
    Status {
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// Trace export, from the standard `OTEL_*` variables: `None` unless
/// `OTEL_EXPORTER_OTLP_ENDPOINT` (or the traces-specific one) is set.
fn trace_config() -> Result<Option<weft_telemetry::traces::Config>> {
    let vars = weft_telemetry::traces::Vars::from_lookup(|name| std::env::var(name).ok());
    weft_telemetry::traces::Config::from_vars(&vars, "weft").map_err(anyhow::Error::msg)
}

/// Starts trace export when configured. Inside the Tokio runtime: the gRPC
/// channel needs one.
fn init_tracing() -> Result<Option<weft_telemetry::traces::Tracing>> {
    let Some(config) = trace_config()? else {
        return Ok(None);
    };
    let tracing = weft_telemetry::traces::Tracing::start(&config, env!("CARGO_PKG_VERSION"))
        .map_err(anyhow::Error::msg)?;
    Ok(Some(tracing))
}

fn init_logging(
    tracing: Option<&weft_telemetry::traces::Tracing>,
) -> Result<weft_telemetry::LogGuard> {
    let format = match std::env::var("WEFT_LOG_FORMAT") {
        Ok(text) => weft_telemetry::LogFormat::parse(&text)
            .with_context(|| format!("WEFT_LOG_FORMAT must be text or json, not `{text}`"))?,
        Err(_) => weft_telemetry::LogFormat::Text,
    };
    let filter = std::env::var("WEFT_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".to_owned());
    let dir = std::env::var_os("WEFT_LOG_DIR").map(PathBuf::from);
    weft_telemetry::init_with_traces(
        &weft_telemetry::LogConfig {
            format,
            filter,
            dir,
        },
        tracing,
    )
    .map_err(anyhow::Error::msg)
}

impl Command {
    /// Long-running commands log; one-shot CLI commands print instead.
    fn logs(&self) -> bool {
        matches!(
            self,
            Command::Dev { .. }
                | Command::Server { .. }
                | Command::Worker { .. }
                | Command::Migrate { .. }
        )
    }

    /// Processes that emit spans: the server (runs and attempts) and workers
    /// (`execute` spans).
    fn traces(&self) -> bool {
        matches!(
            self,
            Command::Dev { .. } | Command::Server { .. } | Command::Worker { .. }
        )
    }
}

/// One-shot commands die quietly of SIGPIPE when their reader goes away
/// (`weft runs | head -1`), as `cat` does, instead of panicking in `println!`.
/// Long-running processes keep Rust's default (ignored): a worker writes to
/// handlers' pipes and must survive a handler that closed its stdin.
#[cfg(unix)]
#[allow(unsafe_code)]
fn die_quietly_on_sigpipe() {
    // SAFETY: resetting a signal disposition before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(not(unix))]
fn die_quietly_on_sigpipe() {}

/// An error as one line: each cause once (an error that already prints its
/// source is not followed by it again), and for an unreachable server the
/// URL tried and how to point the CLI elsewhere.
fn error_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    let client_error = err
        .chain()
        .find_map(|cause| cause.downcast_ref::<weft_client::Error>());
    if let Some(client_error) = client_error
        && client_error.is_untrusted_certificate()
        && let weft_client::Error::Transport { url, source } = client_error
    {
        let mut root: &dyn std::error::Error = source;
        while let Some(next) = root.source() {
            root = next;
        }
        return format!(
            "the server at {url} has a TLS certificate this client does not trust ({root}); \
             pass the CA that signed it with --ca-cert or WEFT_CA_CERT"
        );
    }
    if let Some(weft_client::Error::Transport { url, source }) = client_error {
        // The innermost cause says what happened ("Connection refused");
        // reqwest's own wording repeats the URL around it.
        let mut root: &dyn std::error::Error = source;
        while let Some(next) = root.source() {
            root = next;
        }
        let context: Vec<String> = err
            .chain()
            .take_while(|cause| cause.downcast_ref::<weft_client::Error>().is_none())
            .map(|cause| cause.to_string())
            .collect();
        let mut text = context.join(": ");
        if !text.is_empty() {
            text.push_str(": ");
        }
        line = format!(
            "{text}cannot reach the Weft server at {url} ({root}); start one with `weft dev` \
             or `weft server`, or point the CLI at yours with --url or WEFT_URL"
        );
    }
    line
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The handler supervisor runs no async runtime and logs nothing.
    if let Command::Supervise { argv } = &cli.command {
        let code = weft_worker::exec::supervise(argv);
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    // Processes that log (servers, workers with pipes to handlers, migrate)
    // keep SIGPIPE ignored and never panic on output.
    if !cli.command.logs() {
        die_quietly_on_sigpipe();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let _entered = runtime.enter();
    // Only the long-running processes emit spans; one-shot commands print.
    let tracing = if cli.command.traces() {
        match init_tracing() {
            Ok(tracing) => tracing,
            Err(err) => {
                eprintln!("error: {err:#}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    let _log_guard = if cli.command.logs() {
        match init_logging(tracing.as_ref()) {
            Ok(guard) => Some(guard),
            Err(err) => {
                eprintln!("error: {err:#}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    let outcome = runtime.block_on(async {
        let outcome = run(cli, tracing.clone()).await;
        // Spans still buffered go out before the process ends.
        if let Some(tracing) = tracing {
            tracing.shutdown().await;
        }
        outcome
    });
    match outcome {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", error_line(&err));
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, tracing: Option<weft_telemetry::traces::Tracing>) -> Result<ExitCode> {
    match cli.command {
        Command::Dev {
            server,
            no_demo,
            ca_cert,
        } => {
            serve::dev(server, !no_demo, ca_cert, tracing).await?;
        }
        Command::Server { server } => {
            serve::server(server, tracing).await?;
        }
        Command::Worker {
            handlers,
            queues,
            concurrency,
            worker_id,
            metrics_listen,
            shutdown_grace,
            client,
        } => {
            serve::exec_worker(
                &handlers,
                serve::WorkerOptions {
                    queues,
                    concurrency,
                    worker_id,
                    metrics_listen,
                    shutdown_grace: parse_duration("shutdown-grace", &shutdown_grace)?,
                },
                client.client()?,
            )
            .await?;
        }
        Command::Supervise { .. } => unreachable!("handled before the runtime starts"),
        Command::Tokens { command, client } => {
            return tokens::run(command, client.client()?, client.json).await;
        }
        Command::Migrate { database_url } => {
            let store = weft_store::Store::connect(&database_url, Default::default()).await?;
            // Its logs may share stdout: SIGPIPE stays ignored here, and a
            // closed stdout must not fail a migration that succeeded.
            let version = store.schema_version().await?;
            let _ = writeln!(std::io::stdout(), "schema at version {version}");
            store.close().await;
        }
        Command::Apply { files, client } => {
            let api = client.client()?;
            for file in files {
                let text = std::fs::read_to_string(&file)
                    .with_context(|| format!("cannot read {}", file.display()))?;
                let def = weft_core::Definition::parse(&text)
                    .map_err(|err| anyhow::anyhow!("{}: {err} ({})", file.display(), err.code))?;
                let response = api.put_workflow(&def.name, &text).await?;
                if client.json {
                    println!("{}", serde_json::to_string(&response)?);
                } else if response.created {
                    println!(
                        "{}: registered {} version {}",
                        file.display(),
                        response.name,
                        response.version
                    );
                } else {
                    println!(
                        "{}: {} unchanged (version {})",
                        file.display(),
                        response.name,
                        response.version
                    );
                }
            }
        }
        Command::Workflows { client } => {
            let list = client.client()?.list_workflows().await?;
            if client.json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                output::workflows(&list.workflows);
            }
        }
        Command::Start {
            workflow,
            input,
            idempotency_key,
            meta,
            wait,
            client,
        } => {
            let input = parse_input(input.as_deref())?;
            let api = client.client()?;
            let started = api
                .start_run(
                    &workflow,
                    &StartRunRequest {
                        input,
                        idempotency_key,
                        metadata: meta.into_iter().collect(),
                    },
                )
                .await?;
            if client.json && !wait {
                println!("{}", serde_json::to_string(&started)?);
            } else if !client.json {
                let note = if started.created {
                    ""
                } else {
                    " (existing run for this idempotency key)"
                };
                println!(
                    "run_id   {}{note}\ntrace_id {}",
                    started.run_id, started.trace_id
                );
            }
            if wait {
                let run = output::follow(&api, &started.run_id, client.json).await?;
                if client.json {
                    println!("{}", serde_json::to_string_pretty(&run)?);
                }
                if run.status != "completed" {
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
        Command::Runs {
            workflow,
            status,
            trace_id,
            since,
            until,
            meta,
            limit,
            cursor,
            client,
        } => {
            let meta: Vec<(String, String)> = meta
                .into_iter()
                .map(|(k, v)| (format!("meta.{k}"), v))
                .collect();
            let mut query = vec![("limit", limit.to_string())];
            // The command that prints the next page: this one's filters.
            let mut next_page = String::from("weft runs");
            for (name, value) in [
                ("workflow", workflow),
                ("status", status),
                ("trace_id", trace_id),
                ("since", since),
                ("until", until),
            ] {
                if let Some(value) = value {
                    next_page.push_str(&format!(
                        " --{} {}",
                        name.replace('_', "-"),
                        shell_word(&value)
                    ));
                    query.push((name, value));
                }
            }
            for (name, value) in &meta {
                let key = name.trim_start_matches("meta.");
                next_page.push_str(&format!(
                    " --meta {}",
                    shell_word(&format!("{key}={value}"))
                ));
                query.push((name.as_str(), value.clone()));
            }
            if limit != 20 {
                next_page.push_str(&format!(" --limit {limit}"));
            }
            if let Some(cursor) = cursor {
                query.push(("cursor", cursor));
            }
            let list = client.client()?.list_runs(&query).await?;
            if client.json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                output::runs(&list, &next_page);
            }
        }
        Command::Run {
            id,
            trace_url_template,
            children,
            client,
        } => {
            let mut run = client.client()?.get_run(&id).await?;
            if run.trace_url.is_none() {
                run.trace_url = trace_url_template.map(|t| t.replace("{trace_id}", &run.trace_id));
            }
            if client.json {
                println!("{}", serde_json::to_string_pretty(&run)?);
            } else {
                output::run(&run, children);
                if let Ok(events) = audit::all_events(&client.client()?, &run.run_id).await {
                    output::critical_path(&run, &events);
                    audit::print_actions(&events);
                }
                // Why each unfinished step is where it is.
                if let Ok(why) = client.client()?.run_diagnosis(&run.run_id).await {
                    doctor::why(&why);
                }
            }
        }
        Command::Logs { id, step, client } => {
            let logs = client.client()?.run_logs(&id, step.as_deref()).await?;
            if client.json {
                println!("{}", serde_json::to_string_pretty(&logs)?);
            } else {
                for line in logs.lines {
                    println!("{} {}#{} {}", line.at, line.step, line.attempt, line.line);
                }
            }
        }
        Command::Events {
            command: Some(command),
            ..
        } => events::run(command)?,
        Command::Events { id, client, .. } => {
            let id = id.expect("clap requires an id without a subcommand");
            let events = client.client()?.run_events(&id, None).await?;
            if client.json {
                println!("{}", serde_json::to_string_pretty(&events)?);
            } else {
                for e in events.events {
                    let step = e.step.map(|s| format!(" {s}")).unwrap_or_default();
                    let attempt = e.attempt.map(|a| format!("#{a}")).unwrap_or_default();
                    println!(
                        "{:>5} {} {:<18}{step}{attempt} {}",
                        e.seq, e.at, e.kind, e.data
                    );
                }
            }
        }
        Command::Watch { id, client } => {
            let run = output::follow(&client.client()?, &id, client.json).await?;
            if client.json {
                println!("{}", serde_json::to_string_pretty(&run)?);
            }
            if run.status != "completed" {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Cancel { id, filter, client } => match id {
            Some(id) => print_summary(&client.client()?.cancel_run(&id).await?, client.json)?,
            None => bulk::run(&client.client()?, false, &filter, client.json).await?,
        },
        Command::Retry { id, filter, client } => match id {
            Some(id) => print_summary(&client.client()?.retry_run(&id).await?, client.json)?,
            None => bulk::run(&client.client()?, true, &filter, client.json).await?,
        },
        Command::Approve {
            id,
            step,
            comment,
            client,
        } => {
            let run = client.client()?.decide(&id, &step, true, comment).await?;
            print_summary(&run, client.json)?;
        }
        Command::Reject {
            id,
            step,
            comment,
            client,
        } => {
            let run = client.client()?.decide(&id, &step, false, comment).await?;
            print_summary(&run, client.json)?;
        }
        Command::Compensation { command, client } => {
            let run = compensation::run(command, &client.client()?).await?;
            print_summary(&run, client.json)?;
        }
        Command::Audit { filter, client } => {
            audit::run(&client.client()?, &filter, client.json).await?;
        }
        Command::Workers { queue, all, client } => {
            let mut query = Vec::new();
            if let Some(queue) = queue {
                query.push(("queue", queue));
            }
            if all {
                query.push(("all", "true".to_owned()));
            }
            let list = client.client()?.list_workers(&query).await?;
            if client.json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                doctor::workers(&list);
            }
        }
        Command::Queues { queue, client } => {
            let query: Vec<(&str, String)> = queue.map(|q| ("queue", q)).into_iter().collect();
            let list = client.client()?.list_queues(&query).await?;
            if client.json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                doctor::queues(&list);
            }
        }
        Command::Doctor {
            id: Some(id),
            client,
            ..
        } => {
            let diagnosis = client.client()?.run_diagnosis(&id).await?;
            if client.json {
                println!("{}", serde_json::to_string_pretty(&diagnosis)?);
            } else {
                doctor::run_diagnosis(&diagnosis);
            }
            if diagnosis.stalled {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Doctor {
            id: None,
            cause,
            limit,
            offset,
            client,
        } => {
            let mut query = vec![("limit", limit.to_string()), ("offset", offset.to_string())];
            if let Some(cause) = cause {
                query.push(("cause", cause));
            }
            let diagnostics = client.client()?.diagnostics(&query).await?;
            if client.json {
                println!("{}", serde_json::to_string_pretty(&diagnostics)?);
            } else {
                doctor::diagnostics(&diagnostics);
            }
            if diagnostics.stalled > 0 || !diagnostics.findings.is_empty() {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Status { client } => {
            let health = client.client()?.health().await?;
            if client.json {
                println!("{}", serde_json::to_string_pretty(&health)?);
            } else {
                output::health(&health);
                doctor::status(&client.client()?).await;
            }
            if health["status"] != "ok" {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `text` as one shell word: as is when it is plain, else single-quoted.
fn shell_word(text: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "._:/@=+-,".contains(c);
    if !text.is_empty() && text.chars().all(plain) {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

fn print_summary(run: &weft_api::RunSummary, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(run)?);
    } else {
        println!("{} {} {}", run.run_id, run.workflow, run.status);
    }
    Ok(())
}

/// `KEY=VALUE` of `--meta`.
fn parse_meta(text: &str) -> std::result::Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("`{text}` is not KEY=VALUE"))
}

fn parse_input(input: Option<&str>) -> Result<Value> {
    let Some(input) = input else {
        return Ok(Value::Object(Default::default()));
    };
    let text = match input.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read input file {path}"))?,
        None => input.to_owned(),
    };
    match serde_json::from_str(&text) {
        Ok(value) => Ok(value),
        Err(err) => bail!("--input is not valid JSON: {err}"),
    }
}

/// Parses a duration flag such as `30s`.
pub(crate) fn parse_duration(flag: &str, text: &str) -> Result<Duration> {
    weft_core::duration::parse_ms(text)
        .map(Duration::from_millis)
        .map_err(|err| anyhow::anyhow!("--{flag}: {err}"))
}
