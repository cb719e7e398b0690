//! A repository in a local directory, on `std::fs` directly: reads are `pread`s of the byte
//! range on the calling thread, writes go to a temporary file in the target directory and are
//! published with `link(2)`, which fails if the name exists, so a put is create-only and
//! atomic (no reader ever sees half an object). object_store's `LocalFileSystem` did the same
//! work through a tokio blocking pool, a thread hand-off per request; restore and check make a
//! request per pack range and per tree, so the hand-offs showed in their profiles (measured
//! in docs/benchmarks.md, "Local directories without object_store").
//!
//! Packs are built in a temporary file in the repository's directory ([`Backend::spool`]),
//! so that storing one is an `fsync` and a `link` and no pack is held in memory.

use std::fs::{self, File};
use std::io::{self, Write};
use std::ops::Range;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::{Backend, BackendError, ObjectInfo, Spool, Spooled};

/// A new temporary name in `dir` for `name`.
fn temp_name(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!(
        "{TEMP_PREFIX}{name}-{:016x}",
        crate::crypto::random_u64()
    ))
}

/// Temporary files start with this; listings skip them.
const TEMP_PREFIX: &str = ".tmp-";

/// A local directory holding a repository.
pub struct LocalBackend {
    root: PathBuf,
    buffers: Arc<ReadBuffers>,
}

/// Reads at least this long go into pooled buffers.
const POOLED_FROM: usize = 256 << 10;
/// Idle pooled buffers, in bytes of capacity, at most.
const POOL_BYTES: usize = 32 << 20;

/// Buffers of large ranged reads, reused. Restore and check read each pack (16 MiB) or a
/// long range of it, and the bytes are freed once the range's blobs are opened; a fresh
/// buffer per read was mapped and faulted in a page at a time (some 130 000 page faults per
/// restore of the standard dataset). A buffer returns here when the last `Bytes` slice of
/// it is dropped.
#[derive(Default)]
struct ReadBuffers {
    idle: Mutex<(Vec<Vec<u8>>, usize)>,
}

impl ReadBuffers {
    /// A buffer of exactly `len` bytes (their contents are whatever a previous read left).
    fn take(&self, len: usize) -> Vec<u8> {
        let reused = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            // The smallest buffer that is long enough, else the longest.
            let pick = (idle.0.iter().enumerate())
                .filter(|(_, b)| b.len() >= len)
                .min_by_key(|(_, b)| b.len())
                .or_else(|| idle.0.iter().enumerate().max_by_key(|(_, b)| b.len()))
                .map(|(i, _)| i);
            pick.map(|i| {
                let b = idle.0.swap_remove(i);
                idle.1 -= b.capacity();
                b
            })
        };
        let mut buf = reused.unwrap_or_default();
        // Only bytes beyond what the buffer held are zeroed; the read overwrites all of them.
        buf.resize(len, 0);
        buf
    }

    fn give_back(&self, buf: Vec<u8>) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.1 + buf.capacity() <= POOL_BYTES {
            idle.1 += buf.capacity();
            idle.0.push(buf);
        }
    }
}

/// A pooled buffer holding a read; back to the pool when dropped.
struct Pooled {
    buf: Vec<u8>,
    pool: Arc<ReadBuffers>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.buf));
    }
}

impl LocalBackend {
    /// The repository in `dir`, created (with parents) when `create` is set.
    pub fn new(dir: &Path, create: bool) -> Result<Self, BackendError> {
        if create {
            fs::create_dir_all(dir).map_err(|e| BackendError::Other {
                path: dir.display().to_string(),
                message: format!("cannot create directory: {e}"),
            })?;
        }
        if !dir.is_dir() {
            return Err(BackendError::NotFound {
                path: dir.display().to_string(),
            });
        }
        Ok(LocalBackend {
            root: dir.to_path_buf(),
            buffers: Arc::default(),
        })
    }

    fn full(&self, path: &str) -> PathBuf {
        self.root.join(path)
    }

    /// The object name of a path below the root.
    fn name_of(&self, path: &Path) -> String {
        path.strip_prefix(&self.root)
            .unwrap_or(path)
            .to_string_lossy()
            .into_owned()
    }
}

fn io_error(path: &str, e: io::Error) -> BackendError {
    match e.kind() {
        io::ErrorKind::NotFound => BackendError::NotFound { path: path.into() },
        io::ErrorKind::AlreadyExists => BackendError::AlreadyExists { path: path.into() },
        _ => BackendError::Other {
            path: path.into(),
            message: e.to_string(),
        },
    }
}

impl Backend for LocalBackend {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn list(&self, prefix: &str, f: &mut dyn FnMut(ObjectInfo)) -> Result<(), BackendError> {
        let start = self.full(prefix.trim_end_matches('/'));
        if !start.exists() {
            return Ok(());
        }
        for entry in walkdir::WalkDir::new(&start).sort_by_file_name() {
            let entry = entry.map_err(|e| BackendError::Other {
                path: prefix.into(),
                message: e.to_string(),
            })?;
            let name = entry.file_name().to_string_lossy();
            if !entry.file_type().is_file() || name.starts_with(TEMP_PREFIX) {
                continue;
            }
            let rel = self.name_of(entry.path());
            let meta = entry.metadata().map_err(|e| BackendError::Other {
                path: rel.clone(),
                message: e.to_string(),
            })?;
            f(ObjectInfo {
                path: rel,
                size: meta.len(),
                mtime: meta.modified().ok(),
            });
        }
        Ok(())
    }

    fn head(&self, path: &str) -> Result<Option<u64>, BackendError> {
        match fs::metadata(self.full(path)) {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(path, e)),
        }
    }

    fn get(&self, path: &str, range: Option<Range<u64>>) -> Result<Bytes, BackendError> {
        // Opened without blocking, and refused unless it is a regular file: a FIFO or device
        // planted under an object's name must not hang a reader or feed it endless bytes.
        let file = File::options()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(self.full(path))
            .map_err(|e| io_error(path, e))?;
        let meta = file.metadata().map_err(|e| io_error(path, e))?;
        if !meta.is_file() {
            return Err(BackendError::Other {
                path: path.into(),
                message: "not a regular file; refusing to read it (replace or remove it)".into(),
            });
        }
        let range = match range {
            Some(r) => r,
            None => 0..meta.len(),
        };
        let len = (range.end.saturating_sub(range.start)) as usize;
        let mut buf = if len >= POOLED_FROM {
            self.buffers.take(len)
        } else {
            vec![0u8; len]
        };
        let read = file.read_exact_at(&mut buf, range.start);
        if let Err(e) = read {
            if len >= POOLED_FROM {
                self.buffers.give_back(buf);
            }
            return Err(match e.kind() {
                io::ErrorKind::UnexpectedEof => BackendError::Other {
                    path: path.into(),
                    message: format!("range {range:?} lies beyond the end of the object"),
                },
                _ => io_error(path, e),
            });
        }
        Ok(if len >= POOLED_FROM {
            Bytes::from_owner(Pooled {
                buf,
                pool: self.buffers.clone(),
            })
        } else {
            Bytes::from(buf)
        })
    }

    fn put(&self, path: &str, data: Bytes) -> Result<(), BackendError> {
        let target = self.full(path);
        let dir = target.parent().unwrap_or(&self.root);
        fs::create_dir_all(dir).map_err(|e| io_error(path, e))?;
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temp = temp_name(dir, &name);
        let written = (|| {
            let mut f = File::options().write(true).create_new(true).open(&temp)?;
            f.write_all(&data)?;
            // On disk before its name is: an index never names a pack a crash could lose.
            f.sync_data()
        })();
        let published = written.and_then(|()| fs::hard_link(&temp, &target));
        let _ = fs::remove_file(&temp);
        published.map_err(|e| io_error(path, e))
    }

    fn remove_stale_temporaries(
        &self,
        before: std::time::SystemTime,
    ) -> Result<Vec<String>, BackendError> {
        let mut removed = Vec::new();
        for entry in walkdir::WalkDir::new(&self.root).min_depth(1) {
            let entry = entry.map_err(|e| BackendError::Other {
                path: self.root.display().to_string(),
                message: e.to_string(),
            })?;
            let temp = entry.file_type().is_file()
                && entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX);
            if !temp {
                continue;
            }
            let rel = self.name_of(entry.path());
            let old = entry
                .metadata()
                .ok()
                .and_then(|m| m.modified().ok())
                .is_some_and(|t| t < before);
            if old {
                match fs::remove_file(entry.path()) {
                    Ok(()) => removed.push(rel),
                    // Gone meanwhile: its writer finished after all.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_error(&rel, e)),
                }
            }
        }
        Ok(removed)
    }

    /// A temporary file in the repository's directory: on the same file system as every
    /// object, so that storing it is a `link`.
    fn parallelism(&self) -> super::Parallelism {
        super::Parallelism::local()
    }

    fn spool(&self, _capacity: usize) -> Result<Spool, BackendError> {
        Spool::file(temp_name(&self.root, "spool")).map_err(|e| BackendError::Other {
            path: self.root.display().to_string(),
            message: format!("cannot create a temporary file: {e}"),
        })
    }

    fn put_spooled(&self, path: &str, body: &Spooled) -> Result<(), BackendError> {
        let Some(synced) = body.synced_file() else {
            return self.put(path, body.bytes().map_err(|e| io_error(path, e))?);
        };
        // On disk before its name is, as in `put`.
        let temp = synced.map_err(|e| io_error(path, e))?;
        let target = self.full(path);
        let dir = target.parent().unwrap_or(&self.root);
        fs::create_dir_all(dir).map_err(|e| io_error(path, e))?;
        match fs::hard_link(temp, &target) {
            // A body spooled on another file system (not by this backend) is copied.
            Err(e) if e.kind() == io::ErrorKind::CrossesDevices => {
                self.put(path, body.bytes().map_err(|e| io_error(path, e))?)
            }
            r => r.map_err(|e| io_error(path, e)),
        }
    }

    fn delete(&self, path: &str) -> Result<(), BackendError> {
        fs::remove_file(self.full(path)).map_err(|e| io_error(path, e))
    }
}
