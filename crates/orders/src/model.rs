//! Orders, their state machine (DESIGN.md §5) and the arithmetic of splitting and returning:
//! pure, no I/O.

use chrono::{DateTime, Utc};
use emporium_kernel::ids::{
    DeliveryPartnerId, OrderId, PaymentId, ProductId, ReservationId, UserId, WarehouseId, WarehouseOrderId,
};
use emporium_kernel::money::Money;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    Created,
    PaymentPending,
    Confirmed,
    Processing,
    Shipped,
    Delivered,
    Completed,
    PaymentFailed,
    Expired,
    Cancelled,
    Returned,
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 11] = [
        OrderStatus::Created,
        OrderStatus::PaymentPending,
        OrderStatus::Confirmed,
        OrderStatus::Processing,
        OrderStatus::Shipped,
        OrderStatus::Delivered,
        OrderStatus::Completed,
        OrderStatus::PaymentFailed,
        OrderStatus::Expired,
        OrderStatus::Cancelled,
        OrderStatus::Returned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Created => "CREATED",
            OrderStatus::PaymentPending => "PAYMENT_PENDING",
            OrderStatus::Confirmed => "CONFIRMED",
            OrderStatus::Processing => "PROCESSING",
            OrderStatus::Shipped => "SHIPPED",
            OrderStatus::Delivered => "DELIVERED",
            OrderStatus::Completed => "COMPLETED",
            OrderStatus::PaymentFailed => "PAYMENT_FAILED",
            OrderStatus::Expired => "EXPIRED",
            OrderStatus::Cancelled => "CANCELLED",
            OrderStatus::Returned => "RETURNED",
        }
    }

    pub fn parse(raw: &str) -> Option<OrderStatus> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    /// The transitions of DESIGN.md §5. CANCELLED is reachable until SHIPPED (from CREATED only
    /// when a checkout was interrupted or ran out of stock); RETURNED only after DELIVERED.
    pub fn can_become(self, to: OrderStatus) -> bool {
        use OrderStatus::*;
        matches!(
            (self, to),
            (Created, PaymentPending | Cancelled)
                | (PaymentPending, Confirmed | PaymentFailed | Expired | Cancelled)
                | (Confirmed, Processing | Cancelled)
                | (Processing, Shipped | Cancelled)
                | (Shipped, Delivered)
                | (Delivered, Completed | Returned)
        )
    }

    /// States whose stock and money must be given back (and then nothing else happens).
    pub fn needs_settling(self) -> bool {
        matches!(
            self,
            OrderStatus::PaymentFailed | OrderStatus::Expired | OrderStatus::Cancelled | OrderStatus::Returned
        )
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("an order that is {from} cannot become {to}")]
pub struct IllegalTransition {
    pub from: &'static str,
    pub to: &'static str,
}

pub fn check_transition(from: OrderStatus, to: OrderStatus) -> Result<(), IllegalTransition> {
    if from.can_become(to) { Ok(()) } else { Err(IllegalTransition { from: from.as_str(), to: to.as_str() }) }
}

/// A line as ordered: the title and price are a snapshot, whatever the catalog does later.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrderLine {
    pub product_id: ProductId,
    pub title: String,
    pub unit_price: Money,
    pub quantity: i64,
    pub line_total: Money,
    pub returned_quantity: i64,
}

/// Where the order goes, copied from the address book when the checkout began.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ShippingAddress {
    pub address_id: String,
    pub line1: String,
    pub line2: Option<String>,
    pub city: String,
    pub region: Option<String>,
    pub postal_code: String,
    pub country: String,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HistoryEntry {
    pub status: OrderStatus,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub reason: Option<String>,
}

/// What the order knows of its payment (kept up to date from the payments service).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PaymentSummary {
    /// The payment's id (what `POST /payments/{id}/refund` takes); absent on orders recorded
    /// before it was kept.
    pub id: Option<PaymentId>,
    pub status: String,
    pub gateway: Option<String>,
    pub transaction_id: Option<String>,
    pub refunded: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ShipmentStatus {
    Pending,
    Shipped,
    Delivered,
    Cancelled,
}

impl ShipmentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ShipmentStatus::Pending => "PENDING",
            ShipmentStatus::Shipped => "SHIPPED",
            ShipmentStatus::Delivered => "DELIVERED",
            ShipmentStatus::Cancelled => "CANCELLED",
        }
    }

    pub fn parse(raw: &str) -> Option<ShipmentStatus> {
        [ShipmentStatus::Pending, ShipmentStatus::Shipped, ShipmentStatus::Delivered, ShipmentStatus::Cancelled]
            .into_iter()
            .find(|s| s.as_str() == raw)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ShipmentLine {
    pub product_id: ProductId,
    pub quantity: i64,
}

/// A warehouse order as the staff who pick and pack it need it: where it goes and what its
/// lines are called.
#[derive(Clone, Debug, PartialEq)]
pub struct PickList {
    pub shipment: WarehouseOrder,
    pub shipping_address: ShippingAddress,
    /// Each line's product title, as the order recorded it.
    pub titles: std::collections::HashMap<ProductId, String>,
}

/// Seed 001's WarehouseOrder: the part of an order one warehouse ships.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WarehouseOrder {
    pub id: WarehouseOrderId,
    pub order_id: OrderId,
    pub warehouse_id: WarehouseId,
    pub status: ShipmentStatus,
    pub lines: Vec<ShipmentLine>,
    pub shipped_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// Who carries it, once the delivery service has assigned a partner.
    pub delivery_partner_id: Option<DeliveryPartnerId>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Order {
    pub id: OrderId,
    pub user_id: UserId,
    pub status: OrderStatus,
    pub lines: Vec<OrderLine>,
    pub subtotal: Money,
    pub discount: Money,
    pub total: Money,
    pub coupon_code: Option<String>,
    pub shipping_address: ShippingAddress,
    pub reservation_id: Option<ReservationId>,
    pub expires_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub idempotency_key: Option<String>,
    pub payment: Option<PaymentSummary>,
    pub settled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub history: Vec<HistoryEntry>,
    pub shipments: Vec<WarehouseOrder>,
}

/// Groups reserved (product, warehouse, quantity) placements into one shipment per warehouse.
pub fn split_by_warehouse(placements: &[(ProductId, WarehouseId, i64)]) -> BTreeMap<WarehouseId, Vec<ShipmentLine>> {
    let mut out: BTreeMap<WarehouseId, Vec<ShipmentLine>> = BTreeMap::new();
    for &(product_id, warehouse, quantity) in placements {
        let lines = out.entry(warehouse).or_default();
        match lines.iter_mut().find(|l| l.product_id == product_id) {
            Some(line) => line.quantity += quantity,
            None => lines.push(ShipmentLine { product_id, quantity }),
        }
    }
    out
}

/// The parent's status once its shipments are as given: SHIPPED when every one left, DELIVERED
/// when every one arrived (cancelled shipments do not count).
pub fn parent_status(shipments: &[ShipmentStatus]) -> Option<OrderStatus> {
    let live: Vec<_> = shipments.iter().filter(|s| **s != ShipmentStatus::Cancelled).collect();
    if live.is_empty() {
        return None;
    }
    if live.iter().all(|s| **s == ShipmentStatus::Delivered) {
        Some(OrderStatus::Delivered)
    } else if live.iter().all(|s| matches!(s, ShipmentStatus::Shipped | ShipmentStatus::Delivered)) {
        Some(OrderStatus::Shipped)
    } else {
        None
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReturnRejection {
    #[error("the return window closed on {0}")]
    WindowClosed(DateTime<Utc>),
    #[error("{0} is not part of this order")]
    UnknownProduct(ProductId),
    #[error("at most {allowed} units of {product} can be returned")]
    TooMany { product: ProductId, allowed: i64 },
}

/// Whether a return is still possible at `now` for an order delivered at `delivered_at`.
pub fn return_window_open(
    delivered_at: DateTime<Utc>,
    window: chrono::Duration,
    now: DateTime<Utc>,
) -> Result<(), ReturnRejection> {
    let closes = delivered_at + window;
    if now <= closes { Ok(()) } else { Err(ReturnRejection::WindowClosed(closes)) }
}

/// The amount to refund for returning `returned` units: their share of what was paid, so an
/// order-level discount is returned in proportion (rounded down: never refund more than paid).
pub fn refund_for_return(order: &Order, returned: &[(ProductId, i64)]) -> Result<i64, ReturnRejection> {
    let mut value = 0i64;
    for &(product, quantity) in returned {
        let line =
            order.lines.iter().find(|l| l.product_id == product).ok_or(ReturnRejection::UnknownProduct(product))?;
        let allowed = line.quantity - line.returned_quantity;
        if quantity < 1 || quantity > allowed {
            return Err(ReturnRejection::TooMany { product, allowed });
        }
        value += line.unit_price.amount * quantity;
    }
    Ok(share_paid(order, value))
}

/// What `value` (at list prices) of the order cost the customer: the order-level discount is
/// spread in proportion, rounded down so a refund never exceeds what was paid.
fn share_paid(order: &Order, value: i64) -> i64 {
    if order.subtotal.amount == 0 {
        return 0;
    }
    ((value as i128) * (order.total.amount as i128) / (order.subtotal.amount as i128)) as i64
}

/// What the recorded returns of `order` are worth (see [`refund_for_return`]).
pub fn refund_due_for_returns(order: &Order) -> i64 {
    share_paid(order, order.lines.iter().map(|l| l.unit_price.amount * l.returned_quantity).sum())
}

#[cfg(test)]
mod tests {
    use super::*;
    use emporium_kernel::money::Currency;

    #[test]
    fn the_state_machine_allows_exactly_the_designed_transitions() {
        use OrderStatus::*;
        let allowed = [
            (Created, PaymentPending),
            (Created, Cancelled),
            (PaymentPending, Confirmed),
            (PaymentPending, PaymentFailed),
            (PaymentPending, Expired),
            (PaymentPending, Cancelled),
            (Confirmed, Processing),
            (Confirmed, Cancelled),
            (Processing, Shipped),
            (Processing, Cancelled),
            (Shipped, Delivered),
            (Delivered, Completed),
            (Delivered, Returned),
        ];
        for from in OrderStatus::ALL {
            for to in OrderStatus::ALL {
                assert_eq!(from.can_become(to), allowed.contains(&(from, to)), "{from:?} → {to:?}");
            }
        }
        assert!(check_transition(Shipped, Cancelled).is_err(), "no cancel once shipped");
        assert!(check_transition(Processing, Returned).is_err(), "no return before delivery");
    }

    #[test]
    fn statuses_round_trip() {
        for s in OrderStatus::ALL {
            assert_eq!(OrderStatus::parse(s.as_str()), Some(s));
        }
    }

    #[test]
    fn placements_split_into_one_shipment_per_warehouse() {
        let (p1, p2) = (ProductId::new(), ProductId::new());
        let (w1, w2) = (WarehouseId::new(), WarehouseId::new());
        let split = split_by_warehouse(&[(p1, w1, 2), (p2, w1, 1), (p1, w2, 3)]);
        assert_eq!(split.len(), 2);
        assert_eq!(
            split[&w1],
            vec![ShipmentLine { product_id: p1, quantity: 2 }, ShipmentLine { product_id: p2, quantity: 1 }]
        );
        assert_eq!(split[&w2], vec![ShipmentLine { product_id: p1, quantity: 3 }]);
    }

    #[test]
    fn the_parent_follows_its_shipments() {
        use ShipmentStatus::*;
        assert_eq!(parent_status(&[Pending, Shipped]), None);
        assert_eq!(parent_status(&[Shipped, Shipped]), Some(OrderStatus::Shipped));
        assert_eq!(parent_status(&[Delivered, Shipped]), Some(OrderStatus::Shipped));
        assert_eq!(parent_status(&[Delivered, Delivered]), Some(OrderStatus::Delivered));
        assert_eq!(parent_status(&[Cancelled]), None);
    }

    fn order(lines: &[(i64, i64)], discount: i64) -> Order {
        let usd = |a| Money::new(a, Currency::USD);
        let lines: Vec<OrderLine> = lines
            .iter()
            .map(|&(price, qty)| OrderLine {
                product_id: ProductId::new(),
                title: "x".into(),
                unit_price: usd(price),
                quantity: qty,
                line_total: usd(price * qty),
                returned_quantity: 0,
            })
            .collect();
        let subtotal: i64 = lines.iter().map(|l| l.line_total.amount).sum();
        Order {
            id: OrderId::new(),
            user_id: UserId::new(),
            status: OrderStatus::Delivered,
            lines,
            subtotal: usd(subtotal),
            discount: usd(discount),
            total: usd(subtotal - discount),
            coupon_code: None,
            shipping_address: ShippingAddress {
                address_id: String::new(),
                line1: String::new(),
                line2: None,
                city: String::new(),
                region: None,
                postal_code: String::new(),
                country: "DE".into(),
                lat: None,
                lon: None,
            },
            reservation_id: None,
            expires_at: None,
            delivered_at: None,
            idempotency_key: None,
            payment: None,
            settled: false,
            created_at: Utc::now(),
            updated_at: Utc::now(),
            history: Vec::new(),
            shipments: Vec::new(),
        }
    }

    #[test]
    fn returns_refund_their_share_of_what_was_paid() {
        let o = order(&[(1000, 2), (500, 1)], 250); // subtotal 2500, paid 2250
        let (a, b) = (o.lines[0].product_id, o.lines[1].product_id);
        assert_eq!(refund_for_return(&o, &[(a, 2), (b, 1)]), Ok(2250), "everything back: what was paid");
        assert_eq!(refund_for_return(&o, &[(a, 1)]), Ok(900), "1000 of 2500 → 40 % of 2250");
        let mut returned = o.clone();
        returned.lines[0].returned_quantity = 1;
        assert_eq!(refund_due_for_returns(&returned), 900, "the recorded return is worth what was promised");
        assert_eq!(refund_for_return(&o, &[(a, 3)]), Err(ReturnRejection::TooMany { product: a, allowed: 2 }));
        let stranger = ProductId::new();
        assert_eq!(refund_for_return(&o, &[(stranger, 1)]), Err(ReturnRejection::UnknownProduct(stranger)));
    }

    #[test]
    fn the_return_window_closes() {
        let delivered = Utc::now();
        let window = chrono::Duration::days(14);
        assert!(return_window_open(delivered, window, delivered + chrono::Duration::days(14)).is_ok());
        assert!(return_window_open(delivered, window, delivered + chrono::Duration::days(15)).is_err());
    }
}
