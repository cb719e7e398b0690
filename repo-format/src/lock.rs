//! Locks (`locks/<id>`): sealed JSON naming who is working on the repository and since when.
//!
//! Cairn has no lock that a backup waits for. A backup writes a *shared* lock before it loads
//! the index and removes it after its snapshot is stored; it refreshes the lock (a new object,
//! then the old one deleted) every [`REFRESH`]. A prune writes an *exclusive* lock so that two
//! prunes never run at once, and it reads the shared locks to learn which backups may still
//! refer to packs it set aside (see `docs/design.md`, "Garbage collection"). A lock not
//! refreshed for [`STALE_AFTER`] belongs to a process that died; `cairn unlock` removes those.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// How often a running process rewrites its lock.
pub const REFRESH: Duration = Duration::from_secs(5 * 60);
/// A lock older than this was left by a process that is gone.
pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);

/// What the lock holder is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockKind {
    /// A backup (shared: any number at once).
    Backup,
    /// A prune (exclusive among prunes; backups go on).
    Prune,
}

/// A lock as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    /// When it was written (refreshes write a new lock with a new time).
    pub time: DateTime<Utc>,
    /// When the holder started (unchanged by refreshes).
    pub started: DateTime<Utc>,
    /// Shared or exclusive.
    pub kind: LockKind,
    /// Host of the holder.
    pub hostname: String,
    /// User of the holder.
    pub username: String,
    /// Process id of the holder.
    pub pid: u32,
}

impl Lock {
    /// A new lock for this process.
    pub fn new(kind: LockKind) -> Lock {
        let now = Utc::now();
        Lock {
            time: now,
            started: now,
            kind,
            hostname: crate::key::hostname(),
            username: crate::key::username(),
            pid: std::process::id(),
        }
    }

    /// Whether its holder stopped refreshing it long enough ago to be gone.
    pub fn is_stale(&self, now: DateTime<Utc>) -> bool {
        (now - self.time).to_std().unwrap_or_default() > STALE_AFTER
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staleness_follows_the_last_refresh() {
        let mut l = Lock::new(LockKind::Backup);
        let now = l.time;
        assert!(!l.is_stale(now));
        l.time = now - chrono::Duration::minutes(31);
        assert!(l.is_stale(now));
        l.time = now + chrono::Duration::minutes(5);
        assert!(!l.is_stale(now), "a clock ahead of ours is not stale");
    }
}
