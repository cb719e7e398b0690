//! The engine as a library: backup and restore called in-process (as the agent, the init
//! container and the server will call them) against memory and failing backends.

mod common;
use common::{opened, random_bytes, strict};

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use cairn_engine::backup::{self, BackupError, BackupOptions, Progress};
use cairn_engine::restore::{self, RestoreOptions, RestoreProgress};
use cairn_repo_format::backend::ObjectInfo;
use cairn_repo_format::config::Config;
use cairn_repo_format::key::KdfParams;
use cairn_repo_format::{Backend, BackendError, ObjectStoreBackend, Repository};

const CHEAP: KdfParams = KdfParams {
    m_cost: 64,
    t_cost: 1,
    p_cost: 1,
};

fn small_config() -> Config {
    Config::new((4096, 16384, 65536), 3, 256 << 10)
}

/// A fresh in-memory repository with password `pw` and small chunks.
fn memory_repository() -> Arc<dyn Backend> {
    let backend: Arc<dyn Backend> = Arc::new(ObjectStoreBackend::memory());
    Repository::init(backend.clone(), b"pw", small_config(), CHEAP).unwrap();
    backend
}

fn write_tree(dir: &Path) {
    std::fs::create_dir_all(dir.join("a/b")).unwrap();
    std::fs::write(dir.join("a/b/text"), "hello ".repeat(20_000)).unwrap();
    let mut x = 1u64;
    let random: Vec<u8> = (0..300_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(dir.join("random"), &random).unwrap();
    std::fs::write(dir.join("copy-of-random"), &random).unwrap();
    std::fs::write(dir.join("empty"), b"").unwrap();
}

fn opts(path: &Path) -> BackupOptions {
    BackupOptions {
        paths: vec![path.to_path_buf()],
        hostname: "test".into(),
        workers: 3,
        ..Default::default()
    }
}

#[test]
fn library_round_trip_with_change_detection() {
    let src = tempfile::tempdir().unwrap();
    write_tree(src.path());
    let backend = memory_repository();
    let repo = Repository::open(backend.clone(), b"pw")
        .unwrap()
        .load_index()
        .unwrap();
    let first = backup::run(
        &opened(&repo),
        &opts(src.path()),
        &Progress::default(),
        &strict("backup"),
    )
    .unwrap();
    let s = &first.snapshot.summary;
    assert_eq!((s.files_new, s.files_unmodified), (4, 0));
    assert!(s.data_blobs > 4, "small chunks split the files");
    // the copy deduplicated: stored bytes are about one copy of the random file plus the text
    assert!(
        s.data_added < 300_000 + 120_000 + 10_000,
        "added {}",
        s.data_added
    );

    std::fs::write(src.path().join("a/b/text"), "changed").unwrap();
    let repo = repo.into_opened().load_index().unwrap();
    let second = backup::run(
        &opened(&repo),
        &opts(src.path()),
        &Progress::default(),
        &strict("backup"),
    )
    .unwrap();
    let s = &second.snapshot.summary;
    assert_eq!(
        (s.files_new, s.files_changed, s.files_unmodified),
        (0, 1, 3)
    );
    assert_eq!(second.snapshot.parent, Some(first.id));

    let out = tempfile::tempdir().unwrap();
    let repo = repo.into_opened().load_index().unwrap();
    let ropts = RestoreOptions {
        target: out.path().to_path_buf(),
        subpath: None,
        include: Default::default(),
        exclude: Default::default(),
        verify: true,
        devices: true,
    };
    let progress = RestoreProgress::default();
    restore::run(
        &repo,
        &second.snapshot,
        &ropts,
        &progress,
        &strict("restore"),
    )
    .unwrap();
    assert_eq!(
        std::fs::read(out.path().join("a/b/text")).unwrap(),
        b"changed"
    );
    assert_eq!(
        std::fs::read(out.path().join("random")).unwrap(),
        std::fs::read(src.path().join("random")).unwrap()
    );
    assert_eq!(progress.verified.load(Ordering::Relaxed), 4);
}

#[test]
fn same_tree_gives_same_snapshot_tree_every_run() {
    let src = tempfile::tempdir().unwrap();
    write_tree(src.path());
    let backend = memory_repository();
    let mut trees = Vec::new();
    for workers in [1, 2, 5] {
        let repo = Repository::open(backend.clone(), b"pw")
            .unwrap()
            .load_index()
            .unwrap();
        let mut o = opts(src.path());
        o.workers = workers;
        o.parent = backup::ParentChoice::None;
        trees.push(
            backup::run(&opened(&repo), &o, &Progress::default(), &strict("backup"))
                .unwrap()
                .snapshot
                .tree,
        );
    }
    assert!(trees.windows(2).all(|w| w[0] == w[1]), "{trees:?}");
}

/// A backend whose puts into `data/` fail after `allowed` successes.
struct FailingPuts {
    inner: Arc<ObjectStoreBackend>,
    allowed: AtomicUsize,
}

impl Backend for FailingPuts {
    fn location(&self) -> String {
        "failing:".into()
    }
    fn list(&self, prefix: &str, f: &mut dyn FnMut(ObjectInfo)) -> Result<(), BackendError> {
        self.inner.list(prefix, f)
    }
    fn head(&self, path: &str) -> Result<Option<u64>, BackendError> {
        self.inner.head(path)
    }
    fn get(&self, path: &str, range: Option<Range<u64>>) -> Result<Bytes, BackendError> {
        self.inner.get(path, range)
    }
    fn put(&self, path: &str, data: Bytes) -> Result<(), BackendError> {
        if path.starts_with("data/")
            && self
                .allowed
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_err()
        {
            return Err(BackendError::Other {
                path: path.into(),
                message: "injected failure".into(),
            });
        }
        self.inner.put(path, data)
    }
    fn delete(&self, path: &str) -> Result<(), BackendError> {
        self.inner.delete(path)
    }
}

#[test]
fn failed_upload_stops_the_backup_without_a_snapshot() {
    let src = tempfile::tempdir().unwrap();
    write_tree(src.path());
    let backend: Arc<dyn Backend> = Arc::new(FailingPuts {
        inner: Arc::new(ObjectStoreBackend::memory()),
        allowed: AtomicUsize::new(1),
    });
    Repository::init(backend.clone(), b"pw", small_config(), CHEAP).unwrap();
    let repo = Repository::open(backend.clone(), b"pw")
        .unwrap()
        .load_index()
        .unwrap();
    // One connection: the pack thread stores packs itself (the parallel uploaders are
    // covered by the test below).
    let mut o = opts(src.path());
    o.connections = 1;
    let err = match backup::run(&opened(&repo), &o, &Progress::default(), &strict("backup")) {
        Err(e) => e,
        Ok(_) => panic!("backup must fail"),
    };
    assert!(matches!(err, BackupError::Repo(_)), "{err}");
    assert!(
        err.to_string().contains("injected failure") && err.to_string().contains("data/"),
        "{err}"
    );
    assert!(
        repo.snapshot_ids().unwrap().is_empty(),
        "no snapshot after a failed upload"
    );
}

#[test]
fn parallel_uploads_that_fail_midway_leave_a_valid_repository_whose_packs_are_reused() {
    let src = tempfile::tempdir().unwrap();
    for i in 0..6 {
        std::fs::write(
            src.path().join(format!("f{i}")),
            random_bytes(i + 1, 700_000),
        )
        .unwrap();
    }
    let store = Arc::new(ObjectStoreBackend::memory());
    let failing: Arc<dyn Backend> = Arc::new(FailingPuts {
        inner: store.clone(),
        allowed: AtomicUsize::new(6),
    });
    Repository::init(failing.clone(), b"pw", small_config(), CHEAP).unwrap();
    let repo = Repository::open(failing, b"pw")
        .unwrap()
        .load_index()
        .unwrap();
    let mut o = opts(src.path());
    o.connections = 4;
    let err = match backup::run(&opened(&repo), &o, &Progress::default(), &strict("backup")) {
        Err(e) => e,
        Ok(_) => panic!("the seventh pack upload fails, so the backup must"),
    };
    assert!(err.to_string().contains("injected failure"), "{err}");

    // What the failed backup indexed is exactly what it stored, and check finds no error.
    let healthy: Arc<dyn Backend> = store.clone();
    let repo = Repository::open(healthy.clone(), b"pw")
        .unwrap()
        .load_index()
        .unwrap();
    let indexed = repo.index().packs().len();
    assert!(indexed >= 1, "packs stored before the failure are indexed");
    let mut stored = 0;
    store.list("data/", &mut |_| stored += 1).unwrap();
    assert!(
        stored >= indexed && stored <= 6,
        "{stored} stored, {indexed} indexed"
    );
    let checked = cairn_engine::check::run(
        repo.into_opened(),
        &cairn_engine::check::CheckOptions {
            read_data: Some(cairn_engine::check::Subset::All),
            threads: 2,
        },
        &cairn_engine::Context {
            events: cairn_engine::Events::new(|e: cairn_engine::Event| {
                assert!(e.severity() != cairn_engine::Severity::Error, "{e}")
            }),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(checked.snapshots, 0);

    // The next backup stores only what is missing and restores byte-identical.
    let repo = Repository::open(healthy, b"pw")
        .unwrap()
        .load_index()
        .unwrap();
    let done = backup::run(&opened(&repo), &o, &Progress::default(), &strict("backup")).unwrap();
    let s = &done.snapshot.summary;
    assert!(
        s.data_added < (6 * 700_000) - (256 << 10),
        "the second backup re-stored reusable packs: added {}",
        s.data_added
    );
    let repo = repo.into_opened().load_index().unwrap();
    let out = tempfile::tempdir().unwrap();
    let ropts = RestoreOptions {
        target: out.path().to_path_buf(),
        subpath: None,
        include: Default::default(),
        exclude: Default::default(),
        verify: true,
        devices: true,
    };
    restore::run(
        &repo,
        &done.snapshot,
        &ropts,
        &RestoreProgress::default(),
        &strict("restore"),
    )
    .unwrap();
    for i in 0..6 {
        let name = format!("f{i}");
        assert_eq!(
            std::fs::read(out.path().join(&name)).unwrap(),
            random_bytes(i + 1, 700_000),
            "{name}"
        );
    }
}

#[test]
fn missing_path_is_an_error_and_writes_nothing() {
    let backend = memory_repository();
    let repo = Repository::open(backend.clone(), b"pw")
        .unwrap()
        .load_index()
        .unwrap();
    let err = match backup::run(
        &opened(&repo),
        &opts(Path::new("/no/such/dir")),
        &Progress::default(),
        &strict("backup"),
    ) {
        Err(e) => e,
        Ok(_) => panic!("must fail"),
    };
    assert!(err.to_string().contains("/no/such/dir"), "{err}");
    assert!(repo.snapshot_ids().unwrap().is_empty());
}
