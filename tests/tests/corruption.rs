//! Damaged repositories: a pack with a flipped byte or cut short makes `restore` fail with a
//! message naming the pack, the blob and the files it held, while every file stored elsewhere
//! is still restored correctly; and `cat` on malformed ids or damaged objects reports an error
//! instead of panicking.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use cairn_e2e::*;

/// One blob entry of a pack header, as `cat pack` prints it.
#[derive(Clone, Debug)]
struct PackBlob {
    id: String,
    ty: String,
    offset: u64,
    length: u64,
}

/// A repository with several ~1 MiB data packs holding eight 600 KiB random files.
struct Fixture {
    _base: tempfile::TempDir,
    base: PathBuf,
    src: PathBuf,
    repo: Repo,
    /// File name → its content blob ids.
    content: BTreeMap<String, Vec<String>>,
    /// Pack id → its blobs.
    packs: BTreeMap<String, Vec<PackBlob>>,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempdir();
        let base = dir.path().to_path_buf();
        let src = base.join("src");
        for i in 0..8u64 {
            write_file(
                &src.join(format!("file{i}.bin")),
                &Rng::new(1000 + i).bytes(600 * 1024),
            );
        }
        let repo = Repo::init(
            &base.join("repo"),
            &["--pack-size", "1", "--chunk-sizes", SMALL_CHUNKS],
        );
        repo.backup(&[&src], &[]);
        let content = repo
            .ls("latest", None)
            .iter()
            .map(|n| (n["name"].as_str().unwrap().to_string(), content_ids(n)))
            .collect();
        let packs = repo
            .pack_ids()
            .into_iter()
            .map(|id| {
                let blobs = repo.cat_pack(&id)["blobs"]
                    .as_array()
                    .expect("blobs")
                    .iter()
                    .map(|b| PackBlob {
                        id: b["id"].as_str().unwrap().to_string(),
                        ty: b["type"].as_str().unwrap().to_string(),
                        offset: b["offset"].as_u64().unwrap(),
                        length: b["length"].as_u64().unwrap(),
                    })
                    .collect();
                (id, blobs)
            })
            .collect();
        Fixture {
            _base: dir,
            base,
            src,
            repo,
            content,
            packs,
        }
    }

    /// The largest data pack, checked to leave some files entirely outside it.
    fn victim_pack(&self) -> String {
        let data_packs: Vec<&String> = self
            .packs
            .iter()
            .filter(|(_, b)| b.iter().any(|b| b.ty == "data"))
            .map(|(id, _)| id)
            .collect();
        assert!(
            data_packs.len() >= 3,
            "the fixture should spread data over several packs: {data_packs:?}"
        );
        let id = data_packs
            .into_iter()
            .max_by_key(|id| std::fs::metadata(self.repo.pack_path(id)).unwrap().len())
            .unwrap()
            .clone();
        assert!(
            !self.files_outside(&id).is_empty(),
            "some files must have no blob in the victim pack"
        );
        id
    }

    /// Files with at least one blob in `ids`.
    fn files_using(&self, ids: &BTreeSet<String>) -> BTreeSet<String> {
        self.content
            .iter()
            .filter(|(_, c)| c.iter().any(|b| ids.contains(b)))
            .map(|(f, _)| f.clone())
            .collect()
    }

    /// Files with no blob in pack `pack`.
    fn files_outside(&self, pack: &str) -> BTreeSet<String> {
        let in_pack: BTreeSet<String> = self.packs[pack].iter().map(|b| b.id.clone()).collect();
        let using = self.files_using(&in_pack);
        self.content
            .keys()
            .filter(|f| !using.contains(*f))
            .cloned()
            .collect()
    }

    /// Restores latest into a fresh directory; asserts it fails cleanly; returns (target, output).
    fn failing_restore(&self, name: &str) -> (PathBuf, Output) {
        let target = self.base.join(name);
        let out = self.repo.restore("latest", &target, &[]);
        out.failed_cleanly();
        (target, out)
    }

    /// Asserts that every file in `files` was restored with its exact content.
    fn assert_restored(&self, target: &Path, files: &BTreeSet<String>) {
        for f in files {
            let restored = target.join(f);
            assert!(
                restored.is_file(),
                "{f} (not in the damaged pack) was not restored"
            );
            assert_same_content(&self.src.join(f), &restored);
        }
    }
}

/// Lines of `stderr` that mention `needle`.
fn lines_with<'a>(stderr: &'a str, needle: &str) -> Vec<&'a str> {
    stderr.lines().filter(|l| l.contains(needle)).collect()
}

#[test]
fn corrupt_pack_fails_restore_naming_pack_and_blob_and_restores_all_other_files() {
    let fx = Fixture::new();
    let pack = fx.victim_pack();
    let path = fx.repo.pack_path(&pack);
    let mut bytes = std::fs::read(&path).unwrap();
    let pos = bytes.len() as u64 / 2;
    bytes[pos as usize] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();

    let hit = fx.packs[&pack]
        .iter()
        .find(|b| b.offset <= pos && pos < b.offset + b.length)
        .expect("the middle of a data pack lies inside a blob")
        .clone();
    assert_eq!(hit.ty, "data");
    let damaged = fx.files_using(&BTreeSet::from([hit.id.clone()]));
    assert!(!damaged.is_empty(), "some file uses the damaged blob");

    let (target, out) = fx.failing_restore("restored");
    out.stderr_has(&pack).stderr_has(&hit.id);
    for f in &damaged {
        let lines = lines_with(&out.stderr, f);
        assert!(
            lines
                .iter()
                .any(|l| l.contains(&pack) && l.contains(&hit.id)),
            "no error line names {f} with its damaged pack and blob:\n{}",
            out.stderr
        );
    }
    fx.assert_restored(&target, &fx.files_outside(&pack));
}

#[test]
fn truncated_pack_fails_restore_naming_the_pack_and_restores_all_other_files() {
    let fx = Fixture::new();
    let pack = fx.victim_pack();
    let path = fx.repo.pack_path(&pack);
    let len = std::fs::metadata(&path).unwrap().len();
    let cut = len / 2;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(cut)
        .unwrap();

    let lost: BTreeSet<String> = fx.packs[&pack]
        .iter()
        .filter(|b| b.offset + b.length > cut)
        .map(|b| b.id.clone())
        .collect();
    let damaged = fx.files_using(&lost);
    assert!(!damaged.is_empty());

    let (target, out) = fx.failing_restore("restored");
    out.stderr_has(&pack);
    for f in &damaged {
        let lines = lines_with(&out.stderr, f);
        assert!(
            lines
                .iter()
                .any(|l| l.contains(&pack) && lost.iter().any(|b| l.contains(b))),
            "no error line names {f} with the truncated pack and a lost blob:\n{}",
            out.stderr
        );
    }
    fx.assert_restored(&target, &fx.files_outside(&pack));

    fx.repo
        .run(&["cat", "pack", &pack])
        .failed_cleanly()
        .stderr_has(&pack);
}

#[test]
fn missing_pack_fails_restore_naming_the_pack_and_restores_all_other_files() {
    let fx = Fixture::new();
    let pack = fx.victim_pack();
    std::fs::remove_file(fx.repo.pack_path(&pack)).unwrap();
    let all: BTreeSet<String> = fx.packs[&pack].iter().map(|b| b.id.clone()).collect();
    let damaged = fx.files_using(&all);

    let (target, out) = fx.failing_restore("restored");
    for f in &damaged {
        assert!(
            lines_with(&out.stderr, f).iter().any(|l| l.contains(&pack)),
            "no error line names {f} with its missing pack:\n{}",
            out.stderr
        );
    }
    fx.assert_restored(&target, &fx.files_outside(&pack));
}

#[test]
fn corrupt_tree_blob_fails_its_directory_only_and_is_named() {
    let base = tempdir();
    let src = base.path().join("src");
    write_file(&src.join("top.txt"), b"top\n");
    write_file(&src.join("a/x.txt"), b"x\n");
    write_file(&src.join("b/y.txt"), b"y\n");
    write_file(&src.join("b/c/z.txt"), b"z\n");
    write_file(&src.join("b/c/d/w.txt"), b"w\n");
    let repo = Repo::init(&base.path().join("repo"), &[]);
    repo.backup(&[&src], &[]);
    let tree = repo
        .ls("latest", Some("/b/c"))
        .iter()
        .find(|n| n["path"] == "/b/c")
        .expect("/b/c listed")["subtree"]
        .as_str()
        .unwrap()
        .to_string();
    let (pack, blob) = repo
        .pack_ids()
        .into_iter()
        .find_map(|id| {
            let hdr = repo.cat_pack(&id);
            let blob = hdr["blobs"]
                .as_array()
                .unwrap()
                .iter()
                .find(|b| b["id"] == tree.as_str())
                .cloned();
            blob.map(|b| (id, b))
        })
        .expect("the tree blob is in some pack");
    let path = repo.pack_path(&pack);
    let mut bytes = std::fs::read(&path).unwrap();
    let pos = blob["offset"].as_u64().unwrap() + blob["length"].as_u64().unwrap() / 2;
    bytes[pos as usize] ^= 0x08;
    std::fs::write(&path, &bytes).unwrap();

    let target = base.path().join("out");
    let out = repo.restore("latest", &target, &[]);
    out.failed_cleanly().stderr_has(&pack).stderr_has(&tree);
    assert!(
        lines_with(&out.stderr, &tree)
            .iter()
            .any(|l| l.contains("b/c")),
        "the error does not say which directory was lost:\n{}",
        out.stderr
    );
    for f in ["top.txt", "a/x.txt", "b/y.txt"] {
        assert_same_content(&src.join(f), &target.join(f));
    }
    assert!(!target.join("b/c/z.txt").exists());
}

/// Runs `cat ARGS`, which must fail without panicking and mention `named` on stderr.
fn cat_fails(repo: &Repo, args: &[&str], named: &str) {
    let mut all = vec!["cat"];
    all.extend_from_slice(args);
    repo.run(&all).failed_cleanly().stderr_has(named);
}

#[test]
fn cat_on_malformed_input_reports_errors_and_never_panics() {
    let fx = Fixture::new();
    let repo = &fx.repo;
    let zeros = "0".repeat(64);

    // Malformed or unknown ids and kinds.
    cat_fails(repo, &["snapshot", "zzzz"], "zzzz");
    let snap = repo.snapshot_ids().pop().unwrap();
    let other = if snap.starts_with('0') { "1" } else { "0" };
    let no_match = format!("{other}{}", &snap[1..8]);
    cat_fails(repo, &["snapshot", &no_match], &no_match);
    cat_fails(repo, &["snapshot", ""], "");
    cat_fails(repo, &["tree", &zeros], &zeros);
    cat_fails(repo, &["tree", "abc"], "abc");
    cat_fails(repo, &["tree", &"g".repeat(64)], &"g".repeat(64));
    cat_fails(repo, &["blob", &zeros], &zeros);
    cat_fails(repo, &["index", "zz"], "zz");
    cat_fails(repo, &["key", "zz"], "zz");
    cat_fails(repo, &["pack", &zeros], &zeros);
    cat_fails(repo, &["pack"], "pack");
    cat_fails(repo, &["frobnicate", "x"], "frobnicate");

    // A data blob asked for as a tree, and a tree blob asked for as data.
    let data_blob = fx.content.values().next().unwrap()[0].clone();
    cat_fails(repo, &["tree", &data_blob], &data_blob);
    let tree_blob = fx
        .packs
        .values()
        .flatten()
        .find(|b| b.ty == "tree")
        .expect("a tree blob")
        .id
        .clone();
    cat_fails(repo, &["blob", &tree_blob], &tree_blob);

    // A damaged pack, in every way its header can be unreadable; restored after each.
    let pack = fx.victim_pack();
    let path = fx.repo.pack_path(&pack);
    let original = std::fs::read(&path).unwrap();
    let n = original.len();
    let mut damaged: Vec<(&str, Vec<u8>)> = vec![
        ("cut in half", original[..n / 2].to_vec()),
        ("cut to 2 bytes", original[..2].to_vec()),
        ("empty", Vec::new()),
        ("header length u32::MAX", {
            let mut b = original.clone();
            b[n - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
            b
        }),
        ("header flipped", {
            let mut b = original.clone();
            b[n - 10] ^= 1;
            b
        }),
        ("header length too small", {
            let mut b = original.clone();
            b[n - 4..].copy_from_slice(&3u32.to_le_bytes());
            b
        }),
    ];
    for (what, bytes) in damaged.drain(..) {
        std::fs::write(&path, &bytes).unwrap();
        let out = repo.run(&["cat", "pack", &pack]);
        assert!(out.code != 0, "cat pack of a pack {what} succeeded");
        out.failed_cleanly().stderr_has(&pack);
    }
    std::fs::write(&path, &original).unwrap();
    repo.cat_pack(&pack);

    // A damaged snapshot and a damaged index file are reported by name.
    let snap_path = repo.path.join("snapshots").join(&snap);
    let mut bytes = std::fs::read(&snap_path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&snap_path, &bytes).unwrap();
    cat_fails(repo, &["snapshot", &snap], &snap);
    cat_fails(repo, &["snapshot", "latest"], &snap);

    let index = files_below(&repo.path.join("index")).pop().unwrap();
    let index_id = index.file_name().unwrap().to_string_lossy().into_owned();
    let bytes = std::fs::read(&index).unwrap();
    std::fs::write(&index, &bytes[..bytes.len() / 2]).unwrap();
    cat_fails(repo, &["index", &index_id], &index_id);
    cat_fails(repo, &["tree", &tree_blob], &index_id);

    // A damaged config stops everything, by name.
    let config = repo.path.join("config");
    let mut bytes = std::fs::read(&config).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x80;
    std::fs::write(&config, &bytes).unwrap();
    cat_fails(repo, &["config"], "config");
}
