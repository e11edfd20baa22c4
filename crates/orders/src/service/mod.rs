//! The checkout saga and the order lifecycle. Every step is persisted before the next begins and
//! every step is idempotent, so a crash between any two is finished or compensated by the worker
//! (or by the payment events) after restart:
//!
//! 1. checkout: order CREATED (lines and prices snapshotted) → coupon use taken → stock reserved
//!    for the hold (reference = order id) → PAYMENT_PENDING with `expires_at`. Checkout and pay
//!    in one call (`POST /orders`) records the hold with the payment's outcome instead: a capture
//!    then commits CREATED → CONFIRMED once (both steps in the history, both events), anything
//!    else records PAYMENT_PENDING first. A CREATED order left holding stock (the call died) is
//!    adopted: the worker, or its payment's event, records the hold it finds by reference.
//! 2. pay: one payment per order (key `order:<id>`); captured → confirm, declined → PAYMENT_FAILED,
//!    unresolved (async, timeout) → stays PAYMENT_PENDING until the payment service learns more.
//! 3. confirm: reservation committed (refused once the hold expired → EXPIRED + refund) → ordered
//!    lines leave the cart → CONFIRMED. Warehouse assignment then splits it (PROCESSING).
//! 4. giving back (PAYMENT_FAILED, EXPIRED, CANCELLED, RETURNED): the state change commits first;
//!    releasing stock, the coupon use and refunding follow and the order is marked settled only
//!    when all succeeded, so the worker retries whatever a crash interrupted.

use crate::api::events::{
    Allocation, OrderChange, WarehouseOrderDelivered, WarehouseOrderShipped, append_change, append_changes,
};
use crate::model::{
    HistoryEntry, IllegalTransition, Order, OrderLine, OrderStatus, PaymentSummary, PickList, ReturnRejection,
    ShipmentStatus, ShippingAddress, WarehouseOrder, check_transition, parent_status, refund_due_for_returns,
    refund_for_return, return_window_open, split_by_warehouse,
};
use crate::store::{self, Hold, Recording, Transition};
use emporium_cart::api::{CartClient, CartError};
use emporium_delivery::api::DeliveryClient;
use emporium_inventory::api::{
    InventoryClient, InventoryError, LineRequest, Quantity, ReserveRequest, RestockRequest, Shortage, ShortageReason,
};
pub use emporium_kernel::auth::WarehouseScope;
use emporium_kernel::clock::SharedClock;
use emporium_kernel::db::{Db, is_unique_violation};
use emporium_kernel::error::{ApiError, ErrorCode, FieldError};
use emporium_kernel::events;
use emporium_kernel::geo::Destination;
use emporium_kernel::geo::GeoPoint;
use emporium_kernel::ids::{AddressId, OrderId, PaymentId, ProductId, UserId, WarehouseId, WarehouseOrderId};
use emporium_payments::api::{PayRequest, Payment, PaymentStatus, PaymentsClient, PaymentsError, RefundRequest};
use emporium_users::api::UsersClient;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

mod checkout;
mod delivery;
mod fulfilment;
mod in_flight;
mod worker;

#[derive(Debug, thiserror::Error)]
pub enum OrdersError {
    #[error("order not found")]
    NotFound,
    #[error("warehouse order not found")]
    ShipmentNotFound,
    #[error("invalid fields")]
    Invalid(Vec<FieldError>),
    #[error("not enough stock for every line")]
    OutOfStock(Vec<Shortage>),
    #[error(transparent)]
    Illegal(#[from] IllegalTransition),
    #[error("the checkout expired: its stock hold ran out before payment")]
    CheckoutExpired,
    #[error("the payment was declined: {reason}")]
    PaymentDeclined { order: Box<Order>, reason: String },
    #[error("{0}")]
    Return(#[from] ReturnRejection),
    #[error("{0}")]
    Conflict(String),
    #[error("a service orders depend on failed: {0}")]
    Dependency(String),
    #[error("storage failed")]
    Store(#[from] sqlx::Error),
}

impl From<OrdersError> for ApiError {
    fn from(err: OrdersError) -> Self {
        let detail = err.to_string();
        match err {
            OrdersError::NotFound => ApiError::not_found("order"),
            OrdersError::ShipmentNotFound => ApiError::not_found("warehouse order"),
            OrdersError::Invalid(errors) => ApiError::validation(errors),
            OrdersError::OutOfStock(lines) => {
                ApiError::conflict("not enough stock for every line").with_extra("lines", lines)
            }
            OrdersError::Illegal(t) => {
                ApiError::new(ErrorCode::IllegalTransition).with_detail(detail).with_extra("order_status", t.from)
            }
            OrdersError::CheckoutExpired | OrdersError::Conflict(_) => ApiError::conflict(detail),
            OrdersError::Return(ReturnRejection::WindowClosed(_)) => ApiError::conflict(detail),
            OrdersError::Return(_) => ApiError::invalid_field("lines", detail),
            OrdersError::PaymentDeclined { order, .. } => ApiError::new(ErrorCode::PaymentRequired)
                .with_detail(detail)
                .with_extra("order_id", order.id)
                .with_extra("order_status", order.status),
            OrdersError::Dependency(_) => ApiError::new(ErrorCode::Unavailable).with_detail(detail),
            OrdersError::Store(e) => ApiError::internal(e),
        }
    }
}

pub type Result<T, E = OrdersError> = std::result::Result<T, E>;

fn dependency(err: impl std::error::Error + 'static) -> OrdersError {
    OrdersError::Dependency(emporium_kernel::error::dependency_failed(&err))
}

fn invalid(field: &str, message: impl Into<String>) -> OrdersError {
    OrdersError::Invalid(vec![FieldError::new(field, message)])
}

/// The services the saga talks to.
pub struct OrderClients {
    pub cart: CartClient,
    pub users: UsersClient,
    pub inventory: InventoryClient,
    pub payments: PaymentsClient,
    pub delivery: DeliveryClient,
}

pub struct OrderSettings {
    pub return_window: chrono::Duration,
    /// Whether returned units go back on sale unless the return says otherwise.
    pub restock_returns: bool,
}

/// Test hook: stop the saga forever at a step, as if the process died there
/// (`EMPORIUM_FAILPOINT=orders.after-reserve` or `orders.after-pay`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failpoint {
    AfterReserve,
    AfterPay,
}

impl Failpoint {
    pub fn parse(raw: &str) -> Option<Failpoint> {
        match raw {
            "orders.after-reserve" => Some(Failpoint::AfterReserve),
            "orders.after-pay" => Some(Failpoint::AfterPay),
            _ => None,
        }
    }
}

/// Who is asking: the owner sees and changes their orders, admins all; warehouse staff read the
/// orders with a part at a warehouse they work at.
#[derive(Clone, Debug)]
pub struct Caller {
    pub user: UserId,
    pub admin: bool,
    pub staff: bool,
    /// Where a member of staff works (everywhere for an admin).
    pub warehouses: WarehouseScope,
}

/// A checkout begun: its stock held, and that either recorded on the order (PAYMENT_PENDING, or
/// further along for a retry) or, for a new order, not yet (still CREATED).
enum Started {
    Recorded(Order),
    Held(Order, Hold),
}

/// What paying did.
pub struct PayOutcome {
    pub order: Order,
    /// The gateway has not answered yet (async confirmation or a timeout being resolved).
    pub pending: bool,
}

pub struct OrdersService {
    db: Db,
    clock: SharedClock,
    clients: OrderClients,
    settings: OrderSettings,
    failpoint: Option<Failpoint>,
    pays: in_flight::PaysInFlight,
}

const ACTOR: &str = "service:orders";
const WORKER: &str = "system:order-worker";
/// A checkout still CREATED after this long was interrupted (its request died).
const STALE_CREATED: Duration = Duration::from_secs(60);
/// A CREATED order holding stock this long has its hold recorded by the worker (see
/// `adopt_hold`): its call is gone or slow, and recording is harmless to a live one. Short, as a
/// dead call's hold should be seen (and expire) on time.
const ADOPT_HOLD_AFTER: Duration = Duration::from_secs(3);
/// Compensations left unfinished this long are retried by the worker.
const STALE_UNSETTLED: Duration = Duration::from_secs(5);
/// How long one settler may take before another may try.
const SETTLE_LEASE: Duration = Duration::from_secs(60);
/// Confirmed orders not split after this long are split by the worker (the event was lost).
const STALE_CONFIRMED: Duration = Duration::from_secs(30);
/// How long a payment event waits for the pay call it came from to finish confirming.
const PAY_CALL_WAIT: Duration = Duration::from_secs(2);

fn user_actor(user: UserId) -> String {
    format!("user:{user}")
}

fn payment_key(order: OrderId) -> String {
    format!("order:{order}")
}

fn summary(p: &Payment) -> PaymentSummary {
    PaymentSummary {
        id: Some(p.id),
        status: p.status.as_str().to_ascii_uppercase(),
        gateway: Some(p.gateway.clone()),
        transaction_id: p.transaction_id.clone(),
        refunded: p.refunded,
    }
}

impl OrdersService {
    pub fn new(
        db: Db,
        clock: SharedClock,
        clients: OrderClients,
        settings: OrderSettings,
        failpoint: Option<Failpoint>,
    ) -> Self {
        Self { db, clock, clients, settings, failpoint, pays: Default::default() }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    async fn failpoint(&self, at: Failpoint) {
        if self.failpoint == Some(at) {
            tracing::error!(?at, "failpoint reached: this request stops here for good");
            std::future::pending::<()>().await;
        }
    }

    async fn load(&self, id: OrderId) -> Result<Order> {
        store::order(&self.db, id).await?.ok_or(OrdersError::NotFound)
    }

    /// The order if `caller` may see it. Someone else's order is "not found", not "forbidden":
    /// order ids are not to be probed.
    pub async fn order_for(&self, caller: &Caller, id: OrderId) -> Result<Order> {
        let order = self.load(id).await?;
        let works_on_it =
            caller.staff && order.shipments.iter().any(|shipment| caller.warehouses.allows(shipment.warehouse_id));
        if order.user_id == caller.user || caller.admin || works_on_it { Ok(order) } else { Err(OrdersError::NotFound) }
    }

    /// The order if `caller` may change it (its owner or an admin).
    async fn order_to_change(&self, caller: &Caller, id: OrderId) -> Result<Order> {
        let order = self.load(id).await?;
        if order.user_id == caller.user || caller.admin { Ok(order) } else { Err(OrdersError::NotFound) }
    }

    pub async fn orders_of(&self, user: UserId, before: Option<OrderId>, limit: usize) -> Result<Vec<Order>> {
        Ok(store::orders_of(&self.db, user, before, limit as i64).await?)
    }

    async fn change(&self, order: &Order, to: OrderStatus, actor: &str, reason: Option<&str>) -> Result<bool> {
        check_transition(order.status, to)?;
        let mut tx = self.db.begin().await?;
        let t = Transition { id: order.id, from: order.status, to, actor, reason, at: self.clock.now() };
        append_change(&mut tx, change_of(order, to, reason)).await?;
        if !store::commit_transition(tx, &t, Recording::StatusOnly).await? {
            return Ok(false);
        }
        metrics::counter!("orders_transitions_total", "to" => to.as_str()).increment(1);
        Ok(true)
    }
}

/// Applies a stored transition to the order in memory, as reading it back would show it.
fn record(order: &mut Order, t: &Transition<'_>) {
    order.status = t.to;
    order.updated_at = t.at;
    order.history.push(HistoryEntry {
        status: t.to,
        at: t.at,
        actor: t.actor.to_owned(),
        reason: t.reason.map(str::to_owned),
    });
}

fn change_of(order: &Order, status: OrderStatus, reason: Option<&str>) -> OrderChange {
    OrderChange {
        order_id: order.id,
        user_id: order.user_id,
        status,
        total: order.total,
        reason: reason.map(str::to_owned),
        product_ids: order.lines.iter().map(|l| l.product_id).collect(),
        allocations: Vec::new(),
    }
}

fn destination(address: &ShippingAddress) -> Destination {
    let point = match (address.lat, address.lon) {
        (Some(lat), Some(lon)) => GeoPoint::new(lat, lon).ok(),
        _ => None,
    };
    Destination { point, postal_code: Some(address.postal_code.clone()) }
}
