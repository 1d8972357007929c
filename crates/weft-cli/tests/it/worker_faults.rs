//! The exec worker under faults (issue 10): a server restart while a result
//! is on its way, a worker killed with -9 or stopped with SIGTERM mid-step,
//! an output larger than the server takes, non-UTF-8 stderr, a handlers file
//! in the current directory and commands that cannot start. Worker-side
//! behaviour, so SQLite only.

use std::{
    fs,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::json;

use crate::harness::{Env, PATIENCE, Proc, WEFT, process_alive, step, wait_until};

/// Lines of a side-effect file (one per execution).
fn lines(path: &std::path::Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

const ONCE: &str = "\
name: once
steps:
  - name: a
    handler: s.slow
    heartbeat_timeout: 10s
    retry: { max_attempts: 3, initial: 100ms, max: 100ms, jitter: false }
";

/// Case 1: a 3 s step; the server is killed 1 s in and back ~2.5 s later.
/// The finished result is kept, its lease heartbeated, and delivered once
/// the server is back: one execution, one attempt, run completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_survives_a_server_restart() {
    let db = weft_testkit::sqlite_database();
    let mut env = Env::start(&db.url).await;
    env.register(ONCE).await;
    let executions = env.path("executions");
    let script = env.script(
        "slow.sh",
        &format!(
            "cat > /dev/null\necho \"$WEFT_STEP $WEFT_ATTEMPT\" >> {}\nsleep 3\necho '{{\"done\": true}}'",
            executions.display()
        ),
    );
    let handlers = env.handlers_file("handlers.toml", &[("s.slow", &script)]);
    let _worker = env.exec_worker(&handlers, "w1");
    let run_id = env.start_run("once", json!({})).await;
    wait_until("the handler to start", PATIENCE, || {
        let executions = executions.clone();
        async move { (!lines(&executions).is_empty()).then_some(()) }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    env.server.kill();
    // The handler finishes (t = 3 s) while the server is down.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    env.server.restart().await;
    let run = env.wait_finished(&run_id).await;
    assert_eq!(run.status, "completed", "run: {run:#?}");
    assert_eq!(
        lines(&executions),
        vec!["a 1"],
        "the handler ran exactly once"
    );
    let a = step(&run, "a");
    assert_eq!(a.attempts.len(), 1, "attempts: {:#?}", a.attempts);
    assert_eq!(a.output, Some(json!({"done": true})));
}

const SLOW: &str = "\
name: slow
steps:
  - name: s
    handler: s.slow
    heartbeat_timeout: 2s
    retry: { max_attempts: 3, initial: 100ms, max: 100ms, jitter: false }
";

/// Case 2: kill -9 an exec worker whose handler is a shell script with a
/// child of its own: the supervisor takes both down within ~2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_and_its_child_die_with_a_killed_worker() {
    let db = weft_testkit::sqlite_database();
    let env = Env::start(&db.url).await;
    env.register(SLOW).await;
    let pids = env.path("pids");
    let script = env.script(
        "slow.sh",
        &format!(
            "cat > /dev/null\nsleep 60 &\necho \"$$ $!\" > {}.tmp\nmv {0}.tmp {0}\nwait",
            pids.display()
        ),
    );
    let handlers = env.handlers_file("handlers.toml", &[("s.slow", &script)]);
    let mut worker = env.exec_worker(&handlers, "w1");
    env.start_run("slow", json!({})).await;
    let (shell, child): (i32, i32) = wait_until("the handler and its child", PATIENCE, || {
        let pids = pids.clone();
        async move {
            let text = fs::read_to_string(&pids).ok()?;
            let mut it = text.split_whitespace().map(|p| p.parse::<i32>());
            Some((it.next()?.ok()?, it.next()?.ok()?))
        }
    })
    .await;
    assert!(process_alive(shell) && process_alive(child));
    worker.kill();
    let killed = Instant::now();
    wait_until(
        "the handler and its child to die",
        Duration::from_secs(3),
        || async move { (!process_alive(shell) && !process_alive(child)).then_some(()) },
    )
    .await;
    eprintln!(
        "handler group gone {:?} after the worker's kill -9",
        killed.elapsed()
    );
}

const BIG: &str = "\
name: big
steps:
  - name: produce
    handler: s.big
    retry: { max_attempts: 3, initial: 100ms, max: 100ms, jitter: false }
";

/// Case 3: an output larger than the server's body limit fails the step at
/// once (first attempt, not retried) with reason `invalid_output` and an
/// error naming the size, instead of expiring leases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_output_fails_at_once_as_invalid_output() {
    let db = weft_testkit::sqlite_database();
    let env = Env::start_with(&db.url, &["--max-body-bytes", "65536"]).await;
    env.register(BIG).await;
    let calls = env.path("calls");
    let script = env.script(
        "big.sh",
        &format!(
            "cat > /dev/null\necho call >> {}\nprintf '{{\"blob\": \"'\nhead -c 200000 /dev/zero | tr '\\0' x\nprintf '\"}}\\n'",
            calls.display()
        ),
    );
    let handlers = env.handlers_file("handlers.toml", &[("s.big", &script)]);
    let _worker = env.exec_worker(&handlers, "w1");
    let started = Instant::now();
    let run_id = env.start_run("big", json!({})).await;
    let run = env.wait_finished(&run_id).await;
    assert_eq!(run.status, "failed", "run: {run:#?}");
    let produce = step(&run, "produce");
    assert_eq!(
        produce.reason.as_deref(),
        Some("invalid_output"),
        "{produce:#?}"
    );
    assert_eq!(
        produce.attempts.len(),
        1,
        "not retried: {:#?}",
        produce.attempts
    );
    let error = produce.error.clone().unwrap_or_default();
    assert!(error.contains("bytes"), "the error names the size: {error}");
    assert_eq!(lines(&calls).len(), 1);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "failed quickly, took {:?}",
        started.elapsed()
    );
}

const SHORT: &str = "\
name: short
steps:
  - name: s
    handler: s.short
    retry: { max_attempts: 1 }
";

/// Case 4 (the part that needs no server change): SIGTERM stops polling but
/// lets a running step finish within `--shutdown-grace` and deliver its
/// result; the worker then exits 0. The run completes, nothing cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_running_step_finish_and_deliver() {
    let db = weft_testkit::sqlite_database();
    let env = Env::start(&db.url).await;
    env.register(SHORT).await;
    let started = env.path("started");
    let script = env.script(
        "short.sh",
        &format!(
            "cat > /dev/null\ntouch {}\nsleep 2\necho '{{\"finished\": true}}'",
            started.display()
        ),
    );
    let handlers = env.handlers_file("handlers.toml", &[("s.short", &script)]);
    let mut worker = env.exec_worker(&handlers, "w1");
    let run_id = env.start_run("short", json!({})).await;
    wait_until("the handler to start", PATIENCE, || {
        let started = started.clone();
        async move { started.exists().then_some(()) }
    })
    .await;
    worker.signal(libc::SIGTERM);
    let status = worker
        .wait_exit(Duration::from_secs(20))
        .await
        .expect("the worker exits once the step is delivered");
    assert!(status.success(), "worker exit: {status:?}");
    let run = env.wait_finished(&run_id).await;
    assert_eq!(run.status, "completed", "run: {run:#?}");
    let s = step(&run, "s");
    assert_eq!(s.attempts.len(), 1);
    assert_eq!(s.output, Some(json!({"finished": true})));
    let log = worker.output();
    assert!(log.contains("shutting down"), "log: {log}");
    assert!(log.contains("worker stopped"), "log: {log}");
}

const LONG: &str = "\
name: long
steps:
  - name: s
    handler: s.long
    heartbeat_timeout: 5s
    retry: { max_attempts: 1 }
";

/// Case 4: SIGTERM mid-step with a short grace: the handler is stopped and
/// its lease released (not failed, no attempt spent); a new worker then
/// completes the step, and the run never fails as cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_releases_an_unfinished_step() {
    let db = weft_testkit::sqlite_database();
    let env = Env::start(&db.url).await;
    env.register(LONG).await;
    let marker = env.path("first-done");
    // The first execution hangs; any later one is quick.
    let script = env.script(
        "long.sh",
        &format!(
            "cat > /dev/null\nif [ -e {0} ]; then echo '{{\"ok\": true}}'; exit 0; fi\ntouch {0}\nsleep 60",
            marker.display()
        ),
    );
    let handlers = env.handlers_file("handlers.toml", &[("s.long", &script)]);
    let mut w1 = env.exec_worker_with(&handlers, "w1", &["--shutdown-grace", "500ms"]);
    let run_id = env.start_run("long", json!({})).await;
    wait_until("the handler to start", PATIENCE, || {
        let marker = marker.clone();
        async move { marker.exists().then_some(()) }
    })
    .await;
    w1.signal(libc::SIGTERM);
    let status = w1
        .wait_exit(Duration::from_secs(15))
        .await
        .expect("the worker exits after grace and stop timeout");
    assert!(status.success(), "worker exit: {status:?}");
    let _w2 = env.exec_worker(&handlers, "w2");
    let run = env.wait_finished(&run_id).await;
    assert_eq!(run.status, "completed", "run: {run:#?}");
    let s = step(&run, "s");
    assert_eq!(s.attempts[0].status, "released", "{:#?}", s.attempts);
    assert_eq!(s.attempts[0].reason.as_deref(), Some("worker_shutdown"));
    assert!(
        run.steps
            .iter()
            .all(|s| s.reason.as_deref() != Some("cancelled"))
    );
}

const NOISY: &str = "\
name: noisy
steps:
  - name: n
    handler: s.noisy
    retry: { max_attempts: 1 }
";

/// Case 6: a handler writing invalid UTF-8 to stderr, then more lines,
/// completes (exit 0); the bad line is kept with U+FFFD, later lines too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_utf8_stderr_is_decoded_lossily_and_read_to_the_end() {
    let db = weft_testkit::sqlite_database();
    let env = Env::start(&db.url).await;
    env.register(NOISY).await;
    let script = env.script(
        "noisy.sh",
        "cat > /dev/null\necho before >&2\nprintf 'caf\\351 au lait\\n' >&2\nsleep 0.5\n\
         i=0; while [ $i -lt 200 ]; do echo \"after $i\" >&2; i=$((i+1)); done\necho '{\"ok\": true}'",
    );
    let handlers = env.handlers_file("handlers.toml", &[("s.noisy", &script)]);
    let _worker = env.exec_worker(&handlers, "w1");
    let run_id = env.start_run("noisy", json!({})).await;
    let run = env.wait_finished(&run_id).await;
    assert_eq!(run.status, "completed", "run: {run:#?}");
    let logs = wait_until("all log lines", PATIENCE, || {
        let client = env.client.clone();
        let run_id = run_id.clone();
        async move {
            let logs = client.run_logs(&run_id, Some("n")).await.ok()?;
            (logs.lines.len() >= 202).then_some(logs)
        }
    })
    .await;
    let text: Vec<&str> = logs.lines.iter().map(|l| l.line.as_str()).collect();
    assert_eq!(text[0], "before");
    assert_eq!(text[1], "caf\u{FFFD} au lait");
    assert_eq!(text[201], "after 199");
}

const HELLO: &str = "\
name: hello
steps:
  - name: h
    handler: s.hello
    retry: { max_attempts: 3, initial: 100ms, max: 100ms, jitter: false }
";

/// Case 10: `weft worker --handlers handlers.toml` (no directory part) from
/// the handlers' own directory: commands resolve against it and run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_file_in_the_current_directory() {
    let db = weft_testkit::sqlite_database();
    let env = Env::start(&db.url).await;
    env.register(HELLO).await;
    fs::create_dir(env.path("handlers")).unwrap();
    fs::write(
        env.path("handlers/hello.sh"),
        "cat > /dev/null\necho '{\"hello\": \"world\"}'\n",
    )
    .unwrap();
    fs::write(
        env.path("handlers.toml"),
        "[handlers]\n\"s.hello\" = \"sh handlers/hello.sh\"\n",
    )
    .unwrap();
    let mut command = Command::new(WEFT);
    command.current_dir(env.dir.path()).args([
        "worker",
        "--handlers",
        "handlers.toml",
        "--url",
        &env.server.url,
    ]);
    let _worker = Proc::spawn("worker cwd", command, env.path("worker-cwd.log"));
    let run_id = env.start_run("hello", json!({})).await;
    let run = env.wait_finished(&run_id).await;
    assert_eq!(run.status, "completed", "run: {run:#?}");
    let h = step(&run, "h");
    assert_eq!(h.attempts.len(), 1);
    assert_eq!(h.output, Some(json!({"hello": "world"})));
}

/// Case 10: a command that cannot be started (missing program, missing
/// working directory, a `sh -c` line whose program is missing) fails its
/// step at once, not retried, reason `no_handler`, naming what is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_failures_fail_at_once_naming_what_is_missing() {
    let db = weft_testkit::sqlite_database();
    let env = Env::start(&db.url).await;
    let cases = [
        ("missing_program", "no-such-program-weft"),
        ("missing_dir", "no-such-dir"),
        ("missing_in_line", "no-such-program-weft"),
    ];
    for (name, _) in cases {
        env.register(&format!(
            "name: {name}\nsteps:\n  - name: s\n    handler: s.{name}\n    \
             retry: {{ max_attempts: 5, initial: 100ms, max: 100ms, jitter: false }}\n"
        ))
        .await;
    }
    let handlers = env.path("handlers.toml");
    fs::write(
        &handlers,
        "[handlers]\n\
         \"s.missing_program\" = { command = [\"no-such-program-weft\"] }\n\
         \"s.missing_dir\" = { command = [\"true\"], cwd = \"no-such-dir\" }\n\
         \"s.missing_in_line\" = \"no-such-program-weft --flag\"\n",
    )
    .unwrap();
    let _worker = env.exec_worker(&handlers, "w1");
    for (name, names) in cases {
        let run_id = env.start_run(name, json!({})).await;
        let run = env.wait_finished(&run_id).await;
        assert_eq!(run.status, "failed", "run: {run:#?}");
        let s = step(&run, "s");
        assert_eq!(s.reason.as_deref(), Some("no_handler"), "{s:#?}");
        assert_eq!(s.attempts.len(), 1, "not retried: {s:#?}");
        let error = s.error.clone().unwrap_or_default();
        assert!(error.contains(names), "step {name}: {error}");
    }
}

const PARKED: &str = "\
name: parked
steps:
  - name: p
    handler: s.nobody
";

/// Case 4, the server: on SIGTERM a long poll parked for 20 s is answered at
/// once (no tasks) and an open event stream does not hold the process: it
/// exits promptly and cleanly, saying so with `component="server"`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sigterm_answers_parked_polls_and_exits_promptly() {
    let db = weft_testkit::sqlite_database();
    let mut env = Env::start(&db.url).await;
    env.register(PARKED).await;
    let run_id = env.start_run("parked", json!({})).await;
    let mut stream = env
        .http
        .get(format!("{}/v1/runs/{run_id}/events/stream", env.server.url))
        .send()
        .await
        .expect("open the event stream");
    assert_eq!(stream.status().as_u16(), 200);
    let _first = stream.chunk().await.expect("a first event");
    let poll = {
        let http = env.http.clone();
        let url = format!("{}/v1/worker/poll", env.server.url);
        tokio::spawn(async move {
            let response = http
                .post(url)
                .json(&json!({
                    "worker_id": "parked-poller", "queues": ["default"],
                    "handlers": ["s.other"], "max_tasks": 1, "wait_ms": 20000
                }))
                .send()
                .await;
            (Instant::now(), response.map(|r| r.status().as_u16()))
        })
    };
    // Let the poll park on the server.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let signalled = Instant::now();
    env.server.proc.signal(libc::SIGTERM);
    let (answered, status) = poll.await.expect("the poll task");
    assert_eq!(status.ok(), Some(200), "the parked poll is answered");
    assert!(
        answered - signalled < Duration::from_secs(2),
        "the parked poll answered {:?} after SIGTERM",
        answered - signalled
    );
    let exit = env
        .server
        .proc
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("the server exits within 5 s of SIGTERM despite an open event stream");
    assert!(exit.success(), "server exit: {exit:?}");
    eprintln!("server exited {:?} after SIGTERM", signalled.elapsed());
    let log = env.server.proc.output();
    assert!(
        log.lines()
            .any(|l| l.contains("shutting down") && l.contains("component=\"server\"")),
        "log: {log}"
    );
    drop(stream);
}

/// A sibling of case 2: an upgrade replaces the `weft` binary under a
/// running worker; its handlers' supervisors still start (the worker
/// re-executes the running binary, not the path it was started from).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisors_start_after_the_binary_is_replaced() {
    let db = weft_testkit::sqlite_database();
    let env = Env::start(&db.url).await;
    env.register(HELLO).await;
    let binary = env.path("weft");
    fs::copy(WEFT, &binary).expect("copy the weft binary");
    let script = env.script("hello.sh", "cat > /dev/null\necho '{\"hello\": 1}'");
    let handlers = env.handlers_file("handlers.toml", &[("s.hello", &script)]);
    let mut command = Command::new(&binary);
    command.args([
        "worker",
        "--handlers",
        &handlers.display().to_string(),
        "--url",
        &env.server.url,
    ]);
    let worker = Proc::spawn("worker copy", command, env.path("worker-copy.log"));
    wait_until("the worker to start", PATIENCE, || {
        let started = worker.output().contains("worker started");
        async move { started.then_some(()) }
    })
    .await;
    fs::remove_file(&binary).expect("remove the running binary");
    let run_id = env.start_run("hello", json!({})).await;
    let run = env.wait_finished(&run_id).await;
    assert_eq!(run.status, "completed", "run: {run:#?}");
    assert_eq!(step(&run, "h").attempts.len(), 1);
}

/// Case 3, batches: results that finish together go in one request; when
/// one of them makes the batch too large (413) the batch is split, the
/// small results are delivered and only the oversized one fails, as
/// `invalid_output` on its first attempt. Nothing is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_answered_413_is_split_and_nothing_is_dropped() {
    let db = weft_testkit::sqlite_database();
    let env = Env::start_with(&db.url, &["--max-body-bytes", "65536"]).await;
    let gate = env.path("gate");
    let mut runs = Vec::new();
    for (name, bytes) in [("small", 10), ("big", 100_000)] {
        env.register(&format!(
            "name: {name}\nsteps:\n  - name: s\n    handler: s.{name}\n    \
             retry: {{ max_attempts: 3, initial: 100ms, max: 100ms, jitter: false }}\n"
        ))
        .await;
        let script = env.script(
            &format!("{name}.sh"),
            &format!(
                "cat > /dev/null\nwhile [ ! -e {} ]; do sleep 0.05; done\n\
                 printf '{{\"blob\": \"'\nhead -c {bytes} /dev/zero | tr '\\0' x\nprintf '\"}}\\n'",
                gate.display()
            ),
        );
        runs.push((name, script));
    }
    let handlers = env.handlers_file(
        "handlers.toml",
        &[("s.small", &runs[0].1), ("s.big", &runs[1].1)],
    );
    let worker = env.exec_worker(&handlers, "w1");
    let mut ids = Vec::new();
    for name in ["small", "small", "big", "small", "small"] {
        ids.push((name, env.start_run(name, json!({})).await));
    }
    // Every handler is running, then all finish at once.
    wait_until("five running attempts", PATIENCE, || {
        let client = env.client.clone();
        let ids = ids.clone();
        async move {
            for (_, id) in &ids {
                let run = client.get_run(id).await.ok()?;
                if run.steps[0].status != "running" {
                    return None;
                }
            }
            Some(())
        }
    })
    .await;
    fs::write(&gate, "").unwrap();
    for (name, id) in &ids {
        let run = env.wait_finished(id).await;
        let s = step(&run, "s");
        assert_eq!(s.attempts.len(), 1, "{name}: {:#?}", s.attempts);
        if *name == "small" {
            assert_eq!(run.status, "completed", "run: {run:#?}");
        } else {
            assert_eq!(run.status, "failed", "run: {run:#?}");
            assert_eq!(s.reason.as_deref(), Some("invalid_output"), "{s:#?}");
        }
    }
    // Whether the big result travelled in a batch depends on timing.
    let split = worker.output().contains("sending it in halves");
    eprintln!("batch split: {split}");
}

/// Case 4: a second SIGTERM ends the shutdown grace at once; the handler
/// group gets SIGTERM and the worker exits without waiting the 30 s grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_ends_the_grace() {
    let db = weft_testkit::sqlite_database();
    let env = Env::start(&db.url).await;
    env.register(LONG).await;
    let marker = env.path("first-done");
    let script = env.script(
        "long.sh",
        &format!("cat > /dev/null\ntouch {}\nsleep 60", marker.display()),
    );
    let handlers = env.handlers_file("handlers.toml", &[("s.long", &script)]);
    let mut worker = env.exec_worker(&handlers, "w1");
    env.start_run("long", json!({})).await;
    wait_until("the handler to start", PATIENCE, || {
        let marker = marker.clone();
        async move { marker.exists().then_some(()) }
    })
    .await;
    let signalled = Instant::now();
    worker.signal(libc::SIGTERM);
    wait_until("the first signal to be seen", PATIENCE, || {
        let seen = worker.output().contains("waiting for running handlers");
        async move { seen.then_some(()) }
    })
    .await;
    worker.signal(libc::SIGTERM);
    let status = worker
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("the worker exits soon after a second SIGTERM");
    assert!(status.success(), "worker exit: {status:?}");
    assert!(signalled.elapsed() < Duration::from_secs(10));
    let log = worker.output();
    assert!(log.contains("ending the shutdown grace now"), "log: {log}");
}

/// Case 4: after the grace, the handler's group gets SIGTERM first; a
/// handler that traps it may finish its cleanup (the supervisor stays and
/// the handler is not killed with it) before the lease is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_trapping_sigterm_cleans_up_at_shutdown() {
    let db = weft_testkit::sqlite_database();
    let env = Env::start(&db.url).await;
    env.register(LONG).await;
    let started = env.path("started");
    let cleaned = env.path("cleaned");
    let script = env.script(
        "long.sh",
        &format!(
            "cat > /dev/null\ntrap 'sleep 0.5; touch {}; exit 1' TERM\ntouch {}\n\
             sleep 60 &\nwait",
            cleaned.display(),
            started.display()
        ),
    );
    let handlers = env.handlers_file("handlers.toml", &[("s.long", &script)]);
    let mut worker = env.exec_worker_with(&handlers, "w1", &["--shutdown-grace", "200ms"]);
    env.start_run("long", json!({})).await;
    wait_until("the handler to start", PATIENCE, || {
        let started = started.clone();
        async move { started.exists().then_some(()) }
    })
    .await;
    worker.signal(libc::SIGTERM);
    worker
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("the worker exits after the grace");
    assert!(
        cleaned.exists(),
        "the handler's SIGTERM trap ran to its end"
    );
}

const PANICKY: &str = "\
name: panicky
steps:
  - name: p
    handler: s.panicky
    heartbeat_timeout: 2s
    retry: { max_attempts: 2, initial: 100ms, max: 100ms, jitter: false }
";

/// A sibling of case 1: an SDK handler that panics fails its attempt (and
/// is retried) instead of leaving a lease that its heartbeats keep alive
/// for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_sdk_handler_fails_its_attempt() {
    let db = weft_testkit::sqlite_database();
    let env = Env::start(&db.url).await;
    env.register(PANICKY).await;
    let worker = env
        .sdk_worker("sdk-1")
        .handler("s.panicky", |ctx: weft_worker::TaskContext| async move {
            if ctx.task.attempt == 1 {
                panic!("boom on the first attempt");
            }
            Ok(json!({"attempt": ctx.task.attempt}))
        })
        .build();
    let worker = crate::harness::SdkWorker::spawn(worker);
    let run_id = env.start_run("panicky", json!({})).await;
    let run = env.wait_finished(&run_id).await;
    assert_eq!(run.status, "completed", "run: {run:#?}");
    let p = step(&run, "p");
    assert_eq!(p.attempts.len(), 2, "{:#?}", p.attempts);
    let error = p.attempts[0].error.clone().unwrap_or_default();
    assert!(error.contains("boom on the first attempt"), "{error}");
    worker.stop().await;
}

/// A sibling of case 3: log lines that together exceed the server's body
/// limit are sent in smaller batches, not dropped; a single line too large
/// for it is cut and kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_batches_too_large_are_split_not_dropped() {
    let db = weft_testkit::sqlite_database();
    let env = Env::start_with(&db.url, &["--max-body-bytes", "8192"]).await;
    env.register(NOISY).await;
    let script = env.script(
        "noisy.sh",
        "cat > /dev/null\nline=$(head -c 3000 /dev/zero | tr '\\0' a)\n\
         i=0; while [ $i -lt 20 ]; do echo \"$i $line\" >&2; i=$((i+1)); done\n\
         head -c 12000 /dev/zero | tr '\\0' b >&2; echo >&2\necho '{}'",
    );
    let handlers = env.handlers_file("handlers.toml", &[("s.noisy", &script)]);
    let _worker = env.exec_worker(&handlers, "w1");
    let run_id = env.start_run("noisy", json!({})).await;
    let run = env.wait_finished(&run_id).await;
    assert_eq!(run.status, "completed", "run: {run:#?}");
    let logs = wait_until("all log lines", PATIENCE, || {
        let client = env.client.clone();
        let run_id = run_id.clone();
        async move {
            let logs = client.run_logs(&run_id, Some("n")).await.ok()?;
            (logs.lines.len() >= 21).then_some(logs)
        }
    })
    .await;
    assert_eq!(logs.lines.len(), 21);
    for (i, line) in logs.lines[..20].iter().enumerate() {
        assert!(line.line.starts_with(&format!("{i} aaa")), "line {i}");
        assert_eq!(line.line.len(), 3000 + format!("{i} ").len());
    }
    let last = &logs.lines[20].line;
    assert!(
        last.starts_with("bbb") && last.contains("cut from 12000 bytes"),
        "{last:.80}"
    );
}

/// A TCP proxy that can turn into a black hole: while it is on, new
/// connections are accepted and held, and a connection that carries any
/// byte is held open for ever with nothing forwarded (a network partition,
/// not a refused connection).
async fn blackhole_proxy(upstream: std::net::SocketAddr) -> (String, Arc<AtomicBool>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let on = Arc::new(AtomicBool::new(false));
    let switch = on.clone();
    tokio::spawn(async move {
        loop {
            let Ok((inbound, _)) = listener.accept().await else {
                return;
            };
            let on = on.clone();
            tokio::spawn(async move {
                if on.load(Ordering::SeqCst) {
                    let _held = inbound;
                    return std::future::pending::<()>().await;
                }
                let Ok(outbound) = tokio::net::TcpStream::connect(upstream).await else {
                    return;
                };
                let (ri, wi) = inbound.into_split();
                let (ro, wo) = outbound.into_split();
                let pump = |on: Arc<AtomicBool>| {
                    move |mut r: tokio::net::tcp::OwnedReadHalf,
                          mut w: tokio::net::tcp::OwnedWriteHalf| async move {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = match r.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            if on.load(Ordering::SeqCst) {
                                let _held = (r, w);
                                return std::future::pending::<()>().await;
                            }
                            if w.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                };
                tokio::join!(pump(on.clone())(ri, wo), pump(on)(ro, wi));
            });
        }
    });
    (url, switch)
}

/// A sibling of case 1: the server becomes unreachable without refusing
/// connections (a partition) while a result is on its way; the request
/// that hangs is given up after a timeout and the result delivered again
/// once the network is back: one execution, run completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_stuck_in_a_partition_is_sent_again() {
    let db = weft_testkit::sqlite_database();
    let env = Env::start(&db.url).await;
    env.register(
        "name: parted\nsteps:\n  - name: a\n    handler: s.slow\n    heartbeat_timeout: 40s\n",
    )
    .await;
    let upstream: std::net::SocketAddr = format!("127.0.0.1:{}", env.server.port).parse().unwrap();
    let (proxy_url, blackhole) = blackhole_proxy(upstream).await;
    let executions = env.path("executions");
    let script = env.script(
        "slow.sh",
        &format!(
            "cat > /dev/null\necho \"$WEFT_ATTEMPT\" >> {}\nsleep 2\necho '{{\"done\": true}}'",
            executions.display()
        ),
    );
    let handlers = env.handlers_file("handlers.toml", &[("s.slow", &script)]);
    let mut command = Command::new(WEFT);
    command.args([
        "worker",
        "--handlers",
        &handlers.display().to_string(),
        "--url",
        &proxy_url,
    ]);
    let _worker = Proc::spawn("worker via proxy", command, env.path("worker-proxy.log"));
    let run_id = env.start_run("parted", json!({})).await;
    wait_until("the handler to start", PATIENCE, || {
        let executions = executions.clone();
        async move { (!lines(&executions).is_empty()).then_some(()) }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    blackhole.store(true, Ordering::SeqCst);
    // The handler finishes inside the partition; its result request hangs.
    tokio::time::sleep(Duration::from_secs(3)).await;
    blackhole.store(false, Ordering::SeqCst);
    let run = env
        .wait_run(&run_id, "completed", Duration::from_secs(35), |run| {
            run.status == "completed"
        })
        .await;
    assert_eq!(step(&run, "a").attempts.len(), 1);
    assert_eq!(lines(&executions), vec!["1"], "the handler ran once");
}

const LAPSING: &str = "\
name: lapsing
steps:
  - name: a
    handler: s.lapsing
    heartbeat_timeout: 2s
    retry: { max_attempts: 3, initial: 100ms, max: 100ms, jitter: false }
";

/// A server (or its database) unreachable for longer than the lease: the
/// worker cannot renew, so it stops the handler before the lease can lapse
/// and sends no result; the step may then be claimed elsewhere without two
/// executions overlapping. Found by the chaos suite's Postgres restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_is_stopped_before_its_unrenewed_lease_lapses() {
    let db = weft_testkit::sqlite_database();
    let mut env = Env::start(&db.url).await;
    env.register(LAPSING).await;
    let pids = env.path("pids");
    let script = env.script(
        "lapsing.sh",
        &format!(
            "cat > /dev/null\necho \"$WEFT_ATTEMPT $$\" >> {}\n\
             if [ \"$WEFT_ATTEMPT\" = 1 ]; then sleep 30; fi\necho '{{\"done\": true}}'",
            pids.display()
        ),
    );
    let handlers = env.handlers_file("handlers.toml", &[("s.lapsing", &script)]);
    let _worker = env.exec_worker(&handlers, "w1");
    let run_id = env.start_run("lapsing", json!({})).await;
    let first: i32 = wait_until("the first attempt's handler", PATIENCE, || {
        let pids = pids.clone();
        async move {
            let text = fs::read_to_string(&pids).ok()?;
            text.lines().next()?.strip_prefix("1 ")?.trim().parse().ok()
        }
    })
    .await;
    env.server.kill();
    let killed = Instant::now();
    // The last renewal was at most now; the lease (2 s) lapses by then.
    wait_until(
        "the handler to be stopped before its lease lapses",
        Duration::from_secs(2),
        || async move { (!process_alive(first)).then_some(()) },
    )
    .await;
    eprintln!(
        "handler stopped {:?} after the server went away",
        killed.elapsed()
    );
    env.server.restart().await;
    let run = env.wait_finished(&run_id).await;
    assert_eq!(run.status, "completed", "run: {run:#?}");
    let a = step(&run, "a");
    assert_eq!(a.attempts.len(), 2, "attempts: {:#?}", a.attempts);
    // The step declares a heartbeat timeout, so the lapse is named for it.
    assert_eq!(
        a.attempts[0].reason.as_deref(),
        Some("heartbeat_timeout"),
        "{:#?}",
        a.attempts
    );
    assert_eq!(a.attempts[1].status, "completed");
}
