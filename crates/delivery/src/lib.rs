//! The delivery service (seed 003's "assign delivery partner"): carriers with a service area
//! (a radius around their base, or postal prefixes), a capacity of deliveries in hand and the
//! largest order they take. Every warehouse order becomes a delivery job, assigned to the partner
//! that serves both its warehouse and its address and has room, or left waiting until one does.
//! Owns the `delivery_partners` and `delivery_jobs` tables.

pub mod api;
pub mod http;
pub mod model;
pub mod service;
mod store;

pub use service::DeliveryService;

use emporium_kernel::db::ServiceMigrations;

pub const SERVICE: &str = "delivery";

pub fn migrations() -> ServiceMigrations {
    ServiceMigrations {
        sqlite: sqlx::migrate!("./migrations/sqlite"),
        postgres: sqlx::migrate!("./migrations/postgres"),
    }
}
