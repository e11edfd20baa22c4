//! PostgreSQL: a pool of `postgres` connections whose transactions run on blocking threads (see
//! the module notes in `storage`).

use super::{Conn, Error, Kind, Result, Row, Tx, Value};
use ::postgres::types::ToSql;
use ::postgres::{Client, NoTls, Statement};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;

/// How long opening a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Statements a connection keeps prepared; past this many it starts afresh (statements come
/// from the code, so this is only a bound, never reached in steady use).
const PREPARED_MAX: usize = 1_000;

/// A pooled connection and the statements it has prepared: each statement is parsed and planned
/// once per connection (one round trip), then every run of it is one round trip.
pub(super) struct Connection {
    client: Client,
    prepared: Prepared,
}

/// Prepared statements of one connection, by their text and their parameters' kinds.
pub(super) type Prepared = HashMap<(String, Vec<Kind>), Statement>;

/// Everything a transaction's blocking thread gives back (the connection, the permit) it gives
/// back itself, so a caller that stops waiting changes nothing.
pub(super) struct Pool {
    config: ::postgres::Config,
    idle: Arc<Mutex<Vec<Connection>>>,
    /// One permit per connection that may be open.
    open: Arc<Semaphore>,
}

impl Pool {
    /// Creates `schema` if missing; every connection then works in it (its `search_path`).
    pub(super) async fn open(url: &str, schema: &str, connections: usize) -> Result<Pool> {
        let mut config: ::postgres::Config = url.parse()?;
        config.connect_timeout(CONNECT_TIMEOUT);
        let admin = config.clone();
        let create = format!("CREATE SCHEMA IF NOT EXISTS \"{}\"", schema.replace('"', "\"\""));
        tokio::task::spawn_blocking(move || -> Result<()> {
            admin.connect(NoTls)?.batch_execute(&create)?;
            Ok(())
        })
        .await
        .map_err(|_| Error::Panicked)??;
        config.options(&format!("-c search_path={schema}"));
        Ok(Pool { config, idle: Arc::default(), open: Arc::new(Semaphore::new(connections)) })
    }

    /// Runs `work` in `BEGIN … COMMIT` (or `ROLLBACK` when it fails) on a pooled connection.
    /// `writes` says whether it is counted as a commit that wrote (see `db::commits`).
    pub(super) async fn transaction<T, E, F>(&self, work: F, writes: bool) -> Result<T, E>
    where
        F: FnOnce(&mut Tx<'_>) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<Error> + Send + 'static,
    {
        let permit = self.open.clone().acquire_owned().await.map_err(|_| E::from(Error::Stopped))?;
        let (idle, config) = (self.idle.clone(), self.config.clone());
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let reused = idle.lock().expect("idle connections").pop().filter(|c| !c.client.is_closed());
            let mut connection = match reused {
                Some(connection) => connection,
                None => Connection {
                    client: config.connect(NoTls).map_err(|e| E::from(e.into()))?,
                    prepared: HashMap::new(),
                },
            };
            let result = run(&mut connection, work, writes);
            if !connection.client.is_closed() {
                idle.lock().expect("idle connections").push(connection);
            }
            result
        })
        .await
        .map_err(|_| E::from(Error::Panicked))?
    }
}

impl Drop for Pool {
    /// Closing a connection blocks (it says goodbye to the server on the connection's own
    /// runtime), which an async thread must not do: idle connections close on a thread of
    /// their own. Those still in a transaction close where it runs.
    fn drop(&mut self) {
        let idle = std::mem::take(&mut *self.idle.lock().expect("idle connections"));
        if !idle.is_empty() {
            let closing = std::thread::Builder::new().name("postgres-close".into()).spawn(move || drop(idle));
            if let Err(err) = closing {
                tracing::warn!(error = %err, "could not close idle PostgreSQL connections");
            }
        }
    }
}

fn run<T, E, F>(connection: &mut Connection, work: F, writes: bool) -> Result<T, E>
where
    F: FnOnce(&mut Tx<'_>) -> Result<T, E>,
    E: From<Error>,
{
    let Connection { client, prepared } = connection;
    if prepared.len() > PREPARED_MAX {
        prepared.clear();
    }
    let transaction = client.transaction().map_err(|e| E::from(e.into()))?;
    crate::db::count_round_trips(2); // BEGIN, and COMMIT or ROLLBACK
    let mut tx = Tx { conn: Conn::Postgres(transaction, prepared) };
    let result = work(&mut tx);
    let Conn::Postgres(transaction, _) = tx.conn else { unreachable!("a PostgreSQL transaction") };
    match result {
        Ok(value) => {
            transaction.commit().map_err(|e| E::from(e.into()))?;
            if writes {
                crate::db::count_commit();
            }
            Ok(value)
        }
        Err(err) => {
            // Dropping it would roll back too; saying so keeps a failed rollback visible.
            if let Err(rollback) = transaction.rollback() {
                tracing::warn!(error = %rollback, "rolling back failed; the connection is dropped");
            }
            Err(err)
        }
    }
}

/// The statement prepared on this connection for parameters of these kinds (prepared now, one
/// round trip, if it was not yet).
fn statement(
    tx: &mut ::postgres::Transaction<'_>,
    prepared: &mut Prepared,
    sql: &str,
    values: &[Value],
) -> Result<Statement> {
    let kinds: Vec<Kind> = values.iter().map(Value::kind).collect();
    let key = (sql.to_owned(), kinds);
    if let Some(statement) = prepared.get(&key) {
        return Ok(statement.clone());
    }
    crate::db::count_round_trips(1);
    let types: Vec<_> = key.1.iter().map(|k| k.postgres_type()).collect();
    let statement = tx.prepare_typed(sql, &types)?;
    prepared.insert(key, statement.clone());
    Ok(statement)
}

fn params(values: &[Value]) -> Vec<&(dyn ToSql + Sync)> {
    values.iter().map(|v| v as &(dyn ToSql + Sync)).collect()
}

pub(super) fn execute(
    tx: &mut ::postgres::Transaction<'_>,
    prepared: &mut Prepared,
    sql: &str,
    values: &[Value],
) -> Result<u64> {
    let statement = statement(tx, prepared, sql, values)?;
    crate::db::count_round_trips(1);
    Ok(tx.execute(&statement, &params(values))?)
}

pub(super) fn query(
    tx: &mut ::postgres::Transaction<'_>,
    prepared: &mut Prepared,
    sql: &str,
    values: &[Value],
) -> Result<Vec<Row>> {
    let statement = statement(tx, prepared, sql, values)?;
    crate::db::count_round_trips(1);
    let rows = tx.query(&statement, &params(values))?;
    rows.iter()
        .map(|row| Ok(Row { values: (0..row.len()).map(|i| Value::from_postgres(row, i)).collect::<Result<_>>()? }))
        .collect()
}
