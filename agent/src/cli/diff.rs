//! `cairn diff SNAP1 SNAP2`: changed paths with control characters escaped (exact with
//! `--json`).

use anyhow::Result;
use cairn_engine::{diff, select};

use super::args::DiffArgs;
use super::text::printable;
use super::{Ctx, Out, Outcome};

pub fn run(ctx: &Ctx, out: &Out, a: DiffArgs) -> Result<Outcome> {
    let repo = ctx.open_indexed()?;
    let (ia, sa) = select::resolve(
        &repo,
        &a.first,
        &Default::default(),
        &mut super::report_damaged(ctx),
    )?;
    let (ib, sb) = select::resolve(
        &repo,
        &a.second,
        &Default::default(),
        &mut super::report_damaged(ctx),
    )?;
    out.info(format!(
        "comparing snapshot {} to {}:",
        ia.short(),
        ib.short()
    ));
    let json = out.json;
    let stats = diff::run(&repo, &sa.tree, &sb.tree, &mut |c, path| {
        if json {
            println!("{}", serde_json::json!({ "change": c, "path": path }));
        } else {
            println!("{}    {}", c.code(), printable(path));
        }
    })?;
    if json {
        println!("{}", serde_json::json!({ "summary": stats }));
    } else {
        out.info(format!(
            "added {}, removed {}, modified {}, metadata only {}, type changed {}",
            stats.added, stats.removed, stats.modified, stats.metadata, stats.type_changed
        ));
    }
    Ok(Outcome::Success)
}
