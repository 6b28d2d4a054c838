//! Column encoding spread over threads that live as long as the file. Each thread owns a
//! fixed share of the columns (balanced by the first batch's sizes) and encodes every
//! batch's values for them in order, a few batches behind the parser at most: no thread
//! waits for another between batches. Row groups are closed by message; each thread sends
//! its closed column chunks back, and the file takes them in column order once all have
//! arrived, while the threads go on with the next row group.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, SyncSender, TryRecvError, channel, sync_channel};
use std::thread::{self, JoinHandle};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_writer::{ArrowColumnChunk, ArrowColumnWriter, compute_leaves};
use parquet::errors::ParquetError;
use tokio::sync::mpsc;

/// Batches queued for a thread beyond the one it is encoding: enough that the parser can
/// run ahead while a thread is descheduled or compressing a page, so that both cores stay
/// busy. Each is shared by all threads and at most a batch's byte budget (see
/// `columns::MAX_BATCH_BYTES`). `convert` of 2,000,000 rows, interleaved runs: 2 queued,
/// 0.57-0.63 s; 6 queued, 0.54-0.55 s, for 4 MiB more peak RSS.
pub const QUEUED_BATCHES: usize = 6;

/// Rows `offset..offset + len` of a batch, for the columns a thread owns. The batch is
/// shared by all threads; whichever drops it last hands it back for its buffers.
struct Rows {
    batch: Arc<RecordBatch>,
    offset: usize,
    len: usize,
}

enum Job {
    /// The thread's writers for a new row group, by leaf index.
    Open(Vec<(usize, ArrowColumnWriter)>),
    Write(Rows),
    /// Close the row group's writers and send their chunks back.
    Close,
}

/// A thread's closed chunks of one row group, by leaf index.
type Chunks = Vec<(usize, ArrowColumnChunk)>;

struct Worker {
    jobs: Option<SyncSender<Job>>,
    chunks: Receiver<Result<Chunks, ParquetError>>,
    thread: Option<JoinHandle<()>>,
    /// Bytes held by the thread's writers after its last write.
    held: Arc<AtomicUsize>,
}

/// The threads encoding one file's columns.
pub struct ColumnPool {
    workers: Vec<Worker>,
    /// The thread that owns each leaf column.
    owner: Vec<usize>,
    /// Chunks received for the oldest row group not yet taken, per thread.
    arrived: Vec<Option<Chunks>>,
    /// Row groups closed and not yet taken.
    closing: usize,
}

impl ColumnPool {
    /// Starts up to `threads` threads for the columns of `schema`, sharing them out by
    /// the sizes of `first` (the first batch); `recycle` gets each batch back once every
    /// thread is done with it.
    pub fn start(
        schema: &SchemaRef,
        first: &RecordBatch,
        threads: usize,
        recycle: mpsc::Sender<RecordBatch>,
    ) -> Result<ColumnPool, ParquetError> {
        // Every leaf of a field goes to the field's thread (the parser's columns are flat:
        // one leaf each).
        let mut costs = Vec::new();
        let mut fields = Vec::new();
        let mut leaves = 0;
        for (index, (field, column)) in schema.fields().iter().zip(first.columns()).enumerate() {
            let count = compute_leaves(field, column)?.len();
            costs.push(column.get_array_memory_size() + 16 * column.len());
            fields.push(FieldLeaves {
                field: index,
                first_leaf: leaves,
                count,
            });
            leaves += count;
        }
        let threads = threads.clamp(1, costs.len().max(1));
        let field_owner = share_out(&costs, threads);
        let mut owner = vec![0; leaves];
        for (f, &t) in fields.iter().zip(&field_owner) {
            owner[f.first_leaf..f.first_leaf + f.count].fill(t);
        }
        let mut workers = Vec::with_capacity(threads);
        for t in 0..threads {
            let (jobs_tx, jobs_rx) = sync_channel(QUEUED_BATCHES);
            // Unbounded, so a thread never waits to hand chunks back (the file takes a row
            // group only once every thread's chunks are in, and a thread ahead of the
            // others must not block them); how far ahead it can be is bounded by the
            // job queues.
            let (chunks_tx, chunks_rx) = channel();
            let held = Arc::new(AtomicUsize::new(0));
            let worker = ColumnThread {
                schema: schema.clone(),
                fields: fields
                    .iter()
                    .zip(&field_owner)
                    .filter(|&(_, &o)| o == t)
                    .map(|(f, _)| *f)
                    .collect(),
                writers: Vec::new(),
                held: held.clone(),
                recycle: recycle.clone(),
            };
            let thread = thread::Builder::new()
                .name("cohort-sync-encode".into())
                .spawn(move || worker.run(jobs_rx, chunks_tx))
                .map_err(|e| {
                    ParquetError::General(format!("cannot start an encoder thread: {e}"))
                })?;
            workers.push(Worker {
                jobs: Some(jobs_tx),
                chunks: chunks_rx,
                thread: Some(thread),
                held,
            });
        }
        Ok(ColumnPool {
            arrived: (0..workers.len()).map(|_| None).collect(),
            workers,
            owner,
            closing: 0,
        })
    }

    /// Hands the writers of a new row group to the threads that own their columns.
    pub fn open(&mut self, writers: Vec<ArrowColumnWriter>) -> Result<(), ParquetError> {
        if writers.len() != self.owner.len() {
            return Err(ParquetError::General(format!(
                "{} column writers for {} leaf columns",
                writers.len(),
                self.owner.len()
            )));
        }
        let mut shares: Vec<Vec<(usize, ArrowColumnWriter)>> =
            (0..self.workers.len()).map(|_| Vec::new()).collect();
        for (leaf, w) in writers.into_iter().enumerate() {
            shares[self.owner[leaf]].push((leaf, w));
        }
        for (t, share) in shares.into_iter().enumerate() {
            self.send(t, Job::Open(share))?;
        }
        Ok(())
    }

    /// Queues rows `offset..offset + len` of `batch` on every thread.
    pub fn write(
        &mut self,
        batch: &Arc<RecordBatch>,
        offset: usize,
        len: usize,
    ) -> Result<(), ParquetError> {
        for t in 0..self.workers.len() {
            let rows = Rows {
                batch: batch.clone(),
                offset,
                len,
            };
            self.send(t, Job::Write(rows))?;
        }
        Ok(())
    }

    /// Bytes the threads' writers held after their last write.
    pub fn held(&self) -> usize {
        self.workers
            .iter()
            .map(|w| w.held.load(Ordering::Relaxed))
            .sum()
    }

    /// Asks every thread to close the row group being written; its chunks come back
    /// through [`ColumnPool::take_closed`].
    pub fn close(&mut self) -> Result<(), ParquetError> {
        for t in 0..self.workers.len() {
            self.send(t, Job::Close)?;
        }
        self.closing += 1;
        Ok(())
    }

    /// Row groups whose chunks have all arrived, oldest first, each with its chunks in
    /// column order. With `wait`, waits for every closed row group.
    pub fn take_closed(&mut self, wait: bool) -> Result<Vec<Vec<ArrowColumnChunk>>, ParquetError> {
        let mut done = Vec::new();
        while self.closing > 0 {
            for t in 0..self.workers.len() {
                if self.arrived[t].is_some() {
                    continue;
                }
                let got = if wait {
                    self.workers[t].chunks.recv().map_err(|_| self.gone(t))
                } else {
                    match self.workers[t].chunks.try_recv() {
                        Ok(r) => Ok(r),
                        Err(TryRecvError::Empty) => continue,
                        Err(TryRecvError::Disconnected) => Err(self.gone(t)),
                    }
                };
                self.arrived[t] = Some(got??);
            }
            if self.arrived.iter().any(Option::is_none) {
                break;
            }
            let mut slots: Vec<Option<ArrowColumnChunk>> =
                (0..self.owner.len()).map(|_| None).collect();
            for chunks in self.arrived.iter_mut().filter_map(Option::take) {
                for (leaf, chunk) in chunks {
                    if let Some(slot) = slots.get_mut(leaf) {
                        *slot = Some(chunk);
                    }
                }
            }
            let chunks: Option<Vec<ArrowColumnChunk>> = slots.into_iter().collect();
            let Some(chunks) = chunks else {
                return Err(ParquetError::General(
                    "an encoder thread closed a row group without all of its columns".into(),
                ));
            };
            self.closing -= 1;
            done.push(chunks);
        }
        Ok(done)
    }

    /// Stops the threads (after the work queued) and waits for them.
    pub fn finish(mut self) -> Result<(), ParquetError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), ParquetError> {
        let mut result = Ok(());
        for w in &mut self.workers {
            w.jobs = None;
        }
        for w in &mut self.workers {
            if let Some(thread) = w.thread.take()
                && thread.join().is_err()
                && result.is_ok()
            {
                result = Err(ParquetError::General("an encoder thread panicked".into()));
            }
        }
        result
    }

    fn send(&mut self, t: usize, job: Job) -> Result<(), ParquetError> {
        let sent = match &self.workers[t].jobs {
            Some(jobs) => jobs.send(job).is_ok(),
            None => false,
        };
        if sent { Ok(()) } else { Err(self.failure(t)) }
    }

    /// The error of thread `t`, which stopped taking work.
    fn failure(&mut self, t: usize) -> ParquetError {
        loop {
            match self.workers[t].chunks.recv() {
                Ok(Err(e)) => return e,
                Ok(Ok(_)) => continue,
                Err(_) => return self.gone(t),
            }
        }
    }

    fn gone(&self, t: usize) -> ParquetError {
        ParquetError::General(format!("encoder thread {t} stopped without an error"))
    }
}

impl Drop for ColumnPool {
    /// Threads stop once their queue is dropped, also when the file is abandoned.
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Shares columns of the given costs out over `threads` threads: largest first, each
/// onto the least loaded thread. Returns each column's thread.
fn share_out(costs: &[usize], threads: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..costs.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(costs[i]));
    let mut load = vec![0usize; threads.max(1)];
    let mut owner = vec![0usize; costs.len()];
    for &i in &order {
        let t = (0..load.len()).min_by_key(|&t| load[t]).unwrap_or(0);
        load[t] += costs[i];
        owner[i] = t;
    }
    owner
}

/// The leaf columns of one field: `count` of them from `first_leaf`.
#[derive(Debug, Clone, Copy)]
struct FieldLeaves {
    field: usize,
    first_leaf: usize,
    count: usize,
}

/// One encoding thread: its fields and, while a row group is open, their writers (in the
/// fields' leaf order).
struct ColumnThread {
    schema: SchemaRef,
    fields: Vec<FieldLeaves>,
    writers: Vec<(usize, ArrowColumnWriter)>,
    held: Arc<AtomicUsize>,
    recycle: mpsc::Sender<RecordBatch>,
}

impl ColumnThread {
    fn run(mut self, jobs: Receiver<Job>, chunks: Sender<Result<Chunks, ParquetError>>) {
        while let Ok(job) = jobs.recv() {
            let result = match job {
                Job::Open(writers) => {
                    self.writers = writers;
                    Ok(())
                }
                Job::Write(rows) => self.write(rows),
                Job::Close => match self.close() {
                    Ok(closed) => {
                        if chunks.send(Ok(closed)).is_err() {
                            return;
                        }
                        Ok(())
                    }
                    Err(e) => Err(e),
                },
            };
            if let Err(e) = result {
                let _ = chunks.send(Err(e));
                return;
            }
        }
    }

    fn write(&mut self, rows: Rows) -> Result<(), ParquetError> {
        let Rows { batch, offset, len } = rows;
        let mut writers = self.writers.iter_mut();
        for f in &self.fields {
            let column = batch.column(f.field).slice(offset, len);
            let leaves = compute_leaves(&self.schema.fields()[f.field], &column)?;
            if leaves.len() != f.count {
                return Err(ParquetError::General(format!(
                    "column {} has {} leaves, expected {}",
                    f.field,
                    leaves.len(),
                    f.count
                )));
            }
            for leaf in &leaves {
                let Some((_, writer)) = writers.next() else {
                    return Err(ParquetError::General("fewer writers than leaves".into()));
                };
                writer.write(leaf)?;
            }
        }
        self.held.store(
            self.writers.iter().map(|(_, w)| w.memory_size()).sum(),
            Ordering::Relaxed,
        );
        if let Ok(batch) = Arc::try_unwrap(batch) {
            let _ = self.recycle.try_send(batch);
        }
        Ok(())
    }

    fn close(&mut self) -> Result<Chunks, ParquetError> {
        self.held.store(0, Ordering::Relaxed);
        std::mem::take(&mut self.writers)
            .into_iter()
            .map(|(leaf, w)| Ok((leaf, w.close()?)))
            .collect()
    }
}
