//! The raw command line (clap). `cli::settings`-style validation happens in each command, which
//! turns these flags into the engine's option structs.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Deduplicating, encrypted backups of directories and Kubernetes pod volumes.
#[derive(Parser, Debug)]
#[command(name = "cairn", version, about, max_term_width = 100)]
pub struct Cli {
    /// Repository location: a directory path, file:///path, azure://CONTAINER/PREFIX,
    /// s3://BUCKET/PREFIX, gs://BUCKET/PREFIX, or rest:https://HOST:PORT/PREFIX (a `cairn
    /// server`; its token from CAIRN_SERVER_TOKEN or --server-token-file).
    #[arg(short = 'r', long = "repo", env = "CAIRN_REPOSITORY", global = true)]
    pub repo: Option<String>,
    /// For a rest: repository: read the server token from this file (first line); else
    /// CAIRN_SERVER_TOKEN.
    #[arg(
        long,
        env = "CAIRN_SERVER_TOKEN_FILE",
        global = true,
        value_name = "FILE"
    )]
    pub server_token_file: Option<PathBuf>,
    /// For a rest: repository: trust only the CA certificates in this PEM file (instead of
    /// the system's).
    #[arg(long, env = "CAIRN_CACERT", global = true, value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// Read the password from this file (first line); else CAIRN_PASSWORD, else a prompt.
    #[arg(long, env = "CAIRN_PASSWORD_FILE", global = true)]
    pub password_file: Option<PathBuf>,
    /// Storage requests in flight at once: pack uploads in backup, pack reads in restore and
    /// check (default: one per CPU for a local directory, 8 for object stores).
    #[arg(long, global = true, value_name = "N")]
    pub connections: Option<usize>,
    /// Limit uploads to this many KiB/s (all connections together).
    #[arg(long, global = true, value_name = "KiB/s")]
    pub limit_upload: Option<u64>,
    /// Limit downloads to this many KiB/s (all connections together).
    #[arg(long, global = true, value_name = "KiB/s")]
    pub limit_download: Option<u64>,
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
    /// Verify the repository: structure, and with --read-data every stored byte.
    Check(CheckArgs),
    /// Remove snapshots by id or by a retention policy (--keep-*).
    Forget(Box<ForgetArgs>),
    /// Remove data no snapshot needs; safe while backups run.
    Prune(PruneArgs),
    /// Manage passwords (key files): list, add, remove, passwd.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Remove stale locks left by processes that are gone.
    Unlock(UnlockArgs),
    /// Add, remove or set tags on snapshots (writes new snapshots, removes the old ones).
    Tag(TagArgs),
    /// Repair a damaged repository: rebuild the index, or drop references to lost data.
    #[command(subcommand)]
    Repair(RepairCommand),
    /// Copy snapshots from another repository, storing only the data this one lacks.
    Copy(CopyArgs),
    /// Show what changed between two snapshots.
    Diff(DiffArgs),
    /// Find files and directories by name or path pattern in snapshots.
    Find(FindArgs),
    /// Write a file from a snapshot to stdout, or a directory as a tar archive.
    Dump(DumpArgs),
    /// Run the node agent (a DaemonSet): back up the annotated volumes of this node's pods.
    Agent(AgentArgs),
    /// Restore a volume's latest snapshot before its app starts (an init container); safe
    /// to run on every start.
    RestoreInit(RestoreInitArgs),
    /// Sizes: what a restore would write, what is stored, and the deduplication ratio.
    Stats(StatsArgs),
    /// Serve a repository's storage to clients that hold tokens instead of cloud
    /// credentials, each with exactly the access its role allows (read, append, admin).
    Server(Box<ServerArgs>),
}

/// `server`. The storage is the global `-r/--repo`: a directory, azure://CONTAINER/PREFIX,
/// s3://BUCKET/PREFIX or gs://BUCKET/PREFIX (credentials from the environment).
#[derive(Args, Debug)]
pub struct ServerArgs {
    /// Address to serve on (e.g. 0.0.0.0:8443).
    #[arg(long, env = "CAIRN_SERVER_LISTEN", value_name = "ADDR")]
    pub listen: String,
    /// Tokens, one `TOKEN ROLE [PREFIX]` a line (read, append or admin); reloaded when it
    /// changes.
    #[arg(long, env = "CAIRN_SERVER_TOKENS_FILE", value_name = "FILE")]
    pub tokens_file: PathBuf,
    /// At least 32 secret bytes that lock receipts are made with; the same in every replica.
    #[arg(long, env = "CAIRN_SERVER_RECEIPT_KEY_FILE", value_name = "FILE")]
    pub receipt_key_file: PathBuf,
    /// Certificate chain (PEM); reloaded when it changes. Without it, plain HTTP.
    #[arg(
        long,
        env = "CAIRN_SERVER_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of the certificate.
    #[arg(
        long,
        env = "CAIRN_SERVER_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// A repository may hold this many bytes (K, M, G, T suffixes); uploads past it get 507,
    /// except an admin's.
    #[arg(long, env = "CAIRN_SERVER_MAX_SIZE", value_name = "BYTES")]
    pub max_size: Option<String>,
    /// Serve /metrics, /healthz and /readyz on this address.
    #[arg(long, env = "CAIRN_SERVER_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<String>,
    /// Connections at once.
    #[arg(long, default_value_t = 512, value_name = "N")]
    pub max_connections: usize,
    /// Requests in flight at once; more get 429.
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub max_requests: usize,
    /// Seconds a connection may stay without moving a byte (a stalled client).
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    pub idle_timeout: u64,
    /// Seconds one request may take, body included.
    #[arg(long, default_value_t = 1800, value_name = "SECONDS")]
    pub request_timeout: u64,
    /// Seconds requests in flight get to finish after SIGTERM.
    #[arg(long, default_value_t = 25, value_name = "SECONDS")]
    pub shutdown_grace: u64,
}

/// `copy`
#[derive(Args, Debug)]
pub struct CopyArgs {
    /// Snapshots to copy (ids, prefixes or `latest`); default: all passing the filters.
    pub snapshots: Vec<String>,
    /// The repository to copy from.
    #[arg(long, value_name = "LOCATION", env = "CAIRN_FROM_REPOSITORY")]
    pub from_repo: String,
    /// Its password, from this file; else CAIRN_FROM_PASSWORD, else a prompt.
    #[arg(long, value_name = "FILE", env = "CAIRN_FROM_PASSWORD_FILE")]
    pub from_password_file: Option<PathBuf>,
    /// Which snapshots (when none are named).
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// `diff`
#[derive(Args, Debug)]
pub struct DiffArgs {
    /// The older snapshot.
    pub first: String,
    /// The newer snapshot.
    pub second: String,
}

/// `find`
#[derive(Args, Debug)]
pub struct FindArgs {
    /// Patterns: a name (`*.conf`) matches anywhere, one with `/` the whole path.
    #[arg(required = true)]
    pub patterns: Vec<String>,
    /// Which snapshots to search.
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// `dump`
#[derive(Args, Debug)]
pub struct DumpArgs {
    /// `latest` or an id (prefix).
    pub snapshot: String,
    /// A file or directory inside the snapshot (`/` for all of it).
    pub path: String,
    /// Filters for `latest`.
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// `stats`
#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Snapshots (ids, prefixes or `latest`); default: all passing the filters.
    pub snapshots: Vec<String>,
    /// Which figure leads: restore-size or raw-data (both are always computed).
    #[arg(long, default_value = "restore-size", value_parser = ["restore-size", "raw-data"])]
    pub mode: String,
    /// Which snapshots (when none are named).
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// `repair`
#[derive(Subcommand, Debug)]
pub enum RepairCommand {
    /// Rebuild the index from the packs' own headers (after index files were lost or damaged).
    Index,
    /// Write copies of snapshots without the files whose data is lost (originals are kept).
    Snapshots {
        /// Snapshots to repair (ids or prefixes); default all.
        snapshots: Vec<String>,
        /// Remove the damaged originals once their repaired copies are stored.
        #[arg(long)]
        forget: bool,
        /// Show what would be dropped; write nothing.
        #[arg(long, short = 'n')]
        dry_run: bool,
    },
}

/// `check`
#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Download every pack and verify every blob (packs read at once: --connections).
    #[arg(long)]
    pub read_data: bool,
    /// Verify only part of the packs: n/t (bucket n of t, e.g. 1/5) or p% (random).
    #[arg(long, value_name = "n/t|p%", conflicts_with = "read_data")]
    pub read_data_subset: Option<String>,
}

/// `forget`
#[derive(Args, Debug)]
pub struct ForgetArgs {
    /// Snapshots to remove (ids or prefixes); with none, the --keep-* policy decides.
    pub snapshots: Vec<String>,
    /// Keep the N newest snapshots (-1: all).
    #[arg(long, short = 'l', value_name = "N", allow_negative_numbers = true)]
    pub keep_last: Option<i64>,
    /// Keep the newest snapshot of each of the last N hours that have one.
    #[arg(long, short = 'H', value_name = "N", allow_negative_numbers = true)]
    pub keep_hourly: Option<i64>,
    /// … of each of the last N days.
    #[arg(long, short = 'd', value_name = "N", allow_negative_numbers = true)]
    pub keep_daily: Option<i64>,
    /// … of each of the last N ISO weeks.
    #[arg(long, short = 'w', value_name = "N", allow_negative_numbers = true)]
    pub keep_weekly: Option<i64>,
    /// … of each of the last N months.
    #[arg(long, short = 'm', value_name = "N", allow_negative_numbers = true)]
    pub keep_monthly: Option<i64>,
    /// … of each of the last N years.
    #[arg(long, short = 'y', value_name = "N", allow_negative_numbers = true)]
    pub keep_yearly: Option<i64>,
    /// Keep every snapshot newer than the group's newest minus DURATION (e.g. 2y5m7d3h).
    #[arg(long, value_name = "DURATION")]
    pub keep_within: Option<String>,
    /// Keep hourly snapshots within DURATION of the newest.
    #[arg(long, value_name = "DURATION")]
    pub keep_within_hourly: Option<String>,
    /// Keep daily snapshots within DURATION of the newest.
    #[arg(long, value_name = "DURATION")]
    pub keep_within_daily: Option<String>,
    /// Keep weekly snapshots within DURATION of the newest.
    #[arg(long, value_name = "DURATION")]
    pub keep_within_weekly: Option<String>,
    /// Keep monthly snapshots within DURATION of the newest.
    #[arg(long, value_name = "DURATION")]
    pub keep_within_monthly: Option<String>,
    /// Keep yearly snapshots within DURATION of the newest.
    #[arg(long, value_name = "DURATION")]
    pub keep_within_yearly: Option<String>,
    /// Keep snapshots with these tags (comma-separated: all of them; repeat for alternatives).
    #[arg(long, value_name = "TAG[,TAG]")]
    pub keep_tag: Vec<String>,
    /// Apply the policy per group of: host, paths, tags, labels (comma-separated; '' for one group).
    #[arg(long, short = 'g', default_value = "host,paths", value_name = "FIELDS")]
    pub group_by: String,
    /// Show what would be kept and removed, and why; change nothing.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Run `prune` afterwards.
    #[arg(long)]
    pub prune: bool,
    /// Remove even when that leaves a group (by --group-by) with no snapshot at all.
    #[arg(long)]
    pub force: bool,
    /// Judge every snapshot by the time it records, even when the storage stored it more
    /// than a day apart from that (imported or `backup --time` history you trust).
    #[arg(long)]
    pub trust_snapshot_times: bool,
    /// Which snapshots the policy looks at.
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Prune settings (with --prune).
    #[command(flatten)]
    pub prune_opts: PruneOpts,
}

/// Settings of `prune`, shared with `forget --prune`.
#[derive(Args, Debug, Clone)]
pub struct PruneOpts {
    /// Tolerate this much unused space in partly used packs before repacking them (e.g. 5%, 0%).
    #[arg(long, default_value = "5%", value_name = "PERCENT")]
    pub max_unused: String,
    /// Repack at most this much per run (e.g. 500M, 2G).
    #[arg(long, value_name = "SIZE")]
    pub max_repack_size: Option<String>,
}

/// `prune`
#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Settings.
    #[command(flatten)]
    pub opts: PruneOpts,
    /// Show what would be done; change nothing.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
}

/// `key`
#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// List key files (* marks the one in use).
    List,
    /// Add a password.
    Add(NewPassword),
    /// Remove a key (not the one in use, never the last).
    Remove {
        /// Key id or prefix.
        id: String,
    },
    /// Change the password in use (adds a key, then removes the old one).
    Passwd(NewPassword),
}

/// The new password for `key add` / `key passwd`.
#[derive(Args, Debug)]
pub struct NewPassword {
    /// Read the new password from this file (first line); else CAIRN_NEW_PASSWORD, else a prompt.
    #[arg(long, value_name = "FILE")]
    pub new_password_file: Option<PathBuf>,
}

/// `unlock`
#[derive(Args, Debug)]
pub struct UnlockArgs {
    /// Remove every lock, also ones that look live (only when you know no cairn is running).
    #[arg(long)]
    pub remove_all: bool,
}

/// `tag`
#[derive(Args, Debug)]
pub struct TagArgs {
    /// Snapshots (ids, prefixes or `latest`); with none, every snapshot passing the filters.
    pub snapshots: Vec<String>,
    /// Add tags (comma-separated, repeatable).
    #[arg(long, value_name = "TAG")]
    pub add: Vec<String>,
    /// Remove tags.
    #[arg(long, value_name = "TAG")]
    pub remove: Vec<String>,
    /// Replace all tags with these.
    #[arg(long, value_name = "TAG")]
    pub set: Vec<String>,
    /// Which snapshots (when none are named).
    #[command(flatten)]
    pub filter: FilterArgs,
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
    /// Files and directories to back up (with --stdin-from-command: the command and its
    /// arguments, after `--`).
    #[arg(required_unless_present = "stdin", conflicts_with = "stdin")]
    pub paths: Vec<PathBuf>,
    /// Back up what is read from standard input, as one file (e.g. `pg_dump db | cairn backup --stdin`).
    #[arg(long)]
    pub stdin: bool,
    /// Run the command given after `--` and back up its standard output as one file; if the
    /// command fails, no snapshot is written (`cairn backup --stdin-from-command
    /// --stdin-filename db.dump -- pg_dump -Fc db`).
    #[arg(long, conflicts_with = "stdin")]
    pub stdin_from_command: bool,
    /// The file name for --stdin.
    #[arg(long, default_value = "stdin", value_name = "NAME")]
    pub stdin_filename: String,
    /// Tag the snapshot (repeatable).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Label the snapshot, e.g. pvc=data-postgresql-0 (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Host name to record (default: this machine's).
    #[arg(long = "host")]
    pub host: Option<String>,
    /// Record the directory under this path instead of its own, e.g. `/<namespace>/<pvc>` as
    /// the agent does: the parent snapshot is found by it, so a directory that moved still
    /// gets an incremental backup. Needs exactly one directory; not with --stdin.
    #[arg(long, value_name = "PATH", conflicts_with = "stdin")]
    pub as_path: Option<String>,
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

/// `cairn agent`. Every flag can also come from the environment (`CAIRN_…`), as a DaemonSet
/// sets it from the downward API.
#[derive(Args, Debug)]
pub struct AgentArgs {
    /// This node's name (`spec.nodeName` of the pods to back up).
    #[arg(long, env = "CAIRN_NODE_NAME")]
    pub node_name: String,
    /// The cluster's name: the host of every snapshot this agent writes.
    #[arg(long, env = "CAIRN_CLUSTER")]
    pub cluster: String,
    /// The kubelet's root directory, as mounted in this container.
    #[arg(long, env = "CAIRN_KUBELET_ROOT", default_value = "/var/lib/kubelet")]
    pub kubelet_root: PathBuf,
    /// When volumes without a schedule of their own are backed up (5-field cron, @daily,
    /// @every 6h), in the agent's time zone.
    #[arg(long, env = "CAIRN_SCHEDULE", default_value = "0 2 * * *")]
    pub schedule: String,
    /// Backups running at once on this node.
    #[arg(long, env = "CAIRN_MAX_CONCURRENT", default_value_t = 1)]
    pub max_concurrent: usize,
    /// Serve /metrics, /healthz and /readyz on this address (e.g. 0.0.0.0:9090).
    #[arg(long, env = "CAIRN_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// Back up every persistent volume of every pod, except those excluded by annotation.
    #[arg(long, env = "CAIRN_DEFAULT_VOLUMES")]
    pub default_volumes: bool,
    /// Record each backup's result on its pod (backup.cairn.io/last-backup); needs RBAC
    /// patch rights on pods.
    #[arg(long, env = "CAIRN_ANNOTATE_PODS")]
    pub annotate_pods: bool,
    /// File threads per backup (0: one per CPU).
    #[arg(long, env = "CAIRN_WORKERS", default_value_t = 2)]
    pub workers: usize,
}

/// `cairn restore-init`. Every flag can also come from the environment (`CAIRN_…`), as the
/// downward API fills it.
#[derive(Args, Debug)]
pub struct RestoreInitArgs {
    /// The volume's mount point in this container.
    #[arg(long, env = "CAIRN_TARGET")]
    pub target: PathBuf,
    /// The source namespace.
    #[arg(long, env = "CAIRN_NAMESPACE")]
    pub namespace: String,
    /// The source PVC.
    #[arg(long, env = "CAIRN_PVC", conflicts_with_all = ["claim_template", "pod_name"])]
    pub pvc: Option<String>,
    /// A StatefulSet's volume claim template: the PVC is `<claim-template>-<pod-name>`.
    #[arg(long, env = "CAIRN_CLAIM_TEMPLATE", requires = "pod_name")]
    pub claim_template: Option<String>,
    /// This pod's name (with --claim-template).
    #[arg(long, env = "CAIRN_POD_NAME", requires = "claim_template")]
    pub pod_name: Option<String>,
    /// The source cluster (the snapshots' host); needed when the PVC has snapshots from
    /// several clusters.
    #[arg(long, env = "CAIRN_CLUSTER")]
    pub cluster: Option<String>,
    /// Restore this snapshot (id or prefix) instead of the latest.
    #[arg(long, env = "CAIRN_SNAPSHOT")]
    pub snapshot: Option<String>,
    /// The latest snapshot taken before this time (RFC 3339).
    #[arg(long, env = "CAIRN_BEFORE", value_name = "TIME")]
    pub before: Option<String>,
    /// A volume that holds data and no restore marker: skip, overwrite or fail.
    #[arg(long, env = "CAIRN_IF_NOT_EMPTY", default_value = "skip", value_parser = ["skip", "overwrite", "fail"])]
    pub if_not_empty: String,
    /// No snapshot of the PVC: start on the empty volume, or fail.
    #[arg(long, env = "CAIRN_IF_NO_SNAPSHOT", default_value = "start", value_parser = ["start", "fail"])]
    pub if_no_snapshot: String,
    /// Fail instead of restoring without owners (not root, or no CAP_CHOWN).
    #[arg(long, env = "CAIRN_STRICT_OWNERSHIP")]
    pub strict_ownership: bool,
    /// How long to wait for another replica restoring the same volume.
    #[arg(
        long,
        env = "CAIRN_WAIT",
        default_value = "10m",
        value_name = "DURATION"
    )]
    pub wait: String,
}
