//! Restoring a Kubernetes volume before its app starts (`cairn restore-init`), safely on every
//! start of the pod. The steps:
//!
//! ```text
//!  find: the latest snapshot of the identity (cluster, namespace, PVC), or a pinned one
//!  look:  .cairn/restore.json complete → done, touch nothing
//!         in progress → finish it (a restore into the same target completes the job)
//!         no marker, volume not empty (beyond lost+found and .cairn/) → skip, overwrite or
//!         fail, before anything is written into it
//!  claim: flock on .cairn/restore.lock; another runner waits for the complete marker
//!  mark:  .cairn/restore.json {"state":"in-progress", snapshot, time}   (fsynced)
//!  restore the snapshot into the volume
//!  mark:  .cairn/restore.json {"state":"complete", ...}                  (fsynced)
//! ```
//!
//! A restore that fails (a full volume stops it: [`RestoreError::TargetFull`]) or reports
//! errors leaves the marker in progress, so the next start restores again.
//!
//! It needs only read access to the repository: restore takes no lock (`docs/design.md` §14).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cairn_repo_format::snapshot::Snapshot;
use cairn_repo_format::{Id, Indexed, RepoError, Repository};
use chrono::{DateTime, Utc};

use crate::Context;
use crate::restore::{self, RestoreError, RestoreOptions, RestoreProgress, RestoreTuning};

/// The directory, inside the volume, where restore-init keeps its marker and lock.
pub const STATE_DIR: &str = ".cairn";
/// The marker file, in [`STATE_DIR`].
pub const MARKER: &str = "restore.json";
/// The lock file, in [`STATE_DIR`].
pub const LOCK: &str = "restore.lock";

/// Which volume, and which of its snapshots.
#[derive(Clone, Debug, Default)]
pub struct VolumeSpec {
    /// The source cluster (the snapshots' host); `None`: whichever has the identity, if only
    /// one does.
    pub cluster: Option<String>,
    /// The namespace.
    pub namespace: String,
    /// The PVC.
    pub pvc: String,
    /// This snapshot (an id or prefix) instead of the latest.
    pub snapshot: Option<String>,
    /// The latest snapshot taken before this time.
    pub before: Option<DateTime<Utc>>,
}

impl VolumeSpec {
    /// The snapshot path the agent records for this identity.
    pub fn path(&self) -> String {
        format!("/{}/{}", self.namespace, self.pvc)
    }

    /// Whether `s` is a snapshot of this identity: recorded by the agent (path), or by hand
    /// with the `namespace` and `pvc` labels.
    pub fn matches(&self, s: &Snapshot) -> bool {
        let by_path = s.paths.len() == 1 && s.paths[0] == self.path();
        let by_labels = s.labels.get("namespace") == Some(&self.namespace)
            && s.labels.get("pvc") == Some(&self.pvc);
        (by_path || by_labels)
            && self.cluster.as_ref().is_none_or(|c| &s.hostname == c)
            && self.before.is_none_or(|b| s.time < b)
    }
}

/// What to do with a volume that holds data and no marker.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IfNotEmpty {
    /// Leave it alone (the app's data wins).
    #[default]
    Skip,
    /// Restore over it.
    Overwrite,
    /// Refuse, so the pod does not start.
    Fail,
}

/// Settings of one run.
#[derive(Clone, Debug)]
pub struct VolumeRestore {
    /// The volume's mount point.
    pub target: PathBuf,
    /// Which snapshot.
    pub spec: VolumeSpec,
    /// A volume with data and no marker.
    pub if_not_empty: IfNotEmpty,
    /// No snapshot of the identity: an error instead of a fresh start.
    pub fail_if_no_snapshot: bool,
    /// How long to wait for another runner's marker (RWX volumes with several replicas).
    pub wait: Duration,
    /// Restore tuning.
    pub tuning: RestoreTuning,
    /// Entries whose recorded owner the file system refused fail the run (and leave the
    /// marker in progress) instead of being counted.
    pub strict_ownership: bool,
}

/// What a run did.
#[derive(Debug)]
pub enum VolumeOutcome {
    /// The snapshot was restored.
    Restored {
        /// Which one.
        id: Id,
        /// Errors reported as events (files that could not be restored).
        errors: u64,
    },
    /// A complete marker was there: nothing was touched.
    AlreadyRestored {
        /// The snapshot it names.
        snapshot: String,
    },
    /// No snapshot of the identity: the app starts on the empty volume.
    NoSnapshot,
    /// The volume held data and no marker: left alone.
    NotEmpty,
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// The identity has snapshots in several clusters.
    #[error("{namespace}/{pvc} has snapshots from several clusters ({}): name one with --cluster", .clusters.join(", "))]
    AmbiguousCluster {
        /// Namespace.
        namespace: String,
        /// PVC.
        pvc: String,
        /// The clusters.
        clusters: Vec<String>,
    },
    /// `--if-no-snapshot fail`.
    #[error("no snapshot of {namespace}/{pvc}{cluster}")]
    NoSnapshot {
        /// Namespace.
        namespace: String,
        /// PVC.
        pvc: String,
        /// " in cluster X", or empty.
        cluster: String,
    },
    /// `--snapshot` names no snapshot of the identity.
    #[error("snapshot {0:?} is not a snapshot of this volume")]
    NoSuchSnapshot(String),
    /// `--if-not-empty fail`.
    #[error("{0} holds data and no restore marker; not restoring over it")]
    NotEmpty(PathBuf),
    /// The marker or lock could not be written (a full or read-only volume).
    #[error("{path}: {source}")]
    Marker {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Another runner holds the lock and did not finish in time.
    #[error("{lock} is held by {holder} and no complete marker appeared within {waited:?}")]
    WaitedTooLong {
        /// The lock file.
        lock: PathBuf,
        /// What it says.
        holder: String,
        /// How long this run waited.
        waited: Duration,
    },
    /// `strict_ownership`, and the file system refused owners.
    #[error(
        "the file system refused the recorded owners of {0} entries (strict ownership); the restore stays in progress"
    )]
    OwnersRefused(u64),
    /// The restore failed (the volume too small for the snapshot among others:
    /// [`RestoreError::TargetFull`]); the marker stays in progress.
    #[error(transparent)]
    Restore(#[from] RestoreError),
    /// The repository failed.
    #[error(transparent)]
    Repo(#[from] RepoError),
}

/// The marker's contents.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Marker {
    /// `in-progress` or `complete`.
    pub state: String,
    /// The snapshot's id.
    pub snapshot: String,
    /// When this state was written.
    pub time: DateTime<Utc>,
}

/// Finds the snapshot to restore: `None` when the identity has none. A snapshot object that
/// cannot be read goes to `damaged` and is passed over, as `latest` passes it over.
pub fn find<S>(
    repo: &Repository<S>,
    spec: &VolumeSpec,
    damaged: &mut dyn FnMut(Id, RepoError),
) -> Result<Option<(Id, Snapshot)>, VolumeError> {
    let mut found: Vec<(Id, Snapshot)> =
        crate::select::list_with(repo, &Default::default(), damaged)?
            .into_iter()
            .filter(|(_, s)| spec.matches(s))
            .collect();
    if spec.cluster.is_none() {
        let mut clusters: Vec<String> = found.iter().map(|(_, s)| s.hostname.clone()).collect();
        clusters.sort();
        clusters.dedup();
        if clusters.len() > 1 {
            return Err(VolumeError::AmbiguousCluster {
                namespace: spec.namespace.clone(),
                pvc: spec.pvc.clone(),
                clusters,
            });
        }
    }
    if let Some(want) = &spec.snapshot {
        let hits: Vec<_> = found
            .into_iter()
            .filter(|(id, _)| id.to_string().starts_with(want.as_str()))
            .collect();
        return match hits.len() {
            1 => Ok(hits.into_iter().next()),
            _ => Err(VolumeError::NoSuchSnapshot(want.clone())),
        };
    }
    found.sort_by_key(|(id, s)| (s.time, *id));
    Ok(found.pop())
}

/// Whether `dir` holds nothing but `lost+found` and [`STATE_DIR`].
pub fn is_empty(dir: &Path) -> std::io::Result<bool> {
    for e in std::fs::read_dir(dir)? {
        let name = e?.file_name();
        if name != "lost+found" && name != STATE_DIR {
            return Ok(false);
        }
    }
    Ok(true)
}

fn read_marker(dir: &Path) -> Option<Marker> {
    let text = std::fs::read(dir.join(STATE_DIR).join(MARKER)).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Writes the marker durably: a temporary file, fsync, rename, fsync of the directory.
fn write_marker(dir: &Path, m: &Marker) -> Result<(), VolumeError> {
    let state = dir.join(STATE_DIR);
    let path = state.join(MARKER);
    let err = |source| VolumeError::Marker {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(&state).map_err(err)?;
    let tmp = state.join(format!("{MARKER}.tmp"));
    let body = serde_json::to_vec_pretty(m).unwrap_or_default();
    let mut f = std::fs::File::create(&tmp).map_err(err)?;
    f.write_all(&body).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, &path).map_err(err)?;
    std::fs::File::open(&state)
        .and_then(|d| d.sync_all())
        .map_err(err)?;
    Ok(())
}

/// The exclusive claim on a volume: an `flock` on `.cairn/restore.lock`, which the kernel
/// releases when its holder dies (a killed init container), so the next start never waits
/// for a dead one.
struct Claim(#[allow(dead_code)] nix::fcntl::Flock<std::fs::File>);

/// Takes the claim, or waits for another runner's complete marker (at most `wait`).
fn claim(dir: &Path, wait: Duration, cx: &Context) -> Result<Option<Claim>, VolumeError> {
    use nix::fcntl::{Flock, FlockArg};
    let state = dir.join(STATE_DIR);
    let lock = state.join(LOCK);
    let err = |source| VolumeError::Marker {
        path: lock.clone(),
        source,
    };
    std::fs::create_dir_all(&state).map_err(err)?;
    let started = std::time::Instant::now();
    loop {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock)
            .map_err(err)?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(held) => {
                let me = format!(
                    "{} pid {}\n",
                    cairn_repo_format::key::hostname(),
                    std::process::id()
                );
                let _ = held.set_len(0);
                let _ = (&*held).write_all(me.as_bytes());
                return Ok(Some(Claim(held)));
            }
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {}
            Err((_, e)) => return Err(err(std::io::Error::from(e))),
        }
        if read_marker(dir).is_some_and(|m| m.state == "complete") {
            return Ok(None);
        }
        if started.elapsed() >= wait {
            return Err(VolumeError::WaitedTooLong {
                holder: std::fs::read_to_string(&lock)
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
                lock,
                waited: wait,
            });
        }
        if cx.cancel.is_cancelled() {
            return Err(VolumeError::Restore(RestoreError::Cancelled));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs restore-init's steps (see the module's doc).
pub fn run(
    repo: &Repository<Indexed>,
    opts: &VolumeRestore,
    progress: &RestoreProgress,
    cx: &Context,
) -> Result<VolumeOutcome, VolumeError> {
    let dir = &opts.target;
    if let Some(m) = read_marker(dir).filter(|m| m.state == "complete") {
        return Ok(VolumeOutcome::AlreadyRestored {
            snapshot: m.snapshot,
        });
    }
    let damaged = &mut |id: Id, e: RepoError| {
        cx.emit(crate::Event::ObjectDamaged {
            object: cairn_repo_format::FileKind::Snapshot.path(&id),
            problem: format!("{e}; passed over"),
        })
    };
    let Some((id, snap)) = find(repo, &opts.spec, damaged)? else {
        if opts.fail_if_no_snapshot {
            return Err(VolumeError::NoSnapshot {
                namespace: opts.spec.namespace.clone(),
                pvc: opts.spec.pvc.clone(),
                cluster: opts
                    .spec
                    .cluster
                    .as_ref()
                    .map(|c| format!(" in cluster {c}"))
                    .unwrap_or_default(),
            });
        }
        return Ok(VolumeOutcome::NoSnapshot);
    };
    // A volume with data and no marker is decided on before anything is written into it.
    if read_marker(dir).is_none() {
        let empty = is_empty(dir).map_err(|source| VolumeError::Marker {
            path: dir.clone(),
            source,
        })?;
        if !empty {
            match opts.if_not_empty {
                IfNotEmpty::Skip => return Ok(VolumeOutcome::NotEmpty),
                IfNotEmpty::Fail => return Err(VolumeError::NotEmpty(dir.clone())),
                IfNotEmpty::Overwrite => {}
            }
        }
    }
    let Some(_claim) = claim(dir, opts.wait, cx)? else {
        // Another runner finished it.
        let snapshot = read_marker(dir).map(|m| m.snapshot).unwrap_or_default();
        return Ok(VolumeOutcome::AlreadyRestored { snapshot });
    };
    // Under the claim: another runner may have finished meanwhile. An in-progress marker is
    // finished whatever the volume holds now.
    if let Some(m) = read_marker(dir).filter(|m| m.state == "complete") {
        return Ok(VolumeOutcome::AlreadyRestored {
            snapshot: m.snapshot,
        });
    }
    let mark = |state: &str| {
        write_marker(
            dir,
            &Marker {
                state: state.into(),
                snapshot: id.to_string(),
                time: Utc::now(),
            },
        )
    };
    mark("in-progress")?;
    // The snapshot's own `.cairn/` (a volume backed up after an earlier restore) is never
    // restored: its complete marker would stand in for this run's before it is done.
    let mut state_dirs = vec![format!("/{STATE_DIR}")];
    if let Some(p) = snap.paths.first() {
        state_dirs.push(format!("{}/{STATE_DIR}", p.trim_end_matches('/')));
    }
    let exclude = crate::filter::Patterns::new(&state_dirs).unwrap_or_default();
    let ropts = RestoreOptions {
        target: dir.clone(),
        subpath: None,
        include: Default::default(),
        exclude,
        verify: false,
        devices: false,
    };
    restore::run_with(repo, &snap, &ropts, &opts.tuning, progress, cx)?;
    let errors = progress.errors.load(std::sync::atomic::Ordering::Relaxed);
    let refused = progress
        .owners_not_kept
        .load(std::sync::atomic::Ordering::Relaxed);
    if opts.strict_ownership && refused > 0 {
        return Err(VolumeError::OwnersRefused(refused));
    }
    if errors == 0 {
        mark("complete")?;
    }
    Ok(VolumeOutcome::Restored { id, errors })
}
