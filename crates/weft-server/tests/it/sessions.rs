//! The dashboard's cookies over TLS (`Config::secure_cookies`) and the
//! loopback-only `Host` check, against servers built in process.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use weft_server::wiring::{Running, StoreConfig, Wiring};

async fn serve(
    database_url: &str,
    listen: &str,
    secure_cookies: bool,
) -> (Running, CancellationToken) {
    let wired = Wiring {
        store: StoreConfig::new(database_url),
        engine: weft_engine::Config {
            tick: Duration::from_millis(20),
            ..Default::default()
        },
        server: weft_server::Config {
            secure_cookies,
            ..Default::default()
        },
        listen: listen.to_owned(),
        serve: Default::default(),
    }
    .build()
    .await
    .expect("a server builds");
    let shutdown = CancellationToken::new();
    (wired.spawn(shutdown.clone()), shutdown)
}

/// One raw HTTP/1.1 exchange on 127.0.0.1 (the whole answer, as text).
async fn exchange(port: u16, request: String) -> String {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("an answer in time")
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// The value of the cookie `name` set by an answer, and its attributes.
fn set_cookie<'a>(answer: &'a str, name: &str) -> &'a str {
    answer
        .lines()
        .filter_map(|l| l.strip_prefix("set-cookie: "))
        .find(|c| c.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} cookie in:\n{answer}"))
}

#[tokio::test]
async fn cookies_are_secure_when_served_over_tls() {
    let db = weft_testkit::sqlite_database();
    let (running, shutdown) = serve(&db.url, "127.0.0.1:0", true).await;
    let port = running.addr.port();
    let form = exchange(
        port,
        "GET /signin HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".to_owned(),
    )
    .await;
    let nonce_cookie = set_cookie(&form, "weft_signin");
    assert!(nonce_cookie.contains("; Secure"), "{nonce_cookie}");
    let nonce = nonce_cookie["weft_signin=".len()..nonce_cookie.find(';').unwrap()].to_owned();
    let body = format!("token=weft_tls_0123456789&csrf={nonce}");
    let signed = exchange(
        port,
        format!(
            "POST /signin HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nCookie: weft_signin={nonce}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
    .await;
    assert!(signed.starts_with("HTTP/1.1 303"), "{signed}");
    let session = set_cookie(&signed, "weft_session");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Secure"] {
        assert!(
            session.split("; ").any(|a| a == attribute),
            "{attribute}: {session}"
        );
    }
    shutdown.cancel();
    running.wait().await.unwrap();
}

#[tokio::test]
async fn only_a_loopback_listener_holds_requests_to_loopback_hosts() {
    let db = weft_testkit::sqlite_database();
    let get = |port: u16, host: &str| {
        exchange(
            port,
            format!("GET /v1/workflows HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        )
    };
    let (loopback, stop_loopback) = serve(&db.url, "127.0.0.1:0", false).await;
    let refused = get(loopback.addr.port(), "weft.example.com").await;
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
    assert!(refused.contains("host_not_allowed"), "{refused}");
    let fine = get(loopback.addr.port(), "127.0.0.1").await;
    assert!(fine.starts_with("HTTP/1.1 200"), "{fine}");
    stop_loopback.cancel();
    loopback.wait().await.unwrap();

    // A listener on every address is reached by any name (behind a proxy,
    // through DNS); the Origin check still guards its writes.
    let (wildcard, stop_wildcard) = serve(&db.url, "0.0.0.0:0", false).await;
    let named = get(wildcard.addr.port(), "weft.example.com").await;
    assert!(named.starts_with("HTTP/1.1 200"), "{named}");
    stop_wildcard.cancel();
    wildcard.wait().await.unwrap();
}
