//! `cairn server`: a zero-knowledge repository server. It fronts a repository's storage (a
//! local directory, Azure Blob, S3 or GCS) so that the nodes that back up hold a token
//! instead of the storage's credentials, and gives each token exactly the access its role
//! allows (`docs/design.md` §16). It stores sealed objects as they come and never needs the
//! repository password.
//!
//! One module per concern: [`names`] (paths), [`tokens`], [`roles`], [`receipt`] (lock
//! receipts), [`limits`], [`tls`], [`watch`] (reloading files), [`metrics`] and [`http`]
//! (the handler); this module accepts connections, bounds them, and shuts down gracefully.

pub mod http;
pub mod limits;
pub mod metrics;
pub mod names;
pub mod receipt;
pub mod roles;
pub mod tls;
pub mod tokens;
pub mod watch;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use cairn_repo_format::backend::{LocalBackend, Retry, RetryPolicy, cloud};
use cairn_repo_format::{Backend, BackendError};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::http::State;
use crate::limits::{Timeouts, Usage};

/// Everything `cairn server` needs, validated by its host.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The storage: a directory, `file:///path`, `azure://CONTAINER/PREFIX`,
    /// `s3://BUCKET/PREFIX` or `gs://BUCKET/PREFIX` (credentials from the environment).
    pub repo: String,
    /// Where to serve the protocol.
    pub listen: SocketAddr,
    /// The tokens file.
    pub tokens_file: PathBuf,
    /// The lock receipts' key file.
    pub receipt_key_file: PathBuf,
    /// The certificate chain and key (PEM); without them, plain HTTP.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Bytes a repository may hold before non-admin uploads get 507.
    pub max_size: Option<u64>,
    /// Where to serve `/metrics`, `/healthz` and `/readyz`.
    pub metrics_listen: Option<SocketAddr>,
    /// Connections at once.
    pub max_connections: usize,
    /// Requests in flight at once (past it, 429).
    pub max_requests: usize,
    /// Time limits.
    pub timeouts: Timeouts,
    /// How often the storage is counted again.
    pub rescan: Duration,
}

impl Settings {
    /// Settings with the defaults for everything but the four required ones.
    pub fn new(
        repo: String,
        listen: SocketAddr,
        tokens_file: PathBuf,
        receipt_key_file: PathBuf,
    ) -> Settings {
        Settings {
            repo,
            listen,
            tokens_file,
            receipt_key_file,
            tls: None,
            max_size: None,
            metrics_listen: None,
            max_connections: 512,
            max_requests: 256,
            timeouts: Timeouts::default(),
            rescan: Duration::from_secs(600),
        }
    }
}

/// Why the server cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The `--repo` location is not one the server knows.
    #[error(
        "unsupported storage location {0:?}: use a directory path, file:///path, azure://CONTAINER/PREFIX, s3://BUCKET/PREFIX or gs://BUCKET/PREFIX"
    )]
    Location(String),
    /// The storage cannot be opened or counted.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The tokens file.
    #[error(transparent)]
    Tokens(#[from] tokens::TokensError),
    /// The receipt key.
    #[error(transparent)]
    Receipt(#[from] receipt::ReceiptKeyError),
    /// The certificate or key.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// Binding or the runtime.
    #[error("{what}: {error}")]
    Io {
        /// What was being done.
        what: String,
        /// What the OS said.
        error: std::io::Error,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServerError {
    let what = what.into();
    move |error| ServerError::Io { what, error }
}

/// The storage named by `--repo`, and whether it is a local directory. This parses the same
/// schemes as `-r` (engine/src/location.rs) but opens no repository: the server needs only
/// the raw storage (with retries for object stores), not the engine.
pub fn open_storage(repo: &str) -> Result<(Arc<dyn Backend>, bool), ServerError> {
    let split = |rest: &str| -> Result<(String, String), ServerError> {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(ServerError::Location(repo.into()));
        }
        Ok((bucket.into(), prefix.trim_matches('/').into()))
    };
    let retry = |b: cairn_repo_format::ObjectStoreBackend| -> Arc<dyn Backend> {
        Arc::new(Retry::new(b, RetryPolicy::default()))
    };
    let Some((scheme, rest)) = repo.split_once("://") else {
        if repo.is_empty() {
            return Err(ServerError::Location(repo.into()));
        }
        let b = LocalBackend::new(std::path::Path::new(repo), true)?;
        return Ok((Arc::new(b), true));
    };
    Ok(match scheme {
        "file" => (
            Arc::new(LocalBackend::new(std::path::Path::new(rest), true)?),
            true,
        ),
        "azure" | "az" => {
            let (c, p) = split(rest)?;
            (retry(cloud::azure(&c, &p)?), false)
        }
        "s3" => {
            let (c, p) = split(rest)?;
            (retry(cloud::s3(&c, &p)?), false)
        }
        "gs" | "gcs" => {
            let (c, p) = split(rest)?;
            (retry(cloud::gcs(&c, &p)?), false)
        }
        _ => return Err(ServerError::Location(repo.into())),
    })
}

/// Runs the server until SIGTERM or SIGINT, then lets requests in flight finish within the
/// shutdown grace time. Builds its own runtime; call it from a plain thread.
pub fn run(settings: Settings) -> Result<(), ServerError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("cairn-server")
        .enable_all()
        .build()
        .map_err(io_err("cannot start the runtime"))?;
    rt.block_on(serve(settings, shutdown_signal()))
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! {
                _ = t.recv() => {}
                _ = i.recv() => {}
            }
        }
        _ => std::future::pending::<()>().await,
    }
}

/// Serves until `shutdown` completes.
pub async fn serve(
    settings: Settings,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServerError> {
    let (backend, local) = open_storage(&settings.repo)?;
    let tokens = tokens::TokenStore::open(&settings.tokens_file)?;
    let receipts = receipt::ReceiptKey::from_file(&settings.receipt_key_file)?;
    let tls = match &settings.tls {
        Some((cert, key)) => Some(Arc::new(tls::TlsStore::open(cert, key)?)),
        None => None,
    };
    let listener = TcpListener::bind(settings.listen)
        .await
        .map_err(io_err(format!("cannot listen on {}", settings.listen)))?;
    let spool_dir = if local {
        // Its own temporaries from a run that was killed: the server is the one writer.
        let b = backend.clone();
        let removed =
            tokio::task::spawn_blocking(move || b.remove_stale_temporaries(SystemTime::now()))
                .await
                .map_err(|e| io_err("startup")(std::io::Error::other(e)))??;
        if !removed.is_empty() {
            tracing::info!(
                count = removed.len(),
                "removed temporary files of an earlier run"
            );
        }
        None
    } else {
        // One directory per port: a restarted server on the same port removes what a killed
        // one left.
        let port = listener.local_addr().map_or(0, |a| a.port());
        let dir = std::env::temp_dir().join(format!("cairn-server-{port}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .map_err(io_err(format!("cannot create {}", dir.display())))?;
        Some(dir)
    };
    let state = Arc::new(State {
        backend,
        tokens,
        receipts,
        usage: Usage::default(),
        metrics: metrics::Metrics::default(),
        max_size: settings.max_size,
        timeouts: settings.timeouts,
        blocking: Semaphore::new(64),
        inflight: Semaphore::new(settings.max_requests.max(1)),
        spool_dir,
    });
    let metrics_listener = match settings.metrics_listen {
        Some(a) => Some(
            TcpListener::bind(a)
                .await
                .map_err(io_err(format!("cannot listen on {a}")))?,
        ),
        None => None,
    };
    let metrics_addr = metrics_listener
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::info!(
        listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        metrics = %metrics_addr,
        storage = %state.backend.location(),
        tls = tls.is_some(),
        tokens = state.tokens.get().len(),
        "cairn server started"
    );
    if tls.is_none() {
        tracing::warn!(
            "serving plain HTTP: tokens cross the network in the clear; pass --tls-cert and --tls-key"
        );
    }

    let background = tokio::spawn(maintain(state.clone(), tls.clone(), settings.rescan));
    let metrics_task = metrics_listener.map(|l| tokio::spawn(serve_metrics(state.clone(), l)));

    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let connections = Arc::new(Semaphore::new(settings.max_connections.max(1)));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = connections.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let tls = tls.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            connection(state, tls, stream, peer, watcher).await;
            drop(permit);
        });
    }
    tracing::info!(
        connections = graceful.count(),
        "shutting down: no new connections; finishing requests in flight"
    );
    let grace = settings.timeouts.shutdown;
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still in flight at the end of the shutdown grace time were cut");
    }
    background.abort();
    if let Some(t) = metrics_task {
        t.abort();
    }
    Ok(())
}

/// Reloads the tokens and certificate when their files change, and counts the storage at
/// start and every `rescan`.
async fn maintain(state: Arc<State>, tls: Option<Arc<tls::TlsStore>>, rescan: Duration) {
    let mut last_scan: Option<Instant> = None;
    let mut poll = tokio::time::interval(watch::POLL);
    loop {
        poll.tick().await;
        match state.tokens.reload_if_changed() {
            Some(Ok(n)) => tracing::info!(tokens = n, "tokens file reloaded"),
            Some(Err(e)) => {
                tracing::error!(error = %e, "tokens file not reloaded; the previous tokens stay in force")
            }
            None => {}
        }
        if let Some(t) = &tls {
            match t.reload_if_changed() {
                Some(Ok(())) => tracing::info!("certificate reloaded"),
                Some(Err(e)) => {
                    tracing::error!(error = %e, "certificate not reloaded; the previous one stays in force")
                }
                None => {}
            }
        }
        if last_scan.is_none_or(|t| t.elapsed() >= rescan) {
            last_scan = Some(Instant::now());
            let s = state.clone();
            let scanned =
                tokio::task::spawn_blocking(move || s.usage.scan(s.backend.as_ref())).await;
            match scanned {
                Ok(Ok(())) => tracing::debug!("storage counted"),
                Ok(Err(e)) => tracing::error!(error = %e, "cannot count the storage"),
                Err(e) => tracing::error!(error = %e, "storage count failed"),
            }
        }
    }
}

/// A connection's stream that notes when bytes last moved.
struct Activity<T> {
    inner: T,
    last: Arc<AtomicU64>,
    epoch: Instant,
}

impl<T> Activity<T> {
    fn touch(&self) {
        self.last
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Activity<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Activity<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Serves one connection: the TLS handshake within its time limit, then HTTP/1.1 or HTTP/2
/// until the client leaves, the connection stays idle too long, or the server shuts down.
async fn connection(
    state: Arc<State>,
    tls: Option<Arc<tls::TlsStore>>,
    stream: TcpStream,
    peer: SocketAddr,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let last = Arc::new(AtomicU64::new(0));
    let epoch = Instant::now();
    let busy = Arc::new(AtomicUsize::new(0));
    let io = Activity {
        inner: stream,
        last: last.clone(),
        epoch,
    };
    let svc = {
        let (state, busy, last) = (state.clone(), busy.clone(), last.clone());
        service_fn(move |req| {
            let (state, busy, last) = (state.clone(), busy.clone(), last.clone());
            async move {
                busy.fetch_add(1, Ordering::Relaxed);
                let r = http::handle(state, req).await;
                last.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
                busy.fetch_sub(1, Ordering::Relaxed);
                Ok::<_, std::convert::Infallible>(r)
            }
        })
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(state.timeouts.headers)
        .max_buf_size(64 << 10);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(64)
        .adaptive_window(true)
        .keep_alive_interval(None);
    let idle = state.timeouts.idle;
    let watchdog = async {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let quiet = epoch.elapsed().as_millis() as u64 - last.load(Ordering::Relaxed);
            if busy.load(Ordering::Relaxed) == 0 && quiet > idle.as_millis() as u64 {
                return;
            }
        }
    };
    match tls {
        Some(store) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(store.get());
            let hs = tokio::time::timeout(state.timeouts.handshake, acceptor.accept(io)).await;
            let tls_stream = match hs {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(peer = %peer, "TLS handshake timed out");
                    return;
                }
            };
            let conn = builder.serve_connection(TokioIo::new(tls_stream), svc);
            let conn = watcher.watch(conn.into_owned());
            tokio::select! {
                r = conn => if let Err(e) = r { tracing::debug!(peer = %peer, error = %e, "connection ended") },
                _ = watchdog => tracing::debug!(peer = %peer, "idle connection dropped"),
            }
        }
        None => {
            let conn = builder.serve_connection(TokioIo::new(io), svc);
            let conn = watcher.watch(conn.into_owned());
            tokio::select! {
                r = conn => if let Err(e) = r { tracing::debug!(peer = %peer, error = %e, "connection ended") },
                _ = watchdog => tracing::debug!(peer = %peer, "idle connection dropped"),
            }
        }
    }
}

/// `/metrics`, `/healthz` and `/readyz` on their own port, over plain HTTP/1.1.
async fn serve_metrics(state: Arc<State>, listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: ::http::Request<hyper::body::Incoming>| {
                let state = state.clone();
                async move {
                    let (status, ctype, body) = match req.uri().path() {
                        "/metrics" => (
                            200,
                            "text/plain; version=0.0.4",
                            state.metrics.render(&state.usage),
                        ),
                        "/healthz" => (200, "text/plain", "ok\n".to_string()),
                        "/readyz" if state.usage.ready() => (200, "text/plain", "ready\n".into()),
                        "/readyz" => (503, "text/plain", "counting the repository\n".into()),
                        _ => (404, "text/plain", "not found\n".into()),
                    };
                    let r = ::http::Response::builder()
                        .status(status)
                        .header(::http::header::CONTENT_TYPE, ctype)
                        .body(http_body_util::Full::new(bytes::Bytes::from(body)));
                    r.map_err(|e| std::io::Error::other(e.to_string()))
                }
            });
            let mut b = hyper::server::conn::http1::Builder::new();
            b.timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10));
            let _ = b.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}
