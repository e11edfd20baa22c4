//! The cart service: one cart per user and per guest token, stored in SQL or Redis, re-priced
//! and stock-checked on every read, with coupons. Owns the `carts`, `cart_lines`, `coupons` and
//! `coupon_redemptions` tables (and `<prefix>:cart:*` keys in Redis).

pub mod client;
pub mod events;
pub mod http;
pub mod model;
pub mod service;
pub mod store;

pub use client::CartClient;
pub use service::{CartError, CartService, ShipTo};

use emporium_kernel::db::ServiceMigrations;

pub const SERVICE: &str = "cart";

pub fn migrations() -> ServiceMigrations {
    ServiceMigrations {
        sqlite: sqlx::migrate!("./migrations/sqlite"),
        postgres: sqlx::migrate!("./migrations/postgres"),
    }
}
