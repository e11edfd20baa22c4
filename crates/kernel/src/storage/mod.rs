//! Storage, plainly (decision record 0002): a transaction is a closure that runs whole on a
//! thread that may block, and commits when it returns `Ok`.
//!
//! - SQLite: one writer thread per database owns the one writing connection. Callers send their
//!   transaction as a closure; the thread takes every closure waiting, runs them one after the
//!   other in one `BEGIN IMMEDIATE … COMMIT`, each inside its own savepoint (rolled back alone
//!   when it fails), and answers each caller once the `COMMIT` is durable. Reads run on a small
//!   pool of reading connections, each read in one snapshot.
//! - PostgreSQL: a pool of connections of the `postgres` crate; a transaction runs on a blocking
//!   thread as `BEGIN`, its statements (each prepared once per connection, with its parameters'
//!   types; then one round trip per run), `COMMIT`. The closure
//!   always runs to its end, so a caller that gives up never leaves a connection mid-statement.
//! - A statement is written once, with `$1, $2, …` placeholders (SQLite takes `$N` as a name:
//!   each is bound by its name, and a statement must use exactly `$1…$n` for `n` values).
//!   Where the backends need different SQL, the closure matches on [`Tx::backend`].
//! - A refusal is an ordinary value: a conditional `UPDATE` that changed no row is looked at by
//!   the closure, which returns its own error (and everything it wrote is rolled back).

mod migrate;
mod postgres;
mod sqlite;
mod value;

pub use crate::db::Backend;
pub use value::{FromValue, Kind, Param, Value};

use crate::config::Settings;
use crate::db::ServiceMigrations;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("postgres: {0}")]
    Postgres(#[from] ::postgres::Error),
    #[error("cannot read a column: {0}")]
    Decode(String),
    #[error("cannot encode a value: {0}")]
    Encode(String),
    #[error("the statement's parameter {0} is not one of $1…$n for its n values")]
    Placeholders(usize),
    #[error("no row where one was expected")]
    NoRow,
    #[error("the storage thread stopped")]
    Stopped,
    #[error("the transaction panicked")]
    Panicked,
    #[error("the write was not run: it panicked, or its batch could not begin (see the log)")]
    NotRun,
    #[error("the commit failed: {0}")]
    CommitFailed(String),
    #[error("migrating: {0}")]
    Migration(String),
}

impl Error {
    /// A unique or primary key refused the write (SQLite and PostgreSQL alike).
    pub fn is_unique_violation(&self) -> bool {
        match self {
            Error::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => {
                e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            }
            Error::Postgres(e) => e.code() == Some(&::postgres::error::SqlState::UNIQUE_VIOLATION),
            _ => false,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One service's database (cheap to clone).
#[derive(Clone)]
pub struct Database {
    inner: Arc<Inner>,
    /// Rung after every commit: wakes the event dispatchers reading this database's outbox.
    commits: Option<Arc<watch::Sender<u64>>>,
}

enum Inner {
    Sqlite(sqlite::Sqlite),
    Postgres(Box<postgres::Pool>),
}

impl Database {
    /// The database of `service` as configured: `<data_dir>/<service>.db`, or schema `service`
    /// of `database_url` on PostgreSQL; migrated.
    pub async fn open(service: &str, settings: &Settings, migrations: &ServiceMigrations) -> Result<Database> {
        match &settings.database_url {
            Some(url) if settings.is_postgres() => {
                let connections = settings.database_max_connections as usize;
                Database::open_postgres(url.expose(), service, connections, migrations).await
            }
            Some(_) => Err(Error::Migration("EMPORIUM_DATABASE_URL must start with postgres://".into())),
            None => {
                let path = settings.data_dir.join(format!("{service}.db"));
                Database::open_sqlite(&path, settings.sqlite_connections() as usize, migrations).await
            }
        }
    }

    /// Rings `commits` after every commit (what wakes the dispatchers of this database's outbox).
    pub fn ringing(mut self, commits: Arc<watch::Sender<u64>>) -> Database {
        self.commits = Some(commits);
        self
    }

    /// A SQLite file (created if missing, in WAL mode) with `readers` reading connections,
    /// migrated.
    pub async fn open_sqlite(path: &Path, readers: usize, migrations: &ServiceMigrations) -> Result<Database> {
        let path = path.to_owned();
        let sqlite = tokio::task::spawn_blocking(move || sqlite::Sqlite::open(&path, readers.max(1)))
            .await
            .map_err(|_| Error::Panicked)??;
        let database = Database { inner: Arc::new(Inner::Sqlite(sqlite)), commits: None };
        migrate::run(&database, &crate::db::KERNEL_SQLITE, migrate::KERNEL_TABLE).await?;
        migrate::run(&database, &migrations.sqlite, migrate::SERVICE_TABLE).await?;
        Ok(database)
    }

    /// Schema `schema` (created if missing) of the PostgreSQL database at `url`, at most
    /// `connections` connections, migrated.
    pub async fn open_postgres(
        url: &str,
        schema: &str,
        connections: usize,
        migrations: &ServiceMigrations,
    ) -> Result<Database> {
        let pool = postgres::Pool::open(url, schema, connections.max(1)).await?;
        let database = Database { inner: Arc::new(Inner::Postgres(Box::new(pool))), commits: None };
        migrate::run(&database, &crate::db::KERNEL_POSTGRES, migrate::KERNEL_TABLE).await?;
        migrate::run(&database, &migrations.postgres, migrate::SERVICE_TABLE).await?;
        Ok(database)
    }

    pub fn backend(&self) -> Backend {
        match &*self.inner {
            Inner::Sqlite(_) => Backend::Sqlite,
            Inner::Postgres(_) => Backend::Postgres,
        }
    }

    /// Runs `work` as one transaction: committed when it returns `Ok`, rolled back (with
    /// everything it wrote) when it returns `Err`. The answer comes once the commit is durable.
    pub async fn write<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: FnOnce(&mut Tx<'_>) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<Error> + Send + 'static,
    {
        let written = match &*self.inner {
            Inner::Sqlite(sqlite) => sqlite.write(work).await,
            Inner::Postgres(pool) => pool.transaction(work, true).await,
        };
        if let (Ok(_), Some(commits)) = (&written, &self.commits) {
            commits.send_modify(|n| *n = n.wrapping_add(1));
        }
        written
    }

    /// Runs `work` on one consistent snapshot. On PostgreSQL it is a transaction like
    /// [`write`](Self::write)'s (reads need no other kind).
    pub async fn read<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: FnOnce(&mut Tx<'_>) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<Error> + Send + 'static,
    {
        match &*self.inner {
            Inner::Sqlite(sqlite) => sqlite.read(work).await,
            Inner::Postgres(pool) => pool.transaction(work, false).await,
        }
    }
}

/// The open transaction a closure works in.
pub struct Tx<'c> {
    conn: Conn<'c>,
}

enum Conn<'c> {
    Sqlite(&'c rusqlite::Connection),
    Postgres(::postgres::Transaction<'c>, &'c mut postgres::Prepared),
}

impl Tx<'_> {
    pub fn backend(&self) -> Backend {
        match self.conn {
            Conn::Sqlite(_) => Backend::Sqlite,
            Conn::Postgres(..) => Backend::Postgres,
        }
    }

    /// Runs a statement; answers the rows it changed.
    pub fn execute(&mut self, sql: &str, params: &[&dyn Param]) -> Result<u64> {
        let values: Vec<Value> = params.iter().map(|p| p.value()).collect();
        match &mut self.conn {
            Conn::Sqlite(conn) => sqlite::execute(conn, sql, &values),
            Conn::Postgres(tx, prepared) => postgres::execute(tx, prepared, sql, &values),
        }
    }

    /// Runs a query; answers every row.
    pub fn query(&mut self, sql: &str, params: &[&dyn Param]) -> Result<Vec<Row>> {
        let values: Vec<Value> = params.iter().map(|p| p.value()).collect();
        match &mut self.conn {
            Conn::Sqlite(conn) => sqlite::query(conn, sql, &values),
            Conn::Postgres(tx, prepared) => postgres::query(tx, prepared, sql, &values),
        }
    }

    /// Runs several statements without parameters (a migration script).
    fn script(&mut self, sql: &str) -> Result<()> {
        match &mut self.conn {
            Conn::Sqlite(conn) => Ok(conn.execute_batch(sql)?),
            Conn::Postgres(tx, _) => Ok(tx.batch_execute(sql)?),
        }
    }

    /// The first row, if any.
    pub fn query_opt(&mut self, sql: &str, params: &[&dyn Param]) -> Result<Option<Row>> {
        Ok(self.query(sql, params)?.into_iter().next())
    }

    /// The first row; [`Error::NoRow`] when there is none.
    pub fn query_one(&mut self, sql: &str, params: &[&dyn Param]) -> Result<Row> {
        self.query_opt(sql, params)?.ok_or(Error::NoRow)
    }
}

/// A row, read.
#[derive(Clone, Debug)]
pub struct Row {
    values: Vec<Value>,
}

impl Row {
    /// Column `i` (from 0) as a `T`.
    pub fn get<T: FromValue>(&self, i: usize) -> Result<T> {
        let value = self.values.get(i).cloned().ok_or_else(|| Error::Decode(format!("no column {i}")))?;
        T::from_value(value)
    }
}
