//! Azure Blob as a repository, against a real Azure Blob API (Azurite): the backend
//! conformance suite, and the `cairn` round trip with the environment a user would set.

use cairn_e2e::azurite::Azurite;
use cairn_e2e::*;
use cairn_repo_format::Backend;

#[test]
fn azure_backend_conforms() {
    let az = Azurite::start();
    // Small parts, so that the suite's large pack goes up as an Azure block list.
    let b = az
        .backend("conformance", "some/prefix")
        .with_multipart(SMALL_PARTS);
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

const SMALL_PARTS: cairn_repo_format::backend::Multipart = cairn_repo_format::backend::Multipart {
    threshold: 6 << 20,
    part_size: 5 << 20,
    concurrency: 2,
};

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
    assert_restores_latest(|a| cairn(&az, a), repo, &target, &["--verify"], &src);

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

/// Starts `cairn ARGS…` against Azurite without waiting for it.
fn spawn_cairn(az: &Azurite, args: &[&str]) -> std::process::Child {
    std::process::Command::new(cairn_bin())
        .args(args)
        .envs(az.env())
        .env("CAIRN_PASSWORD", PASSWORD)
        .env_remove("CAIRN_REPOSITORY")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn cairn")
}

#[test]
fn eight_concurrent_backups_into_one_azure_repository_lose_nothing_and_share_data() {
    let az = Azurite::start();
    let base = tempdir();
    let repo = "azure://many/writers";
    let init = cairn(
        &az,
        &[
            "-r",
            repo,
            "init",
            "--kdf-memory",
            "64",
            "--chunk-sizes",
            SMALL_CHUNKS,
        ],
    );
    assert_eq!(init.code, 0, "{}", init.stderr);
    let mut rng = Rng::new(77);
    let shared = rng.bytes(2 << 20);
    let sources: Vec<_> = (0..8)
        .map(|i| {
            let src = base.path().join(format!("node-{i}"));
            write_file(&src.join("shared.bin"), &shared);
            write_file(&src.join("own.bin"), &rng.bytes(600_000));
            write_file(
                &src.join(format!("dir{i}/note.txt")),
                format!("node {i}").as_bytes(),
            );
            src
        })
        .collect();
    let children: Vec<_> = sources
        .iter()
        .enumerate()
        .map(|(i, src)| {
            let host = format!("node-{i}");
            spawn_cairn(
                &az,
                &[
                    "-r",
                    repo,
                    "--json",
                    "backup",
                    "--host",
                    &host,
                    src.to_str().unwrap(),
                ],
            )
        })
        .collect();
    for (i, c) in children.into_iter().enumerate() {
        let out = c.wait_with_output().expect("backup");
        assert!(
            out.status.success(),
            "backup {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let check = cairn(&az, &["-r", repo, "check", "--read-data", "--json"]);
    assert_eq!(check.code, 0, "{}\n{}", check.stdout, check.stderr);
    for (i, src) in sources.iter().enumerate() {
        let target = base.path().join(format!("restore-{i}"));
        let host = format!("node-{i}");
        let out = cairn(
            &az,
            &[
                "-r",
                repo,
                "restore",
                "latest",
                "--host",
                &host,
                "--target",
                target.to_str().unwrap(),
            ],
        );
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert!(
            read_tree_files(src) == read_tree_files(&target),
            "node {i} restores byte-identical"
        );
    }
    let stats = cairn(&az, &["-r", repo, "stats", "--json"]);
    assert_eq!(stats.code, 0, "{}", stats.stderr);
    let s: serde_json::Value = serde_json::from_str(stats.stdout.trim()).unwrap();
    assert_eq!(s["snapshots"], 8);
    let unique = (2 << 20) + 8 * 600_000;
    let raw = s["raw_data"].as_u64().unwrap();
    // The shared 2 MiB is stored once (a few trees and small notes on top), not 8 times.
    assert!(
        raw < unique + 200_000,
        "shared content indexed once: {raw} bytes of blobs for {unique} unique bytes"
    );
    // Backups that ran at the same time may each have uploaded the shared data; prune keeps
    // one copy.
    let prune = cairn(&az, &["-r", repo, "prune", "--max-unused", "0%"]);
    assert_eq!(prune.code, 0, "{}", prune.stderr);
    let check = cairn(&az, &["-r", repo, "check", "--read-data"]);
    assert_eq!(
        check.code, 0,
        "{}
{}",
        check.stdout, check.stderr
    );
    let store = az.backend("many", "writers");
    let mut stored = 0;
    cairn_repo_format::Backend::list(&store, "data/", &mut |o| stored += o.size).unwrap();
    assert!(
        stored < unique + 300_000,
        "shared content stored once after prune: {stored} bytes in packs for {unique} unique bytes"
    );
    let target = base.path().join("after-prune");
    let out = cairn(
        &az,
        &[
            "-r",
            repo,
            "restore",
            "latest",
            "--host",
            "node-3",
            "--target",
            target.to_str().unwrap(),
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(read_tree_files(&sources[3]) == read_tree_files(&target));
}

#[test]
fn backup_restore_and_check_get_through_a_faulty_network() {
    use cairn_e2e::faultproxy::FaultProxy;
    let az = Azurite::start();
    let base = tempdir();
    let src = base.path().join("src");
    let mut rng = Rng::new(5);
    for i in 0..6 {
        write_file(&src.join(format!("f{i}.bin")), &rng.bytes(700_000));
    }
    write_file(&src.join("small.txt"), b"through the storm");
    let mut completed = 0;
    for seed in 0..3u64 {
        let repo = format!("azure://faults{seed}/r");
        let init = cairn(
            &az,
            &[
                "-r",
                &repo,
                "init",
                "--kdf-memory",
                "64",
                "--chunk-sizes",
                SMALL_CHUNKS,
                "--pack-size",
                "1",
            ],
        );
        assert_eq!(init.code, 0, "{}", init.stderr);
        let upstream = format!("127.0.0.1:{}", az.port).parse().unwrap();
        let proxy = FaultProxy::start(upstream, seed, 25);
        let env = vec![
            ("AZURE_STORAGE_USE_EMULATOR".to_string(), "true".to_string()),
            ("AZURITE_BLOB_STORAGE_URL".to_string(), proxy.url()),
        ];
        let faulty = |args: &[&str]| run_cairn_with_env(args, Some(PASSWORD), RunAs::Me, &env);

        let backup = faulty(&["-r", &repo, "backup", src.to_str().unwrap()]);
        assert!(!backup.stderr.contains("panicked"), "{}", backup.stderr);
        if backup.code != 0 {
            // Failing is allowed only cleanly, with a repository that still checks.
            assert!(
                backup.stderr.contains("transient"),
                "seed {seed}: {}",
                backup.stderr
            );
            let check = cairn(&az, &["-r", &repo, "check"]);
            assert_eq!(
                check.code, 0,
                "seed {seed}: check after a failed backup: {}\n{}",
                check.stdout, check.stderr
            );
            continue;
        }
        let target = base.path().join(format!("restore-{seed}"));
        let restore = faulty(&[
            "-r",
            &repo,
            "restore",
            "latest",
            "--target",
            target.to_str().unwrap(),
        ]);
        assert_eq!(
            restore.code, 0,
            "seed {seed}: restore: {}\n{}",
            restore.stdout, restore.stderr
        );
        assert!(
            read_tree_files(&src) == read_tree_files(&target),
            "seed {seed}"
        );
        let check = faulty(&["-r", &repo, "check", "--read-data"]);
        assert_eq!(
            check.code, 0,
            "seed {seed}: check --read-data: {}\n{}",
            check.stdout, check.stderr
        );
        assert!(
            proxy.faults() > 0,
            "seed {seed}: the proxy injected faults: {:?}",
            proxy.counts
        );
        eprintln!("seed {seed}: completed through {:?}", proxy.counts);
        completed += 1;
    }
    assert!(completed > 0, "retries carry at least one seed through");
}

#[test]
fn large_packs_go_up_in_blocks_on_parallel_connections_and_restore_byte_identical() {
    let az = Azurite::start();
    let base = tempdir();
    let src = base.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..3 {
        write_random_file(&src.join(format!("part{i}.bin")), 30 << 20, 40 + i);
    }
    let repo = "azure://large/packs";
    let init = cairn(
        &az,
        &[
            "-r",
            repo,
            "init",
            "--kdf-memory",
            "64",
            "--pack-size",
            "40",
            "--compression",
            "0",
        ],
    );
    assert_eq!(init.code, 0, "{}", init.stderr);
    let backup = cairn(
        &az,
        &[
            "-r",
            repo,
            "--json",
            "--connections",
            "4",
            "backup",
            src.to_str().unwrap(),
        ],
    );
    assert_eq!(backup.code, 0, "{}", backup.stderr);
    // 90 MiB in packs of at least 40 MiB: above the 32 MiB multipart threshold.
    let mut sizes = Vec::new();
    az.backend("large", "packs")
        .list("data/", &mut |o| sizes.push(o.size))
        .unwrap();
    assert!(
        sizes.iter().filter(|&&s| s >= 40 << 20).count() >= 2,
        "{sizes:?}"
    );
    let target = base.path().join("restored");
    assert_restores_latest(|a| cairn(&az, a), repo, &target, &[], &src);
    let check = cairn(&az, &["-r", repo, "check", "--read-data"]);
    assert_eq!(check.code, 0, "{}{}", check.stdout, check.stderr);
}
