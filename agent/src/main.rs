//! `cairn`: parses the command line, runs one command, and decides the exit code, all here.
//! Exit codes follow restic: 0 success, 1 fatal error, 3 snapshot written but some files could
//! not be read, 10 no repository, 12 wrong password.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
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
