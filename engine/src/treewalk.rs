//! Iterative depth-first walks over snapshot trees. [`TreeWalk`] keeps an explicit stack of
//! frames (the remaining entries of each open tree) instead of recursing, so a snapshot of any
//! depth, a chain of 100 000 nested directories from a hostile repository or a real file
//! system, cannot overflow the stack. It keeps one path buffer that grows by a name when the
//! walk enters an entry and shrinks back when it leaves, so the paths of a chain of `n`
//! directories cost time linear in the buffer's length rather than a fresh string per level;
//! memory stays one tree per level, as with recursion.
//!
//! The caller loads subtrees itself (and so decides what to skip, what a missing tree means,
//! and what to share between snapshots) and hands each one to [`TreeWalk::enter`].

use cairn_repo_format::Id;
use cairn_repo_format::tree::{Node, RawBytes, Tree};

/// What [`TreeWalk::next`] found.
// A step lives for one turn of the caller's loop; boxing the node would cost an allocation
// per entry.
#[allow(clippy::large_enum_variant)]
pub enum Step {
    /// The next entry of the current tree; [`TreeWalk::path`] is its path until the next call.
    Node(Node),
    /// Every entry of a tree entered with [`TreeWalk::enter`] has been walked; carries the
    /// directory's node, and [`TreeWalk::path`] is the directory's path again.
    Leave(Node),
}

struct Frame {
    nodes: std::vec::IntoIter<Node>,
    /// The tree's id.
    id: Id,
    /// Length of the path buffer up to the directory, trailing `/`s trimmed: each entry's
    /// path is that, a `/`, and its name.
    base: usize,
    /// Length of the directory's own path, restored when its tree is left.
    dir_len: usize,
    /// The directory's node (none for the tree the walk started with).
    dir: Option<Node>,
}

/// A depth-first, pre-order walk: each entry, then (when the caller enters its subtree) the
/// entries below it, then a [`Step::Leave`] for the directory.
pub struct TreeWalk {
    path: String,
    stack: Vec<Frame>,
}

/// `path` joined with `name` the way every walk shows snapshot paths: the directory's path
/// with trailing `/`s trimmed, a `/`, then the name (invalid UTF-8 replaced).
pub fn push_name(path: &mut String, name: &RawBytes) {
    let trimmed = path.trim_end_matches('/').len();
    path.truncate(trimmed);
    path.push('/');
    path.push_str(&name.display());
}

impl TreeWalk {
    /// A walk over the entries of `tree` (whose id is `id`), a directory shown as `path`
    /// (`/` for a snapshot's root: its entries are then `/name`).
    pub fn new(tree: Tree, id: Id, path: &str) -> TreeWalk {
        let path = path.trim_end_matches('/').to_string();
        let base = path.len();
        TreeWalk {
            path,
            stack: vec![Frame {
                nodes: tree.nodes.into_iter(),
                id,
                base,
                dir_len: base,
                dir: None,
            }],
        }
    }

    /// The path of the entry last returned (or, after a [`Step::Leave`], of the directory).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// How many trees are open: 1 while walking the first tree's own entries.
    pub fn depth(&self) -> usize {
        self.stack.len()
    }

    /// The id of the tree holding the entry last returned.
    pub fn tree_id(&self) -> Option<Id> {
        self.stack.last().map(|f| f.id)
    }

    /// The next step, or `None` when the first tree's entries are all walked.
    // Not an `Iterator`: the path it shows is borrowed from the walk between calls.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Option<Step> {
        let frame = self.stack.last_mut()?;
        match frame.nodes.next() {
            Some(node) => {
                self.path.truncate(frame.base);
                self.path.push('/');
                self.path.push_str(&node.name.display());
                Some(Step::Node(node))
            }
            None => {
                let frame = self.stack.pop()?;
                self.path.truncate(frame.dir_len);
                // The first tree has no directory node: the walk is over.
                frame.dir.map(Step::Leave)
            }
        }
    }

    /// Enters `tree` (whose id is `id`), the subtree of `dir`, the entry last returned by
    /// [`TreeWalk::next`]: its entries come next, then a [`Step::Leave`] with `dir`.
    pub fn enter(&mut self, tree: Tree, id: Id, dir: Node) {
        let dir_len = self.path.len();
        let base = self.path.trim_end_matches('/').len();
        self.stack.push(Frame {
            nodes: tree.nodes.into_iter(),
            id,
            base,
            dir_len,
            dir: Some(dir),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_repo_format::tree::NodeType;

    fn node(name: &str, kind: NodeType) -> Node {
        serde_json::from_value(serde_json::json!({
            "name": name, "type": kind, "mode": 0o755, "uid": 0, "gid": 0,
            "mtime": "2020-01-01T00:00:00Z", "atime": "2020-01-01T00:00:00Z",
            "ctime": "2020-01-01T00:00:00Z"
        }))
        .unwrap()
    }

    fn tree(nodes: Vec<Node>) -> Tree {
        Tree { nodes }
    }

    /// The paths a walk shows, entering every directory with `subtrees[name]`.
    fn walk(root: Tree, path: &str, sub: &dyn Fn(&str) -> Option<Tree>) -> Vec<String> {
        let mut w = TreeWalk::new(root, Id([0; 32]), path);
        let mut out = Vec::new();
        while let Some(step) = w.next() {
            match step {
                Step::Node(n) => {
                    out.push(w.path().to_string());
                    if let Some(t) = sub(&n.name.display()) {
                        w.enter(t, Id([1; 32]), n);
                    }
                }
                Step::Leave(n) => out.push(format!("leave {} {}", n.name.display(), w.path())),
            }
        }
        out
    }

    #[test]
    fn paths_are_joined_as_the_recursive_walks_joined_them() {
        let sub = |name: &str| match name {
            "a" => Some(tree(vec![
                node("b", NodeType::Dir),
                node("f", NodeType::File),
            ])),
            "b" => Some(tree(vec![node("g", NodeType::File)])),
            "trail/" => Some(tree(vec![node("h", NodeType::File)])),
            _ => None,
        };
        let root = || {
            tree(vec![
                node("a", NodeType::Dir),
                node("trail/", NodeType::Dir),
                node("z", NodeType::File),
            ])
        };
        assert_eq!(
            walk(root(), "/", &sub),
            [
                "/a",
                "/a/b",
                "/a/b/g",
                "leave b /a/b",
                "/a/f",
                "leave a /a",
                "/trail/",
                "/trail/h",
                "leave trail/ /trail/",
                "/z"
            ]
        );
        assert_eq!(walk(root(), "/x/", &sub)[..2], ["/x/a", "/x/a/b"]);
        assert_eq!(walk(root(), "", &sub)[0], "/a");
    }

    #[test]
    fn a_deep_chain_is_walked_without_recursion() {
        let depth = 100_000;
        let mut w = TreeWalk::new(tree(vec![node("d", NodeType::Dir)]), Id([0; 32]), "/");
        let (mut entered, mut left, mut deepest) = (0, 0, 0);
        while let Some(step) = w.next() {
            match step {
                Step::Node(n) => {
                    deepest = deepest.max(w.path().len());
                    if entered < depth {
                        entered += 1;
                        w.enter(tree(vec![node("d", NodeType::Dir)]), Id([1; 32]), n);
                    }
                }
                Step::Leave(_) => left += 1,
            }
        }
        assert_eq!((entered, left), (depth, depth));
        assert_eq!(deepest, 2 * (depth + 1));
        assert_eq!(w.path(), "");
    }
}
