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
/// access times.
pub fn open_for_read(path: &Path) -> io::Result<File> {
    let open = |flags| {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(flags)
            .open(path)
    };
    let f = match open(libc::O_NOFOLLOW | libc::O_NOATIME) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => open(libc::O_NOFOLLOW)?,
        r => r?,
    };
    if !f.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no longer a regular file",
        ));
    }
    Ok(f)
}

/// Whether a file changed while it was read, judged from `fstat` before and after.
pub fn changed_while_reading(before: &std::fs::Metadata, after: &std::fs::Metadata) -> bool {
    before.size() != after.size()
        || before.mtime() != after.mtime()
        || before.mtime_nsec() != after.mtime_nsec()
        || before.ctime() != after.ctime()
        || before.ctime_nsec() != after.ctime_nsec()
}
