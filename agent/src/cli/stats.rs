//! `cairn stats [--mode restore-size|raw-data]`.

use anyhow::Result;
use cairn_engine::{select, stats};

use super::args::StatsArgs;
use super::{Ctx, Out, Outcome, bytes};

pub fn run(ctx: &Ctx, out: &Out, a: StatsArgs) -> Result<Outcome> {
    let repo = ctx.open_indexed()?;
    let filter = a.filter.to_filter()?;
    let snaps = select::pick(
        &repo,
        &a.snapshots,
        &filter,
        &mut super::report_damaged(ctx),
    )?;
    let s = stats::run(&repo, &snaps)?;
    if out.json {
        println!("{}", serde_json::to_string(&s)?);
        return Ok(Outcome::Success);
    }
    let restore = format!(
        "restore size: {} in {} files",
        bytes(s.restore_size),
        s.files
    );
    let raw = format!(
        "raw data:     {} in {} blobs ({} stored)",
        bytes(s.raw_data),
        s.blobs,
        bytes(s.stored)
    );
    let (first, second) = if a.mode == "raw-data" {
        (raw, restore)
    } else {
        (restore, raw)
    };
    println!("{} snapshots", s.snapshots);
    println!("{first}");
    println!("{second}");
    println!(
        "deduplication ratio {:.2}×, compression ratio {:.2}×",
        s.dedup_ratio, s.compression_ratio
    );
    Ok(Outcome::Success)
}
