//! Connections lent out of our own idle list instead of sqlx's pool.
//!
//! sqlx's pool pings a connection when it hands it out (`test_before_acquire`, which can be
//! turned off) and again, unconditionally, when it takes it back (its guard against connections
//! left mid-query by a dropped future). A ping is a round trip: to PostgreSQL over the socket, or
//! to the thread that owns a SQLite connection. Around every statement and transaction that made
//! two trips of overhead, more than half of all the trips of a checkout (docs/benchmarks.md,
//! "Checkout"). So connections are taken from sqlx once and then kept: a lease takes one from the
//! idle list and gives it back when dropped, with no round trip either way.
//!
//! What the pings guarded against is handled here instead:
//! - A connection cut underneath us (server restart, firewall) is found by the statement that
//!   fails on it: an I/O or protocol error, or PostgreSQL's notice that it is ending the session,
//!   marks the lease broken and the connection is closed instead of going back. A connection idle for a while is pinged before it is lent (where
//!   `ping_after` is set: PostgreSQL), so the first request after a quiet spell does not fail.
//! - A future dropped mid-statement leaves nothing behind: both drivers finish or drain the
//!   interrupted exchange before the connection's next command, and an unfinished transaction is
//!   rolled back by [`Tx`](super::Tx)'s drop before its lease returns.

use sqlx::Connection;
use sqlx::pool::PoolConnection;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub(super) struct Lender<DB: sqlx::Database> {
    pool: sqlx::Pool<DB>,
    /// Most recently returned last: lending it first keeps the busiest connections' caches warm.
    idle: Mutex<Vec<(PoolConnection<DB>, Instant)>>,
    /// One permit per connection that may exist; sqlx's pool has the same limit, so it never
    /// makes a caller wait once a permit is held.
    permits: Arc<Semaphore>,
    ping_after: Option<Duration>,
    wait: Duration,
}

impl<DB: sqlx::Database> Lender<DB> {
    pub(super) fn new(pool: sqlx::Pool<DB>, max: u32, ping_after: Option<Duration>, wait: Duration) -> Self {
        Self { pool, idle: Mutex::new(Vec::new()), permits: Arc::new(Semaphore::new(max as usize)), ping_after, wait }
    }

    pub(super) fn pool(&self) -> &sqlx::Pool<DB> {
        &self.pool
    }

    pub(super) async fn lease(self: &Arc<Self>) -> sqlx::Result<Lease<DB>> {
        let permit = match tokio::time::timeout(self.wait, self.permits.clone().acquire_owned()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Err(sqlx::Error::PoolClosed),
            Err(_) => return Err(sqlx::Error::PoolTimedOut),
        };
        loop {
            let idle = self.idle.lock().expect("idle connections lock").pop();
            let conn = match idle {
                None => self.pool.acquire().await?,
                Some((mut conn, since)) => {
                    if self.ping_after.is_some_and(|after| since.elapsed() >= after) && conn.ping().await.is_err() {
                        conn.close_on_drop();
                        continue;
                    }
                    conn
                }
            };
            return Ok(Lease { conn: Some(conn), broken: false, lender: self.clone(), _permit: permit });
        }
    }

    /// Closes the idle connections and then the pool (which waits for the lent ones).
    pub(super) async fn close(&self) {
        // Marked closed first, so leases dropped from now on close their connection too.
        let closing = self.pool.close();
        self.close_idle();
        closing.await;
    }

    /// Closes the idle connections, once the pool is marked closed (another lender of the same
    /// pool closing it waits for them).
    pub(super) fn close_idle(&self) {
        debug_assert!(self.pool.is_closed());
        let idle = std::mem::take(&mut *self.idle.lock().expect("idle connections lock"));
        for (mut conn, _) in idle {
            conn.close_on_drop();
        }
    }
}

/// A lent connection; goes back to the idle list when dropped (closed instead when broken).
pub struct Lease<DB: sqlx::Database> {
    conn: Option<PoolConnection<DB>>,
    broken: bool,
    lender: Arc<Lender<DB>>,
    // Released after the connection is back in the idle list (fields drop after `drop` runs).
    _permit: OwnedSemaphorePermit,
}

impl<DB: sqlx::Database> Lease<DB> {
    pub fn conn(&mut self) -> &mut DB::Connection {
        self.conn.as_mut().expect("a lease holds its connection until dropped")
    }

    /// Closes the connection instead of lending it again.
    pub fn discard(&mut self) {
        self.broken = true;
    }

    /// Marks the connection broken when `result` failed in a way that leaves it unusable.
    pub fn observe<T>(&mut self, result: &Result<T, sqlx::Error>) {
        if let Err(err) = result
            && is_connection_lost(err)
        {
            self.broken = true;
        }
    }
}

impl<DB: sqlx::Database> Drop for Lease<DB> {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else { return };
        if self.broken || self.lender.pool.is_closed() {
            conn.close_on_drop();
            return;
        }
        self.lender.idle.lock().expect("idle connections lock").push((conn, Instant::now()));
    }
}

fn is_connection_lost(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) | sqlx::Error::Tls(_) | sqlx::Error::WorkerCrashed => true,
        // PostgreSQL says why it is closing the session before it does: class 08 (connection
        // exception) and 57P (operator intervention: terminated, shutting down, restarting).
        sqlx::Error::Database(db) => db.code().is_some_and(|code| code.starts_with("08") || code.starts_with("57P")),
        _ => false,
    }
}
