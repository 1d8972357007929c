//! Durability across a server crash: kill -9 the server while runs are in
//! flight, start a new server process on the same database and port, and
//! every run still completes, with the same exec worker reconnecting.

use serde_json::json;

use crate::harness::{Env, PATIENCE, is_terminal, wait_until};

const LINEAR: &str = "\
name: linear
steps:
  - name: s1
    handler: linear.step
    retry: { max_attempts: 10, initial: 100ms, max: 200ms, jitter: false }
  - name: s2
    handler: linear.step
    depends_on: [s1]
    retry: { max_attempts: 10, initial: 100ms, max: 200ms, jitter: false }
  - name: s3
    handler: linear.step
    depends_on: [s2]
    retry: { max_attempts: 10, initial: 100ms, max: 200ms, jitter: false }
";

pub async fn server_restart_mid_runs(db_url: String) {
    let mut env = Env::start(&db_url).await;
    env.register(LINEAR).await;
    let script = env.script(
        "step.sh",
        r#"input=$(cat)
sleep 0.3
printf '{"step": "%s", "attempt": %s, "input": %s}\n' "$WEFT_STEP" "$WEFT_ATTEMPT" "$input""#,
    );
    let handlers = env.handlers_file("handlers.toml", &[("linear.step", &script)]);
    let _worker = env.exec_worker(&handlers, "exec-1");

    let mut run_ids = Vec::new();
    for i in 0..5 {
        run_ids.push(env.start_run("linear", json!({"i": i})).await);
    }
    // Mid-flight: some step has completed, yet some run is still going.
    wait_until("runs to be part-way through", PATIENCE, || {
        let client = env.client.clone();
        let run_ids = run_ids.clone();
        async move {
            let mut any_completed_step = false;
            let mut unfinished = 0;
            for id in &run_ids {
                let run = client.get_run(id).await.ok()?;
                any_completed_step |= run.steps.iter().any(|s| s.status == "completed");
                unfinished += usize::from(!is_terminal(&run.status));
            }
            (any_completed_step && unfinished >= 3).then_some(())
        }
    })
    .await;
    env.server.kill();
    env.server.restart().await;

    for id in &run_ids {
        let run = env.wait_finished(id).await;
        assert_eq!(run.status, "completed", "run: {run:#?}");
        for s in &run.steps {
            assert_eq!(s.status, "completed", "step {} of run {id}", s.name);
            assert_eq!(
                s.output.as_ref().map(|o| o["step"].clone()),
                Some(json!(s.name))
            );
            let last = s.attempts.last().expect("an attempt");
            assert_eq!(last.status, "completed");
            // Any attempt cut off by the crash ended as a lost lease, never silently.
            for earlier in &s.attempts[..s.attempts.len() - 1] {
                assert_eq!(
                    earlier.status, "failed",
                    "step {} of run {id}: {:#?}",
                    s.name, s.attempts
                );
            }
        }
        assert_eq!(
            run.steps[2].output.as_ref().unwrap()["input"]["steps"]["s2"]["step"],
            "s2"
        );
    }
    let runs = env
        .client
        .list_runs(&[("workflow", "linear".to_owned())])
        .await
        .expect("list runs")
        .runs;
    assert_eq!(runs.len(), 5, "no run lost or duplicated");
}
