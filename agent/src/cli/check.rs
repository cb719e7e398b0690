//! `cairn check`: runs [`cairn_engine::check`] and prints each finding as it comes.

use anyhow::{Result, bail};
use cairn_engine::check::{self, CheckOptions, Severity, Subset};

use super::args::CheckArgs;
use super::{Ctx, Out, Outcome, bytes};

pub fn run(ctx: &Ctx, out: &Out, a: CheckArgs) -> Result<Outcome> {
    let read_data = match (&a.read_data_subset, a.read_data) {
        (Some(s), _) => Some(s.parse::<Subset>()?),
        (None, true) => Some(Subset::All),
        (None, false) => None,
    };
    let threads = ctx.connections()?;
    let opts = CheckOptions { read_data, threads };
    let repo = ctx.open()?;
    let mut findings = Vec::new();
    let summary = check::run(repo, &opts, &mut |f| {
        let label = match f.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        if out.json {
            findings.push(serde_json::json!({ "severity": label, "message": f.message }));
        } else if f.severity == Severity::Error || !out.quiet {
            println!("{label}: {}", f.message);
        }
    })?;
    if out.json {
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
