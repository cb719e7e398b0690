//! What the fuzz targets share: one master key per process, the associated data each sealed
//! kind uses, and a check that those strings still match repo-format's.
//!
//! AES-GCM authenticates, so bytes the fuzzer invents never get past `open`. The targets
//! therefore seal their input with [`key`] under the right associated data and hand the
//! sealed bytes to the real reader: what gets fuzzed is the plaintext a hostile repository
//! (one whose key the attacker holds) makes a reader decode.

use std::sync::OnceLock;

use cairn_repo_format::crypto::MasterKey;
use cairn_repo_format::object::{ObjectKind, seal_object};
use cairn_repo_format::pack::PackBuilder;

/// Associated data of sealed objects (`ObjectKind::aad` in repo-format/src/object.rs).
pub fn object_aad(kind: ObjectKind) -> &'static [u8] {
    match kind {
        ObjectKind::Config => b"cairn/config",
        ObjectKind::Snapshot => b"cairn/snapshot",
        ObjectKind::Index => b"cairn/index",
        ObjectKind::Lock => b"cairn/lock",
        ObjectKind::Condemned => b"cairn/condemned",
    }
}

/// Associated data of a pack's sealed header (`HEADER_AAD` in repo-format/src/pack.rs).
pub const PACK_HEADER_AAD: &[u8] = b"cairn/pack-header";

/// Associated data of the master key sealed in a key file (`KEY_AAD` in repo-format/src/key.rs).
pub const KEY_AAD: &[u8] = b"cairn/key";

/// The process's master key. Its first use checks that the associated data above still
/// opens what repo-format seals: a target that silently fuzzed only the `Decrypt` error path
/// would be worthless.
pub fn key() -> &'static MasterKey {
    static KEY: OnceLock<MasterKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let key = MasterKey::generate();
        for kind in [
            ObjectKind::Config,
            ObjectKind::Snapshot,
            ObjectKind::Index,
            ObjectKind::Lock,
            ObjectKind::Condemned,
        ] {
            let sealed = seal_object(&key, kind, b"payload", 0);
            assert_eq!(
                key.open(object_aad(kind), &sealed)
                    .expect("object aad matches repo-format"),
                b"\0payload",
                "{kind:?}: framing is compression byte || payload"
            );
        }
        let pack = PackBuilder::default().finish(&key).bytes;
        let header = &pack[..pack.len() - 4];
        assert_eq!(
            key.open(PACK_HEADER_AAD, header)
                .expect("pack header aad matches repo-format"),
            [1u8],
            "an empty pack's header is its version byte"
        );
        key
    })
}

/// Seals `plain` as an object of `kind` exactly as stored (no compression added: `plain`
/// already is `compression byte || payload`).
pub fn seal_framed(kind: ObjectKind, plain: &[u8]) -> Vec<u8> {
    key().seal(object_aad(kind), plain)
}

/// Seals `payload` as an uncompressed object of `kind`: what a reader opens before it decodes
/// the payload.
pub fn seal_payload(kind: ObjectKind, payload: &[u8]) -> Vec<u8> {
    let mut plain = Vec::with_capacity(payload.len() + 1);
    plain.push(0);
    plain.extend_from_slice(payload);
    seal_framed(kind, &plain)
}
