//! How other services reach the inventory (carts check stock, orders reserve and commit).

use crate::model::{Reservation, StockLevels};
use crate::service::{InventoryError, InventoryService, ReserveRequest};
use emporium_kernel::ids::{ProductId, ReservationId, WarehouseId};
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Clone)]
pub enum InventoryClient {
    Local(Arc<InventoryService>),
}

impl InventoryClient {
    pub fn local(service: Arc<InventoryService>) -> Self {
        InventoryClient::Local(service)
    }

    /// Aggregated stock of each product (zero when never stocked).
    pub async fn stock(&self, products: &[ProductId]) -> Result<HashMap<ProductId, StockLevels>, InventoryError> {
        match self {
            InventoryClient::Local(svc) => svc.aggregated(products).await,
        }
    }

    pub async fn reserve(&self, caller: &str, req: ReserveRequest) -> Result<Reservation, InventoryError> {
        match self {
            InventoryClient::Local(svc) => svc.reserve(&format!("service:{caller}"), req).await,
        }
    }

    pub async fn commit(&self, caller: &str, id: ReservationId) -> Result<Reservation, InventoryError> {
        match self {
            InventoryClient::Local(svc) => svc.commit(&format!("service:{caller}"), id).await,
        }
    }

    pub async fn release(
        &self,
        caller: &str,
        id: ReservationId,
        reason: Option<&str>,
    ) -> Result<Reservation, InventoryError> {
        match self {
            InventoryClient::Local(svc) => svc.release(&format!("service:{caller}"), id, reason).await,
        }
    }

    pub async fn ship(
        &self,
        caller: &str,
        id: ReservationId,
        warehouse: WarehouseId,
    ) -> Result<Reservation, InventoryError> {
        match self {
            InventoryClient::Local(svc) => svc.ship(&format!("service:{caller}"), id, warehouse).await,
        }
    }
}
