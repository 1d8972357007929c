//! The store's domain read models turned into the API's wire types: times
//! as RFC 3339, statuses as their strings, answers under the field names the
//! OpenAPI document states. Redaction of what people are shown is
//! `present.rs`'s; this module only changes the form. Requests' worker
//! timings go the other way, into the store's domain terms.

use weft_api::{
    AttemptDetail, AttemptTiming, AuditEntry, AuditList, ChildCounts, EventRecord,
    HeartbeatResponse, LogRecord, PutWorkflowResponse, RunDetail, RunList, RunSummary, RunTiming,
    StartRunResponse, StepDetail, Task, TokenInfo, WorkerTiming, WorkflowDetail, WorkflowSummary,
};
use weft_core::fan_out::Children;
use weft_store::{
    AttemptView, AuditPage, AuditRecord, ClaimedTask, Heartbeat, HistoryEvent, LogLine, Registered,
    ReportedTiming, RunInfo, RunPage, RunView, StartedRun, StepView, StoredTiming, TokenRecord,
    WorkflowInfo, WorkflowVersion, rfc3339,
};

/// A start's answer.
pub fn started_run(run: StartedRun) -> StartRunResponse {
    StartRunResponse {
        run_id: run.run_id.to_string(),
        trace_id: run.trace_id.to_string(),
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
        next_cursor: page.next_cursor.map(|id| id.to_string()),
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
        traceparent: weft_core::trace::format_traceparent(t.trace_id, t.span_id),
        deadline: t.deadline_at_ms.map(rfc3339),
        lease_id: t.lease_id,
        run_id: t.run_id.to_string(),
        trace_id: t.trace_id.to_string(),
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

/// A run as listed, and as an operator's action answers it.
pub fn run_summary(run: RunInfo) -> RunSummary {
    RunSummary {
        run_id: run.run_id.to_string(),
        trace_id: run.trace_id.to_string(),
        workflow: run.workflow,
        version: run.version,
        status: run.status.as_str().to_owned(),
        reason: run.reason,
        created_at: rfc3339(run.created_at_ms),
        started_at: run.started_at_ms.map(rfc3339),
        finished_at: run.finished_at_ms.map(rfc3339),
        metadata: run.metadata,
    }
}

/// A page of runs.
pub fn run_list(page: RunPage) -> RunList {
    RunList {
        runs: page.runs.into_iter().map(run_summary).collect(),
        next_cursor: page.next_cursor.map(|id| id.to_string()),
    }
}

/// A run with its steps and attempts; `trace_url` is left for the
/// presenter (`present.rs`) to fill.
pub fn run_detail(run: RunView) -> RunDetail {
    RunDetail {
        run_id: run.run_id.to_string(),
        trace_id: run.trace_id.to_string(),
        workflow: run.workflow,
        version: run.version,
        status: run.status.as_str().to_owned(),
        reason: run.reason,
        error: run.error,
        input: run.input,
        output: run.output,
        created_at: rfc3339(run.created_at_ms),
        started_at: run.started_at_ms.map(rfc3339),
        finished_at: run.finished_at_ms.map(rfc3339),
        request_id: run.request_id,
        metadata: run.metadata,
        trace_url: None,
        timing: RunTiming {
            schedule_to_start_ms: run.schedule_to_start_ms,
            end_to_end_ms: run.end_to_end_ms,
        },
        steps: run.steps.into_iter().map(step_detail).collect(),
    }
}

fn step_detail(step: StepView) -> StepDetail {
    StepDetail {
        name: step.name,
        kind: step.kind.to_owned(),
        handler: step.handler,
        queue: step.queue,
        depends_on: step.depends_on,
        status: step.status.as_str().to_owned(),
        reason: step.reason,
        output: step.output,
        error: step.error,
        due_at: step.due_at_ms.map(rfc3339),
        compensate: step.compensate,
        undo: step.undo.map(|u| u.as_str().to_owned()),
        attempts: step.attempts.into_iter().map(attempt_detail).collect(),
        children: step.children.map(child_counts),
    }
}

fn child_counts(c: Children) -> ChildCounts {
    ChildCounts {
        total: c.total.into(),
        pending: c.pending().into(),
        in_flight: c.in_flight.into(),
        completed: c.completed.into(),
        failed: c.failed.into(),
    }
}

fn attempt_detail(a: AttemptView) -> AttemptDetail {
    AttemptDetail {
        attempt: a.attempt,
        index: a.index,
        status: a.status.as_str().to_owned(),
        reason: a.reason,
        worker_id: a.worker_id,
        span_id: a.span_id.to_string(),
        claimed_at: rfc3339(a.claimed_at_ms),
        finished_at: a.finished_at_ms.map(rfc3339),
        error: a.error,
        timing: a.timing.map(attempt_timing),
        kind: a.kind.as_str().to_owned(),
        undoes_attempt: a.undoes_attempt,
    }
}

fn attempt_timing(t: StoredTiming) -> AttemptTiming {
    AttemptTiming {
        queue_wait_ms: t.queue_wait_ms,
        dispatch_ms: t.dispatch_ms,
        handler_ms: t.handler_ms,
        ingest_ms: t.ingest_ms,
        total_ms: t.total_ms,
    }
}

/// A run's history events.
pub fn events(events: Vec<HistoryEvent>) -> Vec<EventRecord> {
    events
        .into_iter()
        .map(|e| EventRecord {
            seq: e.seq,
            kind: e.kind,
            at: rfc3339(e.at_ms),
            step: e.step,
            attempt: e.attempt,
            data: e.data,
        })
        .collect()
}

/// A run's log lines.
pub fn log_lines(lines: Vec<LogLine>) -> Vec<LogRecord> {
    lines
        .into_iter()
        .map(|l| LogRecord {
            seq: l.seq,
            at: rfc3339(l.at_ms),
            step: l.step,
            attempt: l.attempt,
            line: l.line,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;
    use weft_core::{AttemptKind, AttemptStatus, RunStatus, StepStatus, UndoStatus};

    use super::*;

    /// 2026-01-02T03:04:05.678Z in epoch ms.
    const T: i64 = 1_767_323_045_678;
    /// A run id.
    const R1: &str = "019b7c2e-5a1e-7000-8000-000000000001";

    fn view() -> RunView {
        RunView {
            run_id: R1.parse().unwrap(),
            trace_id: "0af7651916cd43dd8448eb211c80319c".parse().unwrap(),
            workflow: "pay".into(),
            version: 2,
            status: RunStatus::Compensating,
            reason: Some("handler_error".into()),
            error: Some("declined".into()),
            input: json!({"amount": 5}),
            output: None,
            created_at_ms: T,
            started_at_ms: Some(T + 1),
            finished_at_ms: None,
            request_id: Some("req-1".into()),
            metadata: BTreeMap::from([("customer".into(), "42".into())]),
            schedule_to_start_ms: Some(1),
            end_to_end_ms: None,
            steps: vec![StepView {
                name: "charge".into(),
                kind: "task",
                handler: Some("p.charge".into()),
                queue: "default".into(),
                depends_on: vec![],
                status: StepStatus::Compensating,
                reason: None,
                output: Some(json!({"id": 7})),
                error: None,
                due_at_ms: Some(T + 2_000),
                compensate: Some("p.refund".into()),
                undo: Some(UndoStatus::Running),
                attempts: vec![AttemptView {
                    attempt: 2,
                    index: Some(3),
                    status: AttemptStatus::Running,
                    reason: None,
                    worker_id: "w1".into(),
                    span_id: "b7ad6b7169203331".parse().unwrap(),
                    claimed_at_ms: T + 10,
                    finished_at_ms: None,
                    error: None,
                    timing: Some(StoredTiming {
                        queue_wait_ms: 4,
                        dispatch_ms: None,
                        handler_ms: Some(9),
                        ingest_ms: 1,
                        total_ms: 12,
                    }),
                    kind: AttemptKind::Compensate,
                    undoes_attempt: Some(1),
                }],
                children: Some(Children {
                    total: 5,
                    dispatched: 3,
                    in_flight: 1,
                    completed: 1,
                    failed: 1,
                    undone: 0,
                    undo_failed: 0,
                }),
            }],
        }
    }

    #[test]
    fn a_run_view_becomes_the_wire_detail_field_for_field() {
        let wire = serde_json::to_value(run_detail(view())).unwrap();
        let attempt = json!({
            "attempt": 2, "index": 3, "status": "running", "reason": null,
            "worker_id": "w1", "span_id": "b7ad6b7169203331",
            "claimed_at": "2026-01-02T03:04:05.688Z", "finished_at": null,
            "error": null,
            "timing": {"queue_wait_ms": 4, "dispatch_ms": null,
                "handler_ms": 9, "ingest_ms": 1, "total_ms": 12},
            "kind": "compensate", "undoes_attempt": 1
        });
        let children = json!({"total": 5, "pending": 2, "in_flight": 1,
            "completed": 1, "failed": 1});
        let step = json!({
            "name": "charge", "kind": "task", "handler": "p.charge",
            "queue": "default", "depends_on": [], "status": "compensating",
            "reason": null, "output": {"id": 7}, "error": null,
            "due_at": "2026-01-02T03:04:07.678Z", "compensate": "p.refund",
            "undo": "running", "attempts": [attempt], "children": children
        });
        assert_eq!(
            wire,
            json!({
                "run_id": R1, "trace_id": "0af7651916cd43dd8448eb211c80319c",
                "workflow": "pay", "version": 2, "status": "compensating",
                "reason": "handler_error", "error": "declined",
                "input": {"amount": 5}, "output": null,
                "created_at": "2026-01-02T03:04:05.678Z",
                "started_at": "2026-01-02T03:04:05.679Z", "finished_at": null,
                "request_id": "req-1", "metadata": {"customer": "42"},
                "timing": {"schedule_to_start_ms": 1, "end_to_end_ms": null},
                "steps": [step]
            })
        );
    }

    #[test]
    fn a_run_info_events_and_logs_keep_their_fields() {
        let v = view();
        let info = RunInfo {
            run_id: v.run_id,
            trace_id: v.trace_id,
            workflow: v.workflow,
            version: v.version,
            status: RunStatus::Failed,
            reason: v.reason,
            created_at_ms: T,
            started_at_ms: None,
            finished_at_ms: Some(T),
            metadata: BTreeMap::new(),
        };
        let list = run_list(RunPage {
            runs: vec![info],
            next_cursor: Some(R1.parse().unwrap()),
        });
        let wire = serde_json::to_value(&list).unwrap();
        assert_eq!(wire["runs"][0]["status"], "failed");
        assert_eq!(wire["runs"][0]["finished_at"], "2026-01-02T03:04:05.678Z");
        assert!(wire["runs"][0].get("metadata").is_none(), "{wire}");
        assert_eq!(wire["next_cursor"], R1);

        let events = events(vec![HistoryEvent {
            seq: 9,
            kind: "attempt.failed".into(),
            at_ms: T,
            step: Some("charge".into()),
            attempt: Some(1),
            data: json!({"reason": "timeout"}),
        }]);
        assert_eq!(
            serde_json::to_value(&events[0]).unwrap(),
            json!({"seq": 9, "type": "attempt.failed", "at": "2026-01-02T03:04:05.678Z",
                "step": "charge", "attempt": 1, "data": {"reason": "timeout"}})
        );
        let lines = log_lines(vec![LogLine {
            seq: 3,
            at_ms: T,
            step: "charge".into(),
            attempt: 1,
            line: "hello".into(),
        }]);
        assert_eq!(
            (lines[0].at.as_str(), lines[0].line.as_str()),
            ("2026-01-02T03:04:05.678Z", "hello")
        );
    }
}
