//! Sealed repository objects other than packs: `config`, `snapshots/*`, `index/*`. Each is
//! `seal(aad = kind, compression (u8) || payload)`, where the payload is zstd-compressed when
//! that shrinks it. Key files are the exception: they are plaintext JSON holding a sealed
//! master key (see [`crate::key`]).

use crate::compress::{self, Compression};
use crate::crypto::MasterKey;

/// What kind of sealed object; used as associated data so one kind cannot pass for another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectKind {
    /// The repository config.
    Config,
    /// A snapshot.
    Snapshot,
    /// An index file.
    Index,
    /// A lock.
    Lock,
    /// A list of condemned packs.
    Condemned,
}

impl ObjectKind {
    fn aad(self) -> &'static [u8] {
        match self {
            ObjectKind::Config => b"cairn/config",
            ObjectKind::Snapshot => b"cairn/snapshot",
            ObjectKind::Index => b"cairn/index",
            ObjectKind::Lock => b"cairn/lock",
            ObjectKind::Condemned => b"cairn/condemned",
        }
    }
}

/// Compresses (when it helps) and seals an object's payload.
pub fn seal_object(key: &MasterKey, kind: ObjectKind, payload: &[u8], level: i32) -> Vec<u8> {
    let mut plain = Vec::with_capacity(payload.len() + 1);
    match compress::compress(payload, level) {
        Some(c) => {
            plain.push(Compression::Zstd as u8);
            plain.extend_from_slice(&(payload.len() as u64).to_le_bytes());
            plain.extend_from_slice(&c);
        }
        None => {
            plain.push(Compression::None as u8);
            plain.extend_from_slice(payload);
        }
    }
    key.seal(kind.aad(), &plain)
}

/// Why a sealed object could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// Authentication failed.
    #[error("decryption failed (corrupt, tampered, or not a {0:?} object)")]
    Decrypt(ObjectKind),
    /// The payload framing or compression is damaged.
    #[error("malformed payload")]
    Malformed,
}

/// Largest decompressed object accepted (a guard against hostile length fields).
const MAX_OBJECT: u64 = 4 << 30;

/// Opens a sealed object of `kind`.
pub fn open_object(
    key: &MasterKey,
    kind: ObjectKind,
    sealed: &[u8],
) -> Result<Vec<u8>, ObjectError> {
    let plain = key
        .open(kind.aad(), sealed)
        .map_err(|_| ObjectError::Decrypt(kind))?;
    let (&flag, rest) = plain.split_first().ok_or(ObjectError::Malformed)?;
    match Compression::from_byte(flag).ok_or(ObjectError::Malformed)? {
        Compression::None => Ok(rest.to_vec()),
        Compression::Zstd => {
            let len: [u8; 8] = rest
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .ok_or(ObjectError::Malformed)?;
            let len = u64::from_le_bytes(len);
            if len > MAX_OBJECT {
                return Err(ObjectError::Malformed);
            }
            compress::decompress(&rest[8..], len as usize).map_err(|_| ObjectError::Malformed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_bound() {
        let k = MasterKey::generate();
        let payload =
            b"{\"a\": 1, \"a\": 1, \"a\": 1, \"a\": 1, \"a\": 1, \"a\": 1, \"a\": 1}".repeat(4);
        let s = seal_object(&k, ObjectKind::Snapshot, &payload, 3);
        assert_eq!(open_object(&k, ObjectKind::Snapshot, &s).unwrap(), payload);
        assert!(open_object(&k, ObjectKind::Index, &s).is_err());
    }
}
