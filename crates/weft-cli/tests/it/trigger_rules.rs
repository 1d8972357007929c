//! Trigger rules and the `when` context end to end, through the exec worker:
//! each `run_if` rule after a failure and without one, a cleanup `all_done`
//! step (the run still fails), a notify `any_failed` step that
//! `handles_failure` (the run completes), the `upstream` key of a task's
//! input, a skipped dependency read as `null` by `when`, a `when` that cannot
//! be evaluated (`condition_error`, with `condition_ms` on its event), and
//! `weft apply` refusing a `when` that names a step outside its ancestors.

use serde_json::{Value, json};
use weft_api::RunDetail;

use crate::harness::{Env, WEFT, step};

/// `a` fails when the input says so; `b` needs it (`all_succeeded`), `nf`
/// too (`none_failed`); `cleanup` runs once `b` and `side` are done
/// (`all_done`); `notify` runs when something upstream failed (`any_failed`).
const RULES: &str = "\
name: rules
steps:
  - {name: a, handler: t.maybe_fail, retry: {max_attempts: 1}}
  - {name: side, handler: t.ok}
  - {name: b, handler: t.ok, depends_on: [a]}
  - {name: nf, handler: t.ok, depends_on: [a], run_if: none_failed}
  - {name: cleanup, handler: t.ok, depends_on: [b, side], run_if: all_done}
  - {name: notify, handler: t.ok, depends_on: [b], run_if: any_failed}
";

/// A notify step that consumes the failure it reports.
const HANDLED: &str = "\
name: handled
steps:
  - {name: charge, handler: t.maybe_fail, retry: {max_attempts: 1}}
  - {name: ship, handler: t.ok, depends_on: [charge]}
  - {name: notify, handler: t.ok, depends_on: [ship], run_if: any_failed, handles_failure: true}
";

/// The README's branch pattern: `when` on `d` reads the skipped `b` as null.
const SKIPBRANCH: &str = "\
name: skipbranch
steps:
  - {name: a, handler: t.ok}
  - {name: b, handler: t.ok, depends_on: [a], when: 'input.run_b == true'}
  - {name: d, handler: t.ok, depends_on: [b], when: 'steps.b != null'}
  - {name: e, handler: t.ok, depends_on: [b], when: \"upstream.b.status == 'skipped'\"}
";

/// A `when` reading a field the dependency's output does not have.
const BADFIELD: &str = "\
name: badfield
steps:
  - {name: a, handler: t.ok}
  - {name: b, handler: t.ok, depends_on: [a], when: 'steps.a.rows > 0'}
  - {name: side, handler: t.ok}
";

/// `b` names `a`, which it does not depend on.
const NOT_ANCESTOR: &str = "\
name: notancestor
steps:
  - {name: a, handler: t.ok}
  - {name: b, handler: t.ok, when: 'steps.a != null'}
";

fn statuses(run: &RunDetail) -> Vec<(String, String, Option<String>)> {
    run.steps
        .iter()
        .map(|s| (s.name.clone(), s.status.clone(), s.reason.clone()))
        .collect()
}

fn expect_steps(run: &RunDetail, expected: &[(&str, &str, Option<&str>)]) {
    let expected: Vec<(String, String, Option<String>)> = expected
        .iter()
        .map(|(n, s, r)| ((*n).to_owned(), (*s).to_owned(), r.map(str::to_owned)))
        .collect();
    assert_eq!(statuses(run), expected, "{run:#?}");
}

/// The task input a `t.ok` step received (its output echoes it).
fn input_of<'a>(run: &'a RunDetail, name: &str) -> &'a Value {
    &step(run, name)
        .output
        .as_ref()
        .unwrap_or_else(|| panic!("{name} has an output"))["input"]
}

pub async fn trigger_rules_and_the_when_context(db_url: String) {
    let env = Env::start(&db_url).await;
    for manifest in [RULES, HANDLED, SKIPBRANCH, BADFIELD] {
        env.register(manifest).await;
    }
    let runs_file = env.path("ran.txt");
    let ok = env.script(
        "ok.sh",
        &format!(
            r#"input=$(cat)
echo "$WEFT_STEP" >> {ran}
printf '{{"step": "%s", "input": %s}}\n' "$WEFT_STEP" "$input""#,
            ran = runs_file.display()
        ),
    );
    let maybe_fail = env.script(
        "maybe_fail.sh",
        &format!(
            r#"input=$(cat)
echo "$WEFT_STEP" >> {ran}
case "$input" in *'"fail":true'*|*'"fail": true'*) echo "card declined" >&2; exit 3 ;; esac
printf '{{"step": "%s"}}\n' "$WEFT_STEP""#,
            ran = runs_file.display()
        ),
    );
    let handlers = env.handlers_file(
        "handlers.toml",
        &[("t.ok", &ok), ("t.maybe_fail", &maybe_fail)],
    );
    let _worker = env.exec_worker(&handlers, "exec-1");

    // A failure: its all_succeeded and none_failed dependants are cancelled,
    // the other branch goes on, the cleanup and the notify run; nothing
    // consumed the failure, so the run fails with it.
    let run_id = env.start_run("rules", json!({"fail": true})).await;
    let run = env.wait_finished(&run_id).await;
    assert_eq!(
        (run.status.as_str(), run.reason.as_deref()),
        ("failed", Some("handler_error")),
        "{run:#?}"
    );
    expect_steps(
        &run,
        &[
            ("a", "failed", Some("handler_error")),
            ("side", "completed", None),
            ("b", "cancelled", Some("upstream_failed")),
            ("nf", "cancelled", Some("upstream_failed")),
            ("cleanup", "completed", None),
            ("notify", "completed", None),
        ],
    );
    for name in ["b", "nf"] {
        assert!(step(&run, name).attempts.is_empty(), "{name} never ran");
    }
    let cleanup = input_of(&run, "cleanup");
    assert_eq!(
        cleanup["steps"],
        json!({"b": null, "side": {"step": "side", "input": input_of(&run, "side")}})
    );
    assert_eq!(
        cleanup["upstream"],
        json!({
            "b": {"status": "cancelled", "reason": "upstream_failed", "error": null},
            "side": {"status": "completed", "reason": null, "error": null},
        })
    );
    assert_eq!(
        input_of(&run, "notify")["upstream"]["b"]["reason"],
        "upstream_failed"
    );

    // Without a failure: any_failed is skipped, every other step runs.
    let run_id = env.start_run("rules", json!({"fail": false})).await;
    let run = env.wait_finished(&run_id).await;
    assert_eq!(run.status, "completed", "{run:#?}");
    expect_steps(
        &run,
        &[
            ("a", "completed", None),
            ("side", "completed", None),
            ("b", "completed", None),
            ("nf", "completed", None),
            ("cleanup", "completed", None),
            ("notify", "skipped", None),
        ],
    );

    // A notify step that handles the failure: the run completes, and the
    // notify saw the failure's status, reason and error.
    let run_id = env.start_run("handled", json!({"fail": true})).await;
    let run = env.wait_finished(&run_id).await;
    assert_eq!(
        (run.status.as_str(), run.reason.as_deref()),
        ("completed", None),
        "{run:#?}"
    );
    expect_steps(
        &run,
        &[
            ("charge", "failed", Some("handler_error")),
            ("ship", "cancelled", Some("upstream_failed")),
            ("notify", "completed", None),
        ],
    );
    assert_eq!(
        input_of(&run, "notify")["upstream"]["ship"],
        json!({"status": "cancelled", "reason": "upstream_failed", "error": null})
    );
    let charge = step(&run, "charge");
    assert!(
        charge
            .error
            .as_deref()
            .is_some_and(|e| e.contains("card declined")),
        "{charge:?}"
    );

    // A skipped dependency is null to `when`: d is skipped, e reads its outcome.
    let run_id = env.start_run("skipbranch", json!({"run_b": false})).await;
    let run = env.wait_finished(&run_id).await;
    assert_eq!(run.status, "completed", "{run:#?}");
    expect_steps(
        &run,
        &[
            ("a", "completed", None),
            ("b", "skipped", None),
            ("d", "skipped", None),
            ("e", "completed", None),
        ],
    );
    let run_id = env.start_run("skipbranch", json!({"run_b": true})).await;
    let run = env.wait_finished(&run_id).await;
    assert_eq!(run.status, "completed", "{run:#?}");
    expect_steps(
        &run,
        &[
            ("a", "completed", None),
            ("b", "completed", None),
            ("d", "completed", None),
            ("e", "skipped", None),
        ],
    );

    // A `when` that cannot be evaluated fails its step with condition_error,
    // naming the expression, and records how long it took.
    let run_id = env.start_run("badfield", json!({})).await;
    let run = env.wait_finished(&run_id).await;
    assert_eq!(
        (run.status.as_str(), run.reason.as_deref()),
        ("failed", Some("condition_error")),
        "{run:#?}"
    );
    let b = step(&run, "b");
    assert_eq!(
        (b.status.as_str(), b.reason.as_deref()),
        ("failed", Some("condition_error"))
    );
    assert!(
        b.error
            .as_deref()
            .is_some_and(|e| e.contains("steps.a.rows > 0")),
        "names the expression: {b:?}"
    );
    assert!(b.attempts.is_empty(), "no handler ran for b");
    assert_eq!(step(&run, "side").status, "completed");
    let events = env
        .client
        .run_events(&run_id, None)
        .await
        .expect("the run's events");
    let failed = events
        .events
        .iter()
        .find(|e| e.kind == "step.failed" && e.step.as_deref() == Some("b"))
        .expect("a step.failed event for b");
    assert_eq!(failed.data["reason"], "condition_error");
    assert!(
        failed.data["condition_ms"].is_u64(),
        "condition_ms on the decision's event: {:?}",
        failed.data
    );

    // `weft apply` refuses a `when` naming a step outside its ancestors...
    let file = env.path("notancestor.yaml");
    std::fs::write(&file, NOT_ANCESTOR).expect("write a manifest");
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
        stderr.contains("unknown_step_reference") && stderr.contains("steps[b].when"),
        "{stderr}"
    );
    // ... and so does the server, with the code and the path.
    let err = env
        .client
        .put_workflow("notancestor", NOT_ANCESTOR)
        .await
        .expect_err("a reference outside the ancestors is refused");
    assert_eq!(
        (err.status(), err.code()),
        (Some(400), Some("unknown_step_reference"))
    );
    assert!(err.to_string().contains("steps[b].when"), "{err}");
    let dynamic = NOT_ANCESTOR
        .replace("notancestor", "dynamic")
        .replace("steps.a != null", "steps[input.k] != null");
    let err = env
        .client
        .put_workflow("dynamic", &dynamic)
        .await
        .expect_err("a dynamic key on steps is refused");
    assert_eq!(err.code(), Some("dynamic_step_reference"));

    // The handlers' side-effect file: the cancelled steps never ran (`b` ran
    // in the run without a failure and in skipbranch's second run).
    let ran = std::fs::read_to_string(&runs_file).expect("handlers wrote");
    let count = |name: &str| ran.lines().filter(|l| *l == name).count();
    assert_eq!(
        (count("b"), count("nf"), count("ship"), count("notify")),
        (2, 1, 0, 2),
        "{ran}"
    );
}
