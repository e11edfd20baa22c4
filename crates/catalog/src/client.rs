//! How other services reach the catalog (carts and orders price lines, search rebuilds).

use crate::model::{Category, Product};
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

    /// Live products filed directly under `category` (not its sub-categories), by brand then
    /// id, after `after` (the brand and id of the last product read).
    pub async fn products_of_category(
        &self,
        category: CategoryId,
        after: Option<(&str, ProductId)>,
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

    /// Every live product, category by category in category-tree order
    /// ([`tree_order`](crate::model::tree_order)) and by brand within a category, a batch at a
    /// time: for bulk readers that want a category's products next to each other, and a brand's
    /// within it (the search index, the benchmark's baseline).
    pub async fn scan_in_tree_order(&self) -> Result<TreeOrderScan, CatalogError> {
        let categories = self.categories().await?;
        let order = crate::model::tree_order(&categories).into_iter();
        Ok(TreeOrderScan { client: self.clone(), categories, order, current: None })
    }
}

/// See [`CatalogClient::scan_in_tree_order`].
pub struct TreeOrderScan {
    client: CatalogClient,
    categories: Vec<Category>,
    order: std::vec::IntoIter<CategoryId>,
    /// The category being read and the brand and id of the last product read from it.
    current: Option<(CategoryId, Option<(String, ProductId)>)>,
}

impl TreeOrderScan {
    /// Every category, as read when the scan began.
    pub fn categories(&self) -> &[Category] {
        &self.categories
    }

    /// The next at most `limit` products, all of one category; `None` when every category is done.
    pub async fn next_batch(&mut self, limit: usize) -> Result<Option<(CategoryId, Vec<Product>)>, CatalogError> {
        loop {
            let (category, after) = match self.current.take() {
                Some(current) => current,
                None => match self.order.next() {
                    Some(category) => (category, None),
                    None => return Ok(None),
                },
            };
            let after_key = after.as_ref().map(|(brand, id)| (brand.as_str(), *id));
            let batch = self.client.products_of_category(category, after_key, limit).await?;
            match batch.last() {
                Some(last) => {
                    self.current = Some((category, Some((last.brand.clone(), last.id))));
                    return Ok(Some((category, batch)));
                }
                None => self.current = None,
            }
        }
    }
}
