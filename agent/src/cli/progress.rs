//! Terminal progress: a bar with files, bytes, rate and ETA, redrawn from the engine's atomic
//! counters on its own thread; nothing is drawn when stderr is not a terminal.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use cairn_agent::backup::Progress;
use crossbeam_channel::{Sender, bounded};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A running display; dropping it clears the bar.
pub struct Display {
    stop: Option<Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Display {
    /// Starts drawing `p` when `enabled`.
    pub fn backup(p: Arc<Progress>, enabled: bool) -> Display {
        if !enabled {
            return Display {
                stop: None,
                thread: None,
            };
        }
        let (tx, rx) = bounded::<()>(0);
        let thread = std::thread::spawn(move || {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "[{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
                )
                .expect("valid template"),
            );
            while rx
                .recv_timeout(Duration::from_millis(200))
                .is_err_and(|e| e.is_timeout())
            {
                let total = p.total_bytes.load(Ordering::Relaxed);
                bar.set_length(total.max(p.bytes_done.load(Ordering::Relaxed)));
                bar.set_position(p.bytes_done.load(Ordering::Relaxed));
                bar.set_message(format!(
                    "{}/{} files{}",
                    p.files_done.load(Ordering::Relaxed),
                    p.total_files.load(Ordering::Relaxed),
                    if p.scan_done.load(Ordering::Relaxed) {
                        ""
                    } else {
                        " (scanning)"
                    }
                ));
            }
            bar.finish_and_clear();
        });
        Display {
            stop: Some(tx),
            thread: Some(thread),
        }
    }
}

impl Drop for Display {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
