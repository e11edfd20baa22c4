//! Events the catalog emits. Product events carry a full snapshot plus the resolved category
//! path, so the search indexer (and any other read model) never has to call back.

use crate::model::{Product, ResolvedCategory};
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
