//! `when` conditions under a budget: a manifest over the static limits is
//! refused at `weft apply` and by the server with a code and a path, and a
//! condition too costly for its run's data fails its step with reason
//! `condition_error` at once, without holding up other starts or readiness.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{Env, WEFT, step};

const HEAVY: &str = "name: heavy\nsteps:\n  - {name: a, handler: t.ok, when: 'input.l.all(x, input.l.all(y, x + y >= 0))'}\n";
const LIGHT: &str = "name: light\nsteps:\n  - {name: a, handler: t.ok}\n";
const TOO_NESTED: &str = "name: nested\nsteps:\n  - {name: a, handler: t.ok, when: 'input.l.all(a, input.l.all(b, input.l.all(c, input.l.all(d, true))))'}\n";

pub async fn heavy_condition_fails_its_step_without_stalling(db_url: String) {
    let env = Env::start(&db_url).await;
    env.register(HEAVY).await;
    env.register(LIGHT).await;

    // Over the static limits: refused by the server with a code and a path...
    let err = env
        .client
        .put_workflow("nested", TOO_NESTED)
        .await
        .expect_err("four nested comprehensions are refused");
    assert_eq!(
        (err.status(), err.code()),
        (Some(400), Some("when_too_complex"))
    );
    assert!(err.to_string().contains("steps[a].when"), "{err}");
    // ... and by `weft apply` before it sends anything.
    let file = env.path("nested.yaml");
    std::fs::write(&file, TOO_NESTED).expect("write a manifest");
    let output = tokio::process::Command::new(WEFT)
        .args(["apply", "-f"])
        .arg(&file)
        .args(["--url", &env.server.url])
        .output()
        .await
        .expect("run weft apply");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("when_too_complex") && stderr.contains("steps[a].when"),
        "{stderr}"
    );

    // Four heavy starts at once (5,000 × 5,000 iterations each unbounded,
    // ~18 s), while light starts and readiness checks go on.
    let input = json!({"l": (0..5000).collect::<Vec<_>>()});
    let heavy: Vec<_> = (0..4)
        .map(|_| {
            let client = env.client.clone();
            let input = input.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let run = client
                    .start_run(
                        "heavy",
                        &weft_api::StartRunRequest {
                            input,
                            idempotency_key: None,
                            ..Default::default()
                        },
                    )
                    .await
                    .expect("a heavy start is accepted");
                (run.run_id, started.elapsed())
            })
        })
        .collect();
    let mut slowest_light = Duration::ZERO;
    for _ in 0..5 {
        let started = Instant::now();
        env.start_run("light", json!({})).await;
        slowest_light = slowest_light.max(started.elapsed());
        let ready = env
            .http
            .get(format!("{}/health/ready", env.server.url))
            .send()
            .await
            .expect("GET /health/ready");
        assert_eq!(ready.status(), 200, "ready while conditions are evaluated");
    }
    assert!(
        slowest_light < Duration::from_secs(3),
        "a light start took {slowest_light:?} beside heavy ones"
    );
    for handle in heavy {
        let (run_id, took) = handle.await.expect("the start task");
        assert!(took < Duration::from_secs(5), "a heavy start took {took:?}");
        let run = env.wait_finished(&run_id).await;
        assert_eq!(
            (run.status.as_str(), run.reason.as_deref()),
            ("failed", Some("condition_error")),
            "{run:?}"
        );
        let a = step(&run, "a");
        assert_eq!(a.reason.as_deref(), Some("condition_error"));
        let error = a.error.as_deref().unwrap_or_default();
        // The iteration budget stops it; on a starved machine the time
        // limit may come first. Either way the error says which.
        assert!(
            error.contains("input.l.all(x")
                && (error.contains("100000 iterations") || error.contains("500 ms")),
            "the error names the expression and the limit: {error}"
        );
        assert!(a.attempts.is_empty(), "no handler ran");
    }
}
