//! The tantivy index: schema, analyzer, document mapping and its on-disk home.
//!
//! The index lives in `<data_dir>/search/v<SCHEMA_VERSION>-<synonyms fingerprint>` (synonyms
//! are applied when indexing, see [`Synonyms`]). A missing directory, or one of an older schema
//! or other synonyms, means a fresh empty index whose checkpoints are 0, which the server
//! rebuilds from the catalog at start (and `emporium search reindex` on demand).

use crate::collect::SegmentTables;
use crate::model::{SearchDoc, Synonyms};
use anyhow::Context;
use emporium_kernel::ids::ProductId;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use tantivy::schema::{
    Facet, FacetOptions, Field, IndexRecordOption, NumericOptions, STORED, STRING, Schema, TextFieldIndexing,
    TextOptions,
};
use tantivy::tokenizer::{AsciiFoldingFilter, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, TextAnalyzer};
use tantivy::{Index, IndexReader, ReloadPolicy, TantivyDocument, Term, Warmer};

/// Bump when the schema or analysis changes; the index is then rebuilt from events.
pub const SCHEMA_VERSION: u32 = 6;
pub const ANALYZER: &str = "emporium";
pub const FACETS_FIELD: &str = "facets";

#[derive(Clone, Copy, Debug)]
pub struct Fields {
    pub id: Field,
    /// Every searchable word of the product, each field's text repeated by its weight
    /// ([`FIELD_WEIGHTS`]): BM25 over this one field is BM25F, and a query word is one posting
    /// list instead of a union of five (the union was a fifth of query time).
    pub words: Field,
    /// Title, brand and category names on their own, for typo-tolerant (fuzzy) and prefix
    /// matching, which only ever asks whether a document has the term.
    pub title: Field,
    pub brand: Field,
    pub category: Field,
    /// Display facets, counted per query: `/brand/<name>`, `/attr/<name>=<value>`, `/cat/<id:name>/…`.
    pub facets: Field,
    /// Filter facets, only ever looked up by term (so counting never walks them): `/b/<brand>`,
    /// `/a/<name>=<value>` (lower-cased), `/c/<category id>` for the category and its ancestors.
    pub filters: Field,
    pub price: Field,
    pub rating: Field,
    pub promoted: Field,
    pub created: Field,
    pub in_stock: Field,
    pub stock_left: Field,
    /// The whole `SearchDoc` as JSON: hits are rendered from it and partial updates rebuild it.
    pub source: Field,
}

pub fn schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let text = |record: IndexRecordOption| {
        let indexing = TextFieldIndexing::default().set_tokenizer(ANALYZER).set_index_option(record);
        TextOptions::default().set_indexing_options(indexing)
    };
    let fast = NumericOptions::default().set_fast().set_indexed();
    let fields = Fields {
        id: builder.add_text_field("id", STRING | STORED),
        words: builder.add_text_field("words", text(IndexRecordOption::WithFreqs)),
        title: builder.add_text_field("title", text(IndexRecordOption::Basic)),
        brand: builder.add_text_field("brand", text(IndexRecordOption::Basic)),
        category: builder.add_text_field("category", text(IndexRecordOption::Basic)),
        facets: builder.add_facet_field(FACETS_FIELD, FacetOptions::default()),
        filters: builder.add_facet_field("filters", FacetOptions::default()),
        price: builder.add_i64_field("price", fast.clone()),
        rating: builder.add_f64_field("rating", NumericOptions::default().set_fast()),
        promoted: builder.add_bool_field("promoted", NumericOptions::default().set_fast()),
        created: builder.add_i64_field("created", NumericOptions::default().set_fast()),
        in_stock: builder.add_bool_field("in_stock", NumericOptions::default().set_fast().set_indexed()),
        stock_left: builder.add_i64_field("stock_left", NumericOptions::default().set_fast()),
        source: builder.add_text_field("source", STORED),
    };
    (builder.build(), fields)
}

/// Words, lower-cased, accents folded, English stems (so "laptops" finds "laptop").
pub fn analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .filter(Stemmer::default())
        .build()
}

/// The analyzed tokens of `text`, as the index sees them.
pub fn tokens(text: &str) -> Vec<String> {
    let mut analyzer = analyzer();
    let mut stream = analyzer.token_stream(text);
    let mut out = Vec::new();
    while stream.advance() {
        out.push(stream.token().text.clone());
    }
    out
}

pub fn id_term(fields: &Fields, id: ProductId) -> Term {
    Term::from_field_text(fields.id, &id.to_string())
}

pub fn brand_facet(brand: &str) -> Facet {
    Facet::from_path(["brand", brand])
}

pub fn attribute_facet(name: &str, value: &str) -> Facet {
    Facet::from_path(["attr".to_owned(), format!("{name}={value}")])
}

/// Case-insensitive filter facets, separate from the display facets above.
pub fn brand_filter_facet(brand: &str) -> Facet {
    Facet::from_path(["b", &brand.to_lowercase()])
}

pub fn attribute_filter_facet(name: &str, value: &str) -> Facet {
    Facet::from_path(["a".to_owned(), format!("{name}={}", value.to_lowercase())])
}

/// Every category a product is in (its own and the ancestors'), for filtering.
pub fn category_filter_facet(id: &impl ToString) -> Facet {
    Facet::from_path(["c".to_owned(), id.to_string()])
}

/// The display facet: one segment per level, `<id>:<name>`, so counts carry both.
pub fn category_facet(ids: &[impl ToString], names: &[String]) -> Facet {
    let segments = ids.iter().zip(names).map(|(id, name)| format!("{}:{name}", id.to_string()));
    Facet::from_path(std::iter::once("cat".to_owned()).chain(segments))
}

/// How much a word counts in each field, relative to the description: a title word counts six
/// times as much. Integers, because a field's text is indexed that many times into `words`.
pub struct FieldWeights {
    pub title: usize,
    pub brand: usize,
    pub category: usize,
    pub attributes: usize,
    pub description: usize,
}

pub const FIELD_WEIGHTS: FieldWeights = FieldWeights { title: 6, brand: 4, category: 4, attributes: 3, description: 1 };

pub fn to_document(fields: &Fields, synonyms: &Synonyms, doc: &SearchDoc) -> TantivyDocument {
    let mut d = TantivyDocument::default();
    let mut words = |text: &str, weight: usize| {
        let synonyms_of_text = synonyms.expansions(text);
        for _ in 0..weight {
            d.add_text(fields.words, text);
            if !synonyms_of_text.is_empty() {
                d.add_text(fields.words, &synonyms_of_text);
            }
        }
    };
    words(&doc.title, FIELD_WEIGHTS.title);
    words(&doc.brand, FIELD_WEIGHTS.brand);
    words(&doc.description, FIELD_WEIGHTS.description);
    for name in &doc.category_names {
        words(name, FIELD_WEIGHTS.category);
    }
    for (_, value) in doc.attribute_strings() {
        words(&value, FIELD_WEIGHTS.attributes);
    }
    d.add_text(fields.id, doc.product_id.to_string());
    d.add_text(fields.title, &doc.title);
    d.add_text(fields.brand, &doc.brand);
    for (name, value) in doc.attribute_strings() {
        if doc.facet_attributes.iter().any(|f| f == name) {
            d.add_facet(fields.facets, attribute_facet(name, &value));
        }
        d.add_facet(fields.filters, attribute_filter_facet(name, &value));
    }
    for name in &doc.category_names {
        d.add_text(fields.category, name);
    }
    d.add_facet(fields.facets, brand_facet(&doc.brand));
    d.add_facet(fields.filters, brand_filter_facet(&doc.brand));
    if !doc.category_path.is_empty() && doc.category_path.len() == doc.category_names.len() {
        d.add_facet(fields.facets, category_facet(&doc.category_path, &doc.category_names));
    }
    for id in &doc.category_path {
        d.add_facet(fields.filters, category_filter_facet(id));
    }
    d.add_i64(fields.price, doc.price.amount);
    d.add_f64(fields.rating, doc.rating_average);
    d.add_bool(fields.promoted, doc.promoted);
    d.add_i64(fields.created, doc.created_at_micros);
    d.add_bool(fields.in_stock, doc.in_stock);
    d.add_i64(fields.stock_left, doc.stock_left);
    d.add_text(fields.source, serde_json::to_string(doc).expect("search docs serialise"));
    d
}

pub fn from_document(fields: &Fields, doc: &TantivyDocument) -> Option<SearchDoc> {
    use tantivy::schema::Value;
    let source = doc.get_first(fields.source)?.as_str()?;
    serde_json::from_str(source).ok()
}

/// Positions in each event source that the committed index includes.
pub type Checkpoints = HashMap<String, i64>;

/// What each commit records next to the documents, so a restart resumes exactly there.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct CommitPayload {
    pub positions: Checkpoints,
    /// Stock of products whose catalog event has not arrived yet.
    #[serde(default)]
    pub orphan_stock: HashMap<ProductId, crate::model::StockState>,
    /// Whether any stock event was ever applied (until then upserts need not look up stock).
    #[serde(default)]
    pub stock_seen: bool,
}

pub struct OpenedIndex {
    pub index: Index,
    pub reader: IndexReader,
    /// Kept up to date by the reader: a segment's table is built as it becomes searchable.
    pub segment_tables: Arc<SegmentTables>,
    pub fields: Fields,
    pub payload: CommitPayload,
    pub path: PathBuf,
}

/// Opens the index of the current schema and `synonyms` under `root`, creating it (and removing
/// indexes of older schemas or other synonyms) when needed.
pub fn open(root: &Path, synonyms: &Synonyms) -> anyhow::Result<OpenedIndex> {
    let path = root.join(format!("v{SCHEMA_VERSION}-{}", synonyms.fingerprint()));
    if let Ok(entries) = std::fs::read_dir(root) {
        for entry in entries.flatten() {
            if entry.path() != path && entry.file_name().to_string_lossy().starts_with('v') {
                tracing::info!(old = %entry.path().display(), "removing search index of an older schema or other synonyms");
                std::fs::remove_dir_all(entry.path()).ok();
            }
        }
    }
    std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
    let (schema, fields) = schema();
    let directory = tantivy::directory::MmapDirectory::open(&path).context("opening the search index directory")?;
    let index = Index::open_or_create(directory, schema).context("opening the search index")?;
    index.tokenizers().register(ANALYZER, analyzer());
    let payload = index
        .load_metas()
        .ok()
        .and_then(|metas| metas.payload)
        .and_then(|payload| serde_json::from_str::<CommitPayload>(&payload).ok())
        .unwrap_or_default();
    let segment_tables = Arc::new(SegmentTables::default());
    let warmer: Weak<dyn Warmer> = Arc::downgrade(&segment_tables) as Weak<dyn Warmer>;
    let reader = index
        .reader_builder()
        .reload_policy(ReloadPolicy::Manual)
        .warmers(vec![warmer])
        .try_into()
        .context("opening an index reader")?;
    Ok(OpenedIndex { index, reader, segment_tables, fields, payload, path })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn analysis_folds_case_accents_and_plurals() {
        assert_eq!(tokens("Laptops"), ["laptop"]);
        assert_eq!(tokens("Crème BRÛLÉE"), ["creme", "brule"]);
        assert_eq!(tokens("laptop"), tokens("laptops"));
    }
}
