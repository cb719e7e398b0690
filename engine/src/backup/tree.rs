//! Tree stage: builds one tree blob per directory, bottom-up, as directories finish. The
//! archiver hands over each finished directory with its entries in name order, some still
//! pending (files being read, a subdirectory being finished); this stage, on its own thread,
//! waits for them, serializes the tree, and stores it through the seal stage.
//!
//! The file threads leave each file's finished node in its directory's [`DirFiles`], and this
//! stage waits once per directory for all of them, not once per file: a reply channel per
//! file made the file threads wake this thread for nearly every small file.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};

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
    /// A file being read: its place in the directory's [`DirFiles`].
    File(usize),
    /// A subdirectory; its tree id comes back.
    Dir(Node, Receiver<Id>),
}

/// How a file being read came back.
// Kept in one vector per directory; boxing the node would cost an allocation per file.
#[allow(clippy::large_enum_variant)]
enum FileResult {
    /// Not yet.
    Waiting,
    /// Read: the node with its content.
    Read(Node),
    /// Could not be read (reported; it is left out).
    Unreadable,
    /// Its file thread stopped without an answer (the pipeline is stopping).
    Lost,
}

/// The files of one directory being read. The archiver adds them, the file threads answer
/// through [`FileReply`], and the tree stage takes them all at once when every one is back.
pub struct DirFiles {
    state: Mutex<FilesState>,
    all_back: Condvar,
}

struct FilesState {
    results: Vec<FileResult>,
    /// Files not back yet, plus one until the archiver has added the directory's last file.
    outstanding: usize,
}

impl DirFiles {
    /// A directory to which the archiver may still add files.
    pub fn new() -> Arc<DirFiles> {
        Arc::new(DirFiles {
            state: Mutex::new(FilesState {
                results: Vec::new(),
                outstanding: 1,
            }),
            all_back: Condvar::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FilesState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a file to be read: its place among the directory's files, and where its answer goes.
    pub fn add(self: &Arc<Self>) -> (usize, FileReply) {
        let mut st = self.lock();
        st.results.push(FileResult::Waiting);
        st.outstanding += 1;
        let index = st.results.len() - 1;
        let reply = FileReply {
            dir: self.clone(),
            index,
            answered: false,
        };
        (index, reply)
    }

    /// The archiver adds no more files.
    pub fn close(&self) {
        self.answer(None);
    }

    /// Records one answer (or the archiver's close), waking the tree stage after the last.
    fn answer(&self, result: Option<(usize, FileResult)>) {
        let mut st = self.lock();
        if let Some((i, r)) = result {
            st.results[i] = r;
        }
        st.outstanding -= 1;
        if st.outstanding == 0 {
            self.all_back.notify_all();
        }
    }

    /// Waits until every file is back and the archiver has closed the directory.
    fn take_all(&self) -> Vec<FileResult> {
        let mut st = self.lock();
        while st.outstanding > 0 {
            st = self.all_back.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        std::mem::take(&mut st.results)
    }
}

/// Where a file thread answers for one file. Dropped unanswered, it tells the tree stage that
/// the file was lost, so the tree stage never waits for an answer that cannot come.
pub struct FileReply {
    dir: Arc<DirFiles>,
    index: usize,
    answered: bool,
}

impl FileReply {
    /// The file's finished node, or `None` if it could not be read (it is left out).
    pub fn send(mut self, node: Option<Node>) {
        self.answered = true;
        let result = node.map_or(FileResult::Unreadable, FileResult::Read);
        self.dir.answer(Some((self.index, result)));
    }
}

impl Drop for FileReply {
    fn drop(&mut self) {
        if !self.answered {
            self.dir.answer(Some((self.index, FileResult::Lost)));
        }
    }
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
    /// Its files being read.
    pub files: Arc<DirFiles>,
}

/// A directory whose entries are all known, and where to send its tree id.
pub struct FinishedDir {
    /// The directory.
    pub dir: DirBuilder,
    /// Receives the tree id.
    pub reply: Sender<Id>,
}

/// Why the tree stage stopped early.
#[derive(Debug)]
pub enum Stopped {
    /// The pipeline stopped behind this stage (an upload failed).
    Pipeline,
    /// A directory's tree would be larger than readers accept
    /// ([`cairn_repo_format::blob::MAX_TREE_BLOB`]): storing it would make the snapshot
    /// unreadable, so the backup stops instead.
    TooLarge {
        /// The directory's name.
        dir: String,
        /// Its entries.
        entries: usize,
        /// The tree's size.
        size: usize,
    },
}

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
        let mut files = dir.files.take_all();
        for entry in dir.entries {
            match entry {
                Pending::Ready(n) => nodes.push(n),
                Pending::File(i) => {
                    let result = files
                        .get_mut(i)
                        .map(|r| std::mem::replace(r, FileResult::Lost));
                    match result {
                        Some(FileResult::Read(n)) => nodes.push(n),
                        Some(FileResult::Unreadable) => {}
                        _ => return Err(Stopped::Pipeline),
                    }
                }
                Pending::Dir(mut n, rx) => {
                    n.subtree = Some(rx.recv().map_err(|_| Stopped::Pipeline)?);
                    nodes.push(n);
                }
            }
        }
        let entries = nodes.len();
        let bytes = Tree { nodes }.to_bytes();
        if bytes.len() > cairn_repo_format::blob::MAX_TREE_BLOB as usize {
            let dir = match &dir.node {
                Some(n) => n.name.display().to_string(),
                None => "/".to_string(),
            };
            return Err(Stopped::TooLarge {
                dir,
                entries,
                size: bytes.len(),
            });
        }
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
                .map_err(|_| Stopped::Pipeline)?;
        }
        // The archiver may have stopped waiting (an error elsewhere); nothing to do then.
        let _ = reply.send(id);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_repo_format::tree::RawBytes;

    fn file(name: &str) -> Node {
        let mut n = crate::backup::read::tests::node(0, 0, 0);
        n.name = RawBytes(name.as_bytes().to_vec());
        n
    }

    #[test]
    fn a_directory_waits_for_every_answer_and_keeps_their_places() {
        let dir = DirFiles::new();
        let replies: Vec<_> = (0..3).map(|_| dir.add()).collect();
        let taken = std::thread::scope(|s| {
            let waiter = s.spawn(|| dir.take_all());
            // Answers come back out of order, from other threads; the archiver closes last.
            let mut replies = replies;
            let (_, last) = replies.pop().unwrap();
            s.spawn(move || last.send(Some(file("c"))));
            let (_, middle) = replies.pop().unwrap();
            s.spawn(move || middle.send(None));
            let (_, first) = replies.pop().unwrap();
            first.send(Some(file("a")));
            assert!(
                !waiter.is_finished(),
                "the directory is not complete before the archiver closes it"
            );
            dir.close();
            waiter.join().unwrap()
        });
        let names: Vec<String> = taken
            .iter()
            .map(|r| match r {
                FileResult::Read(n) => String::from_utf8_lossy(&n.name.0).into_owned(),
                FileResult::Unreadable => "unreadable".into(),
                FileResult::Waiting => "waiting".into(),
                FileResult::Lost => "lost".into(),
            })
            .collect();
        assert_eq!(names, ["a", "unreadable", "c"]);
    }

    #[test]
    fn a_reply_dropped_unanswered_is_lost_not_waited_for() {
        let dir = DirFiles::new();
        let (_, reply) = dir.add();
        drop(reply);
        dir.close();
        assert!(matches!(dir.take_all()[..], [FileResult::Lost]));
    }
}
