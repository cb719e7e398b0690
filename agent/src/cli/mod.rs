//! The `cairn` command's glue: opening the repository from flags and environment, the
//! password, one module per command, output helpers, and the error → exit code mapping.

pub mod advice;
mod agent;
pub mod args;
mod backup;
mod cat;
mod check;
mod copy;
mod diff;
mod dump;
mod events;
mod find;
mod forget;
mod init;
mod key;
mod ls;
mod progress;
mod prune;
mod repair;
mod restore;
mod restore_init;
mod server;
mod snapshots;
mod stats;
mod tag;
mod text;
mod unlock;

use std::io::IsTerminal;

use anyhow::{Context, Result, anyhow, bail};
use cairn_engine::location::{Location, LocationError, Transfer};
use cairn_engine::open::SettingsError;
use cairn_engine::select::SnapshotFilter;
use cairn_engine::{OpenError, PasswordSource, RepoSettings};
use cairn_repo_format::Backend as _;
use cairn_repo_format::backend::{Access, RestAuth, RestBackend};
use cairn_repo_format::{Indexed, Opened, RepoError, Repository};

use args::{Cli, Command, FilterArgs};

/// How a successful command ended.
pub enum Outcome {
    /// Everything worked.
    Success,
    /// A snapshot was written but some files could not be read (exit 3).
    Partial,
}

/// Output settings shared by all commands.
pub struct Out {
    pub json: bool,
    pub quiet: bool,
    pub verbose: u8,
}

impl Out {
    /// Progress displays only on a terminal, and never with --json or --quiet.
    pub fn progress(&self) -> bool {
        !self.json && !self.quiet && std::io::stderr().is_terminal()
    }

    /// Prints an informational line (not with --json or --quiet).
    pub fn info(&self, msg: impl std::fmt::Display) {
        if !self.json && !self.quiet {
            println!("{msg}");
        }
    }
}

/// Runs the parsed command line; `cancel` is set by SIGINT and SIGTERM.
pub fn run(cli: Cli, cancel: cairn_engine::Cancel) -> Result<Outcome> {
    // The Kubernetes faces always speak JSON lines.
    let json = cli.json || matches!(cli.command, Command::RestoreInit(_) | Command::Agent(_));
    let out = Out {
        json,
        quiet: cli.quiet,
        verbose: cli.verbose,
    };
    if let Command::Server(a) = cli.command {
        return server::run(*a, cli.repo);
    }
    let ctx = Ctx {
        repo: cli.repo,
        server: cairn_repo_format::backend::RestAuth {
            token: None,
            token_file: cli.server_token_file,
            cacert: cli.cacert,
        },
        password_file: cli.password_file,
        password_env: "CAIRN_PASSWORD",
        transfer: Transfer {
            connections: cli.connections,
            limit_upload_kib: cli.limit_upload,
            limit_download_kib: cli.limit_download,
        },
        cx: cairn_engine::Context {
            events: events::printer(out.json, out.quiet),
            cancel,
        },
    };
    if let Some((needed, name)) = needed_access(&cli.command) {
        ctx.require(needed, name)?;
    }
    match cli.command {
        Command::Server(_) => unreachable!("handled above"),
        Command::Init(a) => init::run(&ctx, &out, a),
        Command::Backup(a) => backup::run(&ctx, &out, a),
        Command::Snapshots(a) => snapshots::run(&ctx, &out, a),
        Command::Restore(a) => restore::run(&ctx, &out, a),
        Command::Ls(a) => ls::run(&ctx, &out, a),
        Command::Cat(a) => cat::run(&ctx, &out, a),
        Command::Check(a) => check::run(&ctx, &out, a),
        Command::Forget(a) => forget::run(&ctx, &out, *a),
        Command::Prune(a) => prune::run(&ctx, &out, a),
        Command::Key(a) => key::run(&ctx, &out, a),
        Command::Unlock(a) => unlock::run(&ctx, &out, a),
        Command::Tag(a) => tag::run(&ctx, &out, a),
        Command::Repair(a) => repair::run(&ctx, &out, a),
        Command::Copy(a) => copy::run(&ctx, &out, a),
        Command::Diff(a) => diff::run(&ctx, &out, a),
        Command::Find(a) => find::run(&ctx, &out, a),
        Command::Dump(a) => dump::run(&ctx, &out, a),
        Command::Stats(a) => stats::run(&ctx, &out, a),
        Command::Agent(a) => agent::run(&ctx, a),
        Command::RestoreInit(a) => restore_init::run(&ctx, a),
    }
}

/// The access a command needs from a repository server, and its name for the message.
/// Read-only commands need nothing beyond what every token has.
fn needed_access(c: &Command) -> Option<(Access, &'static str)> {
    Some(match c {
        Command::Init(_) => (Access::Full, "init"),
        Command::Forget(_) => (Access::Full, "forget"),
        Command::Prune(_) => (Access::Full, "prune"),
        Command::Key(args::KeyCommand::List) => return None,
        Command::Key(_) => (Access::Full, "key"),
        Command::Tag(_) => (Access::Full, "tag"),
        Command::Repair(_) => (Access::Full, "repair"),
        Command::Unlock(_) => (Access::Full, "unlock"),
        Command::Backup(_) => (Access::Append, "backup"),
        Command::Copy(_) => (Access::Append, "copy"),
        Command::Agent(_) => (Access::Append, "agent"),
        _ => return None,
    })
}

/// The exit code for an error: 10 no repository, 12 wrong password, else 1.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    for cause in advice::causes(e) {
        if let Some(r) = cause.downcast_ref::<RepoError>() {
            match r {
                RepoError::NotFound { .. } => return 10,
                RepoError::WrongPassword { .. } => return 12,
                _ => {}
            }
        }
    }
    1
}

/// Reports a snapshot object that a listing left out because it cannot be read.
pub fn skip_damaged_snapshot(ctx: &Ctx, id: cairn_repo_format::Id, e: RepoError) {
    ctx.cx().emit(cairn_engine::Event::ObjectDamaged {
        object: cairn_repo_format::FileKind::Snapshot.path(&id),
        problem: format!("{e}; left out"),
    });
}

/// A callback for the engine's selection functions that reports each snapshot left out as
/// unreadable ([`skip_damaged_snapshot`]).
pub fn report_damaged(ctx: &Ctx) -> impl FnMut(cairn_repo_format::Id, RepoError) + '_ {
    move |id, e| skip_damaged_snapshot(ctx, id, e)
}

/// Where the repository and password come from, and what every operation gets: the event
/// printer and the cancel handle that SIGINT and SIGTERM set.
pub struct Ctx {
    repo: Option<String>,
    /// For a repository server: `--server-token-file` (else CAIRN_SERVER_TOKEN), `--cacert`.
    server: RestAuth,
    password_file: Option<std::path::PathBuf>,
    /// The variable holding the password (`CAIRN_PASSWORD`, or `CAIRN_FROM_PASSWORD`).
    password_env: &'static str,
    /// `--connections`, `--limit-upload`, `--limit-download`.
    transfer: Transfer,
    /// Events printed as `out` says, and the process's cancel handle.
    cx: cairn_engine::Context,
}

impl Ctx {
    fn location(&self) -> Result<Location> {
        Ok(Location::parse(self.repo.as_deref().unwrap_or(""))?)
    }

    /// Stops a command early, before it writes anything, when the repository is behind a
    /// server whose token does not grant what the command needs.
    fn require(&self, needed: Access, command: &str) -> Result<()> {
        // Without a usable location the command reports that itself.
        let Ok(Location::Rest { url }) = self.location() else {
            return Ok(());
        };
        let have = RestBackend::new(&url, &self.server)?.access()?;
        let enough = match needed {
            Access::Full => have == Access::Full,
            Access::Append => have != Access::Read,
            Access::Read => true,
        };
        if !enough {
            bail!(
                "cairn {command} needs the {} role, but this token has the {} role at rest:{url}; nothing was written (use a token with the {} role)",
                needed.name(),
                have.name(),
                needed.name()
            );
        }
        Ok(())
    }

    /// The engine's context for an operation: events printed, SIGINT/SIGTERM cancel.
    pub fn cx(&self) -> &cairn_engine::Context {
        &self.cx
    }

    /// Where the password comes from: --password-file / CAIRN_PASSWORD_FILE, CAIRN_PASSWORD,
    /// or a prompt on the terminal.
    fn password_source(&self) -> Result<PasswordSource> {
        if let Some(f) = &self.password_file {
            return Ok(PasswordSource::File(f.clone()));
        }
        if std::env::var_os(self.password_env).is_some() {
            return Ok(PasswordSource::Env(self.password_env.to_string()));
        }
        if !std::io::stdin().is_terminal() {
            let (env, flag) = match self.password_env {
                "CAIRN_PASSWORD" => ("CAIRN_PASSWORD", "--password-file"),
                _ => ("CAIRN_FROM_PASSWORD", "--from-password-file"),
            };
            bail!(
                "no password given for {}: set {env} or {env}_FILE, or pass {flag}",
                self.repo.as_deref().unwrap_or("the repository")
            );
        }
        Ok(PasswordSource::Prompt(std::sync::Arc::new(|question| {
            rpassword::prompt_password(question).map_err(|e| e.to_string())
        })))
    }

    /// The one validated settings value the engine opens repositories from.
    pub fn settings(&self) -> Result<RepoSettings> {
        let mut settings = RepoSettings::new(
            self.repo.as_deref().unwrap_or(""),
            self.transfer,
            self.password_source()?,
        )
        .map_err(flag_advice)?;
        settings.server = self.server.clone();
        Ok(settings)
    }

    /// The password (for `init`, asked twice on a terminal when `confirm`).
    fn password(&self, confirm: bool) -> Result<String> {
        let source = self.password_source()?;
        let pw = String::from_utf8(source.read()?)
            .map_err(|_| anyhow!("the password is not valid UTF-8"))?;
        if confirm && matches!(source, PasswordSource::Prompt(_)) {
            let again = rpassword::prompt_password("enter password again: ")?;
            if again != pw {
                bail!("passwords do not match");
            }
        }
        Ok(pw)
    }

    /// A new password: from `file`, else CAIRN_NEW_PASSWORD, else a prompt (asked twice).
    fn new_password(&self, file: Option<&std::path::Path>) -> Result<String> {
        let pw = if let Some(f) = file {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("cannot read new password file {}", f.display()))?;
            text.lines().next().unwrap_or("").to_string()
        } else if let Ok(pw) = std::env::var("CAIRN_NEW_PASSWORD") {
            pw
        } else if std::io::stdin().is_terminal() {
            let pw = rpassword::prompt_password("enter new password: ")?;
            if rpassword::prompt_password("enter new password again: ")? != pw {
                bail!("passwords do not match");
            }
            pw
        } else {
            bail!("no new password given: pass --new-password-file or set CAIRN_NEW_PASSWORD");
        };
        if pw.is_empty() {
            bail!("empty password refused");
        }
        Ok(pw)
    }

    /// Another repository (for `copy --from-repo`), with its own password source.
    /// It shares this one's connections, rate limits and context.
    pub fn other(&self, location: &str, password_file: Option<std::path::PathBuf>) -> Ctx {
        Ctx {
            repo: Some(location.to_string()),
            server: self.server.clone(),
            password_file,
            password_env: "CAIRN_FROM_PASSWORD",
            transfer: self.transfer,
            cx: self.cx.clone(),
        }
    }

    /// Opens the repository (keys and config).
    pub fn open(&self) -> Result<Repository<Opened>> {
        Ok(self.settings()?.open()?)
    }

    /// Opens the repository and loads its index.
    pub fn open_indexed(&self) -> Result<Repository<Indexed>> {
        Ok(self.settings()?.open_indexed(&self.cx)?)
    }
}

/// Names the flag behind a transfer setting the engine refused.
fn flag_advice(e: OpenError) -> anyhow::Error {
    match e {
        OpenError::Location(LocationError::Settings(s)) => {
            let advice = match s {
                SettingsError::NoConnections => {
                    "--connections 0 would never send a request: give at least 1".to_string()
                }
                SettingsError::ZeroRate(dir) => format!(
                    "--limit-{dir} 0 would stop every transfer: give a rate in KiB/s, or leave the flag out for no limit"
                ),
            };
            anyhow!(advice)
        }
        e => e.into(),
    }
}

/// Parses `key=value`.
pub fn parse_label(s: &str) -> Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(anyhow!("label {s:?} is not KEY=VALUE")),
    }
}

impl FilterArgs {
    /// The engine's filter.
    pub fn to_filter(&self) -> Result<SnapshotFilter> {
        Ok(SnapshotFilter {
            hosts: self.hosts.clone(),
            tags: self
                .tags
                .iter()
                .flat_map(|t| t.split(','))
                .map(str::to_string)
                .collect(),
            labels: self
                .labels
                .iter()
                .map(|l| parse_label(l))
                .collect::<Result<_>>()?,
            paths: self.paths.clone(),
        })
    }
}

/// Human-readable byte count.
pub fn bytes(n: u64) -> String {
    cairn_engine::human_bytes(n)
}
