//! Counting facets and price buckets over all matches.
//!
//! Not tantivy's `FacetCollector`: its per-query ordinal → term lookups in the sstable dictionary
//! dominated query time. Segments are immutable, so each segment is decoded once into plain
//! arrays — every document's facet ids (process-wide ids, one per distinct facet path) and its
//! price bucket — and a query only walks those arrays (about 25 MB for a million products).

use crate::model::{PRICE_BUCKETS, price_bucket};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use tantivy::collector::{Collector, SegmentCollector};
use tantivy::index::SegmentId;
use tantivy::{DocId, Score, SegmentOrdinal, SegmentReader};

#[derive(Default)]
pub struct FacetPaths {
    inner: Mutex<Interner>,
}

#[derive(Default)]
struct Interner {
    by_segment: HashMap<SegmentId, Arc<SegmentTable>>,
    ids: HashMap<Arc<[String]>, u32>,
    paths: Vec<Arc<[String]>>,
}

/// One segment, decoded: document `d`'s facet ids are `ids[offsets[d]..offsets[d + 1]]`.
struct SegmentTable {
    offsets: Vec<u32>,
    ids: Vec<u32>,
    price_buckets: Vec<u8>,
}

impl FacetPaths {
    fn table(&self, segment: &SegmentReader) -> tantivy::Result<Arc<SegmentTable>> {
        let segment_id = segment.segment_id();
        if let Some(table) = self.inner.lock().expect("facet table lock").by_segment.get(&segment_id) {
            return Ok(table.clone());
        }
        let reader = segment.facet_reader(crate::index::FACETS_FIELD)?;
        let mut paths: Vec<Arc<[String]>> = Vec::with_capacity(reader.num_facets());
        let mut stream = reader.facet_dict().stream()?;
        while stream.advance() {
            let facet = tantivy::schema::Facet::from_encoded(stream.key().to_vec())
                .map_err(|e| tantivy::TantivyError::InternalError(e.to_string()))?;
            paths.push(facet.to_path().into_iter().map(str::to_owned).collect());
        }
        let ord_to_id: Vec<u32> = {
            let mut inner = self.inner.lock().expect("facet table lock");
            paths
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
                .collect()
        };
        let prices = segment.fast_fields().i64("price")?.first_or_default_col(0);
        let max_doc = segment.max_doc();
        let mut offsets = Vec::with_capacity(max_doc as usize + 1);
        let mut ids = Vec::with_capacity(max_doc as usize * 4);
        let mut price_buckets = Vec::with_capacity(max_doc as usize);
        offsets.push(0);
        for doc in 0..max_doc {
            ids.extend(reader.facet_ords(doc).map(|ord| ord_to_id[ord as usize]));
            offsets.push(ids.len() as u32);
            price_buckets.push(price_bucket(prices.get_val(doc)) as u8);
        }
        let table = Arc::new(SegmentTable { offsets, ids, price_buckets });
        self.inner.lock().expect("facet table lock").by_segment.insert(segment_id, table.clone());
        Ok(table)
    }

    /// Forgets segments that merges have removed.
    pub fn retain(&self, live: &HashSet<SegmentId>) {
        self.inner.lock().expect("facet table lock").by_segment.retain(|id, _| live.contains(id));
    }

    pub fn cached_segments(&self) -> usize {
        self.inner.lock().expect("facet table lock").by_segment.len()
    }

    fn known_ids(&self) -> usize {
        self.inner.lock().expect("facet table lock").paths.len()
    }

    /// The paths of counted ids.
    pub fn resolve(&self, counts: &[(u32, u64)]) -> Vec<(Arc<[String]>, u64)> {
        let inner = self.inner.lock().expect("facet table lock");
        counts.iter().map(|(id, count)| (inner.paths[*id as usize].clone(), *count)).collect()
    }
}

/// What the tally returns: `(facet id, count)` pairs and the count per price bucket.
#[derive(Debug, Default)]
pub struct Tally {
    pub facets: Vec<(u32, u64)>,
    pub price_buckets: Vec<u64>,
}

/// Counts every display facet and price bucket of the matching documents in one pass.
pub struct FacetTally<'a>(pub &'a FacetPaths);

pub struct SegmentFacetTally {
    table: Arc<SegmentTable>,
    counts: Vec<u32>,
    buckets: [u64; PRICE_BUCKETS.len() + 1],
}

impl Collector for FacetTally<'_> {
    type Fruit = Tally;
    type Child = SegmentFacetTally;

    fn for_segment(&self, _segment: SegmentOrdinal, reader: &SegmentReader) -> tantivy::Result<SegmentFacetTally> {
        let table = self.0.table(reader)?;
        Ok(SegmentFacetTally { table, counts: vec![0; self.0.known_ids()], buckets: [0; PRICE_BUCKETS.len() + 1] })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<Tally>) -> tantivy::Result<Tally> {
        let len = fruits.iter().flat_map(|f| &f.facets).map(|(id, _)| *id as usize + 1).max().unwrap_or(0);
        let mut totals = vec![0u64; len];
        let mut price_buckets = vec![0u64; PRICE_BUCKETS.len() + 1];
        for fruit in fruits {
            for (id, count) in fruit.facets {
                totals[id as usize] += count;
            }
            for (total, count) in price_buckets.iter_mut().zip(fruit.price_buckets) {
                *total += count;
            }
        }
        let facets = totals.into_iter().enumerate().filter(|(_, c)| *c > 0).map(|(id, c)| (id as u32, c)).collect();
        Ok(Tally { facets, price_buckets })
    }
}

impl SegmentCollector for SegmentFacetTally {
    type Fruit = Tally;

    fn collect(&mut self, doc: DocId, _score: Score) {
        let table = &*self.table;
        let (start, end) = (table.offsets[doc as usize] as usize, table.offsets[doc as usize + 1] as usize);
        for &id in &table.ids[start..end] {
            self.counts[id as usize] += 1;
        }
        self.buckets[table.price_buckets[doc as usize] as usize] += 1;
    }

    fn harvest(self) -> Tally {
        let facets =
            self.counts.iter().enumerate().filter(|(_, c)| **c > 0).map(|(id, c)| (id as u32, u64::from(*c))).collect();
        Tally { facets, price_buckets: self.buckets.to_vec() }
    }
}
