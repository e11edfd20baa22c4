//! Search domain: parsed requests, typo tolerance, synonyms, price buckets and the document the
//! index holds. Pure: no I/O, unit-tested.

use emporium_catalog::api::events::ProductSnapshot;
use emporium_kernel::error::FieldError;
use emporium_kernel::ids::{CategoryId, ProductId, WarehouseId};
use emporium_kernel::money::Money;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sort {
    Relevance,
    PriceAsc,
    PriceDesc,
    Rating,
    Newest,
}

impl Sort {
    fn parse(raw: &str) -> Option<Sort> {
        Some(match raw {
            "relevance" => Sort::Relevance,
            "price_asc" => Sort::PriceAsc,
            "price_desc" => Sort::PriceDesc,
            "rating" => Sort::Rating,
            "newest" => Sort::Newest,
            _ => return None,
        })
    }
}

pub const MAX_LIMIT: usize = 100;
/// Deep paging is what browsing by filters is for; this bounds the cost of one request.
pub const MAX_OFFSET: usize = 10_000;

/// A validated search request.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SearchRequest {
    pub q: String,
    pub category: Option<CategoryId>,
    pub brand: Option<String>,
    /// Inclusive bounds in minor units.
    pub price: Option<(i64, i64)>,
    /// `attr.NAME=VALUE` filters, sorted by name.
    pub attributes: Vec<(String, String)>,
    pub sort: Sort,
    pub limit: usize,
    pub offset: usize,
    pub location: Option<emporium_kernel::geo::GeoPoint>,
}

impl SearchRequest {
    /// Parses query parameters, naming every bad one.
    pub fn parse(params: &HashMap<String, String>) -> Result<SearchRequest, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut bad = |field: &str, message: &str| errors.push(FieldError::new(field, message));
        let q = params.get("q").map(|s| s.trim().to_owned()).unwrap_or_default();
        if q.chars().count() > 200 {
            bad("q", "must be at most 200 characters");
        }
        let category = match params.get("category").filter(|s| !s.is_empty()) {
            Some(raw) => raw.parse().map(Some).unwrap_or_else(|_| {
                bad("category", "is not a category id");
                None
            }),
            None => None,
        };
        let brand = params.get("brand").map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
        let price = match params.get("price") {
            Some(raw) => match parse_price_range(raw) {
                Some(range) => Some(range),
                None => {
                    bad("price", "must be MIN-MAX in minor units, e.g. 1000-5000 (either side may be empty)");
                    None
                }
            },
            None => None,
        };
        let sort = match params.get("sort").map(String::as_str) {
            None | Some("") => Sort::Relevance,
            Some(raw) => Sort::parse(raw).unwrap_or_else(|| {
                bad("sort", "must be relevance, price_asc, price_desc, rating or newest");
                Sort::Relevance
            }),
        };
        let limit = match params.get("limit") {
            None => 20,
            Some(raw) => match raw.parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                _ => {
                    bad("limit", "must be an integer from 1 to 100");
                    20
                }
            },
        };
        let offset = match params.get("cursor").filter(|s| !s.is_empty()) {
            None => 0,
            Some(raw) => match emporium_kernel::http::decode_cursor(raw).and_then(|s| s.parse::<usize>().ok()) {
                Some(n) if n <= MAX_OFFSET => n,
                _ => {
                    bad("cursor", "is not a cursor this API issued");
                    0
                }
            },
        };
        let location = match emporium_kernel::geo::optional_point(
            params.get("lat").map(String::as_str),
            params.get("lon").map(String::as_str),
        ) {
            Ok(location) => location,
            Err(errors) => {
                for (field, message) in errors {
                    bad(field, &message);
                }
                None
            }
        };
        let mut attributes: Vec<(String, String)> = params
            .iter()
            .filter_map(|(k, v)| k.strip_prefix("attr.").map(|name| (name.to_owned(), v.trim().to_owned())))
            .collect();
        for (name, value) in &attributes {
            if name.is_empty() || value.is_empty() {
                errors.push(FieldError::new(format!("attr.{name}"), "must be attr.NAME=VALUE with both parts"));
            }
        }
        attributes.sort();
        let known = ["q", "category", "brand", "price", "sort", "limit", "cursor", "lat", "lon"];
        for key in params.keys() {
            if !known.contains(&key.as_str()) && !key.starts_with("attr.") {
                errors.push(FieldError::new(key.clone(), "is not a search parameter"));
            }
        }
        if !errors.is_empty() {
            errors.sort_by(|a, b| a.field.cmp(&b.field));
            return Err(errors);
        }
        Ok(SearchRequest { q, category, brand, price, attributes, sort, limit, offset, location })
    }

    /// The cache key: the normalised query and everything that shapes the answer.
    pub fn cache_key(&self) -> String {
        let normalised = normalise_query(&self.q);
        serde_json::to_string(&(&normalised, self)).unwrap_or(normalised)
    }
}

fn parse_price_range(raw: &str) -> Option<(i64, i64)> {
    let (min, max) = raw.split_once('-')?;
    let bound = |s: &str, default: i64| -> Option<i64> {
        let s = s.trim();
        if s.is_empty() { Some(default) } else { s.parse::<i64>().ok().filter(|v| *v >= 0) }
    };
    let (min, max) = (bound(min, 0)?, bound(max, i64::MAX)?);
    (min <= max).then_some((min, max))
}

/// Lower-cased, whitespace-collapsed query text (what popular-query counting and the cache use).
pub fn normalise_query(q: &str) -> String {
    q.split_whitespace().map(str::to_lowercase).collect::<Vec<_>>().join(" ")
}

/// Edits tolerated for a query word, growing with its length (as Elasticsearch's `AUTO`): short
/// words must match exactly, long words may carry two typos.
pub fn fuzzy_distance(word: &str) -> u8 {
    match word.chars().count() {
        0..=2 => 0,
        3..=5 => 1,
        _ => 2,
    }
}

/// Edits between two words, a swap of neighbouring letters counting as one (the optimal string
/// alignment distance, as tantivy's fuzzy queries count with transpositions).
pub fn typo_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    // Three rows of the edit table: two back (for swaps), the last, and the one being filled.
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut last: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut row = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let substitution = usize::from(a[i - 1] != b[j - 1]);
            row[j] = (last[j] + 1).min(row[j - 1] + 1).min(last[j - 1] + substitution);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                row[j] = row[j].min(before[j - 2] + 1);
            }
        }
        before = std::mem::replace(&mut last, row);
    }
    last[b.len()]
}

/// Sets of interchangeable words. A query word from a set matches any word of the set.
///
/// Single-word synonyms are applied when indexing: each word of a product is indexed with the
/// other words of its set ([`Synonyms::expansions`]), so a query word is one posting list
/// instead of a union over its set (the union was half of a synonym query's time). The index
/// is therefore built for one collection of sets ([`Synonyms::fingerprint`]); other sets get
/// another index, rebuilt at start.
#[derive(Clone, Debug, Default)]
pub struct Synonyms {
    by_word: HashMap<String, Vec<String>>,
    /// The same sets keyed by the analyzed (stemmed) token of each single-token word, for
    /// expanding a product's text.
    by_token: HashMap<String, Vec<String>>,
}

impl Synonyms {
    /// The sets Emporium ships with; `EMPORIUM_SEARCH_SYNONYMS` can add more.
    pub fn defaults() -> Synonyms {
        Synonyms::from_groups(&[
            &["laptop", "notebook"],
            &["tv", "television"],
            &["phone", "mobile", "smartphone", "cellphone"],
            &["sofa", "couch"],
            &["sneaker", "trainer"],
            &["headphone", "headset", "earphone"],
            &["fridge", "refrigerator"],
            &["tee", "tshirt"],
        ])
    }

    pub fn from_groups(groups: &[&[&str]]) -> Synonyms {
        let mut synonyms = Synonyms::default();
        for group in groups {
            synonyms.add_group(group);
        }
        synonyms
    }

    fn add_group(&mut self, group: &[&str]) {
        for word in group {
            let word = word.to_lowercase();
            let others: Vec<String> = group.iter().map(|w| w.to_lowercase()).filter(|w| *w != word).collect();
            if let [token] = crate::index::tokens(&word).as_slice() {
                self.by_token.entry(token.clone()).or_default().extend(others.iter().cloned());
            }
            self.by_word.entry(word).or_default().extend(others);
        }
    }

    /// Parses `a=b=c; x=y` into groups and adds them.
    pub fn extend_from_config(&mut self, config: &str) {
        for group in config.split(';') {
            let words: Vec<&str> = group.split('=').map(str::trim).filter(|w| !w.is_empty()).collect();
            if words.len() > 1 {
                self.add_group(&words);
            }
        }
    }

    /// The other words meaning `word` (already lower-cased).
    pub fn alternatives(&self, word: &str) -> &[String] {
        self.by_word.get(word).map(Vec::as_slice).unwrap_or_default()
    }

    /// The words of the sets that `word` (lower-cased, not itself one of them) misspells by one
    /// edit, if its length allows a typo at all ([`fuzzy_distance`]): through them a misspelt
    /// word reaches the synonyms of the word meant ("telvision" finds what "television" finds,
    /// "tv" included). One edit, not the two long words are allowed elsewhere: a word two edits
    /// from a synonym is as often another word ("iphnoe" is two from "phone").
    pub fn corrections(&self, word: &str) -> Vec<&str> {
        let allowed = usize::from(fuzzy_distance(word).min(1));
        if allowed == 0 || self.by_word.contains_key(word) {
            return Vec::new();
        }
        let mut found: Vec<&str> =
            self.by_word.keys().filter(|known| typo_distance(word, known) <= allowed).map(String::as_str).collect();
        found.sort_unstable();
        found
    }

    /// Whether the index holds `alternative` next to the words it is a synonym of (a single
    /// word), so that searching for any of them finds it without a clause of its own.
    pub fn indexed_with_its_set(alternative: &str) -> bool {
        crate::index::tokens(alternative).len() == 1
    }

    /// The words to index next to `text` so that any word of their sets finds it: for each of
    /// `text`'s words, the other words of its set, space-separated. Empty when there are none.
    pub fn expansions(&self, text: &str) -> String {
        if self.by_token.is_empty() {
            return String::new();
        }
        let mut out: Vec<&str> = Vec::new();
        for token in crate::index::tokens(text) {
            for other in self.by_token.get(&token).into_iter().flatten() {
                if !out.contains(&other.as_str()) {
                    out.push(other);
                }
            }
        }
        out.join(" ")
    }

    /// Identifies the sets, stably across builds and runs (names the index directory).
    pub fn fingerprint(&self) -> String {
        let mut sets: Vec<String> = self
            .by_word
            .iter()
            .map(|(word, others)| {
                let mut others = others.clone();
                others.sort();
                others.dedup();
                format!("{word}={}", others.join("="))
            })
            .collect();
        sets.sort();
        // FNV-1a: std's hasher may change between Rust releases, and this must not.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in sets.join(";").bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        format!("{hash:016x}")
    }
}

/// Price bucket upper bounds in minor units (the last bucket is open-ended).
pub const PRICE_BUCKETS: [i64; 7] = [2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000];

pub fn price_bucket(amount: i64) -> usize {
    PRICE_BUCKETS.iter().position(|upper| amount < *upper).unwrap_or(PRICE_BUCKETS.len())
}

/// `(from, to)` of bucket `i`; `to` is `None` for the open-ended last bucket.
pub fn bucket_bounds(i: usize) -> (i64, Option<i64>) {
    let from = if i == 0 { 0 } else { PRICE_BUCKETS[i - 1] };
    (from, PRICE_BUCKETS.get(i).copied())
}

/// What the index stores per product: the catalog snapshot plus what other services add.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SearchDoc {
    pub product_id: ProductId,
    pub title: String,
    pub description: String,
    pub brand: String,
    pub price: Money,
    pub attributes: BTreeMap<String, Value>,
    pub category_path: Vec<CategoryId>,
    pub category_names: Vec<String>,
    /// Which attributes are counted as facets (see `ProductSnapshot::facet_attributes`).
    #[serde(default)]
    pub facet_attributes: Vec<String>,
    pub promoted: bool,
    pub rating_average: f64,
    pub rating_count: i64,
    pub created_at_micros: i64,
    pub in_stock: bool,
    pub stock_left: i64,
    /// Warehouses holding available units (deliverability is decided from them).
    #[serde(default)]
    pub stock_warehouses: Vec<WarehouseId>,
}

/// What the inventory says about a product's stock (kept across catalog updates).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StockState {
    pub available: i64,
    pub warehouses: Vec<WarehouseId>,
}

/// At or below this many units shoppers see the exact count ("only 3 left"): always indexed.
pub const LOW_STOCK: i64 = 20;

impl StockState {
    /// Whether a stock change must rewrite the product's document. Filters and facets read only
    /// "in stock" and the warehouses, so those always are; the count itself is served from the
    /// live map while running and read from the index only after a restart, so it is rewritten
    /// when low (shown exactly) or more than 10% off. Rewriting a document on every sale made
    /// the index writer the busiest part of a checkout.
    pub fn needs_reindex(&self, indexed: &StockState) -> bool {
        let mut warehouses = self.warehouses.clone();
        let mut indexed_warehouses = indexed.warehouses.clone();
        warehouses.sort();
        indexed_warehouses.sort();
        (self.available > 0) != (indexed.available > 0)
            || warehouses != indexed_warehouses
            || self.available.min(indexed.available) <= LOW_STOCK
            || (self.available - indexed.available).abs() * 10 > self.available.max(indexed.available)
    }
}

impl SearchDoc {
    pub fn stock(&self) -> StockState {
        StockState { available: self.stock_left, warehouses: self.stock_warehouses.clone() }
    }

    pub fn set_stock(&mut self, stock: StockState) {
        self.in_stock = stock.available > 0;
        self.stock_left = stock.available;
        self.stock_warehouses = stock.warehouses;
    }

    pub fn from_snapshot(s: &ProductSnapshot) -> SearchDoc {
        let p = &s.product;
        SearchDoc {
            product_id: p.id,
            title: p.title.clone(),
            description: p.description.clone(),
            brand: p.brand.clone(),
            price: p.price,
            attributes: p.attributes.clone(),
            category_path: s.category_path.clone(),
            category_names: s.category_names.clone(),
            facet_attributes: s.facet_attributes.clone(),
            promoted: p.promoted,
            rating_average: p.rating.average(),
            rating_count: p.rating.count,
            created_at_micros: p.created_at.timestamp_micros(),
            in_stock: false,
            stock_left: 0,
            stock_warehouses: Vec::new(),
        }
    }

    /// Attribute values as facet/filter strings: `16` not `16.0`, `true`, or the text.
    pub fn attribute_strings(&self) -> impl Iterator<Item = (&str, String)> {
        self.attributes.iter().map(|(k, v)| (k.as_str(), attribute_string(v)))
    }
}

pub fn attribute_string(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typo_distances_count_a_swap_as_one_edit() {
        assert_eq!(typo_distance("television", "television"), 0);
        assert_eq!(typo_distance("telvision", "television"), 1, "a letter left out");
        assert_eq!(typo_distance("lpatop", "laptop"), 1, "neighbours swapped");
        assert_eq!(typo_distance("fridge", "fride"), 1);
        assert_eq!(typo_distance("sofa", "couch"), 4);
        assert_eq!(typo_distance("", "tv"), 2);
        let synonyms = Synonyms::defaults();
        assert_eq!(synonyms.corrections("telvision"), ["television"]);
        assert_eq!(synonyms.corrections("refridgerator"), ["refrigerator"]);
        assert!(synonyms.corrections("iphnoe").is_empty(), "two edits from phone: not a correction");
        assert!(synonyms.corrections("television").is_empty(), "a word of a set needs no correction");
        assert_eq!(synonyms.corrections("tvv"), ["tv"], "three letters allow one typo");
        assert!(synonyms.corrections("ab").is_empty(), "short words are never corrected");
    }

    #[test]
    fn stock_changes_rewrite_the_document_only_when_search_would_show_a_difference() {
        let (a, b) = (WarehouseId::new(), WarehouseId::new());
        let stock = |available, warehouses: &[WarehouseId]| StockState { available, warehouses: warehouses.to_vec() };
        let indexed = stock(1_000, &[a, b]);
        assert!(!stock(999, &[b, a]).needs_reindex(&indexed), "a sale among plenty, same warehouses");
        assert!(!stock(901, &[a, b]).needs_reindex(&indexed), "9.9% off is close enough");
        assert!(stock(899, &[a, b]).needs_reindex(&indexed), "more than 10% off");
        assert!(stock(999, &[a]).needs_reindex(&indexed), "a warehouse ran dry: deliverability changes");
        assert!(stock(0, &[]).needs_reindex(&stock(1, &[a])), "sold out");
        assert!(stock(1, &[a]).needs_reindex(&stock(0, &[])), "back in stock");
        assert!(stock(19, &[a]).needs_reindex(&stock(20, &[a])), "low counts are shown exactly");
        assert!(stock(21, &[a]).needs_reindex(&stock(20, &[a])), "leaving the low range is indexed too");
    }

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn requests_parse_with_defaults() {
        let req =
            SearchRequest::parse(&params(&[("q", " Laptop  "), ("attr.ram_gb", "16"), ("price", "1000-")])).unwrap();
        assert_eq!(req.q, "Laptop");
        assert_eq!(req.limit, 20);
        assert_eq!(req.sort, Sort::Relevance);
        assert_eq!(req.price, Some((1000, i64::MAX)));
        assert_eq!(req.attributes, vec![("ram_gb".to_owned(), "16".to_owned())]);
    }

    #[test]
    fn bad_parameters_are_all_named() {
        let errors = SearchRequest::parse(&params(&[
            ("price", "abc"),
            ("limit", "100000"),
            ("sort", "cheapest"),
            ("lat", "91"),
            ("category", "x"),
            ("colour", "red"),
            ("cursor", "@@"),
        ]))
        .unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["category", "colour", "cursor", "lat", "limit", "lon", "price", "sort"]);
        assert!(SearchRequest::parse(&params(&[("price", "500-100")])).is_err());
        assert!(SearchRequest::parse(&params(&[("price", "-5-10")])).is_err());
    }

    #[test]
    fn typo_tolerance_grows_with_word_length() {
        assert_eq!(fuzzy_distance("tv"), 0);
        assert_eq!(fuzzy_distance("ipad"), 1);
        assert_eq!(fuzzy_distance("lapotp"), 2);
    }

    #[test]
    fn synonyms_work_both_ways_and_extend() {
        let mut synonyms = Synonyms::defaults();
        assert_eq!(synonyms.alternatives("notebook"), ["laptop"]);
        assert_eq!(synonyms.alternatives("laptop"), ["notebook"]);
        assert!(synonyms.alternatives("mobile").contains(&"smartphone".to_owned()));
        assert!(synonyms.alternatives("rice").is_empty());
        let before = synonyms.fingerprint();
        synonyms.extend_from_config("hoodie = sweatshirt; bad");
        assert_eq!(synonyms.alternatives("sweatshirt"), ["hoodie"]);
        assert_ne!(synonyms.fingerprint(), before, "other sets, another index");
        assert_eq!(Synonyms::defaults().fingerprint(), Synonyms::defaults().fingerprint());
    }

    #[test]
    fn a_products_words_are_indexed_with_their_synonyms() {
        let synonyms = Synonyms::defaults();
        // Plurals and case are analyzed before the lookup.
        assert_eq!(synonyms.expansions("Gaming Notebooks and SOFAS"), "laptop couch");
        assert_eq!(synonyms.expansions("Walnut desk"), "");
        let phone = synonyms.expansions("phone");
        assert_eq!(phone.split(' ').count(), 3, "{phone}");
        assert!(Synonyms::indexed_with_its_set("tshirt"));
        assert!(!Synonyms::indexed_with_its_set("t shirt"));
    }

    #[test]
    fn price_buckets_cover_every_amount() {
        assert_eq!(price_bucket(0), 0);
        assert_eq!(price_bucket(2_499), 0);
        assert_eq!(price_bucket(2_500), 1);
        assert_eq!(price_bucket(10_000_000), PRICE_BUCKETS.len());
        assert_eq!(bucket_bounds(0), (0, Some(2_500)));
        assert_eq!(bucket_bounds(PRICE_BUCKETS.len()), (250_000, None));
    }

    #[test]
    fn attribute_values_print_canonically() {
        assert_eq!(attribute_string(&serde_json::json!(16.0)), "16");
        assert_eq!(attribute_string(&serde_json::json!(15.6)), "15.6");
        assert_eq!(attribute_string(&serde_json::json!(true)), "true");
        assert_eq!(attribute_string(&serde_json::json!("Silver")), "Silver");
    }
}
