//! Pack stage: one thread collects sealed blobs into packs (data and tree blobs in separate
//! packs) and hands each pack to the upload stage once it reaches the target size. Packing
//! itself is I/O-free ([`cairn_repo_format::pack::PackBuilder`]).

use cairn_repo_format::blob::SealedBlob;
use cairn_repo_format::pack::PackBuilder;
use cairn_repo_format::{BlobType, Indexed, RepoError, Repository};
use crossbeam_channel::Receiver;

use super::Progress;
use super::upload::Uploader;

/// Packs and uploads everything received until every sender is gone, then writes the last
/// index file. On an error it returns at once, which closes the channel and stops the
/// producers.
pub fn run(
    repo: &Repository<Indexed>,
    blobs: Receiver<SealedBlob>,
    progress: &Progress,
) -> Result<(), RepoError> {
    let target = repo.config().pack_size as usize;
    let capacity = target + repo.config().chunker.max as usize;
    let mut data = PackBuilder::with_capacity(capacity);
    let mut tree = PackBuilder::default();
    let mut uploader = Uploader::new(repo, progress);
    for blob in blobs {
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
            uploader.upload(full.finish(repo.key()))?;
        }
    }
    for pack in [data, tree] {
        if !pack.is_empty() {
            uploader.upload(pack.finish(repo.key()))?;
        }
    }
    uploader.flush()?;
    Ok(())
}
