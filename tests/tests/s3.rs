//! S3 as a repository, against an S3-compatible server (moto): the backend conformance suite
//! (create-only puts and multipart uploads included), and the `cairn` round trip configured
//! with the `AWS_*` variables an S3 user sets.

use cairn_e2e::moto::Moto;
use cairn_e2e::*;
use cairn_repo_format::backend::Multipart;

#[test]
fn s3_backend_conforms() {
    let moto = Moto::start();
    moto.create_bucket("conformance");
    // Parts of S3's minimum size, so that the suite's large pack is a real multipart upload.
    let b = moto.backend(
        "conformance",
        "some/prefix",
        Multipart {
            threshold: 6 << 20,
            part_size: 5 << 20,
            concurrency: 2,
        },
    );
    cairn_repo_format::backend::conformance::run_all(&b);
}

fn cairn(moto: &Moto, args: &[&str]) -> Output {
    run_cairn_with_env(args, Some(PASSWORD), RunAs::Me, &moto.env())
}

#[test]
fn cairn_round_trip_on_s3_restores_byte_identical_and_names_a_missing_bucket() {
    let moto = Moto::start();
    moto.create_bucket("backups");
    let base = tempdir();
    let src = base.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    write_random_file(&src.join("big.bin"), 3 << 20, 11);
    write_file(&src.join("dir/small.txt"), b"hello s3");
    write_file(
        &src.join("dir/copy.bin"),
        &std::fs::read(src.join("big.bin")).unwrap(),
    );
    let repo = "s3://backups/cluster-a";
    let init = cairn(&moto, &["-r", repo, "init", "--kdf-memory", "64"]);
    assert_eq!(init.code, 0, "{}", init.stderr);
    let again = cairn(&moto, &["-r", repo, "init", "--kdf-memory", "64"]);
    assert_ne!(again.code, 0, "init over an existing repository is refused");
    assert!(again.stderr.contains("already exists"), "{}", again.stderr);

    for _ in 0..2 {
        let b = cairn(
            &moto,
            &[
                "-r",
                repo,
                "--json",
                "--connections",
                "3",
                "backup",
                src.to_str().unwrap(),
            ],
        );
        assert_eq!(b.code, 0, "{}", b.stderr);
    }
    let target = base.path().join("restored");
    assert_restores_latest(|a| cairn(&moto, a), repo, &target, &["--verify"], &src);
    let check = cairn(&moto, &["-r", repo, "check", "--read-data"]);
    assert_eq!(check.code, 0, "{}{}", check.stdout, check.stderr);
    let snaps = cairn(&moto, &["-r", repo, "--json", "snapshots"]);
    let list: serde_json::Value = serde_json::from_str(&snaps.stdout).unwrap();
    assert_eq!(list.as_array().map(Vec::len), Some(2), "{}", snaps.stdout);

    for cmd in ["snapshots", "init"] {
        let missing = cairn(&moto, &["-r", "s3://no-such-bucket/x", cmd]);
        assert_eq!(missing.code, 1, "{cmd}: {}", missing.stderr);
        assert!(
            missing
                .stderr
                .contains("bucket \"no-such-bucket\" does not exist")
                && missing.stderr.contains("aws s3 mb s3://no-such-bucket"),
            "{cmd}: the error names the bucket and how to create it: {}",
            missing.stderr
        );
    }
}
