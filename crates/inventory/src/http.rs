//! `/warehouses`, `/inventory` and `/delivery` endpoints. Admins manage warehouses, warehouse
//! staff move stock, other services (the `service` role) reserve; anyone reads availability.

use crate::api::ReserveRequest;
use crate::model::{LineRequest, Quantity, Reservation, ReservationStatus, StockLevels, Warehouse};
use crate::service::{DeliveryOption, InventoryService, NewWarehouse, ProductStock, WarehousePatch};
use crate::store::LedgerRow;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use emporium_kernel::auth::{AuthUser, Role};
use emporium_kernel::error::{ApiResult, Problem};
use emporium_kernel::geo::Destination;
use emporium_kernel::geo::{GeoPoint, optional_pair, optional_point};
use emporium_kernel::http::{ApiJson, Page, PageRequest, path_id};
use emporium_kernel::ids::{ProductId, ReservationId, WarehouseId};
use emporium_kernel::validate::{Validator, text, validated};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

type Service = State<Arc<InventoryService>>;

pub fn router(service: Arc<InventoryService>) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(list_warehouses, create_warehouse))
        .routes(routes!(get_warehouse, update_warehouse))
        .routes(routes!(intake))
        .routes(routes!(adjust))
        .routes(routes!(product_inventory))
        .routes(routes!(product_ledger))
        .routes(routes!(audit))
        .routes(routes!(reserve))
        .routes(routes!(get_reservation))
        .routes(routes!(commit))
        .routes(routes!(release))
        .routes(routes!(deduct))
        .routes(routes!(availability))
        .with_state(service)
}

fn actor(user: &AuthUser) -> String {
    format!("user:{}", user.id)
}

// --- DTOs ----------------------------------------------------------------------------------------

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WarehouseView {
    pub id: WarehouseId,
    pub name: String,
    pub address: String,
    pub lat: f64,
    pub lon: f64,
    pub delivery_radius_km: f64,
    pub postal_prefixes: Vec<String>,
    pub active: bool,
    pub created_at: DateTime<Utc>,
}

impl From<Warehouse> for WarehouseView {
    fn from(w: Warehouse) -> Self {
        Self {
            id: w.id,
            name: w.name,
            address: w.address,
            lat: w.location.lat.degrees(),
            lon: w.location.lon.degrees(),
            delivery_radius_km: w.delivery_radius_km,
            postal_prefixes: w.postal_prefixes,
            active: w.active,
            created_at: w.created_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct WarehouseRequest {
    #[schema(required = true)]
    pub name: Option<String>,
    #[schema(required = true)]
    pub address: Option<String>,
    #[schema(required = true)]
    pub lat: Option<f64>,
    #[schema(required = true)]
    pub lon: Option<f64>,
    #[schema(required = true)]
    pub delivery_radius_km: Option<f64>,
    /// Postal codes starting with one of these are served whatever the distance.
    pub postal_prefixes: Option<Vec<String>>,
    /// Only on PATCH: inactive warehouses take no new reservations.
    pub active: Option<bool>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WarehouseStockView {
    pub warehouse_id: WarehouseId,
    pub on_hand: i64,
    pub available: i64,
    pub reserved: i64,
    pub allocated: i64,
    pub shipped: i64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct InventoryView {
    pub product_id: ProductId,
    pub available: i64,
    pub reserved: i64,
    pub allocated: i64,
    pub on_hand: i64,
    pub shipped: i64,
    pub in_stock: bool,
    pub warehouses: Vec<WarehouseStockView>,
}

fn stock_view(warehouse_id: WarehouseId, s: StockLevels) -> WarehouseStockView {
    WarehouseStockView {
        warehouse_id,
        on_hand: s.on_hand,
        available: s.available,
        reserved: s.reserved,
        allocated: s.allocated,
        shipped: s.shipped,
    }
}

impl From<ProductStock> for InventoryView {
    fn from(s: ProductStock) -> Self {
        Self {
            product_id: s.product_id,
            available: s.total.available,
            reserved: s.total.reserved,
            allocated: s.total.allocated,
            on_hand: s.total.on_hand,
            shipped: s.total.shipped,
            in_stock: s.total.available > 0,
            warehouses: s.warehouses.into_iter().map(|(w, l)| stock_view(w, l)).collect(),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct IntakeRequest {
    #[schema(required = true)]
    pub product_id: Option<String>,
    /// Units received, 1..=1000000.
    #[schema(required = true)]
    pub quantity: Option<i64>,
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct AdjustRequest {
    #[schema(required = true)]
    pub product_id: Option<String>,
    /// Negative writes units off, positive books found units.
    #[schema(required = true)]
    pub delta: Option<i64>,
    #[schema(required = true)]
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct LineInput {
    #[schema(required = true, format = Uuid)]
    pub product_id: Option<String>,
    #[schema(required = true, minimum = 1, maximum = 1_000_000)]
    pub quantity: Option<i64>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ReserveInput {
    /// The caller's idempotency handle, e.g. the order id.
    #[schema(required = true, min_length = 1, max_length = 200)]
    pub reference: Option<String>,
    #[schema(required = true, min_items = 1, max_items = 100)]
    pub lines: Option<Vec<LineInput>>,
    /// Where the goods go; only warehouses delivering there are used.
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub postal_code: Option<String>,
    /// Hold duration; the configured default (10 minutes) when absent.
    #[schema(minimum = 1, maximum = 86_400)]
    pub ttl_secs: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReservationLineView {
    pub product_id: ProductId,
    pub warehouse_id: WarehouseId,
    pub quantity: i64,
    pub shipped: bool,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReservationView {
    pub id: ReservationId,
    pub reference: String,
    pub status: ReservationStatus,
    pub expires_at: DateTime<Utc>,
    pub lines: Vec<ReservationLineView>,
    pub created_at: DateTime<Utc>,
}

impl From<Reservation> for ReservationView {
    fn from(r: Reservation) -> Self {
        Self {
            id: r.id,
            reference: r.reference,
            status: r.status,
            expires_at: r.expires_at,
            lines: r
                .lines
                .into_iter()
                .map(|l| ReservationLineView {
                    product_id: l.product_id,
                    warehouse_id: l.warehouse_id,
                    quantity: l.quantity,
                    shipped: l.shipped,
                })
                .collect(),
            created_at: r.created_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ReservationAction {
    #[schema(required = true, format = Uuid)]
    pub reservation_id: Option<String>,
    #[schema(min_length = 1, max_length = 500)]
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct DeductRequest {
    #[schema(required = true, format = Uuid)]
    pub reservation_id: Option<String>,
    /// The warehouse whose part ships.
    #[schema(required = true, format = Uuid)]
    pub warehouse_id: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct AvailabilityQuery {
    pub product_id: Option<String>,
    pub lat: Option<String>,
    pub lon: Option<String>,
    pub postal_code: Option<String>,
    /// Units wanted, default 1.
    pub quantity: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeliveryOptionView {
    pub warehouse_id: WarehouseId,
    pub distance_km: Option<f64>,
    pub eta_days: Option<u32>,
    pub available: i64,
}

impl From<DeliveryOption> for DeliveryOptionView {
    fn from(o: DeliveryOption) -> Self {
        Self { warehouse_id: o.warehouse_id, distance_km: o.distance_km, eta_days: o.eta_days, available: o.available }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AvailabilityView {
    pub deliverable: bool,
    /// The nearest warehouse that can deliver.
    pub warehouse_id: Option<WarehouseId>,
    pub distance_km: Option<f64>,
    pub eta_days: Option<u32>,
    /// Up to five nearest warehouses that can deliver, nearest first.
    pub options: Vec<DeliveryOptionView>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LedgerEntryView {
    pub seq: i64,
    pub warehouse_id: WarehouseId,
    pub movement: String,
    /// Signed changes this movement made.
    pub on_hand: i64,
    pub available: i64,
    pub reserved: i64,
    pub allocated: i64,
    pub shipped: i64,
    pub reservation_id: Option<ReservationId>,
    pub actor: String,
    pub reason: Option<String>,
    pub at: DateTime<Utc>,
}

impl From<LedgerRow> for LedgerEntryView {
    fn from(r: LedgerRow) -> Self {
        Self {
            seq: r.seq,
            warehouse_id: r.warehouse_id,
            movement: r.movement,
            on_hand: r.on_hand,
            available: r.available,
            reserved: r.reserved,
            allocated: r.allocated,
            shipped: r.shipped,
            reservation_id: r.reservation_id,
            actor: r.actor,
            reason: r.reason,
            at: r.at,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct PageQuery {
    pub cursor: Option<String>,
    pub limit: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditFindingView {
    pub product_id: ProductId,
    pub warehouse_id: WarehouseId,
    pub stock: WarehouseStockView,
    pub ledger: WarehouseStockView,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditView {
    /// Rows that differ from their ledger or break the invariant; empty when all is well.
    pub findings: Vec<AuditFindingView>,
}

fn id_field<T: std::str::FromStr>(raw: String) -> Result<T, &'static str> {
    raw.trim().parse().map_err(|_| "is not a valid id")
}

fn single_line(max: usize) -> impl Fn(String) -> Result<String, String> {
    move |s| text(&s, 1, max, false)
}

fn optional_reason(raw: Option<String>, v: &mut Validator, field: &str) -> Option<String> {
    v.optional(field, raw, |s| text(&s, 1, 500, false)).flatten()
}

// --- warehouses ----------------------------------------------------------------------------------

/// Every warehouse.
#[utoipa::path(get, path = "/warehouses", tag = "inventory", responses((status = 200, body = Page<WarehouseView>)))]
async fn list_warehouses(State(svc): Service) -> ApiResult<Json<Page<WarehouseView>>> {
    Ok(Json(Page::all(svc.warehouses().await?.into_iter().map(WarehouseView::from).collect())))
}

#[utoipa::path(get, path = "/warehouses/{id}", tag = "inventory", params(("id" = String, Path)),
    responses((status = 200, body = WarehouseView), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn get_warehouse(State(svc): Service, Path(id): Path<String>) -> ApiResult<Json<WarehouseView>> {
    let id: WarehouseId = path_id(&id, "warehouse")?;
    Ok(Json(svc.warehouse(id).await?.into()))
}

/// Create a warehouse (admin).
#[utoipa::path(post, path = "/warehouses", tag = "inventory", security(("bearer" = [])), request_body = WarehouseRequest,
    responses((status = 201, body = WarehouseView), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"),
               (status = 422, body = Problem, content_type = "application/problem+json")))]
async fn create_warehouse(
    State(svc): Service,
    user: AuthUser,
    ApiJson(req): ApiJson<WarehouseRequest>,
) -> ApiResult<(StatusCode, Json<WarehouseView>)> {
    user.require(Role::Admin)?;
    let mut v = Validator::new();
    let name = v.required("name", req.name, single_line(100));
    let address = v.required("address", req.address, single_line(300));
    let lat = v.required("lat", req.lat, emporium_kernel::geo::Latitude::parse);
    let lon = v.required("lon", req.lon, emporium_kernel::geo::Longitude::parse);
    let radius = v.required("delivery_radius_km", req.delivery_radius_km, Ok::<f64, String>);
    v.finish()?;
    let new = NewWarehouse {
        name: validated(name),
        address: validated(address),
        location: GeoPoint { lat: validated(lat), lon: validated(lon) },
        delivery_radius_km: validated(radius),
        postal_prefixes: req.postal_prefixes.unwrap_or_default(),
    };
    Ok((StatusCode::CREATED, Json(svc.create_warehouse(new).await?.into())))
}

/// Change a warehouse (admin); absent fields stay as they are.
#[utoipa::path(patch, path = "/warehouses/{id}", tag = "inventory", security(("bearer" = [])), params(("id" = String, Path)),
    request_body = WarehouseRequest,
    responses((status = 200, body = WarehouseView), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json"),
               (status = 422, body = Problem, content_type = "application/problem+json")))]
async fn update_warehouse(
    State(svc): Service,
    user: AuthUser,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<WarehouseRequest>,
) -> ApiResult<Json<WarehouseView>> {
    user.require(Role::Admin)?;
    let id: WarehouseId = path_id(&id, "warehouse")?;
    let mut v = Validator::new();
    let name = v.optional("name", req.name, single_line(100));
    let address = v.optional("address", req.address, single_line(300));
    let location = v.point(optional_pair(req.lat, req.lon));
    v.finish()?;
    let patch = WarehousePatch {
        name: validated(name),
        address: validated(address),
        location,
        delivery_radius_km: req.delivery_radius_km,
        postal_prefixes: req.postal_prefixes,
        active: req.active,
    };
    Ok(Json(svc.update_warehouse(id, patch).await?.into()))
}

// --- stock ---------------------------------------------------------------------------------------

/// Goods received (the warehouse's staff, admins): on_hand and available go up.
#[utoipa::path(post, path = "/warehouses/{id}/stock", tag = "inventory", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = IntakeRequest,
    responses((status = 200, body = InventoryView), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json"),
               (status = 422, body = Problem, content_type = "application/problem+json")))]
async fn intake(
    State(svc): Service,
    user: AuthUser,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<IntakeRequest>,
) -> ApiResult<Json<InventoryView>> {
    user.require(Role::Warehouse)?;
    let warehouse: WarehouseId = path_id(&id, "warehouse")?;
    user.require_staff_at(warehouse)?;
    let mut v = Validator::new();
    let product = v.required("product_id", req.product_id, id_field::<ProductId>);
    let quantity = v.required("quantity", req.quantity, Quantity::parse);
    let reason = optional_reason(req.reason, &mut v, "reason");
    v.finish()?;
    let stock =
        svc.intake(&actor(&user), warehouse, validated(product), validated(quantity).get(), reason.as_deref()).await?;
    Ok(Json(stock.into()))
}

/// A correction or write-off (warehouse staff, admin), with a reason; never below zero available.
#[utoipa::path(post, path = "/warehouses/{id}/stock/adjust", tag = "inventory", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = AdjustRequest,
    responses((status = 200, body = InventoryView), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json"),
               (status = 409, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")))]
async fn adjust(
    State(svc): Service,
    user: AuthUser,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<AdjustRequest>,
) -> ApiResult<Json<InventoryView>> {
    user.require(Role::Warehouse)?;
    let warehouse: WarehouseId = path_id(&id, "warehouse")?;
    user.require_staff_at(warehouse)?;
    let mut v = Validator::new();
    let product = v.required("product_id", req.product_id, id_field::<ProductId>);
    let delta = v.required("delta", req.delta, Ok::<i64, String>);
    let reason = v.required("reason", req.reason, |s| text(&s, 1, 500, false));
    v.finish()?;
    let stock = svc.adjust(&actor(&user), warehouse, validated(product), validated(delta), &validated(reason)).await?;
    Ok(Json(stock.into()))
}

/// A product's stock: totals and per warehouse.
#[utoipa::path(get, path = "/inventory/{product_id}", tag = "inventory", params(("product_id" = String, Path)),
    responses((status = 200, body = InventoryView), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn product_inventory(State(svc): Service, Path(id): Path<String>) -> ApiResult<Json<InventoryView>> {
    let product: ProductId = path_id(&id, "product")?;
    Ok(Json(svc.stock(product).await?.into()))
}

/// Every movement of a product's stock, oldest first (warehouse staff, admin).
#[utoipa::path(get, path = "/inventory/{product_id}/ledger", tag = "inventory", security(("bearer" = [])),
    params(("product_id" = String, Path), PageQuery),
    responses((status = 200, body = Page<LedgerEntryView>), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")))]
async fn product_ledger(
    State(svc): Service,
    user: AuthUser,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<Page<LedgerEntryView>>> {
    user.require(Role::Warehouse)?;
    let product: ProductId = path_id(&id, "product")?;
    let page = PageRequest::parse(q.limit.as_deref(), q.cursor.as_deref(), 50, 500)?;
    let after = page.position::<i64>()?.unwrap_or(0);
    let rows = svc.ledger(product, after, page.limit as i64 + 1).await?;
    let page = Page::from_overfetch(rows, page.limit, |r| r.seq.to_string());
    Ok(Json(page.map(LedgerEntryView::from)))
}

/// Compares every stock row with the sum of its ledger (admin).
#[utoipa::path(get, path = "/inventory/audit", tag = "inventory", security(("bearer" = [])),
    responses((status = 200, body = AuditView), (status = 403, body = Problem, content_type = "application/problem+json")))]
async fn audit(State(svc): Service, user: AuthUser) -> ApiResult<Json<AuditView>> {
    user.require(Role::Admin)?;
    let findings = svc
        .audit()
        .await?
        .into_iter()
        .map(|f| AuditFindingView {
            product_id: f.product_id,
            warehouse_id: f.warehouse_id,
            stock: stock_view(f.warehouse_id, f.stock),
            ledger: stock_view(f.warehouse_id, f.ledger),
        })
        .collect();
    Ok(Json(AuditView { findings }))
}

// --- reservations (service to service) -----------------------------------------------------------

/// Hold every line for a checkout, all or nothing (internal). 409 names every short line.
#[utoipa::path(post, path = "/inventory/reserve", tag = "inventory", security(("bearer" = [])), request_body = ReserveInput,
    responses((status = 201, body = ReservationView), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 409, body = Problem, content_type = "application/problem+json"),
               (status = 422, body = Problem, content_type = "application/problem+json")))]
async fn reserve(
    State(svc): Service,
    user: AuthUser,
    ApiJson(req): ApiJson<ReserveInput>,
) -> ApiResult<(StatusCode, Json<ReservationView>)> {
    user.require(Role::Service)?;
    let mut v = Validator::new();
    let reference = v.required("reference", req.reference, single_line(200));
    let mut lines = Vec::new();
    match req.lines {
        None => v.add("lines", "is required"),
        Some(list) if list.is_empty() => v.add("lines", "must name at least one product"),
        Some(list) if list.len() > 100 => v.add("lines", "at most 100 lines"),
        Some(list) => {
            for (i, line) in list.into_iter().enumerate() {
                let product = v.required(&format!("lines[{i}].product_id"), line.product_id, id_field::<ProductId>);
                let quantity = v.required(&format!("lines[{i}].quantity"), line.quantity, Quantity::parse);
                if let (Some(product_id), Some(quantity)) = (product, quantity) {
                    lines.push(LineRequest { product_id, quantity });
                }
            }
        }
    }
    let point = v.point(optional_pair(req.lat, req.lon));
    let postal_code = v.optional("postal_code", req.postal_code, single_line(20)).flatten();
    if req.ttl_secs.is_some_and(|t| t == 0 || t > 86_400) {
        v.add("ttl_secs", "must be between 1 and 86400");
    }
    v.finish()?;
    let request = ReserveRequest {
        reference: validated(reference),
        lines,
        destination: Destination { point, postal_code },
        ttl: req.ttl_secs.map(Duration::from_secs),
    };
    let reservation = svc.reserve(&actor(&user), request).await?;
    Ok((StatusCode::CREATED, Json(reservation.into())))
}

#[utoipa::path(get, path = "/inventory/reservations/{id}", tag = "inventory", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = ReservationView), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn get_reservation(
    State(svc): Service,
    user: AuthUser,
    Path(id): Path<String>,
) -> ApiResult<Json<ReservationView>> {
    if !user.has_role(Role::Warehouse) {
        user.require(Role::Service)?;
    }
    let id: ReservationId = path_id(&id, "reservation")?;
    Ok(Json(svc.reservation(id).await?.into()))
}

fn reservation_id(raw: Option<String>) -> ApiResult<ReservationId> {
    let mut v = Validator::new();
    let id = v.required("reservation_id", raw, id_field::<ReservationId>);
    v.finish()?;
    Ok(validated(id))
}

/// Paid: the held units become allocated (internal). 409 once the hold has expired.
#[utoipa::path(post, path = "/inventory/commit", tag = "inventory", security(("bearer" = [])), request_body = ReservationAction,
    responses((status = 200, body = ReservationView), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json"),
               (status = 404, body = Problem, content_type = "application/problem+json"), (status = 409, body = Problem, content_type = "application/problem+json")))]
async fn commit(
    State(svc): Service,
    user: AuthUser,
    ApiJson(req): ApiJson<ReservationAction>,
) -> ApiResult<Json<ReservationView>> {
    user.require(Role::Service)?;
    let id = reservation_id(req.reservation_id)?;
    Ok(Json(svc.commit(&actor(&user), id).await?.into()))
}

/// Give a reservation's stock back (internal): held or allocated units become available.
#[utoipa::path(post, path = "/inventory/release", tag = "inventory", security(("bearer" = [])), request_body = ReservationAction,
    responses((status = 200, body = ReservationView), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json"),
               (status = 404, body = Problem, content_type = "application/problem+json"), (status = 409, body = Problem, content_type = "application/problem+json")))]
async fn release(
    State(svc): Service,
    user: AuthUser,
    ApiJson(req): ApiJson<ReservationAction>,
) -> ApiResult<Json<ReservationView>> {
    user.require(Role::Service)?;
    let mut v = Validator::new();
    let reason = optional_reason(req.reason, &mut v, "reason");
    v.finish()?;
    let id = reservation_id(req.reservation_id)?;
    Ok(Json(svc.release(&actor(&user), id, reason.as_deref()).await?.into()))
}

/// A warehouse's part of a committed reservation shipped (internal): allocated and on_hand go down.
#[utoipa::path(post, path = "/inventory/deduct", tag = "inventory", security(("bearer" = [])), request_body = DeductRequest,
    responses((status = 200, body = ReservationView), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json"),
               (status = 404, body = Problem, content_type = "application/problem+json"), (status = 409, body = Problem, content_type = "application/problem+json")))]
async fn deduct(
    State(svc): Service,
    user: AuthUser,
    ApiJson(req): ApiJson<DeductRequest>,
) -> ApiResult<Json<ReservationView>> {
    user.require(Role::Service)?;
    let mut v = Validator::new();
    let id = v.required("reservation_id", req.reservation_id, id_field::<ReservationId>);
    let warehouse = v.required("warehouse_id", req.warehouse_id, id_field::<WarehouseId>);
    v.finish()?;
    Ok(Json(svc.ship(&actor(&user), validated(id), validated(warehouse)).await?.into()))
}

// --- deliverability ------------------------------------------------------------------------------

/// Can this product reach that place, from where, and how soon.
#[utoipa::path(get, path = "/delivery/availability", tag = "inventory", params(AvailabilityQuery),
    responses((status = 200, body = AvailabilityView), (status = 422, body = Problem, content_type = "application/problem+json")))]
async fn availability(State(svc): Service, Query(q): Query<AvailabilityQuery>) -> ApiResult<Json<AvailabilityView>> {
    let mut v = Validator::new();
    let product = v.required("product_id", q.product_id, id_field::<ProductId>);
    let point = v.point(optional_point(q.lat.as_deref(), q.lon.as_deref()));
    let postal_code = v.optional("postal_code", q.postal_code, single_line(20)).flatten();
    let quantity = v.optional("quantity", q.quantity, |raw| {
        raw.trim().parse::<i64>().map_err(|_| "must be a whole number".to_owned()).and_then(Quantity::parse)
    });
    if point.is_none() && postal_code.is_none() && v.is_valid() {
        v.add("lat", "give lat and lon, or postal_code");
    }
    v.finish()?;
    let quantity = validated(quantity).map_or(1, Quantity::get);
    let to = Destination { point, postal_code };
    let options = svc.delivery_options(validated(product), &to, quantity).await?;
    let nearest = options.first().cloned();
    Ok(Json(AvailabilityView {
        deliverable: nearest.is_some(),
        warehouse_id: nearest.as_ref().map(|o| o.warehouse_id),
        distance_km: nearest.as_ref().and_then(|o| o.distance_km),
        eta_days: nearest.as_ref().and_then(|o| o.eta_days),
        options: options.into_iter().map(DeliveryOptionView::from).collect(),
    }))
}
