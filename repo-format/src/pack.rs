//! Packs: the files that hold blobs. This module does no storage calls: [`PackWriter`] writes a
//! pack front to back into a sink the caller gives it (a backend's [`Spool`], or memory for
//! [`PackBuilder`]) and names it on the way; [`PackHeader`] parses a pack's header from its
//! tail.
//!
//! ```text
//! pack = blob_1 || … || blob_n || sealed_header || header_len (u32 LE)
//! blob_i        = nonce (12) || AES-256-GCM(payload) || tag (16)
//! sealed_header = nonce (12) || AES-256-GCM(header) || tag (16), aad "cairn/pack-header"
//! header        = version (u8 = 1) || entry_1 || … || entry_n
//! entry         = type (u8) || compression (u8) || id (32) || offset (u32 LE)
//!                 || length (u32 LE) || raw_length (u32 LE)                      = 46 bytes
//! ```

use std::convert::Infallible;
use std::io::{self, Write};

use crate::backend::Spool;
use crate::blob::{BlobType, SealedBlob};
use crate::compress::Compression;
use crate::crypto::{MasterKey, SEAL_OVERHEAD};
use crate::id::{Id, StoredHasher};

/// Bytes of one encoded header or index entry.
pub const ENTRY_LEN: usize = 46;
const HEADER_AAD: &[u8] = b"cairn/pack-header";
const HEADER_VERSION: u8 = 1;

/// Where one blob sits in its pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackEntry {
    /// Data or tree.
    pub ty: BlobType,
    /// Whether the payload is compressed.
    pub compression: Compression,
    /// Keyed hash of the plaintext.
    pub id: Id,
    /// Byte offset of the sealed blob in the pack.
    pub offset: u32,
    /// Sealed length.
    pub length: u32,
    /// Plaintext length.
    pub raw_length: u32,
}

impl PackEntry {
    /// Appends the 46-byte encoding.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.ty as u8);
        out.push(self.compression as u8);
        out.extend_from_slice(&self.id.0);
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.length.to_le_bytes());
        out.extend_from_slice(&self.raw_length.to_le_bytes());
    }

    /// Decodes one entry; `None` on an unknown type or compression byte.
    pub fn decode(b: &[u8; ENTRY_LEN]) -> Option<PackEntry> {
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Some(PackEntry {
            ty: BlobType::from_byte(b[0])?,
            compression: Compression::from_byte(b[1])?,
            id: Id(b[2..34].try_into().ok()?),
            offset: u32_at(34),
            length: u32_at(38),
            raw_length: u32_at(42),
        })
    }
}

/// Where a pack's bytes go as it is written: memory (a `Vec`, which cannot fail) or a
/// backend's [`Spool`] (a temporary file, which can).
pub trait PackSink {
    /// What a failed append reports.
    type Error;
    /// Appends bytes.
    fn append(&mut self, bytes: &[u8]) -> Result<(), Self::Error>;
}

impl PackSink for Vec<u8> {
    type Error = Infallible;
    fn append(&mut self, bytes: &[u8]) -> Result<(), Infallible> {
        self.extend_from_slice(bytes);
        Ok(())
    }
}

impl PackSink for Spool {
    type Error = io::Error;
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write_all(bytes)
    }
}

/// Writes one pack front to back into a sink, naming it (BLAKE3 of its bytes) on the way, so
/// the pack need not be held anywhere to be named.
#[derive(Default)]
pub struct PackWriter<S> {
    sink: S,
    hasher: StoredHasher,
    len: u64,
    entries: Vec<PackEntry>,
}

/// A written pack's name, length and blobs.
#[derive(Clone, Debug)]
pub struct PackInfo {
    /// Storage name: BLAKE3 of the pack's bytes.
    pub id: Id,
    /// Length in bytes.
    pub len: u64,
    /// Its blobs, in order.
    pub entries: Vec<PackEntry>,
}

impl<S: PackSink> PackWriter<S> {
    /// A pack written into `sink` (which should be empty).
    pub fn new(sink: S) -> Self {
        PackWriter {
            sink,
            hasher: StoredHasher::default(),
            len: 0,
            entries: Vec::new(),
        }
    }

    /// Bytes of blobs so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when no blob was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Number of blobs so far.
    pub fn blob_count(&self) -> usize {
        self.entries.len()
    }

    fn append(&mut self, bytes: &[u8]) -> Result<(), S::Error> {
        self.sink.append(bytes)?;
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Appends a sealed blob.
    pub fn add(&mut self, blob: &SealedBlob) -> Result<(), S::Error> {
        self.add_stored(
            blob.ty,
            blob.id,
            blob.compression,
            blob.raw_len,
            &blob.bytes,
        )
    }

    /// Appends a blob's sealed bytes as stored in another pack (repacking copies blobs without
    /// decrypting them again: the seal binds type and id, not the position).
    pub fn add_stored(
        &mut self,
        ty: BlobType,
        id: Id,
        compression: Compression,
        raw_length: u32,
        sealed: &[u8],
    ) -> Result<(), S::Error> {
        let offset = self.len as u32;
        self.append(sealed)?;
        self.entries.push(PackEntry {
            ty,
            compression,
            id,
            offset,
            length: sealed.len() as u32,
            raw_length,
        });
        Ok(())
    }

    /// Seals the header, appends it and its length, and names the pack. Returns the sink.
    pub fn finish(mut self, key: &MasterKey) -> Result<(PackInfo, S), S::Error> {
        let mut header = Vec::with_capacity(1 + self.entries.len() * ENTRY_LEN);
        header.push(HEADER_VERSION);
        for e in &self.entries {
            e.encode(&mut header);
        }
        let mut tail = Vec::with_capacity(header.len() + SEAL_OVERHEAD + 4);
        key.seal_into(HEADER_AAD, &header, &mut tail);
        let sealed_len = tail.len() as u32;
        tail.extend_from_slice(&sealed_len.to_le_bytes());
        self.append(&tail)?;
        let info = PackInfo {
            id: self.hasher.finish(),
            len: self.len,
            entries: self.entries,
        };
        Ok((info, self.sink))
    }
}

fn infallible<T>(r: Result<T, Infallible>) -> T {
    match r {
        Ok(t) => t,
        Err(never) => match never {},
    }
}

/// Assembles one pack in memory (a [`PackWriter`] into a `Vec`).
#[derive(Default)]
pub struct PackBuilder(PackWriter<Vec<u8>>);

/// A finished pack, ready for upload.
pub struct FinishedPack {
    /// Storage name: BLAKE3 of `bytes`.
    pub id: Id,
    /// The whole pack.
    pub bytes: Vec<u8>,
    /// Its blobs, in order.
    pub entries: Vec<PackEntry>,
}

impl PackBuilder {
    /// An empty pack with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> PackBuilder {
        PackBuilder(PackWriter::new(Vec::with_capacity(capacity)))
    }

    /// Bytes of blobs so far.
    pub fn len(&self) -> usize {
        self.0.len() as usize
    }

    /// True when no blob was added.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of blobs so far.
    pub fn blob_count(&self) -> usize {
        self.0.blob_count()
    }

    /// Appends a sealed blob.
    pub fn add(&mut self, blob: &SealedBlob) {
        infallible(self.0.add(blob))
    }

    /// Appends a blob's sealed bytes as stored in another pack; see
    /// [`PackWriter::add_stored`].
    pub fn add_stored(
        &mut self,
        ty: BlobType,
        id: Id,
        compression: Compression,
        raw_length: u32,
        sealed: &[u8],
    ) {
        infallible(self.0.add_stored(ty, id, compression, raw_length, sealed))
    }

    /// Seals the header, appends it and its length, and names the pack.
    pub fn finish(self, key: &MasterKey) -> FinishedPack {
        let (info, bytes) = infallible(self.0.finish(key));
        FinishedPack {
            id: info.id,
            bytes,
            entries: info.entries,
        }
    }
}

/// A pack whose header cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum PackHeaderError {
    /// Too short to hold a header, or the length field points outside the pack.
    #[error(
        "truncated or malformed pack (header length {header_len} does not fit a pack of {pack_len} bytes)"
    )]
    Malformed {
        /// Header length as recorded in the trailer.
        header_len: u64,
        /// The pack's size.
        pack_len: u64,
    },
    /// The header failed authentication.
    #[error("pack header failed authentication (corrupt or tampered)")]
    Decrypt,
    /// The header decrypted but its entries are inconsistent.
    #[error("pack header is inconsistent: {0}")]
    Inconsistent(&'static str),
}

/// A parsed pack header.
pub struct PackHeader;

impl PackHeader {
    /// Given the pack's total length and its last 4 bytes, the byte range holding the sealed
    /// header.
    pub fn header_range(
        pack_len: u64,
        trailer: &[u8],
    ) -> Result<std::ops::Range<u64>, PackHeaderError> {
        let malformed = |header_len| PackHeaderError::Malformed {
            header_len,
            pack_len,
        };
        let t: [u8; 4] = trailer.try_into().map_err(|_| malformed(0))?;
        let header_len = u32::from_le_bytes(t) as u64;
        if pack_len < 4 || header_len < SEAL_OVERHEAD as u64 + 1 || header_len + 4 > pack_len {
            return Err(malformed(header_len));
        }
        Ok(pack_len - 4 - header_len..pack_len - 4)
    }

    /// Opens and parses the sealed header; every entry must lie inside the blob area
    /// (`0..blobs_len`).
    pub fn parse(
        key: &MasterKey,
        sealed: &[u8],
        blobs_len: u64,
    ) -> Result<Vec<PackEntry>, PackHeaderError> {
        let plain = key
            .open(HEADER_AAD, sealed)
            .map_err(|_| PackHeaderError::Decrypt)?;
        let (&version, body) = plain
            .split_first()
            .ok_or(PackHeaderError::Inconsistent("empty header"))?;
        if version != HEADER_VERSION {
            return Err(PackHeaderError::Inconsistent("unknown header version"));
        }
        if body.len() % ENTRY_LEN != 0 {
            return Err(PackHeaderError::Inconsistent(
                "header length is not a whole number of entries",
            ));
        }
        body.chunks_exact(ENTRY_LEN)
            .map(|c| {
                let e = PackEntry::decode(c.try_into().expect("exact chunk")).ok_or(
                    PackHeaderError::Inconsistent("unknown blob type or compression"),
                )?;
                if e.offset as u64 + e.length as u64 > blobs_len {
                    return Err(PackHeaderError::Inconsistent(
                        "blob extends past the blob area",
                    ));
                }
                Ok(e)
            })
            .collect()
    }

    /// Parses the header out of a whole pack held in memory.
    pub fn parse_whole(key: &MasterKey, pack: &[u8]) -> Result<Vec<PackEntry>, PackHeaderError> {
        let len = pack.len() as u64;
        let tail = pack.get(pack.len().saturating_sub(4)..).unwrap_or_default();
        let r = Self::header_range(len, tail)?;
        Self::parse(key, &pack[r.start as usize..r.end as usize], r.start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::{open_blob, seal_blob};

    #[test]
    fn build_parse_and_open() {
        let key = MasterKey::generate();
        let mut b = PackBuilder::default();
        let blobs: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 1000 * (i as usize + 1)]).collect();
        for data in &blobs {
            b.add(&seal_blob(&key, BlobType::Data, key.blob_id(data), data, 3));
        }
        let p = b.finish(&key);
        assert_eq!(p.id, Id::of_stored(&p.bytes));
        let entries = PackHeader::parse_whole(&key, &p.bytes).unwrap();
        assert_eq!(entries, p.entries);
        for (e, data) in entries.iter().zip(&blobs) {
            let s = &p.bytes[e.offset as usize..(e.offset + e.length) as usize];
            assert_eq!(
                &open_blob(&key, e.ty, &e.id, e.compression, e.raw_length, s).unwrap(),
                data
            );
        }
    }

    #[test]
    fn damaged_packs_are_errors_not_panics() {
        let key = MasterKey::generate();
        let mut b = PackBuilder::default();
        b.add(&seal_blob(&key, BlobType::Data, key.blob_id(b"x"), b"x", 0));
        let p = b.finish(&key);
        for cut in 0..p.bytes.len() {
            assert!(PackHeader::parse_whole(&key, &p.bytes[..cut]).is_err());
        }
        let mut flipped = p.bytes.clone();
        let n = flipped.len();
        flipped[n - 10] ^= 0x40;
        assert!(PackHeader::parse_whole(&key, &flipped).is_err());
        let mut huge = p.bytes.clone();
        huge[n - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(PackHeader::parse_whole(&key, &huge).is_err());
    }
}
