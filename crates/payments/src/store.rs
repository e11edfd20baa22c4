//! The payments tables, one implementation for both backends, on the storage layer
//! (`kernel::storage`): every function runs inside a transaction closure. Status changes are
//! conditional on the status they leave, so a webhook, a lookup and the original call racing to
//! report the same charge apply it once.

use crate::model::{Payment, PaymentStatus};
use chrono::{DateTime, Utc};
use emporium_kernel::events::PendingEvent;
use emporium_kernel::ids::{PaymentId, RefundId};
use emporium_kernel::money::{Currency, Money};
use emporium_kernel::storage::{Result, Row, Tx};

const PAYMENT_COLUMNS: &str = "id, reference, idempotency_key, amount, currency, gateway, attempted, transaction_id, \
     status, failure_reason, refunded, created_at, updated_at";

fn payment_of(row: &Row) -> Result<Payment> {
    let currency: String = row.get(4)?;
    let attempted: String = row.get(6)?;
    let status: String = row.get(8)?;
    Ok(Payment {
        id: row.get(0)?,
        reference: row.get(1)?,
        idempotency_key: row.get(2)?,
        // The service only stores currencies it parsed and statuses it knows.
        amount: Money::new(row.get(3)?, Currency::parse(&currency).expect("stored currency is valid")),
        gateway: row.get(5)?,
        attempted: attempted.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect(),
        transaction_id: row.get(7)?,
        status: PaymentStatus::parse(&status).expect("stored status is known"),
        failure_reason: row.get(9)?,
        refunded: row.get(10)?,
        created_at: row.get(11)?,
        updated_at: row.get(12)?,
    })
}

fn one_payment(
    tx: &mut Tx<'_>,
    condition: &str,
    param: &dyn emporium_kernel::storage::Param,
) -> Result<Option<Payment>> {
    tx.query_opt(&format!("SELECT {PAYMENT_COLUMNS} FROM payments {condition}"), &[param])?
        .as_ref()
        .map(payment_of)
        .transpose()
}

/// Records a new payment, with the token its charge is sent with (kept while it is pending;
/// never a card number).
pub fn insert_payment(tx: &mut Tx<'_>, p: &Payment, token: Option<&str>) -> Result<()> {
    tx.execute(
        "INSERT INTO payments (id, reference, idempotency_key, amount, currency, gateway, attempted, transaction_id,
         status, failure_reason, refunded, created_at, updated_at, charge_token)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        &[
            &p.id,
            &p.reference,
            &p.idempotency_key,
            &p.amount.amount,
            &p.amount.currency.as_str(),
            &p.gateway,
            &p.attempted.join(","),
            &p.transaction_id,
            &p.status.as_str(),
            &p.failure_reason,
            &p.refunded,
            &p.created_at,
            &p.updated_at,
            &token,
        ],
    )?;
    Ok(())
}

/// Takes a pending payment whose last gateway call began before `abandoned_before` for a new
/// call, now: `None` when it was resolved or taken meanwhile (another resolver sends it). The
/// token to send it with comes back when taken.
pub fn take_abandoned(
    tx: &mut Tx<'_>,
    id: PaymentId,
    abandoned_before: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Option<Option<String>>> {
    let taken = tx.execute(
        "UPDATE payments SET updated_at = $3 WHERE id = $1 AND status = 'pending' AND updated_at < $2",
        &[&id, &abandoned_before, &now],
    )?;
    if taken == 0 {
        return Ok(None);
    }
    let token = tx.query_one("SELECT charge_token FROM payments WHERE id = $1", &[&id])?.get(0)?;
    Ok(Some(token))
}

pub fn payment_by_key(tx: &mut Tx<'_>, key: &str) -> Result<Option<Payment>> {
    one_payment(tx, "WHERE idempotency_key = $1", &key)
}

/// The latest payment made for `reference`.
pub fn payment_by_reference(tx: &mut Tx<'_>, reference: &str) -> Result<Option<Payment>> {
    one_payment(tx, "WHERE reference = $1 ORDER BY created_at DESC, id DESC LIMIT 1", &reference)
}

pub fn payment(tx: &mut Tx<'_>, id: PaymentId) -> Result<Option<Payment>> {
    one_payment(tx, "WHERE id = $1", &id)
}

/// Payments after `after` in id order, for reconciliation.
pub fn payments_after(tx: &mut Tx<'_>, after: Option<PaymentId>, limit: i64) -> Result<Vec<Payment>> {
    let after = after.unwrap_or(PaymentId(uuid::Uuid::nil()));
    let sql = format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE id > $1 ORDER BY id LIMIT $2");
    tx.query(&sql, &[&after, &limit])?.iter().map(payment_of).collect()
}

/// Unresolved payments last touched before `before` (the worker asks their gateway).
pub fn unresolved(tx: &mut Tx<'_>, before: DateTime<Utc>, limit: i64) -> Result<Vec<Payment>> {
    let sql = format!(
        "SELECT {PAYMENT_COLUMNS} FROM payments WHERE status IN ('pending', 'unknown') AND updated_at < $1
         ORDER BY updated_at LIMIT $2"
    );
    tx.query(&sql, &[&before, &limit])?.iter().map(payment_of).collect()
}

/// Records which gateway is being asked, before asking it, so a crash knows where to look.
pub fn set_gateway(
    tx: &mut Tx<'_>,
    id: PaymentId,
    gateway: &str,
    attempted: &[String],
    now: DateTime<Utc>,
) -> Result<()> {
    tx.execute(
        "UPDATE payments SET gateway = $2, attempted = $3, updated_at = $4 WHERE id = $1",
        &[&id, &gateway, &attempted.join(","), &now],
    )?;
    Ok(())
}

pub struct StatusChange {
    pub id: PaymentId,
    pub from: PaymentStatus,
    pub to: PaymentStatus,
    pub transaction_id: Option<String>,
    pub failure_reason: Option<String>,
    pub at: DateTime<Utc>,
}

/// Moves the payment from `from` to `to` and appends `events` with it; `false` (and nothing
/// written) when the payment was no longer in `from`.
pub fn change_status(tx: &mut Tx<'_>, change: &StatusChange, events: &[PendingEvent]) -> Result<bool> {
    let moved = tx.execute(
        "UPDATE payments SET status = $3, transaction_id = COALESCE($4, transaction_id), failure_reason = $5,
         updated_at = $6, charge_token = NULL WHERE id = $1 AND status = $2",
        &[
            &change.id,
            &change.from.as_str(),
            &change.to.as_str(),
            &change.transaction_id,
            &change.failure_reason,
            &change.at,
        ],
    )?;
    if moved == 0 {
        return Ok(false);
    }
    emporium_kernel::events::append_to(tx, events)?;
    Ok(true)
}

/// Adds a refund to the payment if it still leaves `refunded <= amount`.
pub fn add_refunded(
    tx: &mut Tx<'_>,
    id: PaymentId,
    amount: i64,
    status: PaymentStatus,
    at: DateTime<Utc>,
) -> Result<bool> {
    let n = tx.execute(
        "UPDATE payments SET refunded = refunded + $2, status = $3, updated_at = $4
         WHERE id = $1 AND refunded + $2 <= amount AND status IN ('captured', 'partially_refunded')",
        &[&id, &amount, &status.as_str(), &at],
    )?;
    Ok(n == 1)
}

pub struct RefundRecord {
    pub id: RefundId,
    pub payment_id: PaymentId,
    pub idempotency_key: String,
    pub amount: i64,
    pub reason: String,
    pub gateway_refund_id: String,
    pub at: DateTime<Utc>,
}

pub fn insert_refund(tx: &mut Tx<'_>, r: &RefundRecord) -> Result<()> {
    tx.execute(
        "INSERT INTO refunds (id, payment_id, idempotency_key, amount, reason, gateway_refund_id, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[&r.id, &r.payment_id, &r.idempotency_key, &r.amount, &r.reason, &r.gateway_refund_id, &r.at],
    )?;
    Ok(())
}

pub fn refund_exists(tx: &mut Tx<'_>, key: &str) -> Result<bool> {
    Ok(tx.query_opt("SELECT 1 FROM refunds WHERE idempotency_key = $1", &[&key])?.is_some())
}

/// Records a webhook delivery; `false` when this event was applied before.
pub fn first_webhook(tx: &mut Tx<'_>, gateway: &str, event_id: &str, at: DateTime<Utc>) -> Result<bool> {
    let n = tx.execute(
        "INSERT INTO webhook_events (gateway, event_id, received_at) VALUES ($1, $2, $3)
         ON CONFLICT (gateway, event_id) DO NOTHING",
        &[&gateway, &event_id, &at],
    )?;
    Ok(n == 1)
}
