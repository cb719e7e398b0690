//! Mark step of prune: walks every snapshot and sets one bit per index entry it reaches, then
//! sums, per pack of the main index, the blobs and bytes that are used. Blobs reached through
//! an old condemned list (the pending index) name packs that a sweep must not delete.

use std::collections::HashSet;

use cairn_repo_format::pack::PackEntry;
use cairn_repo_format::{BackendError, BlobType, Id, Indexed, RepoError, Repository};

use super::PruneStats;
use crate::reach::{BitSet, Problem, Reach};

/// Per main-index pack: how much of it snapshots use.
#[derive(Clone, Copy, Default)]
pub struct PackUse {
    /// Blobs some snapshot refers to.
    pub used_blobs: u32,
    /// Their sealed bytes.
    pub used_bytes: u64,
    /// Holds a second location of a used blob (one the index dropped for a first location
    /// elsewhere): kept exactly as it is, neither condemned nor repacked, since the first
    /// location may be forged or damaged and a repack copies only what the index locates.
    pub pinned: bool,
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

/// What a walk could not use.
#[derive(Default)]
pub struct Findings {
    /// Blobs that snapshots refer to and no index has: lost data, which stops a prune.
    pub missing: Vec<String>,
    /// Snapshots and trees that cannot be read. Prune goes on without deleting what they
    /// might refer to.
    pub unreadable: Vec<RepoError>,
}

/// Walks every snapshot of `repo`. When a snapshot or tree cannot be read, what it refers to
/// is unknown, so every tree in the repository is marked as used, with everything below it:
/// nothing a damaged snapshot may refer to is deleted.
pub fn run(
    repo: &Repository<Indexed>,
    duplicates: &[(Id, PackEntry)],
    found: &mut Findings,
    stats: &mut PruneStats,
) -> Result<Marked, RepoError> {
    let mut reach = Reach::new(repo);
    let mut walked = HashSet::new();
    walk_new(repo, &mut reach, &mut walked, found, &mut stats.snapshots)?;
    if !found.unreadable.is_empty() {
        keep_every_tree(repo, &mut reach, found)?;
    }
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
    pin_second_locations(repo, duplicates, &used, &mut usage);
    let needed_pending = pending_packs(repo, &used_pending);
    Ok(Marked {
        used,
        usage,
        walked,
        needed_pending,
    })
}

/// Pins every pack holding a second location of a used blob (see [`PackUse::pinned`]) unless
/// the first location is confirmed by its own pack's header: a second copy of a blob whose
/// first location is real is redundant (concurrent backups make them), but one whose first
/// location is forged or damaged is the copy readers need.
fn pin_second_locations(
    repo: &Repository<Indexed>,
    duplicates: &[(Id, PackEntry)],
    used: &BitSet,
    usage: &mut [PackUse],
) {
    if duplicates.is_empty() {
        return;
    }
    let index = repo.index();
    let number: std::collections::HashMap<&Id, usize> = index
        .packs()
        .iter()
        .enumerate()
        .map(|(n, p)| (p, n))
        .collect();
    let mut headers: std::collections::HashMap<Id, Option<Vec<PackEntry>>> = Default::default();
    for (pack, e) in duplicates {
        let Some(pos) = index
            .position(e.ty, &e.id)
            .filter(|&pos| used.contains(pos))
        else {
            continue;
        };
        let (first_n, first) = index.entry_at(pos);
        let first_pack = index.packs()[first_n as usize];
        let header = headers
            .entry(first_pack)
            .or_insert_with(|| repo.read_pack_header(&first_pack).ok());
        let confirmed = header.as_ref().is_some_and(|h| h.contains(&first));
        if let (false, Some(&n)) = (confirmed, number.get(pack)) {
            usage[n].pinned = true;
        }
    }
}

/// Walks the snapshots not in `walked` yet, adding them to it. A snapshot removed meanwhile
/// (by a concurrent `forget`) is skipped; storage failures stop the walk, since a prune must
/// not decide anything on a partial view.
pub fn walk_new(
    repo: &Repository<Indexed>,
    reach: &mut Reach<'_>,
    walked: &mut HashSet<Id>,
    found: &mut Findings,
    snapshots: &mut u64,
) -> Result<(), RepoError> {
    let mut ids = repo.snapshot_ids()?;
    ids.sort();
    for id in ids {
        if !walked.insert(id) {
            continue;
        }
        let snap = match repo.load_snapshot(&id) {
            Ok(s) => s,
            Err(RepoError::Backend(BackendError::NotFound { .. })) => continue,
            Err(e @ RepoError::Corrupt { .. }) => {
                found.unreadable.push(e);
                continue;
            }
            Err(e) => return Err(e),
        };
        *snapshots += 1;
        walk_tree(reach, &snap.tree, Some(id), found)?;
    }
    Ok(())
}

/// Walks one tree, sorting what goes wrong into `found`.
fn walk_tree(
    reach: &mut Reach<'_>,
    tree: &Id,
    snapshot: Option<Id>,
    found: &mut Findings,
) -> Result<(), RepoError> {
    let mut failed = None;
    reach.walk(
        tree,
        "/",
        &mut |p| match p {
            Problem::BadTree {
                error: e @ RepoError::Corrupt { .. },
                id,
                path,
            } => found.unreadable.push(RepoError::Corrupt {
                object: match snapshot {
                    Some(s) => format!("tree {id} (snapshot {}, {path})", s.short()),
                    None => format!("tree {id}"),
                },
                reason: match e {
                    RepoError::Corrupt { reason, .. } => reason,
                    e => e.to_string(),
                },
            }),
            Problem::BadTree { error, .. } => {
                failed.get_or_insert(error);
            }
            p @ Problem::Missing { .. } => found.missing.push(p.into_event(snapshot).to_string()),
            // Not looked for: prune does not set `check_trees`.
            Problem::BadNode { .. } => {}
        },
        &mut |_| {},
    );
    failed.map_or(Ok(()), Err)
}

/// Marks every tree of the main and pending index, and what each refers to.
fn keep_every_tree(
    repo: &Repository<Indexed>,
    reach: &mut Reach<'_>,
    found: &mut Findings,
) -> Result<(), RepoError> {
    for index in [repo.index(), repo.pending()] {
        for pos in 0..index.len() {
            let (_, e) = index.entry_at(pos);
            if e.ty == BlobType::Tree {
                walk_tree(reach, &e.id, None, found)?;
            }
        }
    }
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
