//! Retries: a [`Backend`] wrapper that repeats an operation failing with a
//! [`BackendError::Transient`] error, with exponential backoff and full jitter, within a bound
//! on attempts and on total time. Permanent errors (not found, permission, a create-only
//! conflict) return at once.
//!
//! Retrying is safe because every write is idempotent by construction: objects are named by
//! the hash of their bytes and written create-only, so a put whose reply was lost and that
//! then finds its object already there has succeeded; a delete that then finds nothing has too.

use std::ops::Range;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Backend, BackendError, ObjectInfo, Spool, Spooled};

/// How hard to try.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Attempts in all (the first included).
    pub attempts: u32,
    /// The first backoff; each next one doubles, up to `max_delay`.
    pub base_delay: Duration,
    /// The longest single backoff.
    pub max_delay: Duration,
    /// No new attempt starts after this long since the first.
    pub total: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 8,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
            total: Duration::from_secs(120),
        }
    }
}

/// A backend whose operations are retried on transient errors.
pub struct Retry<B> {
    inner: B,
    policy: RetryPolicy,
}

impl<B: Backend> Retry<B> {
    /// Wraps `inner`.
    pub fn new(inner: B, policy: RetryPolicy) -> Self {
        Retry { inner, policy }
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &B {
        &self.inner
    }

    /// Runs a create-only store with retries. "Already exists" after a retry means our own
    /// earlier attempt stored the object and only its reply was lost.
    fn create(
        &self,
        mut op: impl FnMut(&B) -> Result<(), BackendError>,
    ) -> Result<(), BackendError> {
        let mut retried = false;
        self.run(|b| {
            let r = op(b);
            let first = !retried;
            retried = true;
            match r {
                Err(BackendError::AlreadyExists { .. }) if !first => Ok(()),
                r => r,
            }
        })
    }

    fn run<T>(&self, mut op: impl FnMut(&B) -> Result<T, BackendError>) -> Result<T, BackendError> {
        let start = Instant::now();
        let mut delay = self.policy.base_delay;
        let mut attempt = 1;
        loop {
            match op(&self.inner) {
                Err(BackendError::Transient { path, message })
                    if attempt < self.policy.attempts =>
                {
                    // Full jitter: anywhere between zero and the current backoff.
                    let jitter = crate::crypto::random_u64() % (delay.as_millis() as u64 + 1);
                    let wait = Duration::from_millis(jitter);
                    if start.elapsed() + wait > self.policy.total {
                        return Err(BackendError::Transient {
                            path,
                            message: format!(
                                "{message} (gave up after {attempt} attempts in {:.1} s)",
                                start.elapsed().as_secs_f64()
                            ),
                        });
                    }
                    std::thread::sleep(wait);
                    delay = (delay * 2).min(self.policy.max_delay);
                    attempt += 1;
                }
                Err(BackendError::Transient { path, message }) => {
                    return Err(BackendError::Transient {
                        path,
                        message: format!("{message} (gave up after {attempt} attempts)"),
                    });
                }
                other => return other,
            }
        }
    }
}

impl<B: Backend> Backend for Retry<B> {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn list(&self, prefix: &str, f: &mut dyn FnMut(ObjectInfo)) -> Result<(), BackendError> {
        // A listing that fails part-way is started again; the caller sees each object once.
        self.run(|b| {
            let mut items = Vec::new();
            b.list(prefix, &mut |o| items.push(o))?;
            for o in items {
                f(o);
            }
            Ok(())
        })
    }

    fn head(&self, path: &str) -> Result<Option<u64>, BackendError> {
        self.run(|b| b.head(path))
    }

    fn get(&self, path: &str, range: Option<Range<u64>>) -> Result<Bytes, BackendError> {
        self.run(|b| b.get(path, range.clone()))
    }

    fn put(&self, path: &str, data: Bytes) -> Result<(), BackendError> {
        self.create(|b| b.put(path, data.clone()))
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
        self.create(|b| b.put_spooled(path, body))
    }

    fn delete(&self, path: &str) -> Result<(), BackendError> {
        let mut retried = false;
        self.run(|b| {
            let r = b.delete(path);
            let first = !retried;
            retried = true;
            match r {
                Err(BackendError::NotFound { .. }) if !first => Ok(()),
                r => r,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::backend::ObjectStoreBackend;

    /// Fails the first `fail` calls of every operation with `error`.
    struct Flaky {
        inner: ObjectStoreBackend,
        fail: u32,
        calls: AtomicU32,
        transient: bool,
    }

    impl Flaky {
        fn check(&self, path: &str) -> Result<(), BackendError> {
            if self.calls.fetch_add(1, Ordering::SeqCst) < self.fail {
                let (path, message) = (path.to_string(), "injected".to_string());
                return Err(if self.transient {
                    BackendError::Transient { path, message }
                } else {
                    BackendError::Other { path, message }
                });
            }
            Ok(())
        }
    }

    impl Backend for Flaky {
        fn location(&self) -> String {
            "flaky".into()
        }
        fn list(&self, p: &str, f: &mut dyn FnMut(ObjectInfo)) -> Result<(), BackendError> {
            self.check(p)?;
            self.inner.list(p, f)
        }
        fn head(&self, p: &str) -> Result<Option<u64>, BackendError> {
            self.check(p)?;
            self.inner.head(p)
        }
        fn get(&self, p: &str, r: Option<Range<u64>>) -> Result<Bytes, BackendError> {
            self.check(p)?;
            self.inner.get(p, r)
        }
        fn put(&self, p: &str, d: Bytes) -> Result<(), BackendError> {
            // The write lands, then the reply is "lost".
            let r = self.inner.put(p, d);
            self.check(p)?;
            r
        }
        fn delete(&self, p: &str) -> Result<(), BackendError> {
            let r = self.inner.delete(p);
            self.check(p)?;
            r
        }
    }

    fn quick() -> RetryPolicy {
        RetryPolicy {
            attempts: 5,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(4),
            total: Duration::from_secs(10),
        }
    }

    fn flaky(fail: u32, transient: bool) -> Retry<Flaky> {
        Retry::new(
            Flaky {
                inner: ObjectStoreBackend::memory(),
                fail,
                calls: AtomicU32::new(0),
                transient,
            },
            quick(),
        )
    }

    #[test]
    fn transient_errors_are_retried_and_lost_replies_count_as_success() {
        let b = flaky(3, true);
        b.put("data/x", Bytes::from_static(b"abc")).unwrap();
        assert_eq!(b.inner().calls.load(Ordering::SeqCst), 4);
        assert_eq!(b.get("data/x", None).unwrap(), Bytes::from_static(b"abc"));
        b.delete("data/x").unwrap();
        assert!(b.head("data/x").unwrap().is_none());
        // A real conflict on the first attempt is still reported.
        b.put("data/y", Bytes::from_static(b"1")).unwrap();
        assert!(matches!(
            b.put("data/y", Bytes::from_static(b"2")),
            Err(BackendError::AlreadyExists { .. })
        ));
    }

    #[test]
    fn attempts_are_bounded_and_the_error_says_so() {
        let b = flaky(100, true);
        let err = b.get("data/z", None).unwrap_err();
        assert_eq!(b.inner().calls.load(Ordering::SeqCst), 5);
        assert!(
            err.to_string().contains("gave up after 5 attempts"),
            "{err}"
        );
        assert!(err.to_string().contains("data/z"), "{err}");
    }

    #[test]
    fn permanent_errors_fail_at_once() {
        let b = flaky(100, false);
        assert!(matches!(b.head("keys/a"), Err(BackendError::Other { .. })));
        assert_eq!(b.inner().calls.load(Ordering::SeqCst), 1);
        assert!(matches!(
            flaky(0, false).get("missing", None),
            Err(BackendError::NotFound { .. })
        ));
    }

    #[test]
    fn total_time_is_bounded() {
        let mut b = flaky(1000, true);
        b.policy = RetryPolicy {
            attempts: 1000,
            base_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(20),
            total: Duration::from_millis(100),
        };
        let start = Instant::now();
        assert!(b.head("x").is_err());
        assert!(start.elapsed() < Duration::from_secs(2));
        assert!(b.inner().calls.load(Ordering::SeqCst) < 1000);
    }
}
