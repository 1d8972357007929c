//! HTTPS end to end: a server started with `--tls-cert/--tls-key` (a CA and
//! a server certificate for 127.0.0.1 and localhost made here with rcgen),
//! the CLI and an exec worker trusting the CA with `--ca-cert` run a
//! workflow; a client without the CA is refused with a clear error; plain
//! HTTP, garbage and silent clients on the TLS port neither crash the server
//! nor hold a connection past the read timeouts.

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::json;
use weft_client::Client;

use crate::harness::{PATIENCE, Proc, WEFT, wait_until};

const SIMPLE: &str = "\
name: simple
steps:
  - name: only
    handler: simple.h
";

/// A test CA and a server certificate it signed, as PEM files in a folder.
pub struct Certs {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca_pem: Vec<u8>,
}

impl Certs {
    /// Makes a CA and a certificate for `127.0.0.1` and `localhost` signed
    /// by it, and writes `ca.pem`, `server.pem` and `server.key` in `dir`.
    pub fn make(dir: &Path) -> Certs {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
        };
        let ca_key = KeyPair::generate().expect("a CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Weft test CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params.self_signed(&ca_key).expect("a self-signed CA");
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().expect("a server key");
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("server params");
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let cert = params
            .signed_by(&key, &issuer)
            .expect("a signed certificate");
        let certs = Certs {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
            ca_pem: ca_cert.pem().into_bytes(),
        };
        std::fs::write(&certs.ca, &certs.ca_pem).expect("write ca.pem");
        std::fs::write(&certs.cert, cert.pem()).expect("write server.pem");
        std::fs::write(&certs.key, key.serialize_pem()).expect("write server.key");
        certs
    }
}

/// A `weft server` serving HTTPS on a free loopback port.
pub struct TlsServer {
    /// Killed on drop.
    _proc: Proc,
    pub port: u16,
    pub url: String,
}

impl TlsServer {
    /// Starts the server with the certificate and `extra` flags and waits
    /// until `/health/ready` answers over HTTPS.
    pub async fn start(db_url: &str, dir: &Path, certs: &Certs, extra: &[&str]) -> TlsServer {
        for attempt in 1..=5 {
            let port = weft_testkit::free_port();
            let mut command = Command::new(WEFT);
            command
                .args(["server", "--database-url", db_url, "--listen"])
                .arg(format!("127.0.0.1:{port}"))
                .args(["--lease-timeout", "1s", "--engine-tick", "100ms"])
                .arg("--tls-cert")
                .arg(&certs.cert)
                .env("WEFT_TLS_KEY", &certs.key)
                .args(extra);
            let mut proc = Proc::spawn(
                &format!("tls server#{attempt}"),
                command,
                dir.join(format!("tls-server-{attempt}.log")),
            );
            let url = format!("https://127.0.0.1:{port}");
            let client = Client::with_ca_cert(&url, &certs.ca_pem).expect("the CA");
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if proc.exited().is_some() {
                    break;
                }
                if proc.output().contains("server started") && client.health().await.is_ok() {
                    return TlsServer {
                        _proc: proc,
                        port,
                        url,
                    };
                }
                assert!(
                    Instant::now() < deadline,
                    "TLS server not ready:\n{}",
                    proc.output()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            proc.kill();
        }
        panic!("the TLS server did not start on any of 5 ports");
    }
}

/// Runs the CLI; returns (exit success, stdout, stderr).
fn cli(args: &[&str], env: &[(&str, &Path)]) -> (bool, String, String) {
    let output = Command::new(WEFT)
        .args(args)
        .env_remove("WEFT_CA_CERT")
        .envs(env.iter().map(|(k, v)| (*k, v.as_os_str())))
        .output()
        .expect("run weft");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A server over TLS: the CLI registers and starts a workflow with
/// `--ca-cert`, an exec worker given the CA in `WEFT_CA_CERT` runs it, and
/// `weft start --wait` sees it complete; the typed client with the CA reads
/// it too.
pub async fn workflow_over_tls(db_url: String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let certs = Certs::make(dir.path());
    let server = TlsServer::start(&db_url, dir.path(), &certs, &[]).await;
    let url = server.url.as_str();
    let ca = certs.ca.to_str().unwrap();

    let manifest = dir.path().join("simple.yaml");
    std::fs::write(&manifest, SIMPLE).unwrap();
    let (ok, _, stderr) = cli(
        &[
            "apply",
            "-f",
            manifest.to_str().unwrap(),
            "--url",
            url,
            "--ca-cert",
            ca,
        ],
        &[],
    );
    assert!(ok, "apply over TLS: {stderr}");

    let script = dir.path().join("simple.sh");
    std::fs::write(&script, "#!/bin/sh\necho '{\"done\": true}'\n").unwrap();
    let handlers = dir.path().join("handlers.toml");
    std::fs::write(
        &handlers,
        format!(
            "[handlers]\n\"simple.h\" = {{ command = [\"sh\", {:?}] }}\n",
            script.display().to_string()
        ),
    )
    .unwrap();
    let mut worker_command = Command::new(WEFT);
    worker_command
        .arg("worker")
        .arg("--handlers")
        .arg(&handlers)
        .args(["--url", url, "--worker-id", "tls-worker"])
        .env("WEFT_CA_CERT", &certs.ca);
    let _worker = Proc::spawn("tls worker", worker_command, dir.path().join("worker.log"));

    let (ok, stdout, stderr) = cli(
        &[
            "start",
            "simple",
            "--input",
            "{}",
            "--wait",
            "--url",
            url,
            "--ca-cert",
            ca,
            "--json",
        ],
        &[],
    );
    assert!(ok, "the run completes over TLS: {stdout}\n{stderr}");

    let client = Client::with_ca_cert(url, &certs.ca_pem).expect("the CA");
    let runs = client.list_runs(&[]).await.expect("runs over TLS");
    assert_eq!(runs.runs.len(), 1);
    assert_eq!(runs.runs[0].status, "completed");

    // `weft status` reads the CA from the environment as well.
    let (ok, stdout, stderr) = cli(
        &["status", "--url", url],
        &[("WEFT_CA_CERT", certs.ca.as_path())],
    );
    assert!(ok, "status over TLS: {stdout}\n{stderr}");
    assert!(stdout.contains("ok"), "{stdout}");
    drop(server);
}

/// Without the CA the CLI and the client refuse the server's certificate
/// with an error that says so; plain HTTP to the TLS port is answered 400
/// `tls_required`; garbage, a silent client and a half-sent handshake are
/// closed within the header read timeout; and the header and body read
/// timeouts still hold inside a TLS connection. The server serves on.
pub async fn tls_edges(db_url: String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let certs = Certs::make(dir.path());
    let server = TlsServer::start(
        &db_url,
        dir.path(),
        &certs,
        &["--header-read-timeout", "1s", "--body-read-timeout", "1s"],
    )
    .await;
    let url = server.url.as_str();
    let port = server.port;

    // No CA: a clear error naming the certificate and the flag.
    let (ok, _, stderr) = cli(&["runs", "--url", url], &[]);
    assert!(!ok);
    assert!(
        stderr.contains("TLS certificate") && stderr.contains("--ca-cert"),
        "{stderr}"
    );
    let err = Client::new(url)
        .list_runs(&[])
        .await
        .expect_err("an untrusted certificate");
    assert!(err.is_untrusted_certificate(), "{err:?}");
    // A CA file that holds no certificate is refused up front.
    let (ok, _, stderr) = cli(
        &[
            "runs",
            "--url",
            url,
            "--ca-cert",
            certs.key.to_str().unwrap(),
        ],
        &[],
    );
    assert!(!ok);
    assert!(stderr.contains("CA certificate"), "{stderr}");

    // Plain HTTP gets one JSON answer saying to use https.
    let plain = Client::new(&format!("http://127.0.0.1:{port}"));
    let err = plain.list_runs(&[]).await.expect_err("plain HTTP");
    assert_eq!(err.status(), Some(400), "{err:?}");
    assert_eq!(err.code(), Some("tls_required"), "{err:?}");
    let (ok, _, stderr) = cli(
        &["status", "--url", &format!("http://127.0.0.1:{port}")],
        &[],
    );
    assert!(!ok);
    assert!(stderr.contains("tls_required"), "{stderr}");

    let edges = tokio::task::spawn_blocking(move || {
        // Not TLS and not HTTP: closed without an answer.
        let garbage = raw(port, b"\x00\x01\x02 nonsense\r\n\r\n");
        // Connected, silent: closed after the handshake timeout.
        let silent = raw(port, b"");
        // The first byte of a handshake, then nothing.
        let half = raw(port, b"\x16\x03\x01");
        (garbage, silent, half)
    });
    let (garbage, silent, half) = edges.await.unwrap();
    for (what, (answer, waited)) in [("garbage", garbage), ("silent", silent), ("half", half)] {
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
            "{what}: {answer}"
        );
        assert!(
            waited < Duration::from_secs(10),
            "{what}: closed after {waited:?}"
        );
    }

    // Inside TLS: unfinished headers are closed, a short body gets 408.
    let ca_pem = certs.ca_pem.clone();
    let inside = tokio::task::spawn_blocking(move || {
        let headers = over_tls(
            port,
            &ca_pem,
            b"GET /health HTTP/1.1\r\nHost: localhost\r\n",
        );
        let body = over_tls(
            port,
            &ca_pem,
            b"POST /v1/workflows/simple/runs HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{}",
        );
        (headers, body)
    });
    let ((headers, header_wait), (body, body_wait)) = inside.await.unwrap();
    assert_eq!(headers, "", "unfinished headers: closed without an answer");
    assert!(header_wait < Duration::from_secs(10), "{header_wait:?}");
    assert!(body.starts_with("HTTP/1.1 408"), "{body}");
    assert!(body.contains("\"request_timeout\""), "{body}");
    assert!(body_wait < Duration::from_secs(10), "{body_wait:?}");

    // And the server is still there.
    let client = Client::with_ca_cert(url, &certs.ca_pem).expect("the CA");
    let health = wait_until("the server answers over TLS", PATIENCE, || async {
        client.health().await.ok()
    })
    .await;
    assert_eq!(health["status"], json!("ok"));
    assert!(server.port == port);
}

/// Sends `bytes` on a plain TCP connection to `port` and reads until the
/// server closes it (at most 20 s); returns what came back and how long.
fn raw(port: u16, bytes: &[u8]) -> (String, Duration) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let started = Instant::now();
    stream.write_all(bytes).expect("send");
    (read_to_close(&mut stream), started.elapsed())
}

/// Opens a TLS connection trusting `ca_pem`, sends `bytes` and reads until
/// the server closes it (at most 20 s); returns what came back and how long
/// after the handshake.
fn over_tls(port: u16, ca_pem: &[u8], bytes: &[u8]) -> (String, Duration) {
    use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert.expect("a CA certificate")).expect("a root");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = ServerName::try_from("localhost").unwrap();
    let connection = rustls::ClientConnection::new(Arc::new(config), name).expect("a client");
    let tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut stream = rustls::StreamOwned::new(connection, tcp);
    while stream.conn.is_handshaking() {
        stream
            .conn
            .complete_io(&mut stream.sock)
            .expect("the TLS handshake");
    }
    let started = Instant::now();
    stream.write_all(bytes).expect("send");
    stream.flush().expect("flush");
    (read_to_close(&mut stream), started.elapsed())
}

fn read_to_close(stream: &mut impl Read) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!(
                    "no close within 20 s (got {:?})",
                    String::from_utf8_lossy(&got)
                )
            }
            // Reset, or a TLS close without close_notify.
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}
