//! Rate limits: a [`Backend`] wrapper that holds uploads (`put`) and downloads (`get`) to a
//! number of bytes per second, shared by every connection of the process (`--limit-upload`,
//! `--limit-download`, in KiB/s).
//!
//! Each request books the next free slot on a timeline that advances by `bytes / rate`. A put
//! waits for its slot to start, sends, and returns no sooner than its slot ends; a get fetches,
//! then hands its bytes on no sooner than its slot ends. So N bytes never move in less than
//! N / rate, whatever the number of connections. The granularity is one request (a pack of
//! 16 MiB, or a restore range), not one network packet: within a request the transfer runs at
//! full speed. Listing, head and delete requests are not counted.
//!
//! It sits inside [`super::Retry`], so a retried request books its bytes again, as they are
//! sent again.

use std::ops::Range;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Backend, BackendError, ObjectInfo, Spool, Spooled};

/// One direction's limit: a timeline of booked transfer slots.
#[derive(Debug)]
pub struct RateLimit {
    bytes_per_sec: u64,
    next_free: Mutex<Option<Instant>>,
}

impl RateLimit {
    /// A limit of `kib_per_sec` KiB/s. Zero is refused by the callers (it would stop all I/O).
    pub fn kib_per_sec(kib_per_sec: u64) -> RateLimit {
        RateLimit {
            bytes_per_sec: kib_per_sec.max(1) * 1024,
            next_free: Mutex::new(None),
        }
    }

    /// Books `bytes` at `now`: returns the slot, from when this transfer may start to when it
    /// is paid for. The next booking starts where this one ends.
    pub fn book(&self, now: Instant, bytes: u64) -> Range<Instant> {
        let span = Duration::from_secs_f64(bytes as f64 / self.bytes_per_sec as f64);
        let mut next = self.next_free.lock().unwrap_or_else(|p| p.into_inner());
        let start = match *next {
            Some(t) if t > now => t,
            _ => now,
        };
        *next = Some(start + span);
        start..start + span
    }
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

/// A backend with optional upload and download rate limits.
pub struct Limited<B> {
    inner: B,
    upload: Option<RateLimit>,
    download: Option<RateLimit>,
}

impl<B: Backend> Limited<B> {
    /// Wraps `inner`; `None` means no limit in that direction.
    pub fn new(inner: B, upload: Option<RateLimit>, download: Option<RateLimit>) -> Self {
        Limited {
            inner,
            upload,
            download,
        }
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &B {
        &self.inner
    }
}

impl<B: Backend> Limited<B> {
    /// Runs an upload of `len` bytes within its slot of the upload rate, if one is set.
    fn upload<T>(&self, len: u64, op: impl FnOnce() -> T) -> T {
        let Some(l) = &self.upload else {
            return op();
        };
        let slot = l.book(Instant::now(), len);
        sleep_until(slot.start);
        let result = op();
        sleep_until(slot.end);
        result
    }
}

impl<B: Backend> Backend for Limited<B> {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn list(&self, prefix: &str, f: &mut dyn FnMut(ObjectInfo)) -> Result<(), BackendError> {
        self.inner.list(prefix, f)
    }

    fn head(&self, path: &str) -> Result<Option<u64>, BackendError> {
        self.inner.head(path)
    }

    fn get(&self, path: &str, range: Option<Range<u64>>) -> Result<Bytes, BackendError> {
        let data = self.inner.get(path, range)?;
        if let Some(l) = &self.download {
            sleep_until(l.book(Instant::now(), data.len() as u64).end);
        }
        Ok(data)
    }

    fn put(&self, path: &str, data: Bytes) -> Result<(), BackendError> {
        self.upload(data.len() as u64, || self.inner.put(path, data))
    }

    fn delete(&self, path: &str) -> Result<(), BackendError> {
        self.inner.delete(path)
    }

    fn spool(&self, capacity: usize) -> Result<Spool, BackendError> {
        self.inner.spool(capacity)
    }

    fn parallelism(&self) -> super::Parallelism {
        self.inner.parallelism()
    }

    fn access(&self) -> Result<super::Access, BackendError> {
        self.inner.access()
    }

    fn remove_stale_temporaries(
        &self,
        before: std::time::SystemTime,
    ) -> Result<Vec<String>, BackendError> {
        self.inner.remove_stale_temporaries(before)
    }

    fn put_spooled(&self, path: &str, body: &Spooled) -> Result<(), BackendError> {
        self.upload(body.len(), || self.inner.put_spooled(path, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ObjectStoreBackend;

    #[test]
    fn bookings_follow_each_other_at_the_rate() {
        let l = RateLimit::kib_per_sec(100);
        let t0 = Instant::now();
        let ms = |n| Duration::from_millis(n);
        // The first transfer starts at once; each next one where the previous one's share ends.
        assert_eq!(l.book(t0, 51_200), t0..t0 + ms(500));
        assert_eq!(l.book(t0, 102_400), t0 + ms(500)..t0 + ms(1500));
        assert_eq!(l.book(t0 + ms(200), 0), t0 + ms(1500)..t0 + ms(1500));
        // An idle gap is not saved up as a burst allowance.
        let later = t0 + Duration::from_secs(60);
        assert_eq!(l.book(later, 10_240), later..later + ms(100));
        assert_eq!(l.book(later, 1024).start, later + ms(100));
    }

    #[test]
    fn limits_hold_across_threads() {
        let b = Limited::new(
            ObjectStoreBackend::memory(),
            Some(RateLimit::kib_per_sec(1024)),
            Some(RateLimit::kib_per_sec(2048)),
        );
        let start = Instant::now();
        // 4 puts of 256 KiB from 4 threads at 1 MiB/s: 1 MiB cannot move in less than 1 s.
        std::thread::scope(|s| {
            for i in 0..4 {
                let b = &b;
                s.spawn(move || b.put(&format!("data/00/{i}"), Bytes::from(vec![0u8; 256 << 10])));
            }
        });
        let uploaded = start.elapsed();
        assert!(uploaded >= Duration::from_millis(990), "{uploaded:?}");
        for i in 0..4 {
            assert_eq!(b.head(&format!("data/00/{i}")).unwrap(), Some(256 << 10));
        }
        // 4 gets of 256 KiB at 2 MiB/s: at least 0.5 s.
        let start = Instant::now();
        for i in 0..4 {
            assert_eq!(
                b.get(&format!("data/00/{i}"), None).unwrap().len(),
                256 << 10
            );
        }
        let downloaded = start.elapsed();
        assert!(downloaded >= Duration::from_millis(495), "{downloaded:?}");
    }
}
