//! Seal stage: deduplication and sealing. [`Dedup::claim`] (the write path's, in
//! [`crate::store`]) decides, across all threads, which caller stores a blob that is neither in
//! the index nor already on its way; the winner compresses and encrypts it ([`cairn_repo_format::blob::seal_blob`]) and sends it to the pack
//! stage. Chunks of small files are sealed by the file thread that read them; chunks of large
//! files and of streams go to a pool of seal threads ([`worker`]), so compression, the
//! costliest step, runs on every core even while one large file is read by a single thread.

use cairn_repo_format::blob::{SealedBlob, seal_blob};
use cairn_repo_format::crypto::MasterKey;
use cairn_repo_format::{BlobType, Id};

pub use crate::store::Dedup;
use crossbeam_channel::{Receiver, Sender};

/// A claimed data chunk on its way to a seal thread.
pub struct SealJob {
    /// Its blob id.
    pub id: Id,
    /// The plaintext.
    pub data: Vec<u8>,
}

/// Sealed blobs on their way to the pack stage from one thread, sent in batches: one message
/// per blob kept the pack thread and the file threads waking each other for every small
/// file. The owner calls [`BlobBatch::flush`] before it waits for anything, and at its end.
pub struct BlobBatch {
    tx: Sender<Vec<SealedBlob>>,
    buf: std::cell::RefCell<(Vec<SealedBlob>, usize)>,
}

/// Blobs per batch, at most…
const BATCH_BLOBS: usize = 32;
/// …and at most this many bytes.
const BATCH_BYTES: usize = 1 << 20;

impl BlobBatch {
    /// A batch sending to `tx`.
    pub fn new(tx: Sender<Vec<SealedBlob>>) -> Self {
        BlobBatch {
            tx,
            buf: Default::default(),
        }
    }

    /// Adds a blob; sends the batch when it is full. Fails when the pack stage has gone.
    pub fn push(&self, blob: SealedBlob) -> Result<(), Stopped> {
        let full = {
            let mut b = self.buf.borrow_mut();
            b.1 += blob.bytes.len();
            b.0.push(blob);
            b.0.len() >= BATCH_BLOBS || b.1 >= BATCH_BYTES
        };
        if full { self.flush() } else { Ok(()) }
    }

    /// Sends what is waiting.
    pub fn flush(&self) -> Result<(), Stopped> {
        let batch = std::mem::take(&mut *self.buf.borrow_mut()).0;
        if batch.is_empty() {
            return Ok(());
        }
        self.tx.send(batch).map_err(|_| Stopped)
    }
}

/// The pack stage has gone (after an error).
#[derive(Debug)]
pub struct Stopped;

/// Where a claimed chunk is sealed.
pub enum SealTo<'a> {
    /// On this thread, then to the pack stage in batches: chunks of small files, which many
    /// file threads already spread over the cores; no copy, no hand-off.
    Here {
        /// The repository key.
        key: &'a MasterKey,
        /// zstd level.
        level: i32,
        /// This thread's batch for the pack stage.
        blobs: &'a BlobBatch,
    },
    /// Copied to the seal threads: chunks of large files (and streams), so that one file keeps
    /// every core busy.
    Pool(&'a Sender<SealJob>),
}

/// Files at least this large are sealed by the pool ([`SealTo::Pool`]).
pub const POOL_FROM: u64 = 8 << 20;

/// The dedup step for one chunk: counts it, and when this caller wins the dedup claim, seals
/// it where `to` says. A closed channel (the pipeline stopped) is a `BrokenPipe` error.
pub fn store_chunk(
    dedup: &Dedup<'_>,
    to: &SealTo<'_>,
    progress: &super::Progress,
    id: Id,
    data: &[u8],
) -> std::io::Result<()> {
    use std::sync::atomic::Ordering::Relaxed;
    progress.bytes_read.fetch_add(data.len() as u64, Relaxed);
    progress.bytes_done.fetch_add(data.len() as u64, Relaxed);
    if dedup.claim(BlobType::Data, &id) {
        progress.data_blobs.fetch_add(1, Relaxed);
        progress.data_added.fetch_add(data.len() as u64, Relaxed);
        let sent = match to {
            SealTo::Here { key, level, blobs } => blobs
                .push(seal(key, BlobType::Data, id, data, *level))
                .is_ok(),
            SealTo::Pool(jobs) => jobs
                .send(SealJob {
                    id,
                    data: data.to_vec(),
                })
                .is_ok(),
        };
        if !sent {
            return Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "pipeline stopped",
            ));
        }
    }
    Ok(())
}

/// One seal thread: seals data chunks from `jobs` and sends them to the pack stage until
/// either channel closes.
pub fn worker(
    key: &MasterKey,
    level: i32,
    jobs: Receiver<SealJob>,
    blobs: Sender<Vec<SealedBlob>>,
) {
    for job in jobs {
        if blobs
            .send(vec![seal(key, BlobType::Data, job.id, &job.data, level)])
            .is_err()
        {
            return;
        }
    }
}

/// Seals a claimed blob for the pack stage.
pub fn seal(key: &MasterKey, ty: BlobType, id: Id, plaintext: &[u8], level: i32) -> SealedBlob {
    seal_blob(key, ty, id, plaintext, level)
}
