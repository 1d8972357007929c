//! HTTPS on the server's own listener: a PEM certificate chain and private
//! key loaded into a rustls acceptor (on ring, the provider the HTTP client
//! uses), and the start of each connection: a TLS handshake bounded in time,
//! or, when a client speaks plain HTTP to the TLS port, one 400
//! `tls_required` answer instead of a silent close.

use std::{path::Path, sync::Arc, time::Duration};

use rustls::pki_types::{
    CertificateDer, PrivateKeyDer,
    pem::{self, PemObject},
};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use weft_core::ErrorCode;

/// The first byte of every TLS record that starts a handshake
/// (`ContentType::Handshake`); a plain HTTP request starts with a method's
/// letter instead.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// A listener's TLS setup: cheap to clone (one shared rustls config).
#[derive(Clone)]
pub struct Tls {
    acceptor: TlsAcceptor,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").finish_non_exhaustive()
    }
}

/// Why a certificate or key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read, or is not PEM.
    #[error("cannot read {what} from {path}")]
    Read {
        /// `certificate chain` or `private key`.
        what: &'static str,
        /// The file as given.
        path: String,
        /// The PEM reader's error (it carries the I/O error, if any).
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// The certificate file holds no `CERTIFICATE` section.
    #[error("{path} holds no PEM certificate")]
    NoCertificate {
        /// The file as given.
        path: String,
    },
    /// rustls refused the pair (the key does not match the certificate, or
    /// is of a kind it does not support).
    #[error("the certificate and key cannot be used for TLS")]
    Invalid(#[source] rustls::Error),
}

impl Tls {
    /// Loads a PEM certificate chain (the server's certificate first, then
    /// any intermediates) and its PEM private key (PKCS#8, PKCS#1 or SEC1).
    ///
    /// # Errors
    ///
    /// [`TlsError::Read`] when a file cannot be read or parsed,
    /// [`TlsError::NoCertificate`] when the chain is empty,
    /// [`TlsError::Invalid`] when the key does not fit the certificate.
    pub fn from_pem_files(cert_chain: &Path, private_key: &Path) -> Result<Tls, TlsError> {
        fn read(what: &'static str, path: &Path) -> impl Fn(pem::Error) -> TlsError {
            let path = path.display().to_string();
            move |source| TlsError::Read {
                what,
                path: path.clone(),
                source,
            }
        }
        let chain = CertificateDer::pem_file_iter(cert_chain)
            .map_err(read("certificate chain", cert_chain))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(read("certificate chain", cert_chain))?;
        if chain.is_empty() {
            return Err(TlsError::NoCertificate {
                path: cert_chain.display().to_string(),
            });
        }
        let key =
            PrivateKeyDer::from_pem_file(private_key).map_err(read("private key", private_key))?;
        Tls::new(chain, key)
    }

    /// Loads a PEM certificate chain and private key held in memory.
    ///
    /// # Errors
    ///
    /// As [`Tls::from_pem_files`] (the path shown is `<memory>`).
    pub fn from_pem(cert_chain: &[u8], private_key: &[u8]) -> Result<Tls, TlsError> {
        fn read(what: &'static str) -> impl Fn(pem::Error) -> TlsError {
            move |source| TlsError::Read {
                what,
                path: "<memory>".to_owned(),
                source,
            }
        }
        let chain = CertificateDer::pem_slice_iter(cert_chain)
            .collect::<Result<Vec<_>, _>>()
            .map_err(read("certificate chain"))?;
        if chain.is_empty() {
            return Err(TlsError::NoCertificate {
                path: "<memory>".to_owned(),
            });
        }
        let key = PrivateKeyDer::from_pem_slice(private_key).map_err(read("private key"))?;
        Tls::new(chain, key)
    }

    fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Tls, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Invalid)?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(TlsError::Invalid)?;
        // The server speaks HTTP/1.1 only (long polls and event streams need
        // no multiplexing); clients offering h2 fall back to it.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// Starts a connection: within `timeout`, either completes the TLS
    /// handshake ([`Accepted::Tls`]), or finds that the client speaks plain
    /// HTTP ([`Accepted::PlainHttp`], to be answered `tls_required`).
    /// `None` when the client went away, sent garbage or was too slow; the
    /// reason is logged at debug level.
    pub(crate) async fn accept(&self, stream: TcpStream, timeout: Duration) -> Option<Accepted> {
        let started = async {
            let mut first = [0u8; 1];
            if stream.peek(&mut first).await? == 0 {
                return Ok(None);
            }
            if first[0] != TLS_HANDSHAKE_RECORD {
                return Ok(Some(Accepted::PlainHttp(stream)));
            }
            let tls = self.acceptor.accept(stream).await?;
            Ok::<_, std::io::Error>(Some(Accepted::Tls(Box::new(tls))))
        };
        match tokio::time::timeout(timeout, started).await {
            Ok(Ok(accepted)) => accepted,
            Ok(Err(err)) => {
                tracing::debug!(component = "server", error = %err, "TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!(
                    component = "server",
                    timeout_ms = timeout.as_millis() as u64,
                    "TLS handshake not finished in time; connection closed"
                );
                None
            }
        }
    }
}

/// A connection on a TLS listener, once its first bytes are in.
pub(crate) enum Accepted {
    /// The handshake is done: serve the API over it.
    Tls(Box<TlsStream<TcpStream>>),
    /// The client sent plain HTTP: answer once and close.
    PlainHttp(TcpStream),
}

/// The one answer a plain-HTTP request on the TLS port gets: 400
/// `tls_required`, connection closed.
pub(crate) fn plain_http_answer() -> axum::response::Response {
    use axum::{http::StatusCode, response::IntoResponse};
    let mut response = crate::ApiError::Other {
        status: StatusCode::BAD_REQUEST,
        code: ErrorCode::TlsRequired,
        message: "this server speaks HTTPS only: use an https:// URL".to_owned(),
    }
    .into_response();
    response.headers_mut().insert(
        axum::http::header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
    response
}
