//! `emporium-bench reserve`: stock reservations per second through the inventory service, on
//! SQLite and PostgreSQL, spread over many products and on one hot product, next to the same
//! row updates done raw (a conditional UPDATE per row in one transaction, no ledger, no events)
//! on the same database, and pgbench's simple-update for PostgreSQL.

use crate::measure::{Stats, closed_loop};
use anyhow::Context;
use emporium_inventory::InventoryService;
use emporium_inventory::api::ReserveRequest;
use emporium_inventory::model::{LineRequest, NearestThenMostStock, Quantity};
use emporium_inventory::service::{Error as InventoryError, NewWarehouse};
use emporium_kernel::db::Db;
use emporium_kernel::geo::Destination;
use emporium_kernel::geo::GeoPoint;
use emporium_kernel::ids::{ProductId, WarehouseId};
use emporium_kernel::sql_exec;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub struct ReserveBenchOptions {
    pub seconds: u64,
    pub concurrency: usize,
    pub products: usize,
    /// PostgreSQL server for the PostgreSQL run (its own database); `None` skips it.
    pub pg_url: Option<String>,
}

/// The most one intake may book; far more than any run reserves.
const UNITS: i64 = emporium_inventory::model::MAX_QUANTITY;

pub async fn run_reserve_bench(options: ReserveBenchOptions) -> anyhow::Result<()> {
    println!(
        "# Reservation benchmark: {} s per run, {} concurrent clients, {} products\n",
        options.seconds, options.concurrency, options.products
    );
    let dir = std::env::temp_dir().join(format!("emporium-bench-reserve-{}", std::process::id()));
    let sqlite = Db::open_sqlite("inventory", &dir.join("inventory.db"), 16, &emporium_inventory::migrations()).await?;
    bench_backend("SQLite", sqlite.clone(), &options).await?;
    sqlite.close().await;
    std::fs::remove_dir_all(&dir).ok();

    if let Some(url) = &options.pg_url {
        reset_schemas(url, &["inventory"]).await?;
        let pg = Db::open_postgres("inventory", url, 16, &emporium_inventory::migrations()).await?;
        bench_backend("PostgreSQL", pg.clone(), &options).await?;
        pg.close().await;
        match pgbench(url, options.concurrency, options.seconds) {
            Ok(tps) => println!("| pgbench simple-update (physical baseline) | {tps:.0} | | | | | |\n"),
            Err(err) => println!("pgbench baseline skipped: {err:#}\n"),
        }
    }
    Ok(())
}

async fn bench_backend(name: &str, db: Db, options: &ReserveBenchOptions) -> anyhow::Result<()> {
    let service = Arc::new(InventoryService::new(
        db.clone(),
        emporium_kernel::clock::system(),
        None,
        Arc::new(NearestThenMostStock),
        Duration::from_secs(600),
    ));
    let warehouses = two_warehouses(&service).await?;
    let products: Arc<Vec<ProductId>> = Arc::new((0..options.products).map(|_| ProductId::new()).collect());
    for (i, product) in products.iter().enumerate() {
        service.intake("bench", warehouses[i % 2], *product, UNITS, None).await?;
    }
    let hot = ProductId::new();
    service.intake("bench", warehouses[0], hot, UNITS, None).await?;
    let duration = Duration::from_secs(options.seconds);
    let sequence = Arc::new(AtomicU64::new(0));

    // Two product indices per operation, spread over the catalog.
    let n = products.len();
    let pick = move |i: usize| (i % n, (i * 31 + 7) % n);
    let reserve = {
        let service = service.clone();
        move |lines: Vec<ProductId>| {
            let service = service.clone();
            let sequence = sequence.clone();
            async move {
                let reference = format!("bench-{}", sequence.fetch_add(1, Ordering::Relaxed));
                let lines = lines
                    .into_iter()
                    .map(|product_id| LineRequest {
                        product_id,
                        quantity: Quantity::parse(1).expect("1 is a quantity"),
                    })
                    .collect();
                let req = ReserveRequest { reference, lines, destination: Destination::default(), ttl: None };
                match service.reserve("bench", req).await {
                    Ok(_) => true,
                    Err(InventoryError::OutOfStock(_)) => false,
                    Err(err) => {
                        tracing::warn!(error = %err, "reservation failed");
                        false
                    }
                }
            }
        }
    };
    let spread = {
        let reserve = reserve.clone();
        let products = products.clone();
        closed_loop(options.concurrency, duration, move |i| {
            let (a, b) = pick(i);
            reserve(if a == b { vec![products[a]] } else { vec![products[a], products[b]] })
        })
        .await?
    };
    let hot_run = closed_loop(options.concurrency, duration, move |_| reserve(vec![hot])).await?;

    let raw_spread = {
        let db = db.clone();
        let products = products.clone();
        let warehouses = warehouses.clone();
        closed_loop(options.concurrency, duration, move |i| {
            let (a, b) = pick(i);
            let mut rows = vec![(products[a], warehouses[a % 2])];
            if a != b {
                rows.push((products[b], warehouses[b % 2]));
            }
            rows.sort();
            raw_update(db.clone(), rows)
        })
        .await?
    };
    let raw_hot = {
        let db = db.clone();
        let row = (hot, warehouses[0]);
        closed_loop(options.concurrency, duration, move |_| raw_update(db.clone(), vec![row])).await?
    };

    println!("## {name}\n");
    println!("| run | ops/s | p50 ms | p95 ms | p99 ms | ops | refused |");
    println!("|---|---|---|---|---|---|---|");
    println!("{}", spread.row("reserve, 1–2 lines over many products"));
    println!("{}", raw_spread.row("raw conditional UPDATE, same rows"));
    println!("{}", hot_run.row("reserve, one hot product"));
    println!("{}", raw_hot.row("raw conditional UPDATE, hot row"));
    println!();
    println!(
        "ratio reserve / raw: spread {:.2}×, hot {:.2}×\n",
        ratio(&spread, &raw_spread),
        ratio(&hot_run, &raw_hot)
    );
    Ok(())
}

/// Berlin and Hamburg, each delivering 500 km around (so both cover either city).
pub(crate) async fn two_warehouses(service: &InventoryService) -> anyhow::Result<Vec<WarehouseId>> {
    let mut warehouses = Vec::new();
    for (city, lat, lon) in [("Berlin", 52.52, 13.405), ("Hamburg", 53.55, 9.99)] {
        let w = service
            .create_warehouse(NewWarehouse {
                name: city.into(),
                address: city.into(),
                location: GeoPoint::new(lat, lon).map_err(anyhow::Error::msg)?,
                delivery_radius_km: 500.0,
                postal_prefixes: vec![],
            })
            .await?;
        warehouses.push(w.id);
    }
    Ok(warehouses)
}

fn ratio(a: &Stats, b: &Stats) -> f64 {
    a.qps / b.qps.max(1e-9)
}

/// The physical floor of a reservation: the same conditional UPDATEs in one transaction.
async fn raw_update(db: Db, rows: Vec<(ProductId, WarehouseId)>) -> bool {
    let result = async {
        let mut tx = db.begin().await?;
        for (product, warehouse) in rows {
            let n = sql_exec!(tx, |c| sqlx::query(
                "UPDATE stock SET available = available - 1, reserved = reserved + 1
                 WHERE product_id = $1 AND warehouse_id = $2 AND available >= 1"
            )
            .bind(product)
            .bind(warehouse)
            .execute(c)
            .await)?;
            if n == 0 {
                return Ok::<bool, sqlx::Error>(false);
            }
        }
        tx.commit().await?;
        Ok(true)
    }
    .await;
    result.unwrap_or(false)
}

/// Drops `schemas`, so every run starts from the same empty tables (opening the services
/// creates the database if it does not exist yet).
pub(crate) async fn reset_schemas(url: &str, schemas: &[&str]) -> anyhow::Result<()> {
    use sqlx::Connection;
    let Ok(mut conn) = sqlx::PgConnection::connect(url).await else { return Ok(()) };
    for schema in schemas {
        let statement = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
        sqlx::query(sqlx::AssertSqlSafe(statement)).execute(&mut conn).await.context("resetting the schemas")?;
    }
    conn.close().await.ok();
    Ok(())
}

/// pgbench's built-in simple-update script with `clients` clients, on the same server.
pub(crate) fn pgbench(url: &str, clients: usize, seconds: u64) -> anyhow::Result<f64> {
    let run = |args: &[&str]| -> anyhow::Result<String> {
        let output = std::process::Command::new("pgbench")
            .args(args)
            .arg(url)
            .output()
            .context("running pgbench (apt-get install postgresql-client)")?;
        anyhow::ensure!(output.status.success(), "pgbench failed: {}", String::from_utf8_lossy(&output.stderr));
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    };
    run(&["-i", "-q", "-s", "10"])?;
    let clients = clients.to_string();
    let seconds = seconds.to_string();
    let out = run(&["-n", "-b", "simple-update", "-c", &clients, "-j", "2", "-T", &seconds])?;
    out.lines()
        .find_map(|l| l.strip_prefix("tps = ").and_then(|rest| rest.split_whitespace().next()?.parse().ok()))
        .context("pgbench printed no tps line")
}
