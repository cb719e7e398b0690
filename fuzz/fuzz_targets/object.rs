//! Fuzz target: the framing of sealed objects (config, snapshots, index files, locks,
//! condemned lists): `compression (u8) || payload`, where a zstd payload is
//! `raw length (u64 LE) || zstd frame`. The input is that plaintext; it is sealed with the
//! process's key so that `open_object` gets past authentication to the framing and the
//! decompression.
#![no_main]

use cairn_fuzz::{key, seal_framed};
use cairn_repo_format::object::{ObjectKind, open_object, seal_object};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let kind = ObjectKind::Snapshot;
    let Ok(payload) = open_object(key(), kind, &seal_framed(kind, data)) else {
        return;
    };
    match data[0] {
        0 => assert_eq!(payload, data[1..], "uncompressed payload is returned as is"),
        1 => assert_eq!(
            payload.len() as u64,
            u64::from_le_bytes(data[1..9].try_into().unwrap()),
            "decompressed to the recorded length"
        ),
        b => panic!("compression byte {b} accepted"),
    }
    // What opened seals again and opens to the same payload (compressed or not).
    if payload.len() <= 1 << 20 {
        let sealed = seal_object(key(), kind, &payload, 3);
        assert_eq!(open_object(key(), kind, &sealed).expect("reopens"), payload);
    }
});
