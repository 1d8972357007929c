//! `weft compensation`: operators' actions on a saga's undos.

use anyhow::Result;
use clap::Subcommand;
use weft_client::Client;

/// `weft compensation`.
#[derive(Subcommand)]
pub enum CompensationCommand {
    /// Mark a step's failed compensation as skipped (an undo that can never
    /// succeed): when no other undo failed, the run ends `compensated`.
    Skip {
        /// The run (run_id or trace_id).
        id: String,
        /// The step whose undo failed.
        step: String,
        /// Why, recorded in the run's history beside the actor.
        #[arg(long)]
        comment: Option<String>,
    },
}

/// Runs a `weft compensation` command; returns the run after it.
pub async fn run(command: CompensationCommand, client: &Client) -> Result<weft_api::RunSummary> {
    match command {
        CompensationCommand::Skip { id, step, comment } => {
            Ok(client.skip_compensation(&id, &step, comment).await?)
        }
    }
}
