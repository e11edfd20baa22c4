//! Search use cases: query, suggest, reindex; the popular-query cache; the hooks for
//! deliverability (inventory) and personal re-ranking.

use crate::collect::{SearchPass, SegmentTables};
use crate::index::{self, Fields, from_document};
use crate::indexer::{self, IndexerHandle, IndexerOptions, Op};
use crate::model::{SearchDoc, SearchRequest, Synonyms, bucket_bounds, normalise_query};
use crate::warehouses::{WarehouseDirectory, deliverable};
use emporium_catalog::api::CatalogClient;
use emporium_kernel::error::ApiError;
use emporium_kernel::http::encode_cursor;
use emporium_kernel::ids::{ProductId, UserId, WarehouseId};
use emporium_kernel::money::Money;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tantivy::collector::TopDocs;
use tantivy::{IndexReader, TantivyDocument};

/// One search hit, as API.md lists it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Hit {
    pub product_id: ProductId,
    pub title: String,
    pub brand: String,
    pub price: Money,
    pub rating: f64,
    pub rating_count: i64,
    pub in_stock: bool,
    pub stock_left: i64,
    /// Present when the request carries a location.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deliverable: Option<bool>,
    /// Where the available units are; decides `deliverable`, not shown.
    #[serde(skip)]
    pub stock_warehouses: Vec<WarehouseId>,
    pub promoted: bool,
    pub score: f32,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct FacetCount {
    pub value: String,
    pub count: u64,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct CategoryCount {
    /// The category id (use it as `category=`).
    pub value: String,
    pub name: String,
    pub count: u64,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct PriceCount {
    pub from: i64,
    /// `null` for the open-ended top bucket.
    pub to: Option<i64>,
    pub count: u64,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct SearchResponse {
    pub items: Vec<Hit>,
    /// `brand`, `category` (children of the filtered category, or the top level), `price`
    /// buckets and one `attr.NAME` entry per attribute among the matches.
    #[schema(value_type = Object)]
    pub facets: serde_json::Map<String, serde_json::Value>,
    pub total: usize,
    pub next_cursor: Option<String>,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Suggestion {
    pub text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub product_id: Option<ProductId>,
}

/// Re-orders a page of hits for the signed-in shopper (affinities, history). The default keeps
/// the engine's order.
pub trait Reranker: Send + Sync + 'static {
    fn rerank(&self, user: Option<UserId>, hits: &mut [Hit]);
}

pub struct KeepOrder;

impl Reranker for KeepOrder {
    fn rerank(&self, _user: Option<UserId>, _hits: &mut [Hit]) {}
}

const CACHE_CAPACITY: usize = 2_000;
const POPULAR_CAPACITY: usize = 10_000;

pub struct SearchService {
    reader: IndexReader,
    fields: Fields,
    synonyms: Arc<Synonyms>,
    indexer: IndexerHandle,
    /// Popular (normalised query + filters) answers, valid for one index generation.
    cache: Mutex<(u64, HashMap<String, Arc<SearchResponse>>)>,
    popular: Mutex<HashMap<String, u64>>,
    warehouses: Arc<WarehouseDirectory>,
    /// Where a signed-in shopper's default address is, when the request gives no location.
    users: Option<emporium_users::api::UsersClient>,
    reranker: Arc<dyn Reranker>,
    /// How much an out-of-stock product's relevance counts (see `SearchPass::out_of_stock`).
    out_of_stock: f32,
    segment_tables: Arc<SegmentTables>,
    /// Searches running at once: one per core (see [`SearchService::run_admitted`]).
    running: tokio::sync::Semaphore,
    cache_enabled: AtomicBool,
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
}

impl SearchService {
    /// Opens (or creates) the index under `root` and starts its writer. Needs a Tokio runtime.
    pub fn open(root: &Path, synonyms: Synonyms) -> anyhow::Result<SearchService> {
        let synonyms = Arc::new(synonyms);
        let opened = index::open(root, &synonyms)?;
        let indexer = indexer::spawn(
            opened.index,
            opened.reader.clone(),
            opened.fields,
            opened.payload,
            synonyms.clone(),
            IndexerOptions::default(),
        )?;
        Ok(SearchService {
            reader: opened.reader,
            fields: opened.fields,
            synonyms,
            indexer,
            cache: Mutex::new((0, HashMap::new())),
            popular: Mutex::new(HashMap::new()),
            warehouses: Arc::new(WarehouseDirectory::open(root.join("warehouses.json"))),
            users: None,
            reranker: Arc::new(KeepOrder),
            // Stock does not change the order until the shop's setting says how much it does.
            out_of_stock: 1.0,
            segment_tables: opened.segment_tables,
            running: tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get())),
            cache_enabled: AtomicBool::new(true),
            cache_hits: AtomicU64::new(0),
            cache_misses: AtomicU64::new(0),
        })
    }

    pub fn indexer(&self) -> &IndexerHandle {
        &self.indexer
    }

    /// Lets signed-in shoppers' searches use their default address for `deliverable`.
    pub fn with_users(mut self, users: emporium_users::api::UsersClient) -> Self {
        self.users = Some(users);
        self
    }

    /// How much an out-of-stock product's relevance counts, from 0 to 1 (1: stock does not
    /// change the order).
    pub fn with_out_of_stock_factor(mut self, factor: f32) -> Self {
        self.out_of_stock = factor.clamp(0.0, 1.0);
        self
    }

    pub fn warehouses(&self) -> &Arc<WarehouseDirectory> {
        &self.warehouses
    }

    /// Turns the popular-query cache on or off (benchmarks measure the engine both ways).
    pub fn set_cache_enabled(&self, enabled: bool) {
        self.cache_enabled.store(enabled, Ordering::Relaxed);
    }

    /// `(hits, misses)` of the popular-query cache since start.
    pub fn cache_stats(&self) -> (u64, u64) {
        (self.cache_hits.load(Ordering::Relaxed), self.cache_misses.load(Ordering::Relaxed))
    }

    pub fn document_count(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// The hits with the live stock counts (the index and the cache may hold older ones).
    fn with_live_stock(&self, response: Arc<SearchResponse>) -> Arc<SearchResponse> {
        let live = |hit: &Hit| self.indexer.live_stock(hit.product_id).filter(|n| *n != hit.stock_left);
        if !response.items.iter().any(|hit| live(hit).is_some()) {
            return response;
        }
        let mut fresh = (*response).clone();
        for hit in &mut fresh.items {
            if let Some(available) = live(hit) {
                hit.stock_left = available;
                hit.in_stock = available > 0;
            }
        }
        Arc::new(fresh)
    }

    pub async fn search(
        self: &Arc<Self>,
        req: SearchRequest,
        user: Option<UserId>,
    ) -> Result<Arc<SearchResponse>, ApiError> {
        let started = Instant::now();
        let key = req.cache_key();
        let generation = *self.indexer.generation().borrow();
        let use_cache = self.cache_enabled.load(Ordering::Relaxed);
        let cached = if !use_cache {
            None
        } else {
            let mut cache = self.cache.lock().expect("cache lock");
            if cache.0 != generation {
                *cache = (generation, HashMap::new());
            }
            cache.1.get(&key).cloned()
        };
        let response = match cached {
            Some(hit) => {
                metrics::counter!("search_cache_hits_total").increment(1);
                self.cache_hits.fetch_add(1, Ordering::Relaxed);
                hit
            }
            None => {
                self.cache_misses.fetch_add(1, Ordering::Relaxed);
                let response = Arc::new(self.run_admitted(|this| this.execute(&req)).await?);
                let mut cache = self.cache.lock().expect("cache lock");
                if use_cache && cache.0 == generation {
                    if cache.1.len() >= CACHE_CAPACITY {
                        cache.1.clear();
                    }
                    cache.1.insert(key, response.clone());
                }
                response
            }
        };
        let response = self.with_live_stock(response);
        if response.total > 0 && !req.q.is_empty() {
            self.count_popular(&req.q);
        }
        metrics::histogram!("search_latency_seconds").record(started.elapsed().as_secs_f64());
        if req.location.is_none() && user.is_none() {
            return Ok(response);
        }
        // Per-shopper parts are never cached.
        let mut personal = (*response).clone();
        let location = match (req.location, user, &self.users) {
            (Some(location), _, _) => Some(location),
            (None, Some(user), Some(users)) => match users.default_address(user).await {
                Ok(address) => address.and_then(|a| Some(emporium_kernel::geo::GeoPoint { lat: a.lat?, lon: a.lon? })),
                Err(err) => {
                    // Deliverability is a hint; the search itself still answers.
                    tracing::warn!(error = %err, "reading the shopper's default address failed");
                    None
                }
            },
            _ => None,
        };
        if let Some(location) = location {
            let covering = self.warehouses.covering(location);
            for hit in &mut personal.items {
                hit.deliverable = Some(deliverable(&covering, &hit.stock_warehouses));
            }
        }
        self.reranker.rerank(user, &mut personal.items);
        Ok(Arc::new(personal))
    }

    /// Runs index work once a core is free for it, on the calling async worker thread.
    ///
    /// A search is bounded CPU work (about a millisecond on a million products; the request's
    /// limits bound the worst case), and handing it to a blocking thread and back cost more
    /// than that bound's share: two cross-thread wake-ups per request, which on a virtual
    /// machine are interrupts to the hypervisor. Measured on 2 cores, 1M products: HTTP
    /// 1,135 QPS with the cores 79% busy through `spawn_blocking`, 1,412 QPS and 98% busy
    /// inline. The semaphore keeps it to one search per core, so the other tasks wait at most
    /// one search, and more concurrent searches only queue here instead of time-slicing
    /// (which evicts each other's rows from the caches). Segment tables, the one slow step,
    /// are built when a segment first becomes searchable (see [`SegmentTables`]'s warming),
    /// never here.
    async fn run_admitted<T>(&self, work: impl FnOnce(&SearchService) -> tantivy::Result<T>) -> Result<T, ApiError> {
        let _running = self.running.acquire().await.map_err(ApiError::internal)?;
        work(self).map_err(ApiError::internal)
    }

    /// The search itself (CPU work, see [`SearchService::run_admitted`]).
    pub fn execute(&self, req: &SearchRequest) -> tantivy::Result<SearchResponse> {
        let searcher = self.reader.searcher();
        let query = crate::query::build(&searcher, &self.fields, &self.synonyms, req);
        let pass = SearchPass {
            tables: &self.segment_tables,
            sort: req.sort,
            offset: req.offset,
            limit: req.limit,
            price: req.price,
            out_of_stock: self.out_of_stock,
        };
        let found = searcher.search(&query, &pass)?;
        let mut docs = Vec::with_capacity(found.hits.len());
        for (score, address) in found.hits {
            let stored: TantivyDocument = searcher.doc(address)?;
            if let Some(doc) = from_document(&self.fields, &stored) {
                docs.push((score, doc));
            }
        }
        let mut facet_map = serde_json::Map::new();
        let mut brand = Vec::new();
        let mut attributes: BTreeMap<String, Vec<FacetCount>> = BTreeMap::new();
        // Each document carries its category's full path; every ancestor counts it too.
        let facet_counts = self.segment_tables.resolve(&found.facets);
        let mut subtree: HashMap<&[String], u64> = HashMap::new();
        for (path, count) in &facet_counts {
            match path.first().map(String::as_str) {
                Some("brand") if path.len() == 2 => brand.push(FacetCount { value: path[1].clone(), count: *count }),
                Some("attr") if path.len() == 2 => {
                    if let Some((name, value)) = path[1].split_once('=') {
                        attributes
                            .entry(name.to_owned())
                            .or_default()
                            .push(FacetCount { value: value.to_owned(), count: *count });
                    }
                }
                Some("cat") => {
                    for depth in 2..=path.len() {
                        *subtree.entry(&path[..depth]).or_insert(0) += count;
                    }
                }
                _ => {}
            }
        }
        facet_map.insert("brand".into(), serde_json::to_value(most_frequent(brand)).unwrap_or_default());
        for (name, values) in attributes {
            facet_map.insert(format!("attr.{name}"), serde_json::to_value(most_frequent(values)).unwrap_or_default());
        }
        // Children of the filtered category (found by its `<id>:` segment), else the top level.
        let parent: Option<Vec<String>> = match req.category {
            None => Some(vec!["cat".to_owned()]),
            Some(selected) => {
                let prefix = format!("{selected}:");
                subtree.keys().find(|p| p.last().is_some_and(|s| s.starts_with(&prefix))).map(|p| p.to_vec())
            }
        };
        let categories = match &parent {
            Some(parent) => category_counts(
                subtree.iter().filter(|(path, _)| path.len() == parent.len() + 1 && path.starts_with(parent)),
            ),
            None => Vec::new(),
        };
        facet_map.insert("category".into(), serde_json::to_value(categories).unwrap_or_default());
        let prices: Vec<PriceCount> = found
            .price_buckets
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(i, count)| {
                let (from, to) = bucket_bounds(i);
                PriceCount { from, to, count: *count }
            })
            .collect();
        facet_map.insert("price".into(), serde_json::to_value(prices).unwrap_or_default());

        let next_offset = req.offset + docs.len();
        let total = found.total;
        let next_cursor = (next_offset < total && next_offset <= crate::model::MAX_OFFSET)
            .then(|| encode_cursor(&next_offset.to_string()));
        let items = docs
            .into_iter()
            .map(|(score, d)| Hit {
                product_id: d.product_id,
                title: d.title,
                brand: d.brand,
                price: d.price,
                rating: d.rating_average,
                rating_count: d.rating_count,
                in_stock: d.in_stock,
                stock_left: d.stock_left,
                stock_warehouses: d.stock_warehouses,
                deliverable: None,
                promoted: d.promoted,
                score,
            })
            .collect();
        Ok(SearchResponse { items, facets: facet_map, total, next_cursor })
    }

    /// Completions for what the shopper is typing: popular past queries starting with it, then
    /// product titles matching it (the last word as a typo-tolerant prefix).
    pub async fn suggest(self: &Arc<Self>, q: &str) -> Result<Vec<Suggestion>, ApiError> {
        let prefix = normalise_query(q);
        if prefix.is_empty() {
            return Ok(Vec::new());
        }
        let mut suggestions: Vec<Suggestion> = {
            let popular = self.popular.lock().expect("popular lock");
            let mut matches: Vec<(&String, &u64)> =
                popular.iter().filter(|(text, _)| text.starts_with(&prefix) && **text != prefix).collect();
            matches.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            matches.into_iter().take(3).map(|(text, _)| Suggestion { text: text.clone(), product_id: None }).collect()
        };
        let titles = self.run_admitted(|this| this.title_completions(&prefix, 8)).await?;
        suggestions.extend(titles);
        Ok(suggestions)
    }

    fn title_completions(&self, prefix: &str, limit: usize) -> tantivy::Result<Vec<Suggestion>> {
        let words: Vec<&str> = prefix.split_whitespace().collect();
        let Some((last, leading)) = words.split_last() else { return Ok(Vec::new()) };
        let searcher = self.reader.searcher();
        let mut clauses = Vec::new();
        for word in leading {
            if let Some(q) = crate::query::word_query(&searcher, &self.fields, &self.synonyms, word, false) {
                clauses.push((tantivy::query::Occur::Must, q));
            }
        }
        if let Some(q) = crate::query::word_query(&searcher, &self.fields, &self.synonyms, last, true) {
            clauses.push((tantivy::query::Occur::Must, q));
        }
        let query = tantivy::query::BooleanQuery::new(clauses);
        let hits = searcher.search(&query, &TopDocs::with_limit(limit * 3).order_by_score())?;
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for (_, address) in hits {
            let stored: TantivyDocument = searcher.doc(address)?;
            if let Some(doc) = from_document(&self.fields, &stored)
                && seen.insert(doc.title.to_lowercase())
            {
                out.push(Suggestion { text: doc.title, product_id: Some(doc.product_id) });
                if out.len() == limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    fn count_popular(&self, q: &str) {
        let normalised = normalise_query(q);
        let mut popular = self.popular.lock().expect("popular lock");
        if popular.len() >= POPULAR_CAPACITY && !popular.contains_key(&normalised) {
            // Forget the long tail; popular queries quickly come back.
            popular.retain(|_, n| *n > 1);
            if popular.len() >= POPULAR_CAPACITY {
                return;
            }
        }
        *popular.entry(normalised).or_insert(0) += 1;
    }

    /// Rebuilds the index from the catalog. `position` is the catalog event position read
    /// before the scan: events after it are applied again by the indexer, which is harmless
    /// because indexing is an upsert.
    ///
    /// Products are fed category by category, in category-tree order, and by brand within a
    /// category, so the rebuilt index stores a category's products (and a sub-tree's) next to
    /// each other, and a brand's within it: most queries match mostly within a few categories,
    /// often of one brand, and facet counting and posting lists then read memory in sequence
    /// (whole pre-counted blocks) instead of one cache miss per match (Elasticsearch's index
    /// sorting, for the same reason).
    pub async fn reindex(
        &self,
        catalog: &CatalogClient,
        position: i64,
        mut progress: impl FnMut(usize),
    ) -> anyhow::Result<usize> {
        self.indexer.send(Op::Clear).await?;
        let mut scan =
            emporium_catalog::api::TreeOrderScan::start(catalog.clone()).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut total = 0;
        while let Some((category, batch)) = scan.next_batch(1_000).await.map_err(|e| anyhow::anyhow!("{e}"))? {
            let Some(resolved) = emporium_catalog::api::resolve_category(scan.categories(), category) else {
                continue;
            };
            total += batch.len();
            for product in batch {
                let snapshot = emporium_catalog::api::events::ProductSnapshot::new(product, &resolved);
                self.indexer.send(Op::Upsert(Box::new(SearchDoc::from_snapshot(&snapshot)))).await?;
            }
            progress(total);
        }
        self.indexer.send(Op::Position { source: emporium_catalog::api::events::SOURCE.into(), seq: position }).await?;
        self.indexer.flush().await?;
        self.indexer.optimize().await?;
        Ok(total)
    }
}

/// Values shown per facet: the most frequent first, ties by name.
pub const FACET_VALUES: usize = 30;

fn most_frequent(mut counts: Vec<FacetCount>) -> Vec<FacetCount> {
    counts.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.value.cmp(&b.value)));
    counts.truncate(FACET_VALUES);
    counts
}

fn category_counts<'a>(counts: impl Iterator<Item = (&'a &'a [String], &'a u64)>) -> Vec<CategoryCount> {
    let mut out: Vec<CategoryCount> = counts
        .filter_map(|(path, count)| {
            let (id, name) = path.last()?.split_once(':')?;
            Some(CategoryCount { value: id.to_owned(), name: name.to_owned(), count: *count })
        })
        .collect();
    out.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.name.cmp(&b.name)));
    out
}
