//! Azure Blob as a repository, against a real Azure Blob API (Azurite): the backend
//! conformance suite, and the `cairn` round trip with the environment a user would set.

use cairn_e2e::azurite::Azurite;
use cairn_e2e::*;

#[test]
fn azure_backend_conforms() {
    let az = Azurite::start();
    let b = az.backend("conformance", "some/prefix");
    assert_eq!(
        b.create_container().unwrap(),
        Some(true),
        "container created"
    );
    assert_eq!(
        b.create_container().unwrap(),
        Some(false),
        "second create finds it"
    );
    cairn_repo_format::backend::conformance::run_all(&b);
    let missing = az.backend("no-such-container", "");
    assert_eq!(missing.container_exists().unwrap(), Some(false));
}

fn cairn(az: &Azurite, args: &[&str]) -> Output {
    run_cairn_with_env(args, Some(PASSWORD), RunAs::Me, &az.env())
}

#[test]
fn cairn_round_trip_on_azure_creates_the_container_and_restores_byte_identical() {
    let az = Azurite::start();
    let base = tempdir();
    let src = base.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    write_random_file(&src.join("big.bin"), 3 << 20, 7);
    write_file(&src.join("dir/small.txt"), b"hello azure");
    write_file(
        &src.join("dir/copy.bin"),
        &std::fs::read(src.join("big.bin")).unwrap(),
    );
    let repo = "azure://backups/cluster-a";

    let init = cairn(&az, &["-r", repo, "init", "--kdf-memory", "64"]);
    assert_eq!(init.code, 0, "{}", init.stderr);
    assert!(
        init.stdout.contains("created Azure container \"backups\""),
        "{}",
        init.stdout
    );

    let again = cairn(&az, &["-r", repo, "init", "--kdf-memory", "64"]);
    assert_ne!(again.code, 0, "init over an existing repository is refused");
    assert!(again.stderr.contains("already exists"), "{}", again.stderr);

    let backup = cairn(
        &az,
        &["-r", repo, "--json", "backup", src.to_str().unwrap()],
    );
    assert_eq!(backup.code, 0, "{}", backup.stderr);
    let second = cairn(
        &az,
        &["-r", repo, "--json", "backup", src.to_str().unwrap()],
    );
    assert_eq!(
        counter(&summary_line(&second), "data_blobs"),
        0,
        "nothing new on Azure either"
    );

    let target = base.path().join("restored");
    let restore = cairn(
        &az,
        &[
            "-r",
            repo,
            "restore",
            "latest",
            "--target",
            target.to_str().unwrap(),
            "--verify",
        ],
    );
    assert_eq!(restore.code, 0, "{}", restore.stderr);
    assert_eq!(read_tree_files(&target), read_tree_files(&src));

    let wrong = run_cairn_with_env(
        &["-r", repo, "snapshots"],
        Some("wrong"),
        RunAs::Me,
        &az.env(),
    );
    assert_eq!(wrong.code, 12, "{}", wrong.stderr);
    let no_repo = cairn(&az, &["-r", "azure://backups/elsewhere", "snapshots"]);
    assert_eq!(no_repo.code, 10, "{}", no_repo.stderr);
    assert!(
        no_repo.stderr.contains("azure://backups/elsewhere"),
        "{}",
        no_repo.stderr
    );
}

#[test]
fn missing_container_is_named() {
    let az = Azurite::start();
    let out = cairn(&az, &["-r", "azure://not-created/x", "snapshots"]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("\"not-created\" does not exist"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("panicked"));
}
