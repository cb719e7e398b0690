//! The parallel restore pipeline, in-process against memory backends: byte-identical results
//! with metadata across many batches, one ranged GET per pack per batch (what makes restores
//! over a network fast), and a lost pack failing exactly the files that need it.

mod common;
use common::random_bytes;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Range;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use cairn_engine::backup::{self, BackupOptions, Progress};
use cairn_engine::restore::{self, RestoreOptions, RestoreProgress, RestoreTuning};
use cairn_repo_format::backend::ObjectInfo;
use cairn_repo_format::config::Config;
use cairn_repo_format::key::KdfParams;
use cairn_repo_format::snapshot::Snapshot;
use cairn_repo_format::{
    Backend, BackendError, BlobType, FileKind, Id, Indexed, ObjectStoreBackend, Repository,
};

const CHEAP: KdfParams = KdfParams {
    m_cost: 64,
    t_cost: 1,
    p_cost: 1,
};

/// Small chunks (4 KiB / 16 KiB / 64 KiB) and 256 KiB packs, so a few MiB make many packs.
fn small_config() -> Config {
    Config::new((4096, 16384, 65536), 3, 256 << 10)
}

/// A backend that counts the GETs of each object.
struct CountingGets {
    inner: ObjectStoreBackend,
    gets: Mutex<HashMap<String, usize>>,
}

impl CountingGets {
    fn new() -> CountingGets {
        CountingGets {
            inner: ObjectStoreBackend::memory(),
            gets: Mutex::new(HashMap::new()),
        }
    }

    fn take_counts(&self) -> HashMap<String, usize> {
        std::mem::take(&mut *self.gets.lock().unwrap())
    }
}

impl Backend for CountingGets {
    fn location(&self) -> String {
        "counting:".into()
    }
    fn list(&self, prefix: &str, f: &mut dyn FnMut(ObjectInfo)) -> Result<(), BackendError> {
        self.inner.list(prefix, f)
    }
    fn head(&self, path: &str) -> Result<Option<u64>, BackendError> {
        self.inner.head(path)
    }
    fn get(&self, path: &str, range: Option<Range<u64>>) -> Result<Bytes, BackendError> {
        *self.gets.lock().unwrap().entry(path.into()).or_default() += 1;
        self.inner.get(path, range)
    }
    fn put(&self, path: &str, data: Bytes) -> Result<(), BackendError> {
        self.inner.put(path, data)
    }
    fn delete(&self, path: &str) -> Result<(), BackendError> {
        self.inner.delete(path)
    }
}

fn write(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

/// Many small files in nested directories, a few large ones, files with identical content, an
/// empty file, sparse files, a hard link pair, distinct modes and times everywhere.
fn build_tree(src: &Path) -> usize {
    let mut files = 0;
    for d in 0..6 {
        for f in 0..40 {
            let len = 100 + (d * 40 + f) * 37 % 3000;
            write(
                &src.join(format!("d{d}/sub{}/f{f}.txt", f % 3)),
                &random_bytes((d * 100 + f) as u64, len),
            );
            files += 1;
        }
    }
    let big = random_bytes(7, 900_000);
    write(&src.join("large/a.bin"), &big);
    write(&src.join("large/copy-of-a.bin"), &big);
    write(&src.join("d3/also-a.bin"), &big);
    write(&src.join("large/b.bin"), &random_bytes(8, 1_300_000));
    let shared = random_bytes(9, 20_000);
    for i in 0..10 {
        write(&src.join(format!("same/s{i}")), &shared);
    }
    write(&src.join("empty"), b"");
    let mut sparse = vec![0u8; 600_000];
    sparse.extend_from_slice(b"tail");
    write(&src.join("sparse"), &sparse);
    // Ends in a hole: only setting the length makes it whole.
    let mut hole_at_end = random_bytes(11, 5000);
    hole_at_end.resize(700_000, 0);
    write(&src.join("hole-at-end"), &hole_at_end);
    write(&src.join("links/first"), &random_bytes(10, 50_000));
    std::fs::hard_link(src.join("links/first"), src.join("links/second")).unwrap();
    files += 4 + 10 + 3 + 2;

    // Modes and times, deepest first so creating entries does not change them again.
    let mut paths: Vec<PathBuf> = walkdir::WalkDir::new(src)
        .min_depth(1)
        .into_iter()
        .map(|e| e.unwrap().into_path())
        .collect();
    paths.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for (i, p) in paths.iter().enumerate() {
        let mode = if p.is_dir() { 0o750 } else { 0o640 };
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
        let t = filetime::FileTime::from_unix_time(1_600_000_000 + i as i64 * 1000, 123_456);
        filetime::set_file_times(p, t, t).unwrap();
    }
    files
}

/// Every path below `root` with its type, mode, mtime and content (for files).
fn describe(root: &Path) -> Tree {
    walkdir::WalkDir::new(root)
        .min_depth(1)
        .into_iter()
        .map(|e| {
            let e = e.unwrap();
            let m = e.path().symlink_metadata().unwrap();
            let content = m.is_file().then(|| std::fs::read(e.path()).unwrap());
            let kind = if m.is_dir() { "dir" } else { "file" };
            (
                e.path().strip_prefix(root).unwrap().to_path_buf(),
                (
                    kind.to_string(),
                    m.mode() & 0o7777,
                    m.mtime(),
                    m.mtime_nsec(),
                    content,
                ),
            )
        })
        .collect()
}

type Tree = BTreeMap<PathBuf, (String, u32, i64, i64, Option<Vec<u8>>)>;

/// Asserts that two descriptions agree, naming the paths that do not.
fn assert_same(expected: &Tree, got: &Tree, what: &str) {
    let differing: Vec<&PathBuf> = expected
        .keys()
        .filter(|k| expected.get(*k) != got.get(*k))
        .chain(got.keys().filter(|k| !expected.contains_key(*k)))
        .collect();
    assert!(differing.is_empty(), "{what}: differs: {differing:?}");
}

/// A repository over `backend` holding one backup of `src`.
fn backed_up(backend: Arc<dyn Backend>, src: &Path) -> (Repository<Indexed>, Snapshot) {
    Repository::init(backend.clone(), b"pw", small_config(), CHEAP).unwrap();
    let repo = Repository::open(backend, b"pw")
        .unwrap()
        .load_index()
        .unwrap();
    let opts = BackupOptions {
        paths: vec![src.to_path_buf()],
        hostname: "test".into(),
        workers: 2,
        ..Default::default()
    };
    let out = backup::run(
        &common::opened(&repo),
        &opts,
        &Progress::default(),
        &common::strict("backup"),
    )
    .unwrap();
    // Reload: the index now lists the packs just written.
    (repo.into_opened().load_index().unwrap(), out.snapshot)
}

fn options(target: &Path) -> RestoreOptions {
    RestoreOptions {
        target: target.to_path_buf(),
        subpath: None,
        include: Default::default(),
        exclude: Default::default(),
        verify: true,
        devices: true,
    }
}

/// Tuning that splits the test trees into many batches (and large files across batches).
fn tiny_batches() -> RestoreTuning {
    RestoreTuning {
        connections: 3,
        unseal_threads: 3,
        batch_files: 7,
        batch_blobs: 11,
        max_gap: 4096,
        max_range: 100_000,
        in_flight_bytes: 300_000,
    }
}

/// Every file of the snapshot with its data blob ids.
fn contents(repo: &Repository<Indexed>, snap: &Snapshot) -> BTreeMap<PathBuf, Vec<Id>> {
    fn walk(
        repo: &Repository<Indexed>,
        tree: &Id,
        rel: &Path,
        out: &mut BTreeMap<PathBuf, Vec<Id>>,
    ) {
        for n in repo.load_tree(tree).unwrap().nodes {
            let path = rel.join(String::from_utf8(n.name.0.clone()).unwrap());
            if let Some(sub) = n.subtree {
                walk(repo, &sub, &path, out);
            }
            if let Some(c) = n.content {
                out.insert(path, c);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(repo, &snap.tree, Path::new(""), &mut out);
    out
}

/// Data pack of every data blob the snapshot uses, and which files use each pack.
fn data_packs(repo: &Repository<Indexed>, snap: &Snapshot) -> BTreeMap<Id, BTreeSet<PathBuf>> {
    let mut out: BTreeMap<Id, BTreeSet<PathBuf>> = BTreeMap::new();
    for (path, ids) in contents(repo, snap) {
        for id in ids {
            let pack = repo.locate(BlobType::Data, &id).unwrap().pack;
            out.entry(pack).or_default().insert(path.clone());
        }
    }
    out
}

/// Restores with `tuning`, collecting the reported problems.
fn restore_collecting(
    repo: &Repository<Indexed>,
    snap: &Snapshot,
    target: &Path,
    tuning: &RestoreTuning,
) -> (Vec<(PathBuf, String)>, RestoreProgress) {
    let (cx, collected) = common::collecting();
    let progress = RestoreProgress::default();
    restore::run_with(repo, snap, &options(target), tuning, &progress, &cx).unwrap();
    let reports = collected
        .events()
        .into_iter()
        .map(|e| match e {
            cairn_engine::Event::RestoreFailed { path, error } => (path, error),
            other => panic!("unexpected event: {other}"),
        })
        .collect();
    (reports, progress)
}

#[test]
fn many_small_large_and_shared_files_restore_identically_with_metadata() {
    let src = tempfile::tempdir().unwrap();
    let files = build_tree(src.path());
    let (repo, snap) = backed_up(Arc::new(ObjectStoreBackend::memory()), src.path());
    let expected = describe(src.path());

    for (name, tuning) in [
        ("default", RestoreTuning::default()),
        ("tiny batches", tiny_batches()),
    ] {
        let out = tempfile::tempdir().unwrap();
        let progress = RestoreProgress::default();
        let report = common::strict(name);
        restore::run_with(
            &repo,
            &snap,
            &options(out.path()),
            &tuning,
            &progress,
            &report,
        )
        .unwrap();
        assert_same(&expected, &describe(out.path()), name);

        let g = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        assert_eq!(
            g(&progress.files) as usize,
            files - 1,
            "{name}: one is a link"
        );
        assert_eq!(g(&progress.verified) as usize, files - 1, "{name}");
        assert_eq!(g(&progress.errors), 0, "{name}");
        let sizes: u64 = expected
            .iter()
            .filter(|(p, _)| !p.ends_with("links/second"))
            .map(|(_, v)| v.4.as_ref().map_or(0, |c| c.len() as u64))
            .sum();
        assert_eq!(
            g(&progress.bytes),
            sizes,
            "{name}: bytes counted once per file"
        );

        let first = std::fs::metadata(out.path().join("links/first")).unwrap();
        let second = std::fs::metadata(out.path().join("links/second")).unwrap();
        assert_eq!(first.ino(), second.ino(), "{name}: hard link kept");
        let sparse = std::fs::metadata(out.path().join("sparse")).unwrap();
        assert!(
            sparse.blocks() * 512 < 300_000,
            "{name}: sparse file allocated {} bytes",
            sparse.blocks() * 512
        );
    }
}

#[test]
fn a_restore_that_fits_one_batch_reads_each_pack_once() {
    let src = tempfile::tempdir().unwrap();
    build_tree(src.path());
    let backend = Arc::new(CountingGets::new());
    let (repo, snap) = backed_up(backend.clone(), src.path());
    let packs = data_packs(&repo, &snap);
    let blobs: BTreeSet<Id> = {
        let mut ids = BTreeSet::new();
        let mut stack = vec![snap.tree];
        while let Some(t) = stack.pop() {
            for n in repo.load_tree(&t).unwrap().nodes {
                stack.extend(n.subtree);
                ids.extend(n.content.into_iter().flatten());
            }
        }
        ids
    };
    assert!(
        packs.len() >= 4 && blobs.len() >= 10 * packs.len(),
        "the fixture needs many blobs in several packs: {} blobs, {} packs",
        blobs.len(),
        packs.len()
    );

    let one_batch = RestoreTuning {
        batch_files: 10_000,
        batch_blobs: 10_000,
        ..RestoreTuning::default()
    };
    backend.take_counts();
    let out = tempfile::tempdir().unwrap();
    let report = common::strict("restore");
    let mut opts = options(out.path());
    opts.verify = false;
    restore::run_with(
        &repo,
        &snap,
        &opts,
        &one_batch,
        &RestoreProgress::default(),
        &report,
    )
    .unwrap();
    let counts = backend.take_counts();
    let data_gets: BTreeMap<&Id, usize> = packs
        .keys()
        .map(|p| (p, counts.get(&FileKind::Pack.path(p)).copied().unwrap_or(0)))
        .collect();
    assert!(
        data_gets.values().all(|&n| n == 1),
        "each data pack is read with exactly one GET: {data_gets:?}"
    );
    assert_same(&describe(src.path()), &describe(out.path()), "one batch");
}

#[test]
fn a_deleted_pack_fails_only_the_files_that_use_it() {
    let src = tempfile::tempdir().unwrap();
    build_tree(src.path());
    let backend: Arc<dyn Backend> = Arc::new(ObjectStoreBackend::memory());
    let (repo, snap) = backed_up(backend.clone(), src.path());
    let packs = data_packs(&repo, &snap);
    let all_files: BTreeSet<PathBuf> = packs.values().flatten().cloned().collect();
    // A pack used by a few files, not by most.
    let (victim, lost) = packs
        .iter()
        .filter(|(_, files)| files.len() * 4 < all_files.len())
        .max_by_key(|(_, files)| files.len())
        .expect("a pack used by few files");
    let victim_path = FileKind::Pack.path(victim);
    backend.delete(&victim_path).unwrap();

    for (name, tuning) in [
        ("default", RestoreTuning::default()),
        ("tiny batches", tiny_batches()),
    ] {
        let out = tempfile::tempdir().unwrap();
        let (reports, progress) = restore_collecting(&repo, &snap, out.path(), &tuning);

        // Exactly the files using the pack are reported, each once, naming pack and blob.
        let reported: BTreeSet<PathBuf> = reports.iter().map(|(p, _)| p.clone()).collect();
        assert_eq!(&reported, lost, "{name}: {reports:#?}");
        assert_eq!(reports.len(), lost.len(), "{name}: one report per file");
        for (p, m) in &reports {
            assert!(
                m.contains(&victim_path) && m.contains("data blob") && m.contains("missing"),
                "{name}: {} reported without pack and blob: {m}",
                p.display()
            );
        }
        assert_eq!(
            progress.errors.load(Ordering::Relaxed) as usize,
            lost.len(),
            "{name}"
        );
        // Everything else is restored exactly.
        for f in all_files.difference(lost) {
            assert_eq!(
                std::fs::read(out.path().join(f)).unwrap(),
                std::fs::read(src.path().join(f)).unwrap(),
                "{name}: {}",
                f.display()
            );
        }
    }
}

#[test]
fn a_truncated_pack_fails_only_the_files_needing_blobs_past_its_end() {
    // Memory stores return a short read for a range past the end, local directories an error;
    // both must come to the same verdict per blob.
    let dir = tempfile::tempdir().unwrap();
    let local = ObjectStoreBackend::local(&dir.path().join("repo"), true).unwrap();
    for (kind, backend) in [
        (
            "memory",
            Arc::new(ObjectStoreBackend::memory()) as Arc<dyn Backend>,
        ),
        ("local", Arc::new(local) as Arc<dyn Backend>),
    ] {
        let src = tempfile::tempdir().unwrap();
        build_tree(src.path());
        let (repo, snap) = backed_up(backend.clone(), src.path());
        let files = contents(&repo, &snap);
        let packs = data_packs(&repo, &snap);
        // The data pack used by the most files.
        let (victim, _) = packs.iter().max_by_key(|(_, f)| f.len()).unwrap();
        let header = repo.read_pack_header(victim).unwrap();
        let path = FileKind::Pack.path(victim);
        let bytes = backend.get(&path, None).unwrap();
        let cut = bytes.len() / 2;
        let lost_blobs: BTreeSet<Id> = header
            .iter()
            .filter(|e| e.offset as usize + e.length as usize > cut)
            .map(|e| e.id)
            .collect();
        let kept_blobs = header.len() - lost_blobs.len();
        assert!(kept_blobs > 0 && !lost_blobs.is_empty(), "{kind}");
        backend.delete(&path).unwrap();
        backend.put(&path, bytes.slice(..cut)).unwrap();
        let lost: BTreeSet<PathBuf> = files
            .iter()
            .filter(|(_, ids)| ids.iter().any(|id| lost_blobs.contains(id)))
            .map(|(p, _)| p.clone())
            .collect();
        let in_pack_but_kept = files
            .iter()
            .filter(|(p, ids)| {
                !lost.contains(*p)
                    && ids
                        .iter()
                        .any(|id| repo.locate(BlobType::Data, id).unwrap().pack == *victim)
            })
            .count();
        assert!(
            in_pack_but_kept > 0,
            "{kind}: some file uses only the kept part"
        );

        for (name, tuning) in [
            ("default", RestoreTuning::default()),
            ("tiny batches", tiny_batches()),
        ] {
            let out = tempfile::tempdir().unwrap();
            let (reports, _) = restore_collecting(&repo, &snap, out.path(), &tuning);
            let reported: BTreeSet<PathBuf> = reports.iter().map(|(p, _)| p.clone()).collect();
            assert_eq!(reported, lost, "{kind}, {name}: {reports:#?}");
            for (p, m) in &reports {
                assert!(
                    m.contains(&path)
                        && m.contains("truncated")
                        && lost_blobs.iter().any(|b| m.contains(&b.to_string())),
                    "{kind}, {name}: {} reported without pack and a lost blob: {m}",
                    p.display()
                );
            }
            for f in files.keys().filter(|f| !lost.contains(*f)) {
                assert_eq!(
                    std::fs::read(out.path().join(f)).unwrap(),
                    std::fs::read(src.path().join(f)).unwrap(),
                    "{kind}, {name}: {}",
                    f.display()
                );
            }
        }
    }
}
