//! Holding a repository lock while working (see `cairn_repo_format::lock` for the rules).
//!
//! [`RepoLock::acquire`] writes the lock and starts a thread that rewrites it every
//! [`REFRESH`]; dropping the guard stops the thread and removes the lock. A backup loads its
//! index only after taking its lock, and hands the lock to the repository
//! ([`Repository::load_index_locked`]), which refuses to write the snapshot if refreshing
//! failed for so long that a prune may have taken the lock for dead.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cairn_repo_format::lock::{Lock, LockKind, REFRESH, STALE_AFTER};
use cairn_repo_format::{Id, Indexed, LockHealth, Opened, RepoError, Repository};
use chrono::Utc;
use crossbeam_channel::{Sender, bounded};

/// Why a lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another prune holds the exclusive lock.
    #[error("another prune is running (lock {id}, {host} pid {pid}, since {since})")]
    PruneRunning {
        /// The other lock.
        id: Id,
        /// Its host.
        host: String,
        /// Its process.
        pid: u32,
        /// When it started.
        since: String,
    },
    /// Storage failed.
    #[error(transparent)]
    Repo(#[from] RepoError),
}

struct State {
    current: Id,
    last_refresh: Instant,
    error: Option<String>,
}

/// A held lock; removed on drop.
pub struct RepoLock {
    state: Arc<Mutex<State>>,
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
    repo: Repository<Opened>,
    /// Left in the repository on drop, as a killed process leaves its lock.
    abandoned: std::sync::atomic::AtomicBool,
}

impl RepoLock {
    /// Writes a lock of `kind` and keeps it fresh. For [`LockKind::Prune`], fails if another
    /// live prune lock exists (both write, then both look; the later one backs off).
    pub fn acquire(repo: &Repository<Opened>, kind: LockKind) -> Result<Arc<RepoLock>, LockError> {
        let lock = Lock::new(kind);
        let id = repo.write_lock(&lock)?;
        let guard = RepoLock::start(repo.clone(), lock.clone(), id);
        if kind == LockKind::Prune {
            let now = Utc::now();
            for listed in repo.locks()? {
                let other = listed.id;
                if other == id || !listed.is_live_prune(now) {
                    continue;
                }
                let Ok(l) = listed.lock else { continue };
                // The earlier prune wins; ties go to the smaller id.
                if (l.started, other) < (lock.started, id) {
                    return Err(LockError::PruneRunning {
                        id: other,
                        host: l.hostname,
                        pid: l.pid,
                        since: l.started.to_rfc3339(),
                    });
                }
            }
        }
        Ok(Arc::new(guard))
    }

    fn start(repo: Repository<Opened>, lock: Lock, id: Id) -> RepoLock {
        let state = Arc::new(Mutex::new(State {
            current: id,
            last_refresh: Instant::now(),
            error: None,
        }));
        let (stop, stopped) = bounded::<()>(1);
        let thread = {
            let (repo, state) = (repo.clone(), state.clone());
            std::thread::spawn(move || {
                // The channel is the timer: a message or a disconnect ends the loop.
                while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(REFRESH)
                {
                    refresh(&repo, &lock, &state);
                }
            })
        };
        RepoLock {
            state,
            stop: Some(stop),
            thread: Some(thread),
            repo,
            abandoned: Default::default(),
        }
    }

    /// The current lock object's id.
    pub fn id(&self) -> Id {
        self.lock_state().current
    }

    /// Stops refreshing the lock and leaves it in the repository when dropped, as a process
    /// killed while holding it would: it goes stale, and `cairn unlock` removes it. For the
    /// tests of what a killed operation leaves behind.
    pub fn abandon(&self) {
        self.abandoned
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn refresh(repo: &Repository<Opened>, lock: &Lock, state: &Mutex<State>) {
    let fresh = Lock {
        time: Utc::now(),
        ..lock.clone()
    };
    let old = state.lock().unwrap_or_else(|p| p.into_inner()).current;
    match repo.write_lock(&fresh) {
        Ok(new) => {
            let _ = repo.remove_lock(&old);
            let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
            s.current = new;
            s.last_refresh = Instant::now();
            s.error = None;
        }
        Err(e) => {
            state.lock().unwrap_or_else(|p| p.into_inner()).error = Some(e.to_string());
        }
    }
}

/// Refreshes may fail for this long before the lock counts as lost: a prune treats a lock as
/// dead after [`STALE_AFTER`], and this leaves one refresh interval of margin.
const LOST_AFTER: Duration = STALE_AFTER.saturating_sub(REFRESH);

impl LockHealth for RepoLock {
    fn check(&self) -> Result<(), String> {
        let s = self.lock_state();
        let since = s.last_refresh.elapsed();
        if since > LOST_AFTER {
            return Err(format!(
                "the repository lock could not be refreshed for {} minutes ({}), so a prune may have removed data this backup refers to",
                since.as_secs() / 60,
                s.error.as_deref().unwrap_or("no error recorded")
            ));
        }
        Ok(())
    }
}

impl Drop for RepoLock {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if self.abandoned.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let id = self.lock_state().current;
        let _ = self.repo.remove_lock(&id);
    }
}

/// Takes a backup lock, then loads the index under it: the order that lets a concurrent prune
/// know this backup may refer to any pack indexed now. The lock lives as long as the returned
/// repository (and its clones).
pub fn index_for_backup(repo: Repository<Opened>) -> Result<Repository<Indexed>, LockError> {
    let lock = RepoLock::acquire(&repo, LockKind::Backup)?;
    Ok(repo.load_index_locked(lock)?)
}
