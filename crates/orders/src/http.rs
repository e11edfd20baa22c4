//! `/checkout`, `/orders` and `/warehouse-orders`. Shoppers check out, pay, cancel and return
//! their own orders (someone else's order is a 404); warehouse staff ship and deliver. The POSTs
//! that create orders or payments honour `Idempotency-Key`.

use crate::model::{
    HistoryEntry, Order, OrderLine, OrderStatus, PaymentSummary, PickList, ShipmentLine, ShipmentStatus,
    ShippingAddress, WarehouseOrder,
};
use crate::service::{Caller, OrdersError, OrdersService, PayOutcome};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use chrono::{DateTime, Utc};
use emporium_kernel::auth::{AuthUser, Role};
use emporium_kernel::error::{ApiError, ApiResult, Problem};
use emporium_kernel::http::{Page, PageRequest, parse_json, path_id};
use emporium_kernel::idempotency;
use emporium_kernel::ids::{AddressId, DeliveryPartnerId, OrderId, ProductId, WarehouseId, WarehouseOrderId};
use emporium_kernel::money::Money;
use emporium_kernel::validate::{Validator, text, validated};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

type Service = State<Arc<OrdersService>>;

pub fn router(service: Arc<OrdersService>) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(checkout))
        .routes(routes!(cancel_checkout))
        .routes(routes!(list_orders, place_order))
        .routes(routes!(get_order))
        .routes(routes!(pay))
        .routes(routes!(cancel_order))
        .routes(routes!(return_order))
        .routes(routes!(list_warehouse_orders))
        .routes(routes!(ship))
        .routes(routes!(deliver))
        .with_state(service)
}

fn caller(user: &AuthUser) -> Caller {
    Caller {
        user: user.id,
        admin: user.is_admin(),
        staff: user.has_role(Role::Warehouse),
        warehouses: user.warehouse_scope(),
    }
}

// --- DTOs ----------------------------------------------------------------------------------------

/// A warehouse order in its warehouse's list: what staff need to pick, pack and address it.
#[derive(Debug, Serialize, ToSchema)]
pub struct PickListView {
    pub warehouse_order_id: WarehouseOrderId,
    pub order_id: OrderId,
    pub warehouse_id: WarehouseId,
    pub status: ShipmentStatus,
    pub delivery_partner_id: Option<DeliveryPartnerId>,
    pub shipping_address: ShippingAddress,
    pub lines: Vec<PickLineView>,
    pub created_at: DateTime<Utc>,
    pub shipped_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PickLineView {
    pub product_id: ProductId,
    /// The product's title when it was ordered.
    pub title: String,
    pub quantity: i64,
}

impl From<PickList> for PickListView {
    fn from(p: PickList) -> Self {
        let s = p.shipment;
        Self {
            warehouse_order_id: s.id,
            order_id: s.order_id,
            warehouse_id: s.warehouse_id,
            status: s.status,
            delivery_partner_id: s.delivery_partner_id,
            shipping_address: p.shipping_address,
            lines: s
                .lines
                .into_iter()
                .map(|l| PickLineView {
                    title: p.titles.get(&l.product_id).cloned().unwrap_or_default(),
                    product_id: l.product_id,
                    quantity: l.quantity,
                })
                .collect(),
            created_at: s.created_at,
            shipped_at: s.shipped_at,
            delivered_at: s.delivered_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ShipmentView {
    pub warehouse_order_id: WarehouseOrderId,
    pub order_id: OrderId,
    pub warehouse_id: WarehouseId,
    pub status: ShipmentStatus,
    /// The partner carrying it, assigned by the delivery service; `null` while its job waits
    /// for a partner serving the warehouse and the address to have room.
    pub delivery_partner_id: Option<DeliveryPartnerId>,
    pub lines: Vec<ShipmentLine>,
    pub shipped_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
}

impl From<WarehouseOrder> for ShipmentView {
    fn from(s: WarehouseOrder) -> Self {
        Self {
            warehouse_order_id: s.id,
            order_id: s.order_id,
            warehouse_id: s.warehouse_id,
            status: s.status,
            delivery_partner_id: s.delivery_partner_id,
            lines: s.lines,
            shipped_at: s.shipped_at,
            delivered_at: s.delivered_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderView {
    pub id: OrderId,
    /// The same as `id`, under the name `POST /checkout` answers with in API.md.
    pub order_id: OrderId,
    pub status: OrderStatus,
    pub lines: Vec<OrderLine>,
    pub subtotal: Money,
    pub discount: Money,
    pub total: Money,
    pub coupon_code: Option<String>,
    pub shipping_address: ShippingAddress,
    /// Until when the stock is held for payment (PAYMENT_PENDING).
    pub expires_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub payment: Option<PaymentSummary>,
    pub shipments: Vec<ShipmentView>,
    pub history: Vec<HistoryEntry>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Order> for OrderView {
    fn from(o: Order) -> Self {
        Self {
            id: o.id,
            order_id: o.id,
            status: o.status,
            lines: o.lines,
            subtotal: o.subtotal,
            discount: o.discount,
            total: o.total,
            coupon_code: o.coupon_code,
            shipping_address: o.shipping_address,
            expires_at: o.expires_at,
            delivered_at: o.delivered_at,
            payment: o.payment,
            shipments: o.shipments.into_iter().map(Into::into).collect(),
            history: o.history,
            created_at: o.created_at,
            updated_at: o.updated_at,
        }
    }
}

fn view(order: Order) -> serde_json::Value {
    serde_json::to_value(OrderView::from(order)).expect("order views serialise")
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct PaymentMethodInput {
    /// Only `card` for now.
    #[serde(rename = "type")]
    #[schema(required = true)]
    pub kind: Option<String>,
    /// A card token or test card number (see the sandbox's test cards).
    #[schema(required = true)]
    pub token: Option<String>,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct CheckoutInput {
    #[schema(required = true)]
    pub shipping_address_id: Option<String>,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct PayInput {
    #[schema(required = true)]
    pub payment_method: Option<PaymentMethodInput>,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct PlaceOrderInput {
    #[schema(required = true)]
    pub shipping_address_id: Option<String>,
    #[schema(required = true)]
    pub payment_method: Option<PaymentMethodInput>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct CancelInput {
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ReturnLineInput {
    #[schema(required = true)]
    pub product_id: Option<String>,
    #[schema(required = true)]
    pub quantity: Option<i64>,
    /// Put the units back on sale (default from the shop's settings).
    pub restock: Option<bool>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct ReturnInput {
    /// What comes back; everything when absent.
    pub lines: Option<Vec<ReturnLineInput>>,
    pub reason: Option<String>,
}

fn address_id(v: &mut Validator, raw: Option<String>) -> Option<AddressId> {
    v.required("shipping_address_id", raw, |s| s.parse::<AddressId>().map_err(|_| "must be an address id"))
}

fn card_token(v: &mut Validator, method: Option<&PaymentMethodInput>) -> Option<String> {
    let Some(method) = method else {
        v.add("payment_method", "is required");
        return None;
    };
    if method.kind.as_deref() != Some("card") {
        v.add("payment_method.type", "must be \"card\"");
    }
    v.required("payment_method.token", method.token.clone(), |s| text(&s, 1, 200, false))
}

/// An optional JSON body: empty means defaults.
fn optional_body<T: serde::de::DeserializeOwned + Default>(body: &Bytes) -> ApiResult<T> {
    if body.iter().all(u8::is_ascii_whitespace) { Ok(T::default()) } else { parse_json(body) }
}

fn reason(v: &mut Validator, raw: Option<String>) -> Option<String> {
    v.optional("reason", raw, |s| text(&s, 1, 500, false)).flatten()
}

/// The answer to a pay attempt: 200 confirmed, 202 waiting for the gateway.
fn paid(outcome: PayOutcome, created: bool) -> (StatusCode, serde_json::Value) {
    let status = match (outcome.pending, created) {
        (true, _) => StatusCode::ACCEPTED,
        (false, true) => StatusCode::CREATED,
        (false, false) => StatusCode::OK,
    };
    (status, view(outcome.order))
}

// --- checkout ------------------------------------------------------------------------------------

/// Begins a checkout of the caller's cart: every line is held for 10 minutes (configurable).
#[utoipa::path(post, path = "/checkout", tag = "orders", security(("bearer" = [])), request_body = CheckoutInput,
    params(("Idempotency-Key" = Option<String>, Header, description = "a retry with the same key returns the first answer")),
    responses((status = 201, body = OrderView), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 409, body = Problem, content_type = "application/problem+json"),
               (status = 422, body = Problem, content_type = "application/problem+json")))]
async fn checkout(State(svc): Service, user: AuthUser, headers: HeaderMap, body: Bytes) -> ApiResult<Response> {
    let key = idempotency::key_from_headers(&headers)?;
    let input: CheckoutInput = parse_json(&body)?;
    let mut v = Validator::new();
    let address = address_id(&mut v, input.shipping_address_id.clone());
    v.finish()?;
    let scope = format!("orders.checkout:{}", user.id);
    Ok(idempotency::run(svc.db(), &scope, key.clone(), &input, || async {
        let order = svc.checkout(user.id, validated(address), key.as_deref()).await?;
        Ok((StatusCode::CREATED, view(order)))
    })
    .await)
}

/// Abandons a checkout: its stock and coupon use are given back.
#[utoipa::path(post, path = "/checkout/{order_id}/cancel", tag = "orders", security(("bearer" = [])),
    params(("order_id" = String, Path, description = "order id")),
    responses((status = 200, body = OrderView), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 409, body = Problem, content_type = "application/problem+json")))]
async fn cancel_checkout(State(svc): Service, user: AuthUser, Path(id): Path<String>) -> ApiResult<Json<OrderView>> {
    let id: OrderId = path_id(&id, "order")?;
    let order = svc.order_for(&caller(&user), id).await?;
    if !matches!(order.status, OrderStatus::PaymentPending | OrderStatus::Cancelled) {
        return Err(ApiError::from(OrdersError::Conflict(format!(
            "the checkout is {}; cancel the order instead",
            order.status.as_str()
        ))));
    }
    Ok(Json(svc.cancel(caller(&user), id, Some("checkout abandoned")).await?.into()))
}

// --- orders --------------------------------------------------------------------------------------

/// Checkout and pay in one call.
#[utoipa::path(post, path = "/orders", tag = "orders", security(("bearer" = [])), request_body = PlaceOrderInput,
    params(("Idempotency-Key" = Option<String>, Header, description = "a retry with the same key returns the first answer")),
    responses((status = 201, body = OrderView, description = "paid and confirmed"),
               (status = 202, body = OrderView, description = "the gateway confirms later"),
               (status = 402, body = Problem, content_type = "application/problem+json"), (status = 409, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")))]
async fn place_order(State(svc): Service, user: AuthUser, headers: HeaderMap, body: Bytes) -> ApiResult<Response> {
    let key = idempotency::key_from_headers(&headers)?;
    let input: PlaceOrderInput = parse_json(&body)?;
    let mut v = Validator::new();
    let address = address_id(&mut v, input.shipping_address_id.clone());
    let token = card_token(&mut v, input.payment_method.as_ref());
    v.finish()?;
    let scope = format!("orders.create:{}", user.id);
    Ok(idempotency::run(svc.db(), &scope, key.clone(), &input, || async {
        let outcome = svc.place_order(user.id, validated(address), &validated(token), key.as_deref()).await?;
        Ok(paid(outcome, true))
    })
    .await)
}

/// Pays a checkout.
#[utoipa::path(post, path = "/orders/{id}/pay", tag = "orders", security(("bearer" = [])), request_body = PayInput,
    params(("id" = String, Path, description = "order id"),
        ("Idempotency-Key" = Option<String>, Header, description = "a retry with the same key returns the first answer")),
    responses((status = 200, body = OrderView, description = "paid and confirmed"),
               (status = 202, body = OrderView, description = "the gateway confirms later"),
               (status = 402, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 409, body = Problem, content_type = "application/problem+json"),
               (status = 422, body = Problem, content_type = "application/problem+json")))]
async fn pay(
    State(svc): Service,
    user: AuthUser,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let id: OrderId = path_id(&id, "order")?;
    let key = idempotency::key_from_headers(&headers)?;
    let input: PayInput = parse_json(&body)?;
    let mut v = Validator::new();
    let token = card_token(&mut v, input.payment_method.as_ref());
    v.finish()?;
    let scope = format!("orders.pay:{}:{id}", user.id);
    Ok(idempotency::run(svc.db(), &scope, key, &input, || async {
        let outcome = svc.pay(caller(&user), id, &validated(token)).await?;
        Ok(paid(outcome, false))
    })
    .await)
}

#[derive(Deserialize, IntoParams)]
pub struct ListQuery {
    pub limit: Option<String>,
    pub cursor: Option<String>,
}

/// The caller's orders, newest first.
#[utoipa::path(get, path = "/orders", tag = "orders", security(("bearer" = [])), params(ListQuery),
    responses((status = 200, body = Page<OrderView>), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")))]
async fn list_orders(
    State(svc): Service,
    user: AuthUser,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Page<OrderView>>> {
    let page = PageRequest::parse(q.limit.as_deref(), q.cursor.as_deref(), 20, 100)?;
    let before = page.position::<OrderId>()?;
    let orders = svc.orders_of(user.id, before, page.limit + 1).await?;
    Ok(Json(Page::from_overfetch(orders, page.limit, |o| o.id.to_string()).map(OrderView::from)))
}

#[utoipa::path(get, path = "/orders/{id}", tag = "orders", security(("bearer" = [])),
    params(("id" = String, Path, description = "order id")),
    responses((status = 200, body = OrderView), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn get_order(State(svc): Service, user: AuthUser, Path(id): Path<String>) -> ApiResult<Json<OrderView>> {
    let id: OrderId = path_id(&id, "order")?;
    Ok(Json(svc.order_for(&caller(&user), id).await?.into()))
}

/// Cancels an order until it ships: stock back, refund.
#[utoipa::path(post, path = "/orders/{id}/cancel", tag = "orders", security(("bearer" = [])), request_body = Option<CancelInput>,
    params(("id" = String, Path, description = "order id")),
    responses((status = 200, body = OrderView), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 409, body = Problem, content_type = "application/problem+json")))]
async fn cancel_order(
    State(svc): Service,
    user: AuthUser,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<OrderView>> {
    let id: OrderId = path_id(&id, "order")?;
    let input: CancelInput = optional_body(&body)?;
    let mut v = Validator::new();
    let reason = reason(&mut v, input.reason);
    v.finish()?;
    Ok(Json(svc.cancel(caller(&user), id, reason.as_deref()).await?.into()))
}

/// Returns a delivered order (or some of its lines) within the return window: refund, restock.
#[utoipa::path(post, path = "/orders/{id}/return", tag = "orders", security(("bearer" = [])), request_body = Option<ReturnInput>,
    params(("id" = String, Path, description = "order id")),
    responses((status = 200, body = OrderView), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 409, body = Problem, content_type = "application/problem+json"),
               (status = 422, body = Problem, content_type = "application/problem+json")))]
async fn return_order(
    State(svc): Service,
    user: AuthUser,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<OrderView>> {
    let id: OrderId = path_id(&id, "order")?;
    let input: ReturnInput = optional_body(&body)?;
    let mut v = Validator::new();
    let reason = reason(&mut v, input.reason);
    let mut lines = Vec::new();
    for (i, line) in input.lines.unwrap_or_default().into_iter().enumerate() {
        let product = v.required(&format!("lines[{i}].product_id"), line.product_id, |s| {
            s.parse::<ProductId>().map_err(|_| "must be a product id")
        });
        let quantity = v.required(&format!("lines[{i}].quantity"), line.quantity, |q| {
            if q >= 1 { Ok(q) } else { Err("must be at least 1") }
        });
        if let (Some(product), Some(quantity)) = (product, quantity) {
            lines.push((product, quantity, line.restock));
        }
    }
    v.finish()?;
    Ok(Json(svc.return_order(caller(&user), id, lines, reason.as_deref()).await?.into()))
}

// --- fulfilment ----------------------------------------------------------------------------------

#[derive(Deserialize, IntoParams)]
pub struct WarehouseOrdersQuery {
    pub warehouse_id: Option<String>,
    /// PENDING, SHIPPED, DELIVERED or CANCELLED.
    pub status: Option<String>,
    pub limit: Option<String>,
    pub cursor: Option<String>,
}

/// A warehouse's orders, oldest first, with the address and line titles to pick and pack them
/// (its staff, admins).
#[utoipa::path(get, path = "/warehouse-orders", tag = "orders", security(("bearer" = [])), params(WarehouseOrdersQuery),
    responses((status = 200, body = Page<PickListView>), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")))]
async fn list_warehouse_orders(
    State(svc): Service,
    user: AuthUser,
    Query(q): Query<WarehouseOrdersQuery>,
) -> ApiResult<Json<Page<PickListView>>> {
    user.require(Role::Warehouse)?;
    let mut v = Validator::new();
    let warehouse =
        v.required("warehouse_id", q.warehouse_id, |s| s.parse::<WarehouseId>().map_err(|_| "must be a warehouse id"));
    let status = v
        .optional("status", q.status, |s| {
            ShipmentStatus::parse(&s).ok_or("must be PENDING, SHIPPED, DELIVERED or CANCELLED")
        })
        .flatten();
    v.finish()?;
    let warehouse = validated(warehouse);
    user.require_staff_at(warehouse)?;
    let page = PageRequest::parse(q.limit.as_deref(), q.cursor.as_deref(), 50, 200)?;
    let after = page.position::<WarehouseOrderId>()?;
    let items = svc.shipments(warehouse, status, after, page.limit + 1).await?;
    Ok(Json(Page::from_overfetch(items, page.limit, |p| p.shipment.id.to_string()).map(PickListView::from)))
}

/// The warehouse handed its part to the carrier: stock leaves the warehouse.
#[utoipa::path(post, path = "/warehouse-orders/{id}/ship", tag = "orders", security(("bearer" = [])),
    params(("id" = String, Path, description = "warehouse order id")),
    responses((status = 200, body = ShipmentView), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json"),
               (status = 409, body = Problem, content_type = "application/problem+json")))]
async fn ship(State(svc): Service, user: AuthUser, Path(id): Path<String>) -> ApiResult<Json<ShipmentView>> {
    user.require(Role::Warehouse)?;
    let id: WarehouseOrderId = path_id(&id, "warehouse order")?;
    Ok(Json(svc.ship(&format!("user:{}", user.id), &user.warehouse_scope(), id).await?.into()))
}

#[utoipa::path(post, path = "/warehouse-orders/{id}/deliver", tag = "orders", security(("bearer" = [])),
    params(("id" = String, Path, description = "warehouse order id")),
    responses((status = 200, body = ShipmentView), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json"),
               (status = 409, body = Problem, content_type = "application/problem+json")))]
async fn deliver(State(svc): Service, user: AuthUser, Path(id): Path<String>) -> ApiResult<Json<ShipmentView>> {
    user.require(Role::Warehouse)?;
    let id: WarehouseOrderId = path_id(&id, "warehouse order")?;
    Ok(Json(svc.deliver(&format!("user:{}", user.id), &user.warehouse_scope(), id).await?.into()))
}
