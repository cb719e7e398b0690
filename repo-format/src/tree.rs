//! Trees: one blob per directory, listing its entries sorted by raw name bytes with their full
//! metadata. Serialized as JSON; byte strings that are not UTF-8 (names, link targets, xattr
//! names and values) are written as `{"hex": "…"}` so they survive exactly.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::id::{Id, hex_decode, hex_encode};

/// Raw bytes that serialize as a string when they are UTF-8 and as `{"hex": …}` otherwise.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct RawBytes(pub Vec<u8>);

impl std::fmt::Debug for RawBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

impl RawBytes {
    /// Lossy text for display.
    pub fn display(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.0)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum RawRepr {
    Text(String),
    Hex { hex: String },
}

impl Serialize for RawBytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(t) => s.serialize_str(t),
            Err(_) => RawRepr::Hex {
                hex: hex_encode(&self.0),
            }
            .serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for RawBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RawBytes, D::Error> {
        match RawRepr::deserialize(d)? {
            RawRepr::Text(t) => Ok(RawBytes(t.into_bytes())),
            RawRepr::Hex { hex } => hex_decode(&hex)
                .map(RawBytes)
                .ok_or_else(|| serde::de::Error::custom("invalid hex byte string")),
        }
    }
}

/// The kind of a tree entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeType {
    /// Regular file (hard links are files sharing `device` and `inode`, see docs/design.md).
    File,
    /// Directory, with a `subtree`.
    Dir,
    /// Symbolic link, with a `linktarget`.
    Symlink,
    /// Character device, with `rdev`.
    Chardev,
    /// Block device, with `rdev`.
    Blockdev,
    /// Named pipe.
    Fifo,
    /// Unix socket (recorded; restore skips it, as sockets cannot be recreated meaningfully).
    Socket,
}

/// One extended attribute (POSIX ACLs travel as `system.posix_acl_*`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtendedAttribute {
    /// Attribute name.
    pub name: RawBytes,
    /// Attribute value.
    pub value: RawBytes,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// One directory entry with its metadata.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// File name (one path component).
    pub name: RawBytes,
    /// Kind of entry.
    #[serde(rename = "type")]
    pub kind: NodeType,
    /// Permission bits including setuid, setgid and sticky (`st_mode & 0o7777`).
    pub mode: u32,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Owner user name, when known.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    /// Owner group name, when known.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// Modification time.
    pub mtime: DateTime<Utc>,
    /// Access time.
    pub atime: DateTime<Utc>,
    /// Status change time.
    pub ctime: DateTime<Utc>,
    /// Size in bytes (files).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size: u64,
    /// Inode number.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub inode: u64,
    /// Device of the containing file system.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub device: u64,
    /// Number of hard links.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub links: u64,
    /// Device number (character and block devices).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rdev: u64,
    /// Symlink target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linktarget: Option<RawBytes>,
    /// Extended attributes, sorted by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub xattrs: Vec<ExtendedAttribute>,
    /// Content blobs of a file, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Vec<Id>>,
    /// Tree of a directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtree: Option<Id>,
}

impl Node {
    /// Whether `name` is safe to create inside a directory: not empty, `.` or `..`, and free of
    /// `/` and NUL. Restore refuses anything else.
    pub fn name_is_safe(name: &[u8]) -> bool {
        !name.is_empty()
            && name != b"."
            && name != b".."
            && !name.contains(&b'/')
            && !name.contains(&0)
    }
}

/// A directory's entries, sorted by name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    /// Entries in byte order of their names.
    pub nodes: Vec<Node>,
}

impl Tree {
    /// Serialized bytes (the blob plaintext).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("trees serialize")
    }

    /// Parses a tree blob.
    pub fn from_bytes(b: &[u8]) -> Result<Tree, serde_json::Error> {
        serde_json::from_slice(b)
    }

    /// Finds an entry by name (entries are sorted).
    pub fn find(&self, name: &[u8]) -> Option<&Node> {
        self.nodes
            .binary_search_by(|n| n.name.0.as_slice().cmp(name))
            .ok()
            .map(|i| &self.nodes[i])
    }
}

/// Labels attached to a snapshot (for Kubernetes: namespace, pvc, pod, volume, node).
pub type Labels = BTreeMap<String, String>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_utf8_names_survive() {
        let t = chrono::Utc::now();
        let n = Node {
            name: RawBytes(vec![b'a', 0xff, b'\n', b' ']),
            kind: NodeType::Symlink,
            mode: 0o4755,
            uid: 1,
            gid: 2,
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
            linktarget: Some(RawBytes(vec![0xfe, b'/'])),
            xattrs: vec![ExtendedAttribute {
                name: RawBytes(b"user.x".to_vec()),
                value: RawBytes(vec![0, 0xff]),
            }],
            content: None,
            subtree: None,
        };
        let tree = Tree { nodes: vec![n] };
        let back = Tree::from_bytes(&tree.to_bytes()).unwrap();
        assert_eq!(back, tree);
        assert!(Tree::from_bytes(b"{\"nodes\":[{\"name\":{\"hex\":\"zz\"}}]}").is_err());
    }

    #[test]
    fn unsafe_names() {
        for bad in [&b""[..], b".", b"..", b"a/b", b"/", b"a\0"] {
            assert!(!Node::name_is_safe(bad));
        }
        assert!(Node::name_is_safe(b"...") && Node::name_is_safe(b"a b\n"));
    }
}
