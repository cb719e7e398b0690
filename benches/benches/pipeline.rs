//! Criterion benchmarks of the backup stages on one core: chunk (FastCDC), hash (keyed
//! BLAKE3), compress (zstd), seal (AES-256-GCM), and the whole in-memory chain chunk → hash →
//! compress → seal → pack, on a buffer that is half random bytes and half real text.

use std::hint::black_box;

use cairn_repo_format::blob::seal_blob;
use cairn_repo_format::chunker::{Chunker, ChunkerParams};
use cairn_repo_format::crypto::MasterKey;
use cairn_repo_format::pack::PackBuilder;
use cairn_repo_format::{BlobType, compress};
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
        min: 512 << 10,
        avg: 1 << 20,
        max: 8 << 20,
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
                .filter_map(|c| compress::compress(c, 3))
                .count()
        })
    });
    g.bench_function("seal", |b| {
        b.iter(|| {
            chunks
                .iter()
                .map(|c| key.seal(b"x", c).len())
                .sum::<usize>()
        })
    });
    g.bench_function("pipeline", |b| {
        b.iter(|| {
            let mut pack = PackBuilder::default();
            for c in chunker.chunk_lengths(&data).iter().scan(0usize, |off, &l| {
                *off += l;
                Some(&data[*off - l..*off])
            }) {
                let id = key.blob_id(c);
                pack.add(&seal_blob(&key, BlobType::Data, id, c, 3));
            }
            black_box(pack.finish(&key).id)
        })
    });
    g.finish();
}

criterion_group!(benches, stages);
criterion_main!(benches);
