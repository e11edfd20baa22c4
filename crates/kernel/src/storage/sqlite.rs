//! SQLite: the writer thread and the reading connections (see the module notes in `storage`).

use super::{Conn, Error, Result, Row, Tx, Value};
use rusqlite::{Connection, OpenFlags};
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;
use tokio::sync::{Semaphore, oneshot};

/// Most transactions one `COMMIT` takes: bounds how long the first of them waits for it.
const BATCH_MAX: usize = 64;

/// Another process writing the same file makes a writer wait this long before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(15);

/// A transaction sent to the writer thread: runs inside its savepoint and says whether it
/// succeeded; its answer is handed over only once the batch's `COMMIT` is known.
type Job = Box<dyn FnOnce(&Connection) -> Ran + Send>;

struct Ran {
    ok: bool,
    answer: Box<dyn FnOnce(Option<Error>) + Send>,
}

pub(super) struct Sqlite {
    jobs: mpsc::Sender<Job>,
    /// A read's blocking thread gives its connection back itself, so a caller that stops
    /// waiting loses none.
    readers: Arc<Mutex<Vec<Connection>>>,
    /// One permit per reading connection.
    reading: Arc<Semaphore>,
}

fn connect(path: &Path, flags: OpenFlags) -> Result<Connection> {
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // NORMAL is durable across application crashes in WAL mode; only an OS crash can lose the
    // last transactions, the usual trade of an embedded store.
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")?;
    conn.set_prepared_statement_cache_capacity(256);
    Ok(conn)
}

impl Sqlite {
    pub(super) fn open(path: &Path, readers: usize) -> Result<Sqlite> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::Migration(format!("creating {}: {e}", dir.display())))?;
        }
        let writer = connect(path, OpenFlags::default())?;
        let mut reading = Vec::with_capacity(readers);
        for _ in 0..readers {
            reading.push(connect(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?);
        }
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name(format!("sqlite-writer:{}", path.file_name().and_then(|n| n.to_str()).unwrap_or("db")))
            .spawn(move || write_batches(&writer, &queue))
            .map_err(|e| Error::Migration(format!("starting the writer thread: {e}")))?;
        Ok(Sqlite { jobs, readers: Arc::new(Mutex::new(reading)), reading: Arc::new(Semaphore::new(readers)) })
    }

    pub(super) async fn write<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: FnOnce(&mut Tx<'_>) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<Error> + Send + 'static,
    {
        let (send, answer) = oneshot::channel::<Result<T, E>>();
        let job: Job = Box::new(move |conn| {
            let result = work(&mut Tx { conn: Conn::Sqlite(conn) });
            let ok = result.is_ok();
            let answer = Box::new(move |failed_commit: Option<Error>| {
                let answer = match (result, failed_commit) {
                    (Ok(_), Some(err)) => Err(E::from(err)),
                    (result, _) => result,
                };
                // The caller may have gone; what it asked for is done either way.
                let _ = send.send(answer);
            });
            Ran { ok, answer }
        });
        self.jobs.send(job).map_err(|_| E::from(Error::Stopped))?;
        crate::db::count_round_trips(1);
        // Dropped unanswered when the closure panicked or its batch could not begin (logged).
        answer.await.map_err(|_| E::from(Error::NotRun))?
    }

    pub(super) async fn read<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: FnOnce(&mut Tx<'_>) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<Error> + Send + 'static,
    {
        let permit = self.reading.clone().acquire_owned().await.map_err(|_| E::from(Error::Stopped))?;
        crate::db::count_round_trips(1);
        let readers = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let conn = readers.lock().expect("reader list").pop().expect("a permit means a free connection");
            let read = std::panic::catch_unwind(AssertUnwindSafe(|| read_snapshot(&conn, work)));
            if read.is_err() {
                // Its snapshot is still open: end it, or the connection's next read fails.
                let _ = conn.execute_batch("ROLLBACK");
            }
            readers.lock().expect("reader list").push(conn);
            read.unwrap_or_else(|_| Err(E::from(Error::Panicked)))
        })
        .await
        .map_err(|_| E::from(Error::Panicked))?
    }
}

fn read_snapshot<T, E, F>(conn: &Connection, work: F) -> Result<T, E>
where
    F: FnOnce(&mut Tx<'_>) -> Result<T, E>,
    E: From<Error>,
{
    conn.execute_batch("BEGIN").map_err(|e| E::from(e.into()))?;
    let result = work(&mut Tx { conn: Conn::Sqlite(conn) });
    // A read-only transaction: ending it either way keeps nothing.
    conn.execute_batch("ROLLBACK").map_err(|e| E::from(e.into()))?;
    result
}

/// The writer thread: every job waiting goes into one transaction, each in its own savepoint.
fn write_batches(conn: &Connection, queue: &mpsc::Receiver<Job>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < BATCH_MAX
            && let Ok(job) = queue.try_recv()
        {
            batch.push(job);
        }
        if let Err(err) = conn.execute_batch("BEGIN IMMEDIATE") {
            // Never run: dropping a job tells its caller so.
            tracing::error!(error = %err, jobs = batch.len(), "a SQLite write batch could not begin");
            continue;
        }
        let mut ran = Vec::with_capacity(batch.len());
        for job in batch {
            if let Some(done) = run_in_savepoint(conn, job) {
                ran.push(done);
            }
        }
        let failed = conn.execute_batch("COMMIT").err().map(Error::from);
        if failed.is_some() {
            let _ = conn.execute_batch("ROLLBACK");
        } else {
            crate::db::count_commit();
        }
        for done in ran {
            (done.answer)(failed.as_ref().map(|e| Error::CommitFailed(e.to_string())));
        }
    }
}

/// Runs one job in its savepoint: kept when it succeeded, undone when it failed or panicked
/// (`None`: its caller hears of the panic when its answer channel closes).
fn run_in_savepoint(conn: &Connection, job: Job) -> Option<Ran> {
    if conn.execute_batch("SAVEPOINT job").is_err() {
        return None;
    }
    let ran = std::panic::catch_unwind(AssertUnwindSafe(|| job(conn)));
    let keep = matches!(&ran, Ok(done) if done.ok);
    let end = if keep { "RELEASE job" } else { "ROLLBACK TO job; RELEASE job" };
    if let Err(err) = conn.execute_batch(end) {
        tracing::error!(error = %err, "ending a savepoint failed");
    }
    ran.ok()
}

/// Binds `values` to `$1…$n`. SQLite takes `$N` as a name and numbers names in the order they
/// first appear, so each of the statement's parameters is bound by its name; a statement must
/// use exactly `$1…$n` for `n` values.
fn bind(statement: &mut rusqlite::CachedStatement<'_>, values: &[Value]) -> Result<()> {
    if statement.parameter_count() != values.len() {
        return Err(Error::Placeholders(statement.parameter_count()));
    }
    for index in 1..=values.len() {
        let named = statement.parameter_name(index).and_then(|name| name.strip_prefix('$')?.parse::<usize>().ok());
        let value =
            named.and_then(|n| n.checked_sub(1)).and_then(|n| values.get(n)).ok_or(Error::Placeholders(index))?;
        statement.raw_bind_parameter(index, value.to_sqlite())?;
    }
    Ok(())
}

pub(super) fn execute(conn: &Connection, sql: &str, values: &[Value]) -> Result<u64> {
    let mut statement = conn.prepare_cached(sql)?;
    bind(&mut statement, values)?;
    Ok(statement.raw_execute()? as u64)
}

pub(super) fn query(conn: &Connection, sql: &str, values: &[Value]) -> Result<Vec<Row>> {
    let mut statement = conn.prepare_cached(sql)?;
    bind(&mut statement, values)?;
    let columns = statement.column_count();
    let mut rows = statement.raw_query();
    let mut read = Vec::new();
    while let Some(row) = rows.next()? {
        let values = (0..columns).map(|i| row.get_ref(i).map(Value::from_sqlite)).collect::<Result<_, _>>()?;
        read.push(Row { values });
    }
    Ok(read)
}
