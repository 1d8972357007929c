//! The store's domain read models turned into the API's wire types: times
//! as RFC 3339, statuses as their strings, answers under the field names the
//! OpenAPI document states. Redaction of what people are shown is
//! `present.rs`'s; this module only changes the form. Requests' worker
//! timings go the other way, into the store's domain terms.

use weft_api::{
    AuditEntry, AuditList, HeartbeatResponse, PutWorkflowResponse, StartRunResponse, Task,
    TokenInfo, WorkerTiming, WorkflowDetail, WorkflowSummary,
};
use weft_store::{
    AuditPage, AuditRecord, ClaimedTask, Heartbeat, Registered, ReportedTiming, StartedRun,
    TokenRecord, WorkflowInfo, WorkflowVersion, rfc3339,
};

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

/// A page of the audit log.
pub fn audit_list(page: AuditPage) -> AuditList {
    AuditList {
        entries: page.entries.into_iter().map(audit_entry).collect(),
        next_cursor: page.next_cursor,
    }
}

fn audit_entry(e: AuditRecord) -> AuditEntry {
    AuditEntry {
        id: e.id,
        at: rfc3339(e.at_ms),
        actor: e.actor,
        on_behalf_of: e.on_behalf_of,
        action: e.action,
        target: e.target,
        detail: e.detail,
    }
}

/// The API's view of a token (never its secret).
pub fn token_info(record: &TokenRecord) -> TokenInfo {
    TokenInfo {
        token_id: record.token_id.clone(),
        name: record.name.clone(),
        role: record.role.clone(),
        queues: record.queues.clone(),
        created_at: rfc3339(record.created_at),
        created_by: record.created_by.clone(),
        expires_at: record.expires_at.map(rfc3339),
        revoked_at: record.revoked_at.map(rfc3339),
        last_used_at: record.last_used_at.map(rfc3339),
    }
}

/// A worker's own measures of an attempt, as the store takes them.
pub fn reported_timing(timing: Option<WorkerTiming>) -> Option<ReportedTiming> {
    timing.map(|t| ReportedTiming {
        dispatch_ms: t.dispatch_ms,
        handler_ms: t.handler_ms,
    })
}

/// A claimed attempt as its worker receives it: the W3C `traceparent` of
/// the attempt's span, the deadline in RFC 3339.
pub fn task(t: ClaimedTask) -> Task {
    Task {
        traceparent: weft_core::trace::format_traceparent(&t.trace_id, &t.span_id),
        deadline: t.deadline_at_ms.map(rfc3339),
        lease_id: t.lease_id,
        run_id: t.run_id,
        trace_id: t.trace_id,
        workflow: t.workflow,
        step: t.step,
        attempt: t.attempt,
        handler: t.handler,
        input: t.input,
        timeout_ms: t.timeout_ms,
        lease_ms: t.lease_ms,
        baggage: t.baggage,
        max_output_bytes: t.max_output_bytes,
        idempotency_key: t.idempotency_key,
    }
}
