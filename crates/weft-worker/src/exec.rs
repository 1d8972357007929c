//! Handlers as external commands, in any language (SPEC §2, `weft worker`).
//!
//! Protocol: the task input (`{"input", "steps"}`) as JSON on stdin; the
//! output as JSON on stdout (empty stdout means `null`); stderr lines become
//! the attempt's log lines; exit status 0 is success. A failure is permanent
//! (no retry) when the command exits with status 100, or prints
//! `{"error": {"message": "...", "retryable": false}}` on stdout. The
//! environment carries `WEFT_RUN_ID`, `WEFT_TRACE_ID`, `WEFT_WORKFLOW`,
//! `WEFT_STEP`, `WEFT_ATTEMPT`, `WEFT_IDEMPOTENCY_KEY` (the same for every
//! attempt of the step, `Task::idempotency_key`), `TRACEPARENT` (the worker's `execute` span when
//! it exports spans, else the attempt's) and `BAGGAGE` when the run has some.
//! Each command runs in its own process group, killed whole on timeout or
//! cancellation, and (under the `weft __supervise` supervisor, see
//! [`supervise`]) when the worker dies. At the worker's shutdown the group
//! gets SIGTERM first. Stderr is read to its end, decoded lossily, and kept
//! up to [`MAX_LOG_LINES`] lines and [`MAX_LOG_BYTES`] bytes per attempt.
//! A command that cannot be started (missing program or working
//! directory) fails the step at once with kind `no_handler`.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::Duration,
};

use serde::Deserialize;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

pub use crate::supervise::{SUPERVISE_COMMAND, supervise};

use crate::{Handler, HandlerError, HandlerFuture, TaskContext};

/// Exit status a command uses to say "do not retry".
pub const PERMANENT_FAILURE_EXIT: i32 = 100;

/// Why a handlers file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read handlers file {path}: {source}")]
    Read {
        /// The file as given.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid handlers file (see [`parse`]).
    #[error("handlers file {path} is not valid: {message}")]
    Invalid {
        /// The file as given.
        path: PathBuf,
        /// What is wrong: the TOML error with its line, an empty
        /// `[handlers]` table, or the handler whose command is empty.
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HandlersFile {
    handlers: BTreeMap<String, Entry>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Entry {
    Line(String),
    Full(FullEntry),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FullEntry {
    command: Command,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    cwd: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Command {
    Line(String),
    Argv(Vec<String>),
}

/// One handler: how to start its command.
#[derive(Debug, Clone)]
pub struct ExecHandler {
    /// The handler name steps refer to (`inventory.reserve`).
    pub name: String,
    /// `sh -c LINE` or an argv.
    pub argv: Vec<String>,
    /// Variables set for the command, beside the worker's environment and
    /// the `WEFT_*` / `TRACEPARENT` / `BAGGAGE` variables of the task.
    pub env: BTreeMap<String, String>,
    /// The directory the command runs in.
    pub cwd: PathBuf,
    /// The `weft` binary that runs the command under `weft __supervise`
    /// (see [`supervise`]), so the command's whole process group dies with
    /// the worker; `None` starts the command directly, with only
    /// `PR_SET_PDEATHSIG` tying the command (not its children) to the worker.
    pub supervisor: Option<PathBuf>,
}

/// Reads a handlers file. Relative commands and working directories are
/// resolved against the file's directory, so a repo can ship its handlers.
pub fn load(path: &Path) -> Result<Vec<ExecHandler>, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })?;
    // `handlers.toml` has an empty parent: the current directory.
    let base = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    parse(&text, base).map_err(|message| Error::Invalid {
        path: path.to_owned(),
        message,
    })
}

/// Parses a handlers file's text: a `[handlers]` table whose entries are a
/// command line (`"name" = "./reserve.sh"`, run as `sh -c LINE`) or a table
/// `{ command = LINE or [argv...], env = { K = "v" }, cwd = "dir" }`.
/// `cwd` is resolved against `base` (canonicalized when it exists), which is
/// also the working directory when `cwd` is absent. Handlers come out sorted
/// by name, unsupervised (`supervisor: None`).
///
/// # Errors
///
/// The message of a TOML error (syntax, an unknown field or a wrongly
/// shaped entry), of an empty `[handlers]` table, or of a handler whose
/// command is empty.
pub fn parse(text: &str, base: &Path) -> Result<Vec<ExecHandler>, String> {
    let file: HandlersFile = toml::from_str(text).map_err(|err| err.to_string())?;
    if file.handlers.is_empty() {
        return Err("no handlers under [handlers]".to_owned());
    }
    let base = std::fs::canonicalize(base).unwrap_or_else(|_| base.to_owned());
    file.handlers
        .into_iter()
        .map(|(name, entry)| {
            let (command, env, cwd) = match entry {
                Entry::Line(line) => (Command::Line(line), BTreeMap::new(), None),
                Entry::Full(full) => (full.command, full.env, full.cwd),
            };
            let argv = match command {
                Command::Line(line) if line.trim().is_empty() => {
                    return Err(format!("handler `{name}` has an empty command"));
                }
                Command::Line(line) => vec!["sh".to_owned(), "-c".to_owned(), line],
                Command::Argv(argv) if argv.is_empty() => {
                    return Err(format!("handler `{name}` has an empty command"));
                }
                Command::Argv(argv) => argv,
            };
            let cwd = match cwd {
                Some(dir) => base.join(dir),
                None => base.clone(),
            };
            Ok(ExecHandler {
                name,
                argv,
                env,
                cwd,
                supervisor: None,
            })
        })
        .collect()
}

/// Kills the whole process group when dropped, unless disarmed: a handler
/// future dropped on timeout or cancellation takes its children with it.
struct GroupGuard {
    pgid: Option<i32>,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid {
            signal_group(pgid, libc::SIGKILL);
        }
    }
}

#[allow(unsafe_code)]
fn signal_group(pgid: i32, signal: i32) {
    // SAFETY: killpg has no memory-safety preconditions; the worst outcome
    // of a stale id is ESRCH, which is ignored.
    unsafe {
        libc::killpg(pgid, signal);
    }
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Most bytes of stdout kept when the task's `max_output_bytes` is unknown.
pub const DEFAULT_MAX_STDOUT_BYTES: u64 = 64 * 1024 * 1024;
/// Most stderr lines kept as log lines per attempt; the rest are counted.
pub const MAX_LOG_LINES: usize = 10_000;
/// Most bytes of stderr kept as log lines per attempt; the rest are counted.
pub const MAX_LOG_BYTES: usize = 1024 * 1024;
/// Longest log line kept; a longer one is cut, marked with `…`.
pub const MAX_LOG_LINE_BYTES: usize = 16 * 1024;

/// What the supervisor said on its control socket.
#[derive(Debug, Default)]
struct Control {
    /// `(kind, message)` when the command could not be started.
    spawn_error: Option<(String, String)>,
    exit: Option<i32>,
    signal: Option<i32>,
}

async fn read_control(stream: tokio::net::UnixStream) -> Control {
    let mut control = Control::default();
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let (word, rest) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        match word {
            "spawn_error" => {
                let (kind, message) = rest.split_once(' ').unwrap_or((rest, ""));
                control.spawn_error = Some((kind.to_owned(), message.to_owned()));
            }
            "exit" => control.exit = rest.trim().parse().ok(),
            "signal" => control.signal = rest.trim().parse().ok(),
            _ => {}
        }
    }
    control
}

fn no_handler(message: String) -> HandlerError {
    HandlerError::permanent(message).with_kind("no_handler")
}

impl ExecHandler {
    /// The reason the command cannot be started, when it can be told
    /// before trying: a missing working directory.
    fn precheck(&self) -> Result<(), HandlerError> {
        if !self.cwd.is_dir() {
            return Err(no_handler(format!(
                "cannot start `{}`: its working directory {} does not exist",
                self.argv.join(" "),
                self.cwd.display()
            )));
        }
        Ok(())
    }

    /// The message of a spawn failure, naming what is missing.
    fn spawn_failure(&self, kind: &str, error: &str) -> HandlerError {
        let program = &self.argv[0];
        let what = match kind {
            "not_found" if program.contains('/') => format!(
                "program {} not found (relative paths resolve against {})",
                program,
                self.cwd.display()
            ),
            "not_found" => format!("program `{program}` not found on PATH"),
            "permission_denied" => format!("program `{program}` is not executable"),
            _ => error.to_owned(),
        };
        no_handler(format!(
            "cannot start `{}`: {what} ({error})",
            self.argv.join(" ")
        ))
    }

    fn command(&self, ctx: &TaskContext) -> tokio::process::Command {
        let task = &ctx.task;
        let mut command = match &self.supervisor {
            Some(weft) => {
                let mut command = tokio::process::Command::new(weft);
                command
                    .arg(crate::supervise::SUPERVISE_COMMAND)
                    .arg("--")
                    .args(&self.argv);
                command
            }
            None => {
                let mut command = tokio::process::Command::new(&self.argv[0]);
                command.args(&self.argv[1..]);
                command
            }
        };
        command
            .current_dir(&self.cwd)
            .envs(&self.env)
            .env("WEFT_RUN_ID", &task.run_id)
            .env("WEFT_TRACE_ID", &task.trace_id)
            .env("WEFT_WORKFLOW", &task.workflow)
            .env("WEFT_STEP", &task.step)
            .env("WEFT_ATTEMPT", task.attempt.to_string())
            .env("WEFT_IDEMPOTENCY_KEY", &task.idempotency_key)
            .env("TRACEPARENT", ctx.traceparent())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(baggage) = ctx.baggage() {
            command.env("BAGGAGE", baggage);
        }
        command
    }

    #[allow(unsafe_code)]
    async fn run(self: Arc<Self>, ctx: TaskContext) -> Result<Value, HandlerError> {
        let task = ctx.task.clone();
        self.precheck()?;
        let mut command = self.command(&ctx);
        // The control socket to the supervisor: its end becomes fd 3 there.
        let mut control = None;
        if self.supervisor.is_some() {
            let (ours, theirs) = std::os::unix::net::UnixStream::pair().map_err(|err| {
                HandlerError::retryable(format!("cannot make the supervisor's socket: {err}"))
            })?;
            use std::os::fd::AsRawFd;
            let fd = theirs.as_raw_fd();
            // SAFETY: dup2/fcntl are async-signal-safe; they only touch fds.
            unsafe {
                command.pre_exec(move || {
                    let target = crate::supervise::CONTROL_FD;
                    if fd == target {
                        libc::fcntl(target, libc::F_SETFD, 0);
                    } else if libc::dup2(fd, target) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            control = Some((ours, theirs));
        } else {
            // Without a supervisor the handler at least dies with the
            // worker (not its own children: they need the supervisor).
            #[cfg(target_os = "linux")]
            // SAFETY: prctl is async-signal-safe and touches no memory of ours.
            unsafe {
                command.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
        }
        let spawned = command.spawn();
        let control = match control {
            Some((ours, theirs)) => {
                drop(theirs);
                ours.set_nonblocking(true)
                    .map_err(|err| HandlerError::retryable(format!("supervisor socket: {err}")))?;
                let stream = tokio::net::UnixStream::from_std(ours)
                    .map_err(|err| HandlerError::retryable(format!("supervisor socket: {err}")))?;
                Some(AbortOnDrop(tokio::spawn(read_control(stream))))
            }
            None => None,
        };
        let mut child = match spawned {
            Ok(child) => child,
            Err(err) if self.supervisor.is_some() => {
                return Err(HandlerError::retryable(format!(
                    "cannot start the handler supervisor {}: {err}",
                    self.supervisor
                        .as_deref()
                        .unwrap_or(Path::new(""))
                        .display()
                )));
            }
            Err(err) => {
                let kind = match err.kind() {
                    std::io::ErrorKind::NotFound => "not_found",
                    std::io::ErrorKind::PermissionDenied => "permission_denied",
                    _ => "other",
                };
                return Err(self.spawn_failure(kind, &err.to_string()));
            }
        };
        let pgid = child.id().map(|id| id as i32);
        let mut guard = GroupGuard { pgid };

        let mut stdin = child.stdin.take().expect("stdin piped");
        let input = serde_json::to_vec(&task.input).expect("JSON serializes");
        let writer = tokio::spawn(async move {
            // A command that ignores stdin may close it early: not an error.
            let _ = stdin.write_all(&input).await;
            let _ = stdin.shutdown().await;
        });
        let stdout = child.stdout.take().expect("stdout piped");
        let stdout_cap = match task.max_output_bytes {
            // Pretty-printed JSON is larger than its serialized form; the
            // exact check is on the parsed output.
            0 => DEFAULT_MAX_STDOUT_BYTES,
            limit => limit.saturating_mul(2).max(64 * 1024),
        };
        let reader = tokio::spawn(read_capped(stdout, stdout_cap));
        let stderr = child.stderr.take().expect("stderr piped");
        let log_ctx = ctx.clone();
        let logger = tokio::spawn(async move { forward_stderr(stderr, log_ctx).await });

        // On cancellation (the worker's shutdown) the group gets SIGTERM and
        // a chance to end; the caller kills it (drops this future) later.
        let mut terminated = false;
        let status = loop {
            tokio::select! {
                status = child.wait() => break status,
                _ = ctx.cancellation().cancelled(), if !terminated => {
                    if let Some(pgid) = pgid {
                        signal_group(pgid, libc::SIGTERM);
                    }
                    terminated = true;
                }
            }
        };
        let status = status.map_err(|err| {
            HandlerError::retryable(format!("waiting for the command failed: {err}"))
        })?;
        guard.pgid = None;
        let _ = writer.await;
        let (stdout, stdout_bytes) = reader.await.unwrap_or_default();
        let last_stderr = logger.await.unwrap_or_default();
        let control = match control {
            Some(mut task) => (&mut task.0).await.unwrap_or_default(),
            None => Control::default(),
        };
        if let Some((kind, error)) = &control.spawn_error {
            return Err(self.spawn_failure(kind, error));
        }
        let code =
            if self.supervisor.is_some() && (control.exit.is_some() || control.signal.is_some()) {
                control.exit
            } else {
                status.code()
            };
        let success = code == Some(0);

        if stdout_bytes > stdout_cap {
            return Err(HandlerError::permanent(format!(
                "stdout of {stdout_bytes} bytes exceeds the limit of {stdout_cap} bytes"
            ))
            .with_kind("invalid_output"));
        }
        let text = String::from_utf8_lossy(&stdout);
        let text = text.trim();
        if success {
            if text.is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_str(text).map_err(|err| {
                HandlerError::permanent(format!("stdout is not JSON: {err}"))
                    .with_kind("invalid_output")
            });
        }
        let described = match code {
            Some(code) => format!("exit status {code}"),
            None => "killed by a signal".to_owned(),
        };
        if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(text)
            && let Some(error) = map.get("error")
        {
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("handler failed")
                .to_owned();
            let retryable = error
                .get("retryable")
                .and_then(Value::as_bool)
                .unwrap_or(code != Some(PERMANENT_FAILURE_EXIT));
            return Err(HandlerError {
                message,
                kind: None,
                retryable,
            });
        }
        let message = match last_stderr {
            Some(line) => format!("{described}: {line}"),
            None => described,
        };
        // `sh -c LINE` says 127 when LINE's program is not found, 126 when
        // it cannot be executed: a spawn failure, not a handler error.
        if self.is_shell_line() && matches!(code, Some(126 | 127)) {
            return Err(no_handler(format!(
                "cannot start `{}` (run as `sh -c` in {}): {message}",
                self.argv[2],
                self.cwd.display()
            )));
        }
        Err(HandlerError {
            message,
            kind: None,
            retryable: code != Some(PERMANENT_FAILURE_EXIT),
        })
    }

    /// Whether the command is a handlers-file line run as `sh -c LINE`.
    fn is_shell_line(&self) -> bool {
        self.argv.len() == 3 && self.argv[0] == "sh" && self.argv[1] == "-c"
    }
}

/// Reads `source` to its end, keeping at most `cap` bytes; returns them and
/// the total count read. The rest is drained so the writer never blocks.
async fn read_capped(mut source: impl tokio::io::AsyncRead + Unpin, cap: u64) -> (Vec<u8>, u64) {
    let mut kept = Vec::new();
    let mut total = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match source.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                total += n as u64;
                let room = cap.saturating_sub(kept.len() as u64) as usize;
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    (kept, total)
}

/// Splits a byte stream into lines (`\n`, a trailing `\r` dropped), decoded
/// lossily (invalid UTF-8 becomes U+FFFD), each cut at
/// [`MAX_LOG_LINE_BYTES`]. Cancel-safe: progress lives in the struct.
struct LineReader<R> {
    source: BufReader<R>,
    line: Vec<u8>,
    cut: bool,
}

impl<R: tokio::io::AsyncRead + Unpin> LineReader<R> {
    fn new(source: R) -> Self {
        LineReader {
            source: BufReader::new(source),
            line: Vec::new(),
            cut: false,
        }
    }

    /// The next line and its length in bytes before cutting, `None` at EOF
    /// (or on a read error).
    async fn next_line(&mut self) -> Option<(String, usize)> {
        loop {
            let buf = match self.source.fill_buf().await {
                Ok(buf) => buf,
                Err(_) => &[][..],
            };
            if buf.is_empty() {
                if self.line.is_empty() && !self.cut {
                    return None;
                }
                return Some(self.take());
            }
            let (chunk, newline) = match buf.iter().position(|&b| b == b'\n') {
                Some(at) => (&buf[..at], Some(at)),
                None => (buf, None),
            };
            let room = MAX_LOG_LINE_BYTES.saturating_sub(self.line.len());
            if chunk.len() > room {
                self.cut = true;
            }
            self.line.extend_from_slice(&chunk[..chunk.len().min(room)]);
            let used = newline.map_or(chunk.len(), |at| at + 1);
            self.source.consume(used);
            if newline.is_some() {
                return Some(self.take());
            }
        }
    }

    fn take(&mut self) -> (String, usize) {
        let mut bytes = std::mem::take(&mut self.line);
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        let len = bytes.len();
        let mut line = String::from_utf8_lossy(&bytes).into_owned();
        if std::mem::take(&mut self.cut) {
            line.push('…');
        }
        (line, len)
    }
}

/// Sends stderr lines to the server in batches, reading to EOF always (a
/// handler never dies of a closed pipe); keeps at most [`MAX_LOG_LINES`]
/// lines and [`MAX_LOG_BYTES`] bytes per attempt and ends with one note
/// counting what was dropped. Returns the last line, for the error message
/// of a failed attempt.
async fn forward_stderr(stderr: tokio::process::ChildStderr, ctx: TaskContext) -> Option<String> {
    let mut lines = LineReader::new(stderr);
    let mut batch = Vec::new();
    let mut last = None;
    let (mut kept_lines, mut kept_bytes) = (0usize, 0usize);
    let (mut dropped_lines, mut dropped_bytes) = (0usize, 0usize);
    let mut flush_at = tokio::time::Instant::now() + Duration::from_millis(250);
    loop {
        let next = tokio::time::timeout_at(flush_at, lines.next_line()).await;
        match next {
            Ok(Some((line, len))) => {
                if kept_lines >= MAX_LOG_LINES || kept_bytes + len > MAX_LOG_BYTES {
                    dropped_lines += 1;
                    dropped_bytes += len;
                    last = Some(line);
                    continue;
                }
                kept_lines += 1;
                kept_bytes += len;
                tracing::debug!(component = "worker", run_id = %ctx.task.run_id, step = %ctx.task.step, attempt = ctx.task.attempt, line = %line, "handler stderr");
                last = Some(line.clone());
                batch.push(line);
                if batch.len() >= 100 {
                    ctx.log(std::mem::take(&mut batch)).await;
                }
            }
            Ok(None) => break,
            Err(_) => {
                if !batch.is_empty() {
                    ctx.log(std::mem::take(&mut batch)).await;
                }
                flush_at = tokio::time::Instant::now() + Duration::from_millis(250);
            }
        }
    }
    if dropped_lines > 0 {
        batch.push(format!(
            "[weft] {dropped_lines} more stderr lines ({dropped_bytes} bytes) not kept: the cap is {MAX_LOG_LINES} lines or {MAX_LOG_BYTES} bytes per attempt"
        ));
    }
    if !batch.is_empty() {
        ctx.log(batch).await;
    }
    last
}

impl Handler for Arc<ExecHandler> {
    fn call(&self, ctx: TaskContext) -> HandlerFuture {
        Box::pin(self.clone().run(ctx))
    }
}

/// Handlers by name, ready to register on a worker, each supervised by
/// [`default_supervisor`] (if any).
pub fn handlers(list: Vec<ExecHandler>) -> HashMap<String, Arc<dyn Handler>> {
    handlers_supervised(list, default_supervisor())
}

/// Handlers by name, ready to register on a worker, each run under
/// `supervisor` (the `weft` binary), or directly when `None`.
pub fn handlers_supervised(
    list: Vec<ExecHandler>,
    supervisor: Option<PathBuf>,
) -> HashMap<String, Arc<dyn Handler>> {
    list.into_iter()
        .map(|mut h| {
            h.supervisor = h.supervisor.take().or_else(|| supervisor.clone());
            (h.name.clone(), Arc::new(Arc::new(h)) as Arc<dyn Handler>)
        })
        .collect()
}

/// The running binary when it is `weft` (it has the hidden
/// `__supervise` subcommand); `None` from any other binary (tests, benches),
/// whose handlers then run unsupervised. Such a binary can pass the path of
/// a `weft` binary to [`handlers_supervised`] instead.
pub fn default_supervisor() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    (exe.file_name()? == "weft").then_some(exe)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_entry_forms() {
        let text = r#"
[handlers]
"inventory.reserve" = "./handlers/reserve.sh"
"payments.charge" = { command = ["python3", "charge.py"], env = { MODE = "test" } }
"#;
        let list = parse(text, Path::new("/tmp")).unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].name, "inventory.reserve");
        assert_eq!(list[0].argv, vec!["sh", "-c", "./handlers/reserve.sh"]);
        assert_eq!(list[1].argv, vec!["python3", "charge.py"]);
        assert_eq!(list[1].env.get("MODE").map(String::as_str), Some("test"));
    }

    #[tokio::test]
    async fn lines_are_decoded_lossily_and_cut() {
        let long = "y".repeat(MAX_LOG_LINE_BYTES + 10);
        let input = format!("ok\r\ncaf\u{00e9}\n{long}\nlast");
        let mut bytes = input.into_bytes();
        // An invalid byte in the middle of the second line.
        bytes[6] = 0xff;
        let mut reader = LineReader::new(&bytes[..]);
        assert_eq!(reader.next_line().await, Some(("ok".to_owned(), 2)));
        let (line, _) = reader.next_line().await.unwrap();
        assert!(line.starts_with("ca\u{FFFD}"), "{line:?}");
        let (line, len) = reader.next_line().await.unwrap();
        assert_eq!(len, MAX_LOG_LINE_BYTES);
        assert!(line.ends_with('…'));
        assert_eq!(reader.next_line().await, Some(("last".to_owned(), 4)));
        assert_eq!(reader.next_line().await, None);
    }

    #[tokio::test]
    async fn stdout_is_kept_up_to_the_cap_and_counted_whole() {
        let data = vec![b'x'; 200_000];
        let (kept, total) = read_capped(&data[..], 1000).await;
        assert_eq!(kept.len(), 1000);
        assert_eq!(total, 200_000);
    }

    #[test]
    fn a_bare_handlers_file_name_is_in_the_current_directory() {
        let dir = std::env::temp_dir().join(format!("weft-exec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("handlers.toml");
        std::fs::write(&file, "[handlers]\nx = \"sh x.sh\"\n").unwrap();
        // `dir/handlers.toml` and, from `dir`, `handlers.toml`: same base.
        let list = load(&file).unwrap();
        assert_eq!(list[0].cwd, std::fs::canonicalize(&dir).unwrap());
        assert_eq!(
            load(Path::new("no-such-handlers.toml"))
                .unwrap_err()
                .to_string(),
            "cannot read handlers file no-such-handlers.toml: No such file or directory (os error 2)"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rejects_bad_files() {
        assert!(parse("[handlers]\n", Path::new(".")).is_err());
        assert!(parse("[handlers]\nx = \"\"\n", Path::new(".")).is_err());
        assert!(parse("[handlers]\nx = { command = [] }\n", Path::new(".")).is_err());
        assert!(
            parse(
                "[handlers]\nx = { command = \"a\", colour = \"red\" }\n",
                Path::new(".")
            )
            .is_err()
        );
        assert!(parse("handlers = 3\n", Path::new(".")).is_err());
    }
}
