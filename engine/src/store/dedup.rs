//! Dedup step of the write path: which blobs still need storing. A blob in the repository's
//! index, or claimed by another thread of this run, is not stored again.

use std::collections::HashSet;
use std::sync::Mutex;

use cairn_repo_format::index::Index;
use cairn_repo_format::{BlobType, Id};

/// The set of blobs stored before this run (the index) or during it.
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
