//! `cairn find PATTERN…`: matching paths with control characters escaped (exact with `--json`).

use anyhow::Result;
use cairn_engine::filter::Patterns;
use cairn_engine::{find, select};

use super::args::FindArgs;
use super::text::printable;
use super::{Ctx, Out, Outcome};

pub fn run(ctx: &Ctx, out: &Out, a: FindArgs) -> Result<Outcome> {
    let patterns = Patterns::new(&a.patterns)?;
    let repo = ctx.open_indexed()?;
    let snaps = select::list_with(&repo, &a.filter.to_filter()?, &mut |id, e| {
        super::skip_damaged_snapshot(ctx, id, e)
    })?;
    let mut hits = 0u64;
    let json = out.json;
    find::run(&repo, &snaps, &patterns, &mut |id, path, node| {
        hits += 1;
        if json {
            println!(
                "{}",
                serde_json::json!({ "snapshot": id, "path": path, "type": node.kind, "size": node.size, "mtime": node.mtime })
            );
        } else {
            println!("{}  {}", id.short(), printable(path));
        }
    })?;
    out.info(format!("{hits} matches in {} snapshots", snaps.len()));
    Ok(Outcome::Success)
}
