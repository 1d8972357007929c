//! The server's transport and per-caller limit flags (`--tls-cert`,
//! `--tls-key`, `--rate-limit`, ...), and the client's `--ca-cert`: flags and
//! environment turned into `weft_server` and `weft_client` settings.

use std::{num::NonZeroU32, path::Path, path::PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use weft_client::Client;
use weft_server::ratelimit;

/// HTTPS and per-caller limits of `weft server` and `weft dev`.
#[derive(Args, Clone, Debug)]
pub struct TransportArgs {
    /// Serve HTTPS with this PEM certificate chain (the server's certificate
    /// first, then intermediates); needs --tls-key.
    #[arg(long, env = "WEFT_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "WEFT_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Requests per second one caller (one token) may send, sustained; past
    /// it, 429 with Retry-After. 0: no rate. Kept per server process.
    #[arg(long, env = "WEFT_RATE_LIMIT", default_value_t = ratelimit::DEFAULT_REQUESTS_PER_SECOND)]
    pub rate_limit: u32,
    /// Requests one caller may send at once above its rate.
    #[arg(long, env = "WEFT_RATE_LIMIT_BURST", default_value_t = ratelimit::DEFAULT_BURST)]
    pub rate_limit_burst: u32,
    /// Long polls one caller (one worker token) may hold open at once; past
    /// it, 429. 0: no cap.
    #[arg(long, env = "WEFT_MAX_CONCURRENT_POLLS", default_value_t = ratelimit::DEFAULT_MAX_CONCURRENT_POLLS)]
    pub max_concurrent_polls: u32,
    /// Callers without a token: `exempt` from the limits, or limited by
    /// their `peer` IP address.
    #[arg(long, env = "WEFT_RATE_LIMIT_ANONYMOUS", default_value = "exempt", value_parser = anonymous)]
    pub rate_limit_anonymous: ratelimit::Anonymous,
}

fn anonymous(text: &str) -> Result<ratelimit::Anonymous, String> {
    ratelimit::Anonymous::parse(text).ok_or_else(|| format!("`{text}` is not exempt or peer"))
}

impl TransportArgs {
    /// The certificate and key, loaded; `None` without --tls-cert.
    pub fn tls(&self) -> Result<Option<weft_server::tls::Tls>> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let tls = weft_server::tls::Tls::from_pem_files(cert, key)
            .with_context(|| format!("cannot serve HTTPS with {}", cert.display()))?;
        Ok(Some(tls))
    }

    /// The per-caller limits.
    pub fn rate_limits(&self) -> Result<ratelimit::Config> {
        Ok(ratelimit::Config {
            requests_per_second: NonZeroU32::new(self.rate_limit),
            burst: NonZeroU32::new(self.rate_limit_burst)
                .context("--rate-limit-burst must be at least 1")?,
            max_concurrent_polls: NonZeroU32::new(self.max_concurrent_polls),
            anonymous: self.rate_limit_anonymous,
        })
    }
}

/// A client of `url`, trusting the PEM CA certificates in `ca_cert` too
/// when given.
pub fn client(url: &str, ca_cert: Option<&Path>, token: Option<String>) -> Result<Client> {
    let client = match ca_cert {
        None => Client::new(url),
        Some(path) => {
            let pem = std::fs::read(path)
                .with_context(|| format!("cannot read the CA certificate {}", path.display()))?;
            Client::with_ca_cert(url, &pem)
                .with_context(|| format!("cannot use the CA certificate {}", path.display()))?
        }
    };
    Ok(client.with_token(token))
}
