//! A volume's identity, recorded by hand (`cairn backup --host H --as-path P DIR`) as the agent
//! records it: when the directory moves (a pod rescheduled, a new pod UID), the next backup
//! with the same identity finds its parent and reads no unchanged file.

use cairn_e2e::*;

#[test]
fn a_moved_directory_with_the_same_identity_backs_up_incrementally() {
    let base = tempdir();
    let repo = Repo::init(&base.path().join("repo"), &[]);
    let old = base
        .path()
        .join("pods/uid-1/volumes/kubernetes.io~csi/pv-1/mount");
    for i in 0..20 {
        let path = old.join(format!("d{}/f{i}", i % 3));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        write_random_file(&path, 50_000, i);
    }
    let identity = [
        "--host",
        "cluster-a",
        "--as-path",
        "/db/data-postgresql-0",
        "--label",
        "namespace=db",
        "--label",
        "pvc=data-postgresql-0",
    ];
    let first = repo.backup(&[&old], &identity);
    assert_eq!(counter(&first, "files_new"), 20, "{first}");

    // The pod comes back on another node with a new UID: the same files, somewhere else.
    let new = base
        .path()
        .join("pods/uid-2/volumes/kubernetes.io~csi/pv-1/mount");
    std::fs::create_dir_all(new.parent().unwrap()).unwrap();
    std::fs::rename(&old, &new).unwrap();
    let second = repo.backup(&[&new], &identity);
    assert_eq!(counter(&second, "files_new"), 0, "{second}");
    assert_eq!(counter(&second, "files_changed"), 0, "{second}");
    assert_eq!(counter(&second, "files_unmodified"), 20, "{second}");

    let snaps = repo.snapshots();
    assert_eq!(snaps.len(), 2);
    for s in &snaps {
        assert_eq!(s["hostname"], "cluster-a", "{s}");
        assert_eq!(s["paths"][0], "/db/data-postgresql-0", "{s}");
    }
    // The snapshot restores the volume's contents, wherever it was read from.
    let target = base.path().join("target");
    repo.restore("latest", &target, &[]).success();
    assert_eq!(read_tree_files(&new), read_tree_files(&target));

    // More than one directory, or a file, cannot take one recorded path.
    let file = base.path().join("file");
    write_file(&file, b"x");
    repo.backup_raw(&[&file], &["--as-path", "/db/x"])
        .expect_code(1)
        .stderr_has("/db/x");
    repo.backup_raw(&[&new, &base.path().join("pods")], &["--as-path", "/db/x"])
        .expect_code(1)
        .stderr_has("exactly one directory");
}
