//! Fuzz target: pack headers. The input is a header's plaintext
//! (`version (u8) || 46-byte entry*`); it is sealed with the process's key so that
//! `PackHeader::parse` gets past authentication. Checks: every entry accepted lies inside the
//! blob area; the bound is exact; the header re-encodes to the same bytes; and a whole pack
//! built around the sealed header parses the same way (through `parse_whole` and
//! `header_range`).
#![no_main]

use cairn_fuzz::{PACK_HEADER_AAD, key};
use cairn_repo_format::crypto::SEAL_OVERHEAD;
use cairn_repo_format::pack::{ENTRY_LEN, PackHeader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = key();
    let sealed = key.seal(PACK_HEADER_AAD, data);
    // With a blob area larger than any u32 offset + length, only the format can fail.
    let Ok(entries) = PackHeader::parse(key, &sealed, 1 << 33) else {
        // A blob area of zero bytes can only make it fail more.
        assert!(PackHeader::parse(key, &sealed, 0).is_err());
        return;
    };
    assert_eq!(entries.len() * ENTRY_LEN + 1, data.len());
    let mut encoded = vec![data[0]];
    for e in &entries {
        e.encode(&mut encoded);
    }
    assert_eq!(encoded, data, "header re-encodes to its bytes");

    // The blob-area bound is exact.
    let end = entries
        .iter()
        .map(|e| e.offset as u64 + e.length as u64)
        .max()
        .unwrap_or(0);
    assert_eq!(
        PackHeader::parse(key, &sealed, end).expect("fits its own extent"),
        entries
    );
    if end > 0 {
        assert!(PackHeader::parse(key, &sealed, end - 1).is_err());
    }

    // A whole pack: a blob area (when small), the sealed header, its length.
    if end <= 1 << 16 {
        let mut pack = vec![0u8; end as usize];
        pack.extend_from_slice(&sealed);
        pack.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
        let r = PackHeader::header_range(pack.len() as u64, &pack[pack.len() - 4..])
            .expect("a well-formed trailer");
        assert_eq!(r, end..pack.len() as u64 - 4);
        assert_eq!(
            PackHeader::parse_whole(key, &pack).expect("whole pack parses"),
            entries
        );
    }

    // A trailer taken from the input: the range it yields always lies inside the pack.
    if let Some(t) = data.get(data.len().saturating_sub(4)..)
        && let Ok(r) = PackHeader::header_range(data.len() as u64, t)
    {
        assert!(r.start + (SEAL_OVERHEAD as u64) < r.end && r.end + 4 == data.len() as u64);
    }
});
