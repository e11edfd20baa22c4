//! `emporium-bench storage`: one checkout-shaped write transaction through the older layer
//! (`kernel::db`) and through the storage layer (`kernel::storage`), on SQLite and PostgreSQL,
//! in the same run. The transaction is what a stock hold does: a conditional update of one of
//! `rows` counter rows, an inserted line, an outbox event; it commits whole.

use crate::measure::{CpuTimes, Stats, closed_loop};
use emporium_kernel::db::{Db, ServiceMigrations};
use emporium_kernel::events::DomainEvent;
use emporium_kernel::storage::{self, Database};
use emporium_kernel::{events, sql_exec};
use serde::{Deserialize, Serialize};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub struct StorageBenchOptions {
    pub seconds: u64,
    pub concurrency: usize,
    /// Counter rows the writes spread over.
    pub rows: i64,
    pub pg_url: Option<String>,
}

const SERVICE: &str = "storage_bench";

fn migrations() -> ServiceMigrations {
    let one = |sql: &'static str| {
        use sqlx::SqlSafeStr;
        Migrator::with_migrations(vec![Migration::new(
            1,
            "bench".into(),
            MigrationType::Simple,
            sql.into_sql_str(),
            false,
        )])
    };
    ServiceMigrations {
        sqlite: one("CREATE TABLE counters (id BIGINT PRIMARY KEY, n BIGINT NOT NULL CHECK (n >= 0));
             CREATE TABLE lines (id BLOB PRIMARY KEY, counter BIGINT NOT NULL, at TEXT NOT NULL);"),
        postgres: one("CREATE TABLE counters (id BIGINT PRIMARY KEY, n BIGINT NOT NULL CHECK (n >= 0));
             CREATE TABLE lines (id UUID PRIMARY KEY, counter BIGINT NOT NULL, at TIMESTAMPTZ NOT NULL);"),
    }
}

#[derive(Serialize, Deserialize)]
struct Held {
    line: uuid::Uuid,
    counter: i64,
}

impl DomainEvent for Held {
    const TYPE: &'static str = "BenchHeld";
    fn aggregate_id(&self) -> String {
        self.counter.to_string()
    }
}

pub async fn run_storage_bench(options: StorageBenchOptions) -> anyhow::Result<()> {
    println!(
        "# Storage layers: one write transaction (conditional update, insert, outbox event), {} s, {} writers, {} rows\n",
        options.seconds, options.concurrency, options.rows
    );
    println!(
        "| backend | layer | writes/s | p50 ms | p99 ms | CPU ms/write | round trips/write | ratio to kernel::db |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let dir = tempfile::tempdir()?;
    run_backend("SQLite", &options, Target::Sqlite(dir.path())).await?;
    if let Some(url) = &options.pg_url {
        run_backend("PostgreSQL", &options, Target::Postgres(url)).await?;
    }
    Ok(())
}

enum Target<'a> {
    Sqlite(&'a Path),
    Postgres(&'a str),
}

async fn run_backend(name: &str, options: &StorageBenchOptions, target: Target<'_>) -> anyhow::Result<()> {
    let connections = options.concurrency.max(2);
    let (db, database) = match target {
        Target::Sqlite(dir) => {
            let path = dir.join(format!("{SERVICE}.db"));
            let db = Db::open_sqlite(SERVICE, &path, 2, &migrations()).await?;
            (db, Database::open_sqlite(&path, 2, &migrations()).await?)
        }
        Target::Postgres(url) => {
            crate::reserve::reset_schemas(url, &[SERVICE]).await?;
            let db = Db::open_postgres(SERVICE, url, connections as u32, &migrations()).await?;
            (db, Database::open_postgres(url, SERVICE, connections, &migrations()).await?)
        }
    };
    let rows = options.rows.max(1);
    database
        .write(move |tx| -> storage::Result<()> {
            for id in 0..rows {
                tx.execute("INSERT INTO counters (id, n) VALUES ($1, 0) ON CONFLICT (id) DO NOTHING", &[&id])?;
            }
            Ok(())
        })
        .await?;
    let seconds = Duration::from_secs(options.seconds.max(1));

    let older = db.clone();
    let (old, old_cpu, old_trips) = measure(options.concurrency, seconds, move |i| {
        let db = older.clone();
        async move { old_write(&db, i as i64 % rows).await.is_ok() }
    })
    .await?;
    let newer = Arc::new(database);
    let (new, new_cpu, new_trips) = measure(options.concurrency, seconds, move |i| {
        let database = newer.clone();
        async move { new_write(&database, i as i64 % rows).await.is_ok() }
    })
    .await?;
    let ms = |d: Duration| format!("{:.2}", d.as_secs_f64() * 1000.0);
    for (layer, stats, cpu, trips, ratio) in [
        ("kernel::db (sqlx)", &old, old_cpu, old_trips, 1.0),
        ("kernel::storage", &new, new_cpu, new_trips, new.qps / old.qps.max(1e-9)),
    ] {
        println!(
            "| {name} | {layer} | {:.0} | {} | {} | {:.3} | {:.1} | {ratio:.2} × |",
            stats.qps,
            ms(stats.p50),
            ms(stats.p99),
            cpu,
            trips,
        );
        if stats.errors > 0 {
            println!("\n{layer} on {name}: {} writes failed", stats.errors);
        }
    }
    db.close().await;
    Ok(())
}

/// Runs the closed loop; answers its stats, the process's CPU milliseconds per write and the
/// round trips per write (as `kernel::db::round_trips` counts them).
async fn measure<F, Fut>(concurrency: usize, seconds: Duration, write: F) -> anyhow::Result<(Stats, f64, f64)>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let (cpu, trips) = (CpuTimes::now(), emporium_kernel::db::round_trips());
    let stats = closed_loop(concurrency, seconds, write).await?;
    let writes = stats.requests.max(1) as f64;
    let cpu_ms = CpuTimes::now().since(&cpu).own * 1000.0 / writes;
    let trips = (emporium_kernel::db::round_trips() - trips) as f64 / writes;
    Ok((stats, cpu_ms, trips))
}

async fn old_write(db: &Db, counter: i64) -> anyhow::Result<()> {
    let line = uuid::Uuid::now_v7();
    let mut tx = db.begin().await?;
    let moved = sql_exec!(tx, |c| sqlx::query("UPDATE counters SET n = n + 1 WHERE id = $1 AND n >= 0")
        .bind(counter)
        .execute(c)
        .await)?;
    anyhow::ensure!(moved == 1, "the counter refused");
    sql_exec!(tx, |c| sqlx::query("INSERT INTO lines (id, counter, at) VALUES ($1, $2, $3)")
        .bind(line)
        .bind(counter)
        .bind(chrono::Utc::now())
        .execute(c)
        .await)?;
    events::append(&mut tx, &Held { line, counter }).await?;
    tx.commit().await?;
    Ok(())
}

async fn new_write(database: &Database, counter: i64) -> anyhow::Result<()> {
    let line = uuid::Uuid::now_v7();
    let now = chrono::Utc::now();
    database
        .write(move |tx| -> anyhow::Result<()> {
            let moved = tx.execute("UPDATE counters SET n = n + 1 WHERE id = $1 AND n >= 0", &[&counter])?;
            anyhow::ensure!(moved == 1, "the counter refused");
            tx.execute("INSERT INTO lines (id, counter, at) VALUES ($1, $2, $3)", &[&line, &counter, &now])?;
            events::append_one(tx, &Held { line, counter })?;
            Ok(())
        })
        .await
}
