//! The processes of a chaos scenario: `weft server`s on one database, exec
//! workers (`weft worker`) and SDK workers (this test binary re-executed),
//! each a real child process that can be killed with SIGKILL or stopped with
//! SIGTERM, plus the handler scripts and the side-effect log they append to.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use tempfile::TempDir;

/// The binary under test.
pub const WEFT: &str = env!("CARGO_BIN_EXE_weft");

/// The server's lease: long enough that a healthy worker never loses one,
/// short enough that a crashed worker's steps come back within seconds.
pub const LEASE: &str = "5s";

/// The environment variable that turns this test binary into an SDK worker
/// (see `main` in main.rs): the server URL.
pub const SDK_CHILD_URL: &str = "WEFT_CHAOS_SDK_URL";
/// The SDK child's worker id (also written to the side-effect log).
pub const SDK_CHILD_ID: &str = "WEFT_CHAOS_SDK_ID";
/// The side-effect log the SDK child appends to.
pub const SDK_CHILD_LOG: &str = "WEFT_CHAOS_SDK_LOG";

/// How long each handler works, by handler name, in ticks of [`TICK`]:
/// shared by the exec handlers and the SDK worker so both do the same work.
pub const HANDLERS: &[(&str, u32)] = &[
    ("chaos.quick", 1),
    ("chaos.mid", 3),
    ("chaos.slow", 7),
    // 12 s, longer than the lease: a handler orphaned by a killed worker, or
    // one whose worker could not renew its lease, is still running when its
    // step is claimed again, so the overlap shows.
    ("chaos.long", 48),
];

/// A handler's unit of work; it logs a `tick` line after each but the last,
/// so the log shows until when a killed handler really ran.
pub const TICK: Duration = Duration::from_millis(250);

/// A child process, killed (SIGKILL) and reaped on drop.
pub struct Proc {
    pub name: String,
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

    /// The process id while it has not been reaped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// kill -9 and reap. Idempotent.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits up to `grace` for the process to exit; SIGKILL
    /// after that. Returns how long it took to exit and whether it did so on
    /// its own.
    pub async fn terminate(&mut self, grace: Duration) -> (Duration, bool) {
        let started = Instant::now();
        let Some(pid) = self.pid() else {
            return (Duration::ZERO, true);
        };
        signal(pid, libc::SIGTERM);
        while started.elapsed() < grace {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(_)) = child.try_wait()
            {
                self.child = None;
                return (started.elapsed(), true);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.kill();
        (started.elapsed(), false)
    }

    /// Whether the process has ended on its own.
    pub fn exited(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(Some(_))),
            None => true,
        }
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
            let tail = lines[lines.len().saturating_sub(40)..].join("\n");
            eprintln!(
                "---- last output of {} ({}) ----\n{tail}\n---- end of {} ----",
                self.name,
                self.log.display(),
                self.name
            );
        }
    }
}

/// Sends `sig` to one process.
#[allow(unsafe_code)]
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions; a stale pid gives ESRCH.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

/// The machine's monotonic clock as the side-effect log has it: milliseconds
/// of `/proc/uptime` (10 ms resolution, the same for every process).
pub fn uptime_ms() -> i64 {
    let text = fs::read_to_string("/proc/uptime").expect("read /proc/uptime");
    parse_uptime(text.split_whitespace().next().unwrap_or_default()).expect("a number")
}

/// `/proc/uptime`'s seconds (`1125.24`) as milliseconds.
pub fn parse_uptime(seconds: &str) -> Option<i64> {
    let seconds: f64 = seconds.parse().ok()?;
    Some((seconds * 1000.0).round() as i64)
}

/// A plain HTTP client for the health probes, whose status codes matter.
pub fn http_client() -> reqwest::Client {
    // reqwest is built without a default TLS provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("an HTTP client builds")
}

/// The status of `GET /health/ready`, or `None` when nothing answers.
pub async fn ready_status(http: &reqwest::Client, url: &str) -> Option<u16> {
    http.get(format!("{url}/health/ready"))
        .send()
        .await
        .ok()
        .map(|response| response.status().as_u16())
}

/// One `weft server` process, restartable on the same port and database.
pub struct Server {
    pub proc: Proc,
    pub url: String,
    pub label: String,
    port: u16,
    db_url: String,
    dir: PathBuf,
    incarnation: u32,
}

impl Server {
    fn spawn(label: &str, db_url: &str, port: u16, dir: &Path, incarnation: u32) -> Proc {
        let mut command = Command::new(WEFT);
        command.args([
            "server",
            "--database-url",
            db_url,
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--lease-timeout",
            LEASE,
            "--engine-tick",
            "200ms",
        ]);
        Proc::spawn(
            &format!("{label}#{incarnation}"),
            command,
            dir.join(format!("{label}-{incarnation}.log")),
        )
    }

    /// Starts a server on a free port and waits until it is ready.
    pub async fn start(label: &str, db_url: &str, dir: &Path) -> Server {
        // A probed port may be taken before the server binds it: try a few.
        for incarnation in 1..=5 {
            let port = weft_testkit::free_port();
            let mut server = Server {
                proc: Server::spawn(label, db_url, port, dir, incarnation),
                url: format!("http://127.0.0.1:{port}"),
                label: label.to_owned(),
                port,
                db_url: db_url.to_owned(),
                dir: dir.to_owned(),
                incarnation,
            };
            if server.wait_ready().await {
                return server;
            }
            server.proc.kill();
        }
        panic!("{label} did not start on any of 5 ports");
    }

    /// kill -9, as a crash would.
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    /// A new server process on the same database and port, ready.
    pub async fn restart(&mut self) {
        self.proc.kill();
        self.incarnation += 1;
        self.proc = Server::spawn(
            &self.label,
            &self.db_url,
            self.port,
            &self.dir,
            self.incarnation,
        );
        assert!(
            self.wait_ready().await,
            "{} did not come back on port {}",
            self.label,
            self.port
        );
    }

    /// True once this process has bound its port (its log says so) and
    /// `/health/ready` answers 200; false if it exited first.
    async fn wait_ready(&mut self) -> bool {
        let http = http_client();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.proc.exited() {
                return false;
            }
            if self.proc.output().contains("server started")
                && ready_status(&http, &self.url).await == Some(200)
            {
                return true;
            }
            assert!(
                Instant::now() < deadline,
                "{} not ready after 60s; output:\n{}",
                self.label,
                self.proc.output()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// What runs a worker's handlers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerKind {
    /// `weft worker --handlers`: shell scripts.
    Exec,
    /// The Rust SDK in a process of its own.
    Sdk,
}

/// A worker process; restarting it starts a new incarnation with a new id
/// (`exec-1.2`), so attempts and log lines name the process that ran them.
pub struct WorkerProc {
    pub proc: Proc,
    pub kind: WorkerKind,
    pub base: String,
    pub incarnation: u32,
    pub server_url: String,
}

impl WorkerProc {
    /// This incarnation's worker id.
    pub fn id(&self) -> String {
        format!("{}.{}", self.base, self.incarnation)
    }
}

/// Everything a scenario runs, in drop order: workers, then servers, then the
/// database, then the directory that holds their files.
pub struct World {
    pub workers: Vec<WorkerProc>,
    pub servers: Vec<Server>,
    pub postgres: Option<weft_testkit::PgCluster>,
    pub db_url: String,
    /// Every handler execution appends its start and end lines here.
    pub effects: PathBuf,
    /// Workers killed with SIGKILL: (worker id, [`uptime_ms`] of the kill).
    pub kills: Vec<(String, i64)>,
    pub dir: TempDir,
}

impl World {
    /// A world on a fresh SQLite file, or on a throwaway PostgreSQL cluster.
    pub fn new(postgres: bool) -> World {
        let mut dir = tempfile::Builder::new()
            .prefix("weft-chaos-")
            .tempdir()
            .expect("temp dir");
        // `WEFT_CHAOS_KEEP=1` keeps the logs, handlers and database to look at.
        if std::env::var_os("WEFT_CHAOS_KEEP").is_some() {
            dir.disable_cleanup(true);
        }
        let (postgres, db_url) = if postgres {
            // Commits must survive PostgreSQL being killed (`RestartPostgres`):
            // a cluster that acknowledges them before the WAL write loses the
            // last ones, and the runs they started, on every restart.
            let cluster = weft_testkit::PgCluster::start_crash_safe();
            let url = cluster.create_database();
            (Some(cluster), url)
        } else {
            let url = format!("sqlite://{}", dir.path().join("weft.db").display());
            (None, url)
        };
        let effects = dir.path().join("effects.log");
        fs::write(&effects, "").expect("create the side-effect log");
        fs::write(dir.path().join("step.sh"), STEP_SCRIPT).expect("write the handler script");
        World {
            workers: Vec::new(),
            servers: Vec::new(),
            postgres,
            db_url,
            effects,
            kills: Vec::new(),
            dir,
        }
    }

    /// Starts one more server on this world's database.
    pub async fn add_server(&mut self) {
        let label = format!("server{}", self.servers.len() + 1);
        let server = Server::start(&label, &self.db_url, self.dir.path()).await;
        self.servers.push(server);
    }

    /// Starts a worker aimed at server `server`; returns its index.
    pub fn add_worker(&mut self, kind: WorkerKind, server: usize) -> usize {
        let prefix = match kind {
            WorkerKind::Exec => "exec",
            WorkerKind::Sdk => "sdk",
        };
        let n = self.workers.iter().filter(|w| w.kind == kind).count() + 1;
        let base = format!("{prefix}-{n}");
        let server_url = self.servers[server].url.clone();
        let proc = self.spawn_worker(kind, &format!("{base}.1"), &server_url);
        self.workers.push(WorkerProc {
            proc,
            kind,
            base,
            incarnation: 1,
            server_url,
        });
        self.workers.len() - 1
    }

    /// kill -9 worker `index`, noting when, then starts its next incarnation.
    pub fn kill_worker(&mut self, index: usize) {
        self.kills.push((self.workers[index].id(), uptime_ms()));
        self.workers[index].proc.kill();
        self.restart_worker(index);
    }

    /// Starts the next incarnation of worker `index` (after a kill or a stop).
    pub fn restart_worker(&mut self, index: usize) {
        self.workers[index].proc.kill();
        self.workers[index].incarnation += 1;
        let worker = &self.workers[index];
        let proc = self.spawn_worker(worker.kind, &worker.id(), &worker.server_url);
        self.workers[index].proc = proc;
    }

    fn spawn_worker(&self, kind: WorkerKind, id: &str, server_url: &str) -> Proc {
        let log = self.dir.path().join(format!("worker-{id}.log"));
        match kind {
            WorkerKind::Exec => {
                let handlers = self.handlers_file(id);
                let mut command = Command::new(WEFT);
                command.arg("worker").arg("--handlers").arg(handlers).args([
                    "--url",
                    server_url,
                    "--worker-id",
                    id,
                    "--concurrency",
                    "8",
                ]);
                Proc::spawn(&format!("worker {id}"), command, log)
            }
            WorkerKind::Sdk => {
                let exe = std::env::current_exe().expect("the test binary's path");
                let mut command = Command::new(exe);
                command
                    .env(SDK_CHILD_URL, server_url)
                    .env(SDK_CHILD_ID, id)
                    .env(SDK_CHILD_LOG, &self.effects);
                Proc::spawn(&format!("worker {id}"), command, log)
            }
        }
    }

    /// A handlers file mapping every chaos handler to the step script, with
    /// the side-effect log, the worker id and the handler's ticks as
    /// arguments.
    fn handlers_file(&self, worker_id: &str) -> PathBuf {
        let script = self.dir.path().join("step.sh");
        let mut text = String::from("[handlers]\n");
        for (handler, ticks) in HANDLERS {
            let args = [
                "sh".to_owned(),
                script.display().to_string(),
                self.effects.display().to_string(),
                worker_id.to_owned(),
                ticks.to_string(),
            ];
            let args = serde_json::to_string(&args).expect("strings serialize");
            text.push_str(&format!("\"{handler}\" = {{ command = {args} }}\n"));
        }
        let path = self.dir.path().join(format!("handlers-{worker_id}.toml"));
        fs::write(&path, text).expect("write a handlers file");
        path
    }
}

/// The exec handler: `sh step.sh LOG WORKER_ID TICKS`. It appends a start
/// line, a tick line every 0.25 s, then an end line (the step's side
/// effect), and prints its output. Each line is one `printf` to an
/// `O_APPEND` file, so lines from concurrent handlers never interleave.
/// `uptime` (`/proc/uptime`: monotonic, the same in every process) orders
/// events; `epoch_ns` (start and end) is for reading beside server logs.
const STEP_SCRIPT: &str = r#"#!/bin/sh
log="$1"; worker="$2"; ticks="$3"
cat >/dev/null
line() {
  read uptime _ < /proc/uptime
  printf '%s run=%s step=%s attempt=%s worker=%s pid=%s uptime=%s epoch_ns=%s\n' \
    "$1" "$WEFT_RUN_ID" "$WEFT_STEP" "$WEFT_ATTEMPT" "$worker" "$$" "$uptime" "$2" >> "$log"
}
line start "$(date +%s%N)"
n=1
while :; do
  sleep 0.25
  [ "$n" -ge "$ticks" ] && break
  line tick -
  n=$((n + 1))
done
line end "$(date +%s%N)"
printf '{"step": "%s", "attempt": %s, "worker": "%s"}\n' "$WEFT_STEP" "$WEFT_ATTEMPT" "$worker"
"#;
