//! The Emporium kernel: the small set of mechanisms every service shares, written once.
//!
//! Nothing here knows about users, products or orders. Services depend on the kernel and on each
//! other's public clients, never on each other's internals.

pub mod auth;
pub mod blob;
pub mod cache;
pub mod clock;
pub mod config;
pub mod db;
pub mod error;
pub mod events;
pub mod geo;
pub mod http;
pub mod idempotency;
pub mod ids;
pub mod money;
pub mod ratelimit;
pub mod storage;
pub mod telemetry;
#[cfg(feature = "test-support")]
pub mod testing;
pub mod validate;

pub use error::{ApiError, ApiResult, ErrorCode, FieldError};

/// A URL-safe random token of `bytes` random bytes (secrets, refresh tokens, cart tokens).
pub fn random_token(bytes: usize) -> String {
    use base64::Engine;
    use rand::RngExt;
    let mut buf = vec![0u8; bytes];
    rand::rng().fill(&mut buf[..]);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// SHA-256 of `value` as lowercase hex; stored instead of bearer secrets (refresh tokens) so a
/// database leak does not leak usable tokens.
pub fn sha256_hex(value: impl AsRef<[u8]>) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(value.as_ref());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}
