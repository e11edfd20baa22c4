//! What the search service consumes: catalog product events and inventory stock and warehouse
//! events (the seeds' "inventory → Kafka → search feed → Elasticsearch" pipeline, with the bus
//! and tantivy). Indexing is an upsert, so redelivery is harmless; the index's own commit
//! payload is the checkpoint.

use crate::indexer::{IndexerHandle, Op};
use crate::model::{SearchDoc, StockState};
use crate::warehouses::WarehouseDirectory;
use emporium_catalog::api::events::{ProductCreated, ProductDeleted, ProductUpdated, ReviewAdded, SOURCE as CATALOG};
use emporium_inventory::api::events::{SOURCE as INVENTORY, StockChanged, WarehouseChanged};
use emporium_kernel::events::{Envelope, EventConsumer};
use std::sync::Arc;

pub const CONSUMER: &str = "search-indexer";

pub struct SearchIndexer {
    indexer: IndexerHandle,
    warehouses: Arc<WarehouseDirectory>,
}

impl SearchIndexer {
    pub fn new(service: &crate::SearchService) -> Self {
        Self { indexer: service.indexer().clone(), warehouses: service.warehouses().clone() }
    }
}

#[async_trait::async_trait]
impl EventConsumer for SearchIndexer {
    fn name(&self) -> &'static str {
        CONSUMER
    }

    async fn handle(&self, event: &Envelope) -> anyhow::Result<()> {
        if event.source == CATALOG {
            let op = if event.is::<ProductCreated>() {
                Some(Op::Upsert(Box::new(SearchDoc::from_snapshot(&event.decode::<ProductCreated>()?.0))))
            } else if event.is::<ProductUpdated>() {
                Some(Op::Upsert(Box::new(SearchDoc::from_snapshot(&event.decode::<ProductUpdated>()?.0))))
            } else if event.is::<ProductDeleted>() {
                Some(Op::Delete(event.decode::<ProductDeleted>()?.product_id))
            } else if event.is::<ReviewAdded>() {
                let review = event.decode::<ReviewAdded>()?;
                Some(Op::Rate { id: review.product_id, average: review.rating_average, count: review.rating_count })
            } else {
                None
            };
            if let Some(op) = op {
                self.indexer.send(op).await?;
            }
        } else if event.source == INVENTORY {
            if event.is::<StockChanged>() {
                let stock = event.decode::<StockChanged>()?;
                let warehouses = stock.warehouses.iter().map(|w| w.warehouse_id).collect();
                let state = StockState { available: stock.available, warehouses };
                self.indexer.send(Op::Stock { id: stock.product_id, stock: state }).await?;
            } else if event.is::<WarehouseChanged>() {
                self.warehouses.upsert(event.decode::<WarehouseChanged>()?.0)?;
            }
        }
        self.indexer.send(Op::Position { source: event.source.clone(), seq: event.seq }).await
    }

    fn checkpoint(&self, source: &str) -> Option<i64> {
        Some(self.indexer.checkpoint(source))
    }
}
