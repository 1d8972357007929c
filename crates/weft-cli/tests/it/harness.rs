//! Test harness for the end-to-end suite: real `weft` processes (server, exec
//! worker, CLI) behind guards that kill them on drop, an in-process SDK
//! worker, handler scripts in a temp dir, and polling helpers (no fixed
//! sleeps where a condition can be watched).

use std::{
    fs,
    future::Future,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use weft_api::{RunDetail, StartRunRequest, StepDetail};
use weft_client::Client;

/// The binary under test.
pub const WEFT: &str = env!("CARGO_BIN_EXE_weft");

/// How long any single condition may take before a test fails. Generous: the
/// suite runs on two cores beside other builds.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Polls `check` every 50 ms until it yields a value, or panics after `timeout`.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A child process, killed (SIGKILL) and reaped on drop. When the test is
/// failing, the tail of the process's output is printed to help diagnose it.
pub struct Proc {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    /// Spawns `command` with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, mut command: Command, log: PathBuf) -> Proc {
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open a log file");
        let err = out.try_clone().expect("clone a log file handle");
        command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .env("WEFT_LOG", "info")
            .env("NO_COLOR", "1")
            .env_remove("WEFT_TOKEN")
            .env_remove("WEFT_URL")
            .env_remove("WEFT_DATABASE_URL")
            .env_remove("WEFT_LISTEN");
        let child = command
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {name}: {err}"));
        Proc {
            name: name.to_owned(),
            child: Some(child),
            log,
        }
    }

    /// kill -9 and reap. Idempotent.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The process id, while the process is ours to reap.
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|child| child.id() as i32)
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) to the process.
    #[allow(unsafe_code)]
    pub fn signal(&self, signal: i32) {
        if let Some(pid) = self.pid() {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe {
                libc::kill(pid, signal);
            }
        }
    }

    /// Waits up to `timeout` for the process to end on its own.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The exit status, if the process has ended on its own.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    pub fn output(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let text = self.output();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(80)..].join("\n");
            eprintln!(
                "---- last output of {} ({}) ----\n{tail}\n---- end of {} ----",
                self.name,
                self.log.display(),
                self.name
            );
        }
    }
}

/// A `weft server` process on a loopback port.
pub struct Server {
    pub proc: Proc,
    pub port: u16,
    pub url: String,
    db_url: String,
    extra: Vec<String>,
    /// Environment variables set on the server process.
    env: Vec<(String, String)>,
    dir: PathBuf,
    starts: u32,
}

fn spawn_server(
    db_url: &str,
    port: u16,
    extra: &[String],
    env: &[(String, String)],
    log: PathBuf,
    name: &str,
) -> Proc {
    let mut command = Command::new(WEFT);
    command.args([
        "server",
        "--database-url",
        db_url,
        "--listen",
        &format!("127.0.0.1:{port}"),
    ]);
    // The suite's lease and tick, unless the scenario sets its own.
    for (flag, value) in [("--lease-timeout", "1s"), ("--engine-tick", "100ms")] {
        if !extra.iter().any(|e| e == flag) {
            command.args([flag, value]);
        }
    }
    command.args(extra);
    command.envs(env.iter().map(|(k, v)| (k, v)));
    Proc::spawn(name, command, log)
}

impl Server {
    /// Starts a server on a free port and waits until it is ready; `extra`
    /// flags are appended to the command line, `env` is set on the process.
    pub async fn start(db_url: &str, dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        // A probed port may be taken before the server binds it: try a few.
        for attempt in 1..=5 {
            let port = weft_testkit::free_port();
            let name = format!("server#{attempt}");
            let proc = spawn_server(
                db_url,
                port,
                &extra,
                &env,
                dir.join(format!("server-{attempt}.log")),
                &name,
            );
            let mut server = Server {
                proc,
                port,
                url: format!("http://127.0.0.1:{port}"),
                db_url: db_url.to_owned(),
                extra: extra.clone(),
                env: env.clone(),
                dir: dir.to_owned(),
                starts: attempt,
            };
            if server.wait_ready().await {
                return server;
            }
            server.proc.kill();
        }
        panic!("the server did not start on any of 5 ports");
    }

    /// kill -9, as a crash would.
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    /// Starts a new server process on the same database and port.
    pub async fn restart(&mut self) {
        self.proc.kill();
        self.starts += 1;
        let name = format!("server#{}", self.starts);
        self.proc = spawn_server(
            &self.db_url,
            self.port,
            &self.extra,
            &self.env,
            self.dir.join(format!("server-{}.log", self.starts)),
            &name,
        );
        assert!(
            self.wait_ready().await,
            "the restarted server did not come up on port {}",
            self.port
        );
    }

    /// True once this process has bound its port (its log says so) and
    /// `/health/ready` answers 200; false if the process exited first.
    async fn wait_ready(&mut self) -> bool {
        let http = http_client();
        let deadline = Instant::now() + Duration::from_secs(60);
        let ready_url = format!("{}/health/ready", self.url);
        loop {
            if self.proc.exited().is_some() {
                return false;
            }
            // The log line proves that *this* process holds the port, so a
            // stray server elsewhere cannot answer the probe for it.
            if self.proc.output().contains("server started")
                && let Ok(response) = http.get(&ready_url).send().await
                && response.status().as_u16() == 200
            {
                return true;
            }
            if Instant::now() >= deadline {
                panic!(
                    "server on port {} not ready after 60s; output:\n{}",
                    self.port,
                    self.proc.output()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A plain HTTP client for requests the typed client does not make. It
/// names itself with `X-Weft-Client`, as every Weft client does (see
/// [`browser_client`] for one that does not).
pub fn http_client() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        weft_api::CLIENT_HEADER,
        reqwest::header::HeaderValue::from_static("weft-e2e-tests"),
    );
    browser_builder()
        .default_headers(headers)
        .build()
        .expect("an HTTP client builds")
}

/// An HTTP client that sends only what a browser's form or `fetch` would:
/// no `X-Weft-Client`, and redirects not followed (so tests see them).
pub fn browser_client() -> reqwest::Client {
    browser_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("an HTTP client builds")
}

fn browser_builder() -> reqwest::ClientBuilder {
    // reqwest is built without a default TLS provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().timeout(Duration::from_secs(30))
}

/// An in-process SDK worker, stopped on drop.
pub struct SdkWorker {
    shutdown: CancellationToken,
    handle: Option<JoinHandle<()>>,
}

impl SdkWorker {
    pub fn spawn(worker: weft_worker::Worker) -> SdkWorker {
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(worker.run(shutdown.clone()));
        SdkWorker {
            shutdown,
            handle: Some(handle),
        }
    }

    /// Stops polling and waits for tasks in hand to end.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(handle) = self.handle.take() {
            tokio::time::timeout(Duration::from_secs(15), handle)
                .await
                .expect("the SDK worker stops within 15s")
                .expect("the SDK worker task does not panic");
        }
    }
}

impl Drop for SdkWorker {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(handle) = self.handle.take() {
            handle.abort();
        }
    }
}

/// One scenario's world: a temp dir, a server on the database under test,
/// and clients for it. Fields drop in order: the server dies before its
/// directory is removed.
pub struct Env {
    pub server: Server,
    pub client: Client,
    pub http: reqwest::Client,
    pub dir: TempDir,
}

impl Env {
    pub async fn start(db_url: &str) -> Env {
        Env::start_with(db_url, &[]).await
    }

    pub async fn start_with(db_url: &str, extra: &[&str]) -> Env {
        Env::start_with_env(db_url, extra, &[]).await
    }

    /// [`Env::start_with`] with environment variables set on the server
    /// process; a value may name a path in the temp dir as `{dir}/...`.
    pub async fn start_with_env(db_url: &str, extra: &[&str], env: &[(&str, &str)]) -> Env {
        let dir = tempfile::Builder::new()
            .prefix("weft-e2e-")
            .tempdir()
            .expect("temp dir");
        let root = dir.path().display().to_string();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.replace("{dir}", &root)))
            .collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let server = Server::start(db_url, dir.path(), extra, &env).await;
        let client = Client::new(&server.url);
        Env {
            server,
            client,
            http: http_client(),
            dir,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a POSIX shell handler script; returns its path.
    pub fn script(&self, name: &str, body: &str) -> PathBuf {
        let path = self.path(name);
        fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write a handler script");
        path
    }

    /// Writes a handlers file mapping each handler name to `sh SCRIPT`.
    pub fn handlers_file(&self, name: &str, handlers: &[(&str, &Path)]) -> PathBuf {
        let mut text = String::from("[handlers]\n");
        for (handler, script) in handlers {
            let handler = serde_json::to_string(handler).expect("a string serializes");
            let script =
                serde_json::to_string(&script.display().to_string()).expect("a string serializes");
            text.push_str(&format!("{handler} = {{ command = [\"sh\", {script}] }}\n"));
        }
        let path = self.path(name);
        fs::write(&path, text).expect("write a handlers file");
        path
    }

    /// Starts `weft worker` with a handlers file and a fixed worker id.
    pub fn exec_worker(&self, handlers: &Path, worker_id: &str) -> Proc {
        self.exec_worker_with(handlers, worker_id, &[])
    }

    /// An exec worker process with extra command-line arguments.
    pub fn exec_worker_with(&self, handlers: &Path, worker_id: &str, extra: &[&str]) -> Proc {
        let mut command = Command::new(WEFT);
        command.arg("worker").arg("--handlers").arg(handlers).args([
            "--url",
            &self.server.url,
            "--worker-id",
            worker_id,
        ]);
        command.args(extra);
        Proc::spawn(
            &format!("worker {worker_id}"),
            command,
            self.path(&format!("worker-{worker_id}.log")),
        )
    }

    /// An SDK worker builder aimed at this server.
    pub fn sdk_worker(&self, worker_id: &str) -> weft_worker::Builder {
        weft_worker::Worker::builder(Client::new(&self.server.url))
            .worker_id(worker_id)
            .poll_wait(Duration::from_secs(5))
    }

    pub async fn register(&self, manifest: &str) {
        let name = manifest
            .lines()
            .find_map(|line| line.strip_prefix("name: "))
            .expect("the manifest has a top-level name")
            .trim();
        let response = self
            .client
            .put_workflow(name, manifest)
            .await
            .expect("register a workflow");
        assert_eq!(response.name, name);
    }

    /// Starts a run; returns its run_id.
    pub async fn start_run(&self, workflow: &str, input: Value) -> String {
        let started = self
            .client
            .start_run(
                workflow,
                &StartRunRequest {
                    input,
                    idempotency_key: None,
                    ..Default::default()
                },
            )
            .await
            .expect("start a run");
        assert!(started.created);
        started.run_id
    }

    /// Polls the run until `done` holds; panics with the last state on timeout.
    pub async fn wait_run(
        &self,
        run_id: &str,
        what: &str,
        timeout: Duration,
        done: impl Fn(&RunDetail) -> bool,
    ) -> RunDetail {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.client.get_run(run_id).await {
                Ok(run) if done(&run) => return run,
                Ok(run) => run,
                Err(err) => panic!("GET /v1/runs/{run_id} failed: {err}"),
            };
            if Instant::now() >= deadline {
                let state = serde_json::to_string_pretty(&last).unwrap_or_default();
                panic!(
                    "timed out after {timeout:?} waiting for run {run_id}: {what}; last state:\n{state}"
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the run reaches a terminal status.
    pub async fn wait_finished(&self, run_id: &str) -> RunDetail {
        self.wait_run(run_id, "a terminal status", PATIENCE, |run| {
            is_terminal(&run.status)
        })
        .await
    }
}

pub fn is_terminal(status: &str) -> bool {
    matches!(status, "completed" | "failed" | "cancelled" | "compensated")
}

pub fn step<'a>(run: &'a RunDetail, name: &str) -> &'a StepDetail {
    run.steps
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("run {} has no step `{name}`", run.run_id))
}

/// An RFC 3339 timestamp from the API as epoch milliseconds.
pub fn ms(timestamp: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(timestamp)
        .unwrap_or_else(|err| panic!("`{timestamp}` is not RFC 3339: {err}"))
        .timestamp_millis()
}

/// Whether a process exists and is not a zombie (dead, awaiting its reaper).
#[allow(unsafe_code)]
pub fn process_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only asks whether the process exists.
    if unsafe { libc::kill(pid, 0) } != 0 {
        return false;
    }
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state letter follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_none_or(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// SIGKILL to a whole process group.
#[allow(unsafe_code)]
pub fn kill_group(pgid: i32) {
    // SAFETY: killpg has no memory-safety preconditions; a stale id gives ESRCH.
    unsafe {
        libc::killpg(pgid, libc::SIGKILL);
    }
}
