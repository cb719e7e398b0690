//! Blobs: the unit of deduplication. A data blob is one chunk of a file; a tree blob is one
//! directory listing. This module is the per-blob transform: compress (when it shrinks), then
//! seal with the blob's type and id bound as associated data; and its inverse, which also
//! re-hashes the plaintext so that a blob can never come back as something else.

use crate::compress::{self, Compression};
use crate::crypto::MasterKey;
use crate::id::Id;

/// What a blob holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum BlobType {
    /// A chunk of file content.
    Data = 0,
    /// A serialized directory ([`crate::tree::Tree`]).
    Tree = 1,
}

impl BlobType {
    /// Parses the byte stored in pack headers and index files.
    pub fn from_byte(b: u8) -> Option<BlobType> {
        match b {
            0 => Some(BlobType::Data),
            1 => Some(BlobType::Tree),
            _ => None,
        }
    }

    /// `data` or `tree`.
    pub fn name(self) -> &'static str {
        match self {
            BlobType::Data => "data",
            BlobType::Tree => "tree",
        }
    }
}

/// A blob ready to go into a pack.
#[derive(Debug)]
pub struct SealedBlob {
    /// Data or tree.
    pub ty: BlobType,
    /// Keyed hash of the plaintext.
    pub id: Id,
    /// Whether the sealed payload is compressed.
    pub compression: Compression,
    /// Plaintext length.
    pub raw_len: u32,
    /// `nonce || ciphertext || tag`.
    pub bytes: Vec<u8>,
}

/// Associated data binding a sealed blob to its type and id.
fn blob_aad(ty: BlobType, id: &Id) -> [u8; 34] {
    let mut aad = [0u8; 34];
    aad[0] = b'B';
    aad[1] = ty as u8;
    aad[2..].copy_from_slice(&id.0);
    aad
}

/// Compresses (at `level`, when it shrinks) and seals a blob whose id is already known.
pub fn seal_blob(
    key: &MasterKey,
    ty: BlobType,
    id: Id,
    plaintext: &[u8],
    level: i32,
) -> SealedBlob {
    let compressed = compress::compress(plaintext, level);
    let (compression, payload) = match &compressed {
        Some(c) => (Compression::Zstd, c.as_slice()),
        None => (Compression::None, plaintext),
    };
    SealedBlob {
        ty,
        id,
        compression,
        raw_len: plaintext.len() as u32,
        bytes: key.seal(&blob_aad(ty, &id), payload),
    }
}

/// Why a stored blob could not be turned back into its plaintext.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// Authentication failed: the bytes were changed, or belong to another blob.
    #[error("decryption failed (corrupt or tampered)")]
    Decrypt,
    /// The compressed payload is damaged.
    #[error("decompression failed")]
    Decompress,
    /// The plaintext does not hash to the blob's id.
    #[error("content does not match its id")]
    HashMismatch,
}

thread_local! {
    static PAYLOAD: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The largest decrypted payload buffer a thread keeps for the next blob.
const PAYLOAD_KEEP: usize = 8 << 20;

/// Opens, decompresses and verifies one stored blob.
pub fn open_blob(
    key: &MasterKey,
    ty: BlobType,
    id: &Id,
    compression: Compression,
    raw_len: u32,
    sealed: &[u8],
) -> Result<Vec<u8>, BlobError> {
    let aad = blob_aad(ty, id);
    let plain = match compression {
        Compression::None => key.open(&aad, sealed).map_err(|_| BlobError::Decrypt)?,
        // The compressed payload is needed only until it is decompressed: it goes into this
        // thread's reusable buffer, so a blob costs one allocation (its plaintext), not two.
        Compression::Zstd => PAYLOAD.with(|p| {
            let mut payload = p.borrow_mut();
            key.open_into(&aad, sealed, &mut payload)
                .map_err(|_| BlobError::Decrypt)?;
            let plain =
                compress::decompress(&payload, raw_len as usize).map_err(|_| BlobError::Decompress);
            // Keep the buffer only while it is of blob size (a larger object, such as a big
            // tree, should not stay allocated).
            if payload.capacity() > PAYLOAD_KEEP {
                *payload = Vec::new();
            }
            plain
        })?,
    };
    if plain.len() != raw_len as usize || key.blob_id(&plain) != *id {
        return Err(BlobError::HashMismatch);
    }
    Ok(plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_binding() {
        let key = MasterKey::generate();
        let text = b"some text some text some text some text some text some text ".repeat(10);
        let id = key.blob_id(&text);
        let s = seal_blob(&key, BlobType::Data, id, &text, 3);
        assert_eq!(s.compression, Compression::Zstd);
        let back = open_blob(
            &key,
            BlobType::Data,
            &id,
            s.compression,
            s.raw_len,
            &s.bytes,
        )
        .unwrap();
        assert_eq!(back, text);
        // the same bytes presented as a tree blob, or under another id, are refused
        assert!(
            open_blob(
                &key,
                BlobType::Tree,
                &id,
                s.compression,
                s.raw_len,
                &s.bytes
            )
            .is_err()
        );
        let other = key.blob_id(b"other");
        assert!(
            open_blob(
                &key,
                BlobType::Data,
                &other,
                s.compression,
                s.raw_len,
                &s.bytes
            )
            .is_err()
        );
    }
}
