//! Unseal stage: decrypts, decompresses and re-hashes a fetched blob; an error names the pack
//! and the blob.

use cairn_repo_format::index::BlobLocation;
use cairn_repo_format::{Indexed, RepoError, Repository};

/// The verified plaintext of a fetched blob.
pub fn unseal(
    repo: &Repository<Indexed>,
    loc: &BlobLocation,
    sealed: &[u8],
) -> Result<Vec<u8>, RepoError> {
    repo.open_located_blob(loc, sealed)
}
