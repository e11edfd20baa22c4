//! The inventory service: warehouses, stock per (product, warehouse) with the invariant
//! on_hand = available + reserved + allocated kept by the database, all-or-nothing reservations
//! that expire, a ledger of every movement, and deliverability from the nearest warehouses.
//! Owns the `warehouses`, `stock`, `reservations`, `reservation_lines` and `stock_ledger` tables.

pub mod api;
pub mod http;
pub mod model;
pub mod service;
mod store;

pub use service::InventoryService;
pub use store::LedgerRow;

use emporium_kernel::db::ServiceMigrations;

pub const SERVICE: &str = "inventory";

pub fn migrations() -> ServiceMigrations {
    ServiceMigrations {
        sqlite: sqlx::migrate!("./migrations/sqlite"),
        postgres: sqlx::migrate!("./migrations/postgres"),
    }
}
