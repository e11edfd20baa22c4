//! Who is calling: roles, access-token claims, and the extractors handlers use.
//!
//! Access tokens are short-lived HS256 JWTs that any service (and the gateway) can verify on its
//! own. Each carries the user's token version (`ver`); the users service bumps it when a session
//! must end at once (logout, a password change, a role change or warehouse assignment, a disabled
//! account), and the edge compares it on every request through [`TokenVersions`] (cached), so
//! revocation does not wait for the token to expire. Refresh tokens are opaque and stored by the
//! users service.

use crate::error::{ApiError, ErrorCode};
use crate::ids::{UserId, WarehouseId};
use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::convert::Infallible;
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Customer,
    Seller,
    Warehouse,
    Admin,
    /// Other services calling internal endpoints; never granted to a person.
    Service,
}

impl Role {
    /// Roles an admin may grant to a user.
    pub const GRANTABLE: [Role; 4] = [Role::Customer, Role::Seller, Role::Warehouse, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Seller => "seller",
            Role::Warehouse => "warehouse",
            Role::Admin => "admin",
            Role::Service => "service",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        [Role::Customer, Role::Seller, Role::Warehouse, Role::Admin, Role::Service]
            .into_iter()
            .find(|r| r.as_str() == s)
    }
}

const ISSUER: &str = "emporium";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub sub: UserId,
    pub roles: Vec<Role>,
    /// The user's token version when it was issued (see [`TokenVersions`]).
    #[serde(default)]
    pub ver: i64,
    /// The warehouses a member of warehouse staff is assigned to (admins assign them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub wh: Vec<WarehouseId>,
    pub iat: i64,
    pub exp: i64,
    pub iss: String,
}

/// Signs and verifies access tokens.
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    pub access_ttl: chrono::Duration,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys").field("access_ttl", &self.access_ttl).finish_non_exhaustive()
    }
}

pub struct IssuedToken {
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

impl TokenKeys {
    pub fn new(secret: &[u8], access_ttl: chrono::Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        validation.leeway = 5;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            access_ttl,
        }
    }

    pub fn issue(
        &self,
        user: UserId,
        roles: &[Role],
        warehouses: &[WarehouseId],
        ver: i64,
        now: DateTime<Utc>,
    ) -> Result<IssuedToken, ApiError> {
        let expires_at = now + self.access_ttl;
        let claims = Claims {
            sub: user,
            roles: roles.to_vec(),
            ver,
            wh: warehouses.to_vec(),
            iat: now.timestamp(),
            exp: expires_at.timestamp(),
            iss: ISSUER.to_owned(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(ApiError::internal)?;
        Ok(IssuedToken { token, expires_at })
    }

    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|_| ApiError::new(ErrorCode::InvalidToken).with_detail("the access token is invalid or expired"))
    }
}

/// The authenticated caller, put in the request extensions by the edge's auth middleware.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthUser {
    pub id: UserId,
    pub roles: Vec<Role>,
    /// The warehouses a member of warehouse staff is assigned to.
    pub warehouses: Vec<WarehouseId>,
}

/// Which warehouses' stock and orders a caller may work on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WarehouseScope {
    /// Admins, and the services' own work.
    All,
    /// Warehouse staff: the warehouses an admin assigned them to (none: nothing).
    Only(Vec<WarehouseId>),
}

impl WarehouseScope {
    pub fn allows(&self, warehouse: WarehouseId) -> bool {
        match self {
            WarehouseScope::All => true,
            WarehouseScope::Only(assigned) => assigned.contains(&warehouse),
        }
    }
}

impl AuthUser {
    /// A caller without warehouse assignments (tools acting as a user).
    pub fn new(id: UserId, roles: Vec<Role>) -> Self {
        Self { id, roles, warehouses: Vec::new() }
    }

    /// Where this caller may act as warehouse staff: everywhere for an admin, else where assigned.
    pub fn warehouse_scope(&self) -> WarehouseScope {
        if self.is_admin() { WarehouseScope::All } else { WarehouseScope::Only(self.warehouses.clone()) }
    }

    /// 403 unless the caller may work at `warehouse` as staff (see [`Self::warehouse_scope`]).
    pub fn require_staff_at(&self, warehouse: WarehouseId) -> Result<(), ApiError> {
        self.require(Role::Warehouse)?;
        if self.warehouse_scope().allows(warehouse) {
            Ok(())
        } else {
            Err(ApiError::forbidden().with_detail("you are not assigned to this warehouse; an admin assigns staff"))
        }
    }

    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    pub fn is_admin(&self) -> bool {
        self.has_role(Role::Admin)
    }

    /// 403 unless the caller has `role` (admins have every role's rights).
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.has_role(role) || self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::forbidden().with_detail(format!("requires the {} role", role.as_str())))
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<AuthUser>().cloned().ok_or_else(|| {
            ApiError::unauthenticated().with_detail("send an access token: Authorization: Bearer <token>")
        })
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for AuthUser {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<AuthUser>().cloned())
    }
}

/// The current token version of each user, from the users service: an access token whose `ver`
/// differs was issued before its session ended. `None`: the user may not sign in at all
/// (disabled, or gone).
#[async_trait::async_trait]
pub trait TokenVersions: Send + Sync {
    async fn current(&self, user: UserId) -> Result<Option<i64>, String>;
}

/// What the edge's [`authenticate`] checks tokens with.
#[derive(Clone)]
pub struct Authenticator {
    pub keys: Arc<TokenKeys>,
    /// Absent only where no users service runs in the process (a partial `--services` set):
    /// tokens are then checked for signature and expiry alone.
    pub versions: Option<Arc<dyn TokenVersions>>,
}

/// Edge middleware: a valid bearer token of a live session becomes an [`AuthUser`] extension; an
/// invalid one, or one whose session ended, is refused with 401 (a client holding a stale token
/// should refresh it, not be served as a guest).
pub async fn authenticate(
    axum::extract::State(auth): axum::extract::State<Authenticator>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if let Some(header) = req.headers().get(axum::http::header::AUTHORIZATION) {
        let token = header
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim);
        let Some(token) = token else {
            return ApiError::new(ErrorCode::InvalidToken)
                .with_detail("the Authorization header must be `Bearer <token>`")
                .into_response();
        };
        let claims = match auth.keys.verify(token) {
            Ok(claims) => claims,
            Err(err) => return err.into_response(),
        };
        if let Some(versions) = &auth.versions {
            match versions.current(claims.sub).await {
                Ok(Some(current)) if current == claims.ver => {}
                Ok(_) => {
                    return ApiError::new(ErrorCode::InvalidToken)
                        .with_detail("the session of this access token has ended: refresh it or sign in again")
                        .into_response();
                }
                Err(err) => {
                    tracing::error!(error = %err, user = %claims.sub, "checking an access token's session failed");
                    return ApiError::new(ErrorCode::Unavailable).into_response();
                }
            }
        }
        req.extensions_mut().insert(AuthUser { id: claims.sub, roles: claims.roles, warehouses: claims.wh });
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> TokenKeys {
        TokenKeys::new(b"0123456789abcdef0123456789abcdef", chrono::Duration::minutes(15))
    }

    #[test]
    fn issued_tokens_verify_with_their_claims() {
        let user = UserId::new();
        let issued = keys().issue(user, &[Role::Customer, Role::Seller], &[], 3, Utc::now()).unwrap();
        let claims = keys().verify(&issued.token).unwrap();
        assert_eq!(claims.sub, user);
        assert_eq!(claims.roles, vec![Role::Customer, Role::Seller]);
        assert_eq!(claims.ver, 3);
    }

    #[test]
    fn expired_tokens_are_refused() {
        let issued =
            keys().issue(UserId::new(), &[Role::Customer], &[], 0, Utc::now() - chrono::Duration::hours(1)).unwrap();
        let err = keys().verify(&issued.token).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidToken);
    }

    #[test]
    fn tokens_signed_with_another_key_are_refused() {
        let other = TokenKeys::new(b"another-secret-another-secret-xx", chrono::Duration::minutes(15));
        let issued = other.issue(UserId::new(), &[Role::Admin], &[], 0, Utc::now()).unwrap();
        assert!(keys().verify(&issued.token).is_err());
    }

    #[test]
    fn admins_pass_every_role_check() {
        let admin = AuthUser::new(UserId::new(), vec![Role::Admin]);
        let customer = AuthUser::new(UserId::new(), vec![Role::Customer]);
        assert!(admin.require(Role::Warehouse).is_ok());
        assert_eq!(customer.require(Role::Seller).unwrap_err().code, ErrorCode::Forbidden);
    }

    #[test]
    fn staff_work_only_where_assigned_and_admins_everywhere() {
        let (berlin, potsdam) = (WarehouseId::new(), WarehouseId::new());
        let staff = AuthUser { id: UserId::new(), roles: vec![Role::Warehouse], warehouses: vec![berlin] };
        assert!(staff.require_staff_at(berlin).is_ok());
        assert_eq!(staff.require_staff_at(potsdam).unwrap_err().code, ErrorCode::Forbidden);
        let admin = AuthUser::new(UserId::new(), vec![Role::Admin]);
        assert!(admin.require_staff_at(potsdam).is_ok());
        let seller = AuthUser { id: UserId::new(), roles: vec![Role::Seller], warehouses: vec![berlin] };
        assert!(seller.require_staff_at(berlin).is_err(), "an assignment is no role");
    }

    #[test]
    fn roles_parse_from_their_names() {
        for role in Role::GRANTABLE {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::parse("root"), None);
    }
}
