//! The backup pipeline. [`run`] wires the stages, each in its own file:
//!
//! ```text
//!  walk ──events──▶ archive ──file jobs──▶ read → chunk → hash → dedup ──new chunks──▶ seal
//!  (thread)         (caller)               (N file threads; seal small files' chunks) (N threads)
//!                      │ finished dirs                                                │
//!                      ▼                                                 sealed blobs ▼
//!                    tree (thread) ───────────────tree blobs──────────────────────▶ pack (thread)
//!                                                                                     │ packs
//!                                                                                     ▼
//!                                                         upload (one thread per connection)
//! ```
//!
//! * walk: depth-first, names in byte order, excludes applied, metadata read.
//! * archive: change detection against the parent snapshot; unchanged files are not opened.
//! * read/chunk: open without following symlinks, FastCDC in a reused window, keyed BLAKE3,
//!   dedup claim.
//! * seal: zstd when it shrinks, AES-256-GCM. A small file's new chunks are sealed by its file
//!   thread; a large file's (8 MiB and up) are copied out to a pool of seal threads, so that a
//!   single large file keeps every core busy.
//! * tree: one tree blob per directory, bottom-up, as directories finish.
//! * pack/upload: the write path that `copy` and prune share ([`crate::store`]): packs of
//!   about `pack_size`, stored create-only on `connections` threads; index files as packs
//!   complete.
//!
//! Every queue is bounded, so memory is set by the configuration (workers × chunk window,
//! packs being filled, queue depths) plus the index, not by file sizes or counts. The snapshot
//! is written last, after its last pack and index file.

pub mod archive;
pub mod chunk;
pub mod read;
pub mod seal;
pub mod stdin;
pub mod tree;
pub mod walk;

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use cairn_repo_format::chunker::{ChunkReader, Chunker};
use cairn_repo_format::snapshot::{Snapshot, Summary};
use cairn_repo_format::tree::{Labels, Node};
use cairn_repo_format::{Id, Indexed, Opened, RepoError, Repository};
use chrono::{DateTime, Utc};
use crossbeam_channel::{Receiver, Sender, bounded};

use crate::Context;
use crate::events::Event;
use crate::filter::Patterns;
use crate::lock::LockError;
use crate::select::{SnapshotFilter, latest_matching};
use crate::store;
use archive::{Archiver, FileJob};
pub use read::ChangeRules;
use seal::{BlobBatch, Dedup, SealJob, SealTo};

/// Which snapshot to compare against.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ParentChoice {
    /// The latest snapshot with the same host and paths.
    #[default]
    Latest,
    /// This one.
    Snapshot(Id),
    /// None: read every file (`--force`).
    None,
}

/// What to back up and how.
#[derive(Clone, Default)]
pub struct BackupOptions {
    /// Files or directories.
    pub paths: Vec<PathBuf>,
    /// Host name recorded in the snapshot.
    pub hostname: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Labels.
    pub labels: Labels,
    /// Exclude patterns.
    pub excludes: Patterns,
    /// Do not cross file-system boundaries.
    pub one_file_system: bool,
    /// Parent selection.
    pub parent: ParentChoice,
    /// Change-detection rules.
    pub change: ChangeRules,
    /// Snapshot time (default: now).
    pub time: Option<DateTime<Utc>>,
    /// File workers (0: one per CPU).
    pub workers: usize,
    /// Packs uploaded at once (0: the backend's default, [`Backend::parallelism`]; 1: the
    /// pack thread stores each pack itself). Each upload in flight to an object store holds
    /// one pack (`pack_size`) in memory.
    ///
    /// [`Backend::parallelism`]: cairn_repo_format::Backend::parallelism
    pub connections: usize,
    /// Count files and bytes first, for an ETA.
    pub scan: bool,
    /// The path to record instead of the one read (one directory only): a volume's stable
    /// identity (`/<namespace>/<pvc>`) rather than the pod directory it is mounted under
    /// today. The parent snapshot is looked up by this path, so a volume that moved still gets
    /// an incremental backup.
    pub as_path: Option<String>,
}

impl BackupOptions {
    /// Packs uploaded at once into `repo`: `connections`, or the backend's default.
    pub fn upload_connections<S>(&self, repo: &Repository<S>) -> usize {
        if self.connections == 0 {
            repo.backend().parallelism().uploads.max(1)
        } else {
            self.connections
        }
    }
}

/// Live counters, read by progress displays while the backup runs.
#[derive(Default, Debug)]
#[allow(missing_docs)]
pub struct Progress {
    pub total_files: AtomicU64,
    pub total_bytes: AtomicU64,
    pub scan_done: AtomicBool,
    pub files_done: AtomicU64,
    pub bytes_done: AtomicU64,
    pub bytes_total: AtomicU64,
    pub files_new: AtomicU64,
    pub files_changed: AtomicU64,
    pub files_unmodified: AtomicU64,
    pub bytes_new: AtomicU64,
    pub bytes_changed: AtomicU64,
    pub bytes_unmodified: AtomicU64,
    pub dirs_new: AtomicU64,
    pub dirs_changed: AtomicU64,
    pub dirs_unmodified: AtomicU64,
    pub bytes_read: AtomicU64,
    pub data_blobs: AtomicU64,
    pub tree_blobs: AtomicU64,
    pub data_added: AtomicU64,
    pub data_added_packed: AtomicU64,
    pub packs_done: AtomicU64,
    pub errors: AtomicU64,
}

/// Why a backup wrote no snapshot.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// No paths given.
    #[error("no backup paths given")]
    NoPaths,
    /// A backup path is missing or unreadable.
    #[error("backup path {path} cannot be used: {reason}")]
    BadPath {
        /// The path as given.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Two paths would be stored under the same name.
    #[error("backup paths {a} and {b} have the same name; back them up in separate snapshots")]
    DuplicateName {
        /// First.
        a: PathBuf,
        /// Second.
        b: PathBuf,
    },
    /// A path to record was given for something other than one directory.
    #[error("a recorded path ({as_path}) needs exactly one directory to back up")]
    AsPath {
        /// The path to record.
        as_path: String,
    },
    /// Repository failure (storage, corruption).
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// The walk produced nothing to store.
    #[error("nothing could be read from the backup paths; no snapshot written")]
    NothingRead,
    /// The backup lock could not be taken.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The host cancelled the backup; no snapshot was written, and what was stored and
    /// indexed is reused by the next backup.
    #[error("backup cancelled; no snapshot written")]
    Cancelled,
}

/// A written snapshot.
pub struct BackupOutcome {
    /// Its id.
    pub id: Id,
    /// The snapshot.
    pub snapshot: Snapshot,
}

/// Resolves, checks and sorts the backup paths: absolute, symlinks resolved, existing, with
/// distinct names.
fn prepare_paths(paths: &[PathBuf]) -> Result<Vec<PathBuf>, BackupError> {
    if paths.is_empty() {
        return Err(BackupError::NoPaths);
    }
    let mut out = Vec::new();
    for p in paths {
        let abs = p.canonicalize().map_err(|e| BackupError::BadPath {
            path: p.clone(),
            reason: e.to_string(),
        })?;
        out.push(abs);
    }
    out.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    out.dedup();
    for w in out.windows(2) {
        if w[0].file_name() == w[1].file_name() {
            return Err(BackupError::DuplicateName {
                a: w[0].clone(),
                b: w[1].clone(),
            });
        }
    }
    Ok(out)
}

fn find_parent(
    repo: &Repository<Indexed>,
    opts: &BackupOptions,
    paths: &[String],
) -> Result<Option<(Id, Snapshot)>, RepoError> {
    match &opts.parent {
        ParentChoice::None => Ok(None),
        ParentChoice::Snapshot(id) => Ok(Some((*id, repo.load_snapshot(id)?))),
        ParentChoice::Latest => {
            let filter = SnapshotFilter {
                hosts: vec![opts.hostname.clone()],
                paths: paths.to_vec(),
                ..Default::default()
            };
            latest_matching(repo, &filter)
        }
    }
}

/// Where a file thread's new chunks go: the seal pool (large files) or, sealed, the pack stage.
struct Outputs {
    seal_jobs: Sender<SealJob>,
    blobs: BlobBatch,
}

/// Reads one file: open, chunk, hash, dedup; sends new chunks to the seal threads.
fn read_file(
    job: &mut FileJob,
    reader: &mut ChunkReader,
    repo: &Repository<Indexed>,
    dedup: &Dedup<'_>,
    out: &Outputs,
    progress: &Progress,
    cx: &Context,
) -> io::Result<()> {
    let key = repo.key();
    let (file, before) = read::open_for_read(&job.path, job.at.as_ref())?;
    job.node.xattrs = crate::fsmeta::read_file_xattrs(&file)?;
    let to = if before.len() >= seal::POOL_FROM {
        SealTo::Pool(&out.seal_jobs)
    } else {
        SealTo::Here {
            key,
            level: repo.config().compression,
            blobs: &out.blobs,
        }
    };
    let chunked = chunk::chunk_file(reader, key, &file, |id, data| {
        if cx.cancel.is_cancelled() {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "cancelled"));
        }
        seal::store_chunk(dedup, &to, progress, id, data)
    })?;
    let after = file.metadata()?;
    if read::changed_while_reading(&before, &after) || chunked.size != job.node.size {
        cx.emit(Event::FileChanged {
            path: job.path.clone(),
        });
    }
    job.node.size = chunked.size;
    job.node.content = Some(chunked.content);
    Ok(())
}

fn file_worker(
    jobs: Receiver<Vec<FileJob>>,
    repo: &Repository<Indexed>,
    dedup: &Dedup<'_>,
    out: Outputs,
    progress: &Progress,
    cx: &Context,
) {
    let chunker =
        Chunker::new(&repo.config().chunker).expect("validated when the repository was opened");
    let mut reader = ChunkReader::new(chunker, 1 << 20);
    loop {
        // Whatever this thread sealed goes to the pack stage before it waits for more work.
        let batch = match jobs.try_recv() {
            Ok(b) => b,
            Err(_) => {
                if out.blobs.flush().is_err() {
                    return;
                }
                match jobs.recv() {
                    Ok(b) => b,
                    Err(_) => return,
                }
            }
        };
        for job in batch {
            if !file_job(job, &mut reader, repo, dedup, &out, progress, cx) {
                return;
            }
        }
    }
}

/// Runs one file job; false when the pipeline has stopped.
fn file_job(
    mut job: FileJob,
    reader: &mut ChunkReader,
    repo: &Repository<Indexed>,
    dedup: &Dedup<'_>,
    out: &Outputs,
    progress: &Progress,
    cx: &Context,
) -> bool {
    if cx.cancel.is_cancelled() {
        return false;
    }
    match read_file(&mut job, reader, repo, dedup, out, progress, cx) {
        Ok(()) => {
            progress.files_done.fetch_add(1, Ordering::Relaxed);
            job.reply.send(Some(job.node));
        }
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return false,
        Err(e) if e.kind() == io::ErrorKind::Interrupted && cx.cancel.is_cancelled() => {
            return false;
        }
        Err(e) => {
            progress.errors.fetch_add(1, Ordering::Relaxed);
            cx.emit(Event::FileUnreadable {
                path: job.path.clone(),
                error: e.to_string(),
            });
            job.reply.send(None);
        }
    }
    true
}

/// Runs a backup and writes its snapshot. The backup takes its lock, loads the index under
/// it, and releases the lock once the snapshot is written (or the backup failed or was
/// cancelled): a host that keeps `repo` open across many backups holds no lock between them.
/// Paths that cannot be read are reported as events, counted in the summary's `errors`, and
/// left out.
pub fn run(
    repo: &Repository<Opened>,
    opts: &BackupOptions,
    progress: &Progress,
    cx: &Context,
) -> Result<BackupOutcome, BackupError> {
    // Check the paths before touching the repository, so a typo costs nothing.
    let paths = prepare_paths(&opts.paths)?;
    if let Some(as_path) = &opts.as_path
        && !(paths.len() == 1 && paths[0].is_dir())
    {
        return Err(BackupError::AsPath {
            as_path: as_path.clone(),
        });
    }
    cx.cancel.check().map_err(|_| BackupError::Cancelled)?;
    let repo = crate::lock::index_for_backup(repo.clone())?;
    crate::open::report_skipped(&repo, cx);
    run_indexed(&repo, opts, progress, cx)
}

/// The pipeline, on a repository whose index was loaded under a backup lock.
fn run_indexed(
    repo: &Repository<Indexed>,
    opts: &BackupOptions,
    progress: &Progress,
    cx: &Context,
) -> Result<BackupOutcome, BackupError> {
    let start = Utc::now();
    let paths = prepare_paths(&opts.paths)?;
    let single_dir = paths.len() == 1 && paths[0].is_dir();
    let path_strings: Vec<String> = match &opts.as_path {
        Some(p) => vec![p.clone()],
        None => paths
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect(),
    };
    let parent = find_parent(repo, opts, &path_strings)?;
    let settings = walk::WalkSettings {
        paths: paths.clone(),
        excludes: opts.excludes.clone(),
        one_file_system: opts.one_file_system,
    };
    let workers = if opts.workers == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    } else {
        opts.workers
    };
    let level = repo.config().compression;
    let dedup = Dedup::new(repo.index());

    let (walk_tx, walk_rx) = bounded(1024 / walk::BATCH);
    let (job_tx, job_rx) = bounded::<Vec<FileJob>>(workers);
    let (dir_tx, dir_rx) = bounded(256);
    let (seal_tx, seal_rx) = bounded::<SealJob>(workers * 2);
    let (blob_tx, blob_rx) = bounded(workers * 2);
    let stop_scan = AtomicBool::new(false);

    let (root, root_node, pack_result, too_large) = std::thread::scope(|s| {
        if opts.scan {
            let settings = settings.clone();
            let stop = &stop_scan;
            s.spawn(move || {
                if !stop.load(Ordering::Relaxed) {
                    walk::scan_totals(&settings, progress)
                }
            });
        }
        let settings = &settings;
        s.spawn(move || walk::walk(settings, &walk_tx));
        for _ in 0..workers {
            let out = Outputs {
                seal_jobs: seal_tx.clone(),
                blobs: BlobBatch::new(blob_tx.clone()),
            };
            let (jobs, dedup) = (job_rx.clone(), &dedup);
            s.spawn(move || file_worker(jobs, repo, dedup, out, progress, cx));
            let (seal_jobs, blobs) = (seal_rx.clone(), blob_tx.clone());
            s.spawn(move || seal::worker(repo.key(), level, seal_jobs, blobs));
        }
        drop((job_rx, seal_tx, seal_rx));
        let tree_blobs = blob_tx.clone();
        let dedup_ref = &dedup;
        let tree_stage =
            s.spawn(move || tree::run(dir_rx, repo.key(), dedup_ref, tree_blobs, level, progress));
        drop(blob_tx);
        let connections = opts.upload_connections(repo);
        let packer = s.spawn(move || store::run(repo, blob_rx, connections, progress, &cx.cancel));

        let parent_root = parent.as_ref().map(|(_, snap)| snap.tree);
        let mut archiver = Archiver::new(
            repo,
            opts.change,
            progress,
            cx,
            job_tx,
            dir_tx,
            single_dir,
            parent_root,
        );
        let mut stopped = false;
        'walk: for batch in walk_rx {
            if cx.cancel.is_cancelled() {
                stopped = true;
                break;
            }
            for ev in batch {
                if archiver.handle(ev).is_err() {
                    stopped = true;
                    break 'walk;
                }
            }
        }
        let root_node = archiver.root_node.take();
        // Stopped, the archiver goes at once: its senders close, so the file threads and the
        // tree stage run out of work and end.
        let root_rx = if stopped {
            drop(archiver);
            None
        } else {
            archiver.finish().ok()
        };
        let root = root_rx.and_then(|rx| rx.recv().ok());
        stop_scan.store(true, Ordering::Relaxed);
        let too_large = match tree_stage.join() {
            Ok(Err(tree::Stopped::TooLarge { dir, entries, size })) => Some(RepoError::TooLarge {
                what: format!("the tree of directory {dir} ({entries} entries)"),
                size: size as u64,
                cap: cairn_repo_format::blob::MAX_TREE_BLOB as u64,
            }),
            _ => None,
        };
        let pack_result = packer.join().unwrap_or_else(|_| {
            Err(RepoError::Corrupt {
                object: "pack stage".into(),
                reason: "panicked".into(),
            })
        });
        (root, root_node, pack_result, too_large)
    });
    if let Some(e) = too_large {
        return Err(e.into());
    }
    pack_result?;
    if cx.cancel.is_cancelled() {
        return Err(BackupError::Cancelled);
    }
    let tree = root.ok_or(BackupError::NothingRead)?;
    let summary = summarize(progress, start);
    let snapshot = Snapshot {
        time: opts.time.unwrap_or(start),
        hostname: opts.hostname.clone(),
        username: cairn_repo_format::key::username(),
        paths: path_strings,
        tags: opts.tags.clone(),
        labels: opts.labels.clone(),
        tree,
        root: root_node.map(strip_root),
        parent: parent.map(|(id, _)| id),
        original: None,
        program_version: format!("cairn {}", env!("CARGO_PKG_VERSION")),
        summary,
    };
    let id = repo.save_snapshot(&snapshot)?;
    Ok(BackupOutcome { id, snapshot })
}

fn strip_root(mut n: Node) -> Node {
    n.content = None;
    n.subtree = None;
    n
}

fn summarize(p: &Progress, start: DateTime<Utc>) -> Summary {
    let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let end = Utc::now();
    Summary {
        backup_start: Some(start),
        backup_end: Some(end),
        duration: (end - start).num_microseconds().unwrap_or(0) as f64 / 1e6,
        bytes_new: g(&p.bytes_new),
        bytes_changed: g(&p.bytes_changed),
        bytes_unmodified: g(&p.bytes_unmodified),
        files_new: g(&p.files_new),
        files_changed: g(&p.files_changed),
        files_unmodified: g(&p.files_unmodified),
        dirs_new: g(&p.dirs_new),
        dirs_changed: g(&p.dirs_changed),
        dirs_unmodified: g(&p.dirs_unmodified),
        bytes_read: g(&p.bytes_read),
        bytes_total: g(&p.bytes_total),
        data_blobs: g(&p.data_blobs),
        tree_blobs: g(&p.tree_blobs),
        data_added: g(&p.data_added),
        data_added_packed: g(&p.data_added_packed),
        errors: g(&p.errors),
    }
}
