//! The repository over its life, through the real binary: forget and prune (also while a
//! backup runs, and after a backup was killed), check finding each kind of damage by name,
//! repair, keys, tags, unlock, and `backup --stdin` deduplicating database dumps.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use cairn_e2e::*;
use serde_json::Value;

/// Writes `n` random files of `size` bytes named `prefix{i}` (content fixed by `seed`).
fn files(dir: &Path, prefix: &str, n: usize, size: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    for i in 0..n {
        write_file(&dir.join(format!("{prefix}{i}.bin")), &rng.bytes(size));
    }
}

/// A repository with small chunks and 1 MiB packs, so a few MB make many packs.
fn small_packs(path: &Path) -> Repo {
    Repo::init(path, &["--chunk-sizes", SMALL_CHUNKS, "--pack-size", "1"])
}

fn json(out: &Output) -> Value {
    serde_json::from_str(out.stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {}", out.cmdline, out.stdout))
}

fn restore_matches(repo: &Repo, snap: &str, src: &Path, base: &Path) {
    let target = base.join(format!("restore-{snap}"));
    repo.restore(snap, &target, &[]).success();
    let (want, got) = (read_tree_files(src), read_tree_files(&target));
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        got.keys().collect::<Vec<_>>(),
        "snapshot {snap}: file list"
    );
    assert!(
        want == got,
        "snapshot {snap}: contents differ from {}",
        src.display()
    );
}

fn check_passes(repo: &Repo, read_data: bool) -> Value {
    let mut args = vec!["check", "--json"];
    if read_data {
        args.push("--read-data");
    }
    let out = repo.run(&args);
    out.success();
    let v = json(&out);
    assert_eq!(v["summary"]["errors"], 0, "{v}");
    v
}

/// Backs up `dir` under `host`; returns the snapshot id.
fn backup_as(repo: &Repo, dir: &Path, host: &str) -> String {
    let v = repo.backup(&[dir], &["--host", host]);
    v["snapshot_id"].as_str().expect("id").to_string()
}

#[test]
fn forget_then_prune_frees_space_and_everything_kept_still_restores() {
    let base = tempdir();
    let repo = Repo::init_small_chunks(&base.path().join("repo"));
    let states: Vec<PathBuf> = (0..3).map(|i| base.path().join(format!("s{i}"))).collect();
    for (i, s) in states.iter().enumerate() {
        files(s, "shared", 4, 100_000, 1);
        files(s, &format!("only{i}-"), 6, 200_000, 10 + i as u64);
    }
    let ids: Vec<String> = states.iter().map(|s| backup_as(&repo, s, "h")).collect();
    let before = repo.size();

    let dry = repo.run(&[
        "forget",
        "--keep-last",
        "2",
        "--group-by",
        "host",
        "--dry-run",
    ]);
    dry.success();
    assert!(dry.stdout.contains("remove"), "{}", dry.stdout);
    assert_eq!(repo.snapshot_ids().len(), 3, "--dry-run removes nothing");

    let out = repo.run(&[
        "forget",
        "--keep-last",
        "2",
        "--group-by",
        "host",
        "--prune",
        "--max-unused",
        "0%",
    ]);
    out.success();
    let left = repo.snapshot_ids();
    assert_eq!(left.len(), 2, "{}", out.stdout);
    assert!(!left.iter().any(|id| *id == ids[0]), "the oldest went");
    let after = repo.size();
    assert!(
        after + 6 * 200_000 / 2 < before,
        "prune freed the forgotten snapshot's data: {before} → {after}"
    );
    check_passes(&repo, true);
    restore_matches(&repo, &ids[1][..8], &states[1], base.path());
    restore_matches(&repo, &ids[2][..8], &states[2], base.path());

    // Nothing left to do: a second prune deletes nothing.
    let again = repo.run(&["prune", "--json"]);
    again.success();
    assert_eq!(json(&again)["packs_deleted"], 0, "{}", again.stdout);
}

#[test]
fn prune_repacks_partly_used_packs_only_beyond_max_unused() {
    let base = tempdir();
    // One pack for everything: each backup's files share packs with the other's.
    let repo = Repo::init(&base.path().join("repo"), &["--chunk-sizes", SMALL_CHUNKS]);
    let a = base.path().join("a");
    let b = base.path().join("b");
    files(&a, "a", 10, 50_000, 3);
    files(&b, "b", 1, 50_000, 4);
    let ida = backup_as(&repo, &a, "one");
    let idb = backup_as(&repo, &b, "two");
    // Forgetting "one" leaves its packs almost entirely unused, but "two"'s small pack stays.
    repo.run(&["forget", &ida[..8]]).success();
    let plan = repo.run(&["prune", "--dry-run", "--json"]);
    plan.success();
    let before = repo.pack_ids();
    repo.run(&["prune", "--max-unused", "100%"]).success();
    let tolerated = repo.pack_ids();
    repo.run(&["prune", "--max-unused", "0%"]).success();
    check_passes(&repo, true);
    restore_matches(&repo, &idb[..8], &b, base.path());
    assert!(
        tolerated.len() <= before.len(),
        "{before:?} → {tolerated:?}"
    );
}

#[test]
fn check_names_each_kind_of_damage_and_repair_index_recovers_a_lost_index() {
    let base = tempdir();
    let src = base.path().join("src");
    files(&src, "f", 8, 400_000, 5);
    let repo = small_packs(&base.path().join("repo"));
    let id = backup_as(&repo, &src, "h");
    check_passes(&repo, true);

    // A deleted index file: blobs are missing from the index; repair index rebuilds it.
    let index_dir = repo.path.join("index");
    for f in std::fs::read_dir(&index_dir).unwrap() {
        std::fs::remove_file(f.unwrap().path()).unwrap();
    }
    let out = repo.run(&["check"]);
    out.expect_code(1).assert_no_panic();
    assert!(out.stdout.contains("not in any index"), "{}", out.stdout);
    repo.run(&["repair", "index"]).success();
    check_passes(&repo, true);
    restore_matches(&repo, &id[..8], &src, base.path());

    // A flipped byte inside a pack: --read-data names the pack.
    let packs = repo.pack_ids();
    let victim = packs
        .iter()
        .max_by_key(|p| std::fs::metadata(repo.pack_path(p)).unwrap().len())
        .unwrap()
        .clone();
    let path = repo.pack_path(&victim);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 3;
    bytes[mid] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let out = repo.run(&["check", "--read-data"]);
    out.expect_code(1).assert_no_panic();
    assert!(
        out.stdout.contains(&victim),
        "names the pack: {}",
        out.stdout
    );
    bytes[mid] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    check_passes(&repo, true);

    // A truncated snapshot file.
    let snap_path = repo.path.join("snapshots").join(&id);
    let snap = std::fs::read(&snap_path).unwrap();
    std::fs::write(&snap_path, &snap[..snap.len() / 2]).unwrap();
    let out = repo.run(&["check"]);
    out.expect_code(1).assert_no_panic();
    assert!(
        out.stdout.contains(&format!("snapshots/{id}")),
        "{}",
        out.stdout
    );
    std::fs::write(&snap_path, &snap).unwrap();

    // A deleted pack: named, and repair snapshots writes a copy without the lost files.
    std::fs::remove_file(&path).unwrap();
    let out = repo.run(&["check"]);
    out.expect_code(1).assert_no_panic();
    assert!(
        out.stdout.contains(&victim),
        "names the pack: {}",
        out.stdout
    );
    let out = repo.run(&["repair", "snapshots", "--forget"]);
    out.success();
    repo.run(&["repair", "index"]).success();
    check_passes(&repo, true);
    let snaps = repo.snapshots();
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0]["original"].as_str(), Some(id.as_str()));
    let target = base.path().join("partial");
    repo.restore("latest", &target, &[]).success();
    let restored = read_tree_files(&target);
    assert!(!restored.is_empty(), "files outside the lost pack remain");
    let original = read_tree_files(&src);
    for (name, content) in &restored {
        assert_eq!(Some(content), original.get(name), "{}", name.display());
    }
}

#[test]
fn keys_can_be_added_changed_and_removed_but_never_the_last() {
    let base = tempdir();
    let repo = Repo::init(&base.path().join("repo"), &[]);
    let env = |pw: &str| vec![("CAIRN_NEW_PASSWORD".to_string(), pw.to_string())];
    let run = |pw: &str, args: &[&str], extra: &[(String, String)]| {
        let mut all = vec!["-r", repo.path.to_str().unwrap()];
        all.extend_from_slice(args);
        run_cairn_with_env(&all, Some(pw), RunAs::Me, extra)
    };
    run(&repo.password, &["key", "add"], &env("second")).success();
    let list = json(&run("second", &["key", "list", "--json"], &[]));
    let keys = list.as_array().unwrap();
    assert_eq!(keys.len(), 2);
    let current = |v: &Value| {
        v.as_array()
            .unwrap()
            .iter()
            .find(|k| k["current"] == true)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let second_id = current(&list);
    let first_id = keys
        .iter()
        .map(|k| k["id"].as_str().unwrap().to_string())
        .find(|id| *id != second_id)
        .unwrap();

    let out = run("second", &["key", "remove", &second_id[..8]], &[]);
    out.expect_code(1).stderr_has("in use");
    run("second", &["key", "remove", &first_id[..8]], &[]).success();
    repo.run(&["snapshots"]).expect_code(12);
    let out = run("second", &["key", "remove", &second_id[..8]], &[]);
    out.expect_code(1).stderr_has("last key");

    run("second", &["key", "passwd"], &env("third")).success();
    run("second", &["snapshots"], &[]).expect_code(12);
    run("third", &["snapshots"], &[]).success();
    let out = run("third", &["key", "remove", "zz"], &[]);
    out.expect_code(1).stderr_has("not a key id");
}

#[test]
fn tags_are_added_and_removed_by_rewriting_snapshots() {
    let base = tempdir();
    let src = base.path().join("src");
    files(&src, "f", 2, 1000, 6);
    let repo = Repo::init(&base.path().join("repo"), &[]);
    let id = backup_as(&repo, &src, "h");
    repo.run(&["tag", "--add", "keep,monthly", "latest"])
        .success();
    let s = &repo.snapshots()[0];
    assert_eq!(s["tags"], serde_json::json!(["keep", "monthly"]));
    assert_eq!(s["original"].as_str(), Some(id.as_str()));
    repo.run(&["tag", "--remove", "monthly"]).success();
    let snaps = repo.snapshots();
    assert_eq!(snaps.len(), 1, "the old snapshot is replaced");
    assert_eq!(snaps[0]["tags"], serde_json::json!(["keep"]));
    repo.run(&["tag", "latest"])
        .expect_code(1)
        .stderr_has("--add");
}

#[test]
fn forget_policy_through_the_cli_with_recorded_times() {
    let base = tempdir();
    let src = base.path().join("src");
    files(&src, "f", 1, 1000, 7);
    let repo = Repo::init(&base.path().join("repo"), &[]);
    let times = [
        "2025-03-01T10:00:00Z",
        "2025-03-01T20:00:00Z",
        "2025-03-02T10:00:00Z",
        "2025-03-03T10:00:00Z",
        "2025-03-03T11:00:00Z",
    ];
    for t in times {
        repo.backup(&[&src], &["--time", t, "--host", "h"]);
    }
    // Stored today, claiming March 2025: by default forget judges them by the storage's
    // time (all today, so one is kept), names each, and reports the claim.
    let out = repo.run(&["forget", "--keep-daily", "2", "--json", "--dry-run"]);
    out.success();
    let v = json(&out);
    let plan = v["snapshots"].as_array().unwrap();
    assert_eq!(plan.iter().filter(|s| s["keep"] == true).count(), 1);
    assert!(
        plan.iter()
            .all(|s| times.contains(&s["claimed_time"].as_str().unwrap())),
        "{v}"
    );
    assert_eq!(
        out.stderr
            .matches("judged by the time it was stored")
            .count(),
        5
    );
    // An administrator who trusts the recorded times says so.
    let out = repo.run(&[
        "forget",
        "--keep-daily",
        "2",
        "--json",
        "--trust-snapshot-times",
    ]);
    out.success();
    let v = json(&out);
    let kept: Vec<String> = v["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["keep"] == true)
        .map(|s| s["time"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kept, vec!["2025-03-03T11:00:00Z", "2025-03-02T10:00:00Z"]);
    assert_eq!(repo.snapshot_ids().len(), 2);
    repo.run(&["forget"])
        .expect_code(1)
        .stderr_has("--keep-daily");
    repo.run(&["forget", "--keep-within", "3w"])
        .expect_code(1)
        .stderr_has("1y6m");
    repo.run(&["forget", "--keep-last", "-2"])
        .expect_code(1)
        .assert_no_panic();
}

fn spawn_backup(repo: &Repo, src: &Path) -> Child {
    Command::new(cairn_bin())
        .args([
            "-r",
            repo.path.to_str().unwrap(),
            "backup",
            "--json",
            "--host",
            "h",
        ])
        .arg(src)
        .env("CAIRN_PASSWORD", &repo.password)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn backup")
}

/// Objects below `dir`, not counting files still being written (`.tmp-*`).
fn count(dir: &Path) -> usize {
    walkdir(dir)
        .iter()
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(".tmp-"))
        })
        .count()
}

fn walkdir(dir: &Path) -> Vec<PathBuf> {
    if !dir.exists() {
        return Vec::new();
    }
    files_below(dir)
}

/// Waits until `cond` holds or the child exits; true if it held. Polls the file system: the
/// condition is the event (a lock written, packs uploaded), not a guess at timing.
fn wait_for(child: &mut Child, mut cond: impl FnMut() -> bool) -> bool {
    loop {
        if cond() {
            return true;
        }
        if child.try_wait().expect("wait").is_some() {
            return cond();
        }
        std::thread::yield_now();
    }
}

#[test]
fn prune_during_a_backup_loses_nothing() {
    for seed in 0..3u64 {
        let base = tempdir();
        let repo = small_packs(&base.path().join("repo"));
        let old = base.path().join("old");
        let mid = base.path().join("mid");
        let new = base.path().join("new");
        // "new" reuses everything only "old" has: forgetting "old" makes exactly the data a
        // running backup of "new" deduplicates against unused.
        files(&old, "o", 6, 150_000, 100 + seed);
        files(&mid, "m", 3, 150_000, 200 + seed);
        files(&new, "o", 6, 150_000, 100 + seed);
        files(&new, "n", 150, 150_000, 300 + seed);
        let old_id = backup_as(&repo, &old, "h");
        let mid_id = backup_as(&repo, &mid, "h");

        let mut child = spawn_backup(&repo, &new);
        let locks = repo.path.join("locks");
        let data = repo.path.join("data");
        let packs_before = count(&data);
        let started = wait_for(&mut child, || count(&locks) > 0);
        // Start the prune at a different point of the backup for each seed.
        wait_for(&mut child, || {
            count(&data) >= packs_before + 1 + 2 * seed as usize
        });
        repo.run(&["forget", &old_id[..8]]).success();
        let prune = repo.run(&["prune", "--max-unused", "0%"]);
        prune.success();
        let out = child.wait_with_output().expect("backup");
        assert!(
            out.status.success(),
            "seed {seed}: backup failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(started, "seed {seed}: the backup never took its lock");

        check_passes(&repo, true);
        restore_matches(&repo, "latest", &new, base.path());
        restore_matches(&repo, &mid_id[..8], &mid, base.path());
        // A later prune, with no backup running, finishes what the first one had to leave.
        repo.run(&["prune", "--max-unused", "0%"]).success();
        check_passes(&repo, true);
        let target = base.path().join("again");
        repo.restore("latest", &target, &[]).success();
        assert!(
            read_tree_files(&new) == read_tree_files(&target),
            "seed {seed}"
        );
        assert_eq!(
            count(&locks),
            0,
            "seed {seed}: locks are removed when commands end"
        );
    }
}

#[test]
fn a_killed_backup_leaves_a_valid_repository_and_the_next_one_reuses_its_packs() {
    for seed in 0..3u64 {
        let base = tempdir();
        let repo = small_packs(&base.path().join("repo"));
        let src = base.path().join("src");
        files(&src, "f", 60, 400_000, 400 + seed);
        let data = repo.path.join("data");
        let index = repo.path.join("index");
        let mut child = spawn_backup(&repo, &src);
        // Kill it once some packs are indexed (more for each seed), or let it be if it ends.
        wait_for(&mut child, || {
            count(&index) > 0 && count(&data) > 9 + 4 * seed as usize
        });
        let _ = child.kill();
        let _ = child.wait();

        let v = check_passes(&repo, true);
        assert_eq!(
            repo.snapshot_ids().len(),
            0,
            "seed {seed}: no snapshot from a killed backup"
        );
        let locks = count(&repo.path.join("locks"));
        assert_eq!(locks, 1, "seed {seed}: the killed backup's lock stays");
        // A live-looking lock blocks nothing but prune's deletions; unlock keeps it unless told.
        repo.run(&["unlock"]).success();
        assert_eq!(count(&repo.path.join("locks")), 1);
        repo.run(&["unlock", "--remove-all"]).success();
        assert_eq!(count(&repo.path.join("locks")), 0);

        let next = repo.backup(&[&src], &["--host", "h"]);
        let full: u64 = 60 * 400_000;
        let added = counter(&next, "data_added");
        assert!(
            added < full,
            "seed {seed}: the next backup reuses indexed packs ({added} of {full} bytes added; check said {v})"
        );
        check_passes(&repo, true);
        restore_matches(&repo, "latest", &src, base.path());
    }
}

#[test]
fn prune_removes_temporary_files_of_killed_writers_but_not_recent_ones() {
    let base = tempdir();
    let repo = small_packs(&base.path().join("repo"));
    let src = base.path().join("src");
    files(&src, "f", 5, 100_000, 9);
    repo.backup(&[&src], &["--host", "h"]);
    // What a killed backup leaves: a spooled pack and an unfinished put, two hours old.
    let old = [
        repo.path.join(".tmp-spool-0123456789abcdef"),
        repo.path.join("data/00/.tmp-00aa-0123456789abcdef"),
    ];
    // As new as a running writer's: kept.
    let recent = repo.path.join(".tmp-spool-fedcba9876543210");
    for p in old.iter().chain([&recent]) {
        write_file(p, b"half a pack");
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    for p in &old {
        filetime::set_file_mtime(p, filetime::FileTime::from_unix_time(now - 7200, 0)).unwrap();
    }
    let dry = repo.run(&["prune", "--dry-run"]);
    dry.success();
    assert!(old.iter().all(|p| p.exists()), "a dry run removes nothing");
    let out = repo.run(&["prune"]);
    out.success();
    for p in &old {
        assert!(!p.exists(), "{} removed", p.display());
    }
    let said = format!("{}{}", out.stdout, out.stderr);
    assert!(said.contains(".tmp-spool-0123456789abcdef"), "{said}");
    assert!(recent.exists(), "a recent temporary file is kept");
    check_passes(&repo, true);
    restore_matches(&repo, "latest", &src, base.path());
}

/// A table dump: `rows` lines of `id|name|email|balance|note`.
fn dump(rows: std::ops::Range<u64>, changed: std::ops::Range<u64>, seed: u64) -> Vec<u8> {
    let mut out = Vec::new();
    for id in rows {
        let v = if changed.contains(&id) { seed } else { 0 };
        let h = content_hash(&(id ^ v).to_le_bytes());
        out.extend_from_slice(
            format!(
                "{id}|user{:x}|user{:x}@example.com|{}.{:02}|note {:016x} {:016x}\n",
                h % 1_000_003,
                h >> 20,
                h % 100_000,
                h % 100,
                h,
                h.rotate_left(17)
            )
            .as_bytes(),
        );
    }
    out
}

#[test]
fn stdin_dumps_of_a_slowly_changing_database_deduplicate() {
    let base = tempdir();
    let repo = Repo::init(&base.path().join("repo"), &[]);
    let rows = 2_200_000u64; // about 205 MB
    let first = base.path().join("dump1.sql");
    std::fs::write(&first, dump(0..rows, 0..0, 0)).unwrap();
    let size = std::fs::metadata(&first).unwrap().len();
    assert!(size > 200_000_000, "{size}");
    // 1% of the rows updated in one range, 1% new rows appended.
    let second = base.path().join("dump2.sql");
    std::fs::write(
        &second,
        dump(0..rows + rows / 100, rows / 2..rows / 2 + rows / 100, 7),
    )
    .unwrap();

    let args = ["backup", "--stdin", "--stdin-filename", "db.sql", "--json"];
    let out1 = repo.run_with_stdin(&args, &first);
    out1.success();
    let out2 = repo.run_with_stdin(&args, &second);
    out2.success();
    let (s1, s2) = (summary_line(&out1), summary_line(&out2));
    let added1 = counter(&s1, "data_added");
    let added2 = counter(&s2, "data_added");
    assert!(added1 >= size, "{s1}");
    assert!(
        (added2 as f64) < 0.10 * size as f64,
        "second dump added {added2} of {size} bytes"
    );
    assert_eq!(
        s2["parent"], s1["snapshot_id"],
        "same name: the first dump is the parent"
    );
    eprintln!("second dump added {added2} bytes for {size}-byte dumps");

    let target = base.path().join("out");
    repo.restore("latest", &target, &[]).success();
    assert_same_content(&second, &target.join("db.sql"));
    let mut by_name: BTreeMap<String, u64> = BTreeMap::new();
    for s in repo.snapshots() {
        *by_name
            .entry(s["paths"][0].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(by_name.get("/db.sql"), Some(&2));

    let bad = repo.run_with_stdin(&["backup", "--stdin", "--stdin-filename", "../x"], &first);
    bad.expect_code(1).stderr_has("plain file name");
}

#[test]
fn copy_diff_find_dump_and_stats() {
    let base = tempdir();
    let src = base.path().join("src");
    files(&src, "f", 3, 300_000, 8);
    write_file(&src.join("etc/app.conf"), b"port = 5432\n");
    let repo = Repo::init_small_chunks(&base.path().join("repo"));
    let first = backup_as(&repo, &src, "h");
    std::fs::copy(src.join("f0.bin"), src.join("copy.bin")).unwrap();
    write_file(&src.join("etc/app.conf"), b"port = 6432\n");
    std::fs::remove_file(src.join("f2.bin")).unwrap();
    let second = backup_as(&repo, &src, "h");

    let out = repo.run(&["diff", &first[..8], &second[..8]]);
    out.success();
    let lines: Vec<&str> = out.stdout.lines().filter(|l| l.contains("    /")).collect();
    assert_eq!(
        lines,
        vec!["+    /copy.bin", "M    /etc/app.conf", "-    /f2.bin"],
        "{}",
        out.stdout
    );

    let out = repo.run(&["find", "*.conf", "--json"]);
    out.success();
    let hits: Vec<Value> = out
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(hits.len(), 2, "{}", out.stdout);
    assert!(hits.iter().all(|h| h["path"] == "/etc/app.conf"));

    let out = repo.run(&["dump", &first[..8], "/etc/app.conf"]);
    out.success();
    assert_eq!(out.stdout, "port = 5432\n");
    let tar_path = base.path().join("all.tar");
    let dumped = Command::new(cairn_bin())
        .args(["-r", repo.path.to_str().unwrap(), "dump", "latest", "/"])
        .env("CAIRN_PASSWORD", &repo.password)
        .stdout(Stdio::from(std::fs::File::create(&tar_path).unwrap()))
        .status()
        .unwrap();
    assert!(dumped.success());
    let x = base.path().join("x");
    std::fs::create_dir(&x).unwrap();
    let tar = Command::new("tar")
        .arg("xf")
        .arg(&tar_path)
        .arg("-C")
        .arg(&x)
        .status()
        .unwrap();
    assert!(tar.success(), "GNU tar reads the archive");
    assert!(
        read_tree_files(&src) == read_tree_files(&x),
        "tar holds the snapshot"
    );
    repo.run(&["dump", "latest", "/nope"])
        .expect_code(1)
        .stderr_has("not in the snapshot");

    let s = json(&repo.run(&["stats", "--json"]));
    assert_eq!(s["snapshots"], 2);
    assert_eq!(s["files"], 4 + 4, "{s}");
    assert!(s["dedup_ratio"].as_f64().unwrap() > 1.5, "{s}");

    // Copy into a repository with another password: all snapshots, then nothing more.
    let other = Repo {
        path: base.path().join("other"),
        password: "other password".into(),
        who: RunAs::Me,
    };
    let mut init = vec!["-r", other.path.to_str().unwrap(), "init"];
    init.extend_from_slice(FAST_KDF);
    run_cairn(&init, Some("other password"), RunAs::Me).success();
    let env = vec![("CAIRN_FROM_PASSWORD".to_string(), repo.password.clone())];
    let mut args = vec![
        "-r",
        other.path.to_str().unwrap(),
        "copy",
        "--json",
        "--from-repo",
    ];
    args.push(repo.path.to_str().unwrap());
    let out = run_cairn_with_env(&args, Some("other password"), RunAs::Me, &env);
    out.success();
    let c = json(&out);
    assert_eq!(c["copied"].as_array().unwrap().len(), 2, "{c}");
    let again = json(&run_cairn_with_env(
        &args,
        Some("other password"),
        RunAs::Me,
        &env,
    ));
    assert_eq!(again["skipped"].as_array().unwrap().len(), 2, "{again}");
    assert_eq!(again["blobs_added"], 0, "{again}");
    check_passes(&other, true);
    restore_matches(&other, "latest", &src, base.path());
    let out = run_cairn_with_env(&args, Some("other password"), RunAs::Me, &[]);
    out.expect_code(1).stderr_has("CAIRN_FROM_PASSWORD");
}

#[test]
fn stdin_from_command_stores_only_a_dump_whose_command_succeeded() {
    let base = tempdir();
    let repo = Repo::init(&base.path().join("repo"), &[]);
    // A dump that fails halfway: its partial output must not become a snapshot.
    let failed = repo.run(&[
        "backup",
        "--stdin-from-command",
        "--stdin-filename",
        "db.sql",
        "--",
        "sh",
        "-c",
        "echo 'CREATE TABLE half'; exit 3",
    ]);
    failed.expect_code(1).stderr_has("exit status: 3");
    assert!(
        repo.snapshots().is_empty(),
        "a failed dump became a snapshot"
    );
    // A command that cannot start is named.
    repo.run(&[
        "backup",
        "--stdin-from-command",
        "--",
        "no-such-dump-command",
    ])
    .expect_code(1)
    .stderr_has("no-such-dump-command");
    // A dump that succeeds is stored under its name.
    let ok = repo.run(&[
        "backup",
        "--json",
        "--stdin-from-command",
        "--stdin-filename",
        "db.sql",
        "--",
        "sh",
        "-c",
        "printf 'CREATE TABLE whole;\\n'",
    ]);
    ok.success();
    let target = base.path().join("out");
    repo.restore("latest", &target, &[]).success();
    assert_eq!(
        std::fs::read(target.join("db.sql")).unwrap(),
        b"CREATE TABLE whole;\n"
    );
    // --stdin-filename without a stream to name.
    repo.run(&[
        "backup",
        "--stdin-filename",
        "x",
        base.path().to_str().unwrap(),
    ])
    .expect_code(1)
    .stderr_has("--stdin-filename");
}
