//! Fuzz target: condemned lists (`committed (u8) || time (i64 LE) || index payload`), as
//! `Repository::load_index` reads them into the pending index. Checks: an accepted list
//! re-encodes to the same bytes, and the pending index built from it finds its blobs.
#![no_main]

use cairn_repo_format::condemned;
use cairn_repo_format::id::Id;
use cairn_repo_format::index::IndexBuilder;
use cairn_repo_format::pack::PackEntry;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut packs: Vec<(Id, Vec<PackEntry>)> = Vec::new();
    let Ok(stamp) = condemned::decode(data, |p, e| packs.push((p, e))) else {
        return;
    };
    let encoded = condemned::encode(stamp, packs.iter().map(|(p, e)| (p, e.as_slice())));
    assert_eq!(encoded, data, "condemned list re-encodes to its bytes");
    let mut b = IndexBuilder::default();
    for (p, e) in &packs {
        b.add_pack(*p, e);
    }
    let pending = b.finish();
    for (_, entries) in &packs {
        for e in entries {
            assert!(pending.contains(e.ty, &e.id));
        }
    }
});
