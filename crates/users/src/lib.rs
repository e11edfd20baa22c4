//! The users service: accounts, credentials (argon2id), access and rotating refresh tokens,
//! roles, the address book and the wishlist. Owns the `users`, `refresh_tokens`, `addresses` and
//! `wishlist_items` tables.

pub mod client;
pub mod events;
pub mod http;
pub mod model;
pub mod service;
mod store;
pub mod wishlist;

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
