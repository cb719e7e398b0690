//! `find`: which snapshots hold paths matching a pattern (the same patterns as `--exclude`: a
//! name anywhere, or a path glob).

use std::path::Path;

use cairn_repo_format::snapshot::Snapshot;
use cairn_repo_format::tree::Node;
use cairn_repo_format::{Id, Indexed, RepoError, Repository};

use crate::filter::Patterns;

fn walk(
    repo: &Repository<Indexed>,
    tree: &Id,
    dir: &str,
    patterns: &Patterns,
    found: &mut dyn FnMut(&str, &Node),
) -> Result<(), RepoError> {
    for node in repo.load_tree(tree)?.nodes {
        let path = format!("{}/{}", dir.trim_end_matches('/'), node.name.display());
        if patterns.matches(Path::new(&path)) {
            found(&path, &node);
        }
        if let Some(sub) = &node.subtree {
            walk(repo, sub, &path, patterns, found)?;
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
        walk(repo, &snap.tree, "/", patterns, &mut |p, n| found(id, p, n))?;
    }
    Ok(())
}
