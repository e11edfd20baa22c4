//! What other services may use of the cart: the client trait, the types it carries, its error
//! and the events the cart emits. Everything here is serialisable, so the same trait can be
//! implemented over HTTP; today the in-process implementation is the service itself.

pub mod events;
mod local;

pub use crate::model::{CouponView, PricedCart, PricedLine};
use emporium_kernel::error::FieldError;
use emporium_kernel::ids::{ProductId, UserId};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// How other services reach the cart (checkout reads it, takes its coupon, clears what it
/// bought).
#[async_trait::async_trait]
pub trait CartApi: Send + Sync {
    /// The user's cart priced now (checkout snapshots it).
    async fn cart(&self, user: UserId) -> Result<PricedCart, CartError>;

    /// Takes the products out of the user's cart (what an order bought).
    async fn remove_products(&self, user: UserId, products: &[ProductId]) -> Result<(), CartError>;

    /// Takes one use of the coupon for `reference` (once per reference).
    async fn redeem_coupon(&self, code: &str, user: UserId, reference: &str) -> Result<(), CartError>;

    /// Gives back the coupon use taken for `reference`, if any.
    async fn release_coupon(&self, reference: &str) -> Result<(), CartError>;
}

/// A cart client: in this process or (later) over HTTP.
pub type CartClient = Arc<dyn CartApi>;

/// Why a cart call failed, as a caller can act on it.
#[derive(Clone, Debug, PartialEq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "error", rename_all = "snake_case")]
pub enum CartError {
    #[error("invalid fields")]
    Invalid { fields: Vec<FieldError> },
    #[error("coupon not found")]
    CouponNotFound,
    #[error("{reason}")]
    CouponRejected { reason: String },
    /// Nothing the caller sent is wrong: the cart's storage or a service it calls failed (logged
    /// where it happened). Trying again later may work.
    #[error("{message}")]
    Unavailable { message: String },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::CouponRejection;
    use emporium_kernel::money::{Currency, Money};

    #[test]
    fn a_priced_cart_and_errors_cross_a_process_as_json() {
        let mut cart = PricedCart::empty(Currency::EUR);
        cart.subtotal = Money::new(4_000, Currency::EUR);
        cart.coupon = Some(CouponView::new("SPRING".into(), Some(CouponRejection::Expired)));
        let back: PricedCart = serde_json::from_str(&serde_json::to_string(&cart).unwrap()).unwrap();
        assert_eq!(back.subtotal, cart.subtotal);
        // The reason travels as its message; the typed rule stays in this crate.
        assert_eq!(back.coupon.unwrap().invalid_reason.as_deref(), Some("this coupon has expired"));
        for err in [
            CartError::CouponNotFound,
            CartError::CouponRejected { reason: "this coupon has been used up".into() },
            CartError::Invalid { fields: vec![FieldError::new("quantity", "must be at least 1")] },
        ] {
            let json = serde_json::to_value(&err).unwrap();
            assert_eq!(serde_json::from_value::<CartError>(json).unwrap(), err);
        }
    }
}
