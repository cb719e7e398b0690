//! Snapshots (`snapshots/<id>`): one sealed JSON object per backup, pointing at the root tree.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::id::Id;
use crate::tree::{Labels, Node};

/// What a backup did, stored in its snapshot.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// When the backup started.
    pub backup_start: Option<DateTime<Utc>>,
    /// When it finished.
    pub backup_end: Option<DateTime<Utc>>,
    /// Files not seen in the parent.
    pub files_new: u64,
    /// Files whose metadata changed since the parent (so they were read).
    pub files_changed: u64,
    /// Files taken from the parent without reading.
    pub files_unmodified: u64,
    /// Directories not in the parent.
    pub dirs_new: u64,
    /// Directories whose listing changed.
    pub dirs_changed: u64,
    /// Directories identical to the parent's.
    pub dirs_unmodified: u64,
    /// Wall-clock seconds the backup took.
    #[serde(default)]
    pub duration: f64,
    /// Bytes of new files.
    #[serde(default)]
    pub bytes_new: u64,
    /// Bytes of changed files.
    #[serde(default)]
    pub bytes_changed: u64,
    /// Bytes of unmodified files (not read).
    #[serde(default)]
    pub bytes_unmodified: u64,
    /// Bytes of files read.
    pub bytes_read: u64,
    /// Bytes of all files in the snapshot.
    pub bytes_total: u64,
    /// Data blobs added to the repository.
    pub data_blobs: u64,
    /// Tree blobs added to the repository.
    pub tree_blobs: u64,
    /// Plaintext bytes of new blobs.
    pub data_added: u64,
    /// Bytes of packs uploaded (after compression and encryption).
    pub data_added_packed: u64,
    /// Files or directories that could not be read and were left out.
    pub errors: u64,
}

/// A snapshot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// When the backup was taken.
    pub time: DateTime<Utc>,
    /// Host name (for Kubernetes volumes: the node).
    pub hostname: String,
    /// User who ran it.
    #[serde(default)]
    pub username: String,
    /// The backed-up paths, as given.
    pub paths: Vec<String>,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Labels (namespace, pvc, pod, volume, node, …).
    #[serde(default)]
    pub labels: Labels,
    /// Root tree.
    pub tree: Id,
    /// Metadata of the backed-up directory itself when a single directory was backed up
    /// (restore applies it to the target: a volume's root mode and owner matter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<Node>,
    /// The snapshot this one replaces (after `tag` or `repair snapshots` rewrote it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<Id>,
    /// Snapshot used for change detection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Id>,
    /// `cairn x.y.z`.
    pub program_version: String,
    /// What the backup did.
    #[serde(default)]
    pub summary: Summary,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_back_exactly() {
        // Found by tests/proptest_roundtrip.rs: serde_json's default float parser read this
        // back one unit in the last place off (…764e-279), so a snapshot did not decode to
        // what was encoded. The crate enables serde_json's `float_roundtrip`.
        for duration in [1.1656224490347639e-279, 0.106888, f64::MAX, 5e-324, -0.0] {
            let snap = Snapshot {
                time: DateTime::UNIX_EPOCH,
                hostname: String::new(),
                username: String::new(),
                paths: Vec::new(),
                tags: Vec::new(),
                labels: Labels::new(),
                tree: Id::default(),
                root: None,
                original: None,
                parent: None,
                program_version: String::new(),
                summary: Summary {
                    duration,
                    ..Default::default()
                },
            };
            let json = serde_json::to_vec(&snap).unwrap();
            let back: Snapshot = serde_json::from_slice(&json).unwrap();
            assert_eq!(
                back.summary.duration.to_bits(),
                duration.to_bits(),
                "{duration:e}"
            );
        }
    }
}
