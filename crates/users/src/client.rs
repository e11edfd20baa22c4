//! How other services reach the users service. In all-in-one mode the call is local; in split
//! mode the same methods go over HTTP. Nothing outside this crate touches `UsersService` except
//! through this client (the binary wires it).

use crate::model::{Address, User};
use crate::service::{UsersError, UsersService};
use emporium_kernel::ids::{AddressId, UserId};
use std::sync::Arc;

#[derive(Clone)]
pub enum UsersClient {
    Local(Arc<UsersService>),
}

impl UsersClient {
    pub fn local(service: Arc<UsersService>) -> Self {
        UsersClient::Local(service)
    }

    pub async fn user(&self, id: UserId) -> Result<Option<User>, UsersError> {
        match self {
            UsersClient::Local(svc) => match svc.user(id).await {
                Ok(user) => Ok(Some(user)),
                Err(UsersError::UserNotFound) => Ok(None),
                Err(err) => Err(err),
            },
        }
    }

    /// One of the user's addresses (checkout ships to it).
    pub async fn address(&self, user_id: UserId, id: AddressId) -> Result<Option<Address>, UsersError> {
        match self {
            UsersClient::Local(svc) => match svc.address(user_id, id).await {
                Ok(address) => Ok(Some(address)),
                Err(UsersError::AddressNotFound) => Ok(None),
                Err(err) => Err(err),
            },
        }
    }

    /// The user's default address (search uses it to answer "can this be delivered to me").
    pub async fn default_address(&self, user_id: UserId) -> Result<Option<Address>, UsersError> {
        match self {
            UsersClient::Local(svc) => svc.default_address(user_id).await,
        }
    }
}
