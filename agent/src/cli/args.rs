//! The raw command line (clap). `cli::settings`-style validation happens in each command, which
//! turns these flags into the engine's option structs.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Deduplicating, encrypted backups of directories and Kubernetes pod volumes.
#[derive(Parser, Debug)]
#[command(name = "cairn", version, about, max_term_width = 100)]
pub struct Cli {
    /// Repository location: a directory path or file:///path.
    #[arg(short = 'r', long = "repo", env = "CAIRN_REPOSITORY", global = true)]
    pub repo: Option<String>,
    /// Read the password from this file (first line); else CAIRN_PASSWORD, else a prompt.
    #[arg(long, env = "CAIRN_PASSWORD_FILE", global = true)]
    pub password_file: Option<PathBuf>,
    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    pub json: bool,
    /// Print only errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Print more (repeat for more).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a new repository.
    Init(InitArgs),
    /// Back up files and directories into a new snapshot.
    Backup(BackupArgs),
    /// List snapshots.
    Snapshots(FilterArgs),
    /// Restore a snapshot (or a path inside it) into a directory.
    Restore(RestoreArgs),
    /// List the files in a snapshot.
    Ls(LsArgs),
    /// Print a repository object: config, snapshot, tree, blob, index, pack or key.
    Cat(CatArgs),
}

/// `init`
#[derive(Args, Debug)]
pub struct InitArgs {
    /// zstd level for new data (0 = no compression).
    #[arg(long, default_value_t = cairn_repo_format::config::DEFAULT_COMPRESSION)]
    pub compression: i32,
    /// Target pack size in MiB.
    #[arg(long, default_value_t = 16)]
    pub pack_size: u32,
    /// Chunk sizes in bytes as MIN,AVG,MAX (even numbers; default 131072,524288,4194304).
    #[arg(long, value_name = "MIN,AVG,MAX")]
    pub chunk_sizes: Option<String>,
    /// Argon2id memory in KiB for the key (default 65536).
    #[arg(long, hide = true)]
    pub kdf_memory: Option<u32>,
}

/// Snapshot filters.
#[derive(Args, Debug, Default, Clone)]
pub struct FilterArgs {
    /// Only snapshots from this host (repeatable).
    #[arg(long = "host", value_name = "HOST")]
    pub hosts: Vec<String>,
    /// Only snapshots with this tag (repeatable; all must match).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Only snapshots with this label (repeatable; all must match).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Only snapshots of exactly these paths (repeatable).
    #[arg(long = "path", value_name = "PATH")]
    pub paths: Vec<String>,
}

/// `backup`
#[derive(Args, Debug)]
pub struct BackupArgs {
    /// Files and directories to back up.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Tag the snapshot (repeatable).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Label the snapshot, e.g. pvc=data-postgresql-0 (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Host name to record (default: this machine's).
    #[arg(long = "host")]
    pub host: Option<String>,
    /// Exclude paths matching PATTERN (repeatable).
    #[arg(long = "exclude", short = 'e', value_name = "PATTERN")]
    pub excludes: Vec<String>,
    /// Read exclude patterns from FILE, one per line (repeatable).
    #[arg(long = "exclude-file", value_name = "FILE")]
    pub exclude_files: Vec<PathBuf>,
    /// Do not cross file-system boundaries.
    #[arg(long, short = 'x')]
    pub one_file_system: bool,
    /// Compare against this snapshot instead of the latest one of the same host and paths.
    #[arg(long)]
    pub parent: Option<String>,
    /// Read every file, ignoring the parent snapshot.
    #[arg(long)]
    pub force: bool,
    /// Ignore inode numbers when detecting changes (volumes remounted between backups).
    #[arg(long)]
    pub ignore_inode: bool,
    /// Ignore ctime when detecting changes.
    #[arg(long)]
    pub ignore_ctime: bool,
    /// Record this time (RFC 3339) instead of now.
    #[arg(long)]
    pub time: Option<String>,
    /// File-reading threads (default: one per CPU).
    #[arg(long, default_value_t = 0)]
    pub workers: usize,
}

/// `restore`
#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// `latest`, an id or id prefix, optionally followed by `:SUBPATH`.
    pub snapshot: String,
    /// Directory to restore into (created if missing).
    #[arg(long, short = 't')]
    pub target: PathBuf,
    /// Restore only paths matching PATTERN (repeatable).
    #[arg(long = "include", short = 'i', value_name = "PATTERN")]
    pub includes: Vec<String>,
    /// Skip paths matching PATTERN (repeatable).
    #[arg(long = "exclude", short = 'e', value_name = "PATTERN")]
    pub excludes: Vec<String>,
    /// Re-read restored files and check them against the snapshot.
    #[arg(long)]
    pub verify: bool,
    /// Filters for `latest`.
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// `ls`
#[derive(Args, Debug)]
pub struct LsArgs {
    /// `latest` or an id (prefix).
    pub snapshot: String,
    /// Only below this path.
    pub path: Option<String>,
    /// Show mode, owner, size and time.
    #[arg(long, short = 'l')]
    pub long: bool,
    /// Filters for `latest`.
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// `cat`
#[derive(Args, Debug)]
pub struct CatArgs {
    /// config, snapshot, tree, blob, index, pack or key.
    pub kind: String,
    /// The object's id (a prefix works for snapshot, index, pack and key; `latest` for snapshot).
    pub id: Option<String>,
}
