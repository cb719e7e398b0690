//! Blobs: the unit of deduplication. A data blob is one chunk of a file; a tree blob is one
//! directory listing. This module is the per-blob transform: compress (when it shrinks), then
//! seal with the blob's type and id bound as associated data; and its inverse, which also
//! re-hashes the plaintext so that a blob can never come back as something else.

use crate::compress::{self, Compression};
use crate::crypto::MasterKey;
use crate::id::Id;

/// The largest data blob: the largest chunk any repository's chunker may produce (FastCDC's
/// ceiling, the top of the chunker range in the config). Not the repository's own maximum:
/// `copy` moves blobs between repositories whose chunkers differ.
pub const MAX_DATA_BLOB: u32 = 16 << 20;

/// The largest tree blob (one directory's serialized listing; about 400,000 entries).
/// Backup refuses to write a larger one, naming the directory.
pub const MAX_TREE_BLOB: u32 = 64 << 20;

/// The largest plaintext a blob of type `ty` may have.
pub fn raw_cap(ty: BlobType) -> u32 {
    match ty {
        BlobType::Data => MAX_DATA_BLOB,
        BlobType::Tree => MAX_TREE_BLOB,
    }
}

/// What is impossible about an index or pack-header entry, if anything: a plaintext over its
/// type's cap, or a sealed length that no seal of that plaintext has (stored raw: exactly
/// plaintext plus nonce and tag; compressed: less, since compression is kept only when it
/// shrinks).
pub fn entry_problem(e: &crate::pack::PackEntry) -> Option<String> {
    let overhead = crate::crypto::SEAL_OVERHEAD as u64;
    let (raw, len) = (e.raw_length as u64, e.length as u64);
    if e.raw_length > raw_cap(e.ty) {
        return Some(format!(
            "{} blob {} claims {raw} bytes, over the {}-byte cap",
            e.ty.name(),
            e.id,
            raw_cap(e.ty)
        ));
    }
    let fits = match e.compression {
        Compression::None => len == raw + overhead,
        Compression::Zstd => len > overhead && len < raw + overhead,
    };
    (!fits).then(|| {
        format!(
            "{} blob {} has sealed length {len}, impossible for {raw} bytes stored {}",
            e.ty.name(),
            e.id,
            match e.compression {
                Compression::None => "raw",
                Compression::Zstd => "compressed",
            }
        )
    })
}

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
    /// The recorded plaintext length is over the blob type's cap.
    #[error("recorded length {0} is over the blob cap")]
    TooLarge(u32),
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
    if raw_len > raw_cap(ty) {
        // Checked before anything is allocated for it (see `entry_problem`).
        return Err(BlobError::TooLarge(raw_len));
    }
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
