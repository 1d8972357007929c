//! API tokens from the command line: the server's authentication flags
//! (`--auth`, the pepper, the token cache, `/metrics` access, the bootstrap
//! token) and `weft tokens create|list|revoke`, through the API (admin
//! token) or, with `--database-url`, straight into the database (the
//! bootstrap path: it needs the servers' pepper).
//!
//! Where the pepper comes from, first found: `WEFT_TOKEN_PEPPER` (the value),
//! `--token-pepper-file` / `WEFT_TOKEN_PEPPER_FILE`, and for an SQLite
//! database the file `<database>.pepper` beside it, created (mode 0600) with
//! 32 random bytes when missing. A PostgreSQL deployment must set one of the
//! first two, the same on every server.

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use weft_api::{CreateTokenRequest, CreatedToken, TokenInfo};
use weft_client::Client;
use weft_server::auth::{AuthConfig, AuthMode, Role};
use weft_store::{NewToken, Pepper, Store};

use crate::parse_duration;

/// Where the token pepper comes from. No `Debug`: it holds the pepper.
#[derive(Args, Clone, Default)]
pub struct PepperArgs {
    /// A file holding the token pepper (at least 16 bytes), the key of the
    /// stored token hashes: the same for every server and for `weft tokens
    /// --database-url`. Default for SQLite: `<database>.pepper`, created
    /// when missing; PostgreSQL needs this or WEFT_TOKEN_PEPPER.
    #[arg(long, env = "WEFT_TOKEN_PEPPER_FILE")]
    pub token_pepper_file: Option<PathBuf>,
    /// The token pepper itself (prefer the file: a flag's value shows in
    /// the process list).
    #[arg(long, env = "WEFT_TOKEN_PEPPER", hide_env_values = true)]
    pub token_pepper: Option<String>,
}

/// The server's authentication flags.
#[derive(Args, Clone)]
pub struct AuthArgs {
    /// `required` or `off`. Default: `off` when --listen is a loopback
    /// address, `required` otherwise. A non-loopback server runs open only
    /// with an explicit `--auth off`.
    #[arg(long = "auth", env = "WEFT_AUTH", value_parser = ["required", "off"])]
    pub auth: Option<String>,
    #[command(flatten)]
    pub pepper: PepperArgs,
    /// How long a token checked against the database is trusted before it
    /// is read again (e.g. 5s): a token revoked on another server still
    /// works here for up to this long.
    #[arg(long, env = "WEFT_TOKEN_CACHE", default_value = "5s")]
    pub token_cache: String,
    /// Serve /metrics without a token (for a scraper without one); by
    /// default it needs a viewer token when authentication is required.
    /// `--metrics-listen` is always open.
    #[arg(long, env = "WEFT_METRICS_OPEN")]
    pub metrics_open: bool,
    /// An admin token to store (as `bootstrap`) at startup if it is not yet:
    /// lets a server with an empty token table start with auth required.
    #[arg(long, env = "WEFT_BOOTSTRAP_TOKEN", hide_env_values = true)]
    pub bootstrap_token: Option<String>,
}

/// Whether `listen` (`host:port`) is a loopback address; a host name other
/// than `localhost` counts as not loopback.
pub fn is_loopback(listen: &str) -> bool {
    if let Ok(addr) = listen.parse::<SocketAddr>() {
        return addr.ip().is_loopback();
    }
    let host = listen.rsplit_once(':').map_or(listen, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The SQLite file a database URL names, if it names one.
fn sqlite_file(database_url: &str) -> Option<PathBuf> {
    let rest = database_url
        .strip_prefix("sqlite://")
        .or_else(|| database_url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path.starts_with(':') {
        return None;
    }
    Some(PathBuf::from(path))
}

/// The pepper, from the flags or beside an SQLite database (created when
/// missing); `None` when there is none (PostgreSQL without a pepper set).
pub fn load_pepper(args: &PepperArgs, database_url: &str) -> Result<Option<Pepper>> {
    if let Some(text) = &args.token_pepper {
        return Ok(Some(Pepper::new(text).context("WEFT_TOKEN_PEPPER")?));
    }
    if let Some(path) = &args.token_pepper_file {
        return Ok(Some(read_pepper(path)?));
    }
    let Some(db) = sqlite_file(database_url) else {
        return Ok(None);
    };
    let mut path = db.into_os_string();
    path.push(".pepper");
    let path = PathBuf::from(path);
    if !path.exists() {
        write_new_pepper(&path)?;
    }
    Ok(Some(read_pepper(&path)?))
}

fn read_pepper(path: &Path) -> Result<Pepper> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read the token pepper file {}", path.display()))?;
    Pepper::new(bytes).with_context(|| format!("token pepper file {}", path.display()))
}

fn write_new_pepper(path: &Path) -> Result<()> {
    use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
    let text = Pepper::generate_text()?;
    let mut file = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(file) => file,
        // Another process made it first: theirs is the one.
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(err) => {
            return Err(err).with_context(|| {
                format!("cannot create the token pepper file {}", path.display())
            });
        }
    };
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write the token pepper file {}", path.display()))?;
    tracing::info!(component = "server", path = %path.display(), "created a token pepper beside the database");
    Ok(())
}

/// The server's [`AuthConfig`] from its flags and listen address.
///
/// # Errors
///
/// When the flags do not parse or the pepper cannot be read.
pub fn auth_config(args: &AuthArgs, database_url: &str, listen: &str) -> Result<AuthConfig> {
    let mode = match args.auth.as_deref() {
        Some(text) => AuthMode::parse(text).context("--auth must be `required` or `off`")?,
        None if is_loopback(listen) => AuthMode::Off,
        None => AuthMode::Required,
    };
    if mode == AuthMode::Off && !is_loopback(listen) {
        tracing::warn!(
            component = "server",
            listen,
            "authentication is off on a non-loopback address (--auth off): anyone who reaches it is an admin"
        );
    }
    Ok(AuthConfig {
        mode,
        pepper: load_pepper(&args.pepper, database_url)?,
        cache_ttl: parse_duration("token-cache", &args.token_cache)?,
        metrics_open: args.metrics_open,
        bootstrap_token: args.bootstrap_token.clone(),
    })
}

/// Why a server could not start because of authentication, with what to do.
pub fn explain_startup(err: &weft_server::auth::StartupError, listen: &str) -> String {
    let why = if is_loopback(listen) {
        "authentication is required (--auth required)".to_owned()
    } else {
        format!(
            "{listen} is not a loopback address, so authentication is required unless \
             `--auth off` is given explicitly (anyone who can reach the port would be an admin)"
        )
    };
    format!("{why}; {err}")
}

/// `weft tokens`.
#[derive(Subcommand)]
pub enum TokensCommand {
    /// Create a token and print it; it is shown only this once.
    Create {
        /// The token's name, unique among live tokens; recorded as the
        /// actor of what it does.
        name: String,
        /// admin, operator, viewer or worker.
        #[arg(long)]
        role: String,
        /// For worker tokens, the only queues it may poll (comma-separated).
        #[arg(long, value_delimiter = ',')]
        queues: Option<Vec<String>>,
        /// Lifetime, e.g. 90d or 12h; default: never expires.
        #[arg(long)]
        expires: Option<String>,
        #[command(flatten)]
        direct: DirectArgs,
    },
    /// List tokens: name, role, queues, creator, created, expires, last used, revoked.
    List {
        #[command(flatten)]
        direct: DirectArgs,
    },
    /// Revoke a token by name or id (other servers refuse it within their
    /// --token-cache).
    Revoke {
        /// The token's name or id.
        name_or_id: String,
        #[command(flatten)]
        direct: DirectArgs,
    },
}

/// Working on the database directly instead of through the API.
#[derive(Args, Clone)]
pub struct DirectArgs {
    /// Write to this database directly instead of calling the server (how
    /// the first admin token is made); needs the servers' pepper.
    #[arg(long)]
    pub database_url: Option<String>,
    #[command(flatten)]
    pub pepper: PepperArgs,
}

/// Runs a `weft tokens` command.
pub async fn run(command: TokensCommand, client: Client, json: bool) -> Result<ExitCode> {
    match command {
        TokensCommand::Create {
            name,
            role,
            queues,
            expires,
            direct,
        } => {
            if Role::parse(&role).is_none() {
                bail!("--role must be admin, operator, viewer or worker, not `{role}`");
            }
            if queues.is_some() && role != Role::Worker.as_str() {
                bail!("--queues applies to worker tokens only");
            }
            let lifetime = expires
                .as_deref()
                .map(|text| parse_duration("expires", text))
                .transpose()?;
            let created = match &direct.database_url {
                Some(url) => {
                    let (store, pepper) = open(url, &direct.pepper).await?;
                    let new = NewToken {
                        name,
                        role,
                        queues,
                        expires_at: lifetime.map(|d| store.now_ms() + millis(d)),
                        created_by: format!("cli:{}", os_user()),
                    };
                    let made = store.create_token(&new, &pepper).await;
                    store.close().await;
                    let (record, token) = made?;
                    CreatedToken {
                        token,
                        info: weft_server::convert::token_info(&record),
                    }
                }
                None => {
                    client
                        .create_token(&CreateTokenRequest {
                            name,
                            role,
                            queues,
                            expires_in_seconds: lifetime.map(|d| d.as_secs().max(1)),
                        })
                        .await?
                }
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&created)?);
            } else {
                println!("{}", created.token);
                eprintln!(
                    "created token `{}` ({}); it is shown only now: keep it secret, send it as WEFT_TOKEN",
                    created.info.name,
                    describe(&created.info)
                );
            }
        }
        TokensCommand::List { direct } => {
            let tokens = match &direct.database_url {
                Some(url) => {
                    let (store, _) = open(url, &direct.pepper).await?;
                    let listed = store.list_tokens().await;
                    store.close().await;
                    listed?
                        .iter()
                        .map(weft_server::convert::token_info)
                        .collect()
                }
                None => client.list_tokens().await?.tokens,
            };
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&weft_api::TokenList { tokens })?
                );
            } else {
                let rows: Vec<Vec<String>> = tokens
                    .iter()
                    .map(|t| {
                        let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
                        vec![
                            t.name.clone(),
                            t.token_id.clone(),
                            t.role.clone(),
                            t.queues.as_ref().map_or("*".to_owned(), |q| q.join(",")),
                            t.created_by.clone(),
                            t.created_at.clone(),
                            or_dash(&t.expires_at),
                            or_dash(&t.last_used_at),
                            or_dash(&t.revoked_at),
                        ]
                    })
                    .collect();
                crate::table::table(
                    &[
                        "name",
                        "id",
                        "role",
                        "queues",
                        "created by",
                        "created",
                        "expires",
                        "last used",
                        "revoked",
                    ],
                    &rows,
                );
            }
        }
        TokensCommand::Revoke { name_or_id, direct } => {
            let info = match &direct.database_url {
                Some(url) => {
                    let (store, _) = open(url, &direct.pepper).await?;
                    let revoked = store.revoke_token(&name_or_id).await;
                    store.close().await;
                    weft_server::convert::token_info(&revoked?)
                }
                None => client.revoke_token(&name_or_id).await?,
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&info)?);
            } else {
                println!(
                    "revoked token `{}` ({}); servers refuse it within their --token-cache",
                    info.name, info.token_id
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn describe(info: &TokenInfo) -> String {
    let mut text = format!("role {}", info.role);
    if let Some(queues) = &info.queues {
        text.push_str(&format!(", queues {}", queues.join(",")));
    }
    if let Some(expires) = &info.expires_at {
        text.push_str(&format!(", expires {expires}"));
    }
    text
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// The OS user running the CLI, for `created_by`.
fn os_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// The store at `url` (migrated) and the pepper its servers use.
async fn open(url: &str, pepper: &PepperArgs) -> Result<(Store, Pepper)> {
    let pepper = load_pepper(pepper, url)?.context(
        "no token pepper: set WEFT_TOKEN_PEPPER or --token-pepper-file to the servers' pepper",
    )?;
    let store = Store::connect(url, Default::default())
        .await
        .context("cannot open the database named by --database-url")?;
    Ok((store, pepper))
}

#[cfg(test)]
mod tests {
    use super::{is_loopback, sqlite_file};

    #[test]
    fn loopback_addresses() {
        for addr in [
            "127.0.0.1:8080",
            "[::1]:8080",
            "localhost:8080",
            "127.0.0.2:1",
        ] {
            assert!(is_loopback(addr), "{addr}");
        }
        for addr in [
            "0.0.0.0:8080",
            "[::]:8080",
            "10.0.0.5:8080",
            "weft.internal:8080",
        ] {
            assert!(!is_loopback(addr), "{addr}");
        }
    }

    #[test]
    fn a_pepper_is_made_once_beside_an_sqlite_database() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("weft.db").display());
        let args = super::PepperArgs::default();
        let first = super::load_pepper(&args, &url).unwrap().expect("a pepper");
        let file = dir.path().join("weft.db.pepper");
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "only the owner reads it");
        let second = super::load_pepper(&args, &url).unwrap().expect("a pepper");
        // The same pepper both times: a hash made with one verifies with the other.
        let (_, secret) = first.split("weft_0011223344556677_s3cret");
        assert_eq!(first.split("x").0, second.split("x").0);
        assert_eq!(secret, "s3cret");
        assert!(
            super::load_pepper(&args, "postgres://db/weft")
                .unwrap()
                .is_none()
        );
        let explicit = super::PepperArgs {
            token_pepper: Some("a pepper given explicitly".into()),
            ..Default::default()
        };
        assert!(
            super::load_pepper(&explicit, "postgres://db/weft")
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn sqlite_files() {
        assert_eq!(
            sqlite_file("sqlite://weft.db").unwrap().to_str(),
            Some("weft.db")
        );
        assert_eq!(
            sqlite_file("sqlite:///var/lib/weft.db?mode=rwc")
                .unwrap()
                .to_str(),
            Some("/var/lib/weft.db")
        );
        assert!(sqlite_file("sqlite::memory:").is_none());
        assert!(sqlite_file("postgres://db/weft").is_none());
    }
}
