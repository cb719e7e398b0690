//! Fuzz target: the repository config, as `Repository::open` reads it: the sealed object is
//! opened (the input is its payload), parsed as JSON, and checked (format version, chunker
//! sizes). A config that passes must work: its chunker is built and cuts, its compression
//! level compresses, and it survives a serialize/parse round trip.
#![no_main]

use cairn_fuzz::{key, seal_payload};
use cairn_repo_format::chunker::Chunker;
use cairn_repo_format::compress;
use cairn_repo_format::config::{Config, FORMAT_VERSION};
use cairn_repo_format::object::{ObjectKind, open_object};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let plain = open_object(
        key(),
        ObjectKind::Config,
        &seal_payload(ObjectKind::Config, data),
    )
    .expect("an uncompressed object opens");
    assert_eq!(plain, data);
    let Ok(config) = serde_json::from_slice::<Config>(&plain) else {
        return;
    };
    let json = serde_json::to_vec(&config).expect("a parsed config serializes");
    let again: Config = serde_json::from_slice(&json).expect("and parses back");
    assert_eq!(again, config, "config round trip");
    if config.version > FORMAT_VERSION || config.chunker.validate().is_err() {
        return;
    }
    let chunker = Chunker::new(&config.chunker).expect("validated params build a chunker");
    // A little data to cut: the input itself, repeated past the minimum chunk when small.
    let sample: Vec<u8> = data.iter().copied().cycle().take(8192).collect();
    let lengths = chunker.chunk_lengths(&sample);
    assert_eq!(lengths.iter().sum::<usize>(), sample.len());
    assert!(lengths.iter().all(|&n| n > 0 && n <= chunker.max_size()));
    if let Some(c) = compress::compress(&sample, config.compression) {
        assert_eq!(
            compress::decompress(&c, sample.len()).expect("own output decompresses"),
            sample
        );
    }
});
