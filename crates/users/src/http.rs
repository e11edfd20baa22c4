//! `/users/*` and `/admin/users/*` endpoints. DTOs keep every field optional so one 422 can name
//! all the missing or invalid ones; conversion into domain commands happens here.

use crate::api::AfterSignIn;
use crate::model::{
    Address, AddressInput, Email, GeoPoint, Latitude, Longitude, Password, PersonName, User, country_code,
};
use crate::service::{AuthSession, ProfileUpdate, Registration, UsersService};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use emporium_kernel::auth::{AuthUser, Role};
use emporium_kernel::error::{ApiResult, Problem};
use emporium_kernel::http::{ApiJson, Page, RateLimitState, path_id, rate_limit};
use emporium_kernel::ids::{AddressId, UserId, WarehouseId};
use emporium_kernel::validate::{Validator, optional_text, text, validated};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

type Service = State<Arc<UsersService>>;

/// The header a guest's cart token travels in (API.md), handed to [`AfterSignIn`] at login.
const CART_TOKEN_HEADER: &str = "x-cart-token";

/// The users routes. `auth_limit` guards login, registration and token refresh per client
/// address, because those are where passwords get guessed; `after_sign_in` runs after each
/// successful login that sent a guest cart token.
pub fn router(
    service: Arc<UsersService>,
    auth_limit: RateLimitState,
    after_sign_in: Option<Arc<dyn AfterSignIn>>,
) -> OpenApiRouter {
    let state = UsersState { users: service, after_sign_in };
    let guarded = OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(login))
        .routes(routes!(refresh))
        .route_layer(axum::middleware::from_fn_with_state(auth_limit, rate_limit));
    OpenApiRouter::new()
        .merge(guarded)
        .routes(routes!(logout))
        .routes(routes!(get_profile, update_profile))
        .routes(routes!(list_addresses, create_address))
        .routes(routes!(replace_address, delete_address))
        .routes(routes!(set_roles))
        .routes(routes!(disable_user))
        .routes(routes!(set_warehouses))
        .routes(routes!(enable_user))
        .with_state(state)
}

#[derive(Clone)]
struct UsersState {
    users: Arc<UsersService>,
    after_sign_in: Option<Arc<dyn AfterSignIn>>,
}

impl axum::extract::FromRef<UsersState> for Arc<UsersService> {
    fn from_ref(state: &UsersState) -> Self {
        state.users.clone()
    }
}

// --- DTOs ----------------------------------------------------------------------------------------

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UserView {
    pub id: UserId,
    pub email: String,
    pub name: String,
    pub roles: Vec<Role>,
    /// Where a member of warehouse staff works (empty for everyone else).
    pub warehouse_ids: Vec<WarehouseId>,
    pub created_at: DateTime<Utc>,
}

impl From<User> for UserView {
    fn from(user: User) -> Self {
        Self {
            id: user.id,
            email: user.email,
            name: user.name,
            roles: user.roles,
            warehouse_ids: user.warehouse_ids,
            created_at: user.created_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct WarehousesRequest {
    #[schema(required = true, max_items = 1000)]
    pub warehouse_ids: Option<Vec<String>>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuthResponse {
    pub user: UserView,
    pub access_token: String,
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    pub refresh_token: String,
    pub refresh_expires_at: DateTime<Utc>,
}

/// `PATCH /users/profile`'s answer: the profile, and after a password change the new session
/// (every earlier one ended, the caller's included).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProfileView {
    #[serde(flatten)]
    pub user: UserView,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<AuthResponse>,
}

impl From<crate::service::ProfileChanged> for ProfileView {
    fn from(changed: crate::service::ProfileChanged) -> Self {
        Self { user: changed.user.into(), session: changed.session.map(AuthResponse::from) }
    }
}

impl From<AuthSession> for AuthResponse {
    fn from(s: AuthSession) -> Self {
        Self {
            expires_in: (s.access_expires_at - Utc::now()).num_seconds().max(0),
            user: s.user.into(),
            access_token: s.access_token,
            token_type: "Bearer".into(),
            refresh_token: s.refresh_token,
            refresh_expires_at: s.refresh_expires_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RegisterRequest {
    #[schema(required = true)]
    pub email: Option<String>,
    /// At least 8 characters, not a common password.
    #[schema(required = true)]
    pub password: Option<String>,
    #[schema(required = true)]
    pub name: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginRequest {
    #[schema(required = true)]
    pub email: Option<String>,
    #[schema(required = true)]
    pub password: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RefreshRequest {
    #[schema(required = true)]
    pub refresh_token: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ProfilePatch {
    pub name: Option<String>,
    pub email: Option<String>,
    /// New password; requires `current_password`.
    pub password: Option<String>,
    pub current_password: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct AddressRequest {
    pub label: Option<String>,
    #[schema(required = true)]
    pub line1: Option<String>,
    pub line2: Option<String>,
    #[schema(required = true)]
    pub city: Option<String>,
    pub region: Option<String>,
    #[schema(required = true)]
    pub postal_code: Option<String>,
    /// ISO 3166-1 alpha-2.
    #[schema(required = true)]
    pub country: Option<String>,
    /// Latitude in degrees; give both `lat` and `lon` or neither.
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub is_default: Option<bool>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AddressView {
    pub id: AddressId,
    pub label: Option<String>,
    pub line1: String,
    pub line2: Option<String>,
    pub city: String,
    pub region: Option<String>,
    pub postal_code: String,
    pub country: String,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub is_default: bool,
    pub created_at: DateTime<Utc>,
}

impl From<Address> for AddressView {
    fn from(a: Address) -> Self {
        Self {
            id: a.id,
            label: a.label,
            line1: a.line1,
            line2: a.line2,
            city: a.city,
            region: a.region,
            postal_code: a.postal_code,
            country: a.country,
            lat: a.lat.map(Latitude::degrees),
            lon: a.lon.map(Longitude::degrees),
            is_default: a.is_default,
            created_at: a.created_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RolesRequest {
    #[schema(required = true)]
    pub roles: Option<Vec<String>>,
}

impl TryFrom<AddressRequest> for AddressInput {
    type Error = emporium_kernel::ApiError;

    fn try_from(req: AddressRequest) -> ApiResult<Self> {
        let mut v = Validator::new();
        let label = v.optional("label", req.label, |s| optional_text(&s, 50)).map(Option::flatten);
        let line1 = v.required("line1", req.line1, |s| text(&s, 1, 200, false));
        let line2 = v.optional("line2", req.line2, |s| optional_text(&s, 200)).map(Option::flatten);
        let city = v.required("city", req.city, |s| text(&s, 1, 100, false));
        let region = v.optional("region", req.region, |s| optional_text(&s, 100)).map(Option::flatten);
        let postal_code = v.required("postal_code", req.postal_code, |s| text(&s, 1, 20, false));
        let country = v.required("country", req.country, |s| country_code(&s));
        let lat = v.optional("lat", req.lat, Latitude::parse);
        let lon = v.optional("lon", req.lon, Longitude::parse);
        let location = match (lat, lon) {
            (Some(Some(lat)), Some(Some(lon))) => Some(GeoPoint { lat, lon }),
            (Some(None), Some(None)) => None,
            (Some(Some(_)), Some(None)) => {
                v.add("lon", "is required when lat is given");
                None
            }
            (Some(None), Some(Some(_))) => {
                v.add("lat", "is required when lon is given");
                None
            }
            _ => None,
        };
        v.finish()?;
        Ok(AddressInput {
            label: validated(label),
            line1: validated(line1),
            line2: validated(line2),
            city: validated(city),
            region: validated(region),
            postal_code: validated(postal_code),
            country: validated(country),
            location,
            is_default: req.is_default.unwrap_or(false),
        })
    }
}

// --- handlers ------------------------------------------------------------------------------------

/// Create an account (role `customer`) and sign in.
#[utoipa::path(post, path = "/users/register", tag = "users", request_body = RegisterRequest,
    responses((status = 201, body = AuthResponse), (status = 409, description = "e-mail already registered", body = Problem, content_type = "application/problem+json"),
               (status = 422, body = Problem, content_type = "application/problem+json"), (status = 429, body = Problem, content_type = "application/problem+json")))]
async fn register(
    State(svc): Service,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> ApiResult<(StatusCode, Json<AuthResponse>)> {
    let mut v = Validator::new();
    let email = v.required("email", req.email, |s| Email::parse(&s));
    let password = v.required("password", req.password, |s| Password::parse(&s));
    let name = v.required("name", req.name, |s| PersonName::parse(&s));
    if let (Some(password), Some(email)) = (&password, &email)
        && password.resembles(email.as_str())
    {
        v.add("password", "must not be your e-mail address");
    }
    v.finish()?;
    let registration = Registration { email: validated(email), password: validated(password), name: validated(name) };
    let session = svc.register(registration).await?;
    Ok((StatusCode::CREATED, Json(session.into())))
}

/// Sign in with e-mail and password.
#[utoipa::path(post, path = "/users/login", tag = "users", request_body = LoginRequest,
    responses((status = 200, body = AuthResponse), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json"), (status = 429, body = Problem, content_type = "application/problem+json")))]
async fn login(
    State(state): State<UsersState>,
    headers: axum::http::HeaderMap,
    ApiJson(req): ApiJson<LoginRequest>,
) -> ApiResult<Json<AuthResponse>> {
    let mut v = Validator::new();
    let email = v.required("email", req.email, Ok::<_, String>);
    let password = v.required("password", req.password, Ok::<_, String>);
    v.finish()?;
    let session = state.users.login(&validated(email), &validated(password)).await?;
    if let (Some(after), Some(token)) = (&state.after_sign_in, headers.get(CART_TOKEN_HEADER)) {
        after.signed_in(session.user.id, token.to_str().unwrap_or_default()).await;
    }
    Ok(Json(session.into()))
}

/// Exchange a refresh token for a new token pair; the presented token stops working.
#[utoipa::path(post, path = "/users/token/refresh", tag = "users", request_body = RefreshRequest,
    responses((status = 200, body = AuthResponse), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")))]
async fn refresh(State(svc): Service, ApiJson(req): ApiJson<RefreshRequest>) -> ApiResult<Json<AuthResponse>> {
    let mut v = Validator::new();
    let token = v.required("refresh_token", req.refresh_token, Ok::<_, String>);
    v.finish()?;
    Ok(Json(svc.refresh(&validated(token)).await?.into()))
}

/// Revoke the session the refresh token belongs to.
#[utoipa::path(post, path = "/users/logout", tag = "users", request_body = RefreshRequest,
    responses((status = 204), (status = 422, body = Problem, content_type = "application/problem+json")))]
async fn logout(State(svc): Service, ApiJson(req): ApiJson<RefreshRequest>) -> ApiResult<StatusCode> {
    let mut v = Validator::new();
    let token = v.required("refresh_token", req.refresh_token, Ok::<_, String>);
    v.finish()?;
    svc.logout(&validated(token)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The signed-in user's profile.
#[utoipa::path(get, path = "/users/profile", tag = "users", security(("bearer" = [])),
    responses((status = 200, body = UserView), (status = 401, body = Problem, content_type = "application/problem+json")))]
async fn get_profile(State(svc): Service, user: AuthUser) -> ApiResult<Json<UserView>> {
    Ok(Json(svc.user(user.id).await?.into()))
}

/// Change name, e-mail or password. A new password needs `current_password`, ends every session
/// and access token (this one too) and answers with a new session in `session`.
#[utoipa::path(patch, path = "/users/profile", tag = "users", security(("bearer" = [])), request_body = ProfilePatch,
    responses((status = 200, body = ProfileView), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 409, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")))]
async fn update_profile(
    State(svc): Service,
    user: AuthUser,
    ApiJson(req): ApiJson<ProfilePatch>,
) -> ApiResult<Json<ProfileView>> {
    let mut v = Validator::new();
    let name = v.optional("name", req.name, |s| PersonName::parse(&s));
    let email = v.optional("email", req.email, |s| Email::parse(&s));
    let password = v.optional("password", req.password, |s| Password::parse(&s));
    if matches!(password, Some(Some(_))) && req.current_password.is_none() {
        v.add("current_password", "is required to change the password");
    }
    v.finish()?;
    let update = ProfileUpdate {
        name: validated(name),
        email: validated(email),
        password: validated(password).zip(req.current_password).map(|(new, current)| (current, new)),
    };
    Ok(Json(svc.update_profile(user.id, update).await?.into()))
}

/// The signed-in user's address book (default first is not implied; see `is_default`).
#[utoipa::path(get, path = "/users/addresses", tag = "users", security(("bearer" = [])),
    responses((status = 200, body = Page<AddressView>), (status = 401, body = Problem, content_type = "application/problem+json")))]
async fn list_addresses(State(svc): Service, user: AuthUser) -> ApiResult<Json<Page<AddressView>>> {
    let items = svc.addresses(user.id).await?.into_iter().map(AddressView::from).collect();
    Ok(Json(Page::all(items)))
}

/// Add an address. The first one becomes the default; `is_default: true` moves the default.
#[utoipa::path(post, path = "/users/addresses", tag = "users", security(("bearer" = [])), request_body = AddressRequest,
    responses((status = 201, body = AddressView), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 409, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")))]
async fn create_address(
    State(svc): Service,
    user: AuthUser,
    ApiJson(req): ApiJson<AddressRequest>,
) -> ApiResult<(StatusCode, Json<AddressView>)> {
    let input = AddressInput::try_from(req)?;
    let address = svc.add_address(user.id, input).await?;
    Ok((StatusCode::CREATED, Json(address.into())))
}

/// Replace an address.
#[utoipa::path(put, path = "/users/addresses/{id}", tag = "users", security(("bearer" = [])), request_body = AddressRequest,
    params(("id" = String, Path, description = "address id")),
    responses((status = 200, body = AddressView), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")))]
async fn replace_address(
    State(svc): Service,
    user: AuthUser,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<AddressRequest>,
) -> ApiResult<Json<AddressView>> {
    let id: AddressId = path_id(&id, "address")?;
    let input = AddressInput::try_from(req)?;
    Ok(Json(svc.replace_address(user.id, id, input).await?.into()))
}

/// Delete an address; if it was the default, the oldest remaining one becomes the default.
#[utoipa::path(delete, path = "/users/addresses/{id}", tag = "users", security(("bearer" = [])),
    params(("id" = String, Path, description = "address id")),
    responses((status = 204), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn delete_address(State(svc): Service, user: AuthUser, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let id: AddressId = path_id(&id, "address")?;
    svc.delete_address(user.id, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Replace a user's roles (admin only). The user's access tokens stop working at once; the next
/// refresh or login carries the new roles.
#[utoipa::path(put, path = "/admin/users/{id}/roles", tag = "users", security(("bearer" = [])), request_body = RolesRequest,
    params(("id" = String, Path, description = "user id")),
    responses((status = 200, body = UserView), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")))]
async fn set_roles(
    State(svc): Service,
    caller: AuthUser,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<RolesRequest>,
) -> ApiResult<Json<UserView>> {
    caller.require(Role::Admin)?;
    let id: UserId = path_id(&id, "user")?;
    let mut v = Validator::new();
    let roles = v.required("roles", req.roles, |names: Vec<String>| {
        names
            .iter()
            .map(|n| {
                Role::parse(n).ok_or_else(|| format!("unknown role {n:?}; use customer, seller, warehouse or admin"))
            })
            .collect::<Result<Vec<_>, _>>()
    });
    v.finish()?;
    Ok(Json(svc.set_roles(id, &validated(roles), caller.id).await?.into()))
}

/// Assign a member of warehouse staff to warehouses (admin only): they list, ship and deliver
/// those warehouses' orders, see those orders, and move those warehouses' stock. Replaces earlier
/// assignments; their access tokens end at once.
#[utoipa::path(put, path = "/admin/users/{id}/warehouses", tag = "users", security(("bearer" = [])), request_body = WarehousesRequest,
    params(("id" = String, Path, description = "user id")),
    responses((status = 200, body = UserView), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")))]
async fn set_warehouses(
    State(svc): Service,
    caller: AuthUser,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<WarehousesRequest>,
) -> ApiResult<Json<UserView>> {
    caller.require(Role::Admin)?;
    let id: UserId = path_id(&id, "user")?;
    let mut v = Validator::new();
    let warehouses = v.required("warehouse_ids", req.warehouse_ids, |ids: Vec<String>| {
        if ids.len() > 1000 {
            return Err("at most 1000 warehouses".to_owned());
        }
        ids.iter()
            .map(|raw| raw.parse::<WarehouseId>().map_err(|_| format!("{raw:?} is not a warehouse id")))
            .collect::<Result<Vec<_>, _>>()
    });
    v.finish()?;
    Ok(Json(svc.set_warehouses(id, &validated(warehouses), caller.id).await?.into()))
}

/// Disable an account (admin only): no sign-in or refresh, and every access token refused at once.
#[utoipa::path(post, path = "/admin/users/{id}/disable", tag = "users", security(("bearer" = [])),
    params(("id" = String, Path, description = "user id")),
    responses((status = 200, body = UserView), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 409, body = Problem, content_type = "application/problem+json")))]
async fn disable_user(State(svc): Service, caller: AuthUser, Path(id): Path<String>) -> ApiResult<Json<UserView>> {
    caller.require(Role::Admin)?;
    let id: UserId = path_id(&id, "user")?;
    Ok(Json(svc.set_disabled(id, true, caller.id).await?.into()))
}

/// Enable a disabled account again (admin only): the user signs in anew.
#[utoipa::path(post, path = "/admin/users/{id}/enable", tag = "users", security(("bearer" = [])),
    params(("id" = String, Path, description = "user id")),
    responses((status = 200, body = UserView), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn enable_user(State(svc): Service, caller: AuthUser, Path(id): Path<String>) -> ApiResult<Json<UserView>> {
    caller.require(Role::Admin)?;
    let id: UserId = path_id(&id, "user")?;
    Ok(Json(svc.set_disabled(id, false, caller.id).await?.into()))
}
