//! Money: integer minor units plus an ISO 4217 currency. Never floats; arithmetic is checked and
//! refuses to mix currencies.

use serde::{Deserialize, Serialize};

/// An upper-case ISO 4217 code such as `USD`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency([u8; 3]);

impl Currency {
    pub const USD: Currency = Currency(*b"USD");
    pub const EUR: Currency = Currency(*b"EUR");

    pub fn parse(raw: &str) -> Result<Currency, &'static str> {
        let bytes = raw.trim().as_bytes();
        if bytes.len() == 3 && bytes.iter().all(u8::is_ascii_alphabetic) {
            Ok(Currency([bytes[0].to_ascii_uppercase(), bytes[1].to_ascii_uppercase(), bytes[2].to_ascii_uppercase()]))
        } else {
            Err("must be a three-letter ISO 4217 currency code such as USD")
        }
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("currency codes are ASCII")
    }
}

impl std::fmt::Display for Currency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Currency::parse(&raw).map_err(serde::de::Error::custom)
    }
}

impl utoipa::PartialSchema for Currency {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some("ISO 4217 currency code"))
            .examples([serde_json::json!("USD")])
            .into()
    }
}

impl utoipa::ToSchema for Currency {}

/// An amount of money in minor units (cents for USD).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Money {
    /// Integer minor units, e.g. 1999 for $19.99.
    pub amount: i64,
    pub currency: Currency,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("cannot combine {0} with {1}")]
    CurrencyMismatch(Currency, Currency),
    #[error("amount overflow")]
    Overflow,
}

impl Money {
    pub fn new(amount: i64, currency: Currency) -> Self {
        Self { amount, currency }
    }

    pub fn zero(currency: Currency) -> Self {
        Self { amount: 0, currency }
    }

    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        if self.currency != other.currency {
            return Err(MoneyError::CurrencyMismatch(self.currency, other.currency));
        }
        let amount = self.amount.checked_add(other.amount).ok_or(MoneyError::Overflow)?;
        Ok(Money { amount, currency: self.currency })
    }

    pub fn checked_mul(self, quantity: i64) -> Result<Money, MoneyError> {
        let amount = self.amount.checked_mul(quantity).ok_or(MoneyError::Overflow)?;
        Ok(Money { amount, currency: self.currency })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currencies_parse_and_normalise() {
        assert_eq!(Currency::parse("usd").unwrap(), Currency::USD);
        assert!(Currency::parse("US").is_err());
        assert!(Currency::parse("U5D").is_err());
        let m: Money = serde_json::from_str(r#"{"amount": 1999, "currency": "eur"}"#).unwrap();
        assert_eq!(m, Money::new(1999, Currency::EUR));
        assert_eq!(serde_json::to_string(&m).unwrap(), r#"{"amount":1999,"currency":"EUR"}"#);
    }

    #[test]
    fn arithmetic_is_checked() {
        let a = Money::new(150, Currency::USD);
        assert_eq!(a.checked_add(Money::new(50, Currency::USD)).unwrap().amount, 200);
        assert_eq!(
            a.checked_add(Money::new(1, Currency::EUR)),
            Err(MoneyError::CurrencyMismatch(Currency::USD, Currency::EUR))
        );
        assert_eq!(a.checked_mul(3).unwrap().amount, 450);
        assert_eq!(Money::new(i64::MAX, Currency::USD).checked_mul(2), Err(MoneyError::Overflow));
    }
}
