//! `cairn dump SNAPSHOT PATH`: a file's bytes, or a directory as tar, on stdout.

use std::io::{IsTerminal, Write};

use anyhow::{Result, bail};
use cairn_engine::restore::plan::find_subpath;
use cairn_engine::{dump, select};
use cairn_repo_format::tree::NodeType;

use super::args::DumpArgs;
use super::{Ctx, Out, Outcome};

pub fn run(ctx: &Ctx, _out: &Out, a: DumpArgs) -> Result<Outcome> {
    let repo = ctx.open_indexed()?;
    let (_, snap) = select::resolve(
        &repo,
        &a.snapshot,
        &a.filter.to_filter()?,
        &mut super::report_damaged(ctx),
    )?;
    let stdout = std::io::stdout();
    let mut w = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    let trimmed = a.path.trim_matches('/');
    if trimmed.is_empty() {
        refuse_terminal()?;
        dump::tar(&repo, &snap.tree, "", &mut w)?;
    } else {
        let Some(node) = find_subpath(&repo, &snap.tree, trimmed)? else {
            bail!(
                "{:?} is not in the snapshot; see `cairn ls {}`",
                a.path,
                a.snapshot
            );
        };
        match (node.kind, node.subtree) {
            (NodeType::Dir, Some(sub)) => {
                refuse_terminal()?;
                let name = trimmed.rsplit('/').next().unwrap_or(trimmed);
                dump::tar(&repo, &sub, name, &mut w)?;
            }
            (NodeType::File, _) => dump::file(&repo, &node, &mut w)?,
            (kind, _) => bail!("{:?} is a {kind:?}, not a file or directory", a.path),
        }
    }
    w.flush()?;
    Ok(Outcome::Success)
}

fn refuse_terminal() -> Result<()> {
    if std::io::stdout().is_terminal() {
        bail!("a directory is dumped as a tar archive: redirect stdout to a file or a pipe");
    }
    Ok(())
}
