//! `cairn forget`: flags → a [`Policy`], plan per group, print why each snapshot is kept or
//! removed, remove (unless --dry-run), then prune if asked.

use std::collections::{HashMap, HashSet};

use anyhow::{Result, bail};
use cairn_engine::events::Event;
use cairn_engine::forget::{self, GroupBy, Period, Policy, Span};
use cairn_engine::select;
use cairn_repo_format::FileKind;

use super::args::ForgetArgs;
use super::{Ctx, Out, Outcome};

fn span(flag: &str, v: &Option<String>) -> Result<Option<Span>> {
    v.as_deref()
        .map(|s| {
            s.parse::<Span>()
                .map_err(|e| anyhow::anyhow!("--{flag}: {e}"))
        })
        .transpose()
}

fn policy(a: &ForgetArgs) -> Result<Policy> {
    let counts = [
        ("keep-last", a.keep_last),
        ("keep-hourly", a.keep_hourly),
        ("keep-daily", a.keep_daily),
        ("keep-weekly", a.keep_weekly),
        ("keep-monthly", a.keep_monthly),
        ("keep-yearly", a.keep_yearly),
    ];
    let mut p = Policy::default();
    for (i, (flag, n)) in counts.into_iter().enumerate() {
        if let Some(n) = n {
            if n < -1 {
                bail!("--{flag} {n}: use a count, or -1 for unlimited");
            }
            p.counts[i] = Some(n);
        }
    }
    p.within = span("keep-within", &a.keep_within)?;
    p.within_periods[Period::Hourly as usize] = span("keep-within-hourly", &a.keep_within_hourly)?;
    p.within_periods[Period::Daily as usize] = span("keep-within-daily", &a.keep_within_daily)?;
    p.within_periods[Period::Weekly as usize] = span("keep-within-weekly", &a.keep_within_weekly)?;
    p.within_periods[Period::Monthly as usize] =
        span("keep-within-monthly", &a.keep_within_monthly)?;
    p.within_periods[Period::Yearly as usize] = span("keep-within-yearly", &a.keep_within_yearly)?;
    p.tags = a
        .keep_tag
        .iter()
        .map(|t| t.split(',').map(str::to_string).collect())
        .collect();
    Ok(p)
}

pub fn run(ctx: &Ctx, out: &Out, a: ForgetArgs) -> Result<Outcome> {
    let policy = policy(&a)?;
    let group_by: GroupBy = a.group_by.parse()?;
    if a.snapshots.is_empty() && policy.is_empty() {
        bail!(
            "nothing to do: name snapshots to remove, or give a policy such as --keep-daily 7 --keep-weekly 4"
        );
    }
    if !a.snapshots.is_empty() && !policy.is_empty() {
        bail!("give either snapshot ids or a --keep-* policy, not both");
    }
    let repo = ctx.open()?;
    let mut remove = Vec::new();
    let mut report = Vec::new();
    // The snapshots the policy looks at, of which it must leave at least one per group
    // (snapshots named by id are the user's explicit word).
    let mut considered = Vec::new();
    if a.snapshots.is_empty() {
        let mut list = select::list_with(&repo, &a.filter.to_filter()?, &mut |id, e| {
            super::skip_damaged_snapshot(ctx, id, e)
        })?;
        // Claimed times the storage contradicts are judged by the storage's (forget.rs).
        let mut claimed = HashMap::new();
        if !a.trust_snapshot_times {
            let stored = repo.stored_times(FileKind::Snapshot)?;
            for d in forget::judge(&mut list, &stored) {
                ctx.cx.emit(Event::TimeDisputed {
                    object: FileKind::Snapshot.path(&d.id),
                    claimed: d.claimed.to_rfc3339(),
                    stored: d.stored.to_rfc3339(),
                });
                claimed.insert(d.id, d.claimed);
            }
        }
        considered.clone_from(&list);
        let now = chrono::Utc::now();
        for g in forget::plan(list, group_by, &policy, &chrono::Local, now) {
            let kept = g.snapshots.iter().filter(|s| s.2.keep).count();
            if !out.json && !out.quiet {
                println!(
                    "snapshots of {}: keep {kept}, remove {}",
                    if g.key.is_empty() { "all" } else { &g.key },
                    g.snapshots.len() - kept
                );
            }
            for (id, s, d) in &g.snapshots {
                let time = s
                    .time
                    .with_timezone(&chrono::Local)
                    .format("%Y-%m-%d %H:%M:%S");
                if !out.json && !out.quiet {
                    if d.keep {
                        println!("  keep    {}  {time}  {}", id.short(), d.reasons.join(", "));
                    } else {
                        println!("  remove  {}  {time}", id.short());
                    }
                }
                let mut entry = serde_json::json!({
                    "id": id, "group": g.key, "time": s.time, "keep": d.keep, "reasons": d.reasons,
                });
                if let Some(c) = claimed.get(id) {
                    // `time` is the storage's; the snapshot claims this one.
                    entry["claimed_time"] = serde_json::json!(c);
                }
                report.push(entry);
                if !d.keep {
                    remove.push(*id);
                }
            }
        }
    } else {
        for spec in &a.snapshots {
            // An id names the object, readable or not (a damaged or forged snapshot is removed
            // as named); `latest` is the latest readable one.
            let id = if spec == "latest" {
                select::resolve(
                    &repo,
                    spec,
                    &Default::default(),
                    &mut super::report_damaged(ctx),
                )?
                .0
            } else {
                select::resolve_id(&repo, spec)?
            };
            remove.push(id);
            report.push(serde_json::json!({ "id": id, "keep": false }));
        }
    }
    let removing: HashSet<_> = remove.iter().copied().collect();
    let emptied = forget::emptied_groups(&considered, group_by, &removing);
    if !emptied.is_empty() && !a.force {
        let groups: Vec<String> = emptied
            .iter()
            .map(|k| {
                if k.is_empty() {
                    "all".to_string()
                } else {
                    k.clone()
                }
            })
            .collect();
        bail!(
            "this would remove every snapshot of {} group(s): {}; nothing was removed. Check the policy (--dry-run shows it), or add --force to remove them",
            groups.len(),
            groups.join("; ")
        );
    }
    if a.dry_run {
        if out.json {
            println!(
                "{}",
                serde_json::json!({ "dry_run": true, "snapshots": report })
            );
        } else {
            out.info(format!("dry run: would remove {} snapshots", remove.len()));
        }
        return Ok(Outcome::Success);
    }
    for id in &remove {
        forget::remove(&repo, id)?;
    }
    if out.json {
        println!(
            "{}",
            serde_json::json!({ "removed": remove, "snapshots": report })
        );
    } else {
        out.info(format!("removed {} snapshots", remove.len()));
    }
    if a.prune {
        drop(repo);
        return super::prune::prune(ctx, out, &a.prune_opts, false);
    }
    Ok(Outcome::Success)
}
