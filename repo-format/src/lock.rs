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
/// Added to [`STALE_AFTER`] when a lock is judged by the storage's own time of its object
/// rather than by the time it claims: the storage's clock and this host's may differ.
pub const STORAGE_CLOCK_MARGIN: Duration = Duration::from_secs(60 * 60);

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

    /// Whether its holder stopped refreshing it long enough ago to be gone: more than
    /// [`STALE_AFTER`] since the `time` it claims, or more than [`STALE_AFTER`] +
    /// [`STORAGE_CLOCK_MARGIN`] since `stored`, the storage's own time of the object (from the
    /// listing, when the storage has one). A holder refreshes by storing a new object, so a
    /// live lock's object is never old; the claimed time is the writer's word, and one dated
    /// in the future would otherwise stay live for ever.
    pub fn is_stale(&self, now: DateTime<Utc>, stored: Option<DateTime<Utc>>) -> bool {
        let older =
            |t: DateTime<Utc>, limit: Duration| (now - t).to_std().is_ok_and(|age| age > limit);
        older(self.time, STALE_AFTER)
            || stored.is_some_and(|s| older(s, STALE_AFTER + STORAGE_CLOCK_MARGIN))
    }

    /// Whether the time it claims is further in the future than clocks plausibly differ.
    pub fn claims_future(&self, now: DateTime<Utc>) -> bool {
        (self.time - now)
            .to_std()
            .is_ok_and(|ahead| ahead > STORAGE_CLOCK_MARGIN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staleness_follows_the_last_refresh() {
        let mut l = Lock::new(LockKind::Backup);
        let now = l.time;
        assert!(!l.is_stale(now, None));
        assert!(!l.is_stale(now, Some(now)));
        l.time = now - chrono::Duration::minutes(31);
        assert!(l.is_stale(now, None));
        assert!(
            l.is_stale(now, Some(now)),
            "the claimed time alone can make it stale"
        );
        l.time = now + chrono::Duration::minutes(5);
        assert!(!l.is_stale(now, None), "a clock ahead of ours is not stale");
        assert!(!l.claims_future(now));
    }

    #[test]
    fn a_lock_dated_in_the_future_goes_stale_by_its_storage_time() {
        let now = Utc::now();
        let mut l = Lock::new(LockKind::Prune);
        l.time = now + chrono::Duration::days(365 * 100);
        assert!(l.claims_future(now));
        assert!(
            !l.is_stale(now, None),
            "without a storage time, only its word counts"
        );
        assert!(!l.is_stale(now, Some(now - chrono::Duration::minutes(80))));
        assert!(
            l.is_stale(now, Some(now - chrono::Duration::minutes(91))),
            "stored 91 minutes ago: past 30 minutes plus the clock margin"
        );
        // Extreme claims never overflow.
        l.time = DateTime::<Utc>::MAX_UTC;
        assert!(l.is_stale(now, Some(DateTime::<Utc>::MIN_UTC)));
        l.time = DateTime::<Utc>::MIN_UTC;
        assert!(l.is_stale(DateTime::<Utc>::MAX_UTC, None));
    }
}
