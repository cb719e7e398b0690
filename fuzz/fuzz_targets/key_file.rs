//! Fuzz target: key files (`keys/<id>`), which a reader parses before it knows any key.
//!
//! Each input is tried twice:
//! 1. as a key file's JSON: parse, the argon2 bounds check, and only for parameters that pass
//!    it *and* are near the cheapest (so the KDF stays out of the hot loop's cost) an
//!    attempt to open it with a fixed password;
//! 2. when it is JSON at all, as the master key JSON sealed inside a key file: sealed under
//!    the key that a fixed password derives with the cheapest parameters, then opened through
//!    `KeyFile::open`, so the fuzzer reaches the parsing behind the AES-GCM check. (`open`
//!    derives every time; input that is not JSON fails in serde_json before any field is
//!    read, which 1 already covers, so it skips that cost.)
#![no_main]

use std::sync::OnceLock;

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use argon2::{Algorithm, Argon2, Params, Version};
use cairn_fuzz::KEY_AAD;
use cairn_repo_format::id::hex_encode;
use cairn_repo_format::key::{KdfParams, KeyError, KeyFile};
use libfuzzer_sys::fuzz_target;

const PASSWORD: &[u8] = b"fuzz";
/// The cheapest parameters the bounds check accepts.
const CHEAPEST: KdfParams = KdfParams {
    m_cost: 8,
    t_cost: 1,
    p_cost: 1,
};
/// Fuzzed parameters are run only up to this `m_cost * t_cost` (KiB × passes).
const MAX_FUZZED_COST: u64 = 64;
const SALT: [u8; 16] = [7; 16];

/// A key file with the cheapest parameters whose `data` we fill, and the AES key its
/// password derives (computed once).
fn fixture() -> &'static (KeyFile, Aes256Gcm) {
    static F: OnceLock<(KeyFile, Aes256Gcm)> = OnceLock::new();
    F.get_or_init(|| {
        let params = Params::new(CHEAPEST.m_cost, CHEAPEST.t_cost, CHEAPEST.p_cost, Some(32))
            .expect("cheapest params are valid");
        let mut derived = [0u8; 32];
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into(PASSWORD, &SALT, &mut derived)
            .expect("argon2");
        let kf = KeyFile {
            created: chrono::DateTime::UNIX_EPOCH,
            host: "h".into(),
            username: "u".into(),
            kdf: "argon2id".into(),
            params: CHEAPEST,
            salt: hex_encode(&SALT),
            data: String::new(),
        };
        (kf, Aes256Gcm::new(&Key::<Aes256Gcm>::from(derived)))
    })
}

/// `nonce || AES-256-GCM(plain) || tag`, the layout of `MasterKey::seal`.
fn seal(cipher: &Aes256Gcm, plain: &[u8]) -> Vec<u8> {
    let nonce = [3u8; 12];
    let mut out = nonce.to_vec();
    out.extend_from_slice(plain);
    let tag = cipher
        .encrypt_inout_detached(&Nonce::from(nonce), KEY_AAD, (&mut out[12..]).into())
        .expect("encrypt");
    out.extend_from_slice(&tag);
    out
}

fuzz_target!(|data: &[u8]| {
    // 1. A key file as read from keys/.
    if let Ok(kf) = serde_json::from_slice::<KeyFile>(data) {
        let checked = kf.params.check();
        let _ = kf.params.cost();
        let json = serde_json::to_vec(&kf).expect("a parsed key file serializes");
        let again: KeyFile = serde_json::from_slice(&json).expect("and parses back");
        assert_eq!(
            serde_json::to_vec(&again).expect("serializes"),
            json,
            "key file round trip is stable"
        );
        // The bounds check runs first; only then, and only for cheap parameters, the KDF.
        if checked.is_ok() && kf.params.cost() <= MAX_FUZZED_COST {
            match kf.open(PASSWORD) {
                Ok(_) | Err(KeyError::WrongPassword) | Err(KeyError::Malformed(_)) => {}
            }
        } else if checked.is_err() {
            assert!(matches!(kf.open(PASSWORD), Err(KeyError::Malformed(_))));
        }
    }

    // 2. The sealed master key inside a key file the password opens.
    if serde_json::from_slice::<serde_json::Value>(data).is_err() {
        return;
    }
    let (template, cipher) = fixture();
    let mut kf = template.clone();
    kf.data = hex_encode(&seal(cipher, data));
    match kf.open(PASSWORD) {
        Ok(master) => {
            let _ = master.blob_id(b"x");
        }
        Err(KeyError::Malformed(_)) => {}
        Err(KeyError::WrongPassword) => panic!("the fixture's seal must open"),
    }
});
