//! SQL for partners and jobs, one code path for SQLite and PostgreSQL, on the storage layer
//! (`kernel::storage`): every function runs inside a transaction closure.

use crate::model::{Job, JobStatus, Partner};
use chrono::{DateTime, Utc};
use emporium_kernel::db::{ROWS_PER_STATEMENT, multi_row_insert, placeholders};
use emporium_kernel::geo::{Destination, GeoPoint};
use emporium_kernel::ids::{DeliveryPartnerId, WarehouseOrderId};
use emporium_kernel::storage::{Param, Result, Row, Tx};
use std::collections::HashSet;

const PARTNER_COLUMNS: &str = "id, name, email, phone, lat, lon, radius_km, postal_prefixes, capacity, max_units, \
     active_jobs, active, created_at, updated_at";

fn partner_of(row: &Row) -> Result<Partner> {
    let prefixes: serde_json::Value = row.get(7)?;
    Ok(Partner {
        id: row.get(0)?,
        name: row.get(1)?,
        email: row.get(2)?,
        phone: row.get(3)?,
        // The CHECK constraints keep stored coordinates in range.
        base: GeoPoint::new(row.get(4)?, row.get(5)?).expect("stored coordinates are valid"),
        radius_km: row.get(6)?,
        postal_prefixes: serde_json::from_value(prefixes).unwrap_or_default(),
        capacity: row.get(8)?,
        max_units: row.get(9)?,
        active_jobs: row.get(10)?,
        active: row.get(11)?,
        created_at: row.get(12)?,
        updated_at: row.get(13)?,
    })
}

pub fn insert_partner(tx: &mut Tx<'_>, p: &Partner) -> Result<()> {
    let sql = format!(
        "INSERT INTO delivery_partners ({PARTNER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
    );
    let prefixes = serde_json::json!(p.postal_prefixes);
    tx.execute(
        &sql,
        &[
            &p.id,
            &p.name,
            &p.email,
            &p.phone,
            &p.base.lat.degrees(),
            &p.base.lon.degrees(),
            &p.radius_km,
            &prefixes,
            &p.capacity,
            &p.max_units,
            &p.active_jobs,
            &p.active,
            &p.created_at,
            &p.updated_at,
        ],
    )?;
    Ok(())
}

/// Writes what an admin may change; `active_jobs` is the assignments' alone.
pub fn update_partner(tx: &mut Tx<'_>, p: &Partner) -> Result<()> {
    let prefixes = serde_json::json!(p.postal_prefixes);
    tx.execute(
        "UPDATE delivery_partners SET name = $2, email = $3, phone = $4, lat = $5, lon = $6, radius_km = $7,
         postal_prefixes = $8, capacity = $9, max_units = $10, active = $11, updated_at = $12 WHERE id = $1",
        &[
            &p.id,
            &p.name,
            &p.email,
            &p.phone,
            &p.base.lat.degrees(),
            &p.base.lon.degrees(),
            &p.radius_km,
            &prefixes,
            &p.capacity,
            &p.max_units,
            &p.active,
            &p.updated_at,
        ],
    )?;
    Ok(())
}

/// Every partner, by name (inside a writing transaction on SQLite: exact).
pub fn partners(tx: &mut Tx<'_>) -> Result<Vec<Partner>> {
    let sql = format!("SELECT {PARTNER_COLUMNS} FROM delivery_partners ORDER BY name, id");
    tx.query(&sql, &[])?.iter().map(partner_of).collect()
}

pub fn partner(tx: &mut Tx<'_>, id: DeliveryPartnerId) -> Result<Option<Partner>> {
    let sql = format!("SELECT {PARTNER_COLUMNS} FROM delivery_partners WHERE id = $1");
    tx.query_opt(&sql, &[&id])?.as_ref().map(partner_of).transpose()
}

/// Takes `count` places at once; false when the partner has fewer left (or stopped working).
pub fn take_places(tx: &mut Tx<'_>, id: DeliveryPartnerId, count: i64) -> Result<bool> {
    let taken = tx.execute(
        "UPDATE delivery_partners SET active_jobs = active_jobs + $2
         WHERE id = $1 AND active AND active_jobs + $2 <= capacity",
        &[&id, &count],
    )?;
    Ok(taken == 1)
}

pub fn free_place(tx: &mut Tx<'_>, id: DeliveryPartnerId) -> Result<()> {
    tx.execute("UPDATE delivery_partners SET active_jobs = active_jobs - 1 WHERE id = $1 AND active_jobs > 0", &[&id])?;
    Ok(())
}

const JOB_COLUMNS: &str = "warehouse_order_id, order_id, warehouse_id, pickup_lat, pickup_lon, drop_lat, drop_lon, \
     drop_postal_code, units, status, partner_id, created_at, assigned_at, finished_at";

fn job_of(row: &Row) -> Result<Job> {
    let drop_point = match (row.get::<Option<f64>>(5)?, row.get::<Option<f64>>(6)?) {
        (Some(lat), Some(lon)) => GeoPoint::new(lat, lon).ok(),
        _ => None,
    };
    let status: String = row.get(9)?;
    Ok(Job {
        warehouse_order_id: row.get(0)?,
        order_id: row.get(1)?,
        warehouse_id: row.get(2)?,
        pickup: GeoPoint::new(row.get(3)?, row.get(4)?).expect("stored coordinates are valid"),
        drop_off: Destination { point: drop_point, postal_code: row.get(7)? },
        units: row.get(8)?,
        // The CHECK constraint allows only known statuses.
        status: JobStatus::parse(&status).expect("stored statuses are known"),
        partner_id: row.get(10)?,
        created_at: row.get(11)?,
        assigned_at: row.get(12)?,
        finished_at: row.get(13)?,
    })
}

/// A job's 14 values, as `JOB_COLUMNS` lists them.
fn job_values(job: &Job) -> Vec<Box<dyn Param + '_>> {
    vec![
        Box::new(job.warehouse_order_id),
        Box::new(job.order_id),
        Box::new(job.warehouse_id),
        Box::new(job.pickup.lat.degrees()),
        Box::new(job.pickup.lon.degrees()),
        Box::new(job.drop_off.point.map(|p| p.lat.degrees())),
        Box::new(job.drop_off.point.map(|p| p.lon.degrees())),
        Box::new(job.drop_off.postal_code.clone()),
        Box::new(job.units),
        Box::new(job.status.as_str()),
        Box::new(job.partner_id),
        Box::new(job.created_at),
        Box::new(job.assigned_at),
        Box::new(job.finished_at),
    ]
}

/// Records a new job; a job for the same warehouse order already there is kept as it is (false).
pub fn insert_job(tx: &mut Tx<'_>, job: &Job) -> Result<bool> {
    let sql = format!(
        "INSERT INTO delivery_jobs ({JOB_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
         ON CONFLICT (warehouse_order_id) DO NOTHING"
    );
    let values = job_values(job);
    let params: Vec<&dyn Param> = values.iter().map(|v| v.as_ref()).collect();
    Ok(tx.execute(&sql, &params)? == 1)
}

/// New jobs, as they are (waiting or already assigned), several rows per statement. A job
/// already there fails the transaction (the caller checked).
pub fn insert_jobs(tx: &mut Tx<'_>, jobs: &[Job]) -> Result<()> {
    let head = format!("INSERT INTO delivery_jobs ({JOB_COLUMNS})");
    for chunk in jobs.chunks(ROWS_PER_STATEMENT) {
        let values: Vec<Box<dyn Param + '_>> = chunk.iter().flat_map(job_values).collect();
        let params: Vec<&dyn Param> = values.iter().map(|v| v.as_ref()).collect();
        tx.execute(&multi_row_insert(&head, 14, chunk.len()), &params)?;
    }
    Ok(())
}

/// Which of `ids` already have a job.
pub fn existing_jobs(tx: &mut Tx<'_>, ids: &[WarehouseOrderId]) -> Result<HashSet<WarehouseOrderId>> {
    let mut out = HashSet::new();
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "SELECT warehouse_order_id FROM delivery_jobs WHERE warehouse_order_id IN ({})",
            placeholders(1, chunk.len())
        );
        let params: Vec<&dyn Param> = chunk.iter().map(|id| id as &dyn Param).collect();
        for row in tx.query(&sql, &params)? {
            out.insert(row.get(0)?);
        }
    }
    Ok(out)
}

pub fn job(tx: &mut Tx<'_>, id: WarehouseOrderId) -> Result<Option<Job>> {
    let sql = format!("SELECT {JOB_COLUMNS} FROM delivery_jobs WHERE warehouse_order_id = $1");
    tx.query_opt(&sql, &[&id])?.as_ref().map(job_of).transpose()
}

/// The oldest jobs still waiting for a partner.
pub fn waiting_jobs(tx: &mut Tx<'_>, limit: i64) -> Result<Vec<Job>> {
    let sql = format!(
        "SELECT {JOB_COLUMNS} FROM delivery_jobs WHERE status = 'waiting' ORDER BY created_at, warehouse_order_id LIMIT $1"
    );
    tx.query(&sql, &[&limit])?.iter().map(job_of).collect()
}

/// Jobs, oldest first, optionally of one partner and of one status.
pub fn jobs(
    tx: &mut Tx<'_>,
    partner: Option<DeliveryPartnerId>,
    status: Option<JobStatus>,
    limit: i64,
) -> Result<Vec<Job>> {
    let sql = format!(
        "SELECT {JOB_COLUMNS} FROM delivery_jobs WHERE ($1 IS NULL OR partner_id = $1) AND ($2 IS NULL OR status = $2)
         ORDER BY created_at, warehouse_order_id LIMIT $3"
    );
    let status = status.map(JobStatus::as_str);
    tx.query(&sql, &[&partner, &status, &limit])?.iter().map(job_of).collect()
}

/// Gives a waiting job to `partner`; false when it was not waiting any more.
pub fn assign(tx: &mut Tx<'_>, id: WarehouseOrderId, partner: DeliveryPartnerId, at: DateTime<Utc>) -> Result<bool> {
    let changed = tx.execute(
        "UPDATE delivery_jobs SET status = 'assigned', partner_id = $2, assigned_at = $3
         WHERE warehouse_order_id = $1 AND status = 'waiting'",
        &[&id, &partner, &at],
    )?;
    Ok(changed == 1)
}

/// Closes the job if it is still `from`; false when it is not (closed, or assigned meanwhile).
pub fn finish(tx: &mut Tx<'_>, id: WarehouseOrderId, from: JobStatus, at: DateTime<Utc>) -> Result<bool> {
    let changed = tx.execute(
        "UPDATE delivery_jobs SET status = 'finished', finished_at = $3 WHERE warehouse_order_id = $1 AND status = $2",
        &[&id, &from.as_str(), &at],
    )?;
    Ok(changed == 1)
}
