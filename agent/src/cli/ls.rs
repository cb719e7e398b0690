//! `cairn ls SNAPSHOT [PATH]`: lists a snapshot's entries depth-first (iteratively, any depth),
//! one tree in memory per level.

use std::io::Write;

use anyhow::{Result, bail};
use cairn_engine::restore::plan::{find_subpath, snap_path};
use cairn_engine::select;
use cairn_engine::treewalk::{Step, TreeWalk};
use cairn_repo_format::tree::{Node, NodeType};
use cairn_repo_format::{Id, Indexed, Repository};

use super::args::LsArgs;
use super::text::printable;
use super::{Ctx, Out, Outcome};

fn mode_string(n: &Node) -> String {
    let t = match n.kind {
        NodeType::Dir => 'd',
        NodeType::Symlink => 'l',
        NodeType::Chardev => 'c',
        NodeType::Blockdev => 'b',
        NodeType::Fifo => 'p',
        NodeType::Socket => 's',
        NodeType::File => '-',
    };
    let m = n.mode;
    let bit = |b: u32, c: char| if m & b != 0 { c } else { '-' };
    let x = |b: u32, special: u32, lower: char, upper: char| match (m & b != 0, m & special != 0) {
        (true, true) => lower,
        (false, true) => upper,
        (true, false) => 'x',
        (false, false) => '-',
    };
    [
        t,
        bit(0o400, 'r'),
        bit(0o200, 'w'),
        x(0o100, 0o4000, 's', 'S'),
        bit(0o040, 'r'),
        bit(0o020, 'w'),
        x(0o010, 0o2000, 's', 'S'),
        bit(0o004, 'r'),
        bit(0o002, 'w'),
        x(0o001, 0o1000, 't', 'T'),
    ]
    .iter()
    .collect()
}

fn print(w: &mut impl Write, out: &Out, long: bool, path: &str, n: &Node) -> Result<()> {
    if out.json {
        let mut j = serde_json::to_value(n)?;
        j["path"] = serde_json::json!(path);
        writeln!(w, "{j}")?;
        return Ok(());
    }
    let path = printable(path);
    if long {
        let owner = if n.user.is_empty() {
            n.uid.to_string()
        } else {
            n.user.clone()
        };
        let group = if n.group.is_empty() {
            n.gid.to_string()
        } else {
            n.group.clone()
        };
        let link = n
            .linktarget
            .as_ref()
            .map(|t| format!(" -> {}", printable(&t.display())))
            .unwrap_or_default();
        writeln!(
            w,
            "{} {:>8} {:>8} {:>12} {} {}{}",
            mode_string(n),
            owner,
            group,
            n.size,
            n.mtime
                .with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S"),
            path,
            link
        )?;
    } else {
        writeln!(w, "{path}")?;
    }
    Ok(())
}

/// Prints every entry below `tree` (the directory `prefix`), depth-first and iteratively.
fn walk(
    repo: &Repository<Indexed>,
    w: &mut impl Write,
    out: &Out,
    long: bool,
    tree: &Id,
    prefix: &str,
) -> Result<()> {
    let mut walk = TreeWalk::new(repo.load_tree(tree)?, *tree, prefix);
    while let Some(step) = walk.next() {
        let Step::Node(n) = step else { continue };
        print(w, out, long, walk.path(), &n)?;
        if let (NodeType::Dir, Some(sub)) = (n.kind, n.subtree) {
            walk.enter(repo.load_tree(&sub)?, sub, n);
        }
    }
    Ok(())
}

pub fn run(ctx: &Ctx, out: &Out, a: LsArgs) -> Result<Outcome> {
    let repo = ctx.open_indexed()?;
    let (_, snap) = select::resolve(
        &repo,
        &a.snapshot,
        &a.filter.to_filter()?,
        &mut super::report_damaged(ctx),
    )?;
    let stdout = std::io::stdout();
    let mut w = std::io::BufWriter::new(stdout.lock());
    match a
        .path
        .as_deref()
        .filter(|p| !p.trim_matches('/').is_empty())
    {
        None => walk(&repo, &mut w, out, a.long, &snap.tree, "/")?,
        Some(p) => {
            let Some(n) = find_subpath(&repo, &snap.tree, p)? else {
                bail!("{p:?} is not in the snapshot");
            };
            let path = snap_path(p).to_string_lossy().into_owned();
            print(&mut w, out, a.long, &path, &n)?;
            if let (NodeType::Dir, Some(sub)) = (n.kind, n.subtree) {
                walk(&repo, &mut w, out, a.long, &sub, &path)?;
            }
        }
    }
    w.flush()?;
    Ok(Outcome::Success)
}
