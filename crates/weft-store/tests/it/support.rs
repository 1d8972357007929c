//! Shared helpers of the conformance suite: connecting a store to each
//! backend, registering manifests, claiming and polling with a deadline.

use std::{
    future::Future,
    time::{Duration, Instant},
};

use serde_json::Value;
use weft_core::{Definition, RunId, RunRef};
use weft_store::ClaimedTask as Task;
use weft_store::{ClaimRequest, Error, NewRun, Settings, Store};
use weft_store::{HistoryEvent as EventRecord, RunView as RunDetail, StepView as StepDetail};

/// Runs a check against a store on a fresh SQLite file.
pub async fn on_sqlite<F, Fut>(lease: Duration, check: F)
where
    F: FnOnce(Store) -> Fut,
    Fut: Future<Output = ()>,
{
    on_sqlite_with(
        Settings {
            lease,
            ..Settings::default()
        },
        check,
    )
    .await
}

/// Runs a check against a store with these settings on a fresh SQLite file.
pub async fn on_sqlite_with<F, Fut>(settings: Settings, check: F)
where
    F: FnOnce(Store) -> Fut,
    Fut: Future<Output = ()>,
{
    let db = weft_testkit::sqlite_database();
    let store = Store::connect(&db.url, settings)
        .await
        .expect("connect to SQLite");
    check(store.clone()).await;
    store.close().await;
    drop(db);
}

/// Runs a check against a store on a database of a fresh PostgreSQL cluster,
/// which lives (and is stopped on drop, also on panic) for the whole check.
pub async fn on_postgres<F, Fut>(lease: Duration, check: F)
where
    F: FnOnce(Store) -> Fut,
    Fut: Future<Output = ()>,
{
    on_postgres_with(
        Settings {
            lease,
            ..Settings::default()
        },
        check,
    )
    .await
}

/// Runs a check against a store with these settings on a fresh PostgreSQL
/// cluster's database.
pub async fn on_postgres_with<F, Fut>(settings: Settings, check: F)
where
    F: FnOnce(Store) -> Fut,
    Fut: Future<Output = ()>,
{
    let (cluster, url) = postgres_database().await;
    let store = Store::connect(&url, settings)
        .await
        .expect("connect to PostgreSQL");
    check(store.clone()).await;
    store.close().await;
    drop(cluster);
}

/// A fresh PostgreSQL cluster (stopped when dropped, also on panic) and
/// the URL of a new database on it.
pub async fn postgres_database() -> (weft_testkit::PgCluster, String) {
    let cluster = tokio::task::spawn_blocking(weft_testkit::PgCluster::start)
        .await
        .expect("start PostgreSQL");
    let url = cluster.create_database();
    (cluster, url)
}

/// Parses and registers a manifest; returns the workflow's name.
pub async fn register(store: &Store, manifest: &str) -> String {
    let def = Definition::parse(manifest)
        .unwrap_or_else(|err| panic!("bad test manifest: {err}\n{manifest}"));
    store.put_workflow(&def).await.expect("put_workflow");
    def.name
}

pub async fn start(store: &Store, workflow: &str, input: Value) -> RunId {
    let new = NewRun {
        workflow: workflow.to_owned(),
        input,
        ..NewRun::default()
    };
    let started = store.start_run(new).await.expect("start_run");
    assert!(started.created);
    started.run_id
}

pub fn claim_request(worker_id: &str, handlers: &[&str], max_tasks: u32) -> ClaimRequest {
    ClaimRequest {
        meta: Default::default(),
        worker_id: worker_id.to_owned(),
        queues: vec!["default".to_owned()],
        handlers: handlers.iter().map(|h| (*h).to_owned()).collect(),
        max_tasks,
        token_id: None,
    }
}

/// Claims with worker `w1` on the default queue, up to 10 tasks.
pub async fn claim(store: &Store, handlers: &[&str]) -> Vec<Task> {
    store
        .claim(&claim_request("w1", handlers, 10))
        .await
        .expect("claim")
}

/// Claims exactly one task.
pub async fn claim_one(store: &Store, handlers: &[&str]) -> Task {
    let mut tasks = claim(store, handlers).await;
    assert_eq!(
        tasks.len(),
        1,
        "expected one task, got {:?}",
        steps_of(&tasks)
    );
    tasks.pop().expect("one task")
}

pub fn steps_of(tasks: &[Task]) -> Vec<&str> {
    tasks.iter().map(|t| t.step.as_str()).collect()
}

pub async fn complete(store: &Store, task: &Task, output: Value) {
    store
        .complete(&task.lease_id, output, None, weft_store::now_ms())
        .await
        .unwrap_or_else(|err| panic!("complete {}: {err}", task.step));
}

/// Polls `probe` until it yields a value, failing the test after `timeout`.
pub async fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Fires due timers until the step is claimable again, then claims it.
pub async fn claim_after_timers(store: &Store, handlers: &[&str]) -> Task {
    eventually(
        "a step to become ready after its timer",
        Duration::from_secs(10),
        async || {
            store.fire_due_timers(100).await.expect("fire_due_timers");
            let mut tasks = claim(store, handlers).await;
            assert!(
                tasks.len() <= 1,
                "expected at most one task, got {:?}",
                steps_of(&tasks)
            );
            tasks.pop()
        },
    )
    .await
}

/// Reaps until at least one attempt has been reaped.
pub async fn reap_until_one(store: &Store) {
    eventually(
        "the reaper to end an attempt",
        Duration::from_secs(10),
        async || {
            let n = store.reap(100).await.expect("reap");
            assert!(n <= 1, "reaped {n} attempts, expected one");
            (n == 1).then_some(())
        },
    )
    .await
}

pub fn step<'a>(run: &'a RunDetail, name: &str) -> &'a StepDetail {
    run.steps
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("run has no step `{name}`"))
}

pub fn attempt_statuses(step: &StepDetail) -> Vec<(i64, &str, Option<&str>)> {
    step.attempts
        .iter()
        .map(|a| (a.attempt, a.status.as_str(), a.reason.as_deref()))
        .collect()
}

pub async fn events(store: &Store, run_id: impl Into<RunRef>) -> Vec<EventRecord> {
    let events = store.run_events(run_id, None).await.expect("run_events");
    assert!(
        events.windows(2).all(|w| w[0].seq < w[1].seq),
        "events are not in seq order"
    );
    events
}

/// The index of the first event of `kind` (for `step`, if given).
pub fn event_index(events: &[EventRecord], kind: &str, step: Option<&str>) -> usize {
    events
        .iter()
        .position(|e| e.kind == kind && (step.is_none() || e.step.as_deref() == step))
        .unwrap_or_else(|| panic!("no {kind} event for {step:?} in {:?}", event_kinds(events)))
}

pub fn event_kinds(events: &[EventRecord]) -> Vec<String> {
    events
        .iter()
        .map(|e| match &e.step {
            Some(step) => format!("{}({step})", e.kind),
            None => e.kind.clone(),
        })
        .collect()
}

pub fn assert_conflict(result: Result<impl std::fmt::Debug, Error>, expected_code: &str) {
    match result {
        Err(Error::Conflict { code, .. }) => assert_eq!(code, expected_code),
        other => panic!("expected a `{expected_code}` conflict, got {other:?}"),
    }
}

/// The run detail as JSON, to compare a run before and after a rejected call.
pub async fn snapshot(store: &Store, run_id: impl Into<RunRef>) -> (RunDetail, usize) {
    let run_id = run_id.into();
    let detail = store.get_run(run_id).await.expect("get_run");
    let n_events = store
        .run_events(run_id, None)
        .await
        .expect("run_events")
        .len();
    (detail, n_events)
}

/// Runs a statement the store has no function for (a test's time travel).
pub async fn sql(store: &Store, statement: String) {
    store.execute_unchecked(&statement).await.unwrap();
}

/// Makes the run's backoff due now and fires it.
pub async fn end_backoff(store: &Store, run_id: &RunId) {
    sql(
        store,
        format!(
            "UPDATE weft_steps SET due_at = {} WHERE run_id = '{run_id}' AND due_at IS NOT NULL",
            store.now_ms() - 1
        ),
    )
    .await;
    store.fire_due_timers(100).await.unwrap();
}

/// Lets a task's lease lapse and reaps it.
pub async fn lose_lease(store: &Store, task: &Task) {
    sql(
        store,
        format!(
            "UPDATE weft_leases SET expires_at = {} WHERE lease_id = '{}'",
            store.now_ms() - 1,
            task.lease_id
        ),
    )
    .await;
    assert_eq!(store.reap(100).await.unwrap(), 1);
}
