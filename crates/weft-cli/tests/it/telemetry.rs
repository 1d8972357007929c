//! Telemetry signals end to end (SPEC §4): `/metrics` checked by `promtool`
//! and against what the runs did, OpenMetrics exemplars, a real Prometheus
//! scraping the server, gauges draining back to zero and read by the scrape
//! (not on a timer), the workflow label cap, JSON logs with ids and without
//! secrets, and readiness following the database.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::{Value, json};
use weft_worker::{HandlerError, TaskContext};

use crate::harness::{Env, PATIENCE, Proc, SdkWorker, http_client, wait_until};

on_both_backends! {
    telemetry::worker_exposes_its_own_metrics,
    telemetry::metrics_match_what_happened,
    telemetry::gauges_return_to_zero,
    telemetry::gauges_are_read_by_the_scrape,
    telemetry::workflow_labels_are_capped,
    telemetry::json_logs_carry_ids_and_hide_secrets,
}

// ---- the exposition, parsed ----

/// One sample line of the exposition: `name{labels} value`.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses `key="value",...` up to the closing brace; returns the labels and
/// the rest of the line after the brace.
fn parse_labels(text: &str) -> (BTreeMap<String, String>, &str) {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start_matches([',', ' ']);
        if let Some(after) = rest.strip_prefix('}') {
            return (labels, after);
        }
        let (key, after_key) = rest
            .split_once("=\"")
            .unwrap_or_else(|| panic!("bad label set in `{text}`"));
        let mut value = String::new();
        let mut chars = after_key.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => panic!("bad escape in `{text}`"),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => panic!("unterminated label value in `{text}`"),
            }
        };
        labels.insert(key.trim().to_owned(), value);
        rest = &after_key[end + 1..];
    }
}

fn parse_value(token: &str) -> f64 {
    match token {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        _ => token
            .parse()
            .unwrap_or_else(|err| panic!("bad sample value `{token}`: {err}")),
    }
}

/// Every sample of a Prometheus text or OpenMetrics exposition (exemplars
/// after ` # ` are dropped; see [`exemplar_trace_ids`]).
fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, labels, rest) = match line.find(['{', ' ']) {
            Some(at) if line[at..].starts_with('{') => {
                let (labels, rest) = parse_labels(&line[at + 1..]);
                (&line[..at], labels, rest)
            }
            Some(at) => (&line[..at], BTreeMap::new(), &line[at..]),
            None => panic!("a sample line without a value: `{line}`"),
        };
        let rest = rest.split(" # ").next().unwrap_or_default();
        let value = rest
            .split_whitespace()
            .next()
            .unwrap_or_else(|| panic!("a sample line without a value: `{line}`"));
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value: parse_value(value),
        });
    }
    samples
}

fn matches(sample: &Sample, name: &str, labels: &[(&str, &str)]) -> bool {
    sample.name == name
        && labels
            .iter()
            .all(|(k, v)| sample.labels.get(*k).map(String::as_str) == Some(*v))
}

/// The value of the one series of `name` carrying all of `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let found: Vec<&Sample> = samples
        .iter()
        .filter(|s| matches(s, name, labels))
        .collect();
    assert!(
        found.len() <= 1,
        "{name}{labels:?} names {} series: {found:?}",
        found.len()
    );
    found.first().map(|s| s.value)
}

/// The sum over every series of `name` carrying all of `labels`.
fn sum(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| matches(s, name, labels))
        .map(|s| s.value)
        .sum()
}

/// The distinct values of `label` over the series of `name`.
fn label_values(samples: &[Sample], name: &str, label: &str) -> BTreeSet<String> {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter_map(|s| s.labels.get(label).cloned())
        .collect()
}

/// `(metric line prefix, trace_id)` of every exemplar in an OpenMetrics body.
fn exemplar_trace_ids(text: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, exemplar)) = line.split_once(" # {") else {
            continue;
        };
        let (labels, _) = parse_labels(exemplar);
        if let Some(trace_id) = labels.get("trace_id") {
            let name = series.split(['{', ' ']).next().unwrap_or_default();
            found.push((name.to_owned(), trace_id.clone()));
        }
    }
    found
}

impl Env {
    /// `GET /metrics`, in the classic Prometheus text format.
    async fn metrics_text(&self) -> String {
        let response = self
            .http
            .get(format!("{}/metrics", self.server.url))
            .send()
            .await
            .expect("GET /metrics");
        assert_eq!(response.status().as_u16(), 200, "GET /metrics");
        response.text().await.expect("a /metrics body")
    }

    /// Polls `/metrics` until `ready` holds for its samples; returns them.
    async fn wait_metrics(&self, what: &str, ready: impl Fn(&[Sample]) -> bool) -> Vec<Sample> {
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            let text = self.metrics_text().await;
            let samples = parse_exposition(&text);
            if ready(&samples) {
                return samples;
            }
            if std::time::Instant::now() >= deadline {
                let weft: Vec<&str> = text
                    .lines()
                    .filter(|l| !l.starts_with('#') && !l.contains("_bucket"))
                    .collect();
                panic!(
                    "timed out after {PATIENCE:?} waiting for /metrics: {what}; last scrape:\n{}",
                    weft.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Pipes `body` to `promtool check metrics`; panics with its findings.
fn promtool_check_metrics(body: &str) {
    let promtool = Path::new("/usr/bin/promtool");
    assert!(
        promtool.exists(),
        "{} is missing: install Debian's `prometheus` package (`apt-get install -y prometheus`, as .ci/run does)",
        promtool.display()
    );
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start promtool");
    let mut stdin = child.stdin.take().expect("promtool stdin");
    let input = body.to_owned();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().expect("promtool runs");
    writer
        .join()
        .expect("the writer thread does not panic")
        .expect("promtool reads the exposition");
    assert!(
        out.status.success(),
        "promtool check metrics failed ({}):\n{}{}\n---- exposition ----\n{body}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---- workflows and handlers ----

fn one_step(name: &str, handler: &str) -> String {
    format!(
        "name: {name}\nsteps:\n  - name: work\n    handler: {handler}\n    retry: {{ max_attempts: 3, initial: 100ms, max: 100ms, jitter: false }}\n"
    )
}

/// `tel.ok` succeeds, `tel.flaky` fails its first attempt, `tel.doomed`
/// fails for good.
fn mixed_worker(env: &Env) -> SdkWorker {
    SdkWorker::spawn(
        env.sdk_worker("sdk-telemetry")
            .concurrency(4)
            .handler("tel.ok", |_ctx: TaskContext| async move {
                Ok(json!({"ok": true}))
            })
            .handler("tel.flaky", |ctx: TaskContext| async move {
                if ctx.task.attempt == 1 {
                    return Err(HandlerError::retryable("flaky on purpose"));
                }
                Ok(json!({"attempt": ctx.task.attempt}))
            })
            .handler("tel.doomed", |_ctx: TaskContext| async move {
                Err::<Value, _>(HandlerError::permanent("doomed on purpose"))
            })
            .build(),
    )
}

// ---- 1. /metrics against what happened ----

pub async fn metrics_match_what_happened(db_url: String) {
    let env = Env::start(&db_url).await;
    for (name, handler) in [
        ("tel_ok", "tel.ok"),
        ("tel_flaky", "tel.flaky"),
        ("tel_doomed", "tel.doomed"),
    ] {
        env.register(&one_step(name, handler)).await;
    }
    let worker = mixed_worker(&env);
    let mut runs = Vec::new();
    for workflow in ["tel_ok", "tel_ok", "tel_flaky", "tel_doomed"] {
        runs.push((workflow, env.start_run(workflow, json!({})).await));
    }
    let mut ids = Vec::new();
    let mut trace_ids = BTreeSet::new();
    for (workflow, run_id) in &runs {
        let run = env.wait_finished(run_id).await;
        let expected = if *workflow == "tel_doomed" {
            "failed"
        } else {
            "completed"
        };
        assert_eq!(run.status, expected, "{workflow} run: {run:#?}");
        let attempts = run.steps[0].attempts.len();
        assert_eq!(
            attempts,
            if *workflow == "tel_flaky" { 2 } else { 1 },
            "{workflow} attempts"
        );
        ids.push(run.run_id.clone());
        ids.push(run.trace_id.clone());
        trace_ids.insert(run.trace_id.clone());
    }
    worker.stop().await;

    // Counters are bumped after each commit: wait for the last of them.
    let samples = env
        .wait_metrics("4 finished runs and 5 attempts", |s| {
            sum(s, "weft_runs_finished_total", &[]) >= 4.0
                && sum(s, "weft_step_attempts_total", &[]) >= 5.0
        })
        .await;
    let started = |workflow| {
        value(
            &samples,
            "weft_runs_started_total",
            &[("workflow", workflow)],
        )
    };
    assert_eq!(started("tel_ok"), Some(2.0));
    assert_eq!(started("tel_flaky"), Some(1.0));
    assert_eq!(started("tel_doomed"), Some(1.0));
    assert_eq!(sum(&samples, "weft_runs_started_total", &[]), 4.0);

    let finished = |workflow, status| {
        value(
            &samples,
            "weft_runs_finished_total",
            &[("workflow", workflow), ("status", status)],
        )
    };
    assert_eq!(finished("tel_ok", "completed"), Some(2.0));
    assert_eq!(finished("tel_flaky", "completed"), Some(1.0));
    assert_eq!(finished("tel_doomed", "failed"), Some(1.0));
    assert_eq!(
        sum(
            &samples,
            "weft_runs_finished_total",
            &[("status", "completed")]
        ),
        3.0
    );
    assert_eq!(
        sum(
            &samples,
            "weft_runs_finished_total",
            &[("status", "failed")]
        ),
        1.0
    );
    assert_eq!(sum(&samples, "weft_runs_finished_total", &[]), 4.0);

    let handler_errors = [("status", "failed"), ("reason", "handler_error")];
    assert_eq!(
        sum(&samples, "weft_step_attempts_total", &handler_errors),
        2.0
    );
    for workflow in ["tel_flaky", "tel_doomed"] {
        let labels = [
            ("workflow", workflow),
            ("step", "work"),
            handler_errors[0],
            handler_errors[1],
        ];
        assert_eq!(
            value(&samples, "weft_step_attempts_total", &labels),
            Some(1.0),
            "{workflow}"
        );
    }
    assert_eq!(
        sum(
            &samples,
            "weft_step_attempts_total",
            &[("status", "completed")]
        ),
        3.0
    );
    assert_eq!(sum(&samples, "weft_step_attempts_total", &[]), 5.0);

    // Only the flaky step was retried; a permanent failure is not.
    assert_eq!(
        value(
            &samples,
            "weft_step_retries_total",
            &[("workflow", "tel_flaky"), ("step", "work")]
        ),
        Some(1.0)
    );
    assert_eq!(sum(&samples, "weft_step_retries_total", &[]), 1.0);

    // Histograms saw every run and every attempt.
    assert_eq!(sum(&samples, "weft_run_duration_seconds_count", &[]), 4.0);
    assert_eq!(sum(&samples, "weft_step_duration_seconds_count", &[]), 5.0);
    assert_eq!(
        value(&samples, "weft_build_info", &[]),
        Some(1.0),
        "weft_build_info is 1"
    );

    // HTTP requests are labelled by route template, never by raw path.
    let requests = |method, route, status| {
        value(
            &samples,
            "weft_http_requests_total",
            &[("method", method), ("route", route), ("status", status)],
        )
    };
    assert_eq!(requests("PUT", "/v1/workflows/{name}", "201"), Some(3.0));
    assert_eq!(
        requests("POST", "/v1/workflows/{name}/runs", "202"),
        Some(4.0)
    );
    assert!(
        requests("GET", "/v1/runs/{id}", "200").is_some_and(|n| n >= 4.0),
        "GET /v1/runs/{{id}} is counted under its template"
    );
    // The SDK sends its 5 results (3 completed, 2 failed) in batches.
    assert!(
        requests("POST", "/v1/worker/results", "200").is_some_and(|n| (1.0..=5.0).contains(&n)),
        "results batches: {:?}",
        requests("POST", "/v1/worker/results", "200")
    );
    assert_eq!(
        requests("POST", "/v1/worker/leases/{lease_id}/complete", "200"),
        None
    );
    let body = env.metrics_text().await;
    for route in label_values(&samples, "weft_http_requests_total", "route") {
        assert!(
            route.starts_with('/'),
            "route label `{route}` is not a template"
        );
        // Each segment is a parameter or a short static word, never an id.
        for segment in route.split('/').skip(1) {
            let parameter = segment.starts_with('{') && segment.ends_with('}');
            let word = segment.len() < 16
                && segment
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
            assert!(
                parameter || word,
                "route label `{route}` looks like a raw path"
            );
        }
    }
    for id in &ids {
        assert!(
            !body.contains(id.as_str()),
            "run or trace id {id} appears in /metrics:\n{body}"
        );
    }
    promtool_check_metrics(&body);

    // OpenMetrics on request, with the runs' trace ids as exemplars.
    let response = env
        .http
        .get(format!("{}/metrics", env.server.url))
        .header("accept", "application/openmetrics-text; version=1.0.0")
        .send()
        .await
        .expect("GET /metrics as OpenMetrics");
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "content-type: {content_type}"
    );
    let open = response.text().await.expect("an OpenMetrics body");
    assert!(
        open.ends_with("# EOF\n"),
        "OpenMetrics ends with # EOF:\n{open}"
    );
    let open_samples = parse_exposition(&open);
    assert_eq!(
        value(
            &open_samples,
            "weft_runs_started_total",
            &[("workflow", "tel_ok")]
        ),
        Some(2.0)
    );
    let exemplars = exemplar_trace_ids(&open);
    for (series, trace_id) in &exemplars {
        assert!(
            trace_ids.contains(trace_id),
            "exemplar on {series} carries trace_id {trace_id}, which is no run's"
        );
    }
    for histogram in [
        "weft_step_duration_seconds_bucket",
        "weft_run_duration_seconds_bucket",
    ] {
        assert!(
            exemplars.iter().any(|(series, _)| series == histogram),
            "no trace_id exemplar on {histogram}:\n{open}"
        );
    }
}

// ---- 2. a real Prometheus scrapes the server ----

/// A Prometheus process on a loopback port, killed on drop.
struct Prometheus {
    _proc: Proc,
    url: String,
}

impl Prometheus {
    /// Starts `/usr/bin/prometheus` scraping `target` every second, with its
    /// config and storage under `dir`.
    async fn start(dir: &Path, target: &str) -> Prometheus {
        let binary = Path::new("/usr/bin/prometheus");
        assert!(
            binary.exists(),
            "{} is missing: install Debian's `prometheus` package (`apt-get install -y prometheus`, as .ci/run does)",
            binary.display()
        );
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: weft\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("write prometheus.yml");
        let http = http_client();
        // A probed port may be taken before Prometheus binds it: try a few.
        for attempt in 1..=5 {
            let port = weft_testkit::free_port();
            let data: PathBuf = dir.join(format!("prometheus-data-{attempt}"));
            let mut command = Command::new(binary);
            command
                .arg(format!("--config.file={}", config.display()))
                .arg(format!("--storage.tsdb.path={}", data.display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--enable-feature=exemplar-storage")
                .current_dir(dir);
            let mut proc = Proc::spawn(
                &format!("prometheus#{attempt}"),
                command,
                dir.join(format!("prometheus-{attempt}.log")),
            );
            let url = format!("http://127.0.0.1:{port}");
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            loop {
                if proc.exited().is_some() {
                    break;
                }
                if let Ok(response) = http.get(format!("{url}/-/ready")).send().await
                    && response.status().as_u16() == 200
                {
                    return Prometheus { _proc: proc, url };
                }
                if std::time::Instant::now() >= deadline {
                    panic!("Prometheus not ready after 60s; output:\n{}", proc.output());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let output = proc.output();
            if !output.contains("address already in use") {
                panic!("Prometheus exited; output:\n{output}");
            }
        }
        panic!("Prometheus did not start on any of 5 ports");
    }

    /// `GET /api/v1/<path>`; the parsed `data` of a successful answer.
    async fn api(&self, path_and_query: &str) -> Option<Value> {
        let response = http_client()
            .get(format!("{}/api/v1/{path_and_query}", self.url))
            .send()
            .await
            .ok()?;
        let body: Value = response.json().await.ok()?;
        (body["status"] == "success").then(|| body["data"].clone())
    }
}

/// Percent-encodes a query parameter value.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_server() {
    // Scraping is independent of the backend: SQLite only.
    let db = weft_testkit::sqlite_database();
    let env = Env::start(&db.url).await;
    for (name, handler) in [("tel_ok", "tel.ok"), ("tel_doomed", "tel.doomed")] {
        env.register(&one_step(name, handler)).await;
    }
    let worker = mixed_worker(&env);
    let mut trace_ids = BTreeSet::new();
    for workflow in ["tel_ok", "tel_ok", "tel_ok", "tel_doomed"] {
        let run_id = env.start_run(workflow, json!({})).await;
        let run = env.wait_finished(&run_id).await;
        trace_ids.insert(run.trace_id);
    }
    worker.stop().await;

    let prometheus =
        Prometheus::start(env.dir.path(), &format!("127.0.0.1:{}", env.server.port)).await;
    let query = format!("query?query={}", encode("weft_runs_finished_total"));
    let series = wait_until(
        "Prometheus to return weft_runs_finished_total",
        Duration::from_secs(60),
        || async {
            let data = prometheus.api(&query).await?;
            let result = data["result"].as_array()?.clone();
            let completed = result.iter().find(|s| {
                s["metric"]["workflow"] == "tel_ok" && s["metric"]["status"] == "completed"
            })?;
            (completed["value"][1] == "3").then_some(result)
        },
    )
    .await;
    for s in &series {
        assert_eq!(s["metric"]["job"], "weft", "{s}");
        assert_eq!(s["metric"]["__name__"], "weft_runs_finished_total", "{s}");
    }
    let failed = series
        .iter()
        .find(|s| s["metric"]["workflow"] == "tel_doomed")
        .unwrap_or_else(|| panic!("no tel_doomed series in {series:?}"));
    assert_eq!(failed["metric"]["status"], "failed");
    assert_eq!(failed["value"][1], "1");
    assert_eq!(
        series.len(),
        2,
        "one series per workflow and status: {series:?}"
    );

    // The scrape is healthy, and the exemplars made it into Prometheus.
    let up = prometheus
        .api(&format!("query?query={}", encode("up{job=\"weft\"}")))
        .await
        .expect("query up");
    assert_eq!(up["result"][0]["value"][1], "1", "up: {up}");
    let now = chrono::Utc::now().timestamp();
    let exemplars_query = format!(
        "query_exemplars?query={}&start={}&end={}",
        encode("weft_run_duration_seconds_bucket"),
        now - 600,
        now + 600
    );
    let seen = wait_until(
        "Prometheus to store a trace_id exemplar",
        PATIENCE,
        || async {
            let data = prometheus.api(&exemplars_query).await?;
            let ids: BTreeSet<String> = data
                .as_array()?
                .iter()
                .flat_map(|series| series["exemplars"].as_array().cloned().unwrap_or_default())
                .filter_map(|e| e["labels"]["trace_id"].as_str().map(str::to_owned))
                .collect();
            (!ids.is_empty()).then_some(ids)
        },
    )
    .await;
    assert!(
        seen.is_subset(&trace_ids),
        "exemplar trace ids {seen:?} are not all runs' ({trace_ids:?})"
    );
}

// ---- 3. gauges drain back to zero ----

pub async fn gauges_return_to_zero(db_url: String) {
    let env = Env::start_with(&db_url, &["--gauge-interval", "200ms"]).await;
    env.register(&one_step("tel_gauge", "tel.held")).await;
    let mut run_ids = Vec::new();
    for _ in 0..3 {
        run_ids.push(env.start_run("tel_gauge", json!({})).await);
    }
    let ready = [("queue", "default")];
    let no_worker = [("reason", "no_worker_for_queue")];
    let queued = env
        .wait_metrics("3 ready steps stalled for want of a worker", |s| {
            value(s, "weft_steps_ready", &ready) == Some(3.0)
                && value(s, "weft_runs_stalled", &no_worker) == Some(3.0)
                && sum(s, "weft_runs_active", &[("workflow", "tel_gauge")]) == 3.0
        })
        .await;
    assert!(
        value(&queued, "weft_oldest_ready_step_age_seconds", &ready).is_some_and(|age| age >= 0.0),
        "the oldest ready step has an age"
    );
    let mut active_labels: BTreeSet<Vec<(String, String)>> = BTreeSet::new();
    let mut note_active = |samples: &[Sample]| {
        for s in samples
            .iter()
            .filter(|s| s.name == "weft_runs_active" && s.value > 0.0)
        {
            active_labels.insert(s.labels.clone().into_iter().collect());
        }
    };
    note_active(&queued);

    // A worker holds every step until released, so running shows too.
    let (release, released) = tokio::sync::watch::channel(false);
    let worker = SdkWorker::spawn(
        env.sdk_worker("sdk-gauges")
            .concurrency(4)
            .handler("tel.held", move |_ctx: TaskContext| {
                let mut released = released.clone();
                async move {
                    let _ = released.wait_for(|go| *go).await;
                    Ok(json!({"held": true}))
                }
            })
            .build(),
    );
    let running = env
        .wait_metrics("3 running steps and no stalled run", |s| {
            value(s, "weft_steps_running", &ready) == Some(3.0)
                && value(s, "weft_steps_ready", &ready) == Some(0.0)
                && value(s, "weft_runs_stalled", &no_worker) == Some(0.0)
                && value(s, "weft_workers_active", &ready).is_some_and(|n| n >= 1.0)
        })
        .await;
    note_active(&running);
    release
        .send(true)
        .expect("the handlers wait for the release");
    for run_id in &run_ids {
        let run = env.wait_finished(run_id).await;
        assert_eq!(run.status, "completed", "run: {run:#?}");
    }
    worker.stop().await;

    let drained = env
        .wait_metrics("every gauge back at zero", |s| {
            value(s, "weft_steps_ready", &ready) == Some(0.0)
                && value(s, "weft_steps_running", &ready) == Some(0.0)
                && value(s, "weft_runs_stalled", &no_worker) == Some(0.0)
                && value(s, "weft_oldest_ready_step_age_seconds", &ready) == Some(0.0)
                && sum(s, "weft_runs_active", &[]) == 0.0
        })
        .await;
    assert!(!active_labels.is_empty());
    for labels in &active_labels {
        let labels: Vec<(&str, &str)> = labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            value(&drained, "weft_runs_active", &labels),
            Some(0.0),
            "weft_runs_active{labels:?} was non-zero and stays exported at zero"
        );
    }
}

// ---- 3b. the database gauges are read by the scrape ----

/// How many times this server has read the database gauges.
fn gauge_reads(samples: &[Sample]) -> f64 {
    value(
        samples,
        "weft_db_query_duration_seconds_count",
        &[("op", "gauges")],
    )
    .unwrap_or(0.0)
}

pub async fn gauges_are_read_by_the_scrape(db_url: String) {
    let env = Env::start_with(&db_url, &["--gauge-interval", "2s"]).await;
    env.register(&one_step("tel_scrape", "tel.none")).await;
    // Unscraped, the server reads no gauges, however long it runs.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for _ in 0..2 {
        env.start_run("tel_scrape", json!({})).await;
    }
    // The first scrape reads them, so it shows the runs just started.
    let first = parse_exposition(&env.metrics_text().await);
    assert_eq!(gauge_reads(&first), 1.0, "one reading, by this scrape");
    assert_eq!(
        sum(&first, "weft_runs_active", &[("workflow", "tel_scrape")]),
        2.0
    );
    // Within the interval a scrape shows that reading.
    let again = parse_exposition(&env.metrics_text().await);
    assert_eq!(gauge_reads(&again), 1.0, "no second reading within 2 s");
    // Past it, scrapes arriving together share one new reading.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let mut scrapes = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let (http, url) = (env.http.clone(), format!("{}/metrics", env.server.url));
        scrapes.spawn(async move { http.get(url).send().await?.text().await });
    }
    let mut reads = Vec::new();
    while let Some(body) = scrapes.join_next().await {
        let text = body.expect("the scrape task").expect("GET /metrics");
        reads.push(gauge_reads(&parse_exposition(&text)));
    }
    assert!(
        reads.iter().all(|n| *n == 2.0),
        "six concurrent scrapes, one reading: {reads:?}"
    );
}

// ---- 4. the workflow label cap ----

pub async fn workflow_labels_are_capped(db_url: String) {
    let env = Env::start_with(
        &db_url,
        &["--metrics-max-workflows", "3", "--gauge-interval", "200ms"],
    )
    .await;
    let names: Vec<String> = (1..=6).map(|i| format!("capped_{i}")).collect();
    for name in &names {
        env.register(&one_step(name, "cap.step")).await;
        env.start_run(name, json!({})).await;
    }
    // Runs stay queued (no worker): the gauge reading labels them too.
    let samples = env
        .wait_metrics("6 started runs, 6 active runs", |s| {
            sum(s, "weft_runs_started_total", &[]) == 6.0 && sum(s, "weft_runs_active", &[]) == 6.0
        })
        .await;
    let started = label_values(&samples, "weft_runs_started_total", "workflow");
    let named: BTreeSet<String> = started.iter().filter(|w| *w != "other").cloned().collect();
    assert_eq!(named.len(), 3, "3 workflows keep their name: {started:?}");
    for workflow in &named {
        assert!(
            names.contains(workflow),
            "unknown workflow label `{workflow}`"
        );
        assert_eq!(
            value(
                &samples,
                "weft_runs_started_total",
                &[("workflow", workflow)]
            ),
            Some(1.0)
        );
    }
    assert_eq!(
        value(
            &samples,
            "weft_runs_started_total",
            &[("workflow", "other")]
        ),
        Some(3.0),
        "the other 3 fold into workflow=\"other\""
    );
    // No family carries more workflow values than the cap allows.
    let all: BTreeSet<String> = samples
        .iter()
        .filter_map(|s| s.labels.get("workflow").cloned())
        .collect();
    let allowed: BTreeSet<String> = named.iter().cloned().chain(["other".to_owned()]).collect();
    assert!(
        all.is_subset(&allowed),
        "workflow labels {all:?} beyond {allowed:?}"
    );
}

// ---- 5. JSON logs ----

const SECRET_PASSWORD: &str = "hunter2-secret-value";
const SECRET_KEY: &str = "k-123";

/// Complete lines of a log, each parsed as JSON; panics on one that is not.
fn json_lines(text: &str, source: &str) -> Vec<Value> {
    // A line still being written has no newline yet: leave it out.
    let complete = match text.rfind('\n') {
        Some(end) => &text[..end],
        None => "",
    };
    complete
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|err| panic!("a line of {source} is not JSON ({err}): {line}"))
        })
        .collect()
}

fn find_line<'a>(lines: &'a [Value], message: &str, run_id: &str) -> Option<&'a Value> {
    lines
        .iter()
        .find(|l| l["message"] == message && l["run_id"] == run_id)
}

pub async fn json_logs_carry_ids_and_hide_secrets(db_url: String) {
    let env = Env::start_with_env(
        &db_url,
        &[],
        &[("WEFT_LOG_FORMAT", "json"), ("WEFT_LOG_DIR", "{dir}/logs")],
    )
    .await;
    env.register(&one_step("tel_secret", "tel.echo")).await;
    let worker = SdkWorker::spawn(
        env.sdk_worker("sdk-logs")
            .handler("tel.echo", |ctx: TaskContext| async move {
                Ok(json!({"echo": ctx.input().clone()}))
            })
            .build(),
    );
    let input = json!({"user": "ada", "password": SECRET_PASSWORD, "api_key": SECRET_KEY});
    let request_id = "e2e-telemetry-start-1";
    let response = env
        .http
        .post(format!("{}/v1/workflows/tel_secret/runs", env.server.url))
        .header("x-request-id", request_id)
        .json(&json!({"input": input}))
        .send()
        .await
        .expect("start a run");
    assert_eq!(response.status().as_u16(), 202);
    assert_eq!(
        response
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
        Some(request_id),
        "the client's request id is kept"
    );
    let started: Value = response.json().await.expect("a start response");
    let run_id = started["run_id"].as_str().expect("run_id").to_owned();
    let trace_id = started["trace_id"].as_str().expect("trace_id").to_owned();
    let run = env.wait_finished(&run_id).await;
    worker.stop().await;
    assert_eq!(run.status, "completed");
    // The secrets did reach the server: the API (unredacted by default) has them.
    assert_eq!(run.input["password"], SECRET_PASSWORD);

    // The dashboard redacts.
    let page = env
        .http
        .get(format!("{}/runs/{run_id}", env.server.url))
        .send()
        .await
        .expect("GET the run page");
    assert_eq!(page.status().as_u16(), 200);
    let page = page.text().await.expect("a page");
    assert!(page.contains(&run_id), "the page shows the run");
    assert!(
        page.contains("[redacted]"),
        "the page marks redacted values:\n{page}"
    );
    for secret in [SECRET_PASSWORD, SECRET_KEY] {
        assert!(
            !page.contains(secret),
            "the dashboard shows `{secret}`:\n{page}"
        );
    }

    // The run's lines are all logged once the run completed.
    let lines = wait_until("the `run completed` log line", PATIENCE, || async {
        let lines = json_lines(&env.server.proc.output(), "the server's stderr");
        find_line(&lines, "run completed", &run_id)
            .is_some()
            .then_some(lines)
    })
    .await;
    for line in &lines {
        assert!(
            line["component"].is_string(),
            "a line without component: {line}"
        );
        assert!(
            line["level"].is_string() && line["timestamp"].is_string(),
            "{line}"
        );
    }
    let created = find_line(&lines, "run created", &run_id).expect("a `run created` line");
    let completed = find_line(&lines, "run completed", &run_id).expect("a `run completed` line");
    for line in [created, completed] {
        assert_eq!(line["trace_id"], trace_id.as_str(), "{line}");
        assert_eq!(line["workflow"], "tel_secret", "{line}");
        assert!(
            matches!(line["component"].as_str(), Some("engine" | "server")),
            "{line}"
        );
        // Both are logged while serving a request (the start, the worker's result).
        let in_request = line["span"]["request_id"].as_str().unwrap_or_default();
        assert!(!in_request.is_empty(), "no span.request_id: {line}");
    }
    assert_eq!(created["span"]["request_id"], request_id, "{created}");

    let stderr = env.server.proc.output();
    for secret in [SECRET_PASSWORD, SECRET_KEY] {
        assert!(
            !stderr.contains(secret),
            "the server logged `{secret}`:\n{stderr}"
        );
    }

    // WEFT_LOG_DIR: a daily file of JSON lines beside stderr.
    let logs_dir = env.path("logs");
    let (file, file_lines) = wait_until(
        "a weft.log.* file with the run's lines",
        PATIENCE,
        || async {
            let entries = std::fs::read_dir(&logs_dir).ok()?;
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !name.starts_with("weft.log.") {
                    continue;
                }
                let text = std::fs::read_to_string(entry.path()).ok()?;
                let lines = json_lines(&text, &name);
                if find_line(&lines, "run completed", &run_id).is_some() {
                    return Some((entry.path(), lines));
                }
            }
            None
        },
    )
    .await;
    let created =
        find_line(&file_lines, "run created", &run_id).expect("`run created` in the file");
    assert_eq!(created["trace_id"], trace_id.as_str());
    assert_eq!(created["span"]["request_id"], request_id);
    let text = std::fs::read_to_string(&file).expect("read the log file");
    for secret in [SECRET_PASSWORD, SECRET_KEY] {
        assert!(
            !text.contains(secret),
            "{} holds `{secret}`",
            file.display()
        );
    }
}

// ---- 6. readiness follows the database ----

async fn get_json(http: &reqwest::Client, url: &str) -> (u16, Value) {
    let response = http
        .get(url)
        .send()
        .await
        .unwrap_or_else(|err| panic!("GET {url}: {err}"));
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

fn assert_health_shape(body: &Value) {
    assert!(body["status"].is_string(), "{body}");
    assert!(
        body["version"].as_str().is_some_and(|v| !v.is_empty()),
        "{body}"
    );
    assert!(body["uptime_seconds"].is_u64(), "{body}");
    let checks = body["checks"]
        .as_array()
        .unwrap_or_else(|| panic!("no checks: {body}"));
    let names: BTreeSet<&str> = checks.iter().filter_map(|c| c["name"].as_str()).collect();
    assert!(names.contains("database"), "{body}");
    for check in checks {
        assert!(check["name"].is_string(), "{check}");
        assert!(
            matches!(check["status"].as_str(), Some("ok" | "failing")),
            "{check}"
        );
        assert!(check["latency_ms"].is_number(), "{check}");
        assert!(check["message"].is_string(), "{check}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_database() {
    let cluster = weft_testkit::PgCluster::start();
    let url = cluster.create_database();
    let env = Env::start(&url).await;
    let base = env.server.url.clone();
    let http = env.http.clone();
    let live = || async { get_json(&http, &format!("{base}/health/live")).await.0 };

    let (status, _) = get_json(&http, &format!("{base}/health/ready")).await;
    assert_eq!(status, 200);
    let (status, health) = get_json(&http, &format!("{base}/health")).await;
    assert_eq!(status, 200, "{health}");
    assert_health_shape(&health);
    assert_eq!(health["status"], "ok");
    assert!(
        health["checks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["status"] == "ok"),
        "{health}"
    );

    // The test cluster commits asynchronously (synchronous_commit=off) and
    // `stop` is a crash: a checkpoint first, so the schema survives it.
    cluster.query("CHECKPOINT");
    let down_at = std::time::Instant::now();
    cluster.stop();
    let failing = wait_until(
        "/health/ready to answer 503",
        Duration::from_secs(60),
        || async {
            assert_eq!(
                live().await,
                200,
                "/health/live stays 200 while the database is down"
            );
            // A probe gets its answer promptly, however long the pool would wait.
            let asked = std::time::Instant::now();
            let (status, body) = get_json(&http, &format!("{base}/health/ready")).await;
            let took = asked.elapsed();
            assert!(
                took < Duration::from_secs(6),
                "/health/ready took {took:?}: {body}"
            );
            (status == 503).then_some(body)
        },
    )
    .await;
    assert!(
        down_at.elapsed() < Duration::from_secs(15),
        "/health/ready noticed the database down only after {:?}",
        down_at.elapsed()
    );
    let names: Vec<&str> = failing["failing"]
        .as_array()
        .unwrap_or_else(|| panic!("no failing list: {failing}"))
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert!(
        names.contains(&"database"),
        "the failing checks name the database: {failing}"
    );
    let (status, health) = get_json(&http, &format!("{base}/health")).await;
    assert_eq!(status, 503, "{health}");
    assert_health_shape(&health);
    assert_ne!(health["status"], "ok");
    let database = health["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "database")
        .cloned()
        .unwrap();
    assert_eq!(database["status"], "failing", "{health}");
    assert_eq!(live().await, 200);

    cluster.restart();
    wait_until(
        "/health/ready to answer 200 again",
        Duration::from_secs(60),
        || async {
            assert_eq!(live().await, 200, "/health/live stays 200");
            (get_json(&http, &format!("{base}/health/ready")).await.0 == 200).then_some(())
        },
    )
    .await;
    let (status, health) = get_json(&http, &format!("{base}/health")).await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["status"], "ok");
    drop(env);
    drop(cluster);
}

/// `weft worker --metrics-listen`: the worker's own view of its handlers.
pub async fn worker_exposes_its_own_metrics(db_url: String) {
    let env = Env::start(&db_url).await;
    env.register(&one_step("wm_ok", "wm.ok")).await;
    env.register(&one_step("wm_bad", "wm.bad")).await;
    let ok = env.script("ok.sh", "cat > /dev/null\necho '{\"ok\": true}'\n");
    let bad = env.script("bad.sh", "cat > /dev/null\necho 'nope' >&2\nexit 100\n");
    let handlers = env.handlers_file("handlers.toml", &[("wm.ok", &ok), ("wm.bad", &bad)]);
    let port = weft_testkit::free_port();
    let listen = format!("127.0.0.1:{port}");
    let _worker = env.exec_worker_with(&handlers, "metrics-worker", &["--metrics-listen", &listen]);
    let mut runs = Vec::new();
    for _ in 0..2 {
        runs.push(env.start_run("wm_ok", json!({})).await);
    }
    runs.push(env.start_run("wm_bad", json!({})).await);
    for run_id in &runs {
        env.wait_finished(run_id).await;
    }
    let url = format!("http://{listen}/metrics");
    let body = wait_until("worker metrics count every task", PATIENCE, || {
        let url = url.clone();
        async move {
            let body = http_client()
                .get(&url)
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            let samples = parse_exposition(&body);
            let done = value(
                &samples,
                "weft_worker_tasks_total",
                &[("handler", "wm.ok"), ("outcome", "completed")],
            ) == Some(2.0)
                && value(
                    &samples,
                    "weft_worker_tasks_total",
                    &[("handler", "wm.bad"), ("outcome", "failed")],
                ) == Some(1.0);
            done.then_some(body)
        }
    })
    .await;
    promtool_check_metrics(&body);
    let samples = parse_exposition(&body);
    assert_eq!(
        value(
            &samples,
            "weft_worker_tasks_running",
            &[("handler", "wm.ok")]
        ),
        Some(0.0),
        "{body}"
    );
    assert!(
        sum(&samples, "weft_worker_polls_total", &[]) >= 1.0,
        "{body}"
    );
    assert_eq!(
        value(
            &samples,
            "weft_worker_task_duration_seconds_count",
            &[("handler", "wm.ok")]
        ),
        Some(2.0),
        "{body}"
    );
}
