//! Repository locations: parsing `-r/--repo` into a backend. A plain path or `file:///path` is
//! a local directory; the cloud schemes come with their own backends.

use std::path::PathBuf;
use std::sync::Arc;

use cairn_repo_format::{Backend, BackendError, ObjectStoreBackend};

/// A parsed repository location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A directory on this machine.
    Local(PathBuf),
}

/// A location that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LocationError {
    /// Empty `-r`.
    #[error("no repository given: pass -r/--repo or set CAIRN_REPOSITORY")]
    Missing,
    /// A scheme this build does not know.
    #[error("unsupported repository location {0:?}: use a directory path or file:///path")]
    Unsupported(String),
    /// The backend could not be set up.
    #[error(transparent)]
    Backend(#[from] BackendError),
}

impl Location {
    /// Parses a location string.
    pub fn parse(s: &str) -> Result<Location, LocationError> {
        if s.is_empty() {
            return Err(LocationError::Missing);
        }
        if let Some(rest) = s.strip_prefix("file://") {
            return Ok(Location::Local(PathBuf::from(rest)));
        }
        if let Some((scheme, _)) = s.split_once("://") {
            return Err(LocationError::Unsupported(format!("{scheme}://")));
        }
        Ok(Location::Local(PathBuf::from(s)))
    }

    /// Opens the backend; `create` makes a missing local directory (for `init`).
    pub fn open(&self, create: bool) -> Result<Arc<dyn Backend>, LocationError> {
        match self {
            Location::Local(p) => Ok(Arc::new(ObjectStoreBackend::local(p, create)?)),
        }
    }
}
