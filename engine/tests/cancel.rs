//! Cancellation and lock lifetime, in-process: a host cancels a backup, a restore, a check or
//! a prune mid-way through its [`Cancel`] handle. Each stops, returns `Cancelled`, leaves no
//! lock and a repository that checks clean, and the next run finishes the job (reusing what
//! the cancelled backup stored). A backup's lock lasts as long as the backup, not as long as
//! the opened repository.

mod common;
use common::CHEAP;
use common::{Trip, Tripwire, random_bytes};

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use cairn_engine::backup::{self, BackupError, BackupOptions, Progress};
use cairn_engine::check::{self, CheckError, CheckOptions, Subset};
use cairn_engine::prune::{self, PruneError, PruneOptions};
use cairn_engine::restore::{self, RestoreError, RestoreOptions, RestoreProgress, RestoreTuning};
use cairn_engine::{Cancel, Context, Events};
use cairn_repo_format::backend::LocalBackend;
use cairn_repo_format::config::Config;
use cairn_repo_format::{Backend, Opened, Repository};

const FILES: u64 = 40;
const FILE_SIZE: usize = 200 << 10;

/// A local repository with small chunks and 256 KiB packs, so a small source makes many packs.
fn local_repository(dir: &Path) -> Arc<dyn Backend> {
    let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(dir, true).unwrap());
    let config = Config::new((4096, 16384, 65536), 3, 256 << 10);
    Repository::init(backend.clone(), b"pw", config, CHEAP).unwrap();
    backend
}

fn source(dir: &Path) {
    for i in 0..FILES {
        let path = dir.join(format!("d{}/f{i}", i % 4));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, random_bytes(i + 1, FILE_SIZE)).unwrap();
    }
}

fn open(backend: Arc<dyn Backend>) -> Repository<Opened> {
    Repository::open(backend, b"pw").unwrap()
}

/// The backend behind a tripwire that cancels `cancel` at the `n`-th request of `on`.
fn tripped(backend: &Arc<dyn Backend>, on: Trip, n: usize, cancel: &Cancel) -> Arc<dyn Backend> {
    Arc::new(Tripwire {
        inner: backend.clone(),
        on,
        left: AtomicUsize::new(n),
        cancel: cancel.clone(),
    })
}

fn cancellable(cancel: &Cancel) -> Context {
    Context {
        events: Events::discard(),
        cancel: cancel.clone(),
    }
}

fn backup_opts(src: &Path) -> BackupOptions {
    BackupOptions {
        paths: vec![src.to_path_buf()],
        hostname: "h".into(),
        workers: 2,
        ..Default::default()
    }
}

/// A backup of `src` that runs to its end.
fn backup_once(backend: &Arc<dyn Backend>, src: &Path) -> backup::BackupOutcome {
    backup::run(
        &open(backend.clone()),
        &backup_opts(src),
        &Progress::default(),
        &Context::default(),
    )
    .unwrap()
}

/// `check --read-data` finds no error, and no lock is left.
fn assert_clean(backend: &Arc<dyn Backend>) {
    let repo = open(backend.clone());
    assert!(repo.locks().unwrap().is_empty(), "a lock was left behind");
    let errors = common::read_data_errors(repo);
    assert!(errors.is_empty(), "{errors:?}");
}

#[test]
fn a_cancelled_backup_writes_no_snapshot_and_the_next_one_reuses_what_it_stored() {
    let base = tempfile::tempdir().unwrap();
    let src = base.path().join("src");
    source(&src);
    let backend = local_repository(&base.path().join("repo"));
    let cancel = Cancel::new();
    let repo = open(tripped(&backend, Trip::PackPut, 3, &cancel));
    match backup::run(
        &repo,
        &backup_opts(&src),
        &Progress::default(),
        &cancellable(&cancel),
    ) {
        Err(BackupError::Cancelled) => {}
        Err(e) => panic!("expected a cancel, got {e}"),
        Ok(_) => panic!("the backup ran to the end although it was cancelled"),
    }
    assert!(repo.snapshot_ids().unwrap().is_empty(), "no snapshot");
    assert_clean(&backend);

    let done = backup_once(&backend, &src);
    let total = FILES * FILE_SIZE as u64;
    let reused = total - done.snapshot.summary.data_added;
    // At least the three packs stored before the cancel took effect (256 KiB each, less the
    // pack that was being filled when it came).
    assert!(
        reused >= 2 * (200 << 10),
        "the second backup added {} of {total} bytes: it reused only {reused}",
        done.snapshot.summary.data_added
    );
    assert_clean(&backend);
}

#[test]
fn a_backup_cancelled_as_it_starts_stops_before_reading_anything() {
    let base = tempfile::tempdir().unwrap();
    let src = base.path().join("src");
    source(&src);
    let backend = local_repository(&base.path().join("repo"));
    let cancel = Cancel::new();
    // The cancel comes with the backup's lock, before its pipeline starts.
    let repo = open(tripped(&backend, Trip::LockPut, 1, &cancel));
    let progress = Progress::default();
    let result = backup::run(&repo, &backup_opts(&src), &progress, &cancellable(&cancel));
    assert!(
        matches!(result, Err(BackupError::Cancelled)),
        "expected a cancel"
    );
    assert_eq!(
        progress
            .bytes_read
            .load(std::sync::atomic::Ordering::Relaxed),
        0,
        "nothing is read after the cancel"
    );
    assert!(repo.snapshot_ids().unwrap().is_empty());
    assert_clean(&backend);
}

#[test]
fn a_backup_holds_its_lock_only_while_it_runs() {
    let base = tempfile::tempdir().unwrap();
    let src = base.path().join("src");
    source(&src);
    let backend = local_repository(&base.path().join("repo"));
    // One repository opened once, as a long-running host keeps it.
    let repo = open(backend.clone());
    for round in 0..2 {
        backup::run(
            &repo,
            &backup_opts(&src),
            &Progress::default(),
            &Context::default(),
        )
        .unwrap();
        assert!(
            repo.locks().unwrap().is_empty(),
            "round {round}: a lock outlived its backup while the repository stays open"
        );
    }
    assert_eq!(repo.snapshot_ids().unwrap().len(), 2);
}

fn restore_opts(target: &Path) -> RestoreOptions {
    RestoreOptions {
        target: target.to_path_buf(),
        subpath: None,
        include: Default::default(),
        exclude: Default::default(),
        verify: false,
        devices: true,
    }
}

#[test]
fn a_cancelled_restore_stops_and_a_second_restore_into_the_same_target_completes_it() {
    let base = tempfile::tempdir().unwrap();
    let src = base.path().join("src");
    source(&src);
    let backend = local_repository(&base.path().join("repo"));
    let done = backup_once(&backend, &src);
    let target = base.path().join("target");
    let cancel = Cancel::new();
    let repo = open(tripped(&backend, Trip::PackGet, 3, &cancel))
        .load_index()
        .unwrap();
    let tuning = RestoreTuning {
        connections: 1,
        unseal_threads: 1,
        ..Default::default()
    };
    let result = restore::run_with(
        &repo,
        &done.snapshot,
        &restore_opts(&target),
        &tuning,
        &RestoreProgress::default(),
        &cancellable(&cancel),
    );
    assert!(
        matches!(result, Err(RestoreError::Cancelled)),
        "expected a cancel, got {result:?}"
    );
    // Stopped part-way: some file is missing or not yet whole.
    let whole = (0..FILES)
        .filter(|i| {
            std::fs::read(target.join(format!("d{}/f{i}", i % 4))).ok()
                == Some(random_bytes(i + 1, FILE_SIZE))
        })
        .count();
    assert!(
        whole < FILES as usize,
        "every file was restored although cancelled"
    );

    let repo = open(backend.clone()).load_index().unwrap();
    restore::run(
        &repo,
        &done.snapshot,
        &restore_opts(&target),
        &RestoreProgress::default(),
        &Context::default(),
    )
    .unwrap();
    for i in 0..FILES {
        assert_eq!(
            std::fs::read(target.join(format!("d{}/f{i}", i % 4))).unwrap(),
            random_bytes(i + 1, FILE_SIZE),
            "f{i}"
        );
    }
}

#[test]
fn a_cancelled_check_stops_with_cancelled() {
    let base = tempfile::tempdir().unwrap();
    let src = base.path().join("src");
    source(&src);
    let backend = local_repository(&base.path().join("repo"));
    backup_once(&backend, &src);
    let cancel = Cancel::new();
    let opts = CheckOptions {
        read_data: Some(Subset::All),
        threads: 1,
    };
    let repo = open(tripped(&backend, Trip::PackGet, 2, &cancel));
    let result = check::run(repo, &opts, &cancellable(&cancel));
    assert!(matches!(result, Err(CheckError::Cancelled)), "{result:?}");
}

#[test]
fn a_prune_cancelled_while_repacking_leaves_a_valid_repository_that_the_next_prune_finishes() {
    let base = tempfile::tempdir().unwrap();
    let src = base.path().join("src");
    source(&src);
    let backend = local_repository(&base.path().join("repo"));
    let first = backup_once(&backend, &src);
    // Half the files change: the first snapshot alone holds their old contents.
    for i in (0..FILES).step_by(2) {
        std::fs::write(
            src.join(format!("d{}/f{i}", i % 4)),
            random_bytes(1000 + i, FILE_SIZE),
        )
        .unwrap();
    }
    let second = backup_once(&backend, &src);
    let repo = open(backend.clone());
    cairn_engine::forget::remove(&repo, &first.id).unwrap();

    let cancel = Cancel::new();
    let opts = PruneOptions {
        max_unused: 0.0,
        ..Default::default()
    };
    let result = prune::run(
        open(tripped(&backend, Trip::PackPut, 1, &cancel)),
        &opts,
        &cancellable(&cancel),
    );
    assert!(matches!(result, Err(PruneError::Cancelled)), "{result:?}");
    assert_clean(&backend);

    let stats = prune::run(open(backend.clone()), &opts, &Context::default()).unwrap();
    assert!(stats.packs_deleted > 0, "{stats:?}");
    assert_clean(&backend);
    let target = base.path().join("target");
    restore::run(
        &open(backend.clone()).load_index().unwrap(),
        &second.snapshot,
        &restore_opts(&target),
        &RestoreProgress::default(),
        &Context::default(),
    )
    .unwrap();
    for i in 0..FILES {
        let seed = if i % 2 == 0 { 1000 + i } else { i + 1 };
        assert_eq!(
            std::fs::read(target.join(format!("d{}/f{i}", i % 4))).unwrap(),
            random_bytes(seed, FILE_SIZE),
            "f{i}"
        );
    }
}
