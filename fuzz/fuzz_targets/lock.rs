//! Fuzz target: lock payloads (JSON), as `Repository::locks` parses them after opening the
//! sealed object, then judges their staleness by their claimed and stored times (prune and unlock do). Checks: decode → encode
//! → decode is the identity; staleness never panics, whatever the times.
#![no_main]

use cairn_repo_format::lock::Lock;
use chrono::{DateTime, Utc};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(lock) = serde_json::from_slice::<Lock>(data) else {
        return;
    };
    let bytes = serde_json::to_vec(&lock).expect("a parsed lock serializes");
    let again: Lock = serde_json::from_slice(&bytes).expect("and parses back");
    assert_eq!(again, lock, "lock round trip");
    assert_eq!(serde_json::to_vec(&again).expect("serializes"), bytes);
    for now in [
        DateTime::<Utc>::MIN_UTC,
        DateTime::UNIX_EPOCH,
        Utc::now(),
        DateTime::<Utc>::MAX_UTC,
        lock.time,
        lock.started,
    ] {
        for stored in [None, Some(now), Some(DateTime::<Utc>::MIN_UTC), Some(lock.time)] {
            let _ = lock.is_stale(now, stored);
        }
        let _ = lock.claims_future(now);
    }
    assert!(
        !lock.is_stale(lock.time, Some(lock.time)),
        "a lock is fresh when written"
    );
});
