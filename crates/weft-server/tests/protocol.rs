//! Property tests of the request bodies over the router (the worker
//! protocol, starts, decisions): whatever JSON or bytes arrive, the answer
//! is never a 5xx, and every refusal is a 4xx with the JSON error shape and
//! a stable code.

use std::sync::OnceLock;

use axum::{Router, body::Body, http::Request};
use proptest::prelude::*;
use serde_json::{Value, json};
use tower::ServiceExt;

struct Fixture {
    runtime: tokio::runtime::Runtime,
    app: Router,
    _db: weft_testkit::SqliteDb,
}

/// One server (SQLite in a temp dir) for every case.
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let db = weft_testkit::sqlite_database();
        let app = runtime.block_on(async {
            let store = weft_store::Store::connect(&db.url, weft_store::Settings::default())
                .await
                .expect("open the store");
            let def = weft_core::Definition::parse(
                "name: p\nsteps:\n  - {name: a, handler: p.a}\n  - {name: ok, kind: approval, depends_on: [a]}\n",
            )
            .unwrap();
            store.put_workflow(&def).await.unwrap();
            let engine = weft_engine::Engine::new(store, weft_engine::Config::default());
            weft_server::router(engine, weft_server::Config::default())
        });
        Fixture {
            runtime,
            app,
            _db: db,
        }
    })
}

/// Sends one request and checks the answer's shape; returns the status.
fn send(method: &str, path: &str, body: Vec<u8>) -> u16 {
    let fixture = fixture();
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    let (status, bytes) = fixture.runtime.block_on(async {
        let response = fixture.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, bytes)
    });
    assert!(
        !status.is_server_error(),
        "{method} {path}: {status} {}",
        String::from_utf8_lossy(&bytes)
    );
    if status.is_client_error() {
        let body: Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| panic!("{method} {path}: {status} is not JSON"));
        let code = body["error"]["code"].as_str().unwrap_or_default();
        assert!(
            !code.is_empty() && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
            "{method} {path}: {status} {body}"
        );
    }
    if std::env::var_os("WEFT_PROPTEST_TRACE").is_some() {
        eprintln!("{method} {path} -> {status}");
    }
    status.as_u16()
}

/// Endpoints that take a JSON body.
const ENDPOINTS: &[(&str, &str)] = &[
    ("POST", "/v1/worker/poll"),
    ("POST", "/v1/worker/results"),
    ("POST", "/v1/worker/leases/nope/complete"),
    ("POST", "/v1/worker/leases/nope/fail"),
    ("POST", "/v1/worker/leases/nope/logs"),
    ("POST", "/v1/worker/leases/nope/heartbeat"),
    ("POST", "/v1/workflows/p/runs"),
    ("POST", "/v1/workflows/p/runs/batch"),
    ("POST", "/v1/runs/nope/steps/ok/approve"),
];

/// Arbitrary JSON, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::from),
        Just(json!("\u{0}")),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("worker_id".to_owned()),
                    Just("handlers".to_owned()),
                    Just("queues".to_owned()),
                    Just("max_tasks".to_owned()),
                    Just("wait_ms".to_owned()),
                    Just("results".to_owned()),
                    Just("lease_id".to_owned()),
                    Just("error".to_owned()),
                    Just("message".to_owned()),
                    Just("kind".to_owned()),
                    Just("timing".to_owned()),
                    Just("handler_ms".to_owned()),
                    Just("lines".to_owned()),
                    Just("runs".to_owned()),
                    Just("input".to_owned()),
                    Just("idempotency_key".to_owned()),
                    "[a-z]{1,4}",
                ],
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A body near a valid one for its endpoint, with fields replaced.
fn near_body() -> impl Strategy<Value = Value> {
    let base = prop_oneof![
        Just(json!({"worker_id": "w", "handlers": ["p.a"], "wait_ms": 0})),
        Just(json!({"results": [{"lease_id": "l", "output": {}}]})),
        Just(json!({"error": {"message": "m", "kind": "handler_error"}})),
        Just(json!({"lines": ["a", "b"]})),
        Just(json!({"runs": [{"input": {}}]})),
        Just(json!({"input": {"n": 1}, "idempotency_key": "k"})),
    ];
    (
        base,
        proptest::collection::vec(("[a-z_]{1,16}", any_json()), 0..3),
    )
        .prop_map(|(mut body, changes)| {
            for (key, value) in changes {
                body[key] = value;
            }
            body
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn arbitrary_json_bodies_get_a_coded_4xx_or_an_answer(
        endpoint in proptest::sample::select(ENDPOINTS),
        body in any_json(),
    ) {
        send(endpoint.0, endpoint.1, serde_json::to_vec(&body).unwrap());
    }

    #[test]
    fn near_valid_bodies_get_a_coded_4xx_or_an_answer(
        endpoint in proptest::sample::select(ENDPOINTS),
        body in near_body(),
    ) {
        send(endpoint.0, endpoint.1, serde_json::to_vec(&body).unwrap());
    }

    #[test]
    fn arbitrary_bytes_get_a_coded_4xx_or_an_answer(
        endpoint in proptest::sample::select(ENDPOINTS),
        body in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        send(endpoint.0, endpoint.1, body);
    }

    #[test]
    fn arbitrary_manifests_get_a_coded_4xx_or_an_answer(text in "\\PC{0,120}") {
        let status = send("PUT", "/v1/workflows/w", text.into_bytes());
        prop_assert!(status == 400 || status == 200 || status == 201, "{}", status);
    }
}
