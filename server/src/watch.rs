//! Noticing that a file changed: its metadata, read through symlinks, as a stamp. A
//! Kubernetes Secret volume updates by pointing a symlink at a new directory, which changes
//! the inode the name resolves to; an edit in place changes the time or the length. The
//! server polls the stamps of its certificate, key and tokens file (no inotify: it misses
//! symlink swaps above the watched name).

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

/// How often the watched files are looked at.
pub const POLL: Duration = Duration::from_secs(2);

/// What identifies one version of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

impl Stamp {
    /// The stamp of the file `path` resolves to, if it can be read.
    pub fn of(path: &Path) -> Option<Stamp> {
        let m = std::fs::metadata(path).ok()?;
        Some(Stamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        })
    }

    /// The combined stamp of several files (`None` if any is missing).
    pub fn of_all(paths: &[&Path]) -> Option<Vec<Stamp>> {
        paths.iter().map(|p| Stamp::of(p)).collect()
    }
}
