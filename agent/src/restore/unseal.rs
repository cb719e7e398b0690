//! Unseal stage: decrypts, decompresses and re-hashes each fetched blob once, on several
//! threads, and hands its plaintext to the write stage for every place it goes (a blob shared
//! by many files or offsets is opened once). An error names the pack and the blob and fails
//! every file that needed it.
//!
//! Memory: a thread takes the blob's plaintext length from the plaintext [`Budget`] before
//! opening it, and the plaintext returns it when its last write is done; the sealed bytes'
//! share (taken by the fetch stage) is returned as soon as the range's blobs are all opened.

use std::sync::Arc;

use bytes::Bytes;
use cairn_repo_format::index::BlobLocation;
use cairn_repo_format::{Indexed, RepoError, Repository};
use crossbeam_channel::{Receiver, Sender};

use super::Shared;
use super::batch::Dest;
use super::fetch::{Budget, Permit, lose};
use super::write::WriteJob;

/// A fetched blob and where its plaintext goes.
pub struct UnsealJob<'b> {
    /// Where it was read from.
    pub loc: BlobLocation,
    /// Its sealed bytes (a slice of the ranged read).
    pub sealed: Bytes,
    /// Files and offsets.
    pub dests: Vec<Dest>,
    /// The range's share of the sealed-bytes budget.
    pub permit: Arc<Permit<'b>>,
}

/// A blob's verified plaintext, holding its share of the plaintext budget.
pub struct Plain<'b> {
    /// The bytes.
    pub data: Vec<u8>,
    /// All zeros: written as a hole.
    pub zero: bool,
    _permit: Option<Permit<'b>>,
}

/// The verified plaintext of a fetched blob.
pub fn unseal<'b>(
    repo: &Repository<Indexed>,
    loc: &BlobLocation,
    sealed: &[u8],
) -> Result<Plain<'b>, RepoError> {
    let data = repo.open_located_blob(loc, sealed)?;
    let zero = data.iter().all(|&b| b == 0);
    Ok(Plain {
        data,
        zero,
        _permit: None,
    })
}

/// The unseal thread: opens blobs until the channel closes.
pub fn worker<'b>(
    shared: &Shared<'_, '_>,
    budget: &'b Budget,
    jobs: Receiver<Vec<UnsealJob<'b>>>,
    write: Sender<Vec<WriteJob<'b>>>,
) {
    for group in jobs {
        let mut out = Vec::new();
        for job in group {
            let UnsealJob {
                loc,
                sealed,
                dests,
                permit,
            } = job;
            let need = loc.entry.raw_length as u64;
            // Waiting for budget while holding unsent writes could wait for ever: the budget
            // comes back only when writes finish. Send them first.
            let share = match budget.try_acquire(need) {
                Some(p) => p,
                None => {
                    if !out.is_empty() && write.send(std::mem::take(&mut out)).is_err() {
                        return;
                    }
                    budget.acquire(need)
                }
            };
            let plain = unseal(shared.repo, &loc, &sealed);
            // The range's buffer goes when its last blob is opened.
            drop((sealed, permit));
            match plain {
                Ok(mut plain) => {
                    plain._permit = Some(share);
                    let data = Arc::new(plain);
                    for dest in dests {
                        out.push(WriteJob {
                            data: data.clone(),
                            dest,
                        });
                    }
                }
                Err(e) => lose(shared, dests, &e),
            }
        }
        if !out.is_empty() && write.send(out).is_err() {
            // The write stage is gone (a worker panicked): nothing more to do.
            return;
        }
    }
}
