//! `Db` on both backends: database creation, transactions, concurrency.

use emporium_kernel::db::{Db, Write};
use emporium_kernel::testing::{Backend, TestDatabase, admin_url, no_migrations};
use emporium_kernel::{sql, sql_exec};
use sqlx::Connection;

#[tokio::test]
async fn a_missing_postgres_database_is_created() {
    let name = format!("emporium_test_{}", uuid::Uuid::now_v7().simple());
    let admin = admin_url();
    let url = format!("{}/{name}", admin.rsplit_once('/').unwrap().0);
    let db = Db::open_postgres("things", &url, 2, &no_migrations()).await.expect("database created on demand");
    db.ping().await.unwrap();
    db.close().await;
    let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(&name)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(exists);
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE {name} WITH (FORCE)"))).execute(&mut conn).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_get_their_own_postgres_schema() {
    let test_db = TestDatabase::create(Backend::Postgres).await;
    let a = test_db.open("alpha", &no_migrations()).await;
    let b = test_db.open("beta", &no_migrations()).await;
    let mut tx = a.begin().await.unwrap();
    sql_exec!(tx, |c| sqlx::query("INSERT INTO event_cursors (consumer, last_seq, updated_at) VALUES ('x', 7, now())")
        .execute(c)
        .await)
    .unwrap();
    tx.commit().await.unwrap();
    let in_b: i64 = sql!(b, |c| sqlx::query_scalar("SELECT COUNT(*) FROM event_cursors").fetch_one(c).await).unwrap();
    assert_eq!(in_b, 0, "beta does not see alpha's tables");
    let schema: String = sql!(a, |c| sqlx::query_scalar("SELECT current_schema()::text").fetch_one(c).await).unwrap();
    assert_eq!(schema, "alpha");
}

/// Read-modify-write transactions on SQLite queue on the write lock (`BEGIN IMMEDIATE`) instead
/// of failing with SQLITE_BUSY or losing updates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sqlite_writers_queue() {
    let test_db = TestDatabase::create(Backend::Sqlite).await;
    let db = test_db.open("counter", &no_migrations()).await;
    let mut tx = db.begin().await.unwrap();
    sql_exec!(tx, |c| sqlx::query("INSERT INTO event_cursors (consumer, last_seq, updated_at) VALUES ('n', 0, '')")
        .execute(c)
        .await)
    .unwrap();
    tx.commit().await.unwrap();
    let tasks: Vec<_> = (0..40)
        .map(|_| {
            let db = db.clone();
            tokio::spawn(async move {
                let mut tx = db.begin().await?;
                let n: i64 =
                    sql!(tx, |c| sqlx::query_scalar("SELECT last_seq FROM event_cursors WHERE consumer = 'n'")
                        .fetch_one(c)
                        .await)?;
                tokio::task::yield_now().await;
                sql_exec!(tx, |c| sqlx::query("UPDATE event_cursors SET last_seq = $1 WHERE consumer = 'n'")
                    .bind(n + 1)
                    .execute(c)
                    .await)?;
                tx.commit().await
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().expect("no writer fails");
    }
    let n: i64 =
        sql!(db, |c| sqlx::query_scalar("SELECT last_seq FROM event_cursors WHERE consumer = 'n'").fetch_one(c).await)
            .unwrap();
    assert_eq!(n, 40, "no lost update");
}

// Connections are lent and taken back without sqlx's pool: a transaction dropped without
// commit must still roll back and give its connection back, even with a single one.
emporium_kernel::backend_tests! {
    async fn a_dropped_transaction_rolls_back_and_frees_its_connection(backend: Backend) {
        let test_db = TestDatabase::create(backend).await;
        let db = match backend {
            Backend::Sqlite => {
                Db::open_sqlite("lent", &test_db.dir.path().join("lent.db"), 1, &no_migrations()).await.unwrap()
            }
            Backend::Postgres => {
                Db::open_postgres("lent", test_db.url.as_deref().unwrap(), 1, &no_migrations()).await.unwrap()
            }
        };
        for round in 0..3 {
            let mut tx = db.begin().await.unwrap();
            sql_exec!(tx, |c| sqlx::query(
                "INSERT INTO event_cursors (consumer, last_seq, updated_at) VALUES ('dropped', $1, '2026-01-01')"
            )
            .bind(round)
            .execute(c)
            .await)
            .unwrap();
            drop(tx);
            let seen: i64 = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                async { sql!(db, |c| sqlx::query_scalar("SELECT COUNT(*) FROM event_cursors").fetch_one(c).await) },
            )
            .await
            .expect("the one connection came back")
            .unwrap();
            assert_eq!(seen, 0, "round {round}: the dropped transaction's row is gone");
        }
        let mut tx = db.begin().await.unwrap();
        sql_exec!(tx, |c| sqlx::query(
            "INSERT INTO event_cursors (consumer, last_seq, updated_at) VALUES ('kept', 1, '2026-01-01')"
        )
        .execute(c)
        .await)
        .unwrap();
        tx.commit().await.unwrap();
        let seen: i64 =
            sql!(db, |c| sqlx::query_scalar("SELECT COUNT(*) FROM event_cursors").fetch_one(c).await).unwrap();
        assert_eq!(seen, 1, "a committed transaction on the same connection stays");
        db.close().await;
    }
}

/// A lent connection is not pinged before use, so one cut underneath us (server restart) shows
/// up as a failed statement: that connection must be closed, not lent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_connection_cut_underneath_is_replaced() {
    let test_db = TestDatabase::create(Backend::Postgres).await;
    let db = Db::open_postgres("cut", test_db.url.as_deref().unwrap(), 1, &no_migrations()).await.unwrap();
    let pid: i32 = sql!(db, |c| sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(c).await).unwrap();
    let mut admin = sqlx::PgConnection::connect(&admin_url()).await.unwrap();
    let cut: bool =
        sqlx::query_scalar("SELECT pg_terminate_backend($1)").bind(pid).fetch_one(&mut admin).await.unwrap();
    assert!(cut);
    // The first statement may fail on the dead connection; it must be the only one.
    let first: Result<i32, _> = sql!(db, |c| sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(c).await);
    for _ in 0..3 {
        let now: i32 = sql!(db, |c| sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(c).await)
            .expect("a new connection replaces the cut one");
        assert_ne!(now, pid);
        if let Ok(first) = first {
            assert_eq!(first, now, "one connection, reused");
        }
    }
    db.close().await;
}

// On SQLite a transaction's BEGIN goes with its first statement (one hop instead of two): what
// the caller sees must still be that statement's own result, and a transaction whose first
// statement fails must still end and let go of the database.
emporium_kernel::backend_tests! {
    async fn a_transactions_first_statement_answers_for_itself(backend: Backend) {
        let test_db = TestDatabase::create(backend).await;
        let db = test_db.open("first", &no_migrations()).await;
        for n in 0..5 {
            sql_exec!(db, |c| sqlx::query(
                "INSERT INTO event_cursors (consumer, last_seq, updated_at) VALUES ($1, 0, '2026-01-01')"
            )
            .bind(format!("c{n}"))
            .execute(c)
            .await)
            .unwrap();
        }
        let all = sql_exec!(db, |c| sqlx::query("UPDATE event_cursors SET last_seq = 1").execute(c).await).unwrap();
        assert_eq!(all, 5);
        let mut tx = db.begin().await.unwrap();
        let one = sql_exec!(tx, |c| sqlx::query("UPDATE event_cursors SET last_seq = 2 WHERE consumer = 'c0'")
            .execute(c)
            .await)
        .unwrap();
        assert_eq!(one, 1, "the first statement's own count, not the previous write's");
        tx.commit().await.unwrap();

        let mut tx = db.begin().await.unwrap();
        let seq: Option<i64> =
            sql!(tx, |c| sqlx::query_scalar("SELECT last_seq FROM event_cursors WHERE consumer = 'c0'")
                .fetch_optional(c)
                .await)
            .unwrap();
        assert_eq!(seq, Some(2), "a read as the first statement returns its row");
        let names: Vec<String> =
            sql!(tx, |c| sqlx::query_scalar("SELECT consumer FROM event_cursors ORDER BY consumer").fetch_all(c).await)
                .unwrap();
        assert_eq!(names.len(), 5, "the second statement runs in the transaction begun by the first");
        tx.commit().await.unwrap();

        let mut tx = db.begin().await.unwrap();
        let duplicate = sql_exec!(tx, |c| sqlx::query(
            "INSERT INTO event_cursors (consumer, last_seq, updated_at) VALUES ('c0', 9, '2026-01-01')"
        )
        .execute(c)
        .await);
        assert!(duplicate.is_err(), "c0 exists");
        drop(tx);
        let next = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            let mut tx = db.begin().await?;
            sql_exec!(tx, |c| sqlx::query("UPDATE event_cursors SET last_seq = 3 WHERE consumer = 'c1'")
                .execute(c)
                .await)?;
            tx.commit().await
        })
        .await
        .expect("the failed transaction let go of the database");
        next.unwrap();

        // Transactions that run nothing end cleanly too.
        db.begin().await.unwrap().commit().await.unwrap();
        db.begin().await.unwrap().rollback().await.unwrap();
        db.read().await.unwrap().rollback().await.unwrap();
        let seqs: Vec<i64> =
            sql!(db, |c| sqlx::query_scalar("SELECT last_seq FROM event_cursors ORDER BY consumer").fetch_all(c).await)
                .unwrap();
        assert_eq!(seqs, vec![2, 3, 1, 1, 1]);
    }
}

// A deferred write rides with the transaction's next statement or its commit (on SQLite, one
// script): the statements after it see it, callers see only their own statement's result, a
// rollback drops it, and a deferred write that fails fails the commit and leaves nothing behind.
emporium_kernel::backend_tests! {
    async fn deferred_writes_land_before_what_follows_and_fail_their_transaction(backend: Backend) {
        let test_db = TestDatabase::create(backend).await;
        let db = test_db.open("deferred", &no_migrations()).await;
        let cursor = |name: &str, seq: i64| {
            Write::new("INSERT INTO event_cursors (consumer, last_seq, updated_at) VALUES ($1, $2, $3)")
                .bind(name.to_owned())
                .bind(seq)
                .bind(chrono::Utc::now())
        };
        let mut tx = db.begin().await.unwrap();
        tx.defer(cursor("a", 1)).await.unwrap();
        tx.defer(cursor("b", 2)).await.unwrap();
        let updated = sql_exec!(tx, |c| sqlx::query("UPDATE event_cursors SET last_seq = last_seq + $1 WHERE consumer = $2")
            .bind(10_i64)
            .bind("b")
            .execute(c)
            .await)
        .unwrap();
        assert_eq!(updated, 1, "the statement's own count, not the deferred inserts'");
        tx.defer(cursor("c", 3)).await.unwrap();
        let seen: Option<i64> =
            sql!(tx, |c| sqlx::query_scalar("SELECT last_seq FROM event_cursors WHERE consumer = $1")
                .bind("c")
                .fetch_optional(c)
                .await)
            .unwrap();
        assert_eq!(seen, Some(3), "a read after a deferred write sees it");
        tx.defer(cursor("d", 4)).await.unwrap();
        tx.commit().await.unwrap();

        let mut tx = db.begin().await.unwrap();
        tx.defer(cursor("e", 5)).await.unwrap();
        tx.rollback().await.unwrap();

        // "a" exists: the commit fails, and "f" (deferred before it) goes with it.
        let mut tx = db.begin().await.unwrap();
        tx.defer(cursor("f", 6)).await.unwrap();
        let failed = match tx.defer(cursor("a", 7)).await {
            Err(err) => Err(err),
            Ok(()) => tx.commit().await,
        };
        assert!(failed.is_err_and(|e| emporium_kernel::db::is_unique_violation(&e)));

        let rows: Vec<(String, i64)> = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            sql!(db, |c| sqlx::query_as("SELECT consumer, last_seq FROM event_cursors ORDER BY consumer")
                .fetch_all(c)
                .await)
        })
        .await
        .expect("the failed transaction let go of the database")
        .unwrap();
        let expected: Vec<(String, i64)> =
            [("a", 1), ("b", 12), ("c", 3), ("d", 4)].iter().map(|(n, s)| (n.to_string(), *s)).collect();
        assert_eq!(rows, expected);
        let mut tx = db.begin().await.unwrap();
        tx.defer(cursor("g", 8)).await.unwrap();
        tx.commit().await.expect("the database is free for the next writer");
    }
}

/// The page size only takes when the file is created: a new database must get the small pages
/// the checkout figures were measured with (docs/benchmarks.md), and still be in WAL mode.
#[tokio::test]
async fn a_new_sqlite_database_has_small_pages_and_a_write_ahead_log() {
    let test_db = TestDatabase::create(Backend::Sqlite).await;
    let db = Db::open_sqlite("pages", &test_db.dir.path().join("pages.db"), 1, &no_migrations()).await.unwrap();
    let page_size: i64 = sql!(db, |c| sqlx::query_scalar("PRAGMA page_size").fetch_one(c).await).unwrap();
    let journal: String = sql!(db, |c| sqlx::query_scalar("PRAGMA journal_mode").fetch_one(c).await).unwrap();
    assert_eq!(page_size, 2048);
    assert_eq!(journal, "wal");
    db.close().await;
}

/// On PostgreSQL, deferred writes marked independent share one statement, and a transaction that
/// is nothing but such writes sends that statement alone (no BEGIN, no COMMIT) and is atomic all
/// the same. Writes not marked run one statement each, in a transaction.
#[tokio::test]
async fn postgres_runs_independent_deferred_writes_as_one_statement_without_begin() {
    let test_db = TestDatabase::create(Backend::Postgres).await;
    let db = test_db.open("shared", &no_migrations()).await;
    sql_exec!(db, |c| sqlx::query("CREATE TABLE probe (name TEXT PRIMARY KEY, earlier BIGINT NOT NULL)")
        .execute(c)
        .await)
    .unwrap();
    // Records how many probes it sees: the parts of one statement share a snapshot, so a probe
    // written beside it is not seen.
    let probe =
        |name: &str| Write::new("INSERT INTO probe SELECT $1, (SELECT count(*) FROM probe)").bind(name.to_owned());
    let earlier = |names: &'static [&'static str]| {
        let db = db.clone();
        async move {
            let mut seen = Vec::new();
            for name in names {
                seen.push(
                    sql!(db, |c| sqlx::query_scalar::<_, i64>("SELECT earlier FROM probe WHERE name = $1")
                        .bind(*name)
                        .fetch_one(c)
                        .await)
                    .unwrap(),
                );
            }
            seen
        }
    };
    let trips = || db.round_trips();
    // Commits a transaction of nothing but `writes`; returns its round trips.
    let deferred_only = |writes: Vec<Write>| {
        let db = db.clone();
        async move {
            let before = db.round_trips();
            let mut tx = db.begin().await.unwrap();
            for write in writes {
                tx.defer(write).await.unwrap();
            }
            tx.commit().await.unwrap();
            db.round_trips() - before
        }
    };

    let sent = deferred_only(vec![probe("a").independent(), probe("b").independent()]).await;
    assert_eq!(sent, 1, "one statement, no BEGIN or COMMIT");
    assert_eq!(earlier(&["a", "b"]).await, vec![0, 0]);
    assert_eq!(deferred_only(vec![probe("c"), probe("d")]).await, 4, "BEGIN, a statement each, COMMIT");
    assert_eq!(earlier(&["c", "d"]).await, vec![2, 3]);

    // A statement of the transaction's own begins it; independent writes wait for the end (no
    // statement reads them), others go ahead of it.
    let before = trips();
    let mut tx = db.begin().await.unwrap();
    tx.defer(probe("e").independent()).await.unwrap();
    let one: i32 = sql!(tx, |c| sqlx::query_scalar("SELECT 1").fetch_one(c).await).unwrap();
    assert_eq!(one, 1);
    tx.defer(probe("f").independent()).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(trips() - before, 4, "BEGIN, the read, e and f together, COMMIT");
    assert_eq!(earlier(&["e", "f"]).await, vec![4, 4]);
    let before = trips();
    let mut tx = db.begin().await.unwrap();
    tx.defer(probe("g")).await.unwrap();
    let seen: i64 = sql!(tx, |c| sqlx::query_scalar("SELECT count(*) FROM probe").fetch_one(c).await).unwrap();
    assert_eq!(seen, 7, "a read after a deferred write that is not independent sees it");
    tx.commit().await.unwrap();
    assert_eq!(trips() - before, 4, "BEGIN, g, the read, COMMIT");

    assert_eq!(deferred_only(Vec::new()).await, 0, "a transaction that wrote nothing sends nothing");

    // Sharing a statement, a failing write takes the other with it.
    let mut tx = db.begin().await.unwrap();
    tx.defer(probe("h").independent()).await.unwrap();
    tx.defer(probe("a").independent()).await.unwrap();
    let failed = tx.commit().await;
    assert!(failed.is_err_and(|e| emporium_kernel::db::is_unique_violation(&e)));
    let left: i64 = sql!(db, |c| sqlx::query_scalar("SELECT count(*) FROM probe").fetch_one(c).await).unwrap();
    assert_eq!(left, 7, "nothing of the failed statement stays");
    db.close().await;
}

// `commit_if`: the transaction commits, deferred writes included, only if its guard changes a
// row; otherwise nothing of it stays. On PostgreSQL the guard and the independent deferred
// writes are one statement, and a transaction that ran no statement of its own is only that. On
// SQLite the guard, the writes and the COMMIT are one script; a refusal costs one more.
emporium_kernel::backend_tests! {
    async fn a_transaction_commits_on_its_guard_and_leaves_nothing_when_the_guard_refuses(backend: Backend) {
        let test_db = TestDatabase::create(backend).await;
        let db = test_db.open("guarded", &no_migrations()).await;
        sql_exec!(db, |c| sqlx::query("CREATE TABLE item (id TEXT PRIMARY KEY, status TEXT NOT NULL)").execute(c).await)
            .unwrap();
        sql_exec!(db, |c| sqlx::query("CREATE TABLE note (text TEXT PRIMARY KEY)").execute(c).await).unwrap();
        sql_exec!(db, |c| sqlx::query("INSERT INTO item VALUES ('x', 'new'), ('y', 'new')").execute(c).await).unwrap();
        let advance = |id: &str, from: &str, to: &str| {
            Write::new("UPDATE item SET status = $3 WHERE id = $1 AND status = $2")
                .bind(id.to_owned())
                .bind(from.to_owned())
                .bind(to.to_owned())
        };
        let note = |text: &str| Write::new("INSERT INTO note (text) VALUES ($1)").bind(text.to_owned()).independent();
        let status = |id: &'static str| {
            let db = db.clone();
            async move {
                sql!(db, |c| sqlx::query_scalar::<_, String>("SELECT status FROM item WHERE id = $1")
                    .bind(id)
                    .fetch_one(c)
                    .await)
                .unwrap()
            }
        };
        let notes = || {
            let db = db.clone();
            async move {
                sql!(db, |c| sqlx::query_scalar::<_, String>("SELECT text FROM note ORDER BY text").fetch_all(c).await)
                    .unwrap()
            }
        };
        let postgres = backend == Backend::Postgres;

        // Nothing but deferred writes and the guard.
        let (before, commits) = (db.round_trips(), db.commits());
        let mut tx = db.begin().await.unwrap();
        tx.defer(note("x paid")).await.unwrap();
        tx.defer(note("x paid, again")).await.unwrap();
        assert!(tx.commit_if(advance("x", "new", "paid")).await.unwrap());
        // PostgreSQL: one statement, no BEGIN or COMMIT; SQLite: one script with them.
        assert_eq!(db.round_trips() - before, 1, "one round trip");
        assert_eq!(db.commits() - commits, 1);
        assert_eq!(status("x").await, "paid");
        assert_eq!(notes().await, vec!["x paid", "x paid, again"]);

        let (before, commits) = (db.round_trips(), db.commits());
        let mut tx = db.begin().await.unwrap();
        tx.defer(note("x paid twice")).await.unwrap();
        assert!(!tx.commit_if(advance("x", "new", "paid")).await.unwrap(), "x is no longer new");
        let trips = if postgres { 1 } else { 2 };
        assert_eq!(db.round_trips() - before, trips, "PostgreSQL's refusal costs no ROLLBACK, SQLite's one");
        assert_eq!(db.commits(), commits, "a refusal commits nothing");
        assert_eq!(notes().await.len(), 2, "the refused transaction's writes do not stay");

        // After a statement of its own, the transaction has begun: the guard ends it either way.
        for (from, committed) in [("shipped", false), ("new", true)] {
            let (before, commits) = (db.round_trips(), db.commits());
            let mut tx = db.begin().await.unwrap();
            sql_exec!(tx, |c| sqlx::query("INSERT INTO note (text) VALUES ($1)").bind(from).execute(c).await).unwrap();
            tx.defer(note(&format!("y from {from}"))).await.unwrap();
            assert_eq!(tx.commit_if(advance("y", from, "paid")).await.unwrap(), committed);
            // PostgreSQL: BEGIN, the insert, the guard with the note, COMMIT or ROLLBACK. SQLite:
            // the insert with its BEGIN, the guard with the note and COMMIT, and a refusal's ROLLBACK.
            let trips = if postgres { 4 } else { 3 - u64::from(committed) };
            assert_eq!(db.round_trips() - before, trips);
            assert_eq!(db.commits() - commits, u64::from(committed));
        }
        assert_eq!(status("y").await, "paid");
        assert_eq!(notes().await, vec!["new", "x paid", "x paid, again", "y from new"]);

        // A write that fails is an error, not a refusal, and leaves nothing behind either.
        let mut tx = db.begin().await.unwrap();
        tx.defer(note("x paid")).await.unwrap();
        let failed = tx.commit_if(advance("x", "paid", "shipped")).await;
        assert!(failed.is_err_and(|e| emporium_kernel::db::is_unique_violation(&e)));
        assert_eq!(status("x").await, "paid");
        let mut tx = db.begin().await.unwrap();
        tx.defer(note("after the failure")).await.unwrap();
        assert!(tx.commit_if(advance("x", "paid", "shipped")).await.expect("the database is free for the next writer"));
        assert_eq!(status("x").await, "shipped");
        assert_eq!(notes().await.len(), 5);

        // A write outside a transaction commits by itself; reads commit nothing.
        let commits = db.commits();
        sql_exec!(db, |c| sqlx::query("DELETE FROM note WHERE text = 'new'").execute(c).await).unwrap();
        let mut read = db.read().await.unwrap();
        let left: i64 = sql!(read, |c| sqlx::query_scalar("SELECT count(*) FROM note").fetch_one(c).await).unwrap();
        read.commit().await.unwrap();
        assert_eq!(left, 4);
        assert_eq!(db.commits() - commits, 1);
        db.close().await;
    }
}

/// Two transactions locking two rows in opposite order: PostgreSQL ends one as a deadlock's
/// victim (a `TransientConflict`), and `again_on_conflict` runs that one again to success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadlock_victim_is_named_and_runs_again() {
    use emporium_kernel::db::{TransientConflict, again_on_conflict};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let test_db = TestDatabase::create(Backend::Postgres).await;
    let db = test_db.open("locks", &no_migrations()).await;
    let mut tx = db.begin().await.unwrap();
    sql_exec!(tx, |c| sqlx::query(
        "INSERT INTO event_cursors (consumer, last_seq, updated_at) VALUES ('a', 0, now()), ('b', 0, now())"
    )
    .execute(c)
    .await)
    .unwrap();
    tx.commit().await.unwrap();
    // Each side's first run waits, holding its first row, until the other holds its own.
    let crossed = |attempts: usize| {
        let (db, barrier, runs) =
            (db.clone(), std::sync::Arc::new(tokio::sync::Barrier::new(2)), std::sync::Arc::new(AtomicUsize::new(0)));
        let side = move |first: &'static str, second: &'static str| {
            let (db, barrier, runs) = (db.clone(), barrier.clone(), runs.clone());
            tokio::spawn(async move {
                again_on_conflict(attempts, || async {
                    let run = runs.fetch_add(1, Ordering::SeqCst);
                    let mut tx = db.begin().await?;
                    let bump = "UPDATE event_cursors SET last_seq = last_seq + 1 WHERE consumer = $1";
                    sql_exec!(tx, |c| sqlx::query(bump).bind(first).execute(c).await)?;
                    if run < 2 {
                        barrier.wait().await;
                    }
                    sql_exec!(tx, |c| sqlx::query(bump).bind(second).execute(c).await)?;
                    tx.commit().await
                })
                .await
            })
        };
        (side("a", "b"), side("b", "a"))
    };
    let seqs = || async {
        let rows: Vec<i64> =
            sql!(db, |c| sqlx::query_scalar("SELECT last_seq FROM event_cursors ORDER BY consumer").fetch_all(c).await)
                .unwrap();
        rows
    };

    // One run each: exactly one side fails, and it says why.
    let (left, right) = crossed(1);
    let outcomes = [left.await.unwrap(), right.await.unwrap()];
    let failed: Vec<_> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    assert_eq!(failed.len(), 1, "{outcomes:?}");
    assert!(failed[0].is_transient_conflict(), "{:?}", failed[0]);
    assert_eq!(seqs().await, [1, 1], "the victim was rolled back whole");

    // Allowed another run, the victim succeeds too.
    let (left, right) = crossed(3);
    let (left, right) = (left.await.unwrap(), right.await.unwrap());
    assert!(left.is_ok() && right.is_ok(), "{left:?} {right:?}");
    assert_eq!(seqs().await, [3, 3]);
}

/// SQLite group commit (kernel `db::group`): writers queued behind each other share a COMMIT,
/// each one's rollback, failure or refused guard is its own, and a commit has returned only once
/// its row is on disk and visible to a fresh reader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_writers_in_one_group_commit_or_fail_alone() {
    let test_db = TestDatabase::create(Backend::Sqlite).await;
    let db = test_db.open("grouped", &no_migrations()).await;
    sql_exec!(db, |c| sqlx::query(
        "INSERT INTO event_cursors (consumer, last_seq, updated_at) VALUES ('guard-row', 0, '')"
    )
    .execute(c)
    .await)
    .unwrap();
    let commits_before = db.group_commits().expect("SQLite counts its COMMITs");
    let insert = |name: String| {
        Write::new("INSERT INTO event_cursors (consumer, last_seq, updated_at) VALUES ($1, 0, '')").bind(name)
    };
    let tasks: Vec<_> = (0..80)
        .map(|i| {
            let db = db.clone();
            tokio::spawn(async move {
                let mut tx = db.begin().await?;
                let kept = match i % 4 {
                    // Commits its own row.
                    0 => {
                        tx.defer(insert(format!("kept-{i}"))).await?;
                        tx.commit().await?;
                        format!("kept-{i}")
                    }
                    // Writes, then rolls back: only its own row goes.
                    1 => {
                        sql_exec!(tx, |c| sqlx::query(
                            "INSERT INTO event_cursors (consumer, last_seq, updated_at) VALUES ($1, 0, '')"
                        )
                        .bind(format!("dropped-{i}"))
                        .execute(c)
                        .await)?;
                        tx.rollback().await?;
                        return Ok(true);
                    }
                    // Its deferred write breaks the primary key at commit: it fails, alone.
                    2 => {
                        tx.defer(insert(format!("twice-{i}"))).await?;
                        tx.defer(insert(format!("twice-{i}"))).await?;
                        return Ok(tx.commit().await.is_err());
                    }
                    // A guarded commit: half of them name no row and are refused, writes and all.
                    _ => {
                        let passes = i % 8 == 7;
                        tx.defer(insert(format!("guarded-{i}"))).await?;
                        let guard = Write::new("UPDATE event_cursors SET last_seq = last_seq + 1 WHERE consumer = $1")
                            .bind(if passes { "guard-row" } else { "no-such-row" });
                        if tx.commit_if(guard).await? != passes {
                            return Ok(false);
                        }
                        if !passes {
                            return Ok(true);
                        }
                        format!("guarded-{i}")
                    }
                };
                // A reader of its own, not the writer's connection: the commit is visible.
                let seen: i64 =
                    sql!(db, |c| sqlx::query_scalar("SELECT COUNT(*) FROM event_cursors WHERE consumer = $1")
                        .bind(kept)
                        .fetch_one(c)
                        .await)?;
                Ok::<_, sqlx::Error>(seen == 1)
            })
        })
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        assert!(task.await.unwrap().expect("no transaction fails but the broken ones"), "task {i}");
    }
    let names: Vec<String> =
        sql!(db, |c| sqlx::query_scalar("SELECT consumer FROM event_cursors ORDER BY consumer").fetch_all(c).await)
            .unwrap();
    let kept = (0..80).filter(|i| i % 4 == 0).map(|i| format!("kept-{i}"));
    let guarded = (0..80).filter(|i| i % 8 == 7).map(|i| format!("guarded-{i}"));
    let mut expected: Vec<String> = kept.chain(guarded).chain(["guard-row".to_owned()]).collect();
    expected.sort();
    assert_eq!(names, expected, "exactly the committed rows, none of the rolled back, failed or refused ones");
    let guard_row: i64 =
        sql!(db, |c| sqlx::query_scalar("SELECT last_seq FROM event_cursors WHERE consumer = 'guard-row'")
            .fetch_one(c)
            .await)
        .unwrap();
    assert_eq!(guard_row, 10, "each passing guard changed its row once");
    let commits = db.group_commits().unwrap() - commits_before;
    assert!(commits >= 1, "the committed rows were committed");
    assert!(commits < 30, "80 writers queued at once share COMMITs: {commits} for 30 committed transactions");
    // Reopened from the file: what was committed is on disk.
    db.close().await;
    let reopened = test_db.open("grouped", &no_migrations()).await;
    let on_disk: i64 =
        sql!(reopened, |c| sqlx::query_scalar("SELECT COUNT(*) FROM event_cursors").fetch_one(c).await).unwrap();
    assert_eq!(on_disk, 31);
}

/// SQLite checkpoints run on a task of their own (kernel `db::checkpoint`), not in the commit
/// that fills the WAL: the writer's own automatic checkpoint is set to a backstop mark far above
/// what this test writes, yet its rows reach the database file within a moment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_checkpoints_run_beside_the_writer() {
    let test_db = TestDatabase::create(Backend::Sqlite).await;
    let db = test_db.open("checkpointed", &no_migrations()).await;
    let mut settings = emporium_kernel::config::Settings::default();
    test_db.apply(&mut settings);
    let file = settings.data_dir.join("checkpointed.db");
    let mark: i64 = sql!(db, |c| sqlx::query_scalar("PRAGMA wal_autocheckpoint").fetch_one(c).await).unwrap();
    assert_eq!(mark, 10_000, "the writer checkpoints itself only past the backstop");
    let (size_before, checkpoints_before) = (std::fs::metadata(&file).unwrap().len(), db.checkpoints().unwrap());
    // About 400 KiB (some 200 pages): far below the backstop's 10,000 pages.
    for i in 0..100 {
        sql_exec!(db, |c| sqlx::query("INSERT INTO event_cursors (consumer, last_seq, updated_at) VALUES ($1, 0, '')")
            .bind(format!("{i}-{}", "x".repeat(4096)))
            .execute(c)
            .await)
        .unwrap();
    }
    // Only a checkpoint writes pages into the database file (the writes went to the WAL).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::fs::metadata(&file).unwrap().len() < size_before + 400_000 {
        assert!(std::time::Instant::now() < deadline, "the rows did not reach the database file within 5 s");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(db.checkpoints().unwrap() > checkpoints_before, "the task's checkpoint copied them");
    db.close().await;
}
