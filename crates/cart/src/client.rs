//! How other services reach the cart (the wishlist moves items into it, login merges a guest
//! cart, checkout reads and clears it).

use crate::model::{CartOwner, PricedCart};
use crate::service::{CartError, CartService};
use emporium_kernel::ids::{ProductId, UserId};
use std::sync::Arc;

#[derive(Clone)]
pub enum CartClient {
    Local(Arc<CartService>),
}

impl CartClient {
    pub fn local(service: Arc<CartService>) -> Self {
        CartClient::Local(service)
    }

    /// Adds to the user's cart and answers with it as the shopper is shown it (see
    /// [`CartService::shown`]).
    pub async fn add_item(&self, user: UserId, product: ProductId, quantity: i64) -> Result<PricedCart, CartError> {
        match self {
            CartClient::Local(svc) => {
                let owner = CartOwner::User(user);
                let cart = svc.add_item(&owner, product, quantity).await?;
                svc.shown(&owner, cart, None).await
            }
        }
    }

    /// Merges the guest cart named by `token` into the user's.
    pub async fn merge_guest(&self, token: &str, user: UserId) -> Result<PricedCart, CartError> {
        match self {
            CartClient::Local(svc) => svc.merge(&CartOwner::guest(token), user).await,
        }
    }

    /// The user's cart priced now (checkout snapshots it).
    pub async fn cart(&self, user: UserId) -> Result<PricedCart, CartError> {
        match self {
            CartClient::Local(svc) => svc.cart(&CartOwner::User(user)).await,
        }
    }

    pub async fn remove_products(&self, user: UserId, products: &[ProductId]) -> Result<(), CartError> {
        match self {
            CartClient::Local(svc) => svc.remove_products(&CartOwner::User(user), products).await,
        }
    }

    pub async fn redeem_coupon(&self, code: &str, user: UserId, reference: &str) -> Result<(), CartError> {
        match self {
            CartClient::Local(svc) => svc.redeem_coupon(code, Some(user), reference).await,
        }
    }

    pub async fn release_coupon(&self, reference: &str) -> Result<(), CartError> {
        match self {
            CartClient::Local(svc) => svc.release_coupon(reference).await,
        }
    }
}
