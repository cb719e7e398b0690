//! `cairn server` as a real process over real TLS: the backend conformance suite through the
//! `rest:` backend, the role table, names, receipts and limits over raw HTTP, stalled and
//! killed uploads, reloading tokens and certificates after a symlink swap, and the `cairn`
//! commands through the server with tokens of each role.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_e2e::server::{
    ADMIN, APPEND, APPEND2, NS1_ADMIN, NS1_APPEND, NS1_READ, Options, READ, Server, TestPki,
    plain_get,
};
use cairn_e2e::*;
use cairn_repo_format::Id;
use cairn_repo_format::backend::{Access, Backend, RestAuth, RestBackend};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Every file under `dir`, relative, sorted.
fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = walk(dir)
        .into_iter()
        .map(|p| p.strip_prefix(dir).unwrap().display().to_string())
        .collect();
    v.sort();
    v
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn id_of(data: &[u8]) -> String {
    Id::of_stored(data).to_hex()
}

/// Every file below `a` and `b`, by relative path and content, is the same.
fn assert_same_tree(a: &Path, b: &Path) {
    let (x, y) = (read_tree_files(a), read_tree_files(b));
    assert_eq!(
        x.keys().collect::<Vec<_>>(),
        y.keys().collect::<Vec<_>>(),
        "{} and {}",
        a.display(),
        b.display()
    );
    for (k, v) in &x {
        assert!(v == &y[k], "{} differs", k.display());
    }
}

/// A server on `base/storage`, its files in `base/srv`, with `extra` flags.
fn start_in(base: &Path, extra: &[&str]) -> (std::path::PathBuf, Server) {
    let storage = base.join("storage");
    let server = Server::start(
        &storage,
        &base.join("srv"),
        Options {
            extra: extra.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        },
    );
    (storage, server)
}

/// Polls `f` until it is true, or panics after `secs` naming `what`.
fn wait_for(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One answer.
struct Resp {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

/// An HTTP client trusting the server's CA.
struct Http {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
    base: String,
}

impl Http {
    fn new(server: &Server) -> Http {
        Http::with_ca(&server.base, &std::fs::read(server.ca()).unwrap())
    }

    fn with_ca(base: &str, ca_pem: &[u8]) -> Http {
        let rt = runtime();
        let certs = reqwest::Certificate::from_pem_bundle(ca_pem).unwrap();
        let client = reqwest::Client::builder()
            .tls_certs_only(certs)
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Http {
            rt,
            client,
            base: base.to_string(),
        }
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> Result<Resp, reqwest::Error> {
        self.rt.block_on(async {
            let mut r = self.client.request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                format!("{}{path}", self.base),
            );
            if let Some(t) = token {
                r = r.bearer_auth(t);
            }
            for (k, v) in headers {
                r = r.header(*k, *v);
            }
            if let Some(b) = body {
                r = r.body(b);
            }
            let resp = r.send().await?;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let body = resp.bytes().await?.to_vec();
            Ok(Resp {
                status,
                headers,
                body,
            })
        })
    }

    fn req(&self, method: &str, path: &str, token: Option<&str>, body: Option<Vec<u8>>) -> Resp {
        self.send(method, path, token, body, &[])
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    fn status(&self, method: &str, path: &str, token: &str, body: Option<Vec<u8>>) -> u16 {
        self.req(method, path, Some(token), body).status
    }
}

fn rest(server: &Server, prefix: &str, token: &str) -> RestBackend {
    let url = format!("{}/{}", server.base, prefix);
    RestBackend::new(
        &url,
        &RestAuth {
            token: Some(token.into()),
            token_file: None,
            cacert: Some(server.ca()),
        },
    )
    .unwrap()
}

#[test]
fn rest_backend_conforms_through_a_real_server() {
    let base = tempdir();
    let (storage, server) = start_in(base.path(), &[]);
    let b = rest(&server, "", ADMIN);
    assert_eq!(b.access().unwrap(), Access::Full);
    cairn_repo_format::backend::conformance::run_all(&b);
    // Under a prefix as well, and nothing of it lands outside that prefix.
    let ns = rest(&server, "ns1/deeper", NS1_ADMIN);
    cairn_repo_format::backend::conformance::run_all(&ns);
    let stray: Vec<String> = files(&storage)
        .into_iter()
        .filter(|f| f.contains(".tmp-"))
        .collect();
    assert!(stray.is_empty(), "temporary files left: {stray:?}");
    assert!(storage.join("ns1/deeper/config").is_file());
    assert!(
        !ns.location().contains("token"),
        "the location names no token"
    );
}

#[test]
fn roles_names_receipts_and_limits_over_real_http() {
    let base = tempdir();
    let (storage, server) = start_in(base.path(), &["--max-size", "64K"]);
    let h = Http::new(&server);

    // Role discovery and authentication.
    let r = h.req("GET", "/", Some(APPEND), None);
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["role"], "append");
    assert_eq!(h.req("GET", "/", None, None).status, 401);
    assert_eq!(h.status("GET", "/", "not-a-token-at-all-0000", None), 401);
    let r = h.req("GET", "/ns1/x/", Some(NS1_APPEND), None);
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        (v["role"].as_str(), v["prefix"].as_str()),
        (Some("append"), Some("ns1/x"))
    );

    // Config: admin creates it once; nobody overwrites it.
    assert_eq!(
        h.status("POST", "/config", APPEND, Some(b"cfg".to_vec())),
        403
    );
    assert_eq!(
        h.status("POST", "/config", ADMIN, Some(b"cfg".to_vec())),
        201
    );
    assert_eq!(
        h.status("POST", "/config", ADMIN, Some(b"other".to_vec())),
        409
    );
    assert_eq!(h.req("GET", "/config", Some(READ), None).body, b"cfg");

    // Read cannot create; append creates snapshots, index files, packs and locks.
    let snap = b"sealed snapshot".to_vec();
    let snap_path = format!("/snapshots/{}", id_of(&snap));
    assert_eq!(h.status("POST", &snap_path, READ, Some(snap.clone())), 403);
    assert_eq!(
        h.status("POST", &snap_path, APPEND, Some(snap.clone())),
        201
    );
    assert_eq!(
        h.status("POST", &snap_path, APPEND, Some(snap.clone())),
        409
    );
    assert_eq!(h.req("GET", &snap_path, Some(READ), None).body, snap);
    let head = h.req("HEAD", &snap_path, Some(READ), None);
    assert_eq!(
        head.headers
            .get("content-length")
            .and_then(|v| v.to_str().ok()),
        Some(snap.len().to_string().as_str())
    );
    let pack: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    let pid = id_of(&pack);
    let pack_path = format!("/data/{}/{pid}", &pid[..2]);
    assert_eq!(
        h.status("POST", &pack_path, APPEND, Some(pack.clone())),
        201
    );
    // One range: 206, or 416 when it cannot be served.
    let r = h
        .send(
            "GET",
            &pack_path,
            Some(READ),
            None,
            &[("range", "bytes=10-19")],
        )
        .unwrap();
    assert_eq!((r.status, r.body.as_slice()), (206, &pack[10..20]));
    let r = h
        .send(
            "GET",
            &pack_path,
            Some(READ),
            None,
            &[("range", "bytes=6000-")],
        )
        .unwrap();
    assert_eq!(r.status, 416);

    // Append deletes no snapshots, index files or packs, and writes no condemned lists,
    // exclusive locks or keys.
    assert_eq!(h.status("DELETE", &snap_path, APPEND, None), 403);
    assert_eq!(h.status("DELETE", &pack_path, APPEND, None), 403);
    for kind in ["condemned", "exclusive-locks", "keys"] {
        let body = format!("{kind} object").into_bytes();
        let p = format!("/{kind}/{}", id_of(&body));
        assert_eq!(
            h.status("POST", &p, APPEND, Some(body.clone())),
            403,
            "{kind}"
        );
        assert_eq!(h.status("POST", &p, ADMIN, Some(body)), 201, "{kind}");
        assert_eq!(h.status("DELETE", &p, APPEND, None), 403, "{kind}");
    }

    // Locks: the creator gets a receipt and deletes with it; nobody else can.
    let lock = b"sealed lock".to_vec();
    let lock_path = format!("/locks/{}", id_of(&lock));
    let r = h.req("POST", &lock_path, Some(APPEND), Some(lock.clone()));
    assert_eq!(r.status, 201);
    let receipt = r.headers["cairn-lock-receipt"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(h.status("DELETE", &lock_path, APPEND2, None), 403);
    let forged = "0".repeat(64);
    let r = h
        .send(
            "DELETE",
            &lock_path,
            Some(APPEND2),
            None,
            &[("cairn-lock-receipt", &forged)],
        )
        .unwrap();
    assert_eq!(r.status, 403);
    let r = h
        .send(
            "DELETE",
            &lock_path,
            Some(APPEND),
            None,
            &[("cairn-lock-receipt", &receipt)],
        )
        .unwrap();
    assert_eq!(r.status, 204);
    // A receipt is for one lock only.
    let other = b"another lock".to_vec();
    let other_path = format!("/locks/{}", id_of(&other));
    assert_eq!(
        h.status("POST", &other_path, APPEND2, Some(other.clone())),
        201
    );
    let r = h
        .send(
            "DELETE",
            &other_path,
            Some(APPEND),
            None,
            &[("cairn-lock-receipt", &receipt)],
        )
        .unwrap();
    assert_eq!(r.status, 403);
    // Admin deletes any lock.
    assert_eq!(h.status("DELETE", &other_path, ADMIN, None), 204);
    assert_eq!(h.status("DELETE", &other_path, ADMIN, None), 404);
    // Locks are at most 4 KiB.
    let big = vec![7u8; 5000];
    assert_eq!(
        h.status(
            "POST",
            &format!("/locks/{}", id_of(&big)),
            APPEND,
            Some(big)
        ),
        413
    );

    // Bad names: 400, and nothing reaches the storage.
    let before = files(&storage);
    let good = id_of(b"x");
    for p in [
        "/../config".to_string(),
        "/%2e%2e/config".into(),
        format!("/snapshots/{}", good.to_uppercase()),
        format!("/data/00/{good}"),
        format!("/data/{good}"),
        format!("/snapshots/{good}/extra"),
        format!("/snapshots/{}", &good[..60]),
        format!("/nonsense/{good}"),
        "/ns1//config".into(),
    ] {
        assert_eq!(raw_status(&server, "POST", &p, ADMIN, b"x"), 400, "{p}");
    }
    // A body whose BLAKE3 is not its name: 400, nothing stored.
    let liar = format!("/snapshots/{}", id_of(b"what the name says"));
    assert_eq!(
        h.status("POST", &liar, ADMIN, Some(b"other bytes".to_vec())),
        400
    );
    assert_eq!(h.status("GET", &liar, ADMIN, None), 404);
    assert_eq!(files(&storage), before, "nothing reached the storage");

    // Prefixes stop at segment boundaries.
    let b = b"ns".to_vec();
    let p = format!("snapshots/{}", id_of(&b));
    assert_eq!(
        h.status("POST", &format!("/ns1/{p}"), NS1_APPEND, Some(b.clone())),
        201
    );
    assert_eq!(
        h.status(
            "POST",
            &format!("/ns1/sub/{p}"),
            NS1_APPEND,
            Some(b.clone())
        ),
        201
    );
    assert_eq!(
        h.status("POST", &format!("/ns10/{p}"), NS1_APPEND, Some(b.clone())),
        403
    );
    assert_eq!(
        h.status("POST", &format!("/{p}"), NS1_APPEND, Some(b.clone())),
        403
    );
    assert_eq!(
        h.status("GET", &format!("/ns1/{p}"), READ, None),
        403,
        "a root token reaches only the root"
    );

    // Listings: name, size and the storage's mtime.
    let r = h.req("GET", "/snapshots/", Some(READ), None);
    assert_eq!(r.status, 200);
    let list: Vec<serde_json::Value> = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["name"], id_of(&snap));
    assert_eq!(list[0]["size"], snap.len());
    assert!(list[0]["mtime"].as_str().unwrap().ends_with('Z'));

    // The last key is never deleted, not even by admin.
    let keys: Vec<serde_json::Value> =
        serde_json::from_slice(&h.req("GET", "/keys/", Some(ADMIN), None).body).unwrap();
    assert_eq!(keys.len(), 1);
    let key_path = format!("/keys/{}", keys[0]["name"].as_str().unwrap());
    assert_eq!(h.status("DELETE", &key_path, ADMIN, None), 403);

    // --max-size 64K: past it, 507 for append; admin is exempt.
    let filler: Vec<u8> = (0..70_000u32).map(|i| (i % 241) as u8).collect();
    let fid = id_of(&filler);
    assert_eq!(
        h.status(
            "POST",
            &format!("/data/{}/{fid}", &fid[..2]),
            APPEND,
            Some(filler.clone())
        ),
        507
    );
    assert_eq!(
        h.status(
            "POST",
            &format!("/data/{}/{fid}", &fid[..2]),
            ADMIN,
            Some(filler)
        ),
        201
    );
    let small = b"small".to_vec();
    assert_eq!(
        h.status(
            "POST",
            &format!("/index/{}", id_of(&small)),
            APPEND,
            Some(small)
        ),
        507,
        "the repository is past the limit now"
    );
    // A token of another repository is not held back by this one's size.
    let other_repo = b"elsewhere".to_vec();
    assert_eq!(
        h.status(
            "POST",
            &format!("/ns1/index/{}", id_of(&other_repo)),
            NS1_APPEND,
            Some(other_repo)
        ),
        201
    );
    // Admin deletes what append may not.
    assert_eq!(h.status("DELETE", &snap_path, ADMIN, None), 204);
    assert!(
        !server.log_text().contains(APPEND),
        "tokens never appear in the log"
    );
}

/// A current-thread Tokio runtime for a test's own async clients.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A TLS connection made by hand, for clients that misbehave.
async fn raw_tls(server: &Server) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    raw_tls_offering(server, Vec::new()).await
}

/// A TLS connection trusting the test CA, offering `alpn` protocols.
async fn raw_tls_offering(
    server: &Server,
    alpn: Vec<Vec<u8>>,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(server.ca()).unwrap();
    use rustls::pki_types::pem::PemObject;
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", server.port()))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    connector.connect(name, tcp).await.unwrap()
}

/// Sends one request exactly as written (no client normalises the path) and returns the
/// status.
fn raw_status(server: &Server, method: &str, path: &str, token: &str, body: &[u8]) -> u16 {
    let rt = runtime();
    rt.block_on(async {
        let mut c = raw_tls(server).await;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        c.write_all(head.as_bytes()).await.unwrap();
        c.write_all(body).await.unwrap();
        c.flush().await.unwrap();
        let mut out = Vec::new();
        let _ = c.read_to_end(&mut out).await;
        let text = String::from_utf8_lossy(&out);
        text.split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no answer to {method} {path}: {text:?}"))
    })
}

/// Reads until the peer closes; returns how long that took, or `None` if it stayed open
/// for `limit`.
async fn until_closed(
    s: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    limit: Duration,
) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((start + limit).into(), s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

#[test]
fn stalled_clients_are_dropped_while_others_are_served() {
    let base = tempdir();
    let (storage, server) = start_in(base.path(), &["--idle-timeout", "2"]);
    let h = Http::new(&server);
    let body = vec![3u8; 100_000];
    let id = id_of(&body);
    let rt = runtime();
    let (mut slow_headers, mut stalled_body) = rt.block_on(async {
        // 200 clients that send part of their headers and then nothing.
        let mut slow = Vec::new();
        for _ in 0..200 {
            let mut a = raw_tls(&server).await;
            a.write_all(b"GET /snapshots/ HTTP/1.1\r\nHost: x\r\nAuthor")
                .await
                .unwrap();
            a.flush().await.unwrap();
            slow.push(a);
        }
        let mut b = raw_tls(&server).await;
        let head = format!(
            "POST /index/{id} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        b.write_all(head.as_bytes()).await.unwrap();
        b.write_all(&body[..1000]).await.unwrap();
        b.flush().await.unwrap();
        (slow, b)
    });
    // Meanwhile, everyone else is served at once.
    for _ in 0..5 {
        let t = Instant::now();
        assert_eq!(h.status("GET", "/snapshots/", READ, None), 200);
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }
    rt.block_on(async {
        for a in &mut slow_headers {
            let closed = until_closed(a, Duration::from_secs(20)).await;
            assert!(
                closed.is_some(),
                "a client sending headers slowly is dropped"
            );
        }
        let b = until_closed(&mut stalled_body, Duration::from_secs(20)).await;
        assert!(b.is_some(), "a client that stopped mid-body is dropped");
    });
    // A fresh client: the old one's pooled connection went idle past the timeout too.
    let h = Http::new(&server);
    assert_eq!(h.status("GET", &format!("/index/{id}"), READ, None), 404);
    assert!(
        files(&storage).iter().all(|f| !f.contains(".tmp-")),
        "{:?}",
        files(&storage)
    );
}

#[test]
fn a_server_killed_mid_upload_leaves_no_object_and_cleans_up_at_start() {
    let base = tempdir();
    let (storage, mut server) = start_in(base.path(), &[]);
    let body: Vec<u8> = (0..4_000_000u32).map(|i| (i % 253) as u8).collect();
    let id = id_of(&body);
    let rt = runtime();
    let _conn = rt.block_on(async {
        let mut c = raw_tls(&server).await;
        let head = format!(
            "POST /data/{}/{id} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {APPEND}\r\nContent-Length: {}\r\n\r\n",
            &id[..2],
            body.len()
        );
        c.write_all(head.as_bytes()).await.unwrap();
        c.write_all(&body[..2_000_000]).await.unwrap();
        c.flush().await.unwrap();
        c
    });
    wait_for(20, "the upload's temporary file", || {
        files(&storage).iter().any(|f| f.contains(".tmp-"))
    });
    server.kill();
    let object = storage.join(format!("data/{}/{id}", &id[..2]));
    assert!(!object.exists(), "no partial object");
    assert!(files(&storage).iter().any(|f| f.contains(".tmp-")));
    server.restart();
    assert!(
        files(&storage).iter().all(|f| !f.contains(".tmp-")),
        "the restarted server removed its temporaries: {:?}",
        files(&storage)
    );
    assert!(!object.exists());
}

/// Points the symlink `dir/..data` at `dir/target` atomically, as a Secret volume does.
fn swap_data(dir: &Path, target: &str) {
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
}

#[test]
fn tokens_and_certificate_reload_after_a_symlink_swap() {
    let base = tempdir();
    let storage = base.path().join("storage");
    let srv = base.path().join("srv");
    std::fs::create_dir_all(srv.join("v1")).unwrap();
    std::fs::create_dir_all(srv.join("v2")).unwrap();
    let pki1 = TestPki::new("first CA");
    let pki2 = TestPki::new("second CA");
    let new_token = "rotated-admin-token-0123456789";
    std::fs::write(srv.join("v1/tokens"), format!("{ADMIN} admin\n")).unwrap();
    std::fs::write(srv.join("v2/tokens"), format!("{new_token} admin\n")).unwrap();
    for (v, pki) in [("v1", &pki1), ("v2", &pki2)] {
        std::fs::write(srv.join(v).join("tls.crt"), &pki.cert_pem).unwrap();
        std::fs::write(srv.join(v).join("tls.key"), &pki.key_pem).unwrap();
    }
    std::fs::write(srv.join("ca.pem"), &pki1.ca_pem).unwrap();
    swap_data(&srv, "v1");
    for f in ["tokens", "tls.crt", "tls.key"] {
        std::os::unix::fs::symlink(format!("..data/{f}"), srv.join(f)).unwrap();
    }
    let server = Server::start(&storage, &srv, Options::default());
    let old_ca = Http::new(&server);
    assert_eq!(old_ca.status("GET", "/", ADMIN, None), 200);
    let new_ca = Http::with_ca(&server.base, pki2.ca_pem.as_bytes());
    assert!(new_ca.send("GET", "/", Some(ADMIN), None, &[]).is_err());

    swap_data(&srv, "v2");
    wait_for(
        30,
        "the new certificate and tokens",
        || matches!(new_ca.send("GET", "/", Some(new_token), None, &[]), Ok(r) if r.status == 200),
    );
    assert_eq!(
        new_ca.status("GET", "/", ADMIN, None),
        401,
        "the old token is gone"
    );
    // New connections no longer trust the old CA's view of the server.
    let fresh_old = Http::with_ca(&server.base, pki1.ca_pem.as_bytes());
    assert!(
        fresh_old
            .send("GET", "/", Some(new_token), None, &[])
            .is_err()
    );
    assert!(server.log_text().contains("certificate reloaded"));
    assert!(server.log_text().contains("tokens file reloaded"));
}

fn cairn_as(server: &Server, token: &str, args: &[&str]) -> Output {
    let ca = server.ca().display().to_string();
    let mut all = vec!["--cacert", ca.as_str()];
    all.extend_from_slice(args);
    run_cairn_with_env(
        &all,
        Some(PASSWORD),
        RunAs::Me,
        &[("CAIRN_SERVER_TOKEN".to_string(), token.to_string())],
    )
}

#[test]
fn cairn_commands_through_the_server_with_each_role() {
    let base = tempdir();
    let (storage, server) = start_in(base.path(), &[]);
    let repo = server.location("");
    let src = base.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    write_random_file(&src.join("a.bin"), 3 << 20, 5);
    write_file(&src.join("dir/b.txt"), b"through the server");

    // Init needs admin: refused early for append, with a clear message.
    let r = cairn_as(
        &server,
        APPEND,
        &["-r", &repo, "init", "--kdf-memory", "64"],
    );
    r.failed_cleanly();
    assert!(
        r.stderr.contains("init needs the admin role") && r.stderr.contains("append"),
        "{}",
        r.stderr
    );
    assert!(files(&storage).is_empty(), "{:?}", files(&storage));
    cairn_as(&server, ADMIN, &["-r", &repo, "init", "--kdf-memory", "64"]).success();

    // Backup with an append token; its lock is gone afterwards (deleted with its receipt).
    cairn_as(
        &server,
        APPEND,
        &["-r", &repo, "backup", src.to_str().unwrap()],
    )
    .success();
    cairn_as(
        &server,
        APPEND,
        &["-r", &repo, "backup", src.to_str().unwrap()],
    )
    .success();
    assert!(
        files(&storage.join("locks")).is_empty(),
        "{:?}",
        files(&storage)
    );
    let r = cairn_as(
        &server,
        READ,
        &["-r", &repo, "backup", src.to_str().unwrap()],
    );
    r.failed_cleanly();
    assert!(
        r.stderr.contains("backup needs the append role"),
        "{}",
        r.stderr
    );

    // Restore with a read token.
    let out = base.path().join("out");
    cairn_as(
        &server,
        READ,
        &[
            "-r",
            &repo,
            "restore",
            "latest",
            "--target",
            out.to_str().unwrap(),
        ],
    )
    .success();
    let restored = walk(&out)
        .into_iter()
        .find(|p| p.ends_with("a.bin"))
        .expect("a.bin restored");
    assert!(std::fs::read(restored).unwrap() == std::fs::read(src.join("a.bin")).unwrap());

    // Forget with an append token: refused before anything is written.
    let before = files(&storage);
    let r = cairn_as(
        &server,
        APPEND,
        &["-r", &repo, "forget", "--keep-last", "1"],
    );
    r.failed_cleanly();
    assert!(
        r.stderr.contains("forget needs the admin role") && r.stderr.contains("append role"),
        "{}",
        r.stderr
    );
    assert_eq!(files(&storage), before);
    for cmd in [&["prune"][..], &["key", "add"][..]] {
        let mut args = vec!["-r", repo.as_str()];
        args.extend_from_slice(cmd);
        let r = cairn_as(&server, APPEND, &args);
        r.failed_cleanly();
        assert!(r.stderr.contains("needs the admin role"), "{}", r.stderr);
    }

    // Admin forgets, prunes and checks every byte.
    cairn_as(&server, ADMIN, &["-r", &repo, "forget", "--keep-last", "1"]).success();
    cairn_as(&server, ADMIN, &["-r", &repo, "prune"]).success();
    cairn_as(&server, ADMIN, &["-r", &repo, "check", "--read-data"]).success();
    assert!(files(&storage.join("exclusive-locks")).is_empty());
    let snaps = cairn_as(&server, READ, &["-r", &repo, "--json", "snapshots"]);
    snaps.success();
    let v: serde_json::Value = serde_json::from_str(&snaps.stdout).unwrap();
    assert_eq!(v.as_array().map(Vec::len), Some(1));

    // Metrics: valid exposition, counting what happened.
    let (status, text) = plain_get(server.metrics.expect("metrics"), "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(
        text.contains(
            r#"cairn_server_requests_total{role="append",kind="data",op="create",code="201"}"#
        ),
        "{text}"
    );
    assert!(
        text.contains("cairn_server_repository_bytes{prefix=\"\"}"),
        "{text}"
    );
    assert!(
        text.contains("cairn_server_oldest_lock_age_seconds"),
        "{text}"
    );
    let promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    match promtool {
        Ok(mut p) => {
            use std::io::Write;
            p.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
            let o = p.wait_with_output().unwrap();
            assert!(
                o.status.success(),
                "promtool: {}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
        }
        Err(e) => panic!("promtool is needed (scripts/test-services.sh installs it): {e}"),
    }
    assert_eq!(
        plain_get(server.metrics.unwrap(), "/healthz").unwrap().0,
        200
    );
}

#[test]
fn sigterm_stops_the_server_cleanly() {
    let base = tempdir();
    let mut server = Server::start(
        &base.path().join("storage"),
        &base.path().join("srv"),
        Options::default(),
    );
    let status = server.terminate().expect("exit status");
    assert!(status.success(), "{status:?}");
    wait_for(10, "the shutdown log line", || {
        server.log_text().contains("shutting down")
    });
}

/// The ids of the snapshots whose recorded time starts with `prefix`.
fn snapshots_claiming(server: &Server, repo: &str, prefix: &str) -> Vec<String> {
    let out = cairn_as(server, READ, &["-r", repo, "--json", "snapshots"]);
    out.success();
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .filter(|s| s["time"].as_str().unwrap().starts_with(prefix))
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

/// Sets a stored file's modification time `ago` into the past (as if stored then).
fn backdate(path: &Path, ago: Duration) {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(std::time::SystemTime::now() - ago).unwrap();
}

/// The issue's five protections, end to end through a real server: what a node holding an
/// append token (and, where said, the password) can do must not destroy history or stop
/// maintenance, and every command names what it passed over.
#[test]
fn an_append_client_cannot_destroy_history_or_stop_maintenance() {
    use cairn_repo_format::lock::{Lock, LockKind};
    use cairn_repo_format::object::ObjectKind;
    use cairn_repo_format::{FileKind, Repository};

    let base = tempdir();
    let (storage, server) = start_in(base.path(), &[]);
    let repo = server.location("");
    let run = |token: &str, args: &[&str]| {
        let mut all = vec!["-r", repo.as_str()];
        all.extend_from_slice(args);
        cairn_as(&server, token, &all)
    };
    let src = base.path().join("src");
    let src_arg = src.to_str().unwrap();
    std::fs::create_dir_all(&src).unwrap();
    write_random_file(&src.join("a.bin"), 2 << 20, 21);
    write_random_file(&src.join("old.bin"), 1 << 20, 22);
    run(ADMIN, &["init", "--kdf-memory", "64"]).success();
    run(APPEND, &["backup", "--host", "db-0", src_arg]).success();

    // (5) Random bytes, named by their hash, posted without the password as an index file
    // and a snapshot: the server stores them (it cannot tell), every reader names them.
    let http = Http::new(&server);
    let mut junk = Vec::new();
    for (kind, seed) in [("index", 1u8), ("snapshots", 2)] {
        let bytes: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 ^ seed)
            .collect();
        let name = format!("{kind}/{}", id_of(&bytes));
        assert_eq!(
            http.status("POST", &format!("/{name}"), APPEND, Some(bytes)),
            201
        );
        junk.push(name);
    }
    let (junk_index, junk_snapshot) = (junk[0].clone(), junk[1].clone());

    // (4) A compromised node (append token and password) claims times: a snapshot from the
    // far future and one from the past, stored now. Then the real next backup, from another
    // node.
    for t in ["2099-01-01T00:00:00Z", "2001-01-01T00:00:00Z"] {
        run(APPEND, &["backup", "--host", "db-0", "--time", t, src_arg])
            .success()
            .stderr_has(&junk_index);
    }
    std::fs::remove_file(src.join("old.bin")).unwrap();
    write_file(&src.join("b.txt"), b"the real second backup");
    run(APPEND2, &["backup", "--host", "db-0", src_arg])
        .success()
        .stderr_has(&junk_index);
    let this_year = chrono::Utc::now().format("%Y").to_string();
    let real = snapshots_claiming(&server, &repo, &this_year);
    assert_eq!(real.len(), 2, "{real:?}");
    let forged: Vec<String> = ["2099", "2001"]
        .iter()
        .flat_map(|y| snapshots_claiming(&server, &repo, y))
        .collect();
    assert_eq!(forged.len(), 2);
    // `latest` is the real backup stored last, not the one claiming 2099.
    let out = run(READ, &["cat", "snapshot", "latest"]);
    out.success();
    let latest: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert!(
        latest["time"].as_str().unwrap().starts_with(&this_year),
        "{latest}"
    );

    // Trusting the claims, --keep-daily 1 would keep only the forgery from 2099.
    let plan = |extra: &[&str]| {
        let mut args = vec!["--json", "forget", "--dry-run"];
        args.extend_from_slice(extra);
        let out = run(ADMIN, &args);
        out.success();
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        let kept: Vec<String> = v["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["keep"] == true)
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect();
        (kept, out.stderr.clone())
    };
    let (kept, _) = plan(&["--keep-daily", "1", "--trust-snapshot-times"]);
    assert_eq!(kept, [forged[0].clone()]);
    // Judged by the storage's times, the forgeries land today, and the newest real
    // snapshot is kept; each forgery is named.
    let (kept, stderr) = plan(&["--keep-daily", "1"]);
    let newest_real = snapshots_claiming(&server, &repo, &this_year)
        .into_iter()
        .last()
        .unwrap();
    assert_eq!(kept, std::slice::from_ref(&newest_real), "{stderr}");
    for f in &forged {
        assert!(
            stderr.contains(&format!("snapshots/{f}"))
                && stderr.contains("judged by the time it was stored"),
            "{stderr}"
        );
    }
    // --keep-within counts from now at the latest: the future claim cannot move it.
    let (kept, _) = plan(&["--keep-within", "1d", "--trust-snapshot-times"]);
    for r in &real {
        assert!(
            kept.contains(r),
            "{r} not kept within a day of now: {kept:?}"
        );
    }
    // A policy that would leave a group empty is refused, naming it; nothing is removed.
    let before = files(&storage.join("snapshots"));
    let out = run(ADMIN, &["forget", "--keep-tag", "none-has-this"]);
    out.failed_cleanly();
    assert!(
        out.stderr.contains("every snapshot of 1 group") && out.stderr.contains("host db-0"),
        "{}",
        out.stderr
    );
    assert_eq!(files(&storage.join("snapshots")), before);

    // (3) Locks claiming the future, written by the compromised node through the server.
    let rest_repo = Repository::open(Arc::new(rest(&server, "", APPEND)), PASSWORD.as_bytes())
        .expect("the append client opens the repository");
    let mut forged_lock = Lock::new(LockKind::Prune);
    forged_lock.started = "2000-01-01T00:00:00Z".parse().unwrap();
    forged_lock.time = "2099-01-01T00:00:00Z".parse().unwrap();
    // Where prune locks live, an append token may not write.
    assert!(rest_repo.write_lock(&forged_lock).is_err());
    assert!(files(&storage.join("exclusive-locks")).is_empty());
    // In locks/, a prune lock stops no prune; a backup lock dated in the future holds back
    // the deletion of condemned packs only while its object is recent.
    let json = |l: &Lock| serde_json::to_vec(l).unwrap();
    let fake_prune = rest_repo
        .save_object(FileKind::Lock, ObjectKind::Lock, &json(&forged_lock))
        .unwrap();
    forged_lock.kind = LockKind::Backup;
    let fake_backup = rest_repo
        .save_object(FileKind::Lock, ObjectKind::Lock, &json(&forged_lock))
        .unwrap();

    // Forget for real. Prune goes on beside the junk, naming it, but a snapshot it cannot
    // read may refer to anything, so it deletes nothing.
    run(ADMIN, &["forget", "--keep-daily", "1"]).success();
    let packs = files(&storage.join("data"));
    run(ADMIN, &["prune", "--max-unused", "0%"])
        .success()
        .stderr_has(&junk_index)
        .stderr_has(&junk_snapshot);
    assert_eq!(files(&storage.join("data")), packs);
    // The administrator removes the junk snapshot by its name, and prunes everything unused:
    // the old packs are condemned, and wait for the lock that claims to be a backup started
    // in 2000.
    let junk_id = junk_snapshot.trim_start_matches("snapshots/");
    run(ADMIN, &["forget", junk_id]).success();
    let out = run(ADMIN, &["prune", "--max-unused", "0%"]);
    out.success()
        .stderr_has(&junk_index)
        .stderr_has(&format!("locks/{}", fake_backup.to_hex()));
    assert!(
        out.stderr.contains("judged by the time it was stored"),
        "{}",
        out.stderr
    );
    let condemned = files(&storage.join("condemned"));
    assert!(
        !condemned.is_empty(),
        "the condemned packs wait for the lock"
    );
    // Two hours later by the storage, the lock's holder is evidently gone: the next prune
    // deletes them.
    for id in [&fake_prune, &fake_backup] {
        backdate(
            &storage.join("locks").join(id.to_hex()),
            Duration::from_secs(2 * 3600),
        );
    }
    let out = run(ADMIN, &["prune"]);
    out.success();
    assert!(
        files(&storage.join("condemned")).is_empty(),
        "{:?}\n{}",
        files(&storage),
        out.stderr
    );

    // The real history restores byte for byte with a read token, and check names exactly
    // the two junk objects (and the forged locks' are only stale).
    let out_dir = base.path().join("out");
    run(
        READ,
        &[
            "restore",
            &newest_real,
            "--target",
            out_dir.to_str().unwrap(),
        ],
    )
    .success();
    for name in ["a.bin", "b.txt"] {
        let restored = walk(&out_dir)
            .into_iter()
            .find(|p| p.ends_with(name))
            .unwrap_or_else(|| panic!("{name} restored"));
        assert!(std::fs::read(restored).unwrap() == std::fs::read(src.join(name)).unwrap());
    }
    let out = run(ADMIN, &["check", "--read-data"]);
    out.expect_code(1).stdout_has(&junk_index);
    assert!(!out.stdout.contains("snapshots/"), "{}", out.stdout);
    assert!(!out.stdout.contains("missing"), "{}", out.stdout);
    // An admin's unlock clears the stale forged locks.
    run(ADMIN, &["unlock"]).success();
    assert!(files(&storage.join("locks")).is_empty());
}

/// The server's count of answers with `code`, from `/metrics` (0 when none yet).
fn answers_with(server: &Server, code: u16) -> u64 {
    let (_, text) = plain_get(server.metrics.expect("metrics"), "/metrics").unwrap();
    text.lines()
        .filter(|l| {
            l.starts_with("cairn_server_requests_total{") && l.contains(&format!("code=\"{code}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[test]
fn requests_past_the_limit_get_429_and_clients_retry_them() {
    let base = tempdir();
    let (_, server) = start_in(base.path(), &["--max-requests", "1"]);
    let repo = server.location("");
    cairn_as(&server, ADMIN, &["-r", &repo, "init", "--kdf-memory", "64"]).success();
    // One upload in flight, its body stalled: it holds the only request slot.
    let body = vec![7u8; 50_000];
    let id = id_of(&body);
    let rt = runtime();
    let mut stalled = rt.block_on(async {
        let mut c = raw_tls(&server).await;
        let head = format!(
            "POST /index/{id} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {APPEND}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        c.write_all(head.as_bytes()).await.unwrap();
        c.write_all(&body[..1000]).await.unwrap();
        c.flush().await.unwrap();
        c
    });
    let h = Http::new(&server);
    let r = wait_until_answered(&h, 429);
    assert_eq!(
        r.headers.get("retry-after").and_then(|v| v.to_str().ok()),
        Some("1")
    );
    // A `cairn` command meets 429 too, and retries: it finishes once the slot frees.
    let seen = answers_with(&server, 429);
    let cmd = {
        let (ca, repo) = (server.ca(), repo.clone());
        std::thread::spawn(move || {
            run_cairn_with_env(
                &[
                    "--cacert",
                    ca.to_str().unwrap(),
                    "-r",
                    &repo,
                    "--json",
                    "snapshots",
                ],
                Some(PASSWORD),
                RunAs::Me,
                &[("CAIRN_SERVER_TOKEN".to_string(), READ.to_string())],
            )
        })
    };
    wait_for(30, "the command to be answered 429", || {
        answers_with(&server, 429) > seen
    });
    rt.block_on(async {
        stalled.write_all(&body[1000..]).await.unwrap();
        stalled.flush().await.unwrap();
        let mut head = [0u8; 12];
        stalled.read_exact(&mut head).await.unwrap();
        assert_eq!(&head[9..12], b"201", "{:?}", String::from_utf8_lossy(&head));
    });
    let out = cmd.join().unwrap();
    out.success();
    assert_eq!(out.stdout.trim(), "[]", "{}", out.stdout);
    assert_eq!(h.status("GET", &format!("/index/{id}"), READ, None), 200);
}

/// Asks `GET /snapshots/` until the answer has `status` (the server's accept loop and the
/// stalled request race the first ask).
fn wait_until_answered(h: &Http, status: u16) -> Resp {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = h.req("GET", "/snapshots/", Some(READ), None);
        if r.status == status || Instant::now() > deadline {
            assert_eq!(r.status, status, "{}", String::from_utf8_lossy(&r.body));
            return r;
        }
    }
}

/// Starts `cairn backup` of `src` as host `host` through the server with `token`.
fn spawn_backup(
    server: &Server,
    repo: &str,
    token: &str,
    host: &str,
    src: &Path,
) -> std::process::Child {
    std::process::Command::new(cairn_bin())
        .args([
            "--cacert",
            server.ca().to_str().unwrap(),
            "-r",
            repo,
            "backup",
            "--host",
            host,
        ])
        .arg(src)
        .env("CAIRN_PASSWORD", PASSWORD)
        .env("CAIRN_SERVER_TOKEN", token)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn cairn backup")
}

/// Three nodes back up at once through the server (append tokens), twice; a read token
/// restores each volume byte for byte; an admin forgets the first round and prunes, and
/// `check --read-data` is clean. `prefix` and the tokens choose the repository.
fn several_nodes_through_the_server(
    server: &Server,
    base: &Path,
    prefix: &str,
    appends: [&str; 3],
    read: &str,
    admin: &str,
) {
    let repo = server.location(prefix);
    let run = |token: &str, args: &[&str]| {
        let mut all = vec!["-r", repo.as_str()];
        all.extend_from_slice(args);
        cairn_as(server, token, &all)
    };
    // Three volumes sharing a file (deduplicated across nodes) and each with its own data.
    let srcs: Vec<_> = (0..3u64)
        .map(|i| {
            let src = base.join(format!("vol-{i}"));
            std::fs::create_dir_all(src.join("sub")).unwrap();
            write_random_file(&src.join("shared.bin"), 3 << 20, 99);
            write_random_file(&src.join("own.bin"), (1 << 20) + i * 4099, 100 + i);
            write_file(
                &src.join("sub/note.txt"),
                format!("volume {i}\n").as_bytes(),
            );
            src
        })
        .collect();
    for round in 0..2u64 {
        if round == 1 {
            for (i, src) in srcs.iter().enumerate() {
                write_random_file(&src.join("own.bin"), 1 << 20, 200 + i as u64);
            }
        }
        let children: Vec<_> = srcs
            .iter()
            .enumerate()
            .map(|(i, src)| spawn_backup(server, &repo, appends[i], &format!("node-{i}"), src))
            .collect();
        for (i, c) in children.into_iter().enumerate() {
            let out = c.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "round {round}, node {i}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    for (i, src) in srcs.iter().enumerate() {
        let target = base.join(format!("restored-{i}"));
        let host = format!("node-{i}");
        run(
            read,
            &[
                "restore",
                "latest",
                "--host",
                &host,
                "--target",
                target.to_str().unwrap(),
            ],
        )
        .success();
        assert_same_tree(src, &target);
    }
    let out = run(admin, &["forget", "--keep-last", "1", "--prune"]);
    out.success();
    let snaps = run(read, &["--json", "snapshots"]);
    snaps.success();
    let v: serde_json::Value = serde_json::from_str(&snaps.stdout).unwrap();
    assert_eq!(v.as_array().map(Vec::len), Some(3), "{}", snaps.stdout);
    run(admin, &["check", "--read-data"]).success();
    // A read token still cannot write.
    let again = base.join("again");
    std::fs::create_dir_all(&again).unwrap();
    run(read, &["backup", again.to_str().unwrap()]).failed_cleanly();
}

#[test]
fn several_nodes_back_up_at_once_through_the_server_into_a_local_directory() {
    let base = tempdir();
    let (storage, server) = start_in(base.path(), &[]);
    cairn_as(
        &server,
        ADMIN,
        &["-r", &server.location(""), "init", "--kdf-memory", "64"],
    )
    .success();
    several_nodes_through_the_server(
        &server,
        base.path(),
        "",
        [APPEND, APPEND2, APPEND],
        READ,
        ADMIN,
    );
    assert!(
        files(&storage.join("locks")).is_empty(),
        "{:?}",
        files(&storage)
    );
}

#[test]
fn several_nodes_back_up_at_once_through_the_server_into_azurite() {
    let az = cairn_e2e::azurite::Azurite::start();
    let base = tempdir();
    // `init` directly on the storage creates the container; the server then fronts it, and
    // the repository lives at the prefix `ns1` that the ns1 tokens reach.
    run_cairn_with_env(
        &[
            "-r",
            "azure://through-server/ns1",
            "init",
            "--kdf-memory",
            "64",
        ],
        Some(PASSWORD),
        RunAs::Me,
        &az.env(),
    )
    .success();
    let server = Server::start(
        &base.path().join("unused"),
        &base.path().join("srv"),
        Options {
            storage_url: Some("azure://through-server".into()),
            env: az.env(),
            ..Default::default()
        },
    );
    several_nodes_through_the_server(
        &server,
        base.path(),
        "ns1",
        [NS1_APPEND, NS1_APPEND, NS1_APPEND],
        NS1_READ,
        NS1_ADMIN,
    );
    // Every object is in the container under ns1/, and no lock is left.
    let b = az.backend("through-server", "ns1");
    let mut locks = 0;
    cairn_repo_format::Backend::list(&b, "locks/", &mut |_| locks += 1).unwrap();
    assert_eq!(locks, 0);
}

#[test]
fn http2_trust_an_empty_401_and_a_malformed_tokens_file_on_reload() {
    let base = tempdir();
    let storage = base.path().join("storage");
    let srv = base.path().join("srv");
    let server = Server::start(&storage, &srv, Options::default());
    // HTTP/2 is negotiated by ALPN.
    let rt = runtime();
    let alpn = rt.block_on(async {
        let tls = raw_tls_offering(&server, vec![b"h2".to_vec(), b"http/1.1".to_vec()]).await;
        tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)
    });
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));

    // No token, or an unknown one: 401 with an empty body.
    let h = Http::new(&server);
    for token in [None, Some("not-a-token-at-all-0000")] {
        let r = h.send("GET", "/snapshots/", token, None, &[]).unwrap();
        assert_eq!(r.status, 401);
        assert!(r.body.is_empty(), "{:?}", String::from_utf8_lossy(&r.body));
        assert_eq!(
            r.headers
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok()),
            Some("Bearer")
        );
    }

    // The test CA is not trusted by default: without --cacert the command fails cleanly,
    // naming the certificate problem; with it, it works.
    let repo = server.location("");
    cairn_as(&server, ADMIN, &["-r", &repo, "init", "--kdf-memory", "64"]).success();
    let out = run_cairn_with_env(
        &["-r", &repo, "snapshots"],
        Some(PASSWORD),
        RunAs::Me,
        &[("CAIRN_SERVER_TOKEN".to_string(), READ.to_string())],
    );
    out.failed_cleanly();
    assert!(
        out.stderr.to_lowercase().contains("certificate"),
        "{}",
        out.stderr
    );
    cairn_as(&server, READ, &["-r", &repo, "snapshots"]).success();

    // A tokens file that does not load leaves the previous tokens in force.
    std::fs::write(
        srv.join("tokens"),
        "too-short admin\nno-role-token-0123456789\n",
    )
    .unwrap();
    wait_for(30, "the failed reload to be logged", || {
        server.log_text().contains("tokens file not reloaded")
    });
    assert_eq!(h.status("GET", "/", ADMIN, None), 200);
    assert_eq!(h.status("GET", "/", READ, None), 200);
    assert!(!server.log_text().contains(ADMIN), "a token was logged");
}

#[test]
fn a_backup_survives_a_server_killed_and_restarted_under_it() {
    let base = tempdir();
    let (storage, mut server) = start_in(base.path(), &[]);
    let repo = server.location("");
    cairn_as(&server, ADMIN, &["-r", &repo, "init", "--kdf-memory", "64"]).success();
    let src = base.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..4u64 {
        write_random_file(&src.join(format!("f{i}.bin")), 12 << 20, 300 + i);
    }
    // Slowed to 8 MiB/s, so that the server dies while uploads are under way.
    let mut child = std::process::Command::new(cairn_bin())
        .args(["--cacert", server.ca().to_str().unwrap(), "-r", &repo])
        .args(["--limit-upload", "8192", "backup", "--host", "n"])
        .arg(&src)
        .env("CAIRN_PASSWORD", PASSWORD)
        .env("CAIRN_SERVER_TOKEN", APPEND)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(60, "the first pack and an upload in progress", || {
        let f = files(&storage);
        f.iter().any(|f| f.starts_with("data/")) && f.iter().any(|f| f.contains(".tmp-"))
    });
    assert!(
        child.try_wait().unwrap().is_none(),
        "the backup was still running"
    );
    server.kill();
    assert!(
        files(&storage).iter().all(|f| !f.starts_with("snapshots/")),
        "killed before the snapshot"
    );
    server.restart();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the backup's retries carried it over the restart: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    cairn_as(&server, ADMIN, &["-r", &repo, "check", "--read-data"]).success();
    let target = base.path().join("out");
    cairn_as(
        &server,
        READ,
        &[
            "-r",
            &repo,
            "restore",
            "latest",
            "--target",
            target.to_str().unwrap(),
        ],
    )
    .success();
    assert_same_tree(&src, &target);
}
