//! Reachability: which blobs the snapshots refer to. [`Reach`] walks snapshot trees depth-first
//! (iteratively, one tree per level in memory), visits each tree once however many snapshots share it, and
//! records used blobs as one bit per index entry, so marking ten million blobs costs 1.2 MiB.
//! `check`, `prune`, `stats` and `copy` build on it.

use cairn_repo_format::tree::Tree;
use cairn_repo_format::{BackendError, BlobType, Id, Indexed, RepoError, Repository};

use crate::treewalk::{Step, TreeWalk};

/// A fixed-size set of bits.
#[derive(Clone, Debug, Default)]
pub struct BitSet(Vec<u64>);

impl BitSet {
    /// `n` bits, all clear.
    pub fn new(n: usize) -> BitSet {
        BitSet(vec![0; n.div_ceil(64)])
    }

    /// Sets bit `i`; returns whether it was clear.
    pub fn insert(&mut self, i: usize) -> bool {
        let (w, b) = (i / 64, 1u64 << (i % 64));
        let was_clear = self.0[w] & b == 0;
        self.0[w] |= b;
        was_clear
    }

    /// Whether bit `i` is set.
    pub fn contains(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
}

/// Something wrong found while walking.
#[derive(Debug)]
pub enum Problem {
    /// A referenced blob is in no index.
    Missing {
        /// Blob type.
        ty: BlobType,
        /// Blob id.
        id: Id,
        /// Path inside the snapshot that refers to it.
        path: String,
    },
    /// An entry of a tree breaks a rule that restore and dump rely on
    /// ([`crate::treecheck`]); only walks with [`Reach::check_trees`] set look.
    BadNode {
        /// The tree holding it.
        tree: Id,
        /// The directory's path inside the snapshot.
        path: String,
        /// What is wrong, naming the entry.
        problem: crate::treecheck::NodeProblem,
    },
    /// A tree could not be loaded or parsed.
    BadTree {
        /// Tree id.
        id: Id,
        /// Its path inside the snapshot.
        path: String,
        /// Why.
        error: RepoError,
    },
}

impl Problem {
    /// As an event, for the snapshot being walked.
    pub fn into_event(self, snapshot: Option<Id>) -> crate::Event {
        match self {
            Problem::Missing { ty, id, path } => crate::Event::BlobMissing {
                snapshot,
                path,
                blob_type: ty.name(),
                blob: id,
            },
            Problem::BadNode {
                tree,
                path,
                problem,
            } => crate::Event::ObjectDamaged {
                object: match snapshot {
                    Some(s) => format!("tree {tree} (snapshot {}, {path})", s.short()),
                    None => format!("tree {tree} ({path})"),
                },
                problem: format!(
                    "entry {}: {}",
                    crate::treecheck::escaped(&problem.name),
                    problem.problem
                ),
            },
            Problem::BadTree { id, path, error } => crate::Event::ObjectDamaged {
                object: match snapshot {
                    Some(s) => format!("tree {id} (snapshot {}, {path})", s.short()),
                    None => format!("tree {id} ({path})"),
                },
                problem: match error {
                    RepoError::Corrupt { reason, .. } => reason,
                    e => e.to_string(),
                },
            },
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Missing { ty, id, path } => write!(
                f,
                "{path}: {} blob {id} is not in any index (data missing)",
                ty.name()
            ),
            Problem::BadNode {
                tree,
                path,
                problem,
            } => write!(
                f,
                "{path}: tree {tree}: entry {}: {}",
                crate::treecheck::escaped(&problem.name),
                problem.problem
            ),
            Problem::BadTree { id, path, error } => write!(f, "{path}: tree {id}: {error}"),
        }
    }
}

/// Where a used blob's entry is: the main index or the condemned packs' entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// Position in [`Repository::index`].
    Main(usize),
    /// Position in [`Repository::pending`].
    Pending(usize),
}

/// The used-blob sets of one walk.
pub struct Reach<'r> {
    repo: &'r Repository<Indexed>,
    /// Used entries of the main index.
    pub main: BitSet,
    /// Used entries of condemned packs.
    pub pending: BitSet,
    /// Also check each tree's entries ([`crate::treecheck`]), reporting [`Problem::BadNode`]
    /// (`check` sets it).
    pub check_trees: bool,
}

impl<'r> Reach<'r> {
    /// Nothing marked yet.
    pub fn new(repo: &'r Repository<Indexed>) -> Self {
        Reach {
            repo,
            main: BitSet::new(repo.index().len()),
            pending: BitSet::new(repo.pending().len()),
            check_trees: false,
        }
    }

    /// Where blob (`ty`, `id`) is, if anywhere.
    pub fn slot(&self, ty: BlobType, id: &Id) -> Option<Slot> {
        if let Some(p) = self.repo.index().position(ty, id) {
            return Some(Slot::Main(p));
        }
        self.repo.pending().position(ty, id).map(Slot::Pending)
    }

    /// Marks a blob used: `Some(true)` the first time, `Some(false)` after, `None` if it is in
    /// no index.
    pub fn mark(&mut self, ty: BlobType, id: &Id) -> Option<bool> {
        Some(match self.slot(ty, id)? {
            Slot::Main(p) => self.main.insert(p),
            Slot::Pending(p) => self.pending.insert(p),
        })
    }

    /// Walks the tree `root` (shown as `path`), marking everything it refers to. Trees seen
    /// before are skipped with everything below them. `data` is called once per newly marked
    /// data blob. The walk is iterative ([`TreeWalk`]): no depth overflows the stack.
    pub fn walk(
        &mut self,
        root: &Id,
        path: &str,
        problem: &mut dyn FnMut(Problem),
        data: &mut dyn FnMut(&Id),
    ) {
        let Some(tree) = self.open(root, path, problem) else {
            return;
        };
        let mut walk = TreeWalk::new(tree, *root, path);
        while let Some(step) = walk.next() {
            let Step::Node(node) = step else { continue };
            for id in node.content.iter().flatten() {
                match self.mark(BlobType::Data, id) {
                    None => problem(Problem::Missing {
                        ty: BlobType::Data,
                        id: *id,
                        path: walk.path().to_string(),
                    }),
                    Some(true) => data(id),
                    Some(false) => {}
                }
            }
            if let Some(sub) = node.subtree
                && let Some(tree) = self.open(&sub, walk.path(), problem)
            {
                walk.enter(tree, sub, node);
            }
        }
    }

    /// Marks tree `id` (at `path`) and loads it, the first time it is reached; `None` when it
    /// was reached before, or is missing or damaged (reported to `problem`).
    fn open(&mut self, id: &Id, path: &str, problem: &mut dyn FnMut(Problem)) -> Option<Tree> {
        match self.mark(BlobType::Tree, id) {
            None => {
                problem(Problem::Missing {
                    ty: BlobType::Tree,
                    id: *id,
                    path: path.to_string(),
                });
                return None;
            }
            Some(false) => return None,
            Some(true) => {}
        }
        match self.repo.load_tree(id) {
            Ok(t) => {
                if self.check_trees {
                    let index = (self.repo.index(), self.repo.pending());
                    let raw = |b: &Id| {
                        index
                            .0
                            .lookup(BlobType::Data, b)
                            .or_else(|| index.1.lookup(BlobType::Data, b))
                            .map(|l| l.entry.raw_length)
                    };
                    for p in crate::treecheck::problems(&t, &raw) {
                        problem(Problem::BadNode {
                            tree: *id,
                            path: path.to_string(),
                            problem: p,
                        });
                    }
                }
                Some(t)
            }
            Err(error) => {
                problem(Problem::BadTree {
                    id: *id,
                    path: path.to_string(),
                    error,
                });
                None
            }
        }
    }

    /// Walks each snapshot of `ids` that `walked` does not hold yet (adding it), marking what
    /// it refers to. A snapshot that cannot be loaded goes to `problem`, as does every problem
    /// found below it (prefixed with the snapshot); one removed meanwhile (by a concurrent
    /// `forget`) is skipped. Returns how many snapshots were walked.
    pub fn walk_snapshots(
        &mut self,
        ids: &[Id],
        walked: &mut std::collections::HashSet<Id>,
        problem: &mut dyn FnMut(crate::Event),
    ) -> u64 {
        let mut n = 0;
        for id in ids {
            if !walked.insert(*id) {
                continue;
            }
            let snap = match self.repo.load_snapshot(id) {
                Ok(s) => s,
                Err(RepoError::Backend(BackendError::NotFound { .. })) => continue,
                Err(e) => {
                    problem(crate::Event::from_repo_error(&e));
                    continue;
                }
            };
            n += 1;
            self.walk(
                &snap.tree,
                "/",
                &mut |p| problem(p.into_event(Some(*id))),
                &mut |_| {},
            );
        }
        n
    }
}
