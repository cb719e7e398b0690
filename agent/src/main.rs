//! `cairn`: parses the command line, runs one command, and decides the exit code, all here.
//! Exit codes follow restic: 0 success, 1 fatal error, 3 snapshot written but some files could
//! not be read, 10 no repository, 12 wrong password.

mod caps;
mod cli;
mod daemon;
mod signals;

use std::process::ExitCode;

use clap::Parser;

/// Sets glibc's allocator for the pipelines (docs/benchmarks.md, "Allocator settings").
/// By default each thread gets its own arena and the mmap threshold rises after the first
/// large `free` up to 32 MiB, so freed buffers stayed in the process (a first backup peaked at
/// 140–150 MB). Here: at most two arenas; blocks above one largest chunk (4 MiB, plus
/// compression's worst case) are mapped and unmapped on their own, while blob-sized buffers
/// come from the arenas and are reused; and up to 8 MiB free at an arena's top is kept rather
/// than given back and faulted in again for the next blob (a threshold of 1 MiB with glibc's
/// 128 KiB trim cost 150 000 page faults per first backup and 300 000 per restore).
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before any other thread
    // exists, as glibc requires, and every value is in the documented range.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, (4 << 20) + (512 << 10));
        libc::mallopt(libc::M_TRIM_THRESHOLD, 8 << 20);
    }
}

/// Writing to a closed pipe (`cairn snapshots | head -1`) ends a command quietly, as it ends
/// `cat` or `ls`, instead of panicking in `println!` (exit 101). Rust starts programs with
/// SIGPIPE ignored; the repository commands take the default back. The long-running faces
/// keep it ignored and see EPIPE as an error on the connection that failed.
fn default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: only sets SIGPIPE's disposition back to the default (no handler runs); signal()
    // is safe to call from any thread.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    tune_allocator();
    // One rustls crypto provider for kube, object_store and reqwest, before any client exists
    // (with two providers compiled in, rustls would refuse to pick one and kube would panic).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cancel = cairn_engine::Cancel::new();
    // Parsing starts no thread, so the signal mask can still be set after it.
    let args = cli::args::Cli::parse();
    // The server takes SIGTERM and SIGINT itself (tokio's handlers) and stops gracefully
    // within its own grace time; every other command gets the cancelling watcher.
    let server = matches!(args.command, cli::args::Command::Server(_));
    let caught = if server {
        signals::Caught::default()
    } else {
        signals::watch(cancel.clone())
    };
    if !matches!(
        args.command,
        cli::args::Command::Agent(_)
            | cli::args::Command::RestoreInit(_)
            | cli::args::Command::Server(_)
    ) {
        default_sigpipe();
    }
    let json = args.json;
    let result = cli::run(args, cancel);
    if let Some(sig) = caught.signal() {
        // Stopped by SIGINT/SIGTERM: one line, whatever the command was doing.
        let what = match &result {
            Ok(_) => "finished before it could stop".to_string(),
            Err(e) => format!("{e:#}"),
        };
        let code = signals::exit_code(sig);
        if json {
            let msg = serde_json::json!({ "error": what, "signal": signals::name(sig), "exit_code": code });
            eprintln!("{msg}");
        } else {
            eprintln!("cairn: interrupted by {}: {what}", signals::name(sig));
        }
        return ExitCode::from(code);
    }
    match result {
        Ok(cli::Outcome::Success) => ExitCode::SUCCESS,
        Ok(cli::Outcome::Partial) => ExitCode::from(3),
        Err(e) => {
            let code = cli::exit_code(&e);
            let hint = cli::advice::advice(&e);
            if json {
                let msg = serde_json::json!({ "error": format!("{e:#}"), "hint": hint, "exit_code": code });
                eprintln!("{msg}");
            } else {
                eprintln!("cairn: {e:#}");
                if let Some(hint) = hint {
                    eprintln!("hint: {hint}");
                }
            }
            ExitCode::from(code)
        }
    }
}
