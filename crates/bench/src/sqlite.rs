//! SQLite's own baselines for `emporium-bench checkout`: what this machine's SQLite does with no
//! application around it, measured in the same run as the app, as pgbench is for PostgreSQL.
//!
//! - **simple-update**: pgbench's `simple-update` script (update an account, read its balance,
//!   append to the history; one transaction) on one SQLite file, from one thread: SQLite has one
//!   writer per file, so more threads would only queue for it.
//! - **a checkout's writes, bare**: the commits a checkout cycle makes in the app (two cart adds,
//!   the order, the hold, PAYMENT_PENDING, the payment, the sandbox charge, its outcome,
//!   CONFIRMED, the reservation's commit, the cart emptied: 11 commits in four files, as the app's
//!   bench counts them), each with the statements it needs and an outbox row where the app
//!   appends an event, and nothing else: no events delivered, no projections, no re-pricing
//!   reads, no async runtime. It is a ceiling for any implementation that makes a checkout's
//!   steps durable one by one, each with a `COMMIT` of its own, in a file per service as
//!   DESIGN.md asks (the app's group commit shares `COMMIT`s between concurrent checkouts, which
//!   this does not), not a target the app can reach.
//!
//! Both use rusqlite, which runs SQLite on the calling thread, so they show SQLite's and the
//! machine's cost alone (sqlx hands each statement to a thread of its own); it links the same
//! SQLite build as the app (one `libsqlite3-sys`). The files get the app's settings: 2 KiB pages,
//! WAL, `synchronous = NORMAL`, and a thread checkpointing every 200 ms off the writers' path.

use crate::measure::{CpuTimes, Stats};
use rusqlite::{Connection, params};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A baseline's result: its latencies and the CPU this process spent per operation.
pub(crate) struct Baseline {
    pub(crate) stats: Stats,
    pub(crate) cpu_ms_per_op: f64,
}

/// pgbench's scale 10, as `reserve::pgbench` initialises it.
pub(crate) const PGBENCH_ACCOUNTS: i64 = 1_000_000;

/// pgbench's `simple-update` on one SQLite file with `accounts` accounts, one thread, for
/// `duration`.
pub(crate) fn simple_update(dir: &Path, accounts: i64, duration: Duration) -> anyhow::Result<Baseline> {
    let path = dir.join("pgbench.db");
    let mut conn = open(&path)?;
    conn.execute_batch(
        "CREATE TABLE pgbench_accounts (aid INTEGER PRIMARY KEY, bid INTEGER NOT NULL, abalance INTEGER NOT NULL, \
             filler TEXT NOT NULL);
         CREATE TABLE pgbench_history (tid INTEGER, bid INTEGER, aid INTEGER, delta INTEGER, mtime TEXT, filler TEXT);",
    )?;
    let load = conn.transaction()?;
    {
        let mut insert = load.prepare("INSERT INTO pgbench_accounts VALUES (?1, ?2, 0, ?3)")?;
        let filler = " ".repeat(84);
        for aid in 1..=accounts {
            insert.execute(params![aid, (aid - 1) / 100_000 + 1, filler])?;
        }
    }
    load.commit()?;
    let checkpoints = Checkpointer::start(vec![path])?;
    let mut random = Random::new(7);
    let (began, cpu) = (Instant::now(), CpuTimes::now());
    let mut latencies = Vec::new();
    while began.elapsed() < duration {
        let (aid, delta) = (random.below(accounts as u64) as i64 + 1, random.below(10_001) as i64 - 5_000);
        let started = Instant::now();
        conn.execute_batch("BEGIN IMMEDIATE")?;
        conn.prepare_cached("UPDATE pgbench_accounts SET abalance = abalance + ?1 WHERE aid = ?2")?
            .execute(params![delta, aid])?;
        let _: i64 = conn
            .prepare_cached("SELECT abalance FROM pgbench_accounts WHERE aid = ?1")?
            .query_row([aid], |row| row.get(0))?;
        conn.prepare_cached(
            "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (?1, ?2, ?3, ?4, CURRENT_TIMESTAMP)",
        )?
        .execute(params![random.below(100) as i64 + 1, (aid - 1) / 100_000 + 1, aid, delta])?;
        conn.execute_batch("COMMIT")?;
        latencies.push(started.elapsed());
    }
    let result = finish(latencies, began, &cpu);
    checkpoints.stop();
    Ok(result)
}

/// The four files of the bare checkout, with the tables its writes touch.
const SCHEMAS: [(&str, &str); 4] = [
    (
        "cart",
        "CREATE TABLE carts (owner_key TEXT PRIMARY KEY, updated_at TEXT NOT NULL);
         CREATE TABLE cart_lines (owner_key TEXT NOT NULL REFERENCES carts, product_id TEXT NOT NULL,
             quantity INTEGER NOT NULL, unit_price INTEGER NOT NULL, added_at TEXT NOT NULL,
             PRIMARY KEY (owner_key, product_id));",
    ),
    (
        "orders",
        "CREATE TABLE orders (id TEXT PRIMARY KEY, user_id TEXT NOT NULL, status TEXT NOT NULL,
             total INTEGER NOT NULL, shipping_address TEXT NOT NULL, reservation_id TEXT,
             idempotency_key TEXT, created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
             UNIQUE (user_id, idempotency_key));
         CREATE INDEX orders_by_user ON orders (user_id, created_at);
         CREATE TABLE order_lines (order_id TEXT NOT NULL REFERENCES orders, product_id TEXT NOT NULL,
             title TEXT NOT NULL, unit_price INTEGER NOT NULL, quantity INTEGER NOT NULL,
             PRIMARY KEY (order_id, product_id));
         CREATE TABLE order_history (order_id TEXT NOT NULL REFERENCES orders, status TEXT NOT NULL,
             at TEXT NOT NULL, actor TEXT NOT NULL);
         CREATE INDEX order_history_by_order ON order_history (order_id);",
    ),
    (
        "inventory",
        "CREATE TABLE stock (product_id TEXT NOT NULL, warehouse_id TEXT NOT NULL, on_hand INTEGER NOT NULL,
             available INTEGER NOT NULL CHECK (available >= 0), reserved INTEGER NOT NULL,
             allocated INTEGER NOT NULL, PRIMARY KEY (product_id, warehouse_id));
         CREATE TABLE reservations (id TEXT PRIMARY KEY, status TEXT NOT NULL, expires_at TEXT NOT NULL,
             updated_at TEXT NOT NULL);
         CREATE TABLE reservation_lines (reservation_id TEXT NOT NULL REFERENCES reservations,
             product_id TEXT NOT NULL, warehouse_id TEXT NOT NULL, quantity INTEGER NOT NULL);
         CREATE INDEX reservation_lines_by_reservation ON reservation_lines (reservation_id);
         CREATE TABLE stock_ledger (product_id TEXT NOT NULL, warehouse_id TEXT NOT NULL,
             movement TEXT NOT NULL, quantity INTEGER NOT NULL, at TEXT NOT NULL);",
    ),
    (
        "payments",
        "CREATE TABLE payments (id TEXT PRIMARY KEY, reference TEXT NOT NULL, idempotency_key TEXT NOT NULL UNIQUE,
             amount INTEGER NOT NULL, status TEXT NOT NULL, transaction_id TEXT, updated_at TEXT NOT NULL);
         CREATE TABLE sandbox_charges (idempotency_key TEXT PRIMARY KEY, transaction_id TEXT NOT NULL,
             amount INTEGER NOT NULL, token TEXT NOT NULL, status TEXT NOT NULL);",
    ),
];

/// Indexes into [`SCHEMAS`] (and into a worker's connections and the writers' locks).
const CART: usize = 0;
const ORDERS: usize = 1;
const INVENTORY: usize = 2;
const PAYMENTS: usize = 3;

/// `commit_every` for the statements' share of a bare checkout cycle.
pub(crate) const STATEMENTS_ONLY: u32 = 64;

const PRODUCTS: usize = 1_000;
const WAREHOUSE: &str = "0195f2c4-0000-7000-8000-000000000001";
/// An event's payload as the app's outbox stores one (JSON, a few hundred bytes).
const PAYLOAD: &str = r#"{"order_id":"0195f2c4-1b2a-7c3d-9e4f-5a6b7c8d9e0f","user_id":"0195f2c4-1b2a-7c3d-9e4f-5a6b7c8d9e10","lines":[{"product_id":"0195f2c4-1b2a-7c3d-9e4f-5a6b7c8d9e11","quantity":1}],"total":{"amount":4999,"currency":"EUR"}}"#;

/// A checkout cycle's commits as bare SQLite statements, from `workers` threads, for `duration`.
/// The threads share one connection per file, each behind a lock (writers of a file queue for it,
/// as the app's do): a second connection to a file would drop its page cache after every commit
/// of the other, which doubled the CPU per checkout when tried (docs/benchmarks.md).
///
/// With `commit_every` 1 every step is its own `BEGIN IMMEDIATE … COMMIT`, durable before the
/// next, as the saga needs. With more, a file's transaction stays open across that many steps:
/// not a valid checkout (a step is not durable when the next one acts), but it parts SQLite's
/// cost into the statements' and the `COMMIT`s'.
pub(crate) fn checkout_writes(
    dir: &Path,
    workers: usize,
    duration: Duration,
    commit_every: u32,
) -> anyhow::Result<Baseline> {
    let paths: Vec<PathBuf> =
        SCHEMAS.iter().map(|(name, _)| dir.join(format!("bare-{commit_every}-{name}.db"))).collect();
    for (path, (_, schema)) in paths.iter().zip(SCHEMAS) {
        let conn = open(path)?;
        conn.execute_batch(schema)?;
        conn.execute_batch(
            "CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL UNIQUE,
                 event_type TEXT NOT NULL, aggregate_id TEXT NOT NULL, occurred_at TEXT NOT NULL, payload TEXT NOT NULL)",
        )?;
    }
    let products: Vec<String> = (0..PRODUCTS).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    let files =
        paths.iter().map(|p| Ok(Mutex::new(File { conn: open(p)?, steps: 0 }))).collect::<anyhow::Result<Vec<_>>>()?;
    {
        let mut inventory = files[INVENTORY].lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        let intake = inventory.conn.transaction()?;
        for product in &products {
            intake.execute(
                "INSERT INTO stock VALUES (?1, ?2, 1000000000, 1000000000, 0, 0)",
                params![product, WAREHOUSE],
            )?;
        }
        intake.commit()?;
    }
    let checkpoints = Checkpointer::start(paths)?;
    let files: Arc<[Mutex<File>]> = files.into();
    let products = Arc::new(products);
    let (began, cpu) = (Instant::now(), CpuTimes::now());
    let threads: Vec<_> = (0..workers)
        .map(|n| {
            let (files, products) = (files.clone(), products.clone());
            std::thread::spawn(move || -> anyhow::Result<Vec<Duration>> {
                let mut cycle = Cycle { files, commit_every, random: Random::new(n as u64 + 1) };
                let owner = uuid::Uuid::now_v7().to_string();
                let mut latencies = Vec::new();
                while began.elapsed() < duration {
                    let started = Instant::now();
                    cycle.run(&owner, &products)?;
                    latencies.push(started.elapsed());
                }
                Ok(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for thread in threads {
        latencies.extend(thread.join().map_err(|_| anyhow::anyhow!("a bare checkout thread panicked"))??);
    }
    for file in files.iter() {
        let file = file.lock().map_err(|_| anyhow::anyhow!("a writer panicked"))?;
        if !file.conn.is_autocommit() {
            file.conn.execute_batch("COMMIT")?;
        }
    }
    let result = finish(latencies, began, &cpu);
    checkpoints.stop();
    Ok(result)
}

/// One file's connection, shared by the workers, and the steps written to it.
struct File {
    conn: Connection,
    steps: u32,
}

/// A worker's way to the files (in [`SCHEMAS`] order).
struct Cycle {
    files: Arc<[Mutex<File>]>,
    commit_every: u32,
    random: Random,
}

impl Cycle {
    /// Runs `write` as one `BEGIN IMMEDIATE … COMMIT` on file `db`, in its turn.
    fn commit(&self, db: usize, write: impl FnOnce(&Connection) -> rusqlite::Result<()>) -> anyhow::Result<()> {
        let mut file = self.files[db].lock().map_err(|_| anyhow::anyhow!("a writer panicked"))?;
        if file.conn.is_autocommit() {
            file.conn.execute_batch("BEGIN IMMEDIATE")?;
        }
        if let Err(err) = write(&file.conn) {
            file.conn.execute_batch("ROLLBACK")?;
            return Err(err.into());
        }
        file.steps += 1;
        if file.steps % self.commit_every.max(1) == 0 {
            file.conn.execute_batch("COMMIT")?;
        }
        Ok(())
    }

    fn run(&mut self, owner: &str, products: &[String]) -> anyhow::Result<()> {
        let now = chrono::Utc::now().to_rfc3339();
        let first = self.random.below(products.len() as u64) as usize;
        let picked = [&products[first], &products[(first + 1 + self.random.below(10) as usize) % products.len()]];
        for product in picked {
            self.commit(CART, |c| {
                c.prepare_cached(
                    "INSERT INTO carts VALUES (?1, ?2) ON CONFLICT (owner_key) DO UPDATE SET updated_at = ?2",
                )?
                .execute(params![owner, now])?;
                c.prepare_cached(
                    "INSERT INTO cart_lines VALUES (?1, ?2, 1, 4999, ?3)
                     ON CONFLICT (owner_key, product_id) DO UPDATE SET quantity = quantity + 1",
                )?
                .execute(params![owner, product, now])?;
                event(c, "CartItemAdded", product, &now)
            })?;
        }
        let lines: Vec<(String, i64, i64)> = self.files[CART]
            .lock()
            .map_err(|_| anyhow::anyhow!("a writer panicked"))?
            .conn
            .prepare_cached("SELECT product_id, quantity, unit_price FROM cart_lines WHERE owner_key = ?1")?
            .query_map([owner], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let total: i64 = lines.iter().map(|(_, quantity, price)| quantity * price).sum();
        let (order, reservation) = (uuid::Uuid::now_v7().to_string(), uuid::Uuid::now_v7().to_string());
        self.commit(ORDERS, |c| {
            c.prepare_cached("INSERT INTO orders VALUES (?1, ?2, 'CREATED', ?3, ?4, NULL, ?1, ?5, ?5)")?
                .execute(params![order, owner, total, PAYLOAD, now])?;
            for (product, quantity, price) in &lines {
                c.prepare_cached("INSERT INTO order_lines VALUES (?1, ?2, 'A product', ?3, ?4)")?
                    .execute(params![order, product, price, quantity])?;
            }
            history(c, &order, "CREATED", &now)
        })?;
        self.commit(INVENTORY, |c| {
            c.prepare_cached("INSERT INTO reservations VALUES (?1, 'HELD', ?2, ?2)")?
                .execute(params![reservation, now])?;
            for (product, quantity, _) in &lines {
                move_stock(c, HOLD, product, *quantity, "reserve", &now)?;
                c.prepare_cached("INSERT INTO reservation_lines VALUES (?1, ?2, ?3, ?4)")?.execute(params![
                    reservation,
                    product,
                    WAREHOUSE,
                    quantity
                ])?;
            }
            event(c, "StockReserved", &reservation, &now)
        })?;
        self.commit(ORDERS, |c| {
            transition(c, &order, "PAYMENT_PENDING", &now)?;
            event(c, "OrderPlaced", &order, &now)
        })?;
        let payment = uuid::Uuid::now_v7().to_string();
        self.commit(PAYMENTS, |c| {
            c.prepare_cached("INSERT INTO payments VALUES (?1, ?2, ?2, ?3, 'PENDING', NULL, ?4)")?
                .execute(params![payment, order, total, now])?;
            Ok(())
        })?;
        self.commit(PAYMENTS, |c| {
            c.prepare_cached("INSERT INTO sandbox_charges VALUES (?1, ?2, ?3, 'tok_visa', 'succeeded')")?
                .execute(params![order, payment, total])?;
            Ok(())
        })?;
        self.commit(PAYMENTS, |c| {
            c.prepare_cached(
                "UPDATE payments SET status = 'CAPTURED', transaction_id = ?2, updated_at = ?3 WHERE id = ?1",
            )?
            .execute(params![payment, payment, now])?;
            event(c, "PaymentCaptured", &payment, &now)
        })?;
        self.commit(ORDERS, |c| {
            transition(c, &order, "CONFIRMED", &now)?;
            event(c, "OrderConfirmed", &order, &now)
        })?;
        self.commit(INVENTORY, |c| {
            c.prepare_cached("UPDATE reservations SET status = 'COMMITTED', updated_at = ?2 WHERE id = ?1")?
                .execute(params![reservation, now])?;
            for (product, quantity, _) in &lines {
                move_stock(c, ALLOCATE, product, *quantity, "allocate", &now)?;
            }
            event(c, "StockAllocated", &reservation, &now)
        })?;
        self.commit(CART, |c| {
            c.prepare_cached("DELETE FROM cart_lines WHERE owner_key = ?1")?.execute([owner])?;
            event(c, "CartItemRemoved", owner, &now)
        })
    }
}

fn event(c: &Connection, event_type: &str, aggregate: &str, now: &str) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT INTO outbox (event_id, event_type, aggregate_id, occurred_at, payload) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![uuid::Uuid::now_v7().to_string(), event_type, aggregate, now, PAYLOAD])?;
    Ok(())
}

fn history(c: &Connection, order: &str, status: &str, now: &str) -> rusqlite::Result<()> {
    c.prepare_cached("INSERT INTO order_history VALUES (?1, ?2, ?3, 'bench')")?.execute(params![order, status, now])?;
    Ok(())
}

fn transition(c: &Connection, order: &str, status: &str, now: &str) -> rusqlite::Result<()> {
    c.prepare_cached("UPDATE orders SET status = ?2, updated_at = ?3 WHERE id = ?1")?
        .execute(params![order, status, now])?;
    history(c, order, status, now)
}

/// Units from available to reserved (`?1` units of product `?2` in warehouse `?3`).
const HOLD: &str = "UPDATE stock SET available = available - ?1, reserved = reserved + ?1
                    WHERE product_id = ?2 AND warehouse_id = ?3";
/// Units from reserved to allocated.
const ALLOCATE: &str = "UPDATE stock SET reserved = reserved - ?1, allocated = allocated + ?1
                        WHERE product_id = ?2 AND warehouse_id = ?3";

/// Moves a product's units between stock columns with `update` ([`HOLD`], [`ALLOCATE`]) and
/// records the movement in the ledger.
fn move_stock(
    c: &Connection,
    update: &str,
    product: &str,
    quantity: i64,
    movement: &str,
    now: &str,
) -> rusqlite::Result<()> {
    c.prepare_cached(update)?.execute(params![quantity, product, WAREHOUSE])?;
    c.prepare_cached("INSERT INTO stock_ledger VALUES (?1, ?2, ?3, ?4, ?5)")?
        .execute(params![product, WAREHOUSE, movement, quantity, now])?;
    Ok(())
}

/// A connection with the app's settings (kernel `db`): 2 KiB pages, WAL, `synchronous =
/// NORMAL`, foreign keys on, the writer's own checkpoint only as a backstop.
fn open(path: &Path) -> anyhow::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.execute_batch(
        "PRAGMA page_size = 2048; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;
         PRAGMA foreign_keys = ON; PRAGMA wal_autocheckpoint = 10000; PRAGMA busy_timeout = 10000;",
    )?;
    Ok(conn)
}

fn finish(latencies: Vec<Duration>, began: Instant, cpu: &CpuTimes) -> Baseline {
    let ops = latencies.len().max(1) as f64;
    let cpu_ms_per_op = 1000.0 * CpuTimes::now().since(cpu).own / ops;
    Baseline { stats: Stats::from_latencies(latencies, 0, began.elapsed()), cpu_ms_per_op }
}

/// A `PASSIVE` checkpoint of every file every 200 ms on a connection of its own, as the app's
/// checkpoint task does, so that no writer copies the WAL back.
struct Checkpointer {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Checkpointer {
    fn start(paths: Vec<PathBuf>) -> anyhow::Result<Checkpointer> {
        let conns = paths.iter().map(|p| open(p)).collect::<anyhow::Result<Vec<_>>>()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                for conn in &conns {
                    // A checkpoint that finds a writer busy does what it can and is tried again.
                    let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                }
            }
        });
        Ok(Checkpointer { stop, thread })
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }
}

/// Deterministic picks (`checkout::next`) below a bound.
struct Random(u64);

impl Random {
    fn new(seed: u64) -> Random {
        Random(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn below(&mut self, bound: u64) -> u64 {
        crate::checkout::next(&mut self.0) % bound.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bare checkout really writes what a checkout writes: every commit lands, stock moves
    /// from available to allocated and nowhere else, the carts end empty.
    #[test]
    fn bare_checkout_writes_commit_a_whole_checkout() {
        for commit_every in [1, 64] {
            let dir = tempfile::tempdir().unwrap();
            let baseline = checkout_writes(dir.path(), 2, Duration::from_millis(300), commit_every).unwrap();
            assert_whole_checkouts(dir.path(), commit_every, baseline.stats.requests as i64);
        }
    }

    fn assert_whole_checkouts(dir: &Path, commit_every: u32, checkouts: i64) {
        assert!(checkouts > 0);
        let file = |name: &str| open(&dir.join(format!("bare-{commit_every}-{name}.db"))).unwrap();
        let orders = file("orders");
        let confirmed: i64 =
            orders.query_row("SELECT COUNT(*) FROM orders WHERE status = 'CONFIRMED'", [], |r| r.get(0)).unwrap();
        assert_eq!(confirmed, checkouts);
        let inventory = file("inventory");
        let (reserved, allocated, missing): (i64, i64, i64) = inventory
            .query_row(
                "SELECT SUM(reserved), SUM(allocated), SUM(on_hand - available - reserved - allocated) FROM stock",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!((reserved, missing), (0, 0));
        // Two products a checkout, one unit each.
        assert_eq!(allocated, 2 * checkouts);
        let cart = file("cart");
        let left: i64 = cart.query_row("SELECT COUNT(*) FROM cart_lines", [], |r| r.get(0)).unwrap();
        assert_eq!(left, 0);
    }

    #[test]
    fn simple_update_moves_balances_and_appends_history() {
        let dir = tempfile::tempdir().unwrap();
        let baseline = simple_update(dir.path(), 10_000, Duration::from_millis(200)).unwrap();
        let conn = open(&dir.path().join("pgbench.db")).unwrap();
        let (history, moved): (i64, i64) = conn
            .query_row("SELECT COUNT(*), SUM(delta) FROM pgbench_history", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap();
        assert_eq!(history as usize, baseline.stats.requests);
        let balances: i64 = conn.query_row("SELECT SUM(abalance) FROM pgbench_accounts", [], |r| r.get(0)).unwrap();
        assert_eq!(balances, moved);
    }
}
