//! The restore pipeline. [`run`] wires the stages, each in its own file:
//!
//! ```text
//!  plan ──steps──▶ for each file: fetch → unseal → write at offset ──▶ metadata (post-order)
//! ```
//!
//! * plan: depth-first over the snapshot's trees (one per level in memory), subpath and
//!   include/exclude applied, unsafe names refused.
//! * fetch: one ranged read of the blob from its pack.
//! * unseal: decrypt, decompress, re-hash against the blob id.
//! * write: inside the target only; holes kept; hard links re-linked.
//! * metadata: owner (as root), mode, xattrs, times — files right after their content,
//!   directories after everything inside them.
//!
//! A blob that cannot be read fails its file (reported with pack and blob) and the restore
//! goes on with the next one.

pub mod fetch;
pub mod plan;
pub mod unseal;
pub mod write;

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use cairn_repo_format::snapshot::Snapshot;
use cairn_repo_format::tree::{Node, NodeType};
use cairn_repo_format::{BlobType, Indexed, RepoError, Repository};

use crate::filter::Patterns;
use crate::fsmeta::{apply_metadata, is_root};
use plan::{Selection, Step};
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
}

/// Why a restore could not start.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The subpath is not in the snapshot.
    #[error("{0:?} is not in the snapshot; see `cairn ls`")]
    NoSuchPath(String),
    /// The target cannot be created.
    #[error("target: {0}")]
    Target(io::Error),
    /// Repository failure.
    #[error(transparent)]
    Repo(#[from] RepoError),
}

/// Reports a problem with one path (relative to the target); the restore goes on.
pub type Report<'a> = dyn FnMut(&Path, &str) + 'a;

struct Ctx<'a, 'r> {
    repo: &'a Repository<Indexed>,
    writer: Writer,
    as_root: bool,
    verify: bool,
    progress: &'a RestoreProgress,
    report: &'a mut Report<'r>,
}

impl Ctx<'_, '_> {
    fn problem(&mut self, rel: &Path, msg: &str) {
        self.progress.errors.fetch_add(1, Ordering::Relaxed);
        (self.report)(rel, msg);
    }

    fn meta(&mut self, path: &Path, rel: &Path, node: &Node) {
        if let Err(e) = apply_metadata(path, node, self.as_root) {
            self.problem(rel, &format!("metadata: {e}"));
        }
    }

    fn step(&mut self, step: Step<'_>) {
        match step {
            Step::Problem { rel, message } => self.problem(rel, &message),
            Step::EnterDir { rel, .. } => {
                if let Err(e) = self.writer.dir(rel) {
                    self.problem(rel, &e.to_string());
                }
            }
            Step::LeaveDir { rel, node } => {
                self.progress.dirs.fetch_add(1, Ordering::Relaxed);
                if let (Some(n), Ok(path)) = (node, self.writer.path_of(rel))
                    && path.is_dir()
                {
                    self.meta(&path, rel, n);
                }
            }
            Step::Entry { rel, node } => self.entry(rel, node),
        }
    }

    fn entry(&mut self, rel: &Path, node: &Node) {
        let result = match node.kind {
            NodeType::File => match self.writer.try_hardlink(rel, node) {
                Ok(true) => Ok(None),
                Ok(false) => self.file(rel, node).map(Some),
                Err(e) => Err(e.to_string()),
            },
            _ => self.writer.special(rel, node).map_err(|e| e.to_string()),
        };
        match result {
            Ok(Some(path)) => {
                self.meta(&path, rel, node);
                self.writer.record_hardlink(&path, node);
            }
            Ok(None) => {}
            Err(msg) => self.problem(rel, &msg),
        }
    }

    /// Writes one file's content; on a bad blob the file is reported and left incomplete.
    fn file(&mut self, rel: &Path, node: &Node) -> Result<PathBuf, String> {
        let (path, f) = self.writer.create_file(rel).map_err(|e| e.to_string())?;
        let mut offset = 0u64;
        for id in node.content.as_deref().unwrap_or_default() {
            let data = fetch::fetch(self.repo, BlobType::Data, id)
                .and_then(|(loc, sealed)| unseal::unseal(self.repo, &loc, &sealed))
                .map_err(|e| format!("content lost: {e}"))?;
            write::write_chunk(&f, offset, &data)
                .map_err(|e| format!("{}: write: {e}", path.display()))?;
            offset += data.len() as u64;
            self.progress
                .bytes
                .fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        f.set_len(offset)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        drop(f);
        if self.verify {
            verify_file(self.repo, &path, node).map_err(|e| format!("verification failed: {e}"))?;
            self.progress.verified.fetch_add(1, Ordering::Relaxed);
        }
        self.progress.files.fetch_add(1, Ordering::Relaxed);
        Ok(path)
    }
}

/// Re-reads a restored file and checks each chunk against the snapshot's blob ids.
fn verify_file(repo: &Repository<Indexed>, path: &Path, node: &Node) -> Result<(), String> {
    let mut f = File::open(path).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    for id in node.content.as_deref().unwrap_or_default() {
        let loc = repo.locate(BlobType::Data, id).map_err(|e| e.to_string())?;
        buf.resize(loc.entry.raw_length as usize, 0);
        f.read_exact(&mut buf)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if repo.key().blob_id(&buf) != *id {
            return Err(format!(
                "{}: content differs from blob {id}",
                path.display()
            ));
        }
    }
    let mut extra = [0u8; 1];
    if f.read(&mut extra).map_err(|e| e.to_string())? != 0 {
        return Err(format!("{}: longer than in the snapshot", path.display()));
    }
    Ok(())
}

/// Restores `snap` (or its subpath) into the target. Problems with single entries go to
/// `report` and are counted; the return is an error only when nothing could start.
pub fn run(
    repo: &Repository<Indexed>,
    snap: &Snapshot,
    opts: &RestoreOptions,
    progress: &RestoreProgress,
    report: &mut Report<'_>,
) -> Result<(), RestoreError> {
    let writer = Writer::new(&opts.target).map_err(RestoreError::Target)?;
    let sel = Selection {
        include: opts.include.clone(),
        exclude: opts.exclude.clone(),
    };
    let mut ctx = Ctx {
        repo,
        writer,
        as_root: is_root(),
        verify: opts.verify,
        progress,
        report,
    };
    let empty = Path::new("");
    let (tree, root_meta, snap_prefix) = match opts
        .subpath
        .as_deref()
        .filter(|s| !s.trim_matches('/').is_empty())
    {
        None => (snap.tree, snap.root.clone(), PathBuf::from("/")),
        Some(sub) => {
            let node = plan::find_subpath(repo, &snap.tree, sub)?
                .ok_or_else(|| RestoreError::NoSuchPath(sub.into()))?;
            match (node.kind, node.subtree) {
                (NodeType::Dir, Some(t)) => (t, Some(node), plan::snap_path(sub)),
                _ => {
                    // A single non-directory: restore it into the target under its name.
                    let rel = PathBuf::from(std::ffi::OsStr::from_bytes(&node.name.0));
                    if Node::name_is_safe(&node.name.0) {
                        ctx.entry(&rel, &node);
                    } else {
                        ctx.problem(&rel, "refusing unsafe name");
                    }
                    return Ok(());
                }
            }
        }
    };
    let included = opts.include.is_empty();
    let mut f = |s: Step<'_>| ctx.step(s);
    plan::walk_tree(repo, &tree, &snap_prefix, empty, &sel, included, &mut f)?;
    if let Some(n) = root_meta {
        let target = ctx.writer.target().to_path_buf();
        ctx.meta(&target, empty, &n);
    }
    Ok(())
}
