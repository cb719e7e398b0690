//! `prune`: removes data no snapshot needs, while backups go on writing. The loop:
//!
//! ```text
//!  exclusive prune lock (backups never wait for it)
//!  read index files and condemned lists, list packs
//!  mark: walk every snapshot, one bit per index entry
//!  plan: per pack, used / unused bytes
//!        all unused → condemn;  partly used → repack the worst until unused ≤ --max-unused
//!        in data/ but in no index → condemn (a running backup's packs are rescued later)
//!  repack: copy used blobs, still sealed, into new packs; upload them
//!  commit: uncommitted condemned list → new index files → delete the old index files
//!          → committed condemned list (then the uncommitted one goes)
//!  sweep:  for each condemned list no running backup can still depend on, re-read the
//!          snapshots written meanwhile, rescue (re-index) packs they need, delete the rest
//! ```
//!
//! The invariant (see `docs/design.md`, "Garbage collection"): at every moment, every blob a
//! snapshot refers to is in a stored pack named by an index file or a condemned list, and a
//! pack is deleted only when no backup that might have deduplicated against it is still
//! running. Memory: the index (52 bytes per blob) plus one bit per blob and 4 bytes per blob
//! while index files are rewritten; one pack at a time while repacking.

use std::collections::{HashMap, HashSet};

use cairn_repo_format::backend::Spool;
use cairn_repo_format::blob::open_blob;
use cairn_repo_format::condemned::Stamp;
use cairn_repo_format::index::Index;
use cairn_repo_format::lock::LockKind;
use cairn_repo_format::pack::{PackEntry, PackWriter};

use crate::backup::pack;
use cairn_repo_format::{
    BackendError, BlobType, FileKind, Id, Indexed, Opened, RepoError, Repository,
};
use chrono::{DateTime, Utc};

use crate::Context;
use crate::events::Event;
use crate::inventory::{self, CondemnedList};
use crate::lock::{LockError, RepoLock};
use crate::reach::Reach;

/// Entries per index file written by prune.
const INDEX_FILE_BLOBS: usize = 50_000;

/// How far apart the clocks of the machines writing one repository may be. A backup lock
/// that started before a condemned list's time plus this margin blocks the list's sweep.
pub const CLOCK_SKEW: chrono::Duration = chrono::Duration::minutes(5);

/// Settings.
#[derive(Clone, Debug)]
pub struct PruneOptions {
    /// Unused space tolerated in partly used packs, as a fraction of the repository (0.05).
    pub max_unused: f64,
    /// Repack at most this many bytes of packs.
    pub max_repack_bytes: Option<u64>,
    /// Plan only; write and delete nothing.
    pub dry_run: bool,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            max_unused: 0.05,
            max_repack_bytes: None,
            dry_run: false,
        }
    }
}

/// What prune found and did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PruneStats {
    /// Snapshots read.
    pub snapshots: u64,
    /// Packs in `data/` at the start.
    pub packs: u64,
    /// Bytes of blobs snapshots use.
    pub used_bytes: u64,
    /// Bytes in packs that no snapshot uses (before this prune).
    pub unused_bytes: u64,
    /// Packs with no used blob, condemned.
    pub packs_unused: u64,
    /// Packs in no index, condemned.
    pub packs_unindexed: u64,
    /// Partly used packs repacked (and condemned).
    pub packs_repacked: u64,
    /// Bytes of used blobs copied by repacking.
    pub bytes_repacked: u64,
    /// New packs written by repacking.
    pub packs_written: u64,
    /// Packs deleted by the sweep.
    pub packs_deleted: u64,
    /// Bytes freed by the sweep.
    pub bytes_freed: u64,
    /// Condemned packs a snapshot turned out to need, re-indexed.
    pub packs_rescued: u64,
    /// Condemned lists left for a later prune, and why.
    pub deferred: Vec<String>,
    /// Temporary files of killed writers removed (a local repository's unfinished puts and
    /// spooled packs).
    pub temporaries_removed: u64,
}

/// Why prune stopped without changing anything it should not.
#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    /// Another prune is running, or the lock could not be written.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The repository is damaged; pruning it could lose more.
    #[error(
        "the repository is damaged, so nothing was pruned:\n  {}\nrun `cairn check`, then `cairn repair index` or `cairn repair snapshots`",
        .0.join("\n  ")
    )]
    Damaged(Vec<String>),
    /// Storage failed.
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// The host cancelled the prune between two of its steps; the repository is as a prune
    /// killed there leaves it (valid), and the next prune finishes the job.
    #[error("prune cancelled")]
    Cancelled,
}

/// Stops a prune between steps once the host cancelled it.
fn step_check(cx: &Context) -> Result<(), PruneError> {
    cx.cancel.check().map_err(|_| PruneError::Cancelled)
}

/// Reports a step.
fn step(cx: &Context, message: String) {
    cx.emit(Event::Step {
        operation: "prune",
        message,
    });
}

/// Per main-index pack: what the mark phase found.
#[derive(Clone, Copy, Default)]
struct PackUse {
    used_blobs: u32,
    used_bytes: u64,
}

/// Runs a prune, reporting each notable step as an event.
pub fn run(
    repo: Repository<Opened>,
    opts: &PruneOptions,
    cx: &Context,
) -> Result<PruneStats, PruneError> {
    step_check(cx)?;
    let _lock = RepoLock::acquire(&repo, LockKind::Prune)?;
    let started = Utc::now();
    let mut damaged = Vec::new();
    let (repo, inv) = inventory::load(repo, &mut |e| damaged.push(e.to_string()))?;
    if !damaged.is_empty() {
        return Err(PruneError::Damaged(damaged));
    }
    let listed = inventory::list_packs(&repo)?;
    let mut stats = PruneStats {
        packs: listed.len() as u64,
        ..Default::default()
    };
    if !opts.dry_run {
        stats.temporaries_removed = remove_stale_temporaries(&repo, cx)?;
    }
    step_check(cx)?;

    // Mark.
    let mut reach = Reach::new(&repo);
    let mut walked = HashSet::new();
    mark(&repo, &mut reach, &mut walked, &mut damaged, &mut stats)?;
    if !damaged.is_empty() {
        return Err(PruneError::Damaged(damaged));
    }
    let index = repo.index().clone();
    let Reach {
        main: used,
        pending: used_pending,
        ..
    } = reach;
    let mut usage = vec![PackUse::default(); index.packs().len()];
    for pos in 0..index.len() {
        if used.contains(pos) {
            let (pack, e) = index.entry_at(pos);
            let u = &mut usage[pack as usize];
            u.used_blobs += 1;
            u.used_bytes += e.length as u64;
        }
    }
    // Old condemned lists: which of their packs the snapshots read so far need.
    let mut needed_pending: HashSet<Id> = HashSet::new();
    for pos in 0..repo.pending().len() {
        if used_pending.contains(pos) {
            let (pack, _) = repo.pending().entry_at(pos);
            needed_pending.insert(repo.pending().packs()[pack as usize]);
        }
    }

    // Plan.
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
        let u = usage[n];
        stats.used_bytes += u.used_bytes;
        let unused = size.saturating_sub(u.used_bytes);
        if u.used_blobs == 0 {
            condemn.push(n as u32);
            stats.unused_bytes += size;
        } else if unused > header_size(u.used_blobs) {
            stats.unused_bytes += unused - header_size(u.used_blobs);
            partial.push((n as u32, size, unused - header_size(u.used_blobs)));
        }
    }
    if !missing.is_empty() {
        return Err(PruneError::Damaged(missing));
    }
    let indexed: HashSet<&Id> = index.packs().iter().chain(repo.pending().packs()).collect();
    let mut unindexed: Vec<Id> = listed
        .keys()
        .filter(|p| !indexed.contains(p))
        .copied()
        .collect();
    unindexed.sort();
    let repack = choose_repack(&mut partial, opts, stats.used_bytes);
    step(
        cx,
        format!(
            "{} snapshots; {} packs: {} unused, {} to repack, {} in no index; {} used, {} unused",
            stats.snapshots,
            listed.len(),
            condemn.len(),
            repack.len(),
            unindexed.len(),
            crate::human_bytes(stats.used_bytes),
            crate::human_bytes(stats.unused_bytes)
        ),
    );
    if opts.dry_run {
        stats.packs_unused = condemn.len() as u64;
        stats.packs_repacked = repack.len() as u64;
        stats.packs_unindexed = unindexed.len() as u64;
        return Ok(stats);
    }

    // Positions of the entries of every pack leaving the index, grouped by pack: 4 bytes an
    // entry, turned into entries one pack at a time where they are written.
    let leaving: HashSet<u32> = condemn.iter().chain(&repack).copied().collect();
    let leaving_positions = grouped(&index, |pack| leaving.contains(&pack));

    // Repack: new packs are indexed as they are stored, like a backup's.
    step_check(cx)?;
    repack_packs(&repo, &repack, &leaving_positions, &used, &mut stats, cx)?;
    stats.packs_unused = condemn.len() as u64;

    // Unindexed packs are condemned with the entries of their headers (one that cannot be
    // read has nothing to rescue).
    let mut unindexed_entries = Vec::new();
    for pack in &unindexed {
        let entries = repo.read_pack_header(pack).unwrap_or_else(|e| {
            step(cx, format!("{e} (condemned without entries)"));
            Vec::new()
        });
        unindexed_entries.push((*pack, entries));
    }
    stats.packs_unindexed = unindexed.len() as u64;

    // Commit: uncommitted lists, new index, old index gone, committed lists.
    step_check(cx)?;
    let condemned_groups =
        || groups(&index, &leaving_positions).chain(unindexed_entries.iter().cloned());
    let pre = write_condemned(&repo, condemned_groups(), false)?;
    let keep_positions = grouped(&index, |pack| !leaving.contains(&pack));
    write_chunked(groups(&index, &keep_positions), |file| {
        repo.save_index(file.iter().map(|(p, e)| (p, e.as_slice())))
    })?;
    drop(keep_positions);
    for id in &inv.index_files {
        delete(&repo, &FileKind::Index.path(id))?;
    }
    let mut lists = inv.condemned.clone();
    if !pre.is_empty() {
        lists.extend(write_condemned(&repo, condemned_groups(), true)?);
        for old in &pre {
            delete(&repo, &FileKind::Condemned.path(&old.id))?;
        }
    }
    // The sweep loads the index afresh: drop everything sized by the old one first, so that
    // two indexes are never in memory at once.
    drop((index, usage, used, used_pending, leaving_positions));

    // Sweep.
    step_check(cx)?;
    sweep(
        repo,
        &lists,
        started,
        &walked,
        &needed_pending,
        &listed,
        &mut stats,
        cx,
    )?;
    Ok(stats)
}

/// Sealed size of a pack header with `n` entries, plus the length trailer.
fn header_size(n: u32) -> u64 {
    1 + n as u64 * cairn_repo_format::pack::ENTRY_LEN as u64
        + cairn_repo_format::crypto::SEAL_OVERHEAD as u64
        + 4
}

/// Walks every snapshot not walked yet.
fn mark(
    repo: &Repository<Indexed>,
    reach: &mut Reach<'_>,
    walked: &mut HashSet<Id>,
    damaged: &mut Vec<String>,
    stats: &mut PruneStats,
) -> Result<(), RepoError> {
    let mut ids = repo.snapshot_ids()?;
    ids.sort();
    stats.snapshots += reach.walk_snapshots(&ids, walked, &mut |p| damaged.push(p.to_string()));
    Ok(())
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
fn grouped(index: &Index, keep: impl Fn(u32) -> bool) -> Vec<u32> {
    let mut order: Vec<u32> = (0..index.len() as u32)
        .filter(|&pos| keep(index.entry_at(pos as usize).0))
        .collect();
    order.sort_unstable_by_key(|&pos| {
        let (pack, e) = index.entry_at(pos as usize);
        (pack, e.offset)
    });
    order
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

/// Copies the used blobs of `repack` into new packs (verifying each first), stores them and
/// indexes them as they are stored.
fn repack_packs(
    repo: &Repository<Indexed>,
    repack: &[u32],
    leaving_positions: &[u32],
    used: &crate::reach::BitSet,
    stats: &mut PruneStats,
    cx: &Context,
) -> Result<(), PruneError> {
    let target = repo.config().pack_size as u64;
    let progress = crate::backup::Progress::default();
    let uploader = crate::backup::upload::Uploader::new(repo, &progress);
    let mut builders: [Option<PackWriter<Spool>>; 2] = [None, None];
    let index = repo.index();
    let repack: HashSet<u32> = repack.iter().copied().collect();
    for run in leaving_positions
        .chunk_by(|a, b| index.entry_at(*a as usize).0 == index.entry_at(*b as usize).0)
    {
        let n = index.entry_at(run[0] as usize).0;
        if !repack.contains(&n) {
            continue;
        }
        // Stopping here leaves the packs written so far stored and indexed (duplicates of
        // blobs the old packs still hold, which the next prune removes).
        if cx.cancel.is_cancelled() {
            uploader.flush()?;
            return Err(PruneError::Cancelled);
        }
        let pack = index.packs()[n as usize];
        let path = FileKind::Pack.path(&pack);
        let bytes = repo.backend().get(&path, None).map_err(RepoError::from)?;
        let mut bad = Vec::new();
        for &pos in run.iter().filter(|&&p| used.contains(p as usize)) {
            let e = index.entry_at(pos as usize).1;
            let range = e.offset as usize..e.offset as usize + e.length as usize;
            let ok = bytes.get(range.clone()).is_some_and(|sealed| {
                open_blob(repo.key(), e.ty, &e.id, e.compression, e.raw_length, sealed).is_ok()
            });
            if !ok {
                bad.push(format!(
                    "{path}: {} blob {} is damaged; a snapshot needs it",
                    e.ty.name(),
                    e.id
                ));
                continue;
            }
            let slot = &mut builders[(e.ty == BlobType::Tree) as usize];
            let b = match slot {
                Some(b) => b,
                None => slot.insert(pack::start(repo, e.ty)?),
            };
            b.add_stored(e.ty, e.id, e.compression, e.raw_length, &bytes[range])
                .map_err(pack::spool_error)?;
            stats.bytes_repacked += e.length as u64;
            if b.len() >= target
                && let Some(full) = slot.take()
            {
                uploader.upload(pack::finish(repo, full)?)?;
                stats.packs_written += 1;
            }
        }
        if !bad.is_empty() {
            return Err(PruneError::Damaged(bad));
        }
        stats.packs_repacked += 1;
    }
    for b in builders.into_iter().flatten() {
        uploader.upload(pack::finish(repo, b)?)?;
        stats.packs_written += 1;
    }
    uploader.flush()?;
    Ok(())
}

fn delete(repo: &Repository<Indexed>, path: &str) -> Result<(), RepoError> {
    match repo.backend().delete(path) {
        Ok(()) | Err(BackendError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Deletes the packs of every condemned list that no running backup can depend on, after
/// rescuing those that snapshots written meanwhile need.
/// A temporary file this much older than the oldest running backup belongs to no writer:
/// each writer takes its lock before it makes temporary files, and the margin covers clocks
/// that differ (lock times are the writers', file times the file system's) and the short
/// puts of commands that take no lock.
const TEMPORARY_MARGIN: chrono::Duration = chrono::Duration::hours(1);

/// Removes the temporary files killed writers left (see [`TEMPORARY_MARGIN`]).
fn remove_stale_temporaries(repo: &Repository<Indexed>, cx: &Context) -> Result<u64, PruneError> {
    let now = Utc::now();
    let oldest = repo
        .locks()?
        .into_iter()
        .filter_map(|(_, l)| l.ok())
        .filter(|l| l.kind == LockKind::Backup && !l.is_stale(now))
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

#[allow(clippy::too_many_arguments)]
fn sweep(
    repo: Repository<Indexed>,
    lists: &[CondemnedList],
    started: DateTime<Utc>,
    walked: &HashSet<Id>,
    needed_pending: &HashSet<Id>,
    listed: &HashMap<Id, u64>,
    stats: &mut PruneStats,
    cx: &Context,
) -> Result<(), PruneError> {
    if lists.is_empty() {
        return Ok(());
    }
    // 1. Which lists a running backup may depend on. Locks are listed before snapshots: a
    //    backup writes its snapshot before it removes its lock, so one that finished is seen.
    let now = Utc::now();
    let running: Vec<_> = repo
        .locks()?
        .into_iter()
        .filter_map(|(id, l)| l.ok().map(|l| (id, l)))
        .filter(|(_, l)| l.kind == LockKind::Backup && !l.is_stale(now))
        .collect();
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
    let mut damaged = Vec::new();
    let (repo, _) = inventory::load(opened, &mut |e| damaged.push(e.to_string()))?;
    let mut reach = Reach::new(&repo);
    let mut ignored = PruneStats::default();
    let mut walked = walked.clone();
    mark(&repo, &mut reach, &mut walked, &mut damaged, &mut ignored)?;
    if !damaged.is_empty() {
        return Err(PruneError::Damaged(damaged));
    }
    let mut needed: HashSet<Id> = needed_pending.clone();
    for pos in 0..repo.pending().len() {
        if reach.pending.contains(pos) {
            let (pack, _) = repo.pending().entry_at(pos);
            needed.insert(repo.pending().packs()[pack as usize]);
        }
    }
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
        delete(&repo, &FileKind::Pack.path(pack))?;
        stats.packs_deleted += 1;
        stats.bytes_freed += listed.get(pack).copied().unwrap_or(0);
    }
    for list in eligible {
        delete(&repo, &FileKind::Condemned.path(&list.id))?;
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
