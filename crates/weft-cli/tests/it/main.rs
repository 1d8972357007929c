//! End-to-end suite: the real `weft` binary as server, exec worker and CLI,
//! the Rust SDK worker in-process, over real HTTP, on SQLite and on a
//! throwaway PostgreSQL. Each scenario is written once and run on both.

mod api;
mod cli;
mod conditions;
mod dag;
mod doctor;
mod failures;
mod harness;
mod restart;

/// Generates one `#[tokio::test]` per backend for each `module::scenario`.
macro_rules! on_both_backends {
    ($($module:ident :: $scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let db = weft_testkit::sqlite_database();
                    crate::$module::$scenario(db.url.clone()).await;
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let cluster = weft_testkit::PgCluster::start();
                    let url = cluster.create_database();
                    crate::$module::$scenario(url).await;
                    drop(cluster);
                }
            )*
        }
    };
}

// After the macro, which it uses too (its tests are then named
// `telemetry::sqlite::...`, so `cargo nextest run telemetry` selects them).
mod telemetry;
// Plain tests of their own, on SQLite.
mod cli_paths;

on_both_backends! {
    dag::dag_order_exec_worker,
    dag::dag_order_sdk_worker,
    failures::retries_then_success,
    failures::timeout_kills_the_handler,
    failures::worker_killed_mid_step,
    failures::stale_lease_is_rejected,
    failures::cancel_reaches_the_handler,
    api::idempotent_start,
    api::bad_input_is_rejected_and_changes_nothing,
    api::batch_endpoints,
    restart::server_restart_mid_runs,
    cli::cli_start_wait_run_runs,
    conditions::heavy_condition_fails_its_step_without_stalling,
    doctor::doctor_no_worker_handler_approval_sleep,
    doctor::doctor_poison_input_and_lease_expired_loop,
    doctor::doctor_running_long_saturated_cancel_pending,
    doctor::doctor_start_wait_says_why,
}
