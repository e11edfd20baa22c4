//! The search service: an embedded tantivy index, fed only by catalog and inventory events through the event
//! bus, answering full-text queries with typo tolerance, synonyms, filters, sorts, facets and
//! suggestions. Owns `<data_dir>/search/`; no database tables.

mod collect;
pub mod consumers;
pub mod http;
pub mod index;
pub mod indexer;
pub mod model;
mod query;
pub mod service;
pub mod warehouses;

pub use service::SearchService;

pub const SERVICE: &str = "search";
