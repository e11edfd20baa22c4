//! What other services may use of payments: the client trait, the types it carries, its error
//! and the events payments emits. Everything here is serialisable, so the same trait can be
//! implemented over HTTP; today the in-process implementation is the service itself (`local`).

pub mod events;
mod local;

pub use crate::model::{Payment, PaymentStatus};
use emporium_kernel::error::FieldError;
use emporium_kernel::money::Money;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// How other services reach payments (the order service pays, resolves, gives up, refunds).
#[async_trait::async_trait]
pub trait PaymentsApi: Send + Sync {
    /// Whether `token` may be charged (checked before a checkout holds anything).
    async fn check_token(&self, token: &str) -> Result<(), PaymentsError>;

    /// Charges once per idempotency key; a retry answers the payment as it stands.
    async fn pay(&self, req: PayRequest) -> Result<Payment, PaymentsError>;

    /// The latest payment for `reference`, asking its gateway first when it is unresolved.
    async fn current(&self, reference: &str) -> Result<Option<Payment>, PaymentsError>;

    /// Stops waiting for an unresolved payment of `reference` (it fails unless its gateway says
    /// otherwise); answers the payment as it ends up.
    async fn give_up(&self, reference: &str) -> Result<Option<Payment>, PaymentsError>;

    /// Refunds `amount` (everything left when `None`) of `reference`'s payment, once per `key`.
    async fn refund(&self, req: RefundRequest) -> Result<Payment, PaymentsError>;
}

/// A payments client: in this process or (later) over HTTP.
pub type PaymentsClient = Arc<dyn PaymentsApi>;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PayRequest {
    /// What is paid for (an order id).
    pub reference: String,
    /// One payment per key; the order service uses one key per order.
    pub idempotency_key: String,
    pub amount: Money,
    pub token: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RefundRequest {
    pub reference: String,
    /// Minor units; everything not yet refunded when `None`.
    pub amount: Option<i64>,
    pub reason: String,
    /// One refund per key.
    pub key: String,
}

/// Why a payments call failed, as a caller can act on it.
#[derive(Clone, Debug, PartialEq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "error", rename_all = "snake_case")]
pub enum PaymentsError {
    #[error("invalid fields")]
    Invalid { fields: Vec<FieldError> },
    #[error("payment not found")]
    NotFound,
    #[error("{reason}")]
    RefundRejected { reason: String },
    /// Nothing the caller sent is wrong: a gateway or payments' own storage failed (logged where
    /// it happened). Trying again later may work.
    #[error("{message}")]
    Unavailable { message: String },
}

#[cfg(test)]
mod tests {
    use super::*;
    use emporium_kernel::money::Currency;

    #[test]
    fn requests_and_errors_cross_a_process_as_json() {
        let request = PayRequest {
            reference: "order-1".into(),
            idempotency_key: "order:1".into(),
            amount: Money::new(1_250, Currency::USD),
            token: "tok_visa".into(),
        };
        let back: PayRequest = serde_json::from_str(&serde_json::to_string(&request).unwrap()).unwrap();
        assert_eq!((back.reference, back.amount, back.token), (request.reference, request.amount, request.token));
        for err in [
            PaymentsError::Invalid { fields: vec![FieldError::new("payment_method.token", "is a card number")] },
            PaymentsError::NotFound,
            PaymentsError::RefundRejected { reason: "too much".into() },
            PaymentsError::Unavailable { message: "the gateway timed out".into() },
        ] {
            let json = serde_json::to_value(&err).unwrap();
            assert!(json["error"].is_string(), "{json}");
            assert_eq!(serde_json::from_value::<PaymentsError>(json).unwrap(), err);
        }
    }
}
