//! The built-in sandbox gateway: no money moves, but it behaves like a real one. It keeps its
//! own books (the `sandbox_*` tables) keyed by the idempotency key, so a repeated charge is the
//! same charge and a timed-out one can be looked up afterwards. Test cards (API.md):
//! `tok_visa`/`4242424242424242` succeed, `tok_decline`/`4000000000000002` are declined,
//! `tok_timeout` is charged but never answered within any timeout, `tok_async` settles after a
//! delay and says so with a signed webhook.

use crate::gateway::{ChargeRequest, Gateway, GatewayError, WebhookError, WebhookEvent, event_body, read_signed_event};
use crate::model::{ChargeState, GatewayCharge};
use crate::signature;
use axum::http::{HeaderMap, HeaderValue};
use chrono::{DateTime, Utc};
use emporium_kernel::clock::SharedClock;
use emporium_kernel::money::Money;
use emporium_kernel::storage::Database;
use std::time::Duration;
use tokio::sync::mpsc;

pub const NAME: &str = "sandbox";
pub const SIGNATURE_HEADER: &str = "emporium-signature";

/// A webhook on its way to the payments service (the sandbox "calls back" in-process).
pub struct Delivery {
    pub gateway: &'static str,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

#[derive(Clone)]
pub struct SandboxGateway {
    storage: Database,
    clock: SharedClock,
    secret: Vec<u8>,
    async_delay: Duration,
    webhooks: mpsc::UnboundedSender<Delivery>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Card {
    Succeeds,
    Declined,
    Hangs,
    Async,
    Unknown,
}

fn card(token: &str) -> Card {
    match token.replace([' ', '-'], "").as_str() {
        "tok_visa" | "4242424242424242" => Card::Succeeds,
        "tok_decline" | "4000000000000002" => Card::Declined,
        "tok_timeout" => Card::Hangs,
        "tok_async" => Card::Async,
        _ => Card::Unknown,
    }
}

impl SandboxGateway {
    pub fn new(
        storage: Database,
        clock: SharedClock,
        secret: Vec<u8>,
        async_delay: Duration,
        webhooks: mpsc::UnboundedSender<Delivery>,
    ) -> Self {
        Self { storage, clock, secret, async_delay, webhooks }
    }

    async fn record(&self, key: &str) -> Result<Option<GatewayCharge>, GatewayError> {
        let key_owned = key.to_owned();
        let row = self
            .storage
            .read(move |tx| {
                let Some(row) = tx.query_opt(
                    "SELECT transaction_id, amount, status, decline_reason, refunded, settles_at
                     FROM sandbox_charges WHERE idempotency_key = $1",
                    &[&key_owned],
                )?
                else {
                    return Ok(None);
                };
                let read: (String, i64, String, Option<String>, i64, DateTime<Utc>) =
                    (row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?, row.get(5)?);
                Ok::<_, emporium_kernel::storage::Error>(Some(read))
            })
            .await
            .map_err(unavailable)?;
        let Some((transaction_id, amount, status, reason, refunded, settles_at)) = row else { return Ok(None) };
        let state = match status.as_str() {
            "succeeded" => ChargeState::Succeeded,
            // Settlement is due even if the task that would have announced it died with the process.
            "processing" if settles_at <= self.clock.now() => {
                self.settle(key).await?;
                ChargeState::Succeeded
            }
            "processing" => ChargeState::Processing,
            _ => ChargeState::Declined(reason.unwrap_or_else(|| "declined".into())),
        };
        Ok(Some(GatewayCharge { transaction_id: Some(transaction_id), state, amount, refunded }))
    }

    async fn settle(&self, key: &str) -> Result<bool, GatewayError> {
        let key = key.to_owned();
        let n = self
            .storage
            .write(move |tx| {
                tx.execute(
                    "UPDATE sandbox_charges SET status = 'succeeded' WHERE idempotency_key = $1 AND status = 'processing'",
                    &[&key],
                )
            })
            .await
            .map_err(unavailable)?;
        Ok(n == 1)
    }

    /// Settles an async charge after the delay and announces it with a signed webhook.
    fn settle_later(&self, key: String, reference: String) {
        let me = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(me.async_delay).await;
            match me.settle(&key).await {
                Ok(true) => {}
                Ok(false) => return, // settled by a lookup already; that lookup told the service
                Err(err) => return tracing::warn!(error = %err, "sandbox could not settle an async charge"),
            }
            let Ok(Some(charge)) = me.record(&key).await else { return };
            let body = sandbox_event(&key, &reference, &charge);
            let mut headers = HeaderMap::new();
            let signed = signature::sign(&me.secret, me.clock.now().timestamp(), &body);
            headers.insert(SIGNATURE_HEADER, HeaderValue::from_str(&signed).expect("ascii"));
            let _ = me.webhooks.send(Delivery { gateway: NAME, headers, body });
        });
    }
}

/// The webhook body for a sandbox charge (Stripe's event shape).
pub fn sandbox_event(key: &str, reference: &str, charge: &GatewayCharge) -> Vec<u8> {
    let status = match &charge.state {
        ChargeState::Succeeded => "succeeded",
        ChargeState::Processing => "processing",
        ChargeState::Declined(_) => "requires_payment_method",
    };
    let intent = serde_json::json!({
        "id": charge.transaction_id,
        "status": status,
        "amount": charge.amount,
        "amount_refunded": charge.refunded,
        "metadata": {"idempotency_key": key, "reference": reference},
    });
    event_body(&format!("evt_{}", uuid::Uuid::now_v7().simple()), &intent)
}

fn unavailable(err: impl std::fmt::Display) -> GatewayError {
    GatewayError::Unavailable(err.to_string())
}

#[async_trait::async_trait]
impl Gateway for SandboxGateway {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn charge(&self, req: &ChargeRequest<'_>) -> Result<GatewayCharge, GatewayError> {
        let card = card(req.token);
        let now = self.clock.now();
        let (status, reason, settles_at) = match card {
            Card::Succeeds | Card::Hangs => ("succeeded", None, now),
            Card::Declined => ("declined", Some("your card was declined"), now),
            Card::Unknown => {
                ("declined", Some("unknown test card; use tok_visa, tok_decline, tok_timeout or tok_async"), now)
            }
            Card::Async => ("processing", None, now + chrono::Duration::from_std(self.async_delay).expect("small")),
        };
        let transaction_id = format!("sbx_{}", uuid::Uuid::now_v7().simple());
        let row = (
            req.idempotency_key.to_owned(),
            transaction_id.clone(),
            req.amount,
            card_label(card),
            status,
            reason,
            settles_at,
            now,
        );
        let inserted = self
            .storage
            .write(move |tx| {
                let (key, transaction_id, amount, label, status, reason, settles_at, now) = row;
                tx.execute(
                    "INSERT INTO sandbox_charges
                     (idempotency_key, transaction_id, amount, currency, token, status, decline_reason, refunded, settles_at, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $9) ON CONFLICT (idempotency_key) DO NOTHING",
                    &[&key, &transaction_id, &amount.amount, &amount.currency.as_str(), &label, &status, &reason, &settles_at, &now],
                )
            })
            .await
            .map_err(unavailable)?;
        if inserted == 0 {
            // The same key again: answer what the first charge became.
            return self.record(req.idempotency_key).await?.ok_or_else(|| unavailable("the charge vanished"));
        }
        if card == Card::Async {
            self.settle_later(req.idempotency_key.to_owned(), req.reference.to_owned());
        }
        if card == Card::Hangs {
            // Charged, but the answer never comes: the caller's timeout decides.
            std::future::pending::<()>().await;
        }
        let state = match (status, reason) {
            ("succeeded", _) => ChargeState::Succeeded,
            ("processing", _) => ChargeState::Processing,
            (_, reason) => ChargeState::Declined(reason.unwrap_or("declined").to_owned()),
        };
        Ok(GatewayCharge { transaction_id: Some(transaction_id), state, amount: req.amount.amount, refunded: 0 })
    }

    async fn lookup(&self, idempotency_key: &str) -> Result<Option<GatewayCharge>, GatewayError> {
        self.record(idempotency_key).await
    }

    async fn refund(&self, transaction_id: &str, amount: Money, idempotency_key: &str) -> Result<String, GatewayError> {
        let (transaction_id, key) = (transaction_id.to_owned(), idempotency_key.to_owned());
        let refunded = self
            .storage
            .write(move |tx| -> Result<Option<String>, emporium_kernel::storage::Error> {
                let existing = tx.query_opt("SELECT refund_id FROM sandbox_refunds WHERE idempotency_key = $1", &[&key])?;
                if let Some(row) = existing {
                    return Ok(Some(row.get(0)?));
                }
                let updated = tx.execute(
                    "UPDATE sandbox_charges SET refunded = refunded + $2
                     WHERE transaction_id = $1 AND status = 'succeeded' AND refunded + $2 <= amount",
                    &[&transaction_id, &amount.amount],
                )?;
                if updated == 0 {
                    return Ok(None);
                }
                let refund_id = format!("sbx_re_{}", uuid::Uuid::now_v7().simple());
                tx.execute(
                    "INSERT INTO sandbox_refunds (idempotency_key, refund_id, transaction_id, amount) VALUES ($1, $2, $3, $4)",
                    &[&key, &refund_id, &transaction_id, &amount.amount],
                )?;
                Ok(Some(refund_id))
            })
            .await
            .map_err(unavailable)?;
        let Some(refund_id) = refunded else {
            return Err(GatewayError::Rejected("the charge cannot be refunded by that much".into()));
        };
        Ok(refund_id)
    }

    fn verify_webhook(&self, headers: &HeaderMap, body: &[u8], now: i64) -> Result<WebhookEvent, WebhookError> {
        read_signed_event(&self.secret, headers, SIGNATURE_HEADER, body, now)
    }
}

/// The sandbox never stores what was typed, only which test card it was.
fn card_label(card: Card) -> &'static str {
    match card {
        Card::Succeeds => "visa",
        Card::Declined => "decline",
        Card::Hangs => "timeout",
        Card::Async => "async",
        Card::Unknown => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_cards_by_token_or_number() {
        assert_eq!(card("tok_visa"), Card::Succeeds);
        assert_eq!(card("4242 4242 4242 4242"), Card::Succeeds);
        assert_eq!(card("4000-0000-0000-0002"), Card::Declined);
        assert_eq!(card("tok_timeout"), Card::Hangs);
        assert_eq!(card("tok_async"), Card::Async);
        assert_eq!(card("5555"), Card::Unknown);
    }
}
