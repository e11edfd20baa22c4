//! Users use cases: registration, login, token rotation, profile, roles and address book.

use crate::api::events::{UserRegistered, UserRolesChanged};
use crate::model::{
    Address, AddressInput, Email, LOGIN_FAILURE_WINDOW, LOGIN_FAILURES_ALLOWED, LOGIN_LOCK, Password, PersonName,
    RefreshDecision, StoredRefreshToken, User, decide_refresh, lock_remaining, normalise_roles,
};
use crate::store;
use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use chrono::{DateTime, Utc};
use emporium_kernel::auth::{Role, TokenKeys, TokenVersions};
use emporium_kernel::cache::Cache;
use emporium_kernel::clock::SharedClock;
use emporium_kernel::db::{Db, Tx, is_unique_violation};
use emporium_kernel::error::{ApiError, ErrorCode};
use emporium_kernel::events;
use emporium_kernel::ids::{AddressId, ProductId, UserId, WarehouseId};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use uuid::Uuid;

/// Address book size limit: enough for any shopper, small enough that a list is one page.
pub const MAX_ADDRESSES: i64 = 50;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("an account with this e-mail already exists")]
    EmailTaken,
    #[error("the e-mail or password is wrong")]
    InvalidCredentials,
    #[error("the refresh token is invalid, expired or revoked")]
    InvalidRefreshToken,
    #[error("the current password is wrong")]
    WrongCurrentPassword,
    #[error("this account is disabled; ask the shop to enable it")]
    AccountDisabled,
    #[error("you cannot disable your own account")]
    DisablingSelf,
    #[error("too many failed sign-ins for this e-mail address; try again in {0} s")]
    SignInLocked(u64),
    #[error("user not found")]
    UserNotFound,
    #[error("address not found")]
    AddressNotFound,
    #[error("the address book is full ({MAX_ADDRESSES} addresses)")]
    AddressBookFull,
    #[error("the default address cannot be un-defaulted; mark another address as default instead")]
    DefaultAddressRequired,
    #[error("storage failed")]
    Store(#[from] sqlx::Error),
    #[error("password hashing failed: {0}")]
    Hashing(String),
    #[error(transparent)]
    Api(#[from] ApiError),
}

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        let detail = err.to_string();
        match err {
            Error::EmailTaken => ApiError::new(ErrorCode::AlreadyExists).with_detail(detail),
            Error::InvalidCredentials => ApiError::new(ErrorCode::InvalidCredentials).with_detail(detail),
            Error::InvalidRefreshToken => ApiError::new(ErrorCode::InvalidToken).with_detail(detail),
            Error::WrongCurrentPassword => ApiError::invalid_field("current_password", "is wrong"),
            Error::AccountDisabled => ApiError::forbidden().with_detail(detail),
            Error::DisablingSelf => ApiError::conflict(detail),
            Error::SignInLocked(seconds) => {
                let mut err = ApiError::new(ErrorCode::RateLimited).with_detail(detail);
                err.retry_after = Some(seconds);
                err
            }
            Error::UserNotFound => ApiError::not_found("user"),
            Error::AddressNotFound => ApiError::not_found("address"),
            Error::AddressBookFull => ApiError::conflict(detail),
            Error::DefaultAddressRequired => ApiError::invalid_field("is_default", detail),
            Error::Store(e) => ApiError::internal(e),
            Error::Hashing(e) => ApiError::internal(anyhow::anyhow!(e)),
            Error::Api(e) => e,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub struct Registration {
    pub email: Email,
    pub password: Password,
    pub name: PersonName,
}

/// What a successful register/login/refresh hands back.
#[derive(Debug)]
pub struct AuthSession {
    pub user: User,
    pub access_token: String,
    pub access_expires_at: DateTime<Utc>,
    pub refresh_token: String,
    pub refresh_expires_at: DateTime<Utc>,
}

pub struct ProfileUpdate {
    pub name: Option<PersonName>,
    pub email: Option<Email>,
    /// `(current, new)`: changing the password requires the current one.
    pub password: Option<(String, Password)>,
}

pub struct UsersService {
    db: Db,
    keys: Arc<TokenKeys>,
    clock: SharedClock,
    refresh_ttl: chrono::Duration,
    /// Each user's token version as the edge checks it on every request (see
    /// `kernel::auth::TokenVersions`); shared by every node when it is Redis.
    versions: Arc<dyn Cache>,
}

/// How long a node may trust a cached token version. A bump deletes the entry at once, in the
/// shared cache when there is one; the TTL bounds how long a lost delete (or, without Redis,
/// another node's cache) can keep an ended session alive.
const VERSION_TTL: Duration = Duration::from_secs(30);

/// What a profile change gives back: the user, and a new session when the password changed
/// (every earlier session, this one included, ended).
pub struct ProfileChanged {
    pub user: User,
    pub session: Option<AuthSession>,
}

impl UsersService {
    pub fn new(
        db: Db,
        keys: Arc<TokenKeys>,
        clock: SharedClock,
        refresh_ttl: chrono::Duration,
        versions: Arc<dyn Cache>,
    ) -> Self {
        Self { db, keys, clock, refresh_ttl, versions }
    }

    /// Hands over, a batch at a time, the wishlist rows this service kept before the wishlist
    /// became the cart's: `keep` stores a batch elsewhere, and only then are its rows forgotten
    /// here, so a crash between the two repeats the batch (which `keep` must absorb) and loses
    /// nothing. Answers how many rows were handed over.
    pub async fn hand_over_legacy_wishlist<F, Fut, E>(&self, mut keep: F) -> std::result::Result<u64, E>
    where
        F: FnMut(Vec<(UserId, ProductId, DateTime<Utc>)>) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<(), E>>,
        E: From<sqlx::Error>,
    {
        let mut handed = 0;
        loop {
            let batch = store::legacy_wishlist(&self.db, 500).await?;
            if batch.is_empty() {
                return Ok(handed);
            }
            keep(batch.clone()).await?;
            let mut tx = self.db.begin().await?;
            for (user, product, _) in &batch {
                store::forget_legacy_wishlist(&mut tx, *user, *product).await?;
            }
            tx.commit().await?;
            handed += batch.len() as u64;
        }
    }

    #[tracing::instrument(skip_all, fields(email = %registration.email.as_str()), err(level = "info", Display))]
    pub async fn register(&self, registration: Registration) -> Result<AuthSession> {
        self.create_user(registration, vec![Role::Customer]).await
    }

    /// Creates an account with the given roles (registration, admin bootstrap, demo seed).
    pub async fn create_user(&self, registration: Registration, roles: Vec<Role>) -> Result<AuthSession> {
        let password_hash = hash_password(registration.password).await?;
        let now = self.clock.now();
        let user = User {
            id: UserId::new(),
            email: registration.email.as_str().to_owned(),
            name: registration.name.as_str().to_owned(),
            roles,
            warehouse_ids: Vec::new(),
            created_at: now,
        };
        let mut tx = self.db.begin().await?;
        if let Err(err) = store::insert_user(&mut tx, &user, &password_hash).await {
            return Err(if is_unique_violation(&err) { Error::EmailTaken } else { err.into() });
        }
        events::append(
            &mut tx,
            &UserRegistered {
                user_id: user.id,
                email: user.email.clone(),
                name: user.name.clone(),
                roles: user.roles.clone(),
            },
        )
        .await?;
        let session = self.open_session(&mut tx, user, 0, Uuid::now_v7()).await?;
        tx.commit().await?;
        metrics::counter!("users_registered_total").increment(1);
        Ok(session)
    }

    /// Creates customer accounts in one transaction, without passwords of their own: they hold
    /// the never-matching dummy hash, so nobody can sign in as them until a password is set.
    /// For bulk imports and the checkout benchmark, which would otherwise pay argon2 per account.
    pub async fn import_customers(&self, people: Vec<(Email, PersonName)>) -> Result<Vec<User>> {
        let password_hash = dummy_hash();
        let now = self.clock.now();
        let mut tx = self.db.begin().await?;
        let mut users = Vec::with_capacity(people.len());
        for (email, name) in people {
            let user = User {
                id: UserId::new(),
                email: email.as_str().to_owned(),
                name: name.as_str().to_owned(),
                roles: vec![Role::Customer],
                warehouse_ids: Vec::new(),
                created_at: now,
            };
            if let Err(err) = store::insert_user(&mut tx, &user, password_hash).await {
                return Err(if is_unique_violation(&err) { Error::EmailTaken } else { err.into() });
            }
            let event = UserRegistered {
                user_id: user.id,
                email: user.email.clone(),
                name: user.name.clone(),
                roles: user.roles.clone(),
            };
            events::append(&mut tx, &event).await?;
            users.push(user);
        }
        tx.commit().await?;
        Ok(users)
    }

    #[tracing::instrument(skip_all, err(level = "info", Display))]
    pub async fn login(&self, email: &str, password: &str) -> Result<AuthSession> {
        let now = self.clock.now();
        let email = Email::parse(email).ok();
        // Locked or not, known or not, alike: the lock is per address, so it tells nobody which
        // accounts exist, and no password is tried while it lasts.
        let failures = match &email {
            Some(email) => store::login_failures(&self.db, email.as_str()).await?,
            None => None,
        };
        if let Some(seconds) = lock_remaining(failures.flatten(), now) {
            metrics::counter!("logins_total", "outcome" => "locked").increment(1);
            return Err(Error::SignInLocked(seconds));
        }
        let credentials = match &email {
            Some(email) => store::credentials_by_email(&self.db, email.as_str()).await?,
            None => None,
        };
        // Unknown accounts still pay for one hash verification, so response time does not tell
        // an attacker which e-mails are registered.
        let hash = credentials.as_ref().map(|c| c.password_hash.clone()).unwrap_or_else(|| dummy_hash().to_owned());
        let password_ok = verify_password(password.to_owned(), hash).await;
        let Some(credentials) = credentials.filter(|_| password_ok) else {
            metrics::counter!("logins_total", "outcome" => "failure").increment(1);
            if let Some(email) = &email {
                let (window_start, lock_until) = (now - LOGIN_FAILURE_WINDOW, now + LOGIN_LOCK);
                store::record_login_failure(
                    &self.db,
                    email.as_str(),
                    now,
                    window_start,
                    LOGIN_FAILURES_ALLOWED,
                    lock_until,
                )
                .await?;
            }
            return Err(Error::InvalidCredentials);
        };
        if let (Some(_), Some(email)) = (failures, &email) {
            store::clear_login_failures(&self.db, email.as_str()).await?;
        }
        // Told only to whoever knows the password.
        if credentials.disabled {
            return Err(Error::AccountDisabled);
        }
        let mut tx = self.db.begin().await?;
        let session = self.open_session(&mut tx, credentials.user, credentials.token_version, Uuid::now_v7()).await?;
        tx.commit().await?;
        metrics::counter!("logins_total", "outcome" => "success").increment(1);
        Ok(session)
    }

    /// Exchanges a refresh token for a new pair. Each refresh token works once; presenting a
    /// used one revokes its whole family (the session), since one of the two holders is a thief.
    #[tracing::instrument(skip_all, err(level = "info", Display))]
    pub async fn refresh(&self, refresh_token: &str) -> Result<AuthSession> {
        let now = self.clock.now();
        let mut tx = self.db.begin().await?;
        let Some(row) = store::refresh_token_by_hash(&mut tx, &emporium_kernel::sha256_hex(refresh_token)).await?
        else {
            return Err(Error::InvalidRefreshToken);
        };
        let stored = StoredRefreshToken {
            expires_at: row.expires_at,
            used: row.used_at.is_some(),
            revoked: row.revoked_at.is_some(),
        };
        match decide_refresh(&stored, now) {
            RefreshDecision::Rotate => {}
            RefreshDecision::ReuseDetected => {
                tracing::warn!(user_id = %row.user_id, "refresh token reused; revoking its session");
                store::revoke_family(&mut tx, row.family_id, now).await?;
                tx.commit().await?;
                return Err(Error::InvalidRefreshToken);
            }
            RefreshDecision::Expired | RefreshDecision::Revoked => {
                return Err(Error::InvalidRefreshToken);
            }
        }
        if !store::mark_refresh_token_used(&mut tx, row.id, now).await? {
            return Err(Error::InvalidRefreshToken);
        }
        // Roles are read afresh so a grant takes effect at the next refresh.
        let credentials = store::credentials_in_tx(&mut tx, row.user_id).await?.ok_or(Error::InvalidRefreshToken)?;
        if credentials.disabled {
            return Err(Error::InvalidRefreshToken);
        }
        let session = self.open_session(&mut tx, credentials.user, credentials.token_version, row.family_id).await?;
        tx.commit().await?;
        Ok(session)
    }

    /// Ends the session the refresh token belongs to, and every access token of its user at
    /// once (tokens do not name their session: the user's other sessions get new access tokens
    /// at their next refresh). Unknown tokens are ignored: logging out twice is not an error.
    #[tracing::instrument(skip_all, err(level = "info", Display))]
    pub async fn logout(&self, refresh_token: &str) -> Result<()> {
        let now = self.clock.now();
        let mut tx = self.db.begin().await?;
        let Some(row) = store::refresh_token_by_hash(&mut tx, &emporium_kernel::sha256_hex(refresh_token)).await?
        else {
            return Ok(());
        };
        store::revoke_family(&mut tx, row.family_id, now).await?;
        store::bump_token_version(&mut tx, row.user_id, now).await?;
        tx.commit().await?;
        self.forget_version(row.user_id).await;
        Ok(())
    }

    /// The user's current token version, or `None` when they may not sign in (disabled, gone):
    /// what the edge compares every access token with. Cached; every bump deletes the entry.
    pub async fn token_version(&self, user: UserId) -> Result<Option<i64>> {
        let key = version_key(user);
        if let Some(cached) = self.versions.get(&key).await
            && let Ok(cached) = serde_json::from_slice::<Option<i64>>(&cached)
        {
            return Ok(cached);
        }
        let version = store::live_token_version(&self.db, user).await?;
        let encoded = serde_json::to_vec(&version).expect("an optional integer encodes");
        self.versions.set(&key, encoded, VERSION_TTL).await;
        Ok(version)
    }

    /// After a bump committed: the next request of the user reads the new version.
    async fn forget_version(&self, user: UserId) {
        self.versions.delete(&version_key(user)).await;
    }

    /// Disables (no sign-in, no refresh, every token refused at once) or enables an account.
    #[tracing::instrument(skip_all, fields(user_id = %id), err(level = "info", Display))]
    pub async fn set_disabled(&self, id: UserId, disabled: bool, changed_by: UserId) -> Result<User> {
        if disabled && id == changed_by {
            return Err(Error::DisablingSelf);
        }
        let now = self.clock.now();
        let mut tx = self.db.begin().await?;
        if store::set_disabled(&mut tx, id, disabled.then_some(now), now).await? == 0 {
            return Err(Error::UserNotFound);
        }
        if disabled {
            store::revoke_all_for_user(&mut tx, id, now).await?;
            store::bump_token_version(&mut tx, id, now).await?;
        }
        let user = store::user_in_tx(&mut tx, id).await?.ok_or(Error::UserNotFound)?;
        tx.commit().await?;
        self.forget_version(id).await;
        tracing::info!(user_id = %id, disabled, by = %changed_by, "account status changed");
        Ok(user)
    }

    pub async fn user(&self, id: UserId) -> Result<User> {
        store::credentials_by_id(&self.db, id).await?.map(|c| c.user).ok_or(Error::UserNotFound)
    }

    #[tracing::instrument(skip_all, fields(user_id = %id), err(level = "info", Display))]
    pub async fn update_profile(&self, id: UserId, update: ProfileUpdate) -> Result<ProfileChanged> {
        let credentials = store::credentials_by_id(&self.db, id).await?.ok_or(Error::UserNotFound)?;
        let new_hash = match update.password {
            Some((current, new)) => {
                let email = update.email.as_ref().map_or(credentials.user.email.as_str(), Email::as_str);
                if new.resembles(email) {
                    return Err(ApiError::invalid_field("password", "must not be your e-mail address").into());
                }
                if !verify_password(current, credentials.password_hash.clone()).await {
                    return Err(Error::WrongCurrentPassword);
                }
                Some(hash_password(new).await?)
            }
            None => None,
        };
        let now = self.clock.now();
        let mut tx = self.db.begin().await?;
        let changes = store::ProfileChanges {
            name: update.name.as_ref().map(PersonName::as_str),
            email: update.email.as_ref().map(Email::as_str),
            password_hash: new_hash.as_deref(),
        };
        if let Err(err) = store::update_profile(&mut tx, id, &changes, now).await {
            return Err(if is_unique_violation(&err) { Error::EmailTaken } else { err.into() });
        }
        if new_hash.is_none() {
            let user = store::user_in_tx(&mut tx, id).await?.ok_or(Error::UserNotFound)?;
            tx.commit().await?;
            return Ok(ProfileChanged { user, session: None });
        }
        // A new password ends every session and every access token; the caller gets a new one.
        store::revoke_all_for_user(&mut tx, id, now).await?;
        store::bump_token_version(&mut tx, id, now).await?;
        let credentials = store::credentials_in_tx(&mut tx, id).await?.ok_or(Error::UserNotFound)?;
        let session =
            self.open_session(&mut tx, credentials.user.clone(), credentials.token_version, Uuid::now_v7()).await?;
        tx.commit().await?;
        self.forget_version(id).await;
        Ok(ProfileChanged { user: credentials.user, session: Some(session) })
    }

    #[tracing::instrument(skip_all, fields(user_id = %id), err(level = "info", Display))]
    pub async fn set_roles(&self, id: UserId, roles: &[Role], changed_by: UserId) -> Result<User> {
        let roles = normalise_roles(roles).map_err(|m| ApiError::invalid_field("roles", m))?;
        let mut tx = self.db.begin().await?;
        if store::set_roles(&mut tx, id, &roles, self.clock.now()).await? == 0 {
            return Err(Error::UserNotFound);
        }
        events::append(&mut tx, &UserRolesChanged { user_id: id, roles: roles.clone(), changed_by }).await?;
        // Tokens carry roles: those issued before must not keep a revoked one.
        store::bump_token_version(&mut tx, id, self.clock.now()).await?;
        let user = store::user_in_tx(&mut tx, id).await?.ok_or(Error::UserNotFound)?;
        tx.commit().await?;
        self.forget_version(id).await;
        Ok(user)
    }

    /// Assigns a member of staff to `warehouses` (replacing earlier assignments; duplicates
    /// dropped). Their access tokens end at once; the next carries the new set.
    #[tracing::instrument(skip_all, fields(user_id = %id), err(level = "info", Display))]
    pub async fn set_warehouses(&self, id: UserId, warehouses: &[WarehouseId], changed_by: UserId) -> Result<User> {
        let mut warehouses = warehouses.to_vec();
        warehouses.sort();
        warehouses.dedup();
        let now = self.clock.now();
        let mut tx = self.db.begin().await?;
        if store::set_warehouses(&mut tx, id, &warehouses, now).await? == 0 {
            return Err(Error::UserNotFound);
        }
        store::bump_token_version(&mut tx, id, now).await?;
        let user = store::user_in_tx(&mut tx, id).await?.ok_or(Error::UserNotFound)?;
        tx.commit().await?;
        self.forget_version(id).await;
        tracing::info!(user_id = %id, warehouses = warehouses.len(), by = %changed_by, "staff warehouses assigned");
        Ok(user)
    }

    /// Bootstraps an administrator: creates the account, or grants `admin` to an existing one
    /// (its password is left alone). Returns the user and whether it was created.
    pub async fn ensure_admin(&self, registration: Registration) -> Result<(User, bool)> {
        let email = registration.email.as_str().to_owned();
        match self.create_user(registration, vec![Role::Admin, Role::Customer]).await {
            Ok(session) => Ok((session.user, true)),
            Err(Error::EmailTaken) => {
                let existing = store::credentials_by_email(&self.db, &email).await?.ok_or(Error::UserNotFound)?;
                let mut roles = existing.user.roles.clone();
                roles.push(Role::Admin);
                let user = self.set_roles(existing.user.id, &roles, existing.user.id).await?;
                Ok((user, false))
            }
            Err(err) => Err(err),
        }
    }

    pub async fn user_by_email(&self, email: &Email) -> Result<Option<User>> {
        Ok(store::credentials_by_email(&self.db, email.as_str()).await?.map(|c| c.user))
    }

    pub async fn count_users(&self) -> Result<i64> {
        Ok(store::count_users(&self.db).await?)
    }

    pub async fn purge_expired_tokens(&self) -> Result<u64> {
        Ok(store::delete_expired_refresh_tokens(&self.db, self.clock.now()).await?)
    }

    // --- address book --------------------------------------------------------------------------

    pub async fn addresses(&self, user_id: UserId) -> Result<Vec<Address>> {
        Ok(store::list_addresses(&self.db, user_id).await?)
    }

    pub async fn address(&self, user_id: UserId, id: AddressId) -> Result<Address> {
        store::address(&self.db, user_id, id).await?.ok_or(Error::AddressNotFound)
    }

    pub async fn default_address(&self, user_id: UserId) -> Result<Option<Address>> {
        Ok(store::default_address(&self.db, user_id).await?)
    }

    #[tracing::instrument(skip_all, fields(user_id = %user_id), err(level = "info", Display))]
    pub async fn add_address(&self, user_id: UserId, mut input: AddressInput) -> Result<Address> {
        let id = AddressId::new();
        let mut tx = self.db.begin().await?;
        let count = store::count_addresses(&mut tx, user_id).await?;
        if count >= MAX_ADDRESSES {
            return Err(Error::AddressBookFull);
        }
        // The first address is the default whatever the client said.
        input.is_default |= count == 0;
        if input.is_default {
            store::clear_default(&mut tx, user_id).await?;
        }
        store::insert_address(&mut tx, id, user_id, &input, self.clock.now()).await?;
        tx.commit().await?;
        self.address(user_id, id).await
    }

    #[tracing::instrument(skip_all, fields(user_id = %user_id, address_id = %id), err(level = "info", Display))]
    pub async fn replace_address(&self, user_id: UserId, id: AddressId, input: AddressInput) -> Result<Address> {
        let current = self.address(user_id, id).await?;
        if current.is_default && !input.is_default {
            return Err(Error::DefaultAddressRequired);
        }
        let mut tx = self.db.begin().await?;
        if input.is_default && !current.is_default {
            store::clear_default(&mut tx, user_id).await?;
        }
        if store::replace_address(&mut tx, id, user_id, &input).await? == 0 {
            return Err(Error::AddressNotFound);
        }
        tx.commit().await?;
        self.address(user_id, id).await
    }

    #[tracing::instrument(skip_all, fields(user_id = %user_id, address_id = %id), err(level = "info", Display))]
    pub async fn delete_address(&self, user_id: UserId, id: AddressId) -> Result<()> {
        let mut tx = self.db.begin().await?;
        match store::delete_address(&mut tx, user_id, id).await? {
            None => return Err(Error::AddressNotFound),
            Some(true) => {
                store::promote_oldest_to_default(&mut tx, user_id).await?;
            }
            Some(false) => {}
        }
        tx.commit().await?;
        Ok(())
    }

    // --- tokens ---------------------------------------------------------------------------------

    async fn open_session(&self, tx: &mut Tx, user: User, version: i64, family_id: Uuid) -> Result<AuthSession> {
        let now = self.clock.now();
        let access = self.keys.issue(user.id, &user.roles, &user.warehouse_ids, version, now)?;
        let refresh_token = emporium_kernel::random_token(32);
        let refresh_expires_at = now + self.refresh_ttl;
        let token_hash = emporium_kernel::sha256_hex(&refresh_token);
        store::insert_refresh_token(
            tx,
            &store::NewRefreshToken {
                id: Uuid::now_v7(),
                user_id: user.id,
                family_id,
                token_hash: &token_hash,
                issued_at: now,
                expires_at: refresh_expires_at,
            },
        )
        .await?;
        Ok(AuthSession {
            user,
            access_token: access.token,
            access_expires_at: access.expires_at,
            refresh_token,
            refresh_expires_at,
        })
    }
}

fn version_key(user: UserId) -> String {
    format!("users:token-version:{user}")
}

#[async_trait::async_trait]
impl TokenVersions for UsersService {
    async fn current(&self, user: UserId) -> std::result::Result<Option<i64>, String> {
        self.token_version(user).await.map_err(|err| format!("{err:#}"))
    }
}

/// Argon2id with the crate's defaults (OWASP: m=19 MiB, t=2, p=1), off the async threads.
async fn hash_password(password: Password) -> Result<String> {
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.expose().as_bytes())
            .map(|hash| hash.to_string())
            .map_err(|e| Error::Hashing(e.to_string()))
    })
    .await
    .map_err(|e| Error::Hashing(e.to_string()))?
}

async fn verify_password(password: String, hash: String) -> bool {
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash)
            .map(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false)
}

fn dummy_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        let random = emporium_kernel::random_token(24);
        Argon2::default().hash_password(random.as_bytes()).map(|h| h.to_string()).unwrap_or_default()
    })
}
