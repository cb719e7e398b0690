//! Unseal stage: decrypts, decompresses and re-hashes each fetched blob once, on one thread per
//! CPU, and writes its plaintext (through the write stage's [`write::write_blob`]) to every
//! place it goes, on the same thread: a blob shared by many files or offsets is opened once, and
//! its plaintext is copied into the files while it is still in the CPU's cache, with no hand-off
//! to another thread. An error names the pack and the blob and fails every file that needed it.
//!
//! Memory: each thread holds one plaintext at a time; the range's share of the budget (taken by
//! the fetch stage for its bytes and its blobs' plaintexts) is returned once its last blob is
//! written.

use std::sync::Arc;

use bytes::Bytes;
use cairn_repo_format::index::BlobLocation;
use cairn_repo_format::{Indexed, RepoError, Repository};
use crossbeam_channel::Receiver;

use super::Shared;
use super::batch::Dest;
use super::fetch::{Permit, lose_or_retry};
use super::write;

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

/// A blob's verified plaintext.
pub struct Plain {
    /// The bytes.
    pub data: Vec<u8>,
    /// All zeros: written as a hole.
    pub zero: bool,
}

/// The verified plaintext of a fetched blob.
pub fn unseal(
    repo: &Repository<Indexed>,
    loc: &BlobLocation,
    sealed: &[u8],
) -> Result<Plain, RepoError> {
    let data = repo.open_located_blob(loc, sealed)?;
    let zero = data.iter().all(|&b| b == 0);
    Ok(Plain { data, zero })
}

/// The unseal thread: opens blobs until the channel closes, and writes each one's plaintext to
/// every place it goes while it is still in the CPU's cache.
pub fn worker(shared: &Shared<'_>, jobs: Receiver<Vec<UnsealJob<'_>>>) {
    for job in jobs.into_iter().flatten() {
        let UnsealJob {
            loc,
            sealed,
            dests,
            permit,
        } = job;
        if shared.cancelled() || shared.full() {
            super::fetch::abandon(shared, dests);
            drop(permit);
            continue;
        }
        match unseal(shared.repo, &loc, &sealed) {
            Ok(plain) => {
                drop(sealed);
                write::write_blob(shared, &plain, dests);
            }
            Err(e) => lose_or_retry(shared, &loc, dests, &e),
        }
        // The range's share of the budget (its bytes and its blobs' plaintexts) goes back when
        // its last blob is written.
        drop(permit);
    }
}
