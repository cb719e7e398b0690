//! A backup cancelled while it uploads to Azure Blob (Azurite): every object left in the
//! container is whole (`check --read-data` reads and verifies each), no lock and no snapshot
//! remain, and the next backup completes, reusing the packs the cancelled one indexed.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use cairn_e2e::azurite::Azurite;
use cairn_e2e::*;
use cairn_engine::backup::{self, BackupError, BackupOptions, Progress};
use cairn_engine::check::{self, CheckOptions, Subset};
use cairn_engine::{Cancel, Context, Events};
use cairn_repo_format::backend::{ObjectInfo, Parallelism, Spool, Spooled};
use cairn_repo_format::config::Config;
use cairn_repo_format::key::KdfParams;
use cairn_repo_format::{Backend, BackendError, Repository};

const CHEAP: KdfParams = KdfParams {
    m_cost: 64,
    t_cost: 1,
    p_cost: 1,
};

/// Azurite, with a cancel that lands as the `n`-th pack upload starts (that upload goes on).
struct CancelOnUpload {
    inner: Arc<dyn Backend>,
    left: AtomicUsize,
    cancel: Cancel,
}

impl CancelOnUpload {
    fn count(&self, path: &str) {
        if path.starts_with("data/") && self.left.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.cancel.cancel();
        }
    }
}

impl Backend for CancelOnUpload {
    fn location(&self) -> String {
        self.inner.location()
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
        self.count(path);
        self.inner.put(path, data)
    }
    fn delete(&self, path: &str) -> Result<(), BackendError> {
        self.inner.delete(path)
    }
    fn parallelism(&self) -> Parallelism {
        self.inner.parallelism()
    }
    fn spool(&self, capacity: usize) -> Result<Spool, BackendError> {
        self.inner.spool(capacity)
    }
    fn put_spooled(&self, path: &str, body: &Spooled) -> Result<(), BackendError> {
        self.count(path);
        self.inner.put_spooled(path, body)
    }
}

#[test]
fn a_backup_cancelled_mid_upload_to_azurite_leaves_whole_objects_and_no_lock() {
    let az = Azurite::start();
    let b = az.backend("cancel", "repo");
    b.create_container().unwrap();
    let azure: Arc<dyn Backend> = Arc::new(b);
    let config = Config::new((64 << 10, 256 << 10, 1 << 20), 3, 4 << 20);
    Repository::init(azure.clone(), b"pw", config, CHEAP).unwrap();

    let src = tempdir();
    for i in 0..6 {
        write_random_file(&src.path().join(format!("f{i}.bin")), 4 << 20, 100 + i);
    }
    let opts = BackupOptions {
        paths: vec![src.path().to_path_buf()],
        hostname: "node".into(),
        ..Default::default()
    };

    let cancel = Cancel::new();
    let tripped: Arc<dyn Backend> = Arc::new(CancelOnUpload {
        inner: azure.clone(),
        left: AtomicUsize::new(2),
        cancel: cancel.clone(),
    });
    let cx = Context {
        events: Events::discard(),
        cancel,
    };
    let repo = Repository::open(tripped, b"pw").unwrap();
    match backup::run(&repo, &opts, &Progress::default(), &cx) {
        Err(BackupError::Cancelled) => {}
        Err(e) => panic!("expected a cancel, got {e}"),
        Ok(_) => panic!("the backup ran to its end although it was cancelled"),
    }

    let repo = Repository::open(azure.clone(), b"pw").unwrap();
    assert!(repo.locks().unwrap().is_empty(), "a lock was left behind");
    assert!(repo.snapshot_ids().unwrap().is_empty(), "no snapshot");
    let mut packs = 0;
    azure.list("data/", &mut |_| packs += 1).unwrap();
    assert!(packs >= 2, "the cancel came after two uploads started");
    let check_opts = CheckOptions {
        read_data: Some(Subset::All),
        threads: 0,
    };
    let summary = check::run(repo.clone(), &check_opts, &Context::default()).unwrap();
    assert_eq!(summary.errors, 0, "every object left is whole");

    let progress = Progress::default();
    let done = backup::run(&repo, &opts, &progress, &Context::default()).unwrap();
    let added = progress.data_added.load(Ordering::Relaxed);
    assert!(
        added < 24 << 20,
        "the second backup stored {added} bytes: it should reuse the cancelled one's packs"
    );
    assert!(repo.locks().unwrap().is_empty());
    let target = tempdir();
    cairn_engine::restore::run(
        &repo.load_index().unwrap(),
        &done.snapshot,
        &cairn_engine::restore::RestoreOptions {
            target: target.path().to_path_buf(),
            subpath: None,
            include: Default::default(),
            exclude: Default::default(),
            verify: true,
            devices: true,
        },
        &cairn_engine::restore::RestoreProgress::default(),
        &Context::default(),
    )
    .unwrap();
    assert_eq!(read_tree_files(src.path()), read_tree_files(target.path()));
}
