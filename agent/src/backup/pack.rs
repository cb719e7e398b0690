//! Pack stage: one thread collects sealed blobs into packs (data and tree blobs in separate
//! packs) and hands each pack to the upload stage once it reaches the target size. Packing
//! itself is I/O-free ([`cairn_repo_format::pack::PackBuilder`]).

use cairn_repo_format::blob::SealedBlob;
use cairn_repo_format::pack::{FinishedPack, PackBuilder};
use cairn_repo_format::{BlobType, Indexed, RepoError, Repository};
use crossbeam_channel::{Receiver, Sender, bounded};

use super::{Progress, upload};

/// Packs everything received until every sender is gone and hands each full pack to the
/// upload stage's `connections` threads, then lets it write the last index file. On an upload
/// error it returns at once, which closes the channel and stops the producers.
pub fn run(
    repo: &Repository<Indexed>,
    blobs: Receiver<Vec<SealedBlob>>,
    connections: usize,
    progress: &Progress,
) -> Result<(), RepoError> {
    let (pack_tx, pack_rx) = bounded::<FinishedPack>(0);
    std::thread::scope(|s| {
        let uploads = s.spawn(move || upload::run(repo, pack_rx, connections, progress));
        fill(repo, blobs, &pack_tx);
        drop(pack_tx);
        uploads.join().unwrap_or_else(|_| {
            Err(RepoError::Corrupt {
                object: "upload stage".into(),
                reason: "panicked".into(),
            })
        })
    })
}

/// Fills packs from `blobs`; stops early when the upload stage has gone (after an error).
fn fill(
    repo: &Repository<Indexed>,
    blobs: Receiver<Vec<SealedBlob>>,
    packs: &Sender<FinishedPack>,
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
            if packs.send(full.finish(repo.key())).is_err() {
                return;
            }
        }
    }
    for pack in [data, tree] {
        if !pack.is_empty() && packs.send(pack.finish(repo.key())).is_err() {
            return;
        }
    }
}
