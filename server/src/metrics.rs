//! Prometheus metrics, written out by hand in the text exposition format: requests, bytes
//! and errors by role, kind and operation; bytes stored per repository; the oldest lock's
//! age. Served on their own port (`--metrics-listen`) with `/healthz` and `/readyz`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::SystemTime;

use crate::limits::Usage;

/// What one request is counted under.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Labels {
    /// `read`, `append`, `admin`, or `none` for a request without a valid token.
    pub role: &'static str,
    /// The kind's directory name, `role`, `config`, or `none`.
    pub kind: &'static str,
    /// `list`, `get`, `create`, `delete`, or `none`.
    pub op: &'static str,
}

#[derive(Default, Clone, Copy)]
struct Counts {
    requests: u64,
    errors: u64,
    received: u64,
    sent: u64,
}

/// The server's counters.
#[derive(Default)]
pub struct Metrics {
    counts: Mutex<BTreeMap<(Labels, u16), Counts>>,
}

impl Metrics {
    /// Counts one finished request: its answer, and the body bytes received and sent.
    pub fn record(&self, l: Labels, status: u16, received: u64, sent: u64) {
        let mut m = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let c = m.entry((l, status)).or_default();
        c.requests += 1;
        if status >= 400 {
            c.errors += 1;
        }
        c.received += received;
        c.sent += sent;
    }

    /// The exposition text.
    pub fn render(&self, usage: &Usage) -> String {
        let counts = self
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut out = String::new();
        let mut by_labels: BTreeMap<Labels, Counts> = BTreeMap::new();
        for ((l, _), c) in &counts {
            let t = by_labels.entry(*l).or_default();
            t.errors += c.errors;
            t.received += c.received;
            t.sent += c.sent;
        }
        let lbl = |l: &Labels| format!("role=\"{}\",kind=\"{}\",op=\"{}\"", l.role, l.kind, l.op);
        out.push_str("# HELP cairn_server_requests_total Requests answered, by role, kind, operation and status code.\n");
        out.push_str("# TYPE cairn_server_requests_total counter\n");
        for ((l, code), c) in &counts {
            let _ = writeln!(
                out,
                "cairn_server_requests_total{{{},code=\"{code}\"}} {}",
                lbl(l),
                c.requests
            );
        }
        out.push_str(
            "# HELP cairn_server_errors_total Requests answered with a status of 400 or more.\n",
        );
        out.push_str("# TYPE cairn_server_errors_total counter\n");
        for (l, c) in &by_labels {
            let _ = writeln!(out, "cairn_server_errors_total{{{}}} {}", lbl(l), c.errors);
        }
        out.push_str("# HELP cairn_server_received_bytes_total Request body bytes received.\n");
        out.push_str("# TYPE cairn_server_received_bytes_total counter\n");
        for (l, c) in &by_labels {
            let _ = writeln!(
                out,
                "cairn_server_received_bytes_total{{{}}} {}",
                lbl(l),
                c.received
            );
        }
        out.push_str("# HELP cairn_server_sent_bytes_total Response body bytes sent.\n");
        out.push_str("# TYPE cairn_server_sent_bytes_total counter\n");
        for (l, c) in &by_labels {
            let _ = writeln!(
                out,
                "cairn_server_sent_bytes_total{{{}}} {}",
                lbl(l),
                c.sent
            );
        }
        out.push_str("# HELP cairn_server_repository_bytes Bytes stored per repository prefix.\n");
        out.push_str("# TYPE cairn_server_repository_bytes gauge\n");
        for (prefix, bytes) in usage.all_bytes() {
            let p = prefix.trim_end_matches('/');
            let _ = writeln!(
                out,
                "cairn_server_repository_bytes{{prefix=\"{p}\"}} {bytes}"
            );
        }
        out.push_str("# HELP cairn_server_oldest_lock_age_seconds Age of the oldest lock in any repository (0 with none).\n");
        out.push_str("# TYPE cairn_server_oldest_lock_age_seconds gauge\n");
        let age = usage
            .oldest_lock_age(SystemTime::now())
            .map_or(0.0, |d| d.as_secs_f64());
        let _ = writeln!(out, "cairn_server_oldest_lock_age_seconds {age:.3}");
        out
    }
}
