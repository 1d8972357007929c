//! One chaos scenario: a world of servers and workers, a steady load of
//! multi-step runs, faults injected while it runs, then the audit.

use std::{
    ops::Range,
    time::{Duration, Instant},
};

use weft_client::Client;

use crate::{
    audit::{self, Figures, read_executions},
    load,
    world::{WorkerKind, World, ready_status, uptime_ms},
};

/// The main workflow: a diamond of four steps, 2.4 s along its critical path.
const DIAMOND: &str = "\
name: chaos
steps:
  - name: a
    handler: chaos.quick
    retry: { max_attempts: 10, initial: 200ms, max: 1s }
  - name: b
    handler: chaos.mid
    depends_on: [a]
    retry: { max_attempts: 10, initial: 200ms, max: 1s }
  - name: c
    handler: chaos.slow
    depends_on: [a]
    retry: { max_attempts: 10, initial: 200ms, max: 1s }
  - name: d
    handler: chaos.quick
    depends_on: [b, c]
    retry: { max_attempts: 10, initial: 200ms, max: 1s }
";

/// A chain whose middle step outlives the lease (see `HANDLERS`).
const LONG: &str = "\
name: chaos-long
steps:
  - name: a
    handler: chaos.quick
    retry: { max_attempts: 10, initial: 200ms, max: 1s }
  - name: long
    handler: chaos.long
    depends_on: [a]
    retry: { max_attempts: 10, initial: 200ms, max: 1s }
  - name: d
    handler: chaos.quick
    depends_on: [long]
    retry: { max_attempts: 10, initial: 200ms, max: 1s }
";

/// A fault injected while the load runs.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// kill -9 server `n`, restart it on the same port a second later.
    KillServer(usize),
    /// Stop PostgreSQL as a crash would (`-m immediate`), hold it down, start
    /// it again; `/health/ready` must go 503 and back to 200.
    RestartPostgres,
    /// kill -9 an exec worker while it runs a `long` step, then start a new one.
    KillExecWorker,
    /// kill -9 the SDK worker process mid-step, then start a new one.
    KillSdkWorker,
    /// SIGTERM an exec worker mid-step (a routine restart), wait for it to
    /// exit, then start a new one.
    StopExecWorker,
}

/// What a scenario runs.
pub struct Spec {
    pub name: &'static str,
    pub postgres: bool,
    pub servers: usize,
    /// Workers: (kind, index of the server it talks to).
    pub workers: Vec<(WorkerKind, usize)>,
    pub runs: usize,
    /// Every n-th run is a `chaos-long` run (0: none).
    pub long_every: usize,
    /// The load's length; faults are spread over it.
    pub load: Duration,
    pub faults: Vec<Fault>,
    /// How long the runs may take to end once the load and faults are over.
    pub settle: Duration,
}

/// Runs the scenario, prints its figures and returns them (unchecked).
pub async fn run(spec: Spec) -> Figures {
    let began = Instant::now();
    let mut world = World::new(spec.postgres);
    for _ in 0..spec.servers {
        world.add_server().await;
    }
    let admin = Client::new(&world.servers[0].url);
    for manifest in [DIAMOND, LONG] {
        let name = manifest
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("name: "))
            .expect("a name line");
        admin
            .put_workflow(name, manifest)
            .await
            .expect("register a workflow");
    }
    for (kind, server) in &spec.workers {
        world.add_worker(*kind, *server);
    }

    let urls: Vec<String> = world.servers.iter().map(|s| s.url.clone()).collect();
    let plan: Vec<String> = (0..spec.runs)
        .map(|i| {
            let long = spec.long_every > 0 && i % spec.long_every == spec.long_every - 1;
            if long { "chaos-long" } else { "chaos" }.to_owned()
        })
        .collect();
    let load = tokio::spawn(load::run(urls.clone(), plan, spec.load, spec.name));

    let mut notes = Vec::new();
    let load_began = Instant::now();
    let n_faults = spec.faults.len();
    for (k, fault) in spec.faults.iter().enumerate() {
        let at = load_began + spec.load * (k as u32 + 1) / (n_faults as u32 + 1);
        tokio::time::sleep_until(at.into()).await;
        notes.push(inject(&mut world, *fault).await);
    }
    let outcome = load.await.expect("the load does not panic");

    let clients: Vec<Client> = urls.iter().map(|url| Client::new(url)).collect();
    let mut figures = audit::audit(
        spec.name,
        &clients,
        &outcome.accepted,
        &["chaos", "chaos-long"],
        &world.effects,
        &world.kills,
        spec.settle,
    )
    .await;
    figures.refused = outcome.refused.len();
    figures.gave_up = outcome.gave_up.len();
    for refused in &outcome.refused {
        figures.violations.push(format!("start refused: {refused}"));
    }
    for key in &outcome.gave_up {
        figures
            .violations
            .push(format!("start {key} never accepted"));
    }
    println!(
        "chaos {}: {} faults in {:.0}s ({}); start retries={}",
        spec.name,
        n_faults,
        began.elapsed().as_secs_f64(),
        notes.join("; "),
        outcome.retries
    );
    println!("{figures}");
    if std::env::var_os("WEFT_CHAOS_KEEP").is_some() {
        let dir = world.dir.path().display();
        println!("chaos {}: files kept in {dir}", spec.name);
    }
    for violation in figures.violations.iter().take(40) {
        println!("  - {violation}");
    }
    figures
}

/// Injects one fault; returns a note of what happened, for the printout.
async fn inject(world: &mut World, fault: Fault) -> String {
    match fault {
        Fault::KillServer(n) => {
            let server = &mut world.servers[n];
            server.kill();
            tokio::time::sleep(Duration::from_secs(1)).await;
            let began = Instant::now();
            server.restart().await;
            format!(
                "kill -9 {} (back in {:.1}s)",
                server.label,
                1.0 + began.elapsed().as_secs_f64()
            )
        }
        Fault::RestartPostgres => restart_postgres(world).await,
        Fault::KillExecWorker => {
            // Early in a `long` step, so an orphaned handler would still run
            // when the step is claimed again after its lease lapses.
            let (index, busy) = busy_worker(world, WorkerKind::Exec, Some("long"), 1.0..3.0).await;
            let id = world.workers[index].id();
            world.kill_worker(index);
            format!("kill -9 {id} during {busy}")
        }
        Fault::KillSdkWorker => {
            let (index, busy) = busy_worker(world, WorkerKind::Sdk, None, 0.2..60.0).await;
            let id = world.workers[index].id();
            world.kill_worker(index);
            format!("kill -9 {id} during {busy}")
        }
        Fault::StopExecWorker => {
            let (index, busy) = busy_worker(world, WorkerKind::Exec, None, 0.2..60.0).await;
            let id = world.workers[index].id();
            // Past the worker's default grace (30 s) with room to release.
            let (took, on_its_own) = world.workers[index]
                .proc
                .terminate(Duration::from_secs(45))
                .await;
            world.restart_worker(index);
            format!(
                "SIGTERM {id} during {busy}: exited {} after {:.1}s",
                if on_its_own {
                    "on its own"
                } else {
                    "only to SIGKILL"
                },
                took.as_secs_f64()
            )
        }
    }
}

/// Waits (at most 60 s) until a worker of `kind` is running a step (named
/// `step`, if given) that started a number of seconds ago within `age`;
/// returns the worker's index and which step it is.
async fn busy_worker(
    world: &World,
    kind: WorkerKind,
    step: Option<&str>,
    age: Range<f64>,
) -> (usize, String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (executions, _) = read_executions(&world.effects);
        let now_ms = uptime_ms();
        for (index, worker) in world.workers.iter().enumerate() {
            if worker.kind != kind {
                continue;
            }
            let id = worker.id();
            let busy = executions.iter().find(|e| {
                e.worker == id
                    && e.end_ms.is_none()
                    && step.is_none_or(|s| e.step == s)
                    && age.contains(&((now_ms - e.start_ms) as f64 / 1e3))
            });
            if let Some(e) = busy {
                return (
                    index,
                    format!("{} of {} attempt {}", e.step, e.run_id, e.attempt),
                );
            }
        }
        assert!(
            Instant::now() < deadline,
            "no {kind:?} worker ran a {} step aged {age:?}s within 60s",
            step.unwrap_or("any")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Stops PostgreSQL, checks every server reports not ready, starts it again
/// and checks they all recover. Panics if readiness does not follow.
async fn restart_postgres(world: &mut World) -> String {
    let http = crate::world::http_client();
    let cluster = world
        .postgres
        .as_ref()
        .expect("a Postgres restart needs a Postgres scenario");
    tokio::task::block_in_place(|| cluster.stop());
    let down = Instant::now();
    for server in &world.servers {
        let deadline = Instant::now() + Duration::from_secs(30);
        while ready_status(&http, &server.url).await != Some(503) {
            assert!(
                Instant::now() < deadline,
                "{}: /health/ready did not answer 503 within 30s of stopping PostgreSQL",
                server.label
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let saw_503 = down.elapsed();
    // Stay down past the lease: work piles up, workers and starts retry, and
    // the leases of steps still running lapse (their workers cannot renew
    // them), so the handlers must stop before their steps run again.
    let down_for = Duration::from_secs(7).saturating_sub(saw_503);
    tokio::time::sleep(down_for.max(Duration::from_secs(3))).await;
    tokio::task::block_in_place(|| cluster.restart());
    let up = Instant::now();
    for server in &world.servers {
        let deadline = Instant::now() + Duration::from_secs(60);
        while ready_status(&http, &server.url).await != Some(200) {
            assert!(
                Instant::now() < deadline,
                "{}: /health/ready did not return to 200 within 60s of restarting PostgreSQL",
                server.label
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    format!(
        "PostgreSQL down {:.1}s: ready 503 after {:.1}s, 200 again {:.1}s after restart",
        up.duration_since(down).as_secs_f64(),
        saw_503.as_secs_f64(),
        up.elapsed().as_secs_f64()
    )
}
