//! Fetch stage: `connections` threads, each doing one ranged GET per [`RangeRequest`] (several
//! neighbouring blobs of one pack), slicing the blobs out of it without copying and passing
//! them to the unseal stage.
//!
//! Memory: a thread takes the range's length plus its blobs' plaintext lengths from the
//! [`Budget`] before its GET; the share is returned when every blob of the range has been
//! opened and written, so the bytes held at once stay within the budget whatever the snapshot
//! (a single range larger than the whole budget waits for all of it).
//!
//! A range that cannot be read is narrowed down so that each blob gets its own verdict: a
//! missing pack loses all its blobs, a truncated one only those past its end (the others are
//! read again), and every lost blob fails exactly the files that need it, naming pack and blob.

use std::sync::{Arc, Condvar, Mutex};

use bytes::Bytes;
use cairn_repo_format::index::BlobLocation;
use cairn_repo_format::{BackendError, FileKind, Id, RepoError, Repository};
use crossbeam_channel::{Receiver, Sender};

use super::Shared;
use super::batch::{Dest, RangeRequest};
use super::unseal::UnsealJob;

/// Bytes that may be held between fetch and write at once.
pub struct Budget {
    limit: u64,
    used: Mutex<Usage>,
    freed: Condvar,
}

/// Bytes taken, and threads waiting for some to come back (a release wakes them only when
/// there are any: a wake-up is a system call, and releases happen once per blob).
#[derive(Default)]
struct Usage {
    used: u64,
    waiting: u32,
}

impl Budget {
    /// A budget of `limit` bytes (at least 1).
    pub fn new(limit: u64) -> Budget {
        Budget {
            limit: limit.max(1),
            used: Mutex::new(Usage::default()),
            freed: Condvar::new(),
        }
    }

    /// Waits until `n` bytes are free and takes them; a request larger than the whole budget
    /// waits for all of it.
    pub fn acquire(&self, n: u64) -> Permit<'_> {
        let n = n.min(self.limit);
        let mut u = self.used.lock().unwrap_or_else(|e| e.into_inner());
        while u.used + n > self.limit {
            u.waiting += 1;
            u = self.freed.wait(u).unwrap_or_else(|e| e.into_inner());
            u.waiting -= 1;
        }
        u.used += n;
        Permit { budget: self, n }
    }

    /// Takes `n` bytes if they are free now, without waiting.
    pub fn try_acquire(&self, n: u64) -> Option<Permit<'_>> {
        let n = n.min(self.limit);
        let mut u = self.used.lock().unwrap_or_else(|e| e.into_inner());
        if u.used + n > self.limit {
            return None;
        }
        u.used += n;
        Some(Permit { budget: self, n })
    }

    /// Bytes taken now.
    pub fn used(&self) -> u64 {
        self.used.lock().unwrap_or_else(|e| e.into_inner()).used
    }
}

/// A share of the [`Budget`], returned when dropped.
pub struct Permit<'b> {
    budget: &'b Budget,
    n: u64,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut u = self.budget.used.lock().unwrap_or_else(|e| e.into_inner());
        u.used -= self.n;
        if u.waiting > 0 {
            self.budget.freed.notify_all();
        }
    }
}

/// Blobs handed to the unseal stage in one message: at most this many…
const GROUP_BLOBS: usize = 64;
/// …or this many sealed bytes. One message per blob cost more in channel wake-ups (futex and
/// `sched_yield` calls, over 500 000 of them for the standard dataset) than the work itself.
const GROUP_BYTES: usize = 1 << 20;

/// The fetch thread: GETs ranges until the request channel closes, and hands their blobs to
/// the unseal stage in groups.
pub fn worker<'b>(
    shared: &Shared<'_>,
    budget: &'b Budget,
    requests: Receiver<RangeRequest>,
    unseal: Sender<Vec<UnsealJob<'b>>>,
) {
    for req in requests {
        // A cancelled restore, or a full target: no GET, every file of the range given up.
        if shared.cancelled() || shared.full() {
            for blob in req.blobs {
                abandon(shared, blob.dests);
            }
            continue;
        }
        // The range and the plaintexts of its blobs, all held until its last blob is written.
        let raw: u64 = req
            .blobs
            .iter()
            .map(|b| b.loc.entry.raw_length as u64)
            .sum();
        let permit = Arc::new(budget.acquire(req.end - req.start + raw));
        let locs: Vec<BlobLocation> = req.blobs.iter().map(|b| b.loc).collect();
        let results = fetch_range(shared.repo, &req.pack, req.start, req.end, &locs);
        let mut group = Vec::new();
        let mut group_bytes = 0;
        let count = req.blobs.len();
        for (i, (blob, result)) in req.blobs.into_iter().zip(results).enumerate() {
            match result {
                Ok(sealed) => {
                    group_bytes += sealed.len();
                    group.push(UnsealJob {
                        loc: blob.loc,
                        sealed,
                        dests: blob.dests,
                        permit: permit.clone(),
                    });
                }
                Err(e) => lose_or_retry(shared, &blob.loc, blob.dests, &e),
            }
            let last = i + 1 == count;
            if !group.is_empty()
                && (last || group.len() >= GROUP_BLOBS || group_bytes >= GROUP_BYTES)
            {
                group_bytes = 0;
                if unseal.send(std::mem::take(&mut group)).is_err() {
                    // The unseal stage is gone (a worker panicked): nothing more to do.
                    return;
                }
            }
        }
    }
}

/// Gives up every destination of a blob without a report of its own (the restore was
/// cancelled, or the target is full).
pub fn abandon(shared: &Shared<'_>, dests: Vec<Dest>) {
    for d in dests {
        d.file.give_up(shared);
        d.finish(shared);
    }
}

/// Fails every destination of a blob that cannot be had at `loc`, unless another location
/// that index files give for it works (the first may be damaged or forged): then its
/// plaintext is written as usual.
pub fn lose_or_retry(shared: &Shared<'_>, loc: &BlobLocation, dests: Vec<Dest>, err: &RepoError) {
    if let Some(Ok(data)) = shared.repo.load_from_second_locations(loc) {
        let zero = data.iter().all(|&b| b == 0);
        super::write::write_blob(shared, &super::unseal::Plain { data, zero }, dests);
        return;
    }
    lose(shared, dests, err)
}

/// Fails every destination of a blob that cannot be had.
pub fn lose(shared: &Shared<'_>, dests: Vec<Dest>, err: &RepoError) {
    for d in dests {
        d.file.fail(shared, format!("content lost: {err}"));
        d.finish(shared);
    }
}

/// `pack (type blob id)`, the name of a blob in messages.
fn object(loc: &BlobLocation) -> String {
    format!(
        "{} ({} blob {})",
        FileKind::Pack.path(&loc.pack),
        loc.entry.ty.name(),
        loc.entry.id
    )
}

fn corrupt(loc: &BlobLocation, reason: String) -> RepoError {
    RepoError::Corrupt {
        object: object(loc),
        reason,
    }
}

fn blob_end(loc: &BlobLocation) -> u64 {
    loc.entry.offset as u64 + loc.entry.length as u64
}

/// Reads bytes `start..end` of `pack` with one GET and returns the sealed bytes of each of
/// `blobs` (sorted by offset, each inside the range), or why that blob cannot be read.
pub fn fetch_range(
    repo: &Repository<cairn_repo_format::Indexed>,
    pack: &Id,
    start: u64,
    end: u64,
    blobs: &[BlobLocation],
) -> Vec<Result<Bytes, RepoError>> {
    let path = FileKind::Pack.path(pack);
    match repo.backend().get(&path, Some(start..end)) {
        Ok(bytes) => blobs
            .iter()
            .map(|loc| {
                let from = (loc.entry.offset as u64).saturating_sub(start) as usize;
                let to = (blob_end(loc) - start) as usize;
                if to <= bytes.len() {
                    Ok(bytes.slice(from..to))
                } else {
                    let read = bytes.len().saturating_sub(from);
                    Err(corrupt(
                        loc,
                        format!("truncated: read {read} of {} bytes", loc.entry.length),
                    ))
                }
            })
            .collect(),
        // Name the blob too: a pack that is missing or cut short loses specific blobs.
        Err(BackendError::NotFound { .. }) => blobs
            .iter()
            .map(|loc| Err(corrupt(loc, "pack is missing".into())))
            .collect(),
        Err(BackendError::Other { message, .. }) => match repo.backend().head(&path) {
            Ok(Some(size)) if size < end => {
                // Truncated: the blobs still inside the pack are read again, the rest are lost.
                let inside: Vec<BlobLocation> = blobs
                    .iter()
                    .filter(|l| blob_end(l) <= size)
                    .copied()
                    .collect();
                let sub_start = inside.iter().map(|l| l.entry.offset as u64).min();
                let sub_end = inside.iter().map(blob_end).max();
                let mut again = match (sub_start, sub_end) {
                    // Strictly shorter than this read (it ends by `size` < `end`): terminates.
                    (Some(s), Some(e)) => fetch_range(repo, pack, s, e, &inside),
                    _ => Vec::new(),
                }
                .into_iter();
                blobs
                    .iter()
                    .map(|loc| {
                        let end = blob_end(loc);
                        if end <= size {
                            again.next().unwrap_or_else(|| {
                                Err(corrupt(loc, format!("cannot read: {message}")))
                            })
                        } else {
                            Err(corrupt(
                                loc,
                                format!(
                                    "pack is truncated: {size} bytes, the blob needs bytes up to {end}"
                                ),
                            ))
                        }
                    })
                    .collect()
            }
            _ => blobs
                .iter()
                .map(|loc| Err(corrupt(loc, format!("cannot read: {message}"))))
                .collect(),
        },
        Err(e) => blobs
            .iter()
            .map(|loc| Err(corrupt(loc, format!("cannot read: {e}"))))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_counts_shares_and_caps_one_oversized_request() {
        let b = Budget::new(100);
        let first = b.acquire(30);
        let second = b.acquire(50);
        assert_eq!(b.used(), 80);
        drop(first);
        assert_eq!(b.used(), 50);
        drop(second);
        // Larger than the whole budget: takes all of it rather than waiting forever.
        let big = b.acquire(1_000);
        assert_eq!(b.used(), 100);
        drop(big);
        assert_eq!(b.used(), 0);
        // A waiter proceeds once enough is returned.
        let held = b.acquire(90);
        std::thread::scope(|s| {
            let waiter = s.spawn(|| drop(b.acquire(20)));
            drop(held);
            waiter.join().unwrap();
        });
        assert_eq!(b.used(), 0);
    }
}
