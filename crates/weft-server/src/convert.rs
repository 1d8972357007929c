//! The store's domain read models turned into the API's wire types: times
//! as RFC 3339, statuses as their strings, answers under the field names the
//! OpenAPI document states. Redaction of what people are shown is
//! `present.rs`'s; this module only changes the form.

use weft_api::{HeartbeatResponse, StartRunResponse};
use weft_store::{Heartbeat, StartedRun};

/// A start's answer.
pub fn started_run(run: StartedRun) -> StartRunResponse {
    StartRunResponse {
        run_id: run.run_id,
        trace_id: run.trace_id,
        created: run.created,
    }
}

/// A heartbeat's answer.
pub fn heartbeat(beat: Heartbeat) -> HeartbeatResponse {
    HeartbeatResponse {
        cancel_requested: beat.cancel_requested,
    }
}
