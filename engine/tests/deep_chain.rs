//! A snapshot whose tree is a chain of 10 000 nested directories, made with the library (a
//! real backup of one file, its root wrapped in 10 000 trees), goes through every walk of the
//! engine in one process whose open-file limit is 128: restore (the deepest file intact, the
//! directories' metadata set), check, find, diff, stats, dump and copy. Recursion would
//! overflow the stack; a descriptor per level, or a path per level, would hit the limit or
//! `ENAMETOOLONG`.
//!
//! This binary holds one test: it lowers the process's open-file limit.

mod common;
use common::{collecting, opened, strict};

use std::io::Read;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use cairn_engine::backup::{self, BackupOptions, Progress};
use cairn_engine::check::{self, CheckOptions};
use cairn_engine::restore::{self, RestoreOptions, RestoreProgress};
use cairn_engine::{copy, diff, dump, find, stats};
use cairn_repo_format::blob::seal_blob;
use cairn_repo_format::config::Config;
use cairn_repo_format::pack::PackBuilder;
use cairn_repo_format::snapshot::Snapshot;
use cairn_repo_format::tree::{Node, RawBytes, Tree};
use cairn_repo_format::{Backend, BlobType, Id, Indexed, ObjectStoreBackend, Repository};
use nix::fcntl::{OFlag, open, openat};
use nix::sys::stat::Mode;

const DEPTH: usize = 10_000;

fn memory_repository() -> Arc<dyn Backend> {
    let backend: Arc<dyn Backend> = Arc::new(ObjectStoreBackend::memory());
    let config = Config::new((4096, 16384, 65536), 3, 256 << 10);
    Repository::init(backend.clone(), b"pw", config, common::CHEAP).unwrap();
    backend
}

fn indexed(backend: &Arc<dyn Backend>) -> Repository<Indexed> {
    Repository::open(backend.clone(), b"pw")
        .unwrap()
        .load_index()
        .unwrap()
}

/// Stores `trees` as tree blobs in packs with an index file.
fn store_trees(repo: &Repository<Indexed>, trees: &[Tree]) {
    for part in trees.chunks(2000) {
        let mut pack = PackBuilder::default();
        for t in part {
            let bytes = t.to_bytes();
            let id = repo.key().blob_id(&bytes);
            pack.add(&seal_blob(repo.key(), BlobType::Tree, id, &bytes, 3));
        }
        let pack = pack.finish(repo.key());
        repo.save_pack(&pack.id, pack.bytes).unwrap();
        repo.save_index([(&pack.id, &pack.entries[..])]).unwrap();
    }
}

/// A snapshot like `base` whose root tree is wrapped in `DEPTH` directories `d` (each with the
/// metadata of `dir`); returns its id.
fn chain(repo: &Repository<Indexed>, base: &Snapshot, dir: &Node) -> Id {
    let mut trees = Vec::with_capacity(DEPTH);
    let mut below = base.tree;
    for _ in 0..DEPTH {
        let mut d = dir.clone();
        d.name = RawBytes(b"d".to_vec());
        d.subtree = Some(below);
        let t = Tree { nodes: vec![d] };
        below = repo.key().blob_id(&t.to_bytes());
        trees.push(t);
    }
    store_trees(repo, &trees);
    let snap = Snapshot {
        tree: below,
        ..base.clone()
    };
    repo.save_snapshot(&snap).unwrap()
}

fn open_dir(dir: &OwnedFd, name: &str) -> OwnedFd {
    openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW,
        Mode::empty(),
    )
    .unwrap()
}

/// Sets the soft open-file limit to `n`.
fn limit_open_files(n: u64) {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls on a stack value.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut l), 0);
        l.rlim_cur = n.min(l.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &l), 0);
    }
}

#[test]
fn a_chain_of_10000_directories_goes_through_every_walk_with_128_descriptors() {
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("leaf.txt"), b"version one\n").unwrap();
    let backend = memory_repository();
    let repo = indexed(&backend);
    let opts = BackupOptions {
        paths: vec![src.path().to_path_buf()],
        hostname: "test".into(),
        ..Default::default()
    };
    let progress = Progress::default();
    let first = backup::run(&opened(&repo), &opts, &progress, &strict("backup")).unwrap();
    std::fs::write(src.path().join("leaf.txt"), b"version two, longer\n").unwrap();
    let second = backup::run(&opened(&repo), &opts, &progress, &strict("backup")).unwrap();
    let repo = indexed(&backend);
    let mut dir = first.snapshot.root.clone().unwrap();
    dir.mode = 0o751;
    let a = chain(&repo, &first.snapshot, &dir);
    let b = chain(&repo, &second.snapshot, &dir);
    let repo = indexed(&backend);
    let snap_a = repo.load_snapshot(&a).unwrap();
    let snap_b = repo.load_snapshot(&b).unwrap();

    limit_open_files(128);

    // Restore: every level created relative to its parent, the leaf intact, metadata set.
    let target = tempfile::tempdir().unwrap();
    let opts = RestoreOptions {
        target: target.path().join("out"),
        subpath: None,
        include: Default::default(),
        exclude: Default::default(),
        verify: true,
        devices: false,
    };
    let progress = RestoreProgress::default();
    restore::run(&repo, &snap_b, &opts, &progress, &strict("restore")).unwrap();
    let mut fd = open(
        &opts.target,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY,
        Mode::empty(),
    )
    .unwrap();
    for _ in 0..DEPTH {
        fd = open_dir(&fd, "d");
    }
    let leaf = openat(&fd, "leaf.txt", OFlag::O_RDONLY, Mode::empty()).unwrap();
    let mut content = String::new();
    std::fs::File::from(leaf)
        .read_to_string(&mut content)
        .unwrap();
    assert_eq!(content, "version two, longer\n");
    let st = nix::sys::stat::fstat(&fd).unwrap();
    assert_eq!(st.st_mode & 0o7777, 0o751, "the deepest directory's mode");
    let progress_dirs = progress.dirs.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(progress_dirs as usize, DEPTH);
    drop(fd);

    // check: every tree reached (the walk of `Reach`).
    let (cx, events) = collecting();
    let summary = check::run(repo.clone().into_opened(), &CheckOptions::default(), &cx).unwrap();
    assert_eq!(summary.errors, 0, "{:?}", events.events());

    // find: the leaf, at the bottom.
    let patterns = cairn_engine::filter::Patterns::new(&["leaf.txt"]).unwrap();
    let mut found = Vec::new();
    find::run(&repo, &[(a, snap_a.clone())], &patterns, &mut |_, p, _| {
        found.push(p.len())
    })
    .unwrap();
    assert_eq!(found, [2 * DEPTH + "/leaf.txt".len()]);

    // diff: the two chains differ all the way down, in the leaf only.
    let mut changes = Vec::new();
    let d = diff::run(&repo, &snap_a.tree, &snap_b.tree, &mut |c, p| {
        changes.push((c, p.len()))
    })
    .unwrap();
    assert_eq!(d.modified, 1);
    assert_eq!(changes, [(diff::Change::Modified, 2 * DEPTH + 9)]);

    // stats: each chain holds one file.
    let s = stats::run(&repo, &[(a, snap_a.clone()), (b, snap_b.clone())]).unwrap();
    assert_eq!((s.snapshots, s.files), (2, 2));

    // dump: a directory member per level, then the file.
    let mut sink = Counter(0);
    let names = dump::tar(&repo, &snap_a.tree, "", &mut sink, &mut |e| {
        panic!("unexpected event: {e}")
    })
    .unwrap();
    assert_eq!(names, dump::TarNames::default());
    assert!(sink.0 > (DEPTH * 1024) as u64);

    // copy: into another repository, bottom-up.
    let dst = memory_repository();
    let dst_repo = Repository::open(dst.clone(), b"pw").unwrap();
    let copied = copy::run(&repo, dst_repo, &[(a, snap_a)]).unwrap();
    assert_eq!(copied.copied.len(), 1);
    let dst_repo = indexed(&dst);
    let (_, dst_id) = copied.copied[0];
    let copy = dst_repo.load_snapshot(&dst_id).unwrap();
    let s = stats::run(&dst_repo, &[(dst_id, copy)]).unwrap();
    assert_eq!(s.files, 1);
}

/// Counts bytes written.
struct Counter(u64);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
