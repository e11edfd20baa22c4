//! Events the order service emits (one per state change, through the outbox) and the payment
//! events it consumes: a payment confirmed late (webhook, or resolved after a timeout) confirms
//! its order, a failure fails it, and a success for an order that is already gone is refunded.

use crate::model::{OrderStatus, ShipmentLine};
use crate::service::OrdersService;
use emporium_delivery::events::DeliveryPartnerAssigned;
use emporium_kernel::events::{DomainEvent, Envelope, EventConsumer};
use emporium_kernel::ids::{OrderId, ProductId, UserId, WarehouseId, WarehouseOrderId};
use emporium_kernel::money::Money;
use emporium_payments::events::{PaymentFailed, PaymentRefunded, PaymentSucceeded};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

pub const SOURCE: &str = "orders";

/// What every order event carries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderChange {
    pub order_id: OrderId,
    pub user_id: UserId,
    pub status: OrderStatus,
    pub total: Money,
    pub reason: Option<String>,
    /// The ordered products, so read models (the catalog's verified purchases) need no call back.
    #[serde(default)]
    pub product_ids: Vec<ProductId>,
    /// Where its units are allocated (OrderConfirmed only), so the warehouse split needs no call
    /// back to the inventory; empty in every other event (and in confirmations written before
    /// the field existed: the split then asks the inventory).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allocations: Vec<Allocation>,
}

/// Units of one product allocated in one warehouse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    pub product_id: ProductId,
    pub warehouse_id: WarehouseId,
    pub quantity: i64,
}

macro_rules! order_events {
    ($($name:ident => $status:ident),+ $(,)?) => {
        $(
            #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
            pub struct $name(pub OrderChange);

            impl DomainEvent for $name {
                const TYPE: &'static str = stringify!($name);
                fn aggregate_id(&self) -> String {
                    self.0.order_id.to_string()
                }
            }
        )+

        /// Appends the event named after the state the order just entered.
        pub async fn append_change(tx: &mut emporium_kernel::db::Tx, change: OrderChange) -> sqlx::Result<()> {
            append_changes(tx, vec![change]).await
        }

        /// Appends the events of states entered one after the other, in order, as one write (on
        /// PostgreSQL a transaction of such writes is then still one statement).
        pub async fn append_changes(tx: &mut emporium_kernel::db::Tx, changes: Vec<OrderChange>) -> sqlx::Result<()> {
            let mut events = Vec::with_capacity(changes.len());
            for change in changes {
                events.push(match change.status {
                    $(OrderStatus::$status => emporium_kernel::events::PendingEvent::of(&$name(change)),)+
                    OrderStatus::Created => continue,
                }?);
            }
            emporium_kernel::events::append_all(tx, &events).await?;
            Ok(())
        }
    };
}

order_events! {
    OrderPlaced => PaymentPending,
    OrderConfirmed => Confirmed,
    OrderProcessing => Processing,
    OrderShipped => Shipped,
    OrderDelivered => Delivered,
    OrderCompleted => Completed,
    OrderPaymentFailed => PaymentFailed,
    OrderExpired => Expired,
    OrderCancelled => Cancelled,
    OrderReturned => Returned,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WarehouseOrderShipped {
    pub warehouse_order_id: WarehouseOrderId,
    pub order_id: OrderId,
    pub warehouse_id: WarehouseId,
    pub lines: Vec<ShipmentLine>,
}

impl DomainEvent for WarehouseOrderShipped {
    const TYPE: &'static str = "WarehouseOrderShipped";
    fn aggregate_id(&self) -> String {
        self.order_id.to_string()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WarehouseOrderDelivered {
    pub warehouse_order_id: WarehouseOrderId,
    pub order_id: OrderId,
    pub warehouse_id: WarehouseId,
}

impl DomainEvent for WarehouseOrderDelivered {
    const TYPE: &'static str = "WarehouseOrderDelivered";
    fn aggregate_id(&self) -> String {
        self.order_id.to_string()
    }
}

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
