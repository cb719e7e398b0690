//! Walk stage: a depth-first walk of the backup paths in byte order of names, on its own
//! thread, sending [`WalkEvent`]s (one per entry, with its full metadata) in batches. Excluded
//! entries (and everything below an excluded directory) are never visited;
//! `--one-file-system` stops at mount points. Errors (an unreadable directory, a vanished
//! file) become events so the archiver can report them and go on.
//!
//! Directories are opened relative to their parent's descriptor (`openat` with
//! `O_NOFOLLOW`) and entries examined relative to theirs (`fstatat`, `readlinkat`), so the
//! walk goes to any depth, below `PATH_MAX` too: a path too long for the kernel is never
//! handed to it. It keeps one path buffer (each entry's path is still sent, for reports and
//! patterns) and at most [`OPEN_DIRS`] directories open: going back up to a directory closed
//! meanwhile reopens it through its child's `..`, checked by device and inode.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use cairn_repo_format::tree::Node;
use crossbeam_channel::Sender;
use nix::dir::Dir;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode};

use super::Progress;
use crate::filter::Patterns;
use crate::fsmeta::{LONG_PATH, OwnerNames, node_from_stat};

/// One walked entry, or a problem at a path.
// Nearly every event is an `Entry`; boxing the node would cost an allocation per file.
#[allow(clippy::large_enum_variant)]
pub enum WalkEvent {
    /// An entry at `depth` (0 = the backup path itself).
    Entry {
        /// Depth below the backup path.
        depth: usize,
        /// Absolute path.
        path: PathBuf,
        /// Metadata (no content or subtree yet).
        node: Node,
        /// Where to open it when `path` is too long to hand to the kernel.
        at: Option<At>,
    },
    /// Something at `path` could not be read; it is left out of the snapshot.
    Error {
        /// Where.
        path: PathBuf,
        /// What.
        message: String,
    },
}

/// An entry as its directory's descriptor and its name: how the read stage opens a file
/// whose path is longer than the kernel takes.
#[derive(Clone)]
pub struct At {
    /// The directory holding it, open.
    pub dir: Arc<OwnedFd>,
    /// Its name there.
    pub name: OsString,
}

/// What to walk and what to leave out.
#[derive(Clone)]
pub struct WalkSettings {
    /// Absolute backup paths, sorted by name.
    pub paths: Vec<PathBuf>,
    /// Exclude patterns.
    pub excludes: Patterns,
    /// Stay on each path's file system.
    pub one_file_system: bool,
}

/// Directories the walk keeps open at most (the deepest ones); shallower ones are reopened
/// when the walk comes back to them.
pub const OPEN_DIRS: usize = 32;

/// A directory being walked.
struct Frame {
    /// Open while among the [`OPEN_DIRS`] deepest.
    dir: Option<Dir>,
    /// A duplicate of its descriptor handed to the read stage, made for the first entry whose
    /// path is too long.
    shared: Option<Arc<OwnedFd>>,
    /// Device and inode, to check a reopened directory.
    id: (u64, u64),
    /// Names not walked yet, in byte order.
    names: std::vec::IntoIter<OsString>,
    /// Length of the directory's path in the walk's buffer.
    path_len: usize,
    /// Its depth (0 = the backup path).
    depth: usize,
}

/// What [`FsWalk::next`] found; its path is [`FsWalk::path`].
enum Found {
    /// An entry: its depth and its `fstatat` (for a directory the walk enters, its `fstat`
    /// once its names are read, as its access time is then).
    Entry(usize, FileStat),
    /// A problem: the message.
    Error(String),
}

/// Opens directory `name` of `dir` (or the path `name` itself) for reading, never through a
/// symlink.
fn open_dir(dir: Option<BorrowedFd<'_>>, name: &Path) -> nix::Result<Dir> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    match dir {
        Some(d) => Dir::openat(d, name, flags | OFlag::O_NOFOLLOW, Mode::empty()),
        None => Dir::open(name, flags, Mode::empty()),
    }
}

fn identity(fd: BorrowedFd<'_>) -> nix::Result<(u64, u64)> {
    let st = nix::sys::stat::fstat(fd)?;
    // The field widths of `struct stat` differ between architectures.
    #[allow(clippy::unnecessary_cast)]
    Ok((st.st_dev as u64, st.st_ino as u64))
}

/// The names in `dir` (without `.` and `..`), in byte order.
fn read_names(dir: &mut Dir) -> nix::Result<Vec<OsString>> {
    let mut names = Vec::new();
    for e in dir.iter() {
        let n = e?.file_name().to_bytes().to_vec();
        if n != b"." && n != b".." {
            names.push(OsString::from_vec(n));
        }
    }
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
}

/// A depth-first walk of one backup path, names in byte order, directories read through
/// descriptors. Not an `Iterator`: what it found is described by [`FsWalk::path`] and the
/// accessors until the next call.
///
/// A directory is read when it is found, before it is returned (as `walkdir` did): its
/// metadata is taken after the read, so that its access time (which the read may set) is the
/// same in the next backup.
struct FsWalk<'s> {
    excludes: &'s Patterns,
    one_file_system: bool,
    root_dev: u64,
    path: PathBuf,
    stack: Vec<Frame>,
    /// The backup path itself is still to be returned.
    at_root: bool,
    /// The directory last returned, read: its entries come next.
    entering: Option<Frame>,
    /// Why the directory last returned could not be read: reported next.
    unreadable: Option<String>,
    /// The name of the entry last returned (below the backup path).
    name: OsString,
}

impl<'s> FsWalk<'s> {
    fn new(root: &Path, s: &'s WalkSettings) -> FsWalk<'s> {
        FsWalk {
            excludes: &s.excludes,
            one_file_system: s.one_file_system,
            root_dev: 0,
            path: root.to_path_buf(),
            stack: Vec::new(),
            at_root: true,
            entering: None,
            unreadable: None,
            name: OsString::new(),
        }
    }

    /// The path of what was found last.
    fn path(&self) -> &Path {
        &self.path
    }

    /// The directory holding the entry last returned, open (none for the backup path).
    fn dir(&self) -> Option<BorrowedFd<'_>> {
        self.stack.last()?.dir.as_ref().map(AsFd::as_fd)
    }

    /// The entry last returned as its directory and name, for the read stage (a duplicate of
    /// the directory's descriptor, made once per directory).
    fn at(&mut self) -> Option<At> {
        let frame = self.stack.last_mut()?;
        if frame.shared.is_none() {
            let fd = frame.dir.as_ref()?.as_fd().try_clone_to_owned().ok()?;
            frame.shared = Some(Arc::new(fd));
        }
        Some(At {
            dir: frame.shared.clone()?,
            name: self.name.clone(),
        })
    }

    /// The next entry or problem; `None` when the backup path is walked.
    fn next(&mut self) -> Option<Found> {
        if std::mem::take(&mut self.at_root) {
            return Some(self.root());
        }
        if let Some(message) = self.unreadable.take() {
            return Some(Found::Error(message));
        }
        if let Some(frame) = self.entering.take() {
            self.push(frame);
        }
        loop {
            let frame = self.stack.last_mut()?;
            let Some(name) = frame.names.next() else {
                if let Some(message) = self.leave() {
                    return Some(Found::Error(message));
                }
                continue;
            };
            let depth = frame.depth + 1;
            let path_len = frame.path_len;
            self.path.as_mut_os_string().truncate_to(path_len);
            self.path.push(&name);
            if self.excludes.matches(&self.path) {
                continue;
            }
            self.name = name;
            let Some(dir) = self.stack.last().and_then(|f| f.dir.as_ref()) else {
                // Its directory could not be reopened (reported when going back up).
                continue;
            };
            let st = match nix::sys::stat::fstatat(dir, &*self.name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(e) => return Some(Found::Error(io::Error::from(e).to_string())),
            };
            // The field widths of `struct stat` differ between architectures.
            #[allow(clippy::unnecessary_cast)]
            let enter = st.st_mode as u32 & libc::S_IFMT == libc::S_IFDIR
                && (!self.one_file_system || st.st_dev as u64 == self.root_dev);
            let st = if enter {
                self.read_dir(depth).unwrap_or(st)
            } else {
                st
            };
            return Some(Found::Entry(depth, st));
        }
    }

    /// The backup path itself, read if it is a directory.
    fn root(&mut self) -> Found {
        match nix::sys::stat::lstat(&self.path) {
            Ok(st) => {
                // The field widths of `struct stat` differ between architectures.
                #[allow(clippy::unnecessary_cast)]
                let is_dir = st.st_mode as u32 & libc::S_IFMT == libc::S_IFDIR;
                #[allow(clippy::unnecessary_cast)]
                {
                    self.root_dev = st.st_dev as u64;
                }
                let st = if is_dir {
                    self.read_dir(0).unwrap_or(st)
                } else {
                    st
                };
                Found::Entry(0, st)
            }
            Err(e) => Found::Error(io::Error::from(e).to_string()),
        }
    }

    /// Opens and reads the directory just found at `depth` (the entry [`FsWalk::name`] of the
    /// deepest open directory, or at depth 0 the backup path itself), to be entered next;
    /// returns its `fstat`. When it cannot be read, the problem is reported next, and `None`
    /// returned.
    fn read_dir(&mut self, depth: usize) -> Option<FileStat> {
        let parent = match depth {
            0 => None,
            _ => self
                .stack
                .last()
                .and_then(|f| f.dir.as_ref())
                .map(AsFd::as_fd),
        };
        let read = || -> nix::Result<(Dir, Vec<OsString>, FileStat)> {
            let mut dir = match parent {
                Some(p) => open_dir(Some(p), Path::new(&self.name))?,
                None if depth == 0 => open_dir(None, &self.path)?,
                None => return Err(nix::errno::Errno::EBADF),
            };
            let names = read_names(&mut dir)?;
            let st = nix::sys::stat::fstat(dir.as_fd())?;
            Ok((dir, names, st))
        };
        match read() {
            Ok((dir, names, st)) => {
                // The field widths of `struct stat` differ between architectures.
                #[allow(clippy::unnecessary_cast)]
                let id = (st.st_dev as u64, st.st_ino as u64);
                self.entering = Some(Frame {
                    dir: Some(dir),
                    shared: None,
                    id,
                    names: names.into_iter(),
                    path_len: self.path.as_os_str().len(),
                    depth,
                });
                Some(st)
            }
            Err(e) => {
                self.unreadable = Some(io::Error::from(e).to_string());
                None
            }
        }
    }

    /// Enters a directory read by [`FsWalk::read_dir`], closing the shallowest open one
    /// beyond [`OPEN_DIRS`].
    fn push(&mut self, frame: Frame) {
        self.stack.push(frame);
        if let Some(i) = self.stack.len().checked_sub(OPEN_DIRS + 1) {
            let f = &mut self.stack[i];
            f.dir = None;
            f.shared = None;
        }
    }

    /// Leaves the deepest directory; the one above it, if it was closed, is reopened through
    /// `..` (or its path, when short enough) and must be the same directory. If it cannot be,
    /// its remaining entries are left out, and the message says so (the path is then the
    /// directory's).
    fn leave(&mut self) -> Option<String> {
        let done = self.stack.pop()?;
        let top = self.stack.last_mut()?;
        self.path.as_mut_os_string().truncate_to(top.path_len);
        if top.dir.is_some() {
            return None;
        }
        let via_child = done
            .dir
            .as_ref()
            .and_then(|d| open_dir(Some(d.as_fd()), Path::new("..")).ok());
        let via_path = || {
            (self.path.as_os_str().len() < LONG_PATH)
                .then(|| open_dir(None, &self.path).ok())
                .flatten()
        };
        let reopened = via_child
            .filter(|d| identity(d.as_fd()).is_ok_and(|id| id == top.id))
            .or_else(|| via_path().filter(|d| identity(d.as_fd()).is_ok_and(|id| id == top.id)));
        match reopened {
            Some(d) => {
                top.dir = Some(d);
                None
            }
            None => {
                let left = top.names.by_ref().count();
                (left > 0).then(|| {
                    format!(
                        "the directory was moved or replaced during the backup; its last {left} \
                         entries are left out"
                    )
                })
            }
        }
    }
}

/// Truncates an `OsString` to `len` bytes (a length it had before).
trait TruncateTo {
    fn truncate_to(&mut self, len: usize);
}

impl TruncateTo for OsString {
    fn truncate_to(&mut self, len: usize) {
        let mut bytes = std::mem::take(self).into_vec();
        bytes.truncate(len);
        *self = OsString::from_vec(bytes);
    }
}

/// Events per message: one message per entry made the archiver wait on an empty queue (a
/// spin, a `sched_yield`, a futex) for most entries of an unchanged backup.
pub const BATCH: usize = 256;

/// Walks every path, sending events in batches of [`BATCH`], in order, until done or until the
/// receiver hangs up.
pub fn walk(s: &WalkSettings, tx: &Sender<Vec<WalkEvent>>) {
    let mut owners = OwnerNames::default();
    let mut batch = Vec::with_capacity(BATCH);
    for root in &s.paths {
        let mut w = FsWalk::new(root, s);
        while let Some(found) = w.next() {
            let ev = match found {
                Found::Error(message) => WalkEvent::Error {
                    path: w.path().to_path_buf(),
                    message,
                },
                Found::Entry(depth, st) => {
                    let path = w.path().to_path_buf();
                    let built = match w.dir() {
                        Some(dir) => node_from_stat(Some(dir), &w.name, &path, &st, &mut owners),
                        None => {
                            let name = path
                                .file_name()
                                .map(|n| n.to_os_string())
                                .unwrap_or_else(|| "root".into());
                            node_from_stat(None, &name, &path, &st, &mut owners)
                        }
                    };
                    match built {
                        Ok(node) => {
                            let at = (depth > 0 && path.as_os_str().len() >= LONG_PATH)
                                .then(|| w.at())
                                .flatten();
                            WalkEvent::Entry {
                                depth,
                                path,
                                node,
                                at,
                            }
                        }
                        Err(e) => WalkEvent::Error {
                            path,
                            message: e.to_string(),
                        },
                    }
                }
            };
            batch.push(ev);
            if batch.len() == BATCH
                && tx
                    .send(std::mem::replace(&mut batch, Vec::with_capacity(BATCH)))
                    .is_err()
            {
                return;
            }
        }
    }
    if !batch.is_empty() {
        let _ = tx.send(batch);
    }
}

/// Counts files and bytes ahead of the backup, for the progress display's ETA.
pub fn scan_totals(s: &WalkSettings, progress: &Progress) {
    for root in &s.paths {
        let mut w = FsWalk::new(root, s);
        while let Some(found) = w.next() {
            // The field widths of `struct stat` differ between architectures.
            #[allow(clippy::unnecessary_cast)]
            let file = match found {
                Found::Entry(_, st) => {
                    (st.st_mode as u32 & libc::S_IFMT == libc::S_IFREG).then_some(st.st_size as u64)
                }
                Found::Error(_) => None,
            };
            if let Some(len) = file {
                progress.total_files.fetch_add(1, Ordering::Relaxed);
                progress.total_bytes.fetch_add(len, Ordering::Relaxed);
            }
        }
    }
    progress.scan_done.store(true, Ordering::Relaxed);
}
