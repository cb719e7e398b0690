//! Key files that anyone who can write to `keys/` could plant, without the password. None of
//! them may lock out the real key, make a command spin or reserve gigabytes, or pass for a
//! wrong password: each is skipped and named, and the real key still opens.

use cairn_e2e::*;
use cairn_repo_format::Id;
use serde_json::Value;

/// The repository's one key file, as JSON.
fn real_key(repo: &Repo) -> Value {
    let entry = std::fs::read_dir(repo.path.join("keys"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    serde_json::from_slice(&std::fs::read(entry.path()).unwrap()).unwrap()
}

/// Stores `bytes` as a key file named by their hash (as a writer who knows the format would),
/// or under `name` when given; returns the file's name.
fn plant(repo: &Repo, bytes: &[u8], name: Option<&str>) -> String {
    let name = name
        .map(str::to_string)
        .unwrap_or_else(|| Id::of_stored(bytes).to_string());
    std::fs::write(repo.path.join("keys").join(&name), bytes).unwrap();
    name
}

fn with_params(key: &Value, m: u64, t: u64, p: u64) -> Vec<u8> {
    let mut k = key.clone();
    k["m_cost"] = m.into();
    k["t_cost"] = t.into();
    k["p_cost"] = p.into();
    serde_json::to_vec_pretty(&k).unwrap()
}

#[test]
fn absurd_or_damaged_key_files_are_skipped_and_named_and_the_real_key_still_opens() {
    let base = tempdir();
    let repo = Repo::init(&base.path().join("repo"), &[]);
    let src = base.path().join("src");
    write_file(&src.join("a.txt"), b"hello");
    repo.backup(&[&src], &[]);
    let key = real_key(&repo);
    // An argon2 time cost that would spin for ever, a memory cost of 3 GiB, 64 lanes, a
    // malformed file, and a copy of the real key under a name that is not its hash.
    let spin = plant(&repo, &with_params(&key, 64, 4_000_000_000, 1), None);
    let huge = plant(&repo, &with_params(&key, 3 << 20, 1, 1), None);
    let lanes = plant(&repo, &with_params(&key, 1024, 1, 64), None);
    let junk = plant(&repo, b"{ not json", None);
    let renamed = plant(
        &repo,
        &serde_json::to_vec_pretty(&key).unwrap(),
        Some(&"0".repeat(64)),
    );
    // Every command still opens with the real key (a spinning key would hang this test).
    assert_eq!(repo.snapshots().len(), 1);
    repo.backup(&[&src], &[]);
    let target = base.path().join("out");
    repo.restore("latest", &target, &[]).success();

    // With a wrong password: "wrong password", and every skipped file named with why.
    let wrong = repo.run_with_password(Some("not the password"), &["snapshots"]);
    wrong.expect_code(12).stderr_has("wrong password");
    for (name, why) in [
        (&spin, "passes"),
        (&huge, "memory"),
        (&lanes, "lanes"),
        (&junk, "not a key file"),
        (&renamed, "not the hash of its content"),
    ] {
        let at = wrong
            .stderr
            .find(&format!("keys/{name}: "))
            .unwrap_or_else(|| panic!("{name} not named:\n{}", wrong.stderr));
        let reason = wrong.stderr[at..].split(';').next().unwrap_or("");
        assert!(
            reason.contains(why),
            "{name}: {reason:?} does not say {why:?}"
        );
    }
}

#[test]
fn a_repository_whose_only_keys_are_unusable_says_so_not_wrong_password() {
    let base = tempdir();
    let repo = Repo::init(&base.path().join("repo"), &[]);
    let key = real_key(&repo);
    for e in std::fs::read_dir(repo.path.join("keys")).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    let huge = plant(&repo, &with_params(&key, 3 << 20, 1, 1), None);
    let out = repo.run(&["snapshots"]);
    out.expect_code(1)
        .stderr_has("no usable key file")
        .stderr_has(&huge)
        .stderr_has("memory");
    assert!(!out.stderr.contains("wrong password"), "{}", out.stderr);
}

#[test]
fn key_add_refuses_parameters_readers_would_skip() {
    let base = tempdir();
    let other = base.path().join("other");
    let out = run_cairn(
        &[
            "-r",
            other.to_str().unwrap(),
            "init",
            "--kdf-memory",
            "4000000",
        ],
        Some(PASSWORD),
        RunAs::Me,
    );
    out.expect_code(1).stderr_has("memory");
    assert!(!other.join("config").exists(), "nothing written");
}

/// One undecryptable object in `snapshots/` (bit rot, a torn upload, a keyless attacker)
/// hides no other snapshot: listings name it and go on, `latest` is the latest readable one,
/// and `check` reports it and exits 1.
#[test]
fn a_damaged_snapshot_object_is_named_and_hides_nothing_else() {
    let base = tempdir();
    let repo = Repo::init(&base.path().join("repo"), &[]);
    let src = base.path().join("src");
    write_file(&src.join("a.txt"), b"hello");
    repo.backup(&[&src], &[]);
    let junk = vec![0x5a_u8; 300];
    let name = Id::of_stored(&junk).to_string();
    std::fs::write(repo.path.join("snapshots").join(&name), &junk).unwrap();

    let out = repo.run(&["snapshots", "--json"]);
    out.success().stderr_has(&format!("snapshots/{name}"));
    let listed: Vec<Value> = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(listed.len(), 1);
    repo.run(&["ls", "latest"]).success();
    let target = base.path().join("out");
    repo.restore("latest", &target, &[]).success();
    assert_eq!(std::fs::read(target.join("a.txt")).unwrap(), b"hello");
    repo.backup(&[&src], &[]);
    repo.run(&["forget", "--keep-last", "5"]).success();
    assert!(
        repo.path.join("snapshots").join(&name).exists(),
        "forget never deletes what it cannot read"
    );
    let check = repo.run(&["check"]);
    check.expect_code(1);
    assert!(
        check.stdout.contains(&name),
        "check does not name it:\n{}",
        check.stdout
    );
}
