//! Typed identifiers. Every entity id is a UUIDv7 (time-ordered, so B-tree inserts stay local and
//! ids sort by creation) wrapped in its own type so a `UserId` can never be passed as an `OrderId`.

/// Declares an id newtype: serde-transparent string, `Display`/`FromStr`, stored as a UUID
/// (native `uuid` on PostgreSQL, 16-byte BLOB on SQLite) and documented as a uuid string.
#[macro_export]
macro_rules! define_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(
            Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
            serde::Serialize, serde::Deserialize, sqlx::Type,
        )]
        #[serde(transparent)]
        #[sqlx(transparent)]
        pub struct $name(pub uuid::Uuid);

        impl $name {
            /// A fresh, time-ordered id.
            pub fn new() -> Self {
                Self(uuid::Uuid::now_v7())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                uuid::Uuid::parse_str(s).map(Self)
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                        utoipa::openapi::KnownFormat::Uuid,
                    )))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}

        impl $crate::storage::Param for $name {
            fn value(&self) -> $crate::storage::Value {
                $crate::storage::Value::Uuid(self.0)
            }
        }

        impl $crate::storage::Param for Option<$name> {
            fn value(&self) -> $crate::storage::Value {
                self.map_or($crate::storage::Value::Null($crate::storage::Kind::Uuid), |id| {
                    $crate::storage::Value::Uuid(id.0)
                })
            }
        }

        impl $crate::storage::FromValue for $name {
            fn from_value(value: $crate::storage::Value) -> Result<Self, $crate::storage::Error> {
                <uuid::Uuid as $crate::storage::FromValue>::from_value(value).map(Self)
            }
        }
    };
}

define_id!(
    /// A registered account (customer, seller, warehouse staff or admin).
    UserId
);
define_id!(
    /// An entry of a user's address book.
    AddressId
);
define_id!(
    /// A product category.
    CategoryId
);
define_id!(
    /// A catalog product (referenced by carts, stock, orders and search by this id).
    ProductId
);
define_id!(
    /// A product review.
    ReviewId
);
define_id!(
    /// A warehouse holding stock.
    WarehouseId
);
define_id!(
    /// A hold on stock for a checkout (lines placed in warehouses, expiring).
    ReservationId
);
define_id!(
    /// A coupon (its code is the public handle).
    CouponId
);
define_id!(
    /// An outbox event; also the idempotency key consumers record.
    EventId
);
define_id!(
    /// A customer's order (also the reference of its stock reservation and its payment).
    OrderId
);
define_id!(
    /// The part of an order one warehouse ships (seed 001's WarehouseOrders).
    WarehouseOrderId
);
define_id!(
    /// A payment attempt at a gateway.
    PaymentId
);
define_id!(
    /// A carrier that picks warehouse orders up and delivers them (seed 003's delivery partners).
    DeliveryPartnerId
);
define_id!(
    /// A refund of (part of) a payment.
    RefundId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_strings_and_json() {
        let id = UserId::new();
        let parsed: UserId = id.to_string().parse().unwrap();
        assert_eq!(parsed, id);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<UserId>(&json).unwrap(), id);
    }

    #[test]
    fn ids_are_time_ordered() {
        let a = UserId::new();
        let b = UserId::new();
        assert!(a < b, "uuidv7 ids created later sort later");
    }

    #[test]
    fn garbage_is_not_an_id() {
        assert!("not-a-uuid".parse::<UserId>().is_err());
    }
}
