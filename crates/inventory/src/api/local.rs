//! The in-process client: the service itself, its errors narrowed to what a caller may see.

use super::{InventoryApi, InventoryError, Reservation, ReserveRequest, RestockRequest, StockLevels, Warehouse};
use crate::service::{self, InventoryService};
use emporium_kernel::geo::Destination;
use emporium_kernel::ids::{ProductId, ReservationId, WarehouseId};
use std::collections::HashMap;

/// How a service names itself in the stock ledger.
fn actor(caller: &str) -> String {
    format!("service:{caller}")
}

#[async_trait::async_trait]
impl InventoryApi for InventoryService {
    async fn stock(&self, products: &[ProductId]) -> Result<HashMap<ProductId, StockLevels>, InventoryError> {
        Ok(self.aggregated(products).await?)
    }

    async fn deliverable_units(
        &self,
        products: &[ProductId],
        to: &Destination,
    ) -> Result<HashMap<ProductId, i64>, InventoryError> {
        Ok(InventoryService::deliverable_units(self, products, to).await?)
    }

    async fn warehouse(&self, id: WarehouseId) -> Result<Warehouse, InventoryError> {
        Ok(self.warehouse_listed(id).await?)
    }

    async fn reserve(&self, caller: &str, req: ReserveRequest) -> Result<Reservation, InventoryError> {
        Ok(InventoryService::reserve(self, &actor(caller), req).await?)
    }

    async fn commit(&self, caller: &str, id: ReservationId) -> Result<Reservation, InventoryError> {
        Ok(InventoryService::commit(self, &actor(caller), id).await?)
    }

    async fn release(
        &self,
        caller: &str,
        id: ReservationId,
        reason: Option<&str>,
    ) -> Result<Reservation, InventoryError> {
        Ok(InventoryService::release(self, &actor(caller), id, reason).await?)
    }

    async fn ship(
        &self,
        caller: &str,
        id: ReservationId,
        warehouse: WarehouseId,
    ) -> Result<Reservation, InventoryError> {
        Ok(InventoryService::ship(self, &actor(caller), id, warehouse).await?)
    }

    async fn reservation(&self, id: ReservationId) -> Result<Reservation, InventoryError> {
        Ok(InventoryService::reservation(self, id).await?)
    }

    async fn reservation_by_reference(&self, reference: &str) -> Result<Option<Reservation>, InventoryError> {
        Ok(InventoryService::reservation_by_reference(self, reference).await?)
    }

    async fn restock(&self, caller: &str, req: RestockRequest) -> Result<(), InventoryError> {
        let RestockRequest { warehouse, product, quantity, reason, operation_key } = req;
        InventoryService::restock(self, &actor(caller), warehouse, product, quantity, &reason, &operation_key).await?;
        Ok(())
    }
}

impl From<service::Error> for InventoryError {
    fn from(err: service::Error) -> Self {
        use service::Error as E;
        match err {
            E::Invalid(fields) => InventoryError::Invalid { fields },
            E::WarehouseNotFound => InventoryError::NotFound { what: "warehouse".into() },
            E::ProductNotFound => InventoryError::NotFound { what: "product".into() },
            E::ReservationNotFound => InventoryError::NotFound { what: "reservation".into() },
            E::OutOfStock(lines) => InventoryError::OutOfStock { lines },
            E::ReservationExpired => InventoryError::ReservationExpired,
            E::ReservationReleased => InventoryError::ReservationReleased,
            E::InsufficientStock { .. } | E::Conflict(_) => InventoryError::Conflict { message: err.to_string() },
            E::Dependency(_) => InventoryError::Unavailable { message: err.to_string() },
            E::Store(_) => InventoryError::Unavailable { message: emporium_kernel::error::internal_failure(&err) },
        }
    }
}
