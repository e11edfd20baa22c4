//! Delivery use cases: partners managed by admins; jobs requested by the order service for each
//! warehouse order, assigned at once or as soon as a partner serving them has room, and finished
//! when the warehouse order is delivered or cancelled.

use crate::api::JobRequest;
use crate::api::events::DeliveryPartnerAssigned;
use crate::model::{Job, JobStatus, Partner, candidates, plan};
use crate::store;
use chrono::{DateTime, Utc};
use emporium_inventory::api::InventoryClient;
use emporium_kernel::clock::SharedClock;
use emporium_kernel::db::Db;
use emporium_kernel::error::{ApiError, ErrorCode, FieldError};
use emporium_kernel::events::{self, PendingEvent};
use emporium_kernel::geo::GeoPoint;
use emporium_kernel::geo::postal_prefixes;
use emporium_kernel::ids::{DeliveryPartnerId, WarehouseOrderId};
use emporium_kernel::storage::{self, Database, Tx};
use std::collections::{BTreeMap, HashMap, HashSet};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("delivery partner not found")]
    PartnerNotFound,
    #[error("invalid fields")]
    Invalid(Vec<FieldError>),
    #[error("a service delivery depends on failed: {0}")]
    Dependency(String),
    /// Inside `request_all` only: a partner's planned places went meanwhile.
    #[error("a partner's places went meanwhile")]
    PlacesGone,
    #[error("storage failed")]
    Store(#[from] anyhow::Error),
}

impl From<sqlx::Error> for Error {
    fn from(err: sqlx::Error) -> Self {
        Error::Store(err.into())
    }
}

impl From<storage::Error> for Error {
    fn from(err: storage::Error) -> Self {
        Error::Store(err.into())
    }
}

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        let detail = err.to_string();
        match err {
            Error::PartnerNotFound => ApiError::not_found("delivery partner"),
            Error::Invalid(errors) => ApiError::validation(errors),
            Error::Dependency(_) | Error::PlacesGone => ApiError::new(ErrorCode::Unavailable).with_detail(detail),
            Error::Store(e) => ApiError::internal(e),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn invalid(field: &str, message: impl Into<String>) -> Error {
    Error::Invalid(vec![FieldError::new(field, message)])
}

/// Jobs a partner change or a freed place looks at in one go, oldest first.
const WAITING_BATCH: i64 = 500;

/// Most jobs one listing shows (the oldest first: those that matter most).
const JOBS_LISTED: i64 = 1_000;

pub struct NewPartner {
    pub name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub base: GeoPoint,
    pub radius_km: f64,
    pub postal_prefixes: Vec<String>,
    pub capacity: i64,
    pub max_units: i64,
}

/// Absent fields stay as they are.
#[derive(Default)]
pub struct PartnerPatch {
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub base: Option<GeoPoint>,
    pub radius_km: Option<f64>,
    pub postal_prefixes: Option<Vec<String>>,
    pub capacity: Option<i64>,
    pub max_units: Option<i64>,
    pub active: Option<bool>,
}

pub struct DeliveryService {
    /// What the event bus reads the outbox through (the service itself writes with `storage`).
    db: Db,
    storage: Database,
    clock: SharedClock,
    inventory: InventoryClient,
}

impl DeliveryService {
    pub fn new(db: Db, storage: Database, clock: SharedClock, inventory: InventoryClient) -> Self {
        let storage = storage.ringing(db.commit_signal());
        Self { db, storage, clock, inventory }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    // --- partners ---------------------------------------------------------------------------------

    pub async fn partners(&self) -> Result<Vec<Partner>> {
        Ok(self.storage.read(store::partners).await?)
    }

    pub async fn partner(&self, id: DeliveryPartnerId) -> Result<Partner> {
        self.storage.read(move |tx| store::partner(tx, id)).await?.ok_or(Error::PartnerNotFound)
    }

    /// A new partner, who at once takes the waiting jobs it serves, up to its capacity.
    pub async fn create_partner(&self, new: NewPartner) -> Result<Partner> {
        check_limits(new.radius_km, new.capacity, new.max_units)?;
        let now = self.clock.now();
        let partner = Partner {
            id: DeliveryPartnerId::new(),
            name: new.name,
            email: new.email,
            phone: new.phone,
            base: new.base,
            radius_km: new.radius_km,
            postal_prefixes: normalise(new.postal_prefixes)?,
            capacity: new.capacity,
            max_units: new.max_units,
            active_jobs: 0,
            active: true,
            created_at: now,
            updated_at: now,
        };
        let id = partner.id;
        self.storage.write(move |tx| store::insert_partner(tx, &partner)).await?;
        self.assign_waiting().await?;
        self.partner(id).await
    }

    /// Changes a partner; more room or a larger area takes waiting jobs at once. Jobs in hand
    /// stay with it whatever changes (deactivating stops new ones only).
    pub async fn update_partner(&self, id: DeliveryPartnerId, patch: PartnerPatch) -> Result<Partner> {
        let prefixes = patch.postal_prefixes.map(normalise).transpose()?;
        let now = self.clock.now();
        self.storage
            .write(move |tx| -> Result<()> {
                let mut p = store::partner(tx, id)?.ok_or(Error::PartnerNotFound)?;
                p.name = patch.name.unwrap_or(p.name);
                p.email = patch.email.or(p.email);
                p.phone = patch.phone.or(p.phone);
                p.base = patch.base.unwrap_or(p.base);
                p.radius_km = patch.radius_km.unwrap_or(p.radius_km);
                p.postal_prefixes = prefixes.unwrap_or(p.postal_prefixes);
                p.capacity = patch.capacity.unwrap_or(p.capacity);
                p.max_units = patch.max_units.unwrap_or(p.max_units);
                p.active = patch.active.unwrap_or(p.active);
                p.updated_at = now;
                check_limits(p.radius_km, p.capacity, p.max_units)?;
                Ok(store::update_partner(tx, &p)?)
            })
            .await?;
        self.assign_waiting().await?;
        self.partner(id).await
    }

    /// Jobs, oldest first, of one partner (404 when unknown) and/or in one status.
    pub async fn jobs(&self, partner: Option<DeliveryPartnerId>, status: Option<JobStatus>) -> Result<Vec<Job>> {
        if let Some(partner) = partner {
            self.partner(partner).await?;
        }
        Ok(self.storage.read(move |tx| store::jobs(tx, partner, status, JOBS_LISTED)).await?)
    }

    // --- jobs -------------------------------------------------------------------------------------

    /// A warehouse order to carry: recorded once (a repeated request finds the first job) and,
    /// in the same transaction, given to the best partner with room, or left waiting for one.
    pub async fn request(&self, req: JobRequest) -> Result<Job> {
        let mut jobs = self.request_all(vec![req]).await?;
        Ok(jobs.remove(0))
    }

    /// [`Self::request`] for many warehouse orders at once (the order service sends a burst of
    /// split orders together): the jobs come back in the order asked. One transaction for the
    /// burst, whatever its size: the jobs already there and the partners are read in it, the
    /// burst is planned in memory (`model::plan`), each partner chosen takes its places in one
    /// conditional update, and the new jobs and their events are written with it. When a
    /// partner's places went meanwhile (PostgreSQL: a concurrent request), the whole transaction
    /// is undone and the burst is placed one job at a time instead.
    pub async fn request_all(&self, requests: Vec<JobRequest>) -> Result<Vec<Job>> {
        let mut jobs = Vec::with_capacity(requests.len());
        for req in requests {
            if req.units <= 0 {
                return Err(invalid("units", "must be at least 1"));
            }
            let warehouse = self
                .inventory
                .warehouse(req.warehouse_id)
                .await
                .map_err(|e| Error::Dependency(emporium_kernel::error::dependency_failed(&e)))?;
            jobs.push(Job {
                warehouse_order_id: req.warehouse_order_id,
                order_id: req.order_id,
                warehouse_id: req.warehouse_id,
                pickup: warehouse.location,
                drop_off: req.drop_off,
                units: req.units,
                status: JobStatus::Waiting,
                partner_id: None,
                created_at: self.clock.now(),
                assigned_at: None,
                finished_at: None,
            });
        }
        let ids: Vec<WarehouseOrderId> = jobs.iter().map(|j| j.warehouse_order_id).collect();
        // A warehouse order asked twice in one burst is one job.
        let mut seen = HashSet::new();
        jobs.retain(|j| seen.insert(j.warehouse_order_id));
        let now = self.clock.now();
        let (asked, burst) = (ids.clone(), jobs.clone());
        let written = self
            .storage
            .write(move |tx| -> Result<(Vec<Job>, Vec<Job>)> {
                let existing = store::existing_jobs(tx, &asked)?;
                let partners = store::partners(tx)?;
                let (fresh, known): (Vec<Job>, Vec<Job>) =
                    burst.into_iter().partition(|j| !existing.contains(&j.warehouse_order_id));
                let planned = plan(&partners, &fresh);
                let mut places: BTreeMap<DeliveryPartnerId, i64> = BTreeMap::new();
                for partner in planned.iter().flatten() {
                    *places.entry(*partner).or_default() += 1;
                }
                for (partner, count) in &places {
                    if !store::take_places(tx, *partner, *count)? {
                        return Err(Error::PlacesGone);
                    }
                }
                let mut assigned = Vec::new();
                let fresh: Vec<Job> = fresh
                    .into_iter()
                    .zip(planned)
                    .map(|(mut job, partner)| {
                        if let Some(partner) = partner {
                            job.status = JobStatus::Assigned;
                            job.partner_id = Some(partner);
                            job.assigned_at = Some(now);
                            assigned.push(PendingEvent::of(&DeliveryPartnerAssigned {
                                warehouse_order_id: job.warehouse_order_id,
                                order_id: job.order_id,
                                partner_id: partner,
                            }));
                        }
                        job
                    })
                    .collect();
                store::insert_jobs(tx, &fresh)?;
                let assigned: Vec<PendingEvent> = assigned.into_iter().collect::<sqlx::Result<_>>()?;
                events::append_to(tx, &assigned)?;
                Ok((fresh, known))
            })
            .await;
        match written {
            Ok((fresh, known)) => self.answer_in_order(&ids, fresh, known).await,
            Err(Error::PlacesGone) => self.request_each(&ids, jobs).await,
            Err(err) => Err(err),
        }
    }

    /// [`Self::request_all`] one job at a time, each in its own transaction taking a place by a
    /// conditional update: for a burst whose planned places went meanwhile.
    async fn request_each(&self, ids: &[WarehouseOrderId], jobs: Vec<Job>) -> Result<Vec<Job>> {
        let (mut placed, mut known) = (Vec::with_capacity(jobs.len()), Vec::new());
        for mut job in jobs {
            let partners = self.partners().await?;
            let (now, stored) = (self.clock.now(), job.clone());
            let inserted = self
                .storage
                .write(move |tx| -> Result<Option<Assigned>> {
                    if !store::insert_job(tx, &stored)? {
                        // Requested concurrently (or before): answered as stored.
                        return Ok(None);
                    }
                    Ok(Some(assign_in(tx, &partners, &stored, now)?))
                })
                .await?;
            match inserted {
                None => known.push(job),
                Some(assigned) => {
                    if let Some((partner, at)) = assigned {
                        job.status = JobStatus::Assigned;
                        job.partner_id = Some(partner);
                        job.assigned_at = Some(at);
                    }
                    placed.push(job);
                }
            }
        }
        self.answer_in_order(ids, placed, known).await
    }

    /// The jobs of `ids`, in that order: `placed` as this call wrote them; `known` (requested
    /// before, e.g. a redelivered event) as stored, after offering a partner to those waiting.
    async fn answer_in_order(&self, ids: &[WarehouseOrderId], placed: Vec<Job>, known: Vec<Job>) -> Result<Vec<Job>> {
        let mut by_id: HashMap<WarehouseOrderId, Job> = placed.into_iter().map(|j| (j.warehouse_order_id, j)).collect();
        for job in known {
            let id = job.warehouse_order_id;
            let mut stored = self.job(id).await?;
            if stored.status == JobStatus::Waiting && self.try_assign(self.partners().await?, &stored).await?.is_some()
            {
                stored = self.job(id).await?;
            }
            by_id.insert(id, stored);
        }
        ids.iter()
            .map(|id| by_id.get(id).cloned().ok_or_else(|| Error::Store(anyhow::anyhow!("job {id} vanished"))))
            .collect()
    }

    async fn job(&self, id: WarehouseOrderId) -> Result<Job> {
        self.storage
            .read(move |tx| store::job(tx, id))
            .await?
            .ok_or_else(|| Error::Store(anyhow::anyhow!("job {id} vanished")))
    }

    /// Gives a waiting `job` to the first of its candidates that still has a place when the
    /// assignment is written (a concurrent assignment may take the last one), in its own
    /// transaction. The partner, when it was assigned here.
    async fn try_assign(&self, partners: Vec<Partner>, job: &Job) -> Result<Option<DeliveryPartnerId>> {
        let (job, now) = (job.clone(), self.clock.now());
        let assigned = self.storage.write(move |tx| assign_in(tx, &partners, &job, now)).await?;
        Ok(assigned.map(|(partner, _)| partner))
    }

    /// The warehouse order was delivered or cancelled: its partner's place is free again, and the
    /// oldest waiting jobs get a chance at it. Finishing again, or a job never requested, changes
    /// nothing.
    pub async fn finish(&self, id: WarehouseOrderId) -> Result<()> {
        // Twice at most: a waiting job may be assigned between the read and the update.
        for _ in 0..2 {
            let Some(job) = self.storage.read(move |tx| store::job(tx, id)).await? else { return Ok(()) };
            if job.status == JobStatus::Finished {
                return Ok(());
            }
            let (from, partner, now) = (job.status, job.partner_id, self.clock.now());
            let finished = self
                .storage
                .write(move |tx| -> Result<bool> {
                    if !store::finish(tx, id, from, now)? {
                        return Ok(false);
                    }
                    if let (JobStatus::Assigned, Some(partner)) = (from, partner) {
                        store::free_place(tx, partner)?;
                    }
                    Ok(true)
                })
                .await?;
            if !finished {
                continue;
            }
            if from == JobStatus::Assigned {
                self.assign_waiting().await?;
            }
            return Ok(());
        }
        Err(Error::Store(anyhow::anyhow!("job {id} keeps changing")))
    }

    /// Offers the oldest waiting jobs to the partners as they are now; returns how many were
    /// assigned. Run when a place frees up or a partner changes.
    pub async fn assign_waiting(&self) -> Result<usize> {
        let waiting = self.storage.read(|tx| store::waiting_jobs(tx, WAITING_BATCH)).await?;
        if waiting.is_empty() {
            return Ok(0);
        }
        let mut partners = self.partners().await?;
        let mut assigned = 0;
        for job in &waiting {
            if partners.iter().all(|p| !p.has_room()) {
                break;
            }
            if let Some(partner) = self.try_assign(partners.clone(), job).await? {
                assigned += 1;
                // The next job is ranked on the loads as they now are (as `model::plan` does).
                if let Some(p) = partners.iter_mut().find(|p| p.id == partner) {
                    p.active_jobs += 1;
                }
            }
        }
        Ok(assigned)
    }
}

/// The partner a job went to, and when; `None` when none could take it.
type Assigned = Option<(DeliveryPartnerId, DateTime<Utc>)>;

/// Inside a transaction: takes a place with the first candidate that has one, moves the job from
/// waiting to assigned (nothing when it is not waiting any more) and appends
/// `DeliveryPartnerAssigned`. The partner and the time, when assigned.
fn assign_in(tx: &mut Tx<'_>, partners: &[Partner], job: &Job, at: DateTime<Utc>) -> Result<Assigned> {
    for partner in candidates(partners, job) {
        // A refused take changes nothing, so the transaction goes on to the next candidate.
        if !store::take_places(tx, partner, 1)? {
            continue;
        }
        if !store::assign(tx, job.warehouse_order_id, partner, at)? {
            store::free_place(tx, partner)?;
            return Ok(None);
        }
        let event = PendingEvent::of(&DeliveryPartnerAssigned {
            warehouse_order_id: job.warehouse_order_id,
            order_id: job.order_id,
            partner_id: partner,
        })?;
        events::append_to(tx, &[event])?;
        tracing::debug!(job = %job.warehouse_order_id, %partner, "delivery partner assigned");
        return Ok(Some((partner, at)));
    }
    Ok(None)
}

fn check_limits(radius_km: f64, capacity: i64, max_units: i64) -> Result<()> {
    let mut errors = Vec::new();
    if !(radius_km.is_finite() && (0.0..=20_000.0).contains(&radius_km)) {
        errors.push(FieldError::new("service_radius_km", "must be between 0 and 20000"));
    }
    if !(0..=100_000).contains(&capacity) {
        errors.push(FieldError::new("capacity", "must be a whole number between 0 and 100000"));
    }
    if !(1..=1_000_000).contains(&max_units) {
        errors.push(FieldError::new("max_units", "must be a whole number between 1 and 1000000"));
    }
    if errors.is_empty() { Ok(()) } else { Err(Error::Invalid(errors)) }
}

fn normalise(prefixes: Vec<String>) -> Result<Vec<String>> {
    postal_prefixes(prefixes).map_err(|(field, message)| invalid(&field, message))
}
