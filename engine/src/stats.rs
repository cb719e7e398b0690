//! `stats`: how big snapshots are when restored, how much the repository stores for them, and
//! the ratio between the two (what deduplication and compression save).

use std::collections::HashMap;

use cairn_repo_format::snapshot::Snapshot;
use cairn_repo_format::{Id, Indexed, RepoError, Repository};

use crate::reach::Reach;

/// Totals for a set of snapshots.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Stats {
    /// Snapshots counted.
    pub snapshots: u64,
    /// Files, counted once per snapshot they are in.
    pub files: u64,
    /// Bytes a restore of every snapshot would write.
    pub restore_size: u64,
    /// Distinct blobs the snapshots refer to.
    pub blobs: u64,
    /// Their plaintext bytes.
    pub raw_data: u64,
    /// Their stored (compressed and sealed) bytes.
    pub stored: u64,
    /// `restore_size / raw_data`: what deduplication saves.
    pub dedup_ratio: f64,
    /// `raw_data / stored`: what compression saves.
    pub compression_ratio: f64,
}

/// Files and bytes below tree `id`, each tree counted once and remembered in `memo`: a
/// post-order walk over an explicit stack (no recursion, whatever the depth).
fn tree_totals(
    repo: &Repository<Indexed>,
    id: &Id,
    memo: &mut HashMap<Id, (u64, u64)>,
) -> Result<(u64, u64), RepoError> {
    if let Some(t) = memo.get(id) {
        return Ok(*t);
    }
    struct Frame {
        id: Id,
        nodes: std::vec::IntoIter<cairn_repo_format::tree::Node>,
        files: u64,
        bytes: u64,
    }
    let open = |id: &Id| -> Result<Frame, RepoError> {
        Ok(Frame {
            id: *id,
            nodes: repo.load_tree(id)?.nodes.into_iter(),
            files: 0,
            bytes: 0,
        })
    };
    // The tree being counted, and the ones above it waiting for its totals.
    let mut cur = open(id)?;
    let mut above: Vec<Frame> = Vec::new();
    loop {
        match cur.nodes.next() {
            Some(node) => {
                if node.content.is_some() {
                    cur.files += 1;
                    cur.bytes += node.size;
                }
                if let Some(sub) = &node.subtree {
                    match memo.get(sub) {
                        Some((f, b)) => {
                            cur.files += f;
                            cur.bytes += b;
                        }
                        None => {
                            let child = open(sub)?;
                            above.push(std::mem::replace(&mut cur, child));
                        }
                    }
                }
            }
            None => {
                memo.insert(cur.id, (cur.files, cur.bytes));
                let Some(parent) = above.pop() else {
                    return Ok((cur.files, cur.bytes));
                };
                let done = std::mem::replace(&mut cur, parent);
                cur.files += done.files;
                cur.bytes += done.bytes;
            }
        }
    }
}

/// Computes the totals of `snapshots`.
pub fn run(repo: &Repository<Indexed>, snapshots: &[(Id, Snapshot)]) -> Result<Stats, RepoError> {
    let mut s = Stats::default();
    let mut memo = HashMap::new();
    let mut reach = Reach::new(repo);
    let mut missing = None;
    for (_, snap) in snapshots {
        s.snapshots += 1;
        let (f, b) = tree_totals(repo, &snap.tree, &mut memo)?;
        s.files += f;
        s.restore_size += b;
        reach.walk(
            &snap.tree,
            "/",
            &mut |p| {
                missing.get_or_insert(p.to_string());
            },
            &mut |_| {},
        );
    }
    if let Some(p) = missing {
        return Err(RepoError::Corrupt {
            object: "snapshot".into(),
            reason: p,
        });
    }
    for (index, bits) in [
        (repo.index(), &reach.main),
        (repo.pending(), &reach.pending),
    ] {
        for pos in 0..index.len() {
            if bits.contains(pos) {
                let (_, e) = index.entry_at(pos);
                s.blobs += 1;
                s.raw_data += e.raw_length as u64;
                s.stored += e.length as u64;
            }
        }
    }
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    s.dedup_ratio = ratio(s.restore_size, s.raw_data);
    s.compression_ratio = ratio(s.raw_data, s.stored);
    Ok(s)
}
