//! Pack stage: one thread collects sealed blobs into packs (data and tree blobs in separate
//! packs) and hands each pack to the upload stage once it reaches the target size. Packing
//! itself is I/O-free ([`cairn_repo_format::pack::PackBuilder`]).

use cairn_repo_format::blob::SealedBlob;
use cairn_repo_format::pack::{FinishedPack, PackBuilder};
use cairn_repo_format::{BlobType, Indexed, RepoError, Repository};
use crossbeam_channel::{Receiver, bounded};

use super::{Progress, upload};

/// Packs everything received until every sender is gone and hands each full pack to the
/// upload stage's `connections` threads (or, with one connection, stores it itself), then
/// writes the last index file. On an upload
/// error it returns at once, which closes the channel and stops the producers.
pub fn run(
    repo: &Repository<Indexed>,
    blobs: Receiver<Vec<SealedBlob>>,
    connections: usize,
    progress: &Progress,
) -> Result<(), RepoError> {
    if connections <= 1 {
        // One connection: store each pack from this thread before filling the next, so only
        // one pack is ever in memory. (A local directory stores a pack in milliseconds.)
        let uploader = upload::Uploader::new(repo, progress);
        let mut failed = None;
        fill(repo, blobs, |pack| match uploader.upload(pack) {
            Ok(()) => true,
            Err(e) => {
                failed = Some(e);
                false
            }
        });
        // Index what was stored, even after a failure, so the next backup reuses it.
        let flushed = uploader.flush();
        return match failed {
            Some(e) => Err(e),
            None => flushed,
        };
    }
    let (pack_tx, pack_rx) = bounded::<FinishedPack>(0);
    std::thread::scope(|s| {
        let uploads = s.spawn(move || upload::run(repo, pack_rx, connections, progress));
        fill(repo, blobs, |pack| pack_tx.send(pack).is_ok());
        drop(pack_tx);
        uploads.join().unwrap_or_else(|_| {
            Err(RepoError::Corrupt {
                object: "upload stage".into(),
                reason: "panicked".into(),
            })
        })
    })
}

/// Fills packs from `blobs` and hands each full one to `store`; stops early when `store`
/// says the upload stage has gone (after an error).
fn fill(
    repo: &Repository<Indexed>,
    blobs: Receiver<Vec<SealedBlob>>,
    mut store: impl FnMut(FinishedPack) -> bool,
) {
    let target = repo.config().pack_size as usize;
    let capacity = target + repo.config().chunker.max as usize;
    let mut data = PackBuilder::with_capacity(capacity);
    let mut tree = PackBuilder::default();
    for blob in blobs.into_iter().flatten() {
        let pack = match blob.ty {
            BlobType::Data => &mut data,
            BlobType::Tree => &mut tree,
        };
        pack.add(&blob);
        if pack.len() >= target {
            let next = PackBuilder::with_capacity(if blob.ty == BlobType::Data {
                capacity
            } else {
                0
            });
            let full = std::mem::replace(pack, next);
            if !store(full.finish(repo.key())) {
                return;
            }
        }
    }
    for pack in [data, tree] {
        if !pack.is_empty() && !store(pack.finish(repo.key())) {
            return;
        }
    }
}
