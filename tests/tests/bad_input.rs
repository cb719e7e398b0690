//! Mistakes users make, and what `cairn` must do about them: a wrong password (exit 12, nothing
//! written), no repository at the path (exit 10, path named), `init` over an existing
//! repository (refused, config untouched), backup paths that do not exist or share a name
//! (refused, named, no snapshot), and files that cannot be read during a backup (exit 3, named,
//! the snapshot holds everything else).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use cairn_e2e::*;

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
}

fn small_source(src: &Path) {
    write_file(&src.join("a.txt"), b"alpha\n");
    write_file(&src.join("dir/b.bin"), &Rng::new(8).bytes(100_000));
}

#[test]
fn wrong_password_exits_12_and_writes_nothing() {
    let base = tempdir();
    let src = base.path().join("src");
    small_source(&src);
    let repo = Repo::init(&base.path().join("repo"), &[]);
    repo.backup(&[&src], &[]);
    let before = repo.files();
    let repo_name = repo.path.display().to_string();
    let wrong = Some("not the password");

    for args in [
        vec!["backup".to_string(), src.display().to_string()],
        vec!["snapshots".to_string()],
        vec!["ls".to_string(), "latest".to_string()],
        vec!["cat".to_string(), "config".to_string()],
    ] {
        repo.run_with_password(wrong, &args)
            .expect_code(12)
            .stderr_has("wrong password")
            .stderr_has(&repo_name);
    }
    let target = base.path().join("target");
    let args = ["restore", "latest", "--target", target.to_str().unwrap()];
    repo.run_with_password(wrong, &args)
        .expect_code(12)
        .stderr_has("wrong password");
    assert!(
        !target.exists(),
        "a restore with a wrong password created its target"
    );

    assert_eq!(
        repo.files(),
        before,
        "a wrong password changed the repository"
    );
    assert_eq!(repo.snapshots().len(), 1);
}

#[test]
fn no_repository_at_the_path_exits_10_and_names_it() {
    let base = tempdir();
    let src = base.path().join("src");
    small_source(&src);
    let missing = base.path().join("no-repo-here");
    let empty = base.path().join("empty-dir");
    std::fs::create_dir(&empty).unwrap();

    for location in [&missing, &empty] {
        let repo = Repo {
            path: location.clone(),
            password: PASSWORD.into(),
            who: RunAs::Me,
        };
        let name = location.display().to_string();
        // The error states the fact; the command line adds what to do about it.
        repo.run(&["snapshots"])
            .expect_code(10)
            .stderr_has(&name)
            .stderr_has("hint: run `cairn init`");
        repo.run(&["ls", "latest"])
            .expect_code(10)
            .stderr_has(&name);
        repo.backup_raw(&[&src], &[])
            .expect_code(10)
            .stderr_has(&name);
        let target = base.path().join("target");
        repo.restore("latest", &target, &[])
            .expect_code(10)
            .stderr_has(&name);
        assert!(
            !target.exists(),
            "restore from no repository created its target"
        );
    }
    assert!(
        !missing.exists(),
        "a command other than init created the repository directory"
    );
    assert_eq!(
        std::fs::read_dir(&empty).unwrap().count(),
        0,
        "something was written"
    );
}

#[test]
fn init_over_an_existing_repository_is_refused_and_changes_nothing() {
    let base = tempdir();
    let src = base.path().join("src");
    small_source(&src);
    let repo = Repo::init(&base.path().join("repo"), &[]);
    repo.backup(&[&src], &[]);
    let config = std::fs::read(repo.path.join("config")).unwrap();
    let before = repo.files();
    let name = repo.path.display().to_string();

    repo.run(&["init", "--kdf-memory", "64"])
        .failed_cleanly()
        .stderr_has(&name)
        .stderr_has("already exists");
    repo.run_with_password(Some("another password"), &["init", "--kdf-memory", "64"])
        .failed_cleanly()
        .stderr_has(&name);
    repo.run(&["init", "--kdf-memory", "64", "--chunk-sizes", SMALL_CHUNKS])
        .failed_cleanly();

    assert_eq!(
        std::fs::read(repo.path.join("config")).unwrap(),
        config,
        "init rewrote the config"
    );
    assert_eq!(repo.files(), before, "init over a repository changed it");
    assert_eq!(
        repo.snapshots().len(),
        1,
        "the repository still opens with its password"
    );
}

#[test]
fn backup_of_a_missing_path_fails_names_it_and_writes_no_snapshot() {
    let base = tempdir();
    let src = base.path().join("src");
    small_source(&src);
    let repo = Repo::init(&base.path().join("repo"), &[]);
    let before = repo.files();
    let missing = base.path().join("does-not-exist");
    let name = missing.display().to_string();

    repo.backup_raw(&[&missing], &[])
        .failed_cleanly()
        .stderr_has(&name);
    repo.backup_raw(&[&src, &missing], &[])
        .failed_cleanly()
        .stderr_has(&name);

    assert!(
        repo.snapshot_ids().is_empty(),
        "a failed backup wrote a snapshot"
    );
    assert_eq!(
        repo.files(),
        before,
        "a refused backup wrote to the repository"
    );
}

#[test]
fn backup_paths_with_the_same_name_are_refused() {
    let base = tempdir();
    let a = base.path().join("one/data");
    let b = base.path().join("two/data");
    small_source(&a);
    small_source(&b);
    let repo = Repo::init(&base.path().join("repo"), &[]);

    repo.backup_raw(&[&a, &b], &[])
        .failed_cleanly()
        .stderr_has(&a.display().to_string())
        .stderr_has(&b.display().to_string());
    assert!(repo.snapshot_ids().is_empty());
}

#[test]
fn unreadable_files_during_backup_exit_3_are_named_and_everything_else_is_kept() {
    // Root reads everything, so as root cairn runs as nobody (setpriv) against a repository
    // that nobody owns; anyone else runs it as themselves.
    const NOBODY: u32 = 65534;
    let who = if is_root() {
        RunAs::User(NOBODY, NOBODY)
    } else {
        RunAs::Me
    };
    let base = tempdir();
    chmod(base.path(), 0o755);
    let src = base.path().join("src");
    write_file(&src.join("readable.txt"), b"fine\n");
    write_file(&src.join("dir/also_fine.bin"), &Rng::new(4).bytes(70_000));
    write_file(&src.join("dir/secret.key"), b"root only\n");
    write_file(
        &src.join("locked/hidden.txt"),
        b"behind a locked directory\n",
    );
    write_file(&src.join("zzz_last.txt"), b"after the failures\n");
    for d in [&src, &src.join("dir"), &src.join("locked")] {
        chmod(d, 0o755);
    }
    chmod(&src.join("dir/secret.key"), 0o000);
    chmod(&src.join("locked"), 0o000);

    let repo_dir = base.path().join("repo");
    std::fs::create_dir(&repo_dir).unwrap();
    if is_root() {
        std::os::unix::fs::chown(&repo_dir, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    let repo = Repo::init_as(&repo_dir, &[], who);

    let out = repo.backup_raw(&[&src], &[]);
    out.expect_code(3)
        .stderr_has(&src.join("dir/secret.key").display().to_string())
        .stderr_has(&src.join("locked").display().to_string());
    let summary = summary_line(&out);
    assert_eq!(counter(&summary, "errors"), 2, "{summary}");

    let as_root = Repo {
        path: repo_dir.clone(),
        password: PASSWORD.into(),
        who: RunAs::Me,
    };
    let snaps = as_root.snapshots();
    assert_eq!(snaps.len(), 1, "the partial snapshot was written");
    assert_eq!(snaps[0]["id"], summary["snapshot_id"]);
    let paths: Vec<String> = as_root
        .ls("latest", None)
        .iter()
        .map(|n| n["path"].as_str().unwrap().to_string())
        .collect();
    for p in ["/readable.txt", "/dir/also_fine.bin", "/zzz_last.txt"] {
        assert!(
            paths.iter().any(|x| x == p),
            "{p} is missing from {paths:?}"
        );
    }
    assert!(
        !paths.iter().any(|x| x == "/dir/secret.key"),
        "the unreadable file is listed: {paths:?}"
    );

    let target = base.path().join("out");
    as_root.restore("latest", &target, &[]).success();
    for f in ["readable.txt", "dir/also_fine.bin", "zzz_last.txt"] {
        assert_same_content(&src.join(f), &target.join(f));
    }
}

#[test]
fn output_into_a_closed_pipe_ends_quietly_without_a_panic() {
    // `cairn snapshots | head -1`, `cairn cat pack ID | head`: the reader goes away first.
    let base = tempdir();
    let repo = Repo::init(&base.path().join("repo"), &[]);
    let src = base.path().join("src");
    write_file(&src.join("a"), b"a");
    repo.backup(&[&src], &[]);
    for args in [
        vec!["snapshots"],
        vec!["ls", "latest"],
        vec!["snapshots", "--json"],
    ] {
        let mut child = std::process::Command::new(cairn_bin())
            .arg("-r")
            .arg(&repo.path)
            .args(&args)
            .env("CAIRN_PASSWORD", &repo.password)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Close the read end before cairn has opened the repository and written anything.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGPIPE),
            "{args:?}: {:?} {stderr}",
            out.status
        );
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn ls_shows_control_characters_in_names_escaped() {
    let base = tempdir();
    let repo = Repo::init(&base.path().join("repo"), &[]);
    let src = base.path().join("src");
    // A name that would turn a terminal red and clear the line.
    write_file(&src.join("evil\u{1b}[31mred\u{1b}[2K"), b"x");
    repo.backup(&[&src], &[]);
    for args in [vec!["ls", "latest"], vec!["ls", "-l", "latest"]] {
        let out = repo.run(&args);
        out.success();
        assert!(
            !out.stdout.contains('\u{1b}'),
            "{args:?} printed a raw escape: {:?}",
            out.stdout
        );
        assert!(
            out.stdout.contains("evil\\x1b[31mred\\x1b[2K"),
            "{args:?}: {:?}",
            out.stdout
        );
    }
    // JSON keeps the exact name.
    let nodes = repo.ls("latest", None);
    assert!(
        nodes
            .iter()
            .any(|n| n["name"] == "evil\u{1b}[31mred\u{1b}[2K"),
        "{nodes:?}"
    );
}

#[test]
fn find_and_diff_show_control_characters_in_names_escaped() {
    let base = tempdir();
    let repo = Repo::init(&base.path().join("repo"), &[]);
    let src = base.path().join("src");
    write_file(&src.join("plain.txt"), b"x");
    let first = repo.backup(&[&src], &[]);
    let evil = "evil\u{1b}[31mred\u{1b}[2K";
    write_file(&src.join(evil), b"x");
    let second = repo.backup(&[&src], &[]);
    let (a, b) = (
        first["snapshot_id"].as_str().unwrap(),
        second["snapshot_id"].as_str().unwrap(),
    );
    for args in [vec!["find", "evil*"], vec!["diff", a, b]] {
        let out = repo.run(&args);
        out.success();
        assert!(
            !out.stdout.contains('\u{1b}'),
            "{args:?} printed a raw escape: {:?}",
            out.stdout
        );
        assert!(
            out.stdout.contains("/evil\\x1b[31mred\\x1b[2K"),
            "{args:?}: {:?}",
            out.stdout
        );
        // JSON keeps the exact name.
        let mut json = args.clone();
        json.insert(0, "--json");
        let out = repo.run(&json);
        out.success();
        let paths: Vec<String> = out
            .stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v["path"].as_str().map(str::to_string))
            .collect();
        assert!(paths.contains(&format!("/{evil}")), "{json:?}: {paths:?}");
    }
}
