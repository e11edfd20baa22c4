//! `/cart` and `/coupons` endpoints. A signed-in shopper's cart is theirs; a guest's cart is
//! named by the `X-Cart-Token` header, which the first write issues.

mod wishlist;

use crate::model::{CartOwner, Coupon, CouponKind, PricedCart, check_quantity};
use crate::service::{CartService, NewCoupon};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use emporium_kernel::auth::{AuthUser, Role};
use emporium_kernel::error::{ApiError, ApiResult, Problem};
use emporium_kernel::geo::Destination;
use emporium_kernel::geo::optional_point;
use emporium_kernel::http::{ApiJson, Page, path_id};
use emporium_kernel::ids::{CategoryId, CouponId, ProductId};
use emporium_kernel::validate::{Validator, text, validated};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub const CART_TOKEN_HEADER: &str = "x-cart-token";

type Service = State<Arc<CartService>>;

pub fn router(service: Arc<CartService>) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(get_cart))
        .routes(routes!(add_item))
        .routes(routes!(set_quantity, remove_item))
        .routes(routes!(apply_coupon))
        .routes(routes!(remove_coupon))
        .routes(routes!(merge))
        .routes(routes!(list_coupons, create_coupon))
        .routes(routes!(delete_coupon))
        .with_state(service.clone())
        .merge(wishlist::router(service))
}

/// The guest token sent, if any; a malformed one is a 422 rather than silently a new cart.
fn sent_token(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(value) = headers.get(CART_TOKEN_HEADER) else { return Ok(None) };
    checked_token(value.to_str().unwrap_or_default()).map(Some)
}

fn checked_token(sent: &str) -> ApiResult<String> {
    let token = sent.trim();
    if (16..=128).contains(&token.len()) && token.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        Ok(token.to_owned())
    } else {
        Err(ApiError::invalid_field("X-Cart-Token", "is not a cart token this API issued"))
    }
}

/// Whose cart a request means. Guests without a token get one issued on their first write.
struct Caller {
    owner: Option<CartOwner>,
    issued_token: Option<String>,
}

fn caller(user: Option<&AuthUser>, headers: &HeaderMap, writing: bool) -> ApiResult<Caller> {
    if let Some(user) = user {
        return Ok(Caller { owner: Some(CartOwner::User(user.id)), issued_token: None });
    }
    match sent_token(headers)? {
        Some(token) => Ok(Caller { owner: Some(CartOwner::guest(&token)), issued_token: None }),
        None if writing => {
            let token = emporium_kernel::random_token(24);
            Ok(Caller { owner: Some(CartOwner::guest(&token)), issued_token: Some(token) })
        }
        None => Ok(Caller { owner: None, issued_token: None }),
    }
}

/// The cart as its shopper is shown it (lines marked deliverable to `to`, or else to the signed-in
/// shopper's default address), with the guest token header when one was just issued.
async fn respond(
    svc: &CartService,
    owner: &CartOwner,
    cart: PricedCart,
    to: Option<Destination>,
    issued_token: Option<String>,
) -> ApiResult<Response> {
    let mut response = Json(svc.shown(owner, cart, to).await?).into_response();
    if let Some(token) = issued_token.and_then(|t| HeaderValue::from_str(&t).ok()) {
        response.headers_mut().insert(CART_TOKEN_HEADER, token);
    }
    Ok(response)
}

fn product_field(raw: Option<String>, v: &mut Validator) -> Option<ProductId> {
    v.required("product_id", raw, |s| s.trim().parse::<ProductId>().map_err(|_| "is not a valid id"))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct AddItemRequest {
    #[schema(required = true)]
    pub product_id: Option<String>,
    /// Units to add (1..=the per-line maximum, default 1).
    pub quantity: Option<i64>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct QuantityRequest {
    #[schema(required = true)]
    pub quantity: Option<i64>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CouponCodeRequest {
    #[schema(required = true)]
    pub code: Option<String>,
}

/// Where to check the cart's lines can be delivered, instead of the signed-in shopper's default
/// address: a point, a postal code, or both (as checkout would match a warehouse's coverage).
#[derive(Debug, Deserialize, IntoParams)]
pub struct ShipToQuery {
    pub lat: Option<String>,
    pub lon: Option<String>,
    pub postal_code: Option<String>,
}

/// The caller's cart, re-priced now, with stock and deliverability flags and the coupon's
/// discount.
#[utoipa::path(get, path = "/cart", tag = "cart", params(("X-Cart-Token" = Option<String>, Header), ShipToQuery),
    responses((status = 200, body = PricedCart), (status = 422, body = Problem, content_type = "application/problem+json")))]
async fn get_cart(
    State(svc): Service,
    user: Option<AuthUser>,
    headers: HeaderMap,
    Query(q): Query<ShipToQuery>,
) -> ApiResult<Response> {
    let mut v = Validator::new();
    let point = v.point(optional_point(q.lat.as_deref(), q.lon.as_deref()));
    let postal_code = v.optional("postal_code", q.postal_code, |raw| text(&raw, 1, 20, false)).flatten();
    v.finish()?;
    let to = Some(Destination { point, postal_code }).filter(Destination::is_known);
    let caller = caller(user.as_ref(), &headers, false)?;
    match &caller.owner {
        Some(owner) => respond(&svc, owner, svc.cart(owner).await?, to, None).await,
        None => Ok(Json(svc.empty_cart()).into_response()),
    }
}

/// Add units of a product. 404 unknown product, 409 not enough stock, 422 bad quantity.
#[utoipa::path(post, path = "/cart/items", tag = "cart", request_body = AddItemRequest,
    params(("X-Cart-Token" = Option<String>, Header)),
    responses((status = 200, body = PricedCart), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 409, body = Problem, content_type = "application/problem+json"),
               (status = 422, body = Problem, content_type = "application/problem+json")))]
async fn add_item(
    State(svc): Service,
    user: Option<AuthUser>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<AddItemRequest>,
) -> ApiResult<Response> {
    let mut v = Validator::new();
    let product = product_field(req.product_id, &mut v);
    let quantity = v.optional("quantity", req.quantity, |q| check_quantity(q, svc.max_quantity()));
    v.finish()?;
    let caller = caller(user.as_ref(), &headers, true)?;
    let owner = caller.owner.expect("writes always have an owner");
    let cart = svc.add_item(&owner, validated(product), validated(quantity).unwrap_or(1)).await?;
    respond(&svc, &owner, cart, None, caller.issued_token).await
}

/// Set a line's quantity.
#[utoipa::path(put, path = "/cart/items/{product_id}", tag = "cart", request_body = QuantityRequest,
    params(("product_id" = String, Path), ("X-Cart-Token" = Option<String>, Header)),
    responses((status = 200, body = PricedCart), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 409, body = Problem, content_type = "application/problem+json"),
               (status = 422, body = Problem, content_type = "application/problem+json")))]
async fn set_quantity(
    State(svc): Service,
    user: Option<AuthUser>,
    headers: HeaderMap,
    Path(product): Path<String>,
    ApiJson(req): ApiJson<QuantityRequest>,
) -> ApiResult<Response> {
    let product: ProductId = path_id(&product, "product")?;
    let mut v = Validator::new();
    let quantity = v.required("quantity", req.quantity, |q| check_quantity(q, svc.max_quantity()));
    v.finish()?;
    let owner = caller(user.as_ref(), &headers, false)?.owner.ok_or_else(|| ApiError::not_found("cart"))?;
    respond(&svc, &owner, svc.set_quantity(&owner, product, validated(quantity)).await?, None, None).await
}

/// Remove a line.
#[utoipa::path(delete, path = "/cart/items/{product_id}", tag = "cart",
    params(("product_id" = String, Path), ("X-Cart-Token" = Option<String>, Header)),
    responses((status = 200, body = PricedCart), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn remove_item(
    State(svc): Service,
    user: Option<AuthUser>,
    headers: HeaderMap,
    Path(product): Path<String>,
) -> ApiResult<Response> {
    let product: ProductId = path_id(&product, "product")?;
    let owner = caller(user.as_ref(), &headers, false)?.owner.ok_or_else(|| ApiError::not_found("cart"))?;
    respond(&svc, &owner, svc.remove_item(&owner, product).await?, None, None).await
}

/// Apply a coupon; 422 says why when it is unknown, expired or not applicable.
#[utoipa::path(post, path = "/cart/apply-coupon", tag = "cart", request_body = CouponCodeRequest,
    params(("X-Cart-Token" = Option<String>, Header)),
    responses((status = 200, body = PricedCart), (status = 422, body = Problem, content_type = "application/problem+json")))]
async fn apply_coupon(
    State(svc): Service,
    user: Option<AuthUser>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<CouponCodeRequest>,
) -> ApiResult<Response> {
    let mut v = Validator::new();
    let code = v.required("code", req.code, Ok::<String, String>);
    v.finish()?;
    let caller = caller(user.as_ref(), &headers, true)?;
    let owner = caller.owner.expect("writes always have an owner");
    respond(&svc, &owner, svc.apply_coupon(&owner, &validated(code)).await?, None, caller.issued_token).await
}

#[utoipa::path(delete, path = "/cart/coupon", tag = "cart", params(("X-Cart-Token" = Option<String>, Header)),
    responses((status = 200, body = PricedCart), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn remove_coupon(State(svc): Service, user: Option<AuthUser>, headers: HeaderMap) -> ApiResult<Response> {
    let owner = caller(user.as_ref(), &headers, false)?.owner.ok_or_else(|| ApiError::not_found("cart"))?;
    respond(&svc, &owner, svc.remove_coupon(&owner).await?, None, None).await
}

/// Merge the guest cart named by `X-Cart-Token` into the signed-in user's cart.
#[utoipa::path(post, path = "/cart/merge", tag = "cart", security(("bearer" = [])),
    params(("X-Cart-Token" = String, Header)),
    responses((status = 200, body = PricedCart), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")))]
async fn merge(State(svc): Service, user: AuthUser, headers: HeaderMap) -> ApiResult<Response> {
    let token = sent_token(&headers)?.ok_or_else(|| ApiError::invalid_field("X-Cart-Token", "is required"))?;
    let owner = CartOwner::User(user.id);
    respond(&svc, &owner, svc.merge(&CartOwner::guest(&token), user.id).await?, None, None).await
}

// --- coupons (admin) -----------------------------------------------------------------------------

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CouponDto {
    pub id: Option<CouponId>,
    #[schema(required = true)]
    pub code: Option<String>,
    #[schema(required = true)]
    pub kind: Option<CouponKind>,
    /// Whole percent for `percent`, minor units for `fixed`.
    #[schema(required = true)]
    pub value: Option<i64>,
    pub min_subtotal: Option<i64>,
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
    pub max_uses: Option<i64>,
    pub max_uses_per_user: Option<i64>,
    pub category_ids: Option<Vec<CategoryId>>,
}

impl From<Coupon> for CouponDto {
    fn from(c: Coupon) -> Self {
        Self {
            id: Some(c.id),
            code: Some(c.code),
            kind: Some(c.kind),
            value: Some(c.value),
            min_subtotal: c.min_subtotal,
            starts_at: c.starts_at,
            ends_at: c.ends_at,
            max_uses: c.max_uses,
            max_uses_per_user: c.max_uses_per_user,
            category_ids: Some(c.category_ids),
        }
    }
}

/// Create a coupon (admin).
#[utoipa::path(post, path = "/coupons", tag = "cart", security(("bearer" = [])), request_body = CouponDto,
    responses((status = 201, body = CouponDto), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 409, body = Problem, content_type = "application/problem+json"),
               (status = 422, body = Problem, content_type = "application/problem+json")))]
async fn create_coupon(
    State(svc): Service,
    user: AuthUser,
    ApiJson(req): ApiJson<CouponDto>,
) -> ApiResult<(StatusCode, Json<CouponDto>)> {
    user.require(Role::Admin)?;
    let mut v = Validator::new();
    let code = v.required("code", req.code, Ok::<String, String>);
    let kind = v.required("kind", req.kind, Ok::<CouponKind, String>);
    let value = v.required("value", req.value, Ok::<i64, String>);
    v.finish()?;
    let coupon = svc
        .create_coupon(NewCoupon {
            code: validated(code),
            kind: validated(kind),
            value: validated(value),
            min_subtotal: req.min_subtotal,
            starts_at: req.starts_at,
            ends_at: req.ends_at,
            max_uses: req.max_uses,
            max_uses_per_user: req.max_uses_per_user,
            category_ids: req.category_ids.unwrap_or_default(),
        })
        .await?;
    Ok((StatusCode::CREATED, Json(coupon.into())))
}

/// Every live coupon (admin).
#[utoipa::path(get, path = "/coupons", tag = "cart", security(("bearer" = [])),
    responses((status = 200, body = Page<CouponDto>), (status = 403, body = Problem, content_type = "application/problem+json")))]
async fn list_coupons(State(svc): Service, user: AuthUser) -> ApiResult<Json<Page<CouponDto>>> {
    user.require(Role::Admin)?;
    Ok(Json(Page::all(svc.coupons().await?.into_iter().map(CouponDto::from).collect())))
}

/// Retire a coupon (admin); carts holding it stop getting its discount.
#[utoipa::path(delete, path = "/coupons/{code}", tag = "cart", security(("bearer" = [])), params(("code" = String, Path)),
    responses((status = 204), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn delete_coupon(State(svc): Service, user: AuthUser, Path(code): Path<String>) -> ApiResult<StatusCode> {
    user.require(Role::Admin)?;
    svc.delete_coupon(&code).await.map_err(|e| match e {
        crate::service::Error::CouponNotFound => ApiError::not_found("coupon"),
        other => other.into(),
    })?;
    Ok(StatusCode::NO_CONTENT)
}
