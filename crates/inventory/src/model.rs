//! Inventory types and rules, free of I/O: stock figures and their invariant, warehouse coverage,
//! the placement of reservation lines in warehouses, reservation states and delivery estimates.

use chrono::{DateTime, Utc};
use emporium_kernel::geo::{Coverage, Destination, GeoPoint, coverage};
use emporium_kernel::ids::{ProductId, ReservationId, WarehouseId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most units one movement or reservation line may carry; a typo of 10⁹ is refused, not booked.
pub const MAX_QUANTITY: i64 = 1_000_000;
/// How many of the nearest covering warehouses decide deliverability.
pub const NEAREST_WAREHOUSES: usize = 5;

/// A positive number of units, at most [`MAX_QUANTITY`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Quantity(i64);

impl Quantity {
    pub fn parse(value: i64) -> Result<Quantity, String> {
        if (1..=MAX_QUANTITY).contains(&value) {
            Ok(Quantity(value))
        } else {
            Err(format!("must be a whole number between 1 and {MAX_QUANTITY}"))
        }
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Warehouse {
    pub id: WarehouseId,
    pub name: String,
    pub address: String,
    pub location: GeoPoint,
    /// Deliveries reach addresses within this distance…
    pub delivery_radius_km: f64,
    /// …or whose postal code starts with one of these.
    pub postal_prefixes: Vec<String>,
    /// Inactive warehouses keep their stock records but take no new reservations.
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Warehouse {
    /// Whether this warehouse delivers to `to`, and how far away it is when that is known.
    pub fn coverage(&self, to: &Destination) -> Coverage {
        let area = coverage(self.location, self.delivery_radius_km, &self.postal_prefixes, to);
        Coverage { covers: self.active && area.covers, ..area }
    }
}

/// The figures of one (product, warehouse) row.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockLevels {
    pub on_hand: i64,
    pub available: i64,
    pub reserved: i64,
    pub allocated: i64,
    pub shipped: i64,
}

impl StockLevels {
    /// on_hand = available + reserved + allocated, every figure ≥ 0 (the database enforces the
    /// same; this is for audits and tests).
    pub fn is_consistent(&self) -> bool {
        [self.on_hand, self.available, self.reserved, self.allocated, self.shipped].iter().all(|v| *v >= 0)
            && self.on_hand == self.available + self.reserved + self.allocated
    }

    pub fn add(&mut self, delta: &StockLevels) {
        self.on_hand += delta.on_hand;
        self.available += delta.available;
        self.reserved += delta.reserved;
        self.allocated += delta.allocated;
        self.shipped += delta.shipped;
    }
}

/// A kind of stock movement and the change it makes to the figures (the ledger stores both).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Movement {
    /// Goods received: on_hand and available up.
    Intake,
    /// A correction or write-off (negative) or a found item (positive), with a reason.
    Adjustment,
    /// Held for a checkout: available → reserved.
    Reserve,
    /// A checkout gave up: reserved → available.
    Release,
    /// A hold ran out of time: reserved → available.
    Expire,
    /// Paid: reserved → allocated.
    Commit,
    /// Left the building: allocated and on_hand down, shipped up.
    Ship,
    /// Allocated but cancelled before shipping: allocated → available.
    Deallocate,
}

impl Movement {
    pub fn as_str(self) -> &'static str {
        match self {
            Movement::Intake => "intake",
            Movement::Adjustment => "adjustment",
            Movement::Reserve => "reserve",
            Movement::Release => "release",
            Movement::Expire => "expire",
            Movement::Commit => "commit",
            Movement::Ship => "ship",
            Movement::Deallocate => "deallocate",
        }
    }

    pub fn parse(s: &str) -> Option<Movement> {
        [
            Movement::Intake,
            Movement::Adjustment,
            Movement::Reserve,
            Movement::Release,
            Movement::Expire,
            Movement::Commit,
            Movement::Ship,
            Movement::Deallocate,
        ]
        .into_iter()
        .find(|m| m.as_str() == s)
    }

    /// The change `quantity` units of this movement make (signed for adjustments).
    pub fn delta(self, quantity: i64) -> StockLevels {
        let q = quantity;
        let zero = StockLevels::default();
        match self {
            Movement::Intake | Movement::Adjustment => StockLevels { on_hand: q, available: q, ..zero },
            Movement::Reserve => StockLevels { available: -q, reserved: q, ..zero },
            Movement::Release | Movement::Expire => StockLevels { available: q, reserved: -q, ..zero },
            Movement::Commit => StockLevels { reserved: -q, allocated: q, ..zero },
            Movement::Ship => StockLevels { on_hand: -q, allocated: -q, shipped: q, ..zero },
            Movement::Deallocate => StockLevels { available: q, allocated: -q, ..zero },
        }
    }
}

/// One requested line of a reservation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineRequest {
    pub product_id: ProductId,
    pub quantity: Quantity,
}

/// A warehouse that could supply a product, as the strategy sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    pub warehouse_id: WarehouseId,
    pub available: i64,
    pub distance_km: Option<f64>,
}

/// Orders the candidate warehouses of one line; lines are filled from the front.
pub trait WarehouseStrategy: Send + Sync + 'static {
    fn rank(&self, candidates: &mut [Candidate]);
}

/// The default: the nearest warehouse that can deliver, then the one with most stock (so a line
/// splits over as few warehouses as possible when distance does not decide).
pub struct NearestThenMostStock;

impl WarehouseStrategy for NearestThenMostStock {
    fn rank(&self, candidates: &mut [Candidate]) {
        candidates.sort_by(|a, b| {
            let distance = |c: &Candidate| c.distance_km.unwrap_or(f64::INFINITY);
            distance(a)
                .total_cmp(&distance(b))
                .then(b.available.cmp(&a.available))
                .then(a.warehouse_id.cmp(&b.warehouse_id))
        });
    }
}

/// Units of a product taken from one warehouse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Placement {
    pub product_id: ProductId,
    pub warehouse_id: WarehouseId,
    pub quantity: i64,
}

/// A line that cannot be met in full (the 409 names every one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Shortage {
    pub product_id: ProductId,
    pub requested: i64,
    /// Units the warehouses that may supply this line have (those delivering to the
    /// destination, when one is given).
    pub available: i64,
    #[serde(default)]
    pub reason: ShortageReason,
}

/// Why a line is short: what a shopper can do about it differs (wait or buy fewer, or ship
/// elsewhere).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ShortageReason {
    /// Not enough units anywhere.
    #[default]
    OutOfStock,
    /// Enough units, but not in warehouses that deliver to the destination.
    NotDeliverable,
}

/// Gives each shortage its reason. `anywhere` holds, per product, the units available in every
/// active warehouse, whether or not it delivers to the destination.
pub fn explain_shortages(shortages: Vec<Shortage>, anywhere: &BTreeMap<ProductId, i64>) -> Vec<Shortage> {
    shortages
        .into_iter()
        .map(|s| {
            let elsewhere = anywhere.get(&s.product_id).copied().unwrap_or(0);
            let reason =
                if elsewhere >= s.requested { ShortageReason::NotDeliverable } else { ShortageReason::OutOfStock };
            Shortage { reason, ..s }
        })
        .collect()
}

/// Merges repeated products (two lines of the same product are one line of their sum).
pub fn merge_lines(lines: &[LineRequest]) -> Result<Vec<(ProductId, i64)>, String> {
    let mut merged: BTreeMap<ProductId, i64> = BTreeMap::new();
    for line in lines {
        *merged.entry(line.product_id).or_default() += line.quantity.get();
    }
    if merged.values().any(|q| *q > MAX_QUANTITY) {
        return Err(format!("a product's total quantity must be at most {MAX_QUANTITY}"));
    }
    Ok(merged.into_iter().collect())
}

/// Places every line in warehouses, all or nothing. `candidates` holds, per product, the
/// warehouses that may supply it (already restricted to those covering the destination).
/// The result is sorted by (product, warehouse): the fixed order rows are locked in, so two
/// reservations never wait on each other in opposite orders.
pub fn place(
    lines: &[(ProductId, i64)],
    candidates: &BTreeMap<ProductId, Vec<Candidate>>,
    strategy: &dyn WarehouseStrategy,
) -> Result<Vec<Placement>, Vec<Shortage>> {
    let mut placements = Vec::new();
    let mut shortages = Vec::new();
    for &(product_id, requested) in lines {
        let mut ranked = candidates.get(&product_id).cloned().unwrap_or_default();
        ranked.retain(|c| c.available > 0);
        strategy.rank(&mut ranked);
        let total: i64 = ranked.iter().map(|c| c.available).sum();
        if total < requested {
            shortages.push(Shortage { product_id, requested, available: total, reason: ShortageReason::OutOfStock });
            continue;
        }
        let mut left = requested;
        for candidate in ranked {
            if left == 0 {
                break;
            }
            let take = left.min(candidate.available);
            placements.push(Placement { product_id, warehouse_id: candidate.warehouse_id, quantity: take });
            left -= take;
        }
    }
    if !shortages.is_empty() {
        return Err(shortages);
    }
    placements.sort();
    Ok(placements)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReservationStatus {
    /// Stock is held until `expires_at`.
    Held,
    /// Paid for: the stock is allocated to the order.
    Committed,
    /// Given back before expiry (checkout cancelled, payment failed).
    Released,
    /// Ran out of time and was given back by the sweeper.
    Expired,
}

impl ReservationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ReservationStatus::Held => "held",
            ReservationStatus::Committed => "committed",
            ReservationStatus::Released => "released",
            ReservationStatus::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<ReservationStatus> {
        match s {
            "held" => Some(ReservationStatus::Held),
            "committed" => Some(ReservationStatus::Committed),
            "released" => Some(ReservationStatus::Released),
            "expired" => Some(ReservationStatus::Expired),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReservationLine {
    pub product_id: ProductId,
    pub warehouse_id: WarehouseId,
    pub quantity: i64,
    pub shipped: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reservation {
    pub id: ReservationId,
    /// The caller's handle (an order id): reserving twice with one reference is one reservation.
    pub reference: String,
    pub status: ReservationStatus,
    pub expires_at: DateTime<Utc>,
    pub lines: Vec<ReservationLine>,
    pub created_at: DateTime<Utc>,
}

/// What may happen to a reservation now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitDecision {
    Commit,
    /// Already committed: a retried commit is a no-op.
    AlreadyCommitted,
    /// Its time ran out (even if the sweeper has not got to it yet): never committed.
    Expired,
    Released,
}

pub fn decide_commit(status: ReservationStatus, expires_at: DateTime<Utc>, now: DateTime<Utc>) -> CommitDecision {
    match status {
        ReservationStatus::Committed => CommitDecision::AlreadyCommitted,
        ReservationStatus::Released => CommitDecision::Released,
        ReservationStatus::Expired => CommitDecision::Expired,
        ReservationStatus::Held if now >= expires_at => CommitDecision::Expired,
        ReservationStatus::Held => CommitDecision::Commit,
    }
}

/// Days to deliver over `distance_km`: next day within 50 km, then a day per further 300 km.
pub fn eta_days(distance_km: f64) -> u32 {
    if distance_km <= 50.0 { 1 } else { 2 + ((distance_km - 50.0) / 300.0).floor() as u32 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn warehouse(lat: f64, lon: f64, radius: f64, prefixes: &[&str]) -> Warehouse {
        let now = Utc::now();
        Warehouse {
            id: WarehouseId::new(),
            name: "W".into(),
            address: "somewhere".into(),
            location: GeoPoint::new(lat, lon).unwrap(),
            delivery_radius_km: radius,
            postal_prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
            active: true,
            created_at: now,
            updated_at: now,
        }
    }

    fn q(n: i64) -> Quantity {
        Quantity::parse(n).unwrap()
    }

    #[test]
    fn quantities_are_positive_and_bounded() {
        assert!(Quantity::parse(0).is_err());
        assert!(Quantity::parse(-3).is_err());
        assert!(Quantity::parse(MAX_QUANTITY + 1).is_err());
        assert_eq!(Quantity::parse(7).unwrap().get(), 7);
    }

    #[test]
    fn movements_keep_the_invariant() {
        let mut levels = StockLevels::default();
        for (movement, n) in [
            (Movement::Intake, 10),
            (Movement::Reserve, 4),
            (Movement::Commit, 3),
            (Movement::Release, 1),
            (Movement::Ship, 2),
            (Movement::Deallocate, 1),
            (Movement::Adjustment, -2),
        ] {
            levels.add(&movement.delta(n));
            assert!(levels.is_consistent(), "{movement:?} broke {levels:?}");
        }
        assert_eq!(levels, StockLevels { on_hand: 6, available: 6, reserved: 0, allocated: 0, shipped: 2 });
        assert!(!StockLevels { on_hand: 1, available: 2, ..Default::default() }.is_consistent());
        for m in ["intake", "ship", "expire"] {
            assert_eq!(Movement::parse(m).unwrap().as_str(), m);
        }
    }

    #[test]
    fn coverage_by_radius_or_postal_prefix() {
        let berlin = warehouse(52.52, 13.405, 100.0, &["10", "12"]);
        let potsdam = GeoPoint::new(52.39, 13.06).unwrap();
        let munich = GeoPoint::new(48.14, 11.58).unwrap();
        let near = berlin.coverage(&Destination { point: Some(potsdam), postal_code: None });
        assert!(near.covers && near.distance_km.unwrap() < 40.0);
        assert!(!berlin.coverage(&Destination { point: Some(munich), postal_code: None }).covers);
        assert!(berlin.coverage(&Destination { point: None, postal_code: Some("10 115".into()) }).covers);
        assert!(!berlin.coverage(&Destination { point: None, postal_code: Some("80331".into()) }).covers);
        let closed = Warehouse { active: false, ..berlin };
        assert!(!closed.coverage(&Destination { point: Some(potsdam), postal_code: None }).covers);
    }

    #[test]
    fn strategy_prefers_nearest_then_most_stock() {
        let (a, b, c) = (WarehouseId::new(), WarehouseId::new(), WarehouseId::new());
        let mut ranked = vec![
            Candidate { warehouse_id: a, available: 5, distance_km: Some(30.0) },
            Candidate { warehouse_id: b, available: 1, distance_km: Some(10.0) },
            Candidate { warehouse_id: c, available: 9, distance_km: None },
        ];
        NearestThenMostStock.rank(&mut ranked);
        assert_eq!(ranked.iter().map(|c| c.warehouse_id).collect::<Vec<_>>(), [b, a, c]);
        let mut no_distance = vec![
            Candidate { warehouse_id: a, available: 2, distance_km: None },
            Candidate { warehouse_id: b, available: 8, distance_km: None },
        ];
        NearestThenMostStock.rank(&mut no_distance);
        assert_eq!(no_distance[0].warehouse_id, b);
    }

    #[test]
    fn placement_splits_lines_and_is_all_or_nothing() {
        let (p1, p2) = (ProductId::new(), ProductId::new());
        let (near, far) = (WarehouseId::new(), WarehouseId::new());
        let mut candidates = BTreeMap::new();
        candidates.insert(
            p1,
            vec![
                Candidate { warehouse_id: far, available: 10, distance_km: Some(90.0) },
                Candidate { warehouse_id: near, available: 3, distance_km: Some(5.0) },
            ],
        );
        candidates.insert(p2, vec![Candidate { warehouse_id: far, available: 1, distance_km: Some(90.0) }]);

        let lines = merge_lines(&[
            LineRequest { product_id: p1, quantity: q(2) },
            LineRequest { product_id: p1, quantity: q(3) },
        ])
        .unwrap();
        let placed = place(&lines, &candidates, &NearestThenMostStock).unwrap();
        let mut expected = vec![
            Placement { product_id: p1, warehouse_id: near, quantity: 3 },
            Placement { product_id: p1, warehouse_id: far, quantity: 2 },
        ];
        expected.sort();
        assert_eq!(placed, expected);

        let lines = [(p1, 1), (p2, 2), (ProductId::new(), 1)];
        let shortages = place(&lines, &candidates, &NearestThenMostStock).unwrap_err();
        assert_eq!(shortages.len(), 2, "every short line is named: {shortages:?}");
        assert_eq!(
            shortages[0],
            Shortage { product_id: p2, requested: 2, available: 1, reason: ShortageReason::OutOfStock }
        );
        assert_eq!(shortages[1].available, 0);
    }

    #[test]
    fn a_line_that_other_warehouses_could_meet_is_not_deliverable_rather_than_sold_out() {
        let (far_only, scarce, unknown) = (ProductId::new(), ProductId::new(), ProductId::new());
        let short = |product_id, requested, available| Shortage {
            product_id,
            requested,
            available,
            reason: ShortageReason::OutOfStock,
        };
        let anywhere = BTreeMap::from([(far_only, 5), (scarce, 3)]);
        let explained =
            explain_shortages(vec![short(far_only, 5, 0), short(scarce, 4, 1), short(unknown, 1, 0)], &anywhere);
        let reasons: Vec<ShortageReason> = explained.iter().map(|s| s.reason).collect();
        assert_eq!(reasons, [ShortageReason::NotDeliverable, ShortageReason::OutOfStock, ShortageReason::OutOfStock]);
        assert_eq!(explained[0].available, 0, "what the destination can get is unchanged");
        assert_eq!(
            serde_json::to_value(explained[0]).unwrap()["reason"],
            "not_deliverable",
            "the 409's lines say it in snake_case"
        );
    }

    #[test]
    fn expired_or_released_holds_are_never_committed() {
        let now = Utc::now();
        let later = now + chrono::Duration::minutes(10);
        assert_eq!(decide_commit(ReservationStatus::Held, later, now), CommitDecision::Commit);
        assert_eq!(decide_commit(ReservationStatus::Held, now, now), CommitDecision::Expired);
        assert_eq!(decide_commit(ReservationStatus::Expired, later, now), CommitDecision::Expired);
        assert_eq!(decide_commit(ReservationStatus::Released, later, now), CommitDecision::Released);
        assert_eq!(decide_commit(ReservationStatus::Committed, now, later), CommitDecision::AlreadyCommitted);
    }

    #[test]
    fn eta_grows_with_distance() {
        assert_eq!(eta_days(3.0), 1);
        assert_eq!(eta_days(50.0), 1);
        assert_eq!(eta_days(51.0), 2);
        assert_eq!(eta_days(400.0), 3);
    }
}
