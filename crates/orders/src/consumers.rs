//! What the order service does with events: payment outcomes that arrive outside the pay call
//! (a payment confirmed late confirms its order, a failure fails it, a success for an order that
//! is already gone is refunded), its own confirmations (the warehouse split, delivery requests)
//! and the delivery service's partner assignments.

use crate::api::events::{OrderCancelled, OrderConfirmed, OrderProcessing, WarehouseOrderDelivered};
use crate::service::OrdersService;
use emporium_delivery::api::events::DeliveryPartnerAssigned;
use emporium_kernel::events::{Envelope, EventConsumer};
use emporium_kernel::ids::OrderId;
use emporium_payments::api::events::{PaymentFailed, PaymentRefunded, PaymentSucceeded};
use std::sync::Arc;

/// Reacts to payment outcomes that arrive outside the pay call.
pub struct PaymentOutcomes {
    service: Arc<OrdersService>,
}

impl PaymentOutcomes {
    pub fn new(service: Arc<OrdersService>) -> Self {
        Self { service }
    }
}

#[async_trait::async_trait]
impl EventConsumer for PaymentOutcomes {
    fn name(&self) -> &'static str {
        "orders-payments"
    }

    /// Every effect is idempotent (conditional transitions, keyed refunds), so a redelivery
    /// after a crash does nothing twice.
    async fn handle(&self, event: &Envelope) -> anyhow::Result<()> {
        let (reference, succeeded) = if event.is::<PaymentSucceeded>() {
            let success = event.decode::<PaymentSucceeded>()?;
            (success.reference, Some(success.payment_id))
        } else if event.is::<PaymentFailed>() {
            (event.decode::<PaymentFailed>()?.reference, None)
        } else if event.is::<PaymentRefunded>() {
            // Only recorded: a refund moves no order (an operator's refund is money, not a
            // cancellation), and the order's own refunds are recorded already.
            let refunded = event.decode::<PaymentRefunded>()?;
            let Ok(order) = refunded.reference.parse::<OrderId>() else { return Ok(()) };
            self.service.payment_refunded(order).await?;
            return Ok(());
        } else {
            return Ok(());
        };
        let Ok(order) = reference.parse::<OrderId>() else { return Ok(()) };
        self.service.payment_changed(order, succeeded).await?;
        Ok(())
    }
}

/// Splits confirmed orders into warehouse orders (DESIGN.md §4's warehouse assignment).
pub struct WarehouseAssignment {
    service: Arc<OrdersService>,
}

impl WarehouseAssignment {
    pub fn new(service: Arc<OrdersService>) -> Self {
        Self { service }
    }
}

#[async_trait::async_trait]
impl EventConsumer for WarehouseAssignment {
    fn name(&self) -> &'static str {
        "orders-warehouse-assignment"
    }

    async fn handle(&self, event: &Envelope) -> anyhow::Result<()> {
        if event.is::<OrderConfirmed>() {
            self.service.split_confirmed(&event.decode::<OrderConfirmed>()?.0).await?;
        }
        Ok(())
    }
}

/// Hands warehouse orders to the delivery service (DESIGN.md §4's delivery-partner assignment):
/// a job for each once the order is split, finished once it is delivered or cancelled.
pub struct DeliveryRequests {
    service: Arc<OrdersService>,
}

impl DeliveryRequests {
    pub fn new(service: Arc<OrdersService>) -> Self {
        Self { service }
    }
}

#[async_trait::async_trait]
impl EventConsumer for DeliveryRequests {
    fn name(&self) -> &'static str {
        "orders-delivery-requests"
    }

    async fn handle(&self, event: &Envelope) -> anyhow::Result<()> {
        self.apply(std::slice::from_ref(event)).await
    }

    /// A burst of split orders is one request to the delivery service.
    async fn handle_all(&self, events: &[Envelope]) -> Option<anyhow::Result<()>> {
        Some(self.apply(events).await)
    }
}

impl DeliveryRequests {
    /// Requests first, then finishes: an order's split always comes before its delivery or
    /// cancellation, so its job exists before it is finished. Requests and finishes are
    /// idempotent at the delivery service, so a redelivery is harmless.
    async fn apply(&self, events: &[Envelope]) -> anyhow::Result<()> {
        let mut split = Vec::new();
        let mut delivered = Vec::new();
        let mut cancelled = Vec::new();
        for event in events {
            if event.is::<OrderProcessing>() {
                split.push(event.decode::<OrderProcessing>()?.0.order_id);
            } else if event.is::<WarehouseOrderDelivered>() {
                delivered.push(event.decode::<WarehouseOrderDelivered>()?.warehouse_order_id);
            } else if event.is::<OrderCancelled>() {
                cancelled.push(event.decode::<OrderCancelled>()?.0.order_id);
            }
        }
        self.service.request_deliveries(&split).await?;
        for shipment in delivered {
            self.service.finish_delivery(shipment).await?;
        }
        for order in cancelled {
            self.service.finish_cancelled_deliveries(order).await?;
        }
        Ok(())
    }
}

/// Records on each warehouse order the partner the delivery service assigned to it.
pub struct DeliveryPartners {
    service: Arc<OrdersService>,
}

impl DeliveryPartners {
    pub fn new(service: Arc<OrdersService>) -> Self {
        Self { service }
    }
}

#[async_trait::async_trait]
impl EventConsumer for DeliveryPartners {
    fn name(&self) -> &'static str {
        "orders-delivery-partners"
    }

    async fn handle(&self, event: &Envelope) -> anyhow::Result<()> {
        self.record(std::slice::from_ref(event)).await
    }

    /// A burst of assignments is one write transaction (the orders database's writer is the
    /// busiest of a checkout: one turn for the burst instead of one per warehouse order).
    async fn handle_all(&self, events: &[Envelope]) -> Option<anyhow::Result<()>> {
        Some(self.record(events).await)
    }
}

impl DeliveryPartners {
    async fn record(&self, events: &[Envelope]) -> anyhow::Result<()> {
        let mut assigned = Vec::new();
        for event in events.iter().filter(|e| e.is::<DeliveryPartnerAssigned>()) {
            let event = event.decode::<DeliveryPartnerAssigned>()?;
            assigned.push((event.warehouse_order_id, event.partner_id));
        }
        if !assigned.is_empty() {
            self.service.record_delivery_partners(&assigned).await?;
        }
        Ok(())
    }
}
