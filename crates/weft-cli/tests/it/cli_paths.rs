//! What the CLI prints must work: the next-page hint of `weft runs`, the
//! commands `weft dev` suggests on another port, the advice of a connection
//! error; output into a pipe closed early ends quietly; and live progress
//! shows only the current attempt's state. On SQLite: nothing here depends on
//! the backend.

use std::{
    io::{BufRead, BufReader},
    process::{Command as StdCommand, Output, Stdio},
    time::{Duration, Instant},
};

use serde_json::json;
use tokio::process::Command;

use crate::harness::{Env, PATIENCE, Proc, WEFT, step};

/// Runs the CLI with `args` (no `--url` added, no `WEFT_URL` inherited).
async fn weft_raw(args: &[&str]) -> Output {
    let output = Command::new(WEFT)
        .args(args)
        .env_remove("WEFT_URL")
        .env_remove("WEFT_TOKEN")
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(60), output)
        .await
        .unwrap_or_else(|_| panic!("`weft {}` did not finish within 60s", args.join(" ")))
        .expect("run the weft binary")
}

/// Runs a command line as printed by the CLI, through `sh`, with `weft`
/// standing for the binary under test.
async fn printed_command(line: &str) -> Output {
    let script = format!("weft() {{ \"{WEFT}\" \"$@\"; }}\n{line}");
    let output = Command::new("sh")
        .args(["-c", &script])
        .env_remove("WEFT_URL")
        .env_remove("WEFT_TOKEN")
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(60), output)
        .await
        .unwrap_or_else(|_| panic!("`{line}` did not finish within 60s"))
        .expect("run sh")
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn runs_in(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .skip(1)
        .filter(|line| !line.starts_with('('))
        .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_next_page_hint_works() {
    let db = weft_testkit::sqlite_database();
    let env = Env::start(&db.url).await;
    env.register("name: paged\nsteps:\n  - {name: a, handler: nobody.serves}\n")
        .await;
    let mut started = Vec::new();
    for _ in 0..3 {
        started.push(env.start_run("paged", json!({})).await);
    }
    started.reverse(); // newest first, as listed

    // Follow the printed hint until there is none: every run once, in order.
    let mut line = format!(
        "weft runs --workflow paged --limit 1 --url {}",
        env.server.url
    );
    let mut seen = Vec::new();
    for _ in 0..5 {
        let output = printed_command(&line).await;
        let (stdout, stderr) = text(&output);
        assert!(
            output.status.success(),
            "`{line}`\nstdout:\n{stdout}\nstderr:\n{stderr}"
        );
        seen.extend(runs_in(&stdout));
        let Some(hint) = stdout
            .lines()
            .find_map(|l| l.strip_prefix("(more: "))
            .and_then(|l| l.strip_suffix(')'))
        else {
            break;
        };
        assert!(
            hint.starts_with("weft runs --workflow paged --limit 1 --cursor "),
            "the hint keeps the filters: {hint}"
        );
        line = format!("{hint} --url {}", env.server.url);
    }
    assert_eq!(seen, started);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_into_a_closed_pipe_ends_quietly() {
    let db = weft_testkit::sqlite_database();
    let env = Env::start(&db.url).await;
    env.register("name: piped\nsteps:\n  - {name: a, handler: nobody.serves}\n")
        .await;
    let run_id = env.start_run("piped", json!({})).await;
    let url = env.server.url.clone();
    for args in [
        vec!["run", run_id.as_str()],
        vec!["runs"],
        vec!["events", run_id.as_str()],
        vec!["workflows"],
        vec!["status"],
        vec!["run", run_id.as_str(), "--json"],
    ] {
        // The reader is gone before the command writes a byte, as with
        // `weft run <id> | head -0`.
        let (reader, writer) = std::io::pipe().expect("a pipe");
        drop(reader);
        let output = StdCommand::new(WEFT)
            .args(&args)
            .args(["--url", &url])
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .expect("run weft");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "`weft {}`: {stderr}",
            args.join(" ")
        );
        assert!(stderr.is_empty(), "`weft {}`: {stderr}", args.join(" "));
    }
    // `weft migrate` prints one line too.
    let other = weft_testkit::sqlite_database();
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let output = StdCommand::new(WEFT)
        .args(["migrate", "--database-url", &other.url])
        .env_remove("WEFT_LOG_FORMAT")
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("run weft migrate");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "weft migrate: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_outlives_a_closed_stdout() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = weft_testkit::free_port();
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let child = StdCommand::new(WEFT)
        .arg("dev")
        .current_dir(dir.path())
        .env("WEFT_LISTEN", format!("127.0.0.1:{port}"))
        .env_remove("WEFT_DATABASE_URL")
        .stdout(writer)
        .stderr(Stdio::null())
        .spawn()
        .expect("start weft dev");
    let mut child = KillOnDrop(child);
    let client = weft_client::Client::new(&format!("http://127.0.0.1:{port}"));
    let deadline = Instant::now() + PATIENCE;
    // The banner is written once the demo runs are started.
    loop {
        if let Ok(list) = client.list_runs(&[]).await
            && list.runs.len() >= 3
        {
            break;
        }
        assert!(
            child.0.try_wait().expect("poll weft dev").is_none(),
            "weft dev exited"
        );
        assert!(
            Instant::now() < deadline,
            "weft dev did not start its demo runs"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        child.0.try_wait().expect("poll weft dev").is_none(),
        "weft dev died writing its banner to a closed pipe"
    );
    client.health().await.expect("still serving");
}

/// A child process killed when the test ends, pass or fail.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_errors_name_the_url_once_and_the_way_out() {
    let port = weft_testkit::free_port();
    let url = format!("http://127.0.0.1:{port}");
    for args in [
        vec!["runs", "--url", url.as_str()],
        vec!["run", "some-id", "--url", url.as_str()],
        vec!["start", "etl", "--url", url.as_str()],
        vec!["status", "--url", url.as_str()],
    ] {
        let output = weft_raw(&args).await;
        let (_, stderr) = text(&output);
        assert!(!output.status.success());
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert_eq!(stderr.matches(&url).count(), 1, "the URL once: {stderr}");
        assert!(
            stderr.contains("--url") && stderr.contains("WEFT_URL"),
            "says how to point elsewhere: {stderr}"
        );
        assert!(
            !stderr.contains("error sending request"),
            "no transport jargon: {stderr}"
        );
    }
    // A URL without a scheme is refused as such, not as an unreachable server.
    let output = weft_raw(&["runs", "--url", &format!("127.0.0.1:{port}")]).await;
    let (_, stderr) = text(&output);
    assert!(!output.status.success());
    assert!(stderr.contains("http://"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_on_another_port_prints_commands_that_work() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = weft_testkit::free_port();
    let mut command = std::process::Command::new(WEFT);
    command
        .arg("dev")
        .current_dir(dir.path())
        .env("WEFT_LISTEN", format!("127.0.0.1:{port}"))
        .env_remove("WEFT_URL")
        .env_remove("WEFT_DATABASE_URL")
        .stdout(Stdio::piped());
    let mut child = command.spawn().expect("start weft dev");
    let stdout = child.stdout.take().expect("stdout");
    let _guard = KillOnDrop(child);
    let banner = tokio::task::spawn_blocking(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("a line of output");
            let done = line.contains("Ctrl-C to stop");
            lines.push(line);
            if done {
                break;
            }
        }
        lines
    });
    let banner = tokio::time::timeout(PATIENCE, banner)
        .await
        .expect("weft dev printed its banner")
        .expect("read the banner");
    let url = format!("http://127.0.0.1:{port}");
    let mut commands: Vec<String> = Vec::new();
    let mut demo_run = None;
    for line in &banner {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("demo run") {
            let command = rest.trim_start().split_once(' ').expect("a command").1;
            demo_run = Some(
                command
                    .split_whitespace()
                    .nth(2)
                    .expect("a run id")
                    .to_owned(),
            );
            commands.push(command.trim().to_owned());
        } else if let Some(rest) = line.strip_prefix("Try:") {
            commands.push(rest.trim().to_owned());
        } else if line.starts_with("weft ") {
            commands.push(line.to_owned());
        }
    }
    let demo_run = demo_run.expect("a demo run line");
    assert!(commands.len() >= 4, "{banner:#?}");
    for command in commands {
        assert!(command.contains(&url), "`{command}` names {url}");
        let command = command.replace("<run_id or trace_id>", &demo_run);
        let output = printed_command(&command).await;
        let (stdout, stderr) = text(&output);
        assert!(
            output.status.success(),
            "`{command}`\nstdout:\n{stdout}\nstderr:\n{stderr}"
        );
    }
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_shows_only_the_current_attempts_state() {
    let db = weft_testkit::sqlite_database();
    let env = Env::start(&db.url).await;
    env.register(
        "name: second-time\nsteps:\n  - name: flaky\n    handler: t.flaky\n    retry: {max_attempts: 2, backoff: fixed, initial: 2s}\n",
    )
    .await;
    let flaky = env.script(
        "flaky.sh",
        "cat > /dev/null\nif [ \"$WEFT_ATTEMPT\" = 1 ]; then echo 'first attempt broke' >&2; exit 1; fi\nsleep 1\necho '{\"ok\": true}'",
    );
    let handlers = env.handlers_file("handlers.toml", &[("t.flaky", &flaky)]);
    let _worker: Proc = env.exec_worker(&handlers, "exec-1");

    let url = env.server.url.clone();
    let wait =
        tokio::spawn(
            async move { weft_raw(&["start", "second-time", "--wait", "--url", &url]).await },
        );
    // While the step waits out its backoff, `weft run` shows attempt 1 as
    // failed and the step's own status apart.
    let run_id = {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let list = env.client.list_runs(&[]).await.expect("list runs");
            if let Some(run) = list.runs.first() {
                break run.run_id.clone();
            }
            assert!(Instant::now() < deadline, "no run started");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    env.wait_run(&run_id, "the step retrying", PATIENCE, |run| {
        step(run, "flaky").status == "retrying"
    })
    .await;
    let output = weft_raw(&["run", &run_id, "--url", &env.server.url]).await;
    let (stdout, _) = text(&output);
    let rows: Vec<&str> = stdout.lines().filter(|l| l.starts_with("flaky ")).collect();
    assert!(
        rows.iter()
            .any(|r| r.split_whitespace().take(3).eq(["flaky", "1", "failed"])),
        "attempt 1 shows its own status: {stdout}"
    );
    assert!(
        rows.iter()
            .any(|r| r.split_whitespace().take(3).eq(["flaky", "-", "retrying"])),
        "the step's status has its own row: {stdout}"
    );

    let output = wait.await.expect("the wait task");
    let (stdout, stderr) = text(&output);
    assert!(
        output.status.success(),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    for line in stdout.lines().filter(|l| l.contains("attempt 2")) {
        assert!(
            !line.contains("first attempt broke"),
            "attempt 2's line shows attempt 1's error: {line}\n{stdout}"
        );
    }
    assert!(
        stdout.contains("running attempt 2"),
        "the second attempt is shown: {stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("retrying after attempt 1") && l.contains("first attempt broke")),
        "the retry names the attempt that failed: {stdout}"
    );
}
