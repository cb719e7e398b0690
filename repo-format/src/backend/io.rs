//! The one tokio runtime that drives the object-store backends, shared by every backend the
//! process opens and never dropped. The engine's stages are plain threads that call storage
//! like a file API; [`block_on`] runs a request on this runtime and waits for it.
//!
//! A host that is itself a tokio program may call in from one of its own runtime's threads
//! (a `#[tokio::main]` task that opens a repository, say). Blocking on another runtime there
//! would panic, and so would dropping one (which is why no backend owns a runtime). Such a
//! call is carried out on a short-lived thread of its own instead, so it is correct from any
//! thread; hosts still run whole operations on blocking threads, so that their own workers
//! are never held (see `cairn_engine::blocking`).

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::{Builder, Runtime};

static IO: OnceLock<Result<Runtime, String>> = OnceLock::new();

/// The runtime, built on first use: two worker threads do all of the process's storage I/O.
fn runtime() -> Result<&'static Runtime, std::io::Error> {
    IO.get_or_init(|| {
        Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cairn-io")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| std::io::Error::other(format!("cannot start the I/O runtime: {e}")))
}

/// Makes sure the runtime can be had (for constructors, which report it as an error).
pub fn ensure() -> Result<(), std::io::Error> {
    runtime().map(|_| ())
}

/// Runs `f` on the I/O runtime and returns its output. From a thread inside some tokio
/// runtime, `f` runs on a thread of its own so that nothing blocks on a runtime from within
/// one.
pub fn block_on<F>(f: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    let rt = match runtime() {
        Ok(rt) => rt,
        // `ensure` ran when the backend was made, so the runtime exists.
        Err(e) => panic!("{e}"),
    };
    if tokio::runtime::Handle::try_current().is_err() {
        return rt.block_on(f);
    }
    std::thread::scope(|s| match s.spawn(|| rt.block_on(f)).join() {
        Ok(out) => out,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}
