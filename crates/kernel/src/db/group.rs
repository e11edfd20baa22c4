//! SQLite group commit: write transactions that queue for the writer's turn share one SQLite
//! transaction, and one `COMMIT`, with the ones queued behind them.
//!
//! Why: a commit copies every page it changed into the WAL (two `pwrite`s per page) and the
//! readers' connections drop their page caches after every commit. Concurrent checkouts change
//! mostly the same pages (the tail of the outbox, of the ledger, of every index on a UUIDv7 or a
//! time; the few pages of stock rows), so N commits of one page each become one. Under load most
//! writers find the turn taken (70% in `emporium-bench checkout`, docs/benchmarks.md), which is
//! exactly when there is something to share.
//!
//! How: the turn (an async FIFO mutex) carries the [`Group`]. A transaction that takes the turn
//! while no group is open begins one (`BEGIN IMMEDIATE; SAVEPOINT member`); one that finds a group
//! open only adds its savepoint. At its end a transaction releases (or rolls back to) its
//! savepoint, and then:
//! - if no writer is waiting for the turn, or the group is full, it also sends `COMMIT` (in the
//!   same script, so no extra round trip) and tells every member the outcome;
//! - otherwise it leaves the group open for the next writer, becomes a member, hands over the
//!   turn and its connection, and waits for the outcome. Its `commit` returns only once the group
//!   is committed: what a caller was told committed is on disk as before (WAL, `synchronous =
//!   NORMAL`), and readers see it.
//!
//! A member's savepoint makes its rollback its own: the rest of the group stays. If the group
//! itself is lost (a failed `COMMIT`, an I/O error that ends SQLite's transaction) every member
//! is told so and none of them committed. A writer that gave up waiting for the turn may leave an
//! open group with nobody to end it; a member that hears nothing for [`MEMBER_PATIENCE`] takes
//! the turn itself and commits its group if it is still open.
//!
//! Single statements written outside a transaction ([`sql_exec!`](crate::sql_exec) on a `Db`)
//! join an open group the same way (a statement is atomic by itself), or autocommit when none is
//! open. PostgreSQL has no turn: its server groups WAL flushes of concurrent commits itself.

use super::due::run_guarded_sqlite;
use super::lender::{Lease, Lender};
use super::{Conn, Counts};
use super::{Exec, SqliteExec, Write};
use sqlx::{Executor, Sqlite};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, OwnedMutexGuard, oneshot};

/// Members per group at most: a bound on how long the first member waits for its commit.
///
/// Small, because a `COMMIT` here is cheap (WAL, `synchronous = NORMAL`: no fsync) and every
/// member waits for it: the first of N members waits for N - 1 more transactions. Four keeps
/// most of the saving (COMMITs per checkout 9.0 without groups, 3.5 with four, 2.8 with 32) at
/// a fraction of the wait: `emporium-bench checkout`, 16 shoppers, 654–664/s against 515–571/s
/// with 32 (docs/benchmarks.md, twelfth session).
const MAX_MEMBERS: usize = 4;

/// How long a member waits for its group's outcome before finishing the group itself (see the
/// module notes). Far longer than a group takes; only a writer that gave up waiting for the turn
/// leaves a group unended.
const MEMBER_PATIENCE: Duration = Duration::from_millis(250);

/// `BEGIN` of a write transaction that opens a group, and of one that joins the open group.
pub(super) const OPEN_GROUP: &str = "BEGIN IMMEDIATE; SAVEPOINT member";
pub(super) const JOIN_GROUP: &str = "SAVEPOINT member";

/// A SQLite database's writer: the turn, the one connection writes run on, and the open group.
pub(super) struct SqliteWriter {
    turn: Arc<Mutex<Group>>,
    /// Writers queued for the turn: while there are some, a group stays open for them.
    waiting: AtomicUsize,
    pub(super) lender: Arc<Lender<Sqlite>>,
    /// `COMMIT`s sent (each ends a group of one or more transactions).
    pub(super) group_commits: AtomicU64,
    /// Checkpoints run for this database off the writer's path (see `checkpoint`).
    pub(super) checkpoints: AtomicU64,
    /// Nanoseconds the turn was held: writes to one SQLite file run one at a time, so this over
    /// the wall time is how near the database is to its writer's limit.
    pub(super) turn_held_nanos: AtomicU64,
}

/// What the holder of the turn knows about the writer connection's open transaction.
#[derive(Default)]
pub struct Group {
    /// A `BEGIN IMMEDIATE` ran on the writer connection and no `COMMIT` or `ROLLBACK` yet.
    open: bool,
    /// Transactions that released their savepoint in the open group, waiting for its outcome.
    members: Vec<oneshot::Sender<Result<(), String>>>,
    /// Bumped whenever a group ends: a member finishing its group itself checks it is still open.
    generation: u64,
}

/// The writer's turn, held from a write's start to its end.
pub struct Turn {
    group: OwnedMutexGuard<Group>,
    writer: Arc<SqliteWriter>,
    since: Instant,
}

impl Drop for Turn {
    fn drop(&mut self) {
        let held = u64::try_from(self.since.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.writer.turn_held_nanos.fetch_add(held, Ordering::Relaxed);
    }
}

/// How a member's end went: done, or waiting for its group's `COMMIT`.
pub(super) enum Ended {
    Done(sqlx::Result<()>),
    Member(Membership),
}

/// A member's place in a group, until the group ends.
pub(super) struct Membership {
    outcome: oneshot::Receiver<Result<(), String>>,
    generation: u64,
    writer: Arc<SqliteWriter>,
    /// The database's counts, for a `COMMIT` the member sends itself.
    counts: Arc<Counts>,
}

/// Counts a writer in the queue until it has the turn or gave up.
struct Queued<'a>(&'a AtomicUsize);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl SqliteWriter {
    pub(super) fn new(lender: Arc<Lender<Sqlite>>) -> Self {
        Self {
            turn: Arc::default(),
            waiting: AtomicUsize::new(0),
            lender,
            group_commits: AtomicU64::new(0),
            checkpoints: AtomicU64::new(0),
            turn_held_nanos: AtomicU64::new(0),
        }
    }

    /// Waits for the writer's turn, at most `patience`.
    pub(super) async fn turn(self: &Arc<Self>, patience: Duration) -> sqlx::Result<Turn> {
        let group = match self.turn.clone().try_lock_owned() {
            Ok(group) => group,
            Err(_) => {
                self.waiting.fetch_add(1, Ordering::SeqCst);
                let _queued = Queued(&self.waiting);
                match tokio::time::timeout(patience, self.turn.clone().lock_owned()).await {
                    Ok(group) => group,
                    Err(_) => return Err(sqlx::Error::PoolTimedOut),
                }
            }
        };
        Ok(Turn { group, writer: self.clone(), since: Instant::now() })
    }

    pub(super) async fn lease(&self) -> sqlx::Result<Lease<Sqlite>> {
        self.lender.lease().await
    }
}

impl Turn {
    /// The `BEGIN` of a write transaction started with this turn.
    pub(super) fn begin(&self) -> &'static str {
        if self.group.open { JOIN_GROUP } else { OPEN_GROUP }
    }

    /// Whether a group is open: then whoever holds the turn must see it ended or handed on.
    pub(super) fn group_open(&self) -> bool {
        self.group.open
    }

    /// Ends a write transaction begun with [`Turn::begin`] on `conn` as `closing` says, then the
    /// group or not (see the module notes). Also returns whether the transaction committed (its
    /// group's outcome aside). The caller drops `conn` and the turn before awaiting a
    /// [`Membership`].
    pub(super) async fn end_transaction(&mut self, conn: &mut Conn, closing: Closing) -> (Ended, bool) {
        let (mut commit, guard) = match closing {
            Closing::Commit => (true, None),
            Closing::Rollback => (false, None),
            Closing::CommitIf(guard) => (true, Some(guard)),
        };
        if !commit {
            conn.due.writes.clear();
        }
        let began = conn.due.begin.is_none();
        let has_work = began || !conn.due.writes.is_empty() || guard.is_some();
        if !has_work {
            // Nothing of ours ran or is due: no savepoint to end.
            conn.due.begin = None;
            return (Ended::Done(self.settle(conn).await), commit);
        }
        let mut finishing = self.finishing();
        let Exec::Sqlite(lease) = &mut conn.lease else { unreachable!("a turn is SQLite's") };
        let sent = match guard {
            None => {
                let script = closing_script(commit, finishing);
                let sent = SqliteExec::new(lease.conn(), &mut conn.due).execute(script).await.map(|_| ());
                conn.observe(&sent);
                sent
            }
            Some(guard) => {
                let script = closing_script(true, finishing);
                let passed = run_guarded_sqlite(lease.conn(), &mut conn.due, guard, script).await;
                conn.observe(&passed);
                match passed {
                    Ok(true) => Ok(()),
                    // Refused: the script stopped at the guard; our savepoint is rolled back.
                    Ok(false) => {
                        commit = false;
                        finishing = self.finishing();
                        run(conn, closing_script(false, finishing)).await
                    }
                    Err(err) => Err(err),
                }
            }
        };
        match sent {
            Ok(()) if finishing => {
                self.ended(Ok(()));
                (Ended::Done(Ok(())), commit)
            }
            Ok(()) => {
                // A rollback waits too: what this transaction saw (another member's change, say)
                // must be on disk and visible to readers before its caller acts on it.
                self.group.open = true;
                (Ended::Member(self.join(conn)), commit)
            }
            Err(err) => {
                // Undo our part alone if the group is still there; otherwise the group is lost.
                let undone = run(conn, "ROLLBACK TO member; RELEASE member").await;
                match undone {
                    Ok(()) => {
                        self.group.open = true;
                        let _ = self.settle(conn).await;
                    }
                    Err(_) => self.lose(conn, &err).await,
                }
                (Ended::Done(Err(err)), false)
            }
        }
    }

    /// For a single statement written outside a transaction, after it ran or failed (in the open
    /// group, if any: see [`Turn::group_open`]): the group ended or handed on.
    pub(super) async fn end_statement(&mut self, conn: &mut Conn) -> Ended {
        if !self.group.open {
            return Ended::Done(Ok(()));
        }
        if self.finishing() {
            return Ended::Done(self.settle(conn).await);
        }
        Ended::Member(self.join(conn))
    }

    /// Becomes a member of the open group, to be told its outcome.
    fn join(&mut self, conn: &Conn) -> Membership {
        let (tell, outcome) = oneshot::channel();
        self.group.members.push(tell);
        Membership {
            outcome,
            generation: self.group.generation,
            writer: self.writer.clone(),
            counts: conn.counts.clone(),
        }
    }

    /// Commits the open group if nobody is queued to carry it on; a no-op otherwise.
    async fn settle(&mut self, conn: &mut Conn) -> sqlx::Result<()> {
        if !self.group.open || !self.finishing() {
            return Ok(());
        }
        self.commit_group(conn).await
    }

    async fn commit_group(&mut self, conn: &mut Conn) -> sqlx::Result<()> {
        match run(conn, "COMMIT").await {
            Ok(()) => {
                self.ended(Ok(()));
                Ok(())
            }
            Err(err) => {
                self.lose(conn, &err).await;
                Err(err)
            }
        }
    }

    fn finishing(&self) -> bool {
        self.writer.waiting.load(Ordering::SeqCst) == 0 || self.group.members.len() >= MAX_MEMBERS
    }

    /// The group ended: committed, or `Err` when it was rolled back. Tells every member.
    fn ended(&mut self, outcome: Result<(), String>) {
        if outcome.is_ok() {
            self.writer.group_commits.fetch_add(1, Ordering::Relaxed);
        }
        self.group.open = false;
        self.group.generation = self.group.generation.wrapping_add(1);
        for member in self.group.members.drain(..) {
            let _ = member.send(outcome.clone());
        }
    }

    /// The group's transaction failed as a whole: roll back what is left of it and tell members.
    async fn lose(&mut self, conn: &mut Conn, err: &sqlx::Error) {
        // SQLite may have rolled back already (then this fails, harmlessly).
        let _ = run(conn, "ROLLBACK").await;
        tracing::error!(error = %err, members = self.group.members.len(), "SQLite group commit rolled back");
        self.ended(Err(format!("the group commit this transaction joined was rolled back: {err}")));
    }
}

impl Membership {
    /// Waits for the group's outcome; see [`MEMBER_PATIENCE`] for why it may end the group itself.
    pub(super) async fn outcome(mut self) -> sqlx::Result<()> {
        let heard = match tokio::time::timeout(MEMBER_PATIENCE, &mut self.outcome).await {
            Ok(heard) => heard,
            Err(_) => {
                let mut turn = self.writer.turn(super::WRITER_WAIT).await?;
                if turn.group.open && turn.group.generation == self.generation {
                    let mut conn = Conn::new(Exec::Sqlite(self.writer.lease().await?), &self.counts);
                    let _ = turn.commit_group(&mut conn).await;
                }
                drop(turn);
                self.outcome.await
            }
        };
        match heard {
            Ok(Ok(())) => Ok(()),
            Ok(Err(why)) => Err(sqlx::Error::Protocol(why)),
            Err(_) => Err(sqlx::Error::Protocol("the group commit this transaction joined was abandoned".into())),
        }
    }
}

/// How a write transaction ends.
pub(super) enum Closing {
    Commit,
    Rollback,
    /// Commits if the guard changes a row, rolls back otherwise (see `Tx::commit_if`).
    CommitIf(Write),
}

/// What ends a member's savepoint, and with `finishing` the group's transaction too.
fn closing_script(commit: bool, finishing: bool) -> &'static str {
    match (commit, finishing) {
        (true, false) => "RELEASE member",
        (true, true) => "RELEASE member; COMMIT",
        (false, false) => "ROLLBACK TO member; RELEASE member",
        (false, true) => "ROLLBACK TO member; RELEASE member; COMMIT",
    }
}

/// One statement on the writer connection, nothing due riding along.
async fn run(conn: &mut Conn, sql: &'static str) -> sqlx::Result<()> {
    let Exec::Sqlite(lease) = &mut conn.lease else { unreachable!("a turn is SQLite's") };
    let done = sqlx::query(sql).execute(lease.conn()).await.map(|_| ());
    conn.observe(&done);
    done
}
