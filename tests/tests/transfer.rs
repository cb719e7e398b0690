//! The transfer settings every command shares: `--connections`, `--limit-upload` and
//! `--limit-download` (KiB/s). Limits are checked as lower bounds on elapsed time, which a slow
//! or busy machine can only make longer, never shorter.

use std::time::{Duration, Instant};

use cairn_e2e::*;

#[test]
fn zero_connections_and_zero_rate_limits_are_refused_naming_the_flag() {
    let base = tempdir();
    let repo = Repo::init(&base.path().join("repo"), &[]);
    let src = base.path().join("src");
    write_file(&src.join("a"), b"a");
    for (flag, value) in [
        ("--connections", "0"),
        ("--limit-upload", "0"),
        ("--limit-download", "0"),
    ] {
        let out = repo.run(&[flag, value, "backup", src.to_str().unwrap()]);
        out.failed_cleanly().stderr_has(flag);
    }
    let out = repo.run(&["--limit-upload", "fast", "snapshots"]);
    out.failed_cleanly().stderr_has("--limit-upload");
    assert!(repo.snapshots().is_empty(), "nothing was written");
}

#[test]
fn rate_limits_hold_backup_and_restore_to_the_rate() {
    let base = tempdir();
    let repo = Repo::init(&base.path().join("repo"), &["--compression", "0"]);
    let src = base.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    write_random_file(&src.join("noise"), 600 << 10, 5);

    // 600 KiB of incompressible data at 200 KiB/s: at least 3 s.
    let start = Instant::now();
    let summary = repo.backup(&[&src], &["--limit-upload", "200"]);
    let took = start.elapsed();
    assert!(counter(&summary, "data_added") >= 600 << 10);
    assert!(took >= Duration::from_millis(2990), "backup took {took:?}");

    // The restore reads the same 600 KiB at 300 KiB/s: at least 2 s.
    let target = base.path().join("out");
    let start = Instant::now();
    repo.restore(
        "latest",
        &target,
        &["--limit-download", "300", "--connections", "4"],
    )
    .success();
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(1990), "restore took {took:?}");
    assert_eq!(read_tree_files(&target), read_tree_files(&src));
}
