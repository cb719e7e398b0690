//! What `check` verifies in each tree beyond its blobs being present: everything restore and
//! dump rely on. A tree that passes restores as it reads: each name is one safe path
//! component, names are unique and in byte order (so lookups and restores never meet two
//! entries with one name), each entry has exactly the fields its kind needs, and a file's
//! recorded size is the sum of its content blobs' lengths.

use cairn_repo_format::Id;
use cairn_repo_format::tree::{Node, NodeType, Tree};

/// `name` with control characters escaped (`\u{1b}`), for messages: a hostile name must not
/// drive the terminal that shows a report about it.
pub fn escaped(name: &str) -> String {
    name.chars().flat_map(char::escape_debug).collect()
}

/// One thing wrong with one entry of a tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeProblem {
    /// The entry's name, as stored (lossy text).
    pub name: String,
    /// What is wrong.
    pub problem: String,
}

/// Every problem of `tree`'s entries. `data_len` gives a data blob's plaintext length from the
/// index (`None` when it is in no index: the walk reports that itself).
pub fn problems(tree: &Tree, data_len: &dyn Fn(&Id) -> Option<u32>) -> Vec<NodeProblem> {
    let mut out = Vec::new();
    let mut previous: Option<&[u8]> = None;
    let mut seen = std::collections::HashSet::with_capacity(tree.nodes.len());
    for node in &tree.nodes {
        let mut bad = |problem: String| {
            out.push(NodeProblem {
                name: node.name.display().into_owned(),
                problem,
            })
        };
        let name = node.name.0.as_slice();
        if !Node::name_is_safe(name) {
            bad("not a safe file name (empty, `.`, `..`, or holding `/` or NUL): restore refuses it".into());
        }
        // In a sorted tree a repeat is next to its first; a hostile tree need not be sorted.
        if !seen.insert(name) {
            bad("a second entry with this name".into());
        } else if previous.is_some_and(|p| p > name) {
            bad("out of order (entries must be sorted by name)".into());
        }
        previous = Some(name);
        if let Some(why) = shape(node) {
            bad(why);
        }
        if let (NodeType::File, Some(content)) = (node.kind, &node.content) {
            let lens: Option<Vec<u64>> = content
                .iter()
                .map(|id| data_len(id).map(u64::from))
                .collect();
            if let Some(lens) = lens {
                let total: u64 = lens.iter().sum();
                if total != node.size {
                    bad(format!(
                        "records {} bytes, but its content blobs hold {total}",
                        node.size
                    ));
                }
            }
        }
    }
    out
}

/// What is missing or out of place for the entry's kind, if anything.
fn shape(node: &Node) -> Option<String> {
    let kind = node.kind;
    let want_content = kind == NodeType::File;
    let want_subtree = kind == NodeType::Dir;
    let want_target = kind == NodeType::Symlink;
    if node.content.is_some() != want_content {
        return Some(match want_content {
            true => "a file without a content list".into(),
            false => format!("a {kind:?} with a content list"),
        });
    }
    if node.subtree.is_some() != want_subtree {
        return Some(match want_subtree {
            true => "a directory without a subtree".into(),
            false => format!("a {kind:?} with a subtree"),
        });
    }
    if node.linktarget.is_some() != want_target {
        return Some(match want_target {
            true => "a symlink without a target".into(),
            false => format!("a {kind:?} with a link target"),
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_repo_format::tree::RawBytes;

    fn node(name: &[u8], kind: NodeType) -> Node {
        let t = chrono::Utc::now();
        Node {
            name: RawBytes(name.to_vec()),
            kind,
            mode: 0o644,
            uid: 0,
            gid: 0,
            user: String::new(),
            group: String::new(),
            mtime: t,
            atime: t,
            ctime: t,
            size: 0,
            inode: 0,
            device: 0,
            links: 0,
            rdev: 0,
            linktarget: (kind == NodeType::Symlink).then(|| RawBytes(b"x".to_vec())),
            xattrs: Vec::new(),
            content: (kind == NodeType::File).then(Vec::new),
            subtree: (kind == NodeType::Dir).then_some(Id([1; 32])),
        }
    }

    fn names(tree: &Tree) -> Vec<String> {
        problems(tree, &|_| Some(10))
            .into_iter()
            .map(|p| format!("{}: {}", p.name, p.problem))
            .collect()
    }

    #[test]
    fn a_well_formed_tree_has_no_problems() {
        let mut f = node(b"b", NodeType::File);
        f.content = Some(vec![Id([2; 32]), Id([3; 32])]);
        f.size = 20;
        let t = Tree {
            nodes: vec![node(b"a", NodeType::Dir), f, node(b"c", NodeType::Symlink)],
        };
        assert_eq!(names(&t), Vec::<String>::new());
    }

    #[test]
    fn names_order_uniqueness_shape_and_size_are_each_reported() {
        let mut wrong_size = node(b"f", NodeType::File);
        wrong_size.content = Some(vec![Id([2; 32])]);
        wrong_size.size = 11;
        let mut dir_without_tree = node(b"g", NodeType::Dir);
        dir_without_tree.subtree = None;
        let t = Tree {
            nodes: vec![
                node(b"..", NodeType::Dir),
                node(b"a/b", NodeType::File),
                node(b"z", NodeType::File),
                node(b"z", NodeType::File),
                node(b"c", NodeType::File),
                wrong_size,
                dir_without_tree,
            ],
        };
        let got = names(&t);
        assert_eq!(got.len(), 6, "{got:#?}");
        for (i, needle) in [
            (0, "not a safe file name"),
            (1, "not a safe file name"),
            (2, "a second entry"),
            (3, "out of order"),
            (4, "records 11 bytes"),
            (5, "without a subtree"),
        ] {
            assert!(got[i].contains(needle), "{i}: {got:#?}");
        }
    }
}
