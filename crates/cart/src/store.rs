//! Where carts live: SQL tables by default, a Redis hash per cart (with a TTL) when Redis is
//! configured; both behind [`CartStore`] and run through the same tests. Coupons and their
//! redemptions are always in SQL: they need transactions and counting.
//!
//! A write takes the events it causes: the SQL store appends them to the outbox in the write's
//! own transaction (the outbox guarantee, and one transaction instead of two); the Redis store
//! appends them to the cart database's outbox right after its MULTI.

use crate::model::{CartData, CartLine, Coupon, CouponKind};
use chrono::{DateTime, Utc};
use emporium_kernel::db::{Backend, Db, Tx, Write, again_on_conflict};
use emporium_kernel::events::{self, PendingEvent};
use emporium_kernel::ids::{CategoryId, CouponId, ProductId, UserId};
use emporium_kernel::money::{Currency, Money};
use emporium_kernel::{sql, sql_exec};
use sqlx::types::Json;
use std::time::Duration;

pub type StoreResult<T> = anyhow::Result<T>;

/// What the writer knows of the cart it writes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// Read unexpired by this request just before: nothing to empty first. Were it to expire in
    /// between, the write counts as made when it was read.
    Live,
    /// Not read, or read missing or expired: an expired cart is emptied first.
    Unknown,
}

#[async_trait::async_trait]
pub trait CartStore: Send + Sync + 'static {
    /// The cart, unless it does not exist or expired.
    async fn load(&self, owner: &str, now: DateTime<Utc>) -> StoreResult<Option<CartData>>;
    /// Inserts one line, or sets the quantity of the line already there (which keeps its price
    /// snapshot and time); every write keeps the cart alive for another TTL.
    async fn put_line(
        &self,
        owner: &str,
        line: &CartLine,
        seen: Seen,
        now: DateTime<Utc>,
        events: &[PendingEvent],
    ) -> StoreResult<()>;
    /// Removes the lines of `products`; returns the products whose line was there, in product
    /// order, and appends `removed(product)` for each of them.
    async fn remove_lines(
        &self,
        owner: &str,
        products: &[ProductId],
        now: DateTime<Utc>,
        removed: &(dyn Fn(ProductId) -> PendingEvent + Send + Sync),
    ) -> StoreResult<Vec<ProductId>>;
    async fn set_coupon(
        &self,
        owner: &str,
        coupon: Option<&str>,
        now: DateTime<Utc>,
        events: &[PendingEvent],
    ) -> StoreResult<()>;
    async fn delete(&self, owner: &str) -> StoreResult<()>;
    /// Drops carts idle past their TTL (Redis expires keys by itself).
    async fn purge_expired(&self, now: DateTime<Utc>) -> StoreResult<u64>;
    fn kind(&self) -> &'static str;
}

// --- SQL -----------------------------------------------------------------------------------------

/// How often a cart write chosen as a deadlock's victim is run in all. On PostgreSQL an add's
/// refresh and line share one statement whose parts run in no set order (`Write::independent`),
/// so an add and a removal of the same line can lock the cart row and the line in turns; the
/// victim was rolled back whole and simply runs again.
const DEADLOCK_ATTEMPTS: usize = 3;

pub struct SqlCartStore {
    db: Db,
    ttl: chrono::Duration,
}

impl SqlCartStore {
    pub fn new(db: Db, ttl: Duration) -> Self {
        Self { db, ttl: chrono::Duration::from_std(ttl).expect("cart ttl fits") }
    }

    /// Creates or refreshes the cart row inside `tx`. Deferred (see [`Tx::defer`]): nothing
    /// waits on these writes, so on SQLite they ride with the transaction's next statement.
    /// A cart seen live needs no emptying first, so then the refresh (and the transaction's other
    /// writes) are independent (see [`Write::independent`]).
    async fn touch(&self, tx: &mut Tx, owner: &str, seen: Seen, now: DateTime<Utc>) -> sqlx::Result<()> {
        let live = seen == Seen::Live;
        if !live {
            // An expired cart is emptied first, so a stale line never comes back to life.
            tx.defer(
                Write::new("DELETE FROM carts WHERE owner_key = $1 AND expires_at <= $2")
                    .bind(owner.to_owned())
                    .bind(now),
            )
            .await?;
        }
        let refresh = Write::new(
            "INSERT INTO carts (owner_key, coupon, updated_at, expires_at) VALUES ($1, NULL, $2, $3)
             ON CONFLICT (owner_key) DO UPDATE SET updated_at = excluded.updated_at, expires_at = excluded.expires_at",
        )
        .bind(owner.to_owned())
        .bind(now)
        .bind(now + self.ttl);
        tx.defer(if live { refresh.independent() } else { refresh }).await
    }

    async fn try_put_line(
        &self,
        owner: &str,
        line: &CartLine,
        seen: Seen,
        now: DateTime<Utc>,
        events: &[PendingEvent],
    ) -> sqlx::Result<()> {
        let mut tx = self.db.begin().await?;
        self.touch(&mut tx, owner, seen, now).await?;
        let put = Write::new(
            "INSERT INTO cart_lines (owner_key, product_id, quantity, unit_price_amount, unit_price_currency, added_at)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (owner_key, product_id) DO UPDATE SET quantity = excluded.quantity",
        )
        .bind(owner.to_owned())
        .bind(line.product_id)
        .bind(line.quantity)
        .bind(line.unit_price.amount)
        .bind(line.unit_price.currency.as_str().to_owned())
        .bind(line.added_at);
        tx.defer(if seen == Seen::Live { put.independent() } else { put }).await?;
        // On SQLite the whole transaction is one script: BEGIN, these writes, the event, COMMIT;
        // on PostgreSQL, for a cart seen live, one statement.
        events::append_all(&mut tx, events).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn try_remove_lines(
        &self,
        owner: &str,
        products: &[ProductId],
        now: DateTime<Utc>,
        removed: &(dyn Fn(ProductId) -> PendingEvent + Send + Sync),
    ) -> sqlx::Result<Vec<ProductId>> {
        if products.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.db.begin().await?;
        // Taking lines out never makes a cart: a live one is refreshed, an expired one stays
        // expired and keeps its lines (gone for the shopper all the same; emptied by the next
        // add, or purged). The cart row is written before its lines, as every writer of a cart
        // does (on PostgreSQL the other order could deadlock with an add).
        let in_list = emporium_kernel::db::placeholders(4, products.len());
        let expires_at = now + self.ttl;
        let sql = match tx.backend() {
            // One statement: the refresh (its row lock first) and the delete it lets through.
            Backend::Postgres => format!(
                "WITH live AS (
                   UPDATE carts SET updated_at = $2, expires_at = $3 WHERE owner_key = $1 AND expires_at > $2
                   RETURNING owner_key)
                 DELETE FROM cart_lines WHERE owner_key = $1 AND product_id IN ({in_list})
                   AND EXISTS (SELECT 1 FROM live)
                 RETURNING product_id"
            ),
            // One writer at a time: the refresh rides in the delete's script, ahead of it, and a
            // cart it renewed (to $3) was live.
            Backend::Sqlite => {
                tx.defer(
                    Write::new(
                        "UPDATE carts SET updated_at = $2, expires_at = $3 WHERE owner_key = $1 AND expires_at > $2",
                    )
                    .bind(owner.to_owned())
                    .bind(now)
                    .bind(expires_at)
                    .independent(),
                )
                .await?;
                format!(
                    "DELETE FROM cart_lines WHERE owner_key = $1 AND product_id IN ({in_list})
                       AND EXISTS (SELECT 1 FROM carts WHERE owner_key = $1 AND expires_at = $3)
                     RETURNING product_id"
                )
            }
        };
        let mut gone: Vec<ProductId> = sql!(tx, |c| {
            let mut query = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.clone())).bind(owner).bind(now).bind(expires_at);
            for product in products {
                query = query.bind(*product);
            }
            query.fetch_all(c).await
        })?;
        gone.sort();
        let events: Vec<PendingEvent> = gone.iter().map(|p| removed(*p)).collect();
        events::append_all(&mut tx, &events).await?;
        tx.commit().await?;
        Ok(gone)
    }
}

/// A cart row joined with one of its lines (the line columns are NULL for an empty cart).
#[derive(sqlx::FromRow)]
struct CartLineRow {
    coupon: Option<String>,
    product_id: Option<ProductId>,
    quantity: Option<i64>,
    unit_price_amount: Option<i64>,
    unit_price_currency: Option<String>,
    added_at: Option<DateTime<Utc>>,
}

#[async_trait::async_trait]
impl CartStore for SqlCartStore {
    async fn load(&self, owner: &str, now: DateTime<Utc>) -> StoreResult<Option<CartData>> {
        let db = &self.db;
        // One statement for the cart and its lines: a cart is read on every add and checkout.
        let rows: Vec<CartLineRow> = sql!(db, |c| sqlx::query_as(
            "SELECT c.coupon, l.product_id, l.quantity, l.unit_price_amount, l.unit_price_currency, l.added_at
             FROM carts c LEFT JOIN cart_lines l ON l.owner_key = c.owner_key
             WHERE c.owner_key = $1 AND c.expires_at > $2
             ORDER BY l.added_at, l.product_id"
        )
        .bind(owner)
        .bind(now)
        .fetch_all(c)
        .await)?;
        let Some(first) = rows.first() else { return Ok(None) };
        let coupon = first.coupon.clone();
        let lines = rows
            .into_iter()
            .filter_map(|r| {
                Some(CartLine {
                    product_id: r.product_id?,
                    quantity: r.quantity?,
                    unit_price: Money::new(
                        r.unit_price_amount?,
                        Currency::parse(r.unit_price_currency.as_deref()?).unwrap_or(Currency::USD),
                    ),
                    added_at: r.added_at?,
                })
            })
            .collect();
        Ok(Some(CartData { lines, coupon }))
    }

    async fn put_line(
        &self,
        owner: &str,
        line: &CartLine,
        seen: Seen,
        now: DateTime<Utc>,
        events: &[PendingEvent],
    ) -> StoreResult<()> {
        Ok(again_on_conflict(DEADLOCK_ATTEMPTS, || self.try_put_line(owner, line, seen, now, events)).await?)
    }

    async fn remove_lines(
        &self,
        owner: &str,
        products: &[ProductId],
        now: DateTime<Utc>,
        removed: &(dyn Fn(ProductId) -> PendingEvent + Send + Sync),
    ) -> StoreResult<Vec<ProductId>> {
        Ok(again_on_conflict(DEADLOCK_ATTEMPTS, || self.try_remove_lines(owner, products, now, removed)).await?)
    }

    async fn set_coupon(
        &self,
        owner: &str,
        coupon: Option<&str>,
        now: DateTime<Utc>,
        events: &[PendingEvent],
    ) -> StoreResult<()> {
        let mut tx = self.db.begin().await?;
        self.touch(&mut tx, owner, Seen::Unknown, now).await?;
        sql_exec!(tx, |c| sqlx::query("UPDATE carts SET coupon = $2 WHERE owner_key = $1")
            .bind(owner)
            .bind(coupon)
            .execute(c)
            .await)?;
        events::append_all(&mut tx, events).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete(&self, owner: &str) -> StoreResult<()> {
        let db = &self.db;
        sql_exec!(db, |c| sqlx::query("DELETE FROM carts WHERE owner_key = $1").bind(owner).execute(c).await)?;
        Ok(())
    }

    async fn purge_expired(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        let db = &self.db;
        Ok(sql_exec!(db, |c| sqlx::query("DELETE FROM carts WHERE expires_at <= $1").bind(now).execute(c).await)?)
    }

    fn kind(&self) -> &'static str {
        "sql"
    }
}

// --- Redis ---------------------------------------------------------------------------------------

/// One hash per cart: `line:<product id>` → the line as JSON, `coupon` → the code. Every write
/// and its EXPIRE run in one MULTI, so a cart never lives on without its TTL.
pub struct RedisCartStore {
    connection: redis::aio::ConnectionManager,
    prefix: String,
    ttl_secs: u64,
    /// The cart database, for the outbox: a Redis write and its events cannot share a
    /// transaction, so the events follow the write.
    outbox: Db,
}

impl RedisCartStore {
    pub async fn connect(url: &str, prefix: &str, ttl: Duration, outbox: Db) -> anyhow::Result<RedisCartStore> {
        use anyhow::Context;
        let client = redis::Client::open(url).context("parsing EMPORIUM_REDIS_URL")?;
        let connection = tokio::time::timeout(Duration::from_secs(5), redis::aio::ConnectionManager::new(client))
            .await
            .context("connecting to Redis timed out")?
            .context("connecting to Redis")?;
        Ok(RedisCartStore { connection, prefix: prefix.to_owned(), ttl_secs: ttl.as_secs().max(1), outbox })
    }

    fn key(&self, owner: &str) -> String {
        format!("{}:cart:{owner}", self.prefix)
    }

    /// Ends every write's MULTI: the cart's last-touched time and a fresh TTL.
    fn keep_alive(&self, pipe: &mut redis::Pipeline, key: &str, now: DateTime<Utc>) {
        pipe.cmd("HSET").arg(key).arg("updated_at").arg(now.to_rfc3339()).ignore();
        pipe.cmd("EXPIRE").arg(key).arg(self.ttl_secs).ignore();
    }

    async fn append(&self, events: &[PendingEvent]) -> StoreResult<()> {
        if !events.is_empty() {
            let mut tx = self.outbox.begin().await?;
            events::append_all(&mut tx, events).await?;
            tx.commit().await?;
        }
        Ok(())
    }

    /// Seconds the cart has left (for tests and operators).
    pub async fn ttl_of(&self, owner: &str) -> StoreResult<i64> {
        let mut c = self.connection.clone();
        Ok(redis::cmd("TTL").arg(self.key(owner)).query_async(&mut c).await?)
    }
}

#[async_trait::async_trait]
impl CartStore for RedisCartStore {
    async fn load(&self, owner: &str, _now: DateTime<Utc>) -> StoreResult<Option<CartData>> {
        let mut c = self.connection.clone();
        let fields: Vec<(String, String)> = redis::cmd("HGETALL").arg(self.key(owner)).query_async(&mut c).await?;
        if fields.is_empty() {
            return Ok(None);
        }
        let mut cart = CartData::default();
        for (field, value) in fields {
            if field == "coupon" {
                cart.coupon = Some(value).filter(|v| !v.is_empty());
            } else if field.starts_with("line:") {
                cart.lines.push(serde_json::from_str(&value)?);
            }
        }
        cart.lines.sort_by(|a, b| a.added_at.cmp(&b.added_at).then(a.product_id.cmp(&b.product_id)));
        Ok(Some(cart))
    }

    async fn put_line(
        &self,
        owner: &str,
        line: &CartLine,
        // Redis drops an expired cart's key by itself.
        _seen: Seen,
        now: DateTime<Utc>,
        events: &[PendingEvent],
    ) -> StoreResult<()> {
        let mut c = self.connection.clone();
        let key = self.key(owner);
        let field = format!("line:{}", line.product_id);
        // A line that is already there keeps its price snapshot and time; only the quantity moves.
        let existing: Option<String> = redis::cmd("HGET").arg(&key).arg(&field).query_async(&mut c).await?;
        let line = match existing.and_then(|raw| serde_json::from_str::<CartLine>(&raw).ok()) {
            Some(old) => CartLine { quantity: line.quantity, ..old },
            None => line.clone(),
        };
        let mut pipe = redis::pipe();
        pipe.atomic().cmd("HSET").arg(&key).arg(&field).arg(serde_json::to_string(&line)?).ignore();
        self.keep_alive(&mut pipe, &key, now);
        pipe.query_async::<()>(&mut c).await?;
        self.append(events).await
    }

    async fn remove_lines(
        &self,
        owner: &str,
        products: &[ProductId],
        now: DateTime<Utc>,
        removed: &(dyn Fn(ProductId) -> PendingEvent + Send + Sync),
    ) -> StoreResult<Vec<ProductId>> {
        let mut products = products.to_vec();
        products.sort();
        products.dedup();
        if products.is_empty() {
            return Ok(Vec::new());
        }
        let mut c = self.connection.clone();
        let key = self.key(owner);
        // One HDEL per line inside the MULTI, so each answers whether its line was there.
        let mut pipe = redis::pipe();
        pipe.atomic();
        for product in &products {
            pipe.cmd("HDEL").arg(&key).arg(format!("line:{product}"));
        }
        self.keep_alive(&mut pipe, &key, now);
        let answers: Vec<i64> = pipe.query_async(&mut c).await?;
        let gone: Vec<ProductId> =
            products.into_iter().zip(answers).filter(|(_, removed)| *removed > 0).map(|(p, _)| p).collect();
        let events: Vec<PendingEvent> = gone.iter().map(|p| removed(*p)).collect();
        self.append(&events).await?;
        Ok(gone)
    }

    async fn set_coupon(
        &self,
        owner: &str,
        coupon: Option<&str>,
        now: DateTime<Utc>,
        events: &[PendingEvent],
    ) -> StoreResult<()> {
        let mut c = self.connection.clone();
        let key = self.key(owner);
        let mut pipe = redis::pipe();
        pipe.atomic().cmd("HSET").arg(&key).arg("coupon").arg(coupon.unwrap_or("")).ignore();
        self.keep_alive(&mut pipe, &key, now);
        pipe.query_async::<()>(&mut c).await?;
        self.append(events).await
    }

    async fn delete(&self, owner: &str) -> StoreResult<()> {
        let mut c = self.connection.clone();
        redis::cmd("DEL").arg(self.key(owner)).query_async::<()>(&mut c).await?;
        Ok(())
    }

    async fn purge_expired(&self, _now: DateTime<Utc>) -> StoreResult<u64> {
        Ok(0)
    }

    fn kind(&self) -> &'static str {
        "redis"
    }
}

// --- coupons -------------------------------------------------------------------------------------

#[derive(sqlx::FromRow)]
struct CouponRow {
    id: CouponId,
    code: String,
    kind: String,
    value: i64,
    min_subtotal: Option<i64>,
    starts_at: Option<DateTime<Utc>>,
    ends_at: Option<DateTime<Utc>>,
    max_uses: Option<i64>,
    max_uses_per_user: Option<i64>,
    category_ids: Json<Vec<CategoryId>>,
    created_at: DateTime<Utc>,
}

impl From<CouponRow> for Coupon {
    fn from(r: CouponRow) -> Self {
        Coupon {
            id: r.id,
            code: r.code,
            kind: if r.kind == "fixed" { CouponKind::Fixed } else { CouponKind::Percent },
            value: r.value,
            min_subtotal: r.min_subtotal,
            starts_at: r.starts_at,
            ends_at: r.ends_at,
            max_uses: r.max_uses,
            max_uses_per_user: r.max_uses_per_user,
            category_ids: r.category_ids.0,
            created_at: r.created_at,
        }
    }
}

const COUPON_COLUMNS: &str = "id, code, kind, value, min_subtotal, starts_at, ends_at, max_uses, max_uses_per_user, \
                              category_ids, created_at";

pub async fn insert_coupon(db: &Db, c: &Coupon) -> sqlx::Result<()> {
    sql_exec!(db, |conn| sqlx::query(
        "INSERT INTO coupons (id, code, kind, value, min_subtotal, starts_at, ends_at, max_uses, max_uses_per_user,
           category_ids, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
    )
    .bind(c.id)
    .bind(&c.code)
    .bind(c.kind.as_str())
    .bind(c.value)
    .bind(c.min_subtotal)
    .bind(c.starts_at)
    .bind(c.ends_at)
    .bind(c.max_uses)
    .bind(c.max_uses_per_user)
    .bind(Json(&c.category_ids))
    .bind(c.created_at)
    .execute(conn)
    .await)?;
    Ok(())
}

pub async fn coupons(db: &Db) -> sqlx::Result<Vec<Coupon>> {
    let sql = format!("SELECT {COUPON_COLUMNS} FROM coupons WHERE deleted_at IS NULL ORDER BY code");
    let rows: Vec<CouponRow> = sql!(db, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql.clone())).fetch_all(c).await)?;
    Ok(rows.into_iter().map(Coupon::from).collect())
}

pub async fn coupon(db: &Db, code: &str) -> sqlx::Result<Option<Coupon>> {
    let sql = format!("SELECT {COUPON_COLUMNS} FROM coupons WHERE code = $1 AND deleted_at IS NULL");
    let row: Option<CouponRow> =
        sql!(db, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql.clone())).bind(code).fetch_optional(c).await)?;
    Ok(row.map(Coupon::from))
}

pub async fn delete_coupon(db: &Db, code: &str, now: DateTime<Utc>) -> sqlx::Result<bool> {
    let n =
        sql_exec!(db, |c| sqlx::query("UPDATE coupons SET deleted_at = $2 WHERE code = $1 AND deleted_at IS NULL")
            .bind(code)
            .bind(now)
            .execute(c)
            .await)?;
    Ok(n > 0)
}

const COUPON_USES: &str = "SELECT COUNT(*), COALESCE(SUM(CASE WHEN user_id = $2 THEN 1 ELSE 0 END), 0)
                            FROM coupon_redemptions WHERE coupon_id = $1";

/// (all uses, uses by `user`).
pub async fn coupon_uses(db: &Db, coupon: CouponId, user: Option<UserId>) -> sqlx::Result<(i64, i64)> {
    sql!(db, |c| sqlx::query_as(COUPON_USES).bind(coupon).bind(user).fetch_one(c).await)
}

/// The same, inside the redemption's transaction.
pub async fn coupon_uses_in_tx(tx: &mut Tx, coupon: CouponId, user: Option<UserId>) -> sqlx::Result<(i64, i64)> {
    sql!(tx, |c| sqlx::query_as(COUPON_USES).bind(coupon).bind(user).fetch_one(c).await)
}

/// Locks the coupon row until the transaction ends (PostgreSQL; SQLite's write lock already
/// serialises), so two redemptions cannot both see one use left.
pub async fn lock_coupon(tx: &mut Tx, coupon: CouponId) -> sqlx::Result<()> {
    if tx.backend() == emporium_kernel::db::Backend::Postgres {
        sql_exec!(tx, |c| sqlx::query("SELECT id FROM coupons WHERE id = $1 FOR UPDATE")
            .bind(coupon)
            .execute(c)
            .await)?;
    }
    Ok(())
}

pub async fn redeemed(tx: &mut Tx, coupon: CouponId, reference: &str) -> sqlx::Result<bool> {
    let found: Option<i32> =
        sql!(tx, |c| sqlx::query_scalar("SELECT 1 FROM coupon_redemptions WHERE coupon_id = $1 AND reference = $2")
            .bind(coupon)
            .bind(reference)
            .fetch_optional(c)
            .await)?;
    Ok(found.is_some())
}

/// Records a use; `false` when this reference already redeemed it (a retried checkout).
pub async fn insert_redemption(
    tx: &mut Tx,
    coupon: CouponId,
    user: Option<UserId>,
    reference: &str,
    now: DateTime<Utc>,
) -> sqlx::Result<bool> {
    let n = sql_exec!(tx, |c| sqlx::query(
        "INSERT INTO coupon_redemptions (coupon_id, user_id, reference, redeemed_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (coupon_id, reference) DO NOTHING"
    )
    .bind(coupon)
    .bind(user)
    .bind(reference)
    .bind(now)
    .execute(c)
    .await)?;
    Ok(n > 0)
}

/// Gives back the uses `reference` took (its checkout failed, expired or was cancelled).
pub async fn delete_redemptions(db: &Db, reference: &str) -> sqlx::Result<u64> {
    sql_exec!(db, |c| sqlx::query("DELETE FROM coupon_redemptions WHERE reference = $1")
        .bind(reference)
        .execute(c)
        .await)
}
