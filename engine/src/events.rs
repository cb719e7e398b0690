//! The one event stream every operation reports through. A backup, restore, check, prune or
//! copy never prints: each problem it meets, and each notable step it takes, goes out as one
//! typed [`Event`] with structured fields to the host's [`EventSink`]. The `cairn` command
//! prints them, the DaemonSet agent turns them into Kubernetes Events and metrics, a server
//! would log them. Events state facts (which object, what happened); advice on what to do
//! belongs to the host, which knows its user.
//!
//! Progress counters stay atomics that hosts sample ([`crate::backup::Progress`],
//! [`crate::restore::RestoreProgress`]): counting per blob through a channel would cost the
//! hot path, and a host that shows progress samples it on its own clock anyway.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use cairn_repo_format::Id;

/// How much an event matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// A step taken; nothing is wrong.
    Info,
    /// Worth knowing; nothing was lost.
    Warning,
    /// Something is lost or damaged: a file not backed up or not restored, damaged data.
    Error,
}

/// One thing that happened during an operation.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// Backup: a file or directory could not be read; it is left out of the snapshot.
    FileUnreadable {
        /// The path on the host.
        path: PathBuf,
        /// What the operating system said.
        error: String,
    },
    /// Backup: an entry was deliberately left out (not an error of the file system).
    FileSkipped {
        /// The path on the host.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Backup: a file changed while it was read; the snapshot holds what was read.
    FileChanged {
        /// The path on the host.
        path: PathBuf,
    },
    /// Restore: an entry (or its metadata) could not be restored.
    RestoreFailed {
        /// The path relative to the restore target.
        path: PathBuf,
        /// What went wrong, naming the pack and blob when stored data is at fault.
        error: String,
    },
    /// Restore: the target ran out of space or quota (`ENOSPC`, `EDQUOT`), so the restore
    /// stopped instead of trying every remaining entry. Sent once, in place of an error per
    /// entry; the restore returns [`crate::restore::RestoreError::TargetFull`] with the same
    /// facts.
    RestoreStopped {
        /// The restore target.
        target: PathBuf,
        /// Entries other than directories that were not restored because of it.
        not_restored: u64,
        /// What the file system said.
        error: String,
    },
    /// A stored name that could leave its directory (`..`, `/`, empty) was refused.
    NameRefused {
        /// Where it would have gone, relative to the target or snapshot root.
        path: PathBuf,
        /// The stored name (invalid UTF-8 replaced).
        name: String,
        /// The tree that holds it.
        tree: Option<Id>,
    },
    /// A stored name that is not one path component (`a/b`, `/etc/passwd`) was written under
    /// a cleaned name (`dump`: a tar member without its leading `/`).
    NameCleaned {
        /// The name as written.
        path: PathBuf,
        /// The stored name (invalid UTF-8 replaced).
        name: String,
        /// The tree that holds it.
        tree: Option<Id>,
    },
    /// A directory holds two entries with the same name; the first is restored, the other
    /// left out.
    DuplicateName {
        /// The entry's path inside the snapshot.
        path: String,
        /// The tree that holds both.
        tree: Id,
    },
    /// A stored blob cannot be opened (decryption, decompression or hash failed).
    BlobDamaged {
        /// The pack holding it.
        pack: Id,
        /// `data` or `tree`.
        blob_type: &'static str,
        /// The blob.
        blob: Id,
        /// What failed.
        problem: String,
    },
    /// A blob that a snapshot refers to is in no index.
    BlobMissing {
        /// The snapshot, when one is being walked.
        snapshot: Option<Id>,
        /// The path inside the snapshot that needs it.
        path: String,
        /// `data` or `tree`.
        blob_type: &'static str,
        /// The blob.
        blob: Id,
    },
    /// An index names a pack that storage does not hold.
    PackMissing {
        /// The pack.
        pack: Id,
        /// Blobs the index says it holds.
        blobs: u32,
    },
    /// A pack that no index names (an interrupted or running backup's).
    PackUnindexed {
        /// The pack.
        pack: Id,
    },
    /// A repository object is damaged, unreadable or inconsistent.
    ObjectDamaged {
        /// The object (`snapshots/…`, `index/…`, `data/…/…`, `keys/…`, a tree).
        object: String,
        /// What is wrong.
        problem: String,
    },
    /// An operation waits for (or defers work because of) another process's lock.
    LockWaited {
        /// The other lock.
        lock: Id,
        /// Its host and process.
        holder: String,
        /// When its operation started (RFC 3339).
        since: String,
        /// What waits for it.
        waiting: String,
    },
    /// An object claims a time (a snapshot's or a lock's) that the storage's own time of it
    /// contradicts; the operation judged it by the storage's time.
    TimeDisputed {
        /// Its name in the repository.
        object: String,
        /// The time it claims (RFC 3339).
        claimed: String,
        /// When the storage says it was stored (RFC 3339).
        stored: String,
    },
    /// A temporary file that a killed writer left was removed.
    TemporaryRemoved {
        /// Its name in the repository.
        name: String,
    },
    /// A notable step of a long operation (prune's plan, a repair's rewrite).
    Step {
        /// The operation.
        operation: &'static str,
        /// What it did or will do.
        message: String,
    },
}

impl Event {
    /// How much it matters.
    pub fn severity(&self) -> Severity {
        match self {
            Event::FileUnreadable { .. }
            | Event::RestoreFailed { .. }
            | Event::RestoreStopped { .. }
            | Event::NameRefused { .. }
            | Event::DuplicateName { .. }
            | Event::BlobDamaged { .. }
            | Event::BlobMissing { .. }
            | Event::PackMissing { .. }
            | Event::ObjectDamaged { .. } => Severity::Error,
            Event::FileSkipped { .. }
            | Event::FileChanged { .. }
            | Event::NameCleaned { .. }
            | Event::PackUnindexed { .. }
            | Event::LockWaited { .. }
            | Event::TimeDisputed { .. } => Severity::Warning,
            Event::TemporaryRemoved { .. } | Event::Step { .. } => Severity::Info,
        }
    }

    /// A repository error as an event: damaged objects keep their name and problem apart.
    pub fn from_repo_error(e: &cairn_repo_format::RepoError) -> Event {
        match e {
            cairn_repo_format::RepoError::Corrupt { object, reason } => Event::ObjectDamaged {
                object: object.clone(),
                problem: reason.clone(),
            },
            other => Event::ObjectDamaged {
                object: String::new(),
                problem: other.to_string(),
            },
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::FileUnreadable { path, error } => {
                write!(f, "{}: not backed up: {error}", path.display())
            }
            Event::FileSkipped { path, reason } => {
                write!(f, "{}: skipped: {reason}", path.display())
            }
            Event::FileChanged { path } => write!(
                f,
                "{}: file changed while it was read; the snapshot holds what was read",
                path.display()
            ),
            Event::RestoreFailed { path, error } => write!(f, "{}: {error}", path.display()),
            Event::RestoreStopped {
                target,
                not_restored,
                error,
            } => write!(
                f,
                "restore to {} stopped: {error}; {not_restored} files not restored",
                target.display()
            ),
            Event::NameRefused { path, name, tree } => {
                write!(f, "{}: refusing unsafe name {name:?}", path.display())?;
                match tree {
                    Some(t) => write!(f, " in tree {t}"),
                    None => Ok(()),
                }
            }
            Event::NameCleaned { path, name, tree } => {
                write!(
                    f,
                    "{}: written under this name: the stored name {name:?} is not one relative \
                     path component",
                    path.display()
                )?;
                match tree {
                    Some(t) => write!(f, " (tree {t})"),
                    None => Ok(()),
                }
            }
            Event::DuplicateName { path, tree } => write!(
                f,
                "{path}: tree {tree} holds this name more than once; only the first entry is \
                 restored"
            ),
            Event::BlobDamaged {
                pack,
                blob_type,
                blob,
                problem,
            } => write!(
                f,
                "{}: {blob_type} blob {blob}: {problem}",
                cairn_repo_format::FileKind::Pack.path(pack)
            ),
            Event::BlobMissing {
                snapshot,
                path,
                blob_type,
                blob,
            } => {
                if let Some(s) = snapshot {
                    write!(f, "snapshot {}: ", s.short())?;
                }
                write!(
                    f,
                    "{path}: {blob_type} blob {blob} is not in any index (data missing)"
                )
            }
            Event::PackMissing { pack, blobs } => write!(
                f,
                "{}: indexed but missing from the repository ({blobs} blobs lost)",
                cairn_repo_format::FileKind::Pack.path(pack)
            ),
            Event::PackUnindexed { pack } => write!(
                f,
                "{}: not in any index (left by an interrupted backup or one still running)",
                cairn_repo_format::FileKind::Pack.path(pack)
            ),
            Event::ObjectDamaged { object, problem } if object.is_empty() => f.write_str(problem),
            Event::ObjectDamaged { object, problem } => write!(f, "{object}: {problem}"),
            Event::LockWaited {
                lock,
                holder,
                since,
                waiting,
            } => write!(
                f,
                "{waiting} waits for lock {} ({holder}, since {since})",
                lock.short()
            ),
            Event::TimeDisputed {
                object,
                claimed,
                stored,
            } => write!(
                f,
                "{object} claims the time {claimed} but was stored at {stored}; judged by the time it was stored"
            ),
            Event::TemporaryRemoved { name } => write!(
                f,
                "removed {name}, a temporary file left by an interrupted writer"
            ),
            Event::Step { operation, message } => write!(f, "{operation}: {message}"),
        }
    }
}

/// Receives events. Called from the operation's threads, possibly several at once.
pub trait EventSink: Send + Sync {
    /// One event.
    fn event(&self, event: Event);
}

impl<F: Fn(Event) + Send + Sync> EventSink for F {
    fn event(&self, event: Event) {
        self(event)
    }
}

/// A cheap, cloneable handle to the host's sink.
#[derive(Clone)]
pub struct Events(Arc<dyn EventSink>);

impl Events {
    /// Events go to `sink`.
    pub fn new(sink: impl EventSink + 'static) -> Self {
        Events(Arc::new(sink))
    }

    /// Events are dropped.
    pub fn discard() -> Self {
        Events::new(|_: Event| {})
    }

    /// Sends one event.
    pub fn emit(&self, event: Event) {
        self.0.event(event)
    }
}

impl Default for Events {
    fn default() -> Self {
        Events::discard()
    }
}

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Events")
    }
}

/// A sink that keeps every event, for tests and hosts that report at the end.
#[derive(Clone, Default)]
pub struct Collect(Arc<std::sync::Mutex<Vec<Event>>>);

impl Collect {
    /// An empty collection.
    pub fn new() -> Self {
        Collect::default()
    }

    /// The events so far.
    pub fn events(&self) -> Vec<Event> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// An [`Events`] handle that adds to this collection.
    pub fn handle(&self) -> Events {
        let me = self.clone();
        Events::new(move |e: Event| me.0.lock().unwrap_or_else(|p| p.into_inner()).push(e))
    }
}
