//! A SQLite transaction's `BEGIN` sent together with its first statement.
//!
//! sqlx runs each SQLite connection on a thread of its own, and every command is a hop there and
//! back: two context switches on a busy machine, which cost far more than SQLite's work on a
//! short statement (docs/benchmarks.md, "Checkout"). A transaction used to spend one hop on
//! `BEGIN` alone. Instead, [`Tx`](super::Tx) remembers that its `BEGIN` is due, and the first
//! statement goes to the connection as one script, `BEGIN IMMEDIATE; <statement>`, in one hop.
//! A transaction that never runs a statement never begins at all.
//!
//! The script runs `BEGIN` and then the statement, in order, on the connection's thread, exactly
//! as two commands would; SQLite binds `$N` parameters by number in every statement of a script,
//! and `BEGIN` has none. `BEGIN` reports "rows changed" like any statement (SQLite's count of the
//! *previous* write), so its result is dropped from what the caller sees.

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use sqlx::sqlite::{SqliteQueryResult, SqliteRow, SqliteStatement, SqliteTypeInfo};
use sqlx::{Either, Execute, Executor, SqlStr, Sqlite, SqliteConnection};

/// A SQLite connection as the [`sql!`](crate::sql) macro hands it to a query: with the `BEGIN`
/// still due, when there is one.
#[derive(Debug)]
pub struct SqliteExec<'c> {
    conn: &'c mut SqliteConnection,
    /// Taken by the statement that sends it.
    begin: &'c mut Option<&'static str>,
}

impl<'c> SqliteExec<'c> {
    pub(super) fn new(conn: &'c mut SqliteConnection, begin: &'c mut Option<&'static str>) -> Self {
        Self { conn, begin }
    }
}

/// `query` with `begin` run first, as one script with the same arguments.
fn prefixed<'q, E: Execute<'q, Sqlite>>(
    begin: &'static str,
    mut query: E,
) -> Result<(sqlx::AssertSqlSafe<String>, Option<sqlx::sqlite::SqliteArguments>), sqlx::Error> {
    let arguments = query.take_arguments().map_err(sqlx::Error::Encode)?;
    let sql = query.sql();
    Ok((sqlx::AssertSqlSafe(format!("{begin}; {}", sql.as_str())), arguments))
}

impl<'c> Executor<'c> for SqliteExec<'c> {
    type Database = Sqlite;

    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxStream<'e, Result<Either<SqliteQueryResult, SqliteRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Sqlite>,
    {
        let Some(begin) = self.begin.take() else { return self.conn.fetch_many(query) };
        match prefixed(begin, query) {
            Err(err) => futures::stream::once(async move { Err(err) }).boxed(),
            // The first result is BEGIN's own (or its error, which is kept).
            Ok(script) => self
                .conn
                .fetch_many(script)
                .enumerate()
                .filter_map(|(i, step)| async move {
                    match step {
                        Ok(Either::Left(_)) if i == 0 => None,
                        step => Some(step),
                    }
                })
                .boxed(),
        }
    }

    fn fetch_optional<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, Result<Option<SqliteRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Sqlite>,
    {
        let Some(begin) = self.begin.take() else { return self.conn.fetch_optional(query) };
        match prefixed(begin, query) {
            Err(err) => futures::future::ready(Err(err)).boxed(),
            // Rows come from the statement only: BEGIN returns none.
            Ok(script) => self.conn.fetch_optional(script),
        }
    }

    fn prepare_with<'e>(
        self,
        sql: SqlStr,
        parameters: &'e [SqliteTypeInfo],
    ) -> BoxFuture<'e, Result<SqliteStatement, sqlx::Error>>
    where
        'c: 'e,
    {
        // Preparing runs nothing: the BEGIN stays due.
        self.conn.prepare_with(sql, parameters)
    }

    fn describe<'e>(self, sql: SqlStr) -> BoxFuture<'e, Result<sqlx_core::describe::Describe<Sqlite>, sqlx::Error>>
    where
        'c: 'e,
    {
        self.conn.describe(sql)
    }
}
