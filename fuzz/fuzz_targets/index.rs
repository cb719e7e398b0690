//! Fuzz target: index file payloads (`version (u8) || (pack id || count || entry*)*`), as
//! `Repository::load_index` decodes them after opening the sealed object. Checks: an accepted
//! payload re-encodes to the same bytes, and the in-memory index built from it finds every
//! blob it lists.
#![no_main]

use cairn_repo_format::id::Id;
use cairn_repo_format::index::{IndexBuilder, decode_index_file, encode_index_file};
use cairn_repo_format::pack::PackEntry;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut packs: Vec<(Id, Vec<PackEntry>)> = Vec::new();
    if decode_index_file(data, |p, e| packs.push((p, e))).is_err() {
        return;
    }
    let encoded = encode_index_file(packs.iter().map(|(p, e)| (p, e.as_slice())));
    assert_eq!(encoded, data, "index payload re-encodes to its bytes");

    let mut b = IndexBuilder::default();
    for (p, e) in &packs {
        b.add_pack(*p, e);
    }
    let index = b.finish();
    assert!(index.len() <= packs.iter().map(|(_, e)| e.len()).sum());
    for (_, entries) in &packs {
        for e in entries {
            let loc = index
                .lookup(e.ty, &e.id)
                .expect("every listed blob is found");
            assert_eq!((loc.entry.id, loc.entry.ty), (e.id, e.ty));
            assert!(index.packs().contains(&loc.pack));
        }
    }
    for p in 0..index.len() {
        let (_, e) = index.entry_at(p);
        assert_eq!(index.position(e.ty, &e.id), Some(p));
    }
});
