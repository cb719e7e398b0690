//! Limits: the largest object of each kind, the time limits on connections and requests,
//! and what the repositories hold ([`Usage`]: bytes per repository for `--max-size`, and the
//! locks with their times for the metrics). Usage is counted by listing the storage at start
//! and again every few minutes, and kept current in between from the server's own creates
//! and deletes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use cairn_repo_format::object::ObjectKind;
use cairn_repo_format::{Backend, BackendError, FileKind};

use crate::names;

/// Room for a sealed object's framing above its payload cap (flag, length, nonce, tag).
const SEAL_OVERHEAD: u64 = 64;
/// Locks are small JSON objects; anything larger is refused.
pub const MAX_LOCK: u64 = 4 << 10;
/// Key files are small JSON objects.
pub const MAX_KEY: u64 = 64 << 10;
/// A pack holds up to the largest `pack_size` (512 MiB) plus the blob that crossed it (a
/// tree blob is at most 64 MiB) and its header.
pub const MAX_PACK: u64 = (512 << 20) + (64 << 20) + (16 << 20);

/// The largest object of `kind` the server stores.
pub fn max_object(kind: FileKind) -> u64 {
    match kind {
        FileKind::Config => ObjectKind::Config.max_payload() + SEAL_OVERHEAD,
        FileKind::Key => MAX_KEY,
        FileKind::Snapshot => ObjectKind::Snapshot.max_payload() + SEAL_OVERHEAD,
        FileKind::Index => ObjectKind::Index.max_payload() + SEAL_OVERHEAD,
        FileKind::Condemned => ObjectKind::Condemned.max_payload() + SEAL_OVERHEAD,
        FileKind::Pack => MAX_PACK,
        FileKind::Lock | FileKind::ExclusiveLock => MAX_LOCK,
    }
}

/// Time limits and bounds on connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// A request's headers must arrive within this.
    pub headers: Duration,
    /// The TLS handshake must finish within this.
    pub handshake: Duration,
    /// A connection on which no byte moves for this long is dropped (a stalled upload body,
    /// a client that stopped reading, an idle keep-alive connection).
    pub idle: Duration,
    /// No request takes longer than this, body included.
    pub request: Duration,
    /// On SIGTERM, requests in flight get this long to finish.
    pub shutdown: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            headers: Duration::from_secs(10),
            handshake: Duration::from_secs(10),
            idle: Duration::from_secs(60),
            request: Duration::from_secs(30 * 60),
            shutdown: Duration::from_secs(25),
        }
    }
}

/// What the repositories behind the server hold.
#[derive(Default)]
pub struct Usage {
    inner: Mutex<UsageInner>,
}

#[derive(Default)]
struct UsageInner {
    /// Bytes per repository prefix (`a/b/`, or empty for the root).
    bytes: HashMap<String, u64>,
    /// Locks by storage name, with their storage times.
    locks: BTreeMap<String, SystemTime>,
    /// Whether a scan has finished.
    scanned: bool,
}

impl Usage {
    fn lock(&self) -> std::sync::MutexGuard<'_, UsageInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts everything in `backend` and replaces what was known.
    pub fn scan(&self, backend: &dyn Backend) -> Result<(), BackendError> {
        let mut bytes: HashMap<String, u64> = HashMap::new();
        let mut locks = BTreeMap::new();
        backend.list("", &mut |o| {
            let Some((prefix, kind, _)) = names::split_storage(&o.path) else {
                return;
            };
            *bytes.entry(names::prefix_dir(&prefix)).or_default() += o.size;
            if matches!(kind, FileKind::Lock | FileKind::ExclusiveLock) {
                locks.insert(o.path, o.mtime.unwrap_or_else(SystemTime::now));
            }
        })?;
        let mut u = self.lock();
        u.bytes = bytes;
        u.locks = locks;
        u.scanned = true;
        Ok(())
    }

    /// Whether the first scan finished.
    pub fn ready(&self) -> bool {
        self.lock().scanned
    }

    /// Bytes in the repository at `prefix_dir`.
    pub fn bytes(&self, prefix_dir: &str) -> u64 {
        self.lock().bytes.get(prefix_dir).copied().unwrap_or(0)
    }

    /// Bytes per repository.
    pub fn all_bytes(&self) -> Vec<(String, u64)> {
        let mut v: Vec<_> = self
            .lock()
            .bytes
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        v.sort();
        v
    }

    /// The oldest lock's age, if there is a lock.
    pub fn oldest_lock_age(&self, now: SystemTime) -> Option<Duration> {
        let u = self.lock();
        let oldest = u.locks.values().min()?;
        Some(now.duration_since(*oldest).unwrap_or_default())
    }

    /// Notes a stored object.
    pub fn added(&self, prefix_dir: &str, storage_name: &str, kind: FileKind, size: u64) {
        let mut u = self.lock();
        *u.bytes.entry(prefix_dir.to_string()).or_default() += size;
        if matches!(kind, FileKind::Lock | FileKind::ExclusiveLock) {
            u.locks.insert(storage_name.to_string(), SystemTime::now());
        }
    }

    /// Notes a deleted object of `size` bytes.
    pub fn removed(&self, prefix_dir: &str, storage_name: &str, size: u64) {
        let mut u = self.lock();
        if let Some(b) = u.bytes.get_mut(prefix_dir) {
            *b = b.saturating_sub(size);
        }
        u.locks.remove(storage_name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_kind() {
        assert_eq!(max_object(FileKind::Lock), 4096);
        assert!(max_object(FileKind::Pack) > 512 << 20);
        assert!(max_object(FileKind::Snapshot) > 16 << 20);
    }

    #[test]
    fn usage_counts_by_repository() {
        let b = cairn_repo_format::ObjectStoreBackend::memory();
        let id = "ab".repeat(32);
        b.put(
            &format!("ns1/locks/{id}"),
            bytes::Bytes::from_static(b"12345"),
        )
        .unwrap();
        b.put(&format!("snapshots/{id}"), bytes::Bytes::from_static(b"12"))
            .unwrap();
        b.put("stray", bytes::Bytes::from_static(b"1234567"))
            .unwrap();
        let u = Usage::default();
        assert!(!u.ready());
        u.scan(&b).unwrap();
        assert!(u.ready());
        assert_eq!(u.bytes("ns1/"), 5);
        assert_eq!(u.bytes(""), 2);
        assert!(u.oldest_lock_age(SystemTime::now()).is_some());
        u.removed("ns1/", &format!("ns1/locks/{id}"), 5);
        assert_eq!(u.bytes("ns1/"), 0);
        assert!(u.oldest_lock_age(SystemTime::now()).is_none());
    }
}
