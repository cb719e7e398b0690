//! `repair`: getting a damaged repository back to a consistent state, without ever changing
//! what is stored under an existing name.
//!
//! * [`index`] rebuilds the index from the packs themselves: entries of readable index files
//!   whose packs still exist are kept, every pack no readable index file names is read for
//!   its header, and the old index files are then replaced.
//! * [`snapshots`] writes, for each snapshot that refers to lost data, a new snapshot without
//!   the lost files (a directory whose tree is lost stays, empty), tagged `repaired` and
//!   naming the original; the originals stay unless asked to go.

use std::collections::{HashMap, HashSet};

use cairn_repo_format::blob::SealedBlob;
use cairn_repo_format::lock::LockKind;
use cairn_repo_format::pack::{PackBuilder, PackEntry};
use cairn_repo_format::snapshot::Snapshot;
use cairn_repo_format::tree::{Node, Tree};
use cairn_repo_format::{
    BackendError, BlobType, FileKind, Id, Indexed, Opened, RepoError, Repository,
};

use crate::inventory;
use crate::lock::{LockError, RepoLock};
use crate::treewalk::push_name;

/// Why a repair stopped.
#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    /// The lock could not be taken.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// Storage failed.
    #[error(transparent)]
    Repo(#[from] RepoError),
}

/// What `repair index` did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct IndexRepair {
    /// Index files that could not be read (replaced).
    pub bad_index_files: u64,
    /// Packs whose headers were read because no readable index file named them.
    pub packs_read: u64,
    /// Packs whose header could not be read (left out of the index; `prune` removes them).
    pub packs_unreadable: u64,
    /// Index entries dropped because their pack is gone.
    pub packs_gone: u64,
    /// Blobs in the new index.
    pub blobs: u64,
}

/// Rebuilds the index from the packs. Takes the prune lock: it replaces index files.
pub fn index(repo: Repository<Opened>, cx: &crate::Context) -> Result<IndexRepair, RepairError> {
    let _lock = RepoLock::acquire(&repo, LockKind::Prune)?;
    let mut out = IndexRepair::default();
    let mut bad = Vec::new();
    let all_files = repo.ids(FileKind::Index)?;
    let (repo, inv) = inventory::load(repo, &mut |e| {
        cx.emit(crate::Event::from_repo_error(&e));
        bad.push(e)
    })?;
    out.bad_index_files = bad.len() as u64;
    let listed = inventory::list_packs(&repo)?;
    let mut packs: HashMap<Id, Vec<PackEntry>> = HashMap::new();
    let index = repo.index();
    for pos in 0..index.len() {
        let (n, e) = index.entry_at(pos);
        let pack = index.packs()[n as usize];
        if listed.contains_key(&pack) {
            packs.entry(pack).or_default().push(e);
        }
    }
    out.packs_gone = index
        .packs()
        .iter()
        .filter(|p| !listed.contains_key(*p))
        .count() as u64;
    let pending: HashSet<&Id> = repo.pending().packs().iter().collect();
    let mut unindexed: Vec<&Id> = listed
        .keys()
        .filter(|p| !packs.contains_key(*p) && !pending.contains(p))
        .collect();
    unindexed.sort();
    for pack in unindexed {
        match repo.read_pack_header(pack) {
            Ok(entries) => {
                out.packs_read += 1;
                packs.insert(*pack, entries);
            }
            Err(e) => {
                out.packs_unreadable += 1;
                cx.emit(crate::Event::ObjectDamaged {
                    object: FileKind::Pack.path(pack),
                    problem: format!("{e} (left out of the index)"),
                });
            }
        }
    }
    let mut ids: Vec<&Id> = packs.keys().collect();
    ids.sort();
    // Files of about 50,000 entries, as backups and prune write them (far below the cap on an
    // index file's size, whatever the packs hold).
    let mut group: Vec<(&Id, &[PackEntry])> = Vec::new();
    let mut entries = 0;
    for (i, p) in ids.iter().enumerate() {
        group.push((*p, packs[*p].as_slice()));
        entries += packs[*p].len();
        if entries >= 50_000 || i + 1 == ids.len() {
            out.blobs += entries as u64;
            repo.save_index(std::mem::take(&mut group))?;
            entries = 0;
        }
    }
    // Every old file goes, readable or not: the new files cover what they said.
    drop(inv);
    for id in all_files {
        match repo.backend().delete(&FileKind::Index.path(&id)) {
            Ok(()) | Err(BackendError::NotFound { .. }) => {}
            Err(e) => return Err(RepoError::from(e).into()),
        }
    }
    Ok(out)
}

/// What `repair snapshots` did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SnapshotRepair {
    /// Snapshots read.
    pub checked: u64,
    /// New snapshots written (one per damaged one).
    pub repaired: Vec<(Id, Id)>,
    /// Originals removed (with `forget`).
    pub removed: u64,
    /// Files left out, by snapshot path.
    pub files_dropped: Vec<String>,
}

struct Rewriter<'r> {
    repo: &'r Repository<Indexed>,
    present: HashMap<Id, u64>,
    memo: HashMap<Id, Id>,
    new_trees: Vec<SealedBlob>,
    queued: HashSet<Id>,
    dropped: Vec<String>,
}

impl Rewriter<'_> {
    /// Whether a data blob is indexed in a pack that exists.
    fn available(&self, id: &Id) -> bool {
        self.repo
            .locate(BlobType::Data, id)
            .is_ok_and(|loc| self.present.contains_key(&loc.pack))
    }

    /// The id of `tree` with lost files left out (the same id when nothing is lost). Bottom-up
    /// over an explicit stack of trees being rebuilt, with one path buffer: no depth
    /// overflows the stack.
    fn rewrite(&mut self, tree: &Id, path: &str) -> Id {
        if let Some(done) = self.memo.get(tree) {
            return *done;
        }
        let mut path = path.to_string();
        let mut cur = self.open(tree, &path);
        // The trees above `cur`, each holding the node whose subtree `cur` is.
        let mut above: Vec<Rebuild> = Vec::new();
        loop {
            let Some(mut node) = cur.nodes.next() else {
                let id = self.store(cur.src, std::mem::take(&mut cur.out));
                let Some(parent) = above.pop() else {
                    return id;
                };
                cur = parent;
                if let Some(mut node) = cur.waiting.take() {
                    node.subtree = Some(id);
                    cur.out.push(node);
                }
                continue;
            };
            path.truncate(cur.dir_len);
            push_name(&mut path, &node.name);
            if let Some(content) = &node.content {
                let lost = content.iter().filter(|id| !self.available(id)).count();
                if lost > 0 {
                    self.dropped
                        .push(format!("{path}: {lost} of its blobs are lost; left out"));
                    continue;
                }
            }
            match node.subtree {
                Some(sub) => match self.memo.get(&sub) {
                    Some(done) => {
                        node.subtree = Some(*done);
                        cur.out.push(node);
                    }
                    None => {
                        let mut child = self.open(&sub, &path);
                        std::mem::swap(&mut cur, &mut child);
                        child.waiting = Some(node);
                        above.push(child);
                    }
                },
                None => cur.out.push(node),
            }
        }
    }

    /// Starts rebuilding `tree` (the directory at `path`); an unreadable one is rebuilt empty.
    fn open(&mut self, tree: &Id, path: &str) -> Rebuild {
        let t = match self.repo.load_tree(tree) {
            Ok(t) => t,
            Err(e) => {
                self.dropped
                    .push(format!("{path}: directory contents lost ({e})"));
                Tree { nodes: Vec::new() }
            }
        };
        Rebuild {
            src: *tree,
            out: Vec::with_capacity(t.nodes.len()),
            nodes: t.nodes.into_iter(),
            dir_len: path.len(),
            waiting: None,
        }
    }

    /// Stores the rebuilt `nodes` of tree `src` (when they differ from it and the repository
    /// lacks them) and returns their id.
    fn store(&mut self, src: Id, nodes: Vec<Node>) -> Id {
        let bytes = Tree { nodes }.to_bytes();
        let id = self.repo.key().blob_id(&bytes);
        if id != src && self.repo.locate(BlobType::Tree, &id).is_err() && self.queued.insert(id) {
            self.new_trees.push(cairn_repo_format::blob::seal_blob(
                self.repo.key(),
                BlobType::Tree,
                id,
                &bytes,
                self.repo.config().compression,
            ));
        }
        self.memo.insert(src, id);
        id
    }
}

/// A tree being rebuilt by [`Rewriter::rewrite`].
struct Rebuild {
    src: Id,
    nodes: std::vec::IntoIter<Node>,
    out: Vec<Node>,
    /// Length of the directory's path in the walk's path buffer.
    dir_len: usize,
    /// The node whose subtree is being rebuilt above this one.
    waiting: Option<Node>,
}

/// Writes a repaired copy of every snapshot in `which` (all when empty) that refers to lost
/// data. With `forget`, the damaged originals are removed once their copies are stored.
pub fn snapshots(
    repo: Repository<Opened>,
    which: &[Id],
    forget: bool,
    dry_run: bool,
) -> Result<SnapshotRepair, RepairError> {
    let repo = crate::lock::index_for_backup(repo)?;
    let ids = if which.is_empty() {
        repo.snapshot_ids()?
    } else {
        which.to_vec()
    };
    let mut out = SnapshotRepair::default();
    let mut rw = Rewriter {
        present: inventory::list_packs(&repo)?,
        repo: &repo,
        memo: HashMap::new(),
        new_trees: Vec::new(),
        queued: HashSet::new(),
        dropped: Vec::new(),
    };
    let mut changed: Vec<(Id, Snapshot)> = Vec::new();
    for id in ids {
        let snap = repo.load_snapshot(&id)?;
        out.checked += 1;
        let before = rw.dropped.len();
        let tree = rw.rewrite(&snap.tree, "/");
        for d in &mut rw.dropped[before..] {
            *d = format!("snapshot {}: {d}", id.short());
        }
        if tree != snap.tree {
            let mut new = snap.clone();
            new.tree = tree;
            new.original = Some(snap.original.unwrap_or(id));
            if !new.tags.iter().any(|t| t == "repaired") {
                new.tags.push("repaired".into());
            }
            changed.push((id, new));
        }
    }
    out.files_dropped = std::mem::take(&mut rw.dropped);
    if dry_run || changed.is_empty() {
        out.repaired = changed.iter().map(|(id, _)| (*id, *id)).collect();
        return Ok(out);
    }
    // New trees go into packs and an index file before any snapshot names them.
    let target = repo.config().pack_size as usize;
    let mut builder = PackBuilder::default();
    let mut written: Vec<(Id, Vec<PackEntry>)> = Vec::new();
    let blobs = std::mem::take(&mut rw.new_trees);
    let last = blobs.len();
    for (i, blob) in blobs.into_iter().enumerate() {
        builder.add(&blob);
        if builder.len() >= target || i + 1 == last {
            let pack = std::mem::take(&mut builder).finish(repo.key());
            repo.save_pack(&pack.id, pack.bytes)?;
            written.push((pack.id, pack.entries));
        }
    }
    if !written.is_empty() {
        repo.save_index(written.iter().map(|(p, e)| (p, e.as_slice())))?;
    }
    for (old, new) in changed {
        let new_id = repo.save_snapshot(&new)?;
        out.repaired.push((old, new_id));
        if forget {
            crate::forget::remove(&repo, &old)?;
            out.removed += 1;
        }
    }
    Ok(out)
}
