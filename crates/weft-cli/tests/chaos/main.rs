//! Chaos suite: real `weft` servers and workers under a steady load of
//! multi-step runs while servers are killed with SIGKILL (SQLite and
//! PostgreSQL), exec and SDK workers are killed or stopped mid-step,
//! PostgreSQL restarts, and two servers with four workers share one
//! database. After each scenario every accepted run must exist and end, no
//! step may complete twice, and the handlers' side-effect log must show no
//! two executions of a step at once and no re-run without a lapsed lease.
//!
//! The short profile (the default, in CI) takes a few minutes; set
//! `WEFT_CHAOS=long` for the long one (run it with `--profile chaos-long`,
//! whose timeouts allow it).
//!
//! The binary has its own harness (libtest-mimic, which speaks libtest's
//! and nextest's command line): run with the variables of `world`'s
//! `SDK_CHILD_*`, it is the SDK worker process the scenarios start and kill.

mod audit;
mod load;
mod scenario;
mod sdk;
mod world;

use std::time::Duration;

use scenario::{Fault, Spec};
use world::WorkerKind::{Exec, Sdk};

/// How hard the scenarios push: the short profile or `WEFT_CHAOS=long`.
struct Profile {
    long: bool,
}

impl Profile {
    fn get() -> Profile {
        Profile {
            long: std::env::var("WEFT_CHAOS").is_ok_and(|v| v == "long"),
        }
    }

    /// `short` in CI, `long` under `WEFT_CHAOS=long`.
    fn pick<T>(&self, short: T, long: T) -> T {
        if self.long { long } else { short }
    }

    fn settle(&self) -> Duration {
        self.pick(Duration::from_secs(120), Duration::from_secs(600))
    }
}

/// Runs `spec` and fails on any loss, stuck run, double completion, overlap
/// or unjustified re-run.
async fn check(spec: Spec) {
    scenario::run(spec).await.assert_clean();
}

async fn sqlite_server_kill9() {
    let profile = Profile::get();
    check(Spec {
        name: "sqlite_server_kill9",
        postgres: false,
        servers: 1,
        workers: vec![(Exec, 0), (Exec, 0), (Sdk, 0)],
        runs: profile.pick(70, 600),
        long_every: 0,
        load: profile.pick(Duration::from_secs(24), Duration::from_secs(180)),
        faults: vec![Fault::KillServer(0); profile.pick(3, 16)],
        settle: profile.settle(),
    })
    .await;
}

async fn postgres_server_kill9() {
    let profile = Profile::get();
    check(Spec {
        name: "postgres_server_kill9",
        postgres: true,
        servers: 1,
        workers: vec![(Exec, 0), (Exec, 0), (Sdk, 0)],
        runs: profile.pick(70, 500),
        long_every: 0,
        load: profile.pick(Duration::from_secs(24), Duration::from_secs(150)),
        faults: vec![Fault::KillServer(0); profile.pick(3, 8)],
        settle: profile.settle(),
    })
    .await;
}

async fn worker_kill9_and_stop() {
    let profile = Profile::get();
    let round = [
        Fault::KillExecWorker,
        Fault::KillSdkWorker,
        Fault::StopExecWorker,
    ];
    let rounds = profile.pick(1, 4);
    check(Spec {
        name: "worker_kill9_and_stop",
        postgres: false,
        servers: 1,
        workers: vec![(Exec, 0), (Exec, 0), (Sdk, 0)],
        runs: profile.pick(50, 300),
        long_every: 4,
        load: profile.pick(Duration::from_secs(30), Duration::from_secs(150)),
        faults: round.iter().copied().cycle().take(3 * rounds).collect(),
        settle: profile.settle(),
    })
    .await;
}

async fn postgres_restart() {
    let profile = Profile::get();
    check(Spec {
        name: "postgres_restart",
        postgres: true,
        servers: 1,
        workers: vec![(Exec, 0), (Sdk, 0)],
        runs: profile.pick(50, 300),
        long_every: 5,
        load: profile.pick(Duration::from_secs(24), Duration::from_secs(120)),
        faults: vec![Fault::RestartPostgres; profile.pick(1, 3)],
        settle: profile.settle(),
    })
    .await;
}

async fn two_servers_four_workers() {
    let profile = Profile::get();
    check(Spec {
        name: "two_servers_four_workers",
        postgres: true,
        servers: 2,
        workers: vec![(Exec, 0), (Exec, 1), (Sdk, 0), (Sdk, 1)],
        runs: profile.pick(60, 300),
        long_every: 0,
        load: profile.pick(Duration::from_secs(24), Duration::from_secs(120)),
        faults: profile.pick(
            vec![Fault::KillServer(1)],
            vec![
                Fault::KillServer(0),
                Fault::KillServer(1),
                Fault::RestartPostgres,
                Fault::KillServer(1),
            ],
        ),
        settle: profile.settle(),
    })
    .await;
}

/// A scenario's future, run to its end on a runtime of its own.
type Scenario = std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>;

/// A named scenario.
type Named = (&'static str, fn() -> Scenario);

/// The scenarios, by name.
const SCENARIOS: &[Named] = &[
    ("sqlite_server_kill9", || Box::pin(sqlite_server_kill9())),
    (
        "postgres_server_kill9",
        || Box::pin(postgres_server_kill9()),
    ),
    (
        "worker_kill9_and_stop",
        || Box::pin(worker_kill9_and_stop()),
    ),
    ("postgres_restart", || Box::pin(postgres_restart())),
    ("two_servers_four_workers", || {
        Box::pin(two_servers_four_workers())
    }),
];

/// Runs one scenario on a runtime of its own, as `#[tokio::test]` would.
fn block_on(scenario: Scenario) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(scenario);
}

fn main() -> std::process::ExitCode {
    // Started by a scenario as its SDK worker process.
    if let (Ok(url), Ok(id), Ok(log)) = (
        std::env::var(world::SDK_CHILD_URL),
        std::env::var(world::SDK_CHILD_ID),
        std::env::var(world::SDK_CHILD_LOG),
    ) {
        block_on(Box::pin(sdk::run(url, id, log.into())));
        return std::process::ExitCode::SUCCESS;
    }
    let mut arguments = libtest_mimic::Arguments::from_args();
    // Each scenario loads the machine on its own: one at a time unless told.
    arguments.test_threads.get_or_insert(1);
    let trials = SCENARIOS
        .iter()
        .map(|&(name, scenario)| {
            libtest_mimic::Trial::test(name, move || {
                block_on(scenario());
                Ok(())
            })
        })
        .collect();
    libtest_mimic::run(&arguments, trials).exit_code()
}
