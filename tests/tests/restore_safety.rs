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

/// A hostile tree may hold one name twice (or more), in any order: restore reports each
/// repeat (naming its path in the snapshot) and restores only the first entry of that name,
/// never one over the other.
#[test]
fn restore_reports_duplicate_names_and_restores_only_the_first() {
    let base = tempdir();
    let src = base.path().join("src");
    write_file(&src.join("first.txt"), b"the first entry\n");
    write_file(&src.join("second.txt"), b"the second entry\n");
    write_file(&src.join("sub/inner.txt"), b"inside the first directory\n");
    let repo = Repo::init(&base.path().join("repo"), &[]);
    let summary = repo.backup(&[&src], &[]);

    let backend = Arc::new(ObjectStoreBackend::local(&repo.path, false).unwrap());
    let lib = Repository::open(backend, PASSWORD.as_bytes())
        .unwrap()
        .load_index()
        .unwrap();
    let snap_id = Id::from_hex(summary["snapshot_id"].as_str().unwrap()).unwrap();
    let snap: Snapshot = lib.load_snapshot(&snap_id).unwrap();
    let root = lib.load_tree(&snap.tree).unwrap();
    let first = root.find(b"first.txt").unwrap().clone();
    let second = root.find(b"second.txt").unwrap().clone();
    let sub = root.find(b"sub").unwrap().clone();
    // A second directory `sub` whose tree holds another file.
    let other = sorted(vec![renamed(&second, b"other.txt")]);
    let [other_id] = store_trees(&lib, &[other])[..] else {
        unreachable!()
    };
    let mut sub2 = sub.clone();
    sub2.subtree = Some(other_id);
    // Not sorted, as a hostile writer may store it.
    let hostile = Tree {
        nodes: vec![
            renamed(&first, b"dup.txt"),
            sub,
            renamed(&second, b"dup.txt"),
            renamed(&second, b"z.txt"),
            sub2,
            renamed(&second, b"dup.txt"),
        ],
    };
    let [hostile_id] = store_trees(&lib, &[hostile])[..] else {
        unreachable!()
    };
    let hostile_snap = lib
        .save_snapshot(&Snapshot {
            tree: hostile_id,
            ..snap
        })
        .unwrap()
        .to_hex();

    let target = base.path().join("target");
    let out = repo.restore(&hostile_snap, &target, &[]);
    out.failed_cleanly()
        .stderr_has("/dup.txt: tree")
        .stderr_has("/sub: tree")
        .stderr_has("more than once");
    assert_eq!(
        out.stderr.matches("more than once").count(),
        3,
        "each repeat reported once:\n{}",
        out.stderr
    );
    assert_eq!(
        std::fs::read(target.join("dup.txt")).unwrap(),
        b"the first entry\n",
        "the first entry of the name is restored, not overwritten"
    );
    assert_eq!(
        read_tree_files(&target),
        [
            ("dup.txt", &b"the first entry\n"[..]),
            ("sub/inner.txt", b"inside the first directory\n"),
            ("z.txt", b"the second entry\n"),
        ]
        .iter()
        .map(|(p, c)| (PathBuf::from(p), c.to_vec()))
        .collect(),
    );
}

/// The members of a tar archive, in order: (name, type flag, data). PAX `path` records
/// override the next header's name, as readers apply them.
fn tar_members(tar: &[u8]) -> Vec<(String, u8, Vec<u8>)> {
    fn octal(field: &[u8]) -> usize {
        let s = String::from_utf8_lossy(field);
        let s = s.trim_matches(|c: char| c == '\0' || c == ' ');
        usize::from_str_radix(s, 8).unwrap_or(0)
    }
    let mut out = Vec::new();
    let mut pax_path: Option<String> = None;
    let mut at = 0;
    while at + 512 <= tar.len() {
        let h = &tar[at..at + 512];
        if h.iter().all(|&b| b == 0) {
            break;
        }
        let stored: u32 = h[148..156]
            .iter()
            .filter(|b| b.is_ascii_digit())
            .fold(0, |a, b| a * 8 + (b - b'0') as u32);
        let sum: u32 = h
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    b as u32
                }
            })
            .sum();
        assert_eq!(stored, sum, "header checksum at offset {at}");
        let size = octal(&h[124..136]);
        let kind = h[156];
        let data = tar[at + 512..at + 512 + size].to_vec();
        at += 512 + size.div_ceil(512) * 512;
        if kind == b'x' {
            let text = String::from_utf8_lossy(&data).into_owned();
            for record in text.split('\n') {
                if let Some((_, kv)) = record.split_once(' ')
                    && let Some(p) = kv.strip_prefix("path=")
                {
                    pax_path = Some(p.to_string());
                }
            }
            continue;
        }
        let end = h[..100].iter().position(|&b| b == 0).unwrap_or(100);
        let name = pax_path
            .take()
            .unwrap_or_else(|| String::from_utf8_lossy(&h[..end]).into_owned());
        out.push((name, kind, data));
    }
    out
}

/// `dump` of a hostile tree: members whose names hold a `..` component, a NUL byte, or name
/// their own directory (empty, `.`) are left out with everything below them, and reported; a
/// leading `/` is removed (and reported), as GNU tar does on extraction. No member of the
/// archive can then be extracted outside the directory it is extracted into.
#[test]
fn dump_refuses_or_cleans_unsafe_member_names() {
    let base = tempdir();
    let src = base.path().join("src");
    write_file(&src.join("payload.txt"), b"attacker-controlled content\n");
    write_file(&src.join("sub/keep.txt"), b"a legitimate file\n");
    let repo = Repo::init(&base.path().join("repo"), &[]);
    let summary = repo.backup(&[&src], &[]);
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
    let dir_named = |name: &[u8]| {
        let mut d = renamed(&sub, name);
        d.subtree = Some(escape_id);
        d
    };
    let hostile_sub = sorted(vec![
        renamed(&payload, b"inner_good.txt"),
        renamed(&payload, b"../../escaped_from_sub.txt"),
        renamed(&payload, b"/abs_in_sub.txt"),
    ]);
    let [hostile_sub_id] = store_trees(&lib, &[hostile_sub])[..] else {
        unreachable!()
    };
    let mut sub_node = renamed(&sub, b"sub");
    sub_node.subtree = Some(hostile_sub_id);
    let hostile_root = sorted(vec![
        dir_named(b".."),
        dir_named(b"."),
        dir_named(b""),
        renamed(&payload, b"../escaped_file.txt"),
        renamed(&payload, b"a/../../b.txt"),
        renamed(&payload, b"/etc/cairn-dump-test"),
        renamed(&payload, b"x/y.txt"),
        renamed(&payload, b"nul\0byte"),
        renamed(&payload, b"good.txt"),
        sub_node,
    ]);
    let [hostile_root_id] = store_trees(&lib, &[hostile_root])[..] else {
        unreachable!()
    };
    let hostile = lib
        .save_snapshot(&Snapshot {
            tree: hostile_root_id,
            ..snap
        })
        .unwrap()
        .to_hex();

    let tar_path = base.path().join("dump.tar");
    let tar_file = std::fs::File::create(&tar_path).unwrap();
    let out = std::process::Command::new(cairn_bin())
        .args(["-r"])
        .arg(&repo.path)
        .args(["dump", &hostile, "/"])
        .env("CAIRN_PASSWORD", PASSWORD)
        .env_remove("CAIRN_REPOSITORY")
        .stdout(tar_file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "refused members make the dump fail after writing the archive:\n{stderr}"
    );
    for refused in [
        "\"..\"",
        "\".\"",
        "\"\"",
        "../escaped_file.txt",
        "a/../../b.txt",
        "nul\\0byte",
        "../../escaped_from_sub.txt",
    ] {
        assert!(
            stderr.contains(&format!("refusing unsafe name {refused}")) || stderr.contains(refused),
            "{refused} not reported:\n{stderr}"
        );
    }
    assert!(
        stderr.contains("etc/cairn-dump-test: written under this name"),
        "{stderr}"
    );
    assert!(
        stderr.contains("sub/abs_in_sub.txt: written under this name"),
        "{stderr}"
    );
    assert!(
        stderr.contains("7 unsafe member names left out"),
        "{stderr}"
    );

    let members = tar_members(&std::fs::read(&tar_path).unwrap());
    let names: Vec<&str> = members.iter().map(|(n, _, _)| n.as_str()).collect();
    for n in &names {
        assert!(!n.starts_with('/'), "absolute member {n:?}");
        assert!(
            !n.split('/').any(|c| c == ".." || c == "."),
            "member {n:?} can leave its directory"
        );
        assert!(!n.contains('\0'), "member {n:?} holds a NUL");
    }
    let mut sorted_names = names.clone();
    sorted_names.sort();
    assert_eq!(
        sorted_names,
        [
            "etc/cairn-dump-test",
            "good.txt",
            "sub/",
            "sub/abs_in_sub.txt",
            "sub/inner_good.txt",
            "x/y.txt"
        ]
    );
    let good = members.iter().find(|(n, _, _)| n == "good.txt").unwrap();
    assert_eq!(
        (good.1, &good.2[..]),
        (b'0', &b"attacker-controlled content\n"[..])
    );
}
