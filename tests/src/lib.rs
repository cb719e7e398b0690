//! Shared helpers for Cairn's end-to-end tests: locating and running the real `cairn` binary,
//! a handle on a test repository (init with fast test settings, backup, snapshots, ls, restore,
//! listing the repository's files), a fast deterministic PRNG for test data, and a manifest of
//! a directory tree (type, mode, owner, times with nanoseconds, link targets, xattrs, device
//! numbers, hard-link groups) to compare a restore against its source attribute by attribute.
//! Also: running `cairn` within a time limit ([`run_cairn_within`]) and a tmpfs mounted for
//! one test ([`Tmpfs`], root only).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

pub mod azurite;
pub mod fakekube;
pub mod faultproxy;
pub mod hostile;
pub mod moto;
pub mod server;
pub mod service;

/// The password every test repository is created with.
pub const PASSWORD: &str = "e2e correct horse battery staple";

/// Fast test settings for `cairn init`: a cheap key derivation (the hidden `--kdf-memory`).
pub const FAST_KDF: &[&str] = &["--kdf-memory", "64"];

/// Small chunk sizes (MIN,AVG,MAX) for tests that need many chunks or exact chunk boundaries.
pub const SMALL_CHUNKS: &str = "4096,16384,65536";

/// The largest chunk with [`SMALL_CHUNKS`].
pub const SMALL_CHUNK_MAX: usize = 65536;

/// The `cairn` binary: `$CAIRN_BIN` if set, else `<target dir>/<profile>/cairn`, found from
/// this test executable (which lives in `<target dir>/<profile>/deps/`).
pub fn cairn_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("CAIRN_BIN") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "CAIRN_BIN={} does not name a file; build it with `cargo build -p cairn-agent`",
            p.display()
        );
        return p;
    }
    let exe = std::env::current_exe().expect("current test executable");
    let deps = exe.parent().expect("test executable has a directory");
    let profile_dir = if deps.file_name() == Some(OsStr::new("deps")) {
        deps.parent().expect("deps has a parent")
    } else {
        deps
    };
    let bin = profile_dir.join("cairn");
    assert!(
        bin.is_file(),
        "the cairn binary is missing at {}: run `cargo build -p cairn-agent` (or \
         `cargo build --workspace`) first, or set CAIRN_BIN",
        bin.display()
    );
    bin
}

/// What one `cairn` run did.
#[derive(Debug)]
pub struct Output {
    /// The command line, for messages.
    pub cmdline: String,
    /// Exit code (128 + signal number if killed by a signal).
    pub code: i32,
    /// Standard output (lossy UTF-8).
    pub stdout: String,
    /// Standard error (lossy UTF-8).
    pub stderr: String,
}

impl Output {
    /// Panics with the full output unless the exit code is `code`.
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "`{}` exited {} (expected {code})\n--- stdout\n{}\n--- stderr\n{}",
            self.cmdline, self.code, self.stdout, self.stderr
        );
        self
    }

    /// Panics unless the command succeeded.
    pub fn success(&self) -> &Self {
        self.expect_code(0)
    }

    /// Panics if the command succeeded, panicked (exit 101 or "panicked" on stderr), or was
    /// killed by a signal.
    pub fn failed_cleanly(&self) -> &Self {
        self.assert_no_panic();
        assert_ne!(
            self.code, 0,
            "`{}` should have failed\n--- stdout\n{}\n--- stderr\n{}",
            self.cmdline, self.stdout, self.stderr
        );
        self
    }

    /// Panics if the process panicked or died from a signal.
    pub fn assert_no_panic(&self) -> &Self {
        assert!(
            self.code != 101 && self.code < 128 && !self.stderr.contains("panicked"),
            "`{}` panicked or crashed (exit {})\n--- stderr\n{}",
            self.cmdline,
            self.code,
            self.stderr
        );
        self
    }

    /// Panics unless stderr contains `needle`.
    pub fn stdout_has(&self, needle: &str) -> &Self {
        assert!(
            self.stdout.contains(needle),
            "stdout of `{}` does not mention {needle:?}\n--- stdout\n{}",
            self.cmdline,
            self.stdout
        );
        self
    }

    /// Asserts that stderr mentions `needle`.
    pub fn stderr_has(&self, needle: &str) -> &Self {
        assert!(
            self.stderr.contains(needle),
            "stderr of `{}` does not mention {needle:?}\n--- stderr\n{}",
            self.cmdline,
            self.stderr
        );
        self
    }
}

/// Who runs `cairn`: the current user, or another uid/gid through `setpriv`.
#[derive(Clone, Copy, Debug, Default)]
pub enum RunAs {
    /// This process's user.
    #[default]
    Me,
    /// This uid and gid, with no supplementary groups.
    User(u32, u32),
}

/// Runs `cairn` with `args`, the password in `CAIRN_PASSWORD` (if given), stdin closed, and
/// no repository or password file inherited from the environment.
pub fn run_cairn<S: AsRef<OsStr>>(args: &[S], password: Option<&str>, who: RunAs) -> Output {
    run_cairn_with_env(args, password, who, &[])
}

/// [`run_cairn`] with extra environment variables (cloud configuration, for example).
pub fn run_cairn_with_env<S: AsRef<OsStr>>(
    args: &[S],
    password: Option<&str>,
    who: RunAs,
    env: &[(String, String)],
) -> Output {
    let (mut cmd, cmdline) = cairn_command(args, password, who, env);
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{cmdline}`: {e}"));
    output_of(cmdline, out)
}

/// [`run_cairn_with_env`] that may take at most `limit`: a run that takes longer is killed
/// and the test fails, naming the command and what it printed. For commands that could hang
/// if they regressed (the restore of a full target stopping its pipeline, say).
pub fn run_cairn_within<S: AsRef<OsStr>>(
    limit: Duration,
    args: &[S],
    password: Option<&str>,
    who: RunAs,
    env: &[(String, String)],
) -> Output {
    let (mut cmd, cmdline) = cairn_command(args, password, who, env);
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `{cmdline}`: {e}"));
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (tx, rx) = std::sync::mpsc::channel();
    // The waiting thread owns the child; the process is not reaped before it exits, so its
    // pid stays its own until then and the kill below cannot reach another process.
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let (out, timed_out) = match rx.recv_timeout(limit) {
        Ok(out) => (out, false),
        Err(_) => {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            (rx.recv().expect("the waiting thread reports"), true)
        }
    };
    let out = output_of(
        cmdline,
        out.unwrap_or_else(|e| panic!("cannot wait for cairn: {e}")),
    );
    assert!(
        !timed_out,
        "`{}` did not finish within {limit:?} and was killed\n--- stdout\n{}\n--- stderr\n{}",
        out.cmdline, out.stdout, out.stderr
    );
    out
}

/// The command [`run_cairn_with_env`] runs, and its command line for messages.
fn cairn_command<S: AsRef<OsStr>>(
    args: &[S],
    password: Option<&str>,
    who: RunAs,
    env: &[(String, String)],
) -> (Command, String) {
    let bin = cairn_bin();
    let mut cmd = match who {
        RunAs::Me => Command::new(&bin),
        RunAs::User(uid, gid) => {
            let mut c = Command::new("/usr/bin/setpriv");
            c.arg(format!("--reuid={uid}"))
                .arg(format!("--regid={gid}"))
                .arg("--clear-groups")
                .arg(&bin);
            c
        }
    };
    cmd.args(args)
        .env_remove("CAIRN_REPOSITORY")
        .env_remove("CAIRN_PASSWORD_FILE")
        .env_remove("CAIRN_PASSWORD")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(pw) = password {
        cmd.env("CAIRN_PASSWORD", pw);
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    let cmdline = std::iter::once(bin.as_os_str().to_string_lossy().into_owned())
        .chain(
            args.iter()
                .map(|a| a.as_ref().to_string_lossy().into_owned()),
        )
        .collect::<Vec<_>>()
        .join(" ");
    (cmd, cmdline)
}

fn output_of(cmdline: String, out: std::process::Output) -> Output {
    let code = match out.status.code() {
        Some(c) => c,
        None => {
            use std::os::unix::process::ExitStatusExt;
            128 + out.status.signal().unwrap_or(0)
        }
    };
    Output {
        cmdline,
        code,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A repository made for a test, at a path inside the test's temporary directory.
pub struct Repo {
    /// Repository directory.
    pub path: PathBuf,
    /// Password.
    pub password: String,
    /// Who runs `cairn` against it.
    pub who: RunAs,
}

impl Repo {
    /// `cairn init` at `path` with the fast key derivation plus `extra` flags.
    pub fn init(path: &Path, extra: &[&str]) -> Repo {
        Repo::init_as(path, extra, RunAs::Me)
    }

    /// `cairn init` with small chunk sizes (see [`SMALL_CHUNKS`]).
    pub fn init_small_chunks(path: &Path) -> Repo {
        Repo::init(path, &["--chunk-sizes", SMALL_CHUNKS])
    }

    /// `cairn init` run as `who`.
    pub fn init_as(path: &Path, extra: &[&str], who: RunAs) -> Repo {
        let repo = Repo {
            path: path.to_path_buf(),
            password: PASSWORD.to_string(),
            who,
        };
        let mut args: Vec<&str> = vec!["init"];
        args.extend_from_slice(FAST_KDF);
        args.extend_from_slice(extra);
        repo.run(&args).success();
        assert!(path.join("config").is_file(), "init wrote no config");
        repo
    }

    /// Runs `cairn -r REPO ARGS…` with the repository's password.
    pub fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        self.run_with_password(Some(&self.password), args)
    }

    /// Runs `cairn -r REPO ARGS…` with another password (or none).
    pub fn run_with_password<S: AsRef<OsStr>>(&self, password: Option<&str>, args: &[S]) -> Output {
        let mut all: Vec<OsString> = vec!["-r".into(), self.path.clone().into_os_string()];
        all.extend(args.iter().map(|a| a.as_ref().to_os_string()));
        run_cairn(&all, password, self.who)
    }

    /// [`Repo::run`] that may take at most `limit` ([`run_cairn_within`]).
    pub fn run_within<S: AsRef<OsStr>>(&self, limit: Duration, args: &[S]) -> Output {
        let mut all: Vec<OsString> = vec!["-r".into(), self.path.clone().into_os_string()];
        all.extend(args.iter().map(|a| a.as_ref().to_os_string()));
        run_cairn_within(limit, &all, Some(&self.password), self.who, &[])
    }

    /// Runs `cairn -r REPO ARGS…` with standard input read from `input`.
    pub fn run_with_stdin<S: AsRef<OsStr>>(&self, args: &[S], input: &Path) -> Output {
        let mut all: Vec<OsString> = vec!["-r".into(), self.path.clone().into_os_string()];
        all.extend(args.iter().map(|a| a.as_ref().to_os_string()));
        let file = File::open(input).expect("stdin file");
        let out = Command::new(cairn_bin())
            .args(&all)
            .env_remove("CAIRN_REPOSITORY")
            .env_remove("CAIRN_PASSWORD_FILE")
            .env("CAIRN_PASSWORD", &self.password)
            .stdin(Stdio::from(file))
            .output()
            .expect("run cairn");
        Output {
            cmdline: format!("cairn {all:?} < {}", input.display()),
            code: out.status.code().unwrap_or(128),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `cairn backup --json PATHS… EXTRA…`, which must succeed; returns its summary line.
    pub fn backup(&self, paths: &[&Path], extra: &[&str]) -> Value {
        let out = self.backup_raw(paths, extra);
        out.success();
        summary_line(&out)
    }

    /// `cairn backup --json PATHS… EXTRA…`, whatever its outcome.
    pub fn backup_raw(&self, paths: &[&Path], extra: &[&str]) -> Output {
        let mut args: Vec<OsString> = vec!["backup".into(), "--json".into()];
        args.extend(extra.iter().map(OsString::from));
        args.extend(paths.iter().map(|p| p.as_os_str().to_os_string()));
        self.run(&args)
    }

    /// `cairn snapshots --json`, oldest first.
    pub fn snapshots(&self) -> Vec<Value> {
        let out = self.run(&["snapshots", "--json"]);
        out.success();
        match serde_json::from_str(out.stdout.trim()) {
            Ok(Value::Array(v)) => v,
            other => panic!("snapshots --json printed {other:?}: {}", out.stdout),
        }
    }

    /// `cairn ls --json SPEC [PATH]`: one node per entry, each with a `path` field.
    pub fn ls(&self, spec: &str, path: Option<&str>) -> Vec<Value> {
        let mut args = vec!["ls", "--json", spec];
        args.extend(path);
        let out = self.run(&args);
        out.success();
        out.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("ls --json line {l:?}: {e}"))
            })
            .collect()
    }

    /// `cairn restore SPEC --target TARGET EXTRA…`, whatever its outcome.
    pub fn restore(&self, spec: &str, target: &Path, extra: &[&str]) -> Output {
        let mut args: Vec<OsString> = vec![
            "restore".into(),
            spec.into(),
            "--target".into(),
            target.as_os_str().to_os_string(),
        ];
        args.extend(extra.iter().map(OsString::from));
        self.run(&args)
    }

    /// `cairn cat pack ID` as JSON (must succeed).
    pub fn cat_pack(&self, id: &str) -> Value {
        let out = self.run(&["cat", "pack", id]);
        out.success();
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("cat pack printed invalid JSON ({e}): {}", out.stdout))
    }

    /// Every file in the repository directory: relative path → (size, content hash).
    pub fn files(&self) -> BTreeMap<String, (u64, u64)> {
        let mut out = BTreeMap::new();
        for p in files_below(&self.path) {
            let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            let rel = p
                .strip_prefix(&self.path)
                .expect("below the repository")
                .to_string_lossy()
                .into_owned();
            out.insert(rel, (bytes.len() as u64, content_hash(&bytes)));
        }
        out
    }

    /// Total bytes of all files in the repository.
    pub fn size(&self) -> u64 {
        self.files().values().map(|(s, _)| s).sum()
    }

    /// The ids of all packs (`data/<2 hex>/<id>`).
    pub fn pack_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = files_below(&self.path.join("data"))
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        ids.sort();
        ids
    }

    /// The file of pack `id`.
    pub fn pack_path(&self, id: &str) -> PathBuf {
        self.path.join("data").join(&id[..2]).join(id)
    }

    /// The ids of all snapshots.
    pub fn snapshot_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = files_below(&self.path.join("snapshots"))
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        ids.sort();
        ids
    }
}

/// The `{"message_type":"summary",…}` line of a `--json` command.
pub fn summary_line(out: &Output) -> Value {
    out.stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["message_type"] == "summary")
        .unwrap_or_else(|| {
            panic!(
                "`{}` printed no summary line\n--- stdout\n{}\n--- stderr\n{}",
                out.cmdline, out.stdout, out.stderr
            )
        })
}

/// A counter of a backup summary line (`summary.<name>`).
pub fn counter(summary_line: &Value, name: &str) -> u64 {
    summary_line["summary"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("summary has no counter {name:?}: {summary_line}"))
}

/// Every regular file below `dir`, recursively (not following symlinks), sorted.
pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd {
            let e = e.expect("readable directory entry");
            let ft = e.file_type().expect("file type");
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// A non-cryptographic hash of bytes, enough to tell whether a file changed.
pub fn content_hash(bytes: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// A fast deterministic PRNG (SplitMix64) for incompressible test data.
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let last = self.next_u64().to_le_bytes();
        let n = rest.len();
        rest.copy_from_slice(&last[..n]);
    }

    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.fill(&mut v);
        v
    }
}

/// Writes `len` random bytes from `seed` to `path` (streamed, so any size works).
pub fn write_random_file(path: &Path, len: u64, seed: u64) {
    let mut rng = Rng::new(seed);
    let mut f = io::BufWriter::new(File::create(path).expect("create file"));
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill(&mut buf[..n]);
        f.write_all(&buf[..n]).expect("write");
        left -= n as u64;
    }
    f.flush().expect("flush");
}

/// Opens a file for reading without updating its access time (the tests run as root, which may
/// always use `O_NOATIME`; anyone else falls back to a plain open).
pub fn open_noatime(path: &Path) -> File {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOATIME | libc::O_NOFOLLOW)
        .open(path)
        .or_else(|_| File::open(path))
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()))
}

/// Whether two files have the same bytes, compared in 1 MiB blocks; the error says where they
/// first differ.
pub fn compare_content(a: &Path, b: &Path) -> Result<(), String> {
    let (mut fa, mut fb) = (open_noatime(a), open_noatime(b));
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut offset = 0u64;
    loop {
        let na = read_full(&mut fa, &mut ba).map_err(|e| format!("{}: {e}", a.display()))?;
        let nb = read_full(&mut fb, &mut bb).map_err(|e| format!("{}: {e}", b.display()))?;
        if na != nb || ba[..na] != bb[..nb] {
            let at = ba[..na]
                .iter()
                .zip(&bb[..nb])
                .position(|(x, y)| x != y)
                .unwrap_or(na.min(nb));
            return Err(format!(
                "{} and {} differ at byte {}",
                a.display(),
                b.display(),
                offset + at as u64
            ));
        }
        if na == 0 {
            return Ok(());
        }
        offset += na as u64;
    }
}

/// Panics unless the two files have the same bytes.
pub fn assert_same_content(a: &Path, b: &Path) {
    if let Err(e) = compare_content(a, b) {
        panic!("{e}");
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// The kind of a file-system entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
    /// Named pipe.
    Fifo,
    /// Character device.
    CharDev,
    /// Block device.
    BlockDev,
    /// Unix socket.
    Socket,
}

/// Everything a restore must reproduce about one entry, from `lstat` and `llistxattr`.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Type.
    pub kind: Kind,
    /// `st_mode & 0o7777` (permissions with setuid, setgid, sticky).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size (not compared for directories, whose size depends on the file system's history).
    pub size: u64,
    /// Modification time (seconds, nanoseconds).
    pub mtime: (i64, i64),
    /// Access time (seconds, nanoseconds).
    pub atime: (i64, i64),
    /// Device number of device nodes.
    pub rdev: u64,
    /// Link count.
    pub nlink: u64,
    /// Symlink target bytes.
    pub link_target: Option<Vec<u8>>,
    /// Extended attributes (except `security.selinux`, which the file system assigns).
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Inode (for hard-link groups; never compared across trees).
    pub ino: u64,
    /// Allocated 512-byte blocks (never compared across trees).
    pub blocks: u64,
}

/// Relative path (raw bytes, `/`-separated, empty for the root) → entry.
pub type Manifest = BTreeMap<Vec<u8>, Entry>;

/// Reads the manifest of the tree at `root` (the root itself is the entry with an empty path).
pub fn manifest(root: &Path) -> Manifest {
    let mut m = Manifest::new();
    add_entry(root, Vec::new(), &mut m);
    m
}

fn add_entry(path: &Path, rel: Vec<u8>, m: &mut Manifest) {
    let md =
        std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("lstat {}: {e}", path.display()));
    let e = entry_of(path, &md);
    let is_dir = e.kind == Kind::Dir;
    m.insert(rel.clone(), e);
    if is_dir {
        let mut names: Vec<OsString> = std::fs::read_dir(path)
            .unwrap_or_else(|e| panic!("read_dir {}: {e}", path.display()))
            .map(|d| d.expect("directory entry").file_name())
            .collect();
        names.sort();
        for name in names {
            let mut child_rel = rel.clone();
            if !child_rel.is_empty() {
                child_rel.push(b'/');
            }
            child_rel.extend_from_slice(name.as_bytes());
            add_entry(&path.join(&name), child_rel, m);
        }
    }
}

/// The [`Entry`] of `path` whose `lstat` is `md`.
pub fn entry_of(path: &Path, md: &std::fs::Metadata) -> Entry {
    use std::os::unix::fs::FileTypeExt;
    let ft = md.file_type();
    let kind = if ft.is_symlink() {
        Kind::Symlink
    } else if ft.is_dir() {
        Kind::Dir
    } else if ft.is_file() {
        Kind::File
    } else if ft.is_fifo() {
        Kind::Fifo
    } else if ft.is_char_device() {
        Kind::CharDev
    } else if ft.is_block_device() {
        Kind::BlockDev
    } else {
        Kind::Socket
    };
    let link_target = (kind == Kind::Symlink).then(|| {
        std::fs::read_link(path)
            .expect("readlink")
            .into_os_string()
            .into_encoded_bytes()
    });
    let mut xattrs = BTreeMap::new();
    match xattr::list(path) {
        Ok(names) => {
            for n in names {
                if n.as_bytes() == b"security.selinux" {
                    continue;
                }
                if let Ok(Some(v)) = xattr::get(path, &n) {
                    xattrs.insert(n.as_bytes().to_vec(), v);
                }
            }
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => {}
        Err(e) => panic!("listxattr {}: {e}", path.display()),
    }
    Entry {
        kind,
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        size: md.size(),
        mtime: (md.mtime(), md.mtime_nsec()),
        atime: (md.atime(), md.atime_nsec()),
        rdev: md.rdev(),
        nlink: md.nlink(),
        link_target,
        xattrs,
        ino: md.ino(),
        blocks: md.blocks(),
    }
}

/// Lossy text of a raw relative path, for messages (`<root>` for the root).
pub fn show(rel: &[u8]) -> String {
    if rel.is_empty() {
        "<root>".into()
    } else {
        format!("{:?}", String::from_utf8_lossy(rel))
    }
}

/// Every difference between two manifests: missing or extra entries, and per entry: type, mode,
/// owner, size (not directories), mtime with nanoseconds, atime (regular files), device
/// number, link count (not directories), symlink target and xattrs. Inode numbers are not
/// compared; see [`hardlink_groups`].
pub fn diff_manifests(expected: &Manifest, actual: &Manifest) -> Vec<String> {
    let mut d = Vec::new();
    for (rel, e) in expected {
        let Some(a) = actual.get(rel) else {
            d.push(format!("{}: missing", show(rel)));
            continue;
        };
        let mut field = |name: &str, x: String, y: String| {
            if x != y {
                d.push(format!("{}: {name} expected {x}, got {y}", show(rel)));
            }
        };
        field("type", format!("{:?}", e.kind), format!("{:?}", a.kind));
        if e.kind != a.kind {
            continue;
        }
        field("mode", format!("{:o}", e.mode), format!("{:o}", a.mode));
        field("uid", e.uid.to_string(), a.uid.to_string());
        field("gid", e.gid.to_string(), a.gid.to_string());
        field("mtime", format!("{:?}", e.mtime), format!("{:?}", a.mtime));
        if e.kind != Kind::Dir {
            field("size", e.size.to_string(), a.size.to_string());
            field("nlink", e.nlink.to_string(), a.nlink.to_string());
        }
        if e.kind == Kind::File {
            field("atime", format!("{:?}", e.atime), format!("{:?}", a.atime));
        }
        if matches!(e.kind, Kind::CharDev | Kind::BlockDev) {
            field("rdev", format!("{:#x}", e.rdev), format!("{:#x}", a.rdev));
        }
        field(
            "link target",
            format!(
                "{:?}",
                e.link_target.as_deref().map(String::from_utf8_lossy)
            ),
            format!(
                "{:?}",
                a.link_target.as_deref().map(String::from_utf8_lossy)
            ),
        );
        if e.link_target != a.link_target {
            d.push(format!("{}: link target bytes differ", show(rel)));
        }
        if e.xattrs != a.xattrs {
            d.push(format!(
                "{}: xattrs expected {}, got {}",
                show(rel),
                show_xattrs(&e.xattrs),
                show_xattrs(&a.xattrs)
            ));
        }
    }
    for rel in actual.keys() {
        if !expected.contains_key(rel) {
            d.push(format!("{}: unexpected extra entry", show(rel)));
        }
    }
    d
}

fn show_xattrs(x: &BTreeMap<Vec<u8>, Vec<u8>>) -> String {
    let items: Vec<String> = x
        .iter()
        .map(|(k, v)| format!("{}={:?}", String::from_utf8_lossy(k), v))
        .collect();
    format!("{{{}}}", items.join(", "))
}

/// Whether this process runs as root (needed to chown, mknod, and switch users).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A tmpfs mounted on a directory for one test (a file system of its own that can be made
/// full), unmounted when dropped. Only root can mount: check [`is_root`] first.
pub struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs with `options` (`size=4m`, `nr_inodes=40`, …) on `dir`, created if
    /// missing. Panics if the mount fails.
    pub fn mount(dir: &Path, options: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir)
            .status()
            .unwrap_or_else(|e| panic!("cannot run mount: {e}"))
            .success();
        assert!(ok, "mount -t tmpfs -o {options} on {}", dir.display());
        Tmpfs {
            dir: dir.to_path_buf(),
        }
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Changes its options (`size=64m`) and keeps its contents.
    pub fn remount(&self, options: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,{options}")])
            .arg(&self.dir)
            .status()
            .unwrap_or_else(|e| panic!("cannot run mount: {e}"))
            .success();
        assert!(ok, "remount {} with {options}", self.dir.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

/// The hard-link structure of a manifest: for each inode with several names in the tree, the
/// sorted set of its names.
pub fn hardlink_groups(m: &Manifest) -> BTreeSet<Vec<Vec<u8>>> {
    let mut by_ino: BTreeMap<u64, Vec<Vec<u8>>> = BTreeMap::new();
    for (rel, e) in m {
        if e.kind != Kind::Dir {
            by_ino.entry(e.ino).or_default().push(rel.clone());
        }
    }
    by_ino
        .into_values()
        .filter(|names| names.len() > 1)
        .map(|mut v| {
            v.sort();
            v
        })
        .collect()
}

/// The path of manifest key `rel` below `root`.
pub fn path_of(root: &Path, rel: &[u8]) -> PathBuf {
    if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(OsStr::from_bytes(rel))
    }
}

/// Decodes a tree name or link target as `cairn ls --json` prints it: a string, or
/// `{"hex": "…"}` for bytes that are not UTF-8.
pub fn raw_bytes(v: &Value) -> Vec<u8> {
    match v {
        Value::String(s) => s.as_bytes().to_vec(),
        Value::Object(o) => {
            let hex = o["hex"].as_str().expect("hex field");
            (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex digit"))
                .collect()
        }
        other => panic!("not a raw byte string: {other}"),
    }
}

/// The content blob ids of an `ls --json` node (empty for empty files and non-files).
pub fn content_ids(node: &Value) -> Vec<String> {
    node["content"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| v.as_str().expect("blob id").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// A temporary directory on a file system that supports `user.*` extended attributes: the
/// system temp dir if it does, else one below the target directory. Panics if neither does, so
/// that xattr coverage is never skipped silently.
pub fn xattr_capable_tempdir() -> tempfile::TempDir {
    let mut candidates = vec![std::env::temp_dir()];
    if let Ok(exe) = std::env::current_exe()
        && let Some(target) = exe.ancestors().nth(3)
    {
        candidates.push(target.join("tmp"));
    }
    for base in &candidates {
        let _ = std::fs::create_dir_all(base);
        let Ok(dir) = tempfile::Builder::new()
            .prefix("cairn-e2e-")
            .tempdir_in(base)
        else {
            continue;
        };
        let probe = dir.path().join("xattr-probe");
        std::fs::write(&probe, b"x").expect("write probe");
        let ok = xattr::set(&probe, "user.cairn-probe", b"1").is_ok();
        std::fs::remove_file(&probe).expect("remove probe");
        if ok {
            return dir;
        }
    }
    panic!(
        "no candidate temporary directory ({candidates:?}) supports user.* extended attributes; \
         set TMPDIR to a directory on a file system that does (ext4, xfs, btrfs, tmpfs >= 6.6)"
    );
}

/// A plain temporary directory for a test.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("cairn-e2e-")
        .tempdir()
        .expect("create temporary directory")
}

/// Writes `content` to `path`, creating parent directories.
pub fn write_file(path: &Path, content: &[u8]) {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).expect("create parent directories");
    }
    std::fs::write(path, content).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Regular files below `root` as relative path → content (for small test trees).
pub fn read_tree_files(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    files_below(root)
        .into_iter()
        .map(|p| {
            let content = std::fs::read(&p).expect("read file");
            (
                p.strip_prefix(root).expect("below root").to_path_buf(),
                content,
            )
        })
        .collect()
}

/// Runs `cairn -r REPO restore latest --target TARGET EXTRA…` through `run` (which adds the
/// environment of a storage service) and asserts that it succeeded and that TARGET holds
/// exactly the files of `src`, byte for byte.
pub fn assert_restores_latest(
    run: impl Fn(&[&str]) -> Output,
    repo: &str,
    target: &Path,
    extra: &[&str],
    src: &Path,
) {
    let target_s = target.to_str().expect("UTF-8 test path");
    let mut args = vec!["-r", repo, "restore", "latest", "--target", target_s];
    args.extend_from_slice(extra);
    let out = run(&args);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(read_tree_files(target), read_tree_files(src));
}
