//! Backing up a stream (`cairn backup --stdin`, for `pg_dump | cairn backup --stdin`): the
//! same chunk → seal → pack → upload stages as a file, with the stream as the one file of the
//! snapshot. Content-defined chunking makes consecutive dumps of a slowly changing database
//! share most of their blobs.

use std::io::Read;
use std::sync::atomic::Ordering;

use cairn_repo_format::chunker::{ChunkReader, Chunker};
use cairn_repo_format::snapshot::Snapshot;
use cairn_repo_format::tree::{Node, NodeType, RawBytes, Tree};
use cairn_repo_format::{BlobType, Opened, RepoError, Repository};
use chrono::Utc;
use crossbeam_channel::bounded;

use super::seal::{Dedup, SealJob, SealTo, seal};
use super::{BackupError, BackupOptions, BackupOutcome, Progress, chunk, summarize};
use crate::Context;
use crate::store;

/// Backs up everything `source` yields as one file named `name` at the snapshot's root. The
/// snapshot's path is `/NAME`, so the next dump of the same name finds this one as parent.
/// Like [`super::run`], it holds the backup lock only while it runs; cancelled, it writes no
/// snapshot.
pub fn run(
    repo: &Repository<Opened>,
    source: impl Read,
    name: &str,
    opts: &BackupOptions,
    progress: &Progress,
    cx: &Context,
) -> Result<BackupOutcome, BackupError> {
    if name.is_empty() || !Node::name_is_safe(name.as_bytes()) {
        return Err(BackupError::BadPath {
            path: name.into(),
            reason: "--stdin-filename must be a plain file name (no '/', not '.' or '..')".into(),
        });
    }
    cx.cancel.check().map_err(|_| BackupError::Cancelled)?;
    let repo = &crate::lock::index_for_backup(repo.clone())?;
    crate::open::report_skipped(repo, cx);
    let start = Utc::now();
    let path = format!("/{name}");
    let parent = super::find_parent(repo, opts, std::slice::from_ref(&path))?;
    let key = repo.key();
    let level = repo.config().compression;
    let dedup = Dedup::new(repo.index());
    let chunker =
        Chunker::new(&repo.config().chunker).expect("validated when the repository was opened");
    let mut reader = ChunkReader::new(chunker, 1 << 20);
    let (tx, rx) = bounded(8);
    let sealers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let (seal_tx, seal_rx) = bounded::<SealJob>(sealers * 2);
    let (chunked, packed) = std::thread::scope(|s| {
        let packer = s.spawn(move || {
            store::run(
                repo,
                rx,
                opts.upload_connections(repo),
                progress,
                &cx.cancel,
            )
        });
        for _ in 0..sealers {
            let (jobs, blobs) = (seal_rx.clone(), tx.clone());
            s.spawn(move || super::seal::worker(key, level, jobs, blobs));
        }
        drop(seal_rx);
        let chunked = chunk::chunk_file(&mut reader, key, source, |id, data| {
            if cx.cancel.is_cancelled() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::Interrupted,
                    "cancelled",
                ));
            }
            super::seal::store_chunk(&dedup, &SealTo::Pool(&seal_tx), progress, id, data)
        });
        drop(seal_tx);
        let chunked = chunked.and_then(|c| {
            let now = Utc::now();
            let node = Node {
                name: RawBytes(name.as_bytes().to_vec()),
                kind: NodeType::File,
                mode: 0o644,
                uid: nix::unistd::getuid().as_raw(),
                gid: nix::unistd::getgid().as_raw(),
                user: String::new(),
                group: String::new(),
                mtime: now,
                atime: now,
                ctime: now,
                size: c.size,
                inode: 0,
                device: 0,
                links: 1,
                rdev: 0,
                linktarget: None,
                xattrs: Vec::new(),
                content: Some(c.content),
                subtree: None,
            };
            let bytes = Tree { nodes: vec![node] }.to_bytes();
            let id = key.blob_id(&bytes);
            if dedup.claim(BlobType::Tree, &id) {
                progress.tree_blobs.fetch_add(1, Ordering::Relaxed);
                tx.send(vec![seal(key, BlobType::Tree, id, &bytes, level)])
                    .map_err(|_| std::io::Error::other("pipeline stopped"))?;
            }
            Ok((id, c.size))
        });
        drop(tx);
        let packed = packer.join().unwrap_or_else(|_| {
            Err(RepoError::Corrupt {
                object: "pack stage".into(),
                reason: "panicked".into(),
            })
        });
        (chunked, packed)
    });
    packed?;
    if cx.cancel.is_cancelled() {
        return Err(BackupError::Cancelled);
    }
    let (tree, size) = chunked.map_err(|e| BackupError::BadPath {
        path: "stdin".into(),
        reason: format!("reading failed: {e}; no snapshot written"),
    })?;
    progress.files_new.fetch_add(1, Ordering::Relaxed);
    progress.bytes_new.fetch_add(size, Ordering::Relaxed);
    progress.bytes_total.fetch_add(size, Ordering::Relaxed);
    let snapshot = Snapshot {
        time: opts.time.unwrap_or(start),
        hostname: opts.hostname.clone(),
        username: cairn_repo_format::key::username(),
        paths: vec![path],
        tags: opts.tags.clone(),
        labels: opts.labels.clone(),
        tree,
        root: None,
        parent: parent.map(|(id, _)| id),
        original: None,
        program_version: format!("cairn {}", env!("CARGO_PKG_VERSION")),
        summary: summarize(progress, start),
    };
    let id = repo.save_snapshot(&snapshot)?;
    Ok(BackupOutcome { id, snapshot })
}

/// The standard output of a command, to back up with [`run`] (`--stdin-from-command`). Its
/// exit status is checked when its output ends: a command that fails (a `pg_dump` that lost
/// its connection) makes the read fail, so its truncated output never becomes a snapshot.
pub struct CommandOutput {
    child: std::process::Child,
    stdout: std::process::ChildStdout,
    name: String,
    finished: bool,
}

impl CommandOutput {
    /// Starts `argv` (the program, then its arguments) with its stdout piped to us, stdin
    /// and stderr inherited.
    pub fn spawn(argv: &[std::ffi::OsString]) -> std::io::Result<CommandOutput> {
        let Some((program, args)) = argv.split_first() else {
            return Err(std::io::Error::other("no command given"));
        };
        let name = program.to_string_lossy().into_owned();
        let mut child = std::process::Command::new(program)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| std::io::Error::new(e.kind(), format!("{name}: {e}")))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("no stdout pipe"))?;
        Ok(CommandOutput {
            child,
            stdout,
            name,
            finished: false,
        })
    }
}

impl Read for CommandOutput {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.stdout.read(buf)?;
        if n == 0 && !buf.is_empty() && !self.finished {
            self.finished = true;
            let status = self.child.wait()?;
            if !status.success() {
                return Err(std::io::Error::other(format!("{} {status}", self.name)));
            }
        }
        Ok(n)
    }
}

impl Drop for CommandOutput {
    fn drop(&mut self) {
        if !self.finished {
            // Stopped early (an error or a cancel): the command must not outlive us.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
