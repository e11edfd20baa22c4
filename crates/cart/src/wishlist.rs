//! The wishlist: products a shopper keeps for later, shown with a product summary and whether
//! they are in stock, and moved into the cart in one step. Owns the `wishlist_items` table.

use crate::api::events::WishlistItemAdded;
use crate::model::{CartOwner, PricedCart};
use crate::service::{CartService, Error, Result, dependency};
use chrono::{DateTime, Utc};
use emporium_kernel::ids::{ProductId, UserId};
use emporium_kernel::money::Money;
use emporium_kernel::{events, sql, sql_exec};
use serde::Serialize;

/// Enough for any shopper; one page.
pub const MAX_WISHLIST_ITEMS: i64 = 200;

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

/// A row kept for a shopper, as stored (and as moved in from an older users database).
pub type WishlistRow = (UserId, ProductId, DateTime<Utc>);

impl CartService {
    /// Adds a live product; adding it again changes nothing (and emits nothing).
    pub async fn wishlist_add(&self, user: UserId, product: ProductId) -> Result<Vec<WishlistItem>> {
        if self.catalog.product(product).await.map_err(dependency)?.is_none() {
            return Err(Error::ProductNotFound);
        }
        let mut tx = self.db.begin().await?;
        let count: i64 = sql!(tx, |c| sqlx::query_scalar("SELECT COUNT(*) FROM wishlist_items WHERE user_id = $1")
            .bind(user)
            .fetch_one(c)
            .await)?;
        if count >= MAX_WISHLIST_ITEMS {
            return Err(Error::WishlistFull(MAX_WISHLIST_ITEMS));
        }
        let added = sql_exec!(tx, |c| sqlx::query(
            "INSERT INTO wishlist_items (user_id, product_id, added_at) VALUES ($1, $2, $3)
             ON CONFLICT (user_id, product_id) DO NOTHING"
        )
        .bind(user)
        .bind(product)
        .bind(self.clock.now())
        .execute(c)
        .await)?;
        if added > 0 {
            events::append(&mut tx, &WishlistItemAdded { user_id: user, product_id: product }).await?;
        }
        tx.commit().await?;
        self.wishlist(user).await
    }

    pub async fn wishlist_remove(&self, user: UserId, product: ProductId) -> Result<()> {
        let db = &self.db;
        let removed =
            sql_exec!(db, |c| sqlx::query("DELETE FROM wishlist_items WHERE user_id = $1 AND product_id = $2")
                .bind(user)
                .bind(product)
                .execute(c)
                .await)?;
        if removed == 0 {
            return Err(Error::NotOnWishlist);
        }
        Ok(())
    }

    /// Newest first. Products deleted from the catalog are left out.
    pub async fn wishlist(&self, user: UserId) -> Result<Vec<WishlistItem>> {
        let db = &self.db;
        let rows: Vec<(ProductId, DateTime<Utc>)> = sql!(db, |c| sqlx::query_as(
            "SELECT product_id, added_at FROM wishlist_items WHERE user_id = $1 ORDER BY added_at DESC, product_id"
        )
        .bind(user)
        .fetch_all(c)
        .await)?;
        let ids: Vec<ProductId> = rows.iter().map(|(id, _)| *id).collect();
        let stock = self.inventory.stock(&ids).await.map_err(dependency)?;
        let mut items = Vec::with_capacity(rows.len());
        for (product_id, added_at) in rows {
            let Some(product) = self.catalog.product(product_id).await.map_err(dependency)? else { continue };
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

    /// Puts the product in the cart and, once it is there, takes it off the wishlist. The cart
    /// answers as its shopper is shown it.
    pub async fn wishlist_move_to_cart(&self, user: UserId, product: ProductId, quantity: i64) -> Result<PricedCart> {
        let db = &self.db;
        let on_list: Option<i32> =
            sql!(db, |c| sqlx::query_scalar("SELECT 1 FROM wishlist_items WHERE user_id = $1 AND product_id = $2")
                .bind(user)
                .bind(product)
                .fetch_optional(c)
                .await)?;
        if on_list.is_none() {
            return Err(Error::NotOnWishlist);
        }
        let owner = CartOwner::User(user);
        let cart = self.add_item(&owner, product, quantity).await?;
        self.wishlist_remove(user, product).await?;
        self.shown(&owner, cart, None).await
    }

    /// Takes in rows kept elsewhere before (the users service's database, where the wishlist
    /// used to live). A row already here wins, so taking the same rows in twice changes nothing.
    pub async fn import_wishlist(&self, rows: &[WishlistRow]) -> Result<u64> {
        let mut tx = self.db.begin().await?;
        let mut added = 0;
        for (user, product, added_at) in rows {
            added += sql_exec!(tx, |c| sqlx::query(
                "INSERT INTO wishlist_items (user_id, product_id, added_at) VALUES ($1, $2, $3)
                 ON CONFLICT (user_id, product_id) DO NOTHING"
            )
            .bind(user)
            .bind(product)
            .bind(added_at)
            .execute(c)
            .await)?;
        }
        tx.commit().await?;
        Ok(added)
    }
}
