//! The restore pipeline. [`run`] wires the stages, each in its own file, connected by bounded
//! queues:
//!
//! ```text
//!  plan ──file chunks──▶ batch ──ranged reads──▶ fetch ──blobs──▶ unseal and write
//!  (caller's thread:     (group by pack,         (`connections`   (one thread per CPU: decrypt
//!   dirs, specials,       sort by offset,         threads: one     once, re-hash, then pwrite
//!   links, files          coalesce gaps           GET per range)   at every offset the blob
//!   created, blobs        ≤ 1 MiB)                                 goes to, holes kept)
//!   located)                 ▲                                                │
//!      ▲                     └──── batch complete (all its chunks written, ◀──┘
//!      │                           its files finished: length, verify, metadata)
//!      └── deferred steps run: directory metadata (post-order), links to files just written
//! ```
//!
//! * plan: depth-first over the snapshot's trees (iteratively, one per level in memory, any
//!   depth), subpath and include/exclude applied, unsafe names and repeated names refused;
//!   creates entries in order, each relative to its directory's open descriptor (no path is
//!   walked per entry, none is too long).
//! * batch: up to `batch_files` files / `batch_blobs` blob references per batch; each blob is
//!   fetched once per batch however many files use it; at most two batches exist at once.
//! * fetch: one ranged GET per run of neighbouring blobs of a pack; in-flight bytes bounded.
//! * unseal: decrypt, decompress, re-hash against the blob id; once per blob; then write, on
//!   the same thread, while the plaintext is still in the CPU's cache.
//! * write: inside the target only; all-zero chunks left as holes; a file is finished (length,
//!   `--verify`, metadata with times last) as soon as its last chunk is written, and a
//!   directory's metadata waits until the batch holding the last thing inside it is complete.
//!
//! A blob that cannot be read fails the files that need it (reported with pack and blob) and
//! the restore goes on with everything else.
//!
//! A target out of space or quota (`ENOSPC`, `EDQUOT`) is different: every file after it
//! would fail the same way. The first stage to meet it sets a shared flag ([`full::Stop`]);
//! the plan then creates nothing more and only counts the entries it would have restored, the
//! other stages give up what is in flight (one atomic load per range, blob and destination),
//! and the restore returns [`RestoreError::TargetFull`] with that count, after one
//! [`Event::RestoreStopped`] and no error per file.

pub mod batch;
pub mod fetch;
pub mod full;
pub mod plan;
pub mod unseal;
pub mod write;

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use cairn_repo_format::snapshot::Snapshot;
use cairn_repo_format::tree::{Node, NodeType};
use cairn_repo_format::{Indexed, RepoError, Repository};
use crossbeam_channel::bounded;

use crate::filter::Patterns;
use crate::fsmeta::{apply_file_metadata, apply_metadata, apply_metadata_at, is_root};
use crate::{Context, Event};
use batch::{Batcher, Limits};
use fetch::Budget;
use full::{Faults, Stop};
use plan::{Planner, Selection, Step};
use write::Writer;

/// What to restore and where.
pub struct RestoreOptions {
    /// Destination directory (created if missing).
    pub target: PathBuf,
    /// Path inside the snapshot to restore instead of all of it.
    pub subpath: Option<String>,
    /// Include patterns.
    pub include: Patterns,
    /// Exclude patterns.
    pub exclude: Patterns,
    /// Re-read every restored file and check it against the snapshot.
    pub verify: bool,
    /// Create device nodes (as root). When false, each is skipped and counted
    /// ([`RestoreProgress::devices_skipped`]): a volume restored for an app never needs one,
    /// and a hostile snapshot could use one to reach a host device.
    pub devices: bool,
}

/// Live counters.
#[derive(Default, Debug)]
#[allow(missing_docs)]
pub struct RestoreProgress {
    pub files: AtomicU64,
    pub dirs: AtomicU64,
    pub bytes: AtomicU64,
    pub errors: AtomicU64,
    pub verified: AtomicU64,
    /// Entries whose recorded owner the file system refused (SMB/Azure Files): restored
    /// with the owner it gave them.
    pub owners_not_kept: AtomicU64,
    /// Device nodes not created ([`RestoreOptions::devices`] false).
    pub devices_skipped: AtomicU64,
}

/// Why a restore could not start.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The subpath is not in the snapshot.
    #[error("{0:?} is not in the snapshot")]
    NoSuchPath(String),
    /// The target cannot be created.
    #[error("target: {0}")]
    Target(io::Error),
    /// Repository failure.
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// The pipeline's threads could not be started.
    #[error("cannot start restore threads: {0}")]
    Threads(io::Error),
    /// The host cancelled the restore.
    #[error("restore cancelled; the target holds the files finished so far")]
    Cancelled,
    /// The target ran out of space or quota: creating, writing, extending or linking an entry
    /// failed with `ENOSPC` or `EDQUOT`. The restore stopped there instead of trying every
    /// remaining entry: the target holds the files finished before (plus those in progress,
    /// which are not finished: no final length or metadata), and a restore into it again,
    /// once there is room, completes the job (files are always created anew). Reported once
    /// as [`Event::RestoreStopped`], not once per entry.
    #[error("restore to {} stopped: {error}; {not_restored} files not restored", .target.display())]
    TargetFull {
        /// The target, as the options named it.
        target: PathBuf,
        /// Entries other than directories (regular files, symlinks, fifos, devices) of the
        /// selection that were not restored because of it; entries that failed for reasons of
        /// their own were reported each and are not counted here.
        not_restored: u64,
        /// What the file system said (`ENOSPC` or `EDQUOT`).
        error: io::Error,
    },
}

/// How hard a restore works: threads, batch sizes and memory. [`Default`] suits a local
/// repository; a cloud store over a long round trip gains from more `connections`.
#[derive(Clone, Debug)]
pub struct RestoreTuning {
    /// Ranged GETs in flight at once (one fetch thread each); 0: the backend's default
    /// ([`cairn_repo_format::Backend::parallelism`]).
    pub connections: usize,
    /// Threads decrypting and checking blobs and writing their plaintexts into the files
    /// (0: one per CPU).
    pub unseal_threads: usize,
    /// Files with content per batch. At most two batches exist at once, and their files are
    /// open: keep twice this well below the open-file limit (`ulimit -n`, often 1024).
    pub batch_files: usize,
    /// Blob references per batch.
    pub batch_blobs: usize,
    /// Neighbouring blobs of a pack at most this far apart are read with one GET (the gap is
    /// read and dropped).
    pub max_gap: u64,
    /// Longest single GET (a larger blob is still read whole); 0: a whole pack (the
    /// repository's pack size plus one chunk), so a batch reads each pack with one GET.
    pub max_range: u64,
    /// Bytes held between fetch and write, at most: each fetched range and the plaintexts of
    /// its blobs count until its last blob is written. A single range larger than this still
    /// goes through, alone.
    pub in_flight_bytes: u64,
}

impl Default for RestoreTuning {
    fn default() -> Self {
        RestoreTuning {
            connections: 0,
            unseal_threads: 0,
            batch_files: 256,
            batch_blobs: 4096,
            max_gap: 1 << 20,
            max_range: 0,
            in_flight_bytes: 32 << 20,
        }
    }
}

/// What every stage shares: the repository, the options that matter to finishing files, the
/// counters and the host's context (events, cancellation).
pub struct Shared<'a> {
    repo: &'a Repository<Indexed>,
    as_root: bool,
    verify: bool,
    devices: bool,
    progress: &'a RestoreProgress,
    cx: &'a Context,
    /// Set when the target is full; what was not restored because of it.
    stop: &'a Stop,
    /// Errors a unit test injects (nothing otherwise).
    faults: &'a Faults,
}

impl Shared<'_> {
    /// Whether the target is full: nothing more is scheduled, and what is in flight is given
    /// up.
    fn full(&self) -> bool {
        self.stop.is_full()
    }

    /// An entry `rel` could not be created, written or linked because of `e`. A full target
    /// (`ENOSPC`, `EDQUOT`) stops the restore and counts the entry as not restored, without a
    /// report of its own; any other error is reported with the entry.
    fn failed(&self, rel: &Path, e: &io::Error) {
        if full::is_target_full(e) {
            self.stop.full(e);
            self.stop.not_restored(1);
        } else {
            self.problem(rel, &e.to_string());
        }
    }

    /// Counts and reports a problem with `rel` (relative to the target).
    fn problem(&self, rel: &Path, msg: &str) {
        self.progress.errors.fetch_add(1, Ordering::Relaxed);
        self.cx.emit(Event::RestoreFailed {
            path: rel.to_path_buf(),
            error: msg.to_string(),
        });
    }

    /// Counts and reports a refused name.
    fn refused(&self, rel: &Path, name: &[u8], tree: Option<cairn_repo_format::Id>) {
        self.progress.errors.fetch_add(1, Ordering::Relaxed);
        self.cx.emit(Event::NameRefused {
            path: rel.to_path_buf(),
            name: String::from_utf8_lossy(name).into_owned(),
            tree,
        });
    }

    /// Whether the host cancelled the restore.
    fn cancelled(&self) -> bool {
        self.cx.cancel.is_cancelled()
    }

    /// Counts and reports an entry whose name its tree holds more than once (this one, not the
    /// first, is left out).
    fn duplicate(&self, snap_path: &Path, tree: cairn_repo_format::Id) {
        self.progress.errors.fetch_add(1, Ordering::Relaxed);
        self.cx.emit(Event::DuplicateName {
            path: snap_path.to_string_lossy().into_owned(),
            tree,
        });
    }

    /// Applies `node`'s metadata to `path`, reporting a failure.
    fn meta(&self, path: &Path, rel: &Path, node: &Node) {
        self.applied(rel, apply_metadata(path, node, self.as_root));
    }

    /// Applies `node`'s metadata to the entry `name` of the open directory `dir`.
    fn meta_at(&self, dir: &write::DirFd, name: &std::ffi::OsStr, rel: &Path, node: &Node) {
        self.applied(rel, apply_metadata_at(dir.fd(), name, node, self.as_root));
    }

    fn applied(&self, rel: &Path, r: io::Result<crate::fsmeta::Applied>) {
        match r {
            Ok(a) if !a.owner_kept => {
                self.progress
                    .owners_not_kept
                    .fetch_add(1, Ordering::Relaxed);
            }
            Ok(_) => {}
            Err(e) => self.problem(rel, &format!("metadata: {e}")),
        }
    }

    /// Metadata of a regular file through its open descriptor.
    fn meta_file(&self, file: &std::fs::File, rel: &Path, node: &Node) {
        self.applied(rel, apply_file_metadata(file, node, self.as_root));
    }
}

fn spawn<'scope>(
    s: &'scope std::thread::Scope<'scope, '_>,
    name: &str,
    f: impl FnOnce() + Send + 'scope,
) -> Result<(), RestoreError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn_scoped(s, f)
        .map(drop)
        .map_err(RestoreError::Threads)
}

/// What `run` restores.
enum Work {
    /// A tree, its path in the snapshot (for patterns), and the metadata for the target.
    Tree(cairn_repo_format::Id, PathBuf, Option<Node>),
    /// A single non-directory, restored into the target under its name.
    Single(Node),
}

/// Restores `snap` (or its subpath) into the target with [`RestoreTuning::default`]. Problems
/// with single entries go out as events and are counted; the return is an error only when
/// nothing could start, when the host cancelled (then the target holds whole files plus
/// those in progress, and a restore into it again completes the job), or when the target ran
/// out of space or quota ([`RestoreError::TargetFull`], the same state, reported once).
pub fn run(
    repo: &Repository<Indexed>,
    snap: &Snapshot,
    opts: &RestoreOptions,
    progress: &RestoreProgress,
    cx: &Context,
) -> Result<(), RestoreError> {
    run_with(repo, snap, opts, &RestoreTuning::default(), progress, cx)
}

/// [`run`] with explicit threads, batch sizes and memory.
pub fn run_with(
    repo: &Repository<Indexed>,
    snap: &Snapshot,
    opts: &RestoreOptions,
    tuning: &RestoreTuning,
    progress: &RestoreProgress,
    cx: &Context,
) -> Result<(), RestoreError> {
    run_faulty(repo, snap, opts, tuning, progress, cx, &Faults::default())
}

/// [`run_with`], with errors a unit test injects.
fn run_faulty(
    repo: &Repository<Indexed>,
    snap: &Snapshot,
    opts: &RestoreOptions,
    tuning: &RestoreTuning,
    progress: &RestoreProgress,
    cx: &Context,
    faults: &Faults,
) -> Result<(), RestoreError> {
    let stop = Stop::default();
    let result = run_inner(repo, snap, opts, tuning, progress, cx, &stop, faults);
    if cx.cancel.is_cancelled() {
        return Err(RestoreError::Cancelled);
    }
    // Every stage has wound down: the one report of a full target.
    if let Some((error, not_restored)) = stop.outcome() {
        cx.emit(Event::RestoreStopped {
            target: opts.target.clone(),
            not_restored,
            error: error.to_string(),
        });
        return Err(RestoreError::TargetFull {
            target: opts.target.clone(),
            not_restored,
            error,
        });
    }
    result
}

#[allow(clippy::too_many_arguments)]
fn run_inner(
    repo: &Repository<Indexed>,
    snap: &Snapshot,
    opts: &RestoreOptions,
    tuning: &RestoreTuning,
    progress: &RestoreProgress,
    cx: &Context,
    stop: &Stop,
    faults: &Faults,
) -> Result<(), RestoreError> {
    let writer = Writer::new(&opts.target, opts.verify).map_err(RestoreError::Target)?;
    let work = match opts
        .subpath
        .as_deref()
        .filter(|s| !s.trim_matches('/').is_empty())
    {
        None => Work::Tree(snap.tree, PathBuf::from("/"), snap.root.clone()),
        Some(sub) => {
            let node = plan::find_subpath(repo, &snap.tree, sub)?
                .ok_or_else(|| RestoreError::NoSuchPath(sub.into()))?;
            match (node.kind, node.subtree) {
                (NodeType::Dir, Some(t)) => Work::Tree(t, plan::snap_path(sub), Some(node)),
                _ => Work::Single(node),
            }
        }
    };
    let shared = Shared {
        repo,
        as_root: is_root(),
        verify: opts.verify,
        devices: opts.devices,
        progress,
        cx,
        stop,
        faults,
    };
    let sel = Selection {
        include: opts.include.clone(),
        exclude: opts.exclude.clone(),
        cancel: cx.cancel.clone(),
    };
    let t = tuning;
    let config = repo.config();
    let whole_pack = config.pack_size as u64 + config.chunker.max as u64 + (64 << 10);
    let limits = Limits {
        files: t.batch_files.max(1),
        blobs: t.batch_blobs.max(1),
        max_gap: t.max_gap,
        max_range: match t.max_range {
            0 => whole_pack,
            n => n,
        },
    };
    let unseal_threads = match t.unseal_threads {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    };
    let budget = Budget::new(t.in_flight_bytes);
    std::thread::scope(|s| {
        let (shared, budget) = (&shared, &budget);
        let (fetch_tx, fetch_rx) = bounded(limits.blobs.min(1024));
        let (unseal_tx, unseal_rx) = bounded(2 * unseal_threads);
        let connections = match t.connections {
            0 => repo.backend().parallelism().reads.max(1),
            n => n,
        };
        for _ in 0..connections {
            let (rx, tx) = (fetch_rx.clone(), unseal_tx.clone());
            spawn(s, "cairn-fetch", move || {
                fetch::worker(shared, budget, rx, tx)
            })?;
        }
        for _ in 0..unseal_threads {
            let rx = unseal_rx.clone();
            spawn(s, "cairn-unseal", move || unseal::worker(shared, rx))?;
        }
        drop((fetch_rx, unseal_tx, unseal_rx));

        let mut planner = Planner::new(shared, writer, Batcher::new(limits, fetch_tx));
        let empty = Path::new("");
        let result = match work {
            Work::Single(node) => {
                let rel = PathBuf::from(std::ffi::OsStr::from_bytes(&node.name.0));
                if Node::name_is_safe(&node.name.0) {
                    planner.entry(&rel, node);
                } else {
                    shared.refused(&rel, &node.name.0, None);
                }
                planner.finish();
                return Ok(());
            }
            Work::Tree(tree, prefix, root_meta) => {
                let included = opts.include.is_empty();
                let mut f = |step: Step<'_>| planner.step(step);
                let walked = plan::walk_tree(repo, &tree, &prefix, &sel, included, &mut f);
                let writer = planner.finish();
                if walked.is_ok()
                    && let Some(n) = root_meta
                {
                    // The target itself, through its descriptor when it could be read.
                    let root = writer.fd(writer.root());
                    match root.as_deref().ok().and_then(write::DirFd::readable) {
                        Some(file) => shared.meta_file(file, empty, &n),
                        None => shared.meta(writer.target(), empty, &n),
                    }
                }
                walked
            }
        };
        result.map(|_| ()).map_err(RestoreError::from)
    })
}

#[cfg(test)]
mod tests {
    //! A full target, simulated: the file system's `ENOSPC`, `EDQUOT` or `EIO` injected
    //! into the plan's creates and the write stage's writes ([`full::Faults`]).

    use super::*;
    use crate::backup::{self, BackupOptions, Progress};
    use crate::events::Collect;
    use cairn_repo_format::config::Config;
    use cairn_repo_format::key::KdfParams;
    use cairn_repo_format::{Backend, ObjectStoreBackend};
    use full::Op;
    use std::sync::Arc;

    const FILES: usize = 60;
    /// Files from this one on fail.
    const FIRST_BAD: usize = 30;

    fn random_bytes(seed: u64, n: usize) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// `d{i / 20}/f{i:03}`: the walk meets the files in the order of `i`.
    fn name(i: usize) -> PathBuf {
        PathBuf::from(format!("d{}/f{i:03}", i / 20))
    }

    /// The file's number, from its path relative to the target.
    fn number(rel: &Path) -> usize {
        rel.file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix('f'))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    /// A repository in memory with one backup of [`FILES`] files of several chunks each;
    /// the source directory stays for comparisons.
    fn backed_up() -> (Repository<Indexed>, Snapshot, tempfile::TempDir) {
        let src = tempfile::tempdir().unwrap();
        for i in 0..FILES {
            let p = src.path().join(name(i));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, random_bytes(i as u64 + 1, 20_000 + i * 100)).unwrap();
        }
        let backend: Arc<dyn Backend> = Arc::new(ObjectStoreBackend::memory());
        let cheap = KdfParams {
            m_cost: 64,
            t_cost: 1,
            p_cost: 1,
        };
        let config = Config::new((4096, 8192, 16384), 3, 64 << 10);
        Repository::init(backend.clone(), b"pw", config, cheap).unwrap();
        let opened = Repository::open(backend, b"pw").unwrap();
        let opts = BackupOptions {
            paths: vec![src.path().to_path_buf()],
            hostname: "test".into(),
            workers: 2,
            ..Default::default()
        };
        let out = backup::run(&opened, &opts, &Progress::default(), &Context::default()).unwrap();
        (opened.load_index().unwrap(), out.snapshot, src)
    }

    /// Many small batches and several threads, so that files are in flight on every stage
    /// when the target fills up.
    fn tuning() -> RestoreTuning {
        RestoreTuning {
            connections: 3,
            unseal_threads: 3,
            batch_files: 4,
            batch_blobs: 9,
            max_gap: 4096,
            max_range: 30_000,
            in_flight_bytes: 100_000,
        }
    }

    /// Restores with `code` injected into `op` on every file from [`FIRST_BAD`] on.
    fn restore_failing(
        op: Op,
        code: i32,
        repo: &Repository<Indexed>,
        snap: &Snapshot,
        target: &Path,
    ) -> (Result<(), RestoreError>, Vec<Event>, RestoreProgress) {
        let faults = Faults {
            inject: Some(Box::new(move |o, rel| {
                (o == op && number(rel) >= FIRST_BAD).then(|| io::Error::from_raw_os_error(code))
            })),
        };
        let opts = RestoreOptions {
            target: target.to_path_buf(),
            subpath: None,
            include: Default::default(),
            exclude: Default::default(),
            verify: true,
            devices: false,
        };
        let collect = Collect::new();
        let cx = Context {
            events: collect.handle(),
            ..Default::default()
        };
        let progress = RestoreProgress::default();
        let r = run_faulty(repo, snap, &opts, &tuning(), &progress, &cx, &faults);
        (r, collect.events(), progress)
    }

    /// Restored files identical to their source, by number.
    fn identical(src: &Path, target: &Path) -> Vec<usize> {
        (0..FILES)
            .filter(|&i| {
                std::fs::read(target.join(name(i))).ok() == std::fs::read(src.join(name(i))).ok()
            })
            .collect()
    }

    /// The target fills up at the first write (or create) of file FIRST_BAD: the restore
    /// stops, returns TargetFull with the count, sends exactly one event and no error per
    /// file, and every file is either restored whole or counted.
    fn stops_once(op: Op, code: i32) {
        let (repo, snap, src) = backed_up();
        let target = tempfile::tempdir().unwrap();
        let (r, events, progress) = restore_failing(op, code, &repo, &snap, target.path());
        let Err(RestoreError::TargetFull {
            target: t,
            not_restored,
            error,
        }) = r
        else {
            panic!("expected TargetFull, got {r:?}");
        };
        assert_eq!(t, target.path());
        assert_eq!(error.raw_os_error(), Some(code));
        assert_eq!(
            events,
            vec![Event::RestoreStopped {
                target: target.path().to_path_buf(),
                not_restored,
                error: error.to_string(),
            }],
            "one event, none per file"
        );
        assert_eq!(progress.errors.load(Ordering::Relaxed), 0);
        let files = progress.files.load(Ordering::Relaxed);
        assert_eq!(
            files + not_restored,
            FILES as u64,
            "every file restored or counted, once"
        );
        assert!(not_restored >= (FILES - FIRST_BAD) as u64);
        let whole = identical(src.path(), target.path());
        assert_eq!(whole.len() as u64, files, "the restored files are whole");
        assert!(whole.iter().all(|&i| i < FIRST_BAD), "{whole:?}");
        if op == Op::Create {
            // Nothing was created after the first refusal.
            for i in FIRST_BAD..FILES {
                assert!(!target.path().join(name(i)).exists(), "{i} created");
            }
        }
    }

    #[test]
    fn no_space_on_write_stops_the_restore_with_one_report() {
        stops_once(Op::Write, libc::ENOSPC);
    }

    #[test]
    fn quota_exceeded_on_write_stops_the_restore_with_one_report() {
        stops_once(Op::Write, libc::EDQUOT);
    }

    #[test]
    fn no_inode_left_on_create_stops_the_restore_with_one_report() {
        stops_once(Op::Create, libc::ENOSPC);
    }

    #[test]
    fn other_write_errors_fail_their_files_and_the_restore_goes_on() {
        let (repo, snap, src) = backed_up();
        for (op, code) in [(Op::Write, libc::EIO), (Op::Create, libc::EACCES)] {
            let target = tempfile::tempdir().unwrap();
            let (r, events, progress) = restore_failing(op, code, &repo, &snap, target.path());
            r.unwrap();
            let failed = FILES - FIRST_BAD;
            assert_eq!(progress.errors.load(Ordering::Relaxed), failed as u64);
            assert_eq!(progress.files.load(Ordering::Relaxed), FIRST_BAD as u64);
            assert_eq!(events.len(), failed, "{events:?}");
            assert!(
                events
                    .iter()
                    .all(|e| matches!(e, Event::RestoreFailed { .. })),
                "{events:?}"
            );
            assert_eq!(
                identical(src.path(), target.path()),
                (0..FIRST_BAD).collect::<Vec<_>>()
            );
        }
    }
}
