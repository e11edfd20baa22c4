//! What other services may use of delivery: the client trait, the types it carries, its error
//! and the events delivery emits. Everything here is serialisable, so the same trait can be
//! implemented over HTTP; today the in-process implementation is the service itself (`local`).

pub mod events;
mod local;

pub use crate::model::{Job, JobStatus};
use emporium_kernel::error::FieldError;
use emporium_kernel::geo::Destination;
use emporium_kernel::ids::{OrderId, WarehouseId, WarehouseOrderId};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// How other services reach delivery (the order service requests and finishes jobs).
#[async_trait::async_trait]
pub trait DeliveryApi: Send + Sync {
    /// Have warehouse orders carried, in one transaction; idempotent per warehouse order.
    async fn request_all(&self, requests: Vec<JobRequest>) -> Result<Vec<Job>, DeliveryError>;

    /// The warehouse order was delivered or cancelled (idempotent).
    async fn finish(&self, id: WarehouseOrderId) -> Result<(), DeliveryError>;
}

/// A delivery client: in this process or (later) over HTTP.
pub type DeliveryClient = Arc<dyn DeliveryApi>;

/// What the order service asks to have carried.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobRequest {
    pub warehouse_order_id: WarehouseOrderId,
    pub order_id: OrderId,
    pub warehouse_id: WarehouseId,
    pub drop_off: Destination,
    pub units: i64,
}

/// Why a delivery call failed, as a caller can act on it.
#[derive(Clone, Debug, PartialEq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "error", rename_all = "snake_case")]
pub enum DeliveryError {
    #[error("invalid fields")]
    Invalid { fields: Vec<FieldError> },
    /// Nothing the caller sent is wrong: delivery's storage or a service it calls failed
    /// (logged where it happened). Trying again later may work.
    #[error("{message}")]
    Unavailable { message: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_errors_cross_a_process_as_json() {
        let request = JobRequest {
            warehouse_order_id: WarehouseOrderId::new(),
            order_id: OrderId::new(),
            warehouse_id: WarehouseId::new(),
            drop_off: Destination { point: None, postal_code: Some("80331".into()) },
            units: 2,
        };
        let back: JobRequest = serde_json::from_str(&serde_json::to_string(&request).unwrap()).unwrap();
        assert_eq!(
            (back.warehouse_order_id, back.drop_off, back.units),
            (request.warehouse_order_id, request.drop_off, 2)
        );
        let err = DeliveryError::Invalid { fields: vec![FieldError::new("units", "must be positive")] };
        assert_eq!(serde_json::from_value::<DeliveryError>(serde_json::to_value(&err).unwrap()).unwrap(), err);
    }
}
