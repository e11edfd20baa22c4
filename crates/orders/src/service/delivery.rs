//! Handing warehouse orders to the delivery service: a job for each once the order is split,
//! finished once it is delivered or cancelled. Driven by the order's own events (see
//! `events::DeliveryRequests`), so a crash in between delays it and loses nothing; every call is
//! idempotent.

use super::*;
use emporium_delivery::service::JobRequest;
use emporium_kernel::ids::DeliveryPartnerId;

impl OrdersService {
    /// Asks for a delivery partner for each warehouse order of `id` still waiting to ship and
    /// records the partner when one was assigned at once (later ones arrive as events).
    pub async fn request_deliveries(&self, id: OrderId) -> Result<()> {
        let order = self.load(id).await?;
        let drop_off = destination(&order.shipping_address);
        for shipment in &order.shipments {
            if shipment.status != ShipmentStatus::Pending || shipment.delivery_partner_id.is_some() {
                continue;
            }
            let request = JobRequest {
                warehouse_order_id: shipment.id,
                order_id: id,
                warehouse_id: shipment.warehouse_id,
                drop_off: drop_off.clone(),
                units: shipment.lines.iter().map(|l| l.quantity).sum(),
            };
            let job = self.clients.delivery.request(request).await.map_err(dependency)?;
            if let Some(partner) = job.partner_id {
                store::set_delivery_partner(&self.db, shipment.id, partner).await?;
            }
        }
        Ok(())
    }

    /// Frees the delivery partners of `id`'s warehouse orders that are over: delivered or
    /// cancelled.
    pub async fn finish_deliveries(&self, id: OrderId) -> Result<()> {
        for shipment in store::shipments_of(&self.db, id).await? {
            if matches!(shipment.status, ShipmentStatus::Delivered | ShipmentStatus::Cancelled) {
                self.clients.delivery.finish(shipment.id).await.map_err(dependency)?;
            }
        }
        Ok(())
    }

    /// The delivery service assigned `partner` to a warehouse order.
    pub async fn record_delivery_partner(&self, id: WarehouseOrderId, partner: DeliveryPartnerId) -> Result<()> {
        Ok(store::set_delivery_partner(&self.db, id, partner).await?)
    }
}
