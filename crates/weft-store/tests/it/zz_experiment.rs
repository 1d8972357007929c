//! Temporary experiment: cancel racing the first claim.
use serde_json::json;
use weft_store::Store;
use crate::support::{claim_request, register, start};

conformance!(check_cancel_races_claim);
async fn check_cancel_races_claim(store: Store) {
    register(&store, "name: race\nsteps:\n  - {name: a, handler: h}\n  - {name: b, handler: h}\n  - {name: c, handler: h}\n").await;
    let mut errors = Vec::new();
    for round in 0..40 {
        let mut ids = Vec::new();
        for _ in 0..5 { ids.push(start(&store, "race", json!({})).await); }
        let s1 = store.clone();
        let claimer = tokio::spawn(async move {
            let mut errs = Vec::new();
            for _ in 0..5 {
                if let Err(e) = s1.claim(&claim_request("w", &["h"], 2)).await { errs.push(format!("claim: {e}")); }
            }
            errs
        });
        let s2 = store.clone();
        let canceller = tokio::spawn(async move {
            let mut errs = Vec::new();
            for id in ids.iter().rev() {
                if let Err(e) = s2.cancel_run(id).await { if !matches!(e, weft_store::Error::Conflict{..}) { errs.push(format!("cancel: {e}")); } }
            }
            errs
        });
        errors.extend(claimer.await.unwrap());
        errors.extend(canceller.await.unwrap());
        let _ = round;
    }
    assert!(errors.is_empty(), "{errors:?}");
}
