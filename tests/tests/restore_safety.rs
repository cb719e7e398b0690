//! A restore never writes outside its target: a hostile repository whose trees hold names like
//! `..`, `a/b` or an absolute path (crafted here with the `cairn-repo-format` library, as an
//! attacker with write access to the storage could) is refused name by name, and symlinks
//! already inside the target are replaced, never followed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use cairn_e2e::*;
use cairn_repo_format::blob::seal_blob;
use cairn_repo_format::pack::PackBuilder;
use cairn_repo_format::snapshot::Snapshot;
use cairn_repo_format::tree::{Node, RawBytes, Tree};
use cairn_repo_format::{BlobType, FileKind, Id, ObjectStoreBackend, Repository};

/// Every path below `dir` (files, directories, symlinks), not following symlinks.
fn all_paths(dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            out.insert(e.path());
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
        }
    }
    out
}

fn renamed(n: &Node, name: &[u8]) -> Node {
    let mut n = n.clone();
    n.name = RawBytes(name.to_vec());
    n
}

/// Stores `trees` as tree blobs in one new pack with its index file, using the library the
/// way `cairn` does; returns their ids.
fn store_trees(repo: &Repository<cairn_repo_format::Indexed>, trees: &[Tree]) -> Vec<Id> {
    let mut pack = PackBuilder::default();
    let mut ids = Vec::new();
    for t in trees {
        let bytes = t.to_bytes();
        let id = repo.key().blob_id(&bytes);
        pack.add(&seal_blob(repo.key(), BlobType::Tree, id, &bytes, 3));
        ids.push(id);
    }
    let pack = pack.finish(repo.key());
    repo.backend()
        .put(
            &FileKind::Pack.path(&pack.id),
            Bytes::from(pack.bytes.clone()),
        )
        .unwrap();
    repo.save_index([(&pack.id, &pack.entries[..])]).unwrap();
    ids
}

fn sorted(mut nodes: Vec<Node>) -> Tree {
    nodes.sort_by(|a, b| a.name.0.cmp(&b.name.0));
    Tree { nodes }
}

#[test]
fn restore_refuses_unsafe_names_and_writes_nothing_outside_the_target() {
    let base = tempdir();
    let src = base.path().join("src");
    write_file(&src.join("payload.txt"), b"attacker-controlled content\n");
    write_file(&src.join("sub/keep.txt"), b"a legitimate file\n");
    let repo = Repo::init(&base.path().join("repo"), &[]);
    let summary = repo.backup(&[&src], &[]);
    let outside = base.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let absolute = outside.join("absolute.txt");
    let absolute_name = absolute.display().to_string();

    // The attacker's snapshot: the real one with its root tree swapped for a hostile one.
    let backend = Arc::new(ObjectStoreBackend::local(&repo.path, false).unwrap());
    let lib = Repository::open(backend, PASSWORD.as_bytes())
        .unwrap()
        .load_index()
        .unwrap();
    let snap_id = Id::from_hex(summary["snapshot_id"].as_str().unwrap()).unwrap();
    let snap: Snapshot = lib.load_snapshot(&snap_id).unwrap();
    let root = lib.load_tree(&snap.tree).unwrap();
    let payload = root.find(b"payload.txt").unwrap().clone();
    let sub = root.find(b"sub").unwrap().clone();

    let escape = sorted(vec![renamed(&payload, b"escaped.txt")]);
    let [escape_id] = store_trees(&lib, &[escape])[..] else {
        unreachable!()
    };
    let dotdot_dir = |name: &[u8]| {
        let mut d = renamed(&sub, name);
        d.subtree = Some(escape_id);
        d
    };
    let hostile_sub = sorted(vec![
        dotdot_dir(b".."),
        renamed(&payload, b"inner_good.txt"),
        renamed(&payload, b"../../escaped_from_sub.txt"),
    ]);
    let [hostile_sub_id] = store_trees(&lib, &[hostile_sub])[..] else {
        unreachable!()
    };
    let mut sub_node = renamed(&sub, b"sub");
    sub_node.subtree = Some(hostile_sub_id);
    let hostile_root = sorted(vec![
        dotdot_dir(b".."),
        dotdot_dir(b"."),
        renamed(&payload, b"../escaped_file.txt"),
        renamed(&payload, b"a/b"),
        renamed(&payload, absolute_name.as_bytes()),
        renamed(&payload, b"nul\0byte"),
        renamed(&payload, b"good.txt"),
        sub_node,
    ]);
    let [hostile_root_id] = store_trees(&lib, &[hostile_root])[..] else {
        unreachable!()
    };
    let hostile_snap = Snapshot {
        tree: hostile_root_id,
        ..snap.clone()
    };
    let hostile_id = lib.save_snapshot(&hostile_snap).unwrap().to_hex();

    // The target sits two levels down in a jail, so `..` and `../..` land somewhere checkable.
    let jail = base.path().join("jail");
    let target = jail.join("cell/target");
    std::fs::create_dir_all(&target).unwrap();
    let repo_dir = repo.path.clone();
    let watched = |p: &PathBuf| !p.starts_with(&repo_dir);
    let before: BTreeSet<PathBuf> = all_paths(base.path()).into_iter().filter(watched).collect();

    let out = repo.restore(&hostile_id, &target, &[]);
    out.failed_cleanly();
    for name in [
        "\"..\"",
        "\".\"",
        "../escaped_file.txt",
        "a/b",
        &absolute_name,
        "../../escaped_from_sub.txt",
        "nul",
    ] {
        out.stderr_has(name);
    }

    let after: BTreeSet<PathBuf> = all_paths(base.path()).into_iter().filter(watched).collect();
    let outside_target: Vec<&PathBuf> = after
        .difference(&before)
        .filter(|p| !p.starts_with(&target))
        .collect();
    assert!(
        outside_target.is_empty(),
        "the restore created paths outside its target: {outside_target:?}"
    );
    assert!(!absolute.exists());
    let content = std::fs::read(src.join("payload.txt")).unwrap();
    assert_eq!(std::fs::read(target.join("good.txt")).unwrap(), content);
    assert_eq!(
        std::fs::read(target.join("sub/inner_good.txt")).unwrap(),
        content
    );
    let in_target: BTreeSet<PathBuf> = all_paths(&target)
        .into_iter()
        .map(|p| p.strip_prefix(&target).unwrap().to_path_buf())
        .collect();
    assert_eq!(
        in_target,
        ["good.txt", "sub", "sub/inner_good.txt"]
            .iter()
            .map(PathBuf::from)
            .collect(),
        "only the safe names are restored"
    );
}

#[test]
fn restore_replaces_symlinks_in_the_target_and_never_follows_them() {
    let base = tempdir();
    let src = base.path().join("src");
    write_file(&src.join("dir/file1.txt"), b"one\n");
    write_file(
        &src.join("dir/nested/file2.bin"),
        &Rng::new(21).bytes(50_000),
    );
    write_file(&src.join("top.txt"), b"top\n");
    write_file(&src.join("deep/a/b/c.txt"), b"deep\n");
    let repo = Repo::init(&base.path().join("repo"), &[]);
    repo.backup(&[&src], &[]);

    // Outside the target: a directory and a file that symlinks in the target point at.
    let outside = base.path().join("outside");
    write_file(&outside.join("dir/sentinel.txt"), b"must not change\n");
    write_file(&outside.join("victim.txt"), b"must not be overwritten\n");
    write_file(&outside.join("deep_a/sentinel.txt"), b"nor this\n");
    let outside_before = read_tree_files(&outside);
    let outside_paths = all_paths(&outside);

    let target = base.path().join("target");
    std::fs::create_dir_all(target.join("deep")).unwrap();
    std::os::unix::fs::symlink(outside.join("dir"), target.join("dir")).unwrap();
    std::os::unix::fs::symlink(outside.join("victim.txt"), target.join("top.txt")).unwrap();
    std::os::unix::fs::symlink(outside.join("deep_a"), target.join("deep/a")).unwrap();

    repo.restore("latest", &target, &[]).success();

    assert_eq!(
        read_tree_files(&outside),
        outside_before,
        "the restore wrote through a symlink"
    );
    assert_eq!(
        all_paths(&outside),
        outside_paths,
        "the restore created files outside"
    );
    for d in ["dir", "dir/nested", "deep", "deep/a", "deep/a/b"] {
        let m = std::fs::symlink_metadata(target.join(d)).unwrap();
        assert!(
            m.is_dir() && !m.file_type().is_symlink(),
            "{d} is not a real directory"
        );
    }
    let m = std::fs::symlink_metadata(target.join("top.txt")).unwrap();
    assert!(m.is_file(), "top.txt is not a regular file");
    assert_eq!(read_tree_files(&target), read_tree_files(&src));
}
