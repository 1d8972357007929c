//! Conformance of workflow registration (versions) and of starting runs
//! (ids, trace ids, idempotency keys).

use serde_json::json;
use weft_core::{Definition, trace::TraceParent};
use weft_store::{Error, NewRun, Store};

use crate::support::{register, start};

const V1: &str = "name: versioned\ndescription: first\nsteps:\n  - {name: a, handler: h}\n";
const V1_AS_JSON: &str =
    r#"{"steps": [{"handler": "h", "name": "a"}], "description": "first", "name": "versioned"}"#;
const V2: &str = "name: versioned\ndescription: second\nsteps:\n  - {name: a, handler: h}\n  - {name: b, handler: h, depends_on: [a]}\n";

conformance!(check_put_workflow_versioning);
async fn check_put_workflow_versioning(store: Store) {
    let v1 = Definition::parse(V1).unwrap();
    let put = store.put_workflow(&v1).await.unwrap();
    assert_eq!(
        (put.name.as_str(), put.version, put.created),
        ("versioned", 1, true)
    );

    // The same manifest, as YAML again or as JSON with other key order, is a no-op.
    let again = store.put_workflow(&v1).await.unwrap();
    assert_eq!((again.version, again.created), (1, false));
    let as_json = store
        .put_workflow(&Definition::parse(V1_AS_JSON).unwrap())
        .await
        .unwrap();
    assert_eq!((as_json.version, as_json.created), (1, false));

    // A run started now keeps version 1 after version 2 exists.
    let old_run = start(&store, "versioned", json!({})).await;

    let v2 = Definition::parse(V2).unwrap();
    let put = store.put_workflow(&v2).await.unwrap();
    assert_eq!((put.version, put.created), (2, true));
    let again = store.put_workflow(&v2).await.unwrap();
    assert_eq!((again.version, again.created), (2, false));

    let latest = store.get_workflow("versioned", None).await.unwrap();
    assert_eq!(latest.version, 2);
    assert_eq!(latest.versions, vec![1, 2]);
    assert_eq!(latest.description.as_deref(), Some("second"));
    assert_eq!(latest.manifest["steps"].as_array().map(Vec::len), Some(2));
    let first = store.get_workflow("versioned", Some(1)).await.unwrap();
    assert_eq!(
        (first.version, first.description.as_deref()),
        (1, Some("first"))
    );
    assert_eq!(first.versions, vec![1, 2]);
    assert_eq!(first.manifest["steps"].as_array().map(Vec::len), Some(1));
    assert!(matches!(
        store.get_workflow("versioned", Some(7)).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        store.get_workflow("nonesuch", None).await,
        Err(Error::NotFound { .. })
    ));

    let old = store.get_run(&old_run).await.unwrap();
    assert_eq!((old.version, old.steps.len()), (1, 1));
    let new_run = start(&store, "versioned", json!({})).await;
    let new = store.get_run(&new_run).await.unwrap();
    assert_eq!((new.version, new.steps.len()), (2, 2));

    // Going back to the first manifest is a change from the latest: version 3.
    let back = store.put_workflow(&v1).await.unwrap();
    assert_eq!((back.version, back.created), (3, true));

    register(&store, "name: another\nsteps:\n  - {name: x, handler: h}\n").await;
    let listed = store.list_workflows().await.unwrap();
    let summary: Vec<(&str, i64, usize)> = listed
        .iter()
        .map(|w| (w.name.as_str(), w.version, w.steps))
        .collect();
    assert_eq!(summary, vec![("another", 1, 1), ("versioned", 3, 1)]);
    assert_eq!(listed[1].description.as_deref(), Some("first"));
    assert!(listed[0].created_at_ms > 0);
}

const ONE_STEP: &str = "name: starter\nsteps:\n  - {name: only, handler: h}\n";

conformance!(check_start_run);
async fn check_start_run(store: Store) {
    register(&store, ONE_STEP).await;
    register(
        &store,
        "name: starter-two\nsteps:\n  - {name: only, handler: h}\n",
    )
    .await;

    let input = json!({"order": 42, "items": ["a", "b"]});
    let new = NewRun {
        workflow: "starter".into(),
        input: input.clone(),
        request_id: Some("req-1".into()),
        ..NewRun::default()
    };
    let started = store.start_run(new).await.unwrap();
    assert!(started.created);
    let run_id = started.run_id.as_uuid();
    assert_eq!(
        run_id.get_version(),
        Some(uuid::Version::SortRand),
        "run_id is a UUIDv7"
    );
    assert_eq!(
        run_id.hyphenated().to_string(),
        started.run_id.to_string(),
        "run_id is in canonical lowercase form"
    );
    // Its time is the store's clock at the start.
    let ms = run_id.get_timestamp().expect("v7 has a time").to_unix();
    let ms = (ms.0 * 1000 + u64::from(ms.1 / 1_000_000)) as i64;
    assert!((ms - store.now_ms()).abs() < 60_000, "run id time {ms}");
    let trace = started.trace_id.to_string();
    assert!(
        trace.len() == 32
            && trace
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
        "trace_id {trace:?}"
    );
    assert!(trace.bytes().any(|b| b != b'0'));

    let detail = store.get_run(&started.run_id).await.unwrap();
    assert_eq!(detail.run_id, started.run_id);
    assert_eq!(detail.trace_id, started.trace_id);
    assert_eq!((detail.workflow.as_str(), detail.version), ("starter", 1));
    assert_eq!(detail.input, input);
    assert_eq!(detail.status, "pending");
    assert_eq!(detail.request_id.as_deref(), Some("req-1"));
    assert_eq!(
        (
            detail.output.clone(),
            detail.started_at_ms,
            detail.finished_at_ms
        ),
        (None, None, None)
    );
    assert_eq!(detail.steps.len(), 1);
    assert_eq!(detail.steps[0].status, "ready");
    // The trace id finds the run as well as the run id does.
    assert_eq!(
        store.get_run(&started.trace_id).await.unwrap().run_id,
        started.run_id
    );

    // Two runs get distinct ids and traces.
    let other = store
        .start_run(NewRun {
            workflow: "starter".into(),
            ..NewRun::default()
        })
        .await
        .unwrap();
    assert_ne!(other.run_id, started.run_id);
    assert_ne!(other.trace_id, started.trace_id);

    // A caller's trace context: the run joins that trace.
    let parent = TraceParent {
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".parse().unwrap(),
        parent_span_id: "00f067aa0ba902b7".parse().unwrap(),
        sampled: true,
    };
    let joined = store
        .start_run(NewRun {
            workflow: "starter".into(),
            parent: Some(parent),
            ..NewRun::default()
        })
        .await
        .unwrap();
    assert_eq!(
        joined.trace_id.to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(
        store.get_run(&joined.trace_id).await.unwrap().run_id,
        joined.run_id
    );

    // Idempotency keys: the same key returns the same run and creates nothing.
    let keyed = |key: &str, workflow: &str| NewRun {
        workflow: workflow.into(),
        input: json!({"attempt": 1}),
        idempotency_key: Some(key.into()),
        ..NewRun::default()
    };
    let first = store.start_run(keyed("k-1", "starter")).await.unwrap();
    assert!(first.created);
    // Another input under the same key is refused.
    let mut reused = keyed("k-1", "starter");
    reused.input = json!({"attempt": 2});
    assert!(matches!(
        store.start_run(reused).await,
        Err(weft_store::Error::Conflict {
            code: weft_core::ErrorCode::IdempotencyKeyReused,
            ..
        })
    ));
    let second = store.start_run(keyed("k-1", "starter")).await.unwrap();
    assert!(!second.created);
    assert_eq!(
        (second.run_id, second.trace_id),
        (first.run_id, first.trace_id)
    );
    assert_eq!(
        store.get_run(&first.run_id).await.unwrap().input,
        json!({"attempt": 1})
    );
    let other_key = store.start_run(keyed("k-2", "starter")).await.unwrap();
    assert!(other_key.created);
    assert_ne!(other_key.run_id, first.run_id);
    let other_workflow = store.start_run(keyed("k-1", "starter-two")).await.unwrap();
    assert!(
        other_workflow.created,
        "idempotency keys are scoped to their workflow"
    );
    assert_ne!(other_workflow.run_id, first.run_id);
    let listed = store
        .list_runs(&weft_store::RunFilter {
            workflow: Some("starter".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        listed.runs.len(),
        5,
        "runs: initial, other, joined, k-1, k-2"
    );

    match store
        .start_run(NewRun {
            workflow: "nonesuch".into(),
            ..NewRun::default()
        })
        .await
    {
        Err(Error::NotFound { what, id }) => {
            assert_eq!((what, id.as_str()), ("workflow", "nonesuch"))
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
    match store.get_run(weft_core::RunId::new(store.now_ms())).await {
        Err(Error::NotFound { what, .. }) => assert_eq!(what, "run"),
        other => panic!("expected NotFound, got {other:?}"),
    }
}
