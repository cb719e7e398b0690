//! Pack step of the write path: one thread collects sealed blobs into packs (data and tree
//! blobs in separate packs, [`Packer`]) and hands each pack to the upload step once it reaches
//! the target size. Each pack
//! is written as it fills into a spool the backend provides (a temporary file beside a local
//! repository's objects, memory for an object store), named on the way
//! ([`cairn_repo_format::pack::PackWriter`]).

use cairn_repo_format::backend::Spool;
use cairn_repo_format::blob::SealedBlob;
use cairn_repo_format::compress::Compression;
use cairn_repo_format::pack::PackWriter;
use cairn_repo_format::{BackendError, BlobType, Id, Indexed, RepoError, Repository};
use crossbeam_channel::{Receiver, bounded};

use super::upload::{self, SpooledPack};
use crate::Cancel;
use crate::backup::Progress;

/// Packs everything received until every sender is gone and hands each full pack to the
/// upload stage's `connections` threads (or, with one connection, stores it itself), then
/// writes the last index file. On an error it returns at once, which closes the channel and
/// stops the producers. Once `cancel` is set it takes no more blobs and drops the packs it is
/// filling; the packs already handed to the upload stage are stored and indexed.
pub fn run(
    repo: &Repository<Indexed>,
    blobs: Receiver<Vec<SealedBlob>>,
    connections: usize,
    progress: &Progress,
    cancel: &Cancel,
) -> Result<(), RepoError> {
    if connections <= 1 {
        // One connection: store each pack from this thread before filling the next, so only
        // one pack is ever being built or stored.
        let uploader = upload::Uploader::new(repo, progress);
        let filled = fill(repo, blobs, cancel, |pack| uploader.upload(pack));
        // Index what was stored, even after a failure, so the next backup reuses it.
        let flushed = uploader.flush();
        return filled.and(flushed);
    }
    let (pack_tx, pack_rx) = bounded::<SpooledPack>(0);
    std::thread::scope(|s| {
        let uploads = s.spawn(move || upload::run(repo, pack_rx, connections, progress));
        let filled = fill(repo, blobs, cancel, |pack| {
            // Refused only when every upload thread has stopped on an error, which `run`
            // returns.
            pack_tx.send(pack).map_err(|_| stopped())
        });
        drop(pack_tx);
        let uploaded = uploads.join().unwrap_or_else(|_| {
            Err(RepoError::Corrupt {
                object: "upload stage".into(),
                reason: "panicked".into(),
            })
        });
        // The upload's own failure explains a refused hand-off; otherwise the packer's.
        uploaded.and(filled)
    })
}

fn stopped() -> RepoError {
    RepoError::Corrupt {
        object: "upload stage".into(),
        reason: "stopped".into(),
    }
}

/// Fills packs from `blobs` and hands each full one to `store`; stops at the first error of
/// its own (a spool that cannot be written) or of `store`.
fn fill(
    repo: &Repository<Indexed>,
    blobs: Receiver<Vec<SealedBlob>>,
    cancel: &Cancel,
    store: impl FnMut(SpooledPack) -> Result<(), RepoError>,
) -> Result<(), RepoError> {
    let mut packer = Packer::new(repo, store);
    for batch in blobs {
        if cancel.is_cancelled() {
            // The half-filled packs' spools go with the packer; the producers see the channel
            // close.
            return Ok(());
        }
        for blob in batch {
            packer.add(&blob)?;
        }
    }
    packer.finish()
}

/// Collects blobs into packs of the repository's pack size, data and tree blobs apart, and
/// hands each full pack to `store`. I/O-free but for the backend's spool: the caller decides
/// whether `store` uploads at once or queues the pack for upload threads.
pub struct Packer<'a, F> {
    repo: &'a Repository<Indexed>,
    target: u64,
    /// Created when their first blob comes, so a run that stores nothing spools nothing.
    slots: [Option<PackWriter<Spool>>; 2],
    store: F,
}

impl<'a, F: FnMut(SpooledPack) -> Result<(), RepoError>> Packer<'a, F> {
    /// A packer for `repo` whose full packs go to `store`.
    pub fn new(repo: &'a Repository<Indexed>, store: F) -> Self {
        Packer {
            repo,
            target: repo.config().pack_size as u64,
            slots: [None, None],
            store,
        }
    }

    /// Adds a freshly sealed blob.
    pub fn add(&mut self, blob: &SealedBlob) -> Result<(), RepoError> {
        self.add_stored(
            blob.ty,
            blob.id,
            blob.compression,
            blob.raw_len,
            &blob.bytes,
        )
    }

    /// Adds a blob's sealed bytes as another pack holds them (repacking: no new seal).
    pub fn add_stored(
        &mut self,
        ty: BlobType,
        id: Id,
        compression: Compression,
        raw_length: u32,
        sealed: &[u8],
    ) -> Result<(), RepoError> {
        let slot = &mut self.slots[(ty == BlobType::Tree) as usize];
        let pack = match slot {
            Some(p) => p,
            None => slot.insert(start(self.repo, ty)?),
        };
        pack.add_stored(ty, id, compression, raw_length, sealed)
            .map_err(spool_error)?;
        if pack.len() >= self.target
            && let Some(full) = slot.take()
        {
            (self.store)(finish(self.repo, full)?)?;
        }
        Ok(())
    }

    /// Stores the packs still filling. Dropping a packer instead discards them (their spools
    /// go with them).
    pub fn finish(mut self) -> Result<(), RepoError> {
        for pack in std::mem::take(&mut self.slots).into_iter().flatten() {
            (self.store)(finish(self.repo, pack)?)?;
        }
        Ok(())
    }
}

/// A new pack for blobs of type `ty`, in a spool from the repository's backend.
fn start(repo: &Repository<Indexed>, ty: BlobType) -> Result<PackWriter<Spool>, RepoError> {
    // Room for a full pack and one more largest blob, for a backend that spools in memory.
    let capacity = match ty {
        BlobType::Data => repo.config().pack_size as usize + repo.config().chunker.max as usize,
        BlobType::Tree => 0,
    };
    Ok(PackWriter::new(repo.backend().spool(capacity)?))
}

/// Ends a pack: header, name, body ready to store.
fn finish(repo: &Repository<Indexed>, pack: PackWriter<Spool>) -> Result<SpooledPack, RepoError> {
    let (info, spool) = pack.finish(repo.key()).map_err(spool_error)?;
    let body = spool.finish().map_err(spool_error)?;
    Ok(SpooledPack { info, body })
}

/// A spool's write failure (it names its file).
fn spool_error(e: std::io::Error) -> RepoError {
    RepoError::Backend(BackendError::Other {
        path: "temporary pack file".into(),
        message: e.to_string(),
    })
}
