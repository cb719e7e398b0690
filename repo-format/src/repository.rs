//! The repository: a backend plus the opened master key and config. A typestate keeps the
//! order of things right: [`Repository::open`] gives a repository that can read snapshots and
//! keys; only [`Repository::load_index`] gives one that can read blobs or back up.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::backend::{Backend, BackendError, FileKind};
use crate::blob::{BlobError, BlobType, open_blob};
use crate::config::{Config, FORMAT_VERSION};
use crate::crypto::MasterKey;
use crate::id::Id;
use crate::index::{BlobLocation, Index, IndexBuilder, decode_index_file, encode_index_file};
use crate::key::{KdfParams, KeyError, KeyFile};
use crate::lock::Lock;
use crate::object::{ObjectKind, open_object, seal_object};
use crate::pack::{PackEntry, PackHeader, PackHeaderError};
use crate::snapshot::Snapshot;
use crate::tree::Tree;

/// "; key files skipped: …" for an error's message, or nothing.
fn skipped_list(skipped: &[String]) -> String {
    if skipped.is_empty() {
        String::new()
    } else {
        format!("; key files skipped: {}", skipped.join("; "))
    }
}

/// Everything that can go wrong at the repository level. Each variant names the object.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// No repository at this location.
    #[error("no repository at {location}")]
    NotFound {
        /// The location given.
        location: String,
    },
    /// `init` found a repository already there.
    #[error("a repository already exists at {location}; refusing to overwrite it")]
    AlreadyInitialized {
        /// The location given.
        location: String,
    },
    /// No well-formed key file opens with this password.
    #[error("wrong password: no key in {location} opens with it{}", skipped_list(.skipped))]
    WrongPassword {
        /// The repository.
        location: String,
        /// Key files skipped unopened, each with why.
        skipped: Vec<String>,
    },
    /// Every key file was skipped: none could be tried with the password.
    #[error("no usable key file in {location}{}", skipped_list(.skipped))]
    NoUsableKey {
        /// The repository.
        location: String,
        /// Key files skipped unopened, each with why.
        skipped: Vec<String>,
    },
    /// Storage failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// Stored data is damaged or tampered with.
    #[error("{object}: {reason}")]
    Corrupt {
        /// Object name (and blob, where one is involved).
        object: String,
        /// What is wrong.
        reason: String,
    },
    /// A blob a tree or snapshot refers to is in no index.
    #[error("{ty} blob {id} is not in the index (data missing from the repository)")]
    BlobMissing {
        /// `data` or `tree`.
        ty: &'static str,
        /// Blob id.
        id: Id,
    },
    /// A writer lost its lock, so what it would write may refer to data a prune removed.
    #[error("{reason}; the snapshot was not written: run the backup again")]
    LockLost {
        /// Why the lock counts as lost.
        reason: String,
    },
    /// Something to be written is larger than readers accept.
    #[error("{what} of {size} bytes is over the format's {cap}-byte cap")]
    TooLarge {
        /// What was being written (a kind of object, or a tree and its directory).
        what: String,
        /// Its size.
        size: u64,
        /// The cap.
        cap: u64,
    },
    /// The repository was written by a newer Cairn.
    #[error(
        "repository format version {found} is newer than this cairn supports ({FORMAT_VERSION}); upgrade cairn"
    )]
    UnsupportedVersion {
        /// The config's version.
        found: u32,
    },
}

/// Why a key was not removed.
#[derive(Debug, thiserror::Error)]
pub enum KeyRemoveError {
    /// It is the key this process opened the repository with.
    #[error("key {0} is the one in use; open the repository with another password to remove it")]
    InUse(Id),
    /// It is the only key.
    #[error("key {0} is the last key; removing it would lock everyone out")]
    Last(Id),
    /// No such key file.
    #[error("no key {0} in this repository")]
    NoSuchKey(Id),
    /// Storage failed.
    #[error(transparent)]
    Repo(#[from] RepoError),
}

/// Shorthand.
pub type Result<T, E = RepoError> = std::result::Result<T, E>;

/// The first impossible entry of `pack`'s entries, described (see [`crate::blob::entry_problem`]).
fn entries_problem(pack: &Id, entries: &[PackEntry]) -> Option<String> {
    entries
        .iter()
        .find_map(crate::blob::entry_problem)
        .map(|why| format!("pack {pack}: {why}"))
}

/// Where a lock of `kind` is stored: backups' locks in `locks/`, prunes' in
/// `exclusive-locks/`.
pub fn lock_place(kind: crate::lock::LockKind) -> FileKind {
    match kind {
        crate::lock::LockKind::Backup => FileKind::Lock,
        crate::lock::LockKind::Prune => FileKind::ExclusiveLock,
    }
}

fn corrupt(object: impl Into<String>, reason: impl ToString) -> RepoError {
    RepoError::Corrupt {
        object: object.into(),
        reason: reason.to_string(),
    }
}

/// Typestate marker: keys and config are open, the index is not loaded.
pub struct Opened;

/// Typestate marker: the index is loaded; blobs can be read and backups written.
pub struct Indexed {
    index: Arc<Index>,
    pending: Arc<Index>,
    lock: Option<Arc<dyn LockHealth>>,
    skipped: Arc<Vec<RepoError>>,
}

/// A lock held while the index is in use, as seen by the writer of snapshots: a backup that
/// lost its lock (it could not refresh it for too long) may refer to packs a prune has since
/// deleted, so its snapshot must not be written.
pub trait LockHealth: Send + Sync {
    /// `Err` with the reason when the lock has been lost.
    fn check(&self) -> std::result::Result<(), String>;
}

/// The lock (if any) a typestate carries; implemented by [`Opened`] and [`Indexed`].
pub trait StateLock {
    /// The lock, if the index was loaded under one.
    fn lock(&self) -> Option<&Arc<dyn LockHealth>>;
}

impl StateLock for Opened {
    fn lock(&self) -> Option<&Arc<dyn LockHealth>> {
        None
    }
}

impl StateLock for Indexed {
    fn lock(&self) -> Option<&Arc<dyn LockHealth>> {
        self.lock.as_ref()
    }
}

struct Inner {
    backend: Arc<dyn Backend>,
    key: MasterKey,
    key_id: Id,
    config: Config,
}

/// One lock as [`Repository::locks`] found it.
#[derive(Debug)]
pub struct ListedLock {
    /// Its id.
    pub id: Id,
    /// Where it lives: [`FileKind::Lock`] or [`FileKind::ExclusiveLock`].
    pub place: FileKind,
    /// The storage's own time of the object, where the storage has one.
    pub stored: Option<DateTime<Utc>>,
    /// The lock, or why it could not be read.
    pub lock: Result<Lock>,
}

impl ListedLock {
    /// Its name in the repository (`locks/ID` or `exclusive-locks/ID`).
    pub fn path(&self) -> String {
        self.place.path(&self.id)
    }

    /// Whether its holder is gone: [`Lock::is_stale`] with the storage's time for a lock
    /// that reads; one that cannot be read is stale once its object is older than a live
    /// holder's ever is (by the storage's time; never without one).
    pub fn is_stale(&self, now: DateTime<Utc>) -> bool {
        match &self.lock {
            Ok(l) => l.is_stale(now, self.stored),
            Err(_) => self.stored.is_some_and(|s| {
                (now - s).to_std().is_ok_and(|age| {
                    age > crate::lock::STALE_AFTER + crate::lock::STORAGE_CLOCK_MARGIN
                })
            }),
        }
    }

    /// Whether it stops a prune: a live `prune` lock in `exclusive-locks/`. A `prune` lock in
    /// `locks/`, where append clients of a repository server may write, does not (§3.3).
    pub fn is_live_prune(&self, now: DateTime<Utc>) -> bool {
        self.place == FileKind::ExclusiveLock
            && self.lock.as_ref().is_ok_and(|l| {
                l.kind == crate::lock::LockKind::Prune && !l.is_stale(now, self.stored)
            })
    }
}

/// An open repository.
pub struct Repository<S = Opened> {
    inner: Arc<Inner>,
    state: S,
}

impl<S> Clone for Repository<S>
where
    S: Clone,
{
    fn clone(&self) -> Self {
        Repository {
            inner: self.inner.clone(),
            state: self.state.clone(),
        }
    }
}

impl Clone for Indexed {
    fn clone(&self) -> Self {
        Indexed {
            index: self.index.clone(),
            pending: self.pending.clone(),
            lock: self.lock.clone(),
            skipped: self.skipped.clone(),
        }
    }
}

impl Clone for Opened {
    fn clone(&self) -> Self {
        Opened
    }
}

impl Repository<Opened> {
    fn opened(backend: Arc<dyn Backend>, key: MasterKey, key_id: Id, config: Config) -> Self {
        Repository {
            inner: Arc::new(Inner {
                backend,
                key,
                key_id,
                config,
            }),
            state: Opened,
        }
    }

    /// Creates a repository: config and a first key. Refuses if a config already exists.
    pub fn init(
        backend: Arc<dyn Backend>,
        password: &[u8],
        config: Config,
        kdf: KdfParams,
    ) -> Result<Repository<Opened>> {
        config.check().map_err(|e| corrupt("config", e))?;
        if backend.head("config")?.is_some() {
            return Err(RepoError::AlreadyInitialized {
                location: backend.location(),
            });
        }
        kdf.check().map_err(|e| corrupt("key", e))?;
        let key = MasterKey::generate();
        let kf = KeyFile::create(&key, password, kdf).map_err(|e| corrupt("key", e))?;
        let kf_bytes = serde_json::to_vec_pretty(&kf).expect("serializable");
        let key_id = Id::of_stored(&kf_bytes);
        backend.put(&FileKind::Key.path(&key_id), Bytes::from(kf_bytes))?;
        let cfg = serde_json::to_vec(&config).expect("serializable");
        match backend.put(
            "config",
            Bytes::from(seal_object(&key, ObjectKind::Config, &cfg, 0)),
        ) {
            Err(BackendError::AlreadyExists { .. }) => {
                return Err(RepoError::AlreadyInitialized {
                    location: backend.location(),
                });
            }
            r => r?,
        }
        Ok(Repository::opened(backend, key, key_id, config))
    }

    /// Opens with a password: finds the key file it opens, then reads the config.
    pub fn open(backend: Arc<dyn Backend>, password: &[u8]) -> Result<Repository<Opened>> {
        let location = backend.location();
        let config_bytes = match backend.get("config", None) {
            Ok(b) => b,
            Err(BackendError::NotFound { .. }) => return Err(RepoError::NotFound { location }),
            Err(e) => return Err(e.into()),
        };
        let mut key_paths = Vec::new();
        backend.list(FileKind::Key.prefix(), &mut |o| key_paths.push(o.path))?;
        // Read every key file first; skip (and name) those that cannot be tried, then try the
        // rest cheapest first: a damaged or hostile key file never locks out the others.
        let mut skipped = Vec::new();
        let mut candidates = Vec::new();
        for path in key_paths {
            let Some(id) = FileKind::Key.id_of(&path) else {
                skipped.push(format!("{path}: not a key file name"));
                continue;
            };
            let bytes = match backend.get(&path, None) {
                Ok(b) => b,
                Err(e) => {
                    skipped.push(format!("{path}: {e}"));
                    continue;
                }
            };
            if Id::of_stored(&bytes) != id {
                skipped.push(format!("{path}: its name is not the hash of its content"));
                continue;
            }
            let kf: KeyFile = match serde_json::from_slice(&bytes) {
                Ok(k) => k,
                Err(e) => {
                    skipped.push(format!("{path}: not a key file ({e})"));
                    continue;
                }
            };
            if let Err(why) = kf.params.check() {
                skipped.push(format!("{path}: {why}"));
                continue;
            }
            candidates.push((kf.params.cost(), id, path, kf));
        }
        candidates.sort_by(|a, b| (a.0, &a.2).cmp(&(b.0, &b.2)));
        let mut found = None;
        let mut tried = 0;
        for (_, id, path, kf) in candidates {
            match kf.open(password) {
                Ok(k) => {
                    found = Some((k, id));
                    break;
                }
                Err(KeyError::WrongPassword) => tried += 1,
                Err(KeyError::Malformed(why)) => skipped.push(format!("{path}: {why}")),
            }
        }
        let (key, key_id) = match found {
            Some(f) => f,
            None if tried > 0 => return Err(RepoError::WrongPassword { location, skipped }),
            None => return Err(RepoError::NoUsableKey { location, skipped }),
        };
        let plain = open_object(&key, ObjectKind::Config, &config_bytes)
            .map_err(|e| corrupt("config", e))?;
        let config: Config = serde_json::from_slice(&plain).map_err(|e| corrupt("config", e))?;
        if config.version > FORMAT_VERSION {
            return Err(RepoError::UnsupportedVersion {
                found: config.version,
            });
        }
        config.check().map_err(|e| corrupt("config", e))?;
        Ok(Repository::opened(backend, key, key_id, config))
    }

    /// Reads every index file into memory, and the entries of condemned packs (see
    /// [`crate::condemned`]) beside it. A file that cannot be read is an error that names it.
    pub fn load_index(self) -> Result<Repository<Indexed>> {
        self.load_index_inner(None)
    }

    /// [`Repository::load_index`] for a writer that took `lock` first (see [`crate::lock`]):
    /// snapshots are then written only while the lock is held.
    pub fn load_index_locked(self, lock: Arc<dyn LockHealth>) -> Result<Repository<Indexed>> {
        self.load_index_inner(Some(lock))
    }

    /// An indexed repository from an index built by the caller (`check` and `prune` read the
    /// index files one by one, to report or remember each).
    pub fn with_index(self, index: Index, pending: Index) -> Repository<Indexed> {
        Repository {
            inner: self.inner,
            state: Indexed {
                index: Arc::new(index),
                pending: Arc::new(pending),
                lock: None,
                skipped: Arc::default(),
            },
        }
    }

    fn load_index_inner(self, lock: Option<Arc<dyn LockHealth>>) -> Result<Repository<Indexed>> {
        let mut builder = IndexBuilder::default();
        let mut skipped = Vec::new();
        // A file that cannot be opened or decoded is skipped (and kept, named, for the caller
        // to report): one damaged object must not stop every reader. A storage failure is not
        // damage and stops the load.
        let mut keep = |r: Result<()>| match r {
            Err(e @ RepoError::Corrupt { .. }) => {
                skipped.push(e);
                Ok(())
            }
            r => r,
        };
        for id in self.ids(FileKind::Index)? {
            let mut packs = Vec::new();
            let read = self.read_index_file(&FileKind::Index.path(&id), |p, e| packs.push((p, e)));
            if read.is_ok() {
                for (pack, entries) in packs {
                    builder.add_pack(pack, &entries);
                }
            }
            keep(read)?;
        }
        let mut pending = IndexBuilder::default();
        for id in self.ids(FileKind::Condemned)? {
            let mut packs = Vec::new();
            let read = self.read_condemned(&id, |p, e| packs.push((p, e)));
            if read.is_ok() {
                for (pack, entries) in packs {
                    pending.add_pack(pack, &entries);
                }
            }
            keep(read.map(|_| ()))?;
        }
        Ok(Repository {
            inner: self.inner,
            state: Indexed {
                index: Arc::new(builder.finish()),
                pending: Arc::new(pending.finish()),
                lock,
                skipped: Arc::new(skipped),
            },
        })
    }
}

impl<S> Repository<S> {
    /// The storage.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.inner.backend
    }

    /// The master key.
    pub fn key(&self) -> &MasterKey {
        &self.inner.key
    }

    /// The key file this repository was opened with.
    pub fn key_id(&self) -> &Id {
        &self.inner.key_id
    }

    /// The ids of every object of `kind` (names that are not ids are skipped).
    pub fn ids(&self, kind: FileKind) -> Result<Vec<Id>> {
        let mut ids = Vec::new();
        self.backend().list(kind.prefix(), &mut |o| {
            if let Some(id) = kind.id_of(&o.path) {
                ids.push(id);
            }
        })?;
        Ok(ids)
    }

    /// Every key file; one that cannot be read, is not named by its hash, does not parse or
    /// has key-derivation parameters out of bounds is returned as an error naming it (the
    /// same files [`Repository::open`] skips).
    pub fn keys(&self) -> Result<Vec<(Id, Result<KeyFile>)>> {
        let mut out = Vec::new();
        for id in self.ids(FileKind::Key)? {
            let path = FileKind::Key.path(&id);
            let key = match self.backend().get(&path, None) {
                Err(BackendError::NotFound { .. }) => continue,
                Err(e) => Err(e.into()),
                Ok(bytes) if Id::of_stored(&bytes) != id => {
                    Err(corrupt(&path, "its name is not the hash of its content"))
                }
                Ok(bytes) => serde_json::from_slice::<KeyFile>(&bytes)
                    .map_err(|e| corrupt(&path, e))
                    .and_then(|k| match k.params.check() {
                        Ok(()) => Ok(k),
                        Err(why) => Err(corrupt(&path, why)),
                    }),
            };
            out.push((id, key));
        }
        Ok(out)
    }

    /// Removes key file `id`. Refuses the key in use and the last key, so that the repository
    /// always stays openable.
    pub fn remove_key(&self, id: &Id) -> Result<(), KeyRemoveError> {
        let ids = self.ids(FileKind::Key)?;
        if !ids.contains(id) {
            return Err(KeyRemoveError::NoSuchKey(*id));
        }
        if ids.len() <= 1 {
            return Err(KeyRemoveError::Last(*id));
        }
        if id == self.key_id() {
            return Err(KeyRemoveError::InUse(*id));
        }
        self.backend()
            .delete(&FileKind::Key.path(id))
            .map_err(RepoError::from)?;
        Ok(())
    }

    /// Stores a lock; returns its id. A prune's lock goes to `exclusive-locks/`, a place of its
    /// own that a repository server lets only admin clients write (`docs/design.md` §3.3).
    pub fn write_lock(&self, lock: &Lock) -> Result<Id> {
        let json = serde_json::to_vec(lock).expect("serializable");
        self.save_object(lock_place(lock.kind), ObjectKind::Lock, &json)
    }

    /// Every lock, in `locks/` and `exclusive-locks/`, with where it lives and the storage's
    /// own time of its object; one that cannot be read is returned as an error naming it (a
    /// lock deleted while listing is skipped).
    pub fn locks(&self) -> Result<Vec<ListedLock>> {
        let mut listed = Vec::new();
        for place in [FileKind::Lock, FileKind::ExclusiveLock] {
            self.backend().list(place.prefix(), &mut |o| {
                if let Some(id) = place.id_of(&o.path) {
                    listed.push((place, id, o.mtime.map(DateTime::<Utc>::from)));
                }
            })?;
        }
        let mut out = Vec::new();
        for (place, id, stored) in listed {
            let lock = match self.load_object(place, ObjectKind::Lock, &id) {
                Err(RepoError::Backend(BackendError::NotFound { .. })) => continue,
                Err(e) => Err(e),
                Ok(plain) => {
                    serde_json::from_slice(&plain).map_err(|e| corrupt(place.path(&id), e))
                }
            };
            out.push(ListedLock {
                id,
                place,
                stored,
                lock,
            });
        }
        Ok(out)
    }

    /// Removes a lock, from `locks/` or else `exclusive-locks/` (already gone is fine).
    pub fn remove_lock(&self, id: &Id) -> Result<()> {
        for place in [FileKind::Lock, FileKind::ExclusiveLock] {
            match self.backend().delete(&place.path(id)) {
                Ok(()) => return Ok(()),
                Err(BackendError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Reads condemned list `id`: its stamp, and `f` per pack.
    pub fn read_condemned(
        &self,
        id: &Id,
        mut f: impl FnMut(Id, Vec<PackEntry>),
    ) -> Result<crate::condemned::Stamp> {
        let path = FileKind::Condemned.path(id);
        let payload = self.load_object(FileKind::Condemned, ObjectKind::Condemned, id)?;
        let mut bad = None;
        let stamp = crate::condemned::decode(&payload, |pack, entries| {
            if bad.is_none() {
                match entries_problem(&pack, &entries) {
                    Some(why) => bad = Some(why),
                    None => f(pack, entries),
                }
            }
        })
        .map_err(|e| corrupt(&path, e))?;
        match bad {
            Some(why) => Err(corrupt(path, why)),
            None => Ok(stamp),
        }
    }

    /// The config.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Adds a key file so that `password` also opens this repository; returns its id.
    pub fn add_key(&self, password: &[u8], kdf: KdfParams) -> Result<Id> {
        kdf.check().map_err(|e| corrupt("key", e))?;
        let kf = KeyFile::create(self.key(), password, kdf).map_err(|e| corrupt("key", e))?;
        let bytes = serde_json::to_vec_pretty(&kf).expect("serializable");
        let id = Id::of_stored(&bytes);
        self.backend()
            .put(&FileKind::Key.path(&id), Bytes::from(bytes))?;
        Ok(id)
    }

    /// Seals and stores an object under the hash of its stored bytes (create-only; an existing
    /// object of the same name has the same bytes, so that is success).
    pub fn save_object(&self, kind: FileKind, okind: ObjectKind, payload: &[u8]) -> Result<Id> {
        if payload.len() as u64 > okind.max_payload() {
            // Readers would refuse it: better to fail here, naming the kind, than to store it.
            return Err(RepoError::TooLarge {
                what: format!("{okind:?} object"),
                size: payload.len() as u64,
                cap: okind.max_payload(),
            });
        }
        let sealed = seal_object(self.key(), okind, payload, self.config().compression.max(1));
        let id = Id::of_stored(&sealed);
        match self.backend().put(&kind.path(&id), Bytes::from(sealed)) {
            Ok(()) | Err(BackendError::AlreadyExists { .. }) => Ok(id),
            Err(e) => Err(e.into()),
        }
    }

    /// Loads and opens a sealed object, checking its name against its bytes.
    pub fn load_object(&self, kind: FileKind, okind: ObjectKind, id: &Id) -> Result<Vec<u8>> {
        let path = kind.path(id);
        let bytes = self.backend().get(&path, None)?;
        if Id::of_stored(&bytes) != *id {
            return Err(corrupt(
                path,
                "content does not match its name (corrupt or truncated)",
            ));
        }
        open_object(self.key(), okind, &bytes).map_err(|e| corrupt(path, e))
    }

    /// Reads one index file, calling `f` per pack.
    pub fn read_index_file(&self, path: &str, f: impl FnMut(Id, Vec<PackEntry>)) -> Result<()> {
        let id = FileKind::Index
            .id_of(path)
            .ok_or_else(|| corrupt(path, "not an index file name"))?;
        let payload = self.load_object(FileKind::Index, ObjectKind::Index, &id)?;
        let mut f = f;
        let mut bad = None;
        decode_index_file(&payload, |pack, entries| {
            if bad.is_none() {
                match entries_problem(&pack, &entries) {
                    Some(why) => bad = Some(why),
                    None => f(pack, entries),
                }
            }
        })
        .map_err(|e| corrupt(path, e))?;
        bad.map_or(Ok(()), |why| Err(corrupt(path, why)))
    }

    /// Writes an index file for `packs`.
    pub fn save_index<'a>(
        &self,
        packs: impl IntoIterator<Item = (&'a Id, &'a [PackEntry])>,
    ) -> Result<Id> {
        self.save_object(
            FileKind::Index,
            ObjectKind::Index,
            &encode_index_file(packs),
        )
    }

    /// Stores a pack under its id (create-only; the same name means the same bytes, so an
    /// existing one is success).
    pub fn save_pack(&self, id: &Id, bytes: Vec<u8>) -> Result<()> {
        match self
            .backend()
            .put(&FileKind::Pack.path(id), Bytes::from(bytes))
        {
            Ok(()) | Err(BackendError::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Stores a condemned list.
    pub fn save_condemned<'a>(
        &self,
        stamp: crate::condemned::Stamp,
        packs: impl IntoIterator<Item = (&'a Id, &'a [PackEntry])>,
    ) -> Result<Id> {
        let payload = crate::condemned::encode(stamp, packs);
        self.save_object(FileKind::Condemned, ObjectKind::Condemned, &payload)
    }

    /// Stores a snapshot (refused when the lock it was written under is lost).
    pub fn save_snapshot(&self, snap: &Snapshot) -> Result<Id>
    where
        S: StateLock,
    {
        if let Some(lock) = self.state.lock() {
            lock.check()
                .map_err(|reason| RepoError::LockLost { reason })?;
        }
        let json = serde_json::to_vec(snap).expect("serializable");
        self.save_object(FileKind::Snapshot, ObjectKind::Snapshot, &json)
    }

    /// Loads a snapshot.
    pub fn load_snapshot(&self, id: &Id) -> Result<Snapshot> {
        let path = FileKind::Snapshot.path(id);
        let plain = self.load_object(FileKind::Snapshot, ObjectKind::Snapshot, id)?;
        serde_json::from_slice(&plain).map_err(|e| corrupt(path, e))
    }

    /// All snapshot ids (snapshots are small; their list is the one list kept whole).
    pub fn snapshot_ids(&self) -> Result<Vec<Id>> {
        self.ids(FileKind::Snapshot)
    }

    /// Every object of `kind`, with the storage's own time of it where the storage gives
    /// one. Writers' claimed times are their word; these are the storage's.
    pub fn listed(&self, kind: FileKind) -> Result<Vec<(Id, Option<DateTime<Utc>>)>> {
        let mut out = Vec::new();
        self.backend().list(kind.prefix(), &mut |o| {
            if let Some(id) = kind.id_of(&o.path) {
                out.push((id, o.mtime.map(DateTime::<Utc>::from)));
            }
        })?;
        Ok(out)
    }

    /// [`Repository::listed`], as a map of the objects that have a storage time.
    pub fn stored_times(&self, kind: FileKind) -> Result<HashMap<Id, DateTime<Utc>>> {
        Ok(self
            .listed(kind)?
            .into_iter()
            .filter_map(|(id, t)| Some((id, t?)))
            .collect())
    }

    /// Reads the header of a stored pack.
    pub fn read_pack_header(&self, pack: &Id) -> Result<Vec<PackEntry>> {
        let path = FileKind::Pack.path(pack);
        let len = self
            .backend()
            .head(&path)?
            .ok_or_else(|| BackendError::NotFound { path: path.clone() })?;
        self.read_pack_header_of(pack, len)
    }

    /// Reads and parses a pack's header, the pack's length being known (from a listing).
    pub fn read_pack_header_of(&self, pack: &Id, len: u64) -> Result<Vec<PackEntry>> {
        let path = FileKind::Pack.path(pack);
        let hdr_err = |e: PackHeaderError| corrupt(path.clone(), e);
        let trailer = self
            .backend()
            .get(&path, Some(len.saturating_sub(4)..len))?;
        let range = PackHeader::header_range(len, &trailer).map_err(hdr_err)?;
        let start = range.start;
        let sealed = self.backend().get(&path, Some(range))?;
        let entries = PackHeader::parse(self.key(), &sealed, start).map_err(hdr_err)?;
        match entries_problem(pack, &entries) {
            Some(why) => Err(corrupt(path, why)),
            None => Ok(entries),
        }
    }
}

impl Repository<Indexed> {
    /// Index files and condemned lists that could not be read, and were left out of the index.
    /// Each is a [`RepoError::Corrupt`] naming the object; hosts report them as warnings.
    pub fn skipped(&self) -> &[RepoError] {
        &self.state.skipped
    }

    /// The loaded index: what backups deduplicate against.
    pub fn index(&self) -> &Arc<Index> {
        &self.state.index
    }

    /// Entries of condemned packs: readable (for restores of snapshots written while a prune
    /// ran), never deduplicated against.
    pub fn pending(&self) -> &Arc<Index> {
        &self.state.pending
    }

    /// Drops the index (to reload it after writing).
    pub fn into_opened(self) -> Repository<Opened> {
        Repository {
            inner: self.inner,
            state: Opened,
        }
    }

    /// Where a blob is, or [`RepoError::BlobMissing`].
    pub fn locate(&self, ty: BlobType, id: &Id) -> Result<BlobLocation> {
        self.index()
            .lookup(ty, id)
            .or_else(|| self.pending().lookup(ty, id))
            .ok_or(RepoError::BlobMissing {
                ty: ty.name(),
                id: *id,
            })
    }

    /// Fetches, opens and verifies one blob. When its first location fails, the others that
    /// index files give are tried in turn; the first location's error is returned if none
    /// works.
    pub fn load_blob(&self, ty: BlobType, id: &Id) -> Result<Vec<u8>> {
        let loc = self.locate(ty, id)?;
        let first = self.load_located_blob(&loc);
        if first.is_ok() {
            return first;
        }
        self.load_from_second_locations(&loc).unwrap_or(first)
    }

    /// Tries the locations besides `loc` that index files give for its blob; `None` when there
    /// are none or none works.
    pub fn load_from_second_locations(&self, loc: &BlobLocation) -> Option<Result<Vec<u8>>> {
        let e = &loc.entry;
        let index = if self.index().lookup(e.ty, &e.id).is_some() {
            self.index()
        } else {
            self.pending()
        };
        index
            .second_locations(e.ty, &e.id)
            .iter()
            .filter(|alt| *alt != loc)
            .map(|alt| self.load_located_blob(alt))
            .find(|r| r.is_ok())
    }

    /// Fetches, opens and verifies the blob at `loc`.
    pub fn load_located_blob(&self, loc: &BlobLocation) -> Result<Vec<u8>> {
        let e = loc.entry;
        let path = FileKind::Pack.path(&loc.pack);
        let sealed = self.backend().get(
            &path,
            Some(e.offset as u64..e.offset as u64 + e.length as u64),
        )?;
        self.open_located_blob(loc, &sealed)
    }

    /// Opens a blob whose sealed bytes were already fetched from `loc`.
    pub fn open_located_blob(&self, loc: &BlobLocation, sealed: &[u8]) -> Result<Vec<u8>> {
        let e = &loc.entry;
        open_blob(self.key(), e.ty, &e.id, e.compression, e.raw_length, sealed).map_err(
            |err: BlobError| {
                corrupt(
                    format!(
                        "{} ({} blob {})",
                        FileKind::Pack.path(&loc.pack),
                        e.ty.name(),
                        e.id
                    ),
                    err,
                )
            },
        )
    }

    /// Loads and parses a tree.
    pub fn load_tree(&self, id: &Id) -> Result<Tree> {
        let plain = self.load_blob(BlobType::Tree, id)?;
        Tree::from_bytes(&plain).map_err(|e| corrupt(format!("tree {id}"), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::ObjectStoreBackend;
    use crate::compress::Compression;

    const CHEAP: KdfParams = KdfParams {
        m_cost: 64,
        t_cost: 1,
        p_cost: 1,
    };

    fn backend() -> Arc<dyn Backend> {
        Arc::new(ObjectStoreBackend::memory())
    }

    #[test]
    fn several_passwords_open_one_repository() {
        let b = backend();
        let repo = Repository::init(b.clone(), b"first", Config::default(), CHEAP).unwrap();
        repo.add_key(b"second", CHEAP).unwrap();
        let a = Repository::open(b.clone(), b"first").unwrap();
        let c = Repository::open(b.clone(), b"second").unwrap();
        assert_eq!(a.config(), c.config());
        assert_eq!(
            a.key().blob_id(b"x"),
            c.key().blob_id(b"x"),
            "one master key"
        );
        assert!(matches!(
            Repository::open(b, b"third"),
            Err(RepoError::WrongPassword { .. })
        ));
    }

    #[test]
    fn init_refuses_an_existing_repository_and_open_a_missing_one() {
        let b = backend();
        assert!(matches!(
            Repository::open(b.clone(), b"pw"),
            Err(RepoError::NotFound { .. })
        ));
        Repository::init(b.clone(), b"pw", Config::default(), CHEAP).unwrap();
        let before = b.get("config", None).unwrap();
        let again = Repository::init(b.clone(), b"other", Config::default(), CHEAP);
        assert!(matches!(again, Err(RepoError::AlreadyInitialized { .. })));
        assert_eq!(b.get("config", None).unwrap(), before, "config untouched");
    }

    #[test]
    fn tampered_objects_are_named() {
        let b = backend();
        let repo = Repository::init(b.clone(), b"pw", Config::default(), CHEAP).unwrap();
        let id = repo.save_index(std::iter::empty()).unwrap();
        let path = FileKind::Index.path(&id);
        let mut bytes = b.get(&path, None).unwrap().to_vec();
        bytes[20] ^= 1;
        b.delete(&path).unwrap();
        b.put(&path, Bytes::from(bytes)).unwrap();
        // The tampered file is left out and named; the load goes on.
        let repo = repo
            .load_index()
            .expect("a damaged index file does not stop the load");
        let skipped: Vec<String> = repo.skipped().iter().map(|e| e.to_string()).collect();
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        assert!(skipped[0].contains(&path), "{skipped:?}");
    }

    #[test]
    fn index_entries_that_no_blob_can_have_leave_their_file_out() {
        let b = backend();
        let repo = Repository::init(b.clone(), b"pw", Config::default(), CHEAP).unwrap();
        let entry = |raw_length: u32, length: u32, compression| PackEntry {
            ty: BlobType::Data,
            compression,
            id: Id([7; 32]),
            offset: 0,
            length,
            raw_length,
        };
        let good = Id([1; 32]);
        let ok = [entry(100, 128, Compression::None)];
        repo.save_index([(&good, &ok[..])]).unwrap();
        for bad in [
            // A 3 GiB data blob: over the cap, refused before anything is reserved for it.
            entry(3 << 30, 1000, Compression::Zstd),
            // Stored raw, the sealed length is exactly plaintext + 28.
            entry(100, 129, Compression::None),
            // Compressed, it is shorter than that.
            entry(100, 128, Compression::Zstd),
        ] {
            repo.save_index([(&Id([2; 32]), &[bad][..])]).unwrap();
        }
        let repo = repo.load_index().unwrap();
        assert_eq!(repo.skipped().len(), 3);
        assert!(repo.index().contains(BlobType::Data, &Id([7; 32])));
        assert_eq!(repo.index().packs(), &[good], "only the good file's pack");
        for e in repo.skipped() {
            assert!(e.to_string().contains("index/"), "{e}");
        }
    }
}
