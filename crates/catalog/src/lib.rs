//! The catalog service: categories with typed attribute definitions (inherited down the tree),
//! products whose attributes are validated against their category, and reviews with ratings.
//! Owns the `categories`, `products` and `reviews` tables.

pub mod api;
pub mod consumers;
pub mod http;
pub mod model;
pub mod service;
mod store;

pub use service::CatalogService;

use emporium_kernel::db::ServiceMigrations;

pub const SERVICE: &str = "catalog";

pub fn migrations() -> ServiceMigrations {
    ServiceMigrations {
        sqlite: sqlx::migrate!("./migrations/sqlite"),
        postgres: sqlx::migrate!("./migrations/postgres"),
    }
}
