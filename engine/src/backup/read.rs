//! Read stage: change detection against the parent snapshot (an unchanged file is not opened),
//! and opening a file for reading without following symlinks and, where allowed, without
//! touching its access time.

use std::fs::File;
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use cairn_repo_format::BlobType;
use cairn_repo_format::index::Index;
use cairn_repo_format::tree::{Node, NodeType};
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use super::walk::At;

/// Which attributes count as "changed".
#[derive(Clone, Copy, Debug, Default)]
pub struct ChangeRules {
    /// Ignore inode numbers (volumes that are remounted get new ones).
    pub ignore_inode: bool,
    /// Ignore ctime (likewise).
    pub ignore_ctime: bool,
}

/// The parent's content list for `new` if the file is unchanged (type, size, mtime, ctime,
/// inode) and all of its blobs are still indexed; otherwise `None` and the file is read.
pub fn unchanged_content<'a>(
    old: &'a Node,
    new: &Node,
    rules: ChangeRules,
    index: &Index,
) -> Option<&'a [cairn_repo_format::Id]> {
    let same = old.kind == NodeType::File
        && new.kind == NodeType::File
        && old.size == new.size
        && old.mtime == new.mtime
        && (rules.ignore_ctime || old.ctime == new.ctime)
        && (rules.ignore_inode || old.inode == new.inode);
    let content = old.content.as_deref()?;
    (same && content.iter().all(|id| index.contains(BlobType::Data, id))).then_some(content)
}

/// Opens a regular file for reading: never through a symlink swapped in since the walk, and
/// with `O_NOATIME` when the kernel allows it (owner or CAP_FOWNER), so backups do not bump
/// access times. A file whose path is too long for the kernel is opened relative to its
/// directory (`at`, from the walk). Returns the file and its metadata (`fstat` at open: the
/// "before" of [`changed_while_reading`]).
pub fn open_for_read(path: &Path, at: Option<&At>) -> io::Result<(File, std::fs::Metadata)> {
    let open = |flags: libc::c_int| -> io::Result<File> {
        match at {
            Some(at) => {
                let flags = OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::from_bits_truncate(flags);
                nix::fcntl::openat(&*at.dir, at.name.as_os_str(), flags, Mode::empty())
                    .map(File::from)
                    .map_err(io::Error::from)
            }
            None => std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(flags)
                .open(path),
        }
    };
    let f = match open(libc::O_NOFOLLOW | libc::O_NOATIME) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => open(libc::O_NOFOLLOW)?,
        r => r?,
    };
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no longer a regular file",
        ));
    }
    Ok((f, meta))
}

/// Whether a file changed while it was read, judged from `fstat` before and after.
pub fn changed_while_reading(before: &std::fs::Metadata, after: &std::fs::Metadata) -> bool {
    before.size() != after.size()
        || before.mtime() != after.mtime()
        || before.mtime_nsec() != after.mtime_nsec()
        || before.ctime() != after.ctime()
        || before.ctime_nsec() != after.ctime_nsec()
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use cairn_repo_format::Id;
    use cairn_repo_format::compress::Compression;
    use cairn_repo_format::index::IndexBuilder;
    use cairn_repo_format::pack::PackEntry;
    use cairn_repo_format::tree::RawBytes;

    /// A regular file's node named `f` (also used by the tree stage's tests).
    pub(in crate::backup) fn node(size: u64, mtime_ns: u32, inode: u64) -> Node {
        let t = chrono::DateTime::from_timestamp(1_700_000_000, mtime_ns).unwrap();
        Node {
            name: RawBytes(b"f".to_vec()),
            kind: NodeType::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            user: String::new(),
            group: String::new(),
            mtime: t,
            atime: t,
            ctime: t,
            size,
            inode,
            device: 1,
            links: 1,
            rdev: 0,
            linktarget: None,
            xattrs: vec![],
            content: None,
            subtree: None,
        }
    }

    #[test]
    fn change_detection_rules() {
        let blob = Id([1; 32]);
        let mut b = IndexBuilder::default();
        let e = PackEntry {
            ty: BlobType::Data,
            compression: Compression::None,
            id: blob,
            offset: 0,
            length: 1,
            raw_length: 1,
        };
        b.add_pack(Id([9; 32]), &[e]);
        let index = b.finish();
        let mut old = node(10, 5, 42);
        old.content = Some(vec![blob]);
        let r = ChangeRules::default();
        assert!(unchanged_content(&old, &node(10, 5, 42), r, &index).is_some());
        assert!(
            unchanged_content(&old, &node(11, 5, 42), r, &index).is_none(),
            "size"
        );
        assert!(
            unchanged_content(&old, &node(10, 6, 42), r, &index).is_none(),
            "mtime nanoseconds"
        );
        assert!(
            unchanged_content(&old, &node(10, 5, 43), r, &index).is_none(),
            "inode"
        );
        let ignore = ChangeRules {
            ignore_inode: true,
            ignore_ctime: false,
        };
        assert!(unchanged_content(&old, &node(10, 5, 43), ignore, &index).is_some());
        old.content = Some(vec![Id([2; 32])]);
        assert!(
            unchanged_content(&old, &node(10, 5, 42), r, &index).is_none(),
            "blob no longer indexed"
        );
    }
}
