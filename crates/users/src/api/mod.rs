//! What other services may use of users: the client trait, the types it carries, its error, the
//! events users emits, and [`AfterSignIn`], which another service implements to act on a
//! sign-in. Everything the client carries is serialisable, so the same trait can be implemented
//! over HTTP; today the in-process implementation is the service itself.

pub mod events;
mod local;

pub use crate::model::{Address, User};
use emporium_kernel::ids::{AddressId, UserId};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// How other services reach users (checkout reads the shipping address, carts and search the
/// default address).
#[async_trait::async_trait]
pub trait UsersApi: Send + Sync {
    async fn user(&self, id: UserId) -> Result<Option<User>, UsersError>;

    /// One of the user's addresses; `None` when it is not theirs or does not exist.
    async fn address(&self, user_id: UserId, id: AddressId) -> Result<Option<Address>, UsersError>;

    /// The user's default address, if they have one.
    async fn default_address(&self, user_id: UserId) -> Result<Option<Address>, UsersError>;
}

/// A users client: in this process or (later) over HTTP.
pub type UsersClient = Arc<dyn UsersApi>;

/// What else happens when a shopper signs in: the cart service merges the guest cart they filled
/// before (API.md: "also done at login when the header is sent"). Defined here and implemented
/// by the cart, so the users service depends on no other service.
#[async_trait::async_trait]
pub trait AfterSignIn: Send + Sync {
    /// `guest_cart` is the `X-Cart-Token` header as sent, not yet checked. Signing in must not
    /// fail because of what this does, so it reports nothing back.
    async fn signed_in(&self, user: UserId, guest_cart: &str);
}

/// Why a users call failed, as a caller can act on it.
#[derive(Clone, Debug, PartialEq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "error", rename_all = "snake_case")]
pub enum UsersError {
    /// Nothing the caller sent is wrong: the users service's storage failed (logged where it
    /// happened). Trying again later may work.
    #[error("{message}")]
    Unavailable { message: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_crosses_a_process_as_json() {
        let address = Address {
            id: AddressId::new(),
            user_id: UserId::new(),
            label: Some("home".into()),
            line1: "1 Main St".into(),
            line2: None,
            city: "Berlin".into(),
            region: None,
            postal_code: "10115".into(),
            country: "DE".into(),
            lat: Some(emporium_kernel::geo::Latitude::parse(52.5).unwrap()),
            lon: Some(emporium_kernel::geo::Longitude::parse(13.4).unwrap()),
            is_default: true,
            created_at: chrono::Utc::now(),
        };
        let back: Address = serde_json::from_str(&serde_json::to_string(&address).unwrap()).unwrap();
        assert_eq!(back, address);
        let err = UsersError::Unavailable { message: "storage failed".into() };
        assert_eq!(serde_json::from_value::<UsersError>(serde_json::to_value(&err).unwrap()).unwrap(), err);
    }
}
