//! The users service's tables. One implementation for both backends: every statement is plain
//! SQL that SQLite and PostgreSQL accept alike, run through `sql!`/`sql_exec!`, and the store
//! tests run on both. Only this module touches the users tables.

use crate::model::{Address, AddressInput, Latitude, Longitude, User};
use chrono::{DateTime, Utc};
use emporium_kernel::auth::Role;
use emporium_kernel::db::{Db, Tx};
use emporium_kernel::ids::{AddressId, ProductId, UserId, WarehouseId};
use emporium_kernel::{sql, sql_exec};
use sqlx::types::Json;
use uuid::Uuid;

#[derive(sqlx::FromRow)]
struct UserRow {
    id: UserId,
    email: String,
    name: String,
    password_hash: String,
    roles: Json<Vec<Role>>,
    warehouse_ids: Json<Vec<WarehouseId>>,
    created_at: DateTime<Utc>,
    token_version: i64,
    disabled_at: Option<DateTime<Utc>>,
}

/// A user with the credential needed to log in, and the state of their sessions.
pub struct Credentials {
    pub user: User,
    pub password_hash: String,
    /// What access tokens issued now carry (see `kernel::auth::TokenVersions`).
    pub token_version: i64,
    pub disabled: bool,
}

impl From<UserRow> for Credentials {
    fn from(row: UserRow) -> Self {
        Credentials {
            user: User {
                id: row.id,
                email: row.email,
                name: row.name,
                roles: row.roles.0,
                warehouse_ids: row.warehouse_ids.0,
                created_at: row.created_at,
            },
            password_hash: row.password_hash,
            token_version: row.token_version,
            disabled: row.disabled_at.is_some(),
        }
    }
}

/// Column lists as macros so queries stay `&'static str` via `concat!`.
macro_rules! user_columns {
    () => {
        "id, email, name, password_hash, roles, warehouse_ids, created_at, token_version, disabled_at"
    };
}

pub async fn insert_user(tx: &mut Tx, user: &User, password_hash: &str) -> sqlx::Result<()> {
    sql_exec!(tx, |c| sqlx::query(
        "INSERT INTO users (id, email, name, password_hash, roles, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $6)"
    )
    .bind(user.id)
    .bind(&user.email)
    .bind(&user.name)
    .bind(password_hash)
    .bind(Json(&user.roles))
    .bind(user.created_at)
    .execute(c)
    .await)?;
    Ok(())
}

pub async fn credentials_by_email(db: &Db, email: &str) -> sqlx::Result<Option<Credentials>> {
    let sql = concat!("SELECT ", user_columns!(), " FROM users WHERE email = $1");
    let row: Option<UserRow> = sql!(db, |c| sqlx::query_as(sql).bind(email).fetch_optional(c).await)?;
    Ok(row.map(Credentials::from))
}

pub async fn credentials_by_id(db: &Db, id: UserId) -> sqlx::Result<Option<Credentials>> {
    let sql = concat!("SELECT ", user_columns!(), " FROM users WHERE id = $1");
    let row: Option<UserRow> = sql!(db, |c| sqlx::query_as(sql).bind(id).fetch_optional(c).await)?;
    Ok(row.map(Credentials::from))
}

pub async fn user_in_tx(tx: &mut Tx, id: UserId) -> sqlx::Result<Option<User>> {
    Ok(credentials_in_tx(tx, id).await?.map(|c| c.user))
}

pub async fn credentials_in_tx(tx: &mut Tx, id: UserId) -> sqlx::Result<Option<Credentials>> {
    let sql = concat!("SELECT ", user_columns!(), " FROM users WHERE id = $1");
    let row: Option<UserRow> = sql!(tx, |c| sqlx::query_as(sql).bind(id).fetch_optional(c).await)?;
    Ok(row.map(Credentials::from))
}

/// The user's token version, or `None` when the account is disabled or gone.
pub async fn live_token_version(db: &Db, id: UserId) -> sqlx::Result<Option<i64>> {
    let found: Option<i64> =
        sql!(db, |c| sqlx::query_scalar("SELECT token_version FROM users WHERE id = $1 AND disabled_at IS NULL")
            .bind(id)
            .fetch_optional(c)
            .await)?;
    Ok(found)
}

/// Ends every access token the user holds now; returns the rows changed (0: no such user).
pub async fn bump_token_version(tx: &mut Tx, id: UserId, now: DateTime<Utc>) -> sqlx::Result<u64> {
    sql_exec!(tx, |c| sqlx::query("UPDATE users SET token_version = token_version + 1, updated_at = $2 WHERE id = $1")
        .bind(id)
        .bind(now)
        .execute(c)
        .await)
}

/// Disables (`Some(since)`) or enables (`None`) the account; returns the rows changed.
pub async fn set_disabled(
    tx: &mut Tx,
    id: UserId,
    disabled_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> sqlx::Result<u64> {
    sql_exec!(tx, |c| sqlx::query("UPDATE users SET disabled_at = $2, updated_at = $3 WHERE id = $1")
        .bind(id)
        .bind(disabled_at)
        .bind(now)
        .execute(c)
        .await)
}

pub struct ProfileChanges<'a> {
    pub name: Option<&'a str>,
    pub email: Option<&'a str>,
    pub password_hash: Option<&'a str>,
}

pub async fn update_profile(
    tx: &mut Tx,
    id: UserId,
    changes: &ProfileChanges<'_>,
    now: DateTime<Utc>,
) -> sqlx::Result<u64> {
    sql_exec!(tx, |c| sqlx::query(
        "UPDATE users SET name = COALESCE($2, name), email = COALESCE($3, email),
                password_hash = COALESCE($4, password_hash), updated_at = $5
         WHERE id = $1"
    )
    .bind(id)
    .bind(changes.name)
    .bind(changes.email)
    .bind(changes.password_hash)
    .bind(now)
    .execute(c)
    .await)
}

pub async fn set_roles(tx: &mut Tx, id: UserId, roles: &[Role], now: DateTime<Utc>) -> sqlx::Result<u64> {
    sql_exec!(tx, |c| sqlx::query("UPDATE users SET roles = $2, updated_at = $3 WHERE id = $1")
        .bind(id)
        .bind(Json(roles))
        .bind(now)
        .execute(c)
        .await)
}

/// Replaces where a member of staff works; returns the rows changed (0: no such user).
pub async fn set_warehouses(
    tx: &mut Tx,
    id: UserId,
    warehouses: &[WarehouseId],
    now: DateTime<Utc>,
) -> sqlx::Result<u64> {
    sql_exec!(tx, |c| sqlx::query("UPDATE users SET warehouse_ids = $2, updated_at = $3 WHERE id = $1")
        .bind(id)
        .bind(Json(warehouses))
        .bind(now)
        .execute(c)
        .await)
}

pub async fn count_users(db: &Db) -> sqlx::Result<i64> {
    sql!(db, |c| sqlx::query_scalar("SELECT COUNT(*) FROM users").fetch_one(c).await)
}

// --- failed sign-ins -------------------------------------------------------------------------

/// The address's failed sign-ins: `None` when it has none on record, else until when it is locked.
pub async fn login_failures(db: &Db, email: &str) -> sqlx::Result<Option<Option<DateTime<Utc>>>> {
    let row: Option<Option<DateTime<Utc>>> =
        sql!(db, |c| sqlx::query_scalar("SELECT locked_until FROM login_failures WHERE email = $1")
            .bind(email)
            .fetch_optional(c)
            .await)?;
    Ok(row)
}

/// Counts a failed sign-in, in one statement (concurrent failures all count): a count whose
/// window began before `window_start` starts again at 1; the count reaching `allowed` locks the
/// address until `lock_until`.
pub async fn record_login_failure(
    db: &Db,
    email: &str,
    now: DateTime<Utc>,
    window_start: DateTime<Utc>,
    allowed: i64,
    lock_until: DateTime<Utc>,
) -> sqlx::Result<()> {
    sql_exec!(db, |c| sqlx::query(
        "INSERT INTO login_failures (email, failures, first_at, locked_until) VALUES ($1, 1, $2, NULL)
         ON CONFLICT (email) DO UPDATE SET
           failures = CASE WHEN login_failures.first_at < $3 THEN 1 ELSE login_failures.failures + 1 END,
           first_at = CASE WHEN login_failures.first_at < $3 THEN $2 ELSE login_failures.first_at END,
           locked_until = CASE WHEN login_failures.first_at >= $3 AND login_failures.failures + 1 >= $4 THEN $5
                               ELSE login_failures.locked_until END"
    )
    .bind(email)
    .bind(now)
    .bind(window_start)
    .bind(allowed)
    .bind(lock_until)
    .execute(c)
    .await)?;
    Ok(())
}

/// A successful sign-in forgets the address's failures.
pub async fn clear_login_failures(db: &Db, email: &str) -> sqlx::Result<()> {
    sql_exec!(db, |c| sqlx::query("DELETE FROM login_failures WHERE email = $1").bind(email).execute(c).await)?;
    Ok(())
}

// --- refresh tokens --------------------------------------------------------------------------

pub struct NewRefreshToken<'a> {
    pub id: Uuid,
    pub user_id: UserId,
    pub family_id: Uuid,
    pub token_hash: &'a str,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

pub async fn insert_refresh_token(tx: &mut Tx, token: &NewRefreshToken<'_>) -> sqlx::Result<()> {
    sql_exec!(tx, |c| sqlx::query(
        "INSERT INTO refresh_tokens (id, user_id, family_id, token_hash, issued_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6)"
    )
    .bind(token.id)
    .bind(token.user_id)
    .bind(token.family_id)
    .bind(token.token_hash)
    .bind(token.issued_at)
    .bind(token.expires_at)
    .execute(c)
    .await)?;
    Ok(())
}

#[derive(sqlx::FromRow)]
pub struct RefreshTokenRow {
    pub id: Uuid,
    pub user_id: UserId,
    pub family_id: Uuid,
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

pub async fn refresh_token_by_hash(tx: &mut Tx, token_hash: &str) -> sqlx::Result<Option<RefreshTokenRow>> {
    sql!(tx, |c| {
        sqlx::query_as(
            "SELECT id, user_id, family_id, expires_at, used_at, revoked_at FROM refresh_tokens WHERE token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(c)
        .await
    })
}

/// Marks a token used, only if nobody did it first (two concurrent refreshes: one wins).
pub async fn mark_refresh_token_used(tx: &mut Tx, id: Uuid, now: DateTime<Utc>) -> sqlx::Result<bool> {
    let updated = sql_exec!(tx, |c| {
        sqlx::query("UPDATE refresh_tokens SET used_at = $2 WHERE id = $1 AND used_at IS NULL AND revoked_at IS NULL")
            .bind(id)
            .bind(now)
            .execute(c)
            .await
    })?;
    Ok(updated == 1)
}

pub async fn revoke_family(tx: &mut Tx, family_id: Uuid, now: DateTime<Utc>) -> sqlx::Result<u64> {
    sql_exec!(tx, |c| sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = $2 WHERE family_id = $1 AND revoked_at IS NULL"
    )
    .bind(family_id)
    .bind(now)
    .execute(c)
    .await)
}

pub async fn revoke_all_for_user(tx: &mut Tx, user_id: UserId, now: DateTime<Utc>) -> sqlx::Result<u64> {
    sql_exec!(tx, |c| sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL"
    )
    .bind(user_id)
    .bind(now)
    .execute(c)
    .await)
}

/// Forgets tokens that can no longer be used, so the table tracks live sessions only.
pub async fn delete_expired_refresh_tokens(db: &Db, now: DateTime<Utc>) -> sqlx::Result<u64> {
    sql_exec!(db, |c| sqlx::query("DELETE FROM refresh_tokens WHERE expires_at < $1").bind(now).execute(c).await)
}

// --- addresses -------------------------------------------------------------------------------

#[derive(sqlx::FromRow)]
struct AddressRow {
    id: AddressId,
    user_id: UserId,
    label: Option<String>,
    line1: String,
    line2: Option<String>,
    city: String,
    region: Option<String>,
    postal_code: String,
    country: String,
    lat: Option<f64>,
    lon: Option<f64>,
    is_default: bool,
    created_at: DateTime<Utc>,
}

impl From<AddressRow> for Address {
    fn from(row: AddressRow) -> Self {
        Address {
            id: row.id,
            user_id: row.user_id,
            label: row.label,
            line1: row.line1,
            line2: row.line2,
            city: row.city,
            region: row.region,
            postal_code: row.postal_code,
            country: row.country,
            // Stored values were validated on the way in.
            lat: row.lat.and_then(|v| Latitude::parse(v).ok()),
            lon: row.lon.and_then(|v| Longitude::parse(v).ok()),
            is_default: row.is_default,
            created_at: row.created_at,
        }
    }
}

macro_rules! address_columns {
    () => {
        "id, user_id, label, line1, line2, city, region, postal_code, country, lat, lon, is_default, created_at"
    };
}

pub async fn list_addresses(db: &Db, user_id: UserId) -> sqlx::Result<Vec<Address>> {
    let sql = concat!("SELECT ", address_columns!(), " FROM addresses WHERE user_id = $1 ORDER BY created_at, id");
    let rows: Vec<AddressRow> = sql!(db, |c| sqlx::query_as(sql).bind(user_id).fetch_all(c).await)?;
    Ok(rows.into_iter().map(Address::from).collect())
}

pub async fn address(db: &Db, user_id: UserId, id: AddressId) -> sqlx::Result<Option<Address>> {
    let sql = concat!("SELECT ", address_columns!(), " FROM addresses WHERE user_id = $1 AND id = $2");
    let row: Option<AddressRow> = sql!(db, |c| sqlx::query_as(sql).bind(user_id).bind(id).fetch_optional(c).await)?;
    Ok(row.map(Address::from))
}

pub async fn default_address(db: &Db, user_id: UserId) -> sqlx::Result<Option<Address>> {
    let sql = concat!("SELECT ", address_columns!(), " FROM addresses WHERE user_id = $1 AND is_default");
    let row: Option<AddressRow> = sql!(db, |c| sqlx::query_as(sql).bind(user_id).fetch_optional(c).await)?;
    Ok(row.map(Address::from))
}

pub async fn count_addresses(tx: &mut Tx, user_id: UserId) -> sqlx::Result<i64> {
    sql!(tx, |c| sqlx::query_scalar("SELECT COUNT(*) FROM addresses WHERE user_id = $1")
        .bind(user_id)
        .fetch_one(c)
        .await)
}

pub async fn clear_default(tx: &mut Tx, user_id: UserId) -> sqlx::Result<u64> {
    sql_exec!(tx, |c| sqlx::query("UPDATE addresses SET is_default = FALSE WHERE user_id = $1 AND is_default")
        .bind(user_id)
        .execute(c)
        .await)
}

/// Makes the oldest remaining address the default (after the default one was deleted).
pub async fn promote_oldest_to_default(tx: &mut Tx, user_id: UserId) -> sqlx::Result<u64> {
    sql_exec!(tx, |c| sqlx::query(
        "UPDATE addresses SET is_default = TRUE
         WHERE id = (SELECT id FROM addresses WHERE user_id = $1 ORDER BY created_at, id LIMIT 1)"
    )
    .bind(user_id)
    .execute(c)
    .await)
}

pub async fn insert_address(
    tx: &mut Tx,
    id: AddressId,
    user_id: UserId,
    input: &AddressInput,
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    let (lat, lon) = coordinates(input);
    sql_exec!(tx, |c| {
        sqlx::query(
        "INSERT INTO addresses (id, user_id, label, line1, line2, city, region, postal_code, country, lat, lon, is_default, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
    )
    .bind(id)
    .bind(user_id)
    .bind(&input.label)
    .bind(&input.line1)
    .bind(&input.line2)
    .bind(&input.city)
    .bind(&input.region)
    .bind(&input.postal_code)
    .bind(&input.country)
    .bind(lat)
    .bind(lon)
    .bind(input.is_default)
    .bind(now)
    .execute(c)
    .await
    })?;
    Ok(())
}

pub async fn replace_address(tx: &mut Tx, id: AddressId, user_id: UserId, input: &AddressInput) -> sqlx::Result<u64> {
    let (lat, lon) = coordinates(input);
    sql_exec!(tx, |c| {
        sqlx::query(
            "UPDATE addresses SET label = $3, line1 = $4, line2 = $5, city = $6, region = $7, postal_code = $8,
                country = $9, lat = $10, lon = $11, is_default = $12
         WHERE id = $1 AND user_id = $2",
        )
        .bind(id)
        .bind(user_id)
        .bind(&input.label)
        .bind(&input.line1)
        .bind(&input.line2)
        .bind(&input.city)
        .bind(&input.region)
        .bind(&input.postal_code)
        .bind(&input.country)
        .bind(lat)
        .bind(lon)
        .bind(input.is_default)
        .execute(c)
        .await
    })
}

/// Deletes an address; returns whether it existed and whether it was the default.
pub async fn delete_address(tx: &mut Tx, user_id: UserId, id: AddressId) -> sqlx::Result<Option<bool>> {
    let was_default: Option<bool> =
        sql!(tx, |c| sqlx::query_scalar("SELECT is_default FROM addresses WHERE id = $1 AND user_id = $2")
            .bind(id)
            .bind(user_id)
            .fetch_optional(c)
            .await)?;
    if was_default.is_some() {
        sql_exec!(tx, |c| sqlx::query("DELETE FROM addresses WHERE id = $1 AND user_id = $2")
            .bind(id)
            .bind(user_id)
            .execute(c)
            .await)?;
    }
    Ok(was_default)
}

fn coordinates(input: &AddressInput) -> (Option<f64>, Option<f64>) {
    match input.location {
        Some(point) => (Some(point.lat.degrees()), Some(point.lon.degrees())),
        None => (None, None),
    }
}

/// Wishlist rows kept here from when the wishlist was this service's (it is the cart's now), a
/// batch at a time, oldest user first.
pub async fn legacy_wishlist(db: &Db, limit: i64) -> sqlx::Result<Vec<(UserId, ProductId, DateTime<Utc>)>> {
    sql!(db, |c| sqlx::query_as(
        "SELECT user_id, product_id, added_at FROM wishlist_items ORDER BY user_id, product_id LIMIT $1"
    )
    .bind(limit)
    .fetch_all(c)
    .await)
}

pub async fn forget_legacy_wishlist(tx: &mut Tx, user: UserId, product: ProductId) -> sqlx::Result<u64> {
    sql_exec!(tx, |c| sqlx::query("DELETE FROM wishlist_items WHERE user_id = $1 AND product_id = $2")
        .bind(user)
        .bind(product)
        .execute(c)
        .await)
}
