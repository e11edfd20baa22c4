//! How other services reach the catalog (carts and orders price lines, search rebuilds).

use crate::model::Product;
use crate::service::{CatalogError, CatalogService};
use emporium_kernel::ids::{CategoryId, ProductId};
use std::sync::Arc;

#[derive(Clone)]
pub enum CatalogClient {
    Local(Arc<CatalogService>),
}

impl CatalogClient {
    pub fn local(service: Arc<CatalogService>) -> Self {
        CatalogClient::Local(service)
    }

    /// A live product, or `None` if it does not exist or was deleted.
    pub async fn product(&self, id: ProductId) -> Result<Option<Product>, CatalogError> {
        match self {
            CatalogClient::Local(svc) => match svc.product(id).await {
                Ok(product) => Ok(Some(product)),
                Err(CatalogError::ProductNotFound) => Ok(None),
                Err(err) => Err(err),
            },
        }
    }

    /// Every category (small: read models resolve paths with it).
    pub async fn categories(&self) -> Result<Vec<crate::model::Category>, CatalogError> {
        match self {
            CatalogClient::Local(svc) => svc.categories().await,
        }
    }

    /// Live products filed directly under `category` (not its sub-categories), in id order.
    pub async fn products_of_category(
        &self,
        category: CategoryId,
        after: Option<ProductId>,
        limit: usize,
    ) -> Result<Vec<Product>, CatalogError> {
        match self {
            CatalogClient::Local(svc) => svc.products_of_category(category, after, limit).await,
        }
    }

    /// Live products after `after` in id order.
    pub async fn products_batch(&self, after: Option<ProductId>, limit: usize) -> Result<Vec<Product>, CatalogError> {
        match self {
            CatalogClient::Local(svc) => svc.products_batch(after, limit).await,
        }
    }
}
