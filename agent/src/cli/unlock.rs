//! `cairn unlock`: removes locks whose holders stopped refreshing them (or all of them).

use anyhow::Result;
use cairn_repo_format::RepoError;
use chrono::Utc;

use super::args::UnlockArgs;
use super::{Ctx, Out, Outcome};

pub fn run(ctx: &Ctx, out: &Out, a: UnlockArgs) -> Result<Outcome> {
    let repo = ctx.open()?;
    let now = Utc::now();
    let (mut removed, mut kept) = (0, 0);
    for listed in repo.locks()? {
        let path = listed.path();
        // A lock that storage failed to deliver may be live: stop rather than guess.
        if let Err(e @ RepoError::Backend(_)) = &listed.lock {
            anyhow::bail!("cannot read {path}: {e}");
        }
        // A lock that cannot be opened or decoded protects nothing.
        let stale = listed.lock.is_err() || listed.is_stale(now);
        if stale || a.remove_all {
            repo.remove_lock(&listed.id)?;
            removed += 1;
        } else {
            kept += 1;
            if let Ok(l) = &listed.lock {
                out.info(format!(
                    "{path} is live ({:?} by {} pid {}, refreshed {}); --remove-all removes it",
                    l.kind,
                    l.hostname,
                    l.pid,
                    l.time.to_rfc3339()
                ));
            }
        }
    }
    if out.json {
        println!(
            "{}",
            serde_json::json!({ "removed": removed, "live": kept })
        );
    } else {
        out.info(format!("removed {removed} stale locks"));
    }
    Ok(Outcome::Success)
}
