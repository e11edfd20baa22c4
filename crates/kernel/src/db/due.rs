//! What a transaction owes its connection but has not sent yet: its `BEGIN`, and writes whose
//! outcome nothing in the transaction waits for ([`Write`], queued by
//! [`Tx::defer`](super::Tx::defer)). They go to the connection ahead of the transaction's next
//! statement, or with its end.
//!
//! SQLite: sqlx runs each connection on a thread of its own, and every command is a hop there and
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
//!
//! PostgreSQL: the driver sends one statement per round trip and cannot pipeline, and the
//! server's cost per statement is most of a short one's (docs/benchmarks.md). So writes marked
//! [`independent`](Write::independent) share one statement with their neighbours, as
//! data-modifying CTEs (`WITH w1 AS (<write>), w2 AS (<write>) SELECT 1`) and wait for the
//! transaction's end unless a write that is not independent goes first. `BEGIN` waits for the
//! transaction's first statement of its own: a transaction of deferred writes that fit one
//! statement sends just that statement, atomic without `BEGIN` and `COMMIT` (three round trips
//! or more become one). The parts of one statement share a snapshot and run in no set order,
//! which is why only writes that touch nothing another write of the transaction touches, and
//! that no statement of the transaction reads, may share.

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
    independent: bool,
    ordered_by: Option<&'static str>,
}

impl Write {
    pub fn new(sql: impl Into<String>) -> Self {
        Self { sql: sql.into(), values: Vec::new(), independent: false, ordered_by: None }
    }

    /// Declares that the write neither reads nor changes a row that another write of its
    /// transaction changes, needs no other write to have run first (a foreign key is checked at
    /// the end of the statement, so a row inserted beside it counts as there), and that no
    /// statement of the transaction reads what it writes. On PostgreSQL it may then wait for the
    /// transaction's end and share a statement with the writes next to it (see the module notes).
    pub fn independent(mut self) -> Self {
        self.independent = true;
        self
    }

    /// Independent writes that name the same `order` still run in the order they were deferred:
    /// they never share a statement (its parts run in no set order). For inserts whose rows
    /// draw numbers from one sequence, like the outbox's.
    pub fn ordered_by(mut self, order: &'static str) -> Self {
        self.ordered_by = Some(order);
        self
    }

    pub fn bind<T>(mut self, value: T) -> Self
    where
        T: Encode<'static, Sqlite> + Type<Sqlite> + Encode<'static, Postgres> + Type<Postgres> + Send + Sync + 'static,
    {
        self.values.push(Box::new(value));
        self
    }
}

/// A PostgreSQL statement and its arguments, ready to run.
pub(super) type PgStatement = (sqlx::AssertSqlSafe<String>, PgArguments);

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

    /// Takes the deferred writes as the PostgreSQL statements that run them, in order: each
    /// statement holds one write, or consecutive ones of which at most one is not independent.
    pub(super) fn take_postgres(&mut self) -> Result<Vec<PgStatement>, BoxDynError> {
        share_statements(std::mem::take(&mut self.writes))
            .into_iter()
            .map(|run| postgres_statement(None, run))
            .collect()
    }

    /// Takes the deferred writes with `guard` as PostgreSQL statements: the last one runs the
    /// guard together with the writes that may share a statement with it (see
    /// [`postgres_statement`]); writes ahead of those, if any, run first on their own.
    pub(super) fn take_postgres_guarded(&mut self, guard: Write) -> Result<Vec<PgStatement>, BoxDynError> {
        let mut runs = share_statements(std::mem::take(&mut self.writes));
        let last = runs.pop().unwrap_or_default();
        let mut statements: Vec<PgStatement> =
            runs.into_iter().map(|run| postgres_statement(None, run)).collect::<Result<_, _>>()?;
        statements.push(postgres_statement(Some(guard), last)?);
        Ok(statements)
    }

    /// Whether a PostgreSQL statement of the transaction's own must wait for the deferred writes:
    /// independent ones can wait for the end, as no statement reads them.
    pub(super) fn holds_dependent_write(&self) -> bool {
        self.writes.iter().any(|w| !w.independent)
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
            ahead += statements_in_begin(begin);
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

/// Statements in a transaction's `BEGIN`, each reporting a result of its own: it may be several
/// (`BEGIN IMMEDIATE; SAVEPOINT member`, see `group`).
fn statements_in_begin(begin: &str) -> usize {
    1 + begin.matches(';').count()
}

/// Follows a guard in a SQLite script (see [`run_guarded_sqlite`]): fails the script when the
/// guard changed no row, so nothing after it runs. SQLite has no statement that raises an error
/// on a condition outside triggers; `json()` of a text that is not JSON fails, and `changes()`
/// (rows the guard changed) keeps the expression from being evaluated ahead of the guard.
const SQLITE_GUARD_CHECK: &str =
    "SELECT json(CASE WHEN changes() > 0 THEN '1' ELSE 'emporium: guard changed no row' END)";

/// Runs what is due, then `guard`, then the deferred writes and `tail`, as one SQLite script:
/// a guarded commit ([`Tx::commit_if`](super::Tx::commit_if)) in one hop instead of two. The
/// writes and `tail` run only if the guard changed a row; returns whether it did. When it did
/// not, the transaction is left open at the guard (the caller rolls it back), and what was due
/// is gone, as after any end.
pub(super) async fn run_guarded_sqlite(
    conn: &mut SqliteConnection,
    due: &mut Due,
    guard: Write,
    tail: &str,
) -> sqlx::Result<bool> {
    // Results (one per statement) that come ahead of the guard's own: the `BEGIN` if unsent.
    let ahead = due.begin.map_or(0, statements_in_begin);
    due.writes.insert(0, Write::new(SQLITE_GUARD_CHECK));
    due.writes.insert(0, guard);
    let mut arguments = SqliteArguments::default();
    let (script, _) = due.take_into(tail, &mut arguments).map_err(sqlx::Error::Encode)?;
    let mut results = conn.fetch_many((sqlx::AssertSqlSafe(script), Some(arguments)));
    let mut finished = 0;
    let mut guard_changed = None;
    while let Some(step) = results.next().await {
        match step {
            Ok(Either::Left(done)) => {
                if finished == ahead {
                    guard_changed = Some(done.rows_affected() > 0);
                }
                finished += 1;
            }
            // The check's one row.
            Ok(Either::Right(_)) => {}
            // The check failing after a guard that changed nothing is the refusal; anything
            // else is an error of the transaction.
            Err(_) if guard_changed == Some(false) => return Ok(false),
            Err(err) => return Err(err),
        }
    }
    // The whole script ran, the tail too: the check let it through.
    debug_assert_eq!(guard_changed, Some(true), "the guard's result is the one after the BEGIN's");
    Ok(true)
}

/// Splits `writes` into the runs that may share a statement (see [`Due::take_postgres`] and
/// [`Write::ordered_by`]).
fn share_statements(writes: Vec<Write>) -> Vec<Vec<Write>> {
    let mut runs: Vec<Vec<Write>> = Vec::new();
    for write in writes {
        let fits = runs.last().is_some_and(|run| {
            (write.independent || run.iter().all(|w| w.independent))
                && (write.ordered_by.is_none() || run.iter().all(|w| w.ordered_by != write.ordered_by))
        });
        if !fits {
            runs.push(Vec::new());
        }
        runs.last_mut().expect("a run was just started").push(write);
    }
    runs
}

/// One statement running `writes`: the write itself when alone, else each as a data-modifying
/// CTE (which PostgreSQL runs to completion whether or not anything reads it), its `$N` moved
/// past the parameters of the writes before it.
///
/// With a `guard` (see [`Tx::commit_if`](super::Tx::commit_if)) the guard is one more CTE, and
/// the statement ends by failing with [`GUARD_CLOSED`] when the guard changed no row: the whole
/// statement then leaves nothing behind, writes included. An error is the only way one
/// PostgreSQL statement can undo its own data-modifying parts.
fn postgres_statement(guard: Option<Write>, mut writes: Vec<Write>) -> Result<PgStatement, BoxDynError> {
    let mut arguments = PgArguments::default();
    for value in guard.iter().chain(&writes).flat_map(|w| &w.values) {
        value.add_to_postgres(&mut arguments)?;
    }
    if guard.is_none() && writes.len() == 1 {
        return Ok((sqlx::AssertSqlSafe(writes.remove(0).sql), arguments));
    }
    let mut sql = String::from("WITH ");
    let mut offset = 0;
    if let Some(guard) = &guard {
        sql.push_str("g AS (");
        sql.push_str(&guard.sql);
        sql.push_str(" RETURNING 1)");
        offset = guard.values.len();
    }
    for (i, write) in writes.iter().enumerate() {
        if i > 0 || guard.is_some() {
            sql.push_str(", ");
        }
        sql.push_str(&format!("w{i} AS ("));
        renumber(&write.sql, offset, &mut sql);
        sql.push(')');
        offset += write.values.len();
    }
    match guard {
        // The cast fails at run time only: `count(*)` keeps the planner from folding it.
        Some(_) => sql.push_str(&format!(
            " SELECT CASE WHEN count(*) > 0 THEN 1 ELSE CAST('{GUARD_CLOSED}' || count(*) AS int) END FROM g"
        )),
        None => sql.push_str(" SELECT 1"),
    }
    Ok((sqlx::AssertSqlSafe(sql), arguments))
}

/// What a guarded PostgreSQL statement fails with when its guard changed no row (see
/// [`postgres_statement`]): the text PostgreSQL then cannot read as a number.
const GUARD_CLOSED: &str = "emporium: guard changed no row ";

/// Whether `err` is a guarded statement's own refusal (its guard changed no row), not a failure.
pub(super) fn is_guard_closed(err: &sqlx::Error) -> bool {
    // SQLSTATE 22P02: invalid_text_representation, naming the text it could not read.
    err.as_database_error()
        .is_some_and(|e| e.code().is_some_and(|code| code == "22P02") && e.message().contains(GUARD_CLOSED.trim_end()))
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

    fn write(sql: &str, values: usize, independent: bool) -> Write {
        let write = (0..values).fold(Write::new(sql), |w, v| w.bind(v as i64));
        if independent { write.independent() } else { write }
    }

    #[test]
    fn only_independent_writes_share_a_statement_with_another() {
        let shape = |writes: Vec<Write>| -> Vec<Vec<String>> {
            share_statements(writes).into_iter().map(|run| run.into_iter().map(|w| w.sql).collect()).collect()
        };
        let (d, i) = (false, true);
        assert_eq!(shape(vec![write("A", 0, i), write("B", 0, i)]), vec![vec!["A", "B"]]);
        assert_eq!(shape(vec![write("A", 0, d), write("B", 0, d)]), vec![vec!["A"], vec!["B"]]);
        assert_eq!(
            shape(vec![write("A", 0, i), write("B", 0, d), write("C", 0, i), write("D", 0, d), write("E", 0, i)]),
            vec![vec!["A", "B", "C"], vec!["D", "E"]]
        );
        assert!(shape(Vec::new()).is_empty());
        let seq = |sql: &str| write(sql, 0, i).ordered_by("seq");
        assert_eq!(
            shape(vec![seq("A"), write("B", 0, i), seq("C"), write("D", 0, d), seq("E")]),
            vec![vec!["A", "B"], vec!["C", "D"], vec!["E"]]
        );
    }

    #[test]
    fn writes_sharing_a_statement_become_ctes_with_their_parameters_in_order() {
        let (sql, arguments) = postgres_statement(
            None,
            vec![
                write("INSERT INTO a VALUES ($1, $2)", 2, true),
                write("WITH held AS (SELECT f($2)) INSERT INTO b SELECT $1 FROM held", 2, true),
            ],
        )
        .unwrap();
        assert_eq!(
            sql.0,
            "WITH w0 AS (INSERT INTO a VALUES ($1, $2)), w1 AS (WITH held AS (SELECT f($4)) INSERT INTO b SELECT $3 FROM held) SELECT 1"
        );
        assert_eq!(arguments.len(), 4);
        let (alone, arguments) = postgres_statement(None, vec![write("DELETE FROM a WHERE x = $1", 1, false)]).unwrap();
        assert_eq!(alone.0, "DELETE FROM a WHERE x = $1");
        assert_eq!(arguments.len(), 1);
    }

    #[test]
    fn a_guard_leads_its_statement_and_fails_it_when_it_changes_no_row() {
        let guard = write("UPDATE a SET s = $2 WHERE id = $1", 2, false);
        let (sql, arguments) =
            postgres_statement(Some(guard), vec![write("INSERT INTO b VALUES ($1)", 1, true)]).unwrap();
        assert_eq!(
            sql.0,
            format!(
                "WITH g AS (UPDATE a SET s = $2 WHERE id = $1 RETURNING 1), w0 AS (INSERT INTO b VALUES ($3)) \
                 SELECT CASE WHEN count(*) > 0 THEN 1 ELSE CAST('{GUARD_CLOSED}' || count(*) AS int) END FROM g"
            )
        );
        assert_eq!(arguments.len(), 3);
        let alone = postgres_statement(Some(write("DELETE FROM a", 0, false)), Vec::new()).unwrap().0;
        assert!(alone.0.starts_with("WITH g AS (DELETE FROM a RETURNING 1) SELECT CASE"), "{}", alone.0);
    }

    #[test]
    fn statements_of_a_script_are_counted_outside_quotes() {
        let count = |sql: &str| renumber(sql, 0, &mut String::new());
        assert_eq!(count("INSERT INTO t VALUES ($1)"), 0);
        assert_eq!(count("INSERT INTO t VALUES ($1); INSERT INTO u VALUES (';')"), 1);
        assert_eq!(count("UPDATE t SET a = 1; UPDATE u SET b = \"x;y\"; DELETE FROM v"), 2);
    }
}
