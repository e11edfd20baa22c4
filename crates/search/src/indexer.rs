//! The one index writer, fed through a queue (meilisearch's rule: index writes go through one
//! writer). Operations are applied as they arrive and committed in batches: when the queue goes
//! quiet for a moment or a batch has waited long enough, so a change is searchable well within a
//! second while bulk loads still commit rarely. Each commit records, in its payload, the event
//! positions it includes; that is the indexer's checkpoint after a crash.

use crate::index::{CommitPayload, Fields, id_term, to_document};
use crate::model::{SearchDoc, StockState, Synonyms};
use emporium_kernel::ids::ProductId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tantivy::{Index, IndexReader, IndexWriter, TantivyDocument};
use tokio::sync::{mpsc, oneshot, watch};

pub enum Op {
    /// Index a product's catalog data; the stock it already had is kept.
    Upsert(Box<SearchDoc>),
    Delete(ProductId),
    /// Replace a stored document's rating (a review was added).
    Rate {
        id: ProductId,
        average: f64,
        count: i64,
    },
    /// Replace a product's stock (an inventory event). Stock of a product the index does not
    /// hold yet (events of two services are not ordered) waits for its first upsert.
    Stock {
        id: ProductId,
        stock: StockState,
    },
    /// Everything before this op belongs to `source` position `seq`.
    Position {
        source: String,
        seq: i64,
    },
    /// Remove every document (before a full reindex).
    Clear,
    /// Commit now and answer once the commit is visible to searches.
    Flush(oneshot::Sender<anyhow::Result<()>>),
    /// Commit, release the index lock and stop (shutdown).
    Close(oneshot::Sender<()>),
    /// Commit, then merge every segment into one (after a bulk load) and wait for it.
    Optimize(oneshot::Sender<anyhow::Result<()>>),
}

/// Handle to the writer task.
#[derive(Clone)]
pub struct IndexerHandle {
    tx: mpsc::Sender<Op>,
    committed: Arc<Mutex<crate::index::Checkpoints>>,
    generation: watch::Receiver<u64>,
    live_stock: LiveStock,
}

/// The latest available count of every product whose stock changed since start: hits show it
/// instead of the indexed count, which is rewritten only when search would show a difference
/// (see [`StockState::needs_reindex`]).
type LiveStock = Arc<std::sync::RwLock<HashMap<ProductId, i64>>>;

impl IndexerHandle {
    pub async fn send(&self, op: Op) -> anyhow::Result<()> {
        self.tx.send(op).await.map_err(|_| anyhow::anyhow!("the search indexer has stopped"))
    }

    /// Commits pending changes and waits until searches see them.
    pub async fn flush(&self) -> anyhow::Result<()> {
        let (tx, rx) = oneshot::channel();
        self.send(Op::Flush(tx)).await?;
        rx.await.map_err(|_| anyhow::anyhow!("the search indexer has stopped"))?
    }

    /// Commits what is pending and stops the writer, releasing the index for another process.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Op::Close(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Merges the index into a single segment (queries pay per-segment setup costs).
    pub async fn optimize(&self) -> anyhow::Result<()> {
        let (tx, rx) = oneshot::channel();
        self.send(Op::Optimize(tx)).await?;
        rx.await.map_err(|_| anyhow::anyhow!("the search indexer has stopped"))?
    }

    /// The committed position of `source` (0 for a fresh index).
    pub fn checkpoint(&self, source: &str) -> i64 {
        self.committed.lock().expect("checkpoint lock").get(source).copied().unwrap_or(0)
    }

    /// Bumped after every commit that became visible (caches key on it).
    pub fn generation(&self) -> watch::Receiver<u64> {
        self.generation.clone()
    }

    /// The live available count of `product`, when it changed since start.
    pub fn live_stock(&self, product: ProductId) -> Option<i64> {
        self.live_stock.read().expect("live stock lock").get(&product).copied()
    }
}

pub struct IndexerOptions {
    /// Commit when no operation arrived for this long…
    pub quiet: Duration,
    /// …or when the oldest uncommitted operation is this old.
    pub max_delay: Duration,
    pub writer_memory: usize,
}

impl Default for IndexerOptions {
    fn default() -> Self {
        Self { quiet: Duration::from_millis(50), max_delay: Duration::from_millis(300), writer_memory: 64 << 20 }
    }
}

pub fn spawn(
    index: Index,
    reader: IndexReader,
    fields: Fields,
    payload: CommitPayload,
    synonyms: Arc<Synonyms>,
    options: IndexerOptions,
) -> anyhow::Result<IndexerHandle> {
    let writer: IndexWriter<TantivyDocument> = match index.writer(options.writer_memory) {
        Ok(writer) => writer,
        // The index has one writer, held by its lock file while a process has it open.
        Err(tantivy::TantivyError::LockFailure(tantivy::directory::error::LockError::LockBusy, _)) => {
            anyhow::bail!(
                "the search index is in use by another Emporium process (`serve` on the same data dir, or another \
                 reindex): stop it first, or point this command at another --data-dir"
            )
        }
        Err(err) => return Err(err.into()),
    };
    let (tx, rx) = mpsc::channel(4096);
    let committed = Arc::new(Mutex::new(payload.positions.clone()));
    let (generation_tx, generation) = watch::channel(0);
    let live_stock = LiveStock::default();
    let task = WriterTask {
        live_stock: live_stock.clone(),
        writer: Some(writer),
        reader,
        fields,
        synonyms,
        pending: payload,
        pending_docs: HashMap::new(),
        committed: committed.clone(),
        generation: generation_tx,
        options,
    };
    tokio::spawn(task.run(rx));
    Ok(IndexerHandle { tx, committed, generation, live_stock })
}

struct WriterTask {
    writer: Option<IndexWriter<TantivyDocument>>,
    reader: IndexReader,
    fields: Fields,
    synonyms: Arc<Synonyms>,
    /// Positions and orphan stock as of the next commit (its payload).
    pending: CommitPayload,
    /// Documents written since the last commit, so a rating update can find a product created
    /// in the same batch (uncommitted documents are invisible to searchers).
    pending_docs: HashMap<ProductId, SearchDoc>,
    committed: Arc<Mutex<crate::index::Checkpoints>>,
    live_stock: LiveStock,
    generation: watch::Sender<u64>,
    options: IndexerOptions,
}

impl WriterTask {
    async fn run(mut self, mut rx: mpsc::Receiver<Op>) {
        let mut dirty_since: Option<Instant> = None;
        let mut waiters: Vec<oneshot::Sender<anyhow::Result<()>>> = Vec::new();
        loop {
            let op = match dirty_since {
                None => rx.recv().await,
                Some(since) => {
                    let deadline = (since + self.options.max_delay).saturating_duration_since(Instant::now());
                    match tokio::time::timeout(self.options.quiet.min(deadline), rx.recv()).await {
                        Ok(op) => op,
                        Err(_) => {
                            self.commit(&mut waiters).await;
                            dirty_since = None;
                            continue;
                        }
                    }
                }
            };
            let Some(op) = op else {
                // Every handle is gone: commit what we have and stop.
                if dirty_since.is_some() || !waiters.is_empty() {
                    self.commit(&mut waiters).await;
                }
                return;
            };
            match op {
                Op::Flush(done) => {
                    waiters.push(done);
                    self.commit(&mut waiters).await;
                    dirty_since = None;
                    continue;
                }
                Op::Optimize(done) => {
                    self.commit(&mut waiters).await;
                    dirty_since = None;
                    let _ = done.send(self.merge_all().await);
                    continue;
                }
                Op::Close(done) => {
                    if dirty_since.is_some() || !waiters.is_empty() {
                        self.commit(&mut waiters).await;
                    }
                    // Dropping the writer releases the directory lock before we answer.
                    drop(self.writer.take());
                    let _ = done.send(());
                    return;
                }
                other => self.apply(other),
            }
            let since = *dirty_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= self.options.max_delay {
                self.commit(&mut waiters).await;
                dirty_since = None;
            }
        }
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Rate { id, average, count } => {
                if let Some(mut doc) = self.current(id) {
                    doc.rating_average = average;
                    doc.rating_count = count;
                    self.write(doc);
                }
            }
            Op::Stock { id, stock } => {
                self.pending.stock_seen = true;
                self.live_stock.write().expect("live stock lock").insert(id, stock.available);
                match self.current(id) {
                    Some(mut doc) => {
                        if stock.needs_reindex(&doc.stock()) {
                            doc.set_stock(stock);
                            self.write(doc);
                        }
                    }
                    None => {
                        self.pending.orphan_stock.insert(id, stock);
                    }
                }
            }
            Op::Upsert(mut doc) => {
                let stock = match self.pending.orphan_stock.remove(&doc.product_id) {
                    Some(stock) => Some(stock),
                    // Without any stock event ever, no document has stock to keep: skip the
                    // lookup (it would cost a bulk load a document read per product).
                    None if self.pending.stock_seen => self.current(doc.product_id).map(|d| d.stock()),
                    None => None,
                };
                // The document is written anyway: with the live count, not a lagging indexed one.
                let live = self.live_stock.read().expect("live stock lock").get(&doc.product_id).copied();
                let stock = stock.map(|mut s| {
                    s.available = live.unwrap_or(s.available);
                    s
                });
                if let Some(stock) = stock {
                    doc.set_stock(stock);
                }
                self.write(*doc);
            }
            Op::Delete(id) => {
                let writer = self.writer.as_mut().expect("writer present between commits");
                writer.delete_term(id_term(&self.fields, id));
                self.pending_docs.remove(&id);
                self.pending.orphan_stock.remove(&id);
            }
            Op::Position { source, seq } => {
                self.pending.positions.insert(source, seq);
            }
            Op::Clear => {
                let writer = self.writer.as_mut().expect("writer present between commits");
                if let Err(err) = writer.delete_all_documents() {
                    tracing::error!(error = %err, "clearing the search index failed");
                }
                self.pending_docs.clear();
            }
            Op::Flush(_) | Op::Close(_) | Op::Optimize(_) => unreachable!("handled before"),
        }
    }

    /// The product as the index will have it after the pending commit.
    fn current(&self, id: ProductId) -> Option<SearchDoc> {
        self.pending_docs.get(&id).cloned().or_else(|| self.stored(id))
    }

    fn write(&mut self, doc: SearchDoc) {
        let writer = self.writer.as_mut().expect("writer present between commits");
        writer.delete_term(id_term(&self.fields, doc.product_id));
        if let Err(err) = writer.add_document(to_document(&self.fields, &self.synonyms, &doc)) {
            tracing::error!(error = %err, product_id = %doc.product_id, "indexing a product failed");
        }
        self.pending_docs.insert(doc.product_id, doc);
    }

    async fn merge_all(&mut self) -> anyhow::Result<()> {
        let mut writer = self.writer.take().expect("writer present");
        let reader = self.reader.clone();
        let (writer, result) = tokio::task::spawn_blocking(move || {
            // Background merges (the default policy) may be merging some of these segments right
            // now; whichever merge ends second finds its inputs gone and fails. No new background
            // merges while ours runs, and when one that was under way ended first, merge again
            // over what it left.
            writer.set_merge_policy(Box::new(tantivy::indexer::NoMergePolicy));
            let result = (|| -> anyhow::Result<()> {
                for attempt in 1.. {
                    let ids = writer.index().searchable_segment_ids()?;
                    if ids.len() <= 1 {
                        break;
                    }
                    match writer.merge(&ids).wait() {
                        Ok(_) => break,
                        Err(tantivy::TantivyError::InvalidArgument(err)) if attempt < 10 => {
                            tracing::debug!(%err, attempt, "a background merge overlapped; merging again");
                            std::thread::sleep(std::time::Duration::from_millis(200));
                        }
                        Err(err) => return Err(err.into()),
                    }
                }
                reader.reload()?;
                Ok(())
            })();
            writer.set_merge_policy(Box::new(tantivy::indexer::LogMergePolicy::default()));
            (writer, result)
        })
        .await
        .expect("merge task does not panic");
        self.writer = Some(writer);
        self.generation.send_modify(|g| *g += 1);
        result
    }

    fn stored(&self, id: ProductId) -> Option<SearchDoc> {
        let searcher = self.reader.searcher();
        let query =
            tantivy::query::TermQuery::new(id_term(&self.fields, id), tantivy::schema::IndexRecordOption::Basic);
        let hits = searcher.search(&query, &tantivy::collector::TopDocs::with_limit(1).order_by_score()).ok()?;
        let (_, address) = hits.first()?;
        let doc: TantivyDocument = searcher.doc(*address).ok()?;
        crate::index::from_document(&self.fields, &doc)
    }

    async fn commit(&mut self, waiters: &mut Vec<oneshot::Sender<anyhow::Result<()>>>) {
        let mut writer = self.writer.take().expect("writer present");
        let payload = serde_json::to_string(&self.pending).unwrap_or_default();
        let reader = self.reader.clone();
        let started = Instant::now();
        // Commits fsync and may merge segments: keep them off the async threads.
        let (writer, result) = tokio::task::spawn_blocking(move || {
            let result = (|| -> tantivy::Result<()> {
                let mut prepared = writer.prepare_commit()?;
                prepared.set_payload(&payload);
                prepared.commit()?;
                reader.reload()
            })();
            (writer, result)
        })
        .await
        .expect("commit task does not panic");
        self.writer = Some(writer);
        metrics::histogram!("search_commit_seconds").record(started.elapsed().as_secs_f64());
        let outcome = match result {
            Ok(()) => {
                *self.committed.lock().expect("checkpoint lock") = self.pending.positions.clone();
                self.pending_docs.clear();
                self.generation.send_modify(|g| *g += 1);
                Ok(())
            }
            Err(err) => {
                tracing::error!(error = %err, "search index commit failed");
                Err(anyhow::anyhow!("search index commit failed: {err}"))
            }
        };
        for waiter in waiters.drain(..) {
            let _ = waiter.send(outcome.as_ref().map(|_| ()).map_err(|e| anyhow::anyhow!("{e}")));
        }
    }
}
