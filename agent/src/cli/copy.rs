//! `cairn copy --from-repo OTHER [SNAPSHOT…]`.

use anyhow::Result;
use cairn_engine::{copy, select};

use super::args::CopyArgs;
use super::{Ctx, Out, Outcome, bytes};

pub fn run(ctx: &Ctx, out: &Out, a: CopyArgs) -> Result<Outcome> {
    let src = ctx
        .other(&a.from_repo, a.from_password_file.clone())
        .open_indexed()?;
    let filter = a.filter.to_filter()?;
    let snaps = select::pick(&src, &a.snapshots, &filter, &mut super::report_damaged(ctx))?;
    let dst = ctx.open()?;
    let stats = copy::run(&src, dst, &snaps)?;
    if out.json {
        println!("{}", serde_json::to_string(&stats)?);
        return Ok(Outcome::Success);
    }
    for (from, to) in &stats.copied {
        out.info(format!(
            "snapshot {} copied as {}",
            from.short(),
            to.short()
        ));
    }
    for s in &stats.skipped {
        out.info(format!("snapshot {} is already here", s.short()));
    }
    out.info(format!(
        "{} snapshots copied, {} skipped; {} blobs ({}) added",
        stats.copied.len(),
        stats.skipped.len(),
        stats.blobs_added,
        bytes(stats.bytes_added)
    ));
    Ok(Outcome::Success)
}
