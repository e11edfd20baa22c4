//! The wishlist: products a shopper keeps for later, shown with a product summary and whether
//! they are in stock, and moved into the cart in one step. Owns the `wishlist_items` table.

use crate::events::WishlistItemAdded;
use chrono::{DateTime, Utc};
use emporium_cart::{CartClient, CartError};
use emporium_catalog::CatalogClient;
use emporium_inventory::InventoryClient;
use emporium_kernel::clock::SharedClock;
use emporium_kernel::db::Db;
use emporium_kernel::error::{ApiError, ErrorCode};
use emporium_kernel::ids::{ProductId, UserId};
use emporium_kernel::money::Money;
use emporium_kernel::{events, sql, sql_exec};
use serde::Serialize;

/// Enough for any shopper; one page.
pub const MAX_WISHLIST_ITEMS: i64 = 200;

/// The services the wishlist and the login cart merge talk to.
#[derive(Clone)]
pub struct ShopClients {
    pub catalog: CatalogClient,
    pub inventory: InventoryClient,
    pub cart: CartClient,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct WishlistItem {
    pub product_id: ProductId,
    pub title: String,
    pub brand: String,
    pub price: Money,
    pub image: Option<String>,
    pub in_stock: bool,
    pub available: i64,
    pub added_at: DateTime<Utc>,
}

pub struct WishlistService {
    db: Db,
    clock: SharedClock,
    shop: ShopClients,
}

fn unavailable(err: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorCode::Unavailable).with_detail(format!("a service the wishlist depends on failed: {err}"))
}

impl WishlistService {
    pub fn new(db: Db, clock: SharedClock, shop: ShopClients) -> Self {
        Self { db, clock, shop }
    }

    pub fn shop(&self) -> &ShopClients {
        &self.shop
    }

    /// Adds a live product; adding it again changes nothing (and emits nothing).
    pub async fn add(&self, user: UserId, product: ProductId) -> Result<Vec<WishlistItem>, ApiError> {
        if self.shop.catalog.product(product).await.map_err(unavailable)?.is_none() {
            return Err(ApiError::not_found("product"));
        }
        let mut tx = self.db.begin().await.map_err(ApiError::internal)?;
        let count: i64 = sql!(tx, |c| sqlx::query_scalar("SELECT COUNT(*) FROM wishlist_items WHERE user_id = $1")
            .bind(user)
            .fetch_one(c)
            .await)
        .map_err(ApiError::internal)?;
        if count >= MAX_WISHLIST_ITEMS {
            return Err(ApiError::conflict(format!("the wishlist is full ({MAX_WISHLIST_ITEMS} products)")));
        }
        let added = sql_exec!(tx, |c| sqlx::query(
            "INSERT INTO wishlist_items (user_id, product_id, added_at) VALUES ($1, $2, $3)
             ON CONFLICT (user_id, product_id) DO NOTHING"
        )
        .bind(user)
        .bind(product)
        .bind(self.clock.now())
        .execute(c)
        .await)
        .map_err(ApiError::internal)?;
        if added > 0 {
            events::append(&mut tx, &WishlistItemAdded { user_id: user, product_id: product })
                .await
                .map_err(ApiError::internal)?;
        }
        tx.commit().await.map_err(ApiError::internal)?;
        self.list(user).await
    }

    pub async fn remove(&self, user: UserId, product: ProductId) -> Result<(), ApiError> {
        let db = &self.db;
        let removed =
            sql_exec!(db, |c| sqlx::query("DELETE FROM wishlist_items WHERE user_id = $1 AND product_id = $2")
                .bind(user)
                .bind(product)
                .execute(c)
                .await)
            .map_err(ApiError::internal)?;
        if removed == 0 {
            return Err(ApiError::new(ErrorCode::NotFound).with_detail("this product is not on the wishlist"));
        }
        Ok(())
    }

    /// Newest first. Products deleted from the catalog are left out.
    pub async fn list(&self, user: UserId) -> Result<Vec<WishlistItem>, ApiError> {
        let db = &self.db;
        let rows: Vec<(ProductId, DateTime<Utc>)> = sql!(db, |c| sqlx::query_as(
            "SELECT product_id, added_at FROM wishlist_items WHERE user_id = $1 ORDER BY added_at DESC, product_id"
        )
        .bind(user)
        .fetch_all(c)
        .await)
        .map_err(ApiError::internal)?;
        let ids: Vec<ProductId> = rows.iter().map(|(id, _)| *id).collect();
        let stock = self.shop.inventory.stock(&ids).await.map_err(unavailable)?;
        let mut items = Vec::with_capacity(rows.len());
        for (product_id, added_at) in rows {
            let Some(product) = self.shop.catalog.product(product_id).await.map_err(unavailable)? else { continue };
            let available = stock.get(&product_id).map_or(0, |s| s.available);
            items.push(WishlistItem {
                product_id,
                title: product.title,
                brand: product.brand,
                price: product.price,
                image: product.images.into_iter().next(),
                in_stock: available > 0,
                available,
                added_at,
            });
        }
        Ok(items)
    }

    /// Puts the product in the cart and, once it is there, takes it off the wishlist.
    pub async fn move_to_cart(
        &self,
        user: UserId,
        product: ProductId,
        quantity: i64,
    ) -> Result<emporium_cart::model::PricedCart, ApiError> {
        let db = &self.db;
        let on_list: Option<i32> =
            sql!(db, |c| sqlx::query_scalar("SELECT 1 FROM wishlist_items WHERE user_id = $1 AND product_id = $2")
                .bind(user)
                .bind(product)
                .fetch_optional(c)
                .await)
            .map_err(ApiError::internal)?;
        if on_list.is_none() {
            return Err(ApiError::new(ErrorCode::NotFound).with_detail("this product is not on the wishlist"));
        }
        let cart = self.shop.cart.add_item(user, product, quantity).await.map_err(|e: CartError| ApiError::from(e))?;
        self.remove(user, product).await?;
        Ok(cart)
    }
}
