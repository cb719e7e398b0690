//! The index: which pack holds each blob, and where.
//!
//! Index files (`index/<id>`) are sealed objects whose payload is
//! `version (u8 = 1) || group*`, `group = pack id (32) || count (u32 LE) || entry * count`,
//! with the 46-byte entry of [`crate::pack`]. They are written as packs complete.
//!
//! In memory, [`Index`] is one sorted array of 52-byte entries plus the list of pack ids and
//! a table of where each bucket of ids (by their first bits) starts, looked up by a binary
//! search inside one bucket: no per-entry allocation, no hash-table slack.

use std::collections::HashMap;

use crate::blob::BlobType;
use crate::compress::Compression;
use crate::id::Id;
use crate::pack::{ENTRY_LEN, PackEntry};

const INDEX_VERSION: u8 = 1;

/// The first 8 bytes of an id, as a number that sorts as the id does.
fn prefix(id: &Id) -> u64 {
    u64::from_be_bytes(id.0[..8].try_into().expect("ids are 32 bytes"))
}

/// Encodes an index file payload for the given packs.
pub fn encode_index_file<'a>(
    packs: impl IntoIterator<Item = (&'a Id, &'a [PackEntry])>,
) -> Vec<u8> {
    let mut out = vec![INDEX_VERSION];
    for (pack, entries) in packs {
        out.extend_from_slice(&pack.0);
        out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
        for e in entries {
            e.encode(&mut out);
        }
    }
    out
}

/// A malformed index file payload.
#[derive(Debug, thiserror::Error)]
#[error("malformed index payload: {0}")]
pub struct IndexFormatError(pub(crate) &'static str);

/// Decodes an index file payload, calling `f` once per pack with its entries.
pub fn decode_index_file(
    payload: &[u8],
    mut f: impl FnMut(Id, Vec<PackEntry>),
) -> Result<(), IndexFormatError> {
    let (&v, mut rest) = payload.split_first().ok_or(IndexFormatError("empty"))?;
    if v != INDEX_VERSION {
        return Err(IndexFormatError("unknown version"));
    }
    while !rest.is_empty() {
        if rest.len() < 36 {
            return Err(IndexFormatError("truncated pack group"));
        }
        let pack = Id(rest[..32].try_into().expect("32 bytes"));
        let count = u32::from_le_bytes(rest[32..36].try_into().expect("4 bytes")) as usize;
        rest = &rest[36..];
        let need = count
            .checked_mul(ENTRY_LEN)
            .ok_or(IndexFormatError("count overflow"))?;
        if rest.len() < need {
            return Err(IndexFormatError("truncated entries"));
        }
        let entries = rest[..need]
            .chunks_exact(ENTRY_LEN)
            .map(|c| {
                PackEntry::decode(c.try_into().expect("exact")).ok_or(IndexFormatError("bad entry"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        rest = &rest[need..];
        f(pack, entries);
    }
    Ok(())
}

/// One blob's location, as kept in memory (52 bytes).
#[derive(Clone, Copy, Debug)]
struct Slot {
    id: Id,
    pack: u32,
    offset: u32,
    length: u32,
    raw_length: u32,
    ty: BlobType,
    compression: Compression,
}

impl Slot {
    fn entry(&self) -> PackEntry {
        PackEntry {
            ty: self.ty,
            compression: self.compression,
            id: self.id,
            offset: self.offset,
            length: self.length,
            raw_length: self.raw_length,
        }
    }
}

/// A blob's location, as returned by lookups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobLocation {
    /// The pack holding it.
    pub pack: Id,
    /// Its entry in that pack.
    pub entry: PackEntry,
}

/// The in-memory index of a repository.
#[derive(Default)]
pub struct Index {
    packs: Vec<Id>,
    slots: Vec<Slot>,
    /// Where each bucket of ids starts in `slots`: bucket `b` holds the ids whose first
    /// `bucket_bits` bits are `b`, at `starts[b]..starts[b + 1]`. Ids are hashes, so buckets
    /// are even and a lookup searches two to four entries instead of the whole array.
    starts: Vec<u32>,
    bucket_bits: u32,
    /// Second (and further) locations of blobs that index files name more than once: tried
    /// when the first cannot be read (it may be damaged, or forged by an append-only client).
    seconds: HashMap<(BlobType, Id), Vec<BlobLocation>>,
}

/// Collects entries, then sorts them once into an [`Index`].
#[derive(Default)]
pub struct IndexBuilder {
    pack_numbers: HashMap<Id, u32>,
    index: Index,
}

impl IndexBuilder {
    /// Adds a pack's entries.
    pub fn add_pack(&mut self, pack: Id, entries: &[PackEntry]) {
        let packs = &mut self.index.packs;
        let n = *self.pack_numbers.entry(pack).or_insert_with(|| {
            packs.push(pack);
            (packs.len() - 1) as u32
        });
        self.index.slots.extend(entries.iter().map(|e| Slot {
            id: e.id,
            pack: n,
            offset: e.offset,
            length: e.length,
            raw_length: e.raw_length,
            ty: e.ty,
            compression: e.compression,
        }));
    }

    /// Sorts and removes duplicate entries (the same blob in several packs keeps the first).
    pub fn finish(self) -> Index {
        self.finish_with(|_, _| {})
    }

    /// [`IndexBuilder::finish`], handing each entry it drops (a second location of a blob
    /// already located, with its pack) to `dropped`: `check` verifies those too, so that a
    /// forged or stale second location cannot hide.
    pub fn finish_with(mut self, mut dropped: impl FnMut(Id, PackEntry)) -> Index {
        let slots = &mut self.index.slots;
        // Unstable is enough: entries with equal keys are the same blob in the same pack.
        slots.sort_unstable_by_key(|s| (s.id, s.ty, s.pack));
        let packs = &self.index.packs;
        let seconds = &mut self.index.seconds;
        slots.dedup_by(|a, b| {
            let same = a.id == b.id && a.ty == b.ty;
            // `a` is dropped; an exact repeat of the kept entry is no second location.
            if same && (a.pack, a.offset, a.length) != (b.pack, b.offset, b.length) {
                let (pack, entry) = (packs[a.pack as usize], a.entry());
                seconds
                    .entry((a.ty, a.id))
                    .or_default()
                    .push(BlobLocation { pack, entry });
                dropped(pack, entry);
            }
            same
        });
        slots.shrink_to_fit();
        self.index.fill_buckets();
        self.index
    }
}

impl Index {
    /// Where blob (`ty`, `id`) is stored, if indexed.
    pub fn lookup(&self, ty: BlobType, id: &Id) -> Option<BlobLocation> {
        let (pack, entry) = self.entry_at(self.position(ty, id)?);
        Some(BlobLocation {
            pack: self.packs[pack as usize],
            entry,
        })
    }

    /// The position of blob (`ty`, `id`) in the sorted entry array (for per-blob bit sets).
    pub fn position(&self, ty: BlobType, id: &Id) -> Option<usize> {
        let (from, to) = match self.bucket_bits {
            0 => (0, self.slots.len()),
            bits => {
                let b = (prefix(id) >> (64 - bits)) as usize;
                (self.starts[b] as usize, self.starts[b + 1] as usize)
            }
        };
        self.slots[from..to]
            .binary_search_by(|s| (s.id, s.ty).cmp(&(*id, ty)))
            .ok()
            .map(|i| from + i)
    }

    /// Builds the bucket table: about one bucket per two to four blobs (so at most 2 bytes
    /// per blob), none for small indexes.
    fn fill_buckets(&mut self) {
        let n = self.slots.len();
        if n < 64 {
            (self.starts, self.bucket_bits) = (Vec::new(), 0);
            return;
        }
        let bits = (n.ilog2() - 1).min(24);
        let buckets = 1usize << bits;
        let mut starts = Vec::with_capacity(buckets + 1);
        for (i, s) in self.slots.iter().enumerate() {
            let b = (prefix(&s.id) >> (64 - bits)) as usize;
            while starts.len() <= b {
                starts.push(i as u32);
            }
        }
        starts.resize(buckets + 1, n as u32);
        (self.starts, self.bucket_bits) = (starts, bits);
    }

    /// The entry at `position`: its pack's number (an index into [`Index::packs`]) and entry.
    pub fn entry_at(&self, position: usize) -> (u32, PackEntry) {
        let s = &self.slots[position];
        (s.pack, s.entry())
    }

    /// Further locations of blob (`ty`, `id`) that index files give besides the one
    /// [`Index::lookup`] returns (usually none).
    pub fn second_locations(&self, ty: BlobType, id: &Id) -> &[BlobLocation] {
        self.seconds.get(&(ty, *id)).map_or(&[], Vec::as_slice)
    }

    /// The packs entries refer to, by number.
    pub fn packs(&self) -> &[Id] {
        &self.packs
    }

    /// Whether blob (`ty`, `id`) is indexed.
    pub fn contains(&self, ty: BlobType, id: &Id) -> bool {
        self.lookup(ty, id).is_some()
    }

    /// Number of distinct blobs.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Number of packs referenced.
    pub fn pack_count(&self) -> usize {
        self.packs.len()
    }

    /// Bytes of memory per indexed blob: its entry, and at most 2 bytes of bucket table.
    pub const BYTES_PER_BLOB: usize = std::mem::size_of::<Slot>() + 2;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u8, ty: BlobType) -> PackEntry {
        PackEntry {
            ty,
            compression: Compression::None,
            id: Id([n; 32]),
            offset: n as u32,
            length: 10,
            raw_length: 9,
        }
    }

    #[test]
    fn file_round_trip_and_lookup() {
        let p1 = Id([1; 32]);
        let p2 = Id([2; 32]);
        let e1 = [entry(5, BlobType::Data), entry(3, BlobType::Tree)];
        let e2 = [entry(5, BlobType::Tree), entry(5, BlobType::Data)];
        let bytes = encode_index_file([(&p1, &e1[..]), (&p2, &e2[..])]);
        let mut b = IndexBuilder::default();
        decode_index_file(&bytes, |p, e| b.add_pack(p, &e)).unwrap();
        let idx = b.finish();
        assert_eq!(idx.len(), 3, "duplicate (data, 5) kept once");
        assert_eq!(idx.lookup(BlobType::Data, &Id([5; 32])).unwrap().pack, p1);
        assert_eq!(idx.lookup(BlobType::Tree, &Id([5; 32])).unwrap().pack, p2);
        assert!(
            idx.lookup(BlobType::Data, &Id([3; 32])).is_none(),
            "types are separate"
        );
        const { assert!(Index::BYTES_PER_BLOB <= 64) };
        for cut in 1..bytes.len() {
            let _ = decode_index_file(&bytes[..cut], |_, _| {});
        }
        assert!(decode_index_file(&bytes[..bytes.len() - 1], |_, _| {}).is_err());
    }

    #[test]
    fn bucketed_lookups_find_every_blob_and_only_those() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut id = || {
            let mut b = [0u8; 32];
            for chunk in b.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                chunk.copy_from_slice(&x.to_le_bytes());
            }
            Id(b)
        };
        for n in [0usize, 1, 63, 64, 1000, 20_000] {
            let ids: Vec<Id> = (0..n).map(|_| id()).collect();
            let mut b = IndexBuilder::default();
            for (i, chunk) in ids.chunks(100).enumerate() {
                let entries: Vec<PackEntry> = (chunk.iter().enumerate())
                    .map(|(j, id)| PackEntry {
                        // every third blob is a tree blob, to mix the types in
                        ty: if j % 3 == 0 {
                            BlobType::Tree
                        } else {
                            BlobType::Data
                        },
                        compression: Compression::Zstd,
                        id: *id,
                        offset: j as u32 * 10,
                        length: 10,
                        raw_length: 20,
                    })
                    .collect();
                b.add_pack(Id([i as u8; 32]), &entries);
            }
            let idx = b.finish();
            assert_eq!(idx.len(), n);
            for (k, id) in ids.iter().enumerate() {
                let ty = if (k % 100) % 3 == 0 {
                    BlobType::Tree
                } else {
                    BlobType::Data
                };
                let other = if ty == BlobType::Tree {
                    BlobType::Data
                } else {
                    BlobType::Tree
                };
                let loc = idx.lookup(ty, id).expect("indexed blob found");
                assert_eq!(loc.pack, Id([(k / 100) as u8; 32]));
                assert_eq!(loc.entry.offset, (k % 100) as u32 * 10);
                assert!(idx.lookup(other, id).is_none(), "the other type is not");
            }
            for _ in 0..1000 {
                assert!(idx.lookup(BlobType::Data, &id()).is_none());
            }
            for p in 0..n {
                let (_, e) = idx.entry_at(p);
                assert_eq!(idx.position(e.ty, &e.id), Some(p));
            }
            assert!(
                idx.starts.len() * 4 <= 2 * n + 8,
                "{n}: {}",
                idx.starts.len()
            );
        }
    }
}
