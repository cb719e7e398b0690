//! `diff`: what changed between two snapshots, walking both trees side by side and skipping
//! every subtree whose id is the same in both.

use std::collections::BTreeMap;

use cairn_repo_format::tree::{Node, Tree};
use cairn_repo_format::{Id, Indexed, RepoError, Repository};

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

    /// Reports `node` and, for a directory, everything below it.
    fn all(&mut self, c: Change, node: &Node, path: &str) -> Result<(), RepoError> {
        self.emit(c, &display(node, path));
        if let Some(sub) = &node.subtree {
            for n in self.repo.load_tree(sub)?.nodes {
                let p = join(path, &n);
                self.all(c, &n, &p)?;
            }
        }
        Ok(())
    }

    fn trees(&mut self, a: &Id, b: &Id, path: &str) -> Result<(), RepoError> {
        if a == b {
            return Ok(());
        }
        let by_name = |t: Tree| -> BTreeMap<Vec<u8>, Node> {
            t.nodes.into_iter().map(|n| (n.name.0.clone(), n)).collect()
        };
        let mut left = by_name(self.repo.load_tree(a)?);
        let right = by_name(self.repo.load_tree(b)?);
        for (name, r) in right {
            let p = join(path, &r);
            match left.remove(&name) {
                None => self.all(Change::Added, &r, &p)?,
                Some(l) => self.node(&l, &r, &p)?,
            }
        }
        for l in left.into_values() {
            let p = join(path, &l);
            self.all(Change::Removed, &l, &p)?;
        }
        Ok(())
    }

    fn node(&mut self, l: &Node, r: &Node, path: &str) -> Result<(), RepoError> {
        if l.kind != r.kind {
            self.emit(Change::TypeChanged, path);
            return Ok(());
        }
        if l.content != r.content || l.linktarget != r.linktarget || l.rdev != r.rdev {
            self.emit(Change::Modified, path);
        } else if (l.mode, l.uid, l.gid, l.mtime, &l.xattrs)
            != (r.mode, r.uid, r.gid, r.mtime, &r.xattrs)
        {
            self.emit(Change::Metadata, &display(r, path));
        }
        if let (Some(a), Some(b)) = (&l.subtree, &r.subtree) {
            self.trees(a, b, path)?;
        }
        Ok(())
    }
}

fn join(dir: &str, n: &Node) -> String {
    format!("{}/{}", dir.trim_end_matches('/'), n.name.display())
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
