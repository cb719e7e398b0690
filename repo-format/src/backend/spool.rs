//! Spools: where an object (a pack) is built before it is stored, so that it need not be held
//! in memory when the backend can take it from a file.
//!
//! A [`Spool`] is written once, front to back, then [`Spool::finish`]ed into a [`Spooled`]
//! body for [`super::Backend::put_spooled`]. The default spool is memory. A local directory
//! spools to a temporary file beside the repository's objects and stores it with `link(2)`:
//! the pack's bytes go to the file system as they arrive and are never copied again
//! (restic builds packs in temporary files for the same reason). A temporary file is removed
//! when its spool or body is dropped, whether or not it was stored.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;

/// Writes to a spool file are gathered into this many bytes: small blobs are appended one
/// `write` per batch rather than one per blob.
const FILE_BUFFER: usize = 256 << 10;

/// An object being built.
pub struct Spool {
    inner: Building,
    len: u64,
}

enum Building {
    Memory(Vec<u8>),
    File(BufWriter<File>, TempFile),
}

/// A finished spool: the body of one object, ready to store (and to store again on a retry).
pub struct Spooled {
    inner: Body,
    len: u64,
}

enum Body {
    Memory(Bytes),
    File(File, TempFile),
}

/// A temporary file's path, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    /// `e`, naming the file.
    fn error(&self, e: io::Error) -> io::Error {
        io::Error::new(e.kind(), format!("{}: {e}", self.0.display()))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Spool {
    /// A spool in memory, with room for `capacity` bytes.
    pub fn memory(capacity: usize) -> Spool {
        Spool {
            inner: Building::Memory(Vec::with_capacity(capacity)),
            len: 0,
        }
    }

    /// A spool in a new temporary file at `path` (created; it must not exist).
    pub fn file(path: PathBuf) -> io::Result<Spool> {
        let file = File::options().write(true).create_new(true).open(&path)?;
        Ok(Spool {
            inner: Building::File(BufWriter::with_capacity(FILE_BUFFER, file), TempFile(path)),
            len: 0,
        })
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Ends writing.
    pub fn finish(self) -> io::Result<Spooled> {
        let inner = match self.inner {
            Building::Memory(v) => Body::Memory(Bytes::from(v)),
            Building::File(w, temp) => {
                let file = w.into_inner().map_err(|e| temp.error(e.into_error()))?;
                Body::File(file, temp)
            }
        };
        Ok(Spooled {
            inner,
            len: self.len,
        })
    }
}

impl Write for Spool {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = match &mut self.inner {
            Building::Memory(v) => {
                v.extend_from_slice(buf);
                buf.len()
            }
            Building::File(w, temp) => w.write(buf).map_err(|e| temp.error(e))?,
        };
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.inner {
            Building::Memory(_) => Ok(()),
            Building::File(w, temp) => w.flush().map_err(|e| temp.error(e)),
        }
    }
}

impl Spooled {
    /// The body's length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True for an empty body.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The whole body in memory (read from its file if spooled to one), for a backend that
    /// stores objects from memory.
    pub fn bytes(&self) -> io::Result<Bytes> {
        match &self.inner {
            Body::Memory(b) => Ok(b.clone()),
            Body::File(_, temp) => {
                let mut v = Vec::with_capacity(self.len as usize);
                File::open(&temp.0)?.read_to_end(&mut v)?;
                Ok(Bytes::from(v))
            }
        }
    }

    /// The temporary file holding the body, flushed to stable storage, if it is in one.
    pub fn synced_file(&self) -> Option<io::Result<&Path>> {
        match &self.inner {
            Body::Memory(_) => None,
            Body::File(f, temp) => Some(f.sync_data().map(|()| temp.0.as_path())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_and_file_spools_hold_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let temp = dir.path().join(".tmp-spool");
        for mut s in [Spool::memory(0), Spool::file(temp.clone()).unwrap()] {
            s.write_all(b"hello ").unwrap();
            s.write_all(&[7u8; 300_000]).unwrap();
            assert_eq!(s.len(), 300_006);
            let body = s.finish().unwrap();
            assert_eq!(body.len(), 300_006);
            let b = body.bytes().unwrap();
            assert_eq!(&b[..6], b"hello ");
            assert!(b[6..].iter().all(|&x| x == 7));
        }
        assert!(!temp.exists(), "a file spool's temporary file goes with it");
    }

    #[test]
    fn a_file_spool_refuses_an_existing_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        std::fs::write(&p, b"keep").unwrap();
        assert!(Spool::file(p.clone()).is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"keep");
    }
}
