//! The store conformance suite: every check runs once on SQLite and once on a
//! fresh PostgreSQL cluster, so both backends keep one behaviour (SPEC §2).
//!
//! Each check is written once as `async fn check_xxx(store: Store)`;
//! `conformance!` turns it into `check_xxx::sqlite` and `check_xxx::postgres`.

/// Generates the two backend tests of a check. `lease_ms` is the store's
/// default lease (`Settings.lease`) for that check; 30 s unless given.
macro_rules! conformance {
    ($check:ident) => {
        conformance!($check, lease_ms = 30_000);
    };
    ($check:ident, settings = $settings:expr) => {
        mod $check {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                crate::support::on_sqlite_with($settings, super::$check).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                crate::support::on_postgres_with($settings, super::$check).await;
            }
        }
    };
    ($check:ident, lease_ms = $lease:expr) => {
        mod $check {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                crate::support::on_sqlite(std::time::Duration::from_millis($lease), super::$check)
                    .await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                crate::support::on_postgres(
                    std::time::Duration::from_millis($lease),
                    super::$check,
                )
                .await;
            }
        }
    };
}

mod approvals;
mod audit;
mod cancellation;
mod clock;
mod compensation;
mod compensation_for_each;
mod concurrency;
mod corruption;
mod counts;
mod diagnosis;
mod diagnosis_undos;
mod execution;
mod fan_out;
mod history;
mod history_pages;
mod lease_pool;
mod leases;
mod listing;
mod metadata;
mod observations;
mod overview;
mod results;
mod robustness;
mod support;
mod tokens;
mod workers;
mod workflows;
