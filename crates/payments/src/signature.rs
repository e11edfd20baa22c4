//! Webhook signatures, Stripe's scheme: header `t=<unix seconds>,v1=<hex HMAC-SHA256 of
//! "<t>.<body>">`. The timestamp is signed too, so an old delivery cannot be replayed later.

use hmac::{KeyInit, Mac};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// How far a signed timestamp may be from now.
pub const TOLERANCE_SECS: i64 = 300;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the signature header is missing or malformed")]
    Malformed,
    #[error("the signature does not match the body")]
    Mismatch,
    #[error("the signature is too old or from the future")]
    Expired,
}

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The header value for `body` signed at `timestamp`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let digest = mac(secret, timestamp, body).finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={timestamp},v1={hex}")
}

/// Checks `header` against `body` (constant-time comparison) at `now` (unix seconds).
pub fn verify(secret: &[u8], header: &str, body: &[u8], now: i64) -> Result<(), SignatureError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", hex)) => signatures.push(decode_hex(hex).ok_or(SignatureError::Malformed)?),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    // `abs_diff`: the timestamp is the sender's, and any i64 must compare without overflowing.
    if now.abs_diff(timestamp) > TOLERANCE_SECS.unsigned_abs() {
        return Err(SignatureError::Expired);
    }
    // Several v1 values are allowed while a secret is being rotated.
    if signatures.iter().any(|sig| mac(secret, timestamp, body).verify_slice(sig).is_ok()) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_body_verifies_and_any_change_does_not() {
        let header = sign(b"whsec", 1_700_000_000, b"{\"id\":1}");
        assert_eq!(verify(b"whsec", &header, b"{\"id\":1}", 1_700_000_010), Ok(()));
        assert_eq!(verify(b"whsec", &header, b"{\"id\":2}", 1_700_000_010), Err(SignatureError::Mismatch));
        assert_eq!(verify(b"other", &header, b"{\"id\":1}", 1_700_000_010), Err(SignatureError::Mismatch));
        assert_eq!(verify(b"whsec", &header, b"{\"id\":1}", 1_700_000_000 + 301), Err(SignatureError::Expired));
        assert_eq!(verify(b"whsec", "v1=zz", b"", 0), Err(SignatureError::Malformed));
        assert_eq!(verify(b"whsec", "t=1", b"", 1), Err(SignatureError::Malformed));
        // The sender's timestamp at the ends of i64: refused, not an overflow.
        let oldest = format!("t={},v1=00", i64::MIN);
        assert_eq!(verify(b"whsec", &oldest, b"", 1_700_000_000), Err(SignatureError::Expired));
        let latest = format!("t={},v1=00", i64::MAX);
        assert_eq!(verify(b"whsec", &latest, b"", -1_700_000_000), Err(SignatureError::Expired));
    }

    #[test]
    fn a_rotated_secret_may_sign_alongside_the_old_one() {
        let old = sign(b"old", 10, b"x");
        let new = sign(b"new", 10, b"x");
        let both = format!("{},{}", new, old.split(',').nth(1).unwrap());
        assert_eq!(verify(b"old", &both, b"x", 10), Ok(()));
        assert_eq!(verify(b"new", &both, b"x", 10), Ok(()));
    }
}
