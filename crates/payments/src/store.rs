//! The payments tables, one implementation for both backends (see ARCHITECTURE.md "Storage contract").
//! Status changes are conditional on the status they leave, so a webhook, a lookup and the
//! original call racing to report the same charge apply it once.

use crate::model::{Payment, PaymentStatus};
use chrono::{DateTime, Utc};
use emporium_kernel::db::{Db, Tx, Write};
use emporium_kernel::ids::{PaymentId, RefundId};
use emporium_kernel::money::{Currency, Money};
use emporium_kernel::{sql, sql_exec};

#[derive(sqlx::FromRow)]
struct PaymentRow {
    id: PaymentId,
    reference: String,
    idempotency_key: String,
    amount: i64,
    currency: String,
    gateway: String,
    attempted: String,
    transaction_id: Option<String>,
    status: String,
    failure_reason: Option<String>,
    refunded: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<PaymentRow> for Payment {
    fn from(r: PaymentRow) -> Self {
        Payment {
            id: r.id,
            reference: r.reference,
            idempotency_key: r.idempotency_key,
            // The service only stores currencies it parsed and statuses it knows.
            amount: Money::new(r.amount, Currency::parse(&r.currency).expect("stored currency is valid")),
            gateway: r.gateway,
            attempted: r.attempted.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect(),
            transaction_id: r.transaction_id,
            status: PaymentStatus::parse(&r.status).expect("stored status is known"),
            failure_reason: r.failure_reason,
            refunded: r.refunded,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

macro_rules! payment_select {
    ($where:literal) => {
        concat!(
            "SELECT id, reference, idempotency_key, amount, currency, gateway, attempted, transaction_id, status,
             failure_reason, refunded, created_at, updated_at FROM payments ",
            $where
        )
    };
}

/// Records a new payment, with the token its charge is sent with (kept while it is pending;
/// never a card number).
pub async fn insert_payment(db: &Db, p: &Payment, token: Option<&str>) -> sqlx::Result<()> {
    sql_exec!(db, |c| sqlx::query(
        "INSERT INTO payments (id, reference, idempotency_key, amount, currency, gateway, attempted, transaction_id,
         status, failure_reason, refunded, created_at, updated_at, charge_token)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
    )
    .bind(p.id)
    .bind(&p.reference)
    .bind(&p.idempotency_key)
    .bind(p.amount.amount)
    .bind(p.amount.currency.as_str())
    .bind(&p.gateway)
    .bind(p.attempted.join(","))
    .bind(&p.transaction_id)
    .bind(p.status.as_str())
    .bind(&p.failure_reason)
    .bind(p.refunded)
    .bind(p.created_at)
    .bind(p.updated_at)
    .bind(token)
    .execute(c)
    .await)?;
    Ok(())
}

/// Takes a pending payment whose last gateway call began before `abandoned_before` for a new
/// call, now: `false` when it was resolved or taken meanwhile (another resolver sends it). The
/// token to send it with comes back when taken.
pub async fn take_abandoned(
    db: &Db,
    id: PaymentId,
    abandoned_before: DateTime<Utc>,
    now: DateTime<Utc>,
) -> sqlx::Result<Option<Option<String>>> {
    let taken = sql_exec!(db, |c| sqlx::query(
        "UPDATE payments SET updated_at = $3 WHERE id = $1 AND status = 'pending' AND updated_at < $2"
    )
    .bind(id)
    .bind(abandoned_before)
    .bind(now)
    .execute(c)
    .await)?;
    if taken == 0 {
        return Ok(None);
    }
    let token: Option<String> = sql!(db, |c| sqlx::query_scalar("SELECT charge_token FROM payments WHERE id = $1")
        .bind(id)
        .fetch_one(c)
        .await)?;
    Ok(Some(token))
}

pub async fn payment_by_key(db: &Db, key: &str) -> sqlx::Result<Option<Payment>> {
    let row: Option<PaymentRow> =
        sql!(db, |c| sqlx::query_as(payment_select!("WHERE idempotency_key = $1")).bind(key).fetch_optional(c).await)?;
    Ok(row.map(Into::into))
}

pub async fn payment_by_key_in_tx(tx: &mut Tx, key: &str) -> sqlx::Result<Option<Payment>> {
    let row: Option<PaymentRow> =
        sql!(tx, |c| sqlx::query_as(payment_select!("WHERE idempotency_key = $1")).bind(key).fetch_optional(c).await)?;
    Ok(row.map(Into::into))
}

/// The latest payment made for `reference`.
pub async fn payment_by_reference(db: &Db, reference: &str) -> sqlx::Result<Option<Payment>> {
    let row: Option<PaymentRow> = sql!(db, |c| sqlx::query_as(payment_select!(
        "WHERE reference = $1 ORDER BY created_at DESC, id DESC LIMIT 1"
    ))
    .bind(reference)
    .fetch_optional(c)
    .await)?;
    Ok(row.map(Into::into))
}

pub async fn payment(db: &Db, id: PaymentId) -> sqlx::Result<Option<Payment>> {
    let row: Option<PaymentRow> =
        sql!(db, |c| sqlx::query_as(payment_select!("WHERE id = $1")).bind(id).fetch_optional(c).await)?;
    Ok(row.map(Into::into))
}

/// Payments after `after` in id order, for reconciliation.
pub async fn payments_after(db: &Db, after: Option<PaymentId>, limit: i64) -> sqlx::Result<Vec<Payment>> {
    let after = after.unwrap_or(PaymentId(uuid::Uuid::nil()));
    let rows: Vec<PaymentRow> = sql!(db, |c| sqlx::query_as(payment_select!("WHERE id > $1 ORDER BY id LIMIT $2"))
        .bind(after)
        .bind(limit)
        .fetch_all(c)
        .await)?;
    Ok(rows.into_iter().map(Into::into).collect())
}

/// Unresolved payments last touched before `before` (the worker asks their gateway).
pub async fn unresolved(db: &Db, before: DateTime<Utc>, limit: i64) -> sqlx::Result<Vec<Payment>> {
    let rows: Vec<PaymentRow> = sql!(db, |c| sqlx::query_as(payment_select!(
        "WHERE status IN ('pending', 'unknown') AND updated_at < $1 ORDER BY updated_at LIMIT $2"
    ))
    .bind(before)
    .bind(limit)
    .fetch_all(c)
    .await)?;
    Ok(rows.into_iter().map(Into::into).collect())
}

/// Records which gateway is being asked, before asking it, so a crash knows where to look.
pub async fn set_gateway(
    db: &Db,
    id: PaymentId,
    gateway: &str,
    attempted: &[String],
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    sql_exec!(db, |c| sqlx::query("UPDATE payments SET gateway = $2, attempted = $3, updated_at = $4 WHERE id = $1")
        .bind(id)
        .bind(gateway)
        .bind(attempted.join(","))
        .bind(now)
        .execute(c)
        .await)?;
    Ok(())
}

pub struct StatusChange<'a> {
    pub id: PaymentId,
    pub from: PaymentStatus,
    pub to: PaymentStatus,
    pub transaction_id: Option<&'a str>,
    pub failure_reason: Option<&'a str>,
    pub at: DateTime<Utc>,
}

/// Ends `tx` with the payment moved from `from` to `to`, committing what the transaction deferred
/// (its event) with it; if the payment was no longer in `from`, rolls all of it back and returns
/// `false`. On PostgreSQL a transaction that only deferred writes is then one statement (see
/// `Tx::commit_if`).
pub async fn commit_status_change(tx: Tx, change: &StatusChange<'_>) -> sqlx::Result<bool> {
    let guard = Write::new(
        "UPDATE payments SET status = $3, transaction_id = COALESCE($4, transaction_id), failure_reason = $5,
         updated_at = $6, charge_token = NULL WHERE id = $1 AND status = $2",
    )
    .bind(change.id)
    .bind(change.from.as_str())
    .bind(change.to.as_str())
    .bind(change.transaction_id.map(str::to_owned))
    .bind(change.failure_reason.map(str::to_owned))
    .bind(change.at);
    tx.commit_if(guard).await
}

/// Adds a refund to the payment if it still leaves `refunded <= amount`.
pub async fn add_refunded(
    tx: &mut Tx,
    id: PaymentId,
    amount: i64,
    status: PaymentStatus,
    at: DateTime<Utc>,
) -> sqlx::Result<bool> {
    let n = sql_exec!(tx, |c| sqlx::query(
        "UPDATE payments SET refunded = refunded + $2, status = $3, updated_at = $4
         WHERE id = $1 AND refunded + $2 <= amount AND status IN ('captured', 'partially_refunded')"
    )
    .bind(id)
    .bind(amount)
    .bind(status.as_str())
    .bind(at)
    .execute(c)
    .await)?;
    Ok(n == 1)
}

pub struct RefundRecord<'a> {
    pub id: RefundId,
    pub payment_id: PaymentId,
    pub idempotency_key: &'a str,
    pub amount: i64,
    pub reason: &'a str,
    pub gateway_refund_id: &'a str,
    pub at: DateTime<Utc>,
}

pub async fn insert_refund(tx: &mut Tx, r: &RefundRecord<'_>) -> sqlx::Result<()> {
    sql_exec!(tx, |c| sqlx::query(
        "INSERT INTO refunds (id, payment_id, idempotency_key, amount, reason, gateway_refund_id, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)"
    )
    .bind(r.id)
    .bind(r.payment_id)
    .bind(r.idempotency_key)
    .bind(r.amount)
    .bind(r.reason)
    .bind(r.gateway_refund_id)
    .bind(r.at)
    .execute(c)
    .await)?;
    Ok(())
}

pub async fn refund_exists(db: &Db, key: &str) -> sqlx::Result<bool> {
    let found: Option<i32> = sql!(db, |c| sqlx::query_scalar("SELECT 1 FROM refunds WHERE idempotency_key = $1")
        .bind(key)
        .fetch_optional(c)
        .await)?;
    Ok(found.is_some())
}

/// Records a webhook delivery; `false` when this event was applied before.
pub async fn first_webhook(tx: &mut Tx, gateway: &str, event_id: &str, at: DateTime<Utc>) -> sqlx::Result<bool> {
    let n = sql_exec!(tx, |c| sqlx::query(
        "INSERT INTO webhook_events (gateway, event_id, received_at) VALUES ($1, $2, $3)
         ON CONFLICT (gateway, event_id) DO NOTHING"
    )
    .bind(gateway)
    .bind(event_id)
    .bind(at)
    .execute(c)
    .await)?;
    Ok(n == 1)
}
