//! The catalog's tables, one implementation for both backends, on the storage layer
//! (`kernel::storage`): every function runs inside a transaction closure.

use crate::model::{Category, Product, Rating, Review};
use chrono::{DateTime, Utc};
use emporium_kernel::db::{ROWS_PER_STATEMENT, multi_row_insert, placeholders};
use emporium_kernel::ids::{CategoryId, OrderId, ProductId, ReviewId, UserId};
use emporium_kernel::money::{Currency, Money};
use emporium_kernel::storage::{Backend, Param, Result, Row, Tx};

/// A JSON column, as the type it holds.
fn json<T: serde::de::DeserializeOwned>(row: &Row, i: usize) -> Result<T> {
    let value: serde_json::Value = row.get(i)?;
    serde_json::from_value(value).map_err(|e| emporium_kernel::storage::Error::Decode(e.to_string()))
}

fn category_of(row: &Row) -> Result<Category> {
    Ok(Category {
        id: row.get(0)?,
        name: row.get(1)?,
        parent_id: row.get(2)?,
        attributes: json(row, 3)?,
        created_at: row.get(4)?,
    })
}

pub fn all_categories(tx: &mut Tx<'_>) -> Result<Vec<Category>> {
    let rows =
        tx.query("SELECT id, name, parent_id, attributes, created_at FROM categories ORDER BY name_key, id", &[])?;
    rows.iter().map(category_of).collect()
}

pub fn insert_category(tx: &mut Tx<'_>, category: &Category) -> Result<()> {
    tx.execute(
        "INSERT INTO categories (id, name, name_key, parent_id, attributes, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &category.id,
            &category.name,
            &category.name.to_lowercase(),
            &category.parent_id,
            &serde_json::json!(category.attributes),
            &category.created_at,
        ],
    )?;
    Ok(())
}

const PRODUCT_COLUMNS: &str = "id, sku, title, description, brand, category_id, price_amount, price_currency, \
     attributes, images, promoted, seller_id, rating_sum, rating_count, created_at, updated_at";

fn product_of(row: &Row) -> Result<Product> {
    let currency: String = row.get(7)?;
    Ok(Product {
        id: row.get(0)?,
        sku: row.get(1)?,
        title: row.get(2)?,
        description: row.get(3)?,
        brand: row.get(4)?,
        category_id: row.get(5)?,
        // Currencies were parsed before they were stored.
        price: Money::new(row.get(6)?, Currency::parse(&currency).unwrap_or(Currency::USD)),
        attributes: json(row, 8)?,
        images: json(row, 9)?,
        promoted: row.get(10)?,
        seller_id: row.get(11)?,
        rating: Rating { sum: row.get(12)?, count: row.get(13)? },
        created_at: row.get(14)?,
        updated_at: row.get(15)?,
    })
}

fn products_where(tx: &mut Tx<'_>, condition: &str, params: &[&dyn Param]) -> Result<Vec<Product>> {
    tx.query(&format!("SELECT {PRODUCT_COLUMNS} FROM products {condition}"), params)?.iter().map(product_of).collect()
}

pub fn insert_product(tx: &mut Tx<'_>, p: &Product) -> Result<()> {
    tx.execute(
        &format!(
            "INSERT INTO products ({PRODUCT_COLUMNS})
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
        ),
        &[
            &p.id,
            &p.sku,
            &p.title,
            &p.description,
            &p.brand,
            &p.category_id,
            &p.price.amount,
            &p.price.currency.as_str(),
            &serde_json::json!(p.attributes),
            &serde_json::json!(p.images),
            &p.promoted,
            &p.seller_id,
            &p.rating.sum,
            &p.rating.count,
            &p.created_at,
            &p.updated_at,
        ],
    )?;
    Ok(())
}

/// A live (not deleted) product.
pub fn product(tx: &mut Tx<'_>, id: ProductId) -> Result<Option<Product>> {
    Ok(products_where(tx, "WHERE id = $1 AND deleted_at IS NULL", &[&id])?.pop())
}

/// A live product, locked for the rest of the transaction (SQLite write transactions already
/// hold the database lock).
pub fn product_for_update(tx: &mut Tx<'_>, id: ProductId) -> Result<Option<Product>> {
    let condition = match tx.backend() {
        Backend::Sqlite => "WHERE id = $1 AND deleted_at IS NULL",
        Backend::Postgres => "WHERE id = $1 AND deleted_at IS NULL FOR UPDATE",
    };
    Ok(products_where(tx, condition, &[&id])?.pop())
}

pub fn update_product(tx: &mut Tx<'_>, p: &Product) -> Result<u64> {
    tx.execute(
        "UPDATE products SET sku = $2, title = $3, description = $4, brand = $5, category_id = $6, price_amount = $7,
                price_currency = $8, attributes = $9, images = $10, promoted = $11, updated_at = $12
         WHERE id = $1 AND deleted_at IS NULL",
        &[
            &p.id,
            &p.sku,
            &p.title,
            &p.description,
            &p.brand,
            &p.category_id,
            &p.price.amount,
            &p.price.currency.as_str(),
            &serde_json::json!(p.attributes),
            &serde_json::json!(p.images),
            &p.promoted,
            &p.updated_at,
        ],
    )
}

pub fn soft_delete_product(tx: &mut Tx<'_>, id: ProductId, now: DateTime<Utc>) -> Result<u64> {
    tx.execute("UPDATE products SET deleted_at = $2 WHERE id = $1 AND deleted_at IS NULL", &[&id, &now])
}

/// Live products after `after` in id (creation) order, optionally within a category subtree.
pub fn list_products(
    tx: &mut Tx<'_>,
    category: Option<CategoryId>,
    after: ProductId,
    limit: i64,
) -> Result<Vec<Product>> {
    match category {
        None => products_where(tx, "WHERE deleted_at IS NULL AND id > $1 ORDER BY id LIMIT $2", &[&after, &limit]),
        Some(root) => {
            let sql = format!(
                "WITH RECURSIVE tree (id) AS (
                     SELECT id FROM categories WHERE id = $1
                     UNION ALL SELECT categories.id FROM categories JOIN tree ON categories.parent_id = tree.id)
                 SELECT {PRODUCT_COLUMNS} FROM products
                 WHERE deleted_at IS NULL AND category_id IN (SELECT id FROM tree) AND id > $2 ORDER BY id LIMIT $3"
            );
            tx.query(&sql, &[&root, &after, &limit])?.iter().map(product_of).collect()
        }
    }
}

/// Live products filed directly under `category`, by brand then id, after `after` (a brand and
/// an id).
pub fn products_of_category(
    tx: &mut Tx<'_>,
    category: CategoryId,
    after: (&str, ProductId),
    limit: i64,
) -> Result<Vec<Product>> {
    products_where(
        tx,
        "WHERE deleted_at IS NULL AND category_id = $1 AND (brand, id) > ($2, $3) ORDER BY brand, id LIMIT $4",
        &[&category, &after.0, &after.1, &limit],
    )
}

pub fn count_products(tx: &mut Tx<'_>) -> Result<i64> {
    tx.query_one("SELECT COUNT(*) FROM products WHERE deleted_at IS NULL", &[])?.get(0)
}

// --- reviews ---------------------------------------------------------------------------------

pub fn insert_review(tx: &mut Tx<'_>, r: &Review) -> Result<()> {
    tx.execute(
        "INSERT INTO reviews (id, product_id, user_id, rating, title, body, verified_purchase, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[&r.id, &r.product_id, &r.user_id, &r.rating, &r.title, &r.body, &r.verified_purchase, &r.created_at],
    )?;
    Ok(())
}

/// Whether `user` has a paid, not cancelled order of `product`.
pub fn has_purchased(tx: &mut Tx<'_>, user: UserId, product: ProductId) -> Result<bool> {
    let n: i64 = tx
        .query_one("SELECT COUNT(*) FROM purchases WHERE user_id = $1 AND product_id = $2", &[&user, &product])?
        .get(0)?;
    Ok(n > 0)
}

/// Takes the product rows' write locks for the rest of the transaction (PostgreSQL; SQLite
/// writers are serialised anyway) without changing them. Every other locker of product rows
/// holds one row at a time, so taking several here cannot deadlock.
pub fn lock_products(tx: &mut Tx<'_>, products: &[ProductId]) -> Result<()> {
    if products.is_empty() {
        return Ok(());
    }
    let sql =
        format!("UPDATE products SET rating_count = rating_count WHERE id IN ({})", placeholders(1, products.len()));
    let params: Vec<&dyn Param> = products.iter().map(|p| p as &dyn Param).collect();
    tx.execute(&sql, &params)?;
    Ok(())
}

/// Inserts `(order, product, buyer)` rows; one already there is kept.
pub fn insert_purchases(tx: &mut Tx<'_>, rows: &[(OrderId, ProductId, UserId)]) -> Result<()> {
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "{} ON CONFLICT DO NOTHING",
            multi_row_insert("INSERT INTO purchases (order_id, product_id, user_id)", 3, chunk.len())
        );
        let params: Vec<&dyn Param> =
            chunk.iter().flat_map(|(o, p, u)| [o as &dyn Param, p as &dyn Param, u as &dyn Param]).collect();
        tx.execute(&sql, &params)?;
    }
    Ok(())
}

pub fn delete_purchases(tx: &mut Tx<'_>, order: OrderId) -> Result<()> {
    tx.execute("DELETE FROM purchases WHERE order_id = $1", &[&order])?;
    Ok(())
}

/// Re-derives the verified flag of each `(user, product)`'s reviews (where there are any) from
/// the purchases: one statement for a whole burst of orders.
pub fn refresh_verified(tx: &mut Tx<'_>, pairs: &[(UserId, ProductId)]) -> Result<()> {
    let head = "UPDATE reviews SET verified_purchase = EXISTS (
             SELECT 1 FROM purchases p WHERE p.user_id = reviews.user_id AND p.product_id = reviews.product_id)
         WHERE (user_id, product_id) IN (";
    for chunk in pairs.chunks(ROWS_PER_STATEMENT) {
        let sql = format!("{})", multi_row_insert(head, 2, chunk.len()));
        let params: Vec<&dyn Param> = chunk.iter().flat_map(|(u, p)| [u as &dyn Param, p as &dyn Param]).collect();
        tx.execute(&sql, &params)?;
    }
    Ok(())
}

/// Adds one rating to the product's running totals and returns them.
pub fn add_rating(tx: &mut Tx<'_>, product_id: ProductId, rating: i32) -> Result<Rating> {
    let row = tx.query_one(
        "UPDATE products SET rating_sum = rating_sum + $2, rating_count = rating_count + 1
         WHERE id = $1 RETURNING rating_sum, rating_count",
        &[&product_id, &i64::from(rating)],
    )?;
    Ok(Rating { sum: row.get(0)?, count: row.get(1)? })
}

fn review_of(row: &Row) -> Result<Review> {
    Ok(Review {
        id: row.get(0)?,
        product_id: row.get(1)?,
        user_id: row.get(2)?,
        rating: row.get(3)?,
        title: row.get(4)?,
        body: row.get(5)?,
        verified_purchase: row.get(6)?,
        created_at: row.get(7)?,
    })
}

/// Reviews of a product, newest first, before `before` (ids are time-ordered).
pub fn list_reviews(tx: &mut Tx<'_>, product_id: ProductId, before: ReviewId, limit: i64) -> Result<Vec<Review>> {
    let rows = tx.query(
        "SELECT id, product_id, user_id, rating, title, body, verified_purchase, created_at FROM reviews
         WHERE product_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
        &[&product_id, &before, &limit],
    )?;
    rows.iter().map(review_of).collect()
}

/// One statement per chunk; `figures` must name each product once (an upsert cannot touch the
/// same row twice in one statement on PostgreSQL).
pub fn record_stock(tx: &mut Tx<'_>, figures: &[(ProductId, i64)], at: DateTime<Utc>) -> Result<()> {
    for chunk in figures.chunks(ROWS_PER_STATEMENT) {
        let sql = multi_row_insert("INSERT INTO product_stock (product_id, available, updated_at)", 3, chunk.len())
            + " ON CONFLICT (product_id) DO UPDATE SET available = excluded.available, updated_at = excluded.updated_at";
        let params: Vec<&dyn Param> =
            chunk.iter().flat_map(|(p, n)| [p as &dyn Param, n as &dyn Param, &at as &dyn Param]).collect();
        tx.execute(&sql, &params)?;
    }
    Ok(())
}

pub fn stock_available(tx: &mut Tx<'_>, product: ProductId) -> Result<i64> {
    Ok(tx
        .query_opt("SELECT available FROM product_stock WHERE product_id = $1", &[&product])?
        .map(|r| r.get(0))
        .transpose()?
        .unwrap_or(0))
}
