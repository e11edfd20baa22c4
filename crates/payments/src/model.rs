//! Payments and refunds, and the rules that move them: pure, no I/O.

use chrono::{DateTime, Utc};
use emporium_kernel::ids::PaymentId;
use emporium_kernel::money::Money;
use serde::{Deserialize, Serialize};

/// Where a payment stands. PENDING: asked, the gateway will answer later (async confirmation).
/// UNKNOWN: the call timed out, so the gateway may or may not have charged; only asking the
/// gateway resolves it. CAPTURED: the money is ours (the sandbox and the Stripe-style gateway
/// capture on confirmation, so there is no separate AUTHORIZED step).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PaymentStatus {
    Pending,
    Unknown,
    Captured,
    Failed,
    Refunded,
    PartiallyRefunded,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Pending => "pending",
            PaymentStatus::Unknown => "unknown",
            PaymentStatus::Captured => "captured",
            PaymentStatus::Failed => "failed",
            PaymentStatus::Refunded => "refunded",
            PaymentStatus::PartiallyRefunded => "partially_refunded",
        }
    }

    pub fn parse(raw: &str) -> Option<PaymentStatus> {
        [
            PaymentStatus::Pending,
            PaymentStatus::Unknown,
            PaymentStatus::Captured,
            PaymentStatus::Failed,
            PaymentStatus::Refunded,
            PaymentStatus::PartiallyRefunded,
        ]
        .into_iter()
        .find(|s| s.as_str() == raw)
    }

    /// Not decided yet: the gateway must be asked (or will call back).
    pub fn is_unresolved(self) -> bool {
        matches!(self, PaymentStatus::Pending | PaymentStatus::Unknown)
    }

    /// The customer was charged (some of it may have been given back since).
    pub fn was_charged(self) -> bool {
        matches!(self, PaymentStatus::Captured | PaymentStatus::Refunded | PaymentStatus::PartiallyRefunded)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Payment {
    pub id: PaymentId,
    /// What is paid for (an order id).
    pub reference: String,
    #[serde(skip)]
    pub idempotency_key: String,
    pub amount: Money,
    /// The gateway that holds (or last held) the charge.
    pub gateway: String,
    #[serde(skip)]
    pub attempted: Vec<String>,
    pub transaction_id: Option<String>,
    pub status: PaymentStatus,
    pub failure_reason: Option<String>,
    /// Minor units given back so far.
    pub refunded: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What a gateway says about a charge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChargeState {
    Succeeded,
    /// Accepted, confirmation follows (webhook).
    Processing,
    Declined(String),
}

/// A charge as the gateway's books show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayCharge {
    pub transaction_id: Option<String>,
    pub state: ChargeState,
    pub amount: i64,
    pub refunded: i64,
}

/// The status a payment takes when the gateway reports `state`.
pub fn status_for(state: &ChargeState) -> PaymentStatus {
    match state {
        ChargeState::Succeeded => PaymentStatus::Captured,
        ChargeState::Processing => PaymentStatus::Pending,
        ChargeState::Declined(_) => PaymentStatus::Failed,
    }
}

/// Whether a gateway report may change a payment now in `current`. Unresolved payments take any
/// answer. A payment given up as failed (its order expired) still takes a late success: the money
/// was taken and must be seen, so it can be refunded. Decided payments otherwise keep their state.
pub fn accepts_report(current: PaymentStatus, reported: PaymentStatus) -> bool {
    match current {
        PaymentStatus::Pending | PaymentStatus::Unknown => reported != current,
        PaymentStatus::Failed => reported == PaymentStatus::Captured,
        _ => false,
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RefundRejection {
    #[error("only a captured payment can be refunded (this one is {0})")]
    NotCaptured(&'static str),
    #[error("the amount must be between 1 and the {remaining} minor units not yet refunded")]
    TooMuch { remaining: i64 },
}

/// The status after refunding `amount` more, or why it cannot be refunded.
pub fn refund_outcome(payment: &Payment, amount: i64) -> Result<PaymentStatus, RefundRejection> {
    if !matches!(payment.status, PaymentStatus::Captured | PaymentStatus::PartiallyRefunded) {
        return Err(RefundRejection::NotCaptured(payment.status.as_str()));
    }
    let remaining = payment.amount.amount - payment.refunded;
    if amount < 1 || amount > remaining {
        return Err(RefundRejection::TooMuch { remaining });
    }
    Ok(if amount == remaining { PaymentStatus::Refunded } else { PaymentStatus::PartiallyRefunded })
}

/// The sandbox's own test card numbers: not cards anyone holds, accepted by the sandbox alone.
pub const SANDBOX_TEST_NUMBERS: [&str; 2] = ["4242424242424242", "4000000000000002"];

/// Whether a payment token is a card number (12 to 19 digits, spaces or dashes between, passing
/// the Luhn check): what a shop must never receive, store or log (PCI DSS scope). The payment
/// form sends the card to the gateway and the shop only a token.
pub fn is_card_number(token: &str) -> bool {
    let digits: Vec<u32> =
        token.chars().filter(|c| !matches!(c, ' ' | '-')).map(|c| c.to_digit(10).unwrap_or(99)).collect();
    if !(12..=19).contains(&digits.len()) || digits.iter().any(|d| *d > 9) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| if i % 2 == 1 { if d * 2 > 9 { d * 2 - 9 } else { d * 2 } } else { *d })
        .sum();
    sum.is_multiple_of(10)
}

/// Why a token may not be charged, if it may not: a card number, unless it is one of the
/// sandbox's test numbers and the sandbox is the gateway charging it.
pub fn token_refusal(token: &str, sandbox_charges: bool) -> Option<&'static str> {
    if !is_card_number(token) {
        return None;
    }
    let digits: String = token.chars().filter(|c| c.is_ascii_digit()).collect();
    if sandbox_charges && SANDBOX_TEST_NUMBERS.contains(&digits.as_str()) {
        return None;
    }
    Some("is a card number: send the token your payment form got from the gateway, never the card itself")
}

#[cfg(test)]
mod tests {
    use super::*;
    use emporium_kernel::money::Currency;

    fn payment(status: PaymentStatus, amount: i64, refunded: i64) -> Payment {
        Payment {
            id: PaymentId::new(),
            reference: "order".into(),
            idempotency_key: "k".into(),
            amount: Money::new(amount, Currency::USD),
            gateway: "sandbox".into(),
            attempted: vec!["sandbox".into()],
            transaction_id: Some("t".into()),
            status,
            failure_reason: None,
            refunded,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn refunds_never_exceed_what_was_captured() {
        let p = payment(PaymentStatus::Captured, 1000, 0);
        assert_eq!(refund_outcome(&p, 400), Ok(PaymentStatus::PartiallyRefunded));
        assert_eq!(refund_outcome(&p, 1000), Ok(PaymentStatus::Refunded));
        assert_eq!(refund_outcome(&p, 1001), Err(RefundRejection::TooMuch { remaining: 1000 }));
        assert_eq!(refund_outcome(&p, 0), Err(RefundRejection::TooMuch { remaining: 1000 }));
        let partly = payment(PaymentStatus::PartiallyRefunded, 1000, 400);
        assert_eq!(refund_outcome(&partly, 600), Ok(PaymentStatus::Refunded));
        assert_eq!(refund_outcome(&partly, 601), Err(RefundRejection::TooMuch { remaining: 600 }));
        for status in [PaymentStatus::Pending, PaymentStatus::Unknown, PaymentStatus::Failed, PaymentStatus::Refunded] {
            assert!(matches!(refund_outcome(&payment(status, 1000, 0), 1), Err(RefundRejection::NotCaptured(_))));
        }
    }

    #[test]
    fn reports_resolve_open_payments_and_late_successes_are_kept() {
        use PaymentStatus::*;
        assert!(accepts_report(Unknown, Captured));
        assert!(accepts_report(Unknown, Failed));
        assert!(accepts_report(Pending, Captured));
        assert!(!accepts_report(Pending, Pending));
        assert!(accepts_report(Failed, Captured), "a late success after giving up must be recorded");
        assert!(!accepts_report(Failed, Failed));
        assert!(!accepts_report(Captured, Failed), "a duplicate or stale report cannot undo a capture");
        assert!(!accepts_report(Refunded, Captured));
    }

    #[test]
    fn statuses_round_trip() {
        for s in [PaymentStatus::Pending, PaymentStatus::PartiallyRefunded, PaymentStatus::Captured] {
            assert_eq!(PaymentStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(PaymentStatus::parse("nope"), None);
    }

    #[test]
    fn card_numbers_are_told_from_tokens_and_refused_but_sandbox_test_cards() {
        assert!(is_card_number("4111 1111 1111 1111"));
        assert!(is_card_number("5500-0000-0000-0004"));
        assert!(!is_card_number("4111 1111 1111 1112"), "fails the Luhn check");
        assert!(!is_card_number("tok_visa"));
        assert!(!is_card_number("pm_1234567890123456x"));
        assert!(!is_card_number("12345"));
        assert!(token_refusal("tok_visa", false).is_none());
        assert!(token_refusal("4111111111111111", true).is_some(), "a real-looking card, even with the sandbox");
        assert!(token_refusal("4242 4242 4242 4242", true).is_none(), "the sandbox's own test card");
        assert!(token_refusal("4242424242424242", false).is_some(), "a test card sent to a real gateway");
    }
}
