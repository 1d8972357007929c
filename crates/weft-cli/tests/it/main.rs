//! End-to-end suite: the real `weft` binary as server, exec worker and CLI,
//! the Rust SDK worker in-process, over real HTTP, on SQLite and on a
//! throwaway PostgreSQL. Each scenario is written once and run on both.

mod api;
mod approvals;
mod auth;
mod bulk;
mod cli;
mod conditions;
mod corruption;
mod dag;
mod dashboard;
mod doctor;
mod doctor_compensation;
mod doctor_undos;
mod edge;
mod failures;
mod fan_out;
mod harness;
mod history_paging;
mod idempotency;
mod limits;
mod metadata;
mod people;
mod people_auth;
mod restart;
mod robustness;
mod saga;
mod saga_for_each;
mod saga_for_each_failed;
mod secrets;
mod stream;
mod tls;
mod trigger_rules;
mod upgrade;
mod worker_faults;

// The OTLP receiver of the telemetry tests, shared rather than copied.
#[allow(dead_code)]
#[path = "../../../weft-telemetry/tests/it/collector.rs"]
mod collector;

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
    fan_out::for_each_thousand_items_ten_at_a_time,
    fan_out::for_each_failures_and_edge_lists,
    history_paging::thousand_children_run_page_is_paged,
    history_paging::child_undos_and_long_log_lines_stay_bounded,
    dag::dag_order_exec_worker,
    dag::dag_order_sdk_worker,
    dashboard::dashboard_pages,
    bulk::bulk_cancel_and_retry,
    bulk::bulk_by_metadata,
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
    robustness::results_sent_again_and_released_leases,
    robustness::output_over_the_limit_fails_at_once,
    robustness::nul_and_control_characters,
    robustness::idempotency_key_bound_to_input,
    robustness::retried_runs_are_counted,
    robustness::failure_logs_carry_the_masked_error,
    secrets::secrets_stay_out_of_every_surface,
    secrets::secrets_by_role,
    conditions::heavy_condition_fails_its_step_without_stalling,
    trigger_rules::trigger_rules_and_the_when_context,
    corruption::a_corrupt_row_is_a_json_500_and_the_engine_goes_on,
    edge::request_bounds,
    doctor::doctor_no_worker_handler_approval_sleep,
    doctor::doctor_poison_input_and_lease_expired_loop,
    doctor::doctor_running_long_saturated_cancel_pending,
    doctor::doctor_start_wait_says_why,
    tls::workflow_over_tls,
    people::actors_in_history,
    people::audit_log,
    people_auth::sessions_and_actors_with_tokens,
    auth::every_route_by_every_caller,
    auth::worker_tokens_keep_to_their_queues_and_leases,
    auth::revocation_reaches_every_server,
    doctor::doctor_overdue_timer_dependencies_retrying_stale_approval,
    doctor::doctor_database_slow,
    doctor::doctor_running_long_past_p99,
    approvals::approval_timeouts,
    approvals::sleep_until_survives_restart,
    idempotency::idempotency_key_is_stable_per_step,
    stream::event_stream_wakes_on_commits,
    saga::saga_chain_compensates_in_reverse,
    saga::failing_compensation_then_retry,
    saga::parallel_compensations,
    saga::rejected_approval_compensates,
    saga::server_killed_during_compensation,
    saga::order_saga_example,
    saga::skip_a_failed_compensation,
    saga::compensation_spans_and_metrics,
    saga_for_each::for_each_children_compensated_once_each,
    saga_for_each_failed::failed_for_each_undoes_its_completed_children,
    saga_for_each_failed::cancelled_for_each_undoes_its_completed_children,
    doctor_compensation::doctor_sees_an_undo_no_worker_serves,
    doctor_undos::doctor_on_child_undos,
    doctor_undos::doctor_on_a_poisoned_undo,
    metadata::run_metadata_api_and_cli,
    metadata::dashboard_metadata_and_overview,
}

/// The HTTP edge's tests that do not depend on the backend run on SQLite.
mod edge_sqlite {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn over_the_rate_is_429_for_that_caller_only() {
        let db = weft_testkit::sqlite_database();
        crate::limits::over_the_rate_is_429_for_that_caller_only(db.url.clone()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn limits_are_kept_per_token() {
        let db = weft_testkit::sqlite_database();
        crate::limits::limits_are_kept_per_token(db.url.clone()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn long_polls_are_capped_per_caller() {
        let db = weft_testkit::sqlite_database();
        crate::limits::long_polls_are_capped_per_caller(db.url.clone()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tls_edges() {
        let db = weft_testkit::sqlite_database();
        crate::tls::tls_edges(db.url.clone()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn auth_startup_refusals_and_the_cli() {
        let db = weft_testkit::sqlite_database();
        crate::auth::startup_refusals_and_the_cli(db.url.clone()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn read_timeouts() {
        let db = weft_testkit::sqlite_database();
        crate::edge::read_timeouts(db.url.clone()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fallbacks_answer_json() {
        let db = weft_testkit::sqlite_database();
        crate::edge::fallbacks_answer_json(db.url.clone()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn request_ids_are_capped() {
        let db = weft_testkit::sqlite_database();
        crate::edge::request_ids_are_capped(db.url.clone()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fuzzer_findings() {
        let db = weft_testkit::sqlite_database();
        crate::edge::fuzzer_findings(db.url.clone()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slash_in_workflow_names() {
        let db = weft_testkit::sqlite_database();
        crate::edge::slash_in_workflow_names(db.url.clone()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn identifiers_are_parsed_at_the_edge() {
        let db = weft_testkit::sqlite_database();
        crate::edge::identifiers_are_parsed_at_the_edge(db.url.clone()).await;
    }
}
