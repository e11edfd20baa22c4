//! SQLite checkpoints off the writer's path.
//!
//! In WAL mode the commit that takes the WAL past `wal_autocheckpoint` pages copies them back
//! into the database file, and with `synchronous = NORMAL` syncs both files, while it still holds
//! the writer's turn: every writer queued behind it waits for two fsyncs. In the checkout
//! benchmark the checkpoints took a tenth of the throughput (no checkpoints at all: +10%,
//! docs/benchmarks.md, twelfth session). So a task per database runs a `PASSIVE` checkpoint on a
//! reading connection a few times a second when something was committed: it neither waits for
//! nor blocks the writer (SQLite lets one checkpointer run beside the writer and the readers).
//! The writer's own automatic checkpoint stays as a backstop at a higher mark, for a WAL that
//! grows faster than this task keeps up (or when it is not running).

use super::lender::Lender;
use super::{Counts, SqliteWriter};
use sqlx::Sqlite;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// How often the task looks for commits to checkpoint.
const EVERY: Duration = Duration::from_millis(200);

/// `wal_autocheckpoint` (pages) of every connection: the writer checkpoints itself only past it.
pub(super) const BACKSTOP_PAGES: &str = "10000";

/// Starts the checkpoint task of one database. It holds the database weakly and ends when the
/// database is closed or dropped.
pub(super) fn spawn(readers: &Arc<Lender<Sqlite>>, writer: &Arc<SqliteWriter>, counts: &Arc<Counts>) {
    let (readers, writer, counts): (Weak<_>, Weak<_>, Weak<_>) =
        (Arc::downgrade(readers), Arc::downgrade(writer), Arc::downgrade(counts));
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut checkpointed_at = 0;
        loop {
            ticks.tick().await;
            let (Some(readers), Some(writer), Some(counts)) = (readers.upgrade(), writer.upgrade(), counts.upgrade())
            else {
                return;
            };
            if readers.pool().is_closed() {
                return;
            }
            let commits = counts.commits.load(Ordering::Relaxed);
            if commits == checkpointed_at {
                continue;
            }
            let Ok(mut lease) = readers.lease().await else { return };
            let done = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(lease.conn()).await;
            lease.observe(&done);
            match done {
                Ok(_) => {
                    checkpointed_at = commits;
                    writer.checkpoints.fetch_add(1, Ordering::Relaxed);
                }
                Err(err) => tracing::warn!(error = %err, "SQLite checkpoint failed; the writer's own one remains"),
            }
        }
    });
}
