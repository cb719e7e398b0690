//! `cairn tag`: changes snapshot tags. Snapshots are immutable objects named by their hash, so
//! a changed snapshot is written anew (recording the one it replaces) and the old one removed.

use anyhow::{Result, bail};
use cairn_engine::select;

use super::args::TagArgs;
use super::{Ctx, Out, Outcome};

fn split(v: &[String]) -> Vec<String> {
    v.iter()
        .flat_map(|t| t.split(','))
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

pub fn run(ctx: &Ctx, out: &Out, a: TagArgs) -> Result<Outcome> {
    let (add, remove, set) = (split(&a.add), split(&a.remove), split(&a.set));
    if add.is_empty() && remove.is_empty() && a.set.is_empty() {
        bail!("nothing to do: give --add, --remove or --set");
    }
    let adds_or_removes = !add.is_empty() || !remove.is_empty();
    if !a.set.is_empty() && adds_or_removes {
        bail!("--set replaces all tags; it cannot be combined with --add or --remove");
    }
    let repo = ctx.open()?;
    let filter = a.filter.to_filter()?;
    let targets = select::pick(
        &repo,
        &a.snapshots,
        &filter,
        &mut super::report_damaged(ctx),
    )?;
    let mut changed = 0;
    for (id, snap) in targets {
        let mut tags = if a.set.is_empty() {
            snap.tags.clone()
        } else {
            set.clone()
        };
        for t in &add {
            if !tags.contains(t) {
                tags.push(t.clone());
            }
        }
        tags.retain(|t| !remove.contains(t));
        if tags == snap.tags {
            continue;
        }
        let mut new = snap.clone();
        new.tags = tags;
        new.original = Some(snap.original.unwrap_or(id));
        let new_id = repo.save_snapshot(&new)?;
        cairn_engine::forget::remove(&repo, &id)?;
        changed += 1;
        out.info(format!(
            "{} → {} tags [{}]",
            id.short(),
            new_id.short(),
            new.tags.join(",")
        ));
    }
    if out.json {
        println!("{}", serde_json::json!({ "changed": changed }));
    } else {
        out.info(format!("{changed} snapshots changed"));
    }
    Ok(Outcome::Success)
}
