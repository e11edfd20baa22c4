//! Turning a [`SearchRequest`] into a tantivy query.
//!
//! Every query word must match (AND), in any of title, brand, category names, attribute values
//! or description, weighted by field (BM25F over the `words` field, see [`crate::index::Fields`]).
//! A word matches through itself or a synonym, exactly (scored, boosted); a word the index does
//! not know is matched within its typo allowance
//! (constant score, lower) on title, brand and category names, and through the synonym words
//! it misspells ([`Synonyms::corrections`]) everywhere. Typo expansion is by far the most
//! expensive part of a query, so correctly spelled words never pay for it. Filters are
//! non-scoring `MUST` clauses on facet terms. The price range is not a clause:
//! [`crate::collect::SearchPass`] applies it to the matches.

use crate::index::{Fields, attribute_filter_facet, brand_filter_facet, category_filter_facet, tokens};
use crate::model::{SearchRequest, Synonyms, fuzzy_distance};
use tantivy::query::{AllQuery, BooleanQuery, BoostQuery, ConstScoreQuery, FuzzyTermQuery, Occur, Query, TermQuery};
use tantivy::schema::{Field, IndexRecordOption};
use tantivy::{Searcher, Term};

/// Exact matches (scored over `words`) outweigh fuzzy ones (constant scores 2–3, see
/// [`fuzzy_fields`]) by about this factor.
const EXACT_BOOST: f32 = 12.0;

pub fn build(searcher: &Searcher, fields: &Fields, synonyms: &Synonyms, req: &SearchRequest) -> Box<dyn Query> {
    let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
    for word in req.q.split_whitespace() {
        if let Some(group) = word_query(searcher, fields, synonyms, word, false) {
            clauses.push((Occur::Must, group));
        }
    }
    let filter =
        |q: Box<dyn Query>| -> (Occur, Box<dyn Query>) { (Occur::Must, Box::new(ConstScoreQuery::new(q, 0.0))) };
    let facet_term = |facet: tantivy::schema::Facet| -> Box<dyn Query> {
        Box::new(TermQuery::new(Term::from_facet(fields.filters, &facet), IndexRecordOption::Basic))
    };
    if let Some(category) = req.category {
        clauses.push(filter(facet_term(category_filter_facet(&category))));
    }
    if let Some(brand) = &req.brand {
        clauses.push(filter(facet_term(brand_filter_facet(brand))));
    }
    for (name, value) in &req.attributes {
        clauses.push(filter(facet_term(attribute_filter_facet(name, value))));
    }
    if req.q.split_whitespace().next().is_none() {
        // Browsing (filters only): every product matches with an equal score.
        clauses.push((Occur::Must, Box::new(ConstScoreQuery::new(Box::new(AllQuery), 1.0))));
    }
    Box::new(BooleanQuery::new(clauses))
}

/// Fields where typos are forgiven: short, high-value vocabularies.
fn fuzzy_fields(fields: &Fields) -> [(Field, f32); 3] {
    [(fields.title, TYPO_SCORE), (fields.brand, 2.0), (fields.category, 2.0)]
}

/// What a word matched through a typo scores at most (in a title).
const TYPO_SCORE: f32 = 3.0;

/// Matches one query word (or its synonyms) anywhere; `prefix` makes the word a prefix
/// (autocomplete of the word being typed). `None` when the word has no indexable token.
pub fn word_query(
    searcher: &Searcher,
    fields: &Fields,
    synonyms: &Synonyms,
    word: &str,
    prefix: bool,
) -> Option<Box<dyn Query>> {
    let lower = word.to_lowercase();
    let mut variants = vec![lower.clone()];
    variants.extend(synonyms.alternatives(&lower).iter().cloned());
    let mut alternatives: Vec<(Occur, Box<dyn Query>)> = Vec::new();
    let mut known = false;
    let mut tokens_of_word = Vec::new();
    for (i, variant) in variants.iter().enumerate() {
        // The index holds a word's single-word synonyms next to it (`Synonyms::expansions`),
        // so the word's own terms find them; only a multi-word synonym needs its own clause.
        let exact = i == 0 || !Synonyms::indexed_with_its_set(variant);
        for token in tokens(variant) {
            if exact {
                let term = Term::from_field_text(fields.words, &token);
                known |= searcher.doc_freq(&term).unwrap_or(0) > 0;
                let exact: Box<dyn Query> = Box::new(TermQuery::new(term, IndexRecordOption::WithFreqs));
                alternatives.push((Occur::Should, Box::new(BoostQuery::new(exact, EXACT_BOOST))));
            }
            tokens_of_word.push((token, fuzzy_distance(variant)));
        }
    }
    if !prefix && !known {
        // A misspelling of a word with synonyms reaches its synonyms too: the corrected word's
        // term holds them (single-word synonyms are indexed with it). It scores as a typo does.
        for correction in synonyms.corrections(&lower) {
            for token in tokens(correction) {
                let term = Term::from_field_text(fields.words, &token);
                let exact: Box<dyn Query> = Box::new(TermQuery::new(term, IndexRecordOption::Basic));
                alternatives.push((Occur::Should, Box::new(ConstScoreQuery::new(exact, TYPO_SCORE))));
            }
        }
    }
    if prefix || !known {
        for (token, distance) in tokens_of_word {
            for (field, boost) in fuzzy_fields(fields) {
                let term = Term::from_field_text(field, &token);
                let fuzzy = match (prefix, distance) {
                    (true, d) => FuzzyTermQuery::new_prefix(term, d.min(1), true),
                    (false, 0) => continue,
                    (false, d) => FuzzyTermQuery::new(term, d, true),
                };
                alternatives.push((Occur::Should, Box::new(BoostQuery::new(Box::new(fuzzy), boost))));
            }
        }
    }
    match alternatives.len() {
        0 => None,
        1 => alternatives.pop().map(|(_, only)| only),
        _ => Some(Box::new(BooleanQuery::new(alternatives))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{ANALYZER, analyzer, schema, to_document};
    use crate::model::SearchDoc;
    use emporium_kernel::ids::ProductId;
    use emporium_kernel::money::{Currency, Money};
    use tantivy::collector::TopDocs;

    fn doc(title: &str, brand: &str, description: &str) -> SearchDoc {
        SearchDoc {
            product_id: ProductId::new(),
            title: title.into(),
            description: description.into(),
            brand: brand.into(),
            price: Money::new(1_000, Currency::USD),
            attributes: Default::default(),
            category_path: Vec::new(),
            category_names: vec!["Furniture".into()],
            facet_attributes: Vec::new(),
            promoted: false,
            rating_average: 0.0,
            rating_count: 0,
            created_at_micros: 0,
            in_stock: true,
            stock_left: 1,
            stock_warehouses: Vec::new(),
        }
    }

    /// The titles `q` finds, best first.
    fn ranked(docs: &[SearchDoc], q: &str) -> Vec<String> {
        let (schema, fields) = schema();
        let index = tantivy::Index::create_in_ram(schema);
        index.tokenizers().register(ANALYZER, analyzer());
        let mut writer = index.writer_with_num_threads(1, 15_000_000).unwrap();
        for d in docs {
            writer.add_document(to_document(&fields, &Synonyms::defaults(), d)).unwrap();
        }
        writer.commit().unwrap();
        let searcher = index.reader().unwrap().searcher();
        let mut params = std::collections::HashMap::new();
        params.insert("q".to_owned(), q.to_owned());
        let req = SearchRequest::parse(&params).unwrap();
        let query = build(&searcher, &fields, &Synonyms::defaults(), &req);
        let hits = searcher.search(&query, &TopDocs::with_limit(10).order_by_score()).unwrap();
        hits.into_iter()
            .map(|(_, at)| {
                let stored: tantivy::TantivyDocument = searcher.doc(at).unwrap();
                crate::index::from_document(&fields, &stored).unwrap().title
            })
            .collect()
    }

    #[test]
    fn a_word_weighs_most_in_the_title_then_the_brand_then_the_description() {
        let docs = [
            doc("Office Chair", "Seatco", "Goes well with a walnut desk"),
            doc("Walnut Desk", "Woodworks", "Solid wood"),
            doc("Standing Desk", "Walnut", "Height adjustable"),
        ];
        assert_eq!(ranked(&docs, "walnut"), ["Walnut Desk", "Standing Desk", "Office Chair"]);
    }

    #[test]
    fn every_word_must_match_somewhere_and_synonyms_count() {
        let docs = [doc("Walnut Desk", "Woodworks", "Solid wood"), doc("Oak Couch", "Woodworks", "Three seats")];
        assert_eq!(ranked(&docs, "woodworks desk"), ["Walnut Desk"]);
        assert_eq!(ranked(&docs, "sofa"), ["Oak Couch"], "sofa = couch");
        assert_eq!(ranked(&docs, "furniture").len(), 2, "category names are searchable");
    }

    #[test]
    fn a_misspelt_word_finds_what_the_word_meant_finds() {
        let docs = [doc("Smart TV 43", "Hisense", "Full HD"), doc("OLED Television 55", "Sony", "4K")];
        assert_eq!(ranked(&docs, "television").len(), 2, "television = tv");
        let mut misspelt = ranked(&docs, "telvision");
        misspelt.sort();
        assert_eq!(misspelt, ["OLED Television 55", "Smart TV 43"], "through the correction's synonyms");
        assert_eq!(ranked(&docs, "telvision hisense"), ["Smart TV 43"], "every word must still match");
    }
}
