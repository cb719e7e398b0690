//! Batch stage: collects the plan's file contents into bounded batches, schedules each batch
//! (its blob references deduplicated, grouped by pack, sorted by offset, neighbours coalesced
//! into one ranged GET) and tracks completion.
//!
//! A batch is *complete* when every write it scheduled is done and every file whose last chunk
//! it held is finished (content, length, verification, metadata). Steps that must come after
//! the files they depend on, a directory's metadata and a hard link to a file still being
//! written, are deferred to the batch being built and run once that batch is complete; batches
//! complete in the order their deferred steps run, so directories still get their metadata
//! after everything inside them.
//!
//! Bounds: a batch holds at most `files` files with content and `blobs` blob references, and at
//! most two batches exist at a time (while one is being written, the next is built; when it is
//! full it is dispatched behind the first, and the plan waits for the first to complete), so the
//! plan's state and the number of open files do not grow with the snapshot.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use cairn_repo_format::Id;
use cairn_repo_format::index::BlobLocation;
use cairn_repo_format::tree::Node;
use crossbeam_channel::{Receiver, Sender, bounded};

use super::Shared;
use super::write::{self, Dir, First};

/// How a file being restored ended; shared with the hard-link table so that later names of the
/// same inode know whether they can link to it.
#[derive(Default)]
pub struct Outcome {
    state: AtomicU8,
    error: OnceLock<String>,
}

const PENDING: u8 = 0;
const OK: u8 = 1;
const FAILED: u8 = 2;

/// What [`Outcome::get`] says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Still being written.
    Pending,
    /// Restored.
    Ok,
    /// Failed (and reported).
    Failed,
}

impl Outcome {
    /// The current status.
    pub fn get(&self) -> Status {
        match self.state.load(Ordering::Acquire) {
            PENDING => Status::Pending,
            OK => Status::Ok,
            _ => Status::Failed,
        }
    }

    /// The first error reported for the file, if it failed.
    pub fn error(&self) -> Option<&str> {
        self.error.get().map(String::as_str)
    }

    fn set(&self, status: u8) {
        self.state.store(status, Ordering::Release);
    }
}

/// A regular file being restored: created (empty) by the plan, written by the write stage,
/// finished by whichever stage completes its last chunk.
pub struct FileState {
    /// Where it goes, relative to the target (for reports).
    pub rel: PathBuf,
    /// Where it goes.
    pub path: PathBuf,
    /// Its node (metadata, and the blob ids `--verify` checks).
    pub node: Node,
    /// Open for writing; closed when the last reference goes.
    pub file: File,
    /// Final length, known once the plan has located every chunk.
    size: OnceLock<u64>,
    /// Chunks not yet written (or failed), plus one while the plan is still scheduling.
    remaining: AtomicUsize,
    failed: AtomicBool,
    /// The last chunk was written (not a hole), so the file already has its full length.
    tail_written: AtomicBool,
    /// Shared with the hard-link table.
    pub outcome: Arc<Outcome>,
}

impl FileState {
    /// A file with `chunks` chunks to write; the plan holds one more reference until it has
    /// scheduled them all (see [`FileState::release`]).
    pub fn new(rel: PathBuf, path: PathBuf, node: Node, file: File, chunks: usize) -> Arc<Self> {
        Arc::new(FileState {
            rel,
            path,
            node,
            file,
            size: OnceLock::new(),
            remaining: AtomicUsize::new(chunks + 1),
            failed: AtomicBool::new(false),
            tail_written: AtomicBool::new(false),
            outcome: Arc::new(Outcome::default()),
        })
    }

    /// Reports the file's first problem; later ones are not reported (the file is lost anyway).
    pub fn fail(&self, shared: &Shared<'_>, message: String) {
        if !self.failed.swap(true, Ordering::AcqRel) {
            shared.problem(&self.rel, &message);
            let _ = self.outcome.error.set(message);
        }
    }

    /// Gives the file up without a report of its own (the restore was cancelled, or the
    /// target is full, which is reported once for the whole restore): it is not finished, so
    /// it keeps neither its final length nor its metadata. The first call counts it as not
    /// restored ([`super::full::Stop::not_restored`]); a file already failed is not counted
    /// again.
    pub fn give_up(&self, shared: &Shared<'_>) {
        if !self.failed.swap(true, Ordering::AcqRel) {
            shared.stop.not_restored(1);
        }
    }

    /// Whether a problem was reported for this file.
    pub fn is_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Records the final length (sum of the chunks' plaintext lengths).
    pub fn set_size(&self, size: u64) {
        let _ = self.size.set(size);
    }

    /// The final length.
    pub fn size(&self) -> u64 {
        self.size.get().copied().unwrap_or(0)
    }

    /// Records that `len` bytes of data (not a hole) were written at `offset`.
    pub fn written(&self, offset: u64, len: u64) {
        // The size is set before the batch holding the last chunk is dispatched.
        if len > 0 && offset + len == self.size() {
            self.tail_written.store(true, Ordering::Release);
        }
    }

    /// Whether the file's length must still be set (it ends in a hole).
    pub fn needs_length(&self) -> bool {
        self.size() > 0 && !self.tail_written.load(Ordering::Acquire)
    }

    /// Marks `n` of the file's references done (chunks written or failed, or the plan's own);
    /// the caller that releases the last one finishes the file.
    pub fn release(&self, shared: &Shared<'_>, n: usize) {
        if n > 0 && self.remaining.fetch_sub(n, Ordering::AcqRel) == n {
            write::finish_file(shared, self);
        }
    }

    /// Records the end of the file (called by [`write::finish_file`] only).
    pub(super) fn set_outcome(&self, ok: bool) {
        self.outcome.set(if ok { OK } else { FAILED });
    }
}

/// Keeps its batch incomplete while it lives: the batch's completion channel closes when the
/// last of these is dropped.
pub struct BatchToken {
    _done: Sender<()>,
}

/// One place a blob's plaintext goes: a file and an offset in it.
pub struct Dest {
    /// The file.
    pub file: Arc<FileState>,
    /// Byte offset in it.
    pub offset: u64,
    _batch: Arc<BatchToken>,
}

impl Dest {
    /// This chunk is done (written, or its failure reported on the file).
    pub fn finish(self, shared: &Shared<'_>) {
        self.file.release(shared, 1);
        // `self` (and with it the batch token) drops only now, after the file is finished.
    }
}

/// A blob needed by a batch, with every place it goes.
pub struct BlobRef {
    /// Where it is stored.
    pub loc: BlobLocation,
    /// Where its plaintext goes (one or more files and offsets).
    pub dests: Vec<Dest>,
}

impl BlobRef {
    /// Start of the blob in its pack.
    pub fn start(&self) -> u64 {
        self.loc.entry.offset as u64
    }

    /// End (exclusive) of the blob in its pack.
    pub fn end(&self) -> u64 {
        self.loc.entry.offset as u64 + self.loc.entry.length as u64
    }
}

/// One ranged GET: bytes `start..end` of `pack`, holding `blobs` (sorted by offset).
pub struct RangeRequest {
    /// The pack.
    pub pack: Id,
    /// First byte.
    pub start: u64,
    /// End (exclusive).
    pub end: u64,
    /// The blobs inside the range.
    pub blobs: Vec<BlobRef>,
}

/// A step that has to wait until the files before it are complete.
pub enum After {
    /// Another name for a multiply-linked file whose first name is still being written.
    Link {
        /// The directory the new name goes in.
        dir: Arc<Dir>,
        /// The new name.
        name: OsString,
        /// Its path relative to the target.
        rel: PathBuf,
        /// The first name.
        first: First,
        /// How the first name ends.
        outcome: Arc<Outcome>,
    },
    /// A directory's metadata, applied after everything inside it.
    DirMeta {
        /// The directory.
        dir: Arc<Dir>,
        /// Its path relative to the target.
        rel: PathBuf,
        /// Its node.
        node: Box<Node>,
    },
}

/// Size of batches and of ranged reads.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Files with content per batch; also the number of deferred steps per batch.
    pub files: usize,
    /// Blob references per batch.
    pub blobs: usize,
    /// Largest gap between two blobs still read in one GET.
    pub max_gap: u64,
    /// Longest GET (a single larger blob is still read whole).
    pub max_range: u64,
}

/// The batch being built.
pub struct Batch {
    token: Arc<BatchToken>,
    done: Receiver<()>,
    refs: Vec<BlobRef>,
    by_id: HashMap<Id, usize>,
    files: usize,
    blobs: usize,
    after: Vec<After>,
}

impl Batch {
    fn new() -> Batch {
        let (tx, rx) = bounded(0);
        Batch {
            token: Arc::new(BatchToken { _done: tx }),
            done: rx,
            refs: Vec::new(),
            by_id: HashMap::new(),
            files: 0,
            blobs: 0,
            after: Vec::new(),
        }
    }

    /// Counts one more file with content.
    pub fn add_file(&mut self) {
        self.files += 1;
    }

    /// Schedules chunk `loc` of `file` at `offset`; a blob already in the batch is fetched once.
    pub fn add_chunk(&mut self, loc: BlobLocation, file: &Arc<FileState>, offset: u64) {
        let dest = Dest {
            file: file.clone(),
            offset,
            _batch: self.token.clone(),
        };
        self.blobs += 1;
        match self.by_id.get(&loc.entry.id) {
            Some(&i) => self.refs[i].dests.push(dest),
            None => {
                self.by_id.insert(loc.entry.id, self.refs.len());
                self.refs.push(BlobRef {
                    loc,
                    dests: vec![dest],
                });
            }
        }
    }

    /// Defers `step` until this batch is complete.
    pub fn defer(&mut self, step: After) {
        self.after.push(step);
    }
}

/// Groups blob references by pack, sorted by offset, into ranged reads: neighbours at most
/// `max_gap` apart share a read as long as it stays within `max_range` bytes.
pub fn schedule(mut refs: Vec<BlobRef>, max_gap: u64, max_range: u64) -> Vec<RangeRequest> {
    refs.sort_by_key(|r| (r.loc.pack, r.start(), r.end()));
    let mut out: Vec<RangeRequest> = Vec::new();
    for r in refs {
        if let Some(last) = out.last_mut()
            && last.pack == r.loc.pack
            && r.start().saturating_sub(last.end) <= max_gap
            && r.end().max(last.end) - last.start <= max_range
        {
            last.end = last.end.max(r.end());
            last.blobs.push(r);
            continue;
        }
        out.push(RangeRequest {
            pack: r.loc.pack,
            start: r.start(),
            end: r.end(),
            blobs: vec![r],
        });
    }
    out
}

/// A dispatched batch: closed `done` means complete.
struct InFlight {
    done: Receiver<()>,
    after: Vec<After>,
}

/// Builds batches and hands them to the fetch stage.
pub struct Batcher {
    limits: Limits,
    current: Batch,
    in_flight: Option<InFlight>,
    fetch: Sender<RangeRequest>,
}

impl Batcher {
    /// A batcher feeding `fetch`.
    pub fn new(limits: Limits, fetch: Sender<RangeRequest>) -> Batcher {
        Batcher {
            limits,
            current: Batch::new(),
            in_flight: None,
            fetch,
        }
    }

    /// Whether another file (or deferred step) would exceed the batch's bounds.
    pub fn files_full(&self) -> bool {
        let b = &self.current;
        b.files >= self.limits.files || b.after.len() >= self.limits.files
    }

    /// Whether another chunk would exceed the batch's bounds.
    pub fn blobs_full(&self) -> bool {
        self.current.blobs >= self.limits.blobs
    }

    /// The batch being built.
    pub fn current(&mut self) -> &mut Batch {
        &mut self.current
    }

    /// Dispatches the batch being built, waits until the one dispatched before it is complete,
    /// and returns that one's deferred steps, which the caller runs now.
    pub fn flush(&mut self) -> Vec<After> {
        let batch = std::mem::replace(&mut self.current, Batch::new());
        let Batch {
            token,
            done,
            refs,
            after,
            ..
        } = batch;
        let previous = self.in_flight.replace(InFlight { done, after });
        for request in schedule(refs, self.limits.max_gap, self.limits.max_range) {
            // If the fetch stage is gone (a worker panicked), the request is dropped here and
            // its files stay unfinished; the panic is reported when the threads are joined.
            let _ = self.fetch.send(request);
        }
        drop(token);
        match previous {
            Some(p) => {
                // Returns (with an error) once every token of that batch is dropped.
                let _ = p.done.recv();
                p.after
            }
            None => Vec::new(),
        }
    }

    /// Dispatches what is left and waits for everything; returns the deferred steps still to
    /// run, in order.
    pub fn finish(mut self) -> Vec<After> {
        let mut after = self.flush();
        if let Some(p) = self.in_flight.take() {
            drop(self.fetch);
            let _ = p.done.recv();
            after.extend(p.after);
        }
        after
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_repo_format::BlobType;
    use cairn_repo_format::compress::Compression;
    use cairn_repo_format::pack::PackEntry;

    fn blob(pack: u8, n: u8, offset: u32, length: u32) -> BlobRef {
        BlobRef {
            loc: BlobLocation {
                pack: Id([pack; 32]),
                entry: PackEntry {
                    ty: BlobType::Data,
                    compression: Compression::None,
                    id: Id([n; 32]),
                    offset,
                    length,
                    raw_length: length,
                },
            },
            dests: Vec::new(),
        }
    }

    fn ranges(reqs: &[RangeRequest]) -> Vec<(u8, u64, u64, usize)> {
        reqs.iter()
            .map(|r| (r.pack.0[0], r.start, r.end, r.blobs.len()))
            .collect()
    }

    #[test]
    fn groups_by_pack_sorted_and_coalesces_small_gaps() {
        let refs = vec![
            blob(2, 1, 500, 100),
            blob(1, 2, 1000, 100),
            blob(1, 3, 0, 100),
            blob(1, 4, 100, 50),
            blob(2, 5, 0, 100),
            // 10 000 bytes after the previous blob of pack 1: too far
            blob(1, 6, 11_100, 10),
        ];
        let reqs = schedule(refs, 1000, 1 << 20);
        assert_eq!(
            ranges(&reqs),
            vec![(1, 0, 1100, 3), (1, 11_100, 11_110, 1), (2, 0, 600, 2)]
        );
        let offsets: Vec<u64> = reqs[0].blobs.iter().map(BlobRef::start).collect();
        assert_eq!(offsets, vec![0, 100, 1000], "sorted by offset");
    }

    #[test]
    fn reads_stay_within_max_range_but_a_large_blob_is_read_whole() {
        let refs = vec![
            blob(1, 1, 0, 400),
            blob(1, 2, 400, 400),
            blob(1, 3, 800, 400),
            blob(1, 4, 1200, 5000),
        ];
        let reqs = schedule(refs, 1000, 1000);
        assert_eq!(
            ranges(&reqs),
            vec![(1, 0, 800, 2), (1, 800, 1200, 1), (1, 1200, 6200, 1)]
        );
    }

    #[test]
    fn overlapping_entries_from_a_bad_index_do_not_underflow() {
        let refs = vec![blob(1, 1, 0, 400), blob(1, 2, 100, 50)];
        let reqs = schedule(refs, 0, 1000);
        assert_eq!(ranges(&reqs), vec![(1, 0, 400, 2)]);
    }

    fn dir_steps(after: Vec<After>) -> Vec<String> {
        after
            .into_iter()
            .map(|a| match a {
                After::DirMeta { rel, .. } | After::Link { rel, .. } => rel.display().to_string(),
            })
            .collect()
    }

    #[test]
    fn a_full_batch_is_dispatched_before_the_plan_waits_for_the_previous_one() {
        let dir = tempfile::tempdir().unwrap();
        let node: Node = serde_json::from_str(
            r#"{"name": "f", "type": "file", "mode": 420, "uid": 0, "gid": 0,
                "mtime": "2020-01-01T00:00:00Z",
                "atime": "2020-01-01T00:00:00Z", "ctime": "2020-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        let path = dir.path().join("f");
        let f = File::create(&path).unwrap();
        let state = FileState::new("f".into(), path, node.clone(), f, 2);
        let writer = write::Writer::new(dir.path(), false).unwrap();
        let dir_meta = |rel: &str| After::DirMeta {
            dir: writer.root().clone(),
            rel: rel.into(),
            node: Box::new(node.clone()),
        };
        let (tx, rx) = bounded(16);
        let limits = Limits {
            files: 1,
            blobs: 1,
            max_gap: 0,
            max_range: 1 << 20,
        };
        let mut batcher = Batcher::new(limits, tx);
        batcher
            .current()
            .add_chunk(blob(1, 1, 0, 10).loc, &state, 0);
        batcher.current().defer(dir_meta("d1"));
        assert!(batcher.blobs_full());
        assert!(batcher.flush().is_empty(), "no batch before the first");
        let first = rx.recv().unwrap();
        batcher
            .current()
            .add_chunk(blob(1, 2, 100, 10).loc, &state, 10);
        batcher.current().defer(dir_meta("d2"));
        std::thread::scope(|s| {
            let flushing = s.spawn(|| batcher.flush());
            // The second batch is handed to the fetch stage before waiting for the first…
            let second = rx
                .recv_timeout(std::time::Duration::from_secs(30))
                .expect("the second batch is dispatched without waiting for the first");
            assert_eq!(second.blobs[0].start(), 100);
            // …and its deferred steps wait until the first batch's chunks are all done.
            assert!(
                !flushing.is_finished(),
                "the first batch is still being written"
            );
            drop(first);
            assert_eq!(dir_steps(flushing.join().unwrap()), ["d1"]);
            drop(second);
        });
        assert_eq!(dir_steps(batcher.finish()), ["d2"]);
    }
}
