//! The in-process client: the service itself, its errors narrowed to what a caller may see.

use super::{Address, User, UsersApi, UsersError};
use crate::service::{self, UsersService};
use emporium_kernel::ids::{AddressId, UserId};

#[async_trait::async_trait]
impl UsersApi for UsersService {
    async fn user(&self, id: UserId) -> Result<Option<User>, UsersError> {
        match UsersService::user(self, id).await {
            Ok(user) => Ok(Some(user)),
            Err(service::Error::UserNotFound) => Ok(None),
            Err(err) => Err(err.into()),
        }
    }

    async fn address(&self, user_id: UserId, id: AddressId) -> Result<Option<Address>, UsersError> {
        match UsersService::address(self, user_id, id).await {
            Ok(address) => Ok(Some(address)),
            Err(service::Error::AddressNotFound) => Ok(None),
            Err(err) => Err(err.into()),
        }
    }

    async fn default_address(&self, user_id: UserId) -> Result<Option<Address>, UsersError> {
        Ok(UsersService::default_address(self, user_id).await?)
    }
}

impl From<service::Error> for UsersError {
    fn from(err: service::Error) -> Self {
        let message = match err {
            service::Error::Store(_) | service::Error::Hashing(_) | service::Error::Api(_) => {
                emporium_kernel::error::internal_failure(&err)
            }
            _ => err.to_string(),
        };
        UsersError::Unavailable { message }
    }
}
