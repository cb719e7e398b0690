//! SIGINT and SIGTERM for the `cairn` command: the first one cancels the running operation
//! through the engine's cancel handle (it stops within a second, releases its lock, writes no
//! half-made snapshot) and the process exits 130 or 143 with one line; a second signal, or a
//! command that has not stopped [`GRACE`] after the first, exits at once with the same code.
//!
//! The two signals are blocked in every thread (set before any thread starts, inherited) and
//! taken by one thread with `sigwait`, so no handler runs in signal context.

use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};

use cairn_engine::Cancel;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};

/// How long a command may take to stop after the first signal.
const GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// The signal that stopped the process, once one came.
#[derive(Clone, Default)]
pub struct Caught(Arc<AtomicI32>);

impl Caught {
    /// The signal number, if a signal came.
    pub fn signal(&self) -> Option<i32> {
        match self.0.load(Ordering::Acquire) {
            0 => None,
            n => Some(n),
        }
    }
}

/// The conventional exit code for a process stopped by `signal`.
pub fn exit_code(signal: i32) -> u8 {
    (128 + signal).clamp(0, 255) as u8
}

/// The signal's name for the one-line message.
pub fn name(signal: i32) -> &'static str {
    Signal::try_from(signal).map_or("a signal", |s| s.as_str())
}

/// Blocks SIGINT and SIGTERM and starts the thread that takes them. Call before any other
/// thread exists. If the signals cannot be blocked the defaults stay (the process dies at
/// once), which is what it did before.
pub fn watch(cancel: Cancel) -> Caught {
    let caught = Caught::default();
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    if pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None).is_err() {
        return caught;
    }
    let seen = caught.clone();
    let spawned = std::thread::Builder::new()
        .name("cairn-signals".into())
        .spawn(move || {
            let Ok(first) = set.wait() else { return };
            seen.0.store(first as i32, Ordering::Release);
            cancel.cancel();
            // The second signal, or the end of the grace period, ends the process now.
            let deadline = libc::timespec {
                tv_sec: GRACE.as_secs() as libc::time_t,
                tv_nsec: 0,
            };
            // SAFETY: `set` is a valid, initialised signal set, the info pointer may be null,
            // and the timeout points at a live timespec.
            let _ = unsafe { libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), &deadline) };
            eprintln!(
                "cairn: {} again or not stopped in time; exiting now",
                first.as_str()
            );
            std::process::exit(exit_code(first as i32).into());
        });
    if spawned.is_err() {
        // No watcher: let the signals act as they did.
        let _ = pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&set), None);
    }
    caught
}
