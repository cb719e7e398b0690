//! Helpers shared by the engine's integration tests.

/// A cheap key derivation, so that opening a test repository takes no time.
#[allow(dead_code)]
pub const CHEAP: cairn_repo_format::key::KdfParams = cairn_repo_format::key::KdfParams {
    m_cost: 64,
    t_cost: 1,
    p_cost: 1,
};

/// Deterministic incompressible bytes (xorshift), different for every seed.
#[allow(dead_code)]
pub fn random_bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A context whose events fail the test: for runs that must meet no problem. The sink
/// panics on the pipeline thread that met the problem, which fails the run.
#[allow(dead_code)]
pub fn strict(what: &'static str) -> cairn_engine::Context {
    cairn_engine::Context {
        events: cairn_engine::Events::new(move |e: cairn_engine::Event| {
            panic!("{what}: unexpected event: {e}")
        }),
        ..Default::default()
    }
}

/// A context whose events are collected, with the collection.
#[allow(dead_code)]
pub fn collecting() -> (cairn_engine::Context, cairn_engine::events::Collect) {
    let c = cairn_engine::events::Collect::new();
    (
        cairn_engine::Context {
            events: c.handle(),
            ..Default::default()
        },
        c,
    )
}

/// The repository as a backup takes it: opened, not indexed (it indexes under its lock).
#[allow(dead_code)]
pub fn opened(
    r: &cairn_repo_format::Repository<cairn_repo_format::Indexed>,
) -> cairn_repo_format::Repository<cairn_repo_format::Opened> {
    r.clone().into_opened()
}

/// Which storage requests a [`Tripwire`] counts.
#[allow(dead_code)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Trip {
    /// Pack uploads (`data/`).
    PackPut,
    /// Pack reads (`data/`).
    PackGet,
    /// Lock writes (`locks/`): the operation has just started.
    LockPut,
}

/// A backend that cancels an operation when it sees the `n`-th request of a kind: the
/// request itself goes through, so the cancel lands while the operation is mid-way.
#[allow(dead_code)]
pub struct Tripwire {
    /// The storage.
    pub inner: std::sync::Arc<dyn cairn_repo_format::Backend>,
    /// What counts.
    pub on: Trip,
    /// Requests left before the cancel.
    pub left: std::sync::atomic::AtomicUsize,
    /// What it cancels.
    pub cancel: cairn_engine::Cancel,
}

#[allow(dead_code)]
impl Tripwire {
    fn count(&self, trip: Trip, path: &str) {
        use std::sync::atomic::Ordering;
        let prefix = if trip == Trip::LockPut {
            "locks/"
        } else {
            "data/"
        };
        if trip == self.on
            && path.starts_with(prefix)
            && self.left.fetch_sub(1, Ordering::SeqCst) == 1
        {
            self.cancel.cancel();
        }
    }
}

impl cairn_repo_format::Backend for Tripwire {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn list(
        &self,
        prefix: &str,
        f: &mut dyn FnMut(cairn_repo_format::backend::ObjectInfo),
    ) -> Result<(), cairn_repo_format::BackendError> {
        self.inner.list(prefix, f)
    }
    fn head(&self, path: &str) -> Result<Option<u64>, cairn_repo_format::BackendError> {
        self.inner.head(path)
    }
    fn get(
        &self,
        path: &str,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<bytes::Bytes, cairn_repo_format::BackendError> {
        self.count(Trip::PackGet, path);
        self.inner.get(path, range)
    }
    fn put(&self, path: &str, data: bytes::Bytes) -> Result<(), cairn_repo_format::BackendError> {
        self.count(Trip::PackPut, path);
        self.count(Trip::LockPut, path);
        self.inner.put(path, data)
    }
    fn delete(&self, path: &str) -> Result<(), cairn_repo_format::BackendError> {
        self.inner.delete(path)
    }
    fn parallelism(&self) -> cairn_repo_format::backend::Parallelism {
        self.inner.parallelism()
    }
    fn spool(
        &self,
        capacity: usize,
    ) -> Result<cairn_repo_format::backend::Spool, cairn_repo_format::BackendError> {
        self.inner.spool(capacity)
    }
    fn put_spooled(
        &self,
        path: &str,
        body: &cairn_repo_format::backend::Spooled,
    ) -> Result<(), cairn_repo_format::BackendError> {
        self.count(Trip::PackPut, path);
        self.inner.put_spooled(path, body)
    }
}

/// `check --read-data` of `repo`: the errors it found, as text (empty: a clean repository).
#[allow(dead_code)]
pub fn read_data_errors(
    repo: cairn_repo_format::Repository<cairn_repo_format::Opened>,
) -> Vec<String> {
    let (cx, collected) = collecting();
    let opts = cairn_engine::check::CheckOptions {
        read_data: Some(cairn_engine::check::Subset::All),
        threads: 2,
    };
    let summary = cairn_engine::check::run(repo, &opts, &cx).expect("check ran");
    let mut errors: Vec<String> = collected
        .events()
        .iter()
        .filter(|e| e.severity() == cairn_engine::Severity::Error)
        .map(|e| e.to_string())
        .collect();
    if summary.errors > 0 && errors.is_empty() {
        errors.push(format!("{} errors", summary.errors));
    }
    errors
}
