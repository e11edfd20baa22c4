//! Events: a state change and its event commit in one transaction (the outbox), and a bus that
//! delivers outbox rows to consumers at least once, in order per aggregate.
//!
//! - Services only [`append`] typed [`DomainEvent`]s inside their own [`Tx`](crate::db::Tx) and
//!   [`EventBus::subscribe`] consumers; they never know how delivery happens.
//! - [`InProcessBus`] (all-in-one mode) reads each source's outbox directly, one task per
//!   (source, consumer) with a durable cursor. A Kafka relay implements the same [`EventBus`]
//!   trait: it publishes outbox rows to one topic per source, keyed by aggregate id, and runs
//!   consumers in consumer groups.
//! - Consumers are idempotent: they record the event id with their effect
//!   ([`first_delivery`]) so redelivery after a crash changes nothing.

mod bus;
mod outbox;
mod settle;

pub use bus::{EventBus, EventConsumer, InProcessBus, InProcessBusOptions};
pub use outbox::{
    OutboxStats, PendingEvent, Pruned, append, append_all, append_one, append_to, first_delivery, outbox_events, prune,
};

use crate::ids::EventId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A typed event a service emits.
pub trait DomainEvent: Serialize {
    /// Stable name, e.g. `UserRegistered`. Never renamed once shipped.
    const TYPE: &'static str;
    /// Bumped when the payload changes incompatibly.
    const VERSION: i32 = 1;
    /// The entity whose history this event belongs to; delivery is ordered per aggregate.
    fn aggregate_id(&self) -> String;
}

/// What travels on the bus.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub id: EventId,
    /// Position in the source's outbox; increases in commit order.
    pub seq: i64,
    /// The service that emitted it (also its topic name).
    pub source: String,
    pub event_type: String,
    pub version: i32,
    pub aggregate_id: String,
    pub occurred_at: DateTime<Utc>,
    /// The request id of the request that caused it, to follow a flow across services.
    pub trace_id: Option<String>,
    pub payload: serde_json::Value,
}

impl Envelope {
    pub fn is<E: DomainEvent>(&self) -> bool {
        self.event_type == E::TYPE
    }

    pub fn decode<E: DomainEvent + serde::de::DeserializeOwned>(&self) -> Result<E, serde_json::Error> {
        serde_json::from_value(self.payload.clone())
    }
}
