//! `cairn backup`: flags → [`BackupOptions`], run, print the summary.

use std::io::IsTerminal;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use cairn_engine::backup::{self, BackupOptions, ChangeRules, ParentChoice, Progress};
use cairn_engine::filter::Patterns;
use cairn_engine::select;

use super::args::BackupArgs;
use super::progress::Display;
use super::{Ctx, Out, Outcome, bytes, parse_label};

fn options(
    ctx: &Ctx,
    a: &BackupArgs,
    repo: &cairn_repo_format::Repository<cairn_repo_format::Opened>,
) -> Result<BackupOptions> {
    let mut patterns = a.excludes.clone();
    for f in &a.exclude_files {
        patterns.extend(
            Patterns::from_file(f)
                .with_context(|| format!("cannot read exclude file {}", f.display()))?,
        );
    }
    let parent = match (&a.parent, a.force) {
        (_, true) => ParentChoice::None,
        (Some(spec), false) => ParentChoice::Snapshot(
            select::resolve(
                repo,
                spec,
                &Default::default(),
                &mut super::report_damaged(ctx),
            )?
            .0,
        ),
        (None, false) => ParentChoice::Latest,
    };
    let time = a
        .time
        .as_deref()
        .map(|t| {
            chrono::DateTime::parse_from_rfc3339(t)
                .map(|t| t.to_utc())
                .with_context(|| {
                    format!("--time {t:?} is not an RFC 3339 time like 2026-01-31T12:00:00Z")
                })
        })
        .transpose()?;
    Ok(BackupOptions {
        paths: if a.stdin_from_command {
            Vec::new()
        } else {
            a.paths.clone()
        },
        hostname: a
            .host
            .clone()
            .unwrap_or_else(cairn_repo_format::key::hostname),
        tags: a
            .tags
            .iter()
            .flat_map(|t| t.split(','))
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect(),
        labels: a
            .labels
            .iter()
            .map(|l| parse_label(l))
            .collect::<Result<_>>()?,
        excludes: Patterns::new(&patterns)?,
        one_file_system: a.one_file_system,
        parent,
        change: ChangeRules {
            ignore_inode: a.ignore_inode,
            ignore_ctime: a.ignore_ctime,
        },
        time,
        workers: a.workers,
        connections: ctx.settings()?.connections(),
        scan: false,
        as_path: a.as_path.clone(),
    })
}

pub fn run(ctx: &Ctx, out: &Out, a: BackupArgs) -> Result<Outcome> {
    if a.stdin_filename != "stdin" && !a.stdin && !a.stdin_from_command {
        bail!(
            "--stdin-filename names the file of --stdin or --stdin-from-command; give one of them"
        );
    }
    // Check the paths before touching the repository, so a typo costs nothing.
    for p in a.paths.iter().filter(|_| !a.stdin_from_command) {
        std::fs::symlink_metadata(p).with_context(|| {
            format!(
                "backup path {} does not exist or cannot be read",
                p.display()
            )
        })?;
    }
    let repo = ctx.open()?;
    let mut opts = options(ctx, &a, &repo)?;
    let show = out.progress();
    opts.scan = show;
    let progress = Arc::new(Progress::default());
    let display = Display::backup(progress.clone(), show);
    let result = if a.stdin_from_command {
        let argv: Vec<std::ffi::OsString> = a
            .paths
            .iter()
            .map(|p| p.as_os_str().to_os_string())
            .collect();
        let source = backup::stdin::CommandOutput::spawn(&argv)
            .with_context(|| "--stdin-from-command: the command could not be started")?;
        backup::stdin::run(&repo, source, &a.stdin_filename, &opts, &progress, ctx.cx())
    } else if a.stdin {
        if std::io::stdin().is_terminal() {
            bail!(
                "--stdin reads the data to back up from standard input, but it is a terminal: pipe something in"
            );
        }
        backup::stdin::run(
            &repo,
            std::io::stdin().lock(),
            &a.stdin_filename,
            &opts,
            &progress,
            ctx.cx(),
        )
    } else {
        backup::run(&repo, &opts, &progress, ctx.cx())
    };
    drop(display);
    let done = result?;
    let s = &done.snapshot.summary;
    if out.json {
        println!(
            "{}",
            serde_json::json!({"message_type": "summary", "snapshot_id": done.id, "summary": s, "parent": done.snapshot.parent})
        );
    } else {
        if let Some(p) = done.snapshot.parent {
            out.info(format!("using parent snapshot {}", p.short()));
        }
        out.info(format!(
            "Files:       {} new, {} changed, {} unmodified",
            s.files_new, s.files_changed, s.files_unmodified
        ));
        out.info(format!(
            "Dirs:        {} new, {} changed, {} unmodified",
            s.dirs_new, s.dirs_changed, s.dirs_unmodified
        ));
        out.info(format!(
            "Added to the repository: {} ({} stored)",
            bytes(s.data_added),
            bytes(s.data_added_packed)
        ));
        out.info(format!(
            "processed {} in {} files",
            bytes(s.bytes_total),
            s.files_new + s.files_changed + s.files_unmodified
        ));
        out.info(format!("snapshot {} saved", done.id.short()));
        if out.verbose > 0 {
            out.info(serde_json::to_string_pretty(s)?);
        }
    }
    if s.errors > 0 {
        eprintln!(
            "warning: {} files or directories could not be read; the snapshot is incomplete",
            s.errors
        );
        return Ok(Outcome::Partial);
    }
    Ok(Outcome::Success)
}
