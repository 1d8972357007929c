//! Bulk actions on a filtered list of runs: `POST /v1/runs/cancel` and
//! `POST /v1/runs/retry` (the dashboard's bulk buttons, `weft runs cancel`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{ErrorDetail, RunSummary};

/// Most runs one bulk action acts on; a filter matching more is refused
/// (400 `too_many_runs`): narrow it, or act in several calls.
pub const MAX_BULK_RUNS: u32 = 1000;

/// The body of `POST /v1/runs/cancel` and `POST /v1/runs/retry`: the same
/// filter as `GET /v1/runs`, and how many runs the caller expects it to act
/// on. The action applies to the matching runs it can change (cancel: pending
/// or running; retry: failed or cancelled); when their number is not
/// `expected` nothing is done and the answer is 409 `count_changed`, whose
/// message says the number now, so a confirmation never acts on runs the
/// person did not see counted.
///
/// A field the filter does not know is 400 `invalid_json`: a misspelt filter
/// never widens the action.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkActionRequest {
    /// Only runs of this workflow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    /// Only runs in this status (one the action applies to, else none match).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Only runs of this trace: 32 lowercase hex digits, not all zero (400
    /// `invalid_trace_id` otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        min_length = 32,
        max_length = 32,
        pattern = "^[0-9a-f]*[1-9a-f][0-9a-f]*$"
    )]
    pub trace_id: Option<String>,
    /// Only runs created at or after this time: RFC 3339, or a duration back
    /// from now such as `1h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Only runs created before this time: RFC 3339, or a duration back from
    /// now such as `10m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// Only runs started with each of these metadata pairs (the
    /// `meta.<key>=<value>` filters of `GET /v1/runs`; at most 16, bounded
    /// like a start's metadata, else 400 `invalid_metadata`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub metadata: std::collections::BTreeMap<String, String>,
    /// How many runs the caller expects the action to apply to, 0 to
    /// [`MAX_BULK_RUNS`]; not checked on a dry run.
    #[serde(default)]
    pub expected: u32,
    /// Only count: answer the matching runs (in `runs`, as they are now)
    /// and change nothing. What `weft cancel --workflow …` shows before it
    /// asks.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

/// The answer of a bulk action: each run it changed, and each run that
/// changed under it between the count and its turn (refused as its single
/// action would be, e.g. 409 `conflict` for a run that ended meanwhile).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct BulkActionResponse {
    /// How many runs matched (equal to the request's `expected`).
    pub matched: u32,
    /// The runs acted on, as each single action answers (on a dry run, the
    /// runs that match, unchanged).
    pub runs: Vec<RunSummary>,
    /// The runs that were not, with why.
    pub refused: Vec<BulkRefusal>,
}

/// One run a bulk action did not change.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BulkRefusal {
    /// The run's id.
    pub run_id: String,
    /// Why, as its single action would answer.
    pub error: ErrorDetail,
}
