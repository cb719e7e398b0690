//! Mark step of prune: walks every snapshot and sets one bit per index entry it reaches, then
//! sums, per pack of the main index, the blobs and bytes that are used. Blobs reached through
//! an old condemned list (the pending index) name packs that a sweep must not delete.

use std::collections::HashSet;

use cairn_repo_format::{Id, Indexed, RepoError, Repository};

use super::PruneStats;
use crate::reach::{BitSet, Reach};

/// Per main-index pack: how much of it snapshots use.
#[derive(Clone, Copy, Default)]
pub struct PackUse {
    /// Blobs some snapshot refers to.
    pub used_blobs: u32,
    /// Their sealed bytes.
    pub used_bytes: u64,
}

/// What the mark step found.
pub struct Marked {
    /// One bit per main-index entry: used by a snapshot.
    pub used: BitSet,
    /// Per pack of the main index, in the index's pack order.
    pub usage: Vec<PackUse>,
    /// Snapshots walked (the sweep walks only those written since).
    pub walked: HashSet<Id>,
    /// Packs of old condemned lists that the snapshots walked need.
    pub needed_pending: HashSet<Id>,
}

/// Walks every snapshot of `repo`. Damaged snapshots or trees are pushed to `damaged`.
pub fn run(
    repo: &Repository<Indexed>,
    damaged: &mut Vec<String>,
    stats: &mut PruneStats,
) -> Result<Marked, RepoError> {
    let mut reach = Reach::new(repo);
    let mut walked = HashSet::new();
    walk_new(repo, &mut reach, &mut walked, damaged, &mut stats.snapshots)?;
    let Reach {
        main: used,
        pending: used_pending,
        ..
    } = reach;
    let index = repo.index();
    let mut usage = vec![PackUse::default(); index.packs().len()];
    for pos in 0..index.len() {
        if used.contains(pos) {
            let (pack, e) = index.entry_at(pos);
            let u = &mut usage[pack as usize];
            u.used_blobs += 1;
            u.used_bytes += e.length as u64;
        }
    }
    let needed_pending = pending_packs(repo, &used_pending);
    Ok(Marked {
        used,
        usage,
        walked,
        needed_pending,
    })
}

/// Walks the snapshots not in `walked` yet, adding them to it.
pub fn walk_new(
    repo: &Repository<Indexed>,
    reach: &mut Reach<'_>,
    walked: &mut HashSet<Id>,
    damaged: &mut Vec<String>,
    snapshots: &mut u64,
) -> Result<(), RepoError> {
    let mut ids = repo.snapshot_ids()?;
    ids.sort();
    *snapshots += reach.walk_snapshots(&ids, walked, &mut |p| damaged.push(p.to_string()));
    Ok(())
}

/// The packs of the pending index (old condemned lists) holding a reached entry.
pub fn pending_packs(repo: &Repository<Indexed>, reached: &BitSet) -> HashSet<Id> {
    let pending = repo.pending();
    (0..pending.len())
        .filter(|&pos| reached.contains(pos))
        .map(|pos| pending.packs()[pending.entry_at(pos).0 as usize])
        .collect()
}
