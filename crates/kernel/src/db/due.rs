//! What a SQLite transaction owes its connection but has not sent yet: its `BEGIN`, and writes
//! whose outcome nothing in the transaction waits for ([`Write`], queued by
//! [`Tx::defer`](super::Tx::defer)). They go to the connection ahead of the transaction's next
//! statement, or with its `COMMIT`, as one script.
//!
//! sqlx runs each SQLite connection on a thread of its own, and every command is a hop there and
//! back: two context switches on a busy machine, which cost far more than SQLite's work on a
//! short statement (docs/benchmarks.md, "Checkout"). A transaction used to spend one hop on
//! `BEGIN` alone and one on each row it inserts; now `BEGIN IMMEDIATE; <write>; <write>;
//! <statement>` is one hop, and a transaction that never runs a statement never begins at all.
//!
//! The script runs its statements in order on the connection's thread, exactly as separate
//! commands would. SQLite binds `$N` parameters by number in every statement of a script, so the
//! deferred writes are renumbered to follow the parameters of the statement they ride with, and
//! their values are appended to its arguments. Each statement ahead reports a result of its own
//! ("rows changed"), which is dropped from what the caller sees. A deferred write that fails
//! (a constraint) fails the statement it rode with, or the commit; either way the transaction
//! then rolls back, as it would have had the write failed on its own.

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use sqlx::error::BoxDynError;
use sqlx::postgres::PgArguments;
use sqlx::sqlite::{SqliteArguments, SqliteQueryResult, SqliteRow, SqliteStatement, SqliteTypeInfo};
use sqlx::{Arguments, Either, Encode, Execute, Executor, Postgres, SqlStr, Sqlite, SqliteConnection, Type};

/// A write and its values, for either backend: the SQL with `$1, $2, …` placeholders (no
/// trailing `;`; a SQLite script of several statements is fine) and one [`bind`](Write::bind)
/// per placeholder, in order.
pub struct Write {
    sql: String,
    values: Vec<Box<dyn Value>>,
}

impl Write {
    pub fn new(sql: impl Into<String>) -> Self {
        Self { sql: sql.into(), values: Vec::new() }
    }

    pub fn bind<T>(mut self, value: T) -> Self
    where
        T: Encode<'static, Sqlite> + Type<Sqlite> + Encode<'static, Postgres> + Type<Postgres> + Send + Sync + 'static,
    {
        self.values.push(Box::new(value));
        self
    }

    /// As a PostgreSQL query, to run at once.
    pub(super) fn into_postgres(self) -> Result<(sqlx::AssertSqlSafe<String>, PgArguments), BoxDynError> {
        let mut arguments = PgArguments::default();
        for value in &self.values {
            value.add_to_postgres(&mut arguments)?;
        }
        Ok((sqlx::AssertSqlSafe(self.sql), arguments))
    }
}

/// A bound value that either driver can take.
trait Value: Send + Sync {
    fn add_to_sqlite(&self, arguments: &mut SqliteArguments) -> Result<(), BoxDynError>;
    fn add_to_postgres(&self, arguments: &mut PgArguments) -> Result<(), BoxDynError>;
}

impl<T> Value for T
where
    T: Encode<'static, Sqlite> + Type<Sqlite> + Encode<'static, Postgres> + Type<Postgres> + Send + Sync,
{
    fn add_to_sqlite(&self, arguments: &mut SqliteArguments) -> Result<(), BoxDynError> {
        arguments.add(self)
    }

    fn add_to_postgres(&self, arguments: &mut PgArguments) -> Result<(), BoxDynError> {
        arguments.add(self)
    }
}

/// A SQLite transaction's `BEGIN` while unsent, and its deferred writes.
#[derive(Default)]
pub(super) struct Due {
    pub(super) begin: Option<&'static str>,
    pub(super) writes: Vec<Write>,
}

impl Due {
    pub(super) fn is_empty(&self) -> bool {
        self.begin.is_none() && self.writes.is_empty()
    }

    /// Takes everything due into one script ending with `tail`, whose own parameters are the
    /// first `arguments.len()`; the writes' values are appended to `arguments`. Also returns how
    /// many statements run ahead of `tail`.
    fn take_into(&mut self, tail: &str, arguments: &mut SqliteArguments) -> Result<(String, usize), BoxDynError> {
        let mut script = String::with_capacity(tail.len() + self.writes.iter().map(|w| w.sql.len() + 2).sum::<usize>());
        let mut ahead = 0;
        if let Some(begin) = self.begin.take() {
            script.push_str(begin);
            script.push_str("; ");
            ahead += 1;
        }
        for write in std::mem::take(&mut self.writes) {
            let separators = renumber(&write.sql, arguments.len(), &mut script);
            script.push_str("; ");
            for value in &write.values {
                value.add_to_sqlite(arguments)?;
            }
            ahead += 1 + separators;
        }
        script.push_str(tail);
        Ok((script, ahead))
    }
}

/// Appends `sql` to `out` with every `$N` placeholder moved up by `offset` (`$N` inside string
/// literals and quoted identifiers left alone). Returns how many `;` separate statements in it.
fn renumber(sql: &str, offset: usize, out: &mut String) -> usize {
    let mut separators = 0;
    let mut quote: Option<char> = None;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, ';') => separators += 1,
            (None, '$') if chars.peek().is_some_and(char::is_ascii_digit) => {
                let mut n = 0usize;
                while let Some(d) = chars.peek().and_then(|d| d.to_digit(10)) {
                    n = n * 10 + d as usize;
                    chars.next();
                }
                out.push('$');
                out.push_str(&(n + offset).to_string());
                continue;
            }
            (None, _) => {}
        }
        out.push(c);
    }
    separators
}

/// A SQLite connection as the [`sql!`](crate::sql) macro hands it to a query: with whatever the
/// transaction still owes it sent ahead of the query.
#[derive(Debug)]
pub struct SqliteExec<'c> {
    conn: &'c mut SqliteConnection,
    due: &'c mut Due,
}

impl std::fmt::Debug for Due {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Due").field("begin", &self.begin).field("writes", &self.writes.len()).finish()
    }
}

impl<'c> SqliteExec<'c> {
    pub(super) fn new(conn: &'c mut SqliteConnection, due: &'c mut Due) -> Self {
        Self { conn, due }
    }
}

/// A script and its arguments, as sqlx's SQLite driver executes it.
type Script = (sqlx::AssertSqlSafe<String>, Option<SqliteArguments>);

/// `query` with everything due run first, as one script; and how many results come ahead of
/// the query's own.
fn prefixed<'q, E: Execute<'q, Sqlite>>(due: &mut Due, mut query: E) -> Result<(Script, usize), sqlx::Error> {
    let mut arguments = query.take_arguments().map_err(sqlx::Error::Encode)?.unwrap_or_default();
    let sql = query.sql();
    let (script, ahead) = due.take_into(sql.as_str(), &mut arguments).map_err(sqlx::Error::Encode)?;
    Ok(((sqlx::AssertSqlSafe(script), Some(arguments)), ahead))
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
        if self.due.is_empty() {
            return self.conn.fetch_many(query);
        }
        match prefixed(self.due, query) {
            Err(err) => futures::stream::once(async move { Err(err) }).boxed(),
            // The first `ahead` results are those of the statements sent ahead (their errors are
            // kept). None of them returns rows.
            Ok((script, ahead)) => {
                let mut dropped = 0;
                self.conn
                    .fetch_many(script)
                    .filter(move |step| {
                        let drop = dropped < ahead && matches!(step, Ok(Either::Left(_)));
                        dropped += usize::from(drop);
                        futures::future::ready(!drop)
                    })
                    .boxed()
            }
        }
    }

    fn fetch_optional<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, Result<Option<SqliteRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Sqlite>,
    {
        if self.due.is_empty() {
            return self.conn.fetch_optional(query);
        }
        match prefixed(self.due, query) {
            Err(err) => futures::future::ready(Err(err)).boxed(),
            // Rows come from the query only: the statements ahead return none.
            Ok((script, _)) => self.conn.fetch_optional(script),
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
        // Preparing runs nothing: what is due stays due.
        self.conn.prepare_with(sql, parameters)
    }

    fn describe<'e>(self, sql: SqlStr) -> BoxFuture<'e, Result<sqlx_core::describe::Describe<Sqlite>, sqlx::Error>>
    where
        'c: 'e,
    {
        self.conn.describe(sql)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn renumbered(sql: &str, offset: usize) -> String {
        let mut out = String::new();
        renumber(sql, offset, &mut out);
        out
    }

    #[test]
    fn placeholders_move_up_and_quoted_text_stays() {
        assert_eq!(renumbered("UPDATE t SET a = $1 WHERE b = $12", 3), "UPDATE t SET a = $4 WHERE b = $15");
        assert_eq!(renumbered("SELECT '$1', \"$2\", $2", 10), "SELECT '$1', \"$2\", $12");
        assert_eq!(renumbered("SELECT 'it''s $1', $1", 1), "SELECT 'it''s $1', $2");
        assert_eq!(renumbered("SELECT $ FROM t", 5), "SELECT $ FROM t");
    }

    #[test]
    fn statements_of_a_script_are_counted_outside_quotes() {
        let count = |sql: &str| renumber(sql, 0, &mut String::new());
        assert_eq!(count("INSERT INTO t VALUES ($1)"), 0);
        assert_eq!(count("INSERT INTO t VALUES ($1); INSERT INTO u VALUES (';')"), 1);
        assert_eq!(count("UPDATE t SET a = 1; UPDATE u SET b = \"x;y\"; DELETE FROM v"), 2);
    }
}
