//! Handing warehouse orders to the delivery service: a job for each once the order is split,
//! finished once it is delivered or cancelled. Driven by the order's own events (see
//! `consumers::DeliveryRequests`), so a crash in between delays it and loses nothing; every call is
//! idempotent.

use super::*;
use emporium_delivery::api::JobRequest;
use emporium_kernel::ids::DeliveryPartnerId;
use std::collections::BTreeMap;

impl OrdersService {
    /// Asks for a delivery partner for each warehouse order of these orders still waiting to
    /// ship, all in one request. The partner is recorded from the `DeliveryPartnerAssigned` event
    /// every assignment emits, at once or later (one write, not two).
    pub async fn request_deliveries(&self, ids: &[OrderId]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let requests: Vec<JobRequest> = store::awaiting_delivery(&self.db, ids)
            .await?
            .into_iter()
            .map(|(shipment, address)| JobRequest {
                warehouse_order_id: shipment.id,
                order_id: shipment.order_id,
                warehouse_id: shipment.warehouse_id,
                drop_off: destination(&address),
                units: shipment.lines.iter().map(|l| l.quantity).sum(),
            })
            .collect();
        if !requests.is_empty() {
            self.clients.delivery.request_all(requests).await.map_err(dependency)?;
        }
        Ok(())
    }

    /// A warehouse order was delivered: its delivery partner's place is free again.
    pub async fn finish_delivery(&self, id: WarehouseOrderId) -> Result<()> {
        self.clients.delivery.finish(id).await.map_err(dependency)
    }

    /// `id` was cancelled: the places of its cancelled warehouse orders' partners are free again.
    pub async fn finish_cancelled_deliveries(&self, id: OrderId) -> Result<()> {
        for shipment in store::shipments_of(&self.db, id).await? {
            if shipment.status == ShipmentStatus::Cancelled {
                self.finish_delivery(shipment.id).await?;
            }
        }
        Ok(())
    }

    /// The delivery service assigned these partners to these warehouse orders (in order; one
    /// transaction).
    pub async fn record_delivery_partners(&self, assigned: &[(WarehouseOrderId, DeliveryPartnerId)]) -> Result<()> {
        let mut by_partner: BTreeMap<DeliveryPartnerId, Vec<WarehouseOrderId>> = BTreeMap::new();
        for (id, partner) in assigned {
            by_partner.entry(*partner).or_default().push(*id);
        }
        let mut tx = self.db.begin().await?;
        for (partner, ids) in &by_partner {
            store::set_delivery_partner(&mut tx, *partner, ids).await?;
        }
        Ok(tx.commit().await?)
    }
}
