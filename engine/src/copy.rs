//! `copy`: copies snapshots from one repository into another, storing only the blobs the
//! destination lacks. The repositories have different keys, so blob ids differ: every blob is
//! decrypted from the source, re-identified with the destination's id key, deduplicated
//! against the destination's index, and sealed with its key; trees are rewritten with the new
//! ids, bottom-up. The blobs go through the backup's own pack and upload stages, and each
//! snapshot is stored after its index files, as a backup's is.

use std::collections::{HashMap, HashSet};

use cairn_repo_format::blob::seal_blob;
use cairn_repo_format::snapshot::Snapshot;
use cairn_repo_format::tree::Tree;
use cairn_repo_format::{BlobType, Id, Indexed, Opened, RepoError, Repository};
use crossbeam_channel::{Sender, bounded};

use crate::backup::Progress;
use crate::lock::LockError;
use crate::store::{self, Dedup};

/// Why a copy stopped.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The destination's lock could not be taken.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// Reading the source or writing the destination failed.
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// The destination stopped accepting blobs.
    #[error("the destination's pack stage stopped")]
    Stopped,
}

/// What was copied.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CopyStats {
    /// Snapshots copied: (source id, destination id).
    pub copied: Vec<(Id, Id)>,
    /// Snapshots the destination already had a copy of.
    pub skipped: Vec<Id>,
    /// Blobs stored in the destination.
    pub blobs_added: u64,
    /// Plaintext bytes of those blobs.
    pub bytes_added: u64,
}

struct Copier<'a> {
    src: &'a Repository<Indexed>,
    dst: &'a Repository<Indexed>,
    dedup: Dedup<'a>,
    tx: Sender<Vec<cairn_repo_format::blob::SealedBlob>>,
    trees: HashMap<Id, Id>,
    data: HashMap<Id, Id>,
    stats: CopyStats,
}

impl Copier<'_> {
    fn store(&mut self, ty: BlobType, plain: &[u8]) -> Result<Id, CopyError> {
        let id = self.dst.key().blob_id(plain);
        if self.dedup.claim(ty, &id) {
            self.stats.blobs_added += 1;
            self.stats.bytes_added += plain.len() as u64;
            let level = self.dst.config().compression;
            self.tx
                .send(vec![seal_blob(self.dst.key(), ty, id, plain, level)])
                .map_err(|_| CopyError::Stopped)?;
        }
        Ok(id)
    }

    /// The destination id of a data blob, storing it the first time.
    fn data_blob(&mut self, id: &Id) -> Result<Id, CopyError> {
        if let Some(new) = self.data.get(id) {
            return Ok(*new);
        }
        let plain = self.src.load_blob(BlobType::Data, id)?;
        let new = self.store(BlobType::Data, &plain)?;
        self.data.insert(*id, new);
        Ok(new)
    }

    /// Rewrites the tree `src_id` and everything below it with destination ids, bottom-up
    /// (a tree is stored after its subtrees), each tree once. Post-order over an explicit
    /// stack: no depth overflows it.
    fn tree(&mut self, src_id: &Id) -> Result<Id, CopyError> {
        if let Some(id) = self.trees.get(src_id) {
            return Ok(*id);
        }
        /// A tree being rewritten: its nodes before `next` are done.
        struct Frame {
            src: Id,
            tree: Tree,
            next: usize,
        }
        let mut cur = Frame {
            src: *src_id,
            tree: self.src.load_tree(src_id)?,
            next: 0,
        };
        // The trees above `cur`, each waiting at the node whose subtree `cur` is.
        let mut above: Vec<Frame> = Vec::new();
        loop {
            let Some(node) = cur.tree.nodes.get_mut(cur.next) else {
                let new = self.store(BlobType::Tree, &Tree::to_bytes(&cur.tree))?;
                self.trees.insert(cur.src, new);
                let Some(parent) = above.pop() else {
                    return Ok(new);
                };
                cur = parent;
                if let Some(node) = cur.tree.nodes.get_mut(cur.next) {
                    node.subtree = Some(new);
                }
                cur.next += 1;
                continue;
            };
            if let Some(content) = &mut node.content {
                for id in content.iter_mut() {
                    *id = self.data_blob(id)?;
                }
            }
            match node.subtree {
                None => cur.next += 1,
                Some(sub) => match self.trees.get(&sub) {
                    Some(new) => {
                        node.subtree = Some(*new);
                        cur.next += 1;
                    }
                    None => {
                        let child = Frame {
                            src: sub,
                            tree: self.src.load_tree(&sub)?,
                            next: 0,
                        };
                        above.push(std::mem::replace(&mut cur, child));
                    }
                },
            }
        }
    }
}

/// Copies `snapshots` (id and snapshot, from `src`) into `dst`. A snapshot whose copy is
/// already in `dst` (recorded as its `original`) is skipped.
pub fn run(
    src: &Repository<Indexed>,
    dst: Repository<Opened>,
    snapshots: &[(Id, Snapshot)],
) -> Result<CopyStats, CopyError> {
    let dst = crate::lock::index_for_backup(dst)?;
    let mut present: HashSet<Id> = HashSet::new();
    for (_, s) in crate::select::list(&dst, &Default::default())? {
        if let Some(o) = s.original {
            present.insert(o);
        }
    }
    let progress = Progress::default();
    let (tx, rx) = bounded(16);
    let (copier_result, packed) = std::thread::scope(|s| {
        let dst_ref = &dst;
        let progress = &progress;
        let packer = s.spawn(move || store::run(dst_ref, rx, 2, progress, &crate::Cancel::new()));
        let mut copier = Copier {
            src,
            dst: &dst,
            dedup: Dedup::new(dst.index()),
            tx,
            trees: HashMap::new(),
            data: HashMap::new(),
            stats: CopyStats::default(),
        };
        let mut pending = Vec::new();
        let result = (|| {
            for (id, snap) in snapshots {
                let origin = snap.original.unwrap_or(*id);
                if present.contains(&origin) {
                    copier.stats.skipped.push(*id);
                    continue;
                }
                let mut copy = snap.clone();
                copy.tree = copier.tree(&snap.tree)?;
                copy.original = Some(origin);
                copy.parent = None;
                pending.push((*id, copy));
            }
            Ok::<_, CopyError>(())
        })();
        let Copier { stats, tx, .. } = copier;
        drop(tx);
        let packed = packer.join().unwrap_or_else(|_| {
            Err(RepoError::Corrupt {
                object: "pack stage".into(),
                reason: "panicked".into(),
            })
        });
        (result.map(|()| (stats, pending)), packed)
    });
    packed?;
    let (mut stats, pending) = copier_result?;
    for (src_id, snap) in pending {
        let id = dst.save_snapshot(&snap)?;
        stats.copied.push((src_id, id));
    }
    Ok(stats)
}
