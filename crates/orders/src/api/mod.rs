//! What other services may use of the order service: the events it emits. Nothing calls the
//! order service yet (it calls the others), so it has no client trait; the storefront's will
//! come here.

pub mod events;
