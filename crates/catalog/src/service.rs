//! Catalog use cases. Permissions: admins manage categories; sellers create products and change
//! only their own; admins change any; any signed-in user reviews a product once.

use crate::api::events::{
    CategoryCreated, PriceChanged, ProductCreated, ProductDeleted, ProductSnapshot, ProductUpdated, ReviewAdded,
};
use crate::model::{
    AttributeDef, Category, MAX_CATEGORY_DEPTH, Product, PurchaseChange, Rating, ResolvedCategory, Review,
    resolve_category, validate_attribute_defs, validate_attributes,
};
use crate::store;
use emporium_kernel::auth::{AuthUser, Role};
use emporium_kernel::blob::{BlobError, BlobStore};
use emporium_kernel::cache::Cache;
use emporium_kernel::clock::SharedClock;
use emporium_kernel::db::Db;
use emporium_kernel::error::{ApiError, ErrorCode, FieldError};
use emporium_kernel::events;
use emporium_kernel::http::Page;
use emporium_kernel::ids::{CategoryId, ProductId, ReviewId, UserId};
use emporium_kernel::money::{Currency, Money};
use emporium_kernel::storage::Database;
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("product not found")]
    ProductNotFound,
    #[error("category not found")]
    CategoryNotFound,
    #[error("invalid fields")]
    Invalid(Vec<FieldError>),
    #[error("a category with this name already exists here")]
    CategoryNameTaken,
    #[error("a live product already has this SKU")]
    SkuTaken,
    #[error("only the product's seller or an admin may change it")]
    NotOwner,
    #[error("you have already reviewed this product")]
    AlreadyReviewed,
    #[error("sellers cannot review their own products")]
    OwnProduct,
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("storage failed")]
    Store(#[from] emporium_kernel::storage::Error),
}

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        let detail = err.to_string();
        match err {
            Error::ProductNotFound => ApiError::not_found("product"),
            Error::CategoryNotFound => ApiError::not_found("category"),
            Error::Invalid(errors) => ApiError::validation(errors),
            Error::CategoryNameTaken | Error::SkuTaken => ApiError::new(ErrorCode::AlreadyExists).with_detail(detail),
            Error::AlreadyReviewed => ApiError::conflict(detail),
            Error::NotOwner | Error::OwnProduct => ApiError::forbidden().with_detail(detail),
            Error::Api(e) => e,
            Error::Store(e) => ApiError::internal(e),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn invalid(field: &str, message: &str) -> Error {
    Error::Invalid(vec![FieldError::new(field, message)])
}

pub struct NewCategory {
    pub name: String,
    pub parent_id: Option<CategoryId>,
    pub attributes: Vec<AttributeDef>,
}

pub struct ProductDraft {
    pub sku: String,
    pub title: String,
    pub description: String,
    pub brand: String,
    pub category_id: CategoryId,
    pub price: Money,
    pub attributes: Map<String, Value>,
    pub promoted: bool,
}

/// Fields to change; `None` leaves a field as it is. New `attributes` replace the old ones.
#[derive(Default)]
pub struct ProductPatch {
    pub sku: Option<String>,
    pub title: Option<String>,
    pub description: Option<String>,
    pub brand: Option<String>,
    pub category_id: Option<CategoryId>,
    pub price: Option<Money>,
    pub attributes: Option<Map<String, Value>>,
    pub promoted: Option<bool>,
}

pub struct NewReview {
    pub rating: i32,
    pub title: Option<String>,
    pub body: Option<String>,
}

pub struct CatalogService {
    /// What the event bus reads the outbox through (the service itself writes with `storage`).
    db: Db,
    storage: Database,
    clock: SharedClock,
    /// Product reads are served from here; every committed change deletes the entry.
    cache: Arc<dyn Cache>,
    cache_ttl: Duration,
    blobs: BlobStore,
    /// The shop's one currency: every price is in it, so carts and orders never mix currencies.
    currency: Currency,
}

/// Largest accepted image upload.
pub const MAX_IMAGE_BYTES: usize = 5 * 1024 * 1024;
pub const MAX_IMAGES_PER_PRODUCT: usize = 10;
/// Where images are served; the rest of the URL is the blob key.
pub const IMAGE_URL_PREFIX: &str = "/api/v1/images/";

fn product_key(id: ProductId) -> String {
    format!("catalog:product:{id}")
}

/// Promotion is the shop's shelf space, not a seller's: only admins set or clear it.
fn only_admins_promote(actor: &AuthUser) -> Result<()> {
    if actor.is_admin() {
        Ok(())
    } else {
        Err(ApiError::forbidden().with_detail("only admins promote products").into())
    }
}

impl CatalogService {
    pub fn new(
        db: Db,
        storage: Database,
        clock: SharedClock,
        cache: Arc<dyn Cache>,
        cache_ttl: Duration,
        blobs: BlobStore,
        currency: Currency,
    ) -> Self {
        let storage = storage.ringing(db.commit_signal());
        Self { db, storage, clock, cache, cache_ttl, blobs, currency }
    }

    /// A price must be in the shop's currency (422 naming `price.currency` otherwise).
    fn check_currency(&self, price: &Money) -> Result<()> {
        check_currency(self.currency, price)
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    // --- categories -------------------------------------------------------------------------------

    pub async fn categories(&self) -> Result<Vec<Category>> {
        Ok(self.storage.read(store::all_categories).await?)
    }

    /// A category with its inherited attributes and path.
    pub async fn category(&self, id: CategoryId) -> Result<ResolvedCategory> {
        let all = self.categories().await?;
        resolve_category(&all, id).ok_or(Error::CategoryNotFound)
    }

    #[tracing::instrument(skip_all, fields(name = %new.name), err(level = "info", Display))]
    pub async fn create_category(&self, actor: &AuthUser, new: NewCategory) -> Result<ResolvedCategory> {
        actor.require(Role::Admin)?;
        let all = self.categories().await?;
        let parent = match new.parent_id {
            Some(id) => Some(resolve_category(&all, id).ok_or_else(|| invalid("parent_id", "does not exist"))?),
            None => None,
        };
        if parent.as_ref().is_some_and(|p| p.path.len() >= MAX_CATEGORY_DEPTH) {
            return Err(invalid("parent_id", "categories nest at most 8 levels deep"));
        }
        let inherited = parent.as_ref().map(|p| p.attributes.as_slice()).unwrap_or_default();
        let errors = validate_attribute_defs(&new.attributes, inherited);
        if !errors.is_empty() {
            return Err(Error::Invalid(errors));
        }
        let category = Category {
            id: CategoryId::new(),
            name: new.name,
            parent_id: new.parent_id,
            attributes: new.attributes,
            created_at: self.clock.now(),
        };
        let stored = category.clone();
        self.storage
            .write(move |tx| -> Result<()> {
                if let Err(err) = store::insert_category(tx, &stored) {
                    return Err(if err.is_unique_violation() { Error::CategoryNameTaken } else { err.into() });
                }
                let created =
                    CategoryCreated { category_id: stored.id, name: stored.name.clone(), parent_id: stored.parent_id };
                Ok(events::append_one(tx, &created)?)
            })
            .await?;
        let mut all = all;
        all.push(category.clone());
        Ok(resolve_category(&all, category.id).expect("just created"))
    }

    // --- products ---------------------------------------------------------------------------------

    /// A live product, read through the cache.
    pub async fn product(&self, id: ProductId) -> Result<Product> {
        let key = product_key(id);
        if let Some(bytes) = self.cache.get(&key).await
            && let Ok(product) = serde_json::from_slice::<Product>(&bytes)
        {
            metrics::counter!("catalog_cache_total", "outcome" => "hit").increment(1);
            return Ok(product);
        }
        metrics::counter!("catalog_cache_total", "outcome" => "miss").increment(1);
        let product = self.storage.read(move |tx| store::product(tx, id)).await?.ok_or(Error::ProductNotFound)?;
        if let Ok(bytes) = serde_json::to_vec(&product) {
            self.cache.set(&key, bytes, self.cache_ttl).await;
        }
        Ok(product)
    }

    /// Available units across warehouses, as last reported by the inventory (0 before any).
    pub async fn stock_available(&self, id: ProductId) -> Result<i64> {
        Ok(self.storage.read(move |tx| store::stock_available(tx, id)).await?)
    }

    /// Records the inventory's latest figures, at most one per product (the values are
    /// absolute, so replays are harmless).
    pub async fn record_stock(&self, figures: &[(ProductId, i64)]) -> Result<()> {
        let (figures, now) = (figures.to_vec(), self.clock.now());
        Ok(self.storage.write(move |tx| store::record_stock(tx, &figures, now)).await?)
    }

    /// Applies orders' purchase changes, in order, in one transaction: a paid order's products
    /// count as bought (idempotent per order), a cancelled order's no longer; the buyers'
    /// reviews of those products then have their verified-purchase flag re-derived.
    pub async fn record_purchases(&self, changes: &[PurchaseChange]) -> Result<()> {
        let all: Vec<ProductId> = changes.iter().flat_map(|c| c.products.iter().copied()).collect();
        let products = sorted_unique(&all);
        if products.is_empty() && changes.iter().all(|c| c.bought) {
            return Ok(());
        }
        let changes = changes.to_vec();
        self.storage
            .write(move |tx| -> Result<()> {
                store::lock_products(tx, &products)?;
                // Consecutive purchases go in one insert; a cancellation applies in its place.
                let mut bought = Vec::new();
                for change in &changes {
                    if change.bought {
                        let products = sorted_unique(&change.products);
                        bought.extend(products.into_iter().map(|product| (change.order, product, change.user)));
                    } else {
                        store::insert_purchases(tx, &std::mem::take(&mut bought))?;
                        store::delete_purchases(tx, change.order)?;
                    }
                }
                store::insert_purchases(tx, &bought)?;
                let pairs: std::collections::BTreeSet<(UserId, ProductId)> =
                    changes.iter().flat_map(|c| c.products.iter().map(|p| (c.user, *p))).collect();
                store::refresh_verified(tx, &pairs.into_iter().collect::<Vec<_>>())?;
                Ok(())
            })
            .await
    }

    /// Called after a change commits. A read racing the change can put the old value back;
    /// the TTL bounds how long that lasts.
    async fn invalidate(&self, id: ProductId) {
        self.cache.delete(&product_key(id)).await;
    }

    pub async fn list_products(
        &self,
        category: Option<CategoryId>,
        after: Option<ProductId>,
        limit: usize,
    ) -> Result<Page<Product>> {
        if let Some(id) = category {
            let all = self.categories().await?;
            if resolve_category(&all, id).is_none() {
                return Err(invalid("category", "does not exist"));
            }
        }
        let after = after.unwrap_or(ProductId(uuid::Uuid::nil()));
        let rows = self.storage.read(move |tx| store::list_products(tx, category, after, limit as i64 + 1)).await?;
        Ok(Page::from_overfetch(rows, limit, |p| p.id.to_string()))
    }

    /// The live products filed directly under `category`, by brand then id, after `after` (the
    /// brand and id of the last product read).
    pub async fn products_of_category(
        &self,
        category: CategoryId,
        after: Option<(&str, ProductId)>,
        limit: usize,
    ) -> Result<Vec<Product>> {
        let (brand, id) = after.unwrap_or(("", ProductId(uuid::Uuid::nil())));
        let brand = brand.to_owned();
        Ok(self.storage.read(move |tx| store::products_of_category(tx, category, (&brand, id), limit as i64)).await?)
    }

    /// Every live product after `after`, for read models rebuilding themselves.
    pub async fn products_batch(&self, after: Option<ProductId>, limit: usize) -> Result<Vec<Product>> {
        let after = after.unwrap_or(ProductId(uuid::Uuid::nil()));
        Ok(self.storage.read(move |tx| store::list_products(tx, None, after, limit as i64)).await?)
    }

    pub async fn count_products(&self) -> Result<i64> {
        Ok(self.storage.read(store::count_products).await?)
    }

    #[tracing::instrument(skip_all, fields(sku = %draft.sku), err(level = "info", Display))]
    pub async fn create_product(&self, actor: &AuthUser, draft: ProductDraft) -> Result<Product> {
        let mut created = self.import_products(actor, vec![draft]).await?;
        Ok(created.pop().expect("one product in, one out"))
    }

    /// Creates several products in one transaction (bulk import, seeding), each validated as
    /// `create_product` does and each with its own `ProductCreated` event. All or nothing.
    pub async fn import_products(&self, actor: &AuthUser, drafts: Vec<ProductDraft>) -> Result<Vec<Product>> {
        actor.require(Role::Seller)?;
        if drafts.iter().any(|d| d.promoted) {
            only_admins_promote(actor)?;
        }
        let all = self.categories().await?;
        let now = self.clock.now();
        let mut prepared = Vec::with_capacity(drafts.len());
        for draft in drafts {
            self.check_currency(&draft.price)?;
            let category =
                resolve_category(&all, draft.category_id).ok_or_else(|| invalid("category_id", "does not exist"))?;
            let attributes = validate_attributes(&category.attributes, &draft.attributes).map_err(Error::Invalid)?;
            let product = Product {
                id: ProductId::new(),
                sku: draft.sku,
                title: draft.title,
                description: draft.description,
                brand: draft.brand,
                category_id: draft.category_id,
                price: draft.price,
                attributes,
                images: Vec::new(),
                promoted: draft.promoted,
                seller_id: actor.id,
                rating: Rating::default(),
                created_at: now,
                updated_at: now,
            };
            prepared.push((product, category));
        }
        let prepared = self
            .storage
            .write(move |tx| -> Result<Vec<(Product, ResolvedCategory)>> {
                for (product, category) in &prepared {
                    if let Err(err) = store::insert_product(tx, product) {
                        return Err(if err.is_unique_violation() { Error::SkuTaken } else { err.into() });
                    }
                    events::append_one(tx, &ProductCreated(ProductSnapshot::new(product.clone(), category)))?;
                }
                Ok(prepared)
            })
            .await?;
        metrics::counter!("catalog_products_created_total").increment(prepared.len() as u64);
        Ok(prepared.into_iter().map(|(product, _)| product).collect())
    }

    #[tracing::instrument(skip_all, fields(product_id = %id), err(level = "info", Display))]
    pub async fn update_product(&self, actor: &AuthUser, id: ProductId, patch: ProductPatch) -> Result<Product> {
        let all = self.categories().await?;
        let (actor, currency, now) = (actor.clone(), self.currency, self.clock.now());
        let product = self
            .storage
            .write(move |tx| -> Result<Product> {
                let current = store::product_for_update(tx, id)?.ok_or(Error::ProductNotFound)?;
                ensure_owner(&actor, &current)?;
                let mut product = current.clone();
                if let Some(sku) = patch.sku {
                    product.sku = sku;
                }
                if let Some(title) = patch.title {
                    product.title = title;
                }
                if let Some(description) = patch.description {
                    product.description = description;
                }
                if let Some(brand) = patch.brand {
                    product.brand = brand;
                }
                if let Some(price) = patch.price {
                    check_currency(currency, &price)?;
                    product.price = price;
                }
                if let Some(promoted) = patch.promoted.filter(|p| *p != current.promoted) {
                    only_admins_promote(&actor)?;
                    product.promoted = promoted;
                }
                if let Some(category_id) = patch.category_id {
                    product.category_id = category_id;
                }
                let category = resolve_category(&all, product.category_id)
                    .ok_or_else(|| invalid("category_id", "does not exist"))?;
                // Attribute values are checked whenever they or the category change: moving a
                // laptop into "Books" must not keep its RAM.
                if patch.attributes.is_some() || product.category_id != current.category_id {
                    let given = patch.attributes.unwrap_or_else(|| current.attributes.clone().into_iter().collect());
                    product.attributes = validate_attributes(&category.attributes, &given).map_err(Error::Invalid)?;
                }
                product.updated_at = now;
                if let Err(err) = store::update_product(tx, &product) {
                    return Err(if err.is_unique_violation() { Error::SkuTaken } else { err.into() });
                }
                events::append_one(tx, &ProductUpdated(ProductSnapshot::new(product.clone(), &category)))?;
                if product.price != current.price {
                    let changed = PriceChanged { product_id: id, old_price: current.price, new_price: product.price };
                    events::append_one(tx, &changed)?;
                }
                Ok(product)
            })
            .await?;
        self.invalidate(id).await;
        Ok(product)
    }

    /// Soft delete: the product leaves listings and search; orders keep their own snapshot.
    #[tracing::instrument(skip_all, fields(product_id = %id), err(level = "info", Display))]
    pub async fn delete_product(&self, actor: &AuthUser, id: ProductId) -> Result<()> {
        let (actor, now) = (actor.clone(), self.clock.now());
        self.storage
            .write(move |tx| -> Result<()> {
                let product = store::product_for_update(tx, id)?.ok_or(Error::ProductNotFound)?;
                ensure_owner(&actor, &product)?;
                store::soft_delete_product(tx, id, now)?;
                Ok(events::append_one(tx, &ProductDeleted { product_id: id, sku: product.sku, deleted_by: actor.id })?)
            })
            .await?;
        self.invalidate(id).await;
        Ok(())
    }

    // --- images -----------------------------------------------------------------------------------

    /// Stores an image and appends its URL to the product. The content decides the type (the
    /// declared type must agree); the key is the content's hash, so an image never changes under
    /// its URL and uploading the same image twice adds it once.
    #[tracing::instrument(skip_all, fields(product_id = %id, bytes = bytes.len()), err(level = "info", Display))]
    pub async fn add_image(
        &self,
        actor: &AuthUser,
        id: ProductId,
        declared: Option<&str>,
        bytes: Vec<u8>,
    ) -> Result<Product> {
        let current = self.product(id).await?;
        ensure_owner(actor, &current)?;
        if bytes.is_empty() {
            return Err(invalid("image", "is empty"));
        }
        if bytes.len() > MAX_IMAGE_BYTES {
            return Err(ApiError::new(ErrorCode::PayloadTooLarge).with_detail("images are limited to 5 MiB").into());
        }
        let Some((mime, extension)) = emporium_kernel::blob::sniff_image(&bytes) else {
            return Err(ApiError::new(ErrorCode::UnsupportedMediaType)
                .with_detail("upload a JPEG, PNG, WebP or GIF image")
                .into());
        };
        if let Some(declared) = declared.map(|d| if d == "image/jpg" { "image/jpeg" } else { d })
            && declared != mime
        {
            return Err(invalid("image", &format!("is declared as {declared} but its content is {mime}")));
        }
        // Its first bytes say what it claims to be; only decoding all of it shows that it is.
        let (checked, decoded) = tokio::task::spawn_blocking(move || {
            let decoded = crate::model::decode_image(&bytes, mime);
            (bytes, decoded)
        })
        .await
        .map_err(|e| ApiError::internal(anyhow::anyhow!("decoding an image: {e}")))?;
        let bytes = checked;
        if let Err(why) = decoded {
            return Err(invalid("image", &why));
        }
        let digest = emporium_kernel::sha256_hex(&bytes);
        let name = format!("{}-{}.{extension}", id.0.simple(), &digest[..32]);
        let key = format!("products/{name}");
        let url = format!("{IMAGE_URL_PREFIX}{name}");
        self.blobs.put(&key, bytes).await.map_err(|e| ApiError::internal(anyhow::anyhow!(e)))?;

        let all = self.categories().await?;
        let (actor, now) = (actor.clone(), self.clock.now());
        let product = self
            .storage
            .write(move |tx| -> Result<Product> {
                let mut product = store::product_for_update(tx, id)?.ok_or(Error::ProductNotFound)?;
                ensure_owner(&actor, &product)?;
                if product.images.contains(&url) {
                    return Ok(product);
                }
                if product.images.len() >= MAX_IMAGES_PER_PRODUCT {
                    let full = format!("a product has at most {MAX_IMAGES_PER_PRODUCT} images");
                    return Err(ApiError::conflict(full).into());
                }
                product.images.push(url);
                product.updated_at = now;
                store::update_product(tx, &product)?;
                let category = resolve_category(&all, product.category_id).ok_or(Error::CategoryNotFound)?;
                events::append_one(tx, &ProductUpdated(ProductSnapshot::new(product.clone(), &category)))?;
                Ok(product)
            })
            .await?;
        self.invalidate(id).await;
        Ok(product)
    }

    /// An image's bytes and content type, by the name at the end of its URL.
    pub async fn image(&self, name: &str) -> Result<(Vec<u8>, &'static str)> {
        if name.contains('/') {
            return Err(ApiError::not_found("image").into());
        }
        let key = format!("products/{name}");
        match self.blobs.get(&key).await {
            Ok(bytes) => Ok((bytes, emporium_kernel::blob::content_type_for(&key))),
            Err(BlobError::NotFound | BlobError::InvalidKey) => Err(ApiError::not_found("image").into()),
            Err(err) => Err(ApiError::internal(anyhow::anyhow!(err)).into()),
        }
    }

    // --- reviews ----------------------------------------------------------------------------------

    #[tracing::instrument(skip_all, fields(product_id = %product_id), err(level = "info", Display))]
    pub async fn add_review(
        &self,
        actor: &AuthUser,
        product_id: ProductId,
        new: NewReview,
    ) -> Result<(Review, Rating)> {
        let product = self.product(product_id).await?;
        if product.seller_id == actor.id {
            return Err(Error::OwnProduct);
        }
        let review = Review {
            id: ReviewId::new(),
            product_id,
            user_id: actor.id,
            rating: new.rating,
            title: new.title,
            body: new.body,
            verified_purchase: false,
            created_at: self.clock.now(),
        };
        let actor = actor.id;
        let (review, rating) = self
            .storage
            .write(move |tx| -> Result<(Review, Rating)> {
                // The rating update locks the product row before the purchase is looked up, and
                // the purchase projection locks it too (`lock_products`): whichever of the two
                // commits second sees the other's row, so a review and its purchase arriving
                // together cannot both miss.
                let rating = store::add_rating(tx, product_id, review.rating)?;
                let review = Review { verified_purchase: store::has_purchased(tx, actor, product_id)?, ..review };
                if let Err(err) = store::insert_review(tx, &review) {
                    return Err(if err.is_unique_violation() { Error::AlreadyReviewed } else { err.into() });
                }
                let added = ReviewAdded {
                    product_id,
                    review_id: review.id,
                    user_id: actor,
                    rating: review.rating,
                    rating_average: rating.average(),
                    rating_count: rating.count,
                };
                events::append_one(tx, &added)?;
                Ok((review, rating))
            })
            .await?;
        self.invalidate(product_id).await;
        Ok((review, rating))
    }

    pub async fn reviews(&self, product_id: ProductId, before: Option<ReviewId>, limit: usize) -> Result<Page<Review>> {
        self.product(product_id).await?;
        let before = before.unwrap_or(ReviewId(uuid::Uuid::max()));
        let rows = self.storage.read(move |tx| store::list_reviews(tx, product_id, before, limit as i64 + 1)).await?;
        Ok(Page::from_overfetch(rows, limit, |r| r.id.to_string()))
    }
}

fn check_currency(currency: Currency, price: &Money) -> Result<()> {
    if price.currency == currency {
        return Ok(());
    }
    let message = format!("must be the shop's currency, {currency}");
    Err(Error::Invalid(vec![FieldError::new("price.currency", message)]))
}

fn ensure_owner(actor: &AuthUser, product: &Product) -> Result<()> {
    if actor.is_admin() || (actor.has_role(Role::Seller) && product.seller_id == actor.id) {
        Ok(())
    } else {
        Err(Error::NotOwner)
    }
}

/// The products once each, in id order (the order rows are locked in).
fn sorted_unique(products: &[ProductId]) -> Vec<ProductId> {
    let mut products = products.to_vec();
    products.sort();
    products.dedup();
    products
}
