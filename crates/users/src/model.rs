//! Users domain: parsed e-mails, passwords, names and addresses, and the refresh-token rotation
//! rule. Pure: no I/O, so every rule here is unit-tested.

use chrono::{DateTime, Utc};
use emporium_kernel::auth::Role;
use emporium_kernel::geo::Destination;
pub use emporium_kernel::geo::{GeoPoint, Latitude, Longitude};
use emporium_kernel::ids::{AddressId, UserId, WarehouseId};
use serde::{Deserialize, Serialize};

/// A syntactically valid, normalised (trimmed, lower-cased) e-mail address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Email, &'static str> {
        let email = raw.trim().to_lowercase();
        if email.is_empty() {
            return Err("must not be empty");
        }
        if email.len() > 254 {
            return Err("must be at most 254 characters");
        }
        let Some((local, domain)) = email.split_once('@') else {
            return Err("must be an e-mail address like name@example.com");
        };
        let local_ok = !local.is_empty()
            && local.len() <= 64
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..")
            && local.chars().all(|c| c.is_alphanumeric() || "!#$%&'*+/=?^_`{|}~.-".contains(c));
        let domain_ok = domain.contains('.')
            && domain.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.chars().all(|c| c.is_alphanumeric() || c == '-')
            });
        if !local_ok || !domain_ok {
            return Err("must be an e-mail address like name@example.com");
        }
        Ok(Email(email))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A password that meets the policy. Never logged: `Debug` hides it.
#[derive(Clone)]
pub struct Password(String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password([redacted])")
    }
}

pub const PASSWORD_MIN_CHARS: usize = 8;
/// Argon2 cost grows with input; an upper bound keeps a login from being a CPU bomb.
pub const PASSWORD_MAX_CHARS: usize = 128;

const COMMON_PASSWORDS: &[&str] = &[
    "password",
    "password1",
    "password123",
    "12345678",
    "123456789",
    "1234567890",
    "qwertyuiop",
    "qwerty123",
    "iloveyou",
    "11111111",
    "00000000",
    "abc12345",
    "letmein1",
    "welcome1",
    "admin123",
    "passw0rd",
];

impl Password {
    pub fn parse(raw: &str) -> Result<Password, String> {
        let chars = raw.chars().count();
        if chars < PASSWORD_MIN_CHARS {
            return Err(format!("must be at least {PASSWORD_MIN_CHARS} characters"));
        }
        if chars > PASSWORD_MAX_CHARS {
            return Err(format!("must be at most {PASSWORD_MAX_CHARS} characters"));
        }
        if raw.trim().is_empty() {
            return Err("must not be only spaces".into());
        }
        // A NUL or a line break in a password is a client's bug or an attack on whatever
        // stores or compares it next, never something a person typed.
        if raw.chars().any(char::is_control) {
            return Err("must not contain control characters".into());
        }
        let first = raw.chars().next();
        if raw.chars().all(|c| Some(c) == first) {
            return Err("must not repeat a single character".into());
        }
        if COMMON_PASSWORDS.contains(&raw.to_lowercase().as_str()) {
            return Err("is too common; choose another".into());
        }
        Ok(Password(raw.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the password is the account's e-mail address, or its part before the `@`: the
    /// first thing anyone guesses.
    pub fn resembles(&self, email: &str) -> bool {
        let password = self.0.trim().to_lowercase();
        let email = email.trim().to_lowercase();
        let local = email.split('@').next().unwrap_or_default();
        password == email || password == local
    }
}

/// A display name: 1..=100 characters, no control characters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct PersonName(String);

impl PersonName {
    pub fn parse(raw: &str) -> Result<PersonName, String> {
        emporium_kernel::validate::text(raw, 1, 100, false).map(PersonName)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: UserId,
    pub email: String,
    pub name: String,
    pub roles: Vec<Role>,
    /// Where a member of warehouse staff works (admins assign; carried by access tokens).
    pub warehouse_ids: Vec<WarehouseId>,
    pub created_at: DateTime<Utc>,
}

/// Normalises a role set: sorted, without duplicates, never the internal service role.
pub fn normalise_roles(roles: &[Role]) -> Result<Vec<Role>, String> {
    if roles.is_empty() {
        return Err("must name at least one role".into());
    }
    if let Some(bad) = roles.iter().find(|r| !Role::GRANTABLE.contains(r)) {
        return Err(format!("{} cannot be granted", bad.as_str()));
    }
    let mut roles = roles.to_vec();
    roles.sort();
    roles.dedup();
    Ok(roles)
}

/// A validated address as entered by the user.
#[derive(Clone, Debug, PartialEq)]
pub struct AddressInput {
    pub label: Option<String>,
    pub line1: String,
    pub line2: Option<String>,
    pub city: String,
    pub region: Option<String>,
    pub postal_code: String,
    /// ISO 3166-1 alpha-2, upper case.
    pub country: String,
    pub location: Option<GeoPoint>,
    pub is_default: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    pub id: AddressId,
    pub user_id: UserId,
    pub label: Option<String>,
    pub line1: String,
    pub line2: Option<String>,
    pub city: String,
    pub region: Option<String>,
    pub postal_code: String,
    pub country: String,
    pub lat: Option<Latitude>,
    pub lon: Option<Longitude>,
    pub is_default: bool,
    pub created_at: DateTime<Utc>,
}

impl Address {
    /// Where this address is, as warehouses' coverage is matched (checkout does the same with its
    /// snapshot): its point when known, and its postal code.
    pub fn destination(&self) -> Destination {
        let point = match (self.lat, self.lon) {
            (Some(lat), Some(lon)) => Some(GeoPoint { lat, lon }),
            _ => None,
        };
        Destination { point, postal_code: Some(self.postal_code.clone()) }
    }
}

pub fn country_code(raw: &str) -> Result<String, &'static str> {
    let code = raw.trim().to_ascii_uppercase();
    if code.len() == 2 && code.chars().all(|c| c.is_ascii_uppercase()) {
        Ok(code)
    } else {
        Err("must be an ISO 3166-1 alpha-2 country code such as US or DE")
    }
}

/// What the store knows about a presented refresh token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRefreshToken {
    pub expires_at: DateTime<Utc>,
    pub used: bool,
    pub revoked: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefreshDecision {
    /// Valid: mark it used and issue the next token of the same family.
    Rotate,
    /// Already rotated once: someone replays an old token, so the whole family is revoked.
    ReuseDetected,
    Expired,
    Revoked,
}

/// Failed sign-ins an address may have within [`LOGIN_FAILURE_WINDOW`] before it is locked for
/// [`LOGIN_LOCK`]: enough for a person who mistypes, too few to guess a password (OWASP's
/// authentication cheat sheet: lock temporarily, per account, whatever the client address).
pub const LOGIN_FAILURES_ALLOWED: i64 = 10;
pub const LOGIN_FAILURE_WINDOW: chrono::Duration = chrono::Duration::minutes(15);
pub const LOGIN_LOCK: chrono::Duration = chrono::Duration::minutes(15);

/// Whole seconds until a lock ends (at least 1), or `None` when the address is not locked.
pub fn lock_remaining(locked_until: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Option<u64> {
    let left = locked_until? - now;
    (left > chrono::Duration::zero()).then(|| u64::try_from((left.num_milliseconds() + 999) / 1000).unwrap_or(1).max(1))
}

/// The rotation rule (OAuth 2.0 Security BCP §4.14): every refresh token works once.
pub fn decide_refresh(token: &StoredRefreshToken, now: DateTime<Utc>) -> RefreshDecision {
    if token.revoked {
        RefreshDecision::Revoked
    } else if token.used {
        RefreshDecision::ReuseDetected
    } else if token.expires_at <= now {
        RefreshDecision::Expired
    } else {
        RefreshDecision::Rotate
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    #[test]
    fn emails_are_normalised() {
        assert_eq!(Email::parse("  Alice@Example.COM ").unwrap().as_str(), "alice@example.com");
        assert_eq!(Email::parse("a.b+tag@sub.example.org").unwrap().as_str(), "a.b+tag@sub.example.org");
    }

    #[test]
    fn malformed_emails_are_refused() {
        for bad in [
            "",
            "plain",
            "@example.com",
            "a@",
            "a@b",
            "a@@b.com",
            "a b@c.com",
            "a@-b.com",
            ".a@b.com",
            "a..b@c.com",
            "a@b..com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(Email::parse(&format!("{}@example.com", "a".repeat(65))).is_err());
    }

    #[test]
    fn password_policy() {
        assert!(Password::parse("correct horse").is_ok());
        assert!(Password::parse("short").is_err());
        assert!(Password::parse("aaaaaaaaaa").is_err());
        assert!(Password::parse("Password123").is_err());
        assert!(Password::parse("        ").is_err());
        assert!(Password::parse(&"x1".repeat(65)).is_err());
        assert_eq!(format!("{:?}", Password::parse("correct horse").unwrap()), "Password([redacted])");
        assert!(Password::parse("correct\u{0}horse").is_err());
        assert!(Password::parse("correct\nhorse").is_err());
        let own = Password::parse("Ann.Lee@example.com").unwrap();
        assert!(own.resembles("ann.lee@example.com"));
        assert!(Password::parse("ann.lee.x").unwrap().resembles("ann.lee.x@example.com"));
        assert!(!Password::parse("correct horse").unwrap().resembles("ann.lee@example.com"));
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(PersonName::parse("  Ada Lovelace ").unwrap().as_str(), "Ada Lovelace");
        assert!(PersonName::parse("   ").is_err());
        assert!(PersonName::parse(&"n".repeat(101)).is_err());
        assert!(PersonName::parse("bad\u{0}name").is_err());
        assert!(PersonName::parse("\u{200b}\u{200d}\u{feff}").is_err(), "only zero-width characters");
        assert_eq!(PersonName::parse("\u{200b}Ada\u{200b}").unwrap().as_str(), "\u{200b}Ada\u{200b}");
    }

    #[test]
    fn a_lock_lasts_until_its_end_in_whole_seconds() {
        let now = Utc::now();
        assert_eq!(lock_remaining(None, now), None);
        assert_eq!(lock_remaining(Some(now - chrono::Duration::seconds(1)), now), None);
        assert_eq!(lock_remaining(Some(now), now), None);
        assert_eq!(lock_remaining(Some(now + chrono::Duration::milliseconds(1)), now), Some(1));
        assert_eq!(lock_remaining(Some(now + chrono::Duration::milliseconds(90_500)), now), Some(91));
    }

    #[test]
    fn country_codes() {
        assert_eq!(country_code("de").unwrap(), "DE");
        assert!(country_code("DEU").is_err());
        assert!(country_code("1A").is_err());
    }

    #[test]
    fn roles_are_normalised_and_service_is_never_granted() {
        assert_eq!(
            normalise_roles(&[Role::Seller, Role::Customer, Role::Seller]).unwrap(),
            vec![Role::Customer, Role::Seller]
        );
        assert!(normalise_roles(&[]).is_err());
        assert!(normalise_roles(&[Role::Service]).is_err());
    }

    #[test]
    fn refresh_tokens_rotate_once() {
        let now = Utc::now();
        let fresh = StoredRefreshToken { expires_at: now + Duration::days(1), used: false, revoked: false };
        assert_eq!(decide_refresh(&fresh, now), RefreshDecision::Rotate);
        assert_eq!(
            decide_refresh(&StoredRefreshToken { used: true, ..fresh.clone() }, now),
            RefreshDecision::ReuseDetected
        );
        assert_eq!(
            decide_refresh(&StoredRefreshToken { revoked: true, used: true, ..fresh.clone() }, now),
            RefreshDecision::Revoked
        );
        assert_eq!(decide_refresh(&fresh, now + Duration::days(2)), RefreshDecision::Expired);
    }
}
