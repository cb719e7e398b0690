//! Storage: the small trait every backend implements (list, head, ranged get, create-only put,
//! delete) and the object names of the repository layout. Backends are synchronous; the
//! object_store adapter runs its requests on the process's one I/O runtime ([`io`]), so callers are plain
//! threads.
//!
//! Layers (retry, rate limits, dry-run) wrap a `Backend` and implement `Backend` themselves.

pub mod cloud;
pub mod io;
pub mod limit;
mod local;
mod objstore;
pub mod rest;
pub mod retry;
pub mod spool;

use std::ops::Range;

use bytes::Bytes;

use crate::id::Id;

pub use limit::{Limited, RateLimit};

pub use local::LocalBackend;
pub use objstore::{Multipart, ObjectStoreBackend};
pub use rest::{RestAuth, RestBackend};
pub use retry::{Retry, RetryPolicy};
pub use spool::{Spool, Spooled};

/// The directories of a repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// `config`
    Config,
    /// `keys/<id>`
    Key,
    /// `snapshots/<id>`
    Snapshot,
    /// `index/<id>`
    Index,
    /// `data/<2 hex>/<id>`
    Pack,
    /// `locks/<id>`: a running backup's lock, or an older writer's prune lock (see
    /// [`crate::lock`]).
    Lock,
    /// `exclusive-locks/<id>`: a prune's or index repair's lock, in a place of its own so that
    /// a repository server can let only admin clients write it.
    ExclusiveLock,
    /// `condemned/<id>`: packs a prune has set aside for deletion (see [`crate::condemned`]).
    Condemned,
}

impl FileKind {
    /// The prefix under which objects of this kind are listed.
    pub fn prefix(self) -> &'static str {
        match self {
            FileKind::Config => "config",
            FileKind::Key => "keys/",
            FileKind::Snapshot => "snapshots/",
            FileKind::Index => "index/",
            FileKind::Pack => "data/",
            FileKind::Lock => "locks/",
            FileKind::ExclusiveLock => "exclusive-locks/",
            FileKind::Condemned => "condemned/",
        }
    }

    /// Every kind, in the order of the layout (`docs/design.md` §2).
    pub const ALL: [FileKind; 8] = [
        FileKind::Config,
        FileKind::Key,
        FileKind::Snapshot,
        FileKind::Index,
        FileKind::Pack,
        FileKind::Lock,
        FileKind::ExclusiveLock,
        FileKind::Condemned,
    ];

    /// The object name of `id`.
    pub fn path(self, id: &Id) -> String {
        let hex = id.to_hex();
        match self {
            FileKind::Config => "config".into(),
            FileKind::Pack => format!("data/{}/{}", &hex[..2], hex),
            k => format!("{}{}", k.prefix(), hex),
        }
    }

    /// Parses the id out of an object name of this kind. Only the exact name a writer gives
    /// that id counts (lowercase hex; a pack under `data/` and its id's first two digits):
    /// anything else is not an object of this kind, and readers pass it by.
    pub fn id_of(self, path: &str) -> Option<Id> {
        let name = path.rsplit('/').next()?;
        let id = Id::from_hex(name).ok()?;
        (self.path(&id) == path).then_some(id)
    }
}

/// One listed object.
#[derive(Clone, Debug)]
pub struct ObjectInfo {
    /// Name relative to the repository root.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// When the storage last modified it, by the storage's own clock, where it says.
    pub mtime: Option<std::time::SystemTime>,
}

/// What a backend lets this process do: everything, or less when a repository server
/// fronts the storage and this client's token has a narrower role (`docs/design.md` §16).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// List and read only.
    Read,
    /// Read, store new objects, and remove only its own locks.
    Append,
    /// Everything.
    Full,
}

impl Access {
    /// The role's name as the server spells it (`read`, `append`, `admin`).
    pub fn name(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Append => "append",
            Access::Full => "admin",
        }
    }
}

/// A storage failure, naming the object.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The object does not exist.
    #[error("{path}: not found")]
    NotFound {
        /// Object name.
        path: String,
    },
    /// A create-only put found the object already there.
    #[error("{path}: already exists")]
    AlreadyExists {
        /// Object name.
        path: String,
    },
    /// A failure that may pass if tried again: a timeout, a dropped connection, 429, 5xx.
    #[error("{path}: {message} (a transient storage error; retries did not get past it)")]
    Transient {
        /// Object name (or the prefix being listed).
        path: String,
        /// What went wrong.
        message: String,
    },
    /// Anything else: I/O, permission, configuration; retrying will not help.
    #[error("{path}: {message}")]
    Other {
        /// Object name (or the prefix being listed).
        path: String,
        /// What went wrong.
        message: String,
    },
}

/// Storage requests in flight that suit a backend when the host configures none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parallelism {
    /// Reads at once (restore's fetch threads, `check --read-data`).
    pub reads: usize,
    /// Pack uploads at once during a backup; each holds a pack in memory unless the backend
    /// spools to files.
    pub uploads: usize,
}

impl Parallelism {
    /// An object store: latency dominates, so 8 of each.
    pub const REMOTE: Parallelism = Parallelism {
        reads: 8,
        uploads: 8,
    };

    /// A local directory: one read per CPU (the work per request is CPU-bound), one upload
    /// (storing a spooled pack takes milliseconds).
    pub fn local() -> Parallelism {
        Parallelism {
            reads: std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .max(2),
            uploads: 1,
        }
    }
}

/// Repository storage.
pub trait Backend: Send + Sync {
    /// Where this is, for messages (`/srv/repo`, `azure://container/prefix`).
    fn location(&self) -> String;
    /// Calls `f` for every object under `prefix`, streaming.
    fn list(&self, prefix: &str, f: &mut dyn FnMut(ObjectInfo)) -> Result<(), BackendError>;
    /// The size of an object, or `None` if it does not exist.
    fn head(&self, path: &str) -> Result<Option<u64>, BackendError>;
    /// An object, or the byte `range` of it.
    fn get(&self, path: &str, range: Option<Range<u64>>) -> Result<Bytes, BackendError>;
    /// Stores a new object; fails with [`BackendError::AlreadyExists`] rather than overwrite.
    fn put(&self, path: &str, data: Bytes) -> Result<(), BackendError>;
    /// Removes an object.
    fn delete(&self, path: &str) -> Result<(), BackendError>;

    /// What this process may do here. Direct storage allows everything; a repository server
    /// says which role the client's token has, so a command that needs more can stop before
    /// it writes anything.
    fn access(&self) -> Result<Access, BackendError> {
        Ok(Access::Full)
    }

    /// Requests in flight that suit this storage when the host configures none.
    fn parallelism(&self) -> Parallelism {
        Parallelism::REMOTE
    }

    /// A place to build an object of about `capacity` bytes for [`Backend::put_spooled`].
    /// By default memory; a backend that can store from a file of its own returns one.
    fn spool(&self, capacity: usize) -> Result<Spool, BackendError> {
        Ok(Spool::memory(capacity))
    }

    /// Removes the temporary files of writers that were killed (a local directory's
    /// unfinished puts and spooled packs) last modified before `before`, and returns their
    /// names. A backend without temporary files of its own has none.
    fn remove_stale_temporaries(
        &self,
        before: std::time::SystemTime,
    ) -> Result<Vec<String>, BackendError> {
        let _ = before;
        Ok(Vec::new())
    }

    /// Stores a spooled object, create-only as [`Backend::put`]. By default the body is taken
    /// into memory and `put`.
    fn put_spooled(&self, path: &str, body: &Spooled) -> Result<(), BackendError> {
        let data = body.bytes().map_err(|e| BackendError::Other {
            path: path.into(),
            message: format!("cannot read the spooled object: {e}"),
        })?;
        self.put(path, data)
    }
}

pub mod conformance;
