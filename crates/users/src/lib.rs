//! The users service: accounts, credentials (argon2id), access and rotating refresh tokens,
//! roles and the address book. Owns the `users`, `refresh_tokens`, `addresses` and
//! `login_failures` tables. It depends on no other service: those that
//! need it call it, and the one thing it sets off elsewhere (the cart merge at login) goes through
//! its own [`api::AfterSignIn`] trait. Its old `wishlist_items` table only waits for the binary to hand
//! its rows to the cart service, which owns the wishlist now.

pub mod api;
pub mod http;
pub mod model;
pub mod service;
mod store;

pub use service::UsersService;

use emporium_kernel::db::ServiceMigrations;

/// The service name: its database file, PostgreSQL schema and event source.
pub const SERVICE: &str = "users";

pub fn migrations() -> ServiceMigrations {
    ServiceMigrations {
        sqlite: sqlx::migrate!("./migrations/sqlite"),
        postgres: sqlx::migrate!("./migrations/postgres"),
    }
}
