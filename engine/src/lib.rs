//! Cairn's engine: the backup and restore pipelines and what they share (metadata capture,
//! patterns, snapshot selection, repository locations). The `cairn` command, the Kubernetes
//! agent, the init-container restore and the server all call these functions; no capability
//! lives only behind a command line.

pub mod backup;
pub mod blocking;
pub mod cancel;
pub mod check;
pub mod copy;
pub mod diff;
pub mod dump;
pub mod events;
pub mod filter;
pub mod find;
pub mod forget;
pub mod fsmeta;
pub mod inventory;
pub mod location;
pub mod lock;
pub mod open;
pub mod prune;
pub mod reach;
pub mod repair;
pub mod restore;
pub mod select;
pub mod stats;
pub mod store;
pub mod treecheck;
pub mod treewalk;
pub mod volume;

pub use cancel::{Cancel, Cancelled};
pub use events::{Event, Events, Severity};
pub use open::{OpenError, PasswordSource, RepoSettings};

/// What every operation gets from its host besides its own options: where its events go and
/// the handle that cancels it. `Context::default()` drops events and is never cancelled.
#[derive(Clone, Debug, Default)]
pub struct Context {
    /// Where problems and steps are reported.
    pub events: Events,
    /// Stops the operation.
    pub cancel: Cancel,
}

impl Context {
    /// Reports one event.
    pub fn emit(&self, event: Event) {
        self.events.emit(event)
    }
}

/// A byte count for people: `512 B`, `1.500 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.3} {}", UNITS[u])
    }
}
