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
//! - Writers queued behind each other on SQLite share one SQLite transaction and one `COMMIT`
//!   (see `group`); each commits or fails on its own savepoint, and returns once committed.

mod checkpoint;
mod due;
mod group;
mod lender;

use crate::config::Settings;
use due::{Due, PgStatement};
pub use due::{SqliteExec, Write};
use group::{Closing, Ended, SqliteWriter, Turn};
use lender::{Lease, Lender};
use sqlx::migrate::Migrator;
use sqlx::postgres::PgTransactionManager;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, Executor, PgConnection, Postgres, Sqlite};
use sqlx_core::transaction::TransactionManager;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::watch;

/// Statements and scripts sent to a database by this process, each a round trip (on SQLite a
/// hop to the connection's thread and back). What `emporium-bench checkout` divides by its
/// checkouts: the count a driver's per-statement cost multiplies.
static ROUND_TRIPS: AtomicU64 = AtomicU64::new(0);

/// Round trips so far (see [`ROUND_TRIPS`]); deferred writes that ride along count nothing.
pub fn round_trips() -> u64 {
    ROUND_TRIPS.load(Ordering::Relaxed)
}

/// For `storage`, which counts its own: on SQLite one per transaction closure (its hop to a
/// storage thread), on PostgreSQL one per statement, `BEGIN` and `COMMIT` included.
pub(crate) fn count_round_trips(n: u64) {
    ROUND_TRIPS.fetch_add(n, Ordering::Relaxed);
}

/// For `storage`: a commit that wrote (one per SQLite batch, one per PostgreSQL write transaction).
pub(crate) fn count_commit() {
    COMMITS.fetch_add(1, Ordering::Relaxed);
}

/// Commits that wrote, by this process: write transactions committed and statements of
/// [`sql_exec!`](crate::sql_exec) run outside one (each its own transaction). On PostgreSQL each
/// waits for its WAL flush (`synchronous_commit`), most of a checkout's latency there
/// (docs/benchmarks.md); read-only transactions are not counted.
static COMMITS: AtomicU64 = AtomicU64::new(0);

/// Commits that wrote so far (see [`COMMITS`]).
pub fn commits() -> u64 {
    COMMITS.load(Ordering::Relaxed)
}

/// What a database has been sent: see [`Db::round_trips`] and [`Db::commits`].
#[derive(Default)]
struct Counts {
    trips: AtomicU64,
    commits: AtomicU64,
}

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

/// Runs the same query expression on whichever backend `$target` (a [`Db`] or a [`Tx`]) is. On a
/// `Db` the statement runs on a connection lent for it alone.
///
/// ```text
/// let n: i64 = sql!(db, |c| sqlx::query_scalar("SELECT count(*) FROM users").fetch_one(c).await)?;
/// ```
#[macro_export]
macro_rules! sql {
    ($target:expr, |$c:ident| $body:expr) => {
        match $target.connection().await {
            Err(err) => Err(err),
            Ok(conn) => {
                // Owned when lent for the statement, a borrow of a transaction's otherwise.
                #[allow(unused_mut)]
                let mut conn = conn;
                let result = match conn.exec() {
                    $crate::db::Exec::Sqlite($c) => $body,
                    $crate::db::Exec::Postgres($c) => $body,
                };
                conn.observe(&result);
                result
            }
        }
    };
}

/// Like [`sql!`](crate::sql) for statements run with `.execute(c)`: the drivers' result types
/// differ, so this yields `Result<u64, sqlx::Error>`, the number of rows affected. On a `Db` it
/// also takes the SQLite writer's turn for the statement.
///
/// ```text
/// let updated = sql_exec!(tx, |c| sqlx::query("UPDATE … WHERE id = $1").bind(id).execute(c).await)?;
/// ```
#[macro_export]
macro_rules! sql_exec {
    ($target:expr, |$c:ident| $body:expr) => {
        match $target.write_connection().await {
            Err(err) => Err(err),
            Ok((conn, writer)) => {
                #[allow(unused_mut)]
                let mut conn = conn;
                let result = match conn.exec() {
                    $crate::db::Exec::Sqlite($c) => ($body).map(|r| r.rows_affected()),
                    $crate::db::Exec::Postgres($c) => ($body).map(|r| r.rows_affected()),
                };
                conn.observe(&result);
                conn.wrote(&result);
                $crate::db::settle_write(writer, conn, result).await
            }
        }
    };
}

/// The SQLite writer's turn (see the module notes and `group`); `None` where none is needed.
pub type WriterTurn = Option<Turn>;

/// A [`sql_exec!`](crate::sql_exec) target's connection: owned when lent for the statement (on a
/// `Db`), borrowed from a transaction otherwise.
pub trait StatementConn {
    fn lent(self) -> Option<Conn>;
}

impl StatementConn for Conn {
    fn lent(self) -> Option<Conn> {
        Some(self)
    }
}

impl StatementConn for &mut Conn {
    fn lent(self) -> Option<Conn> {
        None
    }
}

/// For [`sql_exec!`](crate::sql_exec) on a `Db`: a statement that ran inside an open SQLite group
/// (see `group`) is committed with it before this returns.
pub async fn settle_write<T>(turn: WriterTurn, conn: impl StatementConn, result: sqlx::Result<T>) -> sqlx::Result<T> {
    let (Some(mut turn), Some(mut conn)) = (turn, conn.lent()) else { return result };
    if !turn.group_open() {
        return result;
    }
    let ended = turn.end_statement(&mut conn).await;
    drop(conn);
    drop(turn);
    let group = match ended {
        Ended::Done(done) => done,
        Ended::Member(membership) => membership.outcome().await,
    };
    match (result, group) {
        (Ok(value), Ok(())) => Ok(value),
        (Ok(_), Err(err)) | (Err(err), _) => Err(err),
    }
}

/// How long a writer waits for its turn: SQLite's busy timeout, the same patience as before.
const WRITER_WAIT: Duration = Duration::from_secs(15);

/// A PostgreSQL connection idle this long is pinged before it is lent again: it may have been
/// cut meanwhile (server restart, firewall).
const IDLE_BEFORE_PING: Duration = Duration::from_secs(10);

/// How long a statement or transaction waits for a connection.
const CONNECTION_WAIT: Duration = Duration::from_secs(30);

#[derive(Clone)]
enum Pool {
    /// Two lenders over one sqlx pool: writers (who already queue for the writer's turn, one at
    /// a time) always get the same connection, whose page cache then stays warm: in WAL mode a
    /// connection drops its cache whenever another one has written, so writes spread over all
    /// connections re-read their pages from the file on every turn.
    Sqlite {
        readers: Arc<Lender<Sqlite>>,
        writer: Arc<SqliteWriter>,
    },
    Postgres(Arc<Lender<Postgres>>),
}

/// A connection lent for one statement or transaction, of either backend.
pub struct Conn {
    lease: Exec<Lease<Sqlite>, Lease<Postgres>>,
    /// A transaction's BEGIN and deferred writes, until a statement takes them along (see `due`).
    due: Due,
    /// What the database this connection belongs to has been sent (see [`Db::round_trips`]).
    counts: Arc<Counts>,
    /// Lent to a transaction (its statements commit with it), and whether that one writes.
    transaction: Option<Writes>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Writes {
    Yes,
    No,
}

impl Conn {
    fn new(lease: Exec<Lease<Sqlite>, Lease<Postgres>>, counts: &Arc<Counts>) -> Self {
        Self { lease, due: Due::default(), counts: counts.clone(), transaction: None }
    }

    /// For [`sql_exec!`](crate::sql_exec): a write that succeeded outside a transaction committed.
    pub fn wrote<T>(&self, result: &Result<T, sqlx::Error>) {
        if self.transaction.is_none() && result.is_ok() {
            self.count_commit();
        }
    }

    fn count_commit(&self) {
        COMMITS.fetch_add(1, Ordering::Relaxed);
        self.counts.commits.fetch_add(1, Ordering::Relaxed);
    }

    pub fn exec(&mut self) -> Exec<SqliteExec<'_>, &mut PgConnection> {
        match &mut self.lease {
            Exec::Sqlite(lease) => Exec::Sqlite(SqliteExec::new(lease.conn(), &mut self.due)),
            Exec::Postgres(lease) => Exec::Postgres(lease.conn()),
        }
    }

    /// Called once per statement sent: counts the round trip and notes a failure that leaves the
    /// connection unusable (it is then closed, not reused).
    pub fn observe<T>(&mut self, result: &Result<T, sqlx::Error>) {
        ROUND_TRIPS.fetch_add(1, Ordering::Relaxed);
        self.counts.trips.fetch_add(1, Ordering::Relaxed);
        match &mut self.lease {
            Exec::Sqlite(lease) => lease.observe(result),
            Exec::Postgres(lease) => lease.observe(result),
        }
    }

    /// Commits or rolls back the transaction open on this connection. A transaction that never
    /// began and has nothing to write has nothing to end. On SQLite the deferred writes go in
    /// one script with COMMIT (a rollback drops them). On PostgreSQL deferred writes that fit one
    /// statement, in a transaction not yet begun, are that statement alone (atomic by itself);
    /// otherwise they run before COMMIT, which goes through the driver's transaction manager
    /// (it keeps its own count of open transactions on the connection).
    async fn end(&mut self, commit: bool) -> sqlx::Result<()> {
        if !commit {
            self.due.writes.clear();
        }
        if self.due.writes.is_empty() && self.due.begin.take().is_some() {
            return Ok(());
        }
        let ended = match (&mut self.lease, commit) {
            (Exec::Sqlite(lease), true) => {
                SqliteExec::new(lease.conn(), &mut self.due).execute("COMMIT").await.map(|_| ())
            }
            (Exec::Sqlite(lease), false) => sqlx::query("ROLLBACK").execute(lease.conn()).await.map(|_| ()),
            (Exec::Postgres(_), true) => {
                let mut statements = self.due.take_postgres().map_err(sqlx::Error::Encode)?;
                if self.due.begin.is_some() && statements.len() == 1 {
                    let done = self.run_postgres(statements.remove(0)).await;
                    if done.is_ok() {
                        // Nothing is left to end; a failed statement left nothing behind either.
                        self.due.begin = None;
                        self.count_commit();
                    }
                    return done;
                }
                self.send_begin_postgres().await?;
                for statement in statements {
                    self.run_postgres(statement).await?;
                }
                let Exec::Postgres(lease) = &mut self.lease else { unreachable!("matched above") };
                <PgTransactionManager as TransactionManager>::commit(lease.conn()).await
            }
            (Exec::Postgres(lease), false) => {
                <PgTransactionManager as TransactionManager>::rollback(lease.conn()).await
            }
        };
        self.observe(&ended);
        if commit && ended.is_ok() && self.transaction == Some(Writes::Yes) {
            self.count_commit();
        }
        ended
    }

    /// PostgreSQL: ends the transaction with `guard` as its last statement: commits if the guard
    /// changed a row, else rolls back (see [`Tx::commit_if`]). Returns whether it committed.
    async fn end_if_postgres(&mut self, guard: Write) -> sqlx::Result<bool> {
        if self.due.holds_dependent_write() {
            // The guard may read what they write, which a part of its own statement would not see.
            self.send_due_postgres().await?;
        }
        let mut statements = self.due.take_postgres_guarded(guard).map_err(sqlx::Error::Encode)?;
        let guarded = statements.pop().expect("the guard's statement comes last");
        if !statements.is_empty() {
            self.send_begin_postgres().await?;
        }
        for statement in statements {
            self.run_postgres(statement).await?;
        }
        // Not begun: the guarded statement is the whole transaction, atomic by itself. If it
        // fails, the unsent BEGIN tells `Tx::drop` that nothing is left to roll back.
        let alone = self.due.begin.is_some();
        let committed = match self.run_postgres(guarded).await {
            Ok(()) => true,
            Err(err) if due::is_guard_closed(&err) => false,
            Err(err) => return Err(err),
        };
        if alone {
            self.due.begin = None;
            if committed {
                self.count_commit();
            }
        } else {
            self.end(committed).await?;
        }
        Ok(committed)
    }

    /// PostgreSQL: sends what the transaction owes ahead of a statement of its own: its BEGIN,
    /// then its deferred writes if one of them is not independent (independent ones wait for
    /// the end otherwise: no statement reads them).
    async fn send_due_postgres(&mut self) -> sqlx::Result<()> {
        self.send_begin_postgres().await?;
        if !self.due.holds_dependent_write() {
            return Ok(());
        }
        for statement in self.due.take_postgres().map_err(sqlx::Error::Encode)? {
            self.run_postgres(statement).await?;
        }
        Ok(())
    }

    async fn send_begin_postgres(&mut self) -> sqlx::Result<()> {
        let Exec::Postgres(lease) = &mut self.lease else { return Ok(()) };
        if self.due.begin.take().is_none() {
            return Ok(());
        }
        let begun = <PgTransactionManager as TransactionManager>::begin(lease.conn(), None).await;
        self.observe(&begun);
        begun
    }

    async fn run_postgres(&mut self, (sql, arguments): PgStatement) -> sqlx::Result<()> {
        let Exec::Postgres(lease) = &mut self.lease else { unreachable!("PostgreSQL statements run on PostgreSQL") };
        let done = sqlx::query_with(sql, arguments).execute(lease.conn()).await.map(|_| ());
        self.observe(&done);
        done
    }

    fn discard(&mut self) {
        match &mut self.lease {
            Exec::Sqlite(lease) => lease.discard(),
            Exec::Postgres(lease) => lease.discard(),
        }
    }
}

/// A service's database handle (cheap to clone).
#[derive(Clone)]
pub struct Db {
    pool: Pool,
    service: &'static str,
    /// Bumped after every commit that appended outbox rows, so dispatchers wake at once.
    outbox_commits: Arc<watch::Sender<u64>>,
    counts: Arc<Counts>,
}

/// The migrations a service embeds, one directory per backend.
pub struct ServiceMigrations {
    pub sqlite: Migrator,
    pub postgres: Migrator,
}

pub(crate) static KERNEL_SQLITE: Migrator = sqlx::migrate!("./migrations/sqlite");
pub(crate) static KERNEL_POSTGRES: Migrator = sqlx::migrate!("./migrations/postgres");

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
                Self::open_sqlite(service, &path, settings.sqlite_connections(), migrations).await
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
            // Set when the file is created (an existing database keeps its own). Every commit
            // copies each page it changed into the WAL, and again into the database at the
            // checkpoint; a checkout changes a few small rows in many tables and indexes, so half
            // the default page halves that copying (checkout +4–8%, docs/benchmarks.md).
            .page_size(2048)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL is durable across application crashes in WAL mode; only an OS crash can lose
            // the last transactions, which is the usual trade for an embedded store.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(WRITER_WAIT)
            .foreign_keys(true)
            // A task checkpoints instead of the writer (see `checkpoint`); this is the backstop.
            .pragma("wal_autocheckpoint", checkpoint::BACKSTOP_PAGES)
            // Every statement at DEBUG (`RUST_LOG=sqlx::query=debug` shows them): off by default,
            // and filtered out before anything is formatted.
            .log_statements(tracing::log::LevelFilter::Debug);
        let readers = max_connections.max(1);
        let pool = SqlitePoolOptions::new()
            .max_connections(readers + 1)
            // Connections are lent by our `Lender`, which takes each from sqlx once (see there).
            .test_before_acquire(false)
            .acquire_timeout(CONNECTION_WAIT)
            .connect_with(options)
            .await
            .with_context(|| format!("opening sqlite database {}", path.display()))?;
        let mut kernel = clone_migrator(&KERNEL_SQLITE);
        kernel.dangerous_set_table_name(KERNEL_MIGRATIONS_TABLE);
        kernel.run(&pool).await.context("kernel migrations (sqlite)")?;
        migrations.sqlite.run(&pool).await.with_context(|| format!("{service} migrations (sqlite)"))?;
        // A file cannot hang up: SQLite connections are never pinged.
        let writer = Arc::new(SqliteWriter::new(Arc::new(Lender::new(pool.clone(), 1, None, CONNECTION_WAIT))));
        let readers = Arc::new(Lender::new(pool, readers, None, CONNECTION_WAIT));
        let db = Self::from_pool(service, Pool::Sqlite { readers: readers.clone(), writer: writer.clone() });
        checkpoint::spawn(&readers, &writer, &db.counts);
        Ok(db)
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
        let max_connections = max_connections.max(1);
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            // Connections are lent by our `Lender`, which takes each from sqlx once (see there).
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .with_context(|| format!("connecting to postgres for {service}"))?;
        let mut kernel = clone_migrator(&KERNEL_POSTGRES);
        kernel.dangerous_set_table_name(KERNEL_MIGRATIONS_TABLE);
        kernel.run(&pool).await.context("kernel migrations (postgres)")?;
        migrations.postgres.run(&pool).await.with_context(|| format!("{service} migrations (postgres)"))?;
        let lender = Lender::new(pool, max_connections, Some(IDLE_BEFORE_PING), Duration::from_secs(10));
        Ok(Self::from_pool(service, Pool::Postgres(Arc::new(lender))))
    }

    fn from_pool(service: &'static str, pool: Pool) -> Db {
        let (tx, _rx) = watch::channel(0);
        Db { pool, service, outbox_commits: Arc::new(tx), counts: Arc::default() }
    }

    pub fn service(&self) -> &'static str {
        self.service
    }

    /// Round trips to this database so far (as [`round_trips`] counts them for the process).
    pub fn round_trips(&self) -> u64 {
        self.counts.trips.load(Ordering::Relaxed)
    }

    /// Commits that wrote to this database so far (as [`commits`] counts them for the process).
    pub fn commits(&self) -> u64 {
        self.counts.commits.load(Ordering::Relaxed)
    }

    /// The SQLite writer, whose counters the three below read; `None` on PostgreSQL.
    fn sqlite_writer(&self) -> Option<&SqliteWriter> {
        match &self.pool {
            Pool::Sqlite { writer, .. } => Some(writer),
            Pool::Postgres(_) => None,
        }
    }

    /// SQLite: `COMMIT`s sent so far, each ending a group of one or more write transactions (see
    /// `group`); `None` on PostgreSQL.
    pub fn group_commits(&self) -> Option<u64> {
        self.sqlite_writer().map(|w| w.group_commits.load(Ordering::Relaxed))
    }

    /// SQLite: checkpoints run so far off the writer's path (see `checkpoint`); `None` on
    /// PostgreSQL.
    pub fn checkpoints(&self) -> Option<u64> {
        self.sqlite_writer().map(|w| w.checkpoints.load(Ordering::Relaxed))
    }

    /// SQLite: how long the writer's turn has been held so far (writes to the file run one at a
    /// time, so this over a run's wall time is how busy its writer was); `None` on PostgreSQL.
    pub fn writer_busy(&self) -> Option<Duration> {
        self.sqlite_writer().map(|w| Duration::from_nanos(w.turn_held_nanos.load(Ordering::Relaxed)))
    }

    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite { .. } => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    /// sqlx's pool itself, for what takes one (migrations, tools); statements go through
    /// [`sql!`](crate::sql), which lends a connection without sqlx's pings.
    pub fn exec(&self) -> Exec<&SqlitePool, &PgPool> {
        match &self.pool {
            Pool::Sqlite { readers, .. } => Exec::Sqlite(readers.pool()),
            Pool::Postgres(l) => Exec::Postgres(l.pool()),
        }
    }

    /// A connection for one statement (on SQLite, one of the readers').
    pub async fn connection(&self) -> sqlx::Result<Conn> {
        let lease = match &self.pool {
            Pool::Sqlite { readers, .. } => Exec::Sqlite(readers.lease().await?),
            Pool::Postgres(l) => Exec::Postgres(l.lease().await?),
        };
        Ok(Conn::new(lease, &self.counts))
    }

    /// A connection for one write statement, with the SQLite writer's turn held while it runs.
    pub async fn write_connection(&self) -> sqlx::Result<(Conn, WriterTurn)> {
        let turn = self.writer_turn().await?;
        Ok((self.writer_connection().await?, turn))
    }

    /// The connection writes run on: SQLite's writer connection, any on PostgreSQL.
    async fn writer_connection(&self) -> sqlx::Result<Conn> {
        match &self.pool {
            Pool::Sqlite { writer, .. } => Ok(Conn::new(Exec::Sqlite(writer.lease().await?), &self.counts)),
            Pool::Postgres(_) => self.connection().await,
        }
    }

    async fn writer_turn(&self) -> sqlx::Result<WriterTurn> {
        match &self.pool {
            Pool::Sqlite { writer, .. } => Ok(Some(writer.turn(WRITER_WAIT).await?)),
            Pool::Postgres(_) => Ok(None),
        }
    }

    /// Starts a write transaction.
    pub async fn begin(&self) -> sqlx::Result<Tx> {
        let turn = self.writer_turn().await?;
        let begin = turn.as_ref().map_or("BEGIN IMMEDIATE", Turn::begin);
        self.start(Some(begin), turn).await
    }

    /// Starts a read-only transaction: one consistent view across several statements. On SQLite
    /// it neither queues for the writer's turn nor takes the write lock (a deferred `BEGIN` that
    /// only reads stays a reader), so reads never wait behind writers. Writing in it is a bug.
    pub async fn read(&self) -> sqlx::Result<Tx> {
        self.start(None, None).await
    }

    /// `sqlite_begin` is SQLite's BEGIN statement (`None`: the default, deferred), sent with the
    /// transaction's first statement; PostgreSQL's plain BEGIN goes just before its first
    /// statement, or not at all (see `due`).
    async fn start(&self, sqlite_begin: Option<&'static str>, turn: WriterTurn) -> sqlx::Result<Tx> {
        let mut conn = if turn.is_some() { self.writer_connection().await? } else { self.connection().await? };
        conn.due.begin = Some(match conn.lease {
            Exec::Sqlite(_) => sqlite_begin.unwrap_or("BEGIN"),
            Exec::Postgres(_) => "BEGIN",
        });
        conn.transaction = Some(if sqlite_begin.is_some() { Writes::Yes } else { Writes::No });
        Ok(Tx {
            conn: Some(conn),
            open: true,
            turn,
            outbox_commits: self.outbox_commits.clone(),
            appended_events: false,
        })
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

    /// What wakes this database's event dispatchers, for a `storage::Database` on the same
    /// database to ring after its commits.
    pub fn commit_signal(&self) -> Arc<watch::Sender<u64>> {
        self.outbox_commits.clone()
    }

    pub async fn close(&self) {
        match &self.pool {
            Pool::Sqlite { readers, writer } => {
                let closing = readers.pool().close();
                readers.close_idle();
                writer.lender.close_idle();
                closing.await;
            }
            Pool::Postgres(l) => l.close().await,
        }
    }
}

/// A transaction on either backend. Dropping it without [`Tx::commit`] rolls back.
pub struct Tx {
    /// Taken only by `drop`.
    conn: Option<Conn>,
    /// Until committed or rolled back; dropped while open, it is rolled back (see `drop`).
    open: bool,
    /// Released after the transaction ends: fields drop after `drop` has queued any rollback,
    /// and a PostgreSQL rollback task takes it along.
    turn: WriterTurn,
    outbox_commits: Arc<watch::Sender<u64>>,
    appended_events: bool,
}

impl Tx {
    fn conn(&mut self) -> &mut Conn {
        self.conn.as_mut().expect("a transaction holds its connection until dropped")
    }

    pub fn exec(&mut self) -> Exec<SqliteExec<'_>, &mut PgConnection> {
        self.conn().exec()
    }

    /// For [`sql!`](crate::sql): the transaction's own connection, with what the transaction owes
    /// it sent (on SQLite it rides with the statement instead, see `due`).
    pub async fn connection(&mut self) -> sqlx::Result<&mut Conn> {
        let conn = self.conn();
        if matches!(conn.lease, Exec::Postgres(_)) && !conn.due.is_empty() {
            conn.send_due_postgres().await?;
        }
        Ok(conn)
    }

    /// For [`sql_exec!`](crate::sql_exec): the transaction already holds the writer's turn.
    pub async fn write_connection(&mut self) -> sqlx::Result<(&mut Conn, WriterTurn)> {
        Ok((self.connection().await?, None))
    }

    pub fn backend(&self) -> Backend {
        match self.conn.as_ref().expect("a transaction holds its connection until dropped").lease {
            Exec::Sqlite(_) => Backend::Sqlite,
            Exec::Postgres(_) => Backend::Postgres,
        }
    }

    pub(crate) fn mark_events_appended(&mut self) {
        self.appended_events = true;
    }

    pub async fn commit(mut self) -> sqlx::Result<()> {
        self.end(true).await?;
        if self.appended_events {
            self.outbox_commits.send_modify(|n| *n = n.wrapping_add(1));
        }
        Ok(())
    }

    /// Commits the transaction if `guard`, run as its last statement, changes a row; otherwise
    /// rolls it back, deferred writes included. Returns whether it committed. For the common
    /// "move it only if it is still where we saw it, and record that it moved" transaction:
    /// defer the records (events, history rows), then commit on the conditional update.
    ///
    /// `guard` is one `UPDATE`, `DELETE` or `INSERT` without `RETURNING` or a trailing `;`. On
    /// PostgreSQL it shares one statement with the transaction's
    /// [independent](Write::independent) deferred writes, so a transaction that ran no statement
    /// of its own is that one statement: no `BEGIN`, no `COMMIT` (four round trips become one).
    /// There the writes are parts beside the guard, in an order PostgreSQL does not promise (it
    /// runs them after the guard's check today): a write that fails (a constraint) when the guard
    /// refuses may make this an error instead of `false`, with nothing written either way. On
    /// SQLite the guard and the writes after it are one script with the `COMMIT`, and the writes
    /// run only after the guard passed (see `due::run_guarded_sqlite`).
    pub async fn commit_if(mut self, guard: Write) -> sqlx::Result<bool> {
        let committed = match self.backend() {
            Backend::Sqlite => {
                // A SQLite transaction that may write holds the writer's turn: see `Db::read`.
                let turn = self.turn.take().expect("commit_if on a read-only transaction");
                let conn = self.conn.take().expect("a transaction holds its connection until dropped");
                self.open = false;
                end_in_group(turn, conn, Closing::CommitIf(guard)).await?
            }
            Backend::Postgres => self.conn().end_if_postgres(guard).await?,
        };
        self.open = false;
        if committed && self.appended_events {
            self.outbox_commits.send_modify(|n| *n = n.wrapping_add(1));
        }
        Ok(committed)
    }

    pub async fn rollback(mut self) -> sqlx::Result<()> {
        self.end(false).await
    }

    async fn end(&mut self, commit: bool) -> sqlx::Result<()> {
        if let Some(turn) = self.turn.take() {
            let conn = self.conn.take().expect("a transaction holds its connection until dropped");
            self.open = false;
            let closing = if commit { Closing::Commit } else { Closing::Rollback };
            return end_in_group(turn, conn, closing).await.map(|_| ());
        }
        self.conn().end(commit).await?;
        self.open = false;
        Ok(())
    }

    /// Runs `write`, whose outcome (rows changed, a failure) nothing in the transaction waits
    /// for, ahead of the transaction's next statement or at its end, whichever comes first: on
    /// SQLite in one script with that statement or the COMMIT, on PostgreSQL sharing a statement
    /// with its neighbours where they are [independent](Write::independent) (see `due`). If it
    /// fails, that statement or the commit fails, and the transaction rolls back all the same.
    pub async fn defer(&mut self, write: Write) -> sqlx::Result<()> {
        self.conn().due.writes.push(write);
        Ok(())
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        if !self.open {
            return;
        }
        let Some(mut conn) = self.conn.take() else { return };
        if let Some(turn) = self.turn.take() {
            // A SQLite write: its savepoint rolled back, and the group ended or handed on.
            if conn.due.begin.is_some() && !turn.group_open() {
                return;
            }
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn(end_in_group(turn, conn, Closing::Rollback))),
                Err(_) => conn.discard(),
            }
            return;
        }
        if conn.due.begin.is_some() {
            // A transaction that never began: nothing to roll back.
            return;
        }
        // Rolling back is a command to await (sqlx's PostgreSQL driver only buffers a started
        // rollback; its pool flushed it with the ping on release, which lent connections do not
        // get). So it runs now, on a task that owns the connection (and the writer's turn) until
        // it is done.
        let turn = self.turn.take();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if conn.end(false).await.is_err() {
                        conn.discard();
                    }
                    drop(turn);
                });
            }
            // No runtime to run it on: closing the connection rolls back.
            Err(_) => conn.discard(),
        }
    }
}

/// Ends a SQLite write transaction in its group (see `group`): on a task of its own, so that a
/// caller that stops waiting cannot leave the group's state behind what the connection did.
/// Returns once the transaction's outcome is known (for a commit, once its group committed):
/// whether it committed.
async fn end_in_group(mut turn: Turn, mut conn: Conn, closing: Closing) -> sqlx::Result<bool> {
    let counts = conn.counts.clone();
    // As elsewhere, a transaction that never ran a statement and has nothing due wrote nothing.
    let writes = match &closing {
        Closing::Commit => conn.due.begin.is_none() || !conn.due.writes.is_empty(),
        Closing::CommitIf(_) => true,
        Closing::Rollback => false,
    };
    let ending = tokio::spawn(async move {
        let ended = turn.end_transaction(&mut conn, closing).await;
        // The connection first: the next holder of the turn leases it at once.
        drop(conn);
        drop(turn);
        ended
    });
    let (ended, committed) =
        ending.await.map_err(|err| sqlx::Error::Protocol(format!("ending a transaction: {err}")))?;
    let outcome = match ended {
        Ended::Done(done) => done,
        Ended::Member(membership) if committed => membership.outcome().await,
        // Rolled back: the group's fate is not this transaction's.
        Ended::Member(membership) => membership.outcome().await.or(Ok(())),
    };
    if writes && committed && outcome.is_ok() {
        COMMITS.fetch_add(1, Ordering::Relaxed);
        counts.commits.fetch_add(1, Ordering::Relaxed);
    }
    outcome.map(|()| committed)
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
/// several rows in one statement (one round trip, one hop to SQLite's connection thread). `head`
/// may be any text a `VALUES` list completes (`… WHERE (a, b) IN (`, with the `)` added after).
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

/// An error that says the database rolled the whole transaction back to resolve a conflict with
/// another transaction, so running it again from its start is safe and usually succeeds.
pub trait TransientConflict {
    fn is_transient_conflict(&self) -> bool;
}

impl TransientConflict for sqlx::Error {
    /// PostgreSQL's deadlock victim (SQLSTATE 40P01) and serialization failure (40001): both
    /// abort the transaction whole (PostgreSQL manual, "Transaction Isolation" and Appendix A).
    fn is_transient_conflict(&self) -> bool {
        self.as_database_error().and_then(|e| e.code()).is_some_and(|code| code == "40P01" || code == "40001")
    }
}

/// Runs `transaction` (a whole transaction, begun and ended inside) again while its error is a
/// [`TransientConflict`], `attempts` runs in all; any other outcome is returned as it is. Each
/// retry first waits a few random milliseconds, so two victims of one conflict do not meet again
/// in step.
pub async fn again_on_conflict<T, E, F, Fut>(attempts: usize, mut transaction: F) -> Result<T, E>
where
    E: TransientConflict,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut run = 1;
    loop {
        match transaction().await {
            Err(err) if err.is_transient_conflict() && run < attempts => {
                metrics::counter!("db_transactions_retried_total").increment(1);
                let pause = {
                    use rand::RngExt;
                    rand::rng().random_range(1..=5 * run as u64)
                };
                tokio::time::sleep(Duration::from_millis(pause)).await;
                run += 1;
            }
            other => return other,
        }
    }
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
