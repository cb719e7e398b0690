//! `cairn restore SNAPSHOT[:SUBPATH] --target DIR`.

use anyhow::{Result, bail};
use cairn_engine::filter::Patterns;
use cairn_engine::restore::{self, RestoreError, RestoreOptions, RestoreProgress};
use cairn_engine::select;

use super::args::RestoreArgs;
use super::progress::Display;
use super::{Ctx, Out, Outcome, bytes};

pub fn run(ctx: &Ctx, out: &Out, a: RestoreArgs) -> Result<Outcome> {
    let (spec, subpath) = match a.snapshot.split_once(':') {
        Some((s, p)) => (s, Some(p.to_string())),
        None => (a.snapshot.as_str(), None),
    };
    let include = Patterns::new(&a.includes)?;
    let exclude = Patterns::new(&a.excludes)?;
    let repo = ctx.open_indexed()?;
    let (id, snap) = select::resolve(
        &repo,
        spec,
        &a.filter.to_filter()?,
        &mut super::report_damaged(ctx),
    )?;
    out.info(format!(
        "restoring snapshot {} of {} at {} to {}",
        id.short(),
        snap.paths.join(" "),
        snap.time,
        a.target.display()
    ));
    let opts = RestoreOptions {
        target: a.target.clone(),
        subpath,
        include,
        exclude,
        verify: a.verify,
        devices: true,
    };
    let progress = std::sync::Arc::new(RestoreProgress::default());
    let total = if opts.subpath.is_none() && a.includes.is_empty() {
        snap.summary.bytes_total
    } else {
        0
    };
    let display = Display::restore(progress.clone(), total, out.progress());
    let tuning = restore::RestoreTuning {
        connections: ctx.settings()?.connections(),
        ..Default::default()
    };
    let result = restore::run_with(&repo, &snap, &opts, &tuning, &progress, ctx.cx());
    drop(display);
    match result {
        // One line for a full target, not one per file: the engine stopped at the first.
        Err(RestoreError::TargetFull {
            target,
            not_restored,
            error,
        }) => bail!(super::advice::restore_stopped(
            &target,
            &error,
            not_restored
        )),
        r => r?,
    }
    let g = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    let errors = g(&progress.errors);
    let refused = g(&progress.owners_not_kept);
    if refused > 0 {
        out.info(format!(
            "warning: the target's file system refused the recorded owners of {refused} entries (SMB/Azure Files cannot keep them)"
        ));
    }
    if out.json {
        println!(
            "{}",
            serde_json::json!({"message_type": "summary", "snapshot_id": id, "files_restored": g(&progress.files),
                "dirs_restored": g(&progress.dirs), "bytes_restored": g(&progress.bytes), "errors": errors,
                "files_verified": g(&progress.verified)})
        );
    } else {
        out.info(format!(
            "restored {} files, {} dirs, {}",
            g(&progress.files),
            g(&progress.dirs),
            bytes(g(&progress.bytes))
        ));
        if a.verify {
            out.info(format!("verified {} files", g(&progress.verified)));
        }
    }
    if errors > 0 {
        bail!(
            "{errors} error{} during restore; see the messages above",
            if errors == 1 { "" } else { "s" }
        );
    }
    Ok(Outcome::Success)
}
