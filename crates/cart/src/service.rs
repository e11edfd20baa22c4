//! Cart use cases. Carts are re-priced from the catalog and checked against the inventory on
//! every read; coupons are validated against the priced cart each time, so a coupon that stops
//! applying stops discounting.

use crate::api::events::{CartItemAdded, CartItemRemoved, CouponApplied};
use crate::model::{
    CartData, CartLine, CartOwner, Coupon, CouponContext, CouponKind, CouponRejection, CouponView, PricedCart,
    PricedLine, check_quantity, merge_lines,
};
use crate::store::{self, CartStore, Seen};
use emporium_catalog::api::CatalogClient;
use emporium_inventory::api::InventoryClient;
use emporium_inventory::api::StockLevels;
use emporium_kernel::clock::SharedClock;
use emporium_kernel::db::{Db, is_unique_violation};
use emporium_kernel::error::{ApiError, ErrorCode, FieldError};
use emporium_kernel::events::PendingEvent;
use emporium_kernel::geo::Destination;
use emporium_kernel::ids::{CategoryId, CouponId, ProductId, UserId};
use emporium_kernel::money::{Currency, Money};
use emporium_users::api::UsersClient;
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("product not found")]
    ProductNotFound,
    #[error("this product is not in the cart")]
    LineNotFound,
    #[error("only {available} of this product are in stock")]
    OutOfStock { product_id: ProductId, requested: i64, available: i64 },
    #[error("the cart holds {0} prices; this product is priced in {1}")]
    CurrencyMismatch(Currency, Currency),
    #[error("invalid fields")]
    Invalid(Vec<FieldError>),
    #[error("coupon not found")]
    CouponNotFound,
    #[error("a coupon with this code already exists")]
    CouponExists,
    #[error("{0}")]
    CouponRejected(CouponRejection),
    #[error("the wishlist is full ({0} products)")]
    WishlistFull(i64),
    #[error("this product is not on the wishlist")]
    NotOnWishlist,
    #[error("a service the cart depends on failed: {0}")]
    Dependency(String),
    #[error("storage failed")]
    Store(#[from] anyhow::Error),
}

impl From<sqlx::Error> for Error {
    fn from(err: sqlx::Error) -> Self {
        Error::Store(err.into())
    }
}

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        let detail = err.to_string();
        match err {
            Error::ProductNotFound => ApiError::not_found("product"),
            Error::LineNotFound | Error::NotOnWishlist => ApiError::new(ErrorCode::NotFound).with_detail(detail),
            Error::OutOfStock { product_id, requested, available } => ApiError::conflict(detail).with_extra(
                "lines",
                [serde_json::json!({"product_id": product_id, "requested": requested, "available": available})],
            ),
            Error::CurrencyMismatch(..) | Error::CouponExists | Error::WishlistFull(_) => ApiError::conflict(detail),
            Error::Invalid(errors) => ApiError::validation(errors),
            Error::CouponNotFound => ApiError::validation(vec![FieldError::new("code", "is not a known coupon")]),
            Error::CouponRejected(reason) => ApiError::validation(vec![FieldError::new("code", reason.to_string())]),
            Error::Dependency(_) => ApiError::new(ErrorCode::Unavailable).with_detail(detail),
            Error::Store(e) => ApiError::internal(e),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub struct NewCoupon {
    pub code: String,
    pub kind: CouponKind,
    pub value: i64,
    pub min_subtotal: Option<i64>,
    pub starts_at: Option<chrono::DateTime<chrono::Utc>>,
    pub ends_at: Option<chrono::DateTime<chrono::Utc>>,
    pub max_uses: Option<i64>,
    pub max_uses_per_user: Option<i64>,
    pub category_ids: Vec<CategoryId>,
}

pub struct CartService {
    pub(crate) db: Db,
    store: Arc<dyn CartStore>,
    pub(crate) catalog: CatalogClient,
    pub(crate) inventory: InventoryClient,
    /// Where a signed-in shopper's orders ship unless they pick another address: their default
    /// address, which the users service keeps (absent when it runs elsewhere).
    users: Option<UsersClient>,
    pub(crate) clock: SharedClock,
    max_quantity: i64,
    /// The shop's currency: what an empty cart is priced in.
    currency: Currency,
}

pub(crate) fn dependency(err: impl std::error::Error + 'static) -> Error {
    Error::Dependency(emporium_kernel::error::dependency_failed(&err))
}

impl CartService {
    pub fn new(
        db: Db,
        store: Arc<dyn CartStore>,
        catalog: CatalogClient,
        inventory: InventoryClient,
        clock: SharedClock,
        max_quantity: i64,
        currency: Currency,
    ) -> Self {
        Self { db, store, catalog, inventory, users: None, clock, max_quantity, currency }
    }

    /// A cart with nothing in it, in the shop's currency.
    pub fn empty_cart(&self) -> PricedCart {
        PricedCart::empty(self.currency)
    }

    /// Lets carts say whether each line can be delivered to a signed-in shopper's default address.
    pub fn with_users(mut self, users: UsersClient) -> Self {
        self.users = Some(users);
        self
    }

    pub fn store(&self) -> &Arc<dyn CartStore> {
        &self.store
    }

    pub fn max_quantity(&self) -> i64 {
        self.max_quantity
    }

    async fn data(&self, owner: &CartOwner) -> Result<CartData> {
        Ok(self.store.load(&owner.key(), self.clock.now()).await?.unwrap_or_default())
    }

    async fn available(&self, product: ProductId) -> Result<i64> {
        let stock = self.inventory.stock(&[product]).await.map_err(dependency)?;
        Ok(stock.get(&product).map_or(0, |s| s.available))
    }

    /// The cart priced now: current prices, stock flags, the coupon's discount.
    pub async fn cart(&self, owner: &CartOwner) -> Result<PricedCart> {
        let data = self.data(owner).await?;
        self.price(owner, data).await
    }

    /// `cart` as its shopper is shown it: each line says whether it can be delivered to `to`, or
    /// else to the signed-in shopper's default address; unmarked when neither is known. Only
    /// shoppers' views pay for it: checkout's own read of the cart does not need it, because its
    /// reservation judges deliverability itself.
    pub async fn shown(&self, owner: &CartOwner, mut cart: PricedCart, to: Option<Destination>) -> Result<PricedCart> {
        if cart.items.is_empty() {
            return Ok(cart);
        }
        let to = match (to, owner.user(), &self.users) {
            (Some(to), _, _) => Some(to),
            (None, Some(user), Some(users)) => match users.default_address(user).await {
                Ok(address) => address.map(|a| a.destination()),
                Err(err) => {
                    // A hint: the cart still answers without it.
                    tracing::warn!(error = %err, "reading the shopper's default address failed");
                    None
                }
            },
            _ => None,
        };
        let Some(to) = to.filter(Destination::is_known) else { return Ok(cart) };
        let products: Vec<ProductId> = cart.items.iter().map(|l| l.product_id).collect();
        let reachable = self.inventory.deliverable_units(&products, &to).await.map_err(dependency)?;
        cart.mark_deliverable(&reachable);
        Ok(cart)
    }

    pub async fn add_item(&self, owner: &CartOwner, product_id: ProductId, quantity: i64) -> Result<PricedCart> {
        let product = self.catalog.product(product_id).await.map_err(dependency)?.ok_or(Error::ProductNotFound)?;
        let loaded = self.store.load(&owner.key(), self.clock.now()).await?;
        let seen = if loaded.is_some() { Seen::Live } else { Seen::Unknown };
        let data = loaded.unwrap_or_default();
        if let Some(first) = data.lines.first()
            && first.unit_price.currency != product.price.currency
        {
            return Err(Error::CurrencyMismatch(first.unit_price.currency, product.price.currency));
        }
        let existing = data.lines.iter().find(|l| l.product_id == product_id);
        let wanted = existing.map_or(0, |l| l.quantity) + quantity;
        check_quantity(wanted, self.max_quantity)
            .map_err(|m| Error::Invalid(vec![FieldError::new("quantity", format!("the line's total {m}"))]))?;
        // One stock read for the check and for pricing the cart that is answered.
        let mut products: Vec<ProductId> = data.lines.iter().map(|l| l.product_id).collect();
        if existing.is_none() {
            products.push(product_id);
        }
        let stock = self.inventory.stock(&products).await.map_err(dependency)?;
        let available = stock.get(&product_id).map_or(0, |s| s.available);
        if available < wanted {
            return Err(Error::OutOfStock { product_id, requested: wanted, available });
        }
        let now = self.clock.now();
        let line = CartLine { product_id, quantity: wanted, unit_price: product.price, added_at: now };
        let added = CartItemAdded { user_id: owner.user(), product_id, quantity, line_quantity: wanted };
        self.store.put_line(&owner.key(), &line, seen, now, &[PendingEvent::of(&added)?]).await?;
        metrics::counter!("cart_items_added_total").increment(1);
        // The cart as the write left it, without reading it back: an existing line keeps its
        // price snapshot and time, a new one comes last.
        let mut data = data;
        match data.lines.iter_mut().find(|l| l.product_id == product_id) {
            Some(existing) => existing.quantity = wanted,
            None => data.lines.push(line),
        }
        self.price_with_stock(owner, data, &stock).await
    }

    pub async fn set_quantity(&self, owner: &CartOwner, product_id: ProductId, quantity: i64) -> Result<PricedCart> {
        let data = self.data(owner).await?;
        let line = data.lines.iter().find(|l| l.product_id == product_id).ok_or(Error::LineNotFound)?;
        if quantity > line.quantity {
            let available = self.available(product_id).await?;
            if available < quantity {
                return Err(Error::OutOfStock { product_id, requested: quantity, available });
            }
        }
        let now = self.clock.now();
        // The line was just read: the cart is live.
        self.store.put_line(&owner.key(), &CartLine { quantity, ..line.clone() }, Seen::Live, now, &[]).await?;
        self.cart(owner).await
    }

    pub async fn remove_item(&self, owner: &CartOwner, product_id: ProductId) -> Result<PricedCart> {
        if self.remove_lines(owner, &[product_id]).await?.is_empty() {
            return Err(Error::LineNotFound);
        }
        self.cart(owner).await
    }

    /// Applies a coupon if it applies to the cart as it is now (422 with the reason if not).
    pub async fn apply_coupon(&self, owner: &CartOwner, raw_code: &str) -> Result<PricedCart> {
        let code = crate::model::normalise_code(raw_code).map_err(|_| Error::CouponNotFound)?;
        store::coupon(&self.db, &code).await?.ok_or(Error::CouponNotFound)?;
        let mut data = self.data(owner).await?;
        data.coupon = Some(code.clone());
        let priced = self.price(owner, data).await?;
        if let Some(reason) = priced.coupon.as_ref().and_then(|c| c.rejection.clone()) {
            return Err(Error::CouponRejected(reason));
        }
        let applied = CouponApplied { user_id: owner.user(), code: code.clone(), discount: priced.discount.amount };
        self.store.set_coupon(&owner.key(), Some(&code), self.clock.now(), &[PendingEvent::of(&applied)?]).await?;
        Ok(priced)
    }

    pub async fn remove_coupon(&self, owner: &CartOwner) -> Result<PricedCart> {
        self.store.set_coupon(&owner.key(), None, self.clock.now(), &[]).await?;
        self.cart(owner).await
    }

    /// Moves a guest's cart into the user's: quantities summed, capped by the line maximum and
    /// stock; the guest cart is gone afterwards. Merging an empty or unknown guest cart is a no-op.
    pub async fn merge(&self, guest: &CartOwner, user: UserId) -> Result<PricedCart> {
        let owner = CartOwner::User(user);
        let now = self.clock.now();
        let Some(guest_cart) = self.store.load(&guest.key(), now).await? else {
            return self.cart(&owner).await;
        };
        let mine = self.data(&owner).await?;
        let products: Vec<ProductId> = mine
            .lines
            .iter()
            .chain(&guest_cart.lines)
            .map(|l| l.product_id)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let stock = self.inventory.stock(&products).await.map_err(dependency)?;
        let merged = merge_lines(&mine.lines, &guest_cart.lines, self.max_quantity, |p| {
            stock.get(&p).map_or(0, |s| s.available)
        });
        for line in &merged {
            self.store.put_line(&owner.key(), line, Seen::Unknown, now, &[]).await?;
        }
        if mine.coupon.is_none()
            && let Some(code) = &guest_cart.coupon
        {
            self.store.set_coupon(&owner.key(), Some(code), now, &[]).await?;
        }
        self.store.delete(&guest.key()).await?;
        self.cart(&owner).await
    }

    /// Empties a cart (after a confirmed order).
    pub async fn clear(&self, owner: &CartOwner) -> Result<()> {
        Ok(self.store.delete(&owner.key()).await?)
    }

    pub async fn purge_expired(&self) -> Result<u64> {
        Ok(self.store.purge_expired(self.clock.now()).await?)
    }

    async fn price(&self, owner: &CartOwner, data: CartData) -> Result<PricedCart> {
        let products: Vec<ProductId> = data.lines.iter().map(|l| l.product_id).collect();
        let stock = self.inventory.stock(&products).await.map_err(dependency)?;
        self.price_with_stock(owner, data, &stock).await
    }

    /// [`Self::price`] with the stock of every line already read.
    async fn price_with_stock(
        &self,
        owner: &CartOwner,
        data: CartData,
        stock: &HashMap<ProductId, StockLevels>,
    ) -> Result<PricedCart> {
        let mut items = Vec::new();
        let mut removed = Vec::new();
        let mut categories_of = Vec::new();
        for line in &data.lines {
            let Some(product) = self.catalog.product(line.product_id).await.map_err(dependency)? else {
                removed.push(line.product_id);
                continue;
            };
            let available = stock.get(&line.product_id).map_or(0, |s| s.available);
            let line_total = product.price.checked_mul(line.quantity).map_err(|e| Error::Store(e.into()))?;
            categories_of.push(product.category_id);
            items.push(PricedLine {
                product_id: line.product_id,
                title: product.title,
                quantity: line.quantity,
                unit_price: product.price,
                added_price: line.unit_price,
                line_total,
                price_changed: product.price != line.unit_price,
                in_stock: available >= line.quantity,
                available,
                deliverable: None,
            });
        }
        // Deleted products leave the cart for good.
        if !removed.is_empty() {
            self.remove_lines(owner, &removed).await?;
        }
        let currency = items.first().map_or(self.currency, |i| i.unit_price.currency);
        let mut cart = PricedCart::empty(currency);
        cart.removed_products = removed;
        let mut subtotal = Money::zero(currency);
        for item in &items {
            subtotal = subtotal.checked_add(item.line_total).map_err(|e| Error::Store(e.into()))?;
        }
        cart.subtotal = subtotal;
        cart.items = items;
        if let Some(code) = data.coupon {
            let outcome = match store::coupon(&self.db, &code).await? {
                None => Err(CouponRejection::Expired),
                Some(coupon) => {
                    let lines = self.coupon_lines(&cart, &categories_of).await?;
                    let (uses, by_user) = store::coupon_uses(&self.db, coupon.id, owner.user()).await?;
                    coupon.discount(&CouponContext {
                        now: self.clock.now(),
                        subtotal: cart.subtotal.amount,
                        lines: &lines,
                        user: owner.user(),
                        uses,
                        uses_by_user: by_user,
                    })
                }
            };
            if let Ok(discount) = outcome {
                cart.discount = Money::new(discount, currency);
            }
            cart.coupon = Some(CouponView::new(code, outcome.err()));
        }
        cart.total = Money::new(cart.subtotal.amount - cart.discount.amount, currency);
        Ok(cart)
    }

    /// Each priced line's total with every category it belongs to (own and ancestors).
    async fn coupon_lines(
        &self,
        cart: &PricedCart,
        categories_of: &[CategoryId],
    ) -> Result<Vec<(i64, Vec<CategoryId>)>> {
        let all = self.catalog.categories().await.map_err(dependency)?;
        let mut paths: HashMap<CategoryId, Vec<CategoryId>> = HashMap::new();
        Ok(cart
            .items
            .iter()
            .zip(categories_of)
            .map(|(item, category)| {
                let path = paths
                    .entry(*category)
                    .or_insert_with(|| {
                        emporium_catalog::api::resolve_category(&all, *category).map(|r| r.path).unwrap_or_default()
                    })
                    .clone();
                (item.line_total.amount, path)
            })
            .collect())
    }

    // --- coupons (admin) --------------------------------------------------------------------------

    pub async fn create_coupon(&self, new: NewCoupon) -> Result<Coupon> {
        let mut errors = Vec::new();
        let code = crate::model::normalise_code(&new.code).map_err(|m| errors.push(FieldError::new("code", m))).ok();
        match new.kind {
            CouponKind::Percent if !(1..=100).contains(&new.value) => {
                errors.push(FieldError::new("value", "a percentage must be between 1 and 100"))
            }
            _ if new.value <= 0 => errors.push(FieldError::new("value", "must be positive")),
            _ => {}
        }
        for (field, value) in [
            ("min_subtotal", new.min_subtotal),
            ("max_uses", new.max_uses),
            ("max_uses_per_user", new.max_uses_per_user),
        ] {
            if value.is_some_and(|v| v < 1) {
                errors.push(FieldError::new(field, "must be at least 1"));
            }
        }
        if let (Some(start), Some(end)) = (new.starts_at, new.ends_at)
            && end <= start
        {
            errors.push(FieldError::new("ends_at", "must be after starts_at"));
        }
        if !errors.is_empty() {
            return Err(Error::Invalid(errors));
        }
        let coupon = Coupon {
            id: CouponId::new(),
            code: code.expect("validated"),
            kind: new.kind,
            value: new.value,
            min_subtotal: new.min_subtotal,
            starts_at: new.starts_at,
            ends_at: new.ends_at,
            max_uses: new.max_uses,
            max_uses_per_user: new.max_uses_per_user,
            category_ids: new.category_ids,
            created_at: self.clock.now(),
        };
        match store::insert_coupon(&self.db, &coupon).await {
            Err(err) if is_unique_violation(&err) => Err(Error::CouponExists),
            other => Ok(other.map(|_| coupon)?),
        }
    }

    pub async fn coupons(&self) -> Result<Vec<Coupon>> {
        Ok(store::coupons(&self.db).await?)
    }

    pub async fn delete_coupon(&self, raw_code: &str) -> Result<()> {
        let code = crate::model::normalise_code(raw_code).map_err(|_| Error::CouponNotFound)?;
        if store::delete_coupon(&self.db, &code, self.clock.now()).await? { Ok(()) } else { Err(Error::CouponNotFound) }
    }

    /// Records a use of a coupon by an order (`reference`), enforcing the usage limits under a
    /// lock so two orders cannot both take the last use. Redeeming twice with one reference is
    /// one use.
    pub async fn redeem_coupon(&self, raw_code: &str, user: Option<UserId>, reference: &str) -> Result<()> {
        let code = crate::model::normalise_code(raw_code).map_err(|_| Error::CouponNotFound)?;
        let coupon = store::coupon(&self.db, &code).await?.ok_or(Error::CouponNotFound)?;
        let mut tx = self.db.begin().await?;
        store::lock_coupon(&mut tx, coupon.id).await?;
        if store::redeemed(&mut tx, coupon.id, reference).await? {
            // A retried order: it already holds its use.
            return Ok(());
        }
        let (uses, by_user) = store::coupon_uses_in_tx(&mut tx, coupon.id, user).await?;
        if coupon.max_uses.is_some_and(|max| uses >= max) {
            return Err(Error::CouponRejected(CouponRejection::UsedUp));
        }
        if user.is_some() && coupon.max_uses_per_user.is_some_and(|max| by_user >= max) {
            return Err(Error::CouponRejected(CouponRejection::UsedUpByYou));
        }
        store::insert_redemption(&mut tx, coupon.id, user, reference, self.clock.now()).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Gives back the coupon use of an order that did not go through; harmless when it took none.
    pub async fn release_coupon(&self, reference: &str) -> Result<()> {
        store::delete_redemptions(&self.db, reference).await?;
        Ok(())
    }

    /// Takes `products` out of the cart (they were ordered); lines already gone are fine.
    pub async fn remove_products(&self, owner: &CartOwner, products: &[ProductId]) -> Result<()> {
        // No re-pricing and one transaction for every line and its event: checkout calls this
        // for every order it confirms.
        self.remove_lines(owner, products).await.map(|_| ())
    }

    /// Removes lines with a `CartItemRemoved` each; returns the products whose line was there.
    async fn remove_lines(&self, owner: &CartOwner, products: &[ProductId]) -> Result<Vec<ProductId>> {
        let user_id = owner.user();
        let removed = move |product_id| {
            PendingEvent::of(&CartItemRemoved { user_id, product_id }).expect("cart events serialise")
        };
        Ok(self.store.remove_lines(&owner.key(), products, self.clock.now(), &removed).await?)
    }
}
