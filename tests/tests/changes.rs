//! Change detection between backups: a modified file is counted as changed and its new content
//! is what the new snapshot restores (the old snapshot still restores the old content); a new
//! file is counted as new; a file whose mtime alone changed is re-read but stores nothing new.

use std::path::Path;

use cairn_e2e::*;
use filetime::FileTime;

fn make_source(src: &Path) -> u64 {
    let mut rng = Rng::new(11);
    write_file(&src.join("keep1.bin"), &rng.bytes(200_000));
    write_file(&src.join("keep2.txt"), b"unchanged\n");
    write_file(&src.join("dir/keep3.bin"), &rng.bytes(90_000));
    write_file(&src.join("dir/victim.bin"), &rng.bytes(150_000));
    4
}

#[test]
fn modified_file_is_counted_as_changed_and_restored_with_new_content() {
    let base = tempdir();
    let src = base.path().join("src");
    let n = make_source(&src);
    let repo = Repo::init_small_chunks(&base.path().join("repo"));
    let first = repo.backup(&[&src], &[]);
    let first_id = first["snapshot_id"].as_str().unwrap().to_string();
    let victim = src.join("dir/victim.bin");
    let old = std::fs::read(&victim).unwrap();

    let mut new = old.clone();
    Rng::new(99).fill(&mut new[70_000..80_000]);
    std::fs::write(&victim, &new).unwrap();
    filetime::set_file_mtime(
        &victim,
        FileTime::from_unix_time(1_700_000_000, 123_456_789),
    )
    .unwrap();

    let second = repo.backup(&[&src], &[]);
    assert_eq!(counter(&second, "files_changed"), 1, "{second}");
    assert_eq!(counter(&second, "files_unmodified"), n - 1, "{second}");
    assert_eq!(counter(&second, "files_new"), 0, "{second}");
    assert!(counter(&second, "data_blobs") >= 1, "{second}");
    assert_eq!(
        counter(&second, "bytes_read"),
        new.len() as u64,
        "only the changed file is read: {second}"
    );

    let target = base.path().join("new");
    repo.restore("latest", &target, &[]).success();
    assert_eq!(std::fs::read(target.join("dir/victim.bin")).unwrap(), new);
    assert_eq!(read_tree_files(&target), read_tree_files(&src));

    let target = base.path().join("old");
    repo.restore(&first_id, &target, &[]).success();
    assert_eq!(
        std::fs::read(target.join("dir/victim.bin")).unwrap(),
        old,
        "the first snapshot still restores the old content"
    );
}

#[test]
fn new_file_is_counted_as_new() {
    let base = tempdir();
    let src = base.path().join("src");
    let n = make_source(&src);
    let repo = Repo::init_small_chunks(&base.path().join("repo"));
    repo.backup(&[&src], &[]);

    write_file(&src.join("dir/added.bin"), &Rng::new(5).bytes(80_000));
    let second = repo.backup(&[&src], &[]);
    assert_eq!(counter(&second, "files_new"), 1, "{second}");
    assert_eq!(counter(&second, "files_changed"), 0, "{second}");
    assert_eq!(counter(&second, "files_unmodified"), n, "{second}");
    assert!(counter(&second, "data_blobs") >= 1, "{second}");

    let target = base.path().join("out");
    repo.restore("latest", &target, &[]).success();
    assert_eq!(read_tree_files(&target), read_tree_files(&src));
}

#[test]
fn file_with_only_a_new_mtime_is_reread_but_stores_no_data() {
    let base = tempdir();
    let src = base.path().join("src");
    let n = make_source(&src);
    let repo = Repo::init_small_chunks(&base.path().join("repo"));
    repo.backup(&[&src], &[]);

    filetime::set_file_mtime(
        src.join("keep1.bin"),
        FileTime::from_unix_time(1_500_000_000, 1),
    )
    .unwrap();
    let second = repo.backup(&[&src], &[]);
    assert_eq!(counter(&second, "files_changed"), 1, "{second}");
    assert_eq!(counter(&second, "files_unmodified"), n - 1, "{second}");
    assert_eq!(counter(&second, "data_blobs"), 0, "{second}");

    let target = base.path().join("out");
    repo.restore("latest", &target, &[]).success();
    let m = manifest(&target);
    assert_eq!(m[&b"keep1.bin"[..]].mtime, (1_500_000_000, 1));
}

#[test]
fn content_change_with_restored_mtime_is_caught_by_ctime() {
    let base = tempdir();
    let src = base.path().join("src");
    let n = make_source(&src);
    let repo = Repo::init_small_chunks(&base.path().join("repo"));
    repo.backup(&[&src], &[]);

    // Same size, same mtime (as `touch -r` or a careless tool leaves it): only ctime moves.
    let victim = src.join("keep1.bin");
    let md = std::fs::metadata(&victim).unwrap();
    let mut data = std::fs::read(&victim).unwrap();
    data[1000] ^= 0xff;
    std::fs::write(&victim, &data).unwrap();
    filetime::set_file_times(
        &victim,
        FileTime::from_last_access_time(&md),
        FileTime::from_last_modification_time(&md),
    )
    .unwrap();

    let second = repo.backup(&[&src], &[]);
    assert_eq!(counter(&second, "files_changed"), 1, "{second}");
    assert_eq!(counter(&second, "files_unmodified"), n - 1, "{second}");
    let target = base.path().join("out");
    repo.restore("latest", &target, &[]).success();
    assert_eq!(std::fs::read(target.join("keep1.bin")).unwrap(), data);
}

#[test]
fn xattrs_follow_the_file_whether_it_is_read_again_or_not() {
    let base = xattr_capable_tempdir();
    let src = base.path().join("src");
    let n = make_source(&src);
    let (a, b) = (src.join("keep1.bin"), src.join("dir/keep3.bin"));
    xattr::set(&a, "user.color", b"red").unwrap();
    let repo = Repo::init_small_chunks(&base.path().join("repo"));
    repo.backup(&[&src], &[]);
    // Nothing changed: every file's xattrs come from the parent snapshot.
    let second = repo.backup(&[&src], &[]);
    assert_eq!(counter(&second, "files_unmodified"), n, "{second}");
    let second_id = second["snapshot_id"].as_str().unwrap().to_string();
    // An xattr set changes the ctime: that file is read again, with its xattrs.
    xattr::set(&b, "user.shape", b"round").unwrap();
    let third = repo.backup(&[&src], &[]);
    assert_eq!(counter(&third, "files_changed"), 1, "{third}");
    // Without the ctime to go by, an unchanged-looking file's xattrs are listed again.
    xattr::set(&a, "user.color", b"blue").unwrap();
    let fourth = repo.backup(&[&src], &["--ignore-ctime"]);
    assert_eq!(counter(&fourth, "files_unmodified"), n, "{fourth}");

    let get = |root: &Path, rel: &str, name: &str| xattr::get(root.join(rel), name).unwrap();
    let target = base.path().join("latest");
    repo.restore("latest", &target, &[]).success();
    assert_eq!(
        get(&target, "keep1.bin", "user.color").as_deref(),
        Some(&b"blue"[..])
    );
    assert_eq!(
        get(&target, "dir/keep3.bin", "user.shape").as_deref(),
        Some(&b"round"[..])
    );
    let target = base.path().join("second");
    repo.restore(&second_id, &target, &[]).success();
    assert_eq!(
        get(&target, "keep1.bin", "user.color").as_deref(),
        Some(&b"red"[..])
    );
    assert_eq!(get(&target, "dir/keep3.bin", "user.shape"), None);
}
