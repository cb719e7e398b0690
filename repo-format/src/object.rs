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
    /// The associated data its seal binds (the kind's name, `cairn/…`).
    pub fn aad(self) -> &'static [u8] {
        match self {
            ObjectKind::Config => b"cairn/config",
            ObjectKind::Snapshot => b"cairn/snapshot",
            ObjectKind::Index => b"cairn/index",
            ObjectKind::Lock => b"cairn/lock",
            ObjectKind::Condemned => b"cairn/condemned",
        }
    }

    /// The largest payload (after decompression) a reader accepts for this kind, and a writer
    /// may produce: a guard against length fields and frames that claim more than any real
    /// object holds (`docs/design.md` §3.5). Writers split index files and condemned lists
    /// at 50,000 blobs (about 2.3 MB), far below their cap.
    pub fn max_payload(self) -> u64 {
        match self {
            ObjectKind::Config | ObjectKind::Lock => 1 << 20,
            ObjectKind::Snapshot => 16 << 20,
            ObjectKind::Index | ObjectKind::Condemned => 256 << 20,
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
    /// The payload is, or claims to be, larger than any object of its kind may be.
    #[error("payload of {size} bytes is over the {cap}-byte cap for a {kind:?} object")]
    TooLarge {
        /// The kind.
        kind: ObjectKind,
        /// The size found or claimed.
        size: u64,
        /// [`ObjectKind::max_payload`].
        cap: u64,
    },
}

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
    let cap = kind.max_payload();
    let too_large = |size: u64| ObjectError::TooLarge { kind, size, cap };
    match Compression::from_byte(flag).ok_or(ObjectError::Malformed)? {
        Compression::None if rest.len() as u64 > cap => Err(too_large(rest.len() as u64)),
        Compression::None => Ok(rest.to_vec()),
        Compression::Zstd => {
            let len: [u8; 8] = rest
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .ok_or(ObjectError::Malformed)?;
            let len = u64::from_le_bytes(len);
            if len > cap {
                return Err(too_large(len));
            }
            compress::decompress_streaming(&rest[8..], len as usize)
                .map_err(|_| ObjectError::Malformed)
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

    /// A sealed object whose frame holds `frame` and whose header claims `claim` bytes.
    fn bomb(k: &MasterKey, kind: ObjectKind, claim: u64, frame: &[u8]) -> Vec<u8> {
        let mut plain = vec![Compression::Zstd as u8];
        plain.extend_from_slice(&claim.to_le_bytes());
        plain.extend_from_slice(frame);
        k.seal(kind.aad(), &plain)
    }

    #[test]
    fn claimed_and_real_sizes_are_capped_per_kind() {
        let k = MasterKey::generate();
        let zeros = zstd::bulk::compress(&vec![0u8; 64 << 20], 3).unwrap();
        // A 3 GiB claim is refused before anything is reserved or inflated.
        let s = bomb(&k, ObjectKind::Snapshot, 3 << 30, &zeros);
        assert!(matches!(
            open_object(&k, ObjectKind::Snapshot, &s),
            Err(ObjectError::TooLarge { size, .. }) if size == 3 << 30
        ));
        // A claim within the cap whose frame holds more stops at the claim.
        let s = bomb(&k, ObjectKind::Snapshot, 8 << 20, &zeros);
        assert!(matches!(
            open_object(&k, ObjectKind::Snapshot, &s),
            Err(ObjectError::Malformed)
        ));
        // The same frame is a valid index file of 64 MiB (under that kind's cap).
        let s = bomb(&k, ObjectKind::Index, 64 << 20, &zeros);
        assert_eq!(
            open_object(&k, ObjectKind::Index, &s).unwrap().len(),
            64 << 20
        );
        // Stored raw: the payload's own length counts.
        let s = seal_object(&k, ObjectKind::Lock, &vec![7u8; 2 << 20], 0);
        assert!(matches!(
            open_object(&k, ObjectKind::Lock, &s),
            Err(ObjectError::TooLarge { .. })
        ));
    }
}
