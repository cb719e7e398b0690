//! Write stage: creates entries inside the target without ever leaving it, writes file contents
//! on several threads, and finishes each file when its last chunk is in.
//!
//! * [`Writer`] (used by the plan, in order): every path is the target joined with names that
//!   the plan checked (no `..`, no `/`); every existing component on the way is checked with
//!   `lstat` and must be a real directory, so a symlink already in the target is never
//!   followed; files are created with `O_EXCL | O_NOFOLLOW` after removing what was there, and
//!   stay open for the threads that write their contents.
//! * [`write_blob`] (called by the unseal threads): writes a blob's plaintext with `pwrite` at
//!   each of its offsets in the open files, skipping all-zero chunks, so sparse files stay
//!   sparse.
//! * [`finish_file`]: when a file's last chunk is written, sets its length, re-reads it against
//!   the snapshot with `--verify`, and applies its metadata (times last).

use std::cell::RefCell;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::Ordering;

use cairn_repo_format::tree::{Node, NodeType};
use cairn_repo_format::{BlobType, Indexed, Repository};

use super::Shared;
use super::batch::{Dest, FileState};
use super::unseal::Plain;

/// Creates entries below one target directory.
pub struct Writer {
    target: PathBuf,
    /// A directory (relative to the target) that this writer made sure of in this run, with
    /// every directory above it: each was checked with `lstat` to be a real directory, or
    /// created. Paths below it need no new checks (the restore never removes a directory), which
    /// spares every file of a directory the `lstat` of each component on its way.
    checked: RefCell<PathBuf>,
    /// The directory (relative to the target) that the last file was created in, open: the
    /// next file in it is created relative to it, with no path to walk.
    parent: RefCell<Option<(PathBuf, OwnedFd)>>,
}

fn err(path: &Path, what: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {what}: {e}", path.display()))
}

impl Writer {
    /// A writer into `target`, which is created if missing.
    pub fn new(target: &Path) -> io::Result<Writer> {
        std::fs::create_dir_all(target).map_err(|e| err(target, "cannot create target", e))?;
        let target = target
            .canonicalize()
            .map_err(|e| err(target, "cannot resolve target", e))?;
        Ok(Writer {
            target,
            checked: RefCell::new(PathBuf::new()),
            parent: RefCell::new(None),
        })
    }

    /// The target directory.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Absolute path of `rel`, after checking that `rel` has only normal components.
    pub fn path_of(&self, rel: &Path) -> io::Result<PathBuf> {
        if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("refusing path {}", rel.display()),
            ));
        }
        Ok(self.target.join(rel))
    }

    /// Makes sure every directory on the way to `rel` exists and is a real directory.
    fn ensure_parents(&self, rel: &Path) -> io::Result<()> {
        match rel.parent() {
            Some(parent) => self.ensure_dirs(parent),
            None => Ok(()),
        }
    }

    /// Makes sure `rel` and every directory above it exist and are real directories, checking
    /// only those not already checked in this run.
    fn ensure_dirs(&self, rel: &Path) -> io::Result<()> {
        if self.checked.borrow().starts_with(rel) {
            return Ok(());
        }
        let checked = self.checked.borrow().clone();
        let mut p = self.target.clone();
        let mut so_far = PathBuf::new();
        let mut known = true;
        for c in rel.components() {
            p.push(c);
            so_far.push(c);
            known = known && checked.starts_with(&so_far);
            if !known {
                ensure_dir(&p)?;
            }
        }
        *self.checked.borrow_mut() = rel.to_path_buf();
        Ok(())
    }

    /// Removes a non-directory at `path` so it can be created anew; a directory there is an
    /// error for a non-directory entry.
    fn clear(&self, path: &Path) -> io::Result<()> {
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{}: a directory is in the way; remove it or restore elsewhere",
                    path.display()
                ),
            )),
            Ok(_) => std::fs::remove_file(path).map_err(|e| err(path, "cannot replace", e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(err(path, "cannot inspect", e)),
        }
    }

    /// Creates (or reuses) the directory at `rel`.
    pub fn dir(&self, rel: &Path) -> io::Result<PathBuf> {
        let path = self.path_of(rel)?;
        self.ensure_dirs(rel)?;
        Ok(path)
    }

    /// Makes `rel` another name of the file at `first`.
    pub fn link(&self, rel: &Path, first: &Path) -> io::Result<()> {
        let path = self.path_of(rel)?;
        self.ensure_parents(rel)?;
        self.clear(&path)?;
        std::fs::hard_link(first, &path).map_err(|e| err(&path, "cannot link", e))
    }

    /// Creates a new, empty regular file at `rel` (whatever non-directory was there is
    /// replaced; `O_EXCL` never follows a symlink, so one standing there is removed, not used).
    pub fn create_file(&self, rel: &Path) -> io::Result<(PathBuf, File)> {
        let path = self.path_of(rel)?;
        self.ensure_parents(rel)?;
        let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("refusing path {}", rel.display()),
            ));
        };
        let create = || self.create_in(parent, name);
        let f = match create() {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                self.clear(&path)?;
                create()
            }
            r => r,
        }
        .map_err(|e| err(&path, "cannot create", e))?;
        Ok((path, f))
    }

    /// Creates the new file `name` in the directory `parent` (relative to the target), with
    /// `openat` relative to that directory, which stays open for the next file in it.
    fn create_in(&self, parent: &Path, name: &OsStr) -> io::Result<File> {
        use nix::fcntl::OFlag;
        use nix::sys::stat::Mode;
        let mut cached = self.parent.borrow_mut();
        let open = match cached.take() {
            Some((p, fd)) if p == parent => (p, fd),
            _ => {
                let dir = self.target.join(parent);
                let flags =
                    OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
                let fd = nix::fcntl::open(&dir, flags, Mode::empty())
                    .map_err(|e| err(&dir, "cannot open directory", e.into()))?;
                (parent.to_path_buf(), fd)
            }
        };
        let dir = &cached.insert(open).1;
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = nix::fcntl::openat(dir, name, flags, Mode::from_bits_truncate(0o600))?;
        Ok(File::from(fd))
    }

    /// Creates a symlink, fifo or device node at `rel`. Sockets are skipped (returns `None`).
    pub fn special(&self, rel: &Path, node: &Node) -> io::Result<Option<PathBuf>> {
        let path = self.path_of(rel)?;
        self.ensure_parents(rel)?;
        self.clear(&path)?;
        let r = match node.kind {
            NodeType::Symlink => {
                let t = node
                    .linktarget
                    .as_ref()
                    .map(|t| t.0.as_slice())
                    .unwrap_or_default();
                std::os::unix::fs::symlink(OsStr::from_bytes(t), &path)
            }
            NodeType::Fifo => {
                nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600))
                    .map_err(io::Error::from)
            }
            NodeType::Chardev | NodeType::Blockdev => {
                let kind = if node.kind == NodeType::Chardev {
                    nix::sys::stat::SFlag::S_IFCHR
                } else {
                    nix::sys::stat::SFlag::S_IFBLK
                };
                nix::sys::stat::mknod(
                    &path,
                    kind,
                    nix::sys::stat::Mode::from_bits_truncate(0o600),
                    node.rdev as _,
                )
                .map_err(io::Error::from)
            }
            NodeType::Socket => return Ok(None),
            NodeType::File | NodeType::Dir => unreachable!("not a special file"),
        };
        r.map_err(|e| err(&path, "cannot create", e))?;
        Ok(Some(path))
    }
}

/// Makes `p` a real directory: kept if it is one, created if missing, and anything else there
/// (a file, or a symlink, which is never followed) is replaced.
fn ensure_dir(p: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => {
            std::fs::remove_file(p).map_err(|e| err(p, "cannot replace", e))?;
            mkdir(p)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => mkdir(p),
        Err(e) => Err(err(p, "cannot inspect", e)),
    }
}

fn mkdir(p: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(p)
        .map_err(|e| err(p, "cannot create directory", e))
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
/// finishes each file whose last chunk it was.
pub fn write_blob(shared: &Shared<'_>, plain: &Plain, dests: Vec<Dest>) {
    let len = plain.data.len() as u64;
    for dest in dests {
        let file = &dest.file;
        if !file.is_failed() {
            let written = if plain.zero {
                Ok(())
            } else {
                write_sparse(&file.file, &plain.data, dest.offset).map(|tail| {
                    if tail {
                        file.written(dest.offset, len)
                    }
                })
            };
            match written {
                Ok(()) => {
                    shared.progress.bytes.fetch_add(len, Ordering::Relaxed);
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
        f.fail(shared, format!("{}: {e}", f.path.display()));
        return false;
    }
    if shared.verify {
        if let Err(e) = verify_file(shared.repo, &f.path, &f.node) {
            f.fail(shared, format!("verification failed: {e}"));
            return false;
        }
        shared.progress.verified.fetch_add(1, Ordering::Relaxed);
    }
    shared.progress.files.fetch_add(1, Ordering::Relaxed);
    shared.meta_file(&f.file, &f.rel, &f.node);
    true
}

/// Re-reads a restored file and checks each chunk against the snapshot's blob ids.
pub fn verify_file(repo: &Repository<Indexed>, path: &Path, node: &Node) -> Result<(), String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_paths_that_leave_the_target() {
        let t = tempfile::tempdir().unwrap();
        let w = Writer::new(t.path()).unwrap();
        for bad in ["../x", "/etc/passwd", "a/../../x", "."] {
            assert!(w.path_of(Path::new(bad)).is_err(), "{bad}");
        }
        assert!(w.path_of(Path::new("a/b")).is_ok());
    }

    #[test]
    fn never_follows_symlinks_inside_the_target() {
        let t = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let target = t.path().join("target");
        std::fs::create_dir(&target).unwrap();
        std::os::unix::fs::symlink(outside.path(), target.join("dir")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("f"), target.join("file")).unwrap();
        let w = Writer::new(&target).unwrap();
        // a file below a symlinked directory: the symlink is replaced by a real directory
        let (p, f) = w.create_file(Path::new("dir/inner")).unwrap();
        f.write_all_at(b"x", 0).unwrap();
        assert!(
            std::fs::symlink_metadata(target.join("dir"))
                .unwrap()
                .is_dir()
        );
        assert_eq!(p, target.canonicalize().unwrap().join("dir/inner"));
        // a file where a symlink stands: the link is replaced, its target untouched
        let (_, f) = w.create_file(Path::new("file")).unwrap();
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
    fn zero_blocks_inside_a_chunk_become_holes() {
        use std::os::unix::fs::MetadataExt;
        let t = tempfile::tempdir().unwrap();
        let w = Writer::new(t.path()).unwrap();
        let (p, f) = w.create_file(Path::new("islands")).unwrap();
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
        let w = Writer::new(t.path()).unwrap();
        let (p, f) = w.create_file(Path::new("sparse")).unwrap();
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
