//! Storage on SQLite or PostgreSQL from one code path.
//!
//! Design rules:
//! - A service gets one [`Db`]: a SQLite file `data/<service>.db` (WAL) by default, or its own
//!   schema `<service>` in the PostgreSQL database given by `EMPORIUM_DATABASE_URL`. No service
//!   ever opens another service's `Db`.
//! - Queries are written once, with `$1, $2, …` placeholders (SQLite accepts them too), and run
//!   through [`sql!`](crate::sql), which expands the same expression once per backend. Each
//!   expansion is type-checked against that driver, so row types and binds must work on both.
//!   Where the SQL genuinely differs, the store matches on [`Db::backend`] and says why.
//! - Correctness on both is proven by running the same tests against both backends (sqlx's
//!   compile-time checked macros only cover one database, see launchbadge/sqlx#916).
//! - Write transactions on SQLite start with `BEGIN IMMEDIATE`, so two writers queue on the
//!   database lock instead of both reading and then failing to upgrade (SQLITE_BUSY).
//! - Within one process, SQLite writers (transactions and [`sql_exec!`](crate::sql_exec) on the
//!   pool) first queue on an async mutex per database. SQLite's own busy handler waits by
//!   sleeping in steps of up to 100 ms, so writers contending on the file lock spend most of
//!   their time asleep while the lock is free; a FIFO queue hands the lock over at once. The busy
//!   timeout still covers other processes on the same file.

use crate::config::Settings;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, PgConnection, SqliteConnection};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Either backend's value; matched by [`sql!`](crate::sql).
pub enum Exec<S, P> {
    Sqlite(S),
    Postgres(P),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs the same query expression on whichever backend `$target` (a [`Db`] or a [`Tx`]) is.
///
/// ```text
/// let n: i64 = sql!(db, |c| sqlx::query_scalar("SELECT count(*) FROM users").fetch_one(c).await)?;
/// ```
#[macro_export]
macro_rules! sql {
    ($target:expr, |$c:ident| $body:expr) => {
        match $target.exec() {
            $crate::db::Exec::Sqlite($c) => $body,
            $crate::db::Exec::Postgres($c) => $body,
        }
    };
}

/// Like [`sql!`](crate::sql) for statements run with `.execute(c)`: the drivers' result types
/// differ, so this yields `Result<u64, sqlx::Error>`, the number of rows affected.
///
/// ```text
/// let updated = sql_exec!(tx, |c| sqlx::query("UPDATE … WHERE id = $1").bind(id).execute(c).await)?;
/// ```
#[macro_export]
macro_rules! sql_exec {
    ($target:expr, |$c:ident| $body:expr) => {
        match $target.write_exec().await {
            Err(err) => Err(err),
            Ok(($crate::db::Exec::Sqlite($c), _writer)) => ($body).map(|r| r.rows_affected()),
            Ok(($crate::db::Exec::Postgres($c), _writer)) => ($body).map(|r| r.rows_affected()),
        }
    };
}

/// A place in the SQLite writer queue (see the module notes); `None` where none is needed.
pub type WriterTurn = Option<tokio::sync::OwnedMutexGuard<()>>;

/// How long a writer waits for its turn: SQLite's busy timeout, the same patience as before.
const WRITER_WAIT: Duration = Duration::from_secs(15);

#[derive(Clone)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// A service's database handle (cheap to clone).
#[derive(Clone)]
pub struct Db {
    pool: Pool,
    service: &'static str,
    /// Bumped after every commit that appended outbox rows, so dispatchers wake at once.
    outbox_commits: Arc<watch::Sender<u64>>,
    /// The SQLite writer queue (unused on PostgreSQL, whose writers lock rows, not the file).
    writer: Arc<tokio::sync::Mutex<()>>,
}

/// The migrations a service embeds, one directory per backend.
pub struct ServiceMigrations {
    pub sqlite: Migrator,
    pub postgres: Migrator,
}

static KERNEL_SQLITE: Migrator = sqlx::migrate!("./migrations/sqlite");
static KERNEL_POSTGRES: Migrator = sqlx::migrate!("./migrations/postgres");

/// The kernel's own tables (outbox, cursors, processed events) live in every service database,
/// versioned separately from the service's migrations.
const KERNEL_MIGRATIONS_TABLE: &str = "_emporium_kernel_migrations";

impl Db {
    /// Opens (creating if needed) the database of `service` as configured, and migrates it.
    pub async fn open(
        service: &'static str,
        settings: &Settings,
        migrations: &ServiceMigrations,
    ) -> anyhow::Result<Db> {
        match &settings.database_url {
            Some(url) if settings.is_postgres() => {
                Self::open_postgres(service, url.expose(), settings.database_max_connections, migrations).await
            }
            Some(_) => anyhow::bail!("EMPORIUM_DATABASE_URL must start with postgres:// (leave it unset for SQLite)"),
            None => {
                let path = settings.data_dir.join(format!("{service}.db"));
                Self::open_sqlite(service, &path, settings.database_max_connections, migrations).await
            }
        }
    }

    pub async fn open_sqlite(
        service: &'static str,
        path: &Path,
        max_connections: u32,
        migrations: &ServiceMigrations,
    ) -> anyhow::Result<Db> {
        use anyhow::Context;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating data dir {}", dir.display()))?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL is durable across application crashes in WAL mode; only an OS crash can lose
            // the last transactions, which is the usual trade for an embedded store.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(WRITER_WAIT)
            .foreign_keys(true)
            // Every statement at DEBUG (`RUST_LOG=sqlx::query=debug` shows them): off by default,
            // and filtered out before anything is formatted.
            .log_statements(tracing::log::LevelFilter::Debug);
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections.max(1))
            .connect_with(options)
            .await
            .with_context(|| format!("opening sqlite database {}", path.display()))?;
        let mut kernel = clone_migrator(&KERNEL_SQLITE);
        kernel.dangerous_set_table_name(KERNEL_MIGRATIONS_TABLE);
        kernel.run(&pool).await.context("kernel migrations (sqlite)")?;
        migrations.sqlite.run(&pool).await.with_context(|| format!("{service} migrations (sqlite)"))?;
        Ok(Self::from_pool(service, Pool::Sqlite(pool)))
    }

    pub async fn open_postgres(
        service: &'static str,
        url: &str,
        max_connections: u32,
        migrations: &ServiceMigrations,
    ) -> anyhow::Result<Db> {
        use anyhow::Context;
        let base = PgConnectOptions::from_str(url).context("parsing EMPORIUM_DATABASE_URL")?;
        ensure_schema(&base, service).await?;
        let options = base
            .options([("search_path", service)])
            .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_millis(500))
            .log_statements(tracing::log::LevelFilter::Debug);
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .with_context(|| format!("connecting to postgres for {service}"))?;
        let mut kernel = clone_migrator(&KERNEL_POSTGRES);
        kernel.dangerous_set_table_name(KERNEL_MIGRATIONS_TABLE);
        kernel.run(&pool).await.context("kernel migrations (postgres)")?;
        migrations.postgres.run(&pool).await.with_context(|| format!("{service} migrations (postgres)"))?;
        Ok(Self::from_pool(service, Pool::Postgres(pool)))
    }

    fn from_pool(service: &'static str, pool: Pool) -> Db {
        let (tx, _rx) = watch::channel(0);
        Db { pool, service, outbox_commits: Arc::new(tx), writer: Arc::new(tokio::sync::Mutex::new(())) }
    }

    pub fn service(&self) -> &'static str {
        self.service
    }

    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    /// The pool as an executor, for single statements outside a transaction.
    pub fn exec(&self) -> Exec<&SqlitePool, &PgPool> {
        match &self.pool {
            Pool::Sqlite(p) => Exec::Sqlite(p),
            Pool::Postgres(p) => Exec::Postgres(p),
        }
    }

    /// The pool for one write statement, with the SQLite writer's turn held while it runs.
    pub async fn write_exec(&self) -> sqlx::Result<(Exec<&SqlitePool, &PgPool>, WriterTurn)> {
        let turn = self.writer_turn().await?;
        Ok((self.exec(), turn))
    }

    async fn writer_turn(&self) -> sqlx::Result<WriterTurn> {
        match self.pool {
            Pool::Sqlite(_) => match tokio::time::timeout(WRITER_WAIT, self.writer.clone().lock_owned()).await {
                Ok(turn) => Ok(Some(turn)),
                Err(_) => Err(sqlx::Error::PoolTimedOut),
            },
            Pool::Postgres(_) => Ok(None),
        }
    }

    /// Starts a write transaction.
    pub async fn begin(&self) -> sqlx::Result<Tx> {
        let turn = self.writer_turn().await?;
        let inner = match &self.pool {
            Pool::Sqlite(p) => Exec::Sqlite(p.begin_with("BEGIN IMMEDIATE").await?),
            Pool::Postgres(p) => Exec::Postgres(p.begin().await?),
        };
        Ok(Tx { inner, _turn: turn, outbox_commits: self.outbox_commits.clone(), appended_events: false })
    }

    /// Starts a read-only transaction: one consistent view across several statements. On SQLite
    /// it neither queues for the writer's turn nor takes the write lock (a deferred `BEGIN` that
    /// only reads stays a reader), so reads never wait behind writers. Writing in it is a bug.
    pub async fn read(&self) -> sqlx::Result<Tx> {
        let inner = match &self.pool {
            Pool::Sqlite(p) => Exec::Sqlite(p.begin().await?),
            Pool::Postgres(p) => Exec::Postgres(p.begin().await?),
        };
        Ok(Tx { inner, _turn: None, outbox_commits: self.outbox_commits.clone(), appended_events: false })
    }

    /// Readiness probe: one round trip.
    pub async fn ping(&self) -> sqlx::Result<()> {
        // A read: it must not queue behind SQLite writers.
        let _: i32 = crate::sql!(self, |c| sqlx::query_scalar("SELECT 1").fetch_one(c).await)?;
        Ok(())
    }

    pub fn outbox_commits(&self) -> watch::Receiver<u64> {
        self.outbox_commits.subscribe()
    }

    pub async fn close(&self) {
        match &self.pool {
            Pool::Sqlite(p) => p.close().await,
            Pool::Postgres(p) => p.close().await,
        }
    }
}

/// A transaction on either backend. Dropping it without [`Tx::commit`] rolls back.
pub struct Tx {
    inner: Exec<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Transaction<'static, sqlx::Postgres>>,
    /// Released after `inner`: fields drop in order, and commit/rollback consume `inner` first.
    _turn: WriterTurn,
    outbox_commits: Arc<watch::Sender<u64>>,
    appended_events: bool,
}

impl Tx {
    pub fn exec(&mut self) -> Exec<&mut SqliteConnection, &mut PgConnection> {
        match &mut self.inner {
            Exec::Sqlite(t) => Exec::Sqlite(&mut **t),
            Exec::Postgres(t) => Exec::Postgres(&mut **t),
        }
    }

    /// For [`sql_exec!`](crate::sql_exec): the transaction already holds the writer's turn.
    pub async fn write_exec(&mut self) -> sqlx::Result<(Exec<&mut SqliteConnection, &mut PgConnection>, WriterTurn)> {
        Ok((self.exec(), None))
    }

    pub fn backend(&self) -> Backend {
        match self.inner {
            Exec::Sqlite(_) => Backend::Sqlite,
            Exec::Postgres(_) => Backend::Postgres,
        }
    }

    pub(crate) fn mark_events_appended(&mut self) {
        self.appended_events = true;
    }

    pub(crate) fn events_appended(&self) -> bool {
        self.appended_events
    }

    pub async fn commit(self) -> sqlx::Result<()> {
        match self.inner {
            Exec::Sqlite(t) => t.commit().await?,
            Exec::Postgres(t) => t.commit().await?,
        }
        if self.appended_events {
            self.outbox_commits.send_modify(|n| *n = n.wrapping_add(1));
        }
        Ok(())
    }

    pub async fn rollback(self) -> sqlx::Result<()> {
        match self.inner {
            Exec::Sqlite(t) => t.rollback().await,
            Exec::Postgres(t) => t.rollback().await,
        }
    }
}

async fn ensure_schema(options: &PgConnectOptions, schema: &str) -> anyhow::Result<()> {
    use anyhow::Context;
    let mut conn = match PgConnection::connect_with(options).await {
        Ok(conn) => conn,
        Err(err) if is_missing_database(&err) => {
            create_database(options).await?;
            PgConnection::connect_with(options).await.context("connecting to the database just created")?
        }
        Err(err) => return Err(err).context("connecting to postgres (is it running? check EMPORIUM_DATABASE_URL)"),
    };
    // Identifiers cannot be bound; service names are compile-time constants of [a-z_].
    debug_assert!(schema.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
    let statement = format!("CREATE SCHEMA IF NOT EXISTS {schema}");
    if let Err(err) = sqlx::query(sqlx::AssertSqlSafe(statement)).execute(&mut conn).await {
        // Two processes creating the schema at once: the loser sees a unique violation.
        if !is_unique_violation(&err) {
            return Err(err).context("creating service schema");
        }
    }
    conn.close().await.ok();
    Ok(())
}

fn is_missing_database(err: &sqlx::Error) -> bool {
    // SQLSTATE 3D000: invalid_catalog_name.
    err.as_database_error().and_then(|e| e.code()).is_some_and(|code| code == "3D000")
}

/// Creates the configured database through the `postgres` maintenance database, so pointing
/// Emporium at a fresh server needs no manual `createdb`.
async fn create_database(options: &PgConnectOptions) -> anyhow::Result<()> {
    use anyhow::Context;
    let name = options.get_database().context("EMPORIUM_DATABASE_URL names no database")?.to_owned();
    anyhow::ensure!(
        name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
        "database {name:?} does not exist; create it first (only [A-Za-z0-9_] names are created automatically)"
    );
    let mut admin = PgConnection::connect_with(&options.clone().database("postgres")).await.with_context(|| {
        format!("database {name:?} does not exist and the postgres database is not reachable to create it")
    })?;
    match sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\""))).execute(&mut admin).await {
        Ok(_) => tracing::info!(database = %name, "created database"),
        // Another process created it meanwhile.
        Err(err)
            if is_unique_violation(&err)
                || err.as_database_error().and_then(|e| e.code()).is_some_and(|c| c == "42P04") => {}
        Err(err) => return Err(err).with_context(|| format!("creating database {name:?}")),
    }
    admin.close().await.ok();
    Ok(())
}

fn clone_migrator(m: &Migrator) -> Migrator {
    let mut migrator = Migrator::with_migrations(m.migrations.to_vec());
    migrator.set_locking(m.locking);
    migrator
}

/// Rows per multi-row statement: callers insert longer lists in chunks of this many, which keeps
/// every statement within SQLite's 32,766 and PostgreSQL's 65,535 bind parameters (up to 65
/// columns).
pub const ROWS_PER_STATEMENT: usize = 500;

/// `INSERT INTO t (…) VALUES ($1, …, $k), ($k+1, …)` for `rows` rows of `columns` values each:
/// several rows in one statement (one round trip, one hop to SQLite's connection thread).
pub fn multi_row_insert(head: &str, columns: usize, rows: usize) -> String {
    let mut sql = String::with_capacity(head.len() + rows * columns * 5 + 8);
    sql.push_str(head);
    sql.push_str(" VALUES ");
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for column in 0..columns {
            if column > 0 {
                sql.push_str(", ");
            }
            sql.push('$');
            sql.push_str(&(row * columns + column + 1).to_string());
        }
        sql.push(')');
    }
    sql
}

/// `$first, $first+1, …` for `count` values: the list of an `IN (…)` whose length varies.
pub fn placeholders(first: usize, count: usize) -> String {
    (first..first + count).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// True when the statement failed on a UNIQUE or PRIMARY KEY constraint.
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    err.as_database_error().is_some_and(|e| e.is_unique_violation())
}

/// True when the statement failed on a CHECK constraint (e.g. stock going negative).
pub fn is_check_violation(err: &sqlx::Error) -> bool {
    err.as_database_error().is_some_and(|e| e.is_check_violation())
}

/// True when the statement failed on a FOREIGN KEY constraint.
pub fn is_foreign_key_violation(err: &sqlx::Error) -> bool {
    err.as_database_error().is_some_and(|e| e.is_foreign_key_violation())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_row_inserts_number_every_value_once() {
        assert_eq!(multi_row_insert("INSERT INTO t (a, b)", 2, 1), "INSERT INTO t (a, b) VALUES ($1, $2)");
        assert_eq!(
            multi_row_insert("INSERT INTO t (a, b, c)", 3, 2),
            "INSERT INTO t (a, b, c) VALUES ($1, $2, $3), ($4, $5, $6)"
        );
    }

    #[test]
    fn placeholders_start_where_asked() {
        assert_eq!(placeholders(1, 3), "$1, $2, $3");
        assert_eq!(placeholders(2, 2), "$2, $3");
        assert_eq!(placeholders(5, 0), "");
    }
}
