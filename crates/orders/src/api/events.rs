//! Events the order service emits: one per state change, through the outbox.

use crate::model::{OrderStatus, ShipmentLine};
use emporium_kernel::events::DomainEvent;
use emporium_kernel::ids::{OrderId, ProductId, UserId, WarehouseId, WarehouseOrderId};
use emporium_kernel::money::Money;
use serde::{Deserialize, Serialize};

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
        pub(crate) async fn append_change(tx: &mut emporium_kernel::db::Tx, change: OrderChange) -> sqlx::Result<()> {
            append_changes(tx, vec![change]).await
        }

        /// Appends the events of states entered one after the other, in order, as one write (on
        /// PostgreSQL a transaction of such writes is then still one statement).
        pub(crate) async fn append_changes(tx: &mut emporium_kernel::db::Tx, changes: Vec<OrderChange>) -> sqlx::Result<()> {
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
