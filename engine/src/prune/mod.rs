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
//! Each step has its own file ([`mark`], [`plan`], [`repack`], [`commit`], [`sweep`]); [`run`]
//! wires them. Between steps a cancelled prune stops; at each [`Checkpoint`] a test can stop it
//! as if it were killed there, and every snapshot must still restore.
//!
//! The invariant (see `docs/design.md`, "Garbage collection"): at every moment, every blob a
//! snapshot refers to is in a stored pack named by an index file or a condemned list, and a
//! pack is deleted only when no backup that might have deduplicated against it is still
//! running. Memory: the index (52 bytes per blob) plus one bit per blob and 4 bytes per blob
//! while index files are rewritten; one pack at a time while repacking.

pub mod commit;
pub mod mark;
pub mod plan;
pub mod repack;
pub mod sweep;

use std::collections::HashSet;

use cairn_repo_format::lock::LockKind;
use cairn_repo_format::{Opened, RepoError, Repository};
use chrono::Utc;

use crate::Context;
use crate::events::Event;
use crate::inventory;
use crate::lock::{LockError, RepoLock};

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
    /// Stop at this point as if the process were killed there: return
    /// [`PruneError::Killed`] at once, leave the lock in the repository and clean nothing
    /// up. For tests of crash safety; `None` in every real use.
    pub kill_at: Option<Checkpoint>,
}

/// The points between a prune's writes and deletes at which a crash leaves a different
/// repository. Every one of them must leave every snapshot restorable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checkpoint {
    /// Snapshots walked; nothing written yet.
    Marked,
    /// New packs stored and indexed; old packs still indexed too.
    Repacked,
    /// Uncommitted condemned lists stored.
    CondemnedUncommitted,
    /// New index files stored beside the old ones.
    IndexWritten,
    /// Old index files deleted.
    OldIndexDeleted,
    /// Committed condemned lists stored beside the uncommitted ones.
    CondemnedCommitted,
    /// The commit step done.
    Committed,
    /// Condemned packs that new snapshots need indexed again.
    Rescued,
    /// Condemned packs deleted; their lists not yet.
    PacksDeleted,
}

impl Checkpoint {
    /// Every checkpoint, in the order a prune reaches them.
    pub const ALL: [Checkpoint; 9] = [
        Checkpoint::Marked,
        Checkpoint::Repacked,
        Checkpoint::CondemnedUncommitted,
        Checkpoint::IndexWritten,
        Checkpoint::OldIndexDeleted,
        Checkpoint::CondemnedCommitted,
        Checkpoint::Committed,
        Checkpoint::Rescued,
        Checkpoint::PacksDeleted,
    ];
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            max_unused: 0.05,
            max_repack_bytes: None,
            dry_run: false,
            kill_at: None,
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
    /// Objects that could not be read (index files, condemned lists, pack headers, snapshots,
    /// trees, locks): each was reported and left alone, and nothing it may refer to was
    /// deleted. `check` names them again.
    pub unreadable: u64,
}

/// Why prune stopped without changing anything it should not.
#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    /// Another prune is running, or the lock could not be written.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The repository is damaged; pruning it could lose more.
    #[error(
        "the repository is damaged, so nothing was pruned:\n  {}",
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
    /// Stopped at [`PruneOptions::kill_at`], as if killed there.
    #[error("prune stopped at {0:?} as if killed (PruneOptions::kill_at)")]
    Killed(Checkpoint),
}

/// What the steps share to report and to stop: the host's context and the test's kill point.
pub struct Stops<'a> {
    cx: &'a Context,
    kill_at: Option<Checkpoint>,
}

impl Stops<'_> {
    /// Called when a prune reaches `at`.
    fn reached(&self, at: Checkpoint) -> Result<(), PruneError> {
        match self.kill_at == Some(at) {
            true => Err(PruneError::Killed(at)),
            false => Ok(()),
        }
    }
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

/// Runs a prune, reporting each notable step as an event.
pub fn run(
    repo: Repository<Opened>,
    opts: &PruneOptions,
    cx: &Context,
) -> Result<PruneStats, PruneError> {
    step_check(cx)?;
    let lock = RepoLock::acquire(&repo, LockKind::Prune)?;
    let stops = Stops {
        cx,
        kill_at: opts.kill_at,
    };
    let result = steps(repo, opts, &stops);
    if let Err(PruneError::Killed(_)) = result {
        lock.abandon();
    }
    result
}

/// The steps, under the prune lock.
fn steps(
    repo: Repository<Opened>,
    opts: &PruneOptions,
    stops: &Stops<'_>,
) -> Result<PruneStats, PruneError> {
    let cx = stops.cx;
    let started = Utc::now();
    // Packs are listed before the index files are read: a pack that a backup uploads and
    // indexes in between is then in the index, never taken for a leftover.
    let mut listed = inventory::list_packs(&repo)?;
    let left_out = |e: RepoError| {
        cx.emit(Event::ObjectDamaged {
            object: match &e {
                RepoError::Corrupt { object, .. } => object.clone(),
                _ => String::new(),
            },
            problem: format!(
                "{}; left out, and nothing it may refer to is deleted",
                match &e {
                    RepoError::Corrupt { reason, .. } => reason.clone(),
                    e => e.to_string(),
                }
            ),
        })
    };
    let mut unreadable = 0u64;
    // Index files and condemned lists that cannot be read now: what they may refer to is kept
    // by this prune, so the sweep need not wait for them again.
    let mut known_unreadable = HashSet::new();
    let (repo, inv, untouchable) = inventory::load_rescuing(repo, &listed, &mut |e| {
        unreadable += 1;
        if let RepoError::Corrupt { object, .. } = &e {
            known_unreadable.insert(object.clone());
        }
        left_out(e)
    })?;
    // Packs whose contents are unknown are not prune's to judge.
    listed.retain(|p, _| !untouchable.contains(p));
    let mut stats = PruneStats {
        packs: listed.len() as u64,
        unreadable,
        ..Default::default()
    };
    if !opts.dry_run {
        stats.temporaries_removed = sweep::remove_stale_temporaries(&repo, cx)?;
    }

    step_check(cx)?;
    let mut found = mark::Findings::default();
    let marked = mark::run(&repo, &inv.duplicates, &mut found, &mut stats)?;
    // A snapshot that refers to data no index has (lost, or a forged snapshot an append-only
    // client wrote) is set aside: named, and prune goes on; what it refers to that exists
    // was marked and stays.
    for m in &found.missing {
        cx.emit(Event::ObjectDamaged {
            object: String::new(),
            problem: format!("{m}; set aside"),
        });
    }
    stats.unreadable += found.missing.len() as u64;
    if !found.unreadable.is_empty() {
        stats.unreadable += found.unreadable.len() as u64;
        for e in found.unreadable {
            left_out(e);
        }
        step(
            cx,
            "a snapshot or tree cannot be read, so every tree is kept with all it refers to".into(),
        );
    }
    stops.reached(Checkpoint::Marked)?;

    let plan = plan::run(&repo, &listed, &marked, opts, &mut stats, cx)?;
    step(
        cx,
        format!(
            "{} snapshots; {} packs: {} unused, {} to repack, {} in no index; {} used, {} unused",
            stats.snapshots,
            listed.len(),
            plan.condemn.len(),
            plan.repack.len(),
            plan.unindexed.len(),
            crate::human_bytes(stats.used_bytes),
            crate::human_bytes(stats.unused_bytes)
        ),
    );
    stats.packs_unused = plan.condemn.len() as u64;
    stats.packs_unindexed = plan.unindexed.len() as u64;
    if opts.dry_run {
        stats.packs_repacked = plan.repack.len() as u64;
        return Ok(stats);
    }

    step_check(cx)?;
    repack::run(&repo, &plan, &marked.used, &mut stats, cx)?;
    stops.reached(Checkpoint::Repacked)?;

    step_check(cx)?;
    let lists = commit::run(&repo, &inv, &plan, stops)?;
    // The sweep loads the index afresh: drop everything sized by the old one first, so that
    // two indexes are never in memory at once.
    let mark::Marked {
        used,
        usage,
        walked,
        needed_pending,
    } = marked;
    drop((used, usage, plan));

    step_check(cx)?;
    sweep::run(
        repo,
        &lists,
        started,
        &walked,
        &needed_pending,
        &listed,
        &known_unreadable,
        &mut stats,
        stops,
    )?;
    Ok(stats)
}
