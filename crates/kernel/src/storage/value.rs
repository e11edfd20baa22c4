//! Values crossing the storage layer, one representation for both backends.
//!
//! A parameter becomes a [`Value`] that knows its PostgreSQL type even when it is NULL (a NULL
//! uuid must still be sent as a uuid), and a row's columns come back as values, read with
//! [`FromValue`]. On SQLite, values are stored as the sqlx driver stored them before this
//! layer existed, so databases written by either read the same: uuids as 16-byte blobs,
//! timestamps as RFC 3339 text (`2026-12-07T05:20:00.123456789+00:00`), booleans as integers,
//! JSON as text.

use super::Error;
use chrono::{DateTime, SecondsFormat, Utc};
use postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use uuid::Uuid;

/// What a value is, so a NULL can be typed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Int,
    Real,
    Text,
    Blob,
    Bool,
    Uuid,
    Timestamp,
    Json,
}

impl Kind {
    pub(super) fn postgres_type(self) -> Type {
        match self {
            Kind::Int => Type::INT8,
            Kind::Real => Type::FLOAT8,
            Kind::Text => Type::TEXT,
            Kind::Blob => Type::BYTEA,
            Kind::Bool => Type::BOOL,
            Kind::Uuid => Type::UUID,
            Kind::Timestamp => Type::TIMESTAMPTZ,
            Kind::Json => Type::JSONB,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null(Kind),
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
    Bool(bool),
    Uuid(Uuid),
    Timestamp(DateTime<Utc>),
    Json(serde_json::Value),
}

impl Value {
    pub(super) fn kind(&self) -> Kind {
        match self {
            Value::Null(kind) => *kind,
            Value::Int(_) => Kind::Int,
            Value::Real(_) => Kind::Real,
            Value::Text(_) => Kind::Text,
            Value::Blob(_) => Kind::Blob,
            Value::Bool(_) => Kind::Bool,
            Value::Uuid(_) => Kind::Uuid,
            Value::Timestamp(_) => Kind::Timestamp,
            Value::Json(_) => Kind::Json,
        }
    }

    /// As SQLite stores it (see the module notes).
    pub(super) fn to_sqlite(&self) -> rusqlite::types::Value {
        use rusqlite::types::Value as S;
        match self {
            Value::Null(_) => S::Null,
            Value::Int(v) => S::Integer(*v),
            Value::Real(v) => S::Real(*v),
            Value::Text(v) => S::Text(v.clone()),
            Value::Blob(v) => S::Blob(v.clone()),
            Value::Bool(v) => S::Integer(i64::from(*v)),
            Value::Uuid(v) => S::Blob(v.as_bytes().to_vec()),
            Value::Timestamp(v) => S::Text(v.to_rfc3339_opts(SecondsFormat::AutoSi, false)),
            Value::Json(v) => S::Text(v.to_string()),
        }
    }

    pub(super) fn from_sqlite(value: rusqlite::types::ValueRef<'_>) -> Value {
        use rusqlite::types::ValueRef as S;
        match value {
            S::Null => Value::Null(Kind::Text),
            S::Integer(v) => Value::Int(v),
            S::Real(v) => Value::Real(v),
            S::Text(v) => Value::Text(String::from_utf8_lossy(v).into_owned()),
            S::Blob(v) => Value::Blob(v.to_vec()),
        }
    }

    pub(super) fn from_postgres(row: &postgres::Row, i: usize) -> Result<Value, Error> {
        let ty = row.columns()[i].type_();
        let get = |kind| Error::Decode(format!("column {i} of type {ty} as {kind:?}"));
        Ok(match *ty {
            Type::INT8 => {
                row.try_get::<_, Option<i64>>(i).map_err(|_| get(Kind::Int))?.map_or(Value::Null(Kind::Int), Value::Int)
            }
            Type::INT4 => row
                .try_get::<_, Option<i32>>(i)
                .map_err(|_| get(Kind::Int))?
                .map_or(Value::Null(Kind::Int), |v| Value::Int(v.into())),
            Type::INT2 => row
                .try_get::<_, Option<i16>>(i)
                .map_err(|_| get(Kind::Int))?
                .map_or(Value::Null(Kind::Int), |v| Value::Int(v.into())),
            Type::FLOAT8 => row
                .try_get::<_, Option<f64>>(i)
                .map_err(|_| get(Kind::Real))?
                .map_or(Value::Null(Kind::Real), Value::Real),
            Type::FLOAT4 => row
                .try_get::<_, Option<f32>>(i)
                .map_err(|_| get(Kind::Real))?
                .map_or(Value::Null(Kind::Real), |v| Value::Real(v.into())),
            Type::BOOL => row
                .try_get::<_, Option<bool>>(i)
                .map_err(|_| get(Kind::Bool))?
                .map_or(Value::Null(Kind::Bool), Value::Bool),
            Type::UUID => row
                .try_get::<_, Option<Uuid>>(i)
                .map_err(|_| get(Kind::Uuid))?
                .map_or(Value::Null(Kind::Uuid), Value::Uuid),
            Type::TIMESTAMPTZ => row
                .try_get::<_, Option<DateTime<Utc>>>(i)
                .map_err(|_| get(Kind::Timestamp))?
                .map_or(Value::Null(Kind::Timestamp), Value::Timestamp),
            Type::JSON | Type::JSONB => row
                .try_get::<_, Option<serde_json::Value>>(i)
                .map_err(|_| get(Kind::Json))?
                .map_or(Value::Null(Kind::Json), Value::Json),
            Type::BYTEA => row
                .try_get::<_, Option<Vec<u8>>>(i)
                .map_err(|_| get(Kind::Blob))?
                .map_or(Value::Null(Kind::Blob), Value::Blob),
            _ => row
                .try_get::<_, Option<String>>(i)
                .map_err(|_| get(Kind::Text))?
                .map_or(Value::Null(Kind::Text), Value::Text),
        })
    }
}

/// Sent as the type [`Kind::postgres_type`] names (the statement is run typed, see `postgres`).
impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut postgres::types::private::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Null(_) => Ok(IsNull::Yes),
            Value::Int(v) => v.to_sql(ty, out),
            Value::Real(v) => v.to_sql(ty, out),
            Value::Text(v) => v.to_sql(ty, out),
            Value::Blob(v) => v.to_sql(ty, out),
            Value::Bool(v) => v.to_sql(ty, out),
            Value::Uuid(v) => v.to_sql(ty, out),
            Value::Timestamp(v) => v.to_sql(ty, out),
            Value::Json(v) => v.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        // Each value is sent as its own kind's type; `to_sql` then encodes it as that type.
        true
    }

    to_sql_checked!();
}

/// A statement parameter.
pub trait Param: Sync {
    fn value(&self) -> Value;
}

/// A column read back.
pub trait FromValue: Sized {
    fn from_value(value: Value) -> Result<Self, Error>;
}

fn mismatch<T>(value: &Value, wanted: &str) -> Result<T, Error> {
    Err(Error::Decode(format!("{value:?} is not {wanted}")))
}

macro_rules! param {
    ($ty:ty, $kind:ident, |$v:ident| $make:expr) => {
        impl Param for $ty {
            fn value(&self) -> Value {
                let $v = self;
                $make
            }
        }

        impl Param for Option<$ty> {
            fn value(&self) -> Value {
                match self {
                    Some(v) => v.value(),
                    None => Value::Null(Kind::$kind),
                }
            }
        }
    };
}

param!(i64, Int, |v| Value::Int(*v));
param!(i32, Int, |v| Value::Int((*v).into()));
param!(f64, Real, |v| Value::Real(*v));
param!(bool, Bool, |v| Value::Bool(*v));
param!(String, Text, |v| Value::Text(v.clone()));
param!(&str, Text, |v| Value::Text((*v).to_owned()));
param!(Vec<u8>, Blob, |v| Value::Blob(v.clone()));
param!(Uuid, Uuid, |v| Value::Uuid(*v));
param!(DateTime<Utc>, Timestamp, |v| Value::Timestamp(*v));
param!(serde_json::Value, Json, |v| Value::Json(v.clone()));

impl<T> FromValue for Option<T>
where
    T: FromValue,
{
    fn from_value(value: Value) -> Result<Self, Error> {
        match value {
            Value::Null(_) => Ok(None),
            other => T::from_value(other).map(Some),
        }
    }
}

impl FromValue for i64 {
    fn from_value(value: Value) -> Result<Self, Error> {
        match value {
            Value::Int(v) => Ok(v),
            other => mismatch(&other, "an integer"),
        }
    }
}

impl FromValue for i32 {
    fn from_value(value: Value) -> Result<Self, Error> {
        match value {
            Value::Int(v) => i32::try_from(v).map_err(|_| Error::Decode(format!("{v} does not fit 32 bits"))),
            other => mismatch(&other, "an integer"),
        }
    }
}

impl FromValue for f64 {
    fn from_value(value: Value) -> Result<Self, Error> {
        match value {
            Value::Real(v) => Ok(v),
            Value::Int(v) => Ok(v as f64),
            other => mismatch(&other, "a number"),
        }
    }
}

impl FromValue for bool {
    fn from_value(value: Value) -> Result<Self, Error> {
        match value {
            Value::Bool(v) => Ok(v),
            Value::Int(v) => Ok(v != 0),
            other => mismatch(&other, "a boolean"),
        }
    }
}

impl FromValue for String {
    fn from_value(value: Value) -> Result<Self, Error> {
        match value {
            Value::Text(v) => Ok(v),
            other => mismatch(&other, "text"),
        }
    }
}

impl FromValue for Vec<u8> {
    fn from_value(value: Value) -> Result<Self, Error> {
        match value {
            Value::Blob(v) => Ok(v),
            other => mismatch(&other, "bytes"),
        }
    }
}

impl FromValue for Uuid {
    fn from_value(value: Value) -> Result<Self, Error> {
        match value {
            Value::Uuid(v) => Ok(v),
            Value::Blob(bytes) => Uuid::from_slice(&bytes).map_err(|e| Error::Decode(e.to_string())),
            Value::Text(text) => text.parse().map_err(|e: uuid::Error| Error::Decode(e.to_string())),
            other => mismatch(&other, "a uuid"),
        }
    }
}

impl FromValue for DateTime<Utc> {
    fn from_value(value: Value) -> Result<Self, Error> {
        match value {
            Value::Timestamp(v) => Ok(v),
            Value::Text(text) => parse_sqlite_timestamp(&text),
            other => mismatch(&other, "a timestamp"),
        }
    }
}

impl FromValue for serde_json::Value {
    fn from_value(value: Value) -> Result<Self, Error> {
        match value {
            Value::Json(v) => Ok(v),
            Value::Text(text) => serde_json::from_str(&text).map_err(|e| Error::Decode(e.to_string())),
            other => mismatch(&other, "JSON"),
        }
    }
}

/// Timestamps as SQLite holds them: RFC 3339 (what this layer and sqlx write), or SQLite's own
/// `YYYY-MM-DD HH:MM:SS[.fff]` in UTC (what `CURRENT_TIMESTAMP` writes).
fn parse_sqlite_timestamp(text: &str) -> Result<DateTime<Utc>, Error> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
        .map(|naive| naive.and_utc())
        .map_err(|_| Error::Decode(format!("{text:?} is not a timestamp")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_values_keep_the_format_existing_databases_hold() {
        let at = "2026-12-07T05:20:00.123456789Z".parse::<DateTime<Utc>>().unwrap();
        assert_eq!(
            at.value().to_sqlite(),
            rusqlite::types::Value::Text("2026-12-07T05:20:00.123456789+00:00".into()),
            "as sqlx wrote them, so text comparisons keep ordering old and new rows together"
        );
        assert_eq!(DateTime::<Utc>::from_value(Value::Text("2026-12-07T05:20:00.123456789+00:00".into())).unwrap(), at);
        assert_eq!(
            DateTime::<Utc>::from_value(Value::Text("2026-12-07 05:20:00".into())).unwrap().to_rfc3339(),
            "2026-12-07T05:20:00+00:00"
        );
        let id = Uuid::now_v7();
        assert_eq!(id.value().to_sqlite(), rusqlite::types::Value::Blob(id.as_bytes().to_vec()));
        assert_eq!(Uuid::from_value(Value::Blob(id.as_bytes().to_vec())).unwrap(), id);
        assert_eq!(None::<Uuid>.value(), Value::Null(Kind::Uuid), "a NULL keeps its type");
        assert!(i64::from_value(Value::Text("1".into())).is_err());
        assert_eq!(Option::<i64>::from_value(Value::Null(Kind::Text)).unwrap(), None);
    }
}
