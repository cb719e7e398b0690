//! Fuzz target: snapshot payloads (JSON), as `Repository::load_snapshot` parses them after
//! opening the sealed object. Checks: decode → encode → decode is the identity and the
//! encoding is stable.
#![no_main]

use cairn_repo_format::snapshot::Snapshot;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(snap) = serde_json::from_slice::<Snapshot>(data) else {
        return;
    };
    let bytes = serde_json::to_vec(&snap).expect("a parsed snapshot serializes");
    let again: Snapshot = serde_json::from_slice(&bytes).expect("and parses back");
    assert_eq!(again, snap, "snapshot round trip");
    assert_eq!(
        serde_json::to_vec(&again).expect("serializes"),
        bytes,
        "snapshot encoding is stable"
    );
});
