//! What other services may use of the catalog: the client trait, the types it carries (with
//! the pure rules readers share: resolving a category's path, the category tree's order), its
//! error and the events the catalog emits. Everything the trait carries is serialisable, so it
//! can be implemented over HTTP; today the in-process implementation is the service itself.

pub mod events;
mod local;
mod scan;

pub use crate::model::{
    AttributeDef, AttributeKind, Category, Product, ResolvedCategory, resolve_category, tree_order,
};
use emporium_kernel::error::FieldError;
use emporium_kernel::ids::{CategoryId, ProductId};
pub use scan::TreeOrderScan;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// How other services reach the catalog (carts and orders price lines, search rebuilds).
#[async_trait::async_trait]
pub trait CatalogApi: Send + Sync {
    /// A live product, or `None` if it does not exist or was deleted.
    async fn product(&self, id: ProductId) -> Result<Option<Product>, CatalogError>;

    /// Every category (small: read models resolve paths with it).
    async fn categories(&self) -> Result<Vec<Category>, CatalogError>;

    /// Live products filed directly under `category` (not its sub-categories), by brand then
    /// id, after `after` (the brand and id of the last product read).
    async fn products_of_category(
        &self,
        category: CategoryId,
        after: Option<(String, ProductId)>,
        limit: usize,
    ) -> Result<Vec<Product>, CatalogError>;

    /// Live products after `after` in id order.
    async fn products_batch(&self, after: Option<ProductId>, limit: usize) -> Result<Vec<Product>, CatalogError>;
}

/// A catalog client: in this process or (later) over HTTP.
pub type CatalogClient = Arc<dyn CatalogApi>;

/// Why a catalog call failed, as a caller can act on it.
#[derive(Clone, Debug, PartialEq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "error", rename_all = "snake_case")]
pub enum CatalogError {
    #[error("invalid fields")]
    Invalid { fields: Vec<FieldError> },
    #[error("category not found")]
    CategoryNotFound,
    /// Nothing the caller sent is wrong: the catalog's storage failed (logged where it
    /// happened). Trying again later may work.
    #[error("{message}")]
    Unavailable { message: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_cross_a_process_as_json() {
        for err in [
            CatalogError::CategoryNotFound,
            CatalogError::Invalid { fields: vec![FieldError::new("limit", "must be positive")] },
            CatalogError::Unavailable { message: "storage failed".into() },
        ] {
            let json = serde_json::to_value(&err).unwrap();
            assert_eq!(serde_json::from_value::<CatalogError>(json).unwrap(), err);
        }
    }
}
