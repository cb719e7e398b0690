//! Plan stage: walks the snapshot's trees depth-first (one tree per level in memory, never the
//! whole snapshot), applies the subpath and the include/exclude patterns, refuses unsafe names,
//! and emits what to create, in order: a directory before its entries, its metadata after them.
//!
//! The [`Planner`] carries the steps out on the caller's thread, in order: it creates
//! directories, symlinks, device nodes, fifos and hard links, creates each regular file empty
//! (and keeps it open), locates the file's blobs in the index and hands them to the batch
//! stage. What must wait for file contents, a directory's metadata or a hard link to a file
//! still being written, is deferred to the batch and run when the batch is complete.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use cairn_repo_format::tree::{Node, NodeType};
use cairn_repo_format::{BlobType, Id, Indexed, RepoError, Repository};

use super::Shared;
use super::batch::{After, Batcher, FileState, Outcome, Status};
use super::write::Writer;
use crate::filter::Patterns;

/// One step of a restore.
// A step lives on the stack for one call of the walk's callback; boxing the node would cost an
// allocation per entry.
#[allow(clippy::large_enum_variant)]
pub enum Step<'n> {
    /// Enter (create) a directory at `rel` (relative to the target; empty = the target).
    EnterDir {
        /// Relative path.
        rel: &'n Path,
        /// Metadata to apply when leaving.
        node: Option<&'n Node>,
    },
    /// All entries of the directory at `rel` are done.
    LeaveDir {
        /// Relative path.
        rel: &'n Path,
        /// Metadata to apply.
        node: Option<&'n Node>,
    },
    /// Create a non-directory entry.
    Entry {
        /// Relative path.
        rel: &'n Path,
        /// Its node (handed over: a file keeps it until it is finished).
        node: Node,
    },
    /// An entry's stored name is unsafe (it could leave its directory); it is refused.
    Refused {
        /// Where it would have gone.
        rel: &'n Path,
        /// The stored name.
        name: &'n [u8],
        /// The tree holding it.
        tree: Id,
    },
    /// An entry cannot be restored (its tree is unreadable, a directory has no tree).
    Problem {
        /// Where in the snapshot.
        rel: &'n Path,
        /// What.
        message: String,
    },
}

/// What to restore.
pub struct Selection {
    /// Include patterns (empty: everything).
    pub include: Patterns,
    /// Exclude patterns.
    pub exclude: Patterns,
    /// The host's cancel handle: the walk stops when it is set.
    pub cancel: crate::Cancel,
}

impl Selection {
    fn excluded(&self, snap_path: &Path) -> bool {
        self.exclude.matches(snap_path)
    }

    fn included(&self, snap_path: &Path) -> bool {
        self.include.is_empty() || self.include.matches(snap_path)
    }
}

/// Walks a tree, calling `f` for each step. `snap_prefix` is the tree's path inside the
/// snapshot (`/` for the root), used for pattern matching; `rel` is where it goes in the
/// target. Returns whether anything below was restored.
pub fn walk_tree(
    repo: &Repository<Indexed>,
    tree_id: &Id,
    snap_prefix: &Path,
    rel: &Path,
    sel: &Selection,
    inherited_include: bool,
    f: &mut dyn FnMut(Step<'_>),
) -> Result<bool, RepoError> {
    let tree = repo.load_tree(tree_id)?;
    let mut emitted = false;
    // Patterns match the path inside the snapshot; without any, it is only needed to descend.
    let patterns = !sel.include.is_empty() || !sel.exclude.is_empty();
    let mut child_rel = rel.to_path_buf();
    for node in tree.nodes {
        let name = std::ffi::OsStr::from_bytes_compat(&node.name.0);
        if sel.cancel.is_cancelled() {
            return Ok(emitted);
        }
        if !Node::name_is_safe(&node.name.0) {
            f(Step::Refused {
                rel: &rel.join(name),
                name: &node.name.0,
                tree: *tree_id,
            });
            continue;
        }
        // A safe name is one normal component, so `pop` below undoes this `push`.
        child_rel.push(name);
        let snap_path = (patterns || node.kind == NodeType::Dir).then(|| snap_prefix.join(name));
        if snap_path.as_deref().is_some_and(|p| sel.excluded(p)) {
            child_rel.pop();
            continue;
        }
        let included = inherited_include || snap_path.as_deref().is_none_or(|p| sel.included(p));
        match node.kind {
            NodeType::Dir => {
                let Some(sub) = node.subtree else {
                    f(Step::Problem {
                        rel: &child_rel,
                        message: "directory without a tree".into(),
                    });
                    child_rel.pop();
                    continue;
                };
                if included {
                    f(Step::EnterDir {
                        rel: &child_rel,
                        node: Some(&node),
                    });
                }
                let snap_path = snap_path.unwrap_or_default();
                let below = match walk_tree(repo, &sub, &snap_path, &child_rel, sel, included, f) {
                    Ok(b) => b,
                    Err(e) => {
                        f(Step::Problem {
                            rel: &child_rel,
                            message: e.to_string(),
                        });
                        false
                    }
                };
                // A directory created only because something inside it was included still
                // gets its own metadata from the snapshot.
                if included || below {
                    f(Step::LeaveDir {
                        rel: &child_rel,
                        node: Some(&node),
                    });
                    emitted = true;
                }
            }
            _ if included => {
                f(Step::Entry {
                    rel: &child_rel,
                    node,
                });
                emitted = true;
            }
            _ => {}
        }
        child_rel.pop();
    }
    Ok(emitted)
}

/// Turns raw name bytes into an `OsStr` without loss (Unix).
trait FromBytesCompat {
    fn from_bytes_compat(b: &[u8]) -> &Self;
}

impl FromBytesCompat for std::ffi::OsStr {
    fn from_bytes_compat(b: &[u8]) -> &Self {
        use std::os::unix::ffi::OsStrExt;
        std::ffi::OsStr::from_bytes(b)
    }
}

/// Finds the node at `subpath` (components separated by `/`) below the root tree.
pub fn find_subpath(
    repo: &Repository<Indexed>,
    root: &Id,
    subpath: &str,
) -> Result<Option<Node>, RepoError> {
    let mut tree_id = *root;
    let comps: Vec<&str> = subpath
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    let mut found = None;
    for (i, c) in comps.iter().enumerate() {
        let tree = repo.load_tree(&tree_id)?;
        let Some(n) = tree.find(c.as_bytes()) else {
            return Ok(None);
        };
        if i + 1 < comps.len() {
            match (n.kind, n.subtree) {
                (NodeType::Dir, Some(s)) => tree_id = s,
                _ => return Ok(None),
            }
        }
        found = Some(n.clone());
    }
    Ok(found)
}

/// `/` joined with the components of `subpath`, for pattern matching.
pub fn snap_path(subpath: &str) -> PathBuf {
    let mut p = PathBuf::from("/");
    for c in subpath.split('/').filter(|c| !c.is_empty() && *c != ".") {
        p.push(c);
    }
    p
}

/// (device, inode) of a multiply-linked file: later names of it become hard links.
fn hardlink_key(node: &Node) -> Option<(u64, u64)> {
    (node.kind == NodeType::File && node.links >= 2 && node.inode != 0)
        .then_some((node.device, node.inode))
}

/// Carries out the steps of the walk, in order: creates directories, special files, symlinks,
/// hard links and (empty, open) regular files, and hands file contents to the [`Batcher`].
pub struct Planner<'s, 'a> {
    shared: &'s Shared<'a>,
    writer: Writer,
    batcher: Batcher,
    /// (device, inode) of multiply-linked files restored in this run → their first name.
    hardlinks: HashMap<(u64, u64), (PathBuf, Arc<Outcome>)>,
}

impl<'s, 'a> Planner<'s, 'a> {
    /// A planner writing with `writer` and batching into `batcher`.
    pub fn new(shared: &'s Shared<'a>, writer: Writer, batcher: Batcher) -> Self {
        Planner {
            shared,
            writer,
            batcher,
            hardlinks: HashMap::new(),
        }
    }

    /// Carries out one step of the walk.
    pub fn step(&mut self, step: Step<'_>) {
        match step {
            Step::Problem { rel, message } => self.shared.problem(rel, &message),
            Step::Refused { rel, name, tree } => self.shared.refused(rel, name, Some(tree)),
            Step::EnterDir { rel, .. } => {
                if let Err(e) = self.writer.dir(rel) {
                    self.shared.problem(rel, &e.to_string());
                }
            }
            Step::LeaveDir { rel, node } => {
                self.shared.progress.dirs.fetch_add(1, Ordering::Relaxed);
                if let Some(n) = node {
                    self.defer(After::DirMeta {
                        rel: rel.to_path_buf(),
                        node: Box::new(n.clone()),
                    });
                }
            }
            Step::Entry { rel, node } => self.entry(rel, node),
        }
    }

    /// Creates one non-directory entry (a file's content follows through the batches).
    pub fn entry(&mut self, rel: &Path, node: Node) {
        if node.kind == NodeType::File {
            return self.file(rel, node);
        }
        if matches!(node.kind, NodeType::Chardev | NodeType::Blockdev) && !self.shared.devices {
            self.shared
                .progress
                .devices_skipped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.shared.cx.emit(crate::events::Event::FileSkipped {
                path: rel.to_path_buf(),
                reason: "a device node: not created".into(),
            });
            return;
        }
        match self.writer.special(rel, &node) {
            Ok(Some(path)) => self.shared.meta(&path, rel, &node),
            Ok(None) => {}
            Err(e) => self.shared.problem(rel, &e.to_string()),
        }
    }

    fn file(&mut self, rel: &Path, node: Node) {
        let key = hardlink_key(&node);
        if let Some((first, outcome)) = key.and_then(|k| self.hardlinks.get(&k)) {
            match outcome.get() {
                Status::Ok => {
                    if let Err(e) = self.writer.link(rel, first) {
                        self.shared.problem(rel, &e.to_string());
                    }
                    return;
                }
                Status::Pending => {
                    let step = After::Link {
                        rel: rel.to_path_buf(),
                        first: first.clone(),
                        outcome: outcome.clone(),
                    };
                    return self.defer(step);
                }
                // The first name could not be restored: this one gets its own attempt.
                Status::Failed => {}
            }
        }
        if self.batcher.files_full() {
            self.flush();
        }
        let (path, f) = match self.writer.create_file(rel) {
            Ok(x) => x,
            Err(e) => return self.shared.problem(rel, &e.to_string()),
        };
        let chunks = node.content.as_ref().map_or(0, Vec::len);
        let state = FileState::new(rel.to_path_buf(), path, node, f, chunks);
        let content = state.node.content.as_deref().unwrap_or_default();
        if let Some(k) = key {
            self.hardlinks
                .insert(k, (state.path.clone(), state.outcome.clone()));
        }
        if !content.is_empty() {
            self.batcher.current().add_file();
        }
        let mut offset = 0u64;
        for (i, id) in content.iter().enumerate() {
            if self.batcher.blobs_full() {
                self.flush();
            }
            match self.shared.repo.locate(BlobType::Data, id) {
                Ok(loc) => {
                    self.batcher.current().add_chunk(loc, &state, offset);
                    offset += loc.entry.raw_length as u64;
                }
                Err(e) => {
                    // Without this blob's length the rest cannot be placed: the file is lost.
                    state.fail(self.shared, format!("content lost: {e}"));
                    state.release(self.shared, content.len() - i);
                    break;
                }
            }
        }
        state.set_size(offset);
        // The plan's own reference: a file without content is finished right here.
        state.release(self.shared, 1);
    }

    fn defer(&mut self, step: After) {
        if self.batcher.files_full() {
            self.flush();
        }
        self.batcher.current().defer(step);
    }

    fn flush(&mut self) {
        let after = self.batcher.flush();
        run_after(self.shared, &self.writer, after);
    }

    /// Dispatches what is left, waits for every file, runs the last deferred steps and returns
    /// the writer.
    pub fn finish(self) -> Writer {
        let after = self.batcher.finish();
        run_after(self.shared, &self.writer, after);
        self.writer
    }
}

/// Runs deferred steps whose batch is complete.
fn run_after(shared: &Shared<'_>, writer: &Writer, after: Vec<After>) {
    for step in after {
        match step {
            After::DirMeta { rel, node } => {
                if let Ok(path) = writer.path_of(&rel)
                    && path.is_dir()
                {
                    shared.meta(&path, &rel, &node);
                }
            }
            After::Link {
                rel,
                first,
                outcome,
            } => match outcome.get() {
                Status::Ok => {
                    if let Err(e) = writer.link(&rel, &first) {
                        shared.problem(&rel, &e.to_string());
                    }
                }
                // The first name's error names the lost pack and blob; repeat it for this name.
                Status::Failed | Status::Pending => {
                    let why = outcome.error().unwrap_or("not restored");
                    let message = format!(
                        "{why} (a hard link to {}, which was not restored)",
                        first.display()
                    );
                    shared.problem(&rel, &message);
                }
            },
        }
    }
}
