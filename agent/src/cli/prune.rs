//! `cairn prune`: flags → [`PruneOptions`], run, print what was done and what waits.

use anyhow::{Result, bail};
use cairn_engine::prune::{self, PruneOptions};

use super::args::{PruneArgs, PruneOpts};
use super::{Ctx, Out, Outcome, bytes};

/// Parses `5%`, `0%` or `unlimited` into a fraction.
fn fraction(s: &str) -> Result<f64> {
    if s == "unlimited" {
        return Ok(f64::INFINITY);
    }
    match s.strip_suffix('%').map(|p| p.trim().parse::<f64>()) {
        Some(Ok(p)) if (0.0..=100.0).contains(&p) => Ok(p / 100.0),
        _ => bail!(
            "--max-unused {s:?}: use a percentage like 5% (0% repacks every partly used pack) or 'unlimited'"
        ),
    }
}

/// Parses `500M`, `2G`, `1024K` or plain bytes.
fn size(s: &str) -> Result<u64> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m = match c.to_ascii_uppercase() {
                'K' => 1u64 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => bail!("--max-repack-size {s:?}: use a size like 500M or 2G"),
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    match num.parse::<u64>() {
        Ok(n) => Ok(n.saturating_mul(mult)),
        Err(_) => bail!("--max-repack-size {s:?}: use a size like 500M or 2G"),
    }
}

pub fn options(o: &PruneOpts, dry_run: bool) -> Result<PruneOptions> {
    Ok(PruneOptions {
        max_unused: fraction(&o.max_unused)?,
        max_repack_bytes: o.max_repack_size.as_deref().map(size).transpose()?,
        dry_run,
        ..Default::default()
    })
}

pub fn run(ctx: &Ctx, out: &Out, a: PruneArgs) -> Result<Outcome> {
    prune(ctx, out, &a.opts, a.dry_run)
}

/// Shared with `forget --prune`.
pub fn prune(ctx: &Ctx, out: &Out, o: &PruneOpts, dry_run: bool) -> Result<Outcome> {
    let opts = options(o, dry_run)?;
    let repo = ctx.open()?;
    let stats = prune::run(repo, &opts, ctx.cx())?;
    if out.json {
        println!("{}", serde_json::to_string(&stats)?);
        return Ok(Outcome::Success);
    }
    if dry_run {
        out.info(format!(
            "dry run: would condemn {} unused and {} unindexed packs and repack {}",
            stats.packs_unused, stats.packs_unindexed, stats.packs_repacked
        ));
        return Ok(Outcome::Success);
    }
    out.info(format!(
        "repacked {} packs ({} copied into {} new packs); deleted {} packs, {} freed; {} rescued",
        stats.packs_repacked,
        bytes(stats.bytes_repacked),
        stats.packs_written,
        stats.packs_deleted,
        bytes(stats.bytes_freed),
        stats.packs_rescued
    ));
    for d in &stats.deferred {
        out.info(format!("waiting: {d}"));
    }
    Ok(Outcome::Success)
}
