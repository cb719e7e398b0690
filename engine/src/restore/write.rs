//! Write stage: creates entries inside the target without ever leaving it, writes file contents
//! on several threads, and finishes each file when its last chunk is in.
//!
//! * [`Writer`] (used by the plan, on its thread, in order): every entry is created relative to
//!   its parent directory's open descriptor (`mkdirat`, `openat`, `symlinkat`, `mknodat`,
//!   `linkat`; metadata through the entry's own descriptor or `fchownat`, `fchmodat`,
//!   `utimensat` relative to the parent) under a name the plan checked (one normal
//!   component). No path of a restored entry is handed to the kernel, so an entry costs the
//!   same at any depth and no path is ever too long (`ENAMETOOLONG`). Directories are opened
//!   with `O_NOFOLLOW | O_DIRECTORY`, so a symlink already in the target is never followed (it
//!   is replaced by a real directory); files are created with `O_EXCL | O_NOFOLLOW` after
//!   removing what was there, and stay open for the threads that write their contents.
//! * [`Dir`]: a directory of the target that this restore created or checked. At most
//!   [`DIR_FDS`] of them are held open, least recently used closed first, plus the few pinned
//!   in use (the target, the plan's current directory, the last one whose metadata was set).
//!   One that was closed is opened again from its parent by name, or from a child through `..`
//!   (checked to be the same directory by device and inode): walking a chain of any depth down
//!   and back up costs time linear in its depth, with a bounded number of descriptors.
//! * [`write_blob`] (called by the unseal threads): writes a blob's plaintext with `pwrite` at
//!   each of its offsets in the open files, skipping all-zero chunks, so sparse files stay
//!   sparse.
//! * [`finish_file`]: when a file's last chunk is written, sets its length, re-reads it (through
//!   its descriptor) against the snapshot with `--verify`, and applies its metadata (times
//!   last).

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use cairn_repo_format::tree::{Node, NodeType};
use cairn_repo_format::{BlobType, Indexed, Repository};
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{Mode, SFlag};

use super::Shared;
use super::batch::{Dest, FileState};
use super::full::{self, Op};
use super::unseal::Plain;

/// Directory descriptors a restore keeps open at most, besides the pinned ones (see [`Dir`]).
pub const DIR_FDS: usize = 64;

/// An open directory: for reading, so its own metadata can be set through it, or (a directory
/// already in the target that this user may not read) `O_PATH`, only a base for `*at` calls.
pub struct DirFd {
    file: File,
    readable: bool,
}

impl DirFd {
    /// The descriptor.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// The directory as a file, when it was opened for reading.
    pub fn readable(&self) -> Option<&File> {
        self.readable.then_some(&self.file)
    }
}

/// A directory of the target that this restore created, or found to be a real directory. It
/// knows its parent and its name, never its path; its descriptor is open while the
/// [`Writer`]'s cache keeps it.
pub struct Dir {
    parent: Option<Arc<Dir>>,
    name: OsString,
    /// Device and inode, to recognise it when it is opened again through a child's `..`.
    id: (u64, u64),
    fd: Mutex<Option<Arc<DirFd>>>,
    /// When it was last used (the cache's clock).
    stamp: AtomicU64,
    /// While above 0, the cache does not close it.
    pins: AtomicU32,
    /// Directories of this writer with an open descriptor.
    open: Arc<AtomicUsize>,
}

impl Dir {
    /// Its name in its parent.
    pub fn name(&self) -> &OsStr {
        &self.name
    }

    /// The directory holding it (none for the target).
    pub fn parent(&self) -> Option<&Arc<Dir>> {
        self.parent.as_ref()
    }

    fn cached(&self) -> Option<Arc<DirFd>> {
        lock(&self.fd).clone()
    }

    fn is_parent_of(self: &Arc<Self>, child: &Dir) -> bool {
        child.parent.as_ref().is_some_and(|p| Arc::ptr_eq(p, self))
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let fd = match self.fd.get_mut() {
            Ok(fd) => fd.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if fd.is_some() {
            self.open.fetch_sub(1, Ordering::Relaxed);
        }
        // Dropping the last handle on a deep chain would drop its parents recursively, one
        // stack frame per level: unlink them one by one instead.
        let mut next = self.parent.take();
        while let Some(p) = next {
            next = match Arc::try_unwrap(p) {
                Ok(mut d) => d.parent.take(),
                Err(_) => None,
            };
        }
    }
}

/// The first restored name of a multiply-linked file, which later names link to.
#[derive(Clone)]
pub struct First {
    /// Its directory.
    pub dir: Arc<Dir>,
    /// Its name there.
    pub name: OsString,
    /// Its path, for messages.
    pub path: PathBuf,
}

/// Creates entries below one target directory.
pub struct Writer {
    target: PathBuf,
    root: Arc<Dir>,
    /// Files are opened for reading too, so `--verify` can read them back.
    read_back: bool,
    open: Arc<AtomicUsize>,
    /// Directories by last use (stale entries are skipped): the front is closed first.
    lru: Mutex<VecDeque<(u64, Weak<Dir>)>>,
    clock: AtomicU64,
}

/// Locks `m`; a lock poisoned by a panic elsewhere is still used (the data is plain state).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `e` with where it happened; the operating system's code stays, so that a full target is
/// still recognised ([`full::is_target_full`]).
fn err(path: &Path, what: &str, e: io::Error) -> io::Error {
    full::located(path, what, e)
}

fn errno(e: nix::errno::Errno) -> io::Error {
    io::Error::from(e)
}

/// Opens the directory `name` of `dir` (or the target itself, with `dir` `None`): for reading,
/// or `O_PATH` when it may not be read. Never through a symlink.
fn open_dir(dir: Option<BorrowedFd<'_>>, name: &Path) -> io::Result<DirFd> {
    let base = OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let open = |flags: OFlag| -> nix::Result<OwnedFd> {
        match dir {
            Some(d) => nix::fcntl::openat(d, name, flags, Mode::empty()),
            None => nix::fcntl::open(name, flags, Mode::empty()),
        }
    };
    let nofollow = if dir.is_some() {
        OFlag::O_NOFOLLOW
    } else {
        OFlag::empty()
    };
    match open(base | nofollow | OFlag::O_RDONLY) {
        Ok(fd) => Ok(DirFd {
            file: File::from(fd),
            readable: true,
        }),
        Err(nix::errno::Errno::EACCES) => Ok(DirFd {
            file: File::from(open(base | nofollow | OFlag::O_PATH).map_err(errno)?),
            readable: false,
        }),
        Err(e) => Err(errno(e)),
    }
}

fn identity(fd: BorrowedFd<'_>) -> io::Result<(u64, u64)> {
    let st = nix::sys::stat::fstat(fd).map_err(errno)?;
    Ok((st.st_dev, st.st_ino))
}

/// Refuses anything but one normal path component (the plan refuses such names before; this
/// is the writer's own guard).
fn check_name(name: &OsStr) -> io::Result<()> {
    if Node::name_is_safe(name.as_bytes()) {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing name {name:?}"),
        ))
    }
}

impl Writer {
    /// A writer into `target`, which is created if missing. With `read_back`, files are
    /// opened for reading too (for `--verify`).
    pub fn new(target: &Path, read_back: bool) -> io::Result<Writer> {
        std::fs::create_dir_all(target).map_err(|e| err(target, "cannot create target", e))?;
        let target = target
            .canonicalize()
            .map_err(|e| err(target, "cannot resolve target", e))?;
        let fd = open_dir(None, &target).map_err(|e| err(&target, "cannot open target", e))?;
        let id = identity(fd.fd()).map_err(|e| err(&target, "cannot inspect target", e))?;
        let open = Arc::new(AtomicUsize::new(1));
        let root = Arc::new(Dir {
            parent: None,
            name: OsString::new(),
            id,
            fd: Mutex::new(Some(Arc::new(fd))),
            stamp: AtomicU64::new(0),
            pins: AtomicU32::new(1),
            open: open.clone(),
        });
        Ok(Writer {
            target,
            root,
            read_back,
            open,
            lru: Mutex::new(VecDeque::new()),
            clock: AtomicU64::new(0),
        })
    }

    /// The target directory.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// The target as a [`Dir`] (always open).
    pub fn root(&self) -> &Arc<Dir> {
        &self.root
    }

    /// The path of `rel` (relative to the target), for messages only.
    pub fn display_path(&self, rel: &Path) -> PathBuf {
        self.target.join(rel)
    }

    /// How many directory descriptors are open now.
    pub fn open_dirs(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Keeps `dir`'s descriptor open until [`Writer::unpin`].
    pub fn pin(&self, dir: &Arc<Dir>) {
        dir.pins.fetch_add(1, Ordering::Relaxed);
    }

    /// Undoes one [`Writer::pin`].
    pub fn unpin(&self, dir: &Arc<Dir>) {
        let _ = dir
            .pins
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// Marks `dir` used now.
    fn touch(&self, dir: &Arc<Dir>) {
        // Only a directory in the older half is moved, so one used for every file of a large
        // directory costs a comparison, not a queue entry per file.
        if dir.stamp.load(Ordering::Relaxed) + (DIR_FDS as u64) / 2
            < self.clock.load(Ordering::Relaxed)
        {
            self.requeue(dir);
        }
    }

    fn requeue(&self, dir: &Arc<Dir>) {
        let t = self.clock.fetch_add(1, Ordering::Relaxed) + 1;
        dir.stamp.store(t, Ordering::Relaxed);
        let mut lru = lock(&self.lru);
        lru.push_back((t, Arc::downgrade(dir)));
        if lru.len() > 4 * DIR_FDS + 16 {
            lru.retain(|(t, w)| {
                w.upgrade()
                    .is_some_and(|d| d.stamp.load(Ordering::Relaxed) == *t && d.cached().is_some())
            });
        }
    }

    /// Keeps `fd` as `dir`'s descriptor, closing the least recently used others beyond
    /// [`DIR_FDS`].
    fn keep(&self, dir: &Arc<Dir>, fd: Arc<DirFd>) {
        if lock(&dir.fd).replace(fd).is_none() {
            self.open.fetch_add(1, Ordering::Relaxed);
        }
        self.requeue(dir);
        // Every open directory has one current entry in the queue; pinned ones go to its
        // back, and there are fewer of them than the bound, so this ends.
        let mut turns = lock(&self.lru).len() * 2;
        while self.open.load(Ordering::Relaxed) > DIR_FDS && turns > 0 {
            turns -= 1;
            let Some((t, w)) = lock(&self.lru).pop_front() else {
                break;
            };
            let Some(d) = w.upgrade() else { continue };
            if d.stamp.load(Ordering::Relaxed) != t || d.cached().is_none() {
                continue;
            }
            if d.pins.load(Ordering::Relaxed) > 0 {
                self.requeue(&d);
                continue;
            }
            if lock(&d.fd).take().is_some() {
                self.open.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// `dir`'s descriptor, opened again if it was closed.
    pub fn fd(&self, dir: &Arc<Dir>) -> io::Result<Arc<DirFd>> {
        self.fd_near(dir, None)
    }

    /// `dir`'s descriptor, opened again if it was closed: through `..` of `near` when that is
    /// a child of `dir` that is open (the usual case when a walk goes back up), else by name
    /// from the nearest open directory above it (the target always is).
    pub fn fd_near(&self, dir: &Arc<Dir>, near: Option<&Arc<Dir>>) -> io::Result<Arc<DirFd>> {
        if let Some(fd) = dir.cached() {
            self.touch(dir);
            return Ok(fd);
        }
        if let Some(child) = near
            && dir.is_parent_of(child)
            && let Some(cfd) = child.cached()
            && let Ok(fd) = open_dir(Some(cfd.fd()), Path::new(".."))
            && identity(fd.fd()).is_ok_and(|id| id == dir.id)
        {
            let fd = Arc::new(fd);
            self.keep(dir, fd.clone());
            return Ok(fd);
        }
        let mut chain = vec![dir.clone()];
        let mut base = loop {
            let Some(parent) = chain.last().and_then(|d| d.parent.clone()) else {
                return Err(io::Error::other("no open directory above"));
            };
            if let Some(fd) = parent.cached() {
                break fd;
            }
            chain.push(parent);
        };
        while let Some(d) = chain.pop() {
            let fd = open_dir(Some(base.fd()), Path::new(&d.name))?;
            if identity(fd.fd())? != d.id {
                return Err(io::Error::other(
                    "the directory was replaced during the restore",
                ));
            }
            let fd = Arc::new(fd);
            self.keep(&d, fd.clone());
            base = fd;
        }
        Ok(base)
    }

    /// Makes `name` in `parent` a real directory (kept if it is one, created if missing, and
    /// anything else there, a file or a symlink, which is never followed, replaced) and opens
    /// it. `rel` is its path relative to the target, for messages.
    pub fn subdir(&self, parent: &Arc<Dir>, name: &OsStr, rel: &Path) -> io::Result<Arc<Dir>> {
        check_name(name)?;
        let pfd = self
            .fd(parent)
            .map_err(|e| err(&self.display_path(rel), "cannot open parent", e))?;
        let p = pfd.fd();
        let mkdir = || nix::sys::stat::mkdirat(p, name, Mode::from_bits_truncate(0o700));
        match mkdir() {
            Ok(()) => {}
            Err(nix::errno::Errno::EEXIST) => {
                match nix::sys::stat::fstatat(p, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                    Ok(st)
                        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT
                            == SFlag::S_IFDIR => {}
                    Ok(_) => {
                        nix::unistd::unlinkat(p, name, nix::unistd::UnlinkatFlags::NoRemoveDir)
                            .map_err(|e| {
                                err(&self.display_path(rel), "cannot replace", errno(e))
                            })?;
                        mkdir().map_err(|e| {
                            err(&self.display_path(rel), "cannot create directory", errno(e))
                        })?;
                    }
                    Err(e) => return Err(err(&self.display_path(rel), "cannot inspect", errno(e))),
                }
            }
            Err(e) => {
                return Err(err(
                    &self.display_path(rel),
                    "cannot create directory",
                    errno(e),
                ));
            }
        }
        let fd = open_dir(Some(p), Path::new(name))
            .map_err(|e| err(&self.display_path(rel), "cannot open directory", e))?;
        let id =
            identity(fd.fd()).map_err(|e| err(&self.display_path(rel), "cannot inspect", e))?;
        let dir = Arc::new(Dir {
            parent: Some(parent.clone()),
            name: name.to_os_string(),
            id,
            fd: Mutex::new(None),
            stamp: AtomicU64::new(0),
            pins: AtomicU32::new(0),
            open: self.open.clone(),
        });
        self.keep(&dir, Arc::new(fd));
        Ok(dir)
    }

    /// Removes a non-directory `name` in `dir` so it can be created anew; a directory there is
    /// an error for a non-directory entry.
    fn clear(&self, dir: BorrowedFd<'_>, name: &OsStr, rel: &Path) -> io::Result<()> {
        match nix::sys::stat::fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR => {
                Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                        "{}: a directory is in the way; remove it or restore elsewhere",
                        self.display_path(rel).display()
                    ),
                ))
            }
            Ok(_) => nix::unistd::unlinkat(dir, name, nix::unistd::UnlinkatFlags::NoRemoveDir)
                .map_err(|e| err(&self.display_path(rel), "cannot replace", errno(e))),
            Err(nix::errno::Errno::ENOENT) => Ok(()),
            Err(e) => Err(err(&self.display_path(rel), "cannot inspect", errno(e))),
        }
    }

    /// Makes `name` in `dir` (at `rel`) another name of the file `first`.
    pub fn link(&self, dir: &Arc<Dir>, name: &OsStr, rel: &Path, first: &First) -> io::Result<()> {
        check_name(name)?;
        let fd = self
            .fd(dir)
            .map_err(|e| err(&self.display_path(rel), "cannot open parent", e))?;
        self.clear(fd.fd(), name, rel)?;
        let from = self
            .fd(&first.dir)
            .map_err(|e| err(&first.path, "cannot open directory", e))?;
        nix::unistd::linkat(
            from.fd(),
            first.name.as_os_str(),
            fd.fd(),
            name,
            AtFlags::empty(),
        )
        .map_err(|e| err(&self.display_path(rel), "cannot link", errno(e)))
    }

    /// Creates a new, empty regular file `name` in `dir` (at `rel`): whatever non-directory
    /// was there is replaced (`O_EXCL` never follows a symlink, so one standing there is
    /// removed, not used). Returns its path (for messages) and the open file.
    pub fn create_file(
        &self,
        dir: &Arc<Dir>,
        name: &OsStr,
        rel: &Path,
    ) -> io::Result<(PathBuf, File)> {
        check_name(name)?;
        let path = self.display_path(rel);
        let fd = self
            .fd(dir)
            .map_err(|e| err(&path, "cannot open parent", e))?;
        let access = if self.read_back {
            OFlag::O_RDWR
        } else {
            OFlag::O_WRONLY
        };
        let flags = access | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let create = || nix::fcntl::openat(fd.fd(), name, flags, Mode::from_bits_truncate(0o600));
        let f = match create() {
            Err(nix::errno::Errno::EEXIST) => {
                self.clear(fd.fd(), name, rel)?;
                create()
            }
            r => r,
        }
        .map_err(|e| err(&path, "cannot create", errno(e)))?;
        Ok((path, File::from(f)))
    }

    /// Creates a symlink, fifo or device node `name` in `dir` (at `rel`); returns the
    /// directory's descriptor, for its metadata. Sockets are skipped (returns `None`).
    pub fn special(
        &self,
        dir: &Arc<Dir>,
        name: &OsStr,
        rel: &Path,
        node: &Node,
    ) -> io::Result<Option<Arc<DirFd>>> {
        check_name(name)?;
        let fd = self
            .fd(dir)
            .map_err(|e| err(&self.display_path(rel), "cannot open parent", e))?;
        let d = fd.fd();
        self.clear(d, name, rel)?;
        let private = Mode::from_bits_truncate(0o600);
        let r = match node.kind {
            NodeType::Symlink => {
                let t = node
                    .linktarget
                    .as_ref()
                    .map(|t| t.0.as_slice())
                    .unwrap_or_default();
                nix::unistd::symlinkat(OsStr::from_bytes(t), d, name)
            }
            NodeType::Fifo => nix::sys::stat::mknodat(d, name, SFlag::S_IFIFO, private, 0),
            NodeType::Chardev => {
                nix::sys::stat::mknodat(d, name, SFlag::S_IFCHR, private, node.rdev as _)
            }
            NodeType::Blockdev => {
                nix::sys::stat::mknodat(d, name, SFlag::S_IFBLK, private, node.rdev as _)
            }
            NodeType::Socket | NodeType::File | NodeType::Dir => return Ok(None),
        };
        r.map_err(|e| err(&self.display_path(rel), "cannot create", errno(e)))?;
        Ok(Some(fd))
    }
}

/// Writes one chunk at `offset` unless it is all zeros (left as a hole).
pub fn write_chunk(f: &File, offset: u64, data: &[u8]) -> io::Result<()> {
    if data.iter().all(|&b| b == 0) {
        return Ok(());
    }
    f.write_all_at(data, offset)
}

/// The granularity of holes inside a chunk: a file-system block.
const HOLE_BLOCK: u64 = 4096;

/// Writes `data` at `offset` in a new file, leaving every block-aligned run of zeros
/// unwritten (a hole, as `cp --sparse=always` does), and coalescing the rest into as few
/// writes as possible. The zero test stops at a block's first non-zero byte, so data without
/// zero blocks costs one comparison per 4 KiB and one write. Returns whether the last byte
/// was written (when it was not, the file's length must be set at the end).
pub fn write_sparse(f: &File, data: &[u8], offset: u64) -> io::Result<bool> {
    let len = data.len() as u64;
    let end = offset + len;
    // Block boundaries are file offsets, so holes line up with the file system's blocks.
    let mut at = offset;
    let mut run: Option<u64> = None; // start of the non-zero run being gathered
    let mut tail = false;
    while at < end {
        let next = ((at / HOLE_BLOCK) + 1) * HOLE_BLOCK;
        let block_end = next.min(end);
        let block = &data[(at - offset) as usize..(block_end - offset) as usize];
        let zero = block.iter().all(|&b| b == 0);
        match (zero, run) {
            (false, None) => run = Some(at),
            (true, Some(start)) => {
                f.write_all_at(
                    &data[(start - offset) as usize..(at - offset) as usize],
                    start,
                )?;
                run = None;
            }
            _ => {}
        }
        at = block_end;
    }
    if let Some(start) = run {
        f.write_all_at(&data[(start - offset) as usize..], start)?;
        tail = true;
    }
    Ok(tail)
}

/// Writes a blob's plaintext at every place it goes (a hole where it is all zeros), and
/// finishes each file whose last chunk it was. Once the target is full, nothing more is
/// written: each file is given up, without a report of its own.
pub fn write_blob(shared: &Shared<'_>, plain: &Plain, dests: Vec<Dest>) {
    let len = plain.data.len() as u64;
    for dest in dests {
        let file = &dest.file;
        if shared.full() {
            file.give_up(shared);
        } else if !file.is_failed() {
            let written = if plain.zero {
                Ok(())
            } else {
                shared
                    .faults
                    .check(Op::Write, &file.rel)
                    .and_then(|()| write_sparse(&file.file, &plain.data, dest.offset))
                    .map(|tail| {
                        if tail {
                            file.written(dest.offset, len)
                        }
                    })
            };
            match written {
                Ok(()) => {
                    shared.progress.bytes.fetch_add(len, Ordering::Relaxed);
                }
                Err(e) if full::is_target_full(&e) => {
                    shared.stop.full(&e);
                    file.give_up(shared);
                }
                Err(e) => file.fail(shared, format!("{}: write: {e}", file.path.display())),
            }
        }
        dest.finish(shared);
    }
}

/// Finishes a file whose chunks are all written (or failed): length (trailing holes), then
/// `--verify`, then metadata with times last. A failed file gets no metadata.
pub fn finish_file(shared: &Shared<'_>, f: &FileState) {
    let ok = finish(shared, f);
    f.set_outcome(ok);
}

fn finish(shared: &Shared<'_>, f: &FileState) -> bool {
    if f.is_failed() {
        return false;
    }
    // A new file is as long as its last written chunk: only a trailing hole needs the length.
    if f.needs_length()
        && let Err(e) = f.file.set_len(f.size())
    {
        if full::is_target_full(&e) {
            shared.stop.full(&e);
            f.give_up(shared);
        } else {
            f.fail(shared, format!("{}: {e}", f.path.display()));
        }
        return false;
    }
    if shared.verify {
        if let Err(e) = verify_file(shared.repo, &f.file, &f.path, &f.node) {
            f.fail(shared, format!("verification failed: {e}"));
            return false;
        }
        shared.progress.verified.fetch_add(1, Ordering::Relaxed);
    }
    shared.progress.files.fetch_add(1, Ordering::Relaxed);
    shared.meta_file(&f.file, &f.rel, &f.node);
    true
}

/// Re-reads a restored file through its descriptor (`file`, open for reading too) and checks
/// each chunk against the snapshot's blob ids; `path` is for messages.
pub fn verify_file(
    repo: &Repository<Indexed>,
    file: &File,
    path: &Path,
    node: &Node,
) -> Result<(), String> {
    let mut buf = Vec::new();
    let mut offset = 0u64;
    for id in node.content.as_deref().unwrap_or_default() {
        let loc = repo.locate(BlobType::Data, id).map_err(|e| e.to_string())?;
        buf.resize(loc.entry.raw_length as usize, 0);
        file.read_exact_at(&mut buf, offset)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        offset += buf.len() as u64;
        if repo.key().blob_id(&buf) != *id {
            return Err(format!(
                "{}: content differs from blob {id}",
                path.display()
            ));
        }
    }
    let mut extra = [0u8; 1];
    if file
        .read_at(&mut extra, offset)
        .map_err(|e| format!("{}: {e}", path.display()))?
        != 0
    {
        return Err(format!("{}: longer than in the snapshot", path.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_names_that_leave_their_directory() {
        let t = tempfile::tempdir().unwrap();
        let w = Writer::new(t.path(), false).unwrap();
        let root = w.root().clone();
        for bad in ["..", "/etc/passwd", "a/b", ".", ""] {
            let name = OsStr::new(bad);
            assert!(w.create_file(&root, name, Path::new(bad)).is_err(), "{bad}");
            assert!(w.subdir(&root, name, Path::new(bad)).is_err(), "{bad}");
        }
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 0);
        assert!(
            w.create_file(&root, OsStr::new("ok"), Path::new("ok"))
                .is_ok()
        );
    }

    #[test]
    fn never_follows_symlinks_inside_the_target() {
        let t = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let target = t.path().join("target");
        std::fs::create_dir(&target).unwrap();
        std::os::unix::fs::symlink(outside.path(), target.join("dir")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("f"), target.join("file")).unwrap();
        let w = Writer::new(&target, false).unwrap();
        let root = w.root().clone();
        // a file below a symlinked directory: the symlink is replaced by a real directory
        let dir = w
            .subdir(&root, OsStr::new("dir"), Path::new("dir"))
            .unwrap();
        let (p, f) = w
            .create_file(&dir, OsStr::new("inner"), Path::new("dir/inner"))
            .unwrap();
        f.write_all_at(b"x", 0).unwrap();
        assert!(
            std::fs::symlink_metadata(target.join("dir"))
                .unwrap()
                .is_dir()
        );
        assert_eq!(p, target.canonicalize().unwrap().join("dir/inner"));
        // a file where a symlink stands: the link is replaced, its target untouched
        let (_, f) = w
            .create_file(&root, OsStr::new("file"), Path::new("file"))
            .unwrap();
        f.write_all_at(b"y", 0).unwrap();
        assert!(
            std::fs::symlink_metadata(target.join("file"))
                .unwrap()
                .is_file()
        );
        assert_eq!(
            std::fs::read_dir(outside.path()).unwrap().count(),
            0,
            "nothing written outside"
        );
    }

    #[test]
    fn a_deep_chain_keeps_a_bounded_number_of_directories_open() {
        let t = tempfile::tempdir().unwrap();
        let w = Writer::new(t.path(), false).unwrap();
        let depth = 3000;
        let mut chain = vec![w.root().clone()];
        let mut most = 0;
        for _ in 0..depth {
            let parent = chain.last().unwrap().clone();
            let d = w.subdir(&parent, OsStr::new("d"), Path::new("d")).unwrap();
            chain.push(d);
            most = most.max(w.open_dirs());
        }
        let (_, f) = w
            .create_file(chain.last().unwrap(), OsStr::new("f"), Path::new("f"))
            .unwrap();
        f.write_all_at(b"deep", 0).unwrap();
        // Back up the chain, each directory reopened through its child's `..`…
        for i in (1..depth).rev() {
            w.fd_near(&chain[i], Some(&chain[i + 1])).unwrap();
            most = most.max(w.open_dirs());
        }
        // …and one deep directory from the nearest open one above it.
        w.fd(&chain[depth - 1]).unwrap();
        most = most.max(w.open_dirs());
        assert!(most <= DIR_FDS + 1, "{most} directories open at once");
        // Closed everywhere when the handles go, without recursing once per level.
        drop(chain);
        assert_eq!(w.open_dirs(), 1, "only the target stays open");
    }

    #[test]
    fn zero_blocks_inside_a_chunk_become_holes() {
        use std::os::unix::fs::MetadataExt;
        let t = tempfile::tempdir().unwrap();
        let w = Writer::new(t.path(), false).unwrap();
        let (p, f) = w
            .create_file(w.root(), OsStr::new("islands"), Path::new("islands"))
            .unwrap();
        // One 4 MiB chunk at an unaligned offset holding three 4 KiB islands of data, one of
        // them straddling a block boundary, and zeros at its end.
        let offset = 4096 * 3 + 100;
        let mut chunk = vec![0u8; 4 << 20];
        for (i, at) in [0usize, 1 << 20, (3 << 20) + 2000].into_iter().enumerate() {
            chunk[at..at + 4096].fill(i as u8 + 1);
        }
        let tail = write_sparse(&f, &chunk, offset).unwrap();
        assert!(!tail, "the chunk ends in zeros, left unwritten");
        f.set_len(offset + chunk.len() as u64).unwrap();
        let back = std::fs::read(&p).unwrap();
        assert_eq!(&back[offset as usize..], &chunk[..]);
        assert!(back[..offset as usize].iter().all(|&b| b == 0));
        let m = std::fs::metadata(&p).unwrap();
        // Three islands, each in at most two blocks: at most 6 blocks of 4 KiB (tmpfs and
        // ext4 count 512-byte sectors).
        assert!(m.blocks() * 512 <= 6 * 4096, "{} blocks", m.blocks());
        // Data without zero blocks is written whole, with its tail.
        assert!(write_sparse(&f, &[7u8; 10_000], 1 << 30).unwrap());
    }

    #[test]
    fn zero_chunks_become_holes() {
        use std::os::unix::fs::MetadataExt;
        let t = tempfile::tempdir().unwrap();
        let w = Writer::new(t.path(), false).unwrap();
        let (p, f) = w
            .create_file(w.root(), OsStr::new("sparse"), Path::new("sparse"))
            .unwrap();
        let zeros = vec![0u8; 8 << 20];
        write_chunk(&f, 0, &zeros).unwrap();
        write_chunk(&f, 8 << 20, b"end").unwrap();
        f.set_len((8 << 20) + 3).unwrap();
        let m = std::fs::metadata(p).unwrap();
        assert_eq!(m.len(), (8 << 20) + 3);
        assert!(
            m.blocks() * 512 < 1 << 20,
            "holes kept: {} blocks",
            m.blocks()
        );
    }
}
