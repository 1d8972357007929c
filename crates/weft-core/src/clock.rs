//! The one clock trait: every time read of the store, the engine and the
//! server goes through a `Clock`, so tests can set time instead of sleeping
//! and servers sharing one database can agree on its time.

/// A source of wall-clock time in epoch milliseconds (UTC).
///
/// Implementations live outside weft-core (which reads no clock): the
/// store's `SystemClock` and `ManualClock`, and the store's correction to
/// the database's clock on PostgreSQL.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Milliseconds since the Unix epoch, UTC.
    fn now_ms(&self) -> i64;
}
