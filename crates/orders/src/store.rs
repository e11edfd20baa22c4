//! The orders tables, one implementation for both backends (see ARCHITECTURE.md "Storage contract").
//! Every status change is conditional on the status it leaves and writes its history row in the
//! same transaction, so two workers racing on one order change it once.

use crate::model::{
    HistoryEntry, Order, OrderLine, OrderStatus, PaymentSummary, PickList, ShipmentLine, ShipmentStatus,
    ShippingAddress, WarehouseOrder,
};
use chrono::{DateTime, Utc};
use emporium_kernel::db::{Backend, Db, Tx, Write};
use emporium_kernel::ids::{
    DeliveryPartnerId, OrderId, PaymentId, ProductId, ReservationId, UserId, WarehouseId, WarehouseOrderId,
};
use emporium_kernel::money::{Currency, Money};
use emporium_kernel::{sql, sql_exec};
use sqlx::types::Json;
use std::collections::HashMap;

#[derive(sqlx::FromRow)]
struct OrderRow {
    id: OrderId,
    user_id: UserId,
    status: String,
    currency: String,
    subtotal: i64,
    discount: i64,
    total: i64,
    coupon_code: Option<String>,
    shipping_address: Json<ShippingAddress>,
    reservation_id: Option<ReservationId>,
    expires_at: Option<DateTime<Utc>>,
    delivered_at: Option<DateTime<Utc>>,
    idempotency_key: Option<String>,
    payment_id: Option<PaymentId>,
    payment_status: Option<String>,
    payment_gateway: Option<String>,
    payment_transaction_id: Option<String>,
    refunded: i64,
    settled: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

macro_rules! order_select {
    ($where:literal) => {
        concat!(
            "SELECT id, user_id, status, currency, subtotal, discount, total, coupon_code, shipping_address,
             reservation_id, expires_at, delivered_at, idempotency_key, payment_id, payment_status, payment_gateway,
             payment_transaction_id, refunded, settled, created_at, updated_at FROM orders ",
            $where
        )
    };
}

#[derive(sqlx::FromRow)]
struct LineRow {
    product_id: ProductId,
    title: String,
    unit_price: i64,
    quantity: i64,
    line_total: i64,
    returned_quantity: i64,
}

#[derive(sqlx::FromRow)]
struct HistoryRow {
    status: String,
    actor: String,
    reason: Option<String>,
    at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct ShipmentRow {
    id: WarehouseOrderId,
    order_id: OrderId,
    warehouse_id: WarehouseId,
    status: String,
    lines: Json<Vec<ShipmentLine>>,
    shipped_at: Option<DateTime<Utc>>,
    delivered_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    delivery_partner_id: Option<DeliveryPartnerId>,
}

impl From<ShipmentRow> for WarehouseOrder {
    fn from(r: ShipmentRow) -> Self {
        WarehouseOrder {
            id: r.id,
            order_id: r.order_id,
            warehouse_id: r.warehouse_id,
            status: ShipmentStatus::parse(&r.status).expect("stored shipment status is known"),
            lines: r.lines.0,
            shipped_at: r.shipped_at,
            delivered_at: r.delivered_at,
            created_at: r.created_at,
            delivery_partner_id: r.delivery_partner_id,
        }
    }
}

macro_rules! shipment_select {
    ($where:literal) => {
        concat!(
            "SELECT id, order_id, warehouse_id, status, lines, shipped_at, delivered_at, created_at, delivery_partner_id
             FROM warehouse_orders ",
            $where
        )
    };
}

fn status(raw: &str) -> OrderStatus {
    OrderStatus::parse(raw).expect("stored order status is known")
}

/// Inserts a new order with its first history row and its lines in one command (a SQLite
/// script, a PostgreSQL statement with data-modifying CTEs): one round trip instead of three.
/// Deferred (see [`Tx::defer`]): a key already used shows as a unique violation from the commit.
pub async fn insert_order(tx: &mut Tx, o: &Order, actor: &str) -> sqlx::Result<()> {
    const ORDER: &str = "INSERT INTO orders (id, user_id, status, currency, subtotal, discount, total, coupon_code,
         shipping_address, reservation_id, expires_at, delivered_at, idempotency_key, payment_status, payment_gateway,
         payment_transaction_id, refunded, settled, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, NULL, NULL, $10, NULL, NULL, NULL, 0, FALSE, $11, $11)";
    const HISTORY: &str =
        "INSERT INTO order_history (order_id, status, actor, reason, at) VALUES ($1, $3, $12, NULL, $11)";
    const FIRST_LINE_PARAM: usize = 13;
    let (first, rest) = o.lines.split_at(o.lines.len().min(emporium_kernel::db::ROWS_PER_STATEMENT));
    let lines = (!first.is_empty()).then(|| lines_sql(first.len(), FIRST_LINE_PARAM));
    let sql = match (tx.backend(), &lines) {
        (Backend::Sqlite, Some(lines)) => format!("{ORDER}; {HISTORY}; {lines}"),
        (Backend::Sqlite, None) => format!("{ORDER}; {HISTORY}"),
        (Backend::Postgres, Some(lines)) => format!("WITH placed AS ({ORDER}), lines AS ({lines}) {HISTORY}"),
        (Backend::Postgres, None) => format!("WITH placed AS ({ORDER}) {HISTORY}"),
    };
    let write = Write::new(sql)
        .bind(o.id)
        .bind(o.user_id)
        .bind(o.status.as_str())
        .bind(o.total.currency.as_str().to_owned())
        .bind(o.subtotal.amount)
        .bind(o.discount.amount)
        .bind(o.total.amount)
        .bind(o.coupon_code.clone())
        .bind(Json(o.shipping_address.clone()))
        .bind(o.idempotency_key.clone())
        .bind(o.created_at)
        .bind(actor.to_owned());
    tx.defer(bind_lines(write, first)).await?;
    for chunk in rest.chunks(emporium_kernel::db::ROWS_PER_STATEMENT) {
        tx.defer(bind_lines(Write::new(lines_sql(chunk.len(), 2)).bind(o.id), chunk)).await?;
    }
    Ok(())
}

/// `INSERT INTO order_lines` for `rows` lines of the order `$1`, their values numbered from `first`.
fn lines_sql(rows: usize, first: usize) -> String {
    let values: Vec<String> = (0..rows)
        .map(|i| {
            let n = first + i * 5;
            format!("($1, ${n}, ${}, ${}, ${}, ${}, 0, TRUE)", n + 1, n + 2, n + 3, n + 4)
        })
        .collect();
    format!(
        "INSERT INTO order_lines (order_id, product_id, title, unit_price, quantity, line_total, returned_quantity,
         restock) VALUES {}",
        values.join(", ")
    )
}

/// Binds the values [`lines_sql`] numbers, in its order.
fn bind_lines(mut write: Write, lines: &[OrderLine]) -> Write {
    for line in lines {
        write = write
            .bind(line.product_id)
            .bind(line.title.clone())
            .bind(line.unit_price.amount)
            .bind(line.quantity)
            .bind(line.line_total.amount);
    }
    write
}

/// Removes an order that never got past CREATED (its stock could not be held): the shopper got
/// a 409 and never saw it.
pub async fn discard_created(tx: &mut Tx, id: OrderId) -> sqlx::Result<bool> {
    let gone = sql_exec!(tx, |c| sqlx::query(
        "DELETE FROM order_history WHERE order_id = $1 AND EXISTS
        (SELECT 1 FROM orders WHERE id = $1 AND status = 'CREATED')"
    )
    .bind(id)
    .execute(c)
    .await)?;
    if gone == 0 {
        return Ok(false);
    }
    sql_exec!(tx, |c| sqlx::query("DELETE FROM order_lines WHERE order_id = $1").bind(id).execute(c).await)?;
    sql_exec!(tx, |c| sqlx::query("DELETE FROM orders WHERE id = $1").bind(id).execute(c).await)?;
    Ok(true)
}

pub struct Transition<'a> {
    pub id: OrderId,
    pub from: OrderStatus,
    pub to: OrderStatus,
    pub actor: &'a str,
    pub reason: Option<&'a str>,
    pub at: DateTime<Utc>,
}

/// A status change and its history row as one command: `$1` id, `$2` from, `$3` to, `$4` at,
/// `$5` actor, `$6` reason. A transaction runs several of these, and each statement is a round
/// trip (to PostgreSQL, or to the thread of sqlx's SQLite connection), so the history row rides
/// along: SQLite runs both statements of the script in one call (the insert only when the update
/// changed the row); PostgreSQL inserts from the update's `RETURNING` in the same statement.
const TRANSITION_SQLITE: &str = "UPDATE orders SET status = $3, updated_at = $4 WHERE id = $1 AND status = $2;
     INSERT INTO order_history (order_id, status, actor, reason, at) SELECT $1, $3, $5, $6, $4 WHERE changes() = 1";
const TRANSITION_POSTGRES: &str = "WITH moved AS (UPDATE orders SET status = $3, updated_at = $4
     WHERE id = $1 AND status = $2 RETURNING id)
     INSERT INTO order_history (order_id, status, actor, reason, at) SELECT id, $3, $5, $6, $4 FROM moved";

/// Moves the order from `from` to `to` with its history row; `false` when it was no longer in
/// `from` (someone else moved it first). For a transaction that goes on after the move; one
/// that ends with it takes [`commit_transition`].
pub async fn transition(tx: &mut Tx, t: &Transition<'_>) -> sqlx::Result<bool> {
    let sql = match tx.backend() {
        Backend::Sqlite => TRANSITION_SQLITE,
        Backend::Postgres => TRANSITION_POSTGRES,
    };
    let n = sql_exec!(tx, |c| sqlx::query(sql)
        .bind(t.id)
        .bind(t.from.as_str())
        .bind(t.to.as_str())
        .bind(t.at)
        .bind(t.actor)
        .bind(t.reason)
        .execute(c)
        .await)?;
    Ok(n > 0)
}

/// What a committed transition records on the order besides its status.
pub enum Recording<'a> {
    StatusOnly,
    /// The stock held for it (CREATED → PAYMENT_PENDING).
    Hold(Hold),
    Payment(&'a PaymentSummary),
    /// A hold and the payment that captured it in the same call, recorded together (CREATED →
    /// CONFIRMED): the PAYMENT_PENDING step the order passed through gets its history row too,
    /// at the hold's time.
    HoldAndPayment(Hold, &'a PaymentSummary),
}

/// Stock held for an order: its reservation, until when, and since when.
#[derive(Clone, Copy, Debug)]
pub struct Hold {
    pub reservation: ReservationId,
    pub expires_at: DateTime<Utc>,
    pub at: DateTime<Utc>,
}

/// Ends `tx` with the order moved from `from` to `to` (recording `recording`, with its history
/// row), committing what the transaction deferred (its events) with it; if the order was no
/// longer in `from`, rolls all of it back and returns `false`. On PostgreSQL a transaction that
/// only deferred writes is then one statement (see `Tx::commit_if`).
pub async fn commit_transition(mut tx: Tx, t: &Transition<'_>, recording: Recording<'_>) -> sqlx::Result<bool> {
    const HISTORY: &str = "INSERT INTO order_history (order_id, status, actor, reason, at) VALUES";
    let history = match &recording {
        // One statement, rows in order: `seq` numbers them as they come.
        Recording::HoldAndPayment(hold, _) => {
            Write::new(format!("{HISTORY} ($1, $6, $3, NULL, $7), ($1, $2, $3, $4, $5)"))
                .bind(t.id)
                .bind(t.to.as_str())
                .bind(t.actor.to_owned())
                .bind(t.reason.map(str::to_owned))
                .bind(t.at)
                .bind(OrderStatus::PaymentPending.as_str())
                .bind(hold.at)
        }
        _ => Write::new(format!("{HISTORY} ($1, $2, $3, $4, $5)"))
            .bind(t.id)
            .bind(t.to.as_str())
            .bind(t.actor.to_owned())
            .bind(t.reason.map(str::to_owned))
            .bind(t.at),
    };
    tx.defer(history.independent()).await?;
    let guard = |set: &str| {
        Write::new(format!("UPDATE orders SET status = $3, updated_at = $4{set} WHERE id = $1 AND status = $2"))
            .bind(t.id)
            .bind(t.from.as_str())
            .bind(t.to.as_str())
            .bind(t.at)
    };
    let with_payment = |guard: Write, p: &PaymentSummary| {
        guard.bind(p.status.clone()).bind(p.gateway.clone()).bind(p.transaction_id.clone()).bind(p.refunded).bind(p.id)
    };
    let guard = match recording {
        Recording::StatusOnly => guard(""),
        Recording::Hold(hold) => {
            guard(", reservation_id = $5, expires_at = $6").bind(hold.reservation).bind(hold.expires_at)
        }
        Recording::Payment(p) => with_payment(
            guard(
                ", payment_status = $5, payment_gateway = $6, payment_transaction_id = $7, refunded = $8, payment_id = $9",
            ),
            p,
        ),
        Recording::HoldAndPayment(hold, p) => with_payment(
            guard(
                ", reservation_id = $5, expires_at = $6, payment_status = $7, payment_gateway = $8,
                 payment_transaction_id = $9, refunded = $10, payment_id = $11",
            )
            .bind(hold.reservation)
            .bind(hold.expires_at),
            p,
        ),
    };
    tx.commit_if(guard).await
}

/// Takes the order row's write lock for the rest of the transaction without changing it
/// (PostgreSQL; SQLite writers are serialised anyway): warehouse orders of one order that ship or
/// deliver at the same moment then see each other, so the last one moves the parent.
pub async fn lock_order(tx: &mut Tx, id: OrderId) -> sqlx::Result<()> {
    sql_exec!(tx, |c| sqlx::query("UPDATE orders SET updated_at = updated_at WHERE id = $1")
        .bind(id)
        .execute(c)
        .await)?;
    Ok(())
}

pub async fn set_delivered_at(tx: &mut Tx, id: OrderId, at: DateTime<Utc>) -> sqlx::Result<()> {
    sql_exec!(tx, |c| sqlx::query("UPDATE orders SET delivered_at = $2 WHERE id = $1")
        .bind(id)
        .bind(at)
        .execute(c)
        .await)?;
    Ok(())
}

pub async fn set_payment(db: &Db, id: OrderId, p: &PaymentSummary) -> sqlx::Result<()> {
    sql_exec!(db, |c| sqlx::query(
        "UPDATE orders SET payment_status = $2, payment_gateway = $3, payment_transaction_id = $4, refunded = $5,
         payment_id = COALESCE($6, payment_id) WHERE id = $1"
    )
    .bind(id)
    .bind(&p.status)
    .bind(&p.gateway)
    .bind(&p.transaction_id)
    .bind(p.refunded)
    .bind(p.id)
    .execute(c)
    .await)?;
    Ok(())
}

/// Takes the right to settle the order until `until`; `false` while someone else holds it.
pub async fn lease_settlement(db: &Db, id: OrderId, now: DateTime<Utc>, until: DateTime<Utc>) -> sqlx::Result<bool> {
    let n = sql_exec!(db, |c| {
        sqlx::query(
        "UPDATE orders SET settle_lease = $3 WHERE id = $1 AND NOT settled AND (settle_lease IS NULL OR settle_lease < $2)"
    )
    .bind(id)
    .bind(now)
    .bind(until)
    .execute(c)
    .await
    })?;
    Ok(n == 1)
}

pub async fn mark_settled(db: &Db, id: OrderId) -> sqlx::Result<()> {
    sql_exec!(db, |c| sqlx::query("UPDATE orders SET settled = TRUE WHERE id = $1").bind(id).execute(c).await)?;
    Ok(())
}

pub async fn record_return(
    tx: &mut Tx,
    id: OrderId,
    product: ProductId,
    quantity: i64,
    restock: bool,
) -> sqlx::Result<()> {
    sql_exec!(tx, |c| {
        sqlx::query(
        "UPDATE order_lines SET returned_quantity = returned_quantity + $3, restock = $4 WHERE order_id = $1 AND product_id = $2"
    )
    .bind(id)
    .bind(product)
    .bind(quantity)
    .bind(restock)
    .execute(c)
    .await
    })?;
    Ok(())
}

/// Lines returned and marked for restocking: (product, quantity).
pub async fn restock_lines(db: &Db, id: OrderId) -> sqlx::Result<Vec<(ProductId, i64)>> {
    sql!(db, |c| {
        sqlx::query_as(
        "SELECT product_id, returned_quantity FROM order_lines WHERE order_id = $1 AND restock AND returned_quantity > 0
         ORDER BY product_id"
    )
    .bind(id)
    .fetch_all(c)
    .await
    })
}

async fn complete(db: &Db, row: OrderRow) -> sqlx::Result<Order> {
    let id = row.id;
    let currency = Currency::parse(&row.currency).expect("stored currency is valid");
    let money = |amount| Money::new(amount, currency);
    let lines: Vec<LineRow> = sql!(db, |c| sqlx::query_as(
        "SELECT product_id, title, unit_price, quantity, line_total, returned_quantity FROM order_lines
         WHERE order_id = $1 ORDER BY product_id"
    )
    .bind(id)
    .fetch_all(c)
    .await)?;
    let history: Vec<HistoryRow> = sql!(db, |c| sqlx::query_as(
        "SELECT status, actor, reason, at FROM order_history WHERE order_id = $1 ORDER BY seq"
    )
    .bind(id)
    .fetch_all(c)
    .await)?;
    let shipments = shipments_of(db, id).await?;
    let payment = payment_of(&row);
    Ok(Order {
        id,
        user_id: row.user_id,
        status: status(&row.status),
        lines: lines
            .into_iter()
            .map(|l| OrderLine {
                product_id: l.product_id,
                title: l.title,
                unit_price: money(l.unit_price),
                quantity: l.quantity,
                line_total: money(l.line_total),
                returned_quantity: l.returned_quantity,
            })
            .collect(),
        subtotal: money(row.subtotal),
        discount: money(row.discount),
        total: money(row.total),
        coupon_code: row.coupon_code,
        shipping_address: row.shipping_address.0,
        reservation_id: row.reservation_id,
        expires_at: row.expires_at,
        delivered_at: row.delivered_at,
        idempotency_key: row.idempotency_key,
        payment,
        settled: row.settled,
        created_at: row.created_at,
        updated_at: row.updated_at,
        history: history
            .into_iter()
            .map(|h| HistoryEntry { status: status(&h.status), at: h.at, actor: h.actor, reason: h.reason })
            .collect(),
        shipments,
    })
}

pub async fn order(db: &Db, id: OrderId) -> sqlx::Result<Option<Order>> {
    let row: Option<OrderRow> =
        sql!(db, |c| sqlx::query_as(order_select!("WHERE id = $1")).bind(id).fetch_optional(c).await)?;
    match row {
        Some(row) => complete(db, row).await.map(Some),
        None => Ok(None),
    }
}

/// An order's status and recorded payment, from its row alone: for decisions that need nothing
/// else (a payment event for an order that already recorded it costs one read, not four).
pub async fn status_and_payment(db: &Db, id: OrderId) -> sqlx::Result<Option<(OrderStatus, Option<PaymentSummary>)>> {
    let row: Option<OrderRow> =
        sql!(db, |c| sqlx::query_as(order_select!("WHERE id = $1")).bind(id).fetch_optional(c).await)?;
    Ok(row.map(|row| (status(&row.status), payment_of(&row))))
}

fn payment_of(row: &OrderRow) -> Option<PaymentSummary> {
    row.payment_status.clone().map(|status| PaymentSummary {
        id: row.payment_id,
        status,
        gateway: row.payment_gateway.clone(),
        transaction_id: row.payment_transaction_id.clone(),
        refunded: row.refunded,
    })
}

pub async fn order_by_key(db: &Db, user: UserId, key: &str) -> sqlx::Result<Option<Order>> {
    let row: Option<OrderRow> =
        sql!(db, |c| sqlx::query_as(order_select!("WHERE user_id = $1 AND idempotency_key = $2"))
            .bind(user)
            .bind(key)
            .fetch_optional(c)
            .await)?;
    match row {
        Some(row) => complete(db, row).await.map(Some),
        None => Ok(None),
    }
}

/// A user's orders, newest first, before the cursor `before`.
pub async fn orders_of(db: &Db, user: UserId, before: Option<OrderId>, limit: i64) -> sqlx::Result<Vec<Order>> {
    let before = before.unwrap_or(OrderId(uuid_max()));
    let rows: Vec<OrderRow> = sql!(db, |c| sqlx::query_as(order_select!(
        "WHERE user_id = $1 AND id < $2 AND status <> 'CREATED' ORDER BY id DESC LIMIT $3"
    ))
    .bind(user)
    .bind(before)
    .bind(limit)
    .fetch_all(c)
    .await)?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        out.push(complete(db, row).await?);
    }
    Ok(out)
}

fn uuid_max() -> uuid::Uuid {
    uuid::Uuid::from_u128(u128::MAX)
}

/// Ids of orders in `status` last changed before `before` (the worker's queues).
pub async fn in_status_since(
    db: &Db,
    status: OrderStatus,
    before: DateTime<Utc>,
    limit: i64,
) -> sqlx::Result<Vec<OrderId>> {
    sql!(db, |c| sqlx::query_scalar(
        "SELECT id FROM orders WHERE status = $1 AND updated_at < $2 ORDER BY updated_at LIMIT $3"
    )
    .bind(status.as_str())
    .bind(before)
    .bind(limit)
    .fetch_all(c)
    .await)
}

/// Unpaid checkouts whose hold has run out.
pub async fn due_to_expire(db: &Db, now: DateTime<Utc>, limit: i64) -> sqlx::Result<Vec<OrderId>> {
    sql!(db, |c| sqlx::query_scalar(
        "SELECT id FROM orders WHERE status = 'PAYMENT_PENDING' AND expires_at <= $1 ORDER BY expires_at LIMIT $2"
    )
    .bind(now)
    .bind(limit)
    .fetch_all(c)
    .await)
}

/// Delivered orders whose return window closed.
pub async fn due_to_complete(db: &Db, delivered_before: DateTime<Utc>, limit: i64) -> sqlx::Result<Vec<OrderId>> {
    sql!(db, |c| sqlx::query_scalar(
        "SELECT id FROM orders WHERE status = 'DELIVERED' AND delivered_at <= $1 ORDER BY delivered_at LIMIT $2"
    )
    .bind(delivered_before)
    .bind(limit)
    .fetch_all(c)
    .await)
}

/// Orders in a giving-back state, last changed before `before`, whose compensations have not
/// been confirmed done (the request that began them died).
pub async fn unsettled(db: &Db, before: DateTime<Utc>, limit: i64) -> sqlx::Result<Vec<OrderId>> {
    sql!(db, |c| sqlx::query_scalar(
        "SELECT id FROM orders WHERE NOT settled AND status IN ('PAYMENT_FAILED', 'EXPIRED', 'CANCELLED', 'RETURNED')
         AND updated_at < $1 ORDER BY updated_at LIMIT $2"
    )
    .bind(before)
    .bind(limit)
    .fetch_all(c)
    .await)
}

/// Deferred and independent (see [`Tx::defer`]): the split writes each warehouse order once and
/// reads none back.
pub async fn insert_shipment(tx: &mut Tx, s: &WarehouseOrder) -> sqlx::Result<()> {
    tx.defer(
        Write::new(
            "INSERT INTO warehouse_orders (id, order_id, warehouse_id, status, lines, shipped_at, delivered_at,
             created_at, updated_at) VALUES ($1, $2, $3, $4, $5, NULL, NULL, $6, $6)",
        )
        .independent()
        .bind(s.id)
        .bind(s.order_id)
        .bind(s.warehouse_id)
        .bind(s.status.as_str())
        .bind(Json(s.lines.clone()))
        .bind(s.created_at),
    )
    .await
}

/// The warehouse orders of `orders` still to be handed to a delivery partner (pending, none
/// recorded), each with its order's shipping address: one statement per chunk of orders.
pub async fn awaiting_delivery(db: &Db, orders: &[OrderId]) -> sqlx::Result<Vec<(WarehouseOrder, ShippingAddress)>> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        shipment: ShipmentRow,
        shipping_address: Json<ShippingAddress>,
    }
    let mut out = Vec::new();
    for chunk in orders.chunks(emporium_kernel::db::ROWS_PER_STATEMENT) {
        let sql = format!(
            "SELECT w.id, w.order_id, w.warehouse_id, w.status, w.lines, w.shipped_at, w.delivered_at, w.created_at,
                    w.delivery_partner_id, o.shipping_address
             FROM warehouse_orders w JOIN orders o ON o.id = w.order_id
             WHERE w.status = $1 AND w.delivery_partner_id IS NULL AND w.order_id IN ({})
             ORDER BY w.order_id, w.id",
            emporium_kernel::db::placeholders(2, chunk.len())
        );
        let rows: Vec<Row> = sql!(db, |c| {
            let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql.clone())).bind(ShipmentStatus::Pending.as_str());
            for id in chunk {
                query = query.bind(*id);
            }
            query.fetch_all(c).await
        })?;
        out.extend(rows.into_iter().map(|r| (r.shipment.into(), r.shipping_address.0)));
    }
    Ok(out)
}

/// Records the partner the delivery service assigned to each of `ids` (the same again changes
/// nothing), riding with the transaction's commit.
pub async fn set_delivery_partner(
    tx: &mut Tx,
    partner: DeliveryPartnerId,
    ids: &[WarehouseOrderId],
) -> sqlx::Result<()> {
    for chunk in ids.chunks(emporium_kernel::db::ROWS_PER_STATEMENT) {
        let sql = format!(
            "UPDATE warehouse_orders SET delivery_partner_id = $1 WHERE id IN ({})",
            emporium_kernel::db::placeholders(2, chunk.len())
        );
        let mut write = Write::new(sql).independent().bind(partner);
        for id in chunk {
            write = write.bind(*id);
        }
        tx.defer(write).await?;
    }
    Ok(())
}

pub async fn shipments_of(db: &Db, order: OrderId) -> sqlx::Result<Vec<WarehouseOrder>> {
    let rows: Vec<ShipmentRow> = sql!(db, |c| sqlx::query_as(shipment_select!("WHERE order_id = $1 ORDER BY id"))
        .bind(order)
        .fetch_all(c)
        .await)?;
    Ok(rows.into_iter().map(Into::into).collect())
}

pub async fn shipments_of_in_tx(tx: &mut Tx, order: OrderId) -> sqlx::Result<Vec<WarehouseOrder>> {
    let rows: Vec<ShipmentRow> = sql!(tx, |c| sqlx::query_as(shipment_select!("WHERE order_id = $1 ORDER BY id"))
        .bind(order)
        .fetch_all(c)
        .await)?;
    Ok(rows.into_iter().map(Into::into).collect())
}

pub async fn shipment(db: &Db, id: WarehouseOrderId) -> sqlx::Result<Option<WarehouseOrder>> {
    let row: Option<ShipmentRow> =
        sql!(db, |c| sqlx::query_as(shipment_select!("WHERE id = $1")).bind(id).fetch_optional(c).await)?;
    Ok(row.map(Into::into))
}

/// A warehouse's shipments (optionally in one status), oldest first, after the cursor.
/// A warehouse's orders, oldest first, with what picking and packing them needs (one statement
/// for the orders and their addresses, one for their lines' titles).
pub async fn shipments_for(
    db: &Db,
    warehouse: WarehouseId,
    status: Option<ShipmentStatus>,
    after: Option<WarehouseOrderId>,
    limit: i64,
) -> sqlx::Result<Vec<PickList>> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        shipment: ShipmentRow,
        shipping_address: Json<ShippingAddress>,
    }
    let after = after.unwrap_or(WarehouseOrderId(uuid::Uuid::nil()));
    let rows: Vec<Row> = sql!(db, |c| sqlx::query_as(
        "SELECT w.id, w.order_id, w.warehouse_id, w.status, w.lines, w.shipped_at, w.delivered_at, w.created_at,
                w.delivery_partner_id, o.shipping_address
         FROM warehouse_orders w JOIN orders o ON o.id = w.order_id
         WHERE w.warehouse_id = $1 AND ($2 IS NULL OR w.status = $2) AND w.id > $3 ORDER BY w.id LIMIT $4"
    )
    .bind(warehouse)
    .bind(status.map(ShipmentStatus::as_str))
    .bind(after)
    .bind(limit)
    .fetch_all(c)
    .await)?;
    let orders: Vec<OrderId> = rows.iter().map(|r| r.shipment.order_id).collect();
    let mut titles: HashMap<OrderId, HashMap<ProductId, String>> = HashMap::new();
    for chunk in orders.chunks(emporium_kernel::db::ROWS_PER_STATEMENT) {
        let sql = format!(
            "SELECT order_id, product_id, title FROM order_lines WHERE order_id IN ({})",
            emporium_kernel::db::placeholders(1, chunk.len())
        );
        let lines: Vec<(OrderId, ProductId, String)> = sql!(db, |c| {
            let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()));
            for id in chunk {
                query = query.bind(*id);
            }
            query.fetch_all(c).await
        })?;
        for (order, product, title) in lines {
            titles.entry(order).or_default().insert(product, title);
        }
    }
    Ok(rows
        .into_iter()
        .map(|r| {
            let shipment: WarehouseOrder = r.shipment.into();
            let titles = titles.get(&shipment.order_id).cloned().unwrap_or_default();
            PickList { shipment, shipping_address: r.shipping_address.0, titles }
        })
        .collect())
}

pub async fn change_shipment(
    tx: &mut Tx,
    id: WarehouseOrderId,
    from: ShipmentStatus,
    to: ShipmentStatus,
    at: DateTime<Utc>,
) -> sqlx::Result<bool> {
    let n = sql_exec!(tx, |c| sqlx::query(
        "UPDATE warehouse_orders SET status = $3, updated_at = $4,
         shipped_at = CASE WHEN $3 = 'SHIPPED' THEN $4 ELSE shipped_at END,
         delivered_at = CASE WHEN $3 = 'DELIVERED' THEN $4 ELSE delivered_at END
         WHERE id = $1 AND status = $2"
    )
    .bind(id)
    .bind(from.as_str())
    .bind(to.as_str())
    .bind(at)
    .execute(c)
    .await)?;
    Ok(n == 1)
}

/// Cancels every shipment of the order that has not left its warehouse.
pub async fn cancel_pending_shipments(tx: &mut Tx, order: OrderId, at: DateTime<Utc>) -> sqlx::Result<()> {
    sql_exec!(tx, |c| sqlx::query(
        "UPDATE warehouse_orders SET status = 'CANCELLED', updated_at = $2 WHERE order_id = $1 AND status = 'PENDING'"
    )
    .bind(order)
    .bind(at)
    .execute(c)
    .await)?;
    Ok(())
}
