//! Cancellation: a handle the host keeps and the operation polls. Cancelling is a request;
//! the operation stops at its next check (between files, chunks, packs, ranges and steps, so
//! within a second), finishes nothing half-way that would leave the repository invalid,
//! releases its lock and returns [`Cancelled`]. A cancelled backup writes no snapshot; what it
//! had already stored and indexed is reused by the next one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Shared by the host and the operations it runs; clones see the same state.
#[derive(Clone, Debug, Default)]
pub struct Cancel(Arc<AtomicBool>);

/// The operation stopped because it was cancelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cancelled")]
pub struct Cancelled;

impl Cancel {
    /// Not cancelled.
    pub fn new() -> Self {
        Cancel::default()
    }

    /// Asks every operation holding a clone to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Whether [`Cancel::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// `Err(Cancelled)` once cancelled: `cancel.check()?` at each step.
    pub fn check(&self) -> Result<(), Cancelled> {
        if self.is_cancelled() {
            Err(Cancelled)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_the_request() {
        let c = Cancel::new();
        let seen_by_operation = c.clone();
        assert!(seen_by_operation.check().is_ok());
        c.cancel();
        assert_eq!(seen_by_operation.check(), Err(Cancelled));
    }
}
