//! Running an operation from an async host. Every operation of the engine is a blocking call
//! that starts threads of its own; an async host (the DaemonSet agent, a server's
//! maintenance) must not run one on its runtime's workers. [`run`] starts the operation on a
//! thread of its own and returns a future that completes with its result, whatever the
//! runtime: the host's workers are never held, and the storage backends run their requests
//! on the engine's own I/O runtime.
//!
//! Dropping the future does not stop the operation: cancel it through its
//! [`crate::Cancel`] handle, then await the future to know it has released its lock.

use std::future::Future;

use futures::channel::oneshot;

/// The operation's thread panicked (a bug); its message.
#[derive(Debug, thiserror::Error)]
#[error("the operation's thread panicked: {0}")]
pub struct Panicked(pub String);

/// Runs `f` on a new thread named `name`; the future yields its result.
pub fn run<T, F>(name: &str, f: F) -> impl Future<Output = Result<T, Panicked>> + Send + 'static
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            let _ = tx.send(out.map_err(|p| {
                p.downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "no message".into())
            }));
        });
    async move {
        if let Err(e) = spawned {
            return Err(Panicked(format!("cannot start a thread: {e}")));
        }
        match rx.await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(msg)) => Err(Panicked(msg)),
            Err(_) => Err(Panicked("the thread ended without a result".into())),
        }
    }
}
