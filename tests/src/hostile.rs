//! A writer of hostile repository objects, for the malicious-repository tests. It knows the
//! format and, where a case needs it, holds the real keys (as a compromised node or a client
//! with the password would): it plants junk under valid names, sealed objects whose framing
//! lies, index entries no blob can have, and trees with names a restore must refuse. Every
//! object it writes is named the way a real writer names it, so readers cannot tell it apart
//! by its name.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use cairn_repo_format::backend::LocalBackend;
use cairn_repo_format::blob::seal_blob;
use cairn_repo_format::object::ObjectKind;
use cairn_repo_format::pack::{PackBuilder, PackEntry};
use cairn_repo_format::snapshot::Snapshot;
use cairn_repo_format::tree::Tree;
use cairn_repo_format::{Backend, BlobType, FileKind, Id, Indexed, Repository};

use crate::{Repo, Rng};

/// A repository opened with its password, for planting.
pub struct Planter {
    /// The repository, with its index loaded.
    pub repo: Repository<Indexed>,
    backend: Arc<dyn Backend>,
    rng: Rng,
}

impl Planter {
    /// Opens `repo` (a local test repository) with its password.
    pub fn open(repo: &Repo) -> Planter {
        let backend: Arc<dyn Backend> =
            Arc::new(LocalBackend::new(&repo.path, false).expect("repository directory"));
        let opened = Repository::open(backend.clone(), repo.password.as_bytes()).expect("open");
        Planter {
            repo: opened.load_index().expect("index"),
            backend,
            rng: Rng::new(0x5eed),
        }
    }

    /// Stores `bytes` at `path` as they are.
    pub fn put(&self, path: &str, bytes: Vec<u8>) {
        self.backend
            .put(path, Bytes::from(bytes))
            .expect("plant an object");
    }

    /// Random bytes under a valid name of `kind` (their hash), as a writer without the key, a
    /// torn upload or bit rot leaves them. Returns the object's path.
    pub fn junk(&mut self, kind: FileKind) -> String {
        let bytes = self.rng.bytes(300);
        let path = kind.path(&Id::of_stored(&bytes));
        self.put(&path, bytes);
        path
    }

    /// Seals `plain` (flag byte and payload, framed by the caller however it likes) as an
    /// object of `okind` with the real key, stored under its hash. Returns the path.
    pub fn sealed(&self, kind: FileKind, okind: ObjectKind, plain: &[u8]) -> String {
        let sealed = self.repo.key().seal(okind.aad(), plain);
        let path = kind.path(&Id::of_stored(&sealed));
        self.put(&path, sealed);
        path
    }

    /// A sealed object whose zstd frame holds `real` zero bytes and whose header claims
    /// `claimed` bytes: a decompression bomb.
    pub fn bomb(&self, kind: FileKind, okind: ObjectKind, claimed: u64, real: usize) -> String {
        let frame = zstd::bulk::compress(&vec![0u8; real], 3).expect("compress");
        let mut plain = vec![1u8];
        plain.extend_from_slice(&claimed.to_le_bytes());
        plain.extend_from_slice(&frame);
        self.sealed(kind, okind, &plain)
    }

    /// An index file (sealed with the real key) holding `entries` for pack `pack`.
    pub fn index_file(&self, pack: Id, entries: &[PackEntry]) -> String {
        let id = self.repo.save_index([(&pack, entries)]).expect("index");
        FileKind::Index.path(&id)
    }

    /// The latest snapshot by time, with its id.
    pub fn latest(&self) -> (Id, Snapshot) {
        let mut all: Vec<(Id, Snapshot)> = self
            .repo
            .snapshot_ids()
            .expect("list")
            .into_iter()
            .map(|id| (id, self.repo.load_snapshot(&id).expect("snapshot")))
            .collect();
        all.sort_by_key(|(id, s)| (s.time, *id));
        all.pop().expect("a snapshot")
    }

    /// A tree as stored.
    pub fn tree(&self, id: &Id) -> Tree {
        self.repo.load_tree(id).expect("tree")
    }

    /// Stores `tree` as is (in its own pack, with an index file), however it is named or
    /// ordered; returns its id.
    pub fn store_tree(&self, tree: &Tree) -> Id {
        let bytes = tree.to_bytes();
        let key = self.repo.key();
        let id = key.blob_id(&bytes);
        let mut pack = PackBuilder::default();
        pack.add(&seal_blob(key, BlobType::Tree, id, &bytes, 3));
        let pack = pack.finish(key);
        self.repo.save_pack(&pack.id, pack.bytes).expect("pack");
        self.repo
            .save_index([(&pack.id, pack.entries.as_slice())])
            .expect("index");
        id
    }

    /// Stores `snap`; returns its id.
    pub fn store_snapshot(&self, snap: &Snapshot) -> Id {
        self.repo.save_snapshot(snap).expect("snapshot")
    }

    /// A copy of the latest snapshot whose root tree is `tree` and whose time is one second
    /// later, so that it becomes `latest`; returns its id.
    pub fn snapshot_of(&self, tree: Id) -> Id {
        let (_, mut snap) = self.latest();
        snap.tree = tree;
        snap.time += chrono::Duration::seconds(1);
        self.store_snapshot(&snap)
    }
}

/// Every file below `dir` with its content, except those under `skip` (a restore target): to
/// show that nothing outside a target changed.
pub fn everything_but(dir: &Path, skip: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read dir") {
            let p = e.expect("entry").path();
            if p.starts_with(skip) {
                continue;
            }
            let md = std::fs::symlink_metadata(&p).expect("stat");
            let rel = p.strip_prefix(dir).expect("below").display().to_string();
            if md.is_dir() {
                out.insert(rel + "/", Vec::new());
                stack.push(p);
            } else if md.is_file() {
                out.insert(rel, std::fs::read(&p).expect("read"));
            } else {
                out.insert(rel, format!("{:?}", md.file_type()).into_bytes());
            }
        }
    }
    out
}
