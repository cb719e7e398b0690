//! The agent's Prometheus metrics and health endpoints, served on `--metrics-listen`:
//! `/metrics` (text exposition format 0.0.4), `/healthz` (always 200 while the process
//! serves) and `/readyz` (200 once the pod watch has listed and the kubelet root passed its
//! check; 503 with the reason before).
//!
//! Series per volume identity are labelled `namespace` and `pvc` (the PVC's name, or
//! `<workload>/<volume>` for a volume that is not a PVC): one set per volume the node backs
//! up, so cardinality follows the volumes, never the backups.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};

/// Upper bounds of the backup duration histogram, in seconds.
const BUCKETS: [f64; 9] = [1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0];

/// Counters of one volume identity.
#[derive(Default, Clone)]
struct Volume {
    successes: u64,
    failures: u64,
    skips: u64,
    bytes_read: u64,
    bytes_added: u64,
    files: u64,
    last_success: Option<f64>,
    last_duration: f64,
    /// Seconds between two scheduled backups, when the agent backs the volume up.
    interval: Option<f64>,
}

#[derive(Default)]
struct Inner {
    volumes: BTreeMap<(String, String), Volume>,
    /// Cumulative counts per bucket, then +Inf; and the sum.
    buckets: [u64; BUCKETS.len() + 1],
    sum: f64,
}

/// What a finished backup adds.
pub enum Result {
    /// A snapshot was written.
    Success {
        /// Bytes read.
        bytes_read: u64,
        /// Bytes added to the repository.
        bytes_added: u64,
        /// Files in the snapshot.
        files: u64,
    },
    /// It failed.
    Failure,
    /// It was skipped.
    Skipped,
}

/// Shared between the daemon loop and the HTTP server.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
    running: AtomicU64,
    ready: AtomicBool,
    not_ready: Mutex<String>,
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A backup started.
    pub fn started(&self) {
        self.running.fetch_add(1, Ordering::Relaxed);
    }

    /// A backup of `namespace`/`pvc` ended after `seconds`.
    pub fn finished(&self, namespace: &str, pvc: &str, seconds: f64, r: Result) {
        self.running.fetch_sub(1, Ordering::Relaxed);
        let mut g = self.lock();
        let v = g
            .volumes
            .entry((namespace.to_string(), pvc.to_string()))
            .or_default();
        match r {
            Result::Success {
                bytes_read,
                bytes_added,
                files,
            } => {
                v.successes += 1;
                v.bytes_read += bytes_read;
                v.bytes_added += bytes_added;
                v.files = files;
                v.last_success = Some(chrono::Utc::now().timestamp_millis() as f64 / 1000.0);
                v.last_duration = seconds;
            }
            Result::Failure => v.failures += 1,
            Result::Skipped => v.skips += 1,
        }
        let slot = BUCKETS
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(BUCKETS.len());
        for b in &mut g.buckets[slot..] {
            *b += 1;
        }
        g.sum += seconds;
    }

    /// The agent backs up `namespace`/`pvc` every `interval` seconds; its last snapshot (from
    /// the repository, so that the series survives a restart of the agent) is `last`.
    pub fn scheduled(&self, namespace: &str, pvc: &str, interval: f64, last: Option<f64>) {
        let mut g = self.lock();
        let v = g
            .volumes
            .entry((namespace.to_string(), pvc.to_string()))
            .or_default();
        v.interval = Some(interval);
        if v.last_success.is_none() {
            v.last_success = last;
        }
    }

    /// Ready from now on.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Not ready, and why.
    pub fn set_not_ready(&self, why: String) {
        *self.not_ready.lock().unwrap_or_else(|p| p.into_inner()) = why;
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let g = self.lock();
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str, rows: &mut dyn FnMut(&mut String)| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            rows(&mut out);
        };
        let labels = |(ns, pvc): &(String, String)| {
            format!("namespace=\"{}\",pvc=\"{}\"", escape(ns), escape(pvc))
        };
        family(
            "cairn_agent_ready",
            "gauge",
            "1 once the pod watch has listed and the kubelet root passed its check.",
            &mut |o| {
                let _ = writeln!(
                    o,
                    "cairn_agent_ready {}",
                    self.ready.load(Ordering::Acquire) as u8
                );
            },
        );
        family(
            "cairn_backup_interval_seconds",
            "gauge",
            "Seconds between two scheduled backups of the volume (its schedule).",
            &mut |o| {
                for (k, v) in &g.volumes {
                    if let Some(i) = v.interval {
                        let _ = writeln!(o, "cairn_backup_interval_seconds{{{}}} {i}", labels(k));
                    }
                }
            },
        );
        family(
            "cairn_backups_running",
            "gauge",
            "Backups running on this node now.",
            &mut |o| {
                let _ = writeln!(
                    o,
                    "cairn_backups_running {}",
                    self.running.load(Ordering::Relaxed)
                );
            },
        );
        family(
            "cairn_backups_total",
            "counter",
            "Backups that ended, by volume and result (success, failure, skipped).",
            &mut |o| {
                for (k, v) in &g.volumes {
                    for (result, n) in [
                        ("success", v.successes),
                        ("failure", v.failures),
                        ("skipped", v.skips),
                    ] {
                        let _ = writeln!(
                            o,
                            "cairn_backups_total{{{},result=\"{result}\"}} {n}",
                            labels(k)
                        );
                    }
                }
            },
        );
        family(
            "cairn_backup_read_bytes_total",
            "counter",
            "Bytes read from volumes by successful backups.",
            &mut |o| {
                for (k, v) in &g.volumes {
                    let _ = writeln!(
                        o,
                        "cairn_backup_read_bytes_total{{{}}} {}",
                        labels(k),
                        v.bytes_read
                    );
                }
            },
        );
        family(
            "cairn_backup_added_bytes_total",
            "counter",
            "Bytes added to the repository by successful backups (after deduplication and compression).",
            &mut |o| {
                for (k, v) in &g.volumes {
                    let _ = writeln!(
                        o,
                        "cairn_backup_added_bytes_total{{{}}} {}",
                        labels(k),
                        v.bytes_added
                    );
                }
            },
        );
        family(
            "cairn_backup_files",
            "gauge",
            "Files in the volume's latest snapshot.",
            &mut |o| {
                for (k, v) in &g.volumes {
                    let _ = writeln!(o, "cairn_backup_files{{{}}} {}", labels(k), v.files);
                }
            },
        );
        family(
            "cairn_backup_last_success_timestamp_seconds",
            "gauge",
            "When the volume's last successful backup ended (Unix time; at start, its latest snapshot's time).",
            &mut |o| {
                for (k, v) in &g.volumes {
                    if let Some(t) = v.last_success {
                        let _ = writeln!(
                            o,
                            "cairn_backup_last_success_timestamp_seconds{{{}}} {t:.3}",
                            labels(k)
                        );
                    }
                }
            },
        );
        family(
            "cairn_backup_last_duration_seconds",
            "gauge",
            "How long the volume's last successful backup took.",
            &mut |o| {
                for (k, v) in &g.volumes {
                    if v.last_success.is_some() {
                        let _ = writeln!(
                            o,
                            "cairn_backup_last_duration_seconds{{{}}} {:.3}",
                            labels(k),
                            v.last_duration
                        );
                    }
                }
            },
        );
        family(
            "cairn_backup_duration_seconds",
            "histogram",
            "How long backups took, whatever their result.",
            &mut |o| {
                for (b, n) in BUCKETS.iter().zip(g.buckets) {
                    let _ = writeln!(o, "cairn_backup_duration_seconds_bucket{{le=\"{b}\"}} {n}");
                }
                let all = g.buckets[BUCKETS.len()];
                let _ = writeln!(
                    o,
                    "cairn_backup_duration_seconds_bucket{{le=\"+Inf\"}} {all}"
                );
                let _ = writeln!(o, "cairn_backup_duration_seconds_sum {:.3}", g.sum);
                let _ = writeln!(o, "cairn_backup_duration_seconds_count {all}");
            },
        );
        out
    }
}

/// Escapes a label value (backslash, quote, newline).
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Serves the endpoints on `addr` until the process ends.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let metrics = metrics.clone();
                        async move { Ok::<_, Infallible>(answer(&metrics, req.uri().path())) }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(())
}

fn answer(m: &Metrics, path: &str) -> Response<Full<Bytes>> {
    let (status, ctype, body) = match path {
        "/metrics" => (
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            m.render(),
        ),
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_string()),
        "/readyz" if m.ready.load(Ordering::Acquire) => {
            (StatusCode::OK, "text/plain", "ready\n".to_string())
        }
        "/readyz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            format!(
                "not ready: {}\n",
                m.not_ready.lock().unwrap_or_else(|p| p.into_inner())
            ),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_string(),
        ),
    };
    Response::builder()
        .status(status)
        .header("content-type", ctype)
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_one_series_set_per_volume() {
        let m = Metrics::default();
        m.started();
        m.finished(
            "db",
            "data-pg-0",
            2.5,
            Result::Success {
                bytes_read: 100,
                bytes_added: 40,
                files: 3,
            },
        );
        m.started();
        m.finished("db", "data-pg-0", 0.2, Result::Failure);
        m.started();
        m.finished("web", "web/cache \"x\"", 0.1, Result::Skipped);
        let text = m.render();
        assert!(
            text.contains(
                "cairn_backups_total{namespace=\"db\",pvc=\"data-pg-0\",result=\"success\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains(
            "cairn_backups_total{namespace=\"db\",pvc=\"data-pg-0\",result=\"failure\"} 1"
        ));
        assert!(text.contains("pvc=\"web/cache \\\"x\\\"\""), "{text}");
        assert!(
            text.contains("cairn_backup_duration_seconds_bucket{le=\"1\"} 2"),
            "{text}"
        );
        assert!(text.contains("cairn_backup_duration_seconds_bucket{le=\"5\"} 3"));
        assert!(text.contains("cairn_backup_duration_seconds_count 3"));
        assert!(text.contains("cairn_backups_running 0"));
        assert!(!text.contains("last_success_timestamp_seconds{namespace=\"web\""));
    }
}
