//! The sealing seam: every byte Cairn stores (except key files' plaintext parameters) passes
//! through [`MasterKey::seal`] and comes back through [`MasterKey::open`], and every blob id is
//! computed by [`MasterKey::blob_id`]. Swapping the AEAD implementation touches only this file.
//!
//! Sealed layout: `nonce (12) || AES-256-GCM ciphertext || tag (16)`, with caller-chosen
//! associated data that binds the bytes to what they claim to be (a blob's type and id, an
//! object's kind).

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use serde::{Deserialize, Serialize};

use crate::id::{Id, hex_decode, hex_encode};

/// Bytes of a nonce at the start of every sealed object.
pub const NONCE_LEN: usize = 12;
/// Bytes of the authentication tag at the end of every sealed object.
pub const TAG_LEN: usize = 16;
/// Bytes a sealed object has beyond its plaintext.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// Sealed bytes failed authentication: wrong key, or the bytes were corrupted or tampered with.
#[derive(Debug, thiserror::Error)]
#[error("authentication failed (corrupt or tampered data, or the wrong key)")]
pub struct OpenError;

/// The repository's secret material, stored only sealed inside key files.
#[derive(Clone)]
pub struct MasterKey {
    enc_bytes: [u8; 32],
    id_key: [u8; 32],
    cipher: Aes256Gcm,
}

/// The serialized form of a [`MasterKey`] inside a key file (before sealing).
#[derive(Serialize, Deserialize)]
pub(crate) struct MasterKeyJson {
    encrypt: String,
    id: String,
}

impl MasterKeyJson {
    pub(crate) fn from_raw(encrypt: &[u8; 32], id: &[u8; 32]) -> MasterKeyJson {
        MasterKeyJson {
            encrypt: hex_encode(encrypt),
            id: hex_encode(id),
        }
    }
}

impl MasterKey {
    /// Fresh random keys.
    pub fn generate() -> MasterKey {
        MasterKey::from_parts(random_array(), random_array())
    }

    fn from_parts(enc_bytes: [u8; 32], id_key: [u8; 32]) -> MasterKey {
        let cipher = Aes256Gcm::new(&Key::<Aes256Gcm>::from(enc_bytes));
        MasterKey {
            enc_bytes,
            id_key,
            cipher,
        }
    }

    pub(crate) fn to_json(&self) -> MasterKeyJson {
        MasterKeyJson {
            encrypt: hex_encode(&self.enc_bytes),
            id: hex_encode(&self.id_key),
        }
    }

    pub(crate) fn from_json(j: &MasterKeyJson) -> Option<MasterKey> {
        let e: [u8; 32] = hex_decode(&j.encrypt)?.try_into().ok()?;
        let i: [u8; 32] = hex_decode(&j.id)?.try_into().ok()?;
        Some(MasterKey::from_parts(e, i))
    }

    /// The id of a blob: BLAKE3 keyed with the repository's id key over the plaintext, so
    /// that ids reveal nothing about content to anyone without the key.
    pub fn blob_id(&self, plaintext: &[u8]) -> Id {
        Id(*blake3::keyed_hash(&self.id_key, plaintext).as_bytes())
    }

    /// Seals `plaintext` with a fresh random nonce, appending to `out`.
    pub fn seal_into(&self, aad: &[u8], plaintext: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        let nonce = fresh_nonce();
        out.reserve(SEAL_OVERHEAD + plaintext.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let tag = self
            .cipher
            .encrypt_inout_detached(
                &Nonce::from(nonce),
                aad,
                (&mut out[start + NONCE_LEN..]).into(),
            )
            .expect("AES-GCM encryption cannot fail for messages under 64 GiB");
        out.extend_from_slice(&tag);
    }

    /// Seals `plaintext`, returning `nonce || ciphertext || tag`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        self.seal_into(aad, plaintext, &mut out);
        out
    }

    /// Opens sealed bytes, checking that they were sealed under this key with this `aad`.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        let mut buf = Vec::new();
        self.open_into(aad, sealed, &mut buf)?;
        Ok(buf)
    }

    /// [`MasterKey::open`] into `out` (replacing what it held), so a caller that opens many
    /// objects can reuse one buffer. On failure `out` holds nothing meaningful.
    pub fn open_into(&self, aad: &[u8], sealed: &[u8], out: &mut Vec<u8>) -> Result<(), OpenError> {
        if sealed.len() < SEAL_OVERHEAD {
            return Err(OpenError);
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| OpenError)?;
        let tag: [u8; TAG_LEN] = tag.try_into().map_err(|_| OpenError)?;
        out.clear();
        out.extend_from_slice(ct);
        self.cipher
            .decrypt_inout_detached(
                &Nonce::from(nonce),
                aad,
                out.as_mut_slice().into(),
                &tag.into(),
            )
            .map_err(|_| OpenError)
    }
}

/// Nonces, taken from the operating system's CSPRNG 4 KiB at a time per thread: a
/// `getrandom` call per sealed blob was 64 000 system calls in a first backup of the standard
/// dataset. A nonce needs to be unique, not secret; each pool's bytes are handed out once. Cairn
/// never forks without `exec`, so no two processes share a pool.
struct NoncePool {
    bytes: [u8; 4096],
    used: usize,
}

thread_local! {
    static NONCES: std::cell::RefCell<NoncePool> = const {
        std::cell::RefCell::new(NoncePool { bytes: [0; 4096], used: 4096 })
    };
}

fn fresh_nonce() -> [u8; NONCE_LEN] {
    NONCES.with_borrow_mut(|p| {
        if p.used + NONCE_LEN > p.bytes.len() {
            getrandom::fill(&mut p.bytes)
                .expect("the operating system's random number generator failed");
            p.used = 0;
        }
        let mut n = [0u8; NONCE_LEN];
        n.copy_from_slice(&p.bytes[p.used..p.used + NONCE_LEN]);
        p.used += NONCE_LEN;
        n
    })
}

/// Random bytes from the operating system's CSPRNG.
pub fn random_array<const N: usize>() -> [u8; N] {
    let mut a = [0u8; N];
    getrandom::fill(&mut a).expect("the operating system's random number generator failed");
    a
}

/// A random 64-bit number from the operating system's CSPRNG.
pub fn random_u64() -> u64 {
    u64::from_le_bytes(random_array())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_do_not_repeat_across_pool_refills_or_threads() {
        let mut seen = std::collections::HashSet::new();
        let per_thread = 3 * 4096 / NONCE_LEN;
        let all: Vec<Vec<[u8; NONCE_LEN]>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..3)
                .map(|_| s.spawn(move || (0..per_thread).map(|_| fresh_nonce()).collect()))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for n in all.into_iter().flatten() {
            assert!(seen.insert(n), "nonce {n:?} repeated");
        }
        // And sealing uses them: the same plaintext never seals to the same bytes.
        let k = MasterKey::generate();
        assert_ne!(k.seal(b"a", b"same"), k.seal(b"a", b"same"));
    }

    #[test]
    fn seal_open_round_trip_and_tamper() {
        let k = MasterKey::generate();
        let s = k.seal(b"aad", b"hello world");
        assert_eq!(k.open(b"aad", &s).unwrap(), b"hello world");
        assert!(k.open(b"other", &s).is_err(), "aad is bound");
        let mut t = s.clone();
        t[15] ^= 1;
        assert!(k.open(b"aad", &t).is_err(), "flipped byte detected");
        assert!(k.open(b"aad", &s[..10]).is_err(), "truncation detected");
        assert!(
            MasterKey::generate().open(b"aad", &s).is_err(),
            "other key rejected"
        );
        let s2 = k.seal(b"aad", b"hello world");
        assert_ne!(s, s2, "fresh nonce each time");
    }

    #[test]
    fn blob_ids_are_keyed() {
        let a = MasterKey::generate();
        let b = MasterKey::generate();
        assert_eq!(a.blob_id(b"x"), a.blob_id(b"x"));
        assert_ne!(a.blob_id(b"x"), b.blob_id(b"x"));
    }
}
