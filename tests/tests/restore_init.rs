//! `cairn restore-init` as an init container runs it: from environment variables, on every
//! start of the pod. The volume's latest snapshot comes back byte for byte with owners and
//! modes; a restarted pod finds a complete marker and nothing is touched; an interrupted
//! restore is finished; a volume holding data is left alone unless told otherwise; no
//! snapshot means an empty start; the source cluster must be unambiguous; two replicas on
//! one volume restore it once.

use std::path::Path;
use std::process::Command;

use cairn_e2e::*;

/// A repository holding snapshots of `db/data-pg-0` as the agent records them.
struct Fixture {
    base: tempfile::TempDir,
    repo: Repo,
    src: std::path::PathBuf,
}

fn fixture() -> Fixture {
    let base = tempdir();
    let repo = Repo::init(&base.path().join("repo"), &[]);
    let src = base.path().join("volume-data");
    for i in 0..8 {
        let p = src.join(format!("pgdata/base/{i}"));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        write_random_file(&p, 30_000 + i * 1000, 500 + i);
    }
    write_file(&src.join("pgdata/PG_VERSION"), b"16\n");
    std::fs::set_permissions(
        src.join("pgdata"),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    if is_root() {
        std::os::unix::fs::chown(src.join("pgdata/PG_VERSION"), Some(999), Some(999)).unwrap();
    }
    Fixture { base, repo, src }
}

fn backup_as(f: &Fixture, cluster: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "--host",
        cluster,
        "--as-path",
        "/db/data-pg-0",
        "--label",
        "namespace=db",
        "--label",
        "pvc=data-pg-0",
    ];
    args.extend(extra);
    f.repo.backup(&[&f.src], &args)
}

/// A fresh volume: only `lost+found`, as a new ext4 disk has.
fn fresh_volume(f: &Fixture, name: &str) -> std::path::PathBuf {
    let v = f.base.path().join(name);
    std::fs::create_dir_all(v.join("lost+found")).unwrap();
    v
}

/// `cairn restore-init` with the environment a StatefulSet's init container gets.
fn restore_init(f: &Fixture, target: &Path, extra: &[&str]) -> Output {
    let env = vec![
        ("CAIRN_TARGET".to_string(), target.display().to_string()),
        ("CAIRN_NAMESPACE".to_string(), "db".to_string()),
        ("CAIRN_CLAIM_TEMPLATE".to_string(), "data".to_string()),
        ("CAIRN_POD_NAME".to_string(), "pg-0".to_string()),
        (
            "CAIRN_REPOSITORY".to_string(),
            f.repo.path.display().to_string(),
        ),
    ];
    let mut args = vec!["restore-init"];
    args.extend(extra);
    run_cairn_with_env(&args, Some(PASSWORD), RunAs::Me, &env)
}

fn outcome(out: &Output) -> String {
    out.stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message_type"] == "summary")
        .map(|v| v["outcome"].as_str().unwrap_or("").to_string())
        .unwrap_or_else(|| panic!("no summary line:\n{}", out.stderr))
}

/// The volume's files, less restore-init's own state and `lost+found`.
fn data_of(dir: &Path) -> std::collections::BTreeMap<std::path::PathBuf, Vec<u8>> {
    read_tree_files(dir)
        .into_iter()
        .filter(|(p, _)| !p.starts_with(".cairn") && !p.starts_with("lost+found"))
        .collect()
}

#[test]
fn a_lost_volume_comes_back_and_a_restart_touches_nothing() {
    let f = fixture();
    backup_as(&f, "prod", &[]);
    // What the snapshot recorded, before anything here reads the files (reads move atimes).
    let expected = manifest(&f.src);
    let vol = fresh_volume(&f, "new-disk");
    let out = restore_init(&f, &vol, &[]);
    out.success();
    assert_eq!(outcome(&out), "restored");
    let restored = manifest(&vol);
    assert_eq!(data_of(&vol), read_tree_files(&f.src));
    // Owners and modes as recorded; restore-init's own state and lost+found are extra.
    let diffs: Vec<String> = diff_manifests(&expected, &restored)
        .into_iter()
        .filter(|d| {
            !(d.contains("unexpected extra entry")
                && (d.starts_with("\".cairn") || d.starts_with("\"lost+found")))
        })
        .collect();
    assert!(diffs.is_empty(), "{diffs:?}");
    let marker: serde_json::Value =
        serde_json::from_slice(&std::fs::read(vol.join(".cairn/restore.json")).unwrap()).unwrap();
    assert_eq!(marker["state"], "complete");

    // The app writes; the pod restarts: nothing is touched.
    write_file(&vol.join("pgdata/PG_VERSION"), b"17\n");
    let out = restore_init(&f, &vol, &[]);
    out.success();
    assert_eq!(outcome(&out), "already-restored");
    assert_eq!(
        std::fs::read(vol.join("pgdata/PG_VERSION")).unwrap(),
        b"17\n"
    );
}

#[test]
fn an_interrupted_restore_is_finished_on_the_next_start() {
    let f = fixture();
    backup_as(&f, "prod", &[]);
    let vol = fresh_volume(&f, "disk");
    // What a restore killed midway leaves: an in-progress marker and part of the files.
    write_file(
        &vol.join(".cairn/restore.json"),
        br#"{"state":"in-progress","snapshot":"x","time":"2026-01-01T00:00:00Z"}"#,
    );
    write_file(&vol.join("pgdata/base/0"), b"half a file");
    let out = restore_init(&f, &vol, &[]);
    out.success();
    assert_eq!(
        outcome(&out),
        "restored",
        "an in-progress volume is not 'not empty'"
    );
    assert_eq!(data_of(&vol), read_tree_files(&f.src));
}

#[test]
fn a_volume_with_data_is_left_alone_overwritten_or_refused_as_asked() {
    let f = fixture();
    backup_as(&f, "prod", &[]);
    let vol = fresh_volume(&f, "used");
    write_file(&vol.join("mine.txt"), b"the app's own data");
    let out = restore_init(&f, &vol, &[]);
    out.success();
    assert_eq!(outcome(&out), "not-empty");
    assert_eq!(data_of(&vol).len(), 1);
    assert!(
        !vol.join(".cairn").exists(),
        "nothing written into a volume left alone"
    );
    restore_init(&f, &vol, &["--if-not-empty", "fail"])
        .expect_code(1)
        .stderr_has("holds data and no restore marker");
    let out = restore_init(&f, &vol, &["--if-not-empty", "overwrite"]);
    out.success();
    assert_eq!(outcome(&out), "restored");
    for (p, data) in read_tree_files(&f.src) {
        assert_eq!(
            std::fs::read(vol.join(&p)).unwrap(),
            data,
            "{}",
            p.display()
        );
    }
}

#[test]
fn no_snapshot_starts_empty_unless_told_to_fail() {
    let f = fixture();
    let vol = fresh_volume(&f, "empty");
    let out = restore_init(&f, &vol, &[]);
    out.success();
    assert_eq!(outcome(&out), "no-snapshot");
    assert!(!vol.join(".cairn/restore.json").exists());
    restore_init(&f, &vol, &["--if-no-snapshot", "fail"])
        .expect_code(1)
        .stderr_has("no snapshot of db/data-pg-0");
}

#[test]
fn the_source_cluster_must_be_unambiguous_and_before_picks_an_older_snapshot() {
    let f = fixture();
    let first = backup_as(&f, "prod", &["--time", "2026-01-01T00:00:00Z"]);
    write_file(&f.src.join("pgdata/PG_VERSION"), b"17\n");
    backup_as(&f, "staging", &[]);
    let vol = fresh_volume(&f, "v");
    restore_init(&f, &vol, &[])
        .expect_code(1)
        .stderr_has("prod, staging");
    assert!(!vol.join(".cairn/restore.json").exists(), "nothing written");
    // --cluster picks; --before picks an older one.
    let out = restore_init(
        &f,
        &vol,
        &["--cluster", "prod", "--before", "2026-06-01T00:00:00Z"],
    );
    out.success();
    let marker: serde_json::Value =
        serde_json::from_slice(&std::fs::read(vol.join(".cairn/restore.json")).unwrap()).unwrap();
    assert_eq!(marker["snapshot"], first["snapshot_id"]);
    assert_eq!(
        std::fs::read(vol.join("pgdata/PG_VERSION")).unwrap(),
        b"16\n"
    );
}

#[test]
fn a_snapshot_holding_an_old_marker_does_not_stand_in_for_this_restore() {
    let f = fixture();
    // The volume was backed up after an earlier restore: its marker is in the snapshot.
    write_file(
        &f.src.join(".cairn/restore.json"),
        br#"{"state":"complete","snapshot":"old","time":"2026-01-01T00:00:00Z"}"#,
    );
    backup_as(&f, "prod", &[]);
    let vol = fresh_volume(&f, "v");
    restore_init(&f, &vol, &[]).success();
    let marker: serde_json::Value =
        serde_json::from_slice(&std::fs::read(vol.join(".cairn/restore.json")).unwrap()).unwrap();
    assert_ne!(
        marker["snapshot"], "old",
        "the snapshot's marker was restored"
    );
    assert_eq!(marker["state"], "complete");
}

#[test]
fn two_replicas_on_one_volume_restore_it_once() {
    let f = fixture();
    backup_as(&f, "prod", &[]);
    let vol = fresh_volume(&f, "rwx");
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| restore_init(&f, &vol, &[]));
        let b = s.spawn(|| restore_init(&f, &vol, &[]));
        (a.join().unwrap(), b.join().unwrap())
    });
    a.success();
    b.success();
    let mut outcomes = [outcome(&a), outcome(&b)];
    outcomes.sort();
    assert_eq!(outcomes, ["already-restored", "restored"]);
    assert_eq!(data_of(&vol), read_tree_files(&f.src));
}

#[test]
fn bad_input_is_named() {
    let f = fixture();
    let missing = f.base.path().join("not-mounted");
    restore_init(&f, &missing, &[])
        .expect_code(1)
        .stderr_has("not-mounted");
    let vol = fresh_volume(&f, "v");
    restore_init(&f, &vol, &["--before", "yesterday"])
        .expect_code(1)
        .stderr_has("--before");
}

#[test]
fn without_cap_chown_it_restores_as_the_current_user_with_one_warning() {
    const NOBODY: u32 = 65534;
    let f = fixture();
    backup_as(&f, "prod", &[]);
    let who = if is_root() {
        RunAs::User(NOBODY, NOBODY)
    } else {
        RunAs::Me
    };
    Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(f.base.path())
        .status()
        .unwrap();
    let vol = fresh_volume(&f, "user-volume");
    if is_root() {
        Command::new("chown")
            .args(["-R", "65534:65534"])
            .arg(&vol)
            .status()
            .unwrap();
    }
    let env = |target: &Path| {
        vec![
            ("CAIRN_TARGET".to_string(), target.display().to_string()),
            ("CAIRN_NAMESPACE".to_string(), "db".to_string()),
            ("CAIRN_PVC".to_string(), "data-pg-0".to_string()),
            (
                "CAIRN_REPOSITORY".to_string(),
                f.repo.path.display().to_string(),
            ),
        ]
    };
    let strict = run_cairn_with_env(
        &["restore-init", "--strict-ownership"],
        Some(PASSWORD),
        who,
        &env(&vol),
    );
    strict.expect_code(1).stderr_has("CAP_CHOWN");
    assert!(
        !vol.join(".cairn/restore.json").exists(),
        "refused before writing anything"
    );
    let out = run_cairn_with_env(&["restore-init"], Some(PASSWORD), who, &env(&vol));
    out.success();
    assert_eq!(outcome(&out), "restored");
    let warnings = out
        .stderr
        .lines()
        .filter(|l| l.contains("\"warning\""))
        .count();
    assert_eq!(warnings, 1, "{}", out.stderr);
    assert!(out.stderr.contains("recorded owners"), "{}", out.stderr);
    assert_eq!(data_of(&vol), read_tree_files(&f.src));
    if is_root() {
        use std::os::unix::fs::MetadataExt;
        let md = std::fs::metadata(vol.join("pgdata/PG_VERSION")).unwrap();
        assert_eq!(md.uid(), NOBODY, "restored as the user that ran it");
    }
}

#[test]
fn a_marker_that_cannot_be_written_fails_the_init_container() {
    if !is_root() {
        // Needs a file system of its own that is full; only root can mount one.
        return;
    }
    let f = fixture();
    backup_as(&f, "prod", &[]);
    let vol = f.base.path().join("full");
    std::fs::create_dir_all(&vol).unwrap();
    // Two inodes: the root and lost+found. Nothing more can be created: ENOSPC.
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m,nr_inodes=2", "tmpfs"])
        .arg(&vol)
        .status()
        .unwrap()
        .success();
    assert!(ok, "mount tmpfs");
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(&vol);
    std::fs::create_dir(vol.join("lost+found")).unwrap();
    let out = restore_init(&f, &vol, &[]);
    out.expect_code(1)
        .stderr_has(".cairn")
        .stderr_has("No space left on device");
}

#[test]
fn a_restore_killed_midway_is_finished_by_the_next_start() {
    let f = fixture();
    std::fs::create_dir_all(f.src.join("big")).unwrap();
    for i in 0..6 {
        write_random_file(&f.src.join(format!("big/{i}")), 24 << 20, 70 + i);
    }
    backup_as(&f, "prod", &[]);
    let vol = fresh_volume(&f, "killed");
    let env = [
        ("CAIRN_TARGET".to_string(), vol.display().to_string()),
        ("CAIRN_NAMESPACE".to_string(), "db".to_string()),
        ("CAIRN_PVC".to_string(), "data-pg-0".to_string()),
        (
            "CAIRN_REPOSITORY".to_string(),
            f.repo.path.display().to_string(),
        ),
        ("CAIRN_PASSWORD".to_string(), PASSWORD.to_string()),
    ];
    // Slowed down (20 MiB/s) so that the kill lands while files are being written.
    let mut child = Command::new(cairn_bin())
        .args(["restore-init", "--limit-download", "20480"])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let marker = vol.join(".cairn/restore.json");
    while !(marker.exists() && vol.join("big").exists()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the restore never started"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before the kill"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&marker).unwrap()).unwrap();
    assert_eq!(m["state"], "in-progress");
    let out = restore_init(&f, &vol, &[]);
    out.success();
    assert_eq!(outcome(&out), "restored");
    assert_eq!(data_of(&vol), read_tree_files(&f.src));
}

#[test]
fn device_nodes_in_a_snapshot_are_reported_never_created() {
    if !is_root() {
        // Only root can make a device node to back up.
        return;
    }
    let f = fixture();
    let dev = f.src.join("dev-null");
    let ok = Command::new("mknod")
        .arg(&dev)
        .args(["c", "1", "3"])
        .status()
        .unwrap()
        .success();
    assert!(ok, "mknod");
    backup_as(&f, "prod", &[]);
    let vol = fresh_volume(&f, "v");
    let out = restore_init(&f, &vol, &[]);
    out.success();
    assert!(
        std::fs::symlink_metadata(vol.join("dev-null")).is_err(),
        "a device node was created"
    );
    assert!(
        out.stderr
            .contains("device nodes in the snapshot were not created"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("dev-null"), "{}", out.stderr);
    // `cairn restore` as root still restores what the snapshot holds.
    let target = f.base.path().join("plain");
    f.repo.restore("latest", &target, &[]).success();
    use std::os::unix::fs::FileTypeExt;
    assert!(
        std::fs::symlink_metadata(target.join("dev-null"))
            .unwrap()
            .file_type()
            .is_char_device()
    );
}
