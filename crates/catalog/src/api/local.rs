//! The in-process client: the service itself, its errors narrowed to what a caller may see.

use super::{CatalogApi, CatalogError, Category, Product};
use crate::service::{self, CatalogService};
use emporium_kernel::ids::{CategoryId, ProductId};

#[async_trait::async_trait]
impl CatalogApi for CatalogService {
    async fn product(&self, id: ProductId) -> Result<Option<Product>, CatalogError> {
        match CatalogService::product(self, id).await {
            Ok(product) => Ok(Some(product)),
            Err(service::Error::ProductNotFound) => Ok(None),
            Err(err) => Err(err.into()),
        }
    }

    async fn categories(&self) -> Result<Vec<Category>, CatalogError> {
        Ok(CatalogService::categories(self).await?)
    }

    async fn products_of_category(
        &self,
        category: CategoryId,
        after: Option<(String, ProductId)>,
        limit: usize,
    ) -> Result<Vec<Product>, CatalogError> {
        let after = after.as_ref().map(|(brand, id)| (brand.as_str(), *id));
        Ok(CatalogService::products_of_category(self, category, after, limit).await?)
    }

    async fn products_batch(&self, after: Option<ProductId>, limit: usize) -> Result<Vec<Product>, CatalogError> {
        Ok(CatalogService::products_batch(self, after, limit).await?)
    }
}

impl From<service::Error> for CatalogError {
    fn from(err: service::Error) -> Self {
        use service::Error as E;
        match err {
            E::Invalid(fields) => CatalogError::Invalid { fields },
            E::CategoryNotFound => CatalogError::CategoryNotFound,
            E::Store(_) | E::Api(_) => {
                CatalogError::Unavailable { message: emporium_kernel::error::internal_failure(&err) }
            }
            E::ProductNotFound
            | E::CategoryNameTaken
            | E::SkuTaken
            | E::NotOwner
            | E::AlreadyReviewed
            | E::OwnProduct => CatalogError::Unavailable { message: err.to_string() },
        }
    }
}
