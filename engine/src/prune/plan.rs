//! Plan step of prune: decides, per pack, what happens to it. A pack no snapshot uses is
//! condemned; the partly used packs that waste the most are repacked until the unused space
//! left is within `--max-unused`; a pack in `data/` that no index names is condemned too (a
//! running backup's pack is rescued by the sweep if a snapshot comes to need it). Writes
//! nothing.

use std::collections::{HashMap, HashSet};

use cairn_repo_format::index::Index;
use cairn_repo_format::{FileKind, Id, Indexed, Repository};

use super::mark::Marked;
use super::{PruneError, PruneOptions, PruneStats};

/// What prune will do to each pack.
pub struct Plan {
    /// Main-index packs no snapshot uses (numbers in the index's pack order).
    pub condemn: Vec<u32>,
    /// Partly used packs whose used blobs move to new packs.
    pub repack: Vec<u32>,
    /// Packs in `data/` that no index file or condemned list names.
    pub unindexed: Vec<Id>,
    /// Main-index packs that leave the index (`condemn` and `repack`).
    pub leaving: HashSet<u32>,
    /// Positions of the entries of the leaving packs, grouped by pack and sorted by offset:
    /// 4 bytes an entry, turned into entries one pack at a time where they are written.
    pub leaving_positions: Vec<u32>,
}

/// Plans the prune of `repo` from what the mark step found. `listed` is every pack in
/// `data/` with its size. An indexed pack missing from `data/` is reported and passed over.
pub fn run(
    repo: &Repository<Indexed>,
    listed: &HashMap<Id, u64>,
    marked: &Marked,
    opts: &PruneOptions,
    stats: &mut PruneStats,
    cx: &crate::Context,
) -> Result<Plan, PruneError> {
    let index = repo.index();
    let mut condemn: Vec<u32> = Vec::new();
    let mut partial: Vec<(u32, u64, u64)> = Vec::new(); // pack number, size, unused bytes
    let mut missing = Vec::new();
    for (n, pack) in index.packs().iter().enumerate() {
        let Some(&size) = listed.get(pack) else {
            missing.push(format!(
                "{}: indexed but missing from the repository",
                FileKind::Pack.path(pack)
            ));
            continue;
        };
        let u = marked.usage[n];
        stats.used_bytes += u.used_bytes;
        if u.pinned {
            continue;
        }
        let unused = size.saturating_sub(u.used_bytes);
        if u.used_blobs == 0 {
            condemn.push(n as u32);
            stats.unused_bytes += size;
        } else if unused > header_size(u.used_blobs) {
            stats.unused_bytes += unused - header_size(u.used_blobs);
            partial.push((n as u32, size, unused - header_size(u.used_blobs)));
        }
    }
    // An index entry whose pack does not exist is lost data or a forgery: nothing to delete
    // there, and its entries stay in the index for `check` to name.
    for m in missing {
        cx.emit(crate::Event::ObjectDamaged {
            object: String::new(),
            problem: m,
        });
    }
    let indexed: HashSet<&Id> = index.packs().iter().chain(repo.pending().packs()).collect();
    let mut unindexed: Vec<Id> = listed
        .keys()
        .filter(|p| !indexed.contains(p))
        .copied()
        .collect();
    unindexed.sort();
    let repack = choose_repack(&mut partial, opts, stats.used_bytes);
    let leaving: HashSet<u32> = condemn.iter().chain(&repack).copied().collect();
    let leaving_positions = grouped(index, |pack| leaving.contains(&pack));
    Ok(Plan {
        condemn,
        repack,
        unindexed,
        leaving,
        leaving_positions,
    })
}

/// Sealed size of a pack header with `n` entries, plus the length trailer.
fn header_size(n: u32) -> u64 {
    1 + n as u64 * cairn_repo_format::pack::ENTRY_LEN as u64
        + cairn_repo_format::crypto::SEAL_OVERHEAD as u64
        + 4
}

/// Picks partly used packs to repack, most wasteful first, until the unused space left is
/// within `max_unused` of the repository or the repack budget is spent.
fn choose_repack(partial: &mut [(u32, u64, u64)], opts: &PruneOptions, used: u64) -> Vec<u32> {
    partial.sort_by(|a, b| {
        let fa = a.2 as f64 / a.1.max(1) as f64;
        let fb = b.2 as f64 / b.1.max(1) as f64;
        fb.total_cmp(&fa).then(a.0.cmp(&b.0))
    });
    let mut unused: u64 = partial.iter().map(|p| p.2).sum();
    let mut budget = opts.max_repack_bytes.unwrap_or(u64::MAX);
    let mut out = Vec::new();
    for &(n, size, waste) in partial.iter() {
        let limit = opts.max_unused * (used + unused) as f64;
        if (unused as f64) <= limit {
            break;
        }
        if size > budget {
            continue;
        }
        budget -= size;
        unused -= waste;
        out.push(n);
    }
    out
}

/// Positions of `index` whose pack passes `keep`, sorted by pack and then offset.
pub fn grouped(index: &Index, keep: impl Fn(u32) -> bool) -> Vec<u32> {
    let mut order: Vec<u32> = (0..index.len() as u32)
        .filter(|&pos| keep(index.entry_at(pos as usize).0))
        .collect();
    order.sort_unstable_by_key(|&pos| {
        let (pack, e) = index.entry_at(pos as usize);
        (pack, e.offset)
    });
    order
}
