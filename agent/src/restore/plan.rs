//! Plan stage: walks the snapshot's trees depth-first (one tree per level in memory, never the
//! whole snapshot), applies the subpath and the include/exclude patterns, refuses unsafe names,
//! and emits what to create, in order: a directory before its entries, its metadata after them.

use std::path::{Path, PathBuf};

use cairn_repo_format::tree::{Node, NodeType};
use cairn_repo_format::{Id, Indexed, RepoError, Repository};

use crate::filter::Patterns;

/// One step of a restore.
pub enum Step<'n> {
    /// Enter (create) a directory at `rel` (relative to the target; empty = the target).
    EnterDir {
        /// Relative path.
        rel: &'n Path,
        /// Metadata to apply when leaving.
        node: Option<&'n Node>,
    },
    /// All entries of the directory at `rel` are done.
    LeaveDir {
        /// Relative path.
        rel: &'n Path,
        /// Metadata to apply.
        node: Option<&'n Node>,
    },
    /// Create a non-directory entry.
    Entry {
        /// Relative path.
        rel: &'n Path,
        /// Its node.
        node: &'n Node,
    },
    /// An entry is refused (unsafe name) or its tree is unreadable.
    Problem {
        /// Where in the snapshot.
        rel: &'n Path,
        /// What.
        message: String,
    },
}

/// What to restore.
pub struct Selection {
    /// Include patterns (empty: everything).
    pub include: Patterns,
    /// Exclude patterns.
    pub exclude: Patterns,
}

impl Selection {
    fn excluded(&self, snap_path: &Path) -> bool {
        self.exclude.matches(snap_path)
    }

    fn included(&self, snap_path: &Path) -> bool {
        self.include.is_empty() || self.include.matches(snap_path)
    }
}

/// Walks a tree, calling `f` for each step. `snap_prefix` is the tree's path inside the
/// snapshot (`/` for the root), used for pattern matching; `rel` is where it goes in the
/// target. Returns whether anything below was restored.
pub fn walk_tree(
    repo: &Repository<Indexed>,
    tree_id: &Id,
    snap_prefix: &Path,
    rel: &Path,
    sel: &Selection,
    inherited_include: bool,
    f: &mut dyn FnMut(Step<'_>),
) -> Result<bool, RepoError> {
    let tree = repo.load_tree(tree_id)?;
    let mut emitted = false;
    for node in &tree.nodes {
        let name = std::ffi::OsStr::from_bytes_compat(&node.name.0);
        let child_rel = rel.join(name);
        if !Node::name_is_safe(&node.name.0) {
            let message = format!("refusing unsafe name {:?} in tree {tree_id}", node.name);
            f(Step::Problem {
                rel: &child_rel,
                message,
            });
            continue;
        }
        let snap_path = snap_prefix.join(name);
        if sel.excluded(&snap_path) {
            continue;
        }
        let included = inherited_include || sel.included(&snap_path);
        match node.kind {
            NodeType::Dir => {
                let Some(sub) = node.subtree else {
                    f(Step::Problem {
                        rel: &child_rel,
                        message: "directory without a tree".into(),
                    });
                    continue;
                };
                if included {
                    f(Step::EnterDir {
                        rel: &child_rel,
                        node: Some(node),
                    });
                }
                let below = match walk_tree(repo, &sub, &snap_path, &child_rel, sel, included, f) {
                    Ok(b) => b,
                    Err(e) => {
                        f(Step::Problem {
                            rel: &child_rel,
                            message: e.to_string(),
                        });
                        false
                    }
                };
                // A directory created only because something inside it was included still
                // gets its own metadata from the snapshot.
                if included || below {
                    f(Step::LeaveDir {
                        rel: &child_rel,
                        node: Some(node),
                    });
                    emitted = true;
                }
            }
            _ if included => {
                f(Step::Entry {
                    rel: &child_rel,
                    node,
                });
                emitted = true;
            }
            _ => {}
        }
    }
    Ok(emitted)
}

/// Turns raw name bytes into an `OsStr` without loss (Unix).
trait FromBytesCompat {
    fn from_bytes_compat(b: &[u8]) -> &Self;
}

impl FromBytesCompat for std::ffi::OsStr {
    fn from_bytes_compat(b: &[u8]) -> &Self {
        use std::os::unix::ffi::OsStrExt;
        std::ffi::OsStr::from_bytes(b)
    }
}

/// Finds the node at `subpath` (components separated by `/`) below the root tree.
pub fn find_subpath(
    repo: &Repository<Indexed>,
    root: &Id,
    subpath: &str,
) -> Result<Option<Node>, RepoError> {
    let mut tree_id = *root;
    let comps: Vec<&str> = subpath
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    let mut found = None;
    for (i, c) in comps.iter().enumerate() {
        let tree = repo.load_tree(&tree_id)?;
        let Some(n) = tree.find(c.as_bytes()) else {
            return Ok(None);
        };
        if i + 1 < comps.len() {
            match (n.kind, n.subtree) {
                (NodeType::Dir, Some(s)) => tree_id = s,
                _ => return Ok(None),
            }
        }
        found = Some(n.clone());
    }
    Ok(found)
}

/// `/` joined with the components of `subpath`, for pattern matching.
pub fn snap_path(subpath: &str) -> PathBuf {
    let mut p = PathBuf::from("/");
    for c in subpath.split('/').filter(|c| !c.is_empty() && *c != ".") {
        p.push(c);
    }
    p
}
