//! Walk stage: a depth-first walk of the backup paths in byte order of names, on its own
//! thread, sending [`WalkEvent`]s (one per entry, with its full metadata) in batches. Excluded entries (and
//! everything below an excluded directory) are never visited; `--one-file-system` stops at
//! mount points. Errors (an unreadable directory, a vanished file) become events so the
//! archiver can report them and go on.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use cairn_repo_format::tree::Node;
use crossbeam_channel::Sender;

use super::Progress;
use crate::filter::Patterns;
use crate::fsmeta::{OwnerNames, node_from_metadata};

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
    },
    /// Something at `path` could not be read; it is left out of the snapshot.
    Error {
        /// Where.
        path: PathBuf,
        /// What.
        message: String,
    },
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

fn walker(
    root: &Path,
    s: &WalkSettings,
) -> impl Iterator<Item = walkdir::Result<walkdir::DirEntry>> + use<> {
    let excludes = s.excludes.clone();
    walkdir::WalkDir::new(root)
        .follow_links(false)
        .same_file_system(s.one_file_system)
        .sort_by(|a, b| a.file_name().as_bytes().cmp(b.file_name().as_bytes()))
        .into_iter()
        .filter_entry(move |e| e.depth() == 0 || !excludes.matches(e.path()))
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
        for item in walker(root, s) {
            let ev = match item {
                Err(e) => WalkEvent::Error {
                    path: e
                        .path()
                        .map(Path::to_path_buf)
                        .unwrap_or_else(|| root.clone()),
                    message: e
                        .io_error()
                        .map(|e| e.to_string())
                        .unwrap_or_else(|| e.to_string()),
                },
                Ok(entry) => {
                    let path = entry.path().to_path_buf();
                    let name = if entry.depth() == 0 {
                        path.file_name()
                            .map(|n| n.as_bytes().to_vec())
                            .unwrap_or_else(|| b"root".to_vec())
                    } else {
                        entry.file_name().as_bytes().to_vec()
                    };
                    match entry.metadata().map_err(|e| e.to_string()).and_then(|m| {
                        node_from_metadata(&path, &name, &m, &mut owners).map_err(|e| e.to_string())
                    }) {
                        Ok(node) => WalkEvent::Entry {
                            depth: entry.depth(),
                            path,
                            node,
                        },
                        Err(message) => WalkEvent::Error { path, message },
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
        for entry in walker(root, s).flatten() {
            if let Ok(m) = entry.metadata()
                && m.is_file()
            {
                progress.total_files.fetch_add(1, Ordering::Relaxed);
                progress.total_bytes.fetch_add(m.len(), Ordering::Relaxed);
            }
        }
    }
    progress.scan_done.store(true, Ordering::Relaxed);
}
