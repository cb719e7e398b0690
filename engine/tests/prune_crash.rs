//! Invariant I4 under crashes: a prune killed at any point between its writes and deletes
//! ([`Checkpoint`]) leaves a repository in which every snapshot restores byte for byte and
//! `check --read-data` finds nothing wrong. After `cairn unlock` (the killed prune's lock stays
//! behind, as a real crash leaves it) the next prune finishes the job and everything still
//! restores.

mod common;
use common::CHEAP;
use common::random_bytes;

use std::path::Path;
use std::sync::Arc;

use cairn_engine::Context;
use cairn_engine::backup::{self, BackupOptions, Progress};
use cairn_engine::prune::{self, Checkpoint, PruneError, PruneOptions};
use cairn_engine::restore::{self, RestoreOptions, RestoreProgress};
use cairn_repo_format::backend::LocalBackend;
use cairn_repo_format::config::Config;
use cairn_repo_format::lock::LockKind;
use cairn_repo_format::snapshot::Snapshot;
use cairn_repo_format::{Backend, FileKind, Id, Opened, Repository};

const FILES: u64 = 24;
const FILE_SIZE: usize = 100 << 10;

fn open(backend: &Arc<dyn Backend>) -> Repository<Opened> {
    Repository::open(backend.clone(), b"pw").unwrap()
}

/// The seed of file `i` in generation `g`: each generation rewrites a different share.
fn seed(g: u64, i: u64) -> u64 {
    match g {
        0 => i + 1,
        1 if i.is_multiple_of(2) => 1000 + i,
        2 if i % 4 == 1 => 2000 + i,
        _ => seed(g - 1, i),
    }
}

fn write_generation(src: &Path, g: u64) {
    for i in 0..FILES {
        let path = src.join(format!("d{}/f{i}", i % 3));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, random_bytes(seed(g, i), FILE_SIZE)).unwrap();
    }
}

/// A repository with three generations of a source, in packs of 256 KiB so that forgetting
/// the first leaves packs unused, packs partly used and packs untouched.
struct Fixture {
    _dir: tempfile::TempDir,
    base: std::path::PathBuf,
    backend: Arc<dyn Backend>,
    /// Snapshot id, the snapshot, its generation.
    kept: Vec<(Id, Snapshot, u64)>,
    /// The forgotten first snapshot, and its stored bytes.
    forgotten: (Id, Snapshot, Vec<u8>),
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().to_path_buf();
    let src = base.join("src");
    let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(&base.join("repo"), true).unwrap());
    let config = Config::new((4096, 16384, 65536), 3, 256 << 10);
    Repository::init(backend.clone(), b"pw", config, CHEAP).unwrap();
    let mut snaps = Vec::new();
    for g in 0..3 {
        write_generation(&src, g);
        let opts = BackupOptions {
            paths: vec![src.clone()],
            hostname: "h".into(),
            workers: 2,
            ..Default::default()
        };
        let done = backup::run(
            &open(&backend),
            &opts,
            &Progress::default(),
            &Context::default(),
        )
        .unwrap();
        snaps.push((done.id, done.snapshot, g));
    }
    let (id, snapshot, _) = snaps.remove(0);
    let bytes = backend.get(&FileKind::Snapshot.path(&id), None).unwrap();
    cairn_engine::forget::remove(&open(&backend), &id).unwrap();
    Fixture {
        _dir: dir,
        base,
        backend,
        kept: snaps,
        forgotten: (id, snapshot, bytes.to_vec()),
    }
}

fn prune_opts(kill_at: Option<Checkpoint>) -> PruneOptions {
    PruneOptions {
        max_unused: 0.0,
        kill_at,
        ..Default::default()
    }
}

/// Prunes, killed at `at`; the killed prune's lock is left behind.
fn killed_prune(backend: &Arc<dyn Backend>, at: Checkpoint) {
    let result = prune::run(open(backend), &prune_opts(Some(at)), &Context::default());
    assert!(
        matches!(result, Err(PruneError::Killed(c)) if c == at),
        "{at:?}: {result:?}"
    );
    let locks = open(backend).locks().unwrap();
    assert!(
        locks
            .iter()
            .any(|l| l.lock.as_ref().is_ok_and(|l| l.kind == LockKind::Prune)),
        "{at:?}: a killed prune leaves its lock"
    );
}

/// What `cairn unlock` does after a crash: every lock goes.
fn unlock(backend: &Arc<dyn Backend>) {
    let repo = open(backend);
    for l in repo.locks().unwrap() {
        repo.remove_lock(&l.id).unwrap();
    }
}

/// Every snapshot in `snaps` restores to exactly its generation's files, and
/// `check --read-data` reports no error.
fn assert_intact(f: &Fixture, snaps: &[(Id, Snapshot, u64)], when: &str) {
    let repo = open(&f.backend).load_index().unwrap();
    for (id, snapshot, g) in snaps {
        let target = f.base.join(format!("restore-{}", id.short()));
        let _ = std::fs::remove_dir_all(&target);
        let opts = RestoreOptions {
            target: target.clone(),
            subpath: None,
            include: Default::default(),
            exclude: Default::default(),
            verify: false,
            devices: true,
        };
        let (cx, events) = common::collecting();
        restore::run(&repo, snapshot, &opts, &RestoreProgress::default(), &cx)
            .unwrap_or_else(|e| panic!("{when}: snapshot {id} does not restore: {e}"));
        assert!(events.events().is_empty(), "{when}: {:?}", events.events());
        let root = &target;
        for i in 0..FILES {
            let got = std::fs::read(root.join(format!("d{}/f{i}", i % 3))).unwrap();
            assert!(
                got == random_bytes(seed(*g, i), FILE_SIZE),
                "{when}: snapshot {id} restored f{i} wrong"
            );
        }
        std::fs::remove_dir_all(&target).unwrap();
    }
    let errors = common::read_data_errors(open(&f.backend));
    assert!(errors.is_empty(), "{when}: {errors:?}");
}

/// Kills a prune at `at`, checks every snapshot, then lets a prune finish and checks again.
fn crash_and_recover(f: &Fixture, snaps: &[(Id, Snapshot, u64)], at: Checkpoint) {
    killed_prune(&f.backend, at);
    assert_intact(f, snaps, &format!("after a prune killed at {at:?}"));
    unlock(&f.backend);
    let stats = prune::run(open(&f.backend), &prune_opts(None), &Context::default())
        .unwrap_or_else(|e| panic!("the prune after one killed at {at:?}: {e}"));
    assert!(stats.deferred.is_empty(), "{at:?}: {stats:?}");
    assert_intact(f, snaps, &format!("after the prune that followed {at:?}"));
}

#[test]
fn a_prune_killed_at_any_step_leaves_every_snapshot_restorable() {
    for at in Checkpoint::ALL {
        if at == Checkpoint::Rescued {
            continue; // needs a snapshot written during the prune: the next test
        }
        let f = fixture();
        crash_and_recover(&f, &f.kept, at);
        assert!(
            open(&f.backend)
                .backend()
                .head(&FileKind::Snapshot.path(&f.forgotten.0))
                .unwrap()
                .is_none()
        );
    }
}

/// A snapshot that appears after a prune condemned the packs it needs (a backup that
/// deduplicated against them and finished meanwhile) makes the sweep rescue those packs. A
/// prune killed right after the rescue, or right after the deletes that follow it, leaves
/// that snapshot restorable too.
#[test]
fn a_prune_killed_while_rescuing_packs_for_a_new_snapshot_leaves_it_restorable() {
    for at in [Checkpoint::Rescued, Checkpoint::PacksDeleted] {
        let f = fixture();
        // The first prune condemns the forgotten snapshot's packs and stops before its sweep.
        killed_prune(&f.backend, Checkpoint::Committed);
        unlock(&f.backend);
        // The snapshot comes back, as a backup that used those packs would write it.
        let (id, snapshot, bytes) = &f.forgotten;
        f.backend
            .put(&FileKind::Snapshot.path(id), bytes.clone().into())
            .unwrap();
        let mut all = f.kept.clone();
        all.push((*id, snapshot.clone(), 0));
        crash_and_recover(&f, &all, at);
    }
}
