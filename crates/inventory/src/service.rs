//! Inventory use cases. Callers are checked at the HTTP edge (admins manage warehouses, warehouse
//! staff move stock, other services reserve); here every change is one transaction that applies
//! conditional movements, writes the ledger and appends the events.

use crate::api::ReserveRequest;
use crate::api::events::{StockChanged, WarehouseChanged, WarehouseStock};
use crate::model::{
    Candidate, CommitDecision, MAX_QUANTITY, Movement, NEAREST_WAREHOUSES, Placement, Reservation, ReservationLine,
    ReservationStatus, Shortage, StockLevels, Warehouse, WarehouseStrategy, decide_commit, eta_days, explain_shortages,
    merge_lines, place,
};
use crate::store::{self, Entry, LedgerRow, Locked, Lookup};
use chrono::{DateTime, Utc};
use emporium_catalog::api::CatalogClient;
use emporium_kernel::cache::Snapshot;
use emporium_kernel::clock::SharedClock;
use emporium_kernel::db::{Db, TransientConflict, Tx, again_on_conflict, is_check_violation, is_unique_violation};
use emporium_kernel::error::{ApiError, ErrorCode, FieldError};
use emporium_kernel::events::{self, PendingEvent};
use emporium_kernel::geo::{Destination, GeoPoint};
use emporium_kernel::ids::{ProductId, ReservationId, WarehouseId};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("warehouse not found")]
    WarehouseNotFound,
    #[error("product not found")]
    ProductNotFound,
    #[error("reservation not found")]
    ReservationNotFound,
    #[error("invalid fields")]
    Invalid(Vec<FieldError>),
    #[error("not enough stock for every line")]
    OutOfStock(Vec<Shortage>),
    #[error("the warehouse holds only {available} available units of this product")]
    InsufficientStock { available: i64 },
    #[error("the reservation expired and its stock was given back")]
    ReservationExpired,
    #[error("the reservation was released")]
    ReservationReleased,
    #[error("{0}")]
    Conflict(String),
    #[error("a service the inventory depends on failed: {0}")]
    Dependency(String),
    #[error("storage failed")]
    Store(#[from] sqlx::Error),
}

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        let detail = err.to_string();
        match err {
            Error::WarehouseNotFound => ApiError::not_found("warehouse"),
            Error::ProductNotFound => ApiError::not_found("product"),
            Error::ReservationNotFound => ApiError::not_found("reservation"),
            Error::Invalid(errors) => ApiError::validation(errors),
            Error::OutOfStock(lines) => {
                ApiError::conflict("not enough stock for every line").with_extra("lines", lines)
            }
            Error::InsufficientStock { .. }
            | Error::ReservationExpired
            | Error::ReservationReleased
            | Error::Conflict(_) => ApiError::new(ErrorCode::Conflict).with_detail(detail),
            Error::Dependency(_) => ApiError::new(ErrorCode::Unavailable).with_detail(detail),
            Error::Store(e) => ApiError::internal(e),
        }
    }
}

impl TransientConflict for Error {
    fn is_transient_conflict(&self) -> bool {
        matches!(self, Error::Store(err) if err.is_transient_conflict())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Runs of one use case's transaction when the database rolls it back whole for a conflict with
/// another (see `db::TransientConflict`). The lock order (see `store`) keeps stock writers from
/// deadlocking each other; this covers whatever else PostgreSQL may abort.
const CONFLICT_ATTEMPTS: usize = 5;

fn invalid(field: &str, message: impl Into<String>) -> Error {
    Error::Invalid(vec![FieldError::new(field, message)])
}

pub struct NewWarehouse {
    pub name: String,
    pub address: String,
    pub location: GeoPoint,
    pub delivery_radius_km: f64,
    pub postal_prefixes: Vec<String>,
}

#[derive(Default)]
pub struct WarehousePatch {
    pub name: Option<String>,
    pub address: Option<String>,
    pub location: Option<GeoPoint>,
    pub delivery_radius_km: Option<f64>,
    pub postal_prefixes: Option<Vec<String>>,
    pub active: Option<bool>,
}

/// A product's stock: the aggregate and each warehouse's row.
#[derive(Clone, Debug, PartialEq)]
pub struct ProductStock {
    pub product_id: ProductId,
    pub total: StockLevels,
    pub warehouses: Vec<(WarehouseId, StockLevels)>,
}

/// One warehouse that could deliver a product to a place.
#[derive(Clone, Debug, PartialEq)]
pub struct DeliveryOption {
    pub warehouse_id: WarehouseId,
    pub distance_km: Option<f64>,
    pub eta_days: Option<u32>,
    pub available: i64,
}

/// A (product, warehouse) whose row disagrees with its ledger or breaks the invariant.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditFinding {
    pub product_id: ProductId,
    pub warehouse_id: WarehouseId,
    pub stock: StockLevels,
    pub ledger: StockLevels,
}

pub struct InventoryService {
    db: Db,
    clock: SharedClock,
    /// Checks that stocked products exist; absent when the catalog runs elsewhere.
    catalog: Option<CatalogClient>,
    strategy: Arc<dyn WarehouseStrategy>,
    default_ttl: Duration,
    /// The warehouses as reservations and delivery options see them (read on every checkout).
    directory: Snapshot<Vec<Warehouse>>,
}

/// How long a warehouse change made on another node may go unseen by this one's reservations and
/// delivery options (this node's own changes show at once).
const DIRECTORY_MAX_AGE: Duration = Duration::from_secs(2);

/// Attempts at placing a reservation: another runs when the database aborted one, when a row
/// refused a move (never expected: rows are read under their locks), or when the reference turned
/// out to be taken concurrently (the next attempt finds it).
const RESERVE_ATTEMPTS: usize = 5;
const MAX_RESERVATION_TTL: Duration = Duration::from_secs(24 * 3600);

impl InventoryService {
    pub fn new(
        db: Db,
        clock: SharedClock,
        catalog: Option<CatalogClient>,
        strategy: Arc<dyn WarehouseStrategy>,
        default_ttl: Duration,
    ) -> Self {
        Self { db, clock, catalog, strategy, default_ttl, directory: Snapshot::new(DIRECTORY_MAX_AGE) }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    // --- warehouses -------------------------------------------------------------------------------

    pub async fn warehouses(&self) -> Result<Vec<Warehouse>> {
        Ok(store::warehouses(&self.db).await?)
    }

    /// The warehouses for shoppers' paths: a copy at most [`DIRECTORY_MAX_AGE`] old.
    async fn directory(&self) -> Result<Arc<Vec<Warehouse>>> {
        Ok(self.directory.get_or_load(|| store::warehouses(&self.db)).await?)
    }

    pub async fn warehouse(&self, id: WarehouseId) -> Result<Warehouse> {
        self.warehouses().await?.into_iter().find(|w| w.id == id).ok_or(Error::WarehouseNotFound)
    }

    /// A warehouse as the shoppers' paths see it (the directory copy, at most
    /// [`DIRECTORY_MAX_AGE`] old): what other services ask for on every order.
    pub async fn warehouse_listed(&self, id: WarehouseId) -> Result<Warehouse> {
        self.directory().await?.iter().find(|w| w.id == id).cloned().ok_or(Error::WarehouseNotFound)
    }

    pub async fn create_warehouse(&self, new: NewWarehouse) -> Result<Warehouse> {
        check_radius(new.delivery_radius_km)?;
        let now = self.clock.now();
        let warehouse = Warehouse {
            id: WarehouseId::new(),
            name: new.name,
            address: new.address,
            location: new.location,
            delivery_radius_km: new.delivery_radius_km,
            postal_prefixes: normalise_prefixes(new.postal_prefixes)?,
            active: true,
            created_at: now,
            updated_at: now,
        };
        let mut tx = self.db.begin().await?;
        store::insert_warehouse(&mut tx, &warehouse).await?;
        events::append(&mut tx, &WarehouseChanged(warehouse.clone())).await?;
        tx.commit().await?;
        self.directory.forget();
        Ok(warehouse)
    }

    pub async fn update_warehouse(&self, id: WarehouseId, patch: WarehousePatch) -> Result<Warehouse> {
        if let Some(radius) = patch.delivery_radius_km {
            check_radius(radius)?;
        }
        let prefixes = patch.postal_prefixes.map(normalise_prefixes).transpose()?;
        let mut tx = self.db.begin().await?;
        let mut w = store::warehouse_for_update(&mut tx, id).await?.ok_or(Error::WarehouseNotFound)?;
        w.name = patch.name.unwrap_or(w.name);
        w.address = patch.address.unwrap_or(w.address);
        w.location = patch.location.unwrap_or(w.location);
        w.delivery_radius_km = patch.delivery_radius_km.unwrap_or(w.delivery_radius_km);
        w.postal_prefixes = prefixes.unwrap_or(w.postal_prefixes);
        w.active = patch.active.unwrap_or(w.active);
        w.updated_at = self.clock.now();
        store::update_warehouse(&mut tx, &w).await?;
        events::append(&mut tx, &WarehouseChanged(w.clone())).await?;
        tx.commit().await?;
        self.directory.forget();
        Ok(w)
    }

    // --- stock ------------------------------------------------------------------------------------

    /// A product's stock; a product never stocked has none of it (zeros), and one the catalog
    /// does not know is not found (asked only then: a stocked product exists).
    pub async fn stock(&self, product: ProductId) -> Result<ProductStock> {
        let rows = store::stock_of(&self.db, product).await?;
        if rows.is_empty()
            && let Some(catalog) = &self.catalog
            && catalog
                .product(product)
                .await
                .map_err(|e| Error::Dependency(emporium_kernel::error::dependency_failed(&e)))?
                .is_none()
        {
            return Err(Error::ProductNotFound);
        }
        Ok(product_stock(product, rows))
    }

    /// Aggregated stock of many products (zero for products never stocked).
    pub async fn aggregated(&self, products: &[ProductId]) -> Result<HashMap<ProductId, StockLevels>> {
        let mut out: HashMap<ProductId, StockLevels> = products.iter().map(|p| (*p, StockLevels::default())).collect();
        out.extend(store::aggregated(&self.db, products).await?);
        Ok(out)
    }

    /// Per product, the units a reservation shipping to `to` could hold now: those available in
    /// the active warehouses that deliver there (a line may be split among them). Carts show it
    /// before checkout, so a shopper learns there, not from checkout's 409, that a line cannot
    /// reach their address.
    pub async fn deliverable_units(&self, products: &[ProductId], to: &Destination) -> Result<HashMap<ProductId, i64>> {
        let directory = self.directory().await?;
        let stock = store::stocks_of(&self.db, products).await?;
        let lines: Vec<(ProductId, i64)> = products.iter().map(|p| (*p, 0)).collect();
        Ok(candidates(&directory, &stock, &lines, to)
            .into_iter()
            .map(|(product, reachable)| (product, reachable.iter().map(|c| c.available.max(0)).sum()))
            .collect())
    }

    /// Goods received into a warehouse.
    pub async fn intake(
        &self,
        actor: &str,
        warehouse: WarehouseId,
        product: ProductId,
        quantity: i64,
        reason: Option<&str>,
    ) -> Result<ProductStock> {
        if !(1..=MAX_QUANTITY).contains(&quantity) {
            return Err(invalid("quantity", format!("must be a whole number between 1 and {MAX_QUANTITY}")));
        }
        self.move_stock(self.entry(actor, warehouse, product, Movement::Intake, quantity, reason)).await
    }

    /// Puts returned units back on sale, once per `operation_key`: a retried return (the caller
    /// crashed before recording that it restocked) finds its movement and changes nothing.
    pub async fn restock(
        &self,
        actor: &str,
        warehouse: WarehouseId,
        product: ProductId,
        quantity: i64,
        reason: &str,
        operation_key: &str,
    ) -> Result<ProductStock> {
        if !(1..=MAX_QUANTITY).contains(&quantity) {
            return Err(invalid("quantity", format!("must be a whole number between 1 and {MAX_QUANTITY}")));
        }
        let entry = self.entry(actor, warehouse, product, Movement::Intake, quantity, Some(reason));
        self.move_stock(Entry { operation_key: Some(operation_key), ..entry }).await
    }

    /// A correction: negative writes stock off (damage, loss), positive books found units.
    pub async fn adjust(
        &self,
        actor: &str,
        warehouse: WarehouseId,
        product: ProductId,
        delta: i64,
        reason: &str,
    ) -> Result<ProductStock> {
        // `unsigned_abs`: `abs` of i64::MIN overflows.
        if delta == 0 || delta.unsigned_abs() > MAX_QUANTITY.unsigned_abs() {
            return Err(invalid(
                "delta",
                format!("must be a non-zero whole number between -{MAX_QUANTITY} and {MAX_QUANTITY}"),
            ));
        }
        self.move_stock(self.entry(actor, warehouse, product, Movement::Adjustment, delta, Some(reason))).await
    }

    /// A movement outside any reservation, now.
    fn entry<'a>(
        &self,
        actor: &'a str,
        warehouse_id: WarehouseId,
        product_id: ProductId,
        movement: Movement,
        quantity: i64,
        reason: Option<&'a str>,
    ) -> Entry<'a> {
        Entry {
            product_id,
            warehouse_id,
            movement,
            quantity,
            reservation_id: None,
            actor,
            reason,
            operation_key: None,
            at: self.clock.now(),
        }
    }

    async fn move_stock(&self, entry: Entry<'_>) -> Result<ProductStock> {
        if let Some(catalog) = &self.catalog
            && catalog
                .product(entry.product_id)
                .await
                .map_err(|e| Error::Dependency(emporium_kernel::error::dependency_failed(&e)))?
                .is_none()
        {
            return Err(Error::ProductNotFound);
        }
        again_on_conflict(CONFLICT_ATTEMPTS, || self.move_stock_once(&entry)).await
    }

    async fn move_stock_once(&self, entry: &Entry<'_>) -> Result<ProductStock> {
        let (product, warehouse, movement) = (entry.product_id, entry.warehouse_id, entry.movement);
        let mut tx = self.db.begin().await?;
        store::warehouse_for_update(&mut tx, warehouse).await?.ok_or(Error::WarehouseNotFound)?;
        if let Some(key) = entry.operation_key
            && store::operation_done(&mut tx, key).await?
        {
            // Done before: the ledger's unique key also refuses a concurrent twin on PostgreSQL.
            let rows = store::stock_of_in_tx(&mut tx, product).await?;
            return Ok(product_stock(product, rows));
        }
        let locked = store::lock(&mut tx, [(product, warehouse)]).await?;
        if !store::apply(&mut tx, &locked, entry).await? {
            let available = store::stock_of_in_tx(&mut tx, product)
                .await?
                .into_iter()
                .find(|(w, _)| *w == warehouse)
                .map_or(0, |(_, levels)| levels.available);
            return Err(Error::InsufficientStock { available });
        }
        let mut rows = emit_stock_changed(&mut tx, &[product], movement).await?;
        tx.commit().await?;
        Ok(product_stock(product, rows.remove(&product).unwrap_or_default()))
    }

    pub async fn ledger(&self, product: ProductId, after: i64, limit: i64) -> Result<Vec<LedgerRow>> {
        Ok(store::ledger(&self.db, product, after, limit).await?)
    }

    /// Rows whose figures break the invariant or differ from the sum of their ledger (empty when
    /// all is well: the ledger replays to the current figures).
    pub async fn audit(&self) -> Result<Vec<AuditFinding>> {
        Ok(store::stock_and_ledger_sums(&self.db)
            .await?
            .into_iter()
            .filter(|(_, _, stock, ledger)| stock != ledger || !stock.is_consistent())
            .map(|(product_id, warehouse_id, stock, ledger)| AuditFinding { product_id, warehouse_id, stock, ledger })
            .collect())
    }

    // --- deliverability ---------------------------------------------------------------------------

    /// The up-to-5 nearest warehouses that deliver to `to` and hold `quantity` units of `product`,
    /// nearest first. Empty means not deliverable there.
    pub async fn delivery_options(
        &self,
        product: ProductId,
        to: &Destination,
        quantity: i64,
    ) -> Result<Vec<DeliveryOption>> {
        let warehouses = self.directory().await?;
        let stock: HashMap<WarehouseId, StockLevels> = store::stock_of(&self.db, product).await?.into_iter().collect();
        let mut options: Vec<DeliveryOption> = warehouses
            .iter()
            .filter_map(|w| {
                let coverage = w.coverage(to);
                let available = stock.get(&w.id).map_or(0, |s| s.available);
                (coverage.covers && available >= quantity).then_some(DeliveryOption {
                    warehouse_id: w.id,
                    distance_km: coverage.distance_km,
                    eta_days: coverage.distance_km.map(eta_days),
                    available,
                })
            })
            .collect();
        options
            .sort_by(|a, b| a.distance_km.unwrap_or(f64::INFINITY).total_cmp(&b.distance_km.unwrap_or(f64::INFINITY)));
        options.truncate(NEAREST_WAREHOUSES);
        Ok(options)
    }

    // --- reservations -----------------------------------------------------------------------------

    /// Holds every line, all or nothing, placing each in warehouses by the strategy. Reserving
    /// again with the same reference returns the first reservation and holds nothing more.
    pub async fn reserve(&self, actor: &str, req: ReserveRequest) -> Result<Reservation> {
        if req.reference.trim().is_empty() || req.reference.len() > 200 {
            return Err(invalid("reference", "must be 1 to 200 characters"));
        }
        if req.lines.is_empty() {
            return Err(invalid("lines", "must name at least one product"));
        }
        let lines = merge_lines(&req.lines).map_err(|m| invalid("lines", m))?;
        let ttl = req.ttl.unwrap_or(self.default_ttl);
        if ttl.is_zero() || ttl > MAX_RESERVATION_TTL {
            return Err(invalid("ttl_secs", "must be between 1 second and 24 hours"));
        }
        // A reference is nearly always new, so it is looked up only when something says it may
        // not be: a unique-key refusal on writing it, or lines short (perhaps because this very
        // reference holds them).
        let mut look_first = false;
        // Before the transaction: a copy to load must not wait for a second connection while
        // this one is held (a crowd of reservations would hold them all).
        let directory = self.directory().await?;
        for attempt in 1..=RESERVE_ATTEMPTS {
            let mut tx = self.db.begin().await?;
            if look_first && let Some(existing) = store::reservation(&mut tx, Lookup::Reference(&req.reference)).await?
            {
                return same_lines(existing, &lines);
            }
            let products: Vec<ProductId> = lines.iter().map(|(p, _)| *p).collect();
            let (stock, locked) = match store::lock_products(&mut tx, &products).await {
                Err(err) if err.is_transient_conflict() && attempt < RESERVE_ATTEMPTS => continue,
                other => other?,
            };
            let candidates = candidates(&directory, &stock, &lines, &req.destination);
            let placements = match place(&lines, &candidates, self.strategy.as_ref()) {
                Ok(placements) => placements,
                Err(shortages) => {
                    if !look_first
                        && let Some(existing) = store::reservation(&mut tx, Lookup::Reference(&req.reference)).await?
                    {
                        return same_lines(existing, &lines);
                    }
                    return Err(Error::OutOfStock(explain(shortages, &directory, &stock)));
                }
            };
            let now = self.clock.now();
            let id = ReservationId::new();
            let held = self.hold(&mut tx, &locked, id, stock, &placements, actor, now).await;
            let Some(after) = (match held {
                Err(err) if err.is_transient_conflict() && attempt < RESERVE_ATTEMPTS => None,
                other => other?,
            }) else {
                // The database aborted the attempt (see `CONFLICT_ATTEMPTS`), or a row refused a
                // move its lock says it covers (the conditional update has the last word): again.
                tracing::debug!(attempt, "reservation attempt aborted; retrying");
                metrics::counter!("inventory_reservation_retries_total").increment(1);
                continue;
            };
            let reservation = Reservation {
                id,
                reference: req.reference.clone(),
                status: ReservationStatus::Held,
                expires_at: now + chrono::Duration::from_std(ttl).expect("ttl is bounded"),
                lines: placements
                    .iter()
                    .map(|p| ReservationLine {
                        product_id: p.product_id,
                        warehouse_id: p.warehouse_id,
                        quantity: p.quantity,
                        shipped: false,
                    })
                    .collect(),
                created_at: now,
            };
            append_stock_changed(&mut tx, &after, Movement::Reserve).await?;
            let written = async {
                store::insert_reservation(&mut tx, &reservation, actor).await?;
                tx.commit().await
            };
            match written.await {
                // The same reference, concurrently: the next attempt finds it.
                Err(err) if is_unique_violation(&err) => {
                    look_first = true;
                    continue;
                }
                Err(err) if err.is_transient_conflict() && attempt < RESERVE_ATTEMPTS => continue,
                other => other?,
            }
            metrics::counter!("inventory_reservations_total").increment(1);
            return Ok(reservation);
        }
        // Still racing after every attempt: answer with what is available now.
        let mut tx = self.db.read().await?;
        let stock = store::stocks_of_in_tx(&mut tx, &lines.iter().map(|(p, _)| *p).collect::<Vec<_>>()).await?;
        tx.rollback().await?;
        let candidates = candidates(&directory, &stock, &lines, &req.destination);
        match place(&lines, &candidates, self.strategy.as_ref()) {
            Err(shortages) => Err(Error::OutOfStock(explain(shortages, &directory, &stock))),
            Ok(_) => Err(Error::Conflict("stock is changing too fast; retry".into())),
        }
    }

    /// Moves every placement from available to reserved and returns the placed products' rows as
    /// the moves left them (for their `StockChanged`), computed from `read`: the rows were read
    /// under their locks. `None` when a row did not have the units after all (the conditional
    /// updates are the database's word on it; the caller rolls back and tries again).
    #[allow(clippy::too_many_arguments)]
    async fn hold(
        &self,
        tx: &mut Tx,
        locked: &Locked,
        id: ReservationId,
        read: BTreeMap<ProductId, Vec<(WarehouseId, StockLevels)>>,
        placements: &[Placement],
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<BTreeMap<ProductId, Vec<(WarehouseId, StockLevels)>>>> {
        let entries: Vec<Entry<'_>> = placements
            .iter()
            .map(|p| Entry {
                product_id: p.product_id,
                warehouse_id: p.warehouse_id,
                movement: Movement::Reserve,
                quantity: p.quantity,
                reservation_id: Some(id),
                actor,
                reason: None,
                operation_key: None,
                at: now,
            })
            .collect();
        if store::apply_all(tx, locked, &entries).await?.is_some() {
            return Ok(None);
        }
        Ok(Some(moved(read, placements, Movement::Reserve)))
    }

    pub async fn reservation(&self, id: ReservationId) -> Result<Reservation> {
        store::reservation_now(&self.db, Lookup::Id(id)).await?.ok_or(Error::ReservationNotFound)
    }

    pub async fn reservation_by_reference(&self, reference: &str) -> Result<Option<Reservation>> {
        Ok(store::reservation_now(&self.db, Lookup::Reference(reference)).await?)
    }

    /// Paid: reserved → allocated. Refused once the hold's time is up, even before the sweeper
    /// has released it. Committing twice is harmless.
    pub async fn commit(&self, actor: &str, id: ReservationId) -> Result<Reservation> {
        again_on_conflict(CONFLICT_ATTEMPTS, || self.commit_once(actor, id)).await
    }

    async fn commit_once(&self, actor: &str, id: ReservationId) -> Result<Reservation> {
        let now = self.clock.now();
        // Read outside the transaction: a reservation's lines never change, and the status
        // change below is conditional on the status read here.
        let mut r = store::reservation_now(&self.db, Lookup::Id(id)).await?.ok_or(Error::ReservationNotFound)?;
        match decide_commit(r.status, r.expires_at, now) {
            CommitDecision::AlreadyCommitted => return Ok(r),
            CommitDecision::Expired => return Err(Error::ReservationExpired),
            CommitDecision::Released => return Err(Error::ReservationReleased),
            CommitDecision::Commit => {}
        }
        let mut tx = self.db.begin().await?;
        let locked = store::lock(&mut tx, rows_of(&r.lines)).await?;
        let entries = entries_of(&r, Movement::Commit, actor, None, now);
        let statuses = (ReservationStatus::Held, ReservationStatus::Committed);
        let committed = match store::commit_transition(tx, &locked, id, statuses, &entries, now).await {
            // A row refusing the movement: the hold was committed or released meanwhile (on
            // PostgreSQL the stock updates run beside the status change, see `Tx::commit_if`),
            // or its rows lost its units. Nothing was written; what the hold is now tells which.
            Err(err) if is_check_violation(&err) => false,
            other => other?,
        };
        if !committed {
            // Changed between our read and our update: a concurrent commit of the same hold
            // (a payment confirmed by its call and its event at once) or the sweeper.
            let now_is = store::reservation_now(&self.db, Lookup::Id(id)).await?.ok_or(Error::ReservationNotFound)?;
            return match now_is.status {
                ReservationStatus::Committed => Ok(now_is),
                ReservationStatus::Released => Err(Error::ReservationReleased),
                // Still held: its rows no longer cover it (a broken invariant, never a shopper's doing).
                ReservationStatus::Held if now_is.expires_at > now => {
                    Err(Error::Conflict("the stock rows do not cover this reservation".into()))
                }
                _ => Err(Error::ReservationExpired),
            };
        }
        r.status = ReservationStatus::Committed;
        Ok(r)
    }

    /// Gives the stock back: a hold becomes available again; committed (paid, not shipped) units
    /// are deallocated. Releasing twice, or after expiry, is harmless.
    pub async fn release(&self, actor: &str, id: ReservationId, reason: Option<&str>) -> Result<Reservation> {
        again_on_conflict(CONFLICT_ATTEMPTS, || self.release_once(actor, id, reason)).await
    }

    async fn release_once(&self, actor: &str, id: ReservationId, reason: Option<&str>) -> Result<Reservation> {
        let now = self.clock.now();
        let mut tx = self.db.begin().await?;
        let mut r = store::reservation(&mut tx, Lookup::Id(id)).await?.ok_or(Error::ReservationNotFound)?;
        let movement = match r.status {
            ReservationStatus::Released | ReservationStatus::Expired => return Ok(r),
            ReservationStatus::Held => Movement::Release,
            ReservationStatus::Committed if r.lines.iter().any(|l| l.shipped) => {
                return Err(Error::Conflict("part of this reservation has shipped".into()));
            }
            ReservationStatus::Committed => Movement::Deallocate,
        };
        let locked = store::lock(&mut tx, rows_of(&r.lines)).await?;
        if !store::transition(&mut tx, id, r.status, ReservationStatus::Released, now).await? {
            return Err(Error::Conflict("the reservation changed meanwhile; retry".into()));
        }
        self.move_lines(&mut tx, &locked, &r, movement, actor, reason, now).await?;
        tx.commit().await?;
        r.status = ReservationStatus::Released;
        Ok(r)
    }

    /// A warehouse ships its part of a committed reservation: allocated and on_hand go down.
    /// Shipping the same part twice is harmless.
    pub async fn ship(&self, actor: &str, id: ReservationId, warehouse: WarehouseId) -> Result<Reservation> {
        again_on_conflict(CONFLICT_ATTEMPTS, || self.ship_once(actor, id, warehouse)).await
    }

    async fn ship_once(&self, actor: &str, id: ReservationId, warehouse: WarehouseId) -> Result<Reservation> {
        let now = self.clock.now();
        let mut tx = self.db.begin().await?;
        let mut r = store::reservation(&mut tx, Lookup::Id(id)).await?.ok_or(Error::ReservationNotFound)?;
        if r.status != ReservationStatus::Committed {
            return Err(Error::Conflict(format!("a {} reservation cannot ship", r.status.as_str())));
        }
        let part: Vec<ReservationLine> = r.lines.iter().filter(|l| l.warehouse_id == warehouse).cloned().collect();
        if part.is_empty() {
            return Err(Error::WarehouseNotFound);
        }
        let locked = store::lock(&mut tx, rows_of(&part)).await?;
        if store::mark_shipped(&mut tx, id, warehouse).await? == 0 {
            return Ok(r);
        }
        let unshipped = Reservation { lines: part.into_iter().filter(|l| !l.shipped).collect(), ..r.clone() };
        self.move_lines(&mut tx, &locked, &unshipped, Movement::Ship, actor, None, now).await?;
        tx.commit().await?;
        for line in r.lines.iter_mut().filter(|l| l.warehouse_id == warehouse) {
            line.shipped = true;
        }
        Ok(r)
    }

    /// Applies `movement` to every line of `r` (which must succeed: the reservation's own units
    /// are in the rows) and emits the stock events.
    #[allow(clippy::too_many_arguments)]
    async fn move_lines(
        &self,
        tx: &mut Tx,
        locked: &Locked,
        r: &Reservation,
        movement: Movement,
        actor: &str,
        reason: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let entries = entries_of(r, movement, actor, reason, now);
        if let Some(short) = store::apply_all(tx, locked, &entries).await? {
            let line = &entries[short];
            return Err(Error::Conflict(format!(
                "stock of {} in {} does not cover this reservation",
                line.product_id, line.warehouse_id
            )));
        }
        // Committing moves units from reserved to allocated: what the event carries (available,
        // on hand, where units are available) stays as it was, so it would tell nobody anything.
        if movement != Movement::Commit {
            let products: Vec<ProductId> =
                r.lines.iter().map(|l| l.product_id).collect::<BTreeSet<_>>().into_iter().collect();
            emit_stock_changed(tx, &products, movement).await?;
        }
        Ok(())
    }

    /// Releases every hold whose time is up; returns how many.
    pub async fn expire_due(&self) -> Result<usize> {
        let mut expired = 0;
        loop {
            let now = self.clock.now();
            let due = store::due_reservations(&self.db, now, 100).await?;
            let batch = due.len();
            for id in due {
                if again_on_conflict(CONFLICT_ATTEMPTS, || self.expire(id, now)).await? {
                    expired += 1;
                    metrics::counter!("inventory_reservations_expired_total").increment(1);
                }
            }
            if batch < 100 {
                return Ok(expired);
            }
        }
    }

    /// Releases hold `id` as expired if it is still held; whether it did.
    async fn expire(&self, id: ReservationId, now: DateTime<Utc>) -> Result<bool> {
        let mut tx = self.db.begin().await?;
        let Some(r) = store::reservation(&mut tx, Lookup::Id(id)).await? else { return Ok(false) };
        // Committed or released since it was listed: nothing to do.
        if r.status != ReservationStatus::Held {
            return Ok(false);
        }
        let locked = store::lock(&mut tx, rows_of(&r.lines)).await?;
        if !store::transition(&mut tx, id, ReservationStatus::Held, ReservationStatus::Expired, now).await? {
            return Ok(false);
        }
        let sweeper = "system:reservation-sweeper";
        self.move_lines(&mut tx, &locked, &r, Movement::Expire, sweeper, Some("hold expired"), now).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The sweeper: runs at once (holds that expired while the process was down are released
    /// on start-up), then every `interval` until shutdown.
    pub async fn run_sweeper(self: Arc<Self>, interval: Duration, shutdown: CancellationToken) {
        loop {
            match self.expire_due().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(released = n, "expired stock reservations"),
                Err(err) => tracing::warn!(error = %err, "expiring reservations failed; will retry"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }
}

/// The ledger entries that move `r`'s lines by `movement`.
fn entries_of<'a>(
    r: &Reservation,
    movement: Movement,
    actor: &'a str,
    reason: Option<&'a str>,
    now: DateTime<Utc>,
) -> Vec<Entry<'a>> {
    r.lines
        .iter()
        .map(|line| Entry {
            product_id: line.product_id,
            warehouse_id: line.warehouse_id,
            movement,
            quantity: line.quantity,
            reservation_id: Some(r.id),
            actor,
            reason,
            operation_key: None,
            at: now,
        })
        .collect()
}

fn check_radius(radius: f64) -> Result<()> {
    if radius.is_finite() && (0.0..=20_000.0).contains(&radius) {
        Ok(())
    } else {
        Err(invalid("delivery_radius_km", "must be between 0 and 20000"))
    }
}

fn normalise_prefixes(prefixes: Vec<String>) -> Result<Vec<String>> {
    emporium_kernel::geo::postal_prefixes(prefixes).map_err(|(field, message)| invalid(&field, message))
}

/// A repeated reserve with the same reference must ask for the same thing.
/// Warehouses that may supply each line from `stock` (the lines' rows): active, covering the
/// destination when one is known.
fn candidates(
    directory: &[Warehouse],
    stock: &BTreeMap<ProductId, Vec<(WarehouseId, StockLevels)>>,
    lines: &[(ProductId, i64)],
    to: &Destination,
) -> BTreeMap<ProductId, Vec<Candidate>> {
    let warehouses: HashMap<WarehouseId, &Warehouse> = directory.iter().map(|w| (w.id, w)).collect();
    let mut out = BTreeMap::new();
    for &(product, _) in lines {
        let mut list = Vec::new();
        for (warehouse_id, levels) in stock.get(&product).into_iter().flatten() {
            let Some(w) = warehouses.get(warehouse_id).filter(|w| w.active) else { continue };
            let coverage = w.coverage(to);
            if to.is_known() && !coverage.covers {
                continue;
            }
            list.push(Candidate {
                warehouse_id: *warehouse_id,
                available: levels.available,
                distance_km: coverage.distance_km,
            });
        }
        out.insert(product, list);
    }
    out
}

/// [`explain_shortages`] with the units of every active warehouse in `stock` (the lines' rows).
fn explain(
    shortages: Vec<Shortage>,
    directory: &[Warehouse],
    stock: &BTreeMap<ProductId, Vec<(WarehouseId, StockLevels)>>,
) -> Vec<Shortage> {
    let active: HashSet<WarehouseId> = directory.iter().filter(|w| w.active).map(|w| w.id).collect();
    let anywhere: BTreeMap<ProductId, i64> = stock
        .iter()
        .map(|(product, rows)| {
            (*product, rows.iter().filter(|(w, _)| active.contains(w)).map(|(_, levels)| levels.available.max(0)).sum())
        })
        .collect();
    explain_shortages(shortages, &anywhere)
}

fn same_lines(existing: Reservation, lines: &[(ProductId, i64)]) -> Result<Reservation> {
    let mut held: BTreeMap<ProductId, i64> = BTreeMap::new();
    for line in &existing.lines {
        *held.entry(line.product_id).or_default() += line.quantity;
    }
    if held.into_iter().collect::<Vec<_>>() == lines {
        Ok(existing)
    } else {
        Err(Error::Conflict("this reference already holds different lines".into()))
    }
}

/// The stock rows `lines` move.
fn rows_of(lines: &[ReservationLine]) -> impl Iterator<Item = (ProductId, WarehouseId)> + '_ {
    lines.iter().map(|l| (l.product_id, l.warehouse_id))
}

fn product_stock(product_id: ProductId, rows: Vec<(WarehouseId, StockLevels)>) -> ProductStock {
    ProductStock { product_id, total: total_of(&rows), warehouses: rows }
}

fn total_of(rows: &[(WarehouseId, StockLevels)]) -> StockLevels {
    let mut total = StockLevels::default();
    for (_, levels) in rows {
        total.add(levels);
    }
    total
}

/// Appends each product's stock after a movement, read in the same transaction (one read and
/// one outbox statement for all of them); returns the rows read.
async fn emit_stock_changed(
    tx: &mut Tx,
    products: &[ProductId],
    movement: Movement,
) -> Result<BTreeMap<ProductId, Vec<(WarehouseId, StockLevels)>>> {
    let stock = store::stocks_of_in_tx(tx, products).await?;
    append_stock_changed(tx, &stock, movement).await?;
    Ok(stock)
}

/// One `StockChanged` per product of `stock` (its rows as the movement left them).
async fn append_stock_changed(
    tx: &mut Tx,
    stock: &BTreeMap<ProductId, Vec<(WarehouseId, StockLevels)>>,
    movement: Movement,
) -> Result<()> {
    let mut events = Vec::with_capacity(stock.len());
    for (product, rows) in stock {
        let total = total_of(rows);
        let event = StockChanged {
            product_id: *product,
            available: total.available,
            on_hand: total.on_hand,
            warehouses: rows
                .iter()
                .filter(|(_, l)| l.available > 0)
                .map(|(warehouse_id, l)| WarehouseStock { warehouse_id: *warehouse_id, available: l.available })
                .collect(),
            movement: movement.as_str().to_owned(),
        };
        events.push(PendingEvent::of(&event)?);
    }
    events::append_all(tx, &events).await?;
    Ok(())
}

/// The rows of the placed products in `stock` as `movement` of every placement leaves them.
fn moved(
    mut stock: BTreeMap<ProductId, Vec<(WarehouseId, StockLevels)>>,
    placements: &[Placement],
    movement: Movement,
) -> BTreeMap<ProductId, Vec<(WarehouseId, StockLevels)>> {
    stock.retain(|product, _| placements.iter().any(|p| p.product_id == *product));
    for p in placements {
        let rows = stock.get_mut(&p.product_id).expect("a placement is made from its product's rows");
        let (_, levels) =
            rows.iter_mut().find(|(w, _)| *w == p.warehouse_id).expect("a placement is made from one of its rows");
        levels.add(&movement.delta(p.quantity));
    }
    stock
}
