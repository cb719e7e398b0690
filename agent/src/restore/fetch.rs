//! Fetch stage: gets a blob's sealed bytes from its pack with one ranged read.

use bytes::Bytes;
use cairn_repo_format::index::BlobLocation;
use cairn_repo_format::{BackendError, BlobType, FileKind, Id, Indexed, RepoError, Repository};

/// Where `id` is and its sealed bytes.
pub fn fetch(
    repo: &Repository<Indexed>,
    ty: BlobType,
    id: &Id,
) -> Result<(BlobLocation, Bytes), RepoError> {
    let loc = repo.locate(ty, id)?;
    let e = &loc.entry;
    let range_end = e.offset as u64 + e.length as u64;
    let range = e.offset as u64..range_end;
    let object = || {
        format!(
            "{} ({} blob {})",
            FileKind::Pack.path(&loc.pack),
            ty.name(),
            id
        )
    };
    let bytes = match repo
        .backend()
        .get(&FileKind::Pack.path(&loc.pack), Some(range))
    {
        Ok(b) => b,
        // Name the blob too: a pack that is missing or cut short loses specific blobs.
        Err(BackendError::NotFound { .. }) => {
            return Err(RepoError::Corrupt {
                object: object(),
                reason: "pack is missing".into(),
            });
        }
        Err(BackendError::Other { message, .. }) => {
            let reason = match repo.backend().head(&FileKind::Pack.path(&loc.pack)) {
                Ok(Some(size)) if size < range_end => {
                    format!(
                        "pack is truncated: {size} bytes, the blob needs bytes up to {range_end}"
                    )
                }
                _ => format!("cannot read: {message}"),
            };
            return Err(RepoError::Corrupt {
                object: object(),
                reason,
            });
        }
        Err(e) => return Err(e.into()),
    };
    if bytes.len() != e.length as usize {
        return Err(RepoError::Corrupt {
            object: object(),
            reason: format!("truncated: read {} of {} bytes", bytes.len(), e.length),
        });
    }
    Ok((loc, bytes))
}
