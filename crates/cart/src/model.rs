//! Cart types and rules, free of I/O: whose cart it is, lines with their price snapshots, coupon
//! eligibility and discounts, merging a guest cart into a user's, and pricing a cart.

use chrono::{DateTime, Utc};
use emporium_kernel::ids::{CategoryId, CouponId, ProductId, UserId};
use emporium_kernel::money::{Currency, Money};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};

/// Whose cart: a signed-in user, or a guest known only by the token they hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CartOwner {
    User(UserId),
    /// The SHA-256 of the guest's cart token (the token itself is never stored).
    Guest(String),
}

impl CartOwner {
    pub fn guest(token: &str) -> CartOwner {
        CartOwner::Guest(emporium_kernel::sha256_hex(token))
    }

    /// The storage key.
    pub fn key(&self) -> String {
        match self {
            CartOwner::User(id) => format!("user:{id}"),
            CartOwner::Guest(hash) => format!("guest:{hash}"),
        }
    }

    pub fn user(&self) -> Option<UserId> {
        match self {
            CartOwner::User(id) => Some(*id),
            CartOwner::Guest(_) => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CartLine {
    pub product_id: ProductId,
    pub quantity: i64,
    /// The price when the line was added; the cart is re-priced from the catalog on every read.
    pub unit_price: Money,
    pub added_at: DateTime<Utc>,
}

/// A cart as stored.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CartData {
    pub lines: Vec<CartLine>,
    pub coupon: Option<String>,
}

/// A line's quantity: 1..=max (the shop's setting).
pub fn check_quantity(quantity: i64, max: i64) -> Result<i64, String> {
    if (1..=max).contains(&quantity) { Ok(quantity) } else { Err(format!("must be between 1 and {max}")) }
}

/// Merges a guest's lines into a user's: quantities summed, capped by the per-line maximum and
/// by `available` stock; the user's price snapshot is kept where both had the product.
pub fn merge_lines(
    user: &[CartLine],
    guest: &[CartLine],
    max: i64,
    available: impl Fn(ProductId) -> i64,
) -> Vec<CartLine> {
    let mut merged: BTreeMap<ProductId, CartLine> = BTreeMap::new();
    for line in user.iter().chain(guest) {
        merged
            .entry(line.product_id)
            .and_modify(|existing| existing.quantity += line.quantity)
            .or_insert_with(|| line.clone());
    }
    merged
        .into_values()
        .filter_map(|mut line| {
            line.quantity = line.quantity.min(max).min(available(line.product_id));
            (line.quantity > 0).then_some(line)
        })
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CouponKind {
    /// `value` is whole percent off.
    Percent,
    /// `value` is minor units off.
    Fixed,
}

impl CouponKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CouponKind::Percent => "percent",
            CouponKind::Fixed => "fixed",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Coupon {
    pub id: CouponId,
    /// Upper-case; codes compare case-insensitively.
    pub code: String,
    pub kind: CouponKind,
    pub value: i64,
    pub min_subtotal: Option<i64>,
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
    pub max_uses: Option<i64>,
    pub max_uses_per_user: Option<i64>,
    /// Only lines in these categories (or their sub-categories) are discounted; empty = all.
    pub category_ids: Vec<CategoryId>,
    pub created_at: DateTime<Utc>,
}

pub fn normalise_code(raw: &str) -> Result<String, String> {
    let code = raw.trim().to_ascii_uppercase();
    if (3..=32).contains(&code.len()) && code.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        Ok(code)
    } else {
        Err("must be 3 to 32 letters, digits, dashes or underscores".into())
    }
}

/// What a cart looks like to the coupon rules.
pub struct CouponContext<'a> {
    pub now: DateTime<Utc>,
    pub subtotal: i64,
    /// Per priced line: its total and every category it belongs to (own and ancestors).
    pub lines: &'a [(i64, Vec<CategoryId>)],
    pub user: Option<UserId>,
    pub uses: i64,
    pub uses_by_user: i64,
}

/// Why a coupon does not apply; the message is the 422's reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CouponRejection {
    #[error("this coupon is not valid yet")]
    NotStarted,
    #[error("this coupon has expired")]
    Expired,
    #[error("the cart subtotal must be at least {0} for this coupon")]
    BelowMinimum(i64),
    #[error("this coupon has been used up")]
    UsedUp,
    #[error("you have already used this coupon as often as allowed")]
    UsedUpByYou,
    #[error("sign in to use this coupon")]
    NeedsAccount,
    #[error("no item in the cart is eligible for this coupon")]
    NoEligibleItems,
}

impl Coupon {
    /// The discount in minor units, or why the coupon does not apply.
    pub fn discount(&self, cx: &CouponContext<'_>) -> Result<i64, CouponRejection> {
        if self.starts_at.is_some_and(|t| cx.now < t) {
            return Err(CouponRejection::NotStarted);
        }
        if self.ends_at.is_some_and(|t| cx.now >= t) {
            return Err(CouponRejection::Expired);
        }
        if let Some(min) = self.min_subtotal
            && cx.subtotal < min
        {
            return Err(CouponRejection::BelowMinimum(min));
        }
        if self.max_uses.is_some_and(|max| cx.uses >= max) {
            return Err(CouponRejection::UsedUp);
        }
        if let Some(max) = self.max_uses_per_user {
            if cx.user.is_none() {
                return Err(CouponRejection::NeedsAccount);
            }
            if cx.uses_by_user >= max {
                return Err(CouponRejection::UsedUpByYou);
            }
        }
        let wanted: HashSet<CategoryId> = self.category_ids.iter().copied().collect();
        let eligible: i64 = cx
            .lines
            .iter()
            .filter(|(_, categories)| wanted.is_empty() || categories.iter().any(|c| wanted.contains(c)))
            .map(|(total, _)| *total)
            .sum();
        if eligible == 0 {
            return Err(CouponRejection::NoEligibleItems);
        }
        Ok(match self.kind {
            // Rounded down: the shop never gives more than the stated percentage.
            CouponKind::Percent => eligible * self.value.min(100) / 100,
            CouponKind::Fixed => self.value.min(eligible),
        })
    }
}

/// A cart line as the shopper sees it, priced now.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PricedLine {
    pub product_id: ProductId,
    pub title: String,
    pub quantity: i64,
    /// The catalog's current price.
    pub unit_price: Money,
    /// The price when it was added.
    pub added_price: Money,
    pub line_total: Money,
    pub price_changed: bool,
    /// Enough available stock for this line's quantity, counting every warehouse.
    pub in_stock: bool,
    pub available: i64,
    /// Enough units for this line's quantity in the warehouses that deliver to the shopper's
    /// address (the signed-in shopper's default one, or `lat`/`lon`/`postal_code` on `GET
    /// /cart`); absent when no address is known. Checkout's reservation stays the judge.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deliverable: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CouponView {
    pub code: String,
    /// Set when the coupon no longer applies (it stays on the cart, discounting nothing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invalid_reason: Option<String>,
    /// The same reason as a rule of this crate can act on it; not carried across processes.
    #[serde(skip)]
    pub(crate) rejection: Option<CouponRejection>,
}

impl CouponView {
    pub(crate) fn new(code: String, rejection: Option<CouponRejection>) -> Self {
        CouponView { code, invalid_reason: rejection.as_ref().map(ToString::to_string), rejection }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PricedCart {
    pub items: Vec<PricedLine>,
    pub coupon: Option<CouponView>,
    pub subtotal: Money,
    pub discount: Money,
    pub total: Money,
    /// Lines whose products no longer exist were dropped from the cart.
    pub removed_products: Vec<ProductId>,
}

impl PricedCart {
    pub fn empty(currency: Currency) -> PricedCart {
        PricedCart {
            items: Vec::new(),
            coupon: None,
            subtotal: Money::zero(currency),
            discount: Money::zero(currency),
            total: Money::zero(currency),
            removed_products: Vec::new(),
        }
    }

    /// Marks each line deliverable when `reachable` (units per product in the warehouses that
    /// deliver to the shopper) covers its quantity.
    pub fn mark_deliverable(&mut self, reachable: &HashMap<ProductId, i64>) {
        for line in &mut self.items {
            line.deliverable = Some(reachable.get(&line.product_id).copied().unwrap_or(0) >= line.quantity);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn coupon(kind: CouponKind, value: i64) -> Coupon {
        Coupon {
            id: CouponId::new(),
            code: "SAVE".into(),
            kind,
            value,
            min_subtotal: None,
            starts_at: None,
            ends_at: None,
            max_uses: None,
            max_uses_per_user: None,
            category_ids: vec![],
            created_at: Utc::now(),
        }
    }

    fn cx<'a>(lines: &'a [(i64, Vec<CategoryId>)], user: Option<UserId>) -> CouponContext<'a> {
        CouponContext {
            now: Utc::now(),
            subtotal: lines.iter().map(|l| l.0).sum(),
            lines,
            user,
            uses: 0,
            uses_by_user: 0,
        }
    }

    #[test]
    fn percent_and_fixed_discounts() {
        let lines = [(1999, vec![]), (1001, vec![])];
        assert_eq!(coupon(CouponKind::Percent, 10).discount(&cx(&lines, None)), Ok(300));
        assert_eq!(coupon(CouponKind::Percent, 15).discount(&cx(&[(999, vec![])], None)), Ok(149), "rounded down");
        assert_eq!(coupon(CouponKind::Fixed, 500).discount(&cx(&lines, None)), Ok(500));
        assert_eq!(coupon(CouponKind::Fixed, 5000).discount(&cx(&lines, None)), Ok(3000), "never below zero");
    }

    #[test]
    fn validity_minimum_and_limits() {
        let lines = [(1000, vec![])];
        let now = Utc::now();
        let later = Coupon { starts_at: Some(now + Duration::days(1)), ..coupon(CouponKind::Fixed, 100) };
        assert_eq!(later.discount(&cx(&lines, None)), Err(CouponRejection::NotStarted));
        let over = Coupon { ends_at: Some(now - Duration::seconds(1)), ..coupon(CouponKind::Fixed, 100) };
        assert_eq!(over.discount(&cx(&lines, None)), Err(CouponRejection::Expired));
        let min = Coupon { min_subtotal: Some(5000), ..coupon(CouponKind::Fixed, 100) };
        assert_eq!(min.discount(&cx(&lines, None)), Err(CouponRejection::BelowMinimum(5000)));
        let total = Coupon { max_uses: Some(2), ..coupon(CouponKind::Fixed, 100) };
        assert_eq!(total.discount(&CouponContext { uses: 2, ..cx(&lines, None) }), Err(CouponRejection::UsedUp));
        assert_eq!(total.discount(&CouponContext { uses: 1, ..cx(&lines, None) }), Ok(100));
        let per_user = Coupon { max_uses_per_user: Some(1), ..coupon(CouponKind::Fixed, 100) };
        assert_eq!(per_user.discount(&cx(&lines, None)), Err(CouponRejection::NeedsAccount));
        let user = Some(UserId::new());
        assert_eq!(
            per_user.discount(&CouponContext { uses_by_user: 1, ..cx(&lines, user) }),
            Err(CouponRejection::UsedUpByYou)
        );
        assert_eq!(per_user.discount(&cx(&lines, user)), Ok(100));
    }

    #[test]
    fn category_restrictions_discount_only_eligible_lines() {
        let (books, kitchen) = (CategoryId::new(), CategoryId::new());
        let lines = [(2000, vec![books]), (3000, vec![kitchen])];
        let only_books = Coupon { category_ids: vec![books], ..coupon(CouponKind::Percent, 50) };
        assert_eq!(only_books.discount(&cx(&lines, None)), Ok(1000));
        let elsewhere = Coupon { category_ids: vec![CategoryId::new()], ..coupon(CouponKind::Percent, 50) };
        assert_eq!(elsewhere.discount(&cx(&lines, None)), Err(CouponRejection::NoEligibleItems));
    }

    #[test]
    fn merging_sums_and_caps() {
        let (a, b, c) = (ProductId::new(), ProductId::new(), ProductId::new());
        let line = |p, q, price| CartLine {
            product_id: p,
            quantity: q,
            unit_price: Money::new(price, Currency::USD),
            added_at: Utc::now(),
        };
        let user = [line(a, 2, 100), line(b, 1, 200)];
        let guest = [line(a, 3, 90), line(c, 5, 300), line(b, 1, 250)];
        let merged = merge_lines(&user, &guest, 4, |p| if p == c { 2 } else { 100 });
        let got: Vec<_> = merged.iter().map(|l| (l.product_id, l.quantity, l.unit_price.amount)).collect();
        let mut expected = vec![(a, 4, 100), (b, 2, 200), (c, 2, 300)];
        expected.sort();
        assert_eq!(got, expected);
        assert!(merge_lines(&[], &[line(a, 1, 1)], 4, |_| 0).is_empty(), "sold-out lines are dropped");
    }

    #[test]
    fn codes_and_quantities_are_checked() {
        assert_eq!(normalise_code(" save10 ").unwrap(), "SAVE10");
        assert!(normalise_code("x").is_err());
        assert!(normalise_code("no spaces").is_err());
        assert!(check_quantity(0, 99).is_err());
        assert!(check_quantity(100, 99).is_err());
        assert_eq!(check_quantity(99, 99), Ok(99));
        assert_ne!(CartOwner::guest("a").key(), CartOwner::guest("b").key());
        assert!(!CartOwner::guest("secret").key().contains("secret"), "tokens are not stored");
    }

    #[test]
    fn lines_are_deliverable_when_reachable_units_cover_them() {
        let usd = |amount| Money::new(amount, Currency::USD);
        let priced = |product_id, quantity| PricedLine {
            product_id,
            title: "t".into(),
            quantity,
            unit_price: usd(100),
            added_price: usd(100),
            line_total: usd(100 * quantity),
            price_changed: false,
            in_stock: true,
            available: 10,
            deliverable: None,
        };
        let (near, far, exact, unknown) = (ProductId::new(), ProductId::new(), ProductId::new(), ProductId::new());
        let mut cart = PricedCart::empty(Currency::USD);
        cart.items = vec![priced(near, 2), priced(far, 1), priced(exact, 3), priced(unknown, 1)];
        assert!(
            serde_json::to_value(&cart).unwrap()["items"][0].get("deliverable").is_none(),
            "no address known: the field is left out"
        );
        cart.mark_deliverable(&HashMap::from([(near, 5), (far, 0), (exact, 3)]));
        let flags: Vec<Option<bool>> = cart.items.iter().map(|l| l.deliverable).collect();
        assert_eq!(flags, [Some(true), Some(false), Some(true), Some(false)]);
        assert_eq!(serde_json::to_value(&cart).unwrap()["items"][1]["deliverable"], false);
    }
}
