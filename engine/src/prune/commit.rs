//! Commit step of prune: moves the leaving packs from the index to condemned lists, in the
//! order that keeps every blob findable at every moment (invariant I4 in `docs/design.md`):
//!
//! ```text
//!  uncommitted condemned lists (leaving and unindexed packs, with their entries)
//!  → new index files (the packs that stay)
//!  → the old index files deleted
//!  → committed condemned lists (their time starts the wait for running backups)
//!  → the uncommitted lists deleted
//! ```
//!
//! A prune killed between two of these leaves each leaving pack named by an index file, a
//! condemned list, or both; readers take the union.

use std::collections::{BTreeMap, HashMap};

use cairn_repo_format::condemned::Stamp;
use cairn_repo_format::index::Index;
use cairn_repo_format::pack::PackEntry;
use cairn_repo_format::{BackendError, FileKind, Id, Indexed, RepoError, Repository};
use chrono::Utc;

use super::plan::{Plan, grouped};
use super::{Checkpoint, PruneError, Stops, step};
use crate::inventory::{CondemnedList, Inventory};

/// Entries per index file or condemned list written by prune.
const INDEX_FILE_BLOBS: usize = 50_000;

/// Commits `plan` to `repo`, whose index files at the start were `inv`'s. Returns every
/// condemned list now in the repository: the old ones and the one just committed.
pub fn run(
    repo: &Repository<Indexed>,
    inv: &Inventory,
    plan: &Plan,
    stops: &Stops<'_>,
) -> Result<Vec<CondemnedList>, PruneError> {
    let index = repo.index();
    // Unindexed packs are condemned with the entries of their headers (one that cannot be
    // read has nothing to rescue).
    let mut unindexed = Vec::new();
    for pack in &plan.unindexed {
        let entries = repo.read_pack_header(pack).unwrap_or_else(|e| {
            step(stops.cx, format!("{e} (condemned without entries)"));
            Vec::new()
        });
        unindexed.push((*pack, entries));
    }
    let condemned = || groups(index, &plan.leaving_positions).chain(unindexed.iter().cloned());

    let pre = write_condemned(repo, condemned(), false)?;
    stops.reached(Checkpoint::CondemnedUncommitted)?;
    let keep_positions = grouped(index, |pack| !plan.leaving.contains(&pack));
    write_chunked(groups(index, &keep_positions), |file| {
        repo.save_index(file.iter().map(|(p, e)| (p, e.as_slice())))
    })?;
    drop(keep_positions);
    // Second locations in packs that stay are written again too: dropping them would leave
    // a blob findable only where the index's first location says, which may be forged.
    let number: HashMap<&Id, u32> = index
        .packs()
        .iter()
        .enumerate()
        .map(|(n, p)| (p, n as u32))
        .collect();
    let mut seconds: BTreeMap<Id, Vec<PackEntry>> = BTreeMap::new();
    for (pack, e) in &inv.duplicates {
        if number.get(pack).is_some_and(|n| !plan.leaving.contains(n)) {
            seconds.entry(*pack).or_default().push(*e);
        }
    }
    write_chunked(seconds.into_iter(), |file| {
        repo.save_index(file.iter().map(|(p, e)| (p, e.as_slice())))
    })?;
    stops.reached(Checkpoint::IndexWritten)?;
    for id in &inv.index_files {
        delete(repo, &FileKind::Index.path(id))?;
    }
    stops.reached(Checkpoint::OldIndexDeleted)?;
    let mut lists = inv.condemned.clone();
    if !pre.is_empty() {
        lists.extend(write_condemned(repo, condemned(), true)?);
        stops.reached(Checkpoint::CondemnedCommitted)?;
        for old in &pre {
            delete(repo, &FileKind::Condemned.path(&old.id))?;
        }
    }
    stops.reached(Checkpoint::Committed)?;
    Ok(lists)
}

/// The packs of grouped `positions` with their entries, one pack materialised at a time.
fn groups<'a>(
    index: &'a Index,
    positions: &'a [u32],
) -> impl Iterator<Item = (Id, Vec<PackEntry>)> + 'a {
    positions
        .chunk_by(move |a, b| index.entry_at(*a as usize).0 == index.entry_at(*b as usize).0)
        .map(move |run| {
            let pack = index.entry_at(run[0] as usize).0;
            let entries = run.iter().map(|&p| index.entry_at(p as usize).1).collect();
            (index.packs()[pack as usize], entries)
        })
}

/// Hands `packs` to `save` in files of about [`INDEX_FILE_BLOBS`] entries.
fn write_chunked(
    packs: impl Iterator<Item = (Id, Vec<PackEntry>)>,
    mut save: impl FnMut(&[(Id, Vec<PackEntry>)]) -> Result<Id, RepoError>,
) -> Result<Vec<(Id, Vec<Id>)>, RepoError> {
    let mut written = Vec::new();
    let mut file: Vec<(Id, Vec<PackEntry>)> = Vec::new();
    let mut in_file = 0;
    let mut flush = |file: &mut Vec<(Id, Vec<PackEntry>)>| -> Result<(), RepoError> {
        if !file.is_empty() {
            let id = save(file)?;
            written.push((id, file.iter().map(|(p, _)| *p).collect()));
            file.clear();
        }
        Ok(())
    };
    for (pack, entries) in packs {
        in_file += entries.len();
        file.push((pack, entries));
        if in_file >= INDEX_FILE_BLOBS {
            flush(&mut file)?;
            in_file = 0;
        }
    }
    flush(&mut file)?;
    Ok(written)
}

/// Stores condemned lists for `packs`, [`INDEX_FILE_BLOBS`] entries at most each.
fn write_condemned(
    repo: &Repository<Indexed>,
    packs: impl Iterator<Item = (Id, Vec<PackEntry>)>,
    committed: bool,
) -> Result<Vec<CondemnedList>, RepoError> {
    let stamp = Stamp {
        time: Utc::now(),
        committed,
    };
    Ok(write_chunked(packs, |file| {
        repo.save_condemned(stamp, file.iter().map(|(p, e)| (p, e.as_slice())))
    })?
    .into_iter()
    .map(|(id, packs)| CondemnedList { id, stamp, packs })
    .collect())
}

/// Deletes one object; one already gone is fine (a prune finishing another's work).
pub fn delete(repo: &Repository<Indexed>, path: &str) -> Result<(), RepoError> {
    match repo.backend().delete(path) {
        Ok(()) | Err(BackendError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
