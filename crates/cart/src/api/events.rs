//! Events the cart emits, for recommendations and analytics.

use emporium_kernel::events::DomainEvent;
use emporium_kernel::ids::{ProductId, UserId};
use serde::{Deserialize, Serialize};

pub const SOURCE: &str = "cart";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CartItemAdded {
    /// `None` for a guest.
    pub user_id: Option<UserId>,
    pub product_id: ProductId,
    /// Units added now…
    pub quantity: i64,
    /// …and the line's quantity after.
    pub line_quantity: i64,
}

impl DomainEvent for CartItemAdded {
    const TYPE: &'static str = "CartItemAdded";
    fn aggregate_id(&self) -> String {
        self.product_id.to_string()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CartItemRemoved {
    pub user_id: Option<UserId>,
    pub product_id: ProductId,
}

impl DomainEvent for CartItemRemoved {
    const TYPE: &'static str = "CartItemRemoved";
    fn aggregate_id(&self) -> String {
        self.product_id.to_string()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CouponApplied {
    pub user_id: Option<UserId>,
    pub code: String,
    /// Minor units off the cart when it was applied.
    pub discount: i64,
}

impl DomainEvent for CouponApplied {
    const TYPE: &'static str = "CouponApplied";
    fn aggregate_id(&self) -> String {
        self.code.clone()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WishlistItemAdded {
    pub user_id: UserId,
    pub product_id: ProductId,
}

impl DomainEvent for WishlistItemAdded {
    const TYPE: &'static str = "WishlistItemAdded";
    fn aggregate_id(&self) -> String {
        self.user_id.to_string()
    }
}
