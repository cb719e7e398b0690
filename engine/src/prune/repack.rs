//! Repack step of prune: copies the used blobs of the packs chosen for repacking, still sealed
//! and verified first, into new packs through the write path ([`crate::store`]). The new packs
//! are indexed as they are stored, like a backup's, so a prune stopped here leaves the blobs
//! twice (in old and new packs) and nothing missing.

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use cairn_repo_format::blob::open_blob;
use cairn_repo_format::{FileKind, Indexed, RepoError, Repository};

use super::plan::Plan;
use super::{PruneError, PruneStats};
use crate::Context;
use crate::reach::BitSet;
use crate::store::{Packer, Uploader};

/// Repacks the packs of `plan.repack`, keeping the entries `used` marks.
pub fn run(
    repo: &Repository<Indexed>,
    plan: &Plan,
    used: &BitSet,
    stats: &mut PruneStats,
    cx: &Context,
) -> Result<(), PruneError> {
    let progress = crate::backup::Progress::default();
    let uploader = Uploader::new(repo, &progress);
    let copied = copy(repo, plan, used, &uploader, stats, cx);
    // What was stored is indexed even when the copy stopped: a pack stored and left out of
    // every index would be condemned by the next prune and its work lost.
    let flushed = uploader.flush();
    stats.packs_written = progress.packs_done.load(Ordering::Relaxed);
    copied?;
    flushed?;
    Ok(())
}

fn copy(
    repo: &Repository<Indexed>,
    plan: &Plan,
    used: &BitSet,
    uploader: &Uploader<'_>,
    stats: &mut PruneStats,
    cx: &Context,
) -> Result<(), PruneError> {
    let index = repo.index();
    let repack: HashSet<u32> = plan.repack.iter().copied().collect();
    let mut packer = Packer::new(repo, |pack| uploader.upload(pack));
    for run in plan
        .leaving_positions
        .chunk_by(|a, b| index.entry_at(*a as usize).0 == index.entry_at(*b as usize).0)
    {
        let n = index.entry_at(run[0] as usize).0;
        if !repack.contains(&n) {
            continue;
        }
        // Stopping here leaves the packs written so far stored and indexed (duplicates of
        // blobs the old packs still hold, which the next prune removes).
        if cx.cancel.is_cancelled() {
            return Err(PruneError::Cancelled);
        }
        let pack = index.packs()[n as usize];
        let path = FileKind::Pack.path(&pack);
        let bytes = repo.backend().get(&path, None).map_err(RepoError::from)?;
        let mut bad = Vec::new();
        for &pos in run.iter().filter(|&&p| used.contains(p as usize)) {
            let e = index.entry_at(pos as usize).1;
            let range = e.offset as usize..e.offset as usize + e.length as usize;
            let sealed = bytes.get(range).filter(|sealed| {
                open_blob(repo.key(), e.ty, &e.id, e.compression, e.raw_length, sealed).is_ok()
            });
            if let Some(sealed) = sealed {
                packer.add_stored(e.ty, e.id, e.compression, e.raw_length, sealed)?;
                stats.bytes_repacked += e.length as u64;
                continue;
            }
            // Damaged or forged here: another location that index files give may hold it.
            if let Some((alt, sealed)) = second_location(repo, &e) {
                packer.add_stored(alt.ty, alt.id, alt.compression, alt.raw_length, &sealed)?;
                stats.bytes_repacked += alt.length as u64;
                continue;
            }
            bad.push(format!(
                "{path}: {} blob {} is damaged; a snapshot needs it",
                e.ty.name(),
                e.id
            ));
        }
        if !bad.is_empty() {
            return Err(PruneError::Damaged(bad));
        }
        stats.packs_repacked += 1;
    }
    packer.finish()?;
    Ok(())
}

/// The first other location of `e`'s blob that index files give and that opens: its entry and
/// sealed bytes.
fn second_location(
    repo: &Repository<Indexed>,
    e: &cairn_repo_format::pack::PackEntry,
) -> Option<(cairn_repo_format::pack::PackEntry, bytes::Bytes)> {
    repo.index()
        .second_locations(e.ty, &e.id)
        .iter()
        .find_map(|alt| {
            let a = alt.entry;
            let sealed = repo
                .backend()
                .get(
                    &FileKind::Pack.path(&alt.pack),
                    Some(a.offset as u64..a.offset as u64 + a.length as u64),
                )
                .ok()?;
            open_blob(
                repo.key(),
                a.ty,
                &a.id,
                a.compression,
                a.raw_length,
                &sealed,
            )
            .is_ok()
            .then_some((a, sealed))
        })
}
