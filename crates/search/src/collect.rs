//! A collector counting matches per price bucket (the `price` facet).

use crate::model::{PRICE_BUCKETS, price_bucket};
use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::Column;
use tantivy::{DocId, Score, SegmentOrdinal, SegmentReader};

pub struct PriceBuckets;

pub struct SegmentPriceBuckets {
    prices: Column<i64>,
    counts: Vec<u64>,
}

impl Collector for PriceBuckets {
    type Fruit = Vec<u64>;
    type Child = SegmentPriceBuckets;

    fn for_segment(&self, _segment: SegmentOrdinal, reader: &SegmentReader) -> tantivy::Result<SegmentPriceBuckets> {
        Ok(SegmentPriceBuckets { prices: reader.fast_fields().i64("price")?, counts: vec![0; PRICE_BUCKETS.len() + 1] })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<Vec<u64>>) -> tantivy::Result<Vec<u64>> {
        let mut total = vec![0; PRICE_BUCKETS.len() + 1];
        for fruit in fruits {
            for (t, c) in total.iter_mut().zip(fruit) {
                *t += c;
            }
        }
        Ok(total)
    }
}

impl SegmentCollector for SegmentPriceBuckets {
    type Fruit = Vec<u64>;

    fn collect(&mut self, doc: DocId, _score: Score) {
        if let Some(price) = self.prices.first(doc) {
            self.counts[price_bucket(price)] += 1;
        }
    }

    fn harvest(self) -> Vec<u64> {
        self.counts
    }
}
