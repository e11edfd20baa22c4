//! The event kernel against real databases: delivery order, at-least-once across a crash,
//! idempotent effects, retries, dead letters, and PostgreSQL's commit-order gap.

use emporium_kernel::db::{Db, Tx, Write};
use emporium_kernel::events::{
    self, DomainEvent, Envelope, EventBus, EventConsumer, InProcessBus, InProcessBusOptions, OutboxStats,
};
use emporium_kernel::testing::{Backend, TestDatabase, no_migrations};
use emporium_kernel::{backend_tests, sql};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Serialize, Deserialize)]
struct Ticked {
    aggregate: String,
    n: u32,
}

impl DomainEvent for Ticked {
    const TYPE: &'static str = "Ticked";
    fn aggregate_id(&self) -> String {
        self.aggregate.clone()
    }
}

async fn emit(db: &Db, aggregate: &str, n: u32) {
    let mut tx = db.begin().await.unwrap();
    events::append(&mut tx, &Ticked { aggregate: aggregate.into(), n }).await.unwrap();
    tx.commit().await.unwrap();
}

fn options() -> InProcessBusOptions {
    InProcessBusOptions {
        poll_interval: Duration::from_millis(20),
        linger: Duration::from_millis(2),
        batch_size: 7,
        cursor_save_interval: Duration::ZERO,
        max_attempts: 4,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(40),
    }
}

/// Records deliveries; applies each event's effect once thanks to `first_delivery`, in the
/// same database transaction. Optionally panics (a crash) at a given delivery count, or fails
/// some events a number of times.
struct Recorder {
    db: Db,
    deliveries: AtomicUsize,
    crash_at: Option<usize>,
    failures_left: Mutex<HashMap<u32, u32>>,
    seen: Mutex<Vec<(String, u32)>>,
    /// The `seq` of every delivery, redeliveries included.
    seqs: Mutex<Vec<i64>>,
    applied: Mutex<Vec<(String, u32)>>,
}

impl Recorder {
    fn new(db: &Db) -> Self {
        Self {
            db: db.clone(),
            deliveries: AtomicUsize::new(0),
            crash_at: None,
            failures_left: Mutex::new(HashMap::new()),
            seen: Mutex::new(Vec::new()),
            seqs: Mutex::new(Vec::new()),
            applied: Mutex::new(Vec::new()),
        }
    }
}

#[async_trait::async_trait]
impl EventConsumer for Recorder {
    fn name(&self) -> &'static str {
        "recorder"
    }

    async fn handle(&self, event: &Envelope) -> anyhow::Result<()> {
        let count = self.deliveries.fetch_add(1, Ordering::SeqCst) + 1;
        if Some(count) == self.crash_at {
            panic!("simulated crash in the middle of delivery");
        }
        let tick: Ticked = event.decode()?;
        self.seen.lock().unwrap().push((tick.aggregate.clone(), tick.n));
        self.seqs.lock().unwrap().push(event.seq);
        if let Some(left) = self.failures_left.lock().unwrap().get_mut(&tick.n)
            && *left > 0
        {
            *left -= 1;
            anyhow::bail!("transient failure for {}", tick.n);
        }
        let mut tx = self.db.begin().await?;
        if events::first_delivery(&mut tx, self.name(), event.id).await? {
            tx.commit().await?;
            self.applied.lock().unwrap().push((tick.aggregate, tick.n));
        }
        Ok(())
    }
}

/// A bus delivering the "ticks" source of `db` to `consumer`, started.
fn start_bus(
    db: &Db,
    consumer: Arc<dyn EventConsumer>,
    options: InProcessBusOptions,
) -> (InProcessBus, CancellationToken) {
    let bus = InProcessBus::new(options);
    bus.register_source(db.clone());
    bus.subscribe("ticks", consumer);
    let shutdown = CancellationToken::new();
    bus.start(shutdown.clone()).unwrap();
    (bus, shutdown)
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting until {what}");
}

fn in_order_per_aggregate(events: &[(String, u32)]) -> bool {
    let mut last: HashMap<&str, u32> = HashMap::new();
    events.iter().all(|(agg, n)| {
        let ok = last.get(agg.as_str()).is_none_or(|prev| n > prev);
        last.insert(agg, *n);
        ok
    })
}

backend_tests! {
    async fn events_appended_together_keep_their_order_past_one_statement(backend: Backend) {
        let test_db = TestDatabase::create(backend).await;
        let db = test_db.open("ticks", &no_migrations()).await;
        // More events than one statement carries, so they go in several, still in order.
        let count = emporium_kernel::db::ROWS_PER_STATEMENT as u32 * 2 + 3;
        let pending: Vec<events::PendingEvent> = (1..=count)
            .map(|n| events::PendingEvent::of(&Ticked { aggregate: format!("agg-{}", n % 3), n }).unwrap())
            .collect();
        let mut tx = db.begin().await.unwrap();
        let ids = events::append_all(&mut tx, &pending).await.unwrap();
        tx.commit().await.unwrap();
        // And a rolled-back append leaves nothing behind.
        let mut aborted = db.begin().await.unwrap();
        events::append_all(&mut aborted, &pending[..2]).await.unwrap();
        aborted.rollback().await.unwrap();

        let stored = events::outbox_events(&db, 0, i64::from(count) + 10).await.unwrap();
        assert_eq!(stored.len(), count as usize);
        assert_eq!(stored.iter().map(|e| e.id).collect::<Vec<_>>(), ids, "one id per event, in order");
        let numbers: Vec<u32> = stored.iter().map(|e| e.payload["n"].as_u64().unwrap() as u32).collect();
        assert_eq!(numbers, (1..=count).collect::<Vec<_>>(), "seq follows the order they were given in");
        assert!(stored.windows(2).all(|w| w[0].seq < w[1].seq));
    }

    async fn delivery_resumes_after_a_crash_and_effects_apply_once(backend: Backend) {
        let test_db = TestDatabase::create(backend).await;
        let db = test_db.open("ticks", &no_migrations()).await;
        for n in 1..=40u32 {
            emit(&db, &format!("agg-{}", n % 4), n).await;
        }

        // First run: the consumer "crashes" (panics) on its 25th delivery. Batches of 7 mean
        // the cursor was persisted at 21, so events 22..=24 were delivered but not acknowledged.
        let crashing = Arc::new(Recorder { crash_at: Some(25), ..Recorder::new(&db) });
        let (bus, _shutdown) = start_bus(&db, crashing.clone(), options());
        bus.join().await; // the delivery task ended by panicking
        assert_eq!(crashing.applied.lock().unwrap().len(), 24);
        let stats = OutboxStats::read(&db).await.unwrap();
        assert_eq!(stats.cursors, vec![("recorder".to_owned(), 21)]);

        // Restart: a new bus with the same consumer name resumes from the durable cursor.
        let restarted = Arc::new(Recorder::new(&db));
        let (bus, shutdown) = start_bus(&db, restarted.clone(), options());
        // 22..=24 were applied before the crash, so only 25..=40 take effect now.
        wait_until("every event is applied", || restarted.applied.lock().unwrap().len() == 16).await;

        // A transient database error in the consumer is retried by the bus: consecutive
        // repeats in `seen` are retries, not redeliveries.
        let mut redelivered: Vec<u32> = restarted.seen.lock().unwrap().iter().map(|(_, n)| *n).collect();
        redelivered.dedup();
        assert_eq!(redelivered, (22..=40).collect::<Vec<_>>(), "resumes right after the persisted cursor");
        let mut applied: Vec<(String, u32)> = crashing.applied.lock().unwrap().clone();
        applied.extend(restarted.applied.lock().unwrap().iter().cloned());
        let mut numbers: Vec<u32> = applied.iter().map(|(_, n)| *n).collect();
        numbers.sort();
        assert_eq!(numbers, (1..=40).collect::<Vec<_>>(), "each effect applied exactly once");
        assert!(in_order_per_aggregate(&applied));

        shutdown.cancel();
        bus.join().await;
        assert_eq!(OutboxStats::read(&db).await.unwrap().cursors, vec![("recorder".to_owned(), 40)]);
    }

    async fn a_busy_consumer_writes_its_cursor_when_due_or_caught_up(backend: Backend) {
        let test_db = TestDatabase::create(backend).await;
        let db = test_db.open("ticks", &no_migrations()).await;
        for n in 1..=20u32 {
            emit(&db, &format!("agg-{}", n % 3), n).await;
        }
        let lazy = InProcessBusOptions { cursor_save_interval: Duration::from_secs(3600), ..options() };

        // Busy from the start (never caught up), the consumer crashes on its 15th delivery: two
        // batches of 7 were handled, but the cursor was not due, so none was written.
        let crashing = Arc::new(Recorder { crash_at: Some(15), ..Recorder::new(&db) });
        let (bus, _shutdown) = start_bus(&db, crashing.clone(), lazy.clone());
        bus.join().await;
        assert_eq!(crashing.applied.lock().unwrap().len(), 14);
        assert_eq!(OutboxStats::read(&db).await.unwrap().cursors, vec![]);

        // Restarted, it gets everything again; effects still apply once, and once caught up
        // the cursor is written without waiting for the interval.
        let restarted = Arc::new(Recorder::new(&db));
        let (bus, shutdown) = start_bus(&db, restarted.clone(), lazy);
        wait_until("every event is applied", || restarted.applied.lock().unwrap().len() == 6).await;
        let mut redelivered: Vec<u32> = restarted.seen.lock().unwrap().iter().map(|(_, n)| *n).collect();
        redelivered.dedup();
        assert_eq!(redelivered, (1..=20).collect::<Vec<_>>());
        let mut cursors = Vec::new();
        for _ in 0..250 {
            cursors = OutboxStats::read(&db).await.unwrap().cursors;
            if !cursors.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(cursors, vec![("recorder".to_owned(), 20)], "written once caught up");
        shutdown.cancel();
        bus.join().await;
    }

    async fn failures_are_retried_in_order_and_poison_events_are_parked(backend: Backend) {
        let test_db = TestDatabase::create(backend).await;
        let db = test_db.open("ticks", &no_migrations()).await;
        let consumer = Arc::new(Recorder::new(&db));
        // Event 3 fails twice then succeeds; event 5 never succeeds (4 attempts allowed).
        consumer.failures_left.lock().unwrap().extend([(3, 2), (5, u32::MAX)]);
        let (bus, shutdown) = start_bus(&db, consumer.clone(), options());
        for n in 1..=8u32 {
            emit(&db, "same-aggregate", n).await;
        }
        wait_until("all but the poison event are applied", || consumer.applied.lock().unwrap().len() == 7).await;
        shutdown.cancel();
        bus.join().await;

        let applied: Vec<u32> = consumer.applied.lock().unwrap().iter().map(|(_, n)| *n).collect();
        assert_eq!(applied, vec![1, 2, 3, 4, 6, 7, 8], "order kept through retries");
        let seen: Vec<u32> = consumer.seen.lock().unwrap().iter().map(|(_, n)| *n).collect();
        assert_eq!(seen.iter().filter(|n| **n == 3).count(), 3, "two failures then success");
        assert_eq!(seen.iter().filter(|n| **n == 5).count(), 4, "max attempts");
        assert_eq!(OutboxStats::read(&db).await.unwrap().dead_letters, 1);
    }

    async fn pruning_keeps_what_a_consumer_still_needs(backend: Backend) {
        let test_db = TestDatabase::create(backend).await;
        let db = test_db.open("ticks", &no_migrations()).await;
        let consumer = Arc::new(Recorder::new(&db));
        // Event 5 is poison: parked as a dead letter, it must survive pruning.
        consumer.failures_left.lock().unwrap().insert(5, u32::MAX);
        let (bus, shutdown) = start_bus(&db, consumer.clone(), options());
        for n in 1..=10u32 {
            emit(&db, "a", n).await;
        }
        wait_until("all but the poison event are applied", || consumer.applied.lock().unwrap().len() == 9).await;
        shutdown.cancel();
        bus.join().await;
        // A second consumer, stopped after event 6, holds back what it has not read yet.
        let mut tx = db.begin().await.unwrap();
        events::first_delivery(&mut tx, "lagging", events::outbox_events(&db, 0, 1).await.unwrap()[0].id).await.unwrap();
        emporium_kernel::sql_exec!(tx, |c| sqlx::query(
            "INSERT INTO event_cursors (consumer, last_seq, updated_at) VALUES ('lagging', 6, $1)"
        )
        .bind(chrono::Utc::now())
        .execute(c)
        .await)
        .unwrap();
        tx.commit().await.unwrap();

        // Nothing is old enough yet.
        assert_eq!(events::prune(&db, chrono::Utc::now() - chrono::Duration::days(1)).await.unwrap(), events::Pruned::default());
        let pruned = events::prune(&db, chrono::Utc::now() + chrono::Duration::seconds(1)).await.unwrap();
        let left: Vec<u32> = events::outbox_events(&db, 0, 100)
            .await
            .unwrap()
            .iter()
            .map(|e| e.decode::<Ticked>().unwrap().n)
            .collect();
        assert_eq!(left, vec![5, 7, 8, 9, 10], "the dead letter and what the lagging consumer has not read");
        assert_eq!(pruned.events, 5);
        assert_eq!(pruned.processed, 10, "the recorder's nine and the lagging consumer's one");
        let stats = OutboxStats::read(&db).await.unwrap();
        assert_eq!(stats.max_seq, 10, "sequence numbers go on after a prune");
        assert_eq!(stats.dead_letters, 1);
    }

    async fn events_commit_with_their_transaction_only(backend: Backend) {
        let test_db = TestDatabase::create(backend).await;
        let db = test_db.open("ticks", &no_migrations()).await;
        let mut tx = db.begin().await.unwrap();
        events::append(&mut tx, &Ticked { aggregate: "a".into(), n: 1 }).await.unwrap();
        tx.rollback().await.unwrap();
        emit(&db, "a", 2).await;
        let rows = events::outbox_events(&db, 0, 10).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].event_type, "Ticked");
        assert_eq!(rows[0].aggregate_id, "a");
        assert_eq!(rows[0].payload["n"], 2);
        assert_eq!(rows[0].source, "ticks");
    }
}

/// Takes whole batches through `handle_all`; its first call fails, so that batch goes one by one.
struct Batcher {
    inner: Recorder,
    batches: Mutex<Vec<Vec<u32>>>,
    fail_first: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl EventConsumer for Batcher {
    fn name(&self) -> &'static str {
        "batcher"
    }

    async fn handle(&self, event: &Envelope) -> anyhow::Result<()> {
        self.inner.handle(event).await
    }

    async fn handle_all(&self, events: &[Envelope]) -> Option<anyhow::Result<()>> {
        let ticks: Vec<u32> = events.iter().map(|e| e.decode::<Ticked>().unwrap().n).collect();
        self.batches.lock().unwrap().push(ticks);
        if self.fail_first.swap(false, Ordering::SeqCst) {
            return Some(Err(anyhow::anyhow!("the whole batch failed")));
        }
        Some(Ok(()))
    }
}

backend_tests! {
    async fn a_batch_consumer_takes_bursts_at_once_and_falls_back_to_one_by_one(backend: Backend) {
        let test_db = TestDatabase::create(backend).await;
        let db = test_db.open("ticks", &no_migrations()).await;
        for n in 1..=4u32 {
            emit(&db, "a", n).await;
        }
        let consumer = Arc::new(Batcher {
            inner: Recorder::new(&db),
            batches: Mutex::new(Vec::new()),
            fail_first: std::sync::atomic::AtomicBool::new(true),
        });
        let (bus, shutdown) = start_bus(&db, consumer.clone(), options());
        wait_until("the failed batch is delivered one by one", || consumer.inner.applied.lock().unwrap().len() == 4)
            .await;
        let applied: Vec<u32> = consumer.inner.applied.lock().unwrap().iter().map(|(_, n)| *n).collect();
        assert_eq!(applied, vec![1, 2, 3, 4]);
        assert_eq!(consumer.batches.lock().unwrap().first(), Some(&vec![1, 2, 3, 4]));

        // A burst committed together arrives as one batch, not event by event.
        let mut tx = db.begin().await.unwrap();
        let burst: Vec<_> = (5..=7u32)
            .map(|n| events::PendingEvent::of(&Ticked { aggregate: "a".into(), n }).unwrap())
            .collect();
        events::append_all(&mut tx, &burst).await.unwrap();
        tx.commit().await.unwrap();
        wait_until("the burst arrives", || consumer.batches.lock().unwrap().len() == 2).await;
        assert_eq!(consumer.batches.lock().unwrap()[1], vec![5, 6, 7]);
        assert_eq!(consumer.inner.seen.lock().unwrap().len(), 4, "no event of the burst went one by one");
        shutdown.cancel();
        bus.join().await;

        // The cursor moved past the batch: a restart delivers only what came after it.
        emit(&db, "a", 8).await;
        let (bus, shutdown) = start_bus(&db, consumer.clone(), options());
        wait_until("the next event arrives", || consumer.batches.lock().unwrap().len() == 3).await;
        assert_eq!(consumer.batches.lock().unwrap()[2], vec![8]);
        shutdown.cancel();
        bus.join().await;
    }
}

/// A transaction that has appended a tick and drawn its `seq`, left open. The append waits for
/// the end, but a write that is not independent (a cursor row named `marker`) takes it along
/// ahead of the transaction's next statement.
async fn open_with_drawn_seq(db: &Db, aggregate: &str, n: u32, marker: &str) -> Tx {
    let mut tx = db.begin().await.unwrap();
    events::append(&mut tx, &Ticked { aggregate: aggregate.into(), n }).await.unwrap();
    tx.defer(
        Write::new("INSERT INTO event_cursors (consumer, last_seq, updated_at) VALUES ($1, 0, $2)")
            .bind(marker.to_owned())
            .bind(chrono::Utc::now()),
    )
    .await
    .unwrap();
    let _: i32 = sql!(tx, |c| sqlx::query_scalar("SELECT 1").fetch_one(c).await).unwrap();
    tx
}

/// A transaction that took a lower sequence number but commits later must not be skipped, and
/// the dispatcher waiting for it must not hold up other writers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_never_skips_a_late_committing_transaction() {
    let test_db = TestDatabase::create(Backend::Postgres).await;
    let db = test_db.open("ticks", &no_migrations()).await;
    let consumer = Arc::new(Recorder::new(&db));
    let (bus, shutdown) = start_bus(&db, consumer.clone(), options());

    let slow = open_with_drawn_seq(&db, "a", 1, "other").await; // seq 1, stays open
    // The dispatcher polls every 20 ms meanwhile. When it took the outbox lock exclusively to
    // wait for `slow`, every writer arriving after it queued too: this one would never finish.
    tokio::time::sleep(Duration::from_millis(100)).await;
    tokio::time::timeout(Duration::from_secs(10), emit(&db, "b", 2))
        .await
        .expect("a writer commits while the dispatcher waits for an open one"); // seq 2
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(consumer.seen.lock().unwrap().is_empty(), "nothing is delivered past an open transaction");
    slow.commit().await.unwrap();
    wait_until("both events are delivered", || consumer.applied.lock().unwrap().len() == 2).await;
    let applied: Vec<u32> = consumer.applied.lock().unwrap().iter().map(|(_, n)| *n).collect();
    assert_eq!(applied, vec![1, 2]);
    shutdown.cancel();
    bus.join().await;
}

/// Each service's outbox has its own lock: a writer left open in another service's schema of
/// the same database holds back none of this one's events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_delivery_waits_for_no_other_service_writer() {
    let test_db = TestDatabase::create(Backend::Postgres).await;
    let db = test_db.open("ticks", &no_migrations()).await;
    let other = test_db.open("other", &no_migrations()).await;
    let consumer = Arc::new(Recorder::new(&db));
    let (bus, shutdown) = start_bus(&db, consumer.clone(), options());

    let open = open_with_drawn_seq(&other, "elsewhere", 0, "other").await;
    emit(&db, "a", 1).await;
    emit(&db, "a", 2).await;
    wait_until("this service's events are delivered", || consumer.applied.lock().unwrap().len() == 2).await;
    open.commit().await.unwrap();
    shutdown.cancel();
    bus.join().await;
}

/// Many writers at once, some committing out of `seq` order: every event is delivered once, in
/// `seq` order, with none skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_delivers_every_event_of_concurrent_writers_in_order() {
    let test_db = TestDatabase::create(Backend::Postgres).await;
    let db = test_db.open("ticks", &no_migrations()).await;
    let consumer = Arc::new(Recorder::new(&db));
    let (bus, shutdown) = start_bus(&db, consumer.clone(), options());
    // Paced so that delivery keeps up with the newest rows, where an open writer's gap is.
    let writers: Vec<_> = (0..8u32)
        .map(|w| {
            let db = db.clone();
            tokio::spawn(async move {
                for i in 0..20u32 {
                    // Drawn now, committed a little later: others commit in between.
                    let tx = open_with_drawn_seq(&db, &format!("w{w}"), w * 100 + i, &format!("writer-{w}-{i}")).await;
                    // Half the writers hold theirs while the other half commit theirs.
                    if (w + i) % 2 == 0 {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    tx.commit().await.unwrap();
                    tokio::time::sleep(Duration::from_millis(4)).await;
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    wait_until("every event is delivered", || consumer.applied.lock().unwrap().len() == 160).await;
    let seqs: Vec<i64> = consumer.seqs.lock().unwrap().clone();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "delivered in seq order, none twice: {seqs:?}");
    let applied = consumer.applied.lock().unwrap().clone();
    assert!(in_order_per_aggregate(&applied));
    shutdown.cancel();
    bus.join().await;
}

/// A consumer that persists its own effects (like a search index) decides where delivery resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_checkpointing_consumer_resumes_from_its_checkpoint() {
    struct FromCheckpoint(Recorder, i64);

    #[async_trait::async_trait]
    impl EventConsumer for FromCheckpoint {
        fn name(&self) -> &'static str {
            "checkpointed"
        }
        async fn handle(&self, event: &Envelope) -> anyhow::Result<()> {
            self.0.handle(event).await
        }
        fn checkpoint(&self, source: &str) -> Option<i64> {
            (source == "ticks").then_some(self.1)
        }
    }

    let test_db = TestDatabase::create(Backend::Sqlite).await;
    let db = test_db.open("ticks", &no_migrations()).await;
    for n in 1..=6u32 {
        emit(&db, "a", n).await;
    }
    let consumer = Arc::new(FromCheckpoint(Recorder::new(&db), 4));
    let (bus, shutdown) = start_bus(&db, consumer.clone(), options());
    wait_until("events after the checkpoint arrive", || consumer.0.seen.lock().unwrap().len() == 2).await;
    let seen: Vec<u32> = consumer.0.seen.lock().unwrap().iter().map(|(_, n)| *n).collect();
    assert_eq!(seen, vec![5, 6]);
    shutdown.cancel();
    bus.join().await;
}
