//! Ctrl-C and SIGTERM against the real `cairn` binary: a backup stopped by a signal exits
//! 130 or 143 with one line, leaves no lock and no snapshot, the repository checks clean, and
//! the next backup completes reusing what the stopped one stored.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cairn_e2e::*;

/// Waits until the backup has stored its first pack (it is then mid-way), polling the
/// repository's `data/` for at most 60 s.
fn wait_for_pack(repo: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stored = std::fs::read_dir(repo.join("data"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|d| std::fs::read_dir(d.path()).is_ok_and(|mut f| f.next().is_some()));
        if stored {
            return;
        }
        assert!(Instant::now() < deadline, "the backup never stored a pack");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn stopped_backup_is_clean(signal: nix::sys::signal::Signal, code: i32) {
    let base = tempdir();
    let src = base.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..24 {
        write_random_file(&src.join(format!("f{i}")), 1 << 20, i);
    }
    let repo_dir = base.path().join("repo");
    // 1 MiB packs at 2 MiB/s: the backup takes about 12 s unless stopped.
    let repo = Repo::init(&repo_dir, &["--pack-size", "1"]);
    let mut child = Command::new(cairn_bin())
        .args([
            "-r",
            repo_dir.to_str().unwrap(),
            "--limit-upload",
            "2048",
            "backup",
        ])
        .arg(&src)
        .env("CAIRN_PASSWORD", &repo.password)
        .env_remove("CAIRN_PASSWORD_FILE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_pack(&repo_dir);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).unwrap();
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(code), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(
        lines[0].contains(&format!("interrupted by {}", signal.as_str()))
            && lines[0].contains("no snapshot written"),
        "{stderr}"
    );
    assert!(repo.snapshot_ids().is_empty(), "no snapshot");
    let locks = std::fs::read_dir(repo_dir.join("locks")).unwrap().count();
    assert_eq!(locks, 0, "the lock was removed");
    repo.run(&["check", "--read-data"]).success();

    let stored_before = repo.pack_ids().len();
    let done = repo.backup(&[&src], &[]);
    assert!(stored_before > 0, "the stopped backup had stored packs");
    let added = counter(&done, "data_added");
    assert!(
        added < 24 << 20,
        "the next backup added {added} bytes: it reused nothing of {stored_before} packs"
    );
}

#[test]
fn ctrl_c_stops_a_backup_cleanly_with_exit_130() {
    stopped_backup_is_clean(nix::sys::signal::Signal::SIGINT, 130);
}

#[test]
fn sigterm_stops_a_backup_cleanly_with_exit_143() {
    stopped_backup_is_clean(nix::sys::signal::Signal::SIGTERM, 143);
}
