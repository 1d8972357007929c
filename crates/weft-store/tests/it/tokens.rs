//! Conformance of API tokens: creation (the secret never stored), lookup and
//! verification under the pepper, names unique among live tokens,
//! revocation by name or id, expiry, last use, and the token bound to each
//! claimed lease.

use serde_json::json;
use weft_store::{Error, NewToken, Pepper, Store};

use crate::support::{claim_request, register, start};

fn new_token(name: &str, role: &str) -> NewToken {
    NewToken {
        name: name.to_owned(),
        role: role.to_owned(),
        queues: None,
        expires_at: None,
        created_by: "test".to_owned(),
    }
}

conformance!(check_tokens);
async fn check_tokens(store: Store) {
    let pepper = Pepper::new("a pepper of at least sixteen bytes").unwrap();
    let mut worker = new_token("ci-worker", "worker");
    worker.queues = Some(vec!["a".to_owned()]);
    let (record, token) = store.create_token(&worker, &pepper).await.unwrap();
    assert!(token.starts_with("weft_"), "{token}");
    assert_eq!(token.len(), "weft_".len() + 16 + 1 + 64);
    let (id, secret) = pepper.split(&token);
    assert_eq!(id, record.token_id);
    let stored = store
        .token(&id)
        .await
        .unwrap()
        .expect("the token is stored");
    assert_eq!(stored.record, record);
    assert_eq!(stored.record.queues, Some(vec!["a".to_owned()]));
    assert!(stored.verify(&pepper, secret));
    assert!(!stored.verify(&pepper, "0".repeat(64).as_str()));
    let other_pepper = Pepper::new("another pepper, also long enough").unwrap();
    assert!(
        !stored.verify(&other_pepper, secret),
        "a different pepper verifies nothing"
    );
    assert!(
        !stored.hash.contains(secret) && !stored.salt.contains(secret),
        "the secret is not stored"
    );

    // Names are unique among live tokens.
    let taken = store.create_token(&worker, &pepper).await.unwrap_err();
    assert!(
        matches!(
            taken,
            Error::Conflict {
                code: weft_core::ErrorCode::TokenNameTaken,
                ..
            }
        ),
        "{taken:?}"
    );

    // A chosen (bootstrap) token is accepted once, and again as the same row.
    let admin = new_token("bootstrap", "admin");
    let first = store
        .accept_token(&admin, "chosen-admin-token-0123456789", &pepper)
        .await
        .unwrap();
    let again = store
        .accept_token(&admin, "chosen-admin-token-0123456789", &pepper)
        .await
        .unwrap();
    assert_eq!(first, again);
    let (boot_id, boot_secret) = pepper.split("chosen-admin-token-0123456789");
    assert_eq!(boot_id, first.token_id);
    assert!(
        store
            .token(&boot_id)
            .await
            .unwrap()
            .unwrap()
            .verify(&pepper, boot_secret)
    );

    let now = store.now_ms();
    assert_eq!(store.live_token_count(now).await.unwrap(), 2);
    let mut expiring = new_token("short-lived", "viewer");
    expiring.expires_at = Some(now + 1_000);
    let (short, _) = store.create_token(&expiring, &pepper).await.unwrap();
    assert_eq!(short.refused_at(now), None);
    assert_eq!(short.refused_at(now + 1_000), Some("expired"));
    assert_eq!(store.live_token_count(now + 2_000).await.unwrap(), 2);

    // Revoked by name, then the name is free again; revoking by id works too.
    let revoked = store.revoke_token("ci-worker").await.unwrap();
    assert_eq!(revoked.token_id, record.token_id);
    assert!(revoked.revoked_at.is_some());
    assert_eq!(revoked.refused_at(now), Some("revoked"));
    let again = store.revoke_token(&record.token_id).await.unwrap();
    assert_eq!(
        again.revoked_at, revoked.revoked_at,
        "revoking twice changes nothing"
    );
    let (renewed, _) = store.create_token(&worker, &pepper).await.unwrap();
    assert_ne!(renewed.token_id, record.token_id);
    assert!(matches!(
        store.revoke_token("nobody").await.unwrap_err(),
        Error::NotFound { what: "token", .. }
    ));

    store.touch_token(&renewed.token_id, now + 5).await.unwrap();
    let listed = store.list_tokens().await.unwrap();
    assert_eq!(listed.len(), 4);
    let shown = listed
        .iter()
        .find(|t| t.token_id == renewed.token_id)
        .unwrap();
    assert_eq!(shown.last_used_at, Some(now + 5));
    assert_eq!(shown.created_by, "test");
}

conformance!(check_leases_carry_the_claiming_token);
async fn check_leases_carry_the_claiming_token(store: Store) {
    register(&store, "name: bound\nsteps:\n  - {name: a, handler: h}\n").await;
    start(&store, "bound", json!({})).await;
    start(&store, "bound", json!({})).await;
    let mut request = claim_request("w1", &["h"], 1);
    request.token_id = Some("0011223344556677".to_owned());
    let bound = store.claim(&request).await.unwrap();
    let open = store.claim(&claim_request("w2", &["h"], 1)).await.unwrap();
    let (bound, open) = (&bound[0].lease_id, &open[0].lease_id);
    let mut tokens = store
        .lease_tokens(&[bound.as_str(), open.as_str(), "no-such-lease"])
        .await
        .unwrap();
    tokens.sort();
    let mut expected = vec![
        (bound.clone(), Some("0011223344556677".to_owned())),
        (open.clone(), None),
    ];
    expected.sort();
    assert_eq!(tokens, expected);
}
