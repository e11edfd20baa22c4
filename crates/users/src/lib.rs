//! The users service: accounts, credentials (argon2id), access and rotating refresh tokens,
//! roles, and the address book. Owns the `users`, `refresh_tokens` and `addresses` tables.

pub mod client;
pub mod events;
pub mod http;
pub mod model;
pub mod service;
mod store;

pub use client::UsersClient;
pub use service::{UsersError, UsersService};

use emporium_kernel::db::ServiceMigrations;

/// The service name: its database file, PostgreSQL schema and event source.
pub const SERVICE: &str = "users";

pub fn migrations() -> ServiceMigrations {
    ServiceMigrations {
        sqlite: sqlx::migrate!("./migrations/sqlite"),
        postgres: sqlx::migrate!("./migrations/postgres"),
    }
}
