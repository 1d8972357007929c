//! The in-process wiring (`weft_server::wiring`): a server built from
//! configuration structs serves on the port it was given, stops cleanly, and
//! names what it could not open.

mod sessions;

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use weft_client::Client;
use weft_server::wiring::{StoreConfig, Wiring, WiringError};

const MANIFEST: &str = "name: wired\nsteps:\n  - name: only\n    handler: wired.noop\n";

fn wiring(database_url: &str, listen: &str) -> Wiring {
    Wiring {
        store: StoreConfig::new(database_url),
        engine: weft_engine::Config {
            tick: Duration::from_millis(20),
            ..Default::default()
        },
        server: weft_server::Config::default(),
        listen: listen.to_owned(),
        serve: Default::default(),
    }
}

#[tokio::test]
async fn wiring_serves_on_a_free_port_and_stops() {
    let db = weft_testkit::sqlite_database();
    let wired = wiring(&db.url, "127.0.0.1:0").build().await.unwrap();
    assert_ne!(wired.addr.port(), 0, "port 0 resolves to the bound port");
    let shutdown = CancellationToken::new();
    let running = wired.spawn(shutdown.clone());
    assert_eq!(running.url(), format!("http://{}", running.addr));
    let client = Client::new(&running.url());
    // Healthy once the engine (spawned beside the HTTP server) has swept.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let health = client.health().await.unwrap();
        if health["status"] == "ok" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{health}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let put = client.put_workflow("wired", MANIFEST).await.unwrap();
    assert_eq!(put.version, 1);
    // The store handed back is the one the server writes to.
    let workflows = client.list_workflows().await.unwrap();
    assert_eq!(workflows.workflows.len(), 1);
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), running.wait())
        .await
        .expect("stops once shut down")
        .expect("served without error");
    // Nothing listens any more.
    assert!(client.health().await.is_err());
}

#[tokio::test]
async fn wiring_on_a_wildcard_address_is_reached_on_loopback() {
    let db = weft_testkit::sqlite_database();
    let wired = wiring(&db.url, "0.0.0.0:0").build().await.unwrap();
    let shutdown = CancellationToken::new();
    let running = wired.spawn(shutdown.clone());
    assert!(
        running.url().starts_with("http://127.0.0.1:"),
        "{}",
        running.url()
    );
    Client::new(&running.url()).health().await.unwrap();
    shutdown.cancel();
    running.wait().await.unwrap();
}

#[tokio::test]
async fn wiring_names_a_busy_listen_address() {
    let db = weft_testkit::sqlite_database();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let Err(err) = wiring(&db.url, &addr).build().await else {
        panic!("bound an address already in use");
    };
    assert!(matches!(err, WiringError::Listen { .. }), "{err:?}");
    assert_eq!(err.to_string(), format!("cannot listen on {addr}"));
    assert!(
        std::error::Error::source(&err).is_some(),
        "the OS error is the source"
    );
}

#[tokio::test]
async fn wiring_names_a_database_it_cannot_open() {
    let Err(err) = wiring("mysql://db/weft", "127.0.0.1:0").build().await else {
        panic!("opened an unsupported database");
    };
    assert!(matches!(err, WiringError::Store { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "cannot open the database at mysql://db/weft"
    );
}
