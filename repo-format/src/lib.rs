//! Cairn's repository format, version 1, and everything that touches stored bytes without
//! knowing about files: ids, the sealing seam, the per-stage transforms of the backup path
//! (chunk, hash, compress, seal, pack) as pure functions, the index, trees, snapshots, key
//! files, storage backends, and the typestate [`Repository`].
//!
//! `docs/design.md` at the workspace root describes the layout byte by byte.

pub mod backend;
pub mod blob;
pub mod chunker;
pub mod compress;
pub mod condemned;
pub mod config;
pub mod crypto;
pub mod id;
pub mod index;
pub mod key;
pub mod lock;
pub mod object;
pub mod pack;
pub mod repository;
pub mod snapshot;
pub mod tree;

pub use backend::{Backend, BackendError, FileKind, ObjectStoreBackend};
pub use blob::BlobType;
pub use id::Id;
pub use repository::{
    Indexed, KeyRemoveError, ListedLock, LockHealth, Opened, RepoError, Repository,
};
