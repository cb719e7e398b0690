//! Repository locations: parsing `-r/--repo` into a backend. A plain path or `file:///path` is
//! a local directory; `azure://CONTAINER/PREFIX` (or `az://`), `s3://BUCKET/PREFIX` and
//! `gs://BUCKET/PREFIX` are cloud stores configured from the environment;
//! `rest:https://HOST:PORT/PREFIX` is a repository behind `cairn server`, reached with a token
//! ([`cairn_repo_format::backend::RestAuth`]).

use std::path::PathBuf;
use std::sync::Arc;

use std::ops::Range;

use bytes::Bytes;
use cairn_repo_format::backend::{
    Access, Limited, LocalBackend, ObjectInfo, RateLimit, RestAuth, RestBackend, Retry,
    RetryPolicy, Spool, Spooled, cloud,
};
use cairn_repo_format::{Backend, BackendError, ObjectStoreBackend};

/// A parsed repository location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A directory on this machine.
    Local(PathBuf),
    /// An Azure Blob container and prefix.
    Azure {
        /// Container name.
        container: String,
        /// Prefix inside it.
        prefix: String,
    },
    /// An S3 bucket and prefix.
    S3 {
        /// Bucket.
        bucket: String,
        /// Prefix.
        prefix: String,
    },
    /// A GCS bucket and prefix.
    Gcs {
        /// Bucket.
        bucket: String,
        /// Prefix.
        prefix: String,
    },
    /// A repository server: its URL (`https://HOST:PORT/PREFIX`, without `rest:`).
    Rest {
        /// The URL.
        url: String,
    },
}

/// A location that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LocationError {
    /// Empty `-r`.
    #[error("no repository given: pass -r/--repo or set CAIRN_REPOSITORY")]
    Missing,
    /// A scheme this build does not know.
    #[error(
        "unsupported repository location {0:?}: use a directory path, file:///path, azure://CONTAINER/PREFIX, s3://BUCKET/PREFIX, gs://BUCKET/PREFIX or rest:https://HOST:PORT/PREFIX"
    )]
    Unsupported(String),
    /// A cloud URL without a container or bucket.
    #[error("repository location {0:?} names no container or bucket: use SCHEME://NAME/PREFIX")]
    NoBucket(String),
    /// The Azure container does not exist.
    #[error("Azure container {container:?} does not exist")]
    NoContainer {
        /// Its name.
        container: String,
    },
    /// The S3 or GCS bucket does not exist.
    #[error(
        "bucket {bucket:?} does not exist at {location}: create it first (`{create}`; cairn creates only Azure containers itself), or check the name and the endpoint"
    )]
    NoBucketThere {
        /// Its name.
        bucket: String,
        /// The repository location.
        location: String,
        /// The usual command that creates it.
        create: String,
    },
    /// A transfer setting cannot work.
    #[error(transparent)]
    Settings(#[from] crate::open::SettingsError),
    /// The backend could not be set up.
    #[error(transparent)]
    Backend(#[from] BackendError),
}

fn split_bucket(url: &str, rest: &str) -> Result<(String, String), LocationError> {
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(LocationError::NoBucket(url.into()));
    }
    Ok((bucket.to_string(), prefix.trim_matches('/').to_string()))
}

/// How the process talks to storage, whatever the location: requests in flight and rate
/// limits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Transfer {
    /// Storage requests in flight (`--connections`); `None` for the backend's default
    /// ([`cairn_repo_format::backend::Parallelism`]).
    pub connections: Option<usize>,
    /// Upload limit in KiB/s (`--limit-upload`).
    pub limit_upload_kib: Option<u64>,
    /// Download limit in KiB/s (`--limit-download`).
    pub limit_download_kib: Option<u64>,
}

/// The layers every backend the engine opens gets: rate limits (when set), and retries of
/// transient failures outside them (see [`cairn_repo_format::backend::retry`]), so that a
/// retried request pays for its bytes again.
fn layered(b: Raw, t: &Transfer) -> Arc<Layered> {
    let limited = Limited::new(
        b,
        t.limit_upload_kib.map(RateLimit::kib_per_sec),
        t.limit_download_kib.map(RateLimit::kib_per_sec),
    );
    Arc::new(Retry::new(limited, RetryPolicy::default()))
}

/// The backend stack every command gets.
type Layered = Retry<Limited<Raw>>;

/// The storage under the layers: a local directory on `std::fs`, an object store, or a
/// repository server.
enum Raw {
    Local(LocalBackend),
    Store(Box<ObjectStoreBackend>),
    Rest(Box<RestBackend>),
}

impl Raw {
    fn store(&self) -> Option<&ObjectStoreBackend> {
        match self {
            Raw::Store(s) => Some(s.as_ref()),
            Raw::Local(_) | Raw::Rest(_) => None,
        }
    }

    fn get(&self) -> &dyn Backend {
        match self {
            Raw::Local(b) => b,
            Raw::Store(b) => b.as_ref(),
            Raw::Rest(b) => b.as_ref(),
        }
    }
}

impl Backend for Raw {
    fn location(&self) -> String {
        self.get().location()
    }
    fn list(&self, prefix: &str, f: &mut dyn FnMut(ObjectInfo)) -> Result<(), BackendError> {
        self.get().list(prefix, f)
    }
    fn head(&self, path: &str) -> Result<Option<u64>, BackendError> {
        self.get().head(path)
    }
    fn get(&self, path: &str, range: Option<Range<u64>>) -> Result<Bytes, BackendError> {
        self.get().get(path, range)
    }
    fn put(&self, path: &str, data: Bytes) -> Result<(), BackendError> {
        self.get().put(path, data)
    }
    fn delete(&self, path: &str) -> Result<(), BackendError> {
        self.get().delete(path)
    }
    fn spool(&self, capacity: usize) -> Result<Spool, BackendError> {
        self.get().spool(capacity)
    }
    fn parallelism(&self) -> cairn_repo_format::backend::Parallelism {
        self.get().parallelism()
    }
    fn access(&self) -> Result<Access, BackendError> {
        self.get().access()
    }
    fn remove_stale_temporaries(
        &self,
        before: std::time::SystemTime,
    ) -> Result<Vec<String>, BackendError> {
        self.get().remove_stale_temporaries(before)
    }
    fn put_spooled(&self, path: &str, body: &Spooled) -> Result<(), BackendError> {
        self.get().put_spooled(path, body)
    }
}

impl Location {
    /// Parses a location string.
    pub fn parse(s: &str) -> Result<Location, LocationError> {
        if s.is_empty() {
            return Err(LocationError::Missing);
        }
        if let Some(url) = s.strip_prefix("rest:") {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(LocationError::Unsupported(s.into()));
            }
            return Ok(Location::Rest { url: url.into() });
        }
        let Some((scheme, rest)) = s.split_once("://") else {
            return Ok(Location::Local(PathBuf::from(s)));
        };
        Ok(match scheme {
            "file" => Location::Local(PathBuf::from(rest)),
            "azure" | "az" => {
                let (container, prefix) = split_bucket(s, rest)?;
                Location::Azure { container, prefix }
            }
            "s3" => {
                let (bucket, prefix) = split_bucket(s, rest)?;
                Location::S3 { bucket, prefix }
            }
            "gs" | "gcs" => {
                let (bucket, prefix) = split_bucket(s, rest)?;
                Location::Gcs { bucket, prefix }
            }
            other => return Err(LocationError::Unsupported(format!("{other}://"))),
        })
    }

    fn backend(&self, create_dir: bool, auth: &RestAuth) -> Result<Raw, LocationError> {
        Ok(match self {
            Location::Rest { url } => Raw::Rest(Box::new(RestBackend::new(url, auth)?)),
            Location::Local(p) => Raw::Local(LocalBackend::new(p, create_dir)?),
            Location::Azure { container, prefix } => {
                Raw::Store(Box::new(cloud::azure(container, prefix)?))
            }
            Location::S3 { bucket, prefix } => Raw::Store(Box::new(cloud::s3(bucket, prefix)?)),
            Location::Gcs { bucket, prefix } => Raw::Store(Box::new(cloud::gcs(bucket, prefix)?)),
        })
    }

    /// Opens an existing location with no rate limits (a server's token from the
    /// environment).
    pub fn open(&self) -> Result<Arc<dyn Backend>, LocationError> {
        self.open_with(&Transfer::default(), &RestAuth::default())
    }

    /// Opens an existing location. A missing Azure container is an error that names it.
    pub fn open_with(
        &self,
        t: &Transfer,
        auth: &RestAuth,
    ) -> Result<Arc<dyn Backend>, LocationError> {
        let layers = layered(self.backend(false, auth)?, t);
        // No repository here: say so precisely when the container or bucket itself is missing.
        // (The first request goes through the retry layer: a dropped connection is no answer.)
        if layers.head("config")?.is_none()
            && let Some(b) = layers.inner().inner().store()
        {
            if let (Some(false), Some(name)) = (b.container_exists()?, b.container_name()) {
                return Err(LocationError::NoContainer {
                    container: name.to_string(),
                });
            }
            self.refuse_missing_bucket(b)?;
        }
        Ok(layers)
    }

    fn refuse_missing_bucket(&self, b: &ObjectStoreBackend) -> Result<(), LocationError> {
        let (bucket, create) = match self {
            Location::S3 { bucket, .. } => (bucket, format!("aws s3 mb s3://{bucket}")),
            Location::Gcs { bucket, .. } => (
                bucket,
                format!("gcloud storage buckets create gs://{bucket}"),
            ),
            _ => return Ok(()),
        };
        if b.bucket_missing()? == Some(true) {
            return Err(LocationError::NoBucketThere {
                bucket: bucket.clone(),
                location: b.location(),
                create,
            });
        }
        Ok(())
    }

    /// Opens a location for `init`: creates a missing local directory or Azure container.
    /// Returns the backend and what was created, for the user.
    pub fn open_for_init(
        &self,
        auth: &RestAuth,
    ) -> Result<(Arc<dyn Backend>, Option<String>), LocationError> {
        let raw = self.backend(true, auth)?;
        let mut note = None;
        if let Some(b) = raw.store() {
            self.refuse_missing_bucket(b)?;
            if b.create_container()? == Some(true) {
                note = Some(format!(
                    "created Azure container {:?}",
                    b.container_name().unwrap_or_default()
                ));
            }
        }
        Ok((layered(raw, &Transfer::default()) as Arc<dyn Backend>, note))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_scheme() {
        assert_eq!(
            Location::parse("/srv/r").unwrap(),
            Location::Local("/srv/r".into())
        );
        assert_eq!(
            Location::parse("file:///srv/r").unwrap(),
            Location::Local("/srv/r".into())
        );
        assert_eq!(
            Location::parse("azure://backups/cluster-a/").unwrap(),
            Location::Azure {
                container: "backups".into(),
                prefix: "cluster-a".into()
            }
        );
        assert_eq!(
            Location::parse("az://backups").unwrap(),
            Location::Azure {
                container: "backups".into(),
                prefix: String::new()
            }
        );
        assert_eq!(
            Location::parse("s3://b/p/q").unwrap(),
            Location::S3 {
                bucket: "b".into(),
                prefix: "p/q".into()
            }
        );
        assert_eq!(
            Location::parse("gs://b").unwrap(),
            Location::Gcs {
                bucket: "b".into(),
                prefix: String::new()
            }
        );
        assert!(matches!(
            Location::parse("ftp://x"),
            Err(LocationError::Unsupported(_))
        ));
        assert!(matches!(
            Location::parse("azure:///p"),
            Err(LocationError::NoBucket(_))
        ));
        assert!(matches!(Location::parse(""), Err(LocationError::Missing)));
        assert_eq!(
            Location::parse("rest:https://srv:8443/ns1").unwrap(),
            Location::Rest {
                url: "https://srv:8443/ns1".into()
            }
        );
        assert!(matches!(
            Location::parse("rest:ftp://srv/x"),
            Err(LocationError::Unsupported(_))
        ));
    }
}
