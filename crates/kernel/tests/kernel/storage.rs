//! The storage layer's contract, the same on both backends: transactions are closures that
//! commit whole or not at all, values read back as written (and as the older driver wrote them),
//! refusals are ordinary values, and migrations agree with sqlx's table.

use chrono::{DateTime, Utc};
use emporium_kernel::backend_tests;
use emporium_kernel::db::{Db, ServiceMigrations};
use emporium_kernel::storage::{self, Backend as Kind, Database};
use emporium_kernel::testing::TestDatabase;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The `things` table, one column per kind of value.
fn migrations() -> ServiceMigrations {
    let sqlite = "CREATE TABLE things (id BLOB PRIMARY KEY, n BIGINT NOT NULL, name TEXT, at TEXT, flag BOOLEAN,
                  doc TEXT, score DOUBLE PRECISION, other BLOB, status TEXT NOT NULL DEFAULT 'new')";
    let postgres =
        "CREATE TABLE things (id UUID PRIMARY KEY, n BIGINT NOT NULL, name TEXT, at TIMESTAMPTZ, flag BOOLEAN,
                    doc JSONB, score DOUBLE PRECISION, other UUID, status TEXT NOT NULL DEFAULT 'new')";
    let one = |sql: &'static str| {
        use sqlx::SqlSafeStr;
        Migrator::with_migrations(vec![Migration::new(
            1,
            "things".into(),
            MigrationType::Simple,
            sql.into_sql_str(),
            false,
        )])
    };
    ServiceMigrations { sqlite: one(sqlite), postgres: one(postgres) }
}

async fn open(test: &TestDatabase) -> Database {
    match &test.url {
        Some(url) => Database::open_postgres(url, "things", 4, &migrations()).await,
        None => Database::open_sqlite(&test.dir.path().join("things.db"), 2, &migrations()).await,
    }
    .expect("open the storage layer")
}

#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Storage(#[from] storage::Error),
    #[error("refused")]
    Refused,
}

async fn count(db: &Database) -> i64 {
    db.read(|tx| tx.query_one("SELECT COUNT(*) FROM things", &[])?.get::<i64>(0)).await.unwrap()
}

fn insert(tx: &mut storage::Tx<'_>, n: i64) -> storage::Result<uuid::Uuid> {
    let id = uuid::Uuid::now_v7();
    tx.execute("INSERT INTO things (id, n) VALUES ($1, $2)", &[&id, &n])?;
    Ok(id)
}

backend_tests! {
    async fn concurrent_writes_commit_alone_or_roll_back_alone(backend: Backend) {
        let test = TestDatabase::create(backend).await;
        let db = open(&test).await;
        // Every fifth fails after writing: its row must vanish and no other's with it.
        let writes = (0..50i64).map(|n| {
            let db = db.clone();
            tokio::spawn(async move {
                db.write(move |tx| {
                    insert(tx, n)?;
                    if n % 5 == 0 { Err(Failure::Refused) } else { Ok(n) }
                })
                .await
            })
        });
        let mut committed = Vec::new();
        for write in writes {
            match write.await.unwrap() {
                Ok(n) => committed.push(n),
                Err(Failure::Refused) => {}
                Err(other) => panic!("{other}"),
            }
        }
        assert_eq!(committed.len(), 40);
        let stored: Vec<i64> = db
            .read(|tx| tx.query("SELECT n FROM things ORDER BY n", &[])?.iter().map(|r| r.get::<i64>(0)).collect())
            .await
            .unwrap();
        committed.sort();
        assert_eq!(stored, committed);
    }

    async fn values_read_back_as_written(backend: Backend) {
        let test = TestDatabase::create(backend).await;
        let db = open(&test).await;
        let at: DateTime<Utc> = "2026-12-07T05:20:00.123456Z".parse().unwrap();
        let doc = serde_json::json!({"lines": [1, 2], "note": "ok"});
        let id = db
            .write(move |tx| -> storage::Result<uuid::Uuid> {
                let id = uuid::Uuid::now_v7();
                let none: Option<uuid::Uuid> = None;
                tx.execute(
                    "INSERT INTO things (id, n, name, at, flag, doc, score, other) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    &[&id, &i64::MAX, &"naïve ☕", &at, &true, &doc, &0.25f64, &none],
                )?;
                Ok(id)
            })
            .await
            .unwrap();
        let row = db
            .read(move |tx| tx.query_one("SELECT id, n, name, at, flag, doc, score, other FROM things WHERE id = $1", &[&id]))
            .await
            .unwrap();
        assert_eq!(row.get::<uuid::Uuid>(0).unwrap(), id);
        assert_eq!(row.get::<i64>(1).unwrap(), i64::MAX);
        assert_eq!(row.get::<String>(2).unwrap(), "naïve ☕");
        assert_eq!(row.get::<DateTime<Utc>>(3).unwrap(), at);
        assert!(row.get::<bool>(4).unwrap());
        assert_eq!(row.get::<serde_json::Value>(5).unwrap()["lines"][1], 2);
        assert_eq!(row.get::<f64>(6).unwrap(), 0.25);
        assert_eq!(row.get::<Option<uuid::Uuid>>(7).unwrap(), None, "a NULL of a typed column");
        assert!(row.get::<i64>(2).is_err(), "text is not read as a number");
        // Timestamps compare in SQL as they do in Rust.
        let later = at + chrono::Duration::seconds(1);
        let before: i64 = db
            .read(move |tx| tx.query_one("SELECT COUNT(*) FROM things WHERE at < $1", &[&later])?.get::<i64>(0))
            .await
            .unwrap();
        assert_eq!(before, 1);
    }

    async fn a_refused_condition_undoes_the_whole_transaction(backend: Backend) {
        let test = TestDatabase::create(backend).await;
        let db = open(&test).await;
        let id = db.write(|tx| insert(tx, 1)).await.unwrap();
        // Move it once; the second move finds it moved and refuses, taking its insert back.
        let step = |db: Database| async move {
            db.write(move |tx| {
                insert(tx, 2)?;
                let moved = tx.execute("UPDATE things SET status = 'paid' WHERE id = $1 AND status = 'new'", &[&id])?;
                if moved == 0 { Err(Failure::Refused) } else { Ok(()) }
            })
            .await
        };
        step(db.clone()).await.unwrap();
        assert!(matches!(step(db.clone()).await, Err(Failure::Refused)));
        assert_eq!(count(&db).await, 2, "the first's insert stays, the refused one's is gone");
        let dup = db.write(move |tx| tx.execute("INSERT INTO things (id, n) VALUES ($1, 3)", &[&id])).await;
        assert!(dup.unwrap_err().is_unique_violation());
    }

    async fn a_panicking_transaction_leaves_the_database_working(backend: Backend) {
        let test = TestDatabase::create(backend).await;
        let db = open(&test).await;
        let panicked = db
            .write(|tx| -> storage::Result<()> {
                insert(tx, 1)?;
                panic!("a bug in a transaction");
            })
            .await;
        assert!(matches!(panicked, Err(storage::Error::NotRun | storage::Error::Panicked)), "{panicked:?}");
        let read = db.read(|tx| -> storage::Result<()> { panic!("a bug in a read {}", tx.backend() == Kind::Sqlite) }).await;
        assert!(matches!(read, Err(storage::Error::Panicked)), "{read:?}");
        db.write(|tx| insert(tx, 2)).await.unwrap();
        assert_eq!(count(&db).await, 1, "nothing of the panicking one stayed");
        for _ in 0..4 {
            // Every reading connection still works.
            assert_eq!(count(&db).await, 1);
        }
    }

    async fn a_caller_that_stops_waiting_changes_nothing_for_the_others(backend: Backend) {
        let test = TestDatabase::create(backend).await;
        let db = open(&test).await;
        let started = Arc::new(AtomicUsize::new(0));
        for _ in 0..8 {
            let db = db.clone();
            let started = started.clone();
            let slow = tokio::spawn(async move {
                db.read(move |tx| {
                    started.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    tx.query_one("SELECT COUNT(*) FROM things", &[])?.get::<i64>(0)
                })
                .await
            });
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            slow.abort();
        }
        // The readers given up on finished on their own and gave their connections back.
        for n in 0..10 {
            db.write(move |tx| insert(tx, n)).await.unwrap();
            assert_eq!(count(&db).await, n + 1);
        }
    }

    async fn migrations_agree_with_the_older_driver(backend: Backend) {
        let test = TestDatabase::create(backend).await;
        // Migrated by sqlx first: this layer finds nothing to do, and the table it made works.
        let old: Db = test.open("things", &migrations()).await;
        old.close().await;
        let db = open(&test).await;
        db.write(|tx| insert(tx, 1)).await.unwrap();
        assert_eq!(count(&db).await, 1);
        let versions: Vec<i64> = db
            .read(|tx| tx.query("SELECT version FROM _sqlx_migrations", &[])?.iter().map(|r| r.get::<i64>(0)).collect())
            .await
            .unwrap();
        assert_eq!(versions, [1], "applied once");
        // And the other way round: what this layer migrates, sqlx finds current.
        let fresh = TestDatabase::create(backend).await;
        let _ = open(&fresh).await;
        fresh.open("things", &migrations()).await.close().await;
    }
}

#[tokio::test]
async fn sqlite_binds_placeholders_by_their_number_and_refuses_a_mismatch() {
    let test = TestDatabase::create(emporium_kernel::testing::Backend::Sqlite).await;
    let db = open(&test).await;
    // `$2` first: still bound to the second value.
    let id = uuid::Uuid::now_v7();
    let sql = "INSERT INTO things (n, id, name) VALUES ($2, $1, 'n' || $2)";
    db.write(move |tx| tx.execute(sql, &[&id, &7i64])).await.unwrap();
    let row = db.read(move |tx| tx.query_one("SELECT n, name FROM things WHERE id = $1", &[&id])).await.unwrap();
    assert_eq!((row.get::<i64>(0).unwrap(), row.get::<String>(1).unwrap()), (7, "n7".to_owned()));
    let short = db.write(|tx| tx.execute("INSERT INTO things (id, n) VALUES ($1, $2)", &[&uuid::Uuid::now_v7()])).await;
    assert!(matches!(short, Err(storage::Error::Placeholders(2))), "{short:?}");
    let gap =
        db.write(|tx| tx.execute("INSERT INTO things (id, n) VALUES ($1, $3)", &[&uuid::Uuid::now_v7(), &1i64])).await;
    assert!(matches!(gap, Err(storage::Error::Placeholders(2))), "{gap:?}");
}
