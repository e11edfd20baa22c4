//! SQL for partners and jobs, one code path for SQLite and PostgreSQL (see `kernel::db`).

use crate::model::{Job, JobStatus, Partner};
use chrono::{DateTime, Utc};
use emporium_kernel::db::{Db, ROWS_PER_STATEMENT, Tx, Write, multi_row_insert, placeholders};
use emporium_kernel::geo::Destination;
use emporium_kernel::geo::GeoPoint;
use emporium_kernel::ids::{DeliveryPartnerId, OrderId, WarehouseId, WarehouseOrderId};
use emporium_kernel::{sql, sql_exec};
use sqlx::types::Json;
use std::collections::HashSet;

#[derive(sqlx::FromRow)]
struct PartnerRow {
    id: DeliveryPartnerId,
    name: String,
    email: Option<String>,
    phone: Option<String>,
    lat: f64,
    lon: f64,
    radius_km: f64,
    postal_prefixes: Json<Vec<String>>,
    capacity: i64,
    max_units: i64,
    active_jobs: i64,
    active: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<PartnerRow> for Partner {
    fn from(r: PartnerRow) -> Self {
        Partner {
            id: r.id,
            name: r.name,
            email: r.email,
            phone: r.phone,
            // The CHECK constraints keep stored coordinates in range.
            base: GeoPoint::new(r.lat, r.lon).expect("stored coordinates are valid"),
            radius_km: r.radius_km,
            postal_prefixes: r.postal_prefixes.0,
            capacity: r.capacity,
            max_units: r.max_units,
            active_jobs: r.active_jobs,
            active: r.active,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

const PARTNER_COLUMNS: &str = "id, name, email, phone, lat, lon, radius_km, postal_prefixes, capacity, max_units, \
     active_jobs, active, created_at, updated_at";

/// Binds a partner's first ten columns, as `PARTNER_COLUMNS` lists them (`$1` to `$10`).
macro_rules! bind_partner {
    ($query:expr, $partner:expr) => {{
        let p = $partner;
        $query
            .bind(p.id)
            .bind(p.name.clone())
            .bind(p.email.clone())
            .bind(p.phone.clone())
            .bind(p.base.lat.degrees())
            .bind(p.base.lon.degrees())
            .bind(p.radius_km)
            .bind(Json(p.postal_prefixes.clone()))
            .bind(p.capacity)
            .bind(p.max_units)
    }};
}

pub async fn insert_partner(db: &Db, p: &Partner) -> sqlx::Result<()> {
    let sql = format!(
        "INSERT INTO delivery_partners ({PARTNER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
    );
    sql_exec!(db, |c| bind_partner!(sqlx::query(sqlx::AssertSqlSafe(sql.clone())), p)
        .bind(p.active_jobs)
        .bind(p.active)
        .bind(p.created_at)
        .bind(p.updated_at)
        .execute(c)
        .await)?;
    Ok(())
}

/// Writes what an admin may change; `active_jobs` is the assignments' alone.
pub async fn update_partner(tx: &mut Tx, p: &Partner) -> sqlx::Result<()> {
    sql_exec!(tx, |c| bind_partner!(
        sqlx::query(
            "UPDATE delivery_partners SET name = $2, email = $3, phone = $4, lat = $5, lon = $6, radius_km = $7,
             postal_prefixes = $8, capacity = $9, max_units = $10, active = $11, updated_at = $12 WHERE id = $1"
        ),
        p
    )
    .bind(p.active)
    .bind(p.updated_at)
    .execute(c)
    .await)?;
    Ok(())
}

/// Every partner, by name. `$target` is a `Db` or a `Tx`.
macro_rules! select_partners {
    ($target:expr) => {{
        let sql = format!("SELECT {PARTNER_COLUMNS} FROM delivery_partners ORDER BY name, id");
        let rows: Vec<PartnerRow> =
            sql!($target, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql.clone())).fetch_all(c).await)?;
        Ok(rows.into_iter().map(Partner::from).collect())
    }};
}

pub async fn partners(db: &Db) -> sqlx::Result<Vec<Partner>> {
    select_partners!(db)
}

/// Every partner, read inside a transaction (on SQLite under its write lock: exact).
pub async fn partners_in_tx(tx: &mut Tx) -> sqlx::Result<Vec<Partner>> {
    select_partners!(tx)
}

pub async fn partner_in_tx(tx: &mut Tx, id: DeliveryPartnerId) -> sqlx::Result<Option<Partner>> {
    let sql = format!("SELECT {PARTNER_COLUMNS} FROM delivery_partners WHERE id = $1");
    let row: Option<PartnerRow> =
        sql!(tx, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql.clone())).bind(id).fetch_optional(c).await)?;
    Ok(row.map(Partner::from))
}

/// Takes a place in the partner's capacity; false when it had none left (or stopped working).
pub async fn take_place(tx: &mut Tx, id: DeliveryPartnerId) -> sqlx::Result<bool> {
    let taken = sql_exec!(tx, |c| {
        sqlx::query(
        "UPDATE delivery_partners SET active_jobs = active_jobs + 1 WHERE id = $1 AND active AND active_jobs < capacity"
    )
    .bind(id)
    .execute(c)
    .await
    })?;
    Ok(taken == 1)
}

/// Takes `count` places at once; false when the partner has fewer left (or stopped working).
pub async fn take_places(tx: &mut Tx, id: DeliveryPartnerId, count: i64) -> sqlx::Result<bool> {
    let taken = sql_exec!(tx, |c| sqlx::query(
        "UPDATE delivery_partners SET active_jobs = active_jobs + $2
         WHERE id = $1 AND active AND active_jobs + $2 <= capacity"
    )
    .bind(id)
    .bind(count)
    .execute(c)
    .await)?;
    Ok(taken == 1)
}

pub async fn free_place(tx: &mut Tx, id: DeliveryPartnerId) -> sqlx::Result<()> {
    sql_exec!(tx, |c| sqlx::query(
        "UPDATE delivery_partners SET active_jobs = active_jobs - 1 WHERE id = $1 AND active_jobs > 0"
    )
    .bind(id)
    .execute(c)
    .await)?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct JobRow {
    warehouse_order_id: WarehouseOrderId,
    order_id: OrderId,
    warehouse_id: WarehouseId,
    pickup_lat: f64,
    pickup_lon: f64,
    drop_lat: Option<f64>,
    drop_lon: Option<f64>,
    drop_postal_code: Option<String>,
    units: i64,
    status: String,
    partner_id: Option<DeliveryPartnerId>,
    created_at: DateTime<Utc>,
    assigned_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
}

impl From<JobRow> for Job {
    fn from(r: JobRow) -> Self {
        let drop_point = match (r.drop_lat, r.drop_lon) {
            (Some(lat), Some(lon)) => GeoPoint::new(lat, lon).ok(),
            _ => None,
        };
        Job {
            warehouse_order_id: r.warehouse_order_id,
            order_id: r.order_id,
            warehouse_id: r.warehouse_id,
            pickup: GeoPoint::new(r.pickup_lat, r.pickup_lon).expect("stored coordinates are valid"),
            drop_off: Destination { point: drop_point, postal_code: r.drop_postal_code },
            units: r.units,
            // The CHECK constraint allows only known statuses.
            status: JobStatus::parse(&r.status).expect("stored statuses are known"),
            partner_id: r.partner_id,
            created_at: r.created_at,
            assigned_at: r.assigned_at,
            finished_at: r.finished_at,
        }
    }
}

const JOB_COLUMNS: &str = "warehouse_order_id, order_id, warehouse_id, pickup_lat, pickup_lon, drop_lat, drop_lon, \
     drop_postal_code, units, status, partner_id, created_at, assigned_at, finished_at";

/// Binds a job's 14 values, as `JOB_COLUMNS` lists them; for a statement or a [`Write`].
macro_rules! bind_job {
    ($query:expr, $job:expr) => {{
        let job = $job;
        $query
            .bind(job.warehouse_order_id)
            .bind(job.order_id)
            .bind(job.warehouse_id)
            .bind(job.pickup.lat.degrees())
            .bind(job.pickup.lon.degrees())
            .bind(job.drop_off.point.map(|p| p.lat.degrees()))
            .bind(job.drop_off.point.map(|p| p.lon.degrees()))
            .bind(job.drop_off.postal_code.clone())
            .bind(job.units)
            .bind(job.status.as_str())
            .bind(job.partner_id)
            .bind(job.created_at)
            .bind(job.assigned_at)
            .bind(job.finished_at)
    }};
}

/// Records a new job; a job for the same warehouse order already there is kept as it is (false).
pub async fn insert_job(tx: &mut Tx, job: &Job) -> sqlx::Result<bool> {
    let sql = format!(
        "INSERT INTO delivery_jobs ({JOB_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
         ON CONFLICT (warehouse_order_id) DO NOTHING"
    );
    let inserted = sql_exec!(tx, |c| bind_job!(sqlx::query(sqlx::AssertSqlSafe(sql.clone())), job).execute(c).await)?;
    Ok(inserted == 1)
}

/// Which of `ids` already have a job.
pub async fn existing_jobs(tx: &mut Tx, ids: &[WarehouseOrderId]) -> sqlx::Result<HashSet<WarehouseOrderId>> {
    let mut out = HashSet::new();
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "SELECT warehouse_order_id FROM delivery_jobs WHERE warehouse_order_id IN ({})",
            placeholders(1, chunk.len())
        );
        let found: Vec<WarehouseOrderId> = sql!(tx, |c| {
            let mut query = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.clone()));
            for id in chunk {
                query = query.bind(*id);
            }
            query.fetch_all(c).await
        })?;
        out.extend(found);
    }
    Ok(out)
}

/// New jobs, as they are (waiting or already assigned), riding with the transaction's next
/// statement or its commit. A job already there fails the transaction (the caller checked).
pub async fn insert_jobs(tx: &mut Tx, jobs: &[Job]) -> sqlx::Result<()> {
    let head = format!("INSERT INTO delivery_jobs ({JOB_COLUMNS})");
    for chunk in jobs.chunks(ROWS_PER_STATEMENT) {
        let mut write = Write::new(multi_row_insert(&head, 14, chunk.len())).independent();
        for job in chunk {
            write = bind_job!(write, job);
        }
        tx.defer(write).await?;
    }
    Ok(())
}

pub async fn job(db: &Db, id: WarehouseOrderId) -> sqlx::Result<Option<Job>> {
    let sql = format!("SELECT {JOB_COLUMNS} FROM delivery_jobs WHERE warehouse_order_id = $1");
    let row: Option<JobRow> =
        sql!(db, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql.clone())).bind(id).fetch_optional(c).await)?;
    Ok(row.map(Job::from))
}

/// The oldest jobs still waiting for a partner.
pub async fn waiting_jobs(db: &Db, limit: i64) -> sqlx::Result<Vec<Job>> {
    let sql = format!(
        "SELECT {JOB_COLUMNS} FROM delivery_jobs WHERE status = 'waiting' ORDER BY created_at, warehouse_order_id LIMIT $1"
    );
    let rows: Vec<JobRow> =
        sql!(db, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql.clone())).bind(limit).fetch_all(c).await)?;
    Ok(rows.into_iter().map(Job::from).collect())
}

/// Jobs, oldest first, optionally of one partner and of one status.
pub async fn jobs(
    db: &Db,
    partner: Option<DeliveryPartnerId>,
    status: Option<JobStatus>,
    limit: i64,
) -> sqlx::Result<Vec<Job>> {
    let sql = format!(
        "SELECT {JOB_COLUMNS} FROM delivery_jobs WHERE ($1 IS NULL OR partner_id = $1) AND ($2 IS NULL OR status = $2)
         ORDER BY created_at, warehouse_order_id LIMIT $3"
    );
    let status = status.map(JobStatus::as_str);
    let rows: Vec<JobRow> = sql!(db, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
        .bind(partner)
        .bind(status)
        .bind(limit)
        .fetch_all(c)
        .await)?;
    Ok(rows.into_iter().map(Job::from).collect())
}

/// Gives a waiting job to `partner`; false when it was not waiting any more.
pub async fn assign(
    tx: &mut Tx,
    id: WarehouseOrderId,
    partner: DeliveryPartnerId,
    at: DateTime<Utc>,
) -> sqlx::Result<bool> {
    let changed = sql_exec!(tx, |c| sqlx::query(
        "UPDATE delivery_jobs SET status = 'assigned', partner_id = $2, assigned_at = $3
         WHERE warehouse_order_id = $1 AND status = 'waiting'"
    )
    .bind(id)
    .bind(partner)
    .bind(at)
    .execute(c)
    .await)?;
    Ok(changed == 1)
}

/// Closes the job if it is still `from`; false when it is not (closed, or assigned meanwhile).
pub async fn finish(tx: &mut Tx, id: WarehouseOrderId, from: JobStatus, at: DateTime<Utc>) -> sqlx::Result<bool> {
    let changed = sql_exec!(tx, |c| {
        sqlx::query(
        "UPDATE delivery_jobs SET status = 'finished', finished_at = $3 WHERE warehouse_order_id = $1 AND status = $2"
    )
    .bind(id)
    .bind(from.as_str())
    .bind(at)
    .execute(c)
    .await
    })?;
    Ok(changed == 1)
}
