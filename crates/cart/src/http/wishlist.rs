//! `/users/wishlist` endpoints (the paths API.md gives them; the cart service serves them) and
//! the guest-cart merge that follows a sign-in.

use super::checked_token;
use crate::CartService;
use crate::model::{CartOwner, PricedCart};
use crate::wishlist::WishlistItem;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use emporium_kernel::auth::AuthUser;
use emporium_kernel::error::{ApiError, ApiResult, Problem};
use emporium_kernel::http::{ApiJson, path_id};
use emporium_kernel::ids::{ProductId, UserId};
use emporium_kernel::validate::{Validator, validated};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

type Service = State<Arc<CartService>>;

pub fn router(service: Arc<CartService>) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(get_wishlist, add_to_wishlist))
        .routes(routes!(remove_from_wishlist))
        .routes(routes!(move_to_cart))
        .with_state(service)
}

/// A guest who signs in keeps what they put in the cart (API.md: merged at login).
#[async_trait::async_trait]
impl emporium_users::api::AfterSignIn for CartService {
    async fn signed_in(&self, user: UserId, guest_cart: &str) {
        // A token this API did not issue names no cart: there is nothing to merge.
        let Ok(token) = checked_token(guest_cart) else { return };
        if let Err(err) = self.merge(&CartOwner::guest(&token), user).await {
            // Signing in does not fail because of this; POST /cart/merge retries.
            tracing::warn!(error = %err, "merging the guest cart at login failed");
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WishlistView {
    pub items: Vec<WishlistItem>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct WishlistRequest {
    #[schema(required = true)]
    pub product_id: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct MoveToCartRequest {
    /// Units to put in the cart, default 1.
    pub quantity: Option<i64>,
}

/// The caller's wishlist, newest first, with product summaries and stock.
#[utoipa::path(get, path = "/users/wishlist", tag = "users", security(("bearer" = [])),
    responses((status = 200, body = WishlistView), (status = 401, body = Problem, content_type = "application/problem+json")))]
async fn get_wishlist(State(svc): Service, user: AuthUser) -> ApiResult<Json<WishlistView>> {
    Ok(Json(WishlistView { items: svc.wishlist(user.id).await? }))
}

/// Keep a product for later (adding it twice keeps one).
#[utoipa::path(post, path = "/users/wishlist", tag = "users", security(("bearer" = [])), request_body = WishlistRequest,
    responses((status = 201, body = WishlistView), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 409, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")))]
async fn add_to_wishlist(
    State(svc): Service,
    user: AuthUser,
    ApiJson(req): ApiJson<WishlistRequest>,
) -> ApiResult<(StatusCode, Json<WishlistView>)> {
    let mut v = Validator::new();
    let product =
        v.required("product_id", req.product_id, |s| s.trim().parse::<ProductId>().map_err(|_| "is not a valid id"));
    v.finish()?;
    Ok((StatusCode::CREATED, Json(WishlistView { items: svc.wishlist_add(user.id, validated(product)).await? })))
}

#[utoipa::path(delete, path = "/users/wishlist/{product_id}", tag = "users", security(("bearer" = [])),
    params(("product_id" = String, Path)), responses((status = 204), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn remove_from_wishlist(State(svc): Service, user: AuthUser, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let product: ProductId = path_id(&id, "product")?;
    svc.wishlist_remove(user.id, product).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Move a wishlist product into the cart (409 when out of stock; it then stays on the wishlist).
#[utoipa::path(post, path = "/users/wishlist/{product_id}/move-to-cart", tag = "users", security(("bearer" = [])),
    params(("product_id" = String, Path)), request_body = MoveToCartRequest,
    responses((status = 200, body = PricedCart), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 409, body = Problem, content_type = "application/problem+json"),
               (status = 422, body = Problem, content_type = "application/problem+json")))]
async fn move_to_cart(
    State(svc): Service,
    user: AuthUser,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<MoveToCartRequest>,
) -> ApiResult<Json<PricedCart>> {
    let product: ProductId = path_id(&id, "product")?;
    let quantity = req.quantity.unwrap_or(1);
    if quantity < 1 {
        return Err(ApiError::invalid_field("quantity", "must be at least 1"));
    }
    Ok(Json(svc.wishlist_move_to_cart(user.id, product, quantity).await?))
}
