//! Conformance of who-did-what: the actor stamped on the history events of
//! people's actions on runs, and the audit log of registrations and token
//! changes (order, filters, cursor pages).

use serde_json::json;
use weft_core::Definition;
use weft_store::{Actor, AuditAction, AuditFilter, Error, NewRun, Store};

use crate::support::{events, register};

const GATE: &str = "name: gate\nsteps:\n  - {name: ok, kind: approval}\n";

fn by(name: &str, on_behalf_of: Option<&str>) -> Actor {
    Actor {
        name: name.into(),
        on_behalf_of: on_behalf_of.map(Into::into),
    }
}

conformance!(check_actions_record_their_actor);
async fn check_actions_record_their_actor(store: Store) {
    register(&store, GATE).await;
    let started = store
        .start_run(NewRun {
            workflow: "gate".into(),
            input: json!({}),
            actor: Some(by("ci", Some("alice"))),
            ..Default::default()
        })
        .await
        .unwrap();
    let run_id = started.run_id;
    let history = events(&store, &run_id).await;
    let created = history.iter().find(|e| e.kind == "run.created").unwrap();
    assert_eq!(created.data["actor"], "ci");
    assert_eq!(created.data["on_behalf_of"], "alice");

    store
        .cancel_run_as(&run_id, &by("ops", None))
        .await
        .unwrap();
    let history = events(&store, &run_id).await;
    let cancelled = history.iter().find(|e| e.kind == "run.cancelled").unwrap();
    assert_eq!(cancelled.data["actor"], "ops");
    assert!(cancelled.data.get("on_behalf_of").is_none());

    store
        .retry_run_as(&run_id, &by("ops", Some("bob")))
        .await
        .unwrap();
    let history = events(&store, &run_id).await;
    let retried = history.iter().find(|e| e.kind == "run.retried").unwrap();
    assert_eq!(
        (
            retried.data["actor"].as_str(),
            retried.data["on_behalf_of"].as_str()
        ),
        (Some("ops"), Some("bob"))
    );

    let summary = store
        .decide_as(
            &run_id,
            "ok",
            false,
            Some("not today".into()),
            &by("lead", None),
        )
        .await
        .unwrap();
    assert_eq!(summary.status, "failed");
    let history = events(&store, &run_id).await;
    let failed = history.iter().find(|e| e.kind == "run.failed").unwrap();
    assert_eq!(failed.data["actor"], "lead");
    assert_eq!(failed.data["comment"], "not today");
    // Every event a person's action wrote keeps the catalogue (`weft events
    // catalog`): its kind's fields, or the action's own.
    for event in &history {
        let kind = weft_core::EventKind::parse(&event.kind).expect("a catalogued kind");
        for key in event.data.as_object().expect("an object").keys() {
            assert!(
                kind.carries(key),
                "{kind} carries `{key}`, which the catalogue does not list: {:?}",
                event.data
            );
        }
    }

    // The unstamped verbs still write no actor.
    let plain = crate::support::start(&store, "gate", json!({})).await;
    store.cancel_run(&plain).await.unwrap();
    let history = events(&store, &plain).await;
    assert!(
        history.iter().all(|e| e.data.get("actor").is_none()),
        "{history:?}"
    );

    // A refused action writes nothing, its actor included.
    let before = events(&store, &run_id).await.len();
    assert!(
        store
            .cancel_run_as(&run_id, &by("ops", None))
            .await
            .is_err()
    );
    assert_eq!(events(&store, &run_id).await.len(), before);
}

conformance!(check_audit_log);
async fn check_audit_log(store: Store) {
    let v1 = Definition::parse("name: audited\nsteps:\n  - {name: a, handler: h}\n").unwrap();
    let v2 = Definition::parse(
        "name: audited\nsteps:\n  - {name: a, handler: h}\n  - {name: b, handler: h}\n",
    )
    .unwrap();
    store.put_workflow_as(&v1, &by("erin", None)).await.unwrap();
    // Unchanged: no new version, no entry.
    store.put_workflow_as(&v1, &by("erin", None)).await.unwrap();
    store
        .put_workflow_as(&v2, &by("ci", Some("frank")))
        .await
        .unwrap();
    // The store's own registrations (no actor) are not people's actions.
    register(
        &store,
        "name: internal\nsteps:\n  - {name: a, handler: h}\n",
    )
    .await;
    store
        .append_audit(
            &by("admin", None),
            AuditAction::TokenCreated,
            "tok1",
            json!({"role": "viewer"}),
        )
        .await
        .unwrap();

    let all = store.list_audit(&AuditFilter::default()).await.unwrap();
    let seen: Vec<(&str, &str, &str)> = all
        .entries
        .iter()
        .map(|e| (e.actor.as_str(), e.action.as_str(), e.target.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("admin", "token.created", "tok1"),
            ("ci", "workflow.registered", "audited"),
            ("erin", "workflow.registered", "audited"),
        ]
    );
    assert_eq!(all.entries[1].on_behalf_of.as_deref(), Some("frank"));
    assert_eq!(all.entries[1].detail, json!({"version": 2}));
    assert_eq!(all.entries[2].detail, json!({"version": 1}));
    assert!(all.next_cursor.is_none());

    let only = |filter: AuditFilter| {
        let store = store.clone();
        async move {
            store
                .list_audit(&filter)
                .await
                .unwrap()
                .entries
                .into_iter()
                .map(|e| e.actor)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        only(AuditFilter {
            action: Some(AuditAction::WorkflowRegistered),
            ..Default::default()
        })
        .await,
        ["ci", "erin"]
    );
    assert_eq!(
        only(AuditFilter {
            actor: Some("erin".into()),
            ..Default::default()
        })
        .await,
        ["erin"]
    );
    let later = store.now_ms() + 60_000;
    assert!(
        only(AuditFilter {
            since_ms: Some(later),
            ..Default::default()
        })
        .await
        .is_empty()
    );

    // Pages of one, newest first, reach every entry once.
    let mut cursor = None;
    let mut ids = Vec::new();
    loop {
        let page = store
            .list_audit(&AuditFilter {
                limit: Some(1),
                cursor: cursor.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        ids.extend(page.entries.iter().map(|e| e.id));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(ids.len(), 3);
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "{ids:?}");

    let bad = store
        .list_audit(&AuditFilter {
            cursor: Some("x".into()),
            ..Default::default()
        })
        .await;
    assert!(
        matches!(
            bad,
            Err(Error::Invalid {
                code: weft_core::ErrorCode::InvalidCursor,
                ..
            })
        ),
        "{bad:?}"
    );
}
