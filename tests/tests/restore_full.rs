//! A restore onto a file system that fills up: `cairn restore` stops at the first file that
//! does not fit instead of trying (and reporting) every one after it, prints one line naming
//! the error and how many files were not restored, exits 1 without a panic, and once there is
//! room a restore into the same target completes. Out of inodes is the same. `restore-init`
//! on a volume too small for its snapshot exits non-zero with its marker still in progress,
//! and the next start (on a larger volume) finishes the job.
//!
//! Each needs a file system of its own that can be made full: a tmpfs, which only root can
//! mount (CI runs as root); as another user these tests return early, as the other root-only
//! tests do.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cairn_e2e::*;

/// Far longer than any of these runs takes; a restore that no longer stops fails instead of
/// hanging the suite.
const LIMIT: Duration = Duration::from_secs(300);

/// `files` random files of `min..min + spread` bytes in 12 directories; their contents by
/// path relative to `src`.
fn source(src: &Path, files: u64, min: u64, spread: u64) -> BTreeMap<PathBuf, Vec<u8>> {
    for i in 0..files {
        let p = src.join(format!("d{:02}/f{i:03}", i % 12));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        write_random_file(&p, min + (i * 7919) % spread, 1000 + i);
    }
    read_tree_files(src)
}

/// The lines of `out`'s stderr that mention a full target.
fn full_lines(out: &Output) -> Vec<&str> {
    out.stderr
        .lines()
        .filter(|l| l.contains("No space left"))
        .collect()
}

/// N from the one line "...; N files not restored; ...".
fn not_restored(line: &str) -> u64 {
    let before = line
        .split(" files not restored")
        .next()
        .unwrap_or_else(|| panic!("no count in {line:?}"));
    before
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {line:?}"))
}

/// Files of `expected` that are in `target` whole, byte for byte.
fn whole_files(expected: &BTreeMap<PathBuf, Vec<u8>>, target: &Path) -> u64 {
    expected
        .iter()
        .filter(|(p, data)| std::fs::read(target.join(p)).ok().as_ref() == Some(*data))
        .count() as u64
}

/// Runs `cairn restore latest` into `target`, which fills up, and checks the one line: exit 1,
/// no panic, a short stderr, exactly one line mentioning "No space left" with the advice, and
/// a count that, with the files restored whole, makes up every file of the snapshot. Returns
/// the files restored whole.
fn restore_stops(repo: &Repo, target: &Path, expected: &BTreeMap<PathBuf, Vec<u8>>) -> u64 {
    let out = repo.run_within(
        LIMIT,
        &["restore", "latest", "--target", target.to_str().unwrap()],
    );
    out.assert_no_panic().expect_code(1);
    let lines = full_lines(&out);
    assert_eq!(
        lines.len(),
        1,
        "one line, not one per file:\n{}",
        out.stderr
    );
    let line = lines[0];
    assert!(
        line.starts_with(&format!("cairn: restore to {} stopped: ", target.display())),
        "{line}"
    );
    assert!(line.contains("No space left on device"), "{line}");
    assert!(
        line.contains(&format!(
            "make room on {} or restore to another target",
            target.display()
        )),
        "{line}"
    );
    assert!(
        out.stderr.lines().count() <= 3,
        "bounded output:\n{}",
        out.stderr
    );
    let n = not_restored(line);
    let whole = whole_files(expected, target);
    assert!(n > 0, "{line}");
    assert_eq!(
        whole + n,
        expected.len() as u64,
        "files restored whole plus files not restored make up the snapshot ({line})"
    );
    whole
}

#[test]
fn a_restore_onto_a_full_file_system_stops_with_one_line_and_a_count() {
    if !is_root() {
        // Needs a file system of its own that fills up; only root can mount one.
        return;
    }
    let base = tempdir();
    let repo = Repo::init(&base.path().join("repo"), &[]);
    let src = base.path().join("src");
    // 300 files of 8 to 56 KiB, about 9 MiB, onto 4 MiB.
    let expected = source(&src, 300, 8 << 10, 48 << 10);
    let total: usize = expected.values().map(Vec::len).sum();
    assert!(total > 8 << 20, "{total} bytes");
    repo.backup(&[&src], &[]);

    let full = Tmpfs::mount(&base.path().join("full"), "size=4m");
    let whole = restore_stops(&repo, full.path(), &expected);
    assert!(whole > 0, "nothing restored before the target filled up");

    // Room is made: a restore into the same target completes the job.
    full.remount("size=64m");
    repo.run_within(
        LIMIT,
        &[
            "restore",
            "latest",
            "--target",
            full.path().to_str().unwrap(),
        ],
    )
    .success();
    assert_eq!(read_tree_files(full.path()), expected);
}

#[test]
fn a_restore_that_runs_out_of_inodes_stops_the_same_way() {
    if !is_root() {
        // Needs a file system of its own that fills up; only root can mount one.
        return;
    }
    let base = tempdir();
    let repo = Repo::init(&base.path().join("repo"), &[]);
    let src = base.path().join("src");
    // Plenty of bytes, 40 inodes: the root, 12 directories (some of which may not fit) and
    // a few of the 300 files. The files created before the first refusal are still being
    // written when it comes, and are given up with the rest: how many of them were finished
    // first is up to the threads.
    let expected = source(&src, 300, 100, 4000);
    repo.backup(&[&src], &[]);
    let full = Tmpfs::mount(&base.path().join("few-inodes"), "size=64m,nr_inodes=40");
    restore_stops(&repo, full.path(), &expected);
}

/// `cairn restore-init` for `db/data-pg-0` into `target`.
fn restore_init(repo: &Repo, target: &Path) -> Output {
    let env = [
        ("CAIRN_TARGET", target.to_str().unwrap()),
        ("CAIRN_NAMESPACE", "db"),
        ("CAIRN_PVC", "data-pg-0"),
        ("CAIRN_REPOSITORY", repo.path.to_str().unwrap()),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()));
    run_cairn_within(
        LIMIT,
        &["restore-init"],
        Some(&repo.password),
        repo.who,
        &env,
    )
}

/// restore-init's JSON lines with `message_type` `kind`.
fn json_lines(out: &Output, kind: &str) -> Vec<serde_json::Value> {
    out.stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message_type"] == kind)
        .collect()
}

fn marker_state(vol: &Path) -> serde_json::Value {
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(vol.join(".cairn/restore.json")).unwrap()).unwrap();
    m["state"].clone()
}

#[test]
fn restore_init_on_a_full_volume_fails_with_its_marker_in_progress_and_the_next_start_finishes() {
    if !is_root() {
        // Needs a file system of its own that fills up; only root can mount one.
        return;
    }
    let base = tempdir();
    let repo = Repo::init(&base.path().join("repo"), &[]);
    let src = base.path().join("src");
    let expected = source(&src, 300, 8 << 10, 48 << 10);
    repo.backup(
        &[&src],
        &[
            "--host",
            "prod",
            "--as-path",
            "/db/data-pg-0",
            "--label",
            "namespace=db",
            "--label",
            "pvc=data-pg-0",
        ],
    );
    let vol = Tmpfs::mount(&base.path().join("volume"), "size=4m");
    std::fs::create_dir(vol.path().join("lost+found")).unwrap();

    let out = restore_init(&repo, vol.path());
    out.assert_no_panic().expect_code(1);
    let lines = full_lines(&out);
    assert_eq!(
        lines.len(),
        1,
        "one line, not one per file:\n{}",
        out.stderr
    );
    assert!(lines[0].contains("files not restored"), "{}", lines[0]);
    assert!(
        lines[0].contains("next start restores again"),
        "{}",
        lines[0]
    );
    assert!(
        out.stderr.lines().count() <= 4,
        "bounded output:\n{}",
        out.stderr
    );
    let summary = json_lines(&out, "summary");
    assert_eq!(summary.len(), 1, "{}", out.stderr);
    assert_eq!(summary[0]["outcome"], "target-full");
    let n = summary[0]["not_restored"].as_u64().unwrap();
    assert_eq!(n, not_restored(lines[0]));
    assert!(n > 0);
    assert!(json_lines(&out, "error").is_empty(), "{}", out.stderr);
    assert_eq!(marker_state(vol.path()), "in-progress");

    // The volume is given more room; the next start finishes the restore.
    vol.remount("size=64m");
    let out = restore_init(&repo, vol.path());
    out.success();
    assert_eq!(json_lines(&out, "summary")[0]["outcome"], "restored");
    assert_eq!(marker_state(vol.path()), "complete");
    let data: BTreeMap<PathBuf, Vec<u8>> = read_tree_files(vol.path())
        .into_iter()
        .filter(|(p, _)| !p.starts_with(".cairn"))
        .collect();
    assert_eq!(data, expected);
}
