//! File-system metadata ⇄ tree nodes: reading a node's full metadata from an `lstat` (plus
//! xattrs and owner names), and applying it back on restore (ownership, mode, xattrs, times, in
//! the order that keeps setuid bits).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::Metadata;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use cairn_repo_format::tree::{ExtendedAttribute, Node, NodeType, RawBytes};
use chrono::{DateTime, Utc};

fn time(sec: i64, nsec: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(sec, nsec.clamp(0, 999_999_999) as u32).unwrap_or_default()
}

/// Caches uid → user name and gid → group name lookups.
#[derive(Default)]
pub struct OwnerNames {
    users: HashMap<u32, String>,
    groups: HashMap<u32, String>,
}

impl OwnerNames {
    fn user(&mut self, uid: u32) -> String {
        self.users
            .entry(uid)
            .or_insert_with(|| {
                nix::unistd::User::from_uid(uid.into())
                    .ok()
                    .flatten()
                    .map(|u| u.name)
                    .unwrap_or_default()
            })
            .clone()
    }

    fn group(&mut self, gid: u32) -> String {
        self.groups
            .entry(gid)
            .or_insert_with(|| {
                nix::unistd::Group::from_gid(gid.into())
                    .ok()
                    .flatten()
                    .map(|g| g.name)
                    .unwrap_or_default()
            })
            .clone()
    }
}

/// The node type of an `lstat` result.
pub fn node_type(meta: &Metadata) -> NodeType {
    use std::os::unix::fs::FileTypeExt;
    let ft = meta.file_type();
    if ft.is_symlink() {
        NodeType::Symlink
    } else if ft.is_dir() {
        NodeType::Dir
    } else if ft.is_file() {
        NodeType::File
    } else if ft.is_char_device() {
        NodeType::Chardev
    } else if ft.is_block_device() {
        NodeType::Blockdev
    } else if ft.is_fifo() {
        NodeType::Fifo
    } else {
        NodeType::Socket
    }
}

/// The fields of an `lstat` (or `fstatat`) that a node records.
struct Stat {
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    ino: u64,
    dev: u64,
    nlink: u64,
    rdev: u64,
    atime: (i64, i64),
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl From<&Metadata> for Stat {
    fn from(m: &Metadata) -> Stat {
        Stat {
            mode: m.mode(),
            uid: m.uid(),
            gid: m.gid(),
            size: m.size(),
            ino: m.ino(),
            dev: m.dev(),
            nlink: m.nlink(),
            rdev: m.rdev(),
            atime: (m.atime(), m.atime_nsec()),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

impl From<&nix::sys::stat::FileStat> for Stat {
    // The field widths of `struct stat` differ between architectures.
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    fn from(m: &nix::sys::stat::FileStat) -> Stat {
        Stat {
            mode: m.st_mode as u32,
            uid: m.st_uid as u32,
            gid: m.st_gid as u32,
            size: m.st_size as u64,
            ino: m.st_ino as u64,
            dev: m.st_dev as u64,
            nlink: m.st_nlink as u64,
            rdev: m.st_rdev as u64,
            atime: (m.st_atime as i64, m.st_atime_nsec as i64),
            mtime: (m.st_mtime as i64, m.st_mtime_nsec as i64),
            ctime: (m.st_ctime as i64, m.st_ctime_nsec as i64),
        }
    }
}

/// The node type of a `st_mode`.
pub fn mode_type(mode: u32) -> NodeType {
    match mode & libc::S_IFMT {
        libc::S_IFLNK => NodeType::Symlink,
        libc::S_IFDIR => NodeType::Dir,
        libc::S_IFREG => NodeType::File,
        libc::S_IFCHR => NodeType::Chardev,
        libc::S_IFBLK => NodeType::Blockdev,
        libc::S_IFIFO => NodeType::Fifo,
        _ => NodeType::Socket,
    }
}

/// A node (without content or subtree) from its stat fields, link target and xattrs.
fn node_from(
    st: &Stat,
    name: &[u8],
    linktarget: Option<RawBytes>,
    xattrs: Vec<ExtendedAttribute>,
    owners: &mut OwnerNames,
) -> Node {
    let kind = mode_type(st.mode);
    Node {
        name: RawBytes(name.to_vec()),
        kind,
        mode: st.mode & 0o7777,
        uid: st.uid,
        gid: st.gid,
        user: owners.user(st.uid),
        group: owners.group(st.gid),
        mtime: time(st.mtime.0, st.mtime.1),
        atime: time(st.atime.0, st.atime.1),
        ctime: time(st.ctime.0, st.ctime.1),
        size: if kind == NodeType::File { st.size } else { 0 },
        inode: st.ino,
        device: st.dev,
        links: st.nlink,
        rdev: if matches!(kind, NodeType::Chardev | NodeType::Blockdev) {
            st.rdev
        } else {
            0
        },
        linktarget,
        xattrs,
        content: None,
        subtree: None,
    }
}

/// Builds a node (without content or subtree) for `path`, whose `lstat` is `meta`. Reading
/// xattrs or the link target can fail; the error is returned so the caller can report it.
///
/// A regular file's xattrs are left empty here: the backup reads them through the file's
/// descriptor when it opens the file ([`read_file_xattrs`]), or takes them from the parent
/// snapshot when the file is unchanged (setting an xattr changes the ctime). Listing them by
/// path for every file cost a path lookup each (2% of a first backup's CPU).
pub fn node_from_metadata(
    path: &Path,
    name: &[u8],
    meta: &Metadata,
    owners: &mut OwnerNames,
) -> io::Result<Node> {
    let kind = node_type(meta);
    let linktarget = match kind {
        NodeType::Symlink => Some(RawBytes(
            std::fs::read_link(path)?
                .into_os_string()
                .into_encoded_bytes(),
        )),
        _ => None,
    };
    let xattrs = if kind == NodeType::File {
        Vec::new()
    } else {
        read_xattrs(path)?
    };
    Ok(node_from(
        &Stat::from(meta),
        name,
        linktarget,
        xattrs,
        owners,
    ))
}

/// Paths at least this long are not handed to the kernel (`PATH_MAX` is 4096 with the NUL):
/// calls go relative to the open directory instead.
pub const LONG_PATH: usize = 4000;

/// [`node_from_metadata`] for the entry `name` of the open directory `dir` (or, without
/// `dir`, for `path` itself), whose `fstatat` is `st`; `path` is its full path. The link
/// target is read with `readlinkat`; xattrs (of anything but a regular file) through `path`,
/// or through [`at_path`] when `path` is too long for the kernel. Works at any depth.
pub fn node_from_stat(
    dir: Option<BorrowedFd<'_>>,
    name: &OsStr,
    path: &Path,
    st: &nix::sys::stat::FileStat,
    owners: &mut OwnerNames,
) -> io::Result<Node> {
    let st = Stat::from(st);
    let kind = mode_type(st.mode);
    let linktarget = match (kind, dir) {
        (NodeType::Symlink, Some(dir)) => Some(RawBytes(
            nix::fcntl::readlinkat(dir, name)
                .map_err(io::Error::from)?
                .into_encoded_bytes(),
        )),
        (NodeType::Symlink, None) => Some(RawBytes(
            std::fs::read_link(path)?
                .into_os_string()
                .into_encoded_bytes(),
        )),
        _ => None,
    };
    let xattrs = match dir {
        _ if kind == NodeType::File => Vec::new(),
        Some(dir) if path.as_os_str().len() >= LONG_PATH => read_xattrs(&at_path(dir, name))?,
        _ => read_xattrs(path)?,
    };
    Ok(node_from(&st, name.as_bytes(), linktarget, xattrs, owners))
}

/// Extended attributes of `path` (not following symlinks), sorted by name. File systems without
/// xattr support yield none.
pub fn read_xattrs(path: &Path) -> io::Result<Vec<ExtendedAttribute>> {
    collect_xattrs(xattr::list(path), |name| xattr::get(path, name))
}

/// Extended attributes of an open file, sorted by name, as [`read_xattrs`].
pub fn read_file_xattrs(file: &std::fs::File) -> io::Result<Vec<ExtendedAttribute>> {
    use xattr::FileExt as _;
    collect_xattrs(file.list_xattr(), |name| file.get_xattr(name))
}

fn collect_xattrs(
    names: io::Result<xattr::XAttrs>,
    get: impl Fn(&OsStr) -> io::Result<Option<Vec<u8>>>,
) -> io::Result<Vec<ExtendedAttribute>> {
    let names = match names {
        Ok(n) => n,
        Err(e) if is_unsupported(&e) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for name in names {
        if let Some(value) = get(&name)? {
            out.push(ExtendedAttribute {
                name: RawBytes(name.as_bytes().to_vec()),
                value: RawBytes(value),
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn is_unsupported(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOTSUP) || e.kind() == io::ErrorKind::Unsupported
}

/// Whether this process may set ownership (restic restores owners only as root).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Whether a chown failed because the file system cannot keep owners (SMB/Azure Files
/// without Unix extensions answers EPERM or EINVAL; some answer ENOTSUP): the entry is
/// restored with the owner the file system gives it, and the restore counts it.
fn owner_refused(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EPERM) | Some(libc::EINVAL) | Some(libc::ENOTSUP)
    )
}

/// What applying metadata did, when it did not fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The recorded owner was set (false: the file system refused it).
    pub owner_kept: bool,
}

/// [`apply_metadata`] for a regular file still open as `file`: the same steps on the file
/// descriptor (`fchown`, `fchmod`, `fsetxattr`, `futimens`), with no path lookups, so nothing
/// swapped in at the path in the meantime can receive them. Restore uses it for every file,
/// and for every directory (open for reading).
pub fn apply_file_metadata(
    file: &std::fs::File,
    node: &Node,
    as_root: bool,
) -> io::Result<Applied> {
    use xattr::FileExt as _;
    let mut first_err: Option<io::Error> = None;
    let mut note = |r: io::Result<()>| {
        if let Err(e) = r {
            first_err.get_or_insert(e);
        }
    };
    let mut owner_kept = true;
    if as_root {
        match std::os::unix::fs::fchown(file, Some(node.uid), Some(node.gid)) {
            Err(e) if owner_refused(&e) => owner_kept = false,
            r => note(r),
        }
    }
    note(file.set_permissions(std::fs::Permissions::from_mode(node.mode)));
    for x in &node.xattrs {
        match file.set_xattr(OsStr::from_bytes(&x.name.0), &x.value.0) {
            Err(e) if is_unsupported(&e) || e.raw_os_error() == Some(libc::EPERM) => {}
            r => note(r),
        }
    }
    let ts = |t: &DateTime<Utc>| {
        filetime::FileTime::from_unix_time(t.timestamp(), t.timestamp_subsec_nanos())
    };
    note(filetime::set_file_handle_times(
        file,
        Some(ts(&node.atime)),
        Some(ts(&node.mtime)),
    ));
    first_err.map_or(Ok(Applied { owner_kept }), Err)
}

/// `/proc/self/fd/N/name`: the entry `name` of the open directory `dir`, as a short path for the
/// calls that have no `*at` form (the xattr calls). The kernel resolves it relative to the
/// descriptor, however deep the directory is; `name` itself (the last component) is not
/// followed by the `l*` calls.
pub fn at_path(dir: BorrowedFd<'_>, name: &OsStr) -> PathBuf {
    let mut p = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    p.push(name);
    p
}

/// [`apply_metadata`] for the entry `name` of the open directory `dir` (a symlink, fifo or
/// device node just created there; not followed if it is a symlink): `fchownat`, `fchmodat`,
/// `utimensat` relative to the directory, so no path of the entry is walked, whatever its
/// depth. Its xattrs, which have no `*at` call, go through [`at_path`].
pub fn apply_metadata_at(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    node: &Node,
    as_root: bool,
) -> io::Result<Applied> {
    use nix::fcntl::AtFlags;
    use nix::sys::stat::{FchmodatFlags, Mode, UtimensatFlags, fchmodat, utimensat};
    let mut first_err: Option<io::Error> = None;
    let mut note = |r: io::Result<()>| {
        if let Err(e) = r {
            first_err.get_or_insert(e);
        }
    };
    let mut owner_kept = true;
    if as_root {
        let r = nix::unistd::fchownat(
            dir,
            name,
            Some(node.uid.into()),
            Some(node.gid.into()),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(io::Error::from);
        match r {
            Err(e) if owner_refused(&e) => owner_kept = false,
            r => note(r),
        }
    }
    if node.kind != NodeType::Symlink {
        let mode = Mode::from_bits_truncate(node.mode);
        note(fchmodat(dir, name, mode, FchmodatFlags::FollowSymlink).map_err(io::Error::from));
    }
    if !node.xattrs.is_empty() {
        let path = at_path(dir, name);
        for x in &node.xattrs {
            match xattr::set(&path, OsStr::from_bytes(&x.name.0), &x.value.0) {
                Err(e) if is_unsupported(&e) || e.raw_os_error() == Some(libc::EPERM) => {}
                r => note(r),
            }
        }
    }
    let ts = |t: &DateTime<Utc>| {
        nix::sys::time::TimeSpec::new(t.timestamp(), t.timestamp_subsec_nanos() as _)
    };
    note(
        utimensat(
            dir,
            name,
            &ts(&node.atime),
            &ts(&node.mtime),
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(io::Error::from),
    );
    first_err.map_or(Ok(Applied { owner_kept }), Err)
}

/// Applies a node's metadata to the object at `path` (already created, not followed if it is a
/// symlink): owner (as root), then mode (after chown, which clears setuid), xattrs, and times
/// last. Returns the first error; the caller reports it and goes on.
pub fn apply_metadata(path: &Path, node: &Node, as_root: bool) -> io::Result<Applied> {
    let mut first_err: Option<io::Error> = None;
    let mut note = |r: io::Result<()>| {
        if let Err(e) = r {
            first_err.get_or_insert(e);
        }
    };
    let mut owner_kept = true;
    if as_root {
        match std::os::unix::fs::lchown(path, Some(node.uid), Some(node.gid)) {
            Err(e) if owner_refused(&e) => owner_kept = false,
            r => note(r),
        }
    }
    if node.kind != NodeType::Symlink {
        note(std::fs::set_permissions(
            path,
            std::fs::Permissions::from_mode(node.mode),
        ));
    }
    for x in &node.xattrs {
        let r = xattr::set(path, OsStr::from_bytes(&x.name.0), &x.value.0);
        match r {
            // Symlinks cannot carry user.* xattrs on Linux; security.* may need privileges.
            Err(e) if is_unsupported(&e) || e.raw_os_error() == Some(libc::EPERM) => {}
            r => note(r),
        }
    }
    let ts = |t: &DateTime<Utc>| {
        filetime::FileTime::from_unix_time(t.timestamp(), t.timestamp_subsec_nanos())
    };
    note(filetime::set_symlink_file_times(
        path,
        ts(&node.atime),
        ts(&node.mtime),
    ));
    first_err.map_or(Ok(Applied { owner_kept }), Err)
}
