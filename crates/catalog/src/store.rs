//! The catalog's tables, one implementation for both backends (see ARCHITECTURE.md "Storage contract").

use crate::model::{AttributeDef, Category, Product, Rating, Review};
use chrono::{DateTime, Utc};
use emporium_kernel::db::{Backend, Db, Tx, Write};
use emporium_kernel::ids::{CategoryId, OrderId, ProductId, ReviewId, UserId};
use emporium_kernel::money::{Currency, Money};
use emporium_kernel::{sql, sql_exec};
use serde_json::Value;
use sqlx::types::Json;
use std::collections::BTreeMap;

#[derive(sqlx::FromRow)]
struct CategoryRow {
    id: CategoryId,
    name: String,
    parent_id: Option<CategoryId>,
    attributes: Json<Vec<AttributeDef>>,
    created_at: DateTime<Utc>,
}

impl From<CategoryRow> for Category {
    fn from(r: CategoryRow) -> Self {
        Category {
            id: r.id,
            name: r.name,
            parent_id: r.parent_id,
            attributes: r.attributes.0,
            created_at: r.created_at,
        }
    }
}

pub async fn all_categories(db: &Db) -> sqlx::Result<Vec<Category>> {
    let rows: Vec<CategoryRow> = sql!(db, |c| sqlx::query_as(
        "SELECT id, name, parent_id, attributes, created_at FROM categories ORDER BY name_key, id"
    )
    .fetch_all(c)
    .await)?;
    Ok(rows.into_iter().map(Category::from).collect())
}

pub async fn insert_category(tx: &mut Tx, category: &Category) -> sqlx::Result<()> {
    sql_exec!(tx, |c| sqlx::query(
        "INSERT INTO categories (id, name, name_key, parent_id, attributes, created_at) VALUES ($1, $2, $3, $4, $5, $6)"
    )
    .bind(category.id)
    .bind(&category.name)
    .bind(category.name.to_lowercase())
    .bind(category.parent_id)
    .bind(Json(&category.attributes))
    .bind(category.created_at)
    .execute(c)
    .await)?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct ProductRow {
    id: ProductId,
    sku: String,
    title: String,
    description: String,
    brand: String,
    category_id: CategoryId,
    price_amount: i64,
    price_currency: String,
    attributes: Json<BTreeMap<String, Value>>,
    images: Json<Vec<String>>,
    promoted: bool,
    seller_id: UserId,
    rating_sum: i64,
    rating_count: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<ProductRow> for Product {
    fn from(r: ProductRow) -> Self {
        Product {
            id: r.id,
            sku: r.sku,
            title: r.title,
            description: r.description,
            brand: r.brand,
            category_id: r.category_id,
            // Currencies were parsed before they were stored.
            price: Money::new(r.price_amount, Currency::parse(&r.price_currency).unwrap_or(Currency::USD)),
            attributes: r.attributes.0,
            images: r.images.0,
            promoted: r.promoted,
            seller_id: r.seller_id,
            rating: Rating { sum: r.rating_sum, count: r.rating_count },
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

macro_rules! product_columns {
    () => {
        "id, sku, title, description, brand, category_id, price_amount, price_currency, attributes, images, promoted, \
         seller_id, rating_sum, rating_count, created_at, updated_at"
    };
}

pub async fn insert_product(tx: &mut Tx, p: &Product) -> sqlx::Result<()> {
    sql_exec!(tx, |c| sqlx::query(concat!(
        "INSERT INTO products (",
        product_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
    ))
    .bind(p.id)
    .bind(&p.sku)
    .bind(&p.title)
    .bind(&p.description)
    .bind(&p.brand)
    .bind(p.category_id)
    .bind(p.price.amount)
    .bind(p.price.currency.as_str())
    .bind(Json(&p.attributes))
    .bind(Json(&p.images))
    .bind(p.promoted)
    .bind(p.seller_id)
    .bind(p.rating.sum)
    .bind(p.rating.count)
    .bind(p.created_at)
    .bind(p.updated_at)
    .execute(c)
    .await)?;
    Ok(())
}

/// A live (not deleted) product.
pub async fn product(db: &Db, id: ProductId) -> sqlx::Result<Option<Product>> {
    let row: Option<ProductRow> = sql!(db, |c| sqlx::query_as(concat!(
        "SELECT ",
        product_columns!(),
        " FROM products WHERE id = $1 AND deleted_at IS NULL"
    ))
    .bind(id)
    .fetch_optional(c)
    .await)?;
    Ok(row.map(Product::from))
}

/// A live product, locked for the rest of the transaction (SQLite write transactions already
/// hold the database lock).
pub async fn product_for_update(tx: &mut Tx, id: ProductId) -> sqlx::Result<Option<Product>> {
    let query = match tx.backend() {
        Backend::Sqlite => {
            concat!("SELECT ", product_columns!(), " FROM products WHERE id = $1 AND deleted_at IS NULL")
        }
        Backend::Postgres => {
            concat!("SELECT ", product_columns!(), " FROM products WHERE id = $1 AND deleted_at IS NULL FOR UPDATE")
        }
    };
    let row: Option<ProductRow> = sql!(tx, |c| sqlx::query_as(query).bind(id).fetch_optional(c).await)?;
    Ok(row.map(Product::from))
}

pub async fn update_product(tx: &mut Tx, p: &Product) -> sqlx::Result<u64> {
    sql_exec!(tx, |c| sqlx::query(
        "UPDATE products SET sku = $2, title = $3, description = $4, brand = $5, category_id = $6, price_amount = $7,
                price_currency = $8, attributes = $9, images = $10, promoted = $11, updated_at = $12
         WHERE id = $1 AND deleted_at IS NULL"
    )
    .bind(p.id)
    .bind(&p.sku)
    .bind(&p.title)
    .bind(&p.description)
    .bind(&p.brand)
    .bind(p.category_id)
    .bind(p.price.amount)
    .bind(p.price.currency.as_str())
    .bind(Json(&p.attributes))
    .bind(Json(&p.images))
    .bind(p.promoted)
    .bind(p.updated_at)
    .execute(c)
    .await)
}

pub async fn soft_delete_product(tx: &mut Tx, id: ProductId, now: DateTime<Utc>) -> sqlx::Result<u64> {
    sql_exec!(tx, |c| sqlx::query("UPDATE products SET deleted_at = $2 WHERE id = $1 AND deleted_at IS NULL")
        .bind(id)
        .bind(now)
        .execute(c)
        .await)
}

/// Live products after `after` in id (creation) order, optionally within a category subtree.
pub async fn list_products(
    db: &Db,
    category: Option<CategoryId>,
    after: ProductId,
    limit: i64,
) -> sqlx::Result<Vec<Product>> {
    let rows: Vec<ProductRow> = match category {
        None => sql!(db, |c| sqlx::query_as(concat!(
            "SELECT ",
            product_columns!(),
            " FROM products WHERE deleted_at IS NULL AND id > $1 ORDER BY id LIMIT $2"
        ))
        .bind(after)
        .bind(limit)
        .fetch_all(c)
        .await)?,
        Some(root) => sql!(db, |c| sqlx::query_as(concat!(
            "WITH RECURSIVE tree (id) AS (
                 SELECT id FROM categories WHERE id = $1
                 UNION ALL SELECT categories.id FROM categories JOIN tree ON categories.parent_id = tree.id)
             SELECT ",
            product_columns!(),
            " FROM products WHERE deleted_at IS NULL AND category_id IN (SELECT id FROM tree) AND id > $2
              ORDER BY id LIMIT $3"
        ))
        .bind(root)
        .bind(after)
        .bind(limit)
        .fetch_all(c)
        .await)?,
    };
    Ok(rows.into_iter().map(Product::from).collect())
}

/// Every live product in id order, a batch at a time (search reindexing).
pub async fn products_batch(db: &Db, after: ProductId, limit: i64) -> sqlx::Result<Vec<Product>> {
    list_products(db, None, after, limit).await
}

/// Live products filed directly under `category` (not its sub-categories) after `after`, in id order.
/// Live products filed directly under `category`, by brand then id, after `after` (a brand and
/// an id).
pub async fn products_of_category(
    db: &Db,
    category: CategoryId,
    after: (&str, ProductId),
    limit: i64,
) -> sqlx::Result<Vec<Product>> {
    let rows: Vec<ProductRow> = sql!(db, |c| sqlx::query_as(concat!(
        "SELECT ",
        product_columns!(),
        " FROM products WHERE deleted_at IS NULL AND category_id = $1 AND (brand, id) > ($2, $3)
          ORDER BY brand, id LIMIT $4"
    ))
    .bind(category)
    .bind(after.0)
    .bind(after.1)
    .bind(limit)
    .fetch_all(c)
    .await)?;
    Ok(rows.into_iter().map(Product::from).collect())
}

pub async fn count_products(db: &Db) -> sqlx::Result<i64> {
    sql!(db, |c| sqlx::query_scalar("SELECT COUNT(*) FROM products WHERE deleted_at IS NULL").fetch_one(c).await)
}

// --- reviews ---------------------------------------------------------------------------------

pub async fn insert_review(tx: &mut Tx, r: &Review) -> sqlx::Result<()> {
    sql_exec!(tx, |c| sqlx::query(
        "INSERT INTO reviews (id, product_id, user_id, rating, title, body, verified_purchase, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
    )
    .bind(r.id)
    .bind(r.product_id)
    .bind(r.user_id)
    .bind(r.rating)
    .bind(&r.title)
    .bind(&r.body)
    .bind(r.verified_purchase)
    .bind(r.created_at)
    .execute(c)
    .await)?;
    Ok(())
}

/// Whether `user` has a paid, not cancelled order of `product`.
pub async fn has_purchased(tx: &mut Tx, user: UserId, product: ProductId) -> sqlx::Result<bool> {
    let n: i64 =
        sql!(tx, |c| sqlx::query_scalar("SELECT COUNT(*) FROM purchases WHERE user_id = $1 AND product_id = $2")
            .bind(user)
            .bind(product)
            .fetch_one(c)
            .await)?;
    Ok(n > 0)
}

/// Takes the product rows' write locks for the rest of the transaction (PostgreSQL; SQLite
/// writers are serialised anyway) without changing them. Every other locker of product rows
/// holds one row at a time, so taking several here cannot deadlock.
pub async fn lock_products(tx: &mut Tx, products: &[ProductId]) -> sqlx::Result<()> {
    let sql = format!(
        "UPDATE products SET rating_count = rating_count WHERE id IN ({})",
        emporium_kernel::db::placeholders(1, products.len())
    );
    sql_exec!(tx, |c| {
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.clone()));
        for product in products {
            query = query.bind(*product);
        }
        query.execute(c).await
    })?;
    Ok(())
}

/// Inserts `(order, product, buyer)` rows; one already there is kept. Deferred, like the other
/// purchase writes below (see [`Tx::defer`]): nothing waits on them.
pub async fn insert_purchases(tx: &mut Tx, rows: &[(OrderId, ProductId, UserId)]) -> sqlx::Result<()> {
    let head = "INSERT INTO purchases (order_id, product_id, user_id)";
    for chunk in rows.chunks(emporium_kernel::db::ROWS_PER_STATEMENT) {
        let sql = format!("{} ON CONFLICT DO NOTHING", emporium_kernel::db::multi_row_insert(head, 3, chunk.len()));
        let mut write = Write::new(sql);
        for (order, product, user) in chunk {
            write = write.bind(*order).bind(*product).bind(*user);
        }
        tx.defer(write).await?;
    }
    Ok(())
}

pub async fn delete_purchases(tx: &mut Tx, order: OrderId) -> sqlx::Result<()> {
    tx.defer(Write::new("DELETE FROM purchases WHERE order_id = $1").bind(order)).await
}

/// Re-derives the verified flag of each `(user, product)`'s reviews (where there are any) from
/// the purchases: one statement for a whole burst of orders.
pub async fn refresh_verified(tx: &mut Tx, pairs: &[(UserId, ProductId)]) -> sqlx::Result<()> {
    let head = "UPDATE reviews SET verified_purchase = EXISTS (
             SELECT 1 FROM purchases p WHERE p.user_id = reviews.user_id AND p.product_id = reviews.product_id)
         WHERE (user_id, product_id) IN (";
    for chunk in pairs.chunks(emporium_kernel::db::ROWS_PER_STATEMENT) {
        let sql = format!("{})", emporium_kernel::db::multi_row_insert(head, 2, chunk.len()));
        let mut write = Write::new(sql);
        for (user, product) in chunk {
            write = write.bind(*user).bind(*product);
        }
        tx.defer(write).await?;
    }
    Ok(())
}

/// Adds one rating to the product's running totals and returns them.
pub async fn add_rating(tx: &mut Tx, product_id: ProductId, rating: i32) -> sqlx::Result<Rating> {
    let (sum, count): (i64, i64) = sql!(tx, |c| sqlx::query_as(
        "UPDATE products SET rating_sum = rating_sum + $2, rating_count = rating_count + 1
         WHERE id = $1 RETURNING rating_sum, rating_count"
    )
    .bind(product_id)
    .bind(i64::from(rating))
    .fetch_one(c)
    .await)?;
    Ok(Rating { sum, count })
}

#[derive(sqlx::FromRow)]
struct ReviewRow {
    id: ReviewId,
    product_id: ProductId,
    user_id: UserId,
    rating: i32,
    title: Option<String>,
    body: Option<String>,
    verified_purchase: bool,
    created_at: DateTime<Utc>,
}

impl From<ReviewRow> for Review {
    fn from(r: ReviewRow) -> Self {
        Review {
            id: r.id,
            product_id: r.product_id,
            user_id: r.user_id,
            rating: r.rating,
            title: r.title,
            body: r.body,
            verified_purchase: r.verified_purchase,
            created_at: r.created_at,
        }
    }
}

/// Reviews of a product, newest first, before `before` (ids are time-ordered).
pub async fn list_reviews(db: &Db, product_id: ProductId, before: ReviewId, limit: i64) -> sqlx::Result<Vec<Review>> {
    let rows: Vec<ReviewRow> = sql!(db, |c| sqlx::query_as(
        "SELECT id, product_id, user_id, rating, title, body, verified_purchase, created_at FROM reviews
         WHERE product_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3"
    )
    .bind(product_id)
    .bind(before)
    .bind(limit)
    .fetch_all(c)
    .await)?;
    Ok(rows.into_iter().map(Review::from).collect())
}

/// One statement per chunk; `figures` must name each product once (an upsert cannot touch the
/// same row twice in one statement on PostgreSQL).
pub async fn record_stock(db: &Db, figures: &[(ProductId, i64)], at: DateTime<Utc>) -> sqlx::Result<()> {
    for chunk in figures.chunks(emporium_kernel::db::ROWS_PER_STATEMENT) {
        let sql = emporium_kernel::db::multi_row_insert(
            "INSERT INTO product_stock (product_id, available, updated_at)",
            3,
            chunk.len(),
        ) + " ON CONFLICT (product_id) DO UPDATE SET available = excluded.available, updated_at = excluded.updated_at";
        sql_exec!(db, |c| {
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.clone()));
            for (product, available) in chunk {
                query = query.bind(*product).bind(*available).bind(at);
            }
            query.execute(c).await
        })?;
    }
    Ok(())
}

pub async fn stock_available(db: &Db, product: ProductId) -> sqlx::Result<i64> {
    let available: Option<i64> =
        sql!(db, |c| sqlx::query_scalar("SELECT available FROM product_stock WHERE product_id = $1")
            .bind(product)
            .fetch_optional(c)
            .await)?;
    Ok(available.unwrap_or(0))
}
