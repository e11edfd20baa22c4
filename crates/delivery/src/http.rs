//! `/delivery/partners` endpoints: admins manage partners; warehouse staff see them and their
//! jobs (who collects which warehouse order).

use crate::model::{Job, JobStatus, Partner};
use crate::service::{DeliveryService, NewPartner, PartnerPatch};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use emporium_kernel::auth::{AuthUser, Role};
use emporium_kernel::error::{ApiResult, Problem};
use emporium_kernel::geo::{GeoPoint, optional_pair};
use emporium_kernel::http::{ApiJson, Page, path_id};
use emporium_kernel::ids::{DeliveryPartnerId, OrderId, WarehouseId, WarehouseOrderId};
use emporium_kernel::validate::{Validator, text, validated};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

type Service = State<Arc<DeliveryService>>;

pub fn router(service: Arc<DeliveryService>) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(list_partners, create_partner))
        .routes(routes!(get_partner, update_partner))
        .routes(routes!(list_jobs))
        .with_state(service)
}

// --- DTOs ----------------------------------------------------------------------------------------

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PartnerView {
    pub id: DeliveryPartnerId,
    pub name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    /// The base its service area is measured from.
    pub lat: f64,
    pub lon: f64,
    pub service_radius_km: f64,
    /// Addresses whose postal code starts with one of these are in its area whatever the distance.
    pub postal_prefixes: Vec<String>,
    /// Most jobs in hand at once.
    pub capacity: i64,
    /// Most units in one job.
    pub max_units: i64,
    pub active_jobs: i64,
    pub active: bool,
    pub created_at: DateTime<Utc>,
}

impl From<Partner> for PartnerView {
    fn from(p: Partner) -> Self {
        Self {
            id: p.id,
            name: p.name,
            email: p.email,
            phone: p.phone,
            lat: p.base.lat.degrees(),
            lon: p.base.lon.degrees(),
            service_radius_km: p.radius_km,
            postal_prefixes: p.postal_prefixes,
            capacity: p.capacity,
            max_units: p.max_units,
            active_jobs: p.active_jobs,
            active: p.active,
            created_at: p.created_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct PartnerRequest {
    #[schema(required = true)]
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    #[schema(required = true)]
    pub lat: Option<f64>,
    #[schema(required = true)]
    pub lon: Option<f64>,
    #[schema(required = true)]
    pub service_radius_km: Option<f64>,
    pub postal_prefixes: Option<Vec<String>>,
    #[schema(required = true)]
    pub capacity: Option<i64>,
    #[schema(required = true)]
    pub max_units: Option<i64>,
    /// Only on PATCH: inactive partners keep their jobs and get no new ones.
    pub active: Option<bool>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobView {
    pub warehouse_order_id: WarehouseOrderId,
    pub order_id: OrderId,
    pub warehouse_id: WarehouseId,
    pub units: i64,
    pub status: JobStatus,
    pub partner_id: Option<DeliveryPartnerId>,
    pub created_at: DateTime<Utc>,
    pub assigned_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<Job> for JobView {
    fn from(j: Job) -> Self {
        Self {
            warehouse_order_id: j.warehouse_order_id,
            order_id: j.order_id,
            warehouse_id: j.warehouse_id,
            units: j.units,
            status: j.status,
            partner_id: j.partner_id,
            created_at: j.created_at,
            assigned_at: j.assigned_at,
            finished_at: j.finished_at,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct JobsQuery {
    /// One partner's jobs only.
    pub partner_id: Option<String>,
    /// `waiting`, `assigned` or `finished`; all when absent.
    pub status: Option<String>,
}

fn name_field(raw: String) -> Result<String, String> {
    text(&raw, 1, 100, false)
}

fn email_field(raw: String) -> Result<String, String> {
    let email = text(&raw, 3, 254, false)?;
    let (local, domain) = email.split_once('@').ok_or("must be an e-mail address")?;
    if local.is_empty() || !domain.contains('.') || email.contains(char::is_whitespace) {
        return Err("must be an e-mail address".into());
    }
    Ok(email)
}

fn phone_field(raw: String) -> Result<String, String> {
    let phone = text(&raw, 3, 30, false)?;
    if phone.chars().all(|c| c.is_ascii_digit() || " +-()/".contains(c)) {
        Ok(phone)
    } else {
        Err("must be digits, spaces and + - ( ) / only".into())
    }
}

// --- handlers ------------------------------------------------------------------------------------

/// Every delivery partner (admin, warehouse staff).
#[utoipa::path(get, path = "/delivery/partners", tag = "delivery", security(("bearer" = [])),
    responses((status = 200, body = Page<PartnerView>), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json")))]
async fn list_partners(State(svc): Service, user: AuthUser) -> ApiResult<Json<Page<PartnerView>>> {
    user.require(Role::Warehouse)?;
    Ok(Json(Page::all(svc.partners().await?.into_iter().map(PartnerView::from).collect())))
}

/// Add a delivery partner (admin); it takes the waiting jobs it serves at once.
#[utoipa::path(post, path = "/delivery/partners", tag = "delivery", security(("bearer" = [])), request_body = PartnerRequest,
    responses((status = 201, body = PartnerView), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"),
               (status = 422, body = Problem, content_type = "application/problem+json")))]
async fn create_partner(
    State(svc): Service,
    user: AuthUser,
    ApiJson(req): ApiJson<PartnerRequest>,
) -> ApiResult<(StatusCode, Json<PartnerView>)> {
    user.require(Role::Admin)?;
    let mut v = Validator::new();
    let name = v.required("name", req.name, name_field);
    let email = v.optional("email", req.email, email_field);
    let phone = v.optional("phone", req.phone, phone_field);
    let lat = v.required("lat", req.lat, emporium_kernel::geo::Latitude::parse);
    let lon = v.required("lon", req.lon, emporium_kernel::geo::Longitude::parse);
    let radius = v.required("service_radius_km", req.service_radius_km, Ok::<f64, String>);
    let capacity = v.required("capacity", req.capacity, Ok::<i64, String>);
    let max_units = v.required("max_units", req.max_units, Ok::<i64, String>);
    v.finish()?;
    let new = NewPartner {
        name: validated(name),
        email: validated(email),
        phone: validated(phone),
        base: GeoPoint { lat: validated(lat), lon: validated(lon) },
        radius_km: validated(radius),
        postal_prefixes: req.postal_prefixes.unwrap_or_default(),
        capacity: validated(capacity),
        max_units: validated(max_units),
    };
    Ok((StatusCode::CREATED, Json(svc.create_partner(new).await?.into())))
}

#[utoipa::path(get, path = "/delivery/partners/{id}", tag = "delivery", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = PartnerView), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn get_partner(State(svc): Service, user: AuthUser, Path(id): Path<String>) -> ApiResult<Json<PartnerView>> {
    user.require(Role::Warehouse)?;
    let id: DeliveryPartnerId = path_id(&id, "delivery partner")?;
    Ok(Json(svc.partner(id).await?.into()))
}

/// Change a delivery partner (admin); absent fields stay as they are. More room or a larger area
/// takes waiting jobs at once.
#[utoipa::path(patch, path = "/delivery/partners/{id}", tag = "delivery", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = PartnerRequest,
    responses((status = 200, body = PartnerView), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json"),
               (status = 422, body = Problem, content_type = "application/problem+json")))]
async fn update_partner(
    State(svc): Service,
    user: AuthUser,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<PartnerRequest>,
) -> ApiResult<Json<PartnerView>> {
    user.require(Role::Admin)?;
    let id: DeliveryPartnerId = path_id(&id, "delivery partner")?;
    let mut v = Validator::new();
    let name = v.optional("name", req.name, name_field);
    let email = v.optional("email", req.email, email_field);
    let phone = v.optional("phone", req.phone, phone_field);
    let base = v.point(optional_pair(req.lat, req.lon));
    v.finish()?;
    let patch = PartnerPatch {
        name: validated(name),
        email: validated(email),
        phone: validated(phone),
        base,
        radius_km: req.service_radius_km,
        postal_prefixes: req.postal_prefixes,
        capacity: req.capacity,
        max_units: req.max_units,
        active: req.active,
    };
    Ok(Json(svc.update_partner(id, patch).await?.into()))
}

/// Delivery jobs, oldest first, of one partner and/or in one status (admin, warehouse staff):
/// `?status=waiting` is what waits for a partner with room.
#[utoipa::path(get, path = "/delivery/jobs", tag = "delivery", security(("bearer" = [])), params(JobsQuery),
    responses((status = 200, body = Page<JobView>), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json"),
               (status = 422, body = Problem, content_type = "application/problem+json")))]
async fn list_jobs(State(svc): Service, user: AuthUser, Query(q): Query<JobsQuery>) -> ApiResult<Json<Page<JobView>>> {
    user.require(Role::Warehouse)?;
    let mut v = Validator::new();
    let partner = v.optional("partner_id", q.partner_id, |raw| {
        raw.trim().parse::<DeliveryPartnerId>().map_err(|_| "is not a valid id")
    });
    let status = v.optional("status", q.status, |raw| {
        JobStatus::parse(raw.trim()).ok_or("must be waiting, assigned or finished")
    });
    v.finish()?;
    let jobs = svc.jobs(validated(partner), validated(status)).await?;
    Ok(Json(Page::all(jobs.into_iter().map(JobView::from).collect())))
}
