//! Property tests: trees, snapshots, index files, condemned lists and locks survive
//! encode → decode unchanged, whatever their content: names that are not UTF-8 or that look
//! like the `{"hex": …}` escape, control characters, empty and optional fields, u64 values
//! above 2^53 (where a JSON reader using doubles would round), and times across chrono's whole
//! range (file times come from the file system as they are). Case counts are kept small so
//! the file runs in a few seconds.

use cairn_repo_format::blob::BlobType;
use cairn_repo_format::compress::Compression;
use cairn_repo_format::condemned::{self, Stamp};
use cairn_repo_format::id::Id;
use cairn_repo_format::index::{decode_index_file, encode_index_file};
use cairn_repo_format::lock::{Lock, LockKind};
use cairn_repo_format::pack::PackEntry;
use cairn_repo_format::snapshot::{Snapshot, Summary};
use cairn_repo_format::tree::{ExtendedAttribute, Node, NodeType, RawBytes, Tree};
use chrono::{DateTime, Utc};
use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn id() -> impl Strategy<Value = Id> {
    prop_oneof![
        1 => Just(Id([0; 32])),
        1 => Just(Id([0xff; 32])),
        8 => any::<[u8; 32]>().prop_map(Id),
    ]
}

/// u64 values, weighted towards the edges: 0, just past 2^53, the maximum.
fn big_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        2 => Just(0u64),
        1 => Just(1u64 << 53),
        1 => Just((1u64 << 53) + 1),
        1 => Just(u64::MAX),
        1 => Just(u64::MAX - 1),
        1 => (1u64 << 53)..=u64::MAX,
        3 => any::<u64>(),
    ]
}

/// Text including control characters, quotes, backslashes and astral-plane characters.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => Just(String::new()),
        1 => Just("{\"hex\": \"00ff\"}".to_string()),
        4 => "[a-z0-9._-]{1,12}",
        4 => ".{0,16}",
        2 => vec(any::<char>(), 0..8).prop_map(|c| c.into_iter().collect()),
    ]
}

/// Raw names and values: text, or any bytes (mostly not UTF-8).
fn raw() -> impl Strategy<Value = RawBytes> {
    prop_oneof![
        3 => text().prop_map(|s| RawBytes(s.into_bytes())),
        2 => vec(any::<u8>(), 0..24).prop_map(RawBytes),
        1 => Just(RawBytes(vec![0xff, 0xfe, b'/', 0])),
        1 => Just(RawBytes(b"{\"hex\":\"zz\"}".to_vec())),
    ]
}

/// Any time chrono represents, to the nanosecond (leap seconds aside).
fn time() -> impl Strategy<Value = DateTime<Utc>> {
    let (min, max) = (
        DateTime::<Utc>::MIN_UTC.timestamp(),
        DateTime::<Utc>::MAX_UTC.timestamp(),
    );
    prop_oneof![
        1 => Just((min, 0u32)),
        1 => Just((max, 999_999_999u32)),
        1 => Just((0i64, 0u32)),
        3 => (0i64..4_102_444_800, 0u32..1_000_000_000),
        3 => (min..=max, 0u32..1_000_000_000),
    ]
    .prop_map(|(s, n)| DateTime::from_timestamp(s, n).expect("in range"))
}

fn node_type() -> impl Strategy<Value = NodeType> {
    prop_oneof![
        Just(NodeType::File),
        Just(NodeType::Dir),
        Just(NodeType::Symlink),
        Just(NodeType::Chardev),
        Just(NodeType::Blockdev),
        Just(NodeType::Fifo),
        Just(NodeType::Socket),
    ]
}

fn node() -> impl Strategy<Value = Node> {
    (
        (raw(), node_type(), any::<u32>(), any::<u32>(), any::<u32>()),
        (text(), text(), time(), time(), time()),
        (big_u64(), big_u64(), big_u64(), big_u64(), big_u64()),
        (
            option::of(raw()),
            vec((raw(), raw()), 0..3),
            option::of(vec(id(), 0..4)),
            option::of(id()),
        ),
    )
        .prop_map(
            |(
                (name, kind, mode, uid, gid),
                (user, group, mtime, atime, ctime),
                (size, inode, device, links, rdev),
                (linktarget, xattrs, content, subtree),
            )| Node {
                name,
                kind,
                mode,
                uid,
                gid,
                user,
                group,
                mtime,
                atime,
                ctime,
                size,
                inode,
                device,
                links,
                rdev,
                linktarget,
                xattrs: xattrs
                    .into_iter()
                    .map(|(name, value)| ExtendedAttribute { name, value })
                    .collect(),
                content,
                subtree,
            },
        )
}

fn summary() -> impl Strategy<Value = Summary> {
    (
        (option::of(time()), option::of(time())),
        vec(big_u64(), 16),
        prop_oneof![
            Just(0.0f64),
            Just(-0.0f64),
            Just(f64::MAX),
            Just(f64::MIN_POSITIVE),
            Just(5e-324),
            (0.0f64..1e6),
            any::<f64>().prop_filter("JSON holds finite numbers", |d| d.is_finite()),
        ],
    )
        .prop_map(|((backup_start, backup_end), n, duration)| Summary {
            backup_start,
            backup_end,
            files_new: n[0],
            files_changed: n[1],
            files_unmodified: n[2],
            dirs_new: n[3],
            dirs_changed: n[4],
            dirs_unmodified: n[5],
            duration,
            bytes_new: n[6],
            bytes_changed: n[7],
            bytes_unmodified: n[8],
            bytes_read: n[9],
            bytes_total: n[10],
            data_blobs: n[11],
            tree_blobs: n[12],
            data_added: n[13],
            data_added_packed: n[14],
            errors: n[15],
        })
}

fn snapshot() -> impl Strategy<Value = Snapshot> {
    (
        (time(), text(), text(), vec(text(), 0..3), vec(text(), 0..3)),
        (btree_map(text(), text(), 0..3), id(), option::of(node())),
        (option::of(id()), option::of(id()), text(), summary()),
    )
        .prop_map(
            |(
                (time, hostname, username, paths, tags),
                (labels, tree, root),
                (original, parent, program_version, summary),
            )| Snapshot {
                time,
                hostname,
                username,
                paths,
                tags,
                labels,
                tree,
                root,
                original,
                parent,
                program_version,
                summary,
            },
        )
}

fn pack_entry() -> impl Strategy<Value = PackEntry> {
    (
        prop_oneof![Just(BlobType::Data), Just(BlobType::Tree)],
        prop_oneof![Just(Compression::None), Just(Compression::Zstd)],
        id(),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(
            |(ty, compression, id, offset, length, raw_length)| PackEntry {
                ty,
                compression,
                id,
                offset,
                length,
                raw_length,
            },
        )
}

fn packs() -> impl Strategy<Value = Vec<(Id, Vec<PackEntry>)>> {
    vec((id(), vec(pack_entry(), 0..6)), 0..5)
}

fn decode_packs(payload: &[u8]) -> Vec<(Id, Vec<PackEntry>)> {
    let mut out = Vec::new();
    decode_index_file(payload, |p, e| out.push((p, e))).expect("an encoded index decodes");
    out
}

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn tree_round_trips(nodes in vec(node(), 0..6)) {
        let tree = Tree { nodes };
        let bytes = tree.to_bytes();
        let back = Tree::from_bytes(&bytes).expect("an encoded tree decodes");
        prop_assert_eq!(&back, &tree);
        prop_assert_eq!(back.to_bytes(), bytes, "encoding is stable");
    }

    #[test]
    fn snapshot_round_trips(snap in snapshot()) {
        let bytes = serde_json::to_vec(&snap).expect("serializes");
        let back: Snapshot = serde_json::from_slice(&bytes).expect("an encoded snapshot decodes");
        prop_assert_eq!(&back, &snap);
        prop_assert_eq!(serde_json::to_vec(&back).expect("serializes"), bytes);
    }

    #[test]
    fn index_file_round_trips(packs in packs()) {
        let bytes = encode_index_file(packs.iter().map(|(p, e)| (p, e.as_slice())));
        prop_assert_eq!(decode_packs(&bytes), packs);
        // Every shorter prefix that ends inside a group is an error, never a panic.
        for cut in 1..bytes.len() {
            let _ = decode_index_file(&bytes[..cut], |_, _| {});
        }
    }

    #[test]
    fn condemned_list_round_trips(
        packs in packs(),
        committed in any::<bool>(),
        secs in DateTime::<Utc>::MIN_UTC.timestamp()..=DateTime::<Utc>::MAX_UTC.timestamp(),
    ) {
        let stamp = Stamp { time: DateTime::from_timestamp(secs, 0).expect("in range"), committed };
        let bytes = condemned::encode(stamp, packs.iter().map(|(p, e)| (p, e.as_slice())));
        let mut back = Vec::new();
        let s = condemned::decode(&bytes, |p, e| back.push((p, e))).expect("decodes");
        prop_assert_eq!(s, stamp);
        prop_assert_eq!(back, packs);
    }

    #[test]
    fn lock_round_trips(
        time in time(),
        started in time(),
        prune in any::<bool>(),
        hostname in text(),
        username in text(),
        pid in any::<u32>(),
    ) {
        let kind = if prune { LockKind::Prune } else { LockKind::Backup };
        let lock = Lock { time, started, kind, hostname, username, pid };
        let bytes = serde_json::to_vec(&lock).expect("serializes");
        let back: Lock = serde_json::from_slice(&bytes).expect("an encoded lock decodes");
        prop_assert_eq!(&back, &lock);
        let _ = back.is_stale(Utc::now(), Some(Utc::now()));
    }
}
