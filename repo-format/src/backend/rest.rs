//! A repository behind a `cairn server` (`rest:https://HOST:PORT/PREFIX`): the [`Backend`]
//! calls become the server's HTTP requests (`docs/design.md` §16). The client sends a bearer
//! token, trusts the system's roots or only the CA named by `--cacert`, and keeps the lock
//! receipts the server hands out when it stores a lock, so that an append-only client can
//! later remove its own locks and no one else's.
//!
//! Requests run on the process's one I/O runtime ([`super::io`]), like the object stores'.
//! Retries and rate limits are the layers every backend gets; this module only says which
//! answers are worth a retry: 408, 429 and 5xx other than 507, and dropped connections.

use std::collections::HashMap;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use reqwest::{Method, StatusCode};

use super::io::block_on;
use super::{Access, Backend, BackendError, FileKind, ObjectInfo};
use crate::id::Id;

/// The response header carrying a lock receipt (on a stored lock) and the request header
/// that presents it (on deleting that lock).
pub const RECEIPT_HEADER: &str = "cairn-lock-receipt";

/// The variable holding the token when no token file is given.
pub const TOKEN_ENV: &str = "CAIRN_SERVER_TOKEN";

/// How a client authenticates to a repository server and which CA it trusts.
#[derive(Clone, Default)]
pub struct RestAuth {
    /// The token itself (else [`RestAuth::token_file`], else `CAIRN_SERVER_TOKEN`).
    pub token: Option<String>,
    /// A file whose first line is the token (`--server-token-file`).
    pub token_file: Option<PathBuf>,
    /// PEM certificates to trust instead of the system's roots (`--cacert`).
    pub cacert: Option<PathBuf>,
}

impl std::fmt::Debug for RestAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestAuth")
            .field("token", &self.token.as_ref().map(|_| ".."))
            .field("token_file", &self.token_file)
            .field("cacert", &self.cacert)
            .finish()
    }
}

impl PartialEq for RestAuth {
    fn eq(&self, other: &Self) -> bool {
        self.token == other.token
            && self.token_file == other.token_file
            && self.cacert == other.cacert
    }
}

impl Eq for RestAuth {}

impl RestAuth {
    /// The token: the file's first line, else the value, else the environment.
    fn resolve_token(&self, location: &str) -> Result<String, BackendError> {
        let other = |message: String| BackendError::Other {
            path: location.into(),
            message,
        };
        let token = if let Some(f) = &self.token_file {
            let text = std::fs::read_to_string(f).map_err(|e| {
                other(format!(
                    "cannot read server token file {}: {e}",
                    f.display()
                ))
            })?;
            text.lines().next().unwrap_or("").trim().to_string()
        } else if let Some(t) = &self.token {
            t.trim().to_string()
        } else {
            std::env::var(TOKEN_ENV)
                .unwrap_or_default()
                .trim()
                .to_string()
        };
        if token.is_empty() {
            return Err(other(format!(
                "no server token: set {TOKEN_ENV} or pass --server-token-file"
            )));
        }
        Ok(token)
    }
}

/// One entry of a listing as the server sends it.
#[derive(serde::Deserialize)]
struct Listed {
    name: String,
    size: u64,
    #[serde(default)]
    mtime: Option<String>,
}

/// The answer of `GET /PREFIX/`.
#[derive(serde::Deserialize)]
struct RoleAnswer {
    role: String,
}

/// A repository served by `cairn server`.
pub struct RestBackend {
    client: reqwest::Client,
    /// `https://host:port/prefix`, without a trailing slash.
    base: String,
    token: String,
    /// Receipts of the locks this process stored, by object name.
    receipts: Mutex<HashMap<String, String>>,
    access: OnceLock<Access>,
}

/// Whether a status is worth another attempt: 408, 429 and 5xx but 507 (the repository is
/// full, which waiting will not change).
pub fn is_transient_status(status: u16) -> bool {
    status == 408 || status == 429 || ((500..600).contains(&status) && status != 507)
}

impl RestBackend {
    /// A client of the server at `url` (`https://HOST:PORT/PREFIX` or `http://…`).
    pub fn new(url: &str, auth: &RestAuth) -> Result<RestBackend, BackendError> {
        let location = format!("rest:{url}");
        let other = |message: String| BackendError::Other {
            path: location.clone(),
            message,
        };
        let parsed =
            reqwest::Url::parse(url).map_err(|e| other(format!("not a server URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(other("the server URL must be http:// or https://".into()));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() || !parsed.username().is_empty()
        {
            return Err(other(
                "the server URL takes no query, fragment or user (the token goes in CAIRN_SERVER_TOKEN or --server-token-file)".into(),
            ));
        }
        let token = auth.resolve_token(&location)?;
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(other(
                "the server token holds characters other than printable ASCII".into(),
            ));
        }
        super::io::ensure().map_err(|e| other(e.to_string()))?;
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(Duration::from_secs(120))
            // Below the server's idle timeout (60 s by default), so the client drops an idle
            // connection before the server does.
            .pool_idle_timeout(Duration::from_secs(30))
            .http2_adaptive_window(true)
            .user_agent(concat!("cairn/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &auth.cacert {
            let pem = std::fs::read(ca)
                .map_err(|e| other(format!("cannot read --cacert {}: {e}", ca.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| other(format!("--cacert {}: {e}", ca.display())))?;
            if certs.is_empty() {
                return Err(other(format!(
                    "--cacert {} holds no PEM certificate",
                    ca.display()
                )));
            }
            builder = builder.tls_certs_only(certs);
        }
        let client = builder
            .build()
            .map_err(|e| other(format!("cannot set up the HTTP client: {e}")))?;
        Ok(RestBackend {
            client,
            base: url.trim_end_matches('/').to_string(),
            token,
            receipts: Mutex::default(),
            access: OnceLock::new(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{}", self.base, path)
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(path))
            .bearer_auth(&self.token)
    }

    /// Sends a request and maps a failure to the backend's errors; success statuses come
    /// back with the response.
    async fn send(
        &self,
        path: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, BackendError> {
        let resp = req.send().await.map_err(|e| transport(path, e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.text().await.unwrap_or_default();
        Err(status_error(path, status, body.trim()))
    }

    fn receipts(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.receipts.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A request that got no answer: a refused or dropped connection or a timeout may pass; a
/// TLS or URL problem will not.
fn transport(path: &str, e: reqwest::Error) -> BackendError {
    let message = error_chain(&e);
    if e.is_timeout() || e.is_connect() || e.is_request() || e.is_body() {
        // A certificate the client does not trust will not become trusted on a retry.
        if message.contains("certificate") || message.contains("UnknownIssuer") {
            return BackendError::Other {
                path: path.into(),
                message: format!("{message} (pass the server's CA with --cacert)"),
            };
        }
        return BackendError::Transient {
            path: path.into(),
            message,
        };
    }
    BackendError::Other {
        path: path.into(),
        message,
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn status_error(path: &str, status: StatusCode, body: &str) -> BackendError {
    let code = status.as_u16();
    let said = if body.is_empty() {
        String::new()
    } else {
        format!(": {}", body.chars().take(300).collect::<String>())
    };
    match code {
        404 => BackendError::NotFound { path: path.into() },
        409 => BackendError::AlreadyExists { path: path.into() },
        c if is_transient_status(c) => BackendError::Transient {
            path: path.into(),
            message: format!("server answered {status}{said}"),
        },
        401 => BackendError::Other {
            path: path.into(),
            message: format!("server answered {status}{said} (check the server token)"),
        },
        507 => BackendError::Other {
            path: path.into(),
            message: format!(
                "server answered {status}{said} (the repository reached the server's --max-size)"
            ),
        },
        _ => BackendError::Other {
            path: path.into(),
            message: format!("server answered {status}{said}"),
        },
    }
}

fn parse_mtime(s: &str) -> Option<SystemTime> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| SystemTime::from(t.with_timezone(&chrono::Utc)))
}

/// The kind listed under `prefix` (`index/`, `data/`, …).
fn kind_of_prefix(prefix: &str) -> Option<FileKind> {
    let p = prefix.trim_end_matches('/');
    FileKind::ALL
        .into_iter()
        .find(|k| k.prefix().trim_end_matches('/') == p && *k != FileKind::Config)
}

impl Backend for RestBackend {
    fn location(&self) -> String {
        format!("rest:{}", self.base)
    }

    fn list(&self, prefix: &str, f: &mut dyn FnMut(ObjectInfo)) -> Result<(), BackendError> {
        let Some(kind) = kind_of_prefix(prefix) else {
            return Err(BackendError::Other {
                path: prefix.into(),
                message: "a repository server lists only the repository's directories".into(),
            });
        };
        let dir = kind.prefix();
        let body = block_on(async {
            let resp = self.send(dir, self.request(Method::GET, dir)).await?;
            resp.bytes().await.map_err(|e| transport(dir, e))
        })?;
        let entries: Vec<Listed> =
            serde_json::from_slice(&body).map_err(|e| BackendError::Other {
                path: dir.into(),
                message: format!("the server's listing is not valid: {e}"),
            })?;
        for e in entries {
            let Ok(id) = Id::from_hex(&e.name) else {
                continue;
            };
            f(ObjectInfo {
                path: kind.path(&id),
                size: e.size,
                mtime: e.mtime.as_deref().and_then(parse_mtime),
            });
        }
        Ok(())
    }

    fn head(&self, path: &str) -> Result<Option<u64>, BackendError> {
        block_on(async {
            match self.send(path, self.request(Method::HEAD, path)).await {
                Ok(resp) => {
                    let len = resp
                        .headers()
                        .get(reqwest::header::CONTENT_LENGTH)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok());
                    match len {
                        Some(n) => Ok(Some(n)),
                        None => Err(BackendError::Other {
                            path: path.into(),
                            message: "the server sent no Content-Length".into(),
                        }),
                    }
                }
                Err(BackendError::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        })
    }

    fn get(&self, path: &str, range: Option<Range<u64>>) -> Result<Bytes, BackendError> {
        if let Some(r) = &range
            && r.start >= r.end
        {
            // An empty range is no request: the object must still exist.
            return match self.head(path)? {
                Some(len) if r.start <= len => Ok(Bytes::new()),
                Some(_) => Err(BackendError::Other {
                    path: path.into(),
                    message: format!("range {r:?} lies beyond the end of the object"),
                }),
                None => Err(BackendError::NotFound { path: path.into() }),
            };
        }
        block_on(async {
            let mut req = self.request(Method::GET, path);
            if let Some(r) = &range {
                req = req.header(
                    reqwest::header::RANGE,
                    format!("bytes={}-{}", r.start, r.end - 1),
                );
            }
            let resp = match self.send(path, req).await {
                Err(BackendError::Other { message, .. })
                    if message.contains("416") && range.is_some() =>
                {
                    return Err(BackendError::Other {
                        path: path.into(),
                        message: format!(
                            "range {:?} lies beyond the end of the object",
                            range.clone().unwrap_or_default()
                        ),
                    });
                }
                r => r?,
            };
            let partial = resp.status() == StatusCode::PARTIAL_CONTENT;
            let body = resp.bytes().await.map_err(|e| transport(path, e))?;
            match range {
                None => Ok(body),
                Some(r) => {
                    let want = (r.end - r.start) as usize;
                    if partial && body.len() == want {
                        Ok(body)
                    } else if !partial && body.len() as u64 >= r.end {
                        Ok(body.slice(r.start as usize..r.end as usize))
                    } else {
                        Err(BackendError::Other {
                            path: path.into(),
                            message: format!(
                                "range {r:?} lies beyond the end of the object (the server sent {} bytes)",
                                body.len()
                            ),
                        })
                    }
                }
            }
        })
    }

    fn put(&self, path: &str, data: Bytes) -> Result<(), BackendError> {
        let receipt = block_on(async {
            let req = self.request(Method::POST, path).body(data);
            let resp = self.send(path, req).await?;
            Ok::<_, BackendError>(
                resp.headers()
                    .get(RECEIPT_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string),
            )
        })?;
        if let Some(r) = receipt {
            self.receipts().insert(path.to_string(), r);
        }
        Ok(())
    }

    fn delete(&self, path: &str) -> Result<(), BackendError> {
        let receipt = self.receipts().get(path).cloned();
        let r = block_on(async {
            let mut req = self.request(Method::DELETE, path);
            if let Some(r) = &receipt {
                req = req.header(RECEIPT_HEADER, r);
            }
            self.send(path, req).await.map(|_| ())
        });
        if matches!(r, Ok(()) | Err(BackendError::NotFound { .. })) {
            self.receipts().remove(path);
        }
        r
    }

    fn access(&self) -> Result<Access, BackendError> {
        if let Some(a) = self.access.get() {
            return Ok(*a);
        }
        let body = block_on(async {
            let resp = self.send("", self.request(Method::GET, "")).await?;
            resp.bytes().await.map_err(|e| transport("", e))
        })?;
        let answer: RoleAnswer =
            serde_json::from_slice(&body).map_err(|e| BackendError::Other {
                path: self.location(),
                message: format!("the server's role answer is not valid: {e}"),
            })?;
        let access = match answer.role.as_str() {
            "read" => Access::Read,
            "append" => Access::Append,
            "admin" => Access::Full,
            other => {
                return Err(BackendError::Other {
                    path: self.location(),
                    message: format!("the server names an unknown role {other:?}"),
                });
            }
        };
        Ok(*self.access.get_or_init(|| access))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_statuses() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(is_transient_status(s), "{s}");
        }
        for s in [400, 401, 403, 404, 409, 413, 416, 507] {
            assert!(!is_transient_status(s), "{s}");
        }
    }

    #[test]
    fn prefixes_name_kinds() {
        assert_eq!(kind_of_prefix("data/"), Some(FileKind::Pack));
        assert_eq!(kind_of_prefix("locks"), Some(FileKind::Lock));
        assert_eq!(
            kind_of_prefix("exclusive-locks/"),
            Some(FileKind::ExclusiveLock)
        );
        assert_eq!(kind_of_prefix("config"), None);
        assert_eq!(kind_of_prefix("other/"), None);
    }

    #[test]
    fn urls_and_tokens_are_checked() {
        let auth = RestAuth {
            token: Some("t0k".into()),
            ..Default::default()
        };
        assert!(RestBackend::new("ftp://x/y", &auth).is_err());
        assert!(RestBackend::new("https://u@x/y", &auth).is_err());
        assert!(RestBackend::new("https://x/y?a=1", &auth).is_err());
        let b = RestBackend::new("https://x:8443/ns1/", &auth).unwrap();
        assert_eq!(b.location(), "rest:https://x:8443/ns1");
        let none = RestAuth {
            token_file: Some("/nonexistent/token".into()),
            ..Default::default()
        };
        assert!(RestBackend::new("https://x/", &none).is_err());
        let debug = format!("{auth:?}");
        assert!(!debug.contains("t0k"), "{debug}");
    }
}
