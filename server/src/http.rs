//! The request handler: authenticate the token, parse the path into a repository prefix,
//! kind and id, check the role, and carry out the one operation on the backend. Every route
//! and status code is in `docs/design.md` §16.
//!
//! Backend calls are blocking; they run on tokio's blocking pool, at most
//! [`State::blocking`] at once. Uploads stream into a spool while their BLAKE3 is computed;
//! an object becomes visible only after its hash matched its name and its size its kind's
//! cap, and then create-only, so nothing is ever overwritten and a server killed mid-upload
//! leaves only a temporary file, which the next start removes.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use cairn_repo_format::backend::Spool;
use cairn_repo_format::id::StoredHasher;
use cairn_repo_format::{Backend, BackendError, FileKind, Id};
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use tokio::sync::Semaphore;

use crate::limits::{Timeouts, Usage, max_object};
use crate::metrics::{Labels, Metrics};
use crate::names::{self, Target};
use crate::receipt::ReceiptKey;
use crate::roles::{Op, Role, allowed, kind_name};
use crate::tokens::{Grant, TokenStore};

/// The response header with a lock's receipt, and the request header that presents it.
pub const RECEIPT_HEADER: &str = cairn_repo_format::backend::rest::RECEIPT_HEADER;

/// A response body.
pub type Body = BoxBody<Bytes, std::io::Error>;

/// Everything a request needs.
pub struct State {
    /// The storage.
    pub backend: Arc<dyn Backend>,
    /// The tokens in force.
    pub tokens: TokenStore,
    /// The key of lock receipts.
    pub receipts: ReceiptKey,
    /// What the repositories hold.
    pub usage: Usage,
    /// Counters.
    pub metrics: Metrics,
    /// `--max-size`: bytes a repository may hold before non-admin uploads get 507.
    pub max_size: Option<u64>,
    /// Time limits.
    pub timeouts: Timeouts,
    /// Backend calls in flight at once.
    pub blocking: Semaphore,
    /// Requests in flight at once; past it, 429.
    pub inflight: Semaphore,
    /// Where uploads are spooled; `None` for the backend's own spool (a local directory,
    /// which stores a spooled file with a `link`).
    pub spool_dir: Option<PathBuf>,
}

/// A refusal or failure, as a status and a short message.
struct Fail(StatusCode, String);

impl Fail {
    fn new(status: StatusCode, msg: impl Into<String>) -> Fail {
        Fail(status, msg.into())
    }
}

fn storage_fail(e: BackendError) -> Fail {
    match e {
        BackendError::NotFound { .. } => Fail::new(StatusCode::NOT_FOUND, "not found"),
        BackendError::AlreadyExists { .. } => Fail::new(StatusCode::CONFLICT, "already exists"),
        BackendError::Transient { path, message } => {
            tracing::warn!(object = %path, error = %message, "storage failed (transient)");
            Fail::new(StatusCode::SERVICE_UNAVAILABLE, "storage unavailable")
        }
        BackendError::Other { path, message } => {
            tracing::error!(object = %path, error = %message, "storage failed");
            Fail::new(StatusCode::INTERNAL_SERVER_ERROR, "storage failed")
        }
    }
}

fn text(status: StatusCode, msg: &str) -> Response<Body> {
    let mut r = Response::new(full(Bytes::from(format!("{msg}\n"))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn full(b: Bytes) -> Body {
    Full::new(b).map_err(|never| match never {}).boxed()
}

fn empty(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = status;
    r
}

/// Runs a backend call on the blocking pool, within the bound.
async fn blocking<T, F>(state: &Arc<State>, f: F) -> Result<T, BackendError>
where
    T: Send + 'static,
    F: FnOnce(&dyn Backend) -> Result<T, BackendError> + Send + 'static,
{
    let _permit = state.blocking.acquire().await;
    let b = state.backend.clone();
    match tokio::task::spawn_blocking(move || f(b.as_ref())).await {
        Ok(r) => r,
        Err(e) => Err(BackendError::Other {
            path: String::new(),
            message: format!("storage task failed: {e}"),
        }),
    }
}

/// What one request was, for metrics and the log.
struct Seen {
    labels: Labels,
    token: Option<String>,
    received: u64,
}

/// Answers one request.
pub async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let mut seen = Seen {
        labels: Labels {
            role: "none",
            kind: "none",
            op: "none",
        },
        token: None,
        received: 0,
    };
    let response = match path.as_str() {
        "/healthz" => text(StatusCode::OK, "ok"),
        "/readyz" => readyz(&state),
        _ => match state.inflight.try_acquire() {
            Err(_) => {
                let mut r = text(StatusCode::TOO_MANY_REQUESTS, "too many requests in flight");
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                r
            }
            Ok(_permit) => {
                let work = route(&state, req, &mut seen);
                match tokio::time::timeout(state.timeouts.request, work).await {
                    Ok(Ok(r)) => r,
                    Ok(Err(Fail(status, msg))) => text(status, &msg),
                    Err(_) => text(StatusCode::REQUEST_TIMEOUT, "request took too long"),
                }
            }
        },
    };
    let status = response.status().as_u16();
    let sent = response.body().size_hint().exact().unwrap_or(0);
    state
        .metrics
        .record(seen.labels, status, seen.received, sent);
    tracing::info!(
        method = %method,
        path = %path,
        status,
        role = seen.labels.role,
        kind = seen.labels.kind,
        op = seen.labels.op,
        token = seen.token.as_deref().unwrap_or("-"),
        received = seen.received,
        sent,
        ms = start.elapsed().as_millis() as u64,
        "request"
    );
    let deadline = state.timeouts.request;
    response.map(|b| Deadline::new(b, deadline).boxed())
}

fn readyz(state: &State) -> Response<Body> {
    if state.usage.ready() {
        text(StatusCode::OK, "ready")
    } else {
        text(StatusCode::SERVICE_UNAVAILABLE, "counting the repository")
    }
}

/// The token of a request: `Authorization: Bearer TOKEN`.
fn bearer(req: &Request<Incoming>) -> Option<&str> {
    let v = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

async fn route(
    state: &Arc<State>,
    req: Request<Incoming>,
    seen: &mut Seen,
) -> Result<Response<Body>, Fail> {
    let tokens = state.tokens.get();
    let Some(grant) = bearer(&req).and_then(|t| tokens.lookup(t)).cloned() else {
        // An empty body: nothing for a prober to learn beyond the status.
        let mut r = Response::new(full(Bytes::new()));
        *r.status_mut() = StatusCode::UNAUTHORIZED;
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return Ok(r);
    };
    seen.labels.role = grant.role.name();
    seen.token = Some(grant.label.clone());
    let parsed = names::parse(req.uri().path())
        .map_err(|e| Fail::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    if !names::within(&grant.prefix, &parsed.prefix) {
        return Err(Fail::new(
            StatusCode::FORBIDDEN,
            "this token does not reach that repository",
        ));
    }
    let prefix_dir = names::prefix_dir(&parsed.prefix);
    let method = req.method().clone();
    match parsed.target {
        Target::Role => {
            seen.labels.kind = "role";
            seen.labels.op = "get";
            if method != Method::GET && method != Method::HEAD {
                return Err(Fail::new(StatusCode::METHOD_NOT_ALLOWED, "GET only"));
            }
            let body = serde_json::json!({
                "role": grant.role.name(),
                "prefix": prefix_dir.trim_end_matches('/'),
            });
            let mut r = Response::new(full(Bytes::from(body.to_string())));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            Ok(r)
        }
        Target::List(kind) => {
            seen.labels.kind = kind_name(kind);
            seen.labels.op = Op::List.name();
            if method != Method::GET {
                return Err(Fail::new(StatusCode::METHOD_NOT_ALLOWED, "GET only"));
            }
            check(&grant, kind, Op::List)?;
            Ok(list(state, prefix_dir, kind))
        }
        Target::Object(kind, id) => {
            seen.labels.kind = kind_name(kind);
            let name = names::storage_name(&parsed.prefix, kind, id.as_ref());
            match method {
                Method::GET | Method::HEAD => {
                    seen.labels.op = Op::Get.name();
                    check(&grant, kind, Op::Get)?;
                    get(state, name, method == Method::HEAD, &req).await
                }
                Method::POST => {
                    seen.labels.op = Op::Create.name();
                    check(&grant, kind, Op::Create)?;
                    let up = Upload {
                        grant: &grant,
                        prefix_dir,
                        kind,
                        id,
                        name,
                    };
                    create(state, up, req, seen).await
                }
                Method::DELETE => {
                    seen.labels.op = Op::Delete.name();
                    check(&grant, kind, Op::Delete)?;
                    delete(state, &grant, &parsed.prefix, kind, name, &req).await
                }
                _ => Err(Fail::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "GET, HEAD, POST or DELETE",
                )),
            }
        }
    }
}

fn check(grant: &Grant, kind: FileKind, op: Op) -> Result<(), Fail> {
    if allowed(grant.role, kind, op) {
        Ok(())
    } else {
        Err(Fail::new(
            StatusCode::FORBIDDEN,
            format!(
                "the {} role may not {} {}",
                grant.role.name(),
                op.name(),
                kind_name(kind)
            ),
        ))
    }
}

/// A streamed listing: a JSON array, one `{"name", "size", "mtime"}` a line.
fn list(state: &Arc<State>, prefix_dir: String, kind: FileKind) -> Response<Body> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    let state = state.clone();
    tokio::spawn(async move {
        let dir = format!("{prefix_dir}{}", kind.prefix());
        let want = prefix_dir.clone();
        let tx2 = tx.clone();
        let r = blocking(&state, move |b| {
            let mut first = true;
            let mut batch = String::from("[\n");
            let mut err = None;
            b.list(&dir, &mut |o| {
                let Some((p, k, Some(id))) = names::split_storage(&o.path) else {
                    return;
                };
                if k != kind || names::prefix_dir(&p) != want {
                    return;
                }
                let mut entry = serde_json::json!({ "name": id.to_hex(), "size": o.size });
                if let Some(t) = o.mtime {
                    entry["mtime"] = format_mtime(t).into();
                }
                if !first {
                    batch.push_str(",\n");
                }
                first = false;
                batch.push_str(&entry.to_string());
                if batch.len() >= 32 << 10 && err.is_none() {
                    let chunk = Bytes::from(std::mem::take(&mut batch));
                    if tx2.blocking_send(Ok(chunk)).is_err() {
                        err = Some(());
                    }
                }
            })?;
            batch.push_str("\n]\n");
            let _ = tx2.blocking_send(Ok(Bytes::from(batch)));
            Ok(())
        })
        .await;
        if let Err(e) = r {
            let _ = storage_fail(e);
            // A listing cut short must not look complete: the stream ends in an error.
            let _ = tx
                .send(Err(std::io::Error::other("the storage listing failed")))
                .await;
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item.map(Frame::data), rx))
    });
    let mut r = Response::new(StreamBody::new(stream).boxed());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// One `Range: bytes=…` header, resolved against an object of `size` bytes: `Ok(None)` for
/// no header, `Err` for a range that cannot be served (416).
fn parse_range(value: Option<&HeaderValue>, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(v) = value else { return Ok(None) };
    let v = v.to_str().map_err(|_| ())?;
    let spec = v.trim().strip_prefix("bytes=").ok_or(())?;
    if spec.contains(',') {
        return Err(());
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (a, b) = (a.trim(), b.trim());
    let (start, end) = if a.is_empty() {
        // The last `b` bytes.
        let n: u64 = b.parse().map_err(|_| ())?;
        if n == 0 || size == 0 {
            return Err(());
        }
        (size.saturating_sub(n), size - 1)
    } else {
        let start: u64 = a.parse().map_err(|_| ())?;
        let end: u64 = if b.is_empty() {
            size.saturating_sub(1)
        } else {
            b.parse().map_err(|_| ())?
        };
        (start, end.min(size.saturating_sub(1)))
    };
    if start >= size || start > end {
        return Err(());
    }
    Ok(Some((start, end)))
}

async fn get(
    state: &Arc<State>,
    name: String,
    head_only: bool,
    req: &Request<Incoming>,
) -> Result<Response<Body>, Fail> {
    let range_header = req.headers().get(header::RANGE).cloned();
    if head_only || range_header.is_some() {
        let n = name.clone();
        let size = blocking(state, move |b| b.head(&n))
            .await
            .map_err(storage_fail)?
            .ok_or_else(|| Fail::new(StatusCode::NOT_FOUND, "not found"))?;
        if head_only {
            let mut r = empty(StatusCode::OK);
            r.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(size));
            return Ok(r);
        }
        let Ok(range) = parse_range(range_header.as_ref(), size) else {
            let mut r = text(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable");
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(r);
        };
        if let Some((start, end)) = range {
            let n = name.clone();
            let data = blocking(state, move |b| b.get(&n, Some(start..end + 1)))
                .await
                .map_err(storage_fail)?;
            let mut r = Response::new(full(data));
            *r.status_mut() = StatusCode::PARTIAL_CONTENT;
            if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{size}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(r);
        }
    }
    let data = blocking(state, move |b| b.get(&name, None))
        .await
        .map_err(storage_fail)?;
    let mut r = Response::new(full(data));
    r.headers_mut()
        .insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    Ok(r)
}

/// What an upload stores.
struct Upload<'a> {
    grant: &'a Grant,
    prefix_dir: String,
    kind: FileKind,
    id: Option<Id>,
    name: String,
}

impl Upload<'_> {
    /// 507 when `extra` more bytes would take a non-admin client's repository past the limit.
    fn room(&self, state: &State, extra: u64) -> Result<(), Fail> {
        if let Some(max) = state.max_size
            && self.grant.role != Role::Admin
            && state.usage.bytes(&self.prefix_dir).saturating_add(extra) > max
        {
            return Err(Fail::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "the repository reached the server's size limit",
            ));
        }
        Ok(())
    }
}

async fn create(
    state: &Arc<State>,
    up: Upload<'_>,
    req: Request<Incoming>,
    seen: &mut Seen,
) -> Result<Response<Body>, Fail> {
    let cap = max_object(up.kind);
    let too_large = || {
        Fail::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("{} objects are at most {cap} bytes", kind_name(up.kind)),
        )
    };
    let declared: Option<u64> = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    if declared.is_some_and(|n| n > cap) {
        return Err(too_large());
    }
    up.room(state, declared.unwrap_or(0))?;
    // An existing name is refused before its body is read.
    let n = up.name.clone();
    if blocking(state, move |b| b.head(&n))
        .await
        .map_err(storage_fail)?
        .is_some()
    {
        return Err(Fail::new(StatusCode::CONFLICT, "already exists"));
    }

    // The body goes to a spool on a blocking thread, hashed on the way.
    let spool = match &state.spool_dir {
        Some(dir) => Spool::file(dir.join(format!(
            ".tmp-upload-{:016x}",
            cairn_repo_format::crypto::random_u64()
        )))
        .map_err(|e| BackendError::Other {
            path: dir.display().to_string(),
            message: format!("cannot create a spool file: {e}"),
        }),
        None => state
            .backend
            .spool(declared.unwrap_or(0).min(1 << 20) as usize),
    }
    .map_err(storage_fail)?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(8);
    let writer = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut spool = spool;
        let mut hasher = StoredHasher::default();
        while let Some(chunk) = rx.blocking_recv() {
            hasher.update(&chunk);
            spool.write_all(&chunk)?;
        }
        let body = spool.finish()?;
        Ok::<_, std::io::Error>((body, hasher.finish()))
    });
    let mut body = req.into_body();
    let mut received: u64 = 0;
    let read = async {
        loop {
            let frame = match tokio::time::timeout(state.timeouts.idle, body.frame()).await {
                Err(_) => {
                    return Err(Fail::new(
                        StatusCode::REQUEST_TIMEOUT,
                        "the request body stalled",
                    ));
                }
                Ok(None) => return Ok(()),
                Ok(Some(Err(e))) => {
                    return Err(Fail::new(
                        StatusCode::BAD_REQUEST,
                        format!("the request body broke off: {e}"),
                    ));
                }
                Ok(Some(Ok(f))) => f,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            received += data.len() as u64;
            if received > cap {
                return Err(too_large());
            }
            if tx.send(data).await.is_err() {
                return Err(Fail::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the spool failed",
                ));
            }
        }
    };
    let outcome = read.await;
    drop(tx);
    seen.received = received;
    let written = writer.await;
    outcome?;
    let (spooled, hash) = match written {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "cannot spool an upload");
            return Err(Fail::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "cannot spool the upload",
            ));
        }
        Err(e) => {
            tracing::error!(error = %e, "spool task failed");
            return Err(Fail::new(StatusCode::INTERNAL_SERVER_ERROR, "spool failed"));
        }
    };
    if declared.is_some_and(|n| n != received) {
        return Err(Fail::new(
            StatusCode::BAD_REQUEST,
            "the body's length is not its Content-Length",
        ));
    }
    if let Some(id) = up.id
        && hash != id
    {
        return Err(Fail::new(
            StatusCode::BAD_REQUEST,
            "the body's BLAKE3 hash is not its name",
        ));
    }
    up.room(state, received)?;
    let n = up.name.clone();
    blocking(state, move |b| b.put_spooled(&n, &spooled))
        .await
        .map_err(storage_fail)?;
    state
        .usage
        .added(&up.prefix_dir, &up.name, up.kind, received);
    let mut r = empty(StatusCode::CREATED);
    if matches!(up.kind, FileKind::Lock | FileKind::ExclusiveLock)
        && let Ok(v) = HeaderValue::from_str(&state.receipts.receipt(&up.name))
    {
        r.headers_mut().insert(RECEIPT_HEADER, v);
    }
    Ok(r)
}

async fn delete(
    state: &Arc<State>,
    grant: &Grant,
    prefix: &[String],
    kind: FileKind,
    name: String,
    req: &Request<Incoming>,
) -> Result<Response<Body>, Fail> {
    if grant.role != Role::Admin {
        // Only locks get here (the table); only with their receipt.
        let given = req
            .headers()
            .get(RECEIPT_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !state.receipts.verify(&name, given) {
            return Err(Fail::new(
                StatusCode::FORBIDDEN,
                "an append client deletes only its own locks (no valid receipt)",
            ));
        }
    }
    let n = name.clone();
    let size = blocking(state, move |b| b.head(&n))
        .await
        .map_err(storage_fail)?
        .ok_or_else(|| Fail::new(StatusCode::NOT_FOUND, "not found"))?;
    if kind == FileKind::Key {
        let dir = format!("{}keys/", names::prefix_dir(prefix));
        let keys = blocking(state, move |b| {
            let mut n = 0usize;
            b.list(&dir, &mut |o| {
                if matches!(names::split_storage(&o.path), Some((_, FileKind::Key, _))) {
                    n += 1;
                }
            })?;
            Ok(n)
        })
        .await
        .map_err(storage_fail)?;
        if keys <= 1 {
            return Err(Fail::new(
                StatusCode::FORBIDDEN,
                "the last key of a repository is never deleted",
            ));
        }
    }
    let n = name.clone();
    blocking(state, move |b| b.delete(&n))
        .await
        .map_err(storage_fail)?;
    state.usage.removed(&names::prefix_dir(prefix), &name, size);
    Ok(empty(StatusCode::NO_CONTENT))
}

/// A response body that fails once the request's time is up, so that a client reading
/// slowly cannot hold a connection past the total cap.
pub struct Deadline {
    inner: Body,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl Deadline {
    fn new(inner: Body, after: Duration) -> Deadline {
        Deadline {
            inner,
            sleep: Box::pin(tokio::time::sleep(after)),
        }
    }
}

impl hyper::body::Body for Deadline {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if self.sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "response took too long",
            ))));
        }
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The mtime of a listing entry as the protocol writes it.
pub fn format_mtime(t: SystemTime) -> String {
    let t: chrono::DateTime<chrono::Utc> = t.into();
    t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let h = |s: &str| HeaderValue::from_str(s).unwrap();
        assert_eq!(parse_range(None, 10), Ok(None));
        assert_eq!(parse_range(Some(&h("bytes=0-4")), 10), Ok(Some((0, 4))));
        assert_eq!(parse_range(Some(&h("bytes=5-")), 10), Ok(Some((5, 9))));
        assert_eq!(parse_range(Some(&h("bytes=-3")), 10), Ok(Some((7, 9))));
        assert_eq!(parse_range(Some(&h("bytes=8-20")), 10), Ok(Some((8, 9))));
        assert!(parse_range(Some(&h("bytes=10-12")), 10).is_err());
        assert!(parse_range(Some(&h("bytes=0-1,3-4")), 10).is_err());
        assert!(parse_range(Some(&h("items=0-1")), 10).is_err());
        assert!(parse_range(Some(&h("bytes=5-2")), 10).is_err());
        assert!(parse_range(Some(&h("bytes=0-0")), 0).is_err());
    }
}
