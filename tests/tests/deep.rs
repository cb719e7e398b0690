//! Deep trees: a real chain of 20 000 nested directories (its deepest path is 40 000 bytes,
//! ten times `PATH_MAX`), made on disk relative to directory descriptors and backed up with the
//! real binary, goes through every command that walks trees (`ls`, `find`, `diff`, `stats`,
//! `dump`, `check --read-data`, `copy`, `forget --prune`) without a crash, each exiting 0; a
//! chain of 10 000 restores with the deepest file intact. No path to the bottom of a chain can
//! be handed to the kernel, so the test makes, reads and removes chains with `*at` calls too.

use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::{Command, Stdio};

use cairn_e2e::*;
use nix::fcntl::{OFlag, openat};
use nix::sys::stat::Mode;

/// The name of every directory of a chain.
const D: &str = "d";
/// The file at the bottom of a chain.
const LEAF: &str = "leaf.txt";

fn open_dir(dir: &impl AsFd, name: &OsStr) -> OwnedFd {
    openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .unwrap_or_else(|e| panic!("open directory {name:?}: {e}"))
}

fn open_path(path: &Path) -> OwnedFd {
    nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

/// The directory `depth` levels of `d` below `root`, open.
fn descend(root: &Path, depth: usize) -> OwnedFd {
    let mut fd = open_path(root);
    for _ in 0..depth {
        fd = open_dir(&fd, OsStr::new(D));
    }
    fd
}

/// Makes a chain of `depth` directories `d` below `root` (created), with [`LEAF`] holding
/// `content` at the bottom.
fn make_chain(root: &Path, depth: usize, content: &[u8]) {
    std::fs::create_dir_all(root).unwrap();
    let mut fd = open_path(root);
    for _ in 0..depth {
        nix::sys::stat::mkdirat(&fd, D, Mode::from_bits_truncate(0o755)).expect("mkdirat");
        fd = open_dir(&fd, OsStr::new(D));
    }
    write_leaf(&fd, content);
}

fn write_leaf(dir: &OwnedFd, content: &[u8]) {
    let f = openat(
        dir,
        LEAF,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_TRUNC | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o644),
    )
    .expect("create the leaf");
    std::fs::File::from(f).write_all(content).unwrap();
}

/// The content of [`LEAF`] at the bottom of the chain of `depth` below `root`.
fn read_leaf(root: &Path, depth: usize) -> Vec<u8> {
    let dir = descend(root, depth);
    let f = openat(
        &dir,
        LEAF,
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .expect("open the leaf");
    let mut out = Vec::new();
    std::fs::File::from(f).read_to_end(&mut out).unwrap();
    out
}

/// Removes everything below `root` (and `root`), holding one directory open at a time: down
/// by name, back up through `..`.
fn remove_tree(root: &Path) {
    if !root.exists() {
        return;
    }
    let mut fd = open_path(root);
    let mut names: Vec<OsString> = Vec::new();
    loop {
        let mut subdir = None;
        let mut dir = nix::dir::Dir::from_fd(fd.try_clone().unwrap()).unwrap();
        let entries: Vec<(OsString, bool)> = dir
            .iter()
            .map(|e| e.unwrap())
            .filter(|e| ![&b"."[..], b".."].contains(&e.file_name().to_bytes()))
            .map(|e| {
                let name = OsStr::from_bytes(e.file_name().to_bytes()).to_os_string();
                let is_dir = e.file_type() == Some(nix::dir::Type::Directory);
                (name, is_dir)
            })
            .collect();
        drop(dir);
        for (name, is_dir) in entries {
            if is_dir {
                subdir.get_or_insert(name);
            } else {
                nix::unistd::unlinkat(
                    &fd,
                    name.as_os_str(),
                    nix::unistd::UnlinkatFlags::NoRemoveDir,
                )
                .unwrap();
            }
        }
        if let Some(name) = subdir {
            fd = open_dir(&fd, &name);
            names.push(name);
            continue;
        }
        let Some(name) = names.pop() else { break };
        fd = open_dir(&fd, OsStr::new(".."));
        nix::unistd::unlinkat(&fd, name.as_os_str(), nix::unistd::UnlinkatFlags::RemoveDir)
            .unwrap();
    }
    drop(fd);
    std::fs::remove_dir(root).unwrap();
}

/// What a command whose output may be hundreds of megabytes did: its exit code, stderr, and
/// the size, line count, first and last line of its stdout (read as a stream, not kept).
struct Streamed {
    cmdline: String,
    code: i32,
    stderr: String,
    bytes: u64,
    lines: u64,
    head: Vec<u8>,
}

impl Streamed {
    fn success(&self) -> &Self {
        assert_eq!(
            self.code, 0,
            "`{}` exited {}\n--- stderr\n{}",
            self.cmdline, self.code, self.stderr
        );
        self
    }

    fn head_has(&self, needle: &str) -> &Self {
        let head = String::from_utf8_lossy(&self.head);
        assert!(
            head.contains(needle),
            "`{}` printed no {needle:?} in its first bytes:\n{head}",
            self.cmdline
        );
        self
    }
}

fn stream(repo: &Repo, args: &[&OsStr]) -> Streamed {
    stream_env(repo, args, &[])
}

fn stream_env(repo: &Repo, args: &[&OsStr], env: &[(&str, &str)]) -> Streamed {
    let mut child = Command::new(cairn_bin())
        .arg("-r")
        .arg(&repo.path)
        .args(args)
        .env_remove("CAIRN_REPOSITORY")
        .env_remove("CAIRN_PASSWORD_FILE")
        .env("CAIRN_PASSWORD", &repo.password)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run cairn");
    let mut stderr = child.stderr.take().unwrap();
    let errs = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut stdout = child.stdout.take().unwrap();
    let (mut bytes, mut lines, mut head) = (0u64, 0u64, Vec::new());
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = stdout.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        bytes += n as u64;
        lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
        if head.len() < 1 << 20 {
            head.extend_from_slice(&buf[..n.min((1 << 20) - head.len())]);
        }
    }
    let status = child.wait().unwrap();
    Streamed {
        cmdline: format!("cairn {args:?}"),
        code: status.code().unwrap_or(128),
        stderr: errs.join().unwrap(),
        bytes,
        lines,
        head,
    }
}

fn os<'a>(args: &[&'a str]) -> Vec<&'a OsStr> {
    args.iter().map(|a| OsStr::new(*a)).collect()
}

/// A chain too deep for any path: backed up (every level, exit 0), then walked by every
/// command that walks trees.
#[test]
fn a_chain_of_20000_directories_backs_up_and_every_command_walks_it() {
    const DEPTH: usize = 20_000;
    let base = tempdir();
    let src = base.path().join("src");
    make_chain(&src, DEPTH, b"first version\n");
    let repo = Repo::init(&base.path().join("repo"), &[]);

    let first = repo.backup(&[&src], &[]);
    assert_eq!(counter(&first, "files_new"), 1, "{first}");
    assert_eq!(counter(&first, "dirs_new") as usize, DEPTH + 1, "{first}");
    assert_eq!(counter(&first, "errors"), 0, "{first}");
    let first_id = first["snapshot_id"].as_str().unwrap().to_string();

    // Every entry once: the 20 000 directories and the file.
    let ls = stream(&repo, &os(&["ls", "latest"]));
    ls.success().head_has("/d\n/d/d\n/d/d/d\n");
    assert_eq!(ls.lines as usize, DEPTH + 1);

    let find = stream(&repo, &os(&["find", LEAF]));
    find.success().head_has(LEAF).head_has("1 matches");

    // A second version of the leaf: the trees differ all the way down.
    write_leaf(&descend(&src, DEPTH), b"second version\n");
    let second = repo.backup(&[&src], &[]);
    assert_eq!(counter(&second, "files_changed"), 1, "{second}");
    let second_id = second["snapshot_id"].as_str().unwrap().to_string();
    let diff = stream(&repo, &os(&["diff", &first_id, &second_id]));
    diff.success().head_has("M    /d/d/").head_has("modified 1");

    stream(&repo, &os(&["stats"]))
        .success()
        .head_has("2 snapshots");

    // The whole chain as tar: a directory member per level, then the file.
    let dump = stream(&repo, &os(&["dump", "latest", "/"]));
    dump.success();
    assert!(dump.bytes > (DEPTH * 1024) as u64, "{} bytes", dump.bytes);

    stream(&repo, &os(&["check", "--read-data"]))
        .success()
        .head_has(": 0 errors");

    let other = Repo::init(&base.path().join("other"), &[]);
    let from = repo.path.as_os_str();
    let copy = [OsStr::new("copy"), OsStr::new("--from-repo"), from];
    stream_env(&other, &copy, &[("CAIRN_FROM_PASSWORD", PASSWORD)]).success();
    assert_eq!(other.snapshots().len(), 2);
    stream(&repo, &os(&["forget", "--keep-last", "1", "--prune"])).success();
    stream(&repo, &os(&["check"])).success();

    remove_tree(&src);
}

/// A chain of 10 000 restores (creating every level relative to its parent's descriptor)
/// with the deepest file intact, also with `--verify`.
#[test]
fn a_chain_of_10000_directories_restores() {
    const DEPTH: usize = 10_000;
    let base = tempdir();
    let src = base.path().join("src");
    make_chain(&src, DEPTH, b"at the bottom\n");
    let repo = Repo::init(&base.path().join("repo"), &[]);
    repo.backup(&[&src], &[]);
    remove_tree(&src);

    let target = base.path().join("target");
    repo.restore("latest", &target, &[]).success();
    assert_eq!(read_leaf(&target, DEPTH), b"at the bottom\n");
    remove_tree(&target);

    let verified = repo.restore("latest", &target, &["--verify"]);
    verified.success();
    assert!(
        verified.stdout.contains("verified 1 files"),
        "{}",
        verified.stdout
    );
    assert_eq!(read_leaf(&target, DEPTH), b"at the bottom\n");
    remove_tree(&target);
}
