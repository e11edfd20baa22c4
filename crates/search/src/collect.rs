//! Counting facets and price buckets over all matches.
//!
//! Not tantivy's `FacetCollector`: its per-query ordinal → term lookups in the sstable dictionary
//! dominated query time. Segments are immutable, so each segment is decoded once into one plain
//! array of fixed-width rows — a document's facet ids (process-wide ids, one per distinct facet
//! path) and its price bucket — and a query only reads those rows (about 30 MB for a million
//! products).
//!
//! Counting is bound by memory latency: the matches of a broad word are scattered over the
//! segment, so nearly every row is a cache miss. One row per document (not an offsets array
//! plus an ids array) makes that one miss instead of two or three, and matches are counted in
//! batches so the CPU has many independent row loads in flight instead of one per call between
//! tantivy's scoring work.

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

/// One segment, decoded: document `d`'s row is `rows[d * stride..(d + 1) * stride]`, its facet
/// ids plus one (0 pads short rows and counts into a slot nobody reads, so counting needs no
/// branch), then its price bucket.
struct SegmentTable {
    stride: usize,
    rows: Vec<u32>,
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
        let widest = (0..max_doc).map(|doc| reader.facet_ords(doc).count()).max().unwrap_or(0);
        let stride = widest + 1;
        let mut rows = vec![0u32; max_doc as usize * stride];
        for (doc, row) in (0..max_doc).zip(rows.chunks_exact_mut(stride)) {
            for (slot, ord) in row.iter_mut().zip(reader.facet_ords(doc)) {
                *slot = ord_to_id[ord as usize] + 1;
            }
            row[widest] = price_bucket(prices.get_val(doc)) as u32;
        }
        let table = Arc::new(SegmentTable { stride, rows });
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
    /// `LANES` interleaved counter sets of `width` slots each. Slot 0 is the padding's; facet id
    /// `i` counts in slot `i + 1`.
    counts: Vec<u32>,
    width: usize,
    buckets: [[u32; PRICE_BUCKETS.len() + 1]; LANES],
    pending: Vec<DocId>,
}

/// Consecutive matches count into different counter sets: most matches share their category
/// (and often brand and price bucket), and incrementing one counter again and again makes each
/// increment wait for the previous one.
const LANES: usize = 4;

/// Matches counted together (see the module notes).
const BATCH: usize = 256;

impl SegmentFacetTally {
    fn count_pending(&mut self) {
        let table = &*self.table;
        let stride = table.stride;
        for (n, &doc) in self.pending.iter().enumerate() {
            let lane = n % LANES;
            let counts = &mut self.counts[lane * self.width..][..self.width];
            let row = &table.rows[doc as usize * stride..][..stride];
            let (ids, bucket) = row.split_at(stride - 1);
            for &id in ids {
                counts[id as usize] += 1;
            }
            self.buckets[lane][bucket[0] as usize] += 1;
        }
        self.pending.clear();
    }
}

impl Collector for FacetTally<'_> {
    type Fruit = Tally;
    type Child = SegmentFacetTally;

    fn for_segment(&self, _segment: SegmentOrdinal, reader: &SegmentReader) -> tantivy::Result<SegmentFacetTally> {
        let table = self.0.table(reader)?;
        let width = self.0.known_ids() + 1;
        Ok(SegmentFacetTally {
            table,
            counts: vec![0; width * LANES],
            width,
            buckets: [[0; PRICE_BUCKETS.len() + 1]; LANES],
            pending: Vec::with_capacity(BATCH),
        })
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
        self.pending.push(doc);
        if self.pending.len() == BATCH {
            self.count_pending();
        }
    }

    fn harvest(mut self) -> Tally {
        self.count_pending();
        let lanes: Vec<&[u32]> = self.counts.chunks_exact(self.width).collect();
        let facets = (1..self.width)
            .map(|slot| (slot as u32 - 1, lanes.iter().map(|lane| u64::from(lane[slot])).sum::<u64>()))
            .filter(|(_, c)| *c > 0)
            .collect();
        let price_buckets =
            (0..=PRICE_BUCKETS.len()).map(|b| self.buckets.iter().map(|lane| u64::from(lane[b])).sum()).collect();
        Tally { facets, price_buckets }
    }
}
