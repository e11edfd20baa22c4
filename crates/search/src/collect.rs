//! A collector counting matches per price bucket (the `price` facet).

use crate::model::{PRICE_BUCKETS, price_bucket};
use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::{Column, ColumnValues};
use tantivy::{DocId, Score, SegmentOrdinal, SegmentReader};

pub struct PriceBuckets;

pub struct SegmentPriceBuckets {
    /// Every product has a price, so the dense view skips the optional-value index.
    prices: std::sync::Arc<dyn ColumnValues<i64>>,
    counts: Vec<u64>,
    block: Vec<i64>,
}

impl Collector for PriceBuckets {
    type Fruit = Vec<u64>;
    type Child = SegmentPriceBuckets;

    fn for_segment(&self, _segment: SegmentOrdinal, reader: &SegmentReader) -> tantivy::Result<SegmentPriceBuckets> {
        let prices: Column<i64> = reader.fast_fields().i64("price")?;
        Ok(SegmentPriceBuckets {
            prices: prices.first_or_default_col(0),
            counts: vec![0; PRICE_BUCKETS.len() + 1],
            block: Vec::new(),
        })
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
        self.counts[price_bucket(self.prices.get_val(doc))] += 1;
    }

    fn collect_block(&mut self, docs: &[DocId]) {
        self.block.resize(docs.len(), 0);
        self.prices.get_vals(docs, &mut self.block);
        for price in &self.block {
            self.counts[price_bucket(*price)] += 1;
        }
    }

    fn harvest(self) -> Vec<u64> {
        self.counts
    }
}

/// Facet counting without tantivy's `FacetCollector`, whose per-query ordinal → term lookups in
/// the sstable dictionary dominated query time. Every distinct facet path gets a process-wide id
/// the first time a segment containing it is read; each segment's ordinal → id table is built once
/// (segments are immutable) and cached. A query then only increments counters in flat arrays.
#[derive(Default)]
pub struct FacetPaths {
    inner: std::sync::Mutex<Interner>,
}

#[derive(Default)]
struct Interner {
    by_segment: std::collections::HashMap<tantivy::index::SegmentId, std::sync::Arc<Vec<u32>>>,
    ids: std::collections::HashMap<std::sync::Arc<[String]>, u32>,
    paths: Vec<std::sync::Arc<[String]>>,
}

impl FacetPaths {
    fn segment_ids(&self, segment: &SegmentReader) -> tantivy::Result<std::sync::Arc<Vec<u32>>> {
        let id = segment.segment_id();
        if let Some(ids) = self.inner.lock().expect("facet ids lock").by_segment.get(&id) {
            return Ok(ids.clone());
        }
        let reader = segment.facet_reader(crate::index::FACETS_FIELD)?;
        let mut paths: Vec<std::sync::Arc<[String]>> = Vec::with_capacity(reader.num_facets());
        let mut stream = reader.facet_dict().stream()?;
        while stream.advance() {
            let facet = tantivy::schema::Facet::from_encoded(stream.key().to_vec())
                .map_err(|e| tantivy::TantivyError::InternalError(e.to_string()))?;
            paths.push(facet.to_path().into_iter().map(str::to_owned).collect());
        }
        let mut inner = self.inner.lock().expect("facet ids lock");
        let ids: Vec<u32> = paths
            .into_iter()
            .map(|path| match inner.ids.get(&path) {
                Some(id) => *id,
                None => {
                    let id = inner.paths.len() as u32;
                    inner.paths.push(path.clone());
                    inner.ids.insert(path, id);
                    id
                }
            })
            .collect();
        let ids = std::sync::Arc::new(ids);
        inner.by_segment.insert(id, ids.clone());
        Ok(ids)
    }

    /// Forgets segments that merges have removed.
    pub fn retain(&self, live: &std::collections::HashSet<tantivy::index::SegmentId>) {
        self.inner.lock().expect("facet ids lock").by_segment.retain(|id, _| live.contains(id));
    }

    pub fn cached_segments(&self) -> usize {
        self.inner.lock().expect("facet ids lock").by_segment.len()
    }

    /// The paths of counted ids.
    pub fn resolve(&self, counts: &[(u32, u64)]) -> Vec<(std::sync::Arc<[String]>, u64)> {
        let inner = self.inner.lock().expect("facet ids lock");
        counts.iter().map(|(id, count)| (inner.paths[*id as usize].clone(), *count)).collect()
    }
}

/// Counts every display facet of the matching documents: `(facet id, count)` pairs.
pub struct FacetTally<'a>(pub &'a FacetPaths);

pub struct SegmentFacetTally {
    reader: tantivy::fastfield::FacetReader,
    ids: std::sync::Arc<Vec<u32>>,
    counts: Vec<u32>,
}

impl Collector for FacetTally<'_> {
    type Fruit = Vec<(u32, u64)>;
    type Child = SegmentFacetTally;

    fn for_segment(&self, _segment: SegmentOrdinal, reader: &SegmentReader) -> tantivy::Result<SegmentFacetTally> {
        let ids = self.0.segment_ids(reader)?;
        let facet_reader = reader.facet_reader(crate::index::FACETS_FIELD)?;
        Ok(SegmentFacetTally { counts: vec![0; ids.len()], reader: facet_reader, ids })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<Self::Fruit>) -> tantivy::Result<Self::Fruit> {
        let len = fruits.iter().flatten().map(|(id, _)| *id as usize + 1).max().unwrap_or(0);
        let mut total = vec![0u64; len];
        for (id, count) in fruits.into_iter().flatten() {
            total[id as usize] += count;
        }
        Ok(total.into_iter().enumerate().filter(|(_, c)| *c > 0).map(|(id, c)| (id as u32, c)).collect())
    }
}

impl SegmentCollector for SegmentFacetTally {
    type Fruit = Vec<(u32, u64)>;

    fn collect(&mut self, doc: DocId, _score: Score) {
        for ord in self.reader.facet_ords(doc) {
            if let Some(count) = self.counts.get_mut(ord as usize) {
                *count += 1;
            }
        }
    }

    fn harvest(self) -> Self::Fruit {
        self.counts.iter().enumerate().filter(|(_, c)| **c > 0).map(|(ord, c)| (self.ids[ord], u64::from(*c))).collect()
    }
}
