//! `find`: which snapshots hold paths matching a pattern (the same patterns as `--exclude`: a
//! name anywhere, or a path glob), walking each snapshot's trees iteratively.

use std::path::Path;

use cairn_repo_format::snapshot::Snapshot;
use cairn_repo_format::tree::Node;
use cairn_repo_format::{Id, Indexed, RepoError, Repository};

use crate::filter::Patterns;
use crate::treewalk::{Step, TreeWalk};

fn walk(
    repo: &Repository<Indexed>,
    tree: &Id,
    patterns: &Patterns,
    found: &mut dyn FnMut(&str, &Node),
) -> Result<(), RepoError> {
    let mut walk = TreeWalk::new(repo.load_tree(tree)?, *tree, "/");
    while let Some(step) = walk.next() {
        let Step::Node(node) = step else { continue };
        if patterns.matches(Path::new(walk.path())) {
            found(walk.path(), &node);
        }
        if let Some(sub) = node.subtree {
            walk.enter(repo.load_tree(&sub)?, sub, node);
        }
    }
    Ok(())
}

/// Calls `found(snapshot, path, node)` for every entry matching `patterns` in `snapshots`.
pub fn run(
    repo: &Repository<Indexed>,
    snapshots: &[(Id, Snapshot)],
    patterns: &Patterns,
    found: &mut dyn FnMut(&Id, &str, &Node),
) -> Result<(), RepoError> {
    for (id, snap) in snapshots {
        walk(repo, &snap.tree, patterns, &mut |p, n| found(id, p, n))?;
    }
    Ok(())
}
