//! Fuzz target: tree blobs (a directory's JSON listing), as restore, ls, diff, check and
//! prune parse them after `open_blob`. Checks: decode → encode → decode is the identity and
//! the encoding is stable; lookups and the name check never panic.
#![no_main]

use cairn_repo_format::tree::{Node, Tree};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(tree) = Tree::from_bytes(data) else {
        return;
    };
    let bytes = tree.to_bytes();
    let again = Tree::from_bytes(&bytes).expect("an encoded tree parses");
    assert_eq!(again, tree, "tree round trip");
    assert_eq!(again.to_bytes(), bytes, "tree encoding is stable");
    for n in &tree.nodes {
        let _ = Node::name_is_safe(&n.name.0);
        let _ = tree.find(&n.name.0);
        let _ = n.name.display();
    }
});
