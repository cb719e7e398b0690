//! Deduplication as a user sees it: backing up unchanged data again (with or without `--force`)
//! adds no data, a file copied 100 times is stored once, and the same content backed up from
//! two hosts is stored once.

use std::collections::BTreeSet;
use std::path::Path;

use cairn_e2e::*;

/// Five random files of various sizes and a few small ones; returns the number of files.
fn make_source(src: &Path, seed: u64) -> u64 {
    let mut rng = Rng::new(seed);
    for (i, size) in [300_000usize, 150_000, 70_000, 1, 0].iter().enumerate() {
        write_file(&src.join(format!("f{i}.bin")), &rng.bytes(*size));
    }
    write_file(&src.join("dir/a.txt"), b"hello\n");
    write_file(&src.join("dir/deeper/b.bin"), &rng.bytes(123_456));
    7
}

/// Packs added between two listings, with the blob types each holds.
fn new_pack_types(repo: &Repo, before: &[String]) -> Vec<(String, BTreeSet<String>)> {
    repo.pack_ids()
        .into_iter()
        .filter(|id| !before.contains(id))
        .map(|id| {
            let types = repo.cat_pack(&id)["blobs"]
                .as_array()
                .expect("blobs")
                .iter()
                .map(|b| b["type"].as_str().expect("type").to_string())
                .collect();
            (id, types)
        })
        .collect()
}

#[test]
fn second_backup_of_unchanged_data_adds_no_data_blobs() {
    let base = tempdir();
    let src = base.path().join("src");
    let n = make_source(&src, 1);
    let repo = Repo::init_small_chunks(&base.path().join("repo"));

    let first = repo.backup(&[&src], &[]);
    assert!(counter(&first, "data_blobs") > 0, "{first}");
    assert_eq!(counter(&first, "files_new"), n, "{first}");
    let packs = repo.pack_ids();

    let second = repo.backup(&[&src], &[]);
    assert_eq!(counter(&second, "data_blobs"), 0, "{second}");
    assert_eq!(counter(&second, "files_unmodified"), n, "{second}");
    assert_eq!(counter(&second, "files_new"), 0, "{second}");
    assert_eq!(counter(&second, "files_changed"), 0, "{second}");
    assert_eq!(
        counter(&second, "bytes_read"),
        0,
        "unchanged files are not read: {second}"
    );
    assert_eq!(second["parent"], first["snapshot_id"], "{second}");
    for (id, types) in new_pack_types(&repo, &packs) {
        assert!(
            !types.contains("data"),
            "an unchanged backup stored data in pack {id}"
        );
    }

    let target = base.path().join("out");
    repo.restore("latest", &target, &[]).success();
    assert_eq!(read_tree_files(&target), read_tree_files(&src));
}

#[test]
fn forced_backup_of_unchanged_data_reads_everything_and_adds_no_data_blobs() {
    let base = tempdir();
    let src = base.path().join("src");
    let n = make_source(&src, 2);
    let repo = Repo::init_small_chunks(&base.path().join("repo"));
    repo.backup(&[&src], &[]);
    let packs = repo.pack_ids();

    let forced = repo.backup(&[&src], &["--force"]);
    assert_eq!(counter(&forced, "data_blobs"), 0, "{forced}");
    assert_eq!(
        counter(&forced, "files_unmodified"),
        0,
        "--force reads every file: {forced}"
    );
    assert_eq!(counter(&forced, "files_new"), n, "{forced}");
    assert_eq!(
        counter(&forced, "bytes_read"),
        counter(&forced, "bytes_total"),
        "{forced}"
    );
    for (id, types) in new_pack_types(&repo, &packs) {
        assert!(
            !types.contains("data"),
            "the forced backup stored data again in pack {id}"
        );
    }
}

#[test]
fn file_copied_100_times_is_stored_once() {
    const SIZE: u64 = 2 << 20;
    let base = tempdir();
    let src = base.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    write_random_file(&src.join("copy_000"), SIZE, 42);
    for i in 1..100 {
        std::fs::copy(src.join("copy_000"), src.join(format!("copy_{i:03}"))).unwrap();
    }
    // Default chunk sizes: the metadata of 100 files stays small next to one copy.
    let repo = Repo::init(&base.path().join("repo"), &[]);
    let before = repo.size();

    let s = repo.backup(&[&src], &[]);
    assert_eq!(counter(&s, "files_new"), 100, "{s}");

    let nodes = repo.ls("latest", None);
    let lists: BTreeSet<Vec<String>> = nodes.iter().map(content_ids).collect();
    assert_eq!(lists.len(), 1, "all 100 copies have the same content list");
    let chunks: BTreeSet<String> = lists.into_iter().next().unwrap().into_iter().collect();
    assert!(!chunks.is_empty());
    assert_eq!(
        counter(&s, "data_blobs"),
        chunks.len() as u64,
        "data blobs stored = the chunks of one copy: {s}"
    );
    assert!(counter(&s, "data_added") < SIZE + SIZE / 10, "{s}");

    let growth = repo.size() - before;
    assert!(
        (SIZE..SIZE + SIZE / 10 + (64 << 10)).contains(&growth),
        "the repository grew by {growth} bytes for 100 copies of a {SIZE}-byte file"
    );

    let target = base.path().join("out");
    repo.restore("latest", &target, &[]).success();
    for i in [0, 1, 57, 99] {
        let name = format!("copy_{i:03}");
        assert_same_content(&src.join(&name), &target.join(&name));
    }
    assert_eq!(files_below(&target).len(), 100);
}

#[test]
fn identical_content_from_two_hosts_is_stored_once() {
    let base = tempdir();
    let alpha_src = base.path().join("alpha/data");
    let beta_src = base.path().join("beta/volume");
    let n = make_source(&alpha_src, 3);
    make_source(&beta_src, 3);
    let repo = Repo::init_small_chunks(&base.path().join("repo"));

    let a = repo.backup(&[&alpha_src], &["--host", "alpha"]);
    assert!(counter(&a, "data_blobs") > 0, "{a}");
    let packs = repo.pack_ids();
    let b = repo.backup(&[&beta_src], &["--host", "beta"]);
    assert_eq!(
        b["parent"],
        serde_json::Value::Null,
        "another host's snapshot is no parent"
    );
    assert_eq!(counter(&b, "files_new"), n, "{b}");
    assert_eq!(
        counter(&b, "data_blobs"),
        0,
        "identical content is stored once: {b}"
    );
    for (id, types) in new_pack_types(&repo, &packs) {
        assert!(
            !types.contains("data"),
            "the second host's backup stored data again in pack {id}"
        );
    }

    let hosts: Vec<String> = repo
        .snapshots()
        .iter()
        .map(|s| s["hostname"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(hosts.len(), 2);
    assert!(hosts.contains(&"alpha".to_string()) && hosts.contains(&"beta".to_string()));

    let target = base.path().join("out");
    repo.restore("latest", &target, &["--host", "beta"])
        .success();
    assert_eq!(read_tree_files(&target), read_tree_files(&beta_src));
}

#[test]
fn concurrent_backups_into_one_repository_both_restore() {
    let base = tempdir();
    let a = base.path().join("a");
    let b = base.path().join("b");
    make_source(&a, 4);
    make_source(&b, 4);
    write_file(&b.join("only_in_b.bin"), &Rng::new(40).bytes(400_000));
    let repo = Repo::init(
        &base.path().join("repo"),
        &["--pack-size", "1", "--chunk-sizes", SMALL_CHUNKS],
    );

    let (sa, sb) = std::thread::scope(|s| {
        let ta = s.spawn(|| repo.backup(&[&a], &["--host", "a"]));
        let tb = s.spawn(|| repo.backup(&[&b], &["--host", "b"]));
        (ta.join().unwrap(), tb.join().unwrap())
    });
    assert_ne!(sa["snapshot_id"], sb["snapshot_id"]);
    assert_eq!(repo.snapshots().len(), 2);

    for (host, src) in [("a", &a), ("b", &b)] {
        let target = base.path().join(format!("out_{host}"));
        repo.restore("latest", &target, &["--host", host, "--verify"])
            .success();
        assert_eq!(read_tree_files(&target), read_tree_files(src));
    }
}
