//! An in-process fake Kubernetes API server for the agent's tests: no API server can run on
//! these machines. It speaks the real JSON (k8s-openapi types) over real HTTP on 127.0.0.1,
//! for what the agent uses:
//!
//! - `GET /api/v1/pods` list and watch, with the `spec.nodeName` field selector applied by the
//!   server, resourceVersions, bookmarks, and `410 Gone` (an ERROR event) for a watch from a
//!   compacted resourceVersion;
//! - `GET` of PVCs; `PATCH` of pods (annotations);
//! - `POST` and `PATCH` of `events.k8s.io/v1` Events;
//! - exec over WebSocket (`v4.channel.k8s.io`): the test supplies what the command does.
//!
//! The test drives it: [`FakeKube::put_pod`], [`FakeKube::delete_pod`],
//! [`FakeKube::break_watches`], [`FakeKube::compact`], and waits on what the agent does with
//! [`FakeKube::wait_event`] (a condition variable, never a sleep).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use serde_json::{Value, json};
use tokio::sync::Notify;

/// What an exec call asked for.
#[derive(Clone, Debug)]
pub struct ExecCall {
    /// Namespace.
    pub namespace: String,
    /// Pod.
    pub pod: String,
    /// Container.
    pub container: String,
    /// The command.
    pub command: Vec<String>,
}

/// What a test's exec handler returns: the exit code and stderr.
pub type ExecHandler = Arc<dyn Fn(&ExecCall) -> (i32, String) + Send + Sync>;

#[derive(Default)]
struct Inner {
    rv: u64,
    pods: BTreeMap<(String, String), Pod>,
    pvcs: BTreeMap<(String, String), PersistentVolumeClaim>,
    /// Every pod change: resourceVersion, type, object.
    log: Vec<(u64, &'static str, Pod)>,
    /// Watches from a resourceVersion below this get 410.
    compacted: u64,
    /// Bumped to end every open watch.
    generation: u64,
    events: Vec<Value>,
    requests: Vec<String>,
    execs: Vec<ExecCall>,
    exec: Option<ExecHandler>,
}

struct State {
    inner: Mutex<Inner>,
    /// Wakes watch streams.
    notify: Notify,
    /// Wakes tests waiting for events or exec calls.
    changed: Condvar,
}

impl State {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn touched(&self) {
        self.notify.notify_waiters();
        self.changed.notify_all();
    }
}

/// A running fake API server.
pub struct FakeKube {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    state: Arc<State>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeKube {
    /// Starts a server on a free port.
    pub fn start() -> FakeKube {
        let state = Arc::new(State {
            inner: Mutex::new(Inner {
                rv: 1,
                ..Default::default()
            }),
            notify: Notify::new(),
            changed: Condvar::new(),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let st = state.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                loop {
                    tokio::select! {
                        _ = &mut rx => break,
                        conn = listener.accept() => {
                            let Ok((stream, _)) = conn else { continue };
                            let st = st.clone();
                            tokio::spawn(async move {
                                let service = hyper::service::service_fn(move |req| {
                                    let st = st.clone();
                                    async move { Ok::<_, Infallible>(handle(st, req).await) }
                                });
                                let _ = hyper::server::conn::http1::Builder::new()
                                    .serve_connection(TokioIo::new(stream), service)
                                    .with_upgrades()
                                    .await;
                            });
                        }
                    }
                }
                // End open watches so their connections close.
                st.lock().generation += 1;
                st.touched();
            });
        });
        FakeKube {
            url,
            state,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    /// Writes a kubeconfig for this server into `dir` and returns its path.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\ncurrent-context: fake\nusers:\n- name: fake\n  user:\n    token: fake-token\n",
            self.url
        );
        std::fs::write(&path, text).expect("kubeconfig");
        path
    }

    /// Creates or replaces a pod (a UID and a resourceVersion are set).
    pub fn put_pod(&self, mut pod: Pod) {
        let key = key_of(&pod.metadata);
        let mut g = self.state.lock();
        g.rv += 1;
        let rv = g.rv;
        let existed = g.pods.get(&key).cloned();
        if pod.metadata.uid.is_none() {
            pod.metadata.uid = existed
                .as_ref()
                .and_then(|p| p.metadata.uid.clone())
                .or_else(|| Some(format!("uid-{}-{rv}", key.1)));
        }
        pod.metadata.resource_version = Some(rv.to_string());
        let ty = if existed.is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        g.pods.insert(key, pod.clone());
        g.log.push((rv, ty, pod));
        drop(g);
        self.state.touched();
    }

    /// The stored pod.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<Pod> {
        self.state
            .lock()
            .pods
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// Deletes a pod.
    pub fn delete_pod(&self, namespace: &str, name: &str) {
        let mut g = self.state.lock();
        let Some(mut pod) = g.pods.remove(&(namespace.to_string(), name.to_string())) else {
            return;
        };
        g.rv += 1;
        pod.metadata.resource_version = Some(g.rv.to_string());
        let rv = g.rv;
        g.log.push((rv, "DELETED", pod));
        drop(g);
        self.state.touched();
    }

    /// Creates or replaces a PVC.
    pub fn put_pvc(&self, pvc: PersistentVolumeClaim) {
        let key = key_of(&pvc.metadata);
        self.state.lock().pvcs.insert(key, pvc);
    }

    /// Ends every open watch (a dropped connection).
    pub fn break_watches(&self) {
        self.state.lock().generation += 1;
        self.state.touched();
    }

    /// Forgets history: a watch from any resourceVersion up to now gets 410 Gone.
    pub fn compact(&self) {
        let mut g = self.state.lock();
        g.compacted = g.rv + 1;
        g.log.clear();
    }

    /// What exec calls do from now on.
    pub fn on_exec(&self, f: impl Fn(&ExecCall) -> (i32, String) + Send + Sync + 'static) {
        self.state.lock().exec = Some(Arc::new(f));
    }

    /// Exec calls so far.
    pub fn execs(&self) -> Vec<ExecCall> {
        self.state.lock().execs.clone()
    }

    /// Events so far (`events.k8s.io/v1` JSON, series updates merged in).
    pub fn events(&self) -> Vec<Value> {
        self.state.lock().events.clone()
    }

    /// Requests so far, as `METHOD path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().requests.clone()
    }

    /// Waits until `pred` holds for the events so far, at most `timeout`; panics with the
    /// events seen otherwise.
    pub fn wait_events(&self, timeout: Duration, what: &str, pred: impl Fn(&[Value]) -> bool) {
        let deadline = std::time::Instant::now() + timeout;
        let mut g = self.state.lock();
        while !pred(&g.events) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                panic!(
                    "timed out waiting for {what}; events:\n{}",
                    g.events.iter().map(summary).collect::<Vec<_>>().join("\n")
                );
            }
            g = self
                .state
                .changed
                .wait_timeout(g, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `reason regarding: note` of an event, for messages.
pub fn summary(e: &Value) -> String {
    format!(
        "{} {} {}/{}: {}",
        e["type"].as_str().unwrap_or(""),
        e["reason"].as_str().unwrap_or(""),
        e["regarding"]["namespace"].as_str().unwrap_or(""),
        e["regarding"]["name"].as_str().unwrap_or(""),
        e["note"].as_str().unwrap_or("")
    )
}

fn key_of(m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> (String, String) {
    (
        m.namespace.clone().unwrap_or_else(|| "default".into()),
        m.name.clone().unwrap_or_default(),
    )
}

type Body = BoxBody<Bytes, Infallible>;

fn full(status: StatusCode, v: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(v.to_string())).boxed())
        .expect("response")
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    full(
        code,
        &json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "reason": reason, "code": code.as_u16()
        }),
    )
}

fn query(uri: &hyper::Uri) -> BTreeMap<String, String> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// Percent-decoding (and `+` as space) of a query component.
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The node a `fieldSelector` asks for; `Err` for a selector this server does not support
/// (as the real one answers 400 for an unknown field).
fn node_selector(q: &BTreeMap<String, String>) -> Result<Option<String>, String> {
    let Some(sel) = q.get("fieldSelector").filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let mut node = None;
    for term in sel.split(',') {
        let (k, v) = term
            .split_once("==")
            .or_else(|| term.split_once('='))
            .ok_or_else(|| format!("invalid field selector {term:?}"))?;
        if k != "spec.nodeName" {
            return Err(format!("field label not supported: {k}"));
        }
        node = Some(v.to_string());
    }
    Ok(node)
}

fn on_node(pod: &Pod, node: &Option<String>) -> bool {
    match node {
        None => true,
        Some(n) => pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(n.as_str()),
    }
}

async fn handle(st: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let uri = req.uri().clone();
    let path = uri.path().to_string();
    st.lock().requests.push(format!(
        "{} {}{}",
        req.method(),
        path,
        uri.query().map(|q| format!("?{q}")).unwrap_or_default()
    ));
    let q = query(&uri);
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (req.method().clone(), parts.as_slice()) {
        (Method::GET, ["api", "v1", "pods"]) => pods(st, &q).await,
        (
            Method::GET,
            [
                "api",
                "v1",
                "namespaces",
                ns,
                "persistentvolumeclaims",
                name,
            ],
        ) => {
            let pvc = st
                .lock()
                .pvcs
                .get(&(ns.to_string(), name.to_string()))
                .cloned();
            match pvc {
                Some(p) => full(StatusCode::OK, &serde_json::to_value(p).expect("json")),
                None => status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("persistentvolumeclaims \"{name}\" not found"),
                ),
            }
        }
        (Method::PATCH, ["api", "v1", "namespaces", ns, "pods", name]) => {
            let (ns, name) = (ns.to_string(), name.to_string());
            let body = body_json(req).await;
            let Some(mut pod) = st.lock().pods.get(&(ns.clone(), name.clone())).cloned() else {
                return status(StatusCode::NOT_FOUND, "NotFound", "pod not found");
            };
            if let Some(a) = body["metadata"]["annotations"].as_object() {
                let ann = pod
                    .metadata
                    .annotations
                    .get_or_insert_with(Default::default);
                for (k, v) in a {
                    ann.insert(k.clone(), v.as_str().unwrap_or_default().to_string());
                }
            }
            pod.metadata.uid = st.lock().pods[&(ns.clone(), name.clone())]
                .metadata
                .uid
                .clone();
            let fake = FakeKubeRef(st.clone());
            fake.put(pod.clone());
            full(StatusCode::OK, &serde_json::to_value(pod).expect("json"))
        }
        (Method::POST, ["apis", "events.k8s.io", "v1", "namespaces", _, "events"]) => {
            let body = body_json(req).await;
            st.lock().events.push(body.clone());
            st.touched();
            full(StatusCode::CREATED, &body)
        }
        (
            Method::PATCH,
            [
                "apis",
                "events.k8s.io",
                "v1",
                "namespaces",
                _,
                "events",
                name,
            ],
        ) => {
            let name = name.to_string();
            let body = body_json(req).await;
            let mut g = st.lock();
            let found = g
                .events
                .iter_mut()
                .rev()
                .find(|e| e["metadata"]["name"] == name.as_str());
            match found {
                Some(e) => {
                    merge(e, &body);
                    let out = e.clone();
                    drop(g);
                    st.touched();
                    full(StatusCode::OK, &out)
                }
                None => status(StatusCode::NOT_FOUND, "NotFound", "event not found"),
            }
        }
        (Method::GET, ["api", "v1", "namespaces", ns, "pods", name, "exec"]) => {
            let call = ExecCall {
                namespace: ns.to_string(),
                pod: name.to_string(),
                container: q.get("container").cloned().unwrap_or_default(),
                command: multi(&uri, "command"),
            };
            exec(st, req, call)
        }
        _ => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("the fake API server does not serve {path}"),
        ),
    }
}

/// A handle used by request handlers to store a pod as the test API does.
struct FakeKubeRef(Arc<State>);

impl FakeKubeRef {
    fn put(&self, pod: Pod) {
        let key = key_of(&pod.metadata);
        let mut g = self.0.lock();
        g.rv += 1;
        let rv = g.rv;
        let mut pod = pod;
        pod.metadata.resource_version = Some(rv.to_string());
        g.pods.insert(key, pod.clone());
        g.log.push((rv, "MODIFIED", pod));
        drop(g);
        self.0.touched();
    }
}

/// Every value of a repeated query parameter, in order.
fn multi(uri: &hyper::Uri, key: &str) -> Vec<String> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| decode(k) == key)
        .map(|(_, v)| decode(v))
        .collect()
}

fn merge(a: &mut Value, b: &Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b.clone(),
    }
}

async fn body_json(req: Request<Incoming>) -> Value {
    let bytes = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}

/// List, or watch, this server's pods.
async fn pods(st: Arc<State>, q: &BTreeMap<String, String>) -> Response<Body> {
    let node = match node_selector(q) {
        Ok(n) => n,
        Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", &e),
    };
    if q.get("watch").map(String::as_str) != Some("true")
        && q.get("watch").map(String::as_str) != Some("1")
    {
        let g = st.lock();
        let items: Vec<Value> = g
            .pods
            .values()
            .filter(|p| on_node(p, &node))
            .map(|p| serde_json::to_value(p).expect("json"))
            .collect();
        return full(
            StatusCode::OK,
            &json!({
                "kind": "PodList", "apiVersion": "v1",
                "metadata": { "resourceVersion": g.rv.to_string() },
                "items": items
            }),
        );
    }
    let from: u64 = q
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let bookmarks = q.get("allowWatchBookmarks").map(String::as_str) == Some("true");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|v| v.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(290));
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        let line = |v: Value| {
            let mut s = v.to_string();
            s.push('\n');
            Bytes::from(s)
        };
        let (generation, compacted) = {
            let g = st.lock();
            (g.generation, g.compacted)
        };
        if from < compacted {
            let gone = json!({ "type": "ERROR", "object": {
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!("too old resource version: {from} ({compacted})"),
                "reason": "Expired", "code": 410 } });
            let _ = tx.send(line(gone)).await;
            return;
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut seen = from;
        let mut bookmarked = false;
        loop {
            let notified = st.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (batch, rv, ended) = {
                let g = st.lock();
                let batch: Vec<Value> = g
                    .log
                    .iter()
                    .filter(|(rv, _, p)| *rv > seen && on_node(p, &node))
                    .map(|(_, ty, p)| json!({ "type": ty, "object": p }))
                    .collect();
                (batch, g.rv, g.generation != generation)
            };
            if ended {
                return;
            }
            for ev in batch {
                if tx.send(line(ev)).await.is_err() {
                    return;
                }
            }
            seen = rv;
            if bookmarks && !bookmarked {
                bookmarked = true;
                let bm = json!({ "type": "BOOKMARK", "object": {
                    "kind": "Pod", "apiVersion": "v1",
                    "metadata": { "resourceVersion": rv.to_string() } } });
                if tx.send(line(bm)).await.is_err() {
                    return;
                }
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(deadline) => return,
                _ = tx.closed() => return,
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .expect("response")
}

/// Answers an exec upgrade and runs the test's handler.
fn exec(st: Arc<State>, mut req: Request<Incoming>, call: ExecCall) -> Response<Body> {
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "exec needs a WebSocket upgrade",
        );
    };
    let offered = req
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if !offered.split(',').any(|p| p.trim() == "v4.channel.k8s.io") {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "no supported protocol offered",
        );
    }
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            tokio_tungstenite::tungstenite::protocol::Role::Server,
            None,
        )
        .await;
        let handler = {
            let mut g = st.lock();
            g.execs.push(call.clone());
            g.exec.clone()
        };
        st.touched();
        let (code, stderr) = match handler {
            Some(h) => {
                let call = call.clone();
                tokio::task::spawn_blocking(move || h(&call))
                    .await
                    .unwrap_or((1, "handler panicked".into()))
            }
            None => (0, String::new()),
        };
        use tokio_tungstenite::tungstenite::Message;
        if !stderr.is_empty() {
            let mut m = vec![2u8];
            m.extend_from_slice(stderr.as_bytes());
            let _ = ws.send(Message::Binary(m.into())).await;
        }
        let status = if code == 0 {
            json!({ "metadata": {}, "status": "Success" })
        } else {
            json!({ "metadata": {}, "status": "Failure",
                "message": format!("command terminated with non-zero exit code: error executing command, exit status {code}"),
                "reason": "NonZeroExitCode",
                "details": { "causes": [ { "reason": "ExitCode", "message": code.to_string() } ] } })
        };
        let mut m = vec![3u8];
        m.extend_from_slice(status.to_string().as_bytes());
        let _ = ws.send(Message::Binary(m.into())).await;
        let _ = ws.close(None).await;
        while let Some(Ok(_)) = ws.next().await {}
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("upgrade", "websocket")
        .header("connection", "Upgrade")
        .header("sec-websocket-accept", accept)
        .header("sec-websocket-protocol", "v4.channel.k8s.io")
        .body(Full::new(Bytes::new()).boxed())
        .expect("response")
}
