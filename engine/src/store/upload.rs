//! Upload step of the write path: stores finished packs (create-only, named by their hash) on several
//! connections at once and writes index files as packs complete, so that an interrupted backup
//! leaves indexed, reusable packs. The
//! order is the invariant: a pack is stored before any index names it, and every index entry a
//! snapshot needs is stored before the snapshot.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cairn_repo_format::backend::Spooled;
use cairn_repo_format::pack::{PackEntry, PackInfo};
use cairn_repo_format::{BackendError, FileKind, Id, Indexed, RepoError, Repository};
use crossbeam_channel::Receiver;

use crate::backup::Progress;

/// Write an index file after this many packs…
const FLUSH_PACKS: usize = 8;
/// …or this many blobs…
const FLUSH_BLOBS: usize = 50_000;
/// …or when this long has passed since the last one.
const FLUSH_AFTER: Duration = Duration::from_secs(60);

/// A finished pack waiting to be stored: its name and blobs, and its bytes in the backend's
/// spool.
pub struct SpooledPack {
    /// Name, length, blobs.
    pub info: PackInfo,
    /// The bytes.
    pub body: Spooled,
}

/// Index entries of stored packs, waiting for the next index file.
#[derive(Default)]
struct Batch {
    packs: Vec<(Id, Vec<PackEntry>)>,
    blobs: usize,
}

/// Uploads packs and batches their index entries. [`Uploader::upload`] may be called from
/// several threads at once (one per connection): each stores its pack, then adds the pack's
/// entries to the shared batch; whichever thread fills the batch writes the index file.
pub struct Uploader<'a> {
    repo: &'a Repository<Indexed>,
    progress: &'a Progress,
    batch: Mutex<Batch>,
    last_flush: Mutex<Instant>,
}

impl<'a> Uploader<'a> {
    /// An uploader into `repo`.
    pub fn new(repo: &'a Repository<Indexed>, progress: &'a Progress) -> Self {
        Uploader {
            repo,
            progress,
            batch: Mutex::new(Batch::default()),
            last_flush: Mutex::new(Instant::now()),
        }
    }

    /// Stores one pack and queues its index entries.
    pub fn upload(&self, pack: SpooledPack) -> Result<(), RepoError> {
        let SpooledPack { info, body } = pack;
        match self
            .repo
            .backend()
            .put_spooled(&FileKind::Pack.path(&info.id), &body)
        {
            // Same name, same bytes: a pack identical to one already stored.
            Ok(()) | Err(BackendError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        // A spooled pack's temporary file goes now, before the index batch is handled.
        drop(body);
        let len = info.len;
        self.progress
            .data_added_packed
            .fetch_add(len, Ordering::Relaxed);
        self.progress.packs_done.fetch_add(1, Ordering::Relaxed);
        let full = {
            let mut b = lock(&self.batch);
            b.blobs += info.entries.len();
            b.packs.push((info.id, info.entries));
            let due = b.packs.len() >= FLUSH_PACKS
                || b.blobs >= FLUSH_BLOBS
                || lock(&self.last_flush).elapsed() >= FLUSH_AFTER;
            due.then(|| std::mem::take(&mut *b))
        };
        match full {
            Some(b) => self.write_index(b),
            None => Ok(()),
        }
    }

    /// Writes an index file for the packs uploaded since the last one. Call it after the last
    /// [`Uploader::upload`] has returned.
    pub fn flush(&self) -> Result<(), RepoError> {
        let b = std::mem::take(&mut *lock(&self.batch));
        self.write_index(b)
    }

    fn write_index(&self, b: Batch) -> Result<(), RepoError> {
        if b.packs.is_empty() {
            return Ok(());
        }
        self.repo
            .save_index(b.packs.iter().map(|(id, e)| (id, e.as_slice())))?;
        *lock(&self.last_flush) = Instant::now();
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Uploads every pack received on `packs` with `connections` threads, then writes the last
/// index file. The channel should be a rendezvous (`bounded(0)`) so that the packs held in
/// memory are the ones being uploaded. After the first failure the threads stop taking packs
/// (which closes the channel once all have stopped), the packs stored so far are indexed, and
/// that failure is returned.
pub fn run(
    repo: &Repository<Indexed>,
    packs: Receiver<SpooledPack>,
    connections: usize,
    progress: &Progress,
) -> Result<(), RepoError> {
    let uploader = Uploader::new(repo, progress);
    let failed = AtomicBool::new(false);
    let first_error = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..connections.max(1) {
            let packs = packs.clone();
            let (uploader, failed, first_error) = (&uploader, &failed, &first_error);
            s.spawn(move || {
                for pack in packs {
                    if failed.load(Ordering::Relaxed) {
                        return;
                    }
                    if let Err(e) = uploader.upload(pack) {
                        failed.store(true, Ordering::Relaxed);
                        lock(first_error).get_or_insert(e);
                        return;
                    }
                }
            });
        }
        drop(packs);
    });
    match first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => {
            // Index what did get stored, so the next backup reuses it; the failure that
            // stopped us is the error to report, whatever this attempt meets.
            let _ = uploader.flush();
            Err(e)
        }
        None => uploader.flush(),
    }
}
