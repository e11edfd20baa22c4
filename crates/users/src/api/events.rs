//! Events the users service emits. Payloads are the contract with consumers: add fields, never
//! rename or remove them without bumping `VERSION`.

use emporium_kernel::auth::Role;
use emporium_kernel::events::DomainEvent;
use emporium_kernel::ids::UserId;
use serde::{Deserialize, Serialize};

/// The source (topic) name of this service's events.
pub const SOURCE: &str = "users";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UserRegistered {
    pub user_id: UserId,
    pub email: String,
    pub name: String,
    pub roles: Vec<Role>,
}

impl DomainEvent for UserRegistered {
    const TYPE: &'static str = "UserRegistered";
    fn aggregate_id(&self) -> String {
        self.user_id.to_string()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UserRolesChanged {
    pub user_id: UserId,
    pub roles: Vec<Role>,
    pub changed_by: UserId,
}

impl DomainEvent for UserRolesChanged {
    const TYPE: &'static str = "UserRolesChanged";
    fn aggregate_id(&self) -> String {
        self.user_id.to_string()
    }
}
