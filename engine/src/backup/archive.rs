//! The archiver: consumes walk events on the caller's thread and keeps the stack of open
//! directories. For each file it decides, against the parent snapshot's tree (streamed one
//! directory per level, never whole), whether the file is unchanged (its content list is
//! reused, the file is not opened) or must be read (a job for the file workers). When the walk
//! leaves a directory, the directory goes to the tree stage.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use cairn_repo_format::tree::{Node, NodeType, Tree};
use cairn_repo_format::{Id, Indexed, Repository};
use crossbeam_channel::{Receiver, Sender, bounded};

use super::Progress;
use super::read::{ChangeRules, unchanged_content};
use super::tree::{DirBuilder, DirFiles, FileReply, FinishedDir, Pending};
use super::walk::{At, WalkEvent};
use crate::Context;
use crate::events::Event;

/// A file to read.
pub struct FileJob {
    /// Absolute path.
    pub path: PathBuf,
    /// Where to open it when `path` is too long to hand to the kernel.
    pub at: Option<At>,
    /// Its metadata from the walk.
    pub node: Node,
    /// Where the finished node (with content) goes; `None` if it could not be read.
    pub reply: FileReply,
}

/// File jobs per message to the file threads, at most…
const JOB_FILES: usize = 32;
/// …and at most this many bytes of files. One message per file kept the file threads and the
/// archiver waking each other (spins, `sched_yield`, futexes) for every small file.
const JOB_BYTES: u64 = 4 << 20;

/// The pipeline behind the archiver stopped.
#[derive(Debug)]
pub struct Stopped;

/// Archiver state.
pub struct Archiver<'a> {
    repo: &'a Repository<Indexed>,
    rules: ChangeRules,
    progress: &'a Progress,
    cx: &'a Context,
    jobs: Sender<Vec<FileJob>>,
    /// Jobs not sent yet, and their bytes. Sent before any finished directory, whose tree
    /// waits for them.
    pending_jobs: Vec<FileJob>,
    pending_bytes: u64,
    dirs: Sender<FinishedDir>,
    stack: Vec<DirBuilder>,
    /// 0 when the single backup path is a directory (it is the root); else 1 (a synthetic root
    /// holds each path under its name).
    base: usize,
    /// The parent's root listing, until the single root directory is entered.
    root_parent: Option<(Option<Tree>, Option<Id>)>,
    root: Option<Receiver<Id>>,
    /// Metadata of the single backed-up directory.
    pub root_node: Option<Node>,
}

impl<'a> Archiver<'a> {
    /// A new archiver. `parent_root` is the parent snapshot's root tree id.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        repo: &'a Repository<Indexed>,
        rules: ChangeRules,
        progress: &'a Progress,
        cx: &'a Context,
        jobs: Sender<Vec<FileJob>>,
        dirs: Sender<FinishedDir>,
        single_dir: bool,
        parent_root: Option<Id>,
    ) -> Self {
        let mut a = Archiver {
            repo,
            rules,
            progress,
            cx,
            jobs,
            pending_jobs: Vec::new(),
            pending_bytes: 0,
            dirs,
            stack: Vec::new(),
            base: if single_dir { 0 } else { 1 },
            root_parent: None,
            root: None,
            root_node: None,
        };
        let parent = a.load_parent_tree(parent_root, Path::new("/"));
        if single_dir {
            a.root_parent = Some((parent, parent_root));
        } else {
            a.stack.push(DirBuilder {
                node: None,
                parent,
                parent_id: parent_root,
                entries: Vec::new(),
                files: DirFiles::new(),
            });
        }
        a
    }

    fn load_parent_tree(&self, id: Option<Id>, path: &Path) -> Option<Tree> {
        let id = id?;
        match self.repo.load_tree(&id) {
            Ok(t) => Some(t),
            Err(e) => {
                self.cx.emit(Event::ObjectDamaged {
                    object: format!("tree {id} (parent snapshot, at {})", path.display()),
                    problem: format!("unreadable, so everything below is read again: {e}"),
                });
                None
            }
        }
    }

    /// Handles one walk event.
    pub fn handle(&mut self, ev: WalkEvent) -> Result<(), Stopped> {
        let (depth, path, node, at) = match ev {
            WalkEvent::Error { path, message } => {
                self.progress.errors.fetch_add(1, Ordering::Relaxed);
                self.cx.emit(Event::FileUnreadable {
                    path,
                    error: message,
                });
                return Ok(());
            }
            WalkEvent::Entry {
                depth,
                path,
                node,
                at,
            } => (depth, path, node, at),
        };
        if self.base == 0 && depth == 0 {
            let (parent, parent_id) = self.root_parent.take().unwrap_or((None, None));
            self.root_node = Some(node.clone());
            self.stack.push(DirBuilder {
                node: Some(node),
                parent,
                parent_id,
                entries: Vec::new(),
                files: DirFiles::new(),
            });
            return Ok(());
        }
        let level = depth + self.base;
        while self.stack.len() > level {
            self.close_top()?;
        }
        let Some(dir) = self.stack.last_mut() else {
            return Ok(()); // an entry after its root was closed cannot happen with one walk per path
        };
        let old = dir
            .parent
            .as_ref()
            .and_then(|t| t.find(&node.name.0))
            .cloned();
        match node.kind {
            NodeType::Dir => {
                let parent_id = old
                    .filter(|o| o.kind == NodeType::Dir)
                    .and_then(|o| o.subtree);
                let parent = self.load_parent_tree(parent_id, &path);
                self.stack.push(DirBuilder {
                    node: Some(node),
                    parent,
                    parent_id,
                    entries: Vec::new(),
                    files: DirFiles::new(),
                });
            }
            NodeType::File => self.file(path, at, node, old)?,
            _ => dir.entries.push(Pending::Ready(node)),
        }
        Ok(())
    }

    fn file(
        &mut self,
        path: PathBuf,
        at: Option<At>,
        mut node: Node,
        old: Option<Node>,
    ) -> Result<(), Stopped> {
        let p = self.progress;
        p.bytes_total.fetch_add(node.size, Ordering::Relaxed);
        let reuse = old
            .as_ref()
            .and_then(|o| unchanged_content(o, &node, self.rules, self.repo.index()));
        let dir = self
            .stack
            .last_mut()
            .expect("a file is always inside a directory");
        if let Some(content) = reuse {
            node.content = Some(content.to_vec());
            // Unchanged ctime: unchanged xattrs (setting one changes the ctime). Without the
            // ctime to go by, they are read again.
            node.xattrs = if self.rules.ignore_ctime {
                let by = match &at {
                    Some(at) => crate::fsmeta::at_path(at.dir.as_fd(), &at.name),
                    None => path.clone(),
                };
                match crate::fsmeta::read_xattrs(&by) {
                    Ok(x) => x,
                    Err(e) => {
                        p.errors.fetch_add(1, Ordering::Relaxed);
                        self.cx.emit(Event::FileUnreadable {
                            path: path.clone(),
                            error: format!("xattrs: {e}"),
                        });
                        return Ok(());
                    }
                }
            } else {
                old.as_ref().map(|o| o.xattrs.clone()).unwrap_or_default()
            };
            p.files_unmodified.fetch_add(1, Ordering::Relaxed);
            p.bytes_unmodified.fetch_add(node.size, Ordering::Relaxed);
            p.files_done.fetch_add(1, Ordering::Relaxed);
            p.bytes_done.fetch_add(node.size, Ordering::Relaxed);
            dir.entries.push(Pending::Ready(node));
            return Ok(());
        }
        let counter = if old.is_some() {
            &p.files_changed
        } else {
            &p.files_new
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let (index, reply) = dir.files.add();
        dir.entries.push(Pending::File(index));
        self.pending_bytes += node.size;
        self.pending_jobs.push(FileJob {
            path,
            at,
            node,
            reply,
        });
        if self.pending_jobs.len() >= JOB_FILES || self.pending_bytes >= JOB_BYTES {
            self.send_jobs()?;
        }
        Ok(())
    }

    fn send_jobs(&mut self) -> Result<(), Stopped> {
        if self.pending_jobs.is_empty() {
            return Ok(());
        }
        self.pending_bytes = 0;
        self.jobs
            .send(std::mem::take(&mut self.pending_jobs))
            .map_err(|_| Stopped)
    }

    fn close_top(&mut self) -> Result<(), Stopped> {
        self.send_jobs()?;
        let mut dir = self.stack.pop().expect("close_top on a non-empty stack");
        dir.files.close();
        let (reply, rx) = bounded(1);
        let node = dir.node.take();
        let parent_dir = self.stack.last_mut();
        match (parent_dir, node) {
            (Some(parent), Some(n)) => parent.entries.push(Pending::Dir(n, rx)),
            (None, n) => {
                dir.node = n;
                self.root = Some(rx);
            }
            (Some(_), None) => unreachable!("only the root has no node"),
        }
        self.dirs
            .send(FinishedDir { dir, reply })
            .map_err(|_| Stopped)
    }

    /// Closes every open directory; returns the receiver of the root tree id.
    pub fn finish(mut self) -> Result<Receiver<Id>, Stopped> {
        while !self.stack.is_empty() {
            self.close_top()?;
        }
        self.root.ok_or(Stopped)
    }
}
