//! The event bus seam and its in-process implementation.

use super::Envelope;
use super::outbox::{dead_letter, glimpse, load_cursor, read_batch, save_cursor, sqlite_upper_bound};
use super::settle::Settling;
use crate::db::{Backend, Db};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Reacts to events of other services (or its own). Must be idempotent: the same event may be
/// delivered again after a crash or a retry (use [`first_delivery`](super::first_delivery)).
#[async_trait::async_trait]
pub trait EventConsumer: Send + Sync + 'static {
    /// Stable name: the durable cursor and processed-event records are keyed by it.
    fn name(&self) -> &'static str;
    /// Returning an error retries the same event with backoff; later events of the source wait,
    /// which is what keeps delivery in order per aggregate.
    async fn handle(&self, event: &Envelope) -> anyhow::Result<()>;

    /// Handles consecutive events (in order) at once, where that is cheaper than one by one: a
    /// projection that keeps only each key's latest figure writes once per batch, in one
    /// statement, instead of once per event. Under load a batch covers a burst of events, so
    /// this is group commit for consumers. `None`: not supported. On an error the same events
    /// are delivered one by one, so a bad event is retried and parked alone.
    async fn handle_all(&self, _events: &[Envelope]) -> Option<anyhow::Result<()>> {
        None
    }

    /// For consumers whose effects live outside any database transaction (a search index, an
    /// external sink): the last `source` position their effects durably include. When `Some`,
    /// delivery restarts right after it instead of at the bus's cursor, so an acknowledged but
    /// not yet persisted event is delivered again after a crash.
    fn checkpoint(&self, _source: &str) -> Option<i64> {
        None
    }
}

/// How events get from outboxes to consumers. Services register their outbox as a source and
/// subscribe consumers; the transport (in-process, Kafka) is chosen at start-up.
#[async_trait::async_trait]
pub trait EventBus: Send + Sync {
    /// Declares that `db`'s outbox is the event stream named after its service.
    fn register_source(&self, db: Db);
    /// Delivers every event of `source` to `consumer`, from where it last stopped.
    fn subscribe(&self, source: &str, consumer: Arc<dyn EventConsumer>);
    /// Starts delivering; stops when `shutdown` is cancelled.
    fn start(&self, shutdown: CancellationToken) -> anyhow::Result<()>;
    /// Waits until every delivery task has stopped (after `shutdown`).
    async fn join(&self);
}

#[derive(Clone, Debug)]
pub struct InProcessBusOptions {
    /// Fallback polling when no commit wakes the dispatcher (e.g. rows written by another process).
    pub poll_interval: Duration,
    /// How long a woken dispatcher waits for more commits before reading: under load one read
    /// and one cursor write then cover a burst of events instead of one each (Kafka's
    /// `linger.ms`); idle, it only delays delivery by this much.
    pub linger: Duration,
    pub batch_size: i64,
    /// How often, at most, a busy consumer's cursor is written: every write is a transaction of
    /// its own, and consumers are idempotent, so a crash only redelivers up to this much. An
    /// idle consumer (caught up) and a clean shutdown write it at once.
    pub cursor_save_interval: Duration,
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for InProcessBusOptions {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_millis(500),
            linger: Duration::from_millis(10),
            batch_size: 200,
            cursor_save_interval: Duration::from_secs(1),
            max_attempts: 10,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// Delivers outbox rows to consumers inside this process, one task per (source, consumer), each
/// with a durable cursor in the source database: a restart resumes where delivery stopped.
#[derive(Default)]
pub struct InProcessBus {
    options: InProcessBusOptions,
    sources: Mutex<HashMap<String, Db>>,
    subscriptions: Mutex<Vec<(String, Arc<dyn EventConsumer>)>>,
    tasks: tokio::sync::Mutex<JoinSet<()>>,
}

impl InProcessBus {
    pub fn new(options: InProcessBusOptions) -> Self {
        Self { options, ..Default::default() }
    }
}

#[async_trait::async_trait]
impl EventBus for InProcessBus {
    fn register_source(&self, db: Db) {
        self.sources.lock().expect("bus lock").insert(db.service().to_owned(), db);
    }

    fn subscribe(&self, source: &str, consumer: Arc<dyn EventConsumer>) {
        self.subscriptions.lock().expect("bus lock").push((source.to_owned(), consumer));
    }

    fn start(&self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let sources = self.sources.lock().expect("bus lock").clone();
        let subscriptions = self.subscriptions.lock().expect("bus lock").clone();
        let mut tasks = self.tasks.try_lock().map_err(|_| anyhow::anyhow!("event bus started twice"))?;
        for (source, consumer) in subscriptions {
            let db = sources
                .get(&source)
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("consumer {} subscribed to unknown source {source}", consumer.name()))?;
            let delivery = Delivery { db, consumer, options: self.options.clone(), shutdown: shutdown.clone() };
            tasks.spawn(delivery.run());
        }
        Ok(())
    }

    async fn join(&self) {
        let mut tasks = self.tasks.lock().await;
        while tasks.join_next().await.is_some() {}
    }
}

/// The cursor as last written to the database, and when.
struct Saved {
    cursor: i64,
    at: Instant,
}

/// One consumer reading one source.
struct Delivery {
    db: Db,
    consumer: Arc<dyn EventConsumer>,
    options: InProcessBusOptions,
    shutdown: CancellationToken,
}

impl Delivery {
    async fn run(self) {
        let name = self.consumer.name();
        let source = self.db.service();
        let cursor = loop {
            if let Some(checkpoint) = self.consumer.checkpoint(source) {
                break checkpoint;
            }
            match load_cursor(&self.db, name).await {
                Ok(cursor) => break cursor,
                Err(err) => {
                    tracing::warn!(consumer = name, source, error = %err, "cannot load event cursor, retrying");
                    if self.pause(self.options.initial_backoff * 20).await {
                        return;
                    }
                }
            }
        };
        let mut saved = Saved { cursor, at: Instant::now() };
        self.deliver(cursor, &mut saved).await;
    }

    /// Delivers from `cursor` until shutdown, writing the cursor as [`Saved`] describes. A
    /// panicking consumer (a crash) leaves the cursor where it was last written.
    async fn deliver(&self, mut cursor: i64, saved: &mut Saved) {
        let (name, source) = (self.consumer.name(), self.db.service());
        let mut commits = self.db.outbox_commits();
        let mut settling = Settling::default();
        let mut attempts: u32 = 0;
        loop {
            if self.shutdown.is_cancelled() {
                self.persist(cursor, saved).await;
                return;
            }
            // Commits from here on end the wait for more below: one landing while this batch is
            // read or handled must not be slept through.
            commits.borrow_and_update();
            let batch = match self.next_batch(cursor, &mut settling).await {
                Ok(batch) => batch,
                Err(err) => {
                    tracing::warn!(consumer = name, source, error = %err, "cannot read outbox, retrying");
                    if self.pause(self.backoff(3)).await {
                        self.persist(cursor, saved).await;
                        return;
                    }
                    continue;
                }
            };
            if batch.is_empty() {
                // Caught up: the cursor is written now, while there is nothing else to do.
                self.persist(cursor, saved).await;
                if self.wait_for_commits(&mut commits).await {
                    return;
                }
                continue;
            }
            // Short of the limit: the batch held all there was. Reading again at once would
            // mostly find the one or two events committed meanwhile (or none); waiting for them
            // as the idle path does makes each read, and each `handle_all`, cover a burst.
            let drained = (batch.len() as i64) < self.options.batch_size;
            if let Some(all) = self.deliver_all(&batch).await {
                cursor = all;
                attempts = 0;
                self.persist_when_due(cursor, saved).await;
                if drained && self.wait_for_commits(&mut commits).await {
                    self.persist(cursor, saved).await;
                    return;
                }
                continue;
            }
            for event in &batch {
                match self.consumer.handle(event).await {
                    Ok(()) => {
                        cursor = event.seq;
                        attempts = 0;
                        metrics::counter!("events_delivered_total", "source" => source, "consumer" => name)
                            .increment(1);
                    }
                    Err(err) => {
                        attempts += 1;
                        metrics::counter!("events_failed_total", "source" => source, "consumer" => name).increment(1);
                        let error = format!("{err:#}");
                        if attempts >= self.options.max_attempts {
                            tracing::error!(consumer = name, source, seq = event.seq, event_type = %event.event_type, attempts, error, "event dead-lettered");
                            if self.park(event, attempts, &error).await.is_ok() {
                                cursor = event.seq;
                                *saved = Saved { cursor, at: Instant::now() };
                                attempts = 0;
                                continue;
                            }
                        } else {
                            tracing::warn!(consumer = name, source, seq = event.seq, event_type = %event.event_type, attempts, error, "event delivery failed, will retry");
                        }
                        break;
                    }
                }
            }
            self.persist_when_due(cursor, saved).await;
            let stop = if attempts > 0 {
                self.pause(self.backoff(attempts)).await
            } else {
                drained && self.wait_for_commits(&mut commits).await
            };
            if stop {
                self.persist(cursor, saved).await;
                return;
            }
        }
    }

    /// Waits for a commit to the source since the last `borrow_and_update` (or for the poll
    /// interval, for rows another process wrote), then lingers so that one read covers a
    /// burst; true if shutdown was requested meanwhile. On PostgreSQL committed rows that wait
    /// for an open writer (see `Settling`) are usually released by that writer's own commit;
    /// one that rolls back, or runs in another process, is noticed by the poll.
    async fn wait_for_commits(&self, commits: &mut tokio::sync::watch::Receiver<u64>) -> bool {
        tokio::select! {
            _ = self.shutdown.cancelled() => return true,
            _ = commits.changed() => {}
            _ = tokio::time::sleep(self.options.poll_interval) => {}
        }
        self.pause(self.options.linger).await
    }

    /// The batch handled at once (see [`EventConsumer::handle_all`]): the cursor after it.
    async fn deliver_all(&self, batch: &[Envelope]) -> Option<i64> {
        let (name, source) = (self.consumer.name(), self.db.service());
        match self.consumer.handle_all(batch).await? {
            Ok(()) => {
                metrics::counter!("events_delivered_total", "source" => source, "consumer" => name)
                    .increment(batch.len() as u64);
                batch.last().map(|event| event.seq)
            }
            Err(err) => {
                tracing::warn!(
                    consumer = name,
                    source,
                    events = batch.len(),
                    error = format!("{err:#}"),
                    "batch delivery failed, delivering one by one"
                );
                None
            }
        }
    }

    async fn next_batch(&self, cursor: i64, settling: &mut Settling) -> sqlx::Result<Vec<Envelope>> {
        let limit = self.options.batch_size;
        let (batch, lag) = match self.db.backend() {
            // Sequence order is commit order on SQLite (see `sqlite_upper_bound`): what is there can
            // be read at once. A batch short of the limit holds everything, so it tells the lag
            // too; only a full one needs the maximum.
            Backend::Sqlite => {
                let batch = read_batch(&self.db, cursor, i64::MAX, limit).await?;
                let lag = match batch.last() {
                    Some(_) if batch.len() as i64 >= limit => sqlite_upper_bound(&self.db).await? - cursor,
                    Some(last) => last.seq - cursor,
                    None => 0,
                };
                (batch, lag)
            }
            Backend::Postgres => {
                let seen = glimpse(&self.db).await?;
                let lag = seen.max - cursor;
                let bound = settling.observe(seen);
                let batch =
                    if bound <= cursor { Vec::new() } else { read_batch(&self.db, cursor, bound, limit).await? };
                (batch, lag)
            }
        };
        metrics::gauge!("events_lag", "source" => self.db.service(), "consumer" => self.consumer.name())
            .set(lag.max(0) as f64);
        Ok(batch)
    }

    async fn persist_when_due(&self, cursor: i64, saved: &mut Saved) {
        if saved.at.elapsed() >= self.options.cursor_save_interval {
            self.persist(cursor, saved).await;
        }
    }

    /// Writes the cursor if it moved since it was last written.
    async fn persist(&self, cursor: i64, saved: &mut Saved) {
        if cursor == saved.cursor {
            return;
        }
        let result = async {
            let mut tx = self.db.begin().await?;
            save_cursor(&mut tx, self.consumer.name(), cursor).await?;
            tx.commit().await
        }
        .await;
        if let Err(err) = result {
            // Not fatal: the events up to `cursor` will be delivered again, and consumers are
            // idempotent.
            tracing::warn!(consumer = self.consumer.name(), error = %err, "cannot save event cursor");
            return;
        }
        *saved = Saved { cursor, at: Instant::now() };
    }

    async fn park(&self, event: &Envelope, attempts: u32, error: &str) -> sqlx::Result<()> {
        let mut tx = self.db.begin().await?;
        dead_letter(&mut tx, self.consumer.name(), event, attempts, error).await?;
        save_cursor(&mut tx, self.consumer.name(), event.seq).await?;
        tx.commit().await
    }

    fn backoff(&self, attempts: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempts.saturating_sub(1).min(16));
        (self.options.initial_backoff * factor).min(self.options.max_backoff)
    }

    /// Sleeps; returns true if shutdown was requested meanwhile.
    async fn pause(&self, duration: Duration) -> bool {
        tokio::select! {
            _ = self.shutdown.cancelled() => true,
            _ = tokio::time::sleep(duration) => false,
        }
    }
}
