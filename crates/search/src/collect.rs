//! One pass over all matches: the total, every facet and price bucket count, and the top hits.
//!
//! Not tantivy's `FacetCollector`, `Count` and `TopDocs` side by side: the facet collector's
//! per-query ordinal → term lookups in the sstable dictionary dominated query time, and the
//! top-hits collectors read compressed fast-field columns (the sort key, the promoted flag) per
//! match. Segments are immutable, so each one is decoded once into plain arrays — one
//! fixed-width row per document with its facet ids (process-wide ids, one per distinct facet
//! path) and its price bucket, plus the sort keys — and a query only reads those (about 50 MB
//! for a million products).
//!
//! Counting is bound by memory latency: the matches of a broad word are scattered over the
//! segment, so nearly every row is a cache miss. One row per document (not an offsets array
//! plus an ids array) makes that one miss instead of two or three, and matches are counted in
//! batches so the CPU has many independent row loads in flight instead of one per call between
//! tantivy's scoring work.

use crate::model::{PRICE_BUCKETS, Sort, price_bucket};
use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use tantivy::collector::{Collector, SegmentCollector};
use tantivy::index::SegmentId;
use tantivy::{DocAddress, DocId, Score, Searcher, SearcherGeneration, SegmentOrdinal, SegmentReader, Warmer};

/// The decoded segments, and the interner of facet paths their rows refer to.
///
/// Registered as the index reader's warmer: a reload decodes the new segments (a merged
/// million-document segment takes a second or two) before its searcher is handed out, so a
/// query never waits for that, and segments no searcher uses any more are dropped.
#[derive(Default)]
pub struct SegmentTables {
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
/// branch), then its price bucket. The sort keys are plain columns beside it.
struct SegmentTable {
    stride: usize,
    rows: Rows,
    blocks: BlockCounts,
    price: Vec<i64>,
    created: Vec<i64>,
    rating: Vec<f64>,
    promoted: Vec<bool>,
    in_stock: Vec<bool>,
}

impl SegmentTable {
    /// Offers each `(doc, score)` to `best` under its rank key (higher ranks first; the shown
    /// score or sort value is derived from it). One loop per sort, so the per-match work has no
    /// branch on the sort, and the key loads of a whole batch can be in flight together.
    /// By relevance, an out-of-stock product's score counts `out_of_stock` times (at most 1).
    fn rank_into(&self, sort: Sort, out_of_stock: Score, docs: &[DocId], scores: &[Score], best: &mut TopK) {
        fn each(docs: &[DocId], best: &mut TopK, key: impl Fn(usize) -> f64) {
            for &doc in docs {
                best.push(key(doc as usize), doc);
            }
        }
        match sort {
            Sort::Relevance => {
                let if_promoted = |score: Score| f64::from(score * PROMOTED_BOOST + 0.001);
                for (&doc, &score) in docs.iter().zip(scores) {
                    // Most matches cannot make the page even if promoted and in stock: skip the
                    // flags' loads.
                    if !best.admits(if_promoted(score)) {
                        continue;
                    }
                    let d = doc as usize;
                    let score = if self.in_stock[d] { score } else { score * out_of_stock };
                    let rank = if self.promoted[d] { if_promoted(score) } else { f64::from(score) };
                    best.push(rank, doc);
                }
            }
            Sort::PriceAsc => each(docs, best, |d| -(self.price[d] as f64)),
            Sort::PriceDesc => each(docs, best, |d| self.price[d] as f64),
            Sort::Newest => each(docs, best, |d| self.created[d] as f64),
            Sort::Rating => each(docs, best, |d| self.rating[d]),
        }
    }
}

/// Promoted products rank this much higher among equals (and a hair above an exact tie).
const PROMOTED_BOOST: f32 = 1.25;

impl SegmentTables {
    fn table(&self, segment: &SegmentReader) -> tantivy::Result<Arc<SegmentTable>> {
        let segment_id = segment.segment_id();
        if let Some(table) = self.inner.lock().expect("segment table lock").by_segment.get(&segment_id) {
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
            let mut inner = self.inner.lock().expect("segment table lock");
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
        let fast = segment.fast_fields();
        let max_doc = segment.max_doc();
        let all = || 0..max_doc;
        let price_column = fast.i64("price")?.first_or_default_col(0);
        let price: Vec<i64> = all().map(|doc| price_column.get_val(doc)).collect();
        let created_column = fast.i64("created")?.first_or_default_col(0);
        let rating_column = fast.f64("rating")?.first_or_default_col(0.0);
        let promoted_column = fast.bool("promoted")?.first_or_default_col(false);
        let in_stock_column = fast.bool("in_stock")?.first_or_default_col(false);
        let widest = all().map(|doc| reader.facet_ords(doc).count()).max().unwrap_or(0);
        let stride = widest + 1;
        let mut wide = vec![0u32; max_doc as usize * stride];
        for (doc, row) in all().zip(wide.chunks_exact_mut(stride)) {
            for (slot, ord) in row.iter_mut().zip(reader.facet_ords(doc)) {
                *slot = ord_to_id[ord as usize] + 1;
            }
            row[widest] = price_bucket(price[doc as usize]) as u32;
        }
        let blocks = BlockCounts::of(&wide, stride);
        let rows = match wide.iter().all(|slot| *slot <= u32::from(u16::MAX)) {
            true => Rows::Narrow(wide.into_iter().map(|slot| slot as u16).collect()),
            false => Rows::Wide(wide),
        };
        let table = Arc::new(SegmentTable {
            stride,
            rows,
            blocks,
            price,
            created: all().map(|doc| created_column.get_val(doc)).collect(),
            rating: all().map(|doc| rating_column.get_val(doc)).collect(),
            promoted: all().map(|doc| promoted_column.get_val(doc)).collect(),
            in_stock: all().map(|doc| in_stock_column.get_val(doc)).collect(),
        });
        self.inner.lock().expect("segment table lock").by_segment.insert(segment_id, table.clone());
        Ok(table)
    }

    fn known_ids(&self) -> usize {
        self.inner.lock().expect("segment table lock").paths.len()
    }

    /// The paths of counted ids.
    pub fn resolve(&self, counts: &[(u32, u64)]) -> Vec<(Arc<[String]>, u64)> {
        let inner = self.inner.lock().expect("segment table lock");
        counts.iter().map(|(id, count)| (inner.paths[*id as usize].clone(), *count)).collect()
    }
}

impl Warmer for SegmentTables {
    fn warm(&self, searcher: &Searcher) -> tantivy::Result<()> {
        for segment in searcher.segment_readers() {
            self.table(segment)?;
        }
        Ok(())
    }

    fn garbage_collect(&self, live_generations: &[&SearcherGeneration]) {
        let live: HashSet<SegmentId> =
            live_generations.iter().flat_map(|generation| generation.segments().keys().copied()).collect();
        self.inner.lock().expect("segment table lock").by_segment.retain(|id, _| live.contains(id));
    }
}

/// What a search pass returns: the page of hits (with the score or sort value shown), the
/// number of matches, `(facet id, count)` pairs and the count per price bucket.
#[derive(Debug, Default)]
pub struct Found {
    pub hits: Vec<(f32, DocAddress)>,
    pub total: usize,
    pub facets: Vec<(u32, u64)>,
    pub price_buckets: Vec<u64>,
}

/// Counts every match, facet and price bucket, and keeps the `offset + limit` best hits by
/// `sort`, in one pass.
pub struct SearchPass<'a> {
    pub tables: &'a SegmentTables,
    pub sort: Sort,
    pub offset: usize,
    pub limit: usize,
    /// The request's inclusive price range. It is applied here, to each batch of the query's
    /// matches, rather than as a query clause: tantivy's range filter decodes the compressed
    /// price column at every candidate (a quarter of a filtered query's time), where this reads
    /// the segment's plain price array, a batch of independent loads. A filter clause adds
    /// nothing to the score, so the ranking is the same.
    pub price: Option<(i64, i64)>,
    /// How much an out-of-stock product's relevance counts, from 0 to 1 (1: stock does not
    /// matter): at equal relevance in-stock products come first.
    pub out_of_stock: f32,
}

/// One segment's share of a [`SearchPass`].
pub struct SegmentPass {
    table: Arc<SegmentTable>,
    sort: Sort,
    out_of_stock: f32,
    price: Option<(i64, i64)>,
    segment: SegmentOrdinal,
    best: TopK,
    matches: usize,
    /// `LANES` interleaved counter sets of `width` slots each. Slot 0 is the padding's; facet id
    /// `i` counts in slot `i + 1`.
    counts: Vec<u32>,
    width: usize,
    buckets: [[u32; PRICE_BUCKETS.len() + 1]; LANES],
    /// Matches not ranked or counted yet, and their scores.
    pending: Vec<DocId>,
    scores: Vec<Score>,
}

/// Consecutive matches count into different counter sets: most matches share their category
/// (and often brand and price bucket), and incrementing one counter again and again makes each
/// increment wait for the previous one.
const LANES: usize = 4;

/// Matches counted together (see the module notes).
const BATCH: usize = 256;

/// A segment's rows, in 16-bit slots while its facet ids fit (nearly always: ids count distinct
/// facet values, not documents), which halves the memory counting reads.
enum Rows {
    Narrow(Vec<u16>),
    Wide(Vec<u32>),
}

/// Documents per pre-counted block.
const BLOCK: DocId = 64;

/// Each aligned block of [`BLOCK`] documents, pre-counted: its facet slots with their counts and
/// its price buckets. The index keeps a category's products together, so browsing a category or
/// searching a word its products share matches whole blocks, and one histogram replaces 64
/// rows (a query matches ~50,000 documents on average in the 1M-product benchmark).
struct BlockCounts {
    /// Block `b`'s `(slot, count)` pairs are `entries[starts[b]..starts[b + 1]]`.
    starts: Vec<u32>,
    entries: Vec<(u32, u32)>,
    buckets: Vec<[u32; PRICE_BUCKETS.len() + 1]>,
}

impl BlockCounts {
    fn of(rows: &[u32], stride: usize) -> BlockCounts {
        let docs = rows.len() / stride;
        let blocks = docs.div_ceil(BLOCK as usize);
        let mut counts = BlockCounts {
            starts: Vec::with_capacity(blocks + 1),
            entries: Vec::new(),
            buckets: Vec::with_capacity(blocks),
        };
        let mut slots = Vec::new();
        for block in rows.chunks(stride * BLOCK as usize) {
            counts.starts.push(counts.entries.len() as u32);
            let mut buckets = [0; PRICE_BUCKETS.len() + 1];
            slots.clear();
            for row in block.chunks_exact(stride) {
                let (ids, bucket) = row.split_at(stride - 1);
                slots.extend(ids.iter().copied().filter(|slot| *slot != 0));
                buckets[bucket[0] as usize] += 1;
            }
            slots.sort_unstable();
            for run in slots.chunk_by(|a, b| a == b) {
                counts.entries.push((run[0], run.len() as u32));
            }
            counts.buckets.push(buckets);
        }
        counts.starts.push(counts.entries.len() as u32);
        counts
    }

    fn facets(&self, block: usize) -> &[(u32, u32)] {
        &self.entries[self.starts[block] as usize..self.starts[block + 1] as usize]
    }
}

trait Slot: Copy {
    fn index(self) -> usize;
}

impl Slot for u16 {
    #[inline]
    fn index(self) -> usize {
        usize::from(self)
    }
}

impl Slot for u32 {
    #[inline]
    fn index(self) -> usize {
        self as usize
    }
}

impl SegmentPass {
    /// A pass over one segment's matches in the `price` range, keeping the `k` best hits, with
    /// counters for `width` facet ids.
    fn new(
        table: Arc<SegmentTable>,
        sort: Sort,
        out_of_stock: f32,
        price: Option<(i64, i64)>,
        segment: SegmentOrdinal,
        k: usize,
        width: usize,
    ) -> SegmentPass {
        SegmentPass {
            table,
            sort,
            out_of_stock,
            price,
            segment,
            best: TopK::new(k),
            matches: 0,
            counts: vec![0; width * LANES],
            width,
            buckets: [[0; PRICE_BUCKETS.len() + 1]; LANES],
            pending: Vec::with_capacity(BATCH),
            scores: Vec::with_capacity(BATCH),
        }
    }

    /// Ranks and counts the pending matches. Unless `all`, the matches in the last doc block stay
    /// pending while the block may still fill up, so a block matched in full is counted as one.
    fn count_pending(&mut self, all: bool) {
        let keep = match self.pending.last() {
            Some(&last) if !all && last % BLOCK != BLOCK - 1 => {
                self.pending.iter().rev().take_while(|doc| **doc / BLOCK == last / BLOCK).count()
            }
            _ => 0,
        };
        let mut ready = self.pending.len() - keep;
        let table = self.table.clone();
        if let Some((min, max)) = self.price {
            // Compacts the matches in range to the front, without a branch per match.
            let mut kept = 0;
            for i in 0..ready {
                let doc = self.pending[i];
                self.pending[kept] = doc;
                self.scores[kept] = self.scores[i];
                kept += usize::from((min..=max).contains(&table.price[doc as usize]));
            }
            self.pending.drain(kept..ready);
            self.scores.drain(kept..ready);
            ready = kept;
        }
        self.matches += ready;
        table.rank_into(self.sort, self.out_of_stock, &self.pending[..ready], &self.scores[..ready], &mut self.best);
        match &table.rows {
            Rows::Narrow(rows) => self.count_rows(&table.blocks, rows, ready),
            Rows::Wide(rows) => self.count_rows(&table.blocks, rows, ready),
        }
        self.pending.drain(..ready);
        self.scores.drain(..ready);
    }

    /// Counts `pending[..ready]`: a whole matched block from its pre-counted histogram, other
    /// matches row by row.
    fn count_rows<T: Slot>(&mut self, blocks: &BlockCounts, rows: &[T], ready: usize) {
        let stride = self.table.stride;
        let pending = &self.pending[..ready];
        // Scattered matches make every row a cache miss. This loop only loads each row's first
        // slot: its loads are independent and few instructions apart, so the CPU has dozens in
        // flight at once, where the counting loop below has room for a handful (measured: 12%
        // more QPS on word + brand queries). Dense matches are read in sequence, which the
        // hardware prefetches anyway, and are mostly whole blocks: the loop would only cost.
        let span = match (pending.first(), pending.last()) {
            (Some(first), Some(last)) => (last - first) as usize + 1,
            _ => 0,
        };
        if span > 4 * pending.len() {
            let touched = pending.iter().fold(0usize, |acc, &doc| acc ^ rows[doc as usize * stride].index());
            std::hint::black_box(touched);
        }
        let mut i = 0;
        while i < pending.len() {
            let doc = pending[i];
            let full_block =
                doc.is_multiple_of(BLOCK) && pending.get(i + BLOCK as usize - 1) == Some(&(doc + BLOCK - 1));
            if full_block {
                let block = (doc / BLOCK) as usize;
                for &(slot, count) in blocks.facets(block) {
                    self.counts[slot as usize] += count;
                }
                for (total, count) in self.buckets[0].iter_mut().zip(&blocks.buckets[block]) {
                    *total += count;
                }
                i += BLOCK as usize;
                continue;
            }
            let lane = i % LANES;
            let counts = &mut self.counts[lane * self.width..][..self.width];
            let row = &rows[doc as usize * stride..][..stride];
            let (ids, bucket) = row.split_at(stride - 1);
            for &id in ids {
                counts[id.index()] += 1;
            }
            self.buckets[lane][bucket[0].index()] += 1;
            i += 1;
        }
    }

    #[inline]
    fn take(&mut self, doc: DocId, score: Score) {
        self.pending.push(doc);
        self.scores.push(score);
        if self.pending.len() == BATCH {
            self.count_pending(false);
        }
    }
}

impl Collector for SearchPass<'_> {
    type Fruit = Found;
    type Child = SegmentPass;

    fn for_segment(&self, segment: SegmentOrdinal, reader: &SegmentReader) -> tantivy::Result<SegmentPass> {
        let table = self.tables.table(reader)?;
        let width = self.tables.known_ids() + 1;
        let k = self.offset + self.limit;
        Ok(SegmentPass::new(table, self.sort, self.out_of_stock, self.price, segment, k, width))
    }

    fn requires_scoring(&self) -> bool {
        self.sort == Sort::Relevance
    }

    fn merge_fruits(&self, fruits: Vec<SegmentFound>) -> tantivy::Result<Found> {
        let len = fruits.iter().flat_map(|f| &f.facets).map(|(id, _)| *id as usize + 1).max().unwrap_or(0);
        let mut totals = vec![0u64; len];
        let mut price_buckets = vec![0u64; PRICE_BUCKETS.len() + 1];
        let mut total = 0;
        let mut best = Vec::new();
        for fruit in fruits {
            total += fruit.matches;
            for (id, count) in fruit.facets {
                totals[id as usize] += count;
            }
            for (total, count) in price_buckets.iter_mut().zip(fruit.price_buckets) {
                *total += count;
            }
            best.extend(fruit.best);
        }
        best.sort_by(|a, b| better_first(a.0, b.0).then_with(|| a.1.cmp(&b.1)));
        let shown = |rank: f64| match self.sort {
            Sort::PriceAsc => -rank as f32,
            _ => rank as f32,
        };
        let hits = best.into_iter().skip(self.offset).take(self.limit).map(|(rank, at)| (shown(rank), at)).collect();
        let facets = totals.into_iter().enumerate().filter(|(_, c)| *c > 0).map(|(id, c)| (id as u32, c)).collect();
        Ok(Found { hits, total, facets, price_buckets })
    }
}

/// One segment's counts and best hits.
pub struct SegmentFound {
    matches: usize,
    best: Vec<(f64, DocAddress)>,
    facets: Vec<(u32, u64)>,
    price_buckets: Vec<u64>,
}

impl SegmentCollector for SegmentPass {
    type Fruit = SegmentFound;

    fn collect(&mut self, doc: DocId, score: Score) {
        self.take(doc, score);
    }

    fn collect_block(&mut self, docs: &[DocId]) {
        for &doc in docs {
            self.take(doc, 0.0);
        }
    }

    fn harvest(mut self) -> SegmentFound {
        self.count_pending(true);
        let lanes: Vec<&[u32]> = self.counts.chunks_exact(self.width).collect();
        let facets = (1..self.width)
            .map(|slot| (slot as u32 - 1, lanes.iter().map(|lane| u64::from(lane[slot])).sum::<u64>()))
            .filter(|(_, c)| *c > 0)
            .collect();
        let price_buckets =
            (0..=PRICE_BUCKETS.len()).map(|b| self.buckets.iter().map(|lane| u64::from(lane[b])).sum()).collect();
        let segment = self.segment;
        let best =
            self.best.into_sorted().into_iter().map(|(rank, doc)| (rank, DocAddress::new(segment, doc))).collect();
        SegmentFound { matches: self.matches, best, facets, price_buckets }
    }
}

/// Higher ranks first.
fn better_first(a: f64, b: f64) -> Ordering {
    b.total_cmp(&a)
}

/// The `k` best `(rank, doc)` pairs of a segment; among equal ranks the lower doc wins, as with
/// tantivy's `TopDocs`. Candidates gather in a buffer of `2k` that is cut back to the best `k`
/// when full; the cut's worst rank then turns away anything not better without buffering it.
struct TopK {
    k: usize,
    buffer: Vec<(f64, DocId)>,
    threshold: Option<f64>,
}

impl TopK {
    fn new(k: usize) -> TopK {
        TopK { k, buffer: Vec::with_capacity(2 * k), threshold: None }
    }

    /// Whether a doc of `rank` would be kept now. Docs arrive in ascending order, so an equal
    /// rank loses to the one already kept.
    #[inline]
    fn admits(&self, rank: f64) -> bool {
        self.k > 0 && self.threshold.is_none_or(|t| rank > t)
    }

    #[inline]
    fn push(&mut self, rank: f64, doc: DocId) {
        if !self.admits(rank) {
            return;
        }
        self.buffer.push((rank, doc));
        if self.buffer.len() == 2 * self.k {
            self.cut();
        }
    }

    fn cut(&mut self) {
        let k = self.k;
        self.buffer.select_nth_unstable_by(k - 1, order);
        self.buffer.truncate(k);
        self.threshold = Some(self.buffer[k - 1].0);
    }

    fn into_sorted(mut self) -> Vec<(f64, DocId)> {
        self.buffer.sort_by(order);
        self.buffer.truncate(self.k);
        self.buffer
    }
}

fn order(a: &(f64, DocId), b: &(f64, DocId)) -> Ordering {
    better_first(a.0, b.0).then_with(|| a.1.cmp(&b.1))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A segment of `docs` documents with pseudo-random facet rows (up to 3 ids of 40) and buckets.
    fn table(docs: u32) -> Arc<SegmentTable> {
        let stride = 4;
        let mut rows = Vec::new();
        let mut x: u32 = 7;
        for _ in 0..docs {
            for _ in 0..3 {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                rows.push((x >> 16) % 41);
            }
            rows.push((x >> 8) % (PRICE_BUCKETS.len() as u32 + 1));
        }
        let n = docs as usize;
        Arc::new(SegmentTable {
            stride,
            blocks: BlockCounts::of(&rows, stride),
            rows: Rows::Narrow(rows.iter().map(|slot| *slot as u16).collect()),
            price: vec![0; n],
            created: vec![0; n],
            rating: vec![0.0; n],
            promoted: vec![false; n],
            in_stock: vec![true; n],
        })
    }

    fn counted(table: &Arc<SegmentTable>, matches: &[DocId]) -> SegmentFound {
        counted_in(table, matches, None)
    }

    fn counted_in(table: &Arc<SegmentTable>, matches: &[DocId], price: Option<(i64, i64)>) -> SegmentFound {
        let mut pass = SegmentPass::new(table.clone(), Sort::Relevance, 1.0, price, 0, 0, 41);
        for &doc in matches {
            pass.collect(doc, 1.0);
        }
        pass.harvest()
    }

    #[test]
    fn whole_blocks_count_the_same_as_their_rows() {
        let table = table(1_000);
        // Whole aligned blocks, runs straddling blocks and batches, scattered docs, and the
        // partial last block.
        let matches: Vec<DocId> = (0..200).chain(250..420).chain((420..900).step_by(7)).chain(960..1_000).collect();
        let Rows::Narrow(rows) = &table.rows else { unreachable!() };
        let mut facets = vec![0u64; 41];
        let mut buckets = vec![0u64; PRICE_BUCKETS.len() + 1];
        for &doc in &matches {
            let row = &rows[doc as usize * 4..][..4];
            for &slot in &row[..3] {
                facets[slot as usize] += 1;
            }
            buckets[row[3] as usize] += 1;
        }
        let expected: Vec<(u32, u64)> =
            facets.iter().enumerate().skip(1).filter(|(_, c)| **c > 0).map(|(s, c)| (s as u32 - 1, *c)).collect();
        let found = counted(&table, &matches);
        assert_eq!(found.matches, matches.len());
        assert_eq!(found.facets, expected);
        assert_eq!(found.price_buckets, buckets);
    }

    #[test]
    fn the_price_range_leaves_out_matches_everywhere_they_are_counted() {
        let mut table = Arc::into_inner(table(1_000)).expect("one owner");
        for (doc, price) in table.price.iter_mut().enumerate() {
            *price = ((doc * 37) % 400) as i64;
        }
        let table = Arc::new(table);
        // Whole blocks the range breaks up, runs across batches, scattered docs, the last block.
        let matches: Vec<DocId> = (0..200).chain(250..420).chain((420..900).step_by(7)).chain(960..1_000).collect();
        let in_range: Vec<DocId> =
            matches.iter().copied().filter(|doc| (100..=250).contains(&table.price[*doc as usize])).collect();
        assert!(in_range.len() < matches.len() && !in_range.is_empty());
        let filtered = counted_in(&table, &matches, Some((100, 250)));
        let expected = counted(&table, &in_range);
        assert_eq!(filtered.matches, in_range.len());
        assert_eq!(filtered.facets, expected.facets);
        assert_eq!(filtered.price_buckets, expected.price_buckets);
    }

    #[test]
    fn the_page_is_the_best_by_rank_whatever_the_sort_and_batches() {
        let table = {
            let mut t = Arc::into_inner(table(3_000)).expect("one owner");
            let mut x: u64 = 11;
            let mut next = || {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                x >> 33
            };
            for d in 0..3_000 {
                t.price[d] = (next() % 500) as i64;
                t.created[d] = next() as i64;
                t.rating[d] = (next() % 50) as f64 / 10.0;
                t.promoted[d] = next() % 5 == 0;
            }
            Arc::new(t)
        };
        let docs: Vec<DocId> = (0..3_000).filter(|d| d % 3 != 1).collect();
        let score = |doc: DocId| ((doc * 7_919) % 1_000) as f32 / 100.0;
        for sort in [Sort::Relevance, Sort::PriceAsc, Sort::PriceDesc, Sort::Newest, Sort::Rating] {
            let d = |doc: DocId| doc as usize;
            let rank = |doc: DocId| match sort {
                Sort::Relevance if table.promoted[d(doc)] => f64::from(score(doc) * PROMOTED_BOOST + 0.001),
                Sort::Relevance => f64::from(score(doc)),
                Sort::PriceAsc => -(table.price[d(doc)] as f64),
                Sort::PriceDesc => table.price[d(doc)] as f64,
                Sort::Newest => table.created[d(doc)] as f64,
                Sort::Rating => table.rating[d(doc)],
            };
            let mut expected: Vec<(f64, DocId)> = docs.iter().map(|&doc| (rank(doc), doc)).collect();
            expected.sort_by(order);
            expected.truncate(25);
            let mut pass = SegmentPass::new(table.clone(), sort, 1.0, None, 0, 25, 41);
            for &doc in &docs {
                pass.collect(doc, score(doc));
            }
            let found: Vec<(f64, DocId)> = pass.harvest().best.iter().map(|(r, at)| (*r, at.doc_id)).collect();
            assert_eq!(found, expected, "{sort:?}");
        }
    }

    #[test]
    fn out_of_stock_products_rank_below_in_stock_ones_at_equal_relevance() {
        let mut table = Arc::into_inner(table(4)).unwrap();
        // 0: out of stock; 1: in stock; 2: out of stock, promoted; 3: in stock, less relevant.
        table.in_stock = vec![false, true, false, true];
        table.promoted = vec![false, false, true, false];
        let table = Arc::new(table);
        let ranked = |out_of_stock: f32| {
            let mut pass = SegmentPass::new(table.clone(), Sort::Relevance, out_of_stock, None, 0, 4, 41);
            for (doc, score) in [(0, 1.0), (1, 1.0), (2, 1.0), (3, 0.7)] {
                pass.collect(doc, score);
            }
            pass.harvest().best.iter().map(|(_, at)| at.doc_id).collect::<Vec<_>>()
        };
        assert_eq!(ranked(0.75), [1, 2, 0, 3], "in stock first; promotion still counts");
        assert_eq!(ranked(0.5), [1, 3, 2, 0], "a lower factor lets less relevant stock pass");
        assert_eq!(&ranked(1.0)[..1], [2], "1 ignores stock: the promoted product leads");
    }

    #[test]
    fn segment_tables_follow_the_searchable_segments() {
        let (schema, fields) = crate::index::schema();
        let index = tantivy::Index::create_in_ram(schema);
        index.tokenizers().register(crate::index::ANALYZER, crate::index::analyzer());
        let tables = Arc::new(SegmentTables::default());
        let warmer: std::sync::Weak<dyn Warmer> = Arc::downgrade(&tables) as std::sync::Weak<dyn Warmer>;
        let reader = index.reader_builder().reload_policy(tantivy::ReloadPolicy::Manual).warmers(vec![warmer]);
        let reader = reader.try_into().unwrap();
        let mut writer: tantivy::IndexWriter = index.writer_with_num_threads(1, 15_000_000).unwrap();
        writer.set_merge_policy(Box::new(tantivy::indexer::NoMergePolicy));
        let cached = || tables.inner.lock().unwrap().by_segment.keys().copied().collect::<HashSet<_>>();
        for batch in 0..2 {
            let mut doc = tantivy::TantivyDocument::default();
            doc.add_facet(fields.facets, crate::index::brand_facet(&format!("brand {batch}")));
            writer.add_document(doc).unwrap();
            writer.commit().unwrap();
            reader.reload().unwrap();
        }
        let searchable = |reader: &tantivy::IndexReader| {
            reader.searcher().segment_readers().iter().map(|s| s.segment_id()).collect::<HashSet<_>>()
        };
        assert_eq!(cached(), searchable(&reader), "each new segment is decoded on reload");
        assert_eq!(cached().len(), 2);
        let ids = index.searchable_segment_ids().unwrap();
        writer.merge(&ids).wait().unwrap();
        reader.reload().unwrap();
        assert_eq!(searchable(&reader).len(), 1);
        assert!(cached().is_superset(&searchable(&reader)), "the merged segment is decoded before it is searched");
        // Old searchers are collected in the background: wait for the merged-away tables to go.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while cached() != searchable(&reader) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert_eq!(cached(), searchable(&reader), "merged-away segments are dropped");
    }

    #[test]
    fn top_k_keeps_the_best_and_breaks_ties_by_doc() {
        let mut top = TopK::new(3);
        for (doc, rank) in [5.0, 1.0, 7.0, 7.0, 2.0, 9.0, 7.0, 0.5, 9.0, 3.0].into_iter().enumerate() {
            top.push(rank, doc as DocId);
        }
        assert_eq!(top.into_sorted(), [(9.0, 5), (9.0, 8), (7.0, 2)]);
    }

    #[test]
    fn top_k_of_zero_keeps_nothing_and_fewer_than_k_keeps_all() {
        let mut none = TopK::new(0);
        none.push(1.0, 0);
        assert!(none.into_sorted().is_empty());
        let mut some = TopK::new(10);
        some.push(1.0, 4);
        some.push(2.0, 9);
        assert_eq!(some.into_sorted(), [(2.0, 9), (1.0, 4)]);
    }
}
