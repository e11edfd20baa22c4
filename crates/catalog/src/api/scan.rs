//! Every live product, category by category in category-tree order ([`tree_order`]) and by
//! brand within a category, a batch at a time: for bulk readers that want a category's products
//! next to each other, and a brand's within it (the search index, the benchmark's baseline).
//! Built on the client trait, so it reads the same way from any catalog.

use super::{CatalogClient, CatalogError, Category, Product, tree_order};
use emporium_kernel::ids::{CategoryId, ProductId};

pub struct TreeOrderScan {
    client: CatalogClient,
    categories: Vec<Category>,
    order: std::vec::IntoIter<CategoryId>,
    /// The category being read and the brand and id of the last product read from it.
    current: Option<(CategoryId, Option<(String, ProductId)>)>,
}

impl TreeOrderScan {
    /// Starts a scan: the categories are read now, the products batch by batch.
    pub async fn start(client: CatalogClient) -> Result<TreeOrderScan, CatalogError> {
        let categories = client.categories().await?;
        let order = tree_order(&categories).into_iter();
        Ok(TreeOrderScan { client, categories, order, current: None })
    }

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
            let batch = self.client.products_of_category(category, after, limit).await?;
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
