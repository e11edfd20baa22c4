//! The seam between the payments service and whoever moves the money. Gateways forward the
//! payment's idempotency key, so asking twice never charges twice, and can be asked what became
//! of a charge by that key (how an UNKNOWN payment is resolved).

use crate::model::{ChargeState, GatewayCharge};
use crate::signature::{self, SignatureError};
use axum::http::HeaderMap;
use emporium_kernel::money::Money;
use serde::Deserialize;

pub struct ChargeRequest<'a> {
    pub idempotency_key: &'a str,
    pub reference: &'a str,
    pub amount: Money,
    /// A payment method token (`tok_visa`) or test card number.
    pub token: &'a str,
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// Down, unreachable or answering 5xx: another gateway may be tried.
    #[error("the gateway is unavailable: {0}")]
    Unavailable(String),
    /// The gateway refused the request itself (bad key, bad parameters): not retryable.
    #[error("the gateway refused the request: {0}")]
    Rejected(String),
}

/// A webhook after its signature was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookEvent {
    /// The gateway's event id (deliveries of the same event share it).
    pub id: String,
    /// The payment's idempotency key, echoed from the charge's metadata.
    pub idempotency_key: String,
    pub charge: GatewayCharge,
}

#[async_trait::async_trait]
pub trait Gateway: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    /// Charges and captures. May take arbitrarily long: the caller bounds it with a timeout.
    async fn charge(&self, req: &ChargeRequest<'_>) -> Result<GatewayCharge, GatewayError>;
    /// What the gateway's books say about the charge made with `idempotency_key` (`None`: it
    /// never received one).
    async fn lookup(&self, idempotency_key: &str) -> Result<Option<GatewayCharge>, GatewayError>;
    /// Gives back `amount` of a charge; the key makes a retried refund one refund. Returns the
    /// gateway's refund id.
    async fn refund(&self, transaction_id: &str, amount: Money, idempotency_key: &str) -> Result<String, GatewayError>;
    /// Checks a webhook's signature and reads it.
    fn verify_webhook(&self, headers: &HeaderMap, body: &[u8], now: i64) -> Result<WebhookEvent, WebhookError>;
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error("the webhook body is not a payment event: {0}")]
    Body(String),
}

/// The event body both built-in gateways send (Stripe's shape, reduced to what we read).
#[derive(Deserialize)]
struct EventBody {
    id: String,
    data: EventData,
}

#[derive(Deserialize)]
struct EventData {
    object: IntentBody,
}

/// A PaymentIntent-like object, as the Stripe-style API and its webhooks carry it.
#[derive(Deserialize)]
pub(crate) struct IntentBody {
    pub id: String,
    pub status: String,
    pub amount: i64,
    #[serde(default)]
    pub amount_refunded: i64,
    #[serde(default)]
    pub metadata: std::collections::HashMap<String, String>,
    #[serde(default)]
    pub last_payment_error: Option<ErrorBody>,
}

#[derive(Deserialize)]
pub(crate) struct ErrorBody {
    pub message: String,
}

impl IntentBody {
    pub(crate) fn charge(&self) -> GatewayCharge {
        let state = match self.status.as_str() {
            "succeeded" => ChargeState::Succeeded,
            "processing" | "requires_capture" | "requires_confirmation" => ChargeState::Processing,
            _ => ChargeState::Declined(
                self.last_payment_error.as_ref().map_or_else(|| "declined".to_owned(), |e| e.message.clone()),
            ),
        };
        GatewayCharge {
            transaction_id: Some(self.id.clone()),
            state,
            amount: self.amount,
            refunded: self.amount_refunded,
        }
    }
}

/// Verifies `header_name` over `body` with `secret` and reads the event.
pub(crate) fn read_signed_event(
    secret: &[u8],
    headers: &HeaderMap,
    header_name: &str,
    body: &[u8],
    now: i64,
) -> Result<WebhookEvent, WebhookError> {
    let header = headers.get(header_name).and_then(|v| v.to_str().ok()).ok_or(SignatureError::Malformed)?;
    signature::verify(secret, header, body, now)?;
    let event: EventBody = serde_json::from_slice(body).map_err(|e| WebhookError::Body(e.to_string()))?;
    let idempotency_key = event
        .data
        .object
        .metadata
        .get("idempotency_key")
        .cloned()
        .ok_or_else(|| WebhookError::Body("metadata.idempotency_key is missing".into()))?;
    Ok(WebhookEvent { id: event.id, idempotency_key, charge: event.data.object.charge() })
}

/// The JSON body of an intent event, as both gateways send it.
pub(crate) fn event_body(event_id: &str, intent: &serde_json::Value) -> Vec<u8> {
    let kind = match intent["status"].as_str() {
        Some("succeeded") => "payment_intent.succeeded",
        Some("processing") => "payment_intent.processing",
        _ => "payment_intent.payment_failed",
    };
    serde_json::to_vec(&serde_json::json!({"id": event_id, "type": kind, "data": {"object": intent}}))
        .expect("json serialises")
}
