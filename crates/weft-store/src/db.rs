//! A thin layer over sqlx that lets one set of queries run on SQLite and on
//! PostgreSQL: arguments and rows as small enums, and a transaction that is
//! either kind. Dialect differences live here and in the migrations only.
//!
//! Both schemas use the same portable column types (TEXT, BIGINT, INTEGER),
//! so a query string is valid on both; `$1`-style placeholders work on both.

use std::{borrow::Cow, str::FromStr, sync::Arc, time::Duration};

use sqlx::{
    AssertSqlSafe, Column, Executor as _, PgPool, Postgres, Row as _, Sqlite, SqlitePool, TypeInfo,
    ValueRef,
    pool::PoolConnection,
    postgres::{PgConnectOptions, PgConnection, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

use crate::{Error, error::Problem};

/// A bound query argument. NULLs carry their type: Postgres will not put a
/// NULL typed as text into a BIGINT column.
#[derive(Debug, Clone)]
pub enum Arg {
    Int(i64),
    Text(String),
    NullInt,
    NullText,
}

impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Arg::Int(v)
    }
}
impl From<u32> for Arg {
    fn from(v: u32) -> Self {
        Arg::Int(i64::from(v))
    }
}
impl From<usize> for Arg {
    fn from(v: usize) -> Self {
        Arg::Int(v as i64)
    }
}
impl From<String> for Arg {
    fn from(v: String) -> Self {
        Arg::Text(v)
    }
}
impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Arg::Text(v.to_owned())
    }
}
impl From<&String> for Arg {
    fn from(v: &String) -> Self {
        Arg::Text(v.clone())
    }
}
impl From<Option<i64>> for Arg {
    fn from(v: Option<i64>) -> Self {
        v.map_or(Arg::NullInt, Arg::Int)
    }
}
impl From<Option<String>> for Arg {
    fn from(v: Option<String>) -> Self {
        v.map_or(Arg::NullText, Arg::Text)
    }
}
impl From<Option<&str>> for Arg {
    fn from(v: Option<&str>) -> Self {
        v.map_or(Arg::NullText, Into::into)
    }
}
impl From<Option<&String>> for Arg {
    fn from(v: Option<&String>) -> Self {
        v.map_or(Arg::NullText, Into::into)
    }
}

/// Identifiers are bound by their one text form (`Display`).
macro_rules! id_args {
    ($($id:ty),*) => {$(
        impl From<$id> for Arg {
            fn from(v: $id) -> Self {
                Arg::Text(v.to_string())
            }
        }
        impl From<&$id> for Arg {
            fn from(v: &$id) -> Self {
                Arg::Text(v.to_string())
            }
        }
        impl From<Option<$id>> for Arg {
            fn from(v: Option<$id>) -> Self {
                v.map_or(Arg::NullText, Into::into)
            }
        }
    )*};
}
id_args!(weft_core::RunId, weft_core::TraceId, weft_core::SpanId);

/// Builds an argument list: `args![a, b, c]`.
#[macro_export]
macro_rules! args {
    ($($value:expr),* $(,)?) => { vec![$($crate::db::Arg::from($value)),*] };
}

#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    /// A value no accessor can read (e.g. a BLOB in a text column).
    Unreadable,
}

/// A result row, decoded by column name. Every accessor answers
/// [`Error::Corrupt`] (naming the column and, when the row has a `run_id`
/// column, the run) for a missing column, a NULL where a value is required or
/// a value of the wrong type: a bad row is an error, never a panic.
#[derive(Debug, Clone)]
pub struct Row {
    columns: Arc<[String]>,
    values: Vec<Val>,
}

impl Row {
    fn get(&self, column: &str) -> Result<&Val, Error> {
        let index = self
            .columns
            .iter()
            .position(|c| c == column)
            .ok_or_else(|| self.corrupt(column, Problem::MissingColumn))?;
        Ok(&self.values[index])
    }

    /// The run this row belongs to, if it has a readable `run_id` column.
    pub fn run_id(&self) -> Option<String> {
        let index = self.columns.iter().position(|c| c == "run_id")?;
        match &self.values[index] {
            Val::Text(text) => Some(text.clone()),
            _ => None,
        }
    }

    /// An [`Error::Corrupt`] for `column` of this row.
    pub fn corrupt(&self, column: &str, problem: Problem) -> Error {
        Error::corrupt(column, self.run_id(), problem)
    }

    /// A required integer column.
    pub fn int(&self, column: &str) -> Result<i64, Error> {
        self.opt_int(column)?
            .ok_or_else(|| self.corrupt(column, Problem::Null))
    }

    /// A nullable integer column; a value that is not an integer is corrupt.
    pub fn opt_int(&self, column: &str) -> Result<Option<i64>, Error> {
        match self.get(column)? {
            Val::Int(v) => Ok(Some(*v)),
            Val::Real(v) if v.fract() == 0.0 => Ok(Some(*v as i64)),
            Val::Text(text) => text.parse().map(Some).map_err(|_| {
                self.corrupt(
                    column,
                    Problem::WrongType {
                        expected: "an integer",
                    },
                )
            }),
            Val::Real(_) => Err(self.corrupt(
                column,
                Problem::WrongType {
                    expected: "an integer",
                },
            )),
            Val::Null => Ok(None),
            Val::Unreadable => Err(self.corrupt(
                column,
                Problem::WrongType {
                    expected: "an integer",
                },
            )),
        }
    }

    /// A required text column.
    pub fn text(&self, column: &str) -> Result<String, Error> {
        self.opt_text(column)?
            .ok_or_else(|| self.corrupt(column, Problem::Null))
    }

    /// A nullable text column; a number stored in it reads as its digits.
    pub fn opt_text(&self, column: &str) -> Result<Option<String>, Error> {
        match self.get(column)? {
            Val::Text(text) => Ok(Some(text.clone())),
            Val::Int(v) => Ok(Some(v.to_string())),
            Val::Real(v) => Ok(Some(v.to_string())),
            Val::Null => Ok(None),
            Val::Unreadable => Err(self.corrupt(column, Problem::WrongType { expected: "text" })),
        }
    }

    /// A required identifier column (`RunId`, `TraceId`, `SpanId`) parsed
    /// by its `FromStr`: a text that is not one is corrupt.
    pub fn id<T: std::str::FromStr<Err = weft_core::IdError>>(
        &self,
        column: &str,
    ) -> Result<T, Error> {
        let text = self.text(column)?;
        text.parse().map_err(|err: weft_core::IdError| {
            self.corrupt(
                column,
                Problem::WrongType {
                    expected: err.expected,
                },
            )
        })
    }

    /// A nullable identifier column, as [`Row::id`].
    pub fn opt_id<T: std::str::FromStr<Err = weft_core::IdError>>(
        &self,
        column: &str,
    ) -> Result<Option<T>, Error> {
        self.opt_text(column)?
            .map(|text| {
                text.parse().map_err(|err: weft_core::IdError| {
                    self.corrupt(
                        column,
                        Problem::WrongType {
                            expected: err.expected,
                        },
                    )
                })
            })
            .transpose()
    }

    /// A step position: a required integer below `n_steps` (the steps of the
    /// run's definition); anything else is corrupt, never an index panic.
    pub fn position(&self, column: &str, n_steps: usize) -> Result<usize, Error> {
        usize::try_from(self.int(column)?)
            .ok()
            .filter(|&p| p < n_steps)
            .ok_or_else(|| {
                self.corrupt(
                    column,
                    Problem::WrongType {
                        expected: "a step of the run's definition",
                    },
                )
            })
    }

    /// A required status column parsed with its enum's `parse`: an unknown
    /// word is corrupt, never a default.
    pub fn status<T>(
        &self,
        column: &str,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Result<T, Error> {
        let text = self.text(column)?;
        parse(&text).ok_or_else(|| self.corrupt(column, Problem::UnknownValue(text)))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Sqlite,
}

/// Connection pools. SQLite gets a single-connection pool for writes (SQLite
/// has one writer anyway; this turns lock contention into a queue) and a
/// pool of readers, which WAL lets run beside the writer.
#[derive(Debug, Clone)]
pub enum Pool {
    Postgres(PgPool),
    Sqlite { write: SqlitePool, read: SqlitePool },
}

#[derive(Debug, Clone)]
pub struct PoolOptions {
    pub max_connections: u32,
    pub acquire_timeout: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(10),
        }
    }
}

impl Pool {
    pub async fn connect(url: &str, options: &PoolOptions) -> Result<Pool, Error> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let connect =
                PgConnectOptions::from_str(url).map_err(|err| Error::Config(err.to_string()))?;
            let pool = PgPoolOptions::new()
                .max_connections(options.max_connections)
                .acquire_timeout(options.acquire_timeout)
                .connect_with(connect)
                .await
                .map_err(Error::from_sqlx)?;
            Ok(Pool::Postgres(pool))
        } else if url.starts_with("sqlite:") {
            let connect = SqliteConnectOptions::from_str(url)
                .map_err(|err| Error::Config(err.to_string()))?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(false);
            let write = SqlitePoolOptions::new()
                .max_connections(1)
                .acquire_timeout(options.acquire_timeout)
                .connect_with(connect.clone())
                .await
                .map_err(Error::from_sqlx)?;
            let read = SqlitePoolOptions::new()
                .max_connections(options.max_connections.clamp(1, 8))
                .acquire_timeout(options.acquire_timeout)
                .connect_with(connect.read_only(true))
                .await
                .map_err(Error::from_sqlx)?;
            Ok(Pool::Sqlite { write, read })
        } else {
            Err(Error::Config(format!(
                "unsupported database URL `{url}`: use sqlite://FILE or postgres://..."
            )))
        }
    }

    pub fn dialect(&self) -> Dialect {
        match self {
            Pool::Postgres(_) => Dialect::Postgres,
            Pool::Sqlite { .. } => Dialect::Sqlite,
        }
    }

    /// Starts a write transaction. SQLite's is `BEGIN IMMEDIATE`, so that a
    /// read-then-write never fails half-way on a lock upgrade.
    pub async fn begin(&self) -> Result<Tx, Error> {
        match self {
            Pool::Postgres(pool) => Ok(Tx::new(TxConn::Postgres(PgTx::begin(pool).await?))),
            Pool::Sqlite { write, .. } => Ok(Tx::new(TxConn::Sqlite(
                write
                    .begin_with("BEGIN IMMEDIATE")
                    .await
                    .map_err(Error::from_sqlx)?,
            ))),
        }
    }

    pub async fn fetch_all(&self, sql: &str, args: Vec<Arg>) -> Result<Vec<Row>, Error> {
        match self {
            Pool::Postgres(pool) => {
                let rows = bind_pg(sqlx::query(AssertSqlSafe(sql)), args)
                    .fetch_all(pool)
                    .await
                    .map_err(Error::from_sqlx)?;
                Ok(convert_pg(rows))
            }
            Pool::Sqlite { read, .. } => {
                let (sql, args) = positional(sql, args);
                let rows = bind_sqlite(sqlx::query(AssertSqlSafe(&*sql)), args)
                    .fetch_all(read)
                    .await
                    .map_err(Error::from_sqlx)?;
                Ok(convert_sqlite(rows))
            }
        }
    }

    pub async fn fetch_optional(&self, sql: &str, args: Vec<Arg>) -> Result<Option<Row>, Error> {
        Ok(self.fetch_all(sql, args).await?.into_iter().next())
    }

    /// [`Pool::fetch_all`] planned for these very values, not from a cached
    /// statement: for filters whose best plan depends on how selective the
    /// values are (Postgres's generic plan for a cached statement can walk
    /// the whole table for a rare workflow).
    pub async fn fetch_all_planned(&self, sql: &str, args: Vec<Arg>) -> Result<Vec<Row>, Error> {
        match self {
            Pool::Postgres(pool) => {
                let rows = bind_pg(sqlx::query(AssertSqlSafe(sql)).persistent(false), args)
                    .fetch_all(pool)
                    .await
                    .map_err(Error::from_sqlx)?;
                Ok(convert_pg(rows))
            }
            Pool::Sqlite { .. } => self.fetch_all(sql, args).await,
        }
    }

    pub async fn execute(&self, sql: &str, args: Vec<Arg>) -> Result<u64, Error> {
        let mut tx = self.begin().await?;
        let n = tx.execute(sql, args).await?;
        tx.commit().await?;
        Ok(n)
    }

    pub async fn close(&self) {
        match self {
            Pool::Postgres(pool) => pool.close().await,
            Pool::Sqlite { write, read } => {
                read.close().await;
                write.close().await;
            }
        }
    }

    /// Connections by state, for the pool gauge.
    pub fn connections(&self) -> (u32, u32) {
        match self {
            Pool::Postgres(pool) => (pool.size(), pool.num_idle() as u32),
            Pool::Sqlite { write, read } => (
                write.size() + read.size(),
                (write.num_idle() + read.num_idle()) as u32,
            ),
        }
    }
}

/// A write transaction on either backend. Dropped without `commit`, it rolls back.
pub struct Tx {
    conn: TxConn,
    /// Told the runs whose history this transaction wrote, once it commits.
    hook: Option<CommitHook>,
    /// Runs whose history this transaction wrote, each once.
    runs: Vec<weft_core::RunId>,
}

enum TxConn {
    Postgres(PgTx),
    Sqlite(sqlx::Transaction<'static, Sqlite>),
}

/// A PostgreSQL transaction that ends on every path, also when the future
/// using it is dropped (a client that disconnects cancels its request's
/// handler) at any await, `BEGIN` and `COMMIT` included.
///
/// sqlx's own `Transaction` is not cancel-safe on PostgreSQL: a future
/// dropped while `BEGIN` is in flight leaves the session inside a
/// transaction that nothing rolls back, and the pool hands that connection
/// to the next borrower, whose statements then run inside it and hold its
/// row locks (sqlx issue #4393, unfixed in 0.9.0). Here the connection is
/// owned until the transaction has committed; on any other end it is rolled
/// back on a task of its own before it returns to the pool, and closed if
/// even that fails.
struct PgTx {
    /// `Some` until the transaction committed.
    conn: Option<PoolConnection<Postgres>>,
    /// Set once `COMMIT` is on its way: the transaction may have ended.
    committing: bool,
}

/// How an abandoned transaction is rolled back when its `COMMIT` may already
/// have gone through: PostgreSQL warns of a `ROLLBACK` outside a transaction
/// ("there is no transaction in progress"), a line that would alarm whoever
/// reads the log for nothing, so warnings are silenced around it. Inside a
/// transaction the `SET` is undone by the `ROLLBACK` itself; `RESET` puts
/// the session's setting back in either case.
const QUIET_ROLLBACK: &str = "SET client_min_messages = error; ROLLBACK; RESET client_min_messages";

impl PgTx {
    async fn begin(pool: &PgPool) -> Result<PgTx, Error> {
        // Owned before `BEGIN` is sent, so a drop from here on rolls back.
        let mut tx = PgTx {
            conn: Some(pool.acquire().await.map_err(Error::from_sqlx)?),
            committing: false,
        };
        tx.conn().execute("BEGIN").await.map_err(Error::from_sqlx)?;
        Ok(tx)
    }

    fn conn(&mut self) -> &mut PgConnection {
        self.conn.as_mut().expect("an open transaction")
    }

    async fn commit(mut self) -> Result<(), Error> {
        // Dropped mid-`COMMIT`, the rollback that follows finds the
        // transaction committed or aborted and changes nothing.
        self.committing = true;
        self.conn()
            .execute("COMMIT")
            .await
            .map_err(Error::from_sqlx)?;
        // Committed: the connection goes back to the pool as it is.
        self.conn.take();
        Ok(())
    }
}

impl Drop for PgTx {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        let rollback = if self.committing {
            QUIET_ROLLBACK
        } else {
            "ROLLBACK"
        };
        match tokio::runtime::Handle::try_current() {
            // sqlx first reads what a dropped statement left on the wire.
            Ok(runtime) => drop(runtime.spawn(async move {
                if let Err(err) = conn.execute(rollback).await {
                    tracing::warn!(
                        component = "store",
                        error = %err,
                        "rolling back an abandoned transaction failed; closing its connection"
                    );
                    conn.close_on_drop();
                }
            })),
            // No runtime to roll back on: closing the session rolls it back.
            Err(_) => conn.close_on_drop(),
        }
    }
}

/// Called after a transaction committed with the ids of the runs whose
/// history it wrote (never for a rollback or a failed commit).
pub(crate) type CommitHook = std::sync::Arc<dyn Fn(&[weft_core::RunId]) + Send + Sync>;

impl Tx {
    fn new(conn: TxConn) -> Tx {
        Tx {
            conn,
            hook: None,
            runs: Vec::new(),
        }
    }

    /// Sets who is told of this transaction's history writes once it commits.
    pub(crate) fn with_hook(mut self, hook: CommitHook) -> Tx {
        self.hook = Some(hook);
        self
    }

    /// Notes that this transaction wrote history events of `run_id`.
    pub(crate) fn wrote_history(&mut self, run_id: weft_core::RunId) {
        if !self.runs.contains(&run_id) {
            self.runs.push(run_id);
        }
    }

    pub fn dialect(&self) -> Dialect {
        match self.conn {
            TxConn::Postgres(_) => Dialect::Postgres,
            TxConn::Sqlite(_) => Dialect::Sqlite,
        }
    }

    pub async fn execute(&mut self, sql: &str, args: Vec<Arg>) -> Result<u64, Error> {
        match &mut self.conn {
            TxConn::Postgres(tx) => Ok(bind_pg(sqlx::query(AssertSqlSafe(sql)), args)
                .execute(tx.conn())
                .await
                .map_err(Error::from_sqlx)?
                .rows_affected()),
            TxConn::Sqlite(tx) => {
                let (sql, args) = positional(sql, args);
                Ok(bind_sqlite(sqlx::query(AssertSqlSafe(&*sql)), args)
                    .execute(&mut **tx)
                    .await
                    .map_err(Error::from_sqlx)?
                    .rows_affected())
            }
        }
    }

    pub async fn fetch_all(&mut self, sql: &str, args: Vec<Arg>) -> Result<Vec<Row>, Error> {
        match &mut self.conn {
            TxConn::Postgres(tx) => {
                let rows = bind_pg(sqlx::query(AssertSqlSafe(sql)), args)
                    .fetch_all(tx.conn())
                    .await
                    .map_err(Error::from_sqlx)?;
                Ok(convert_pg(rows))
            }
            TxConn::Sqlite(tx) => {
                let (sql, args) = positional(sql, args);
                let rows = bind_sqlite(sqlx::query(AssertSqlSafe(&*sql)), args)
                    .fetch_all(&mut **tx)
                    .await
                    .map_err(Error::from_sqlx)?;
                Ok(convert_sqlite(rows))
            }
        }
    }

    pub async fn fetch_optional(
        &mut self,
        sql: &str,
        args: Vec<Arg>,
    ) -> Result<Option<Row>, Error> {
        Ok(self.fetch_all(sql, args).await?.into_iter().next())
    }

    /// Runs a multi-statement script (migrations) inside the transaction.
    pub async fn execute_script(&mut self, sql: &str) -> Result<(), Error> {
        match &mut self.conn {
            TxConn::Postgres(tx) => {
                sqlx::raw_sql(AssertSqlSafe(sql))
                    .execute(tx.conn())
                    .await
                    .map_err(Error::from_sqlx)?;
            }
            TxConn::Sqlite(tx) => {
                sqlx::raw_sql(AssertSqlSafe(sql))
                    .execute(&mut **tx)
                    .await
                    .map_err(Error::from_sqlx)?;
            }
        }
        Ok(())
    }

    pub async fn commit(self) -> Result<(), Error> {
        match self.conn {
            TxConn::Postgres(tx) => tx.commit().await?,
            TxConn::Sqlite(tx) => tx.commit().await.map_err(Error::from_sqlx)?,
        }
        if let Some(hook) = &self.hook
            && !self.runs.is_empty()
        {
            hook(&self.runs);
        }
        Ok(())
    }
}

/// Every text the store writes or looks up, made storable the same way on
/// both backends: a NUL (which PostgreSQL's TEXT cannot hold) becomes U+FFFD.
/// JSON documents never reach here with a raw NUL (serialised JSON escapes it
/// as `\u0000`), so they round-trip exactly; free text from workers (error
/// messages, log lines) is stored with the replacement character instead of
/// being refused, so a failure report is never lost. Identifiers with control
/// characters are refused at the edge, before this.
pub fn storable_text(text: String) -> String {
    if text.contains('\0') {
        text.replace('\0', "\u{FFFD}")
    } else {
        text
    }
}

type PgQuery<'q> = sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>;
type SqliteQuery<'q> = sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments>;

fn bind_pg(mut query: PgQuery<'_>, args: Vec<Arg>) -> PgQuery<'_> {
    for arg in args {
        query = match arg {
            Arg::Int(v) => query.bind(v),
            Arg::Text(v) => query.bind(storable_text(v)),
            Arg::NullInt => query.bind(None::<i64>),
            Arg::NullText => query.bind(None::<String>),
        };
    }
    query
}

/// A SQLite statement with its `$N` parameters written as anonymous `?`s,
/// and its arguments in the order the `?`s appear (an argument whose `$N`
/// occurs twice is bound twice). Outside string literals, quoted names and
/// comments only.
///
/// SQLite keeps a statement's named parameters (`$N`, and `?N` too) in a
/// list it scans linearly, and sqlx asks for every parameter's name when it
/// binds, so binding n named parameters costs O(n²): on a batch insert of a
/// thousand values that was milliseconds per statement. Anonymous
/// parameters have no name to look up.
///
/// The statement is kept as it is when it has no `$N`, or one beyond `args`
/// (sqlx then reports the mismatch as before).
fn positional(sql: &str, args: Vec<Arg>) -> (Cow<'_, str>, Vec<Arg>) {
    let bytes = sql.as_bytes();
    let mut out = String::new();
    let mut order: Vec<usize> = Vec::new();
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            quote @ (b'\'' | b'"' | b'`') => {
                i += 1;
                while i < bytes.len() && bytes[i] != quote {
                    i += 1;
                }
                i += 1;
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'$' if bytes.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                let start = i;
                i += 1;
                let mut n = 0usize;
                while let Some(digit) = bytes.get(i).filter(|b| b.is_ascii_digit()) {
                    n = n
                        .saturating_mul(10)
                        .saturating_add(usize::from(digit - b'0'));
                    i += 1;
                }
                if n == 0 || n > args.len() {
                    return (Cow::Borrowed(sql), args);
                }
                out.push_str(&sql[copied..start]);
                out.push('?');
                copied = i;
                order.push(n - 1);
            }
            _ => i += 1,
        }
    }
    if order.is_empty() {
        return (Cow::Borrowed(sql), args);
    }
    out.push_str(&sql[copied..]);
    let in_order = order.len() == args.len() && order.iter().enumerate().all(|(i, n)| i == *n);
    if in_order {
        return (Cow::Owned(out), args);
    }
    let bound = order.iter().map(|n| args[*n].clone()).collect();
    (Cow::Owned(out), bound)
}

fn bind_sqlite(mut query: SqliteQuery<'_>, args: Vec<Arg>) -> SqliteQuery<'_> {
    for arg in args {
        query = match arg {
            Arg::Int(v) => query.bind(v),
            Arg::Text(v) => query.bind(storable_text(v)),
            Arg::NullInt => query.bind(None::<i64>),
            Arg::NullText => query.bind(None::<String>),
        };
    }
    query
}

fn column_names<R: sqlx::Row>(row: &R) -> Arc<[String]> {
    row.columns().iter().map(|c| c.name().to_owned()).collect()
}

fn convert_pg(rows: Vec<sqlx::postgres::PgRow>) -> Vec<Row> {
    let Some(first) = rows.first() else {
        return Vec::new();
    };
    let columns = column_names(first);
    rows.iter()
        .map(|row| {
            let values = (0..columns.len())
                .map(|i| {
                    let raw = row.try_get_raw(i).expect("column index in range");
                    if raw.is_null() {
                        return Val::Null;
                    }
                    match raw.type_info().name() {
                        "INT8" => Val::Int(row.get::<i64, _>(i)),
                        "INT4" => Val::Int(i64::from(row.get::<i32, _>(i))),
                        "INT2" => Val::Int(i64::from(row.get::<i16, _>(i))),
                        "FLOAT8" => Val::Real(row.get::<f64, _>(i)),
                        "FLOAT4" => Val::Real(f64::from(row.get::<f32, _>(i))),
                        "BOOL" => Val::Int(i64::from(row.get::<bool, _>(i))),
                        _ => row
                            .try_get::<String, _>(i)
                            .map_or(Val::Unreadable, Val::Text),
                    }
                })
                .collect();
            Row {
                columns: columns.clone(),
                values,
            }
        })
        .collect()
}

fn convert_sqlite(rows: Vec<sqlx::sqlite::SqliteRow>) -> Vec<Row> {
    let Some(first) = rows.first() else {
        return Vec::new();
    };
    let columns = column_names(first);
    rows.iter()
        .map(|row| {
            let values = (0..columns.len())
                .map(|i| {
                    let raw = row.try_get_raw(i).expect("column index in range");
                    if raw.is_null() {
                        return Val::Null;
                    }
                    match raw.type_info().name() {
                        "INTEGER" | "BOOLEAN" => Val::Int(row.get::<i64, _>(i)),
                        "REAL" => Val::Real(row.get::<f64, _>(i)),
                        _ => row
                            .try_get::<String, _>(i)
                            .map_or(Val::Unreadable, Val::Text),
                    }
                })
                .collect();
            Row {
                columns: columns.clone(),
                values,
            }
        })
        .collect()
}

/// `$first, $first+1, ...` placeholders for an `IN (...)` list of `n` items.
pub fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Appends `($first, ..., $first+n-1)`: one row of a multi-row `VALUES`.
pub fn push_tuple(sql: &mut String, first: usize, n: usize) {
    use std::fmt::Write;
    sql.push('(');
    for i in first..first + n {
        if i > first {
            sql.push_str(", ");
        }
        let _ = write!(sql, "${i}");
    }
    sql.push(')');
}

#[cfg(test)]
mod tests {
    use super::{Arg, positional};

    fn texts(args: &[Arg]) -> Vec<String> {
        args.iter().map(|a| format!("{a:?}")).collect()
    }

    #[test]
    fn numbered_parameters_become_anonymous_in_order_of_use() {
        let args = vec![Arg::Int(1), Arg::Text("b".into()), Arg::Int(3)];
        let (sql, bound) = positional(
            "UPDATE t SET a = $2, b = '$1 -- x', c = $3 WHERE d = $1 AND e = $3 -- $9\n AND \"$2\" = 1",
            args,
        );
        assert_eq!(
            sql,
            "UPDATE t SET a = ?, b = '$1 -- x', c = ? WHERE d = ? AND e = ? -- $9\n AND \"$2\" = 1"
        );
        assert_eq!(
            texts(&bound),
            ["Text(\"b\")", "Int(3)", "Int(1)", "Int(3)"],
            "each ? gets the argument of the $N it replaced"
        );
    }

    #[test]
    fn statements_in_order_keep_their_arguments_and_odd_ones_stay_as_they_are() {
        let (sql, bound) = positional("VALUES ($1, $2), ($3, $4)", (1..=4).map(Arg::Int).collect());
        assert_eq!(sql, "VALUES (?, ?), (?, ?)");
        assert_eq!(texts(&bound), ["Int(1)", "Int(2)", "Int(3)", "Int(4)"]);
        for odd in ["SELECT 1", "SELECT $2", "SELECT $0"] {
            let (sql, bound) = positional(odd, vec![Arg::Int(7)]);
            assert_eq!(sql, odd, "{odd}");
            assert_eq!(bound.len(), 1);
        }
    }
}
