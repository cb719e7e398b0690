//! A full target: telling "no space or quota left" from every other error of the file system,
//! and the state the stages share once it is met.
//!
//! When creating, writing, extending or linking an entry fails with `ENOSPC` or `EDQUOT` (and
//! only then: [`is_target_full`]), the stage that met it calls [`Stop::full`]. From then on
//! the plan creates nothing more and only counts what it would have restored, and the fetch,
//! unseal and write stages give up every range, blob and file still in flight (one load of an
//! `AtomicBool` per range, blob and destination), each file counted once and reported by none.
//! The restore then returns [`super::RestoreError::TargetFull`], after one
//! [`crate::Event::RestoreStopped`], instead of one error per remaining file.
//!
//! Errors of metadata (owner, mode, times, xattrs and ACLs) never stop a restore: ext4 says
//! `ENOSPC` for an extended attribute too large for its inode's block even when the file
//! system has room, so that error is the entry's own and is reported with it.

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The operating system's error code behind `e`: its own, or that of the error a restore
/// stage wrapped with a path ([`located`]).
pub fn os_code(e: &io::Error) -> Option<i32> {
    e.raw_os_error().or_else(|| {
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<Located>())
            .and_then(|l| l.code)
    })
}

/// Whether `e` says the target has no space (`ENOSPC`) or quota (`EDQUOT`) left. Nothing
/// else counts: an I/O error, a refused permission or a name too long is the entry's own.
pub fn is_target_full(e: &io::Error) -> bool {
    matches!(os_code(e), Some(libc::ENOSPC | libc::EDQUOT))
}

/// An error of the file system with where it happened (`PATH: WHAT: ERROR`), keeping the
/// operating system's code for [`os_code`].
#[derive(Debug)]
struct Located {
    message: String,
    code: Option<i32>,
}

impl fmt::Display for Located {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Located {}

/// `e` with the path and the step it happened at in its message; its kind and its operating
/// system code ([`os_code`]) stay.
pub fn located(path: &Path, what: &str, e: io::Error) -> io::Error {
    let code = os_code(&e);
    io::Error::new(
        e.kind(),
        Located {
            message: format!("{}: {what}: {e}", path.display()),
            code,
        },
    )
}

/// What the stages share about a full target.
#[derive(Default)]
pub struct Stop {
    full: AtomicBool,
    /// The code of the first `ENOSPC` or `EDQUOT` met.
    code: OnceLock<i32>,
    not_restored: AtomicU64,
}

impl Stop {
    /// Records that the target is full, as `e` (one of [`is_target_full`]'s errors) says:
    /// every stage stops scheduling work.
    pub fn full(&self, e: &io::Error) {
        let _ = self.code.set(os_code(e).unwrap_or(libc::ENOSPC));
        self.full.store(true, Ordering::Release);
    }

    /// Whether the target is full (a single atomic load).
    pub fn is_full(&self) -> bool {
        self.full.load(Ordering::Acquire)
    }

    /// Counts `n` entries that were not restored because the target is full.
    pub fn not_restored(&self, n: u64) {
        self.not_restored.fetch_add(n, Ordering::Relaxed);
    }

    /// Once the restore has wound down: the error that stopped it and the entries not
    /// restored, if the target was full.
    pub fn outcome(&self) -> Option<(io::Error, u64)> {
        let code = *self.code.get()?;
        Some((
            io::Error::from_raw_os_error(code),
            self.not_restored.load(Ordering::Relaxed),
        ))
    }
}

/// What a test makes fail instead of the file system.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// Creating a regular file.
    Create,
    /// Writing a chunk into one.
    Write,
}

/// Errors a unit test injects into the plan and write stages in place of the file system's.
/// Outside tests it holds nothing and [`Faults::check`] is `Ok(())`.
#[derive(Default)]
pub(crate) struct Faults {
    /// Called before each create and write with the entry's path relative to the target;
    /// an error returned is taken as the file system's.
    #[cfg(test)]
    #[allow(clippy::type_complexity)]
    pub inject: Option<Box<dyn Fn(Op, &Path) -> Option<io::Error> + Send + Sync>>,
}

impl Faults {
    /// The injected error for `op` on `rel`, if any.
    #[inline]
    pub(crate) fn check(&self, op: Op, rel: &Path) -> io::Result<()> {
        #[cfg(test)]
        if let Some(f) = &self.inject
            && let Some(e) = f(op, rel)
        {
            return Err(e);
        }
        let _ = (op, rel);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(code: i32) -> io::Error {
        io::Error::from_raw_os_error(code)
    }

    #[test]
    fn only_enospc_and_edquot_mean_the_target_is_full() {
        assert!(is_target_full(&os(libc::ENOSPC)));
        assert!(is_target_full(&os(libc::EDQUOT)));
        for code in [
            libc::EIO,
            libc::EACCES,
            libc::EPERM,
            libc::EROFS,
            libc::EFBIG,
            libc::ENAMETOOLONG,
            libc::EEXIST,
            libc::ENOENT,
            libc::EMFILE,
            libc::ENOMEM,
            libc::EINTR,
        ] {
            assert!(!is_target_full(&os(code)), "{}", os(code));
        }
        // The kind alone is not enough: only the operating system's code counts.
        assert!(!is_target_full(&io::Error::new(
            io::ErrorKind::StorageFull,
            "full"
        )));
        assert!(!is_target_full(&io::Error::other(
            "No space left on device"
        )));
    }

    #[test]
    fn a_located_error_keeps_its_code_and_says_where() {
        let p = Path::new("/target/a/b");
        let e = located(p, "cannot create", os(libc::ENOSPC));
        assert!(is_target_full(&e));
        assert_eq!(e.kind(), io::ErrorKind::StorageFull);
        assert_eq!(
            e.to_string(),
            format!("/target/a/b: cannot create: {}", os(libc::ENOSPC))
        );
        // Wrapped twice, still the same code.
        let twice = located(p, "cannot open parent", located(p, "x", os(libc::EDQUOT)));
        assert_eq!(os_code(&twice), Some(libc::EDQUOT));
        assert!(!is_target_full(&located(p, "cannot create", os(libc::EIO))));
        assert_eq!(os_code(&located(p, "x", io::Error::other("no code"))), None);
    }

    #[test]
    fn stop_keeps_the_first_error_and_counts() {
        let s = Stop::default();
        assert!(!s.is_full());
        assert!(s.outcome().is_none());
        s.not_restored(2);
        s.full(&os(libc::EDQUOT));
        s.full(&os(libc::ENOSPC));
        s.not_restored(3);
        assert!(s.is_full());
        let (e, n) = s.outcome().unwrap();
        assert_eq!(e.raw_os_error(), Some(libc::EDQUOT));
        assert_eq!(n, 5);
    }
}
