//! A transaction whose future is dropped at any await (a client that
//! disconnects cancels its request's handler; a worker's heartbeat gives up
//! after a timeout) ends there: its connection returns to the pool outside
//! any transaction, holding no lock, and what it wrote is all there or none
//! of it. On PostgreSQL this guards against sqlx's `BEGIN`, which is not
//! cancel-safe (sqlx issue #4393): a dropped `BEGIN` left the next borrower
//! of that connection inside a transaction nobody ended, holding row locks
//! that stalled every other writer of those rows.
//!
//! Each case is cut after 1, 2, 3, … polls, so the cut falls at every await
//! of `begin`, the statements and `commit` in turn. A cut during `COMMIT`
//! ends quietly too: no PostgreSQL warning reaches the log (a plain
//! `ROLLBACK` after a `COMMIT` that went through would log "there is no
//! transaction in progress").

use std::{
    future::Future,
    io::Write,
    pin::pin,
    sync::{Arc, Mutex},
    task::Poll,
    time::{Duration, Instant},
};

use weft_store::{PoolOptions, db::Pool};

use crate::support::postgres_database;

/// Polls `future` up to `polls` times, letting I/O progress between polls,
/// and drops it if it has not finished by then. True if it finished.
async fn cut_after<T>(polls: i64, future: impl Future<Output = T>) -> bool {
    let mut future = pin!(future);
    for _ in 0..polls {
        let polled = std::future::poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx))).await;
        if polled.is_ready() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    false
}

/// Every log line at WARN or above, from any thread (the rollback of a cut
/// transaction runs on a task of its own).
#[derive(Clone, Default)]
struct Warnings(Arc<Mutex<Vec<u8>>>);

impl Write for Warnings {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Warnings {
    /// Installs the capture as this test process's subscriber (nextest runs
    /// each test in a process of its own).
    fn capture() -> Warnings {
        let warnings = Warnings::default();
        let writer = warnings.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .try_init()
            .expect("the only subscriber of this process");
        warnings
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log buffer")).into_owned()
    }
}

/// A second session's write of the row, which a leaked transaction's lock
/// would hold back: true if it got the lock within a second.
async fn row_is_free(other: &Pool) -> bool {
    let mut tx = other.begin().await.expect("begin");
    tx.execute("SET LOCAL lock_timeout = '1s'", vec![])
        .await
        .expect("set lock_timeout");
    let free = tx
        .execute("UPDATE cut SET v = v + 1 WHERE id = 1", vec![])
        .await
        .is_ok();
    if free {
        tx.commit().await.expect("commit");
    }
    free
}

/// Whether the single connection of `pool` is inside a transaction now:
/// `SAVEPOINT` is refused outside a transaction block.
async fn in_transaction(pool: &Pool) -> bool {
    pool.fetch_all("SAVEPOINT probe", vec![]).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_postgres_transaction_leaves_no_transaction_or_lock_behind() {
    let warnings = Warnings::capture();
    let (cluster, url) = postgres_database().await;
    // One connection, so every borrower gets the one a cut may have left.
    let options = PoolOptions {
        max_connections: 1,
        acquire_timeout: Duration::from_secs(10),
    };
    let pool = Pool::connect(&url, &options).await.expect("connect");
    let other = Pool::connect(&url, &options).await.expect("connect");
    pool.execute(
        "CREATE TABLE cut (id BIGINT PRIMARY KEY, v BIGINT NOT NULL)",
        vec![],
    )
    .await
    .expect("create");
    pool.execute("INSERT INTO cut (id, v) VALUES (1, 0)", vec![])
        .await
        .expect("insert");

    assert!(
        !in_transaction(&pool).await,
        "the probe, outside a transaction"
    );
    let mut probe = pool.begin().await.expect("begin");
    probe
        .execute("SAVEPOINT probe", vec![])
        .await
        .expect("the probe, inside a transaction");
    probe.commit().await.expect("commit");

    let mut finished = false;
    let mut polls: i64 = 0;
    while !finished {
        polls += 1;
        assert!(polls < 200, "the transaction never finished");
        // Begin, lock the row and mark this cut, commit.
        finished = cut_after(polls, async {
            let mut tx = pool.begin().await.expect("begin");
            tx.execute("UPDATE cut SET v = v + 1000 WHERE id = 1", vec![])
                .await
                .expect("update");
            tx.commit().await.expect("commit");
        })
        .await;
        // The next borrower of the connection is outside any transaction.
        let started = Instant::now();
        assert!(
            !in_transaction(&pool).await,
            "cut after {polls} polls: the pooled connection is still inside a transaction"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        // No lock is left on the row the cut transaction wrote.
        assert!(
            row_is_free(&other).await,
            "cut after {polls} polls: the row is still locked"
        );
    }
    // Every cut transaction wrote all of its change or none of it.
    let row = pool
        .fetch_optional("SELECT v FROM cut WHERE id = 1", vec![])
        .await
        .expect("read")
        .expect("the row");
    let v = row.int("v").expect("an integer");
    assert_eq!(v % 1000, polls, "one update by `other` per cut");
    assert!(v / 1000 >= 1, "the uncut transaction committed");
    // The quiet rollback put the session's warning level back.
    let level = pool
        .fetch_optional("SHOW client_min_messages", vec![])
        .await
        .expect("show")
        .expect("a row");
    assert_eq!(
        level.text("client_min_messages").expect("text"),
        "notice",
        "the pooled session reports warnings again"
    );
    let logged = warnings.text();
    assert!(
        logged.is_empty(),
        "cut transactions end without warnings:\n{logged}"
    );
    pool.close().await;
    other.close().await;
    drop(cluster);
}
