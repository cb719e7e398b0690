//! `diff`: what changed between two snapshots, walking both trees side by side (iteratively,
//! one pair of trees per level in memory) and skipping every subtree whose id is the same in
//! both.

use std::collections::BTreeMap;

use cairn_repo_format::tree::{Node, Tree};
use cairn_repo_format::{Id, Indexed, RepoError, Repository};

use crate::treewalk::{Step, TreeWalk, push_name};

/// One difference.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Change {
    /// Only in the second snapshot.
    Added,
    /// Only in the first.
    Removed,
    /// Content (or link target) differs.
    Modified,
    /// Same content, different metadata (mode, owner, times, xattrs).
    Metadata,
    /// A different kind of entry (a file became a directory, say).
    TypeChanged,
}

impl Change {
    /// restic's one-letter code.
    pub fn code(self) -> char {
        match self {
            Change::Added => '+',
            Change::Removed => '-',
            Change::Modified => 'M',
            Change::Metadata => 'U',
            Change::TypeChanged => 'T',
        }
    }
}

/// Counts of changes.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct DiffStats {
    /// Entries added.
    pub added: u64,
    /// Entries removed.
    pub removed: u64,
    /// Entries whose content changed.
    pub modified: u64,
    /// Entries whose metadata only changed.
    pub metadata: u64,
    /// Entries whose type changed.
    pub type_changed: u64,
}

struct Differ<'a, 'f> {
    repo: &'a Repository<Indexed>,
    out: &'f mut dyn FnMut(Change, &str),
    stats: DiffStats,
}

impl Differ<'_, '_> {
    fn emit(&mut self, c: Change, path: &str) {
        match c {
            Change::Added => self.stats.added += 1,
            Change::Removed => self.stats.removed += 1,
            Change::Modified => self.stats.modified += 1,
            Change::Metadata => self.stats.metadata += 1,
            Change::TypeChanged => self.stats.type_changed += 1,
        }
        (self.out)(c, path);
    }

    /// Reports `node` (at `path`) and, for a directory, everything below it.
    fn all(&mut self, c: Change, node: Node, path: &str) -> Result<(), RepoError> {
        self.emit(c, &display(&node, path));
        let Some(sub) = node.subtree else {
            return Ok(());
        };
        let mut walk = TreeWalk::new(self.repo.load_tree(&sub)?, sub, path);
        while let Some(step) = walk.next() {
            let Step::Node(n) = step else { continue };
            self.emit(c, &display(&n, walk.path()));
            if let Some(s) = n.subtree {
                walk.enter(self.repo.load_tree(&s)?, s, n);
            }
        }
        Ok(())
    }

    /// The entries of trees `a` and `b` paired by name: those of `b` in name order (with
    /// their counterpart in `a`, if any), then those only in `a`.
    fn pairs(&self, a: &Id, b: &Id) -> Result<std::vec::IntoIter<Pair>, RepoError> {
        let by_name = |t: Tree| -> BTreeMap<Vec<u8>, Node> {
            t.nodes.into_iter().map(|n| (n.name.0.clone(), n)).collect()
        };
        let mut left = by_name(self.repo.load_tree(a)?);
        let right = by_name(self.repo.load_tree(b)?);
        let mut out = Vec::with_capacity(right.len() + left.len());
        for (name, r) in right {
            out.push(match left.remove(&name) {
                None => Pair::Added(r),
                Some(l) => Pair::Both(l, r),
            });
        }
        out.extend(left.into_values().map(Pair::Removed));
        Ok(out.into_iter())
    }

    /// Compares trees `a` and `b` (the directory `root`), depth-first over an explicit stack
    /// with one path buffer, skipping every pair of subtrees with the same id.
    fn trees(&mut self, a: &Id, b: &Id, root: &str) -> Result<(), RepoError> {
        if a == b {
            return Ok(());
        }
        let mut path = root.to_string();
        // Per open directory: its remaining pairs and the length of its path.
        let mut stack = vec![(self.pairs(a, b)?, path.len())];
        while let Some((pairs, dir_len)) = stack.last_mut() {
            let Some(pair) = pairs.next() else {
                stack.pop();
                continue;
            };
            path.truncate(*dir_len);
            let name = match &pair {
                Pair::Added(n) | Pair::Removed(n) | Pair::Both(_, n) => &n.name,
            };
            push_name(&mut path, name);
            match pair {
                Pair::Added(r) => self.all(Change::Added, r, &path)?,
                Pair::Removed(l) => self.all(Change::Removed, l, &path)?,
                Pair::Both(l, r) => {
                    if l.kind != r.kind {
                        self.emit(Change::TypeChanged, &path);
                        continue;
                    }
                    if l.content != r.content || l.linktarget != r.linktarget || l.rdev != r.rdev {
                        self.emit(Change::Modified, &path);
                    } else if (l.mode, l.uid, l.gid, l.mtime, &l.xattrs)
                        != (r.mode, r.uid, r.gid, r.mtime, &r.xattrs)
                    {
                        self.emit(Change::Metadata, &display(&r, &path));
                    }
                    if let (Some(a), Some(b)) = (&l.subtree, &r.subtree)
                        && a != b
                    {
                        let pairs = self.pairs(a, b)?;
                        stack.push((pairs, path.len()));
                    }
                }
            }
        }
        Ok(())
    }
}

/// An entry of either tree, paired by name.
// Held in one vector per open directory; boxing would cost an allocation per pair.
#[allow(clippy::large_enum_variant)]
enum Pair {
    /// Only in the second.
    Added(Node),
    /// Only in the first.
    Removed(Node),
    /// In both: (first, second).
    Both(Node, Node),
}

fn display(n: &Node, path: &str) -> String {
    if n.subtree.is_some() {
        format!("{path}/")
    } else {
        path.to_string()
    }
}

/// Reports every difference between the trees `a` and `b` to `out`, parents before children.
pub fn run(
    repo: &Repository<Indexed>,
    a: &Id,
    b: &Id,
    out: &mut dyn FnMut(Change, &str),
) -> Result<DiffStats, RepoError> {
    let mut d = Differ {
        repo,
        out,
        stats: DiffStats::default(),
    };
    d.trees(a, b, "/")?;
    Ok(d.stats)
}
