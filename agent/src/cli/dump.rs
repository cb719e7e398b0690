//! `cairn dump SNAPSHOT PATH`: a file's bytes, or a directory as tar, on stdout; unsafe member
//! names refused or cleaned are reported on stderr.

use std::io::{IsTerminal, Write};

use anyhow::{Result, bail};
use cairn_engine::restore::plan::find_subpath;
use cairn_engine::{dump, select};
use cairn_repo_format::tree::NodeType;

use super::args::DumpArgs;
use super::{Ctx, Out, Outcome};

pub fn run(ctx: &Ctx, _out: &Out, a: DumpArgs) -> Result<Outcome> {
    let cx = ctx.cx();
    let mut report = |e: cairn_engine::Event| cx.emit(e);
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
    let mut names = dump::TarNames::default();
    if trimmed.is_empty() {
        refuse_terminal()?;
        names = dump::tar(&repo, &snap.tree, "", &mut w, &mut report)?;
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
                names = dump::tar(&repo, &sub, name, &mut w, &mut report)?;
            }
            (NodeType::File, _) => dump::file(&repo, &node, &mut w)?,
            (kind, _) => bail!("{:?} is a {kind:?}, not a file or directory", a.path),
        }
    }
    w.flush()?;
    // As GNU tar: an archive whose unsafe members were left out is a failure, one whose
    // names were only cleaned is not.
    if names.refused > 0 {
        bail!(
            "{} unsafe member name{} left out of the archive; see the messages above",
            names.refused,
            if names.refused == 1 { "" } else { "s" }
        );
    }
    Ok(Outcome::Success)
}

fn refuse_terminal() -> Result<()> {
    if std::io::stdout().is_terminal() {
        bail!("a directory is dumped as a tar archive: redirect stdout to a file or a pipe");
    }
    Ok(())
}
