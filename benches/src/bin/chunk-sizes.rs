//! Measures chunker parameters on a real directory tree: for each (min, avg, max) it reports
//! the number of chunks, the bytes left after deduplication, and, after the tree is changed
//! (`../shared/bench/mutate.sh`), how many new bytes a second backup would store.
//!
//! Usage: `chunk-sizes scan DIR OUT.json` before mutating, then `chunk-sizes compare DIR OUT.json`
//! after; the first run records chunk ids per setting, the second counts what is new.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::Path;
use std::time::Instant;

use cairn_repo_format::chunker::{ChunkReader, Chunker, ChunkerParams};

const SETTINGS: [(u32, u32, u32); 5] = [
    (64 << 10, 256 << 10, 2 << 20),
    (128 << 10, 512 << 10, 4 << 20),
    (256 << 10, 1 << 20, 8 << 20),
    (512 << 10, 1 << 20, 8 << 20),
    (1 << 20, 2 << 20, 16 << 20),
];

type Chunks = HashMap<[u8; 32], u32>;

fn chunk_tree(dir: &Path, p: (u32, u32, u32)) -> (Chunks, u64, u64, f64) {
    let params = ChunkerParams {
        min: p.0,
        avg: p.1,
        max: p.2,
        seed: 0x5eed,
    };
    let mut reader = ChunkReader::new(Chunker::new(&params).expect("valid"), 1 << 20);
    let mut chunks = Chunks::new();
    let (mut count, mut total) = (0u64, 0u64);
    let start = Instant::now();
    let mut files: Vec<_> = walkdir(dir);
    files.sort();
    for f in files {
        let Ok(file) = File::open(&f) else { continue };
        let mut it = reader.chunks(file);
        while let Ok(Some(c)) = it.next_chunk() {
            count += 1;
            total += c.len() as u64;
            chunks.insert(*blake3::hash(c).as_bytes(), c.len() as u32);
        }
    }
    (chunks, count, total, start.elapsed().as_secs_f64())
}

fn walkdir(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                out.push(e.path());
            }
        }
    }
    out
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 || !(args[1] == "scan" || args[1] == "compare") {
        eprintln!("usage: chunk-sizes scan|compare DIR STATE_FILE");
        std::process::exit(2);
    }
    let (dir, state) = (Path::new(&args[2]), Path::new(&args[3]));
    let mut saved: Vec<HashSet<[u8; 32]>> = Vec::new();
    if args[1] == "compare" {
        let bytes = std::fs::read(state).expect("state file from a scan run");
        for part in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            saved.push(
                part.chunks_exact(64)
                    .map(|h| {
                        let v =
                            cairn_repo_format::id::hex_decode(std::str::from_utf8(h).expect("hex"))
                                .expect("hex");
                        v.try_into().expect("32 bytes")
                    })
                    .collect(),
            );
        }
    }
    println!(
        "| min | avg | max | chunks | mean chunk | input | after dedup | chunking s | new after mutate |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut out = Vec::new();
    for (i, p) in SETTINGS.iter().enumerate() {
        let (chunks, count, total, secs) = chunk_tree(dir, *p);
        let unique: u64 = chunks.values().map(|&l| l as u64).sum();
        let new = if saved.is_empty() {
            "-".to_string()
        } else {
            let n: u64 = chunks
                .iter()
                .filter(|(h, _)| !saved[i].contains(*h))
                .map(|(_, &l)| l as u64)
                .sum();
            format!("{:.1} MiB", n as f64 / 1048576.0)
        };
        println!(
            "| {} KiB | {} KiB | {} KiB | {} | {:.0} KiB | {:.1} MiB | {:.1} MiB | {:.2} | {} |",
            p.0 >> 10,
            p.1 >> 10,
            p.2 >> 10,
            count,
            total as f64 / count.max(1) as f64 / 1024.0,
            total as f64 / 1048576.0,
            unique as f64 / 1048576.0,
            secs,
            new
        );
        for h in chunks.keys() {
            out.extend_from_slice(cairn_repo_format::id::hex_encode(h).as_bytes());
        }
        out.push(b'\n');
    }
    if args[1] == "scan" {
        std::fs::write(state, out).expect("write state");
    }
}
