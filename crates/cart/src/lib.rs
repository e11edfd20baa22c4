//! The cart service: one cart per user and per guest token, stored in SQL or Redis, re-priced
//! and stock-checked on every read, with coupons. Owns the `carts`, `cart_lines`, `coupons` and
//! `coupon_redemptions` tables (and `<prefix>:cart:*` keys in Redis), and the wishlist
//! (`wishlist_items`): products kept for later, moved into the cart in one step.

pub mod api;
pub mod http;
pub mod model;
pub mod service;
pub mod store;
pub mod wishlist;

pub use service::CartService;

use emporium_kernel::db::ServiceMigrations;

pub const SERVICE: &str = "cart";

pub fn migrations() -> ServiceMigrations {
    ServiceMigrations {
        sqlite: sqlx::migrate!("./migrations/sqlite"),
        postgres: sqlx::migrate!("./migrations/postgres"),
    }
}
