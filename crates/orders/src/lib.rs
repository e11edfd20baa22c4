//! The order service: the checkout saga (reserve → pay → confirm, or compensate), the order
//! state machine with its history, warehouse orders (one per warehouse), cancel and return.
//! Owns the `orders`, `order_lines`, `order_history` and `warehouse_orders` tables.

pub mod api;
pub mod consumers;
pub mod http;
pub mod model;
pub mod service;
mod store;

pub use service::{OrdersError, OrdersService};

use emporium_kernel::db::ServiceMigrations;

pub const SERVICE: &str = "orders";

pub fn migrations() -> ServiceMigrations {
    ServiceMigrations {
        sqlite: sqlx::migrate!("./migrations/sqlite"),
        postgres: sqlx::migrate!("./migrations/postgres"),
    }
}
