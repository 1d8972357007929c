//! Handlers as external commands, in any language (SPEC §2, `weft worker`).
//!
//! Protocol: the task input (`{"input", "steps"}`) as JSON on stdin; the
//! output as JSON on stdout (empty stdout means `null`); stderr lines become
//! the attempt's log lines; exit status 0 is success. A failure is permanent
//! (no retry) when the command exits with status 100, or prints
//! `{"error": {"message": "...", "retryable": false}}` on stdout. The
//! environment carries `WEFT_RUN_ID`, `WEFT_TRACE_ID`, `WEFT_WORKFLOW`,
//! `WEFT_STEP`, `WEFT_ATTEMPT`, `TRACEPARENT` (the worker's `execute` span when
//! it exports spans, else the attempt's) and `BAGGAGE` when the run has some.
//! Each command runs in its own process group, killed whole on timeout or
//! cancellation.

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

use crate::{Handler, HandlerError, HandlerFuture, TaskContext};

/// Exit status a command uses to say "do not retry".
pub const PERMANENT_FAILURE_EXIT: i32 = 100;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read handlers file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("handlers file {path} is not valid: {message}")]
    Invalid { path: PathBuf, message: String },
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
    pub name: String,
    /// `sh -c LINE` or an argv.
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub cwd: PathBuf,
}

/// Reads a handlers file. Relative commands and working directories are
/// resolved against the file's directory, so a repo can ship its handlers.
pub fn load(path: &Path) -> Result<Vec<ExecHandler>, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text, path.parent().unwrap_or(Path::new("."))).map_err(|message| Error::Invalid {
        path: path.to_owned(),
        message,
    })
}

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
            kill_group(pgid);
        }
    }
}

#[allow(unsafe_code)]
fn kill_group(pgid: i32) {
    // SAFETY: killpg has no memory-safety preconditions; the worst outcome
    // of a stale id is ESRCH, which is ignored.
    unsafe {
        libc::killpg(pgid, libc::SIGKILL);
    }
}

impl ExecHandler {
    async fn run(self: Arc<Self>, ctx: TaskContext) -> Result<Value, HandlerError> {
        let task = ctx.task.clone();
        let mut command = tokio::process::Command::new(&self.argv[0]);
        command
            .args(&self.argv[1..])
            .current_dir(&self.cwd)
            .envs(&self.env)
            .env("WEFT_RUN_ID", &task.run_id)
            .env("WEFT_TRACE_ID", &task.trace_id)
            .env("WEFT_WORKFLOW", &task.workflow)
            .env("WEFT_STEP", &task.step)
            .env("WEFT_ATTEMPT", task.attempt.to_string())
            .env("TRACEPARENT", ctx.traceparent())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(baggage) = ctx.baggage() {
            command.env("BAGGAGE", baggage);
        }
        let mut child = command.spawn().map_err(|err| {
            HandlerError::retryable(format!("cannot start `{}`: {err}", self.argv.join(" ")))
        })?;
        let mut guard = GroupGuard {
            pgid: child.id().map(|id| id as i32),
        };

        let mut stdin = child.stdin.take().expect("stdin piped");
        let input = serde_json::to_vec(&task.input).expect("JSON serializes");
        let writer = tokio::spawn(async move {
            // A command that ignores stdin may close it early: not an error.
            let _ = stdin.write_all(&input).await;
            let _ = stdin.shutdown().await;
        });
        let mut stdout = child.stdout.take().expect("stdout piped");
        let reader = tokio::spawn(async move {
            let mut out = Vec::new();
            let _ = stdout.read_to_end(&mut out).await;
            out
        });
        let stderr = child.stderr.take().expect("stderr piped");
        let log_ctx = ctx.clone();
        let logger = tokio::spawn(async move { forward_stderr(stderr, log_ctx).await });

        let status = child.wait().await.map_err(|err| {
            HandlerError::retryable(format!("waiting for the command failed: {err}"))
        })?;
        guard.pgid = None;
        let _ = writer.await;
        let stdout = reader.await.unwrap_or_default();
        let last_stderr = logger.await.unwrap_or_default();

        let text = String::from_utf8_lossy(&stdout);
        let text = text.trim();
        if status.success() {
            if text.is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_str(text).map_err(|err| {
                HandlerError::permanent(format!("stdout is not JSON: {err}"))
                    .with_kind("invalid_output")
            });
        }
        let code = status.code();
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
        Err(HandlerError {
            message,
            kind: None,
            retryable: code != Some(PERMANENT_FAILURE_EXIT),
        })
    }
}

/// Sends stderr lines to the server in batches; returns the last line, for
/// the error message of a failed attempt.
async fn forward_stderr(stderr: tokio::process::ChildStderr, ctx: TaskContext) -> Option<String> {
    let mut lines = BufReader::new(stderr).lines();
    let mut batch = Vec::new();
    let mut last = None;
    let mut flush_at = tokio::time::Instant::now() + Duration::from_millis(250);
    loop {
        let next = tokio::time::timeout_at(flush_at, lines.next_line()).await;
        match next {
            Ok(Ok(Some(line))) => {
                tracing::debug!(component = "worker", run_id = %ctx.task.run_id, step = %ctx.task.step, attempt = ctx.task.attempt, line = %line, "handler stderr");
                last = Some(line.clone());
                batch.push(line);
                if batch.len() >= 100 {
                    ctx.log(std::mem::take(&mut batch)).await;
                }
            }
            Ok(Ok(None)) | Ok(Err(_)) => break,
            Err(_) => {
                if !batch.is_empty() {
                    ctx.log(std::mem::take(&mut batch)).await;
                }
                flush_at = tokio::time::Instant::now() + Duration::from_millis(250);
            }
        }
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

/// Handlers by name, ready to register on a worker.
pub fn handlers(list: Vec<ExecHandler>) -> HashMap<String, Arc<dyn Handler>> {
    list.into_iter()
        .map(|h| (h.name.clone(), Arc::new(Arc::new(h)) as Arc<dyn Handler>))
        .collect()
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
