//! The checkout saga and the order lifecycle. Every step is persisted before the next begins and
//! every step is idempotent, so a crash between any two is finished or compensated by the worker
//! (or by the payment events) after restart:
//!
//! 1. checkout: order CREATED (lines and prices snapshotted) → coupon use taken → stock reserved
//!    for the hold (reference = order id) → PAYMENT_PENDING with `expires_at`.
//! 2. pay: one payment per order (key `order:<id>`); captured → confirm, declined → PAYMENT_FAILED,
//!    unresolved (async, timeout) → stays PAYMENT_PENDING until the payment service learns more.
//! 3. confirm: reservation committed (refused once the hold expired → EXPIRED + refund) → ordered
//!    lines leave the cart → CONFIRMED. Warehouse assignment then splits it (PROCESSING).
//! 4. giving back (PAYMENT_FAILED, EXPIRED, CANCELLED, RETURNED): the state change commits first;
//!    releasing stock, the coupon use and refunding follow and the order is marked settled only
//!    when all succeeded, so the worker retries whatever a crash interrupted.

use crate::events::{OrderChange, WarehouseOrderDelivered, WarehouseOrderShipped, append_change};
use crate::model::{
    HistoryEntry, IllegalTransition, Order, OrderLine, OrderStatus, PaymentSummary, ReturnRejection, ShipmentStatus,
    ShippingAddress, WarehouseOrder, check_transition, parent_status, refund_due_for_returns, refund_for_return,
    return_window_open, split_by_warehouse,
};
use crate::store::{self, Transition};
use emporium_cart::{CartClient, CartError};
use emporium_inventory::model::{Destination, LineRequest, Quantity, Shortage};
use emporium_inventory::service::ReserveRequest;
use emporium_inventory::{InventoryClient, InventoryError};
use emporium_kernel::clock::SharedClock;
use emporium_kernel::db::{Db, is_unique_violation};
use emporium_kernel::error::{ApiError, ErrorCode, FieldError};
use emporium_kernel::events;
use emporium_kernel::geo::GeoPoint;
use emporium_kernel::ids::{AddressId, OrderId, ProductId, UserId, WarehouseId, WarehouseOrderId};
use emporium_payments::model::{Payment, PaymentStatus};
use emporium_payments::service::PayRequest;
use emporium_payments::{PaymentsClient, PaymentsError};
use emporium_users::UsersClient;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

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

fn dependency(err: impl std::fmt::Display) -> OrdersError {
    OrdersError::Dependency(err.to_string())
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

/// Who is asking: the owner sees and changes their orders, admins all, warehouse staff read.
#[derive(Clone, Copy, Debug)]
pub struct Caller {
    pub user: UserId,
    pub admin: bool,
    pub staff: bool,
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
}

const ACTOR: &str = "service:orders";
const WORKER: &str = "system:order-worker";
/// A checkout still CREATED after this long was interrupted (its request died).
const STALE_CREATED: Duration = Duration::from_secs(60);
/// Compensations left unfinished this long are retried by the worker.
const STALE_UNSETTLED: Duration = Duration::from_secs(5);
/// How long one settler may take before another may try.
const SETTLE_LEASE: Duration = Duration::from_secs(60);
/// Confirmed orders not split after this long are split by the worker (the event was lost).
const STALE_CONFIRMED: Duration = Duration::from_secs(30);

fn user_actor(user: UserId) -> String {
    format!("user:{user}")
}

fn payment_key(order: OrderId) -> String {
    format!("order:{order}")
}

fn summary(p: &Payment) -> PaymentSummary {
    PaymentSummary {
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
        Self { db, clock, clients, settings, failpoint }
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
    pub async fn order_for(&self, caller: Caller, id: OrderId) -> Result<Order> {
        let order = self.load(id).await?;
        if order.user_id == caller.user || caller.admin || caller.staff {
            Ok(order)
        } else {
            Err(OrdersError::NotFound)
        }
    }

    /// The order if `caller` may change it (its owner or an admin).
    async fn order_to_change(&self, caller: Caller, id: OrderId) -> Result<Order> {
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
        if !store::transition(&mut tx, &t).await? {
            return Ok(false);
        }
        append_change(&mut tx, change_of(order, to, reason)).await?;
        tx.commit().await?;
        metrics::counter!("orders_transitions_total", "to" => to.as_str()).increment(1);
        Ok(true)
    }

    // --- 1. checkout ------------------------------------------------------------------------------

    /// Begins a checkout of the user's cart: PAYMENT_PENDING with every line held until
    /// `expires_at`. With an idempotency key, a retry finds (and returns) the same checkout.
    pub async fn checkout(&self, user: UserId, address: AddressId, key: Option<&str>) -> Result<Order> {
        if let Some(key) = key
            && let Some(existing) = store::order_by_key(&self.db, user, key).await?
        {
            return self.resume(existing).await;
        }
        let address = self
            .clients
            .users
            .address(user, address)
            .await
            .map_err(dependency)?
            .ok_or_else(|| invalid("shipping_address_id", "is not one of your addresses"))?;
        let cart = self.clients.cart.cart(user).await.map_err(dependency)?;
        if cart.items.is_empty() {
            return Err(invalid("cart", "is empty: add products before checking out"));
        }
        // Short even counting every warehouse: no order, no hold to try. A sold-out flash sale
        // answers its crowd from this read alone; the reservation below stays the judge of
        // everything else (it also knows which warehouses deliver to the address).
        let short: Vec<Shortage> = cart
            .items
            .iter()
            .filter(|l| l.available < l.quantity)
            .map(|l| Shortage { product_id: l.product_id, requested: l.quantity, available: l.available.max(0) })
            .collect();
        if !short.is_empty() {
            return Err(OrdersError::OutOfStock(short));
        }
        let now = self.clock.now();
        let actor = user_actor(user);
        // Built as reading it back would show it: lines in product order, the creation in the
        // history (the saga answers with this order, not a re-read).
        let mut lines: Vec<OrderLine> = cart
            .items
            .iter()
            .map(|l| OrderLine {
                product_id: l.product_id,
                title: l.title.clone(),
                unit_price: l.unit_price,
                quantity: l.quantity,
                line_total: l.line_total,
                returned_quantity: 0,
            })
            .collect();
        lines.sort_by_key(|l| l.product_id);
        let order = Order {
            id: OrderId::new(),
            user_id: user,
            status: OrderStatus::Created,
            lines,
            subtotal: cart.subtotal,
            discount: cart.discount,
            total: cart.total,
            coupon_code: cart.coupon.as_ref().filter(|c| c.rejection.is_none()).map(|c| c.code.clone()),
            shipping_address: ShippingAddress {
                address_id: address.id.to_string(),
                line1: address.line1.clone(),
                line2: address.line2.clone(),
                city: address.city.clone(),
                region: address.region.clone(),
                postal_code: address.postal_code.clone(),
                country: address.country.clone(),
                lat: address.lat.map(|l| l.degrees()),
                lon: address.lon.map(|l| l.degrees()),
            },
            reservation_id: None,
            expires_at: None,
            delivered_at: None,
            idempotency_key: key.map(str::to_owned),
            payment: None,
            settled: false,
            created_at: now,
            updated_at: now,
            history: vec![HistoryEntry { status: OrderStatus::Created, at: now, actor: actor.clone(), reason: None }],
            shipments: Vec::new(),
        };
        let mut tx = self.db.begin().await?;
        match store::insert_order(&mut tx, &order, &actor).await {
            Err(err) if is_unique_violation(&err) => {
                drop(tx);
                // The same key, concurrently: that request runs the checkout.
                let existing = store::order_by_key(&self.db, user, key.unwrap_or_default()).await?;
                return self.resume(existing.ok_or(OrdersError::NotFound)?).await;
            }
            other => other?,
        }
        tx.commit().await?;
        self.hold(order).await
    }

    /// Takes the coupon use and the stock for a CREATED order, then makes it PAYMENT_PENDING.
    async fn hold(&self, mut order: Order) -> Result<Order> {
        let reference = order.id.to_string();
        if let Some(code) = &order.coupon_code
            && let Err(err) = self.clients.cart.redeem_coupon(code, order.user_id, &reference).await
        {
            self.discard(&order).await?;
            return Err(match err {
                CartError::CouponRejected(why) => invalid("coupon", why.to_string()),
                CartError::CouponNotFound => invalid("coupon", "no longer exists"),
                other => dependency(other),
            });
        }
        let request = ReserveRequest {
            reference: reference.clone(),
            lines: order
                .lines
                .iter()
                .map(|l| LineRequest {
                    product_id: l.product_id,
                    quantity: Quantity::parse(l.quantity).expect("cart quantities are valid"),
                })
                .collect(),
            destination: destination(&order.shipping_address),
            // The inventory's configured hold (`reservation_ttl_secs`) is the payment deadline.
            ttl: None,
        };
        let reservation = match self.clients.inventory.reserve("orders", request).await {
            Ok(r) => r,
            Err(err) => {
                self.discard(&order).await?;
                return Err(match err {
                    InventoryError::OutOfStock(lines) => OrdersError::OutOfStock(lines),
                    other => dependency(other),
                });
            }
        };
        let mut tx = self.db.begin().await?;
        store::set_reservation(&mut tx, order.id, reservation.id, reservation.expires_at).await?;
        let to = OrderStatus::PaymentPending;
        let t = Transition {
            id: order.id,
            from: OrderStatus::Created,
            to,
            actor: ACTOR,
            reason: None,
            at: self.clock.now(),
        };
        let moved = store::transition(&mut tx, &t).await?;
        if moved {
            append_change(&mut tx, change_of(&order, to, None)).await?;
        }
        tx.commit().await?;
        metrics::counter!("orders_checkouts_total").increment(1);
        if !moved {
            // A concurrent retry moved it first: report it as it stands.
            return self.load(order.id).await;
        }
        // As stored now; re-reading four tables per step was a large part of a checkout's cost.
        order.reservation_id = Some(reservation.id);
        order.expires_at = Some(reservation.expires_at);
        record(&mut order, &t);
        Ok(order)
    }

    /// A checkout found again by its key: CREATED ones are held now, others are as they are.
    async fn resume(&self, order: Order) -> Result<Order> {
        if order.status == OrderStatus::Created { self.hold(order).await } else { Ok(order) }
    }

    /// Gives back what a CREATED order took and removes it (no stock could be held).
    async fn discard(&self, order: &Order) -> Result<()> {
        self.clients.cart.release_coupon(&order.id.to_string()).await.map_err(dependency)?;
        let mut tx = self.db.begin().await?;
        store::discard_created(&mut tx, order.id).await?;
        tx.commit().await?;
        Ok(())
    }

    // --- 2. pay -----------------------------------------------------------------------------------

    /// Checkout and pay in one call (`POST /orders`).
    pub async fn place_order(
        &self,
        user: UserId,
        address: AddressId,
        token: &str,
        key: Option<&str>,
    ) -> Result<PayOutcome> {
        let order = self.checkout(user, address, key).await?;
        self.failpoint(Failpoint::AfterReserve).await;
        match order.status {
            OrderStatus::PaymentPending => self.pay_order(order, token).await,
            // A retried request whose order already moved on: report it as it stands.
            OrderStatus::PaymentFailed => {
                let reason = order.history.last().and_then(|h| h.reason.clone()).unwrap_or_else(|| "declined".into());
                Err(OrdersError::PaymentDeclined { order: Box::new(order), reason })
            }
            _ => Ok(PayOutcome { order, pending: false }),
        }
    }

    pub async fn pay(&self, caller: Caller, id: OrderId, token: &str) -> Result<PayOutcome> {
        let order = self.order_to_change(caller, id).await?;
        self.pay_order(order, token).await
    }

    async fn pay_order(&self, order: Order, token: &str) -> Result<PayOutcome> {
        let id = order.id;
        if order.status != OrderStatus::PaymentPending {
            check_transition(order.status, OrderStatus::Confirmed)?;
        }
        if order.expires_at.is_some_and(|at| at <= self.clock.now()) {
            self.expire(id).await?;
            return Err(OrdersError::CheckoutExpired);
        }
        if order.total.amount == 0 {
            // Fully discounted: nothing to charge.
            self.confirm(id).await?;
            return Ok(PayOutcome { order: self.load(id).await?, pending: false });
        }
        let request = PayRequest {
            reference: id.to_string(),
            idempotency_key: payment_key(id),
            amount: order.total,
            token: token.to_owned(),
        };
        let payment = self.clients.payments.pay(request).await.map_err(|e| match e {
            PaymentsError::Invalid(errors) => OrdersError::Invalid(errors),
            other => dependency(other),
        })?;
        self.failpoint(Failpoint::AfterPay).await;
        let order = match payment.status {
            PaymentStatus::Captured => self.confirm_order(order, Some(&summary(&payment))).await?,
            _ => {
                self.apply_payment(id, &payment).await?;
                self.load(id).await?
            }
        };
        match (order.status, payment.status) {
            (OrderStatus::PaymentFailed, _) => {
                let reason = payment.failure_reason.unwrap_or_else(|| "declined".into());
                Err(OrdersError::PaymentDeclined { order: Box::new(order), reason })
            }
            (OrderStatus::Expired, _) => Err(OrdersError::CheckoutExpired),
            (_, status) => Ok(PayOutcome { order, pending: status.is_unresolved() }),
        }
    }

    /// Moves the order on from what its payment says.
    async fn apply_payment(&self, id: OrderId, payment: &Payment) -> Result<()> {
        store::set_payment(&self.db, id, &summary(payment)).await?;
        match payment.status {
            PaymentStatus::Captured => self.confirm(id).await,
            PaymentStatus::Failed => {
                let order = self.load(id).await?;
                if order.status == OrderStatus::PaymentPending {
                    let reason = payment.failure_reason.as_deref().unwrap_or("declined");
                    self.change(&order, OrderStatus::PaymentFailed, ACTOR, Some(reason)).await?;
                    self.settle(id).await?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// The payment of `id` changed outside the pay call (webhook, resolved timeout).
    pub async fn payment_changed(&self, id: OrderId) -> Result<()> {
        let Some(order) = store::order(&self.db, id).await? else { return Ok(()) };
        let Some(payment) = self.clients.payments.current(&id.to_string()).await.map_err(dependency)? else {
            return Ok(());
        };
        match order.status {
            OrderStatus::PaymentPending => self.apply_payment(id, &payment).await,
            // A success for an order that is gone: give the money back.
            s if s.needs_settling() && payment.status.was_charged() => {
                store::set_payment(&self.db, id, &summary(&payment)).await?;
                self.refund_all(&order, "the order was already closed when the payment succeeded").await
            }
            // Usually the pay call already recorded exactly this (the event follows every capture).
            _ if order.payment.as_ref() == Some(&summary(&payment)) => Ok(()),
            _ => Ok(store::set_payment(&self.db, id, &summary(&payment)).await?),
        }
    }

    // --- 3. confirm -------------------------------------------------------------------------------

    async fn confirm(&self, id: OrderId) -> Result<()> {
        let order = self.load(id).await?;
        self.confirm_order(order, None).await.map(|_| ())
    }

    /// Confirms a PAYMENT_PENDING order (recording `payment` with the change) and returns it as
    /// it then stands; orders in any other state are reloaded and returned as they are.
    async fn confirm_order(&self, mut order: Order, payment: Option<&PaymentSummary>) -> Result<Order> {
        let id = order.id;
        if order.status != OrderStatus::PaymentPending {
            if let Some(payment) = payment {
                store::set_payment(&self.db, id, payment).await?;
            }
            return self.load(id).await;
        }
        let reservation =
            order.reservation_id.ok_or_else(|| OrdersError::Conflict("the order holds no stock".into()))?;
        match self.clients.inventory.commit("orders", reservation).await {
            Ok(_) => {}
            Err(InventoryError::ReservationExpired | InventoryError::ReservationReleased) => {
                if let Some(payment) = payment {
                    store::set_payment(&self.db, id, payment).await?;
                }
                // Paid too late: the stock went back on sale. Expire and refund.
                self.change(&order, OrderStatus::Expired, ACTOR, Some("paid after the stock hold expired")).await?;
                self.settle(id).await?;
                return self.load(id).await;
            }
            Err(err) => return Err(dependency(err)),
        }
        let products: Vec<ProductId> = order.lines.iter().map(|l| l.product_id).collect();
        if let Err(err) = self.clients.cart.remove_products(order.user_id, &products).await {
            tracing::warn!(error = %err, order = %id, "could not take ordered lines out of the cart");
        }
        let to = OrderStatus::Confirmed;
        let mut tx = self.db.begin().await?;
        if let Some(payment) = payment {
            store::set_payment_in(&mut tx, id, payment).await?;
        }
        let t = Transition { id, from: order.status, to, actor: ACTOR, reason: None, at: self.clock.now() };
        if !store::transition(&mut tx, &t).await? {
            tx.commit().await?;
            return self.load(id).await;
        }
        append_change(&mut tx, change_of(&order, to, None)).await?;
        tx.commit().await?;
        metrics::counter!("orders_transitions_total", "to" => to.as_str()).increment(1);
        metrics::counter!("orders_confirmed_total").increment(1);
        if let Some(payment) = payment {
            order.payment = Some(payment.clone());
        }
        record(&mut order, &t);
        Ok(order)
    }

    /// Splits a confirmed order into one warehouse order per warehouse holding its stock.
    pub async fn assign_warehouses(&self, id: OrderId) -> Result<()> {
        let order = self.load(id).await?;
        if order.status != OrderStatus::Confirmed {
            return Ok(());
        }
        let reservation_id = order.reservation_id.ok_or_else(|| OrdersError::Conflict("no reservation".into()))?;
        let reservation = self.clients.inventory.reservation(reservation_id).await.map_err(dependency)?;
        let placements: Vec<_> = reservation.lines.iter().map(|l| (l.product_id, l.warehouse_id, l.quantity)).collect();
        let now = self.clock.now();
        let mut tx = self.db.begin().await?;
        let t = Transition {
            id,
            from: OrderStatus::Confirmed,
            to: OrderStatus::Processing,
            actor: "system:warehouse-assignment",
            reason: None,
            at: now,
        };
        if !store::transition(&mut tx, &t).await? {
            return Ok(());
        }
        for (warehouse_id, lines) in split_by_warehouse(&placements) {
            let shipment = WarehouseOrder {
                id: WarehouseOrderId::new(),
                order_id: id,
                warehouse_id,
                status: ShipmentStatus::Pending,
                lines,
                shipped_at: None,
                delivered_at: None,
                created_at: now,
            };
            store::insert_shipment(&mut tx, &shipment).await?;
        }
        append_change(&mut tx, change_of(&order, OrderStatus::Processing, None)).await?;
        tx.commit().await?;
        Ok(())
    }

    // --- 4. fulfilment ----------------------------------------------------------------------------

    pub async fn shipments(
        &self,
        warehouse: WarehouseId,
        status: Option<ShipmentStatus>,
        after: Option<WarehouseOrderId>,
        limit: usize,
    ) -> Result<Vec<WarehouseOrder>> {
        Ok(store::shipments_for(&self.db, warehouse, status, after, limit as i64).await?)
    }

    /// A warehouse hands its part to the carrier: stock leaves (allocated and on_hand down).
    pub async fn ship(&self, actor: &str, id: WarehouseOrderId) -> Result<WarehouseOrder> {
        let shipment = store::shipment(&self.db, id).await?.ok_or(OrdersError::ShipmentNotFound)?;
        let order = self.load(shipment.order_id).await?;
        match shipment.status {
            ShipmentStatus::Pending => {
                if order.status != OrderStatus::Processing {
                    check_transition(order.status, OrderStatus::Shipped)?;
                }
                let now = self.clock.now();
                let mut tx = self.db.begin().await?;
                if !store::change_shipment(&mut tx, id, ShipmentStatus::Pending, ShipmentStatus::Shipped, now).await? {
                    return Err(OrdersError::Conflict("the warehouse order changed meanwhile (cancelled?)".into()));
                }
                let event = WarehouseOrderShipped {
                    warehouse_order_id: id,
                    order_id: order.id,
                    warehouse_id: shipment.warehouse_id,
                    lines: shipment.lines.clone(),
                };
                events::append(&mut tx, &event).await?;
                let statuses: Vec<_> =
                    store::shipments_of_in_tx(&mut tx, order.id).await?.into_iter().map(|s| s.status).collect();
                if parent_status(&statuses) == Some(OrderStatus::Shipped) {
                    let t = Transition {
                        id: order.id,
                        from: order.status,
                        to: OrderStatus::Shipped,
                        actor,
                        reason: None,
                        at: now,
                    };
                    if !store::transition(&mut tx, &t).await? {
                        return Err(OrdersError::Conflict("the order changed meanwhile; retry".into()));
                    }
                    append_change(&mut tx, change_of(&order, OrderStatus::Shipped, None)).await?;
                }
                tx.commit().await?;
            }
            // Shipping again only makes sure the stock movement happened.
            ShipmentStatus::Shipped | ShipmentStatus::Delivered => {}
            ShipmentStatus::Cancelled => return Err(OrdersError::Conflict("the warehouse order was cancelled".into())),
        }
        let reservation = order.reservation_id.ok_or_else(|| OrdersError::Conflict("no reservation".into()))?;
        self.clients.inventory.ship("orders", reservation, shipment.warehouse_id).await.map_err(dependency)?;
        store::shipment(&self.db, id).await?.ok_or(OrdersError::ShipmentNotFound)
    }

    pub async fn deliver(&self, actor: &str, id: WarehouseOrderId) -> Result<WarehouseOrder> {
        let shipment = store::shipment(&self.db, id).await?.ok_or(OrdersError::ShipmentNotFound)?;
        match shipment.status {
            ShipmentStatus::Delivered => return Ok(shipment),
            ShipmentStatus::Shipped => {}
            other => {
                return Err(OrdersError::Conflict(format!("a {} warehouse order cannot be delivered", other.as_str())));
            }
        }
        let order = self.load(shipment.order_id).await?;
        let now = self.clock.now();
        let mut tx = self.db.begin().await?;
        if !store::change_shipment(&mut tx, id, ShipmentStatus::Shipped, ShipmentStatus::Delivered, now).await? {
            return Err(OrdersError::Conflict("the warehouse order changed meanwhile; retry".into()));
        }
        let event =
            WarehouseOrderDelivered { warehouse_order_id: id, order_id: order.id, warehouse_id: shipment.warehouse_id };
        events::append(&mut tx, &event).await?;
        let statuses: Vec<_> =
            store::shipments_of_in_tx(&mut tx, order.id).await?.into_iter().map(|s| s.status).collect();
        if parent_status(&statuses) == Some(OrderStatus::Delivered) && order.status == OrderStatus::Shipped {
            let t = Transition {
                id: order.id,
                from: OrderStatus::Shipped,
                to: OrderStatus::Delivered,
                actor,
                reason: None,
                at: now,
            };
            if store::transition(&mut tx, &t).await? {
                store::set_delivered_at(&mut tx, order.id, now).await?;
                append_change(&mut tx, change_of(&order, OrderStatus::Delivered, None)).await?;
            }
        }
        tx.commit().await?;
        store::shipment(&self.db, id).await?.ok_or(OrdersError::ShipmentNotFound)
    }

    // --- cancel and return ------------------------------------------------------------------------

    /// Cancels until SHIPPED: stock back (released or deallocated), coupon use back, refund.
    pub async fn cancel(&self, caller: Caller, id: OrderId, reason: Option<&str>) -> Result<Order> {
        let mut order = self.order_to_change(caller, id).await?;
        let actor = user_actor(caller.user);
        let reason = reason.unwrap_or("cancelled by the customer");
        // The warehouse assignment moves a fresh order CONFIRMED → PROCESSING in the background;
        // losing that race is no reason to refuse the shopper, so look again and retry. Each
        // lost race means the order moved forward, which only a few steps can do.
        let mut attempts = 0;
        let (mut tx, now) = loop {
            if order.status == OrderStatus::Cancelled {
                return Ok(order);
            }
            check_transition(order.status, OrderStatus::Cancelled)?;
            let now = self.clock.now();
            let mut tx = self.db.begin().await?;
            let t = Transition {
                id,
                from: order.status,
                to: OrderStatus::Cancelled,
                actor: &actor,
                reason: Some(reason),
                at: now,
            };
            if store::transition(&mut tx, &t).await? {
                break (tx, now);
            }
            drop(tx);
            attempts += 1;
            if attempts == 5 {
                return Err(OrdersError::Conflict("the order keeps changing; retry".into()));
            }
            order = self.load(id).await?;
        };
        store::cancel_pending_shipments(&mut tx, id, now).await?;
        // A warehouse that shipped concurrently wins: then it is too late to cancel.
        if store::shipments_of_in_tx(&mut tx, id).await?.iter().any(|s| s.status != ShipmentStatus::Cancelled) {
            tx.rollback().await?;
            return Err(
                IllegalTransition { from: OrderStatus::Shipped.as_str(), to: OrderStatus::Cancelled.as_str() }.into()
            );
        }
        append_change(&mut tx, change_of(&order, OrderStatus::Cancelled, Some(reason))).await?;
        tx.commit().await?;
        self.settle(id).await?;
        self.load(id).await
    }

    /// Returns delivered goods within the window: refund their share of what was paid and
    /// restock them (per line, default from settings). `lines` empty = everything.
    pub async fn return_order(
        &self,
        caller: Caller,
        id: OrderId,
        lines: Vec<(ProductId, i64, Option<bool>)>,
        reason: Option<&str>,
    ) -> Result<Order> {
        let order = self.order_to_change(caller, id).await?;
        check_transition(order.status, OrderStatus::Returned)?;
        let delivered_at = order.delivered_at.unwrap_or(order.updated_at);
        return_window_open(delivered_at, self.settings.return_window, self.clock.now())?;
        let lines: Vec<(ProductId, i64, bool)> = if lines.is_empty() {
            order
                .lines
                .iter()
                .map(|l| (l.product_id, l.quantity - l.returned_quantity, self.settings.restock_returns))
                .collect()
        } else {
            lines.into_iter().map(|(p, q, r)| (p, q, r.unwrap_or(self.settings.restock_returns))).collect()
        };
        let pairs: Vec<(ProductId, i64)> = lines.iter().map(|(p, q, _)| (*p, *q)).collect();
        refund_for_return(&order, &pairs)?;
        let actor = user_actor(caller.user);
        let reason = reason.unwrap_or("returned by the customer");
        let mut tx = self.db.begin().await?;
        let t = Transition {
            id,
            from: OrderStatus::Delivered,
            to: OrderStatus::Returned,
            actor: &actor,
            reason: Some(reason),
            at: self.clock.now(),
        };
        if !store::transition(&mut tx, &t).await? {
            return Err(OrdersError::Conflict("the order changed meanwhile; retry".into()));
        }
        for (product, quantity, restock) in &lines {
            store::record_return(&mut tx, id, *product, *quantity, *restock).await?;
        }
        append_change(&mut tx, change_of(&order, OrderStatus::Returned, Some(reason))).await?;
        tx.commit().await?;
        self.settle(id).await?;
        self.load(id).await
    }

    // --- giving back ------------------------------------------------------------------------------

    /// Performs the compensations of an order in a giving-back state, then marks it settled.
    /// Every step is idempotent (release twice is harmless, refunds are keyed).
    async fn settle(&self, id: OrderId) -> Result<()> {
        let order = self.load(id).await?;
        if order.settled || !order.status.needs_settling() {
            return Ok(());
        }
        let now = self.clock.now();
        let lease = now + chrono::Duration::from_std(SETTLE_LEASE).expect("small");
        if !store::lease_settlement(&self.db, id, now, lease).await? {
            return Ok(()); // being settled by someone else right now
        }
        let reference = id.to_string();
        if order.status == OrderStatus::Returned {
            self.restock_returns(&order).await?;
            let amount = refund_due_for_returns(&order);
            if amount > 0 {
                self.refund(&order, Some(amount), "returned", "return").await?;
            }
        } else {
            let reservation = match order.reservation_id {
                Some(id) => Some(id),
                None => {
                    self.clients.inventory.reservation_by_reference(&reference).await.map_err(dependency)?.map(|r| r.id)
                }
            };
            if let Some(reservation) = reservation {
                let why = format!("order {}", order.status.as_str().to_ascii_lowercase());
                self.clients.inventory.release("orders", reservation, Some(&why)).await.map_err(dependency)?;
            }
            self.clients.cart.release_coupon(&reference).await.map_err(dependency)?;
            // An unresolved payment is given up on; if it was charged after all, refund it.
            self.clients.payments.give_up(&reference).await.map_err(dependency)?;
            self.refund_all(&order, &format!("order {}", order.status.as_str().to_ascii_lowercase())).await?;
        }
        store::mark_settled(&self.db, id).await?;
        Ok(())
    }

    /// Refunds whatever of the order's payment was charged and not yet given back.
    async fn refund_all(&self, order: &Order, reason: &str) -> Result<()> {
        self.refund(order, None, reason, "all").await
    }

    async fn refund(&self, order: &Order, amount: Option<i64>, reason: &str, kind: &str) -> Result<()> {
        let reference = order.id.to_string();
        let Some(payment) = self.clients.payments.current(&reference).await.map_err(dependency)? else { return Ok(()) };
        let left = payment.amount.amount - payment.refunded;
        if !payment.status.was_charged() || left == 0 {
            return Ok(store::set_payment(&self.db, order.id, &summary(&payment)).await?);
        }
        let amount = amount.map(|a| a.min(left));
        let key = format!("order:{}:refund-{kind}", order.id);
        let payment = self.clients.payments.refund(&reference, amount, reason, &key).await.map_err(dependency)?;
        store::set_payment(&self.db, order.id, &summary(&payment)).await?;
        Ok(())
    }

    /// Puts returned units back in the warehouses that shipped them.
    async fn restock_returns(&self, order: &Order) -> Result<()> {
        for (product, mut quantity) in store::restock_lines(&self.db, order.id).await? {
            for shipment in &order.shipments {
                let Some(line) = shipment.lines.iter().find(|l| l.product_id == product) else { continue };
                let take = quantity.min(line.quantity);
                if take == 0 {
                    continue;
                }
                let reason = format!("return of order {}", order.id);
                // An order is returned once, so this names the movement: a settlement retried
                // after a crash finds it done instead of restocking twice.
                let key = format!("return:{}:{product}:{}", order.id, shipment.warehouse_id);
                self.clients
                    .inventory
                    .restock("orders", shipment.warehouse_id, product, take, &reason, &key)
                    .await
                    .map_err(dependency)?;
                quantity -= take;
            }
        }
        Ok(())
    }

    // --- the worker -------------------------------------------------------------------------------

    /// An unpaid checkout whose hold ran out: a payment that succeeded after all confirms it (or
    /// is refunded if the stock is gone), otherwise it expires and gives everything back.
    async fn expire(&self, id: OrderId) -> Result<()> {
        let order = self.load(id).await?;
        if order.status != OrderStatus::PaymentPending {
            return Ok(());
        }
        if let Some(payment) = self.clients.payments.give_up(&id.to_string()).await.map_err(dependency)? {
            store::set_payment(&self.db, id, &summary(&payment)).await?;
            if payment.status == PaymentStatus::Captured {
                return self.confirm(id).await;
            }
        }
        self.change(&order, OrderStatus::Expired, WORKER, Some("not paid before the stock hold expired")).await?;
        self.settle(id).await
    }

    /// One pass of the worker: expire unpaid checkouts, recover interrupted ones, finish
    /// compensations, split confirmed orders whose event was lost, complete delivered orders.
    pub async fn run_once(&self) -> Result<usize> {
        let now = self.clock.now();
        let mut done = 0;
        for id in store::due_to_expire(&self.db, now, 100).await? {
            self.expire(id).await?;
            done += 1;
        }
        let stale = now - chrono::Duration::from_std(STALE_CREATED).expect("small");
        for id in store::in_status_since(&self.db, OrderStatus::Created, stale, 100).await? {
            let order = self.load(id).await?;
            self.change(&order, OrderStatus::Cancelled, WORKER, Some("the checkout was interrupted")).await?;
            self.settle(id).await?;
            done += 1;
        }
        let stale = now - chrono::Duration::from_std(STALE_UNSETTLED).expect("small");
        for id in store::unsettled(&self.db, stale, 100).await? {
            self.settle(id).await?;
        }
        let stale = now - chrono::Duration::from_std(STALE_CONFIRMED).expect("small");
        for id in store::in_status_since(&self.db, OrderStatus::Confirmed, stale, 100).await? {
            self.assign_warehouses(id).await?;
        }
        for id in store::due_to_complete(&self.db, now - self.settings.return_window, 100).await? {
            let order = self.load(id).await?;
            if self.change(&order, OrderStatus::Completed, WORKER, Some("the return window closed")).await? {
                done += 1;
            }
        }
        Ok(done)
    }

    /// Runs at once (recovering what a crash left) and then every `interval` until shutdown.
    pub async fn run_worker(self: Arc<Self>, interval: Duration, shutdown: CancellationToken) {
        loop {
            if let Err(err) = self.run_once().await {
                tracing::warn!(error = %err, "order worker pass failed; will retry");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
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
    }
}

fn destination(address: &ShippingAddress) -> Destination {
    let point = match (address.lat, address.lon) {
        (Some(lat), Some(lon)) => GeoPoint::new(lat, lon).ok(),
        _ => None,
    };
    Destination { point, postal_code: Some(address.postal_code.clone()) }
}
