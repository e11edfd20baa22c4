//! How other services reach the inventory (carts check stock, orders reserve and commit).

use crate::model::{Reservation, StockLevels, Warehouse};
use crate::service::{InventoryError, InventoryService, ReserveRequest};
use emporium_kernel::geo::Destination;
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

    /// Per product, the units that can reach `to` (see [`InventoryService::deliverable_units`]).
    pub async fn deliverable_units(
        &self,
        products: &[ProductId],
        to: &Destination,
    ) -> Result<HashMap<ProductId, i64>, InventoryError> {
        match self {
            InventoryClient::Local(svc) => svc.deliverable_units(products, to).await,
        }
    }

    /// One warehouse, as recently as the directory copy (delivery partners are matched to where
    /// they pick up; a warehouse's place seldom changes).
    pub async fn warehouse(&self, id: WarehouseId) -> Result<Warehouse, InventoryError> {
        match self {
            InventoryClient::Local(svc) => svc.warehouse_listed(id).await,
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

    pub async fn reservation(&self, id: ReservationId) -> Result<Reservation, InventoryError> {
        match self {
            InventoryClient::Local(svc) => svc.reservation(id).await,
        }
    }

    pub async fn reservation_by_reference(&self, reference: &str) -> Result<Option<Reservation>, InventoryError> {
        match self {
            InventoryClient::Local(svc) => svc.reservation_by_reference(reference).await,
        }
    }

    /// Returned goods back on the shelf of the warehouse that shipped them.
    pub async fn restock(
        &self,
        caller: &str,
        warehouse: WarehouseId,
        product: ProductId,
        quantity: i64,
        reason: &str,
        operation_key: &str,
    ) -> Result<(), InventoryError> {
        match self {
            InventoryClient::Local(svc) => svc
                .restock(&format!("service:{caller}"), warehouse, product, quantity, reason, operation_key)
                .await
                .map(|_| ()),
        }
    }
}
