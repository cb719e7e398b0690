//! Sweep step of prune: deletes condemned packs once no backup that might have deduplicated
//! against them is still running. For each condemned list, the backup locks are read first
//! and then the snapshots written since the mark step, so a backup that finished meanwhile is
//! seen: the packs its snapshot needs are rescued (indexed again) and the rest deleted, then
//! the list. A list that a running backup may depend on waits for a later prune.

use std::collections::{HashMap, HashSet};

use cairn_repo_format::lock::LockKind;
use cairn_repo_format::pack::PackEntry;
use cairn_repo_format::{FileKind, Id, Indexed, ListedLock, RepoError, Repository};
use chrono::{DateTime, Utc};

use super::{CLOCK_SKEW, Checkpoint, PruneError, PruneStats, Stops, commit, mark, step};
use crate::Context;
use crate::events::Event;
use crate::inventory::{self, CondemnedList};
use crate::reach::Reach;

/// A temporary file this much older than the oldest running backup belongs to no writer:
/// each writer takes its lock before it makes temporary files, and the margin covers clocks
/// that differ (lock times are the writers', file times the file system's) and the short
/// puts of commands that take no lock.
const TEMPORARY_MARGIN: chrono::Duration = chrono::Duration::hours(1);

/// Whether `l` may be a running backup's lock, so that the condemned lists that backup could
/// depend on wait: a live lock of kind `backup`, or any live lock in `locks/` (where append
/// clients of a repository server write, whatever kind it claims).
fn holds_back(l: &ListedLock, now: DateTime<Utc>) -> bool {
    !l.is_stale(now)
        && l.lock
            .as_ref()
            .is_ok_and(|lock| lock.kind == LockKind::Backup || l.place == FileKind::Lock)
}

/// Removes the temporary files killed writers left (see [`TEMPORARY_MARGIN`]).
pub fn remove_stale_temporaries(
    repo: &Repository<Indexed>,
    cx: &Context,
) -> Result<u64, PruneError> {
    let now = Utc::now();
    let oldest = repo
        .locks()?
        .into_iter()
        .filter(|l| holds_back(l, now))
        .filter_map(|l| l.lock.ok())
        .map(|l| l.started)
        .min()
        .unwrap_or(now)
        .min(now);
    let before = std::time::SystemTime::from(oldest - TEMPORARY_MARGIN);
    let removed = repo
        .backend()
        .remove_stale_temporaries(before)
        .map_err(RepoError::from)?;
    for name in &removed {
        cx.emit(Event::TemporaryRemoved { name: name.clone() });
    }
    Ok(removed.len() as u64)
}

/// Deletes the packs of every condemned list that no running backup can depend on, after
/// rescuing those that snapshots written meanwhile need.
#[allow(clippy::too_many_arguments)]
pub fn run(
    repo: Repository<Indexed>,
    lists: &[CondemnedList],
    started: DateTime<Utc>,
    walked: &HashSet<Id>,
    needed_pending: &HashSet<Id>,
    listed: &HashMap<Id, u64>,
    known_unreadable: &HashSet<String>,
    stats: &mut PruneStats,
    stops: &Stops<'_>,
) -> Result<(), PruneError> {
    let cx = stops.cx;
    if lists.is_empty() {
        return Ok(());
    }
    // 1. Which lists a running backup may depend on. Locks are listed before snapshots: a
    //    backup writes its snapshot before it removes its lock, so one that finished is seen.
    let now = Utc::now();
    let mut running = Vec::new();
    for listed in repo.locks()? {
        let (held, listed_stale) = (holds_back(&listed, now), listed.is_stale(now));
        let (id, path) = (listed.id, listed.path());
        if let (Ok(l), Some(stored)) = (&listed.lock, listed.stored)
            && l.claims_future(now)
        {
            cx.emit(Event::TimeDisputed {
                object: path.clone(),
                claimed: l.time.to_rfc3339(),
                stored: stored.to_rfc3339(),
            });
        }
        match listed.lock {
            Ok(l) if held => running.push((id, l)),
            Ok(_) => {}
            // One that cannot be read and is older than any live holder's lock object is
            // reported and passed over.
            Err(e) if listed_stale => {
                cx.emit(Event::from_repo_error(&e));
                stats.unreadable += 1;
            }
            // A recent lock that cannot be read may be a running backup's: it holds back every
            // list until it ages or `cairn unlock` removes it.
            Err(e) => {
                cx.emit(Event::from_repo_error(&e));
                stats.unreadable += 1;
                stats.deferred.push(format!(
                    "{path}: cannot be read, so the packs of every condemned list wait (`cairn unlock` removes it if no backup is running)"
                ));
                return Ok(());
            }
        }
    }
    let mut eligible = Vec::new();
    for list in lists {
        let since = if list.stamp.committed {
            list.stamp.time
        } else {
            started
        };
        match running.iter().find(|(_, l)| l.started < since + CLOCK_SKEW) {
            Some((id, l)) => {
                cx.emit(Event::LockWaited {
                    lock: *id,
                    holder: format!("{} pid {}", l.hostname, l.pid),
                    since: l.started.to_rfc3339(),
                    waiting: format!(
                        "deleting the {} packs of {}",
                        list.packs.len(),
                        FileKind::Condemned.path(&list.id)
                    ),
                });
                stats.deferred.push(format!(
                "{}: {} packs wait for the backup holding lock {} ({} pid {}, started {}); a later prune deletes them (`cairn unlock` if that backup is gone)",
                FileKind::Condemned.path(&list.id),
                list.packs.len(),
                id.short(),
                l.hostname,
                l.pid,
                l.started.to_rfc3339()
            ))
            }
            None => eligible.push(list),
        }
    }
    if eligible.is_empty() {
        return Ok(());
    }
    // 2. Snapshots written since the mark phase, against the index as it is now.
    let opened = repo.into_opened();
    let mut unreadable = Vec::new();
    // An index file or condemned list that could not be read at the start was accounted
    // for then (nothing it may refer to was condemned); only one that appeared since, or
    // stopped opening since, may hide what a new snapshot needs.
    let (repo, _) = inventory::load(opened, &mut |e| match &e {
        RepoError::Corrupt { object, .. } if known_unreadable.contains(object) => {}
        _ => unreadable.push(e),
    })?;
    let mut reach = Reach::new(&repo);
    let mut walked = walked.clone();
    let mut found = mark::Findings::default();
    mark::walk_new(&repo, &mut reach, &mut walked, &mut found, &mut 0)?;
    for m in &found.missing {
        cx.emit(Event::ObjectDamaged {
            object: String::new(),
            problem: format!("{m}; set aside"),
        });
    }
    unreadable.extend(found.unreadable);
    if !unreadable.is_empty() {
        // What the new snapshots or index files need is not fully known: nothing is deleted
        // now; the next prune, once they are readable or forgotten, finishes the job.
        for e in &unreadable {
            cx.emit(Event::from_repo_error(e));
        }
        stats.unreadable += unreadable.len() as u64;
        stats.deferred.push(format!(
            "the packs of {} condemned lists wait: {} objects written during this prune cannot be read",
            eligible.len(),
            unreadable.len()
        ));
        return Ok(());
    }
    let mut needed = mark::pending_packs(&repo, &reach.pending);
    needed.extend(needed_pending.iter().copied());
    // A condemned pack that some index file names again is simply kept.
    let reindexed: HashSet<&Id> = repo.index().packs().iter().collect();
    // 3. Rescue, delete, then drop the list.
    let mut rescue: Vec<(Id, Vec<PackEntry>)> = Vec::new();
    let mut delete_packs = Vec::new();
    for list in &eligible {
        for pack in &list.packs {
            if reindexed.contains(pack) {
                continue;
            }
            if needed.contains(pack) {
                if !rescue.iter().any(|(p, _)| p == pack) {
                    rescue.push((*pack, pending_entries(&repo, pack)));
                }
            } else {
                delete_packs.push(*pack);
            }
        }
    }
    if !rescue.is_empty() {
        repo.save_index(rescue.iter().map(|(p, e)| (p, e.as_slice())))?;
        stops.reached(Checkpoint::Rescued)?;
        stats.packs_rescued += rescue.len() as u64;
        step(
            cx,
            format!(
                "{} condemned packs are needed by snapshots written meanwhile; re-indexed",
                rescue.len()
            ),
        );
    }
    delete_packs.sort();
    delete_packs.dedup();
    for pack in &delete_packs {
        commit::delete(&repo, &FileKind::Pack.path(pack))?;
        stats.packs_deleted += 1;
        stats.bytes_freed += listed.get(pack).copied().unwrap_or(0);
    }
    stops.reached(Checkpoint::PacksDeleted)?;
    for list in eligible {
        commit::delete(&repo, &FileKind::Condemned.path(&list.id))?;
    }
    Ok(())
}

/// A condemned pack's entries, from the pending index.
fn pending_entries(repo: &Repository<Indexed>, pack: &Id) -> Vec<PackEntry> {
    let p = repo.pending();
    let mut out: Vec<PackEntry> = (0..p.len())
        .map(|pos| p.entry_at(pos))
        .filter(|(n, _)| p.packs()[*n as usize] == *pack)
        .map(|(_, e)| e)
        .collect();
    out.sort_by_key(|e| e.offset);
    out
}
