//! Plan stage: walks the snapshot's trees depth-first (iteratively, one tree per level in
//! memory, never the whole snapshot, at any depth), applies the subpath and the
//! include/exclude patterns, refuses unsafe names and all but the first of duplicate names,
//! and emits what to create, in order: a directory before its entries, its metadata after
//! them.
//!
//! The [`Planner`] carries the steps out on the caller's thread, in order: it keeps the stack
//! of directories the walk is in (each created when the first thing inside it is, and known
//! by its open descriptor, never by path), creates directories, symlinks, device nodes, fifos
//! and hard links, creates each regular file empty (and keeps it open), locates the file's
//! blobs in the index and hands them to the batch stage. What must wait for file contents, a
//! directory's metadata or a hard link to a file still being written, is deferred to the batch
//! and run when the batch is complete.
//!
//! Once the target is full ([`super::full`]), the planner creates nothing more: the walk goes
//! on, reading only trees, so that every entry that would have been restored is counted.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use cairn_repo_format::tree::{Node, NodeType, Tree};
use cairn_repo_format::{BlobType, Id, Indexed, RepoError, Repository};

use super::Shared;
use super::batch::{After, Batcher, FileState, Outcome, Status};
use super::full::{self, Op};
use super::write::{Dir, First, Writer};
use crate::filter::Patterns;

/// One step of a restore.
// A step lives on the stack for one call of the walk's callback; boxing the node would cost an
// allocation per entry.
#[allow(clippy::large_enum_variant)]
pub enum Step<'n> {
    /// The walk goes into the directory at `rel` (relative to the target). With `create`, it is
    /// restored itself and created now; otherwise only if something inside it is restored.
    EnterDir {
        /// Relative path.
        rel: &'n Path,
        /// Whether the directory is included itself.
        create: bool,
    },
    /// The walk leaves the directory it entered last; its entries are all done.
    LeaveDir {
        /// Relative path.
        rel: &'n Path,
        /// Metadata to apply, when the directory or something inside it was restored.
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
    /// A tree holds this entry's name more than once; this one (not the first) is left out.
    Duplicate {
        /// Its path inside the snapshot.
        path: &'n Path,
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

/// A tree being walked.
struct WalkLevel {
    id: Id,
    nodes: std::vec::IntoIter<Node>,
    /// Position of the next node.
    next: usize,
    /// For a tree whose names are not strictly increasing: which nodes repeat an earlier
    /// name. (A tree written by `cairn` is sorted, so this is `None`.)
    repeated: Option<Vec<bool>>,
    /// The directory is included (so everything below it is, unless excluded).
    included: bool,
    /// Something below was restored.
    emitted: bool,
    /// The directory's node (none for the tree the walk started with).
    dir: Option<Node>,
}

impl WalkLevel {
    fn new(id: Id, tree: Tree, included: bool, dir: Option<Node>) -> WalkLevel {
        WalkLevel {
            id,
            repeated: repeated_names(&tree.nodes),
            nodes: tree.nodes.into_iter(),
            next: 0,
            included,
            emitted: false,
            dir,
        }
    }

    /// The next node, and whether its name repeats an earlier one.
    fn next(&mut self) -> Option<(Node, bool)> {
        let node = self.nodes.next()?;
        let i = self.next;
        self.next += 1;
        let repeated = self
            .repeated
            .as_ref()
            .is_some_and(|r| r.get(i).copied().unwrap_or(false));
        Some((node, repeated))
    }
}

/// `None` when the names are strictly increasing (no name twice); else, per node, whether an
/// earlier node has its name.
fn repeated_names(nodes: &[Node]) -> Option<Vec<bool>> {
    if nodes.windows(2).all(|w| w[0].name < w[1].name) {
        return None;
    }
    let mut order: Vec<usize> = (0..nodes.len()).collect();
    order.sort_by(|&a, &b| nodes[a].name.cmp(&nodes[b].name).then(a.cmp(&b)));
    let mut repeated = vec![false; nodes.len()];
    for w in order.windows(2) {
        if nodes[w[0]].name == nodes[w[1]].name {
            repeated[w[1]] = true;
        }
    }
    Some(repeated)
}

/// Walks a tree, calling `f` for each step. `snap_prefix` is the tree's path inside the
/// snapshot (`/` for the root), used for pattern matching and reports; the tree's entries go
/// to the target's top. Returns whether anything below was restored. The walk keeps a stack
/// of trees and one pair of path buffers (in the target, in the snapshot), so no depth
/// overflows the stack and a chain of directories costs time linear in its depth.
pub fn walk_tree(
    repo: &Repository<Indexed>,
    tree_id: &Id,
    snap_prefix: &Path,
    sel: &Selection,
    inherited_include: bool,
    f: &mut dyn FnMut(Step<'_>),
) -> Result<bool, RepoError> {
    // Patterns match the path inside the snapshot; without any, it is only kept for reports.
    let patterns = !sel.include.is_empty() || !sel.exclude.is_empty();
    let mut rel = PathBuf::new();
    let mut snap = snap_prefix.to_path_buf();
    let root = WalkLevel::new(*tree_id, repo.load_tree(tree_id)?, inherited_include, None);
    let mut stack = vec![root];
    while let Some(top) = stack.last_mut() {
        let next = if sel.cancel.is_cancelled() {
            None
        } else {
            top.next()
        };
        let Some((node, repeated)) = next else {
            let Some(done) = stack.pop() else { break };
            let Some(dir) = done.dir else {
                return Ok(done.emitted);
            };
            // A directory created only because something inside it was included still gets
            // its own metadata from the snapshot.
            let restored = done.included || done.emitted;
            f(Step::LeaveDir {
                rel: &rel,
                node: restored.then_some(&dir),
            });
            if restored && let Some(parent) = stack.last_mut() {
                parent.emitted = true;
            }
            rel.pop();
            snap.pop();
            continue;
        };
        let tree = top.id;
        let name = OsStr::from_bytes(&node.name.0);
        if !Node::name_is_safe(&node.name.0) {
            f(Step::Refused {
                rel: &rel.join(name),
                name: &node.name.0,
                tree,
            });
            continue;
        }
        // A safe name is one normal component, so `pop` below undoes this `push`.
        rel.push(name);
        snap.push(name);
        if patterns && sel.excluded(&snap) {
            rel.pop();
            snap.pop();
            continue;
        }
        if repeated {
            f(Step::Duplicate { path: &snap, tree });
            rel.pop();
            snap.pop();
            continue;
        }
        let included = top.included || !patterns || sel.included(&snap);
        match node.kind {
            NodeType::Dir => {
                let Some(sub) = node.subtree else {
                    f(Step::Problem {
                        rel: &rel,
                        message: "directory without a tree".into(),
                    });
                    rel.pop();
                    snap.pop();
                    continue;
                };
                match repo.load_tree(&sub) {
                    Ok(t) => {
                        f(Step::EnterDir {
                            rel: &rel,
                            create: included,
                        });
                        stack.push(WalkLevel::new(sub, t, included, Some(node)));
                        // `rel` and `snap` stay the directory's until it is left.
                        continue;
                    }
                    Err(e) => {
                        if included {
                            f(Step::EnterDir {
                                rel: &rel,
                                create: true,
                            });
                        }
                        f(Step::Problem {
                            rel: &rel,
                            message: e.to_string(),
                        });
                        if included {
                            f(Step::LeaveDir {
                                rel: &rel,
                                node: Some(&node),
                            });
                            top.emitted = true;
                        }
                    }
                }
            }
            _ if included => {
                f(Step::Entry { rel: &rel, node });
                top.emitted = true;
            }
            _ => {}
        }
        rel.pop();
        snap.pop();
    }
    Ok(false)
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

/// A directory the walk is in, as the planner knows it.
enum Level {
    /// Not created yet (nothing inside it restored so far); its name.
    Pending(OsString),
    /// Created, or found to be a real directory.
    Ready(Arc<Dir>),
    /// It could not be created: why (repeated for each entry inside it).
    Failed(String),
}

/// Carries out the steps of the walk, in order: creates directories, special files, symlinks,
/// hard links and (empty, open) regular files, and hands file contents to the [`Batcher`].
///
/// Every entry is created relative to its directory's descriptor. The planner keeps the
/// stack of directories the walk is in, with the deepest one created pinned open; going back
/// up, the parent is reopened (if the writer's cache closed it) through the child's `..`.
pub struct Planner<'s, 'a> {
    shared: &'s Shared<'a>,
    writer: Writer,
    batcher: Batcher,
    /// (device, inode) of multiply-linked files restored in this run → their first name.
    hardlinks: HashMap<(u64, u64), (First, Arc<Outcome>)>,
    /// The directories the walk is in, from the target down; the created ones come first.
    levels: Vec<Level>,
    /// The deepest created directory of `levels`, pinned open.
    current: Arc<Dir>,
    /// The directory whose metadata was applied last, pinned open: the next one is usually
    /// its parent, reopened through its `..`.
    last_meta: Option<Arc<Dir>>,
}

impl<'s, 'a> Planner<'s, 'a> {
    /// A planner writing with `writer` and batching into `batcher`.
    pub fn new(shared: &'s Shared<'a>, writer: Writer, batcher: Batcher) -> Self {
        let root = writer.root().clone();
        writer.pin(&root);
        Planner {
            shared,
            writer,
            batcher,
            hardlinks: HashMap::new(),
            levels: vec![Level::Ready(root.clone())],
            current: root,
            last_meta: None,
        }
    }

    /// Makes `dir` the pinned current directory.
    fn set_current(&mut self, dir: Arc<Dir>) {
        if !Arc::ptr_eq(&dir, &self.current) {
            self.writer.pin(&dir);
            let old = std::mem::replace(&mut self.current, dir);
            self.writer.unpin(&old);
        }
    }

    /// Creates every directory of the walk's stack not created yet, down to the deepest,
    /// and returns it. `dir_rel` is the deepest one's path relative to the target. On failure
    /// returns the message to report (the same for every entry inside).
    fn ready(&mut self, dir_rel: &Path) -> Result<Arc<Dir>, String> {
        let first_pending = self
            .levels
            .iter()
            .rposition(|l| !matches!(l, Level::Pending(_)))
            .map_or(0, |i| i + 1);
        if first_pending == self.levels.len() {
            return match self.levels.last() {
                Some(Level::Ready(d)) => Ok(d.clone()),
                Some(Level::Failed(msg)) => Err(msg.clone()),
                _ => Ok(self.writer.root().clone()),
            };
        }
        if let Some(Level::Failed(msg)) = first_pending
            .checked_sub(1)
            .and_then(|i| self.levels.get(i))
        {
            return Err(msg.clone());
        }
        // The pending directories' paths: `dir_rel` and its parents, deepest first.
        let rels: Vec<&Path> = dir_rel
            .ancestors()
            .take(self.levels.len() - first_pending)
            .collect();
        let mut parent = match first_pending.checked_sub(1).map(|i| &self.levels[i]) {
            Some(Level::Ready(d)) => d.clone(),
            _ => self.writer.root().clone(),
        };
        for (i, rel) in (first_pending..self.levels.len()).zip(rels.into_iter().rev()) {
            let Level::Pending(name) = &self.levels[i] else {
                break;
            };
            match self.writer.subdir(&parent, name, rel) {
                Ok(d) => {
                    self.levels[i] = Level::Ready(d.clone());
                    parent = d;
                }
                Err(e) => {
                    if full::is_target_full(&e) {
                        self.shared.stop.full(&e);
                    }
                    let msg = e.to_string();
                    self.levels[i] = Level::Failed(msg.clone());
                    return Err(msg);
                }
            }
        }
        self.set_current(parent.clone());
        Ok(parent)
    }

    /// The directory holding `rel`, created if need be, and the entry's name; `None` (after
    /// reporting why) when it cannot be had.
    fn parent_of<'r>(&mut self, rel: &'r Path) -> Option<(Arc<Dir>, &'r OsStr)> {
        let Some(name) = rel.file_name() else {
            self.shared.problem(rel, "refusing an entry without a name");
            return None;
        };
        match self.ready(rel.parent().unwrap_or(Path::new(""))) {
            Ok(d) => Some((d, name)),
            // Its directory could not be created because the target is full: counted, as
            // every entry after it, not reported.
            Err(_) if self.shared.full() => {
                self.shared.stop.not_restored(1);
                None
            }
            Err(msg) => {
                self.shared.problem(rel, &msg);
                None
            }
        }
    }

    /// Whether `node` (not a directory) would be restored: sockets never are, device nodes
    /// only when asked for.
    fn restorable(&self, node: &Node) -> bool {
        match node.kind {
            NodeType::Dir | NodeType::Socket => false,
            NodeType::Chardev | NodeType::Blockdev => self.shared.devices,
            NodeType::File | NodeType::Symlink | NodeType::Fifo => true,
        }
    }

    /// A step after the target filled up: nothing is created, the stack of directories the
    /// walk is in is kept, and each entry that would have been restored is counted. Problems
    /// of the snapshot itself (unreadable trees, unsafe or repeated names) are still
    /// reported: they are not the target's.
    fn skip(&mut self, step: Step<'_>) {
        match step {
            Step::EnterDir { rel, .. } => {
                let name = rel.file_name().unwrap_or_default().to_os_string();
                self.levels.push(Level::Pending(name));
            }
            Step::LeaveDir { .. } => {
                self.levels.pop();
            }
            Step::Entry { node, .. } => {
                if self.restorable(&node) {
                    self.shared.stop.not_restored(1);
                }
            }
            Step::Problem { rel, message } => self.shared.problem(rel, &message),
            Step::Refused { rel, name, tree } => self.shared.refused(rel, name, Some(tree)),
            Step::Duplicate { path, tree } => self.shared.duplicate(path, tree),
        }
    }

    /// Carries out one step of the walk.
    pub fn step(&mut self, step: Step<'_>) {
        if self.shared.full() {
            return self.skip(step);
        }
        match step {
            Step::Problem { rel, message } => self.shared.problem(rel, &message),
            Step::Refused { rel, name, tree } => self.shared.refused(rel, name, Some(tree)),
            Step::Duplicate { path, tree } => self.shared.duplicate(path, tree),
            Step::EnterDir { rel, create } => {
                let name = rel.file_name().unwrap_or_default().to_os_string();
                self.levels.push(Level::Pending(name));
                if create
                    && let Err(msg) = self.ready(rel)
                    && !self.shared.full()
                {
                    self.shared.problem(rel, &msg);
                }
            }
            Step::LeaveDir { rel, node } => {
                let left = self.levels.pop();
                if node.is_some() {
                    self.shared.progress.dirs.fetch_add(1, Ordering::Relaxed);
                }
                let Some(Level::Ready(dir)) = left else {
                    return;
                };
                // Back in the parent, which is created too: open it again through `..` if
                // the cache closed it, while this directory is still pinned open.
                if let Some(Level::Ready(parent)) = self.levels.last() {
                    let parent = parent.clone();
                    let _ = self.writer.fd_near(&parent, Some(&dir));
                    self.set_current(parent);
                }
                if let Some(n) = node {
                    self.defer(After::DirMeta {
                        dir,
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
        let Some((dir, name)) = self.parent_of(rel) else {
            return;
        };
        match self.writer.special(&dir, name, rel, &node) {
            Ok(Some(fd)) => self.shared.meta_at(&fd, name, rel, &node),
            Ok(None) => {}
            Err(e) => self.shared.failed(rel, &e),
        }
    }

    fn file(&mut self, rel: &Path, node: Node) {
        let Some((dir, name)) = self.parent_of(rel) else {
            return;
        };
        let key = hardlink_key(&node);
        if let Some((first, outcome)) = key.and_then(|k| self.hardlinks.get(&k)) {
            match outcome.get() {
                Status::Ok => {
                    if let Err(e) = self.writer.link(&dir, name, rel, first) {
                        self.shared.failed(rel, &e);
                    }
                    return;
                }
                Status::Pending => {
                    let step = After::Link {
                        dir,
                        name: name.to_os_string(),
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
            // The batch waited for may have filled the target.
            if self.shared.full() {
                return self.shared.stop.not_restored(1);
            }
        }
        let created = self
            .shared
            .faults
            .check(Op::Create, rel)
            .and_then(|()| self.writer.create_file(&dir, name, rel));
        let (path, f) = match created {
            Ok(x) => x,
            Err(e) => return self.shared.failed(rel, &e),
        };
        let chunks = node.content.as_ref().map_or(0, Vec::len);
        let state = FileState::new(rel.to_path_buf(), path, node, f, chunks);
        let content = state.node.content.as_deref().unwrap_or_default();
        if let Some(k) = key {
            let first = First {
                dir,
                name: name.to_os_string(),
                path: state.path.clone(),
            };
            self.hardlinks.insert(k, (first, state.outcome.clone()));
        }
        if !content.is_empty() {
            self.batcher.current().add_file();
        }
        let mut offset = 0u64;
        for (i, id) in content.iter().enumerate() {
            if self.batcher.blobs_full() {
                self.flush();
            }
            if self.shared.full() {
                // Nothing more is written: the file is given up, counted once.
                state.give_up(self.shared);
                state.release(self.shared, content.len() - i);
                break;
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
        run_after(self.shared, &self.writer, &mut self.last_meta, after);
    }

    /// Dispatches what is left, waits for every file, runs the last deferred steps and returns
    /// the writer.
    pub fn finish(self) -> Writer {
        let Planner {
            shared,
            writer,
            batcher,
            current,
            mut last_meta,
            ..
        } = self;
        run_after(shared, &writer, &mut last_meta, batcher.finish());
        for d in last_meta.iter().chain([&current]) {
            writer.unpin(d);
        }
        writer
    }
}

/// Runs deferred steps whose batch is complete. `last_meta` is the directory whose metadata
/// was set last, kept pinned open.
fn run_after(
    shared: &Shared<'_>,
    writer: &Writer,
    last_meta: &mut Option<Arc<Dir>>,
    after: Vec<After>,
) {
    for step in after {
        match step {
            After::DirMeta { dir, rel, node } => {
                // Directories come in post-order: the last one is usually a child of this
                // one, still open, and this one is reopened through its `..`.
                let Ok(fd) = writer.fd_near(&dir, last_meta.as_ref()) else {
                    continue;
                };
                match fd.readable() {
                    Some(file) => shared.meta_file(file, &rel, &node),
                    // A directory this user may not read: through its parent.
                    None => {
                        if let Some(parent) = dir.parent()
                            && let Ok(pfd) = writer.fd(parent)
                        {
                            shared.meta_at(&pfd, dir.name(), &rel, &node);
                        }
                    }
                }
                writer.pin(&dir);
                if let Some(old) = last_meta.replace(dir) {
                    writer.unpin(&old);
                }
            }
            After::Link {
                dir,
                name,
                rel,
                first,
                outcome,
            } => match outcome.get() {
                Status::Ok => {
                    if let Err(e) = writer.link(&dir, &name, &rel, &first) {
                        shared.failed(&rel, &e);
                    }
                }
                // The first name was given up (or failed) once the target was full: this
                // name is counted, not reported.
                Status::Failed | Status::Pending if shared.full() => {
                    shared.stop.not_restored(1);
                }
                // The first name's error names the lost pack and blob; repeat it for this
                // name.
                Status::Failed | Status::Pending => {
                    let why = outcome.error().unwrap_or("not restored");
                    let message = format!(
                        "{why} (a hard link to {}, which was not restored)",
                        first.path.display()
                    );
                    shared.problem(&rel, &message);
                }
            },
        }
    }
}
