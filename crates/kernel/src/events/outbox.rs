//! Outbox storage: appending events, reading them back in commit order, consumer cursors,
//! dead letters and processed-event bookkeeping. Same SQL on both backends except for the
//! PostgreSQL commit-order check explained in [`glimpse`].

use super::{DomainEvent, Envelope};
use crate::db::{Backend, Db, Tx, Write};
use crate::ids::EventId;
use crate::{sql, sql_exec};
use chrono::{DateTime, Utc};
use sqlx::types::Json;

/// An event serialised and ready to append: what code hands to a store that appends it in its
/// own transaction (the cart's store writes a line and its event together).
#[derive(Clone, Debug, PartialEq)]
pub struct PendingEvent {
    event_type: &'static str,
    version: i32,
    aggregate_id: String,
    payload: serde_json::Value,
    /// The request it came from, read where the event is made: [`append_to`] runs on a storage
    /// thread, outside the request's task.
    trace_id: Option<String>,
}

impl PendingEvent {
    /// Fails (as an encoding error, like any value the database cannot take) only if the event
    /// does not serialise.
    pub fn of<E: DomainEvent>(event: &E) -> sqlx::Result<PendingEvent> {
        Ok(PendingEvent {
            event_type: E::TYPE,
            version: E::VERSION,
            aggregate_id: event.aggregate_id(),
            payload: serde_json::to_value(event).map_err(|e| sqlx::Error::Encode(Box::new(e)))?,
            trace_id: crate::telemetry::current_request_id(),
        })
    }
}

/// Appends `event` to the outbox of the transaction's database. It becomes visible to consumers
/// only if the transaction commits.
pub async fn append<E: DomainEvent>(tx: &mut Tx, event: &E) -> sqlx::Result<EventId> {
    let pending = PendingEvent::of(event)?;
    let ids = append_all(tx, std::slice::from_ref(&pending)).await?;
    Ok(ids[0])
}

/// Appends `events`, in order, with one statement. Like [`append`], they become visible only
/// if the transaction commits.
///
/// The insert is deferred ([`Tx::defer`]) and independent: nothing reads a transaction's own
/// outbox rows back, so on SQLite it rides with the next statement or the COMMIT, and on
/// PostgreSQL it usually shares the transaction's last statement. On PostgreSQL every insert
/// also takes the outbox lock (see [`glimpse`]) in its own statement, before any `seq`
/// is drawn: parts of one statement run in no set order, so each draws only under the lock.
pub async fn append_all(tx: &mut Tx, events: &[PendingEvent]) -> sqlx::Result<Vec<EventId>> {
    const INSERT: &str =
        "INSERT INTO outbox (event_id, event_type, event_version, aggregate_id, occurred_at, trace_id, payload)";
    const COLUMNS: usize = 7;
    let trace_id = crate::telemetry::current_request_id();
    let now = Utc::now();
    let ids: Vec<EventId> = events.iter().map(|_| EventId::new()).collect();
    let takes_lock = tx.backend() == Backend::Postgres;
    // Rows are numbered in VALUES order, so `seq` follows the order of `events`.
    for (events, ids) in events.chunks(crate::db::ROWS_PER_STATEMENT).zip(ids.chunks(crate::db::ROWS_PER_STATEMENT)) {
        let sql = if !takes_lock {
            crate::db::multi_row_insert(INSERT, COLUMNS, events.len())
        } else {
            // Held until the transaction ends: the dispatcher sees us among the lock's holders, so
            // it never reads past a `seq` whose transaction is still open. The CTE is volatile,
            // so it runs once, and the join needs its row before it yields one to insert.
            let space = format!("${}", events.len() * COLUMNS + 1);
            let head = format!(
                "WITH held AS (SELECT pg_advisory_xact_lock_shared({space}, hashtext(current_schema()))) \
                 {INSERT} SELECT v.* FROM ("
            );
            format!("{}) AS v, held", crate::db::multi_row_insert(&head, COLUMNS, events.len()))
        };
        let mut write = Write::new(sql).independent().ordered_by("outbox");
        for (id, event) in ids.iter().zip(events) {
            write = write
                .bind(*id)
                .bind(event.event_type)
                .bind(event.version)
                .bind(event.aggregate_id.clone())
                .bind(now)
                .bind(trace_id.clone())
                .bind(Json(event.payload.clone()));
        }
        if takes_lock {
            write = write.bind(OUTBOX_LOCK_SPACE);
        }
        tx.defer(write).await?;
        tx.mark_events_appended();
    }
    Ok(ids)
}

/// Appends one event in a transaction of the storage layer (see [`append_to`]).
pub fn append_one<E: DomainEvent>(tx: &mut crate::storage::Tx<'_>, event: &E) -> crate::storage::Result<()> {
    let pending = PendingEvent::of(event).map_err(|e| crate::storage::Error::Encode(e.to_string()))?;
    append_to(tx, &[pending])
}

/// [`append_all`] for a transaction of the storage layer (`kernel::storage`): the events, in
/// order, one `INSERT` each. On PostgreSQL each insert takes the outbox lock (see [`glimpse`])
/// before its `seq` is drawn: the row it inserts is made from the lock's own result, so the
/// lock is held before the row, and with it the `seq`, exists (a data dependency, not an order
/// of execution).
pub fn append_to(tx: &mut crate::storage::Tx<'_>, events: &[PendingEvent]) -> crate::storage::Result<()> {
    const COLUMNS: &str = "event_id, event_type, event_version, aggregate_id, occurred_at, trace_id, payload";
    let sql = match tx.backend() {
        Backend::Sqlite => format!("INSERT INTO outbox ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"),
        Backend::Postgres => format!(
            "WITH held AS (SELECT pg_advisory_xact_lock_shared(CAST($8 AS integer), hashtext(current_schema())))
             INSERT INTO outbox ({COLUMNS}) SELECT $1, $2, $3, $4, $5, $6, $7 FROM held"
        ),
    };
    let space = i64::from(OUTBOX_LOCK_SPACE);
    let now = Utc::now();
    for event in events {
        let lock: &[&dyn crate::storage::Param] = match tx.backend() {
            Backend::Sqlite => &[],
            Backend::Postgres => &[&space],
        };
        let values: [&dyn crate::storage::Param; 7] = [
            &EventId::new(),
            &event.event_type,
            &event.version,
            &event.aggregate_id,
            &now,
            &event.trace_id,
            &event.payload,
        ];
        let params: Vec<&dyn crate::storage::Param> = values.iter().chain(lock).copied().collect();
        tx.execute(&sql, &params)?;
    }
    Ok(())
}

/// Advisory lock that outbox writers hold, shared, from before they draw a `seq` until their
/// transaction ends: it is how the dispatcher sees which transactions may still hold an
/// uncommitted `seq` (see [`glimpse`]). Advisory locks are per database and every service's
/// schema shares one, so the lock is the pair (this, a hash of the schema's name): a dispatcher
/// then waits only for writers of its own outbox (two names with the same hash only make it
/// wait for more).
const OUTBOX_LOCK_SPACE: i32 = 0x0e4b_0a11;

/// The highest `seq` a reader may consume without risking to skip a row committed later. On
/// SQLite writers are serialised (`BEGIN IMMEDIATE`), so sequence order is commit order and the
/// maximum is safe at once; on PostgreSQL see [`glimpse`].
pub(crate) async fn sqlite_upper_bound(db: &Db) -> sqlx::Result<i64> {
    max_seq(db).await
}

/// What the dispatcher sees of a PostgreSQL outbox at one moment: the highest committed `seq`,
/// and the transactions that then held the outbox lock (their virtual transaction ids).
///
/// A transaction can take `seq` 5, stay open while `seq` 6 commits, and commit afterwards: a
/// cursor at 6 would skip 5 forever. But that transaction took the outbox lock before drawing
/// 5, which was drawn before 6 (the sequence has no per-session cache), so it held the lock
/// when 6 was read, and the lock holders are read after the maximum (the statement's snapshot
/// comes first). So `max` is safe to read up to once every transaction in `open` has ended
/// ([`Settling`](super::settle::Settling) tracks that across glimpses). Nobody waits: the
/// dispatcher used to take the lock exclusively for the same guarantee, and every writer
/// arriving meanwhile queued behind it (under checkout load that wait averaged 4.8 ms).
pub(crate) async fn glimpse(db: &Db) -> sqlx::Result<Glimpse> {
    // The holders come as one text (`3/14 5/92`): the query is typed for both drivers.
    let (max, open): (i64, String) = sql!(db, |c| sqlx::query_as(
        "SELECT (SELECT COALESCE(MAX(seq), 0) FROM outbox),
                array_to_string(ARRAY(SELECT virtualtransaction FROM pg_locks
                      WHERE locktype = 'advisory' AND granted AND mode = 'ShareLock'
                        AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
                        AND objsubid = 2 AND classid::bigint = $1
                        AND objid::bigint = hashtext(current_schema())::bigint & 4294967295), ' ')"
    )
    .bind(i64::from(OUTBOX_LOCK_SPACE))
    .fetch_one(c)
    .await)?;
    Ok(Glimpse { max, open: open.split_whitespace().map(str::to_owned).collect() })
}

/// See [`glimpse`].
#[derive(Debug)]
pub(crate) struct Glimpse {
    pub max: i64,
    pub open: Vec<String>,
}

async fn max_seq(db: &Db) -> sqlx::Result<i64> {
    sql!(db, |c| sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM outbox").fetch_one(c).await)
}

#[derive(sqlx::FromRow)]
struct OutboxRow {
    seq: i64,
    event_id: EventId,
    event_type: String,
    event_version: i32,
    aggregate_id: String,
    occurred_at: DateTime<Utc>,
    trace_id: Option<String>,
    payload: Json<serde_json::Value>,
}

/// Outbox rows after `after`, oldest first (for operators and tests; consumers use the bus).
pub async fn outbox_events(db: &Db, after: i64, limit: i64) -> sqlx::Result<Vec<Envelope>> {
    read_batch(db, after, i64::MAX, limit).await
}

pub(crate) async fn read_batch(db: &Db, after: i64, up_to: i64, limit: i64) -> sqlx::Result<Vec<Envelope>> {
    let rows: Vec<OutboxRow> = sql!(db, |c| {
        sqlx::query_as(
            "SELECT seq, event_id, event_type, event_version, aggregate_id, occurred_at, trace_id, payload
         FROM outbox WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT $3",
        )
        .bind(after)
        .bind(up_to)
        .bind(limit)
        .fetch_all(c)
        .await
    })?;
    Ok(rows
        .into_iter()
        .map(|r| Envelope {
            id: r.event_id,
            seq: r.seq,
            source: db.service().to_owned(),
            event_type: r.event_type,
            version: r.event_version,
            aggregate_id: r.aggregate_id,
            occurred_at: r.occurred_at,
            trace_id: r.trace_id,
            payload: r.payload.0,
        })
        .collect())
}

pub(crate) async fn load_cursor(db: &Db, consumer: &str) -> sqlx::Result<i64> {
    let cursor: Option<i64> =
        sql!(db, |c| sqlx::query_scalar("SELECT last_seq FROM event_cursors WHERE consumer = $1")
            .bind(consumer)
            .fetch_optional(c)
            .await)?;
    Ok(cursor.unwrap_or(0))
}

pub(crate) async fn save_cursor(tx: &mut Tx, consumer: &str, seq: i64) -> sqlx::Result<()> {
    sql_exec!(tx, |c| {
        sqlx::query(
            "INSERT INTO event_cursors (consumer, last_seq, updated_at) VALUES ($1, $2, $3)
         ON CONFLICT (consumer) DO UPDATE SET last_seq = excluded.last_seq, updated_at = excluded.updated_at",
        )
        .bind(consumer)
        .bind(seq)
        .bind(Utc::now())
        .execute(c)
        .await
    })?;
    Ok(())
}

pub(crate) async fn dead_letter(
    tx: &mut Tx,
    consumer: &str,
    event: &Envelope,
    attempts: u32,
    error: &str,
) -> sqlx::Result<()> {
    sql_exec!(tx, |c| sqlx::query(
        "INSERT INTO event_dead_letters (consumer, seq, event_id, attempts, error, failed_at)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (consumer, seq) DO NOTHING"
    )
    .bind(consumer)
    .bind(event.seq)
    .bind(event.id)
    .bind(attempts as i32)
    .bind(error)
    .bind(Utc::now())
    .execute(c)
    .await)?;
    Ok(())
}

/// Records, in the consumer's own transaction, that `consumer` is applying `event_id`.
/// Returns `false` when it was already applied: the caller must then skip its effect.
pub async fn first_delivery(tx: &mut Tx, consumer: &str, event_id: EventId) -> sqlx::Result<bool> {
    let result = sql_exec!(tx, |c| sqlx::query(
        "INSERT INTO processed_events (consumer, event_id, processed_at) VALUES ($1, $2, $3)
         ON CONFLICT (consumer, event_id) DO NOTHING"
    )
    .bind(consumer)
    .bind(event_id)
    .bind(Utc::now())
    .execute(c)
    .await)?;
    Ok(result == 1)
}

/// What [`prune`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub events: u64,
    pub processed: u64,
}

/// Rows deleted per statement, so a large backlog never holds SQLite's single writer (or a
/// PostgreSQL lock) for long: other writers get their turn between batches.
const PRUNE_BATCH: i64 = 5_000;

/// Retention: deletes outbox rows that occurred before `before` and that every consumer with a
/// cursor has passed, except those a consumer parked as dead letters (an operator may replay
/// them); and processed-event records older than `before` (redeliveries come within seconds,
/// not days). A database whose events nobody consumes keeps only `before`'s window.
pub async fn prune(db: &Db, before: DateTime<Utc>) -> sqlx::Result<Pruned> {
    let events = delete_in_batches(
        db,
        "DELETE FROM outbox WHERE seq IN (
            SELECT seq FROM outbox
            WHERE occurred_at < $1
              AND seq <= COALESCE((SELECT MIN(last_seq) FROM event_cursors), (SELECT MAX(seq) FROM outbox))
              AND seq NOT IN (SELECT seq FROM event_dead_letters)
            ORDER BY seq LIMIT $2)",
        before,
    )
    .await?;
    let processed = delete_in_batches(
        db,
        "DELETE FROM processed_events WHERE (consumer, event_id) IN (
            SELECT consumer, event_id FROM processed_events WHERE processed_at < $1 LIMIT $2)",
        before,
    )
    .await?;
    Ok(Pruned { events, processed })
}

/// Runs `delete` (binding `$1` = `before`, `$2` = the batch size) until a batch comes back short.
async fn delete_in_batches(db: &Db, delete: &'static str, before: DateTime<Utc>) -> sqlx::Result<u64> {
    let mut deleted = 0;
    loop {
        let n = sql_exec!(db, |c| sqlx::query(delete).bind(before).bind(PRUNE_BATCH).execute(c).await)?;
        deleted += n;
        if n < PRUNE_BATCH as u64 {
            return Ok(deleted);
        }
    }
}

/// Figures an operator watches: how far behind each consumer is and what it gave up on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxStats {
    pub max_seq: i64,
    pub cursors: Vec<(String, i64)>,
    pub dead_letters: i64,
}

impl OutboxStats {
    pub async fn read(db: &Db) -> sqlx::Result<OutboxStats> {
        let max_seq = max_seq(db).await?;
        let cursors: Vec<(String, i64)> =
            sql!(db, |c| sqlx::query_as("SELECT consumer, last_seq FROM event_cursors ORDER BY consumer")
                .fetch_all(c)
                .await)?;
        let dead_letters: i64 =
            sql!(db, |c| sqlx::query_scalar("SELECT COUNT(*) FROM event_dead_letters").fetch_one(c).await)?;
        Ok(OutboxStats { max_seq, cursors, dead_letters })
    }
}
