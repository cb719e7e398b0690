//! `cairn restore-init` as an init container runs it: from environment variables, on every
//! start of the pod. The volume's latest snapshot comes back byte for byte with owners and
//! modes; a restarted pod finds a complete marker and nothing is touched; an interrupted
//! restore is finished; a volume holding data is left alone unless told otherwise; no
//! snapshot means an empty start; the source cluster must be unambiguous; two replicas on
//! one volume restore it once.

use std::path::Path;

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
    let vol = fresh_volume(&f, "new-disk");
    let out = restore_init(&f, &vol, &[]);
    out.success();
    assert_eq!(outcome(&out), "restored");
    assert_eq!(data_of(&vol), read_tree_files(&f.src));
    // Owners and modes as recorded; restore-init's own state and lost+found are extra.
    let diffs: Vec<String> = diff_manifests(&manifest(&f.src), &manifest(&vol))
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
