//! Run and attempt spans built from the durable rows, not kept open: when a
//! run or an attempt ends, its span is emitted whole, with the trace and span
//! ids stored when it began and its stored start and end times. Whichever
//! process commits the end emits the span, so an engine restart mid-run still
//! yields one tree: `workflow.<name>` → `step.<step>` → the worker's
//! `execute <handler>`, and beside the steps `condition.<step>`, the time a
//! step's `when` took (`weft.condition_ms`), emitted when its decision is
//! committed.
//!
//! The SDK's `SpanBuilder` takes no ids of its own, so the provider's id
//! generator ([`PresetIds`]) hands out the row's ids while a span is built.

use std::{
    cell::Cell,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use opentelemetry::{
    Context, KeyValue,
    trace::{
        Event, Link, Span as _, SpanBuilder, SpanContext, SpanId, SpanKind, Status,
        TraceContextExt, TraceFlags, TraceId, TraceState, Tracer as _,
    },
};
use opentelemetry::{InstrumentationScope, trace::TracerProvider as _};
use opentelemetry_sdk::{
    Resource,
    trace::{
        IdGenerator, RandomIdGenerator, SamplingDecision, SdkTracer, SdkTracerProvider,
        ShouldSample, SpanProcessor,
    },
};
use weft_core::{
    AttemptKind, AttemptStatus, RunStatus,
    observe::{AttemptRecord, ConditionRecord, GaugeSnapshot, Observation, Observer, RunRecord},
};

use crate::sampler::SamplerConfig;

thread_local! {
    static PRESET: Cell<Option<(TraceId, SpanId)>> = const { Cell::new(None) };
}

/// A tracer provider over `processor` with Weft's id generator
/// ([`PresetIds`]) and `sampler`, and its `weft` tracer: the pipeline
/// `traces::Tracing` exports through, or a test's.
pub(crate) fn provider(
    processor: impl SpanProcessor + 'static,
    sampler: SamplerConfig,
    resource: Resource,
) -> (SdkTracerProvider, SdkTracer) {
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(sampler.sampler())
        .with_id_generator(PresetIds)
        .with_resource(resource)
        .build();
    let scope = InstrumentationScope::builder("weft")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build();
    let tracer = provider.tracer_with_scope(scope);
    (provider, tracer)
}

/// Random ids, except while [`with_ids`] builds a span from a row.
#[derive(Debug)]
pub(crate) struct PresetIds;

impl IdGenerator for PresetIds {
    fn new_trace_id(&self) -> TraceId {
        PRESET.with(Cell::get).map_or_else(
            || RandomIdGenerator::default().new_trace_id(),
            |(trace_id, _)| trace_id,
        )
    }

    fn new_span_id(&self) -> SpanId {
        PRESET.with(Cell::get).map_or_else(
            || RandomIdGenerator::default().new_span_id(),
            |(_, span_id)| span_id,
        )
    }
}

/// Runs `build` with the ids the next span must have. The SDK draws ids
/// synchronously on the building thread, so a thread-local suffices.
fn with_ids<R>(trace_id: TraceId, span_id: SpanId, build: impl FnOnce() -> R) -> R {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            PRESET.with(|preset| preset.set(None));
        }
    }
    PRESET.with(|preset| preset.set(Some((trace_id, span_id))));
    let _reset = Reset;
    build()
}

fn time(epoch_ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(epoch_ms.max(0) as u64)
}

/// A run's trace id as OpenTelemetry's (the same 16 bytes).
pub(crate) fn otel_trace(id: weft_core::TraceId) -> TraceId {
    TraceId::from(id.to_u128())
}

/// A span id as OpenTelemetry's (the same 8 bytes).
pub(crate) fn otel_span(id: weft_core::SpanId) -> SpanId {
    SpanId::from(id.to_u64())
}

pub(crate) fn remote(trace_id: TraceId, span_id: SpanId, flags: TraceFlags) -> Context {
    Context::new().with_remote_span_context(SpanContext::new(
        trace_id,
        span_id,
        flags,
        true,
        TraceState::default(),
    ))
}

/// Emits the spans of runs and attempts as the store reports them.
#[derive(Clone)]
pub struct RowSpans {
    tracer: SdkTracer,
    sampler: SamplerConfig,
}

impl RowSpans {
    pub(crate) fn new(tracer: SdkTracer, sampler: SamplerConfig) -> RowSpans {
        RowSpans { tracer, sampler }
    }

    /// The context a run span is built in: the caller's span when the run
    /// joined a trace (assumed sampled: the row keeps the span, not the flag).
    fn run_parent(trace_id: TraceId, caller: Option<SpanId>) -> Context {
        match caller {
            Some(span_id) => remote(trace_id, span_id, TraceFlags::SAMPLED),
            None => Context::new(),
        }
    }

    /// Whether the run's span is sampled, decided as the provider decides it,
    /// so that attempts follow their run and no span is orphaned.
    fn run_sampled(&self, trace_id: TraceId, caller: Option<SpanId>) -> bool {
        let parent = Self::run_parent(trace_id, caller);
        let result = self.sampler.sampler().should_sample(
            Some(&parent),
            trace_id,
            "",
            &SpanKind::Internal,
            &[],
            &[],
        );
        result.decision == SamplingDecision::RecordAndSample
    }

    pub fn run_span(&self, run: &RunRecord<'_>) {
        let (trace_id, span_id) = (otel_trace(run.trace_id), otel_span(run.span_id));
        let caller = run.parent_span_id.map(otel_span);
        let end = time(run.finished_at_ms);
        let mut attributes = vec![
            KeyValue::new("weft.run_id", run.run_id.to_string()),
            KeyValue::new("weft.workflow", run.workflow.to_owned()),
            KeyValue::new("weft.workflow_version", run.version),
            KeyValue::new("weft.status", run.status.as_str()),
            KeyValue::new("weft.timing.end_to_end_ms", run.duration_ms()),
        ];
        if let Some(reason) = run.reason {
            attributes.push(KeyValue::new("weft.reason", reason.as_str()));
        }
        let failed = run.status == RunStatus::Failed;
        let mut builder = SpanBuilder::from_name(format!("workflow.{}", run.workflow))
            .with_kind(SpanKind::Internal)
            .with_start_time(time(run.created_at_ms))
            .with_attributes(attributes);
        if failed {
            builder = builder.with_events(vec![exception(
                run.reason.map(|r| r.as_str()),
                run.error,
                end,
            )]);
        }
        let parent = Self::run_parent(trace_id, caller);
        let mut span = with_ids(trace_id, span_id, || {
            self.tracer.build_with_context(builder, &parent)
        });
        if failed {
            span.set_status(Status::error(
                run.error
                    .or(run.reason.map(|r| r.as_str()))
                    .unwrap_or("failed")
                    .to_owned(),
            ));
        }
        span.end_with_timestamp(end);
    }

    pub fn attempt_span(&self, attempt: &AttemptRecord<'_>) {
        let trace_id = otel_trace(attempt.trace_id);
        let (run_span_id, span_id) = (otel_span(attempt.run_span_id), otel_span(attempt.span_id));
        let caller = attempt.run_parent_span_id.map(otel_span);
        let flags = if self.run_sampled(trace_id, caller) {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        let end = time(attempt.finished_at_ms);
        let timing = &attempt.timing;
        let mut attributes = vec![
            KeyValue::new("weft.run_id", attempt.run_id.to_string()),
            KeyValue::new("weft.workflow", attempt.workflow.to_owned()),
            KeyValue::new("weft.workflow_version", attempt.version),
            KeyValue::new("weft.step", attempt.step.to_owned()),
            KeyValue::new("weft.attempt", attempt.attempt),
            KeyValue::new("weft.queue", attempt.queue.to_owned()),
            KeyValue::new("weft.worker_id", attempt.worker_id.to_owned()),
            KeyValue::new("weft.status", attempt.status.as_str()),
            KeyValue::new("weft.timing.queue_wait_ms", timing.queue_wait_ms),
            KeyValue::new("weft.timing.ingest_ms", timing.ingest_ms),
            KeyValue::new("weft.timing.total_ms", timing.total_ms),
        ];
        if let Some(reason) = attempt.reason {
            attributes.push(KeyValue::new("weft.reason", reason.as_str()));
        }
        if let Some(index) = attempt.index {
            attributes.push(KeyValue::new("weft.for_each.index", index));
        }
        if let Some(ms) = timing.dispatch_ms {
            attributes.push(KeyValue::new("weft.timing.dispatch_ms", ms));
        }
        if let Some(ms) = timing.handler_ms {
            attributes.push(KeyValue::new("weft.timing.handler_ms", ms));
        }
        let failed = attempt.status == AttemptStatus::Failed;
        // A compensation is `compensate.<step>`, linked (as a retry is to
        // the attempt before it) to the forward attempt it undoes.
        let name = match attempt.kind {
            AttemptKind::Forward => format!("step.{}", attempt.step),
            AttemptKind::Compensate => {
                attributes.push(KeyValue::new("weft.attempt_kind", attempt.kind.as_str()));
                format!("compensate.{}", attempt.step)
            }
        };
        let mut builder = SpanBuilder::from_name(name)
            .with_kind(SpanKind::Internal)
            .with_start_time(time(attempt.claimed_at_ms))
            .with_attributes(attributes);
        if let Some(previous) = attempt.previous_span_id.map(otel_span) {
            let context = SpanContext::new(trace_id, previous, flags, false, TraceState::default());
            builder = builder.with_links(vec![Link::with_context(context)]);
        }
        if failed {
            builder = builder.with_events(vec![exception(
                attempt.reason.map(|r| r.as_str()),
                attempt.error,
                end,
            )]);
        }
        let parent = remote(trace_id, run_span_id, flags);
        let mut span = with_ids(trace_id, span_id, || {
            self.tracer.build_with_context(builder, &parent)
        });
        if failed {
            span.set_status(Status::error(
                attempt
                    .error
                    .or(attempt.reason.map(|r| r.as_str()))
                    .unwrap_or("failed")
                    .to_owned(),
            ));
        }
        span.end_with_timestamp(end);
    }
}

impl RowSpans {
    /// `condition.<step>`: a child of the run span ending when the decision
    /// was committed and as long as the evaluation took. Its own span id is
    /// random: nothing links to it.
    pub fn condition_span(&self, condition: &ConditionRecord<'_>) {
        let (trace_id, run_span_id) = (
            otel_trace(condition.trace_id),
            otel_span(condition.run_span_id),
        );
        let caller = condition.run_parent_span_id.map(otel_span);
        let flags = if self.run_sampled(trace_id, caller) {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        let ms = i64::try_from(condition.condition_ms).unwrap_or(i64::MAX);
        let end = time(condition.decided_at_ms);
        let builder = SpanBuilder::from_name(format!("condition.{}", condition.step))
            .with_kind(SpanKind::Internal)
            .with_start_time(time(condition.decided_at_ms.saturating_sub(ms)))
            .with_attributes(vec![
                KeyValue::new("weft.run_id", condition.run_id.to_string()),
                KeyValue::new("weft.workflow", condition.workflow.to_owned()),
                KeyValue::new("weft.workflow_version", condition.version),
                KeyValue::new("weft.step", condition.step.to_owned()),
                KeyValue::new("weft.condition_ms", ms),
                KeyValue::new("weft.condition.result", condition.result),
            ]);
        let parent = remote(trace_id, run_span_id, flags);
        let mut span = self.tracer.build_with_context(builder, &parent);
        if condition.result == "error" {
            span.set_status(Status::error("condition_error"));
        }
        span.end_with_timestamp(end);
    }
}

/// The semantic-conventions `exception` event.
fn exception(kind: Option<&str>, message: Option<&str>, at: SystemTime) -> Event {
    let mut attributes = vec![KeyValue::new(
        "exception.type",
        kind.unwrap_or("error").to_owned(),
    )];
    if let Some(message) = message {
        attributes.push(KeyValue::new("exception.message", message.to_owned()));
    }
    Event::new("exception", at, attributes, 0)
}

impl Observer for RowSpans {
    fn observe(&self, observation: &Observation<'_>) {
        match observation {
            Observation::RunFinished(run) => self.run_span(run),
            Observation::AttemptFinished(attempt) => self.attempt_span(attempt),
            Observation::ConditionDecided(condition) => self.condition_span(condition),
            _ => {}
        }
    }

    fn gauges(&self, _: &GaugeSnapshot) {}
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use opentelemetry::trace::Status;
    use opentelemetry_sdk::{
        Resource,
        error::OTelSdkResult,
        trace::{SimpleSpanProcessor, SpanData, SpanExporter},
    };
    use weft_core::{Reason, observe::Timing};

    use super::*;

    #[derive(Debug, Clone, Default)]
    struct Collected(Arc<Mutex<Vec<SpanData>>>);

    impl SpanExporter for Collected {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            self.0.lock().unwrap().extend(batch);
            Ok(())
        }
    }

    fn pipeline(sampler: SamplerConfig) -> (RowSpans, Collected) {
        let collected = Collected::default();
        let (_provider, tracer) = provider(
            SimpleSpanProcessor::new(collected.clone()),
            sampler,
            Resource::builder_empty().build(),
        );
        (RowSpans::new(tracer, sampler), collected)
    }

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const RUN_ID: &str = "019b7c2e-5a1e-7000-8000-000000000001";
    const RUN_SPAN: &str = "00f067aa0ba902b7";

    fn run(status: RunStatus, caller: Option<&'static str>) -> RunRecord<'static> {
        RunRecord {
            run_id: RUN_ID.parse().unwrap(),
            trace_id: TRACE.parse().unwrap(),
            span_id: RUN_SPAN.parse().unwrap(),
            parent_span_id: caller.map(|c| c.parse().unwrap()),
            workflow: "etl",
            version: 3,
            created_at_ms: 1_700_000_000_000,
            finished_at_ms: 1_700_000_002_500,
            status,
            reason: (status == RunStatus::Failed).then_some(Reason::HandlerError),
            error: (status == RunStatus::Failed).then_some("boom"),
        }
    }

    fn attempt(
        n: i64,
        status: AttemptStatus,
        previous: Option<&'static str>,
    ) -> AttemptRecord<'static> {
        AttemptRecord {
            run_id: RUN_ID.parse().unwrap(),
            trace_id: TRACE.parse().unwrap(),
            run_span_id: RUN_SPAN.parse().unwrap(),
            run_parent_span_id: None,
            span_id: if n == 1 {
                "1111111111111111"
            } else {
                "2222222222222222"
            }
            .parse()
            .unwrap(),
            previous_span_id: previous.map(|p| p.parse().unwrap()),
            workflow: "etl",
            version: 3,
            step: "load",
            attempt: n,
            index: None,
            queue: "default",
            worker_id: "w-1",
            claimed_at_ms: 1_700_000_000_100,
            finished_at_ms: 1_700_000_000_400,
            status,
            reason: (status == AttemptStatus::Failed).then_some(Reason::Timeout),
            error: (status == AttemptStatus::Failed).then_some("too slow"),
            timing: Timing {
                queue_wait_ms: 7,
                dispatch_ms: Some(1),
                handler_ms: Some(250),
                ingest_ms: 2,
                total_ms: 300,
            },
            kind: AttemptKind::Forward,
        }
    }

    fn attr(span: &SpanData, key: &str) -> Option<String> {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.to_string())
    }

    #[test]
    fn run_span_has_the_rows_ids_times_and_attributes() {
        let (spans, collected) = pipeline(SamplerConfig::ParentBasedAlwaysOn);
        spans.run_span(&run(RunStatus::Completed, None));
        let out = collected.0.lock().unwrap();
        let span = &out[0];
        assert_eq!(span.name, "workflow.etl");
        assert_eq!(span.span_context.trace_id().to_string(), TRACE);
        assert_eq!(span.span_context.span_id().to_string(), RUN_SPAN);
        assert_eq!(span.parent_span_id, SpanId::INVALID);
        assert_eq!(span.start_time, time(1_700_000_000_000));
        assert_eq!(span.end_time, time(1_700_000_002_500));
        assert_eq!(attr(span, "weft.run_id").as_deref(), Some(RUN_ID));
        assert_eq!(attr(span, "weft.workflow_version").as_deref(), Some("3"));
        assert_eq!(attr(span, "weft.status").as_deref(), Some("completed"));
        assert_eq!(
            attr(span, "weft.timing.end_to_end_ms").as_deref(),
            Some("2500")
        );
        assert_eq!(attr(span, "weft.reason"), None);
        assert_eq!(span.status, Status::Unset);
    }

    #[test]
    fn a_condition_span_is_a_child_of_the_run_as_long_as_the_evaluation() {
        let (spans, collected) = pipeline(SamplerConfig::ParentBasedAlwaysOn);
        let condition = |result| ConditionRecord {
            run_id: RUN_ID.parse().unwrap(),
            trace_id: TRACE.parse().unwrap(),
            run_span_id: RUN_SPAN.parse().unwrap(),
            run_parent_span_id: None,
            workflow: "etl",
            version: 3,
            step: "load",
            decided_at_ms: 1_700_000_000_500,
            condition_ms: 7,
            result,
        };
        spans.condition_span(&condition("false"));
        spans.condition_span(&condition("error"));
        let out = collected.0.lock().unwrap();
        let (skipped, failed) = (&out[0], &out[1]);
        assert_eq!(skipped.name, "condition.load");
        assert_eq!(skipped.span_context.trace_id().to_string(), TRACE);
        assert_eq!(skipped.parent_span_id.to_string(), RUN_SPAN);
        assert_eq!(skipped.start_time, time(1_700_000_000_493));
        assert_eq!(skipped.end_time, time(1_700_000_000_500));
        assert_eq!(attr(skipped, "weft.condition_ms").as_deref(), Some("7"));
        assert_eq!(
            attr(skipped, "weft.condition.result").as_deref(),
            Some("false")
        );
        assert_eq!(skipped.status, Status::Unset);
        assert_eq!(failed.status, Status::error("condition_error"));
    }

    #[test]
    fn run_joins_the_callers_span_and_failure_is_an_error() {
        let (spans, collected) = pipeline(SamplerConfig::ParentBasedAlwaysOn);
        spans.run_span(&run(RunStatus::Failed, Some("aaaaaaaaaaaaaaaa")));
        let out = collected.0.lock().unwrap();
        let span = &out[0];
        assert_eq!(span.parent_span_id.to_string(), "aaaaaaaaaaaaaaaa");
        assert_eq!(span.span_context.trace_id().to_string(), TRACE);
        assert_eq!(span.span_context.span_id().to_string(), RUN_SPAN);
        assert_eq!(span.status, Status::error("boom"));
        assert_eq!(attr(span, "weft.reason").as_deref(), Some("handler_error"));
        let event = &span.events.events[0];
        assert_eq!(event.name, "exception");
        assert!(
            event
                .attributes
                .iter()
                .any(|kv| kv.key.as_str() == "exception.message" && kv.value.to_string() == "boom")
        );
    }

    #[test]
    fn attempt_spans_are_children_of_the_run_and_retries_link_back() {
        let (spans, collected) = pipeline(SamplerConfig::ParentBasedAlwaysOn);
        spans.attempt_span(&attempt(1, AttemptStatus::Failed, None));
        spans.attempt_span(&attempt(
            2,
            AttemptStatus::Completed,
            Some("1111111111111111"),
        ));
        let out = collected.0.lock().unwrap();
        let (first, second) = (&out[0], &out[1]);
        for span in [first, second] {
            assert_eq!(span.name, "step.load");
            assert_eq!(span.span_context.trace_id().to_string(), TRACE);
            assert_eq!(span.parent_span_id.to_string(), RUN_SPAN);
            assert_eq!(span.start_time, time(1_700_000_000_100));
            assert_eq!(span.end_time, time(1_700_000_000_400));
            assert_eq!(attr(span, "weft.queue").as_deref(), Some("default"));
            assert_eq!(attr(span, "weft.worker_id").as_deref(), Some("w-1"));
            assert_eq!(attr(span, "weft.timing.handler_ms").as_deref(), Some("250"));
            assert_eq!(attr(span, "weft.timing.total_ms").as_deref(), Some("300"));
        }
        assert_eq!(first.span_context.span_id().to_string(), "1111111111111111");
        assert_eq!(attr(first, "weft.attempt").as_deref(), Some("1"));
        assert_eq!(attr(first, "weft.reason").as_deref(), Some("timeout"));
        assert_eq!(first.status, Status::error("too slow"));
        assert_eq!(first.events.events[0].name, "exception");
        assert!(first.links.links.is_empty());
        assert_eq!(
            second.span_context.span_id().to_string(),
            "2222222222222222"
        );
        assert_eq!(second.status, Status::Unset);
        assert_eq!(
            second.links.links[0].span_context.span_id().to_string(),
            "1111111111111111"
        );
    }

    #[test]
    fn sampling_is_decided_per_run_and_ids_are_random_otherwise() {
        let (spans, collected) = pipeline(SamplerConfig::ParentBasedAlwaysOff);
        spans.run_span(&run(RunStatus::Completed, None));
        spans.attempt_span(&attempt(1, AttemptStatus::Completed, None));
        assert!(
            collected.0.lock().unwrap().is_empty(),
            "a dropped run drops its attempts too"
        );
        // A run that joined a caller's (sampled) trace follows the caller.
        spans.run_span(&run(RunStatus::Completed, Some("aaaaaaaaaaaaaaaa")));
        assert_eq!(collected.0.lock().unwrap().len(), 1);

        let generator = PresetIds;
        assert_ne!(generator.new_span_id(), generator.new_span_id());
        let preset = SpanId::from_hex(RUN_SPAN).unwrap();
        assert_eq!(
            with_ids(TraceId::from_hex(TRACE).unwrap(), preset, || generator
                .new_span_id()),
            preset
        );
        assert_ne!(
            generator.new_span_id(),
            preset,
            "the preset ends with the span it was set for"
        );
    }
}
