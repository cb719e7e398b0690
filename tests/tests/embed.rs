//! The engine embedded in an async host, as the DaemonSet agent embeds it: a tokio program
//! opens repositories and runs backup, restore and check from its tasks, against Azurite and
//! a local directory. Nothing may panic (no runtime blocked on or dropped inside another),
//! and the host's runtime keeps running its other tasks while an operation runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use cairn_e2e::azurite::Azurite;
use cairn_e2e::*;
use cairn_engine::backup::{self, BackupOptions, Progress};
use cairn_engine::check::{self, CheckOptions, Subset};
use cairn_engine::location::Transfer;
use cairn_engine::restore::{self, RestoreOptions, RestoreProgress};
use cairn_engine::{Context, PasswordSource, RepoSettings, blocking};
use cairn_repo_format::config::Config;
use cairn_repo_format::key::KdfParams;
use cairn_repo_format::{Backend, Opened, Repository};

const CHEAP: KdfParams = KdfParams {
    m_cost: 64,
    t_cost: 1,
    p_cost: 1,
};

fn source() -> tempfile::TempDir {
    let src = tempdir();
    write_random_file(&src.path().join("big.bin"), 3 << 20, 11);
    write_file(&src.path().join("dir/small.txt"), b"embedded");
    src
}

/// Backs `src` up, restores it and checks the repository, each operation on its own thread
/// awaited from this task, while a second task on the same runtime counts its turns. Returns
/// how many turns the other task had while the operations ran.
async fn round_trip(repo: Repository<Opened>, src: &std::path::Path) -> u64 {
    let done = Arc::new(AtomicBool::new(false));
    let turns = Arc::new(AtomicU64::new(0));
    let ticker = {
        let (done, turns) = (done.clone(), turns.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Acquire) {
                turns.fetch_add(1, Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        })
    };

    let opts = BackupOptions {
        paths: vec![src.to_path_buf()],
        hostname: "embedded".into(),
        ..Default::default()
    };
    let r = repo.clone();
    let done_backup = blocking::run("backup", move || {
        backup::run(&r, &opts, &Progress::default(), &Context::default())
    })
    .await
    .expect("no panic")
    .expect("backup");

    let target = tempdir();
    let (r, t) = (repo.clone(), target.path().to_path_buf());
    let snap = done_backup.snapshot.clone();
    blocking::run("restore", move || {
        let r = r.load_index()?;
        let o = RestoreOptions {
            target: t,
            subpath: None,
            include: Default::default(),
            exclude: Default::default(),
            verify: true,
            devices: true,
        };
        restore::run(
            &r,
            &snap,
            &o,
            &RestoreProgress::default(),
            &Context::default(),
        )
        .map_err(|e| cairn_repo_format::RepoError::Corrupt {
            object: "restore".into(),
            reason: e.to_string(),
        })
    })
    .await
    .expect("no panic")
    .expect("restore");
    assert_eq!(read_tree_files(src), read_tree_files(target.path()));

    let r = repo.clone();
    let summary = blocking::run("check", move || {
        let o = CheckOptions {
            read_data: Some(Subset::All),
            threads: 0,
        };
        check::run(r, &o, &Context::default())
    })
    .await
    .expect("no panic")
    .expect("check");
    assert_eq!(summary.errors, 0);
    done.store(true, Ordering::Release);
    ticker.await.expect("ticker");
    // The repository (and its backend) is dropped here, on the runtime's thread.
    drop(repo);
    turns.load(Ordering::Relaxed)
}

#[tokio::test]
async fn a_tokio_task_runs_backup_restore_and_check_on_azurite() {
    let az = Azurite::start();
    // Every call below that is not wrapped runs straight on the runtime's only thread.
    let b = az.backend("embedded", "cluster-a");
    assert_eq!(b.create_container().unwrap(), Some(true));
    let backend: Arc<dyn Backend> = Arc::new(b);
    let config = Config::new((64 << 10, 256 << 10, 1 << 20), 3, 4 << 20);
    Repository::init(backend.clone(), b"pw", config, CHEAP).unwrap();
    let repo = Repository::open(backend, b"pw").unwrap();
    let src = source();
    let turns = round_trip(repo, src.path()).await;
    assert!(
        turns > 0,
        "the runtime's only thread was held while the operations ran"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tokio_task_opens_a_local_repository_through_settings_and_runs_everything() {
    let base = tempdir();
    let dir = base.path().join("repo");
    let backend: Arc<dyn Backend> =
        Arc::new(cairn_repo_format::backend::LocalBackend::new(&dir, true).unwrap());
    let config = Config::new((64 << 10, 256 << 10, 1 << 20), 3, 4 << 20);
    Repository::init(backend, b"pw", config, CHEAP).unwrap();
    let settings = RepoSettings::new(
        dir.to_str().unwrap(),
        Transfer::default(),
        PasswordSource::Bytes(b"pw".to_vec()),
    )
    .unwrap();
    let repo = settings.open().unwrap();
    let src = source();
    let turns = round_trip(repo, src.path()).await;
    assert!(turns > 0);
}
