//! What the catalog keeps from other services' events: stock figures (for `in_stock` on
//! products) and purchases (for reviews' `verified_purchase`). Each reads only the fields it
//! needs from the payload, as any consumer of a topic would: the inventory and the orders
//! depend on the catalog, not the other way round.

use crate::model::PurchaseChange;
use emporium_kernel::ids::{ProductId, UserId};
use serde::Deserialize;

/// Keeps `product_stock` from the inventory's `StockChanged` events. The catalog cannot name the
/// inventory's types (the inventory depends on the catalog), so it reads the two fields it
/// needs, as any consumer of a topic would.
pub struct StockProjection {
    service: std::sync::Arc<crate::CatalogService>,
}

impl StockProjection {
    pub const NAME: &'static str = "catalog-stock";
    pub const EVENT_TYPE: &'static str = "StockChanged";

    pub fn new(service: std::sync::Arc<crate::CatalogService>) -> Self {
        Self { service }
    }

    /// Each product's last figure in `events`, written in one statement: the figures are
    /// absolute, so the earlier ones of a product add nothing.
    async fn record(&self, events: &[emporium_kernel::events::Envelope]) -> anyhow::Result<()> {
        let mut latest = std::collections::BTreeMap::new();
        for event in events.iter().filter(|e| e.event_type == Self::EVENT_TYPE) {
            let figure: StockFigure = serde_json::from_value(event.payload.clone())?;
            latest.insert(figure.product_id, figure.available);
        }
        let figures: Vec<(ProductId, i64)> = latest.into_iter().collect();
        Ok(self.service.record_stock(&figures).await?)
    }
}

#[derive(Deserialize)]
struct StockFigure {
    product_id: ProductId,
    available: i64,
}

#[async_trait::async_trait]
impl emporium_kernel::events::EventConsumer for StockProjection {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    async fn handle(&self, event: &emporium_kernel::events::Envelope) -> anyhow::Result<()> {
        self.record(std::slice::from_ref(event)).await
    }

    async fn handle_all(&self, events: &[emporium_kernel::events::Envelope]) -> Option<anyhow::Result<()>> {
        Some(self.record(events).await)
    }
}

/// Keeps `purchases` from the orders' events, for the `verified_purchase` flag of reviews. Like
/// [`StockProjection`] it reads only the fields it needs: the orders service depends on the
/// catalog (through the cart), not the other way round.
pub struct PurchaseProjection {
    service: std::sync::Arc<crate::CatalogService>,
}

impl PurchaseProjection {
    pub const NAME: &'static str = "catalog-purchases";
    /// A paid order: its products count as bought.
    pub const PAID: &'static str = "OrderConfirmed";
    /// Cancelled after payment (stock back, money back): no longer bought. A return keeps the
    /// purchase: the buyer had the goods in hand.
    pub const CANCELLED: &'static str = "OrderCancelled";

    pub fn new(service: std::sync::Arc<crate::CatalogService>) -> Self {
        Self { service }
    }

    /// The purchase changes of `events`, in one transaction.
    async fn record(&self, events: &[emporium_kernel::events::Envelope]) -> anyhow::Result<()> {
        let mut changes = Vec::new();
        for event in events {
            changes.extend(Self::change(event)?);
        }
        Ok(self.service.record_purchases(&changes).await?)
    }

    /// What `event` changes in the purchases, if anything.
    fn change(event: &emporium_kernel::events::Envelope) -> anyhow::Result<Option<PurchaseChange>> {
        let bought = event.event_type == Self::PAID;
        if !bought && event.event_type != Self::CANCELLED {
            return Ok(None);
        }
        let order: OrderFigure = serde_json::from_value(event.payload.clone())?;
        Ok(Some(PurchaseChange { order: order.order_id, user: order.user_id, products: order.product_ids, bought }))
    }
}

#[derive(Deserialize)]
struct OrderFigure {
    order_id: emporium_kernel::ids::OrderId,
    user_id: UserId,
    #[serde(default)]
    product_ids: Vec<ProductId>,
}

#[async_trait::async_trait]
impl emporium_kernel::events::EventConsumer for PurchaseProjection {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    async fn handle(&self, event: &emporium_kernel::events::Envelope) -> anyhow::Result<()> {
        self.record(std::slice::from_ref(event)).await
    }

    async fn handle_all(&self, events: &[emporium_kernel::events::Envelope]) -> Option<anyhow::Result<()>> {
        Some(self.record(events).await)
    }
}
