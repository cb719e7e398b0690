//! Condemned packs (`condemned/<id>`): packs a prune has taken out of the index because no
//! snapshot it saw needed them, kept until no running backup can still refer to them.
//!
//! The payload is `committed (u8) || time (i64 LE, Unix seconds) || index payload` (the
//! format of [`crate::index`]). A prune writes an uncommitted list before it rewrites the
//! index and a committed one, timed after the old index files are gone, once it has; an
//! uncommitted list therefore only survives a prune that was interrupted. The entries keep the entries of condemned packs stay readable: a snapshot written by a
//! backup that started before the prune can still be restored, and the next prune can rescue
//! the packs such a snapshot needs. New backups never deduplicate against condemned packs.

use chrono::{DateTime, TimeZone, Utc};

use crate::id::Id;
use crate::index::{IndexFormatError, decode_index_file, encode_index_file};
use crate::pack::PackEntry;

/// A condemned list's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// When it was written.
    pub time: DateTime<Utc>,
    /// Whether the prune that wrote it had removed the old index files by then.
    pub committed: bool,
}

/// Encodes a condemned list.
pub fn encode<'a>(
    stamp: Stamp,
    packs: impl IntoIterator<Item = (&'a Id, &'a [PackEntry])>,
) -> Vec<u8> {
    let mut out = vec![stamp.committed as u8];
    out.extend_from_slice(&stamp.time.timestamp().to_le_bytes());
    out.extend_from_slice(&encode_index_file(packs));
    out
}

/// Decodes a condemned list: its stamp, and `f` called once per pack.
pub fn decode(
    payload: &[u8],
    f: impl FnMut(Id, Vec<PackEntry>),
) -> Result<Stamp, IndexFormatError> {
    let (&flag, rest) = payload
        .split_first()
        .ok_or(IndexFormatError("empty condemned list"))?;
    let committed = match flag {
        0 => false,
        1 => true,
        _ => return Err(IndexFormatError("condemned list flag is neither 0 nor 1")),
    };
    let (t, rest) = rest
        .split_first_chunk::<8>()
        .ok_or(IndexFormatError("condemned list shorter than its time"))?;
    let time = Utc
        .timestamp_opt(i64::from_le_bytes(*t), 0)
        .single()
        .ok_or(IndexFormatError("condemned list time out of range"))?;
    decode_index_file(rest, f)?;
    Ok(Stamp { time, committed })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::BlobType;
    use crate::compress::Compression;

    #[test]
    fn round_trip() {
        let e = PackEntry {
            ty: BlobType::Data,
            compression: Compression::None,
            id: Id([3; 32]),
            offset: 0,
            length: 40,
            raw_length: 12,
        };
        let t = Stamp {
            time: Utc.timestamp_opt(1_700_000_000, 0).unwrap(),
            committed: true,
        };
        let bytes = encode(t, [(&Id([1; 32]), &[e][..])]);
        let mut seen = Vec::new();
        assert_eq!(decode(&bytes, |p, es| seen.push((p, es))).unwrap(), t);
        assert_eq!(seen, vec![(Id([1; 32]), vec![e])]);
        assert!(decode(&bytes[..5], |_, _| {}).is_err());
    }
}
