//! Terminal progress: a bar with files, bytes, rate and ETA, redrawn from the engine's atomic
//! counters on its own thread; nothing is drawn when stderr is not a terminal.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cairn_engine::backup::Progress;
use cairn_engine::restore::RestoreProgress;
use crossbeam_channel::{Sender, bounded};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A running display; dropping it clears the bar.
pub struct Display {
    stop: Option<Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What a bar shows at one moment: bytes done, bytes expected, and a message.
type Sample = (u64, u64, String);

impl Display {
    fn start(enabled: bool, sample: impl Fn() -> Sample + Send + 'static) -> Display {
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
            // Redraw every 200 ms until told to stop (the channel closes).
            while rx
                .recv_timeout(Duration::from_millis(200))
                .is_err_and(|e| e.is_timeout())
            {
                let (pos, len, msg) = sample();
                bar.set_length(len.max(pos));
                bar.set_position(pos);
                bar.set_message(msg);
            }
            bar.finish_and_clear();
        });
        Display {
            stop: Some(tx),
            thread: Some(thread),
        }
    }

    /// A backup's progress; the total comes from the scanner running ahead.
    pub fn backup(p: Arc<Progress>, enabled: bool) -> Display {
        Display::start(enabled, move || {
            let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
            let scanning = if p.scan_done.load(Ordering::Relaxed) {
                ""
            } else {
                " (scanning)"
            };
            let msg = format!("{}/{} files{scanning}", g(&p.files_done), g(&p.total_files));
            (g(&p.bytes_done), g(&p.total_bytes), msg)
        })
    }

    /// A restore's progress against the snapshot's size.
    pub fn restore(p: Arc<RestoreProgress>, total_bytes: u64, enabled: bool) -> Display {
        Display::start(enabled, move || {
            let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
            (g(&p.bytes), total_bytes, format!("{} files", g(&p.files)))
        })
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
