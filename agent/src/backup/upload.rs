//! Upload stage: stores finished packs (create-only, named by their hash) and writes index
//! files as packs complete, so that an interrupted backup leaves indexed, reusable packs. The
//! order is the invariant: a pack is stored before any index names it, and every index entry a
//! snapshot needs is stored before the snapshot.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_repo_format::pack::{FinishedPack, PackEntry};
use cairn_repo_format::{BackendError, FileKind, Id, Indexed, RepoError, Repository};

use super::Progress;

/// Write an index file after this many packs…
const FLUSH_PACKS: usize = 8;
/// …or this many blobs…
const FLUSH_BLOBS: usize = 50_000;
/// …or when this long has passed since the last one.
const FLUSH_AFTER: Duration = Duration::from_secs(60);

/// Uploads packs and batches their index entries.
pub struct Uploader<'a> {
    repo: &'a Repository<Indexed>,
    progress: &'a Progress,
    pending: Vec<(Id, Vec<PackEntry>)>,
    pending_blobs: usize,
    last_flush: Instant,
}

impl<'a> Uploader<'a> {
    /// An uploader into `repo`.
    pub fn new(repo: &'a Repository<Indexed>, progress: &'a Progress) -> Self {
        Uploader {
            repo,
            progress,
            pending: Vec::new(),
            pending_blobs: 0,
            last_flush: Instant::now(),
        }
    }

    /// Stores one pack and queues its index entries.
    pub fn upload(&mut self, pack: FinishedPack) -> Result<(), RepoError> {
        let len = pack.bytes.len() as u64;
        match self
            .repo
            .backend()
            .put(&FileKind::Pack.path(&pack.id), Bytes::from(pack.bytes))
        {
            // Same name, same bytes: a pack identical to one already stored.
            Ok(()) | Err(BackendError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        self.progress
            .data_added_packed
            .fetch_add(len, Ordering::Relaxed);
        self.progress.packs_done.fetch_add(1, Ordering::Relaxed);
        self.pending_blobs += pack.entries.len();
        self.pending.push((pack.id, pack.entries));
        if self.pending.len() >= FLUSH_PACKS
            || self.pending_blobs >= FLUSH_BLOBS
            || self.last_flush.elapsed() >= FLUSH_AFTER
        {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes an index file for the packs uploaded since the last one.
    pub fn flush(&mut self) -> Result<(), RepoError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.repo
            .save_index(self.pending.iter().map(|(id, e)| (id, e.as_slice())))?;
        self.pending.clear();
        self.pending_blobs = 0;
        self.last_flush = Instant::now();
        Ok(())
    }
}
