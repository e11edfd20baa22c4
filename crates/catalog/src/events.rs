//! Events the catalog emits. Product events carry a full snapshot plus the resolved category
//! path, so the search indexer (and any other read model) never has to call back.

use crate::model::{Product, PurchaseChange, ResolvedCategory};
use emporium_kernel::events::DomainEvent;
use emporium_kernel::ids::{CategoryId, ProductId, ReviewId, UserId};
use emporium_kernel::money::Money;
use serde::{Deserialize, Serialize};

pub const SOURCE: &str = "catalog";

/// A product as read models need it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProductSnapshot {
    #[serde(flatten)]
    pub product: Product,
    /// Category ids from the root down to the product's category.
    pub category_path: Vec<CategoryId>,
    pub category_names: Vec<String>,
    /// Attributes with few distinct values (enum, bool, number), worth counting as facets;
    /// free text (an ISBN, an author) is searchable and filterable but not a facet.
    #[serde(default)]
    pub facet_attributes: Vec<String>,
}

impl ProductSnapshot {
    pub fn new(product: Product, category: &ResolvedCategory) -> Self {
        let facet_attributes = category
            .attributes
            .iter()
            .filter(|d| d.kind != crate::model::AttributeKind::Text)
            .map(|d| d.name.clone())
            .collect();
        Self {
            product,
            category_path: category.path.clone(),
            category_names: category.path_names.clone(),
            facet_attributes,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CategoryCreated {
    pub category_id: CategoryId,
    pub name: String,
    pub parent_id: Option<CategoryId>,
}

impl DomainEvent for CategoryCreated {
    const TYPE: &'static str = "CategoryCreated";
    fn aggregate_id(&self) -> String {
        self.category_id.to_string()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProductCreated(pub ProductSnapshot);

impl DomainEvent for ProductCreated {
    const TYPE: &'static str = "ProductCreated";
    fn aggregate_id(&self) -> String {
        self.0.product.id.to_string()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProductUpdated(pub ProductSnapshot);

impl DomainEvent for ProductUpdated {
    const TYPE: &'static str = "ProductUpdated";
    fn aggregate_id(&self) -> String {
        self.0.product.id.to_string()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProductDeleted {
    pub product_id: ProductId,
    pub sku: String,
    pub deleted_by: UserId,
}

impl DomainEvent for ProductDeleted {
    const TYPE: &'static str = "ProductDeleted";
    fn aggregate_id(&self) -> String {
        self.product_id.to_string()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PriceChanged {
    pub product_id: ProductId,
    pub old_price: Money,
    pub new_price: Money,
}

impl DomainEvent for PriceChanged {
    const TYPE: &'static str = "PriceChanged";
    fn aggregate_id(&self) -> String {
        self.product_id.to_string()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReviewAdded {
    pub product_id: ProductId,
    pub review_id: ReviewId,
    pub user_id: UserId,
    pub rating: i32,
    pub rating_average: f64,
    pub rating_count: i64,
}

impl DomainEvent for ReviewAdded {
    const TYPE: &'static str = "ReviewAdded";
    fn aggregate_id(&self) -> String {
        self.product_id.to_string()
    }
}

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
