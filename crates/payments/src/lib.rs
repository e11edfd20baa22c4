//! The payments service: charges through a chain of gateways (the built-in sandbox, a
//! Stripe-style HTTP gateway) with fallback on retryable failures; a charge that times out is
//! UNKNOWN and is resolved by asking the gateway, never by charging again; signed webhooks
//! (duplicates harmless); full and partial refunds; reconciliation against the gateways' books.
//! Owns the `payments`, `refunds`, `webhook_events` and the sandbox's `sandbox_*` tables.

pub mod api;
pub mod gateway;
pub mod http;
pub mod model;
pub mod sandbox;
pub mod service;
pub mod signature;
mod store;
pub mod stripe;
#[cfg(feature = "test-support")]
pub mod stripe_server;

pub use service::PaymentsService;

use emporium_kernel::db::ServiceMigrations;

pub const SERVICE: &str = "payments";

pub fn migrations() -> ServiceMigrations {
    ServiceMigrations {
        sqlite: sqlx::migrate!("./migrations/sqlite"),
        postgres: sqlx::migrate!("./migrations/postgres"),
    }
}
