//! Events the payments service emits. The order service reacts to them: a payment confirmed
//! late (webhook, lookup after a timeout) confirms its order, or is refunded when the order is
//! already gone.

use emporium_kernel::events::DomainEvent;
use emporium_kernel::ids::PaymentId;
use emporium_kernel::money::Money;
use serde::{Deserialize, Serialize};

pub const SOURCE: &str = "payments";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PaymentSucceeded {
    pub payment_id: PaymentId,
    pub reference: String,
    pub amount: Money,
    pub gateway: String,
}

impl DomainEvent for PaymentSucceeded {
    const TYPE: &'static str = "PaymentSucceeded";
    fn aggregate_id(&self) -> String {
        self.reference.clone()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PaymentFailed {
    pub payment_id: PaymentId,
    pub reference: String,
    pub reason: String,
}

impl DomainEvent for PaymentFailed {
    const TYPE: &'static str = "PaymentFailed";
    fn aggregate_id(&self) -> String {
        self.reference.clone()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PaymentRefunded {
    pub payment_id: PaymentId,
    pub reference: String,
    pub amount: Money,
    /// Everything refunded so far.
    pub refunded_total: i64,
    pub reason: String,
}

impl DomainEvent for PaymentRefunded {
    const TYPE: &'static str = "PaymentRefunded";
    fn aggregate_id(&self) -> String {
        self.reference.clone()
    }
}
