//! `weft cancel` and `weft retry` without a run id: every run a filter
//! matches that the action applies to (`POST /v1/runs/cancel|retry`). The
//! matching runs are counted first (a dry run) and shown, then acted on
//! only after a `y` on the terminal or `--yes`, with that count as the
//! request's `expected`, so runs that started meanwhile are not touched.

use std::io::{BufRead as _, IsTerminal as _, Write as _};

use anyhow::{Result, bail};
use clap::Args;
use weft_api::{BulkActionRequest, BulkActionResponse};
use weft_client::Client;

/// The filter of a bulk cancel or retry (the same as `weft runs`).
#[derive(Args, Clone, Debug, Default)]
pub(crate) struct BulkArgs {
    /// Every matching run of this workflow (instead of one run id).
    #[arg(long)]
    workflow: Option<String>,
    /// Every matching run in this status (instead of one run id).
    #[arg(long)]
    status: Option<String>,
    /// Every matching run of this trace (instead of one run id).
    #[arg(long)]
    trace_id: Option<String>,
    /// Only runs created since: an RFC 3339 time or a duration back from now (1h).
    #[arg(long)]
    since: Option<String>,
    /// Only runs created before: an RFC 3339 time or a duration back from now (10m).
    #[arg(long)]
    until: Option<String>,
    /// Only runs started with this metadata; repeatable (all must match).
    #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = crate::parse_meta)]
    meta: Vec<(String, String)>,
    /// Act without asking (needed when standard input is not a terminal).
    #[arg(long)]
    yes: bool,
}

impl BulkArgs {
    /// Whether any filter was given.
    pub(crate) fn any(&self) -> bool {
        self.workflow.is_some()
            || self.status.is_some()
            || self.trace_id.is_some()
            || self.since.is_some()
            || self.until.is_some()
            || !self.meta.is_empty()
    }

    fn request(&self, expected: u32, dry_run: bool) -> BulkActionRequest {
        BulkActionRequest {
            workflow: self.workflow.clone(),
            status: self.status.clone(),
            trace_id: self.trace_id.clone(),
            since: self.since.clone(),
            until: self.until.clone(),
            metadata: self.meta.iter().cloned().collect(),
            expected,
            dry_run,
        }
    }
}

/// Cancels (`retry` false) or retries every run `args` matches.
pub(crate) async fn run(client: &Client, retry: bool, args: &BulkArgs, json: bool) -> Result<()> {
    if !args.any() {
        bail!(
            "name a run id, or a filter (--workflow, --status, --trace-id, --since, --until) for every run it matches"
        );
    }
    let send = |request: BulkActionRequest| async move {
        if retry {
            client.retry_runs(&request).await
        } else {
            client.cancel_runs(&request).await
        }
    };
    let (verb, done) = if retry {
        ("retry", "retried")
    } else {
        ("cancel", "cancelled")
    };
    let found = send(args.request(0, true)).await?;
    if found.matched == 0 {
        if json {
            println!("{}", serde_json::to_string(&found)?);
        } else {
            println!("no run matches that the action applies to: nothing to {verb}");
        }
        return Ok(());
    }
    if !args.yes {
        if !std::io::stdin().is_terminal() {
            bail!(
                "{} run(s) match: pass --yes to {verb} them (standard input is not a terminal to ask)",
                found.matched
            );
        }
        for r in &found.runs {
            eprintln!("{} {} {}", r.run_id, r.workflow, r.status);
        }
        eprint!("{verb} these {} runs? [y/N] ", found.matched);
        std::io::stderr().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            bail!("nothing {done}");
        }
    }
    let answer: BulkActionResponse = send(args.request(found.matched, false)).await?;
    if json {
        println!("{}", serde_json::to_string(&answer)?);
        return Ok(());
    }
    for r in &answer.runs {
        println!("{} {} {}", r.run_id, r.workflow, r.status);
    }
    for r in &answer.refused {
        println!(
            "{} not {done}: {} ({})",
            r.run_id, r.error.message, r.error.code
        );
    }
    println!("{} of {} run(s) {done}", answer.runs.len(), answer.matched);
    Ok(())
}
