//! Round trips through the real `cairn` binary: a tree holding every kind of entry and
//! attribute Cairn promises to keep (empty and 1-byte files, chunk-boundary sizes, a 100 MiB
//! file, a sparse 1 GiB file, hard links, symlinks, a fifo, device nodes, non-UTF-8 and
//! newline names, deep nesting, 255-byte names, xattrs, setuid/setgid/sticky, foreign owners,
//! nanosecond times) is backed up and restored and compared byte for byte and attribute for
//! attribute; plus `restore --verify`, `ls` of awkward names, `SNAPSHOT:SUBPATH` restores,
//! `--include`/`--exclude`, and backups of several paths.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use cairn_e2e::*;
use filetime::FileTime;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const BIG_SIZE: u64 = 100 * MIB;
const SPARSE_SIZE: u64 = GIB;
const FOREIGN_UID: u32 = 1234;
const FOREIGN_GID: u32 = 5678;

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
}

fn chown(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("lchown {}: {e}", p.display()));
}

fn symlink(target: &[u8], link: &Path) {
    std::os::unix::fs::symlink(OsStr::from_bytes(target), link)
        .unwrap_or_else(|e| panic!("symlink {}: {e}", link.display()));
}

fn mkdir(p: &Path) {
    fs::create_dir_all(p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
}

/// What [`build_everything`] made, beyond what the manifest shows.
struct Built {
    /// Whether device nodes could be created here.
    devices: bool,
    /// The sparse file, relative to the source.
    sparse: &'static str,
}

/// Creates the everything-tree below `src` (which must exist).
fn build_everything(src: &Path) -> Built {
    let mut rng = Rng::new(0x5eed_0001);

    // Empty files and empty directories.
    write_file(&src.join("empty_file"), b"");
    mkdir(&src.join("empty_dir"));
    mkdir(&src.join("nested_empty/a/b"));
    write_file(&src.join("nested_empty/a/empty_in_dir"), b"");

    // 1-byte files.
    write_file(&src.join("one/a"), b"a");
    write_file(&src.join("one/newline"), b"\n");
    write_file(&src.join("one/zero"), &[0]);

    // Files at exact chunk boundaries (the repository uses max chunk SMALL_CHUNK_MAX).
    write_file(&src.join("chunks/exactly_max"), &rng.bytes(SMALL_CHUNK_MAX));
    write_file(
        &src.join("chunks/twice_max"),
        &rng.bytes(2 * SMALL_CHUNK_MAX),
    );
    write_file(
        &src.join("chunks/max_plus_one"),
        &rng.bytes(SMALL_CHUNK_MAX + 1),
    );
    write_file(&src.join("chunks/zeros_max"), &vec![0u8; SMALL_CHUNK_MAX]);

    // A 100 MiB random file.
    mkdir(&src.join("big"));
    write_random_file(&src.join("big/random_100mib"), BIG_SIZE, 0xb16_f11e);

    // A sparse 1 GiB file: holes with a few written regions, including the very end.
    mkdir(&src.join("sparse"));
    let sparse = "sparse/holes_1gib";
    {
        let f = fs::File::create(src.join(sparse)).unwrap();
        f.set_len(SPARSE_SIZE).unwrap();
        f.write_all_at(&rng.bytes(4096), 0).unwrap();
        f.write_all_at(&rng.bytes(100_000), 300 * MIB + 12345)
            .unwrap();
        f.write_all_at(&rng.bytes(70_000), 700 * MIB).unwrap();
        f.write_all_at(&rng.bytes(1000), SPARSE_SIZE - 1000)
            .unwrap();
    }

    // Hard links: a pair in one directory, a group of three across directories.
    write_file(&src.join("links/pair_a"), b"two names, one inode\n");
    fs::hard_link(src.join("links/pair_a"), src.join("links/pair_b")).unwrap();
    write_file(&src.join("links/trio_1"), &rng.bytes(100_000));
    mkdir(&src.join("links/sub"));
    fs::hard_link(src.join("links/trio_1"), src.join("links/sub/trio_2")).unwrap();
    fs::hard_link(src.join("links/trio_1"), src.join("trio_3")).unwrap();

    // Symlinks: dangling, absolute, relative, non-UTF-8 target, foreign owner.
    mkdir(&src.join("symlinks"));
    symlink(b"does/not/exist", &src.join("symlinks/dangling"));
    symlink(b"/etc/passwd", &src.join("symlinks/absolute"));
    symlink(b"../chunks/exactly_max", &src.join("symlinks/relative"));
    symlink(b"../one", &src.join("symlinks/to_dir"));
    symlink(b"target-\xff\xfe", &src.join("symlinks/non_utf8_target"));
    symlink(b"one/a", &src.join("symlinks/owned"));
    chown(&src.join("symlinks/owned"), FOREIGN_UID, FOREIGN_GID);

    // A fifo and, where mknod is allowed, device nodes.
    mkdir(&src.join("special"));
    nix::unistd::mkfifo(
        &src.join("special/fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .expect("mkfifo");
    let devices = nix::sys::stat::mknod(
        &src.join("special/null_like"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o644),
        nix::sys::stat::makedev(1, 3),
    )
    .is_ok();
    if devices {
        nix::sys::stat::mknod(
            &src.join("special/block_like"),
            nix::sys::stat::SFlag::S_IFBLK,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
            nix::sys::stat::makedev(7, 200),
        )
        .expect("mknod block device after a character device worked");
    } else {
        eprintln!("NOTE: mknod is not permitted here; device nodes are not covered by this run");
    }

    // Awkward names: non-UTF-8 bytes, newlines, spaces.
    mkdir(&src.join("names"));
    write_file(
        &src.join("names")
            .join(OsStr::from_bytes(b"bad-\xff\xfe-name")),
        b"non-utf8 name\n",
    );
    write_file(
        &src.join("names").join("line\nbreak and  spaces "),
        b"newline name\n",
    );
    let odd_dir = src
        .join("names")
        .join(OsStr::from_bytes(b" dir\nwith \xff "));
    write_file(&odd_dir.join("inside"), b"inside an odd directory\n");

    // 200-deep nesting of short names, with a file at the bottom.
    let mut deep = src.join("deep");
    for _ in 0..200 {
        deep.push("d");
    }
    write_file(&deep.join("bottom"), b"200 levels down\n");

    // 255-byte names (the Linux maximum) for a file, a directory, and a file inside it.
    let long_name = "L".repeat(255);
    let long_dir = src.join("long").join("D".repeat(255));
    write_file(&src.join("long").join(&long_name), b"long name\n");
    write_file(&long_dir.join(&long_name), b"long name in long dir\n");

    // Extended attributes, text and binary, on files, a directory and the root.
    write_file(&src.join("attrs/file"), b"has xattrs\n");
    mkdir(&src.join("attrs/dir"));
    xattr::set(src.join("attrs/file"), "user.text", b"hello").unwrap();
    xattr::set(
        src.join("attrs/file"),
        "user.binary",
        &[0, 0xff, 0x80, b'\n'],
    )
    .unwrap();
    xattr::set(src.join("attrs/file"), "user.empty", b"").unwrap();
    xattr::set(src.join("attrs/dir"), "user.on_dir", b"dir value").unwrap();
    xattr::set(src, "user.on_root", b"root value").unwrap();

    // Special mode bits and foreign owners (chown before chmod: chown clears setuid).
    mkdir(&src.join("modes"));
    write_file(&src.join("modes/setuid"), b"#!/bin/sh\n");
    chmod(&src.join("modes/setuid"), 0o4755);
    write_file(&src.join("modes/setgid"), b"#!/bin/sh\n");
    chmod(&src.join("modes/setgid"), 0o2751);
    write_file(&src.join("modes/all_bits"), b"x");
    chmod(&src.join("modes/all_bits"), 0o7777);
    write_file(&src.join("modes/no_perms"), b"x");
    chmod(&src.join("modes/no_perms"), 0o000);
    mkdir(&src.join("modes/sticky_dir"));
    write_file(&src.join("modes/sticky_dir/f"), b"f");
    chmod(&src.join("modes/sticky_dir"), 0o1777);
    mkdir(&src.join("modes/setgid_dir"));
    chmod(&src.join("modes/setgid_dir"), 0o2770);
    write_file(&src.join("owned/file"), b"owned by 1234:5678\n");
    chown(&src.join("owned/file"), FOREIGN_UID, FOREIGN_GID);
    chmod(&src.join("owned/file"), 0o640);
    write_file(&src.join("owned/setuid_foreign"), b"#!/bin/sh\n");
    chown(&src.join("owned/setuid_foreign"), FOREIGN_UID, FOREIGN_GID);
    chmod(&src.join("owned/setuid_foreign"), 0o6750);
    chown(&src.join("owned"), FOREIGN_UID, FOREIGN_GID);
    chmod(&src.join("owned"), 0o750);

    // The root's own metadata (restore applies it to the target).
    chmod(src, 0o750);

    // Last: distinct nanosecond mtimes and atimes on every entry (nothing changes them after).
    set_distinct_times(src);

    Built { devices, sparse }
}

/// Gives every entry below and including `root` its own mtime and atime with nanoseconds.
fn set_distinct_times(root: &Path) {
    let m = manifest(root);
    for (i, rel) in m.keys().enumerate() {
        let i = i as i64;
        let mtime = FileTime::from_unix_time(
            1_600_000_000 + i * 3607,
            ((i * 7_919_117 + 123) % 1_000_000_000) as u32,
        );
        let atime = FileTime::from_unix_time(
            1_650_000_000 + i * 977,
            ((i * 3_331_333 + 987) % 1_000_000_000) as u32,
        );
        let p = path_of(root, rel);
        filetime::set_symlink_file_times(&p, atime, mtime)
            .unwrap_or_else(|e| panic!("set times on {}: {e}", p.display()));
    }
}

#[test]
fn full_round_trip_preserves_content_and_every_attribute() {
    assert!(
        is_root(),
        "this test must run as root: it chowns files to {FOREIGN_UID}:{FOREIGN_GID}, creates \
         device nodes, and checks that restore gives them back"
    );
    let base = xattr_capable_tempdir();
    let src = base.path().join("src");
    mkdir(&src);
    let t = Instant::now();
    let built = build_everything(&src);
    eprintln!("built the source tree in {:?}", t.elapsed());
    let expected = manifest(&src);

    // Preconditions, so the comparison below means something.
    let sparse_src = &expected[built.sparse.as_bytes()];
    assert_eq!(sparse_src.size, SPARSE_SIZE);
    assert!(
        sparse_src.blocks * 512 < SPARSE_SIZE / 64,
        "the source file system did not keep the test file sparse"
    );
    assert_eq!(
        expected[&b"attrs/file"[..]].xattrs.len(),
        3,
        "xattrs were not set"
    );
    assert_eq!(expected[&b""[..]].mode, 0o750);
    let groups = hardlink_groups(&expected);
    assert_eq!(
        groups.len(),
        2,
        "expected a hard-link pair and a trio: {groups:?}"
    );
    assert!(groups.iter().any(|g| g.len() == 3));

    let repo = Repo::init_small_chunks(&base.path().join("repo"));
    let t = Instant::now();
    let summary = repo.backup(&[&src], &[]);
    eprintln!("backup took {:?}", t.elapsed());
    assert_eq!(counter(&summary, "errors"), 0, "{summary}");
    let files = expected.values().filter(|e| e.kind == Kind::File).count() as u64;
    assert_eq!(counter(&summary, "files_new"), files, "{summary}");

    let target = base.path().join("restored");
    let t = Instant::now();
    repo.restore("latest", &target, &[]).success();
    eprintln!("restore took {:?}", t.elapsed());
    let actual = manifest(&target);

    let diffs = diff_manifests(&expected, &actual);
    assert!(
        diffs.is_empty(),
        "{} differences between source and restore:\n{}",
        diffs.len(),
        diffs
            .iter()
            .take(60)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(
        hardlink_groups(&actual),
        groups,
        "hard-link structure differs after restore"
    );
    if built.devices {
        let dev = &actual[&b"special/null_like"[..]];
        assert_eq!(
            (dev.kind, dev.rdev),
            (Kind::CharDev, nix::sys::stat::makedev(1, 3))
        );
    }

    let mut mismatches = Vec::new();
    for (rel, e) in &expected {
        if e.kind == Kind::File
            && let Err(m) = compare_content(&path_of(&src, rel), &path_of(&target, rel))
        {
            mismatches.push(m);
        }
    }
    assert!(
        mismatches.is_empty(),
        "content differs:\n{}",
        mismatches.join("\n")
    );

    let sparse_dst = &actual[built.sparse.as_bytes()];
    assert!(
        sparse_dst.blocks * 512 < SPARSE_SIZE / 64,
        "restored sparse file is not sparse: {} bytes allocated for a {} byte file",
        sparse_dst.blocks * 512,
        SPARSE_SIZE
    );
}

/// A small tree with names `ls`, subpath restores and patterns are tested on.
fn build_mixed(src: &Path) {
    write_file(&src.join("top.txt"), b"top\n");
    write_file(&src.join("notes.md"), b"# notes\n");
    write_file(&src.join(OsStr::from_bytes(b"bad-\xff\xfe")), b"non-utf8\n");
    write_file(&src.join("new\nline name"), b"newline\n");
    write_file(&src.join("sub/a.txt"), b"a\n");
    write_file(&src.join("sub/b.log"), b"b\n");
    write_file(&src.join("sub/inner/c.txt"), b"c\n");
    write_file(&src.join("sub/inner/d.bin"), &Rng::new(7).bytes(50_000));
    write_file(&src.join("other/e.txt"), b"e\n");
    write_file(&src.join("other/f.log"), b"f\n");
    chmod(&src.join("sub"), 0o710);
    chmod(&src.join("sub/inner"), 0o705);
}

fn rel_set(paths: &[&str]) -> BTreeSet<PathBuf> {
    paths.iter().map(PathBuf::from).collect()
}

#[test]
fn restore_with_verify_succeeds_and_checks_every_file() {
    let base = tempdir();
    let src = base.path().join("src");
    build_mixed(&src);
    let repo = Repo::init_small_chunks(&base.path().join("repo"));
    repo.backup(&[&src], &[]);
    let target = base.path().join("out");
    let out = repo.restore("latest", &target, &["--verify", "--json"]);
    out.success();
    let s = summary_line(&out);
    let n = files_below(&src).len() as u64;
    assert_eq!(s["files_restored"].as_u64(), Some(n), "{s}");
    assert_eq!(s["files_verified"].as_u64(), Some(n), "{s}");
    assert_eq!(s["errors"].as_u64(), Some(0), "{s}");
    assert_eq!(read_tree_files(&target), read_tree_files(&src));
}

#[test]
fn ls_lists_non_utf8_and_newline_names() {
    let base = tempdir();
    let src = base.path().join("src");
    build_mixed(&src);
    let repo = Repo::init(&base.path().join("repo"), &[]);
    repo.backup(&[&src], &[]);

    let names: BTreeSet<Vec<u8>> = repo
        .ls("latest", None)
        .iter()
        .map(|n| raw_bytes(&n["name"]))
        .collect();
    assert!(
        names.contains(&b"bad-\xff\xfe"[..]),
        "ls --json lacks the non-UTF-8 name: {names:?}"
    );
    assert!(
        names.contains(&b"new\nline name"[..]),
        "ls --json lacks the newline name: {names:?}"
    );

    // Plain `ls` may print awkward bytes lossily or escaped, but must list both entries.
    let text = repo.run(&["ls", "latest"]);
    text.success();
    assert!(
        text.stdout.lines().any(|l| l.starts_with("/bad-")),
        "plain ls does not list the non-UTF-8 name:\n{}",
        text.stdout
    );
    assert!(
        text.stdout.contains("line name"),
        "plain ls does not list the newline name:\n{}",
        text.stdout
    );
}

#[test]
fn restore_of_a_subpath_writes_that_directory_into_the_target() {
    let base = tempdir();
    let src = base.path().join("src");
    build_mixed(&src);
    let repo = Repo::init(&base.path().join("repo"), &[]);
    repo.backup(&[&src], &[]);

    let target = base.path().join("sub_out");
    repo.restore("latest:/sub", &target, &[]).success();
    assert_eq!(read_tree_files(&target), read_tree_files(&src.join("sub")));
    let mode = fs::metadata(&target).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o710, "the target gets the restored directory's mode");

    let target = base.path().join("inner_out");
    repo.restore("latest:sub/inner", &target, &[]).success();
    assert_eq!(
        read_tree_files(&target),
        read_tree_files(&src.join("sub/inner"))
    );
    let mode = fs::metadata(&target).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o705);

    let target = base.path().join("file_out");
    repo.restore("latest:/sub/inner/d.bin", &target, &[])
        .success();
    assert_eq!(
        read_tree_files(&target),
        BTreeMap::from([(
            PathBuf::from("d.bin"),
            fs::read(src.join("sub/inner/d.bin")).unwrap()
        )]),
        "a single file restores into the target under its name"
    );

    let out = repo.restore("latest:/no/such/dir", &base.path().join("none"), &[]);
    out.failed_cleanly().stderr_has("no/such/dir");
}

#[test]
fn restore_include_and_exclude_select_the_expected_files() {
    let base = tempdir();
    let src = base.path().join("src");
    build_mixed(&src);
    let repo = Repo::init(&base.path().join("repo"), &[]);
    repo.backup(&[&src], &[]);
    let all: BTreeMap<PathBuf, Vec<u8>> = read_tree_files(&src);

    let check = |name: &str, flags: &[&str], expected: BTreeSet<PathBuf>| {
        let target = base.path().join(name);
        repo.restore("latest", &target, flags).success();
        let got = read_tree_files(&target);
        assert_eq!(
            got.keys().cloned().collect::<BTreeSet<_>>(),
            expected,
            "restore {flags:?} restored the wrong files"
        );
        for (rel, content) in &got {
            assert_eq!(content, &all[rel], "{} content", rel.display());
        }
    };

    check(
        "txt_only",
        &["--include", "*.txt"],
        rel_set(&["top.txt", "sub/a.txt", "sub/inner/c.txt", "other/e.txt"]),
    );
    check(
        "sub_only",
        &["--include", "/sub"],
        rel_set(&[
            "sub/a.txt",
            "sub/b.log",
            "sub/inner/c.txt",
            "sub/inner/d.bin",
        ]),
    );
    let mut rest: BTreeSet<PathBuf> = all.keys().cloned().collect();
    for gone in [
        "sub/b.log",
        "other/f.log",
        "sub/inner/c.txt",
        "sub/inner/d.bin",
    ] {
        rest.remove(Path::new(gone));
    }
    check(
        "no_logs_no_inner",
        &["--exclude", "*.log", "--exclude", "/sub/inner"],
        rest,
    );
    check(
        "include_minus_exclude",
        &["--include", "/sub", "--exclude", "*.bin"],
        rel_set(&["sub/a.txt", "sub/b.log", "sub/inner/c.txt"]),
    );
}

#[test]
fn partial_restore_gives_parent_directories_their_snapshot_metadata() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let base = tempdir();
    let src = base.path().join("src");
    fs::create_dir_all(src.join("d/deeper")).unwrap();
    fs::write(src.join("d/deeper/wanted.txt"), b"wanted").unwrap();
    fs::write(src.join("d/other.log"), b"not wanted").unwrap();
    fs::set_permissions(src.join("d"), fs::Permissions::from_mode(0o751)).unwrap();
    fs::set_permissions(src.join("d/deeper"), fs::Permissions::from_mode(0o705)).unwrap();
    let when = FileTime::from_unix_time(1_500_000_000, 123_456_789);
    filetime::set_file_times(src.join("d/deeper"), when, when).unwrap();
    filetime::set_file_times(src.join("d"), when, when).unwrap();
    let repo = Repo::init(&base.path().join("repo"), &[]);
    repo.backup(&[&src], &[]);

    let target = base.path().join("partial");
    repo.restore("latest", &target, &["--include", "wanted.txt"])
        .success();
    assert_eq!(
        fs::read(target.join("d/deeper/wanted.txt")).unwrap(),
        b"wanted"
    );
    assert!(
        !target.join("d/other.log").exists(),
        "only the included file"
    );
    for (rel, mode) in [("d", 0o751), ("d/deeper", 0o705)] {
        let m = fs::metadata(target.join(rel)).unwrap();
        assert_eq!(
            m.mode() & 0o7777,
            mode,
            "{rel} mode from the snapshot, not 0700"
        );
        assert_eq!(
            (m.mtime(), m.mtime_nsec()),
            (1_500_000_000, 123_456_789),
            "{rel} mtime"
        );
    }
}

#[test]
fn backup_of_several_paths_stores_each_under_its_own_name() {
    let base = tempdir();
    let one = base.path().join("first/alpha");
    let two = base.path().join("second/beta");
    let lone = base.path().join("third/lone.txt");
    write_file(&one.join("a.txt"), b"alpha a\n");
    write_file(&one.join("deeper/b.txt"), b"alpha b\n");
    write_file(&two.join("c.bin"), &Rng::new(3).bytes(200_000));
    write_file(&lone, b"a single file\n");

    let repo = Repo::init(&base.path().join("repo"), &[]);
    repo.backup(&[&two, &lone, &one], &[]);

    let snaps = repo.snapshots();
    assert_eq!(snaps.len(), 1);
    assert_eq!(
        snaps[0]["paths"].as_array().map(Vec::len),
        Some(3),
        "{}",
        snaps[0]
    );

    let top: BTreeSet<String> = repo
        .ls("latest", None)
        .iter()
        .map(|n| n["path"].as_str().unwrap().to_string())
        .filter(|p| p.matches('/').count() == 1)
        .collect();
    assert_eq!(
        top,
        ["/alpha", "/beta", "/lone.txt"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        "each backup path is stored under its own name at the snapshot root"
    );

    let target = base.path().join("out");
    repo.restore("latest", &target, &[]).success();
    assert_eq!(
        read_tree_files(&target.join("alpha")),
        read_tree_files(&one)
    );
    assert_eq!(read_tree_files(&target.join("beta")), read_tree_files(&two));
    assert_eq!(
        fs::read(target.join("lone.txt")).unwrap(),
        fs::read(&lone).unwrap()
    );
    let entries: BTreeSet<_> = fs::read_dir(&target)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        entries.len(),
        3,
        "nothing else at the target root: {entries:?}"
    );
}

#[test]
fn partial_restore_of_a_hard_link_still_gets_its_content() {
    let base = tempdir();
    let src = base.path().join("src");
    write_file(&src.join("a/first"), &Rng::new(12).bytes(40_000));
    fs::hard_link(src.join("a/first"), src.join("b_second")).unwrap();
    let repo = Repo::init(&base.path().join("repo"), &[]);
    repo.backup(&[&src], &[]);

    let target = base.path().join("only_second");
    repo.restore("latest", &target, &["--include", "/b_second"])
        .success();
    assert_eq!(
        read_tree_files(&target),
        BTreeMap::from([(
            PathBuf::from("b_second"),
            fs::read(src.join("a/first")).unwrap()
        )])
    );

    let target = base.path().join("both");
    repo.restore("latest", &target, &[]).success();
    let m = manifest(&target);
    assert_eq!(
        hardlink_groups(&m),
        BTreeSet::from([vec![b"a/first".to_vec(), b"b_second".to_vec()]])
    );
}

#[test]
fn backup_exclude_patterns_leave_matching_entries_out() {
    let base = tempdir();
    let src = base.path().join("src");
    build_mixed(&src);
    write_file(&src.join("cache/big.tmp"), &Rng::new(13).bytes(10_000));
    let repo = Repo::init(&base.path().join("repo"), &[]);
    let cache = src.join("cache");
    let s = repo.backup(
        &[&src],
        &["--exclude", "*.log", "--exclude", cache.to_str().unwrap()],
    );
    assert_eq!(
        counter(&s, "files_new"),
        files_below(&src).len() as u64 - 3,
        "{s}"
    );

    let paths: BTreeSet<String> = repo
        .ls("latest", None)
        .iter()
        .map(|n| n["path"].as_str().unwrap().to_string())
        .collect();
    for gone in ["/sub/b.log", "/other/f.log", "/cache", "/cache/big.tmp"] {
        assert!(!paths.contains(gone), "{gone} was not excluded: {paths:?}");
    }
    for kept in ["/top.txt", "/sub/a.txt", "/sub/inner/d.bin", "/other/e.txt"] {
        assert!(paths.contains(kept), "{kept} is missing: {paths:?}");
    }
}
