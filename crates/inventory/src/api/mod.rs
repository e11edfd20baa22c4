//! What other services may use of the inventory: the client trait, the types it carries, its
//! error and the events the inventory emits. Everything here is serialisable, so the same trait
//! can be implemented over HTTP; today the in-process implementation is the service itself.

pub mod events;
mod local;

pub use crate::model::{
    LineRequest, MAX_QUANTITY, Quantity, Reservation, ReservationLine, ReservationStatus, Shortage, ShortageReason,
    StockLevels, Warehouse,
};
use emporium_kernel::error::FieldError;
use emporium_kernel::geo::Destination;
use emporium_kernel::ids::{ProductId, ReservationId, WarehouseId};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// How other services reach the inventory (carts check stock, orders reserve and commit,
/// delivery finds warehouses). `caller` names the calling service in the stock ledger.
#[async_trait::async_trait]
pub trait InventoryApi: Send + Sync {
    /// Aggregated stock of each product (zero when never stocked).
    async fn stock(&self, products: &[ProductId]) -> Result<HashMap<ProductId, StockLevels>, InventoryError>;

    /// Per product, the units that can reach `to` from the warehouses covering it.
    async fn deliverable_units(
        &self,
        products: &[ProductId],
        to: &Destination,
    ) -> Result<HashMap<ProductId, i64>, InventoryError>;

    /// One warehouse, as recently as the directory copy (a warehouse's place seldom changes).
    async fn warehouse(&self, id: WarehouseId) -> Result<Warehouse, InventoryError>;

    /// Holds every line, or none (`OutOfStock` says which lines fell short and why).
    async fn reserve(&self, caller: &str, req: ReserveRequest) -> Result<Reservation, InventoryError>;

    async fn commit(&self, caller: &str, id: ReservationId) -> Result<Reservation, InventoryError>;

    async fn release(
        &self,
        caller: &str,
        id: ReservationId,
        reason: Option<&str>,
    ) -> Result<Reservation, InventoryError>;

    /// The committed units of one warehouse leave it.
    async fn ship(
        &self,
        caller: &str,
        id: ReservationId,
        warehouse: WarehouseId,
    ) -> Result<Reservation, InventoryError>;

    async fn reservation(&self, id: ReservationId) -> Result<Reservation, InventoryError>;

    async fn reservation_by_reference(&self, reference: &str) -> Result<Option<Reservation>, InventoryError>;

    /// Returned goods back on the shelf of the warehouse that shipped them, once per key.
    async fn restock(&self, caller: &str, req: RestockRequest) -> Result<(), InventoryError>;
}

/// An inventory client: in this process or (later) over HTTP.
pub type InventoryClient = Arc<dyn InventoryApi>;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReserveRequest {
    /// The caller's idempotency handle (the order id).
    pub reference: String,
    pub lines: Vec<LineRequest>,
    pub destination: Destination,
    /// How long the hold lasts; the configured default when `None`.
    pub ttl: Option<Duration>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RestockRequest {
    pub warehouse: WarehouseId,
    pub product: ProductId,
    pub quantity: i64,
    pub reason: String,
    /// One restock per key.
    pub operation_key: String,
}

/// Why an inventory call failed, as a caller can act on it.
#[derive(Clone, Debug, PartialEq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "error", rename_all = "snake_case")]
pub enum InventoryError {
    #[error("invalid fields")]
    Invalid { fields: Vec<FieldError> },
    #[error("{what} not found")]
    NotFound { what: String },
    #[error("not enough stock for every line")]
    OutOfStock { lines: Vec<Shortage> },
    #[error("the reservation expired and its stock was given back")]
    ReservationExpired,
    #[error("the reservation was released")]
    ReservationReleased,
    #[error("{message}")]
    Conflict { message: String },
    /// Nothing the caller sent is wrong: the inventory's storage or a service it calls failed
    /// (logged where it happened). Trying again later may work.
    #[error("{message}")]
    Unavailable { message: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_errors_cross_a_process_as_json() {
        let request = ReserveRequest {
            reference: "order-1".into(),
            lines: vec![LineRequest { product_id: ProductId::new(), quantity: Quantity::parse(3).unwrap() }],
            destination: Destination { point: None, postal_code: Some("10115".into()) },
            ttl: Some(Duration::from_secs(600)),
        };
        let back: ReserveRequest = serde_json::from_str(&serde_json::to_string(&request).unwrap()).unwrap();
        assert_eq!((back.lines, back.destination, back.ttl), (request.lines, request.destination, request.ttl));
        let shortage =
            Shortage { product_id: ProductId::new(), requested: 3, available: 1, reason: ShortageReason::default() };
        for err in [
            InventoryError::OutOfStock { lines: vec![shortage] },
            InventoryError::NotFound { what: "reservation".into() },
            InventoryError::ReservationExpired,
            InventoryError::Unavailable { message: "storage failed".into() },
        ] {
            let json = serde_json::to_value(&err).unwrap();
            assert_eq!(serde_json::from_value::<InventoryError>(json).unwrap(), err);
        }
    }
}
