//! Tree stage: builds one tree blob per directory, bottom-up, as directories finish. The
//! archiver hands over each finished directory with its entries in name order, some still
//! pending (a file being read, a subdirectory being finished); this stage, on its own thread,
//! waits for them in order, serializes the tree, and stores it through the seal stage.

use std::sync::atomic::Ordering;

use cairn_repo_format::blob::SealedBlob;
use cairn_repo_format::crypto::MasterKey;
use cairn_repo_format::tree::{Node, Tree};
use cairn_repo_format::{BlobType, Id};
use crossbeam_channel::{Receiver, Sender};

use super::Progress;
use super::seal::{Dedup, seal};

/// An entry of a directory being built.
pub enum Pending {
    /// Complete.
    Ready(Node),
    /// A file being read; `None` comes back if it could not be read (it is left out).
    File(Receiver<Option<Node>>),
    /// A subdirectory; its tree id comes back.
    Dir(Node, Receiver<Id>),
}

/// A directory being built by the archiver.
pub struct DirBuilder {
    /// The directory's own node (`None` for the synthetic root of a multi-path backup).
    pub node: Option<Node>,
    /// The parent snapshot's listing of this directory, for change detection.
    pub parent: Option<Tree>,
    /// The parent snapshot's tree id for this directory.
    pub parent_id: Option<Id>,
    /// Entries in name order.
    pub entries: Vec<Pending>,
}

/// A directory whose entries are all known, and where to send its tree id.
pub struct FinishedDir {
    /// The directory.
    pub dir: DirBuilder,
    /// Receives the tree id.
    pub reply: Sender<Id>,
}

/// The pipeline stopped behind this stage (an upload failed).
#[derive(Debug)]
pub struct Stopped;

/// Runs until the archiver hangs up.
pub fn run(
    dirs: Receiver<FinishedDir>,
    key: &MasterKey,
    dedup: &Dedup<'_>,
    blobs: Sender<Vec<SealedBlob>>,
    level: i32,
    progress: &Progress,
) -> Result<(), Stopped> {
    for FinishedDir { dir, reply } in dirs {
        let mut nodes = Vec::with_capacity(dir.entries.len());
        for entry in dir.entries {
            match entry {
                Pending::Ready(n) => nodes.push(n),
                Pending::File(rx) => {
                    if let Some(n) = rx.recv().map_err(|_| Stopped)? {
                        nodes.push(n);
                    }
                }
                Pending::Dir(mut n, rx) => {
                    n.subtree = Some(rx.recv().map_err(|_| Stopped)?);
                    nodes.push(n);
                }
            }
        }
        let bytes = Tree { nodes }.to_bytes();
        let id = key.blob_id(&bytes);
        let counter = match dir.parent_id {
            Some(p) if p == id => &progress.dirs_unmodified,
            Some(_) => &progress.dirs_changed,
            None => &progress.dirs_new,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if dedup.claim(BlobType::Tree, &id) {
            progress.tree_blobs.fetch_add(1, Ordering::Relaxed);
            progress
                .data_added
                .fetch_add(bytes.len() as u64, Ordering::Relaxed);
            blobs
                .send(vec![seal(key, BlobType::Tree, id, &bytes, level)])
                .map_err(|_| Stopped)?;
        }
        // The archiver may have stopped waiting (an error elsewhere); nothing to do then.
        let _ = reply.send(id);
    }
    Ok(())
}
