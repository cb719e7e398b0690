//! `cairn repair index|snapshots`.

use anyhow::Result;
use cairn_engine::{repair, select};

use super::args::RepairCommand;
use super::{Ctx, Out, Outcome};

pub fn run(ctx: &Ctx, out: &Out, cmd: RepairCommand) -> Result<Outcome> {
    let repo = ctx.open()?;
    match cmd {
        RepairCommand::Index => {
            let r = repair::index(repo, ctx.cx())?;
            if out.json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                out.info(format!(
                    "index rebuilt: {} blobs; {} packs read from their headers, {} unreadable, {} gone; {} damaged index files replaced",
                    r.blobs, r.packs_read, r.packs_unreadable, r.packs_gone, r.bad_index_files
                ));
            }
        }
        RepairCommand::Snapshots {
            snapshots,
            forget,
            dry_run,
        } => {
            let ids = snapshots
                .iter()
                .map(|s| {
                    select::resolve(
                        &repo,
                        s,
                        &Default::default(),
                        &mut super::report_damaged(ctx),
                    )
                    .map(|(id, _)| id)
                })
                .collect::<Result<Vec<_>, _>>()?;
            let r = repair::snapshots(repo, &ids, forget, dry_run)?;
            if out.json {
                println!("{}", serde_json::to_string(&r)?);
                return Ok(Outcome::Success);
            }
            for d in &r.files_dropped {
                out.info(d);
            }
            if dry_run {
                out.info(format!(
                    "dry run: {} of {} snapshots would be repaired",
                    r.repaired.len(),
                    r.checked
                ));
            } else {
                for (old, new) in &r.repaired {
                    out.info(format!("{} repaired as {}", old.short(), new.short()));
                }
                out.info(format!(
                    "{} of {} snapshots repaired, {} originals removed",
                    r.repaired.len(),
                    r.checked,
                    r.removed
                ));
            }
        }
    }
    Ok(Outcome::Success)
}
