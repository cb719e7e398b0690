//! Seal stage: deduplication and sealing. [`Dedup::claim`] decides, across all threads, which
//! caller stores a blob that is neither in the index nor already on its way; the winner
//! compresses and encrypts it ([`cairn_repo_format::blob::seal_blob`]) and sends it to the pack
//! stage.

use std::collections::HashSet;
use std::sync::Mutex;

use cairn_repo_format::blob::{SealedBlob, seal_blob};
use cairn_repo_format::crypto::MasterKey;
use cairn_repo_format::index::Index;
use cairn_repo_format::{BlobType, Id};

/// The set of blobs stored before this backup (the index) or during it.
pub struct Dedup<'a> {
    index: &'a Index,
    new: Mutex<HashSet<(BlobType, Id)>>,
}

impl<'a> Dedup<'a> {
    /// Deduplicates against `index`.
    pub fn new(index: &'a Index) -> Self {
        Dedup {
            index,
            new: Mutex::new(HashSet::new()),
        }
    }

    /// True exactly once per blob not yet stored: the caller must then store it.
    pub fn claim(&self, ty: BlobType, id: &Id) -> bool {
        if self.index.contains(ty, id) {
            return false;
        }
        self.new
            .lock()
            .expect("dedup set poisoned")
            .insert((ty, *id))
    }
}

/// The seal stage for one chunk: counts it, and when this caller wins the dedup claim,
/// compresses, encrypts and sends it to the pack stage. A closed channel (the pipeline
/// stopped) is a `BrokenPipe` error.
#[allow(clippy::too_many_arguments)]
pub fn store_chunk(
    key: &MasterKey,
    level: i32,
    dedup: &Dedup<'_>,
    blobs: &crossbeam_channel::Sender<SealedBlob>,
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
        blobs
            .send(seal(key, BlobType::Data, id, data, level))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "pipeline stopped"))?;
    }
    Ok(())
}

/// Seals a claimed blob for the pack stage.
pub fn seal(key: &MasterKey, ty: BlobType, id: Id, plaintext: &[u8], level: i32) -> SealedBlob {
    seal_blob(key, ty, id, plaintext, level)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_one_claim_wins_across_threads() {
        let index = Index::default();
        let dedup = Dedup::new(&index);
        let id = Id([7; 32]);
        let wins: usize = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        (0..100)
                            .filter(|_| dedup.claim(BlobType::Data, &id))
                            .count()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(wins, 1);
        assert!(dedup.claim(BlobType::Tree, &id), "types are separate");
    }
}
