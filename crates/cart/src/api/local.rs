//! The in-process client: the service itself, its errors narrowed to what a caller may see.

use super::{CartApi, CartError, PricedCart};
use crate::model::CartOwner;
use crate::service::{self, CartService};
use emporium_kernel::ids::{ProductId, UserId};

#[async_trait::async_trait]
impl CartApi for CartService {
    async fn cart(&self, user: UserId) -> Result<PricedCart, CartError> {
        Ok(CartService::cart(self, &CartOwner::User(user)).await?)
    }

    async fn remove_products(&self, user: UserId, products: &[ProductId]) -> Result<(), CartError> {
        Ok(CartService::remove_products(self, &CartOwner::User(user), products).await?)
    }

    async fn redeem_coupon(&self, code: &str, user: UserId, reference: &str) -> Result<(), CartError> {
        Ok(CartService::redeem_coupon(self, code, Some(user), reference).await?)
    }

    async fn release_coupon(&self, reference: &str) -> Result<(), CartError> {
        Ok(CartService::release_coupon(self, reference).await?)
    }
}

impl From<service::Error> for CartError {
    fn from(err: service::Error) -> Self {
        use service::Error as E;
        match err {
            E::Invalid(fields) => CartError::Invalid { fields },
            E::CouponNotFound => CartError::CouponNotFound,
            E::CouponRejected(reason) => CartError::CouponRejected { reason: reason.to_string() },
            E::Store(_) => CartError::Unavailable { message: emporium_kernel::error::internal_failure(&err) },
            _ => CartError::Unavailable { message: err.to_string() },
        }
    }
}
