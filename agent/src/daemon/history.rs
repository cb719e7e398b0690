//! What the repository says about each identity this agent backs up: when its last snapshot
//! was taken, how many files it held, and the last `backup-now` value a snapshot recorded.
//! Read once at start (so a restarted agent runs a missed schedule once and no handled trigger
//! again) and updated as backups finish. One small entry per identity, not per snapshot.

use std::collections::HashMap;

use cairn_repo_format::snapshot::Snapshot;
use cairn_repo_format::{Opened, RepoError, Repository};
use chrono::{DateTime, Utc};

/// The snapshot label holding the `backup-now` value a backup ran for.
pub const TRIGGER_LABEL: &str = "trigger";

/// One identity's record.
#[derive(Clone, Debug, Default)]
pub struct Entry {
    /// Its latest snapshot's time.
    pub last: Option<DateTime<Utc>>,
    /// Files in that snapshot.
    pub files: u64,
    /// The latest snapshot that recorded a trigger: its time and the value.
    pub trigger: Option<(DateTime<Utc>, String)>,
}

/// Entries by snapshot path, for one cluster (the snapshots' host).
#[derive(Default)]
pub struct History {
    cluster: String,
    entries: HashMap<String, Entry>,
}

impl History {
    /// Reads every snapshot of `cluster`. A snapshot that cannot be read is skipped and
    /// passed to `skipped`.
    pub fn load(
        repo: &Repository<Opened>,
        cluster: &str,
        skipped: &mut dyn FnMut(String),
    ) -> Result<History, RepoError> {
        let mut h = History {
            cluster: cluster.to_string(),
            entries: HashMap::new(),
        };
        for id in repo.snapshot_ids()? {
            match repo.load_snapshot(&id) {
                Ok(s) => h.record(&s),
                Err(e) => skipped(format!("snapshot {id}: {e}")),
            }
        }
        Ok(h)
    }

    /// Takes in a snapshot (one just written, or read at start).
    pub fn record(&mut self, s: &Snapshot) {
        if s.hostname != self.cluster || s.paths.len() != 1 {
            return;
        }
        let e = self.entries.entry(s.paths[0].clone()).or_default();
        if e.last.is_none_or(|t| s.time >= t) {
            e.last = Some(s.time);
            let m = &s.summary;
            e.files = m.files_new + m.files_changed + m.files_unmodified;
        }
        if let Some(v) = s.labels.get(TRIGGER_LABEL)
            && e.trigger.as_ref().is_none_or(|(t, _)| s.time >= *t)
        {
            e.trigger = Some((s.time, v.clone()));
        }
    }

    /// The record of the identity stored under `path`.
    pub fn get(&self, path: &str) -> Entry {
        self.entries.get(path).cloned().unwrap_or_default()
    }

    /// Identities known.
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}
