//! Pack stage: one thread collects sealed blobs into packs (data and tree blobs in separate
//! packs) and hands each pack to the upload stage once it reaches the target size. Each pack
//! is written as it fills into a spool the backend provides (a temporary file beside a local
//! repository's objects, memory for an object store), named on the way
//! ([`cairn_repo_format::pack::PackWriter`]).

use cairn_repo_format::backend::Spool;
use cairn_repo_format::blob::SealedBlob;
use cairn_repo_format::pack::PackWriter;
use cairn_repo_format::{BackendError, BlobType, Indexed, RepoError, Repository};
use crossbeam_channel::{Receiver, bounded};

use super::Progress;
use super::upload::{self, SpooledPack};
use crate::Cancel;

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
    mut store: impl FnMut(SpooledPack) -> Result<(), RepoError>,
) -> Result<(), RepoError> {
    let target = repo.config().pack_size as u64;
    // Created when their first blob comes, so a backup that stores nothing spools nothing.
    let mut data: Option<PackWriter<Spool>> = None;
    let mut tree: Option<PackWriter<Spool>> = None;
    for batch in blobs {
        if cancel.is_cancelled() {
            // The half-filled packs' spools go with them; the producers see the channel close.
            return Ok(());
        }
        for blob in batch {
            add(repo, &mut data, &mut tree, &blob, target, &mut store)?;
        }
    }
    for pack in [data, tree].into_iter().flatten() {
        store(finish(repo, pack)?)?;
    }
    Ok(())
}

/// Adds one blob to the pack of its type, storing the pack when it is full.
fn add(
    repo: &Repository<Indexed>,
    data: &mut Option<PackWriter<Spool>>,
    tree: &mut Option<PackWriter<Spool>>,
    blob: &SealedBlob,
    target: u64,
    store: &mut impl FnMut(SpooledPack) -> Result<(), RepoError>,
) -> Result<(), RepoError> {
    {
        let slot = match blob.ty {
            BlobType::Data => data,
            BlobType::Tree => tree,
        };
        let pack = match slot {
            Some(p) => p,
            None => slot.insert(start(repo, blob.ty)?),
        };
        pack.add(blob).map_err(spool_error)?;
        if pack.len() >= target
            && let Some(full) = slot.take()
        {
            store(finish(repo, full)?)?;
        }
    }
    Ok(())
}

/// A new pack for blobs of type `ty`, in a spool from the repository's backend.
pub(crate) fn start(
    repo: &Repository<Indexed>,
    ty: BlobType,
) -> Result<PackWriter<Spool>, RepoError> {
    // Room for a full pack and one more largest blob, for a backend that spools in memory.
    let capacity = match ty {
        BlobType::Data => repo.config().pack_size as usize + repo.config().chunker.max as usize,
        BlobType::Tree => 0,
    };
    Ok(PackWriter::new(repo.backend().spool(capacity)?))
}

/// Ends a pack: header, name, body ready to store.
pub(crate) fn finish(
    repo: &Repository<Indexed>,
    pack: PackWriter<Spool>,
) -> Result<SpooledPack, RepoError> {
    let (info, spool) = pack.finish(repo.key()).map_err(spool_error)?;
    let body = spool.finish().map_err(spool_error)?;
    Ok(SpooledPack { info, body })
}

/// A spool's write failure (it names its file).
pub(crate) fn spool_error(e: std::io::Error) -> RepoError {
    RepoError::Backend(BackendError::Other {
        path: "temporary pack file".into(),
        message: e.to_string(),
    })
}
