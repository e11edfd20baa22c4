//! The inventory's tables, one implementation for both backends (see ARCHITECTURE.md "Storage contract").
//!
//! Every stock change is one conditional UPDATE that adds a movement's deltas only if no figure
//! would go negative; the CHECK constraints are the backstop. Nothing reads a figure and writes
//! it back.
//!
//! Lock order: a transaction that moves stock first locks every stock row it will move, in
//! (product_id, warehouse_id) order ([`lock`], [`lock_products`]), and only then changes anything
//! else (a reservation's status or lines); the movements take a [`Locked`] as proof. On
//! PostgreSQL that is one `SELECT … ORDER BY product_id, warehouse_id FOR UPDATE`: the manual's
//! "The Locking Clause" says `ORDER BY` is applied first and the rows are then locked as they
//! come, so every writer waits for rows in the same order and no two wait for each other. On
//! SQLite the transaction already holds the database's only write lock.

use crate::model::{Movement, Reservation, ReservationLine, ReservationStatus, StockLevels, Warehouse};
use chrono::{DateTime, Utc};
use emporium_kernel::db::{Backend, Db, ROWS_PER_STATEMENT, Tx, Write, multi_row_insert};
use emporium_kernel::geo::GeoPoint;
use emporium_kernel::ids::{ProductId, ReservationId, WarehouseId};
use emporium_kernel::{sql, sql_exec};
use sqlx::types::Json;
use std::collections::{BTreeMap, BTreeSet, HashSet};

#[derive(sqlx::FromRow)]
struct WarehouseRow {
    id: WarehouseId,
    name: String,
    address: String,
    lat: f64,
    lon: f64,
    delivery_radius_km: f64,
    postal_prefixes: Json<Vec<String>>,
    active: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<WarehouseRow> for Warehouse {
    fn from(r: WarehouseRow) -> Self {
        Warehouse {
            id: r.id,
            name: r.name,
            address: r.address,
            // The CHECK constraints keep stored coordinates in range.
            location: GeoPoint::new(r.lat, r.lon).expect("stored coordinates are valid"),
            delivery_radius_km: r.delivery_radius_km,
            postal_prefixes: r.postal_prefixes.0,
            active: r.active,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

macro_rules! warehouse_columns {
    () => {
        "id, name, address, lat, lon, delivery_radius_km, postal_prefixes, active, created_at, updated_at"
    };
}

pub async fn insert_warehouse(tx: &mut Tx, w: &Warehouse) -> sqlx::Result<()> {
    sql_exec!(tx, |c| {
        sqlx::query(concat!(
            "INSERT INTO warehouses (",
            warehouse_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        ))
        .bind(w.id)
        .bind(&w.name)
        .bind(&w.address)
        .bind(w.location.lat.degrees())
        .bind(w.location.lon.degrees())
        .bind(w.delivery_radius_km)
        .bind(Json(&w.postal_prefixes))
        .bind(w.active)
        .bind(w.created_at)
        .bind(w.updated_at)
        .execute(c)
        .await
    })?;
    Ok(())
}

pub async fn update_warehouse(tx: &mut Tx, w: &Warehouse) -> sqlx::Result<()> {
    sql_exec!(tx, |c| sqlx::query(
        "UPDATE warehouses SET name = $2, address = $3, lat = $4, lon = $5, delivery_radius_km = $6,
         postal_prefixes = $7, active = $8, updated_at = $9 WHERE id = $1"
    )
    .bind(w.id)
    .bind(&w.name)
    .bind(&w.address)
    .bind(w.location.lat.degrees())
    .bind(w.location.lon.degrees())
    .bind(w.delivery_radius_km)
    .bind(Json(&w.postal_prefixes))
    .bind(w.active)
    .bind(w.updated_at)
    .execute(c)
    .await)?;
    Ok(())
}

const ALL_WAREHOUSES: &str = concat!("SELECT ", warehouse_columns!(), " FROM warehouses ORDER BY name, id");

pub async fn warehouses(db: &Db) -> sqlx::Result<Vec<Warehouse>> {
    let rows: Vec<WarehouseRow> = sql!(db, |c| sqlx::query_as(ALL_WAREHOUSES).fetch_all(c).await)?;
    Ok(rows.into_iter().map(Warehouse::from).collect())
}

pub async fn warehouse_for_update(tx: &mut Tx, id: WarehouseId) -> sqlx::Result<Option<Warehouse>> {
    let sql = concat!("SELECT ", warehouse_columns!(), " FROM warehouses WHERE id = $1");
    let row: Option<WarehouseRow> = sql!(tx, |c| sqlx::query_as(sql).bind(id).fetch_optional(c).await)?;
    Ok(row.map(Warehouse::from))
}

#[derive(sqlx::FromRow)]
struct LevelsRow {
    on_hand: i64,
    available: i64,
    reserved: i64,
    allocated: i64,
    shipped: i64,
}

impl From<LevelsRow> for StockLevels {
    fn from(r: LevelsRow) -> Self {
        StockLevels {
            on_hand: r.on_hand,
            available: r.available,
            reserved: r.reserved,
            allocated: r.allocated,
            shipped: r.shipped,
        }
    }
}

#[derive(sqlx::FromRow)]
struct StockRow {
    warehouse_id: WarehouseId,
    #[sqlx(flatten)]
    levels: LevelsRow,
}

/// Stock rows this transaction has locked (see the module notes); a movement may touch only these.
pub struct Locked(BTreeSet<(ProductId, WarehouseId)>);

impl Locked {
    fn covers(&self, entries: &[Entry<'_>]) -> bool {
        entries.iter().all(|e| self.0.contains(&(e.product_id, e.warehouse_id)))
    }
}

/// Locks `rows` (those that exist) in key order. On SQLite the transaction's write lock covers
/// them already, and nothing is sent.
pub async fn lock(tx: &mut Tx, rows: impl IntoIterator<Item = (ProductId, WarehouseId)>) -> sqlx::Result<Locked> {
    let rows: BTreeSet<(ProductId, WarehouseId)> = rows.into_iter().collect();
    if tx.backend() == Backend::Postgres {
        let sorted: Vec<(ProductId, WarehouseId)> = rows.iter().copied().collect();
        // Chunks in key order keep the whole sequence in key order.
        for chunk in sorted.chunks(ROWS_PER_STATEMENT) {
            let pairs: Vec<String> = (0..chunk.len()).map(|i| format!("(${}, ${})", 2 * i + 1, 2 * i + 2)).collect();
            let sql = format!(
                "SELECT 1 FROM stock WHERE (product_id, warehouse_id) IN ({})
                 ORDER BY product_id, warehouse_id FOR UPDATE",
                pairs.join(", ")
            );
            sql!(tx, |c| {
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.clone()));
                for (product, warehouse) in chunk {
                    query = query.bind(*product).bind(*warehouse);
                }
                query.fetch_all(c).await.map(|rows| rows.len())
            })?;
        }
    }
    Ok(Locked(rows))
}

/// One who/why of a movement, for the ledger.
pub struct Entry<'a> {
    pub product_id: ProductId,
    pub warehouse_id: WarehouseId,
    pub movement: Movement,
    pub quantity: i64,
    pub reservation_id: Option<ReservationId>,
    pub actor: &'a str,
    pub reason: Option<&'a str>,
    /// The caller's operation this movement belongs to (unique in the ledger), if any.
    pub operation_key: Option<&'a str>,
    pub at: DateTime<Utc>,
}

/// Whether a movement with this operation key is already in the ledger.
pub async fn operation_done(tx: &mut Tx, key: &str) -> sqlx::Result<bool> {
    let found: Option<i64> = sql!(tx, |c| sqlx::query_scalar("SELECT seq FROM stock_ledger WHERE operation_key = $1")
        .bind(key)
        .fetch_optional(c)
        .await)?;
    Ok(found.is_some())
}

/// Binds a movement's eight values, in the order every stock-row statement numbers them:
/// product, warehouse, the deltas of on_hand, available, reserved, allocated and shipped, time.
/// A macro, as the statements are sqlx queries of either driver and kernel `Write`s.
macro_rules! bind_movement {
    ($query:expr, $entry:expr) => {{
        let e = $entry;
        let d = e.movement.delta(e.quantity);
        $query
            .bind(e.product_id)
            .bind(e.warehouse_id)
            .bind(d.on_hand)
            .bind(d.available)
            .bind(d.reserved)
            .bind(d.allocated)
            .bind(d.shipped)
            .bind(e.at)
    }};
}

/// A movement's conditional write to its stock row (see [`bind_movement!`] for its values): it
/// changes nothing if any figure would go below zero.
const CONDITIONAL_MOVE: &str = "UPDATE stock SET on_hand = on_hand + $3, available = available + $4,
       reserved = reserved + $5, allocated = allocated + $6, shipped = shipped + $7, updated_at = $8
     WHERE product_id = $1 AND warehouse_id = $2 AND on_hand + $3 >= 0 AND available + $4 >= 0
       AND reserved + $5 >= 0 AND allocated + $6 >= 0";

/// Applies a movement if every figure stays ≥ 0 and records it in the ledger. `false` means the
/// row lacked the stock (or does not exist); nothing was changed.
pub async fn apply(tx: &mut Tx, locked: &Locked, e: &Entry<'_>) -> sqlx::Result<bool> {
    Ok(apply_all(tx, locked, std::slice::from_ref(e)).await?.is_none())
}

/// Applies every movement, each a conditional update of its row, then records them all in the
/// ledger with one statement (deferred: nothing waits on it). Stops at the first entry whose row
/// lacks the stock and returns its index: the caller must then roll back (the entries before it
/// were applied).
pub async fn apply_all(tx: &mut Tx, locked: &Locked, entries: &[Entry<'_>]) -> sqlx::Result<Option<usize>> {
    assert!(locked.covers(entries), "stock rows are locked before they move (see the module notes)");
    if entries.is_empty() {
        return Ok(None);
    }
    let distinct_rows = entries.iter().map(|e| (e.product_id, e.warehouse_id)).collect::<HashSet<_>>().len();
    // Several rows (a reservation's lines) move with one statement per chunk instead of one
    // each. The rows are locked, so no concurrent update can make PostgreSQL re-check a row
    // after a lock wait and skip it though its stock suffices.
    let batch =
        entries.len() > 1 && distinct_rows == entries.len() && entries.iter().all(|e| e.movement != Movement::Intake);
    if batch {
        for (n, chunk) in entries.chunks(ROWS_PER_UPDATE).enumerate() {
            let changed = update_rows(tx, chunk).await?;
            if let Some(i) = chunk.iter().position(|e| !changed.contains(&(e.product_id, e.warehouse_id))) {
                return Ok(Some(n * ROWS_PER_UPDATE + i));
            }
        }
    } else {
        for (i, e) in entries.iter().enumerate() {
            if !update_row(tx, e).await? {
                return Ok(Some(i));
            }
        }
    }
    record_in_ledger(tx, entries).await?;
    Ok(None)
}

/// Ends `tx` moving reservation `id` from `from` to `to` with `entries` applied to their stock
/// rows and recorded in the ledger; if the reservation was no longer in `from`, rolls all of it
/// back and returns `false`. For movements a hold's own rows always cover (committing it: its
/// units are reserved there): the rows' CHECKs still refuse a negative figure, as an error (see
/// `db::is_check_violation`), so the updates are plain, and on PostgreSQL they share one
/// statement with the reservation's guarded status change (see `Tx::commit_if`).
pub async fn commit_transition(
    mut tx: Tx,
    locked: &Locked,
    id: ReservationId,
    (from, to): (ReservationStatus, ReservationStatus),
    entries: &[Entry<'_>],
    now: DateTime<Utc>,
) -> sqlx::Result<bool> {
    assert!(locked.covers(entries), "stock rows are locked before they move (see the module notes)");
    debug_assert!(entries.iter().all(|e| e.movement != Movement::Intake), "an intake may create its row");
    let distinct_rows = entries.iter().map(|e| (e.product_id, e.warehouse_id)).collect::<HashSet<_>>().len();
    for e in entries {
        let write = bind_movement!(
            Write::new(
                "UPDATE stock SET on_hand = on_hand + $3, available = available + $4, reserved = reserved + $5,
                   allocated = allocated + $6, shipped = shipped + $7, updated_at = $8
                 WHERE product_id = $1 AND warehouse_id = $2",
            ),
            e
        );
        // Rows of their own may share a statement; a row moved twice takes its turns.
        tx.defer(if distinct_rows == entries.len() { write.independent() } else { write }).await?;
    }
    record_in_ledger(&mut tx, entries).await?;
    let guard = Write::new("UPDATE reservations SET status = $3, updated_at = $4 WHERE id = $1 AND status = $2")
        .bind(id)
        .bind(from.as_str())
        .bind(to.as_str())
        .bind(now);
    tx.commit_if(guard).await
}

/// Adds `entries` to the ledger with the transaction's end (deferred).
async fn record_in_ledger(tx: &mut Tx, entries: &[Entry<'_>]) -> sqlx::Result<()> {
    let head = "INSERT INTO stock_ledger (product_id, warehouse_id, movement, on_hand, available, reserved, allocated,
                 shipped, reservation_id, actor, reason, at, operation_key)";
    for chunk in entries.chunks(ROWS_PER_STATEMENT) {
        // Independent: no statement of a transaction reads the ledger rows it adds; in order, as
        // ledger ids follow the movements.
        let mut write = Write::new(multi_row_insert(head, 13, chunk.len())).independent().ordered_by("stock_ledger");
        for e in chunk {
            let d = e.movement.delta(e.quantity);
            write = write
                .bind(e.product_id)
                .bind(e.warehouse_id)
                .bind(e.movement.as_str())
                .bind(d.on_hand)
                .bind(d.available)
                .bind(d.reserved)
                .bind(d.allocated)
                .bind(d.shipped)
                .bind(e.reservation_id)
                .bind(e.actor.to_owned())
                .bind(e.reason.map(str::to_owned))
                .bind(e.at)
                .bind(e.operation_key.map(str::to_owned));
        }
        tx.defer(write).await?;
    }
    Ok(())
}

/// Rows per [`update_rows`] statement: each is one term of a compound SELECT, which SQLite caps
/// at 500.
const ROWS_PER_UPDATE: usize = 100;

/// Each movement's conditional write to its stock row (as in [`update_row`]), all in one
/// statement; returns the rows changed. The rows must be distinct, locked, and no movement an
/// intake (see [`apply_all`]).
async fn update_rows(tx: &mut Tx, entries: &[Entry<'_>]) -> sqlx::Result<HashSet<(ProductId, WarehouseId)>> {
    // The movements as a derived table `v` (one SELECT per row, the first naming the columns:
    // SQLite's VALUES cannot name them); its names differ from stock's, so RETURNING's are
    // unambiguous on PostgreSQL.
    const NAMES: [&str; 8] = ["p", "w", "d_on_hand", "d_available", "d_reserved", "d_allocated", "d_shipped", "at"];
    let rows: Vec<String> = (0..entries.len())
        .map(|row| {
            let values: Vec<String> = (0..NAMES.len())
                .map(|column| {
                    let n = row * NAMES.len() + column + 1;
                    if row == 0 { format!("${n} AS {}", NAMES[column]) } else { format!("${n}") }
                })
                .collect();
            format!("SELECT {}", values.join(", "))
        })
        .collect();
    let sql = format!(
        "UPDATE stock SET on_hand = stock.on_hand + v.d_on_hand, available = stock.available + v.d_available,
           reserved = stock.reserved + v.d_reserved, allocated = stock.allocated + v.d_allocated,
           shipped = stock.shipped + v.d_shipped, updated_at = v.at
         FROM ({}) AS v
         WHERE stock.product_id = v.p AND stock.warehouse_id = v.w
           AND stock.on_hand + v.d_on_hand >= 0 AND stock.available + v.d_available >= 0
           AND stock.reserved + v.d_reserved >= 0 AND stock.allocated + v.d_allocated >= 0
         RETURNING product_id, warehouse_id",
        rows.join(" UNION ALL ")
    );
    let changed: Vec<(ProductId, WarehouseId)> = sql!(tx, |c| {
        let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()));
        for e in entries {
            query = bind_movement!(query, e);
        }
        query.fetch_all(c).await
    })?;
    Ok(changed.into_iter().collect())
}

/// The movement's one conditional write to its stock row; `false` when nothing changed.
async fn update_row(tx: &mut Tx, e: &Entry<'_>) -> sqlx::Result<bool> {
    let changed = if e.movement == Movement::Intake {
        sql_exec!(tx, |c| sqlx::query(
            "INSERT INTO stock (product_id, warehouse_id, on_hand, available, reserved, allocated, shipped, updated_at)
             VALUES ($1, $2, $3, $3, 0, 0, 0, $4)
             ON CONFLICT (product_id, warehouse_id) DO UPDATE SET
               on_hand = stock.on_hand + excluded.on_hand,
               available = stock.available + excluded.available,
               updated_at = excluded.updated_at"
        )
        .bind(e.product_id)
        .bind(e.warehouse_id)
        .bind(e.quantity)
        .bind(e.at)
        .execute(c)
        .await)?
    } else {
        sql_exec!(tx, |c| bind_movement!(sqlx::query(CONDITIONAL_MOVE), e).execute(c).await)?
    };
    Ok(changed > 0)
}

const STOCK_OF: &str = "SELECT warehouse_id, on_hand, available, reserved, allocated, shipped FROM stock
                         WHERE product_id = $1 ORDER BY warehouse_id";

/// A product's rows in every warehouse.
pub async fn stock_of(db: &Db, product: ProductId) -> sqlx::Result<Vec<(WarehouseId, StockLevels)>> {
    let rows: Vec<StockRow> = sql!(db, |c| sqlx::query_as(STOCK_OF).bind(product).fetch_all(c).await)?;
    Ok(rows.into_iter().map(|r| (r.warehouse_id, r.levels.into())).collect())
}

/// The same, inside a movement's transaction (after its updates).
pub async fn stock_of_in_tx(tx: &mut Tx, product: ProductId) -> sqlx::Result<Vec<(WarehouseId, StockLevels)>> {
    Ok(stocks_of_in_tx(tx, &[product]).await?.remove(&product).unwrap_or_default())
}

/// The rows of several products, one statement per chunk of them. `$target` is a `Db` or a `Tx`;
/// `$lock` adds `FOR UPDATE` (PostgreSQL only).
macro_rules! select_stocks_of {
    ($target:expr, $products:expr, $lock:expr) => {{
        #[derive(sqlx::FromRow)]
        struct Row {
            product_id: ProductId,
            warehouse_id: WarehouseId,
            #[sqlx(flatten)]
            levels: LevelsRow,
        }
        let products: &[ProductId] = $products;
        let mut out: BTreeMap<ProductId, Vec<(WarehouseId, StockLevels)>> =
            products.iter().map(|p| (*p, Vec::new())).collect();
        // Chunks keep the statement within SQLite's bind-parameter limit.
        for chunk in products.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "SELECT product_id, warehouse_id, on_hand, available, reserved, allocated, shipped FROM stock
                 WHERE product_id IN ({}) ORDER BY product_id, warehouse_id{}",
                emporium_kernel::db::placeholders(1, chunk.len()),
                if $lock { " FOR UPDATE" } else { "" }
            );
            let rows: Vec<Row> = sql!($target, |c| {
                let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()));
                for id in chunk {
                    query = query.bind(*id);
                }
                query.fetch_all(c).await
            })?;
            for row in rows {
                out.entry(row.product_id).or_default().push((row.warehouse_id, row.levels.into()));
            }
        }
        Ok(out)
    }};
}

/// The rows of several products, inside a movement's transaction: one statement for all.
pub async fn stocks_of_in_tx(
    tx: &mut Tx,
    products: &[ProductId],
) -> sqlx::Result<BTreeMap<ProductId, Vec<(WarehouseId, StockLevels)>>> {
    select_stocks_of!(tx, products, false)
}

/// The rows of several products as they are now (one statement; no transaction needed).
pub async fn stocks_of(
    db: &Db,
    products: &[ProductId],
) -> sqlx::Result<BTreeMap<ProductId, Vec<(WarehouseId, StockLevels)>>> {
    select_stocks_of!(db, products, false)
}

/// Reads the rows of `products` in every warehouse and locks them all, in key order (see
/// [`lock`]): what a reservation places its lines from, exact until the transaction ends.
pub async fn lock_products(
    tx: &mut Tx,
    products: &[ProductId],
) -> sqlx::Result<(BTreeMap<ProductId, Vec<(WarehouseId, StockLevels)>>, Locked)> {
    let mut sorted = products.to_vec();
    sorted.sort();
    sorted.dedup();
    let lock = tx.backend() == Backend::Postgres;
    let rows: sqlx::Result<BTreeMap<ProductId, Vec<(WarehouseId, StockLevels)>>> = select_stocks_of!(tx, &sorted, lock);
    let rows = rows?;
    let locked = rows.iter().flat_map(|(p, rows)| rows.iter().map(|(w, _)| (*p, *w))).collect();
    Ok((rows, Locked(locked)))
}

/// Seed 001's AggregatedStock of many products at once (absent products have no stock rows).
pub async fn aggregated(db: &Db, products: &[ProductId]) -> sqlx::Result<Vec<(ProductId, StockLevels)>> {
    #[derive(sqlx::FromRow)]
    struct Row {
        product_id: ProductId,
        #[sqlx(flatten)]
        levels: LevelsRow,
    }
    let mut out = Vec::with_capacity(products.len());
    // Chunks keep the statement within SQLite's bind-parameter limit.
    for chunk in products.chunks(ROWS_PER_STATEMENT) {
        let placeholders = emporium_kernel::db::placeholders(1, chunk.len());
        let sql = format!(
            "SELECT product_id, on_hand, available, reserved, allocated, shipped FROM aggregated_stock
             WHERE product_id IN ({placeholders})"
        );
        let rows: Vec<Row> = sql!(db, |c| {
            let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()));
            for id in chunk {
                query = query.bind(*id);
            }
            query.fetch_all(c).await
        })?;
        out.extend(rows.into_iter().map(|r| (r.product_id, StockLevels::from(r.levels))));
    }
    Ok(out)
}

/// Deferred, independent writes (see [`Tx::defer`]): the last of a reservation's transaction, so
/// a reference taken concurrently shows as a unique violation from the commit.
pub async fn insert_reservation(tx: &mut Tx, r: &Reservation, created_by: &str) -> sqlx::Result<()> {
    tx.defer(
        Write::new(
            "INSERT INTO reservations (id, reference, status, expires_at, created_by, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $6)",
        )
        .independent()
        .bind(r.id)
        .bind(r.reference.clone())
        .bind(r.status.as_str())
        .bind(r.expires_at)
        .bind(created_by.to_owned())
        .bind(r.created_at),
    )
    .await?;
    let head = "INSERT INTO reservation_lines (reservation_id, product_id, warehouse_id, quantity, shipped)";
    for chunk in r.lines.chunks(ROWS_PER_STATEMENT) {
        let mut write = Write::new(multi_row_insert(head, 5, chunk.len())).independent();
        for line in chunk {
            write =
                write.bind(r.id).bind(line.product_id).bind(line.warehouse_id).bind(line.quantity).bind(line.shipped);
        }
        tx.defer(write).await?;
    }
    Ok(())
}

pub enum Lookup<'a> {
    Id(ReservationId),
    Reference(&'a str),
}

/// A reservation and its lines, in one statement (reservations ⟕ lines): one consistent read
/// with no transaction needed. `$target` is a `Db` or a `Tx`.
macro_rules! select_reservation {
    ($target:expr, $lookup:expr) => {{
        const SELECT: &str = "SELECT r.id, r.reference, r.status, r.expires_at, r.created_at,
                l.product_id, l.warehouse_id, l.quantity, l.shipped
         FROM reservations r LEFT JOIN reservation_lines l ON l.reservation_id = r.id";
        const ORDER: &str = "ORDER BY l.product_id, l.warehouse_id";
        let rows: Vec<ReservationLineRow> = match $lookup {
            Lookup::Id(id) => {
                let sql = format!("{SELECT} WHERE r.id = $1 {ORDER}");
                sql!($target, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql.clone())).bind(id).fetch_all(c).await)?
            }
            Lookup::Reference(reference) => {
                let sql = format!("{SELECT} WHERE r.reference = $1 {ORDER}");
                sql!($target, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql.clone())).bind(reference).fetch_all(c).await)?
            }
        };
        Ok(assemble_reservation(rows))
    }};
}

/// A reservation and its lines, read inside `tx`.
pub async fn reservation(tx: &mut Tx, lookup: Lookup<'_>) -> sqlx::Result<Option<Reservation>> {
    select_reservation!(tx, lookup)
}

/// A reservation and its lines as they are now.
pub async fn reservation_now(db: &Db, lookup: Lookup<'_>) -> sqlx::Result<Option<Reservation>> {
    select_reservation!(db, lookup)
}

#[derive(sqlx::FromRow)]
struct ReservationLineRow {
    id: ReservationId,
    reference: String,
    status: String,
    expires_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
    // Absent for a reservation without lines (none is stored so, but the join allows it).
    product_id: Option<ProductId>,
    warehouse_id: Option<WarehouseId>,
    quantity: Option<i64>,
    shipped: Option<bool>,
}

fn assemble_reservation(rows: Vec<ReservationLineRow>) -> Option<Reservation> {
    let first = rows.first()?;
    let mut reservation = Reservation {
        id: first.id,
        reference: first.reference.clone(),
        // The CHECK constraint admits only known statuses.
        status: ReservationStatus::parse(&first.status).unwrap_or(ReservationStatus::Released),
        expires_at: first.expires_at,
        lines: Vec::with_capacity(rows.len()),
        created_at: first.created_at,
    };
    for row in rows {
        if let (Some(product_id), Some(warehouse_id), Some(quantity), Some(shipped)) =
            (row.product_id, row.warehouse_id, row.quantity, row.shipped)
        {
            reservation.lines.push(ReservationLine { product_id, warehouse_id, quantity, shipped });
        }
    }
    Some(reservation)
}

/// Moves a reservation from `from` to `to`; `false` when someone else moved it first (the
/// sweeper and a commit racing for the same hold: exactly one wins).
pub async fn transition(
    tx: &mut Tx,
    id: ReservationId,
    from: ReservationStatus,
    to: ReservationStatus,
    now: DateTime<Utc>,
) -> sqlx::Result<bool> {
    let changed = sql_exec!(tx, |c| sqlx::query(
        "UPDATE reservations SET status = $3, updated_at = $4 WHERE id = $1 AND status = $2"
    )
    .bind(id)
    .bind(from.as_str())
    .bind(to.as_str())
    .bind(now)
    .execute(c)
    .await)?;
    Ok(changed == 1)
}

pub async fn mark_shipped(tx: &mut Tx, id: ReservationId, warehouse: WarehouseId) -> sqlx::Result<u64> {
    sql_exec!(tx, |c| sqlx::query(
        "UPDATE reservation_lines SET shipped = TRUE WHERE reservation_id = $1 AND warehouse_id = $2 AND NOT shipped"
    )
    .bind(id)
    .bind(warehouse)
    .execute(c)
    .await)
}

/// Held reservations whose time is up, oldest first.
pub async fn due_reservations(db: &Db, now: DateTime<Utc>, limit: i64) -> sqlx::Result<Vec<ReservationId>> {
    sql!(db, |c| sqlx::query_scalar(
        "SELECT id FROM reservations WHERE status = 'held' AND expires_at <= $1 ORDER BY expires_at LIMIT $2"
    )
    .bind(now)
    .bind(limit)
    .fetch_all(c)
    .await)
}

#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct LedgerRow {
    pub seq: i64,
    pub product_id: ProductId,
    pub warehouse_id: WarehouseId,
    pub movement: String,
    pub on_hand: i64,
    pub available: i64,
    pub reserved: i64,
    pub allocated: i64,
    pub shipped: i64,
    pub reservation_id: Option<ReservationId>,
    pub actor: String,
    pub reason: Option<String>,
    pub at: DateTime<Utc>,
}

pub async fn ledger(db: &Db, product: ProductId, after: i64, limit: i64) -> sqlx::Result<Vec<LedgerRow>> {
    sql!(db, |c| sqlx::query_as(
        "SELECT seq, product_id, warehouse_id, movement, on_hand, available, reserved, allocated, shipped,
           reservation_id, actor, reason, at
         FROM stock_ledger WHERE product_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
    )
    .bind(product)
    .bind(after)
    .bind(limit)
    .fetch_all(c)
    .await)
}

/// Every stock row next to the sum of its ledger: the audit compares them.
pub async fn stock_and_ledger_sums(db: &Db) -> sqlx::Result<Vec<(ProductId, WarehouseId, StockLevels, StockLevels)>> {
    #[derive(sqlx::FromRow)]
    struct Row {
        product_id: ProductId,
        warehouse_id: WarehouseId,
        on_hand: i64,
        available: i64,
        reserved: i64,
        allocated: i64,
        shipped: i64,
        l_on_hand: i64,
        l_available: i64,
        l_reserved: i64,
        l_allocated: i64,
        l_shipped: i64,
    }
    let rows: Vec<Row> = sql!(db, |c| sqlx::query_as(
        "SELECT s.product_id, s.warehouse_id, s.on_hand, s.available, s.reserved, s.allocated, s.shipped,
           COALESCE(l.on_hand, 0) AS l_on_hand, COALESCE(l.available, 0) AS l_available,
           COALESCE(l.reserved, 0) AS l_reserved, COALESCE(l.allocated, 0) AS l_allocated,
           COALESCE(l.shipped, 0) AS l_shipped
         FROM stock s LEFT JOIN (
           SELECT product_id, warehouse_id, CAST(SUM(on_hand) AS BIGINT) AS on_hand,
             CAST(SUM(available) AS BIGINT) AS available, CAST(SUM(reserved) AS BIGINT) AS reserved,
             CAST(SUM(allocated) AS BIGINT) AS allocated, CAST(SUM(shipped) AS BIGINT) AS shipped
           FROM stock_ledger GROUP BY product_id, warehouse_id
         ) l ON l.product_id = s.product_id AND l.warehouse_id = s.warehouse_id
         ORDER BY s.product_id, s.warehouse_id"
    )
    .fetch_all(c)
    .await)?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let stock = StockLevels {
                on_hand: r.on_hand,
                available: r.available,
                reserved: r.reserved,
                allocated: r.allocated,
                shipped: r.shipped,
            };
            let ledger = StockLevels {
                on_hand: r.l_on_hand,
                available: r.l_available,
                reserved: r.l_reserved,
                allocated: r.l_allocated,
                shipped: r.l_shipped,
            };
            (r.product_id, r.warehouse_id, stock, ledger)
        })
        .collect())
}
