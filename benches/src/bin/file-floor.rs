//! The floor under restoring many small files: what the file system alone charges for creating
//! them. Writes COUNT files of SIZE bytes (500 to a directory) from one in-memory buffer, on as
//! many threads as there are cores, with exactly the system calls a restore makes per file
//! (`openat` creating it, `pwrite`, `fchown`, `fchmod`, `futimens`, `close`; counted with
//! `strace -c` on a restore), and reports the
//! median wall time of ROUNDS runs. Nothing is read, decrypted or decompressed, so a restore of
//! the same files cannot be faster than this plus the time to restore the same bytes as a few
//! large files.
//!
//! Usage: `cargo run --release -p cairn-benches --bin file-floor -- DIR [COUNT] [SIZE] [ROUNDS]`
//! (defaults 51200 files of 16384 bytes, 5 rounds; DIR on the same file system as the restore
//! it is compared with, and emptied between rounds). `NOCHMOD=1` or `NOCHOWN=1` leaves that call
//! out, to weigh it; SIZE 0 leaves the data out.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

const PER_DIR: usize = 500;

struct Settings {
    dir: PathBuf,
    count: usize,
    size: usize,
    rounds: usize,
}

fn settings() -> Result<Settings, String> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .map(PathBuf::from)
        .ok_or("usage: file-floor DIR [COUNT] [SIZE] [ROUNDS]")?;
    let mut number = |name: &str, default: usize| -> Result<usize, String> {
        match args.next() {
            None => Ok(default),
            Some(s) => s
                .parse()
                .map_err(|e| format!("{name} {s:?}: {e}; give a whole number")),
        }
    };
    Ok(Settings {
        dir,
        count: number("COUNT", 51_200)?,
        size: number("SIZE", 16 << 10)?,
        rounds: number("ROUNDS", 5)?,
    })
}

/// Creates files `first, first + step, ...` below `root`, the way a restore's file worker does.
fn create(root: &Path, s: &Settings, first: usize, step: usize, data: &[u8]) -> Result<(), String> {
    let skip_chmod = std::env::var_os("NOCHMOD").is_some();
    let skip_chown = std::env::var_os("NOCHOWN").is_some();
    let owner = std::fs::metadata(root).map_err(|e| format!("{}: {e}", root.display()))?;
    let (uid, gid) = (owner.uid(), owner.gid());
    let mtime = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    for i in (first..s.count).step_by(step) {
        let path = root
            .join(format!("d{:04}", i / PER_DIR))
            .join(format!("f{:03}", i % PER_DIR));
        let err = |e: std::io::Error| format!("{}: {e}", path.display());
        let file: File = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(err)?;
        if !data.is_empty() {
            file.write_all_at(data, 0).map_err(err)?;
        }
        if !skip_chown {
            std::os::unix::fs::fchown(&file, Some(uid), Some(gid)).map_err(err)?;
        }
        if !skip_chmod {
            file.set_permissions(std::fs::Permissions::from_mode(0o644))
                .map_err(err)?;
        }
        file.set_times(
            std::fs::FileTimes::new()
                .set_accessed(mtime)
                .set_modified(mtime),
        )
        .map_err(err)?;
    }
    Ok(())
}

fn round(s: &Settings, data: &[u8]) -> Result<Duration, String> {
    let root = s.dir.join("floor");
    if root.exists() {
        std::fs::remove_dir_all(&root).map_err(|e| format!("{}: {e}", root.display()))?;
    }
    for d in 0..s.count.div_ceil(PER_DIR) {
        let path = root.join(format!("d{d:04}"));
        std::fs::create_dir_all(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let start = Instant::now();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let root = &root;
                scope.spawn(move || create(root, s, t, threads, data))
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().map_err(|_| "a worker panicked".to_string())?)
    })?;
    let took = start.elapsed();
    std::fs::remove_dir_all(&root).map_err(|e| format!("{}: {e}", root.display()))?;
    Ok(took)
}

fn main() {
    let s = match settings() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("file-floor: {e}");
            std::process::exit(2);
        }
    };
    // Bytes that do not repeat, so no file system shortcut applies.
    let mut x = 0x9E37_79B9_7F4A_7C15_u64;
    let data: Vec<u8> = (0..s.size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let mut times = Vec::new();
    for _ in 0..s.rounds.max(1) {
        match round(&s, &data) {
            Ok(t) => times.push(t.as_secs_f64()),
            Err(e) => {
                eprintln!("file-floor: {e}");
                std::process::exit(1);
            }
        }
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "{} files of {} bytes: median {:.3} s over {} rounds ({:.1} us per file per core; all: {:?})",
        s.count,
        s.size,
        median,
        times.len(),
        median * 1e6 / s.count as f64
            * std::thread::available_parallelism().map_or(2, |n| n.get()) as f64,
        times.iter().map(|t| format!("{t:.3}")).collect::<Vec<_>>()
    );
}
