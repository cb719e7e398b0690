//! The malicious-repository suite: a writer that knows the format (and, where a case needs
//! it, the real keys) plants damaged or hostile objects with valid names, and for each case
//! the real `cairn` binary must exit as a user expects, name the object, go on with everything
//! else, and change nothing outside a restore's target. `docs/design.md` §12.1 is the rule
//! these cases hold the code to.

use std::path::{Path, PathBuf};

use cairn_e2e::hostile::{Planter, everything_but};
use cairn_e2e::*;
use cairn_repo_format::object::ObjectKind;
use cairn_repo_format::pack::PackEntry;
use cairn_repo_format::{BlobType, FileKind, Id};

/// A repository with two snapshots of a small tree, spread over several packs.
struct Fixture {
    _dir: tempfile::TempDir,
    base: PathBuf,
    src: PathBuf,
    repo: Repo,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempdir();
        let base = dir.path().to_path_buf();
        let src = base.join("src");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        for i in 0..4u64 {
            write_random_file(&src.join(format!("f{i}.bin")), 300 << 10, i);
        }
        write_file(&src.join("sub/notes.txt"), b"hello from a subdirectory\n");
        let repo = Repo::init(
            &base.join("repo"),
            &["--pack-size", "1", "--chunk-sizes", SMALL_CHUNKS],
        );
        repo.backup(&[&src], &[]);
        write_random_file(&src.join("f0.bin"), 300 << 10, 99);
        repo.backup(&[&src], &[]);
        Fixture {
            _dir: dir,
            base,
            src,
            repo,
        }
    }

    /// Restores latest into `name` and checks that it equals the source; returns the output.
    fn restore_matches(&self, name: &str) -> Output {
        let target = self.base.join(name);
        let before = everything_but(&self.base, &target);
        let out = self.repo.restore("latest", &target, &[]);
        out.success();
        assert_eq!(
            hashes(&self.src),
            hashes(&target),
            "restored tree differs from the source"
        );
        assert_eq!(
            before,
            everything_but(&self.base, &target),
            "a restore changed something outside its target"
        );
        out
    }

    /// Runs `check` and asserts it fails (exit 1) naming every object of `named` among its
    /// findings.
    fn check_names(&self, named: &[&str]) -> Output {
        let out = self.repo.run(&["check"]);
        out.expect_code(1);
        for n in named {
            out.stdout_has(n);
        }
        out
    }

    fn file(&self, path: &str) -> PathBuf {
        self.repo.path.join(path)
    }
}

/// Each file below `dir` with a hash of its content.
fn hashes(dir: &Path) -> std::collections::BTreeMap<PathBuf, u64> {
    read_tree_files(dir)
        .into_iter()
        .map(|(p, c)| (p, content_hash(&c)))
        .collect()
}

/// Every name in `dir` (a repository directory such as `data`), recursively.
fn names_below(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = files_below(dir)
        .into_iter()
        .map(|p| p.strip_prefix(dir).unwrap().display().to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn junk_under_every_name_is_skipped_and_named_and_stops_nothing() {
    let f = Fixture::new();
    let mut p = Planter::open(&f.repo);
    let junk_snapshot = p.junk(FileKind::Snapshot);
    let junk_index = p.junk(FileKind::Index);
    let junk_condemned = p.junk(FileKind::Condemned);
    let junk_lock = p.junk(FileKind::Lock);

    // Listing, browsing and restoring go on with the rest, naming what they left out.
    let out = f.repo.run(&["snapshots", "--json"]);
    out.success().stderr_has(&junk_snapshot);
    let listed: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{}", out.stdout);
    f.repo
        .run(&["ls", "latest"])
        .success()
        .stderr_has(&junk_index)
        .stderr_has(&junk_condemned);
    // `latest` is the latest readable snapshot, and the one passed over is named.
    f.restore_matches("out").stderr_has(&junk_snapshot);
    // A backup goes on too.
    write_file(&f.src.join("new.txt"), b"written after the junk\n");
    f.repo
        .backup_raw(&[&f.src], &[])
        .success()
        .stderr_has(&junk_index);

    // check names each one, and fails.
    f.check_names(&[&junk_snapshot, &junk_index, &junk_condemned, &junk_lock]);

    // forget and prune finish, delete none of them, and keep every kept snapshot whole.
    f.repo
        .run(&["forget", "--keep-last", "1", "--prune"])
        .success();
    for j in [&junk_snapshot, &junk_index, &junk_condemned, &junk_lock] {
        assert!(f.file(j).exists(), "{j} was deleted");
    }
    f.restore_matches("after-prune");
    let out = f.check_names(&[&junk_snapshot, &junk_index]);
    assert!(
        !out.stdout.contains("missing"),
        "prune lost data:\n{}",
        out.stdout
    );
    // `unlock` removes a lock that cannot be read (it protects nothing).
    f.repo.run(&["unlock"]).success();
    assert!(!f.file(&junk_lock).exists());
}

#[test]
fn prune_never_deletes_what_an_unreadable_index_file_lists() {
    let f = Fixture::new();
    let packs_before = names_below(&f.file("data"));
    // Damage every index file: each now names packs prune cannot learn of from an index.
    let mut damaged = Vec::new();
    for name in names_below(&f.file("index")) {
        let path = f.file("index").join(&name);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        std::fs::write(&path, bytes).unwrap();
        damaged.push(format!("index/{name}"));
    }
    f.check_names(&damaged.iter().map(String::as_str).collect::<Vec<_>>());

    let out = f.repo.run(&["prune"]);
    out.success();
    for d in &damaged {
        out.stderr_has(d);
    }
    // Every pack is still there, indexed anew from its header, and latest restores whole.
    let packs_after = names_below(&f.file("data"));
    for p in &packs_before {
        assert!(packs_after.contains(p), "prune deleted data/{p}");
    }
    f.restore_matches("out");
    // The damaged files are left for `repair index`; check names only them.
    let out = f.check_names(&damaged.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!out.stdout.contains("missing"), "{}", out.stdout);
    f.repo.run(&["repair", "index"]).success();
    f.repo.run(&["check", "--read-data"]).success();
}

#[test]
fn a_forget_then_prune_beside_an_unreadable_snapshot_keeps_everything_it_may_use() {
    let f = Fixture::new();
    // The older snapshot's object is damaged (bit rot): its tree is unknown, so prune must
    // not delete the data only it uses, even though `forget` removed nothing it could read.
    let ids = f.repo.snapshot_ids();
    let snaps = f.repo.snapshots();
    let oldest = snaps
        .iter()
        .min_by_key(|s| s["time"].as_str().unwrap().to_string())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(ids.contains(&oldest));
    let path = f.file(&format!("snapshots/{oldest}"));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[40] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let packs_before = names_below(&f.file("data"));

    let out = f.repo.run(&["prune", "--max-unused", "0%"]);
    out.success().stderr_has(&oldest);
    let packs_after = names_below(&f.file("data"));
    assert_eq!(packs_before, packs_after, "prune deleted or repacked data");
    assert!(path.exists(), "the damaged snapshot was deleted");
    f.restore_matches("out");
}

#[test]
fn decompression_bombs_and_impossible_index_entries_are_refused_by_name() {
    let f = Fixture::new();
    let p = Planter::open(&f.repo);
    // A snapshot whose header claims 3 GiB, and one that claims 8 MiB but inflates to 64 MiB.
    let claims = p.bomb(FileKind::Snapshot, ObjectKind::Snapshot, 3 << 30, 1 << 20);
    let inflates = p.bomb(FileKind::Snapshot, ObjectKind::Snapshot, 8 << 20, 64 << 20);
    // An index file whose one entry claims a 3 GiB data blob in an existing pack.
    let pack = Id::from_hex(&f.repo.pack_ids()[0]).unwrap();
    let huge = p.index_file(
        pack,
        &[PackEntry {
            ty: BlobType::Data,
            compression: cairn_repo_format::compress::Compression::Zstd,
            id: Id([9; 32]),
            offset: 0,
            length: 4096,
            raw_length: 3 << 30,
        }],
    );
    let out = f.repo.run(&["snapshots"]);
    out.success().stderr_has(&claims).stderr_has(&inflates);
    f.restore_matches("out").stderr_has(&huge);
    f.check_names(&[&claims, &inflates, &huge]);
}

#[test]
fn a_config_outside_the_format_ranges_is_refused_naming_the_field() {
    for (field, value) in [
        ("pack_size", serde_json::json!(0)),
        ("compression", serde_json::json!(1000)),
        ("version", serde_json::json!(0)),
    ] {
        let f = Fixture::new();
        let p = Planter::open(&f.repo);
        let mut config = serde_json::to_value(p.repo.config()).unwrap();
        config[field] = value;
        let mut plain = vec![0u8];
        plain.extend(serde_json::to_vec(&config).unwrap());
        let sealed = p.repo.key().seal(ObjectKind::Config.aad(), &plain);
        std::fs::write(f.file("config"), sealed).unwrap();
        let out = f.repo.run(&["snapshots"]);
        out.failed_cleanly().stderr_has("config").stderr_has(field);
    }
}

#[test]
fn a_fifo_in_place_of_a_pack_fails_only_its_files_without_hanging() {
    let f = Fixture::new();
    let pack = f.repo.pack_ids().into_iter().next().unwrap();
    let path = f.repo.pack_path(&pack);
    std::fs::remove_file(&path).unwrap();
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let target = f.base.join("out");
    let out = f.repo.restore("latest", &target, &[]);
    out.failed_cleanly()
        .stderr_has(&pack)
        .stderr_has("not a regular file");
    // Listings show regular files only, so to `check` the pack is missing, by name.
    f.repo.run(&["check"]).expect_code(1).stdout_has(&pack);
}

#[test]
fn a_forged_location_of_a_real_blob_is_reported_and_never_costs_the_real_copy() {
    let f = Fixture::new();
    let p = Planter::open(&f.repo);
    let index = p.repo.index();
    // A real data blob, and a real pack that does not hold it.
    let (n, real) = (0..index.len())
        .map(|pos| index.entry_at(pos))
        .find(|(_, e)| e.ty == BlobType::Data)
        .expect("a data blob");
    let home = index.packs()[n as usize];
    let other = *index
        .packs()
        .iter()
        .find(|pk| **pk != home)
        .expect("a second pack");
    // Either location may be the one readers meet first (index files are read in name order).
    p.index_file(other, &[real]);
    drop(p);
    let out = f.repo.run(&["check", "--read-data"]);
    out.expect_code(1).stdout_has(&other.to_string());
    assert!(
        out.stdout.contains(&real.id.to_string()),
        "check does not name the blob:\n{}",
        out.stdout
    );
    // Restore falls back to the real location, and prune keeps (or repacks) the real copy.
    f.restore_matches("out");
    f.repo
        .run(&[
            "forget",
            "--keep-last",
            "1",
            "--prune",
            "--max-unused",
            "0%",
        ])
        .success();
    f.restore_matches("after-prune");
    // The forgery is either gone (its pack was repacked from the real copy) or still named.
    let out = f.repo.run(&["check", "--read-data"]);
    if out.code != 0 {
        out.expect_code(1).stdout_has(&other.to_string());
        assert!(!out.stdout.contains("missing"), "{}", out.stdout);
    }
}

#[test]
fn forged_snapshots_and_entries_naming_missing_data_never_stop_prune() {
    let f = Fixture::new();
    let p = Planter::open(&f.repo);
    // A snapshot whose tree exists nowhere, written with the real key (as an append-only
    // client could), and an index entry for a blob in a pack that does not exist.
    let ghost_tree = Id([0x42; 32]);
    let ghost = p.snapshot_of(ghost_tree);
    let ghost_pack = Id([0x17; 32]);
    p.index_file(
        ghost_pack,
        &[PackEntry {
            ty: BlobType::Data,
            compression: cairn_repo_format::compress::Compression::None,
            id: Id([0x18; 32]),
            offset: 0,
            length: 128,
            raw_length: 100,
        }],
    );
    drop(p);
    // Prune goes on, names both, and the real snapshots keep every byte.
    let out = f.repo.run(&[
        "forget",
        "--keep-last",
        "2",
        "--prune",
        "--max-unused",
        "0%",
    ]);
    out.success()
        .stderr_has(&ghost_tree.to_string())
        .stderr_has(&ghost_pack.to_string());
    let snaps = f.repo.snapshots();
    assert_eq!(snaps.len(), 2, "{snaps:?}");
    // `latest` is the ghost (the newest): restore the real one by id.
    let real = snaps
        .iter()
        .filter_map(|s| s["id"].as_str())
        .find(|id| *id != ghost.to_string())
        .unwrap()
        .to_string();
    let target = f.base.join("real");
    f.repo.restore(&real, &target, &[]).success();
    assert_eq!(hashes(&f.src), hashes(&target));
    f.repo.run(&["check", "--read-data"]).expect_code(1);
}

#[test]
fn check_names_every_tree_entry_restore_would_refuse_and_restore_stays_inside() {
    use cairn_repo_format::tree::RawBytes;
    let f = Fixture::new();
    let p = Planter::open(&f.repo);
    let (_, snap) = p.latest();
    let mut tree = p.tree(&snap.tree);
    let file = tree
        .nodes
        .iter()
        .find(|n| n.content.as_ref().is_some_and(|c| !c.is_empty()))
        .expect("a file with content")
        .clone();
    let named = |name: &[u8]| {
        let mut n = file.clone();
        n.name = RawBytes(name.to_vec());
        n
    };
    let mut wrong_size = named(b"zz-wrong-size");
    wrong_size.size += 1;
    // Hostile names, a duplicate, an entry out of order, and a size its content does not have.
    tree.nodes.push(named(b".."));
    tree.nodes.push(named(b"../../escaped"));
    tree.nodes.push(named(b"/etc/cairn-owned"));
    tree.nodes.push(named(b"f1.bin"));
    tree.nodes.push(named(b"a-out-of-order"));
    tree.nodes.push(wrong_size);
    let forged = p.store_tree(&tree);
    p.snapshot_of(forged);
    drop(p);

    let out = f.repo.run(&["check"]);
    out.expect_code(1).stdout_has(&forged.to_string());
    for needle in [
        "entry ..:",
        "entry ../../escaped:",
        "entry /etc/cairn-owned:",
        "a second entry with this name",
        "out of order",
        "zz-wrong-size",
    ] {
        out.stdout_has(needle);
    }
    // Restore refuses the names, creates nothing outside its target, and the files restore.
    let target = f.base.join("out");
    let before = everything_but(&f.base, &target);
    let out = f.repo.restore("latest", &target, &[]);
    out.failed_cleanly().stderr_has("..");
    assert_eq!(before, everything_but(&f.base, &target));
    assert!(!Path::new("/etc/cairn-owned").exists());
    assert_eq!(
        std::fs::read(target.join("f1.bin")).unwrap(),
        std::fs::read(f.src.join("f1.bin")).unwrap()
    );
}
