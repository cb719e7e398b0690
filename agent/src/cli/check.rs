//! `cairn check`: runs [`cairn_engine::check`] and prints each finding as it comes.

use anyhow::{Result, bail};
use cairn_engine::check::{self, CheckOptions, Subset};
use cairn_engine::{Context, Event, Events};

use super::events::{Stream, json, printer_to};

use super::args::CheckArgs;
use super::{Ctx, Out, Outcome, bytes};

pub fn run(ctx: &Ctx, out: &Out, a: CheckArgs) -> Result<Outcome> {
    let read_data = match (&a.read_data_subset, a.read_data) {
        (Some(s), _) => Some(s.parse::<Subset>()?),
        (None, true) => Some(Subset::All),
        (None, false) => None,
    };
    let opts = CheckOptions {
        read_data,
        threads: ctx.settings()?.connections(),
    };
    let repo = ctx.open()?;
    // Findings are check's output: on stdout, or gathered into the one JSON document.
    let findings = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let events = if out.json {
        let findings = findings.clone();
        Events::new(move |e: Event| {
            let mut v = json(&e);
            if let Some(o) = v.as_object_mut() {
                o.insert("severity".into(), o["message_type"].clone());
            }
            findings.lock().unwrap_or_else(|p| p.into_inner()).push(v);
        })
    } else {
        printer_to(Stream::Stdout, false, out.quiet)
    };
    let cx = Context {
        events,
        cancel: ctx.cx().cancel.clone(),
    };
    let summary = check::run(repo, &opts, &cx)?;
    if out.json {
        let findings = std::mem::take(&mut *findings.lock().unwrap_or_else(|p| p.into_inner()));
        println!(
            "{}",
            serde_json::json!({ "summary": summary, "findings": findings })
        );
    } else {
        out.info(format!(
            "checked {} snapshots, {} packs{}: {} errors, {} warnings",
            summary.snapshots,
            summary.packs,
            if read_data.is_some() {
                format!(
                    " ({} packs, {} blobs, {} read and verified)",
                    summary.packs_read,
                    summary.blobs_read,
                    bytes(summary.bytes_read)
                )
            } else {
                String::new()
            },
            summary.errors,
            summary.warnings
        ));
    }
    if summary.errors > 0 {
        bail!(
            "the repository has {} errors (listed above); `cairn repair index` rebuilds a lost index, `cairn repair snapshots` drops references to lost data",
            summary.errors
        );
    }
    Ok(Outcome::Success)
}
