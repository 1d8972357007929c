//! Every Weft metric, defined once with its help text, unit and buckets.
//! Code records through the typed methods of [`Metrics`]; names never appear
//! as string literals elsewhere.
//!
//! Label values are bounded: workflow, step and queue names come from
//! registered definitions, and each kind is capped ([`LabelCap`]); names past
//! the cap are recorded as `other`. Run and trace ids never become labels —
//! the trace id rides on step and run histograms as an exemplar only.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, atomic::AtomicU64},
    time::SystemTime,
};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        exemplar::HistogramWithExemplars,
        family::{Family, MetricConstructor},
        gauge::Gauge,
        histogram::Histogram,
    },
    registry::{Registry, Unit},
};

/// Run durations: sub-second to a day.
pub const RUN_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0,
    86400.0,
];
/// Step attempt and handler durations: a millisecond to an hour.
pub const STEP_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 3600.0,
];
/// Queue wait: from instant dispatch to a backlog of an hour.
pub const QUEUE_WAIT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
    3600.0,
];
/// Long polls last up to their wait (30 s at most).
pub const POLL_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0,
];
/// HTTP requests and database queries: fast paths.
pub const FAST_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

pub const OTHER: &str = "other";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkflowLabels {
    workflow: String,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkflowStatusLabels {
    workflow: String,
    status: String,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    workflow: String,
    step: String,
    status: String,
    reason: String,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    workflow: String,
    step: String,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepStatusLabels {
    workflow: String,
    step: String,
    status: String,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    queue: String,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PollLabels {
    queue: String,
    outcome: String,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: String,
    route: String,
    status: String,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpRouteLabels {
    method: String,
    route: String,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    op: String,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: String,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TraceExemplar {
    trace_id: String,
}

#[derive(Clone)]
struct Buckets(&'static [f64]);

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(self.0.iter().copied())
    }
}

impl MetricConstructor<HistogramWithExemplars<TraceExemplar>> for Buckets {
    fn new_metric(&self) -> HistogramWithExemplars<TraceExemplar> {
        HistogramWithExemplars::new(self.0.iter().copied())
    }
}

type Hist<L> = Family<L, Histogram, Buckets>;
type ExemplarHist<L> = Family<L, HistogramWithExemplars<TraceExemplar>, Buckets>;
type FloatGauge = Gauge<f64, AtomicU64>;

/// Caps the distinct values of one label kind; later values become `other`.
#[derive(Debug)]
pub struct LabelCap {
    max: usize,
    seen: Mutex<HashSet<String>>,
}

impl LabelCap {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            seen: Mutex::new(HashSet::new()),
        }
    }

    pub fn apply(&self, value: &str) -> String {
        let mut seen = self.seen.lock().expect("label cap lock");
        if seen.contains(value) {
            return value.to_owned();
        }
        if seen.len() < self.max {
            seen.insert(value.to_owned());
            return value.to_owned();
        }
        OTHER.to_owned()
    }
}

/// Caps on distinct label values, per kind.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    pub workflows: usize,
    pub steps: usize,
    pub queues: usize,
}

impl Default for Caps {
    fn default() -> Self {
        Self {
            workflows: 200,
            steps: 2_000,
            queues: 100,
        }
    }
}

pub use weft_core::observe::GaugeSnapshot;
use weft_core::{
    TraceId,
    observe::{Observation, Observer},
};

struct Families {
    runs_started: Family<WorkflowLabels, Counter>,
    runs_finished: Family<WorkflowStatusLabels, Counter>,
    runs_retried: Family<WorkflowLabels, Counter>,
    step_attempts: Family<AttemptLabels, Counter>,
    step_retries: Family<StepLabels, Counter>,
    compensations: Family<StepStatusLabels, Counter>,
    leases_expired: Family<QueueLabels, Counter>,
    worker_polls: Family<PollLabels, Counter>,
    http_requests: Family<HttpLabels, Counter>,
    run_duration: ExemplarHist<WorkflowStatusLabels>,
    step_duration: ExemplarHist<StepStatusLabels>,
    step_queue_wait: Hist<QueueLabels>,
    step_handler: Hist<StepLabels>,
    worker_poll_duration: Hist<QueueLabels>,
    http_request_duration: Hist<HttpRouteLabels>,
    db_query_duration: Hist<OpLabels>,
    runs_active: Family<WorkflowStatusLabels, Gauge>,
    steps_ready: Family<QueueLabels, Gauge>,
    steps_running: Family<QueueLabels, Gauge>,
    oldest_ready_age: Family<QueueLabels, FloatGauge>,
    workers_active: Family<QueueLabels, Gauge>,
    runs_stalled: Family<ReasonLabels, Gauge>,
    db_pool_connections: Family<StateLabels, Gauge>,
    build_info: Family<VersionLabels, Gauge>,
}

/// The process's metrics: a cheap-to-clone handle.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    families: Families,
    workflows: LabelCap,
    steps: LabelCap,
    queues: LabelCap,
    /// Label sets each gauge family was last set with, so that a value that
    /// disappears from the database goes to zero rather than going stale.
    gauge_keys: Mutex<HashMap<&'static str, HashSet<Vec<String>>>>,
}

impl Metrics {
    pub fn new(version: &str, caps: Caps) -> Metrics {
        let mut registry = Registry::with_prefix("weft");
        let f = Families {
            runs_started: Family::default(),
            runs_finished: Family::default(),
            runs_retried: Family::default(),
            step_attempts: Family::default(),
            step_retries: Family::default(),
            compensations: Family::default(),
            leases_expired: Family::default(),
            worker_polls: Family::default(),
            http_requests: Family::default(),
            run_duration: Family::new_with_constructor(Buckets(RUN_BUCKETS)),
            step_duration: Family::new_with_constructor(Buckets(STEP_BUCKETS)),
            step_queue_wait: Family::new_with_constructor(Buckets(QUEUE_WAIT_BUCKETS)),
            step_handler: Family::new_with_constructor(Buckets(STEP_BUCKETS)),
            worker_poll_duration: Family::new_with_constructor(Buckets(POLL_BUCKETS)),
            http_request_duration: Family::new_with_constructor(Buckets(FAST_BUCKETS)),
            db_query_duration: Family::new_with_constructor(Buckets(FAST_BUCKETS)),
            runs_active: Family::default(),
            steps_ready: Family::default(),
            steps_running: Family::default(),
            oldest_ready_age: Family::default(),
            workers_active: Family::default(),
            runs_stalled: Family::default(),
            db_pool_connections: Family::default(),
            build_info: Family::default(),
        };
        registry.register(
            "runs_started",
            "Runs created, by workflow",
            f.runs_started.clone(),
        );
        registry.register(
            "runs_finished",
            "Runs that reached a final status, by workflow and status",
            f.runs_finished.clone(),
        );
        registry.register(
            "runs_retried",
            "Terminal runs made active again by a retry, by workflow: started + retried - finished = active",
            f.runs_retried.clone(),
        );
        registry.register(
            "step_attempts",
            "Step attempts that ended, by workflow, step, status and failure reason (none on success)",
            f.step_attempts.clone(),
        );
        registry.register(
            "step_retries",
            "Retries scheduled after a failed attempt, by workflow and step",
            f.step_retries.clone(),
        );
        registry.register(
            "leases_expired",
            "Attempts whose worker stopped renewing its lease, by queue",
            f.leases_expired.clone(),
        );
        registry.register(
            "worker_polls",
            "Worker polls answered, by queue and outcome (tasks, empty, error)",
            f.worker_polls.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests served, by method, route template and status",
            f.http_requests.clone(),
        );
        registry.register_with_unit(
            "run_duration",
            "Run creation to final status; exemplars carry the run's trace_id",
            Unit::Seconds,
            f.run_duration.clone(),
        );
        registry.register_with_unit(
            "step_duration",
            "Step attempt claim to result committed; exemplars carry the run's trace_id",
            Unit::Seconds,
            f.step_duration.clone(),
        );
        registry.register_with_unit(
            "step_queue_wait",
            "Step ready to claimed, by queue",
            Unit::Seconds,
            f.step_queue_wait.clone(),
        );
        registry.register_with_unit(
            "step_handler",
            "Handler run time reported by workers",
            Unit::Seconds,
            f.step_handler.clone(),
        );
        registry.register_with_unit(
            "worker_poll_duration",
            "How long worker polls were held",
            Unit::Seconds,
            f.worker_poll_duration.clone(),
        );
        registry.register_with_unit(
            "http_request_duration",
            "HTTP request handling time, by method and route template",
            Unit::Seconds,
            f.http_request_duration.clone(),
        );
        registry.register_with_unit(
            "db_query_duration",
            "Store operation time, by operation",
            Unit::Seconds,
            f.db_query_duration.clone(),
        );
        registry.register(
            "compensations",
            "Compensation attempts (a step's `compensate` handler) ended, by workflow, step and status; not counted in step_attempts",
            f.compensations.clone(),
        );
        registry.register(
            "runs_active",
            "Runs not yet finished, by workflow and status (from the database)",
            f.runs_active.clone(),
        );
        registry.register(
            "steps_ready",
            "Steps ready and waiting for a worker, by queue (from the database)",
            f.steps_ready.clone(),
        );
        registry.register(
            "steps_running",
            "Steps claimed by a worker, by queue (from the database)",
            f.steps_running.clone(),
        );
        registry.register_with_unit(
            "oldest_ready_step_age",
            "Age of the oldest ready step, by queue (from the database)",
            Unit::Seconds,
            f.oldest_ready_age.clone(),
        );
        registry.register(
            "workers_active",
            "Workers that polled a queue in the last 30 seconds",
            f.workers_active.clone(),
        );
        registry.register(
            "runs_stalled",
            "Runs that cannot progress, by reason (from the database)",
            f.runs_stalled.clone(),
        );
        registry.register(
            "db_pool_connections",
            "Database pool connections, by state (idle, in_use)",
            f.db_pool_connections.clone(),
        );
        registry.register(
            "build_info",
            "Always 1; the version label names the build",
            f.build_info.clone(),
        );
        f.build_info
            .get_or_create(&VersionLabels {
                version: version.to_owned(),
            })
            .set(1);
        Metrics {
            inner: Arc::new(Inner {
                registry,
                families: f,
                workflows: LabelCap::new(caps.workflows),
                steps: LabelCap::new(caps.steps),
                queues: LabelCap::new(caps.queues),
                gauge_keys: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn f(&self) -> &Families {
        &self.inner.families
    }

    fn workflow(&self, name: &str) -> String {
        self.inner.workflows.apply(name)
    }

    fn step(&self, workflow: &str, step: &str) -> (String, String) {
        let workflow = self.workflow(workflow);
        // A capped workflow's steps are folded too, so the pair stays bounded.
        let step = if workflow == OTHER {
            OTHER.to_owned()
        } else {
            self.inner.steps.apply(&format!("{workflow}\u{0}{step}"))
        };
        let step = if step == OTHER {
            step
        } else {
            step.split('\u{0}').nth(1).unwrap_or(OTHER).to_owned()
        };
        (workflow, step)
    }

    fn queue(&self, name: &str) -> String {
        self.inner.queues.apply(name)
    }

    /// Counts a terminal run retried (`weft retry`): it will finish again.
    pub fn run_retried(&self, workflow: &str) {
        self.f()
            .runs_retried
            .get_or_create(&WorkflowLabels {
                workflow: self.workflow(workflow),
            })
            .inc();
    }

    pub fn run_started(&self, workflow: &str) {
        self.f()
            .runs_started
            .get_or_create(&WorkflowLabels {
                workflow: self.workflow(workflow),
            })
            .inc();
    }

    pub fn run_finished(&self, workflow: &str, status: &str, seconds: f64, trace_id: TraceId) {
        let labels = WorkflowStatusLabels {
            workflow: self.workflow(workflow),
            status: status.to_owned(),
        };
        self.f().runs_finished.get_or_create(&labels).inc();
        let exemplar = TraceExemplar {
            trace_id: trace_id.to_string(),
        };
        self.f().run_duration.get_or_create(&labels).observe(
            seconds,
            Some(exemplar),
            Some(SystemTime::now()),
        );
    }

    /// An attempt ended; `reason` is `none` for a success.
    #[allow(clippy::too_many_arguments)]
    pub fn attempt_finished(
        &self,
        workflow: &str,
        step: &str,
        status: &str,
        reason: &str,
        seconds: f64,
        handler_seconds: Option<f64>,
        trace_id: TraceId,
    ) {
        let (workflow, step) = self.step(workflow, step);
        self.f()
            .step_attempts
            .get_or_create(&AttemptLabels {
                workflow: workflow.clone(),
                step: step.clone(),
                status: status.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
        let exemplar = TraceExemplar {
            trace_id: trace_id.to_string(),
        };
        self.f()
            .step_duration
            .get_or_create(&StepStatusLabels {
                workflow: workflow.clone(),
                step: step.clone(),
                status: status.to_owned(),
            })
            .observe(seconds, Some(exemplar), Some(SystemTime::now()));
        if let Some(handler) = handler_seconds {
            self.f()
                .step_handler
                .get_or_create(&StepLabels { workflow, step })
                .observe(handler);
        }
    }

    /// One compensation attempt ended with `status` (`weft_compensations_total`).
    pub fn compensation_finished(&self, workflow: &str, step: &str, status: &str) {
        let (workflow, step) = self.step(workflow, step);
        self.f()
            .compensations
            .get_or_create(&StepStatusLabels {
                workflow,
                step,
                status: status.to_owned(),
            })
            .inc();
    }

    pub fn step_retrying(&self, workflow: &str, step: &str) {
        let (workflow, step) = self.step(workflow, step);
        self.f()
            .step_retries
            .get_or_create(&StepLabels { workflow, step })
            .inc();
    }

    pub fn attempt_claimed(&self, queue: &str, queue_wait_seconds: f64) {
        self.f()
            .step_queue_wait
            .get_or_create(&QueueLabels {
                queue: self.queue(queue),
            })
            .observe(queue_wait_seconds);
    }

    pub fn lease_expired(&self, queue: &str) {
        self.f()
            .leases_expired
            .get_or_create(&QueueLabels {
                queue: self.queue(queue),
            })
            .inc();
    }

    pub fn worker_poll(&self, queue: &str, outcome: &str, seconds: f64) {
        let queue = self.queue(queue);
        self.f()
            .worker_polls
            .get_or_create(&PollLabels {
                queue: queue.clone(),
                outcome: outcome.to_owned(),
            })
            .inc();
        self.f()
            .worker_poll_duration
            .get_or_create(&QueueLabels { queue })
            .observe(seconds);
    }

    /// `route` must be a route template (`/v1/runs/{id}`), never a raw path.
    pub fn http_request(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let method = method.to_owned();
        let route = route.to_owned();
        self.f()
            .http_requests
            .get_or_create(&HttpLabels {
                method: method.clone(),
                route: route.clone(),
                status: status.to_string(),
            })
            .inc();
        self.f()
            .http_request_duration
            .get_or_create(&HttpRouteLabels { method, route })
            .observe(seconds);
    }

    pub fn db_query(&self, op: &'static str, seconds: f64) {
        self.f()
            .db_query_duration
            .get_or_create(&OpLabels { op: op.to_owned() })
            .observe(seconds);
    }

    /// Sets every gauge from a database snapshot; label sets that vanished
    /// since the previous snapshot are set to zero.
    pub fn set_gauges(&self, snapshot: &GaugeSnapshot) {
        let mut keys = self.inner.gauge_keys.lock().expect("gauge keys lock");
        let f = self.f();
        let mut runs_active = HashMap::new();
        for (workflow, status, n) in &snapshot.runs_active {
            *runs_active
                .entry(vec![self.workflow(workflow), status.clone()])
                .or_insert(0) += n;
        }
        refresh(&mut keys, "runs_active", runs_active, |k, v| {
            f.runs_active
                .get_or_create(&WorkflowStatusLabels {
                    workflow: k[0].clone(),
                    status: k[1].clone(),
                })
                .set(v);
        });
        for (name, source, family) in [
            ("steps_ready", &snapshot.steps_ready, &f.steps_ready),
            ("steps_running", &snapshot.steps_running, &f.steps_running),
            (
                "workers_active",
                &snapshot.workers_active,
                &f.workers_active,
            ),
        ] {
            let mut values = HashMap::new();
            for (queue, n) in source {
                *values.entry(vec![self.queue(queue)]).or_insert(0) += n;
            }
            refresh(&mut keys, name, values, |k, v| {
                family
                    .get_or_create(&QueueLabels {
                        queue: k[0].clone(),
                    })
                    .set(v);
            });
        }
        let mut ages: HashMap<Vec<String>, f64> = HashMap::new();
        for (queue, age) in &snapshot.oldest_ready_age_seconds {
            let entry = ages.entry(vec![self.queue(queue)]).or_insert(0.0);
            *entry = entry.max(*age);
        }
        refresh(&mut keys, "oldest_ready_age", ages, |k, v| {
            f.oldest_ready_age
                .get_or_create(&QueueLabels {
                    queue: k[0].clone(),
                })
                .set(v);
        });
        let stalled: HashMap<Vec<String>, i64> = snapshot
            .runs_stalled
            .iter()
            .map(|(r, n)| (vec![r.clone()], *n))
            .collect();
        refresh(&mut keys, "runs_stalled", stalled, |k, v| {
            f.runs_stalled
                .get_or_create(&ReasonLabels {
                    reason: k[0].clone(),
                })
                .set(v);
        });
        f.db_pool_connections
            .get_or_create(&StateLabels {
                state: "idle".into(),
            })
            .set(snapshot.pool_idle);
        f.db_pool_connections
            .get_or_create(&StateLabels {
                state: "in_use".into(),
            })
            .set((snapshot.pool_open - snapshot.pool_idle).max(0));
    }

    /// The exposition: OpenMetrics (with exemplars) when `openmetrics`,
    /// else the classic Prometheus text format 0.0.4.
    pub fn encode(&self, openmetrics: bool) -> String {
        let mut out = String::new();
        encode(&mut out, &self.inner.registry).expect("writing to a String cannot fail");
        if openmetrics {
            out
        } else {
            to_classic_text(&out)
        }
    }
}

impl Observer for Metrics {
    fn observe(&self, observation: &Observation<'_>) {
        match *observation {
            Observation::RunStarted { workflow } => self.run_started(workflow),
            Observation::RunRetried { workflow } => self.run_retried(workflow),
            Observation::RunFinished(ref run) => self.run_finished(
                run.workflow,
                run.status.as_str(),
                run.duration_ms() as f64 / 1000.0,
                run.trace_id,
            ),
            Observation::AttemptClaimed {
                queue,
                queue_wait_ms,
            } => self.attempt_claimed(queue, queue_wait_ms as f64 / 1000.0),
            Observation::AttemptFinished(ref attempt)
                if attempt.kind == weft_core::AttemptKind::Compensate =>
            {
                self.compensation_finished(attempt.workflow, attempt.step, attempt.status.as_str())
            }
            Observation::AttemptFinished(ref attempt) => self.attempt_finished(
                attempt.workflow,
                attempt.step,
                attempt.status.as_str(),
                attempt.reason.map_or("none", |r| r.as_str()),
                attempt.timing.total_ms as f64 / 1000.0,
                attempt.timing.handler_ms.map(|ms| ms as f64 / 1000.0),
                attempt.trace_id,
            ),
            Observation::StepRetrying { workflow, step } => self.step_retrying(workflow, step),
            Observation::LeaseExpired { queue } => self.lease_expired(queue),
            Observation::Operation { op, elapsed } => self.db_query(op, elapsed.as_secs_f64()),
            // A span, not a metric.
            Observation::ConditionDecided(_) => {}
        }
    }

    fn gauges(&self, snapshot: &GaugeSnapshot) {
        self.set_gauges(snapshot);
    }
}

fn refresh<V: Default + Copy>(
    keys: &mut HashMap<&'static str, HashSet<Vec<String>>>,
    name: &'static str,
    values: HashMap<Vec<String>, V>,
    mut set: impl FnMut(&Vec<String>, V),
) {
    let previous = keys.remove(name).unwrap_or_default();
    for key in previous.difference(&values.keys().cloned().collect()) {
        set(key, V::default());
    }
    for (key, value) in &values {
        set(key, *value);
    }
    let mut current: HashSet<Vec<String>> = values.into_keys().collect();
    // Keep zeroed keys too: they stay exported (at zero) and are not re-zeroed.
    current.extend(previous);
    keys.insert(name, current);
}

pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Rewrites OpenMetrics text into the classic Prometheus format: counters'
/// metadata names gain `_total`, `# UNIT` lines, exemplars and `# EOF` go.
fn to_classic_text(openmetrics: &str) -> String {
    let mut counters: HashSet<String> = HashSet::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some(name) = rest.strip_suffix(" counter")
        {
            counters.insert(name.to_owned());
        }
    }
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line
            .strip_prefix("# TYPE ")
            .or_else(|| line.strip_prefix("# HELP "))
        {
            let kind = &line[..7];
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            if counters.contains(name) {
                out.push_str(&format!("{kind}{name}_total {tail}\n"));
                continue;
            }
            out.push_str(line);
            out.push('\n');
            continue;
        }
        match line.find(" # {") {
            Some(cut) => out.push_str(&line[..cut]),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_encodes_both_formats() {
        let metrics = Metrics::new("1.2.3", Caps::default());
        metrics.run_started("etl");
        metrics.run_finished(
            "etl",
            "completed",
            1.5,
            "4bf92f3577b34da6a3ce929d0e0e4736".parse().unwrap(),
        );
        metrics.attempt_finished(
            "etl",
            "extract",
            "failed",
            "timeout",
            0.2,
            Some(0.1),
            "4bf92f3577b34da6a3ce929d0e0e4736".parse().unwrap(),
        );
        let open = metrics.encode(true);
        assert!(
            open.contains("weft_runs_started_total{workflow=\"etl\"} 1"),
            "{open}"
        );
        assert!(
            open.contains("trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\""),
            "{open}"
        );
        assert!(open.ends_with("# EOF\n"));
        let classic = metrics.encode(false);
        assert!(
            classic.contains("# TYPE weft_runs_started_total counter"),
            "{classic}"
        );
        assert!(!classic.contains("# EOF"));
        assert!(
            !classic.contains("trace_id=\""),
            "exemplars must not leak into the classic format:\n{classic}"
        );
        assert!(classic.contains("weft_build_info{version=\"1.2.3\"} 1"));
    }

    #[test]
    fn label_cap_folds_into_other() {
        let metrics = Metrics::new(
            "0",
            Caps {
                workflows: 2,
                steps: 10,
                queues: 1,
            },
        );
        for name in ["a", "b", "c", "d"] {
            metrics.run_started(name);
        }
        let text = metrics.encode(false);
        assert!(
            text.contains("weft_runs_started_total{workflow=\"other\"} 2"),
            "{text}"
        );
        assert_eq!(text.matches("weft_runs_started_total{").count(), 3);
    }

    #[test]
    fn vanished_gauges_go_to_zero() {
        let metrics = Metrics::new("0", Caps::default());
        metrics.set_gauges(&GaugeSnapshot {
            steps_ready: vec![("default".into(), 5)],
            ..Default::default()
        });
        assert!(
            metrics
                .encode(false)
                .contains("weft_steps_ready{queue=\"default\"} 5")
        );
        metrics.set_gauges(&GaugeSnapshot::default());
        assert!(
            metrics
                .encode(false)
                .contains("weft_steps_ready{queue=\"default\"} 0")
        );
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandlerOutcomeLabels {
    handler: String,
    outcome: String,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandlerLabels {
    handler: String,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

/// A worker process's own metrics (`weft worker --metrics-listen`): what its
/// handlers did, seen from the worker side. Handler names are the ones the
/// worker registered, so the label set is bounded by construction.
#[derive(Clone)]
pub struct WorkerMetrics {
    inner: Arc<WorkerInner>,
}

struct WorkerInner {
    registry: Registry,
    tasks: Family<HandlerOutcomeLabels, Counter>,
    task_duration: Hist<HandlerLabels>,
    tasks_running: Family<HandlerLabels, Gauge>,
    polls: Family<OutcomeLabels, Counter>,
    poll_duration: Family<OutcomeLabels, Histogram, Buckets>,
}

impl WorkerMetrics {
    pub fn new(version: &str) -> WorkerMetrics {
        let mut registry = Registry::with_prefix("weft_worker");
        let tasks = Family::<HandlerOutcomeLabels, Counter>::default();
        let task_duration: Hist<HandlerLabels> =
            Family::new_with_constructor(Buckets(STEP_BUCKETS));
        let tasks_running = Family::<HandlerLabels, Gauge>::default();
        let polls = Family::<OutcomeLabels, Counter>::default();
        let poll_duration: Family<OutcomeLabels, Histogram, Buckets> =
            Family::new_with_constructor(Buckets(POLL_BUCKETS));
        let build_info = Family::<VersionLabels, Gauge>::default();
        registry.register(
            "tasks",
            "Tasks this worker ran, by handler and outcome (completed, failed, timeout, cancelled)",
            tasks.clone(),
        );
        registry.register_with_unit(
            "task_duration",
            "Handler run time measured by the worker",
            Unit::Seconds,
            task_duration.clone(),
        );
        registry.register(
            "tasks_running",
            "Tasks running now, by handler",
            tasks_running.clone(),
        );
        registry.register(
            "polls",
            "Polls this worker made, by outcome (tasks, empty, error)",
            polls.clone(),
        );
        registry.register_with_unit(
            "poll_duration",
            "How long this worker's polls took",
            Unit::Seconds,
            poll_duration.clone(),
        );
        registry.register(
            "build_info",
            "Always 1; the version label names the build",
            build_info.clone(),
        );
        build_info
            .get_or_create(&VersionLabels {
                version: version.to_owned(),
            })
            .set(1);
        WorkerMetrics {
            inner: Arc::new(WorkerInner {
                registry,
                tasks,
                task_duration,
                tasks_running,
                polls,
                poll_duration,
            }),
        }
    }

    pub fn task_started(&self, handler: &str) {
        self.inner
            .tasks_running
            .get_or_create(&HandlerLabels {
                handler: handler.to_owned(),
            })
            .inc();
    }

    pub fn task_finished(&self, handler: &str, outcome: &str, seconds: f64) {
        let labels = HandlerLabels {
            handler: handler.to_owned(),
        };
        self.inner.tasks_running.get_or_create(&labels).dec();
        self.inner
            .task_duration
            .get_or_create(&labels)
            .observe(seconds);
        self.inner
            .tasks
            .get_or_create(&HandlerOutcomeLabels {
                handler: handler.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    pub fn polled(&self, outcome: &str, seconds: f64) {
        let labels = OutcomeLabels {
            outcome: outcome.to_owned(),
        };
        self.inner.polls.get_or_create(&labels).inc();
        self.inner
            .poll_duration
            .get_or_create(&labels)
            .observe(seconds);
    }

    pub fn encode(&self, openmetrics: bool) -> String {
        let mut out = String::new();
        encode(&mut out, &self.inner.registry).expect("writing to a String cannot fail");
        if openmetrics {
            out
        } else {
            to_classic_text(&out)
        }
    }
}

#[cfg(test)]
mod worker_tests {
    use super::WorkerMetrics;

    #[test]
    fn worker_metrics_count_tasks_and_polls() {
        let metrics = WorkerMetrics::new("0");
        metrics.polled("tasks", 0.01);
        metrics.task_started("etl.extract");
        metrics.task_finished("etl.extract", "completed", 0.2);
        metrics.task_started("etl.extract");
        let text = metrics.encode(false);
        assert!(
            text.contains(
                "weft_worker_tasks_total{handler=\"etl.extract\",outcome=\"completed\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("weft_worker_tasks_running{handler=\"etl.extract\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("weft_worker_polls_total{outcome=\"tasks\"} 1"),
            "{text}"
        );
    }
}
