//! A [`Backend`] over any `object_store` store: the local file system and memory now, Azure
//! Blob, S3 and GCS through the same adapter. Requests run on the process's one I/O runtime
//! ([`super::io`]) and the caller waits, so the engine's threads call it like a file API.

use std::ops::Range;
use std::path::Path as FsPath;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use super::io::block_on;
use super::{Backend, BackendError, ObjectInfo};

/// An object_store-backed repository location.
pub struct ObjectStoreBackend {
    pub(super) store: Arc<dyn ObjectStore>,
    prefix: Path,
    pub(super) location: String,
    pub(super) azure: Option<super::cloud::AzureContainer>,
    multipart: Option<Multipart>,
    /// An S3 or GCS bucket (see `bucket_missing`).
    pub(super) is_bucket: bool,
}

/// When and how packs are uploaded in parts (S3 multipart upload, Azure block list).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Multipart {
    /// Packs of at least this many bytes go up in parts.
    pub threshold: usize,
    /// Bytes per part (S3 needs at least 5 MiB for every part but the last).
    pub part_size: usize,
    /// Parts of one pack in flight at once.
    pub concurrency: usize,
}

impl Default for Multipart {
    /// 32 MiB and larger packs in 16 MiB parts, four at a time: the default 16 MiB packs go
    /// up in one request; `--pack-size 64` and up gain parallel parts and, on a failure, a
    /// resend of one pack rather than of one huge request's worth of retries.
    fn default() -> Self {
        Multipart {
            threshold: 32 << 20,
            part_size: 16 << 20,
            concurrency: 4,
        }
    }
}

impl ObjectStoreBackend {
    /// Wraps `store`, with every object under `prefix`; `location` names it in messages.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        prefix: &str,
        location: String,
    ) -> std::io::Result<Self> {
        super::io::ensure()?;
        Ok(ObjectStoreBackend {
            store,
            prefix: Path::from(prefix),
            location,
            azure: None,
            multipart: None,
            is_bucket: false,
        })
    }

    /// Uploads packs (`data/`) of at least `m.threshold` bytes in parts. Only packs: they are
    /// named by the hash of their bytes, so a multipart upload, which cannot be create-only,
    /// can at worst replace a pack with the same bytes. Every other object stays create-only.
    pub fn with_multipart(mut self, m: Multipart) -> Self {
        self.multipart = Some(m);
        self
    }

    async fn put_in_parts(
        &self,
        path: &Path,
        data: Bytes,
        m: Multipart,
    ) -> object_store::Result<()> {
        let mut upload = self.store.put_multipart(path).await?;
        let sent = send_parts(upload.as_mut(), &data, m).await;
        match sent {
            Ok(()) => upload.complete().await.map(|_| ()),
            Err(e) => {
                // Best effort: the store drops unfinished uploads' parts on its own later.
                let _ = upload.abort().await;
                Err(e)
            }
        }
    }

    /// A repository in a local directory; the directory is created when `create` is set.
    pub fn local(dir: &FsPath, create: bool) -> Result<Self, BackendError> {
        let other = |message: String| BackendError::Other {
            path: dir.display().to_string(),
            message,
        };
        if create {
            std::fs::create_dir_all(dir)
                .map_err(|e| other(format!("cannot create directory: {e}")))?;
        }
        if !dir.is_dir() {
            return Err(BackendError::NotFound {
                path: dir.display().to_string(),
            });
        }
        let fs = object_store::local::LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| other(e.to_string()))?;
        Self::new(Arc::new(fs), "", dir.display().to_string()).map_err(|e| other(e.to_string()))
    }

    /// An in-memory repository, for tests.
    pub fn memory() -> Self {
        Self::new(
            Arc::new(object_store::memory::InMemory::new()),
            "",
            "memory:".into(),
        )
        .expect("runtime")
    }

    pub(super) fn full(&self, path: &str) -> Path {
        if self.prefix.as_ref().is_empty() {
            Path::from(path)
        } else {
            Path::from(format!("{}/{}", self.prefix, path))
        }
    }

    fn relative(&self, p: &Path) -> String {
        let s = p.as_ref();
        let pre = self.prefix.as_ref();
        if pre.is_empty() {
            s.to_string()
        } else {
            s.strip_prefix(pre)
                .map(|r| r.trim_start_matches('/'))
                .unwrap_or(s)
                .to_string()
        }
    }
}

/// Sends `data` as parts of `m.part_size`, at most `m.concurrency` at once.
async fn send_parts(
    upload: &mut dyn object_store::MultipartUpload,
    data: &Bytes,
    m: Multipart,
) -> object_store::Result<()> {
    let mut inflight = futures::stream::FuturesUnordered::new();
    for start in (0..data.len()).step_by(m.part_size.max(1)) {
        if inflight.len() >= m.concurrency.max(1)
            && let Some(done) = inflight.next().await
        {
            done?;
        }
        let end = (start + m.part_size).min(data.len());
        inflight.push(upload.put_part(PutPayload::from_bytes(data.slice(start..end))));
    }
    while let Some(done) = inflight.next().await {
        done?;
    }
    Ok(())
}

fn map_err(path: &str, e: object_store::Error) -> BackendError {
    match e {
        object_store::Error::NotFound { .. } => BackendError::NotFound { path: path.into() },
        object_store::Error::AlreadyExists { .. } => {
            BackendError::AlreadyExists { path: path.into() }
        }
        other if is_transient(&other) => BackendError::Transient {
            path: path.into(),
            message: other.to_string(),
        },
        other => BackendError::Other {
            path: path.into(),
            message: other.to_string(),
        },
    }
}

/// Whether an object_store error may pass on a retry: connection failures, timeouts, cut
/// bodies, and HTTP 408, 429 and 5xx. Permission, authentication, configuration and "not
/// found" errors are permanent.
fn is_transient(e: &object_store::Error) -> bool {
    use object_store::client::{HttpError, HttpErrorKind};
    use std::io::ErrorKind;
    let object_store::Error::Generic { source, .. } = e else {
        return matches!(e, object_store::Error::JoinError { .. });
    };
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(source.as_ref());
    while let Some(err) = cur {
        if let Some(h) = err.downcast_ref::<HttpError>() {
            return !matches!(h.kind(), HttpErrorKind::Unknown);
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                ErrorKind::ConnectionReset
                    | ErrorKind::ConnectionAborted
                    | ErrorKind::ConnectionRefused
                    | ErrorKind::TimedOut
                    | ErrorKind::UnexpectedEof
                    | ErrorKind::BrokenPipe
                    | ErrorKind::Interrupted
            );
        }
        // object_store's status errors are not public types; their text carries the code.
        let text = err.to_string();
        if let Some(rest) = text.split("status code: ").nth(1) {
            let code: u16 = rest.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
            return code == 408 || code == 429 || (500..600).contains(&code);
        }
        cur = err.source();
    }
    false
}

impl Backend for ObjectStoreBackend {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn list(&self, prefix: &str, f: &mut dyn FnMut(ObjectInfo)) -> Result<(), BackendError> {
        // Pages of the listing are fetched on the I/O runtime and handed to `f` on this
        // thread, so `f` need not be `Send` and at most one page is held.
        const PAGE: usize = 1000;
        let p = self.full(prefix.trim_end_matches('/'));
        let mut stream = self.store.list(Some(&p));
        loop {
            let page = block_on(async {
                let mut page = Vec::with_capacity(PAGE);
                while page.len() < PAGE {
                    match stream.next().await {
                        Some(item) => page.push(item),
                        None => break,
                    }
                }
                page
            });
            let last = page.len() < PAGE;
            for item in page {
                let meta = item.map_err(|e| map_err(prefix, e))?;
                f(ObjectInfo {
                    path: self.relative(&meta.location),
                    size: meta.size,
                    mtime: Some(meta.last_modified.into()),
                });
            }
            if last {
                return Ok(());
            }
        }
    }

    fn head(&self, path: &str) -> Result<Option<u64>, BackendError> {
        match block_on(self.store.head(&self.full(path))) {
            Ok(m) => Ok(Some(m.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(map_err(path, e)),
        }
    }

    fn get(&self, path: &str, range: Option<Range<u64>>) -> Result<Bytes, BackendError> {
        let p = self.full(path);
        block_on(async {
            let r = match range {
                Some(r) => self.store.get_range(&p, r).await,
                None => match self.store.get(&p).await {
                    Ok(g) => g.bytes().await,
                    Err(e) => Err(e),
                },
            };
            r.map_err(|e| map_err(path, e))
        })
    }

    fn put(&self, path: &str, data: Bytes) -> Result<(), BackendError> {
        if let Some(m) = self.multipart
            && data.len() >= m.threshold
            && path.starts_with(super::FileKind::Pack.prefix())
        {
            return block_on(self.put_in_parts(&self.full(path), data, m))
                .map_err(|e| map_err(path, e));
        }
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        block_on(
            self.store
                .put_opts(&self.full(path), PutPayload::from_bytes(data), opts),
        )
        .map(|_| ())
        .map_err(|e| map_err(path, e))
    }

    fn delete(&self, path: &str) -> Result<(), BackendError> {
        block_on(self.store.delete(&self.full(path))).map_err(|e| map_err(path, e))
    }
}
