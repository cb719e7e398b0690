//! `cairn`: parses the command line, runs one command, and decides the exit code, all here.
//! Exit codes follow restic: 0 success, 1 fatal error, 3 snapshot written but some files could
//! not be read, 10 no repository, 12 wrong password.

mod cli;

use std::process::ExitCode;

use clap::Parser;

/// Keeps glibc's allocator from holding on to freed pipeline buffers. By default each thread
/// gets its own arena and large blocks (packs, chunks, sealed blobs) stay in arenas after
/// `free`, so a first backup of the standard dataset peaked at 140–150 MB of RSS; with at most
/// two arenas and blocks of 1 MiB and more given back to the kernel at once, 73 MB, at about
/// the same wall time (docs/benchmarks.md, "Allocator settings").
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before any other thread
    // exists, as glibc requires, and both values are in the documented ranges.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

fn main() -> ExitCode {
    tune_allocator();
    let args = cli::args::Cli::parse();
    let json = args.json;
    match cli::run(args) {
        Ok(cli::Outcome::Success) => ExitCode::SUCCESS,
        Ok(cli::Outcome::Partial) => ExitCode::from(3),
        Err(e) => {
            let code = cli::exit_code(&e);
            if json {
                let msg = serde_json::json!({ "error": format!("{e:#}"), "exit_code": code });
                eprintln!("{msg}");
            } else {
                eprintln!("cairn: {e:#}");
            }
            ExitCode::from(code)
        }
    }
}
