//! The store's domain read models turned into the API's wire types: times
//! as RFC 3339, statuses as their strings, answers under the field names the
//! OpenAPI document states. Redaction of what people are shown is
//! `present.rs`'s; this module only changes the form.

use weft_api::{
    HeartbeatResponse, PutWorkflowResponse, StartRunResponse, WorkflowDetail, WorkflowSummary,
};
use weft_store::{Heartbeat, Registered, StartedRun, WorkflowInfo, WorkflowVersion, rfc3339};

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

/// A registration's answer.
pub fn registered(put: Registered) -> PutWorkflowResponse {
    PutWorkflowResponse {
        name: put.name,
        version: put.version,
        created: put.created,
    }
}

/// An item of the workflow list.
pub fn workflow_summary(w: WorkflowInfo) -> WorkflowSummary {
    WorkflowSummary {
        name: w.name,
        version: w.version,
        description: w.description,
        steps: w.steps,
        created_at: rfc3339(w.created_at_ms),
    }
}

/// One version of a workflow.
pub fn workflow_detail(w: WorkflowVersion) -> WorkflowDetail {
    WorkflowDetail {
        name: w.name,
        version: w.version,
        description: w.description,
        created_at: rfc3339(w.created_at_ms),
        manifest: w.manifest,
        versions: w.versions,
    }
}
