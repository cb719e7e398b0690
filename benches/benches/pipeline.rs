//! Criterion benchmarks of the backup stages on one core: chunk (FastCDC), hash (keyed
//! BLAKE3), compress (zstd), seal (AES-256-GCM of what compress produced), pack (copying
//! sealed blobs into packs and hashing them), and the whole in-memory chain chunk → hash →
//! compress → seal → pack, on one thread and in the agent's layout (one thread chunks and
//! hashes, one seal thread per core compresses and encrypts, one thread packs), on a buffer that
//! is half random bytes and half real text, with the repository's default chunk sizes.
//! Every throughput is in bytes of input; `cargo run --release -p cairn-benches --bin ceiling`
//! turns the stage medians into the ceiling (their harmonic sum) and compares the pipelines.

use std::hint::black_box;

use cairn_repo_format::blob::{SealedBlob, seal_blob};
use cairn_repo_format::chunker::{Chunker, ChunkerParams};
use cairn_repo_format::config::{
    DEFAULT_CHUNK_AVG, DEFAULT_CHUNK_MAX, DEFAULT_CHUNK_MIN, DEFAULT_COMPRESSION, DEFAULT_PACK_SIZE,
};
use cairn_repo_format::crypto::MasterKey;
use cairn_repo_format::pack::PackBuilder;
use cairn_repo_format::{BlobType, Id, compress};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const LEN: usize = 32 << 20;

/// Half pseudo-random bytes, half text gathered from /usr/share/doc and /usr/include.
fn input() -> Vec<u8> {
    let mut data = Vec::with_capacity(LEN);
    let mut x = 0x9e3779b97f4a7c15u64;
    while data.len() < LEN / 2 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    let mut text = Vec::new();
    for dir in ["/usr/include", "/usr/share/doc"] {
        let mut stack = vec![std::path::PathBuf::from(dir)];
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            let mut entries: Vec<_> = rd.flatten().map(|e| e.path()).collect();
            entries.sort();
            for p in entries {
                if text.len() >= LEN / 2 {
                    break;
                }
                if p.is_dir() {
                    stack.push(p);
                } else if let Ok(b) = std::fs::read(&p)
                    && std::str::from_utf8(&b).is_ok()
                {
                    text.extend_from_slice(&b);
                }
            }
        }
    }
    text.truncate(LEN / 2);
    data.extend_from_slice(&text);
    data.resize(LEN, b' ');
    data
}

fn stages(c: &mut Criterion) {
    let data = input();
    let key = MasterKey::generate();
    let chunker = Chunker::new(&ChunkerParams {
        min: DEFAULT_CHUNK_MIN,
        avg: DEFAULT_CHUNK_AVG,
        max: DEFAULT_CHUNK_MAX,
        seed: 7,
    })
    .unwrap();
    let lens = chunker.chunk_lengths(&data);
    let chunks: Vec<&[u8]> = {
        let mut off = 0;
        lens.iter()
            .map(|&l| {
                off += l;
                &data[off - l..off]
            })
            .collect()
    };
    // What the seal stage sees: the compressed payload, or the chunk when it does not shrink.
    let payloads: Vec<Vec<u8>> = chunks
        .iter()
        .map(|c| compress::compress(c, DEFAULT_COMPRESSION).unwrap_or_else(|| c.to_vec()))
        .collect();
    let sealed: Vec<SealedBlob> = chunks
        .iter()
        .map(|c| seal_blob(&key, BlobType::Data, key.blob_id(c), c, DEFAULT_COMPRESSION))
        .collect();
    let mut g = c.benchmark_group("stage");
    g.throughput(Throughput::Bytes(LEN as u64));
    g.sample_size(10);
    g.bench_function("chunk", |b| {
        b.iter(|| black_box(chunker.chunk_lengths(black_box(&data))))
    });
    g.bench_function("hash", |b| {
        b.iter(|| {
            chunks
                .iter()
                .map(|c| key.blob_id(c).0[0])
                .fold(0u8, u8::wrapping_add)
        })
    });
    g.bench_function("compress", |b| {
        b.iter(|| {
            chunks
                .iter()
                .filter_map(|c| compress::compress(c, DEFAULT_COMPRESSION))
                .count()
        })
    });
    g.bench_function("seal", |b| {
        b.iter(|| {
            payloads
                .iter()
                .map(|p| key.seal(b"x", p).len())
                .sum::<usize>()
        })
    });
    g.bench_function("pack", |b| {
        b.iter(|| {
            let mut pack = PackBuilder::default();
            let mut ids = 0u8;
            for s in &sealed {
                pack.add(s);
                if pack.len() >= DEFAULT_PACK_SIZE as usize {
                    ids ^= std::mem::take(&mut pack).finish(&key).id.0[0];
                }
            }
            ids ^ pack.finish(&key).id.0[0]
        })
    });
    g.bench_function("pipeline-1-thread", |b| {
        b.iter(|| pipeline_one_thread(&chunker, &key, &data))
    });
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    g.bench_function(format!("pipeline-{cores}-cores"), |b| {
        b.iter(|| pipeline_threads(&chunker, &key, &data, cores))
    });
    // The machine's own limit for this work: one independent one-thread pipeline per core,
    // each on its share of the buffer, with nothing shared (what perfect scaling can reach here).
    g.bench_function(format!("pipeline-{cores}-independent"), |b| {
        b.iter(|| {
            std::thread::scope(|s| {
                let hs: Vec<_> = data
                    .chunks(data.len().div_ceil(cores))
                    .map(|part| s.spawn(|| pipeline_one_thread(&chunker, &key, part)))
                    .collect();
                hs.into_iter()
                    .map(|h| h.join().unwrap())
                    .fold(0, |a, b| a ^ b)
            })
        })
    });
    g.finish();
}

/// chunk → hash → compress → seal → pack, all on the calling thread.
fn pipeline_one_thread(chunker: &Chunker, key: &MasterKey, data: &[u8]) -> u8 {
    let mut pack = PackBuilder::default();
    let mut ids = 0u8;
    let mut off = 0;
    for l in chunker.chunk_lengths(data) {
        let c = &data[off..off + l];
        off += l;
        let id = key.blob_id(c);
        pack.add(&seal_blob(key, BlobType::Data, id, c, DEFAULT_COMPRESSION));
        if pack.len() >= DEFAULT_PACK_SIZE as usize {
            ids ^= std::mem::take(&mut pack).finish(key).id.0[0];
        }
    }
    ids ^ pack.finish(key).id.0[0]
}

/// The agent's layout for one large file: this thread chunks and hashes and copies each chunk
/// out, `sealers` threads compress and encrypt, one thread packs; bounded queues between.
fn pipeline_threads(chunker: &Chunker, key: &MasterKey, data: &[u8], sealers: usize) -> u8 {
    let (chunk_tx, chunk_rx) = crossbeam_channel::bounded::<(Id, Vec<u8>)>(sealers * 2);
    let (blob_tx, blob_rx) = crossbeam_channel::bounded::<SealedBlob>(sealers * 4);
    std::thread::scope(|s| {
        for _ in 0..sealers {
            let (rx, tx) = (chunk_rx.clone(), blob_tx.clone());
            s.spawn(move || {
                for (id, c) in rx {
                    let _ = tx.send(seal_blob(key, BlobType::Data, id, &c, DEFAULT_COMPRESSION));
                }
            });
        }
        drop((chunk_rx, blob_tx));
        let packer = s.spawn(move || {
            let mut pack = PackBuilder::default();
            let mut ids = 0u8;
            for b in blob_rx {
                pack.add(&b);
                if pack.len() >= DEFAULT_PACK_SIZE as usize {
                    ids ^= std::mem::take(&mut pack).finish(key).id.0[0];
                }
            }
            ids ^ pack.finish(key).id.0[0]
        });
        let mut off = 0;
        for l in chunker.chunk_lengths(data) {
            let c = &data[off..off + l];
            off += l;
            let _ = chunk_tx.send((key.blob_id(c), c.to_vec()));
        }
        drop(chunk_tx);
        packer.join().unwrap()
    })
}

criterion_group!(benches, stages);
criterion_main!(benches);
