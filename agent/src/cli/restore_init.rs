//! `cairn restore-init`: restores a volume's latest snapshot before its app starts, through
//! [`cairn_engine::volume`]. Non-interactive: progress and the outcome go to stderr as JSON
//! lines; exit 0 when the app may start (restored, already restored, nothing to restore, or
//! data left alone), non-zero otherwise. A volume too small for the snapshot stops the
//! restore at the first file that does not fit: one summary line (`target-full`, with the
//! count of files not restored), one error, exit 1, and the marker stays in progress so the
//! next start restores again.

use anyhow::{Context, Result, bail};
use cairn_engine::restore::{RestoreError, RestoreProgress, RestoreTuning};
use cairn_engine::volume::{
    self, IfNotEmpty, VolumeError, VolumeOutcome, VolumeRestore, VolumeSpec,
};
use serde_json::json;

use super::args::RestoreInitArgs;
use super::{Ctx, Outcome};
use crate::daemon::schedule::parse_duration;

fn say(v: serde_json::Value) {
    eprintln!("{v}");
}

pub fn run(ctx: &Ctx, a: RestoreInitArgs) -> Result<Outcome> {
    let pvc = match (&a.pvc, &a.claim_template, &a.pod_name) {
        (Some(p), _, _) => p.clone(),
        (None, Some(t), Some(p)) => format!("{t}-{p}"),
        _ => bail!(
            "name the volume: --pvc (CAIRN_PVC), or --claim-template and --pod-name (CAIRN_CLAIM_TEMPLATE, CAIRN_POD_NAME)"
        ),
    };
    let before = a
        .before
        .as_deref()
        .map(|t| {
            chrono::DateTime::parse_from_rfc3339(t)
                .map(|t| t.with_timezone(&chrono::Utc))
                .with_context(|| {
                    format!("--before {t:?} is not an RFC 3339 time like 2026-01-31T12:00:00Z")
                })
        })
        .transpose()?;
    let wait = parse_duration(&a.wait).map_err(|e| anyhow::anyhow!("--wait: {e}"))?;
    if !a.target.is_dir() {
        bail!(
            "--target {} is not a directory: mount the volume there",
            a.target.display()
        );
    }
    let owners = crate::caps::root_or(crate::caps::CHOWN);
    if !owners {
        let uid = nix::unistd::geteuid();
        if a.strict_ownership {
            bail!(
                "running as uid {uid} without CAP_CHOWN, so owners cannot be restored (--strict-ownership): run the init container as root with CAP_CHOWN"
            );
        }
        say(json!({ "message_type": "warning",
            "message": format!("running as uid {uid} without CAP_CHOWN: files are restored as this user, not with their recorded owners") }));
    }
    let opts = VolumeRestore {
        target: a.target.clone(),
        spec: VolumeSpec {
            cluster: a.cluster.clone(),
            namespace: a.namespace.clone(),
            pvc,
            snapshot: a.snapshot.clone(),
            before,
        },
        if_not_empty: match a.if_not_empty.as_str() {
            "overwrite" => IfNotEmpty::Overwrite,
            "fail" => IfNotEmpty::Fail,
            _ => IfNotEmpty::Skip,
        },
        fail_if_no_snapshot: a.if_no_snapshot == "fail",
        wait,
        tuning: RestoreTuning {
            connections: ctx.settings()?.connections(),
            ..Default::default()
        },
        strict_ownership: a.strict_ownership,
    };
    let repo = ctx.open_indexed()?;
    let progress = RestoreProgress::default();
    let identity = format!("{}/{}", opts.spec.namespace, opts.spec.pvc);
    let started = std::time::Instant::now();
    // A status line every 10 s while the restore runs, for `kubectl logs`.
    let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
    let outcome = std::thread::scope(|s| {
        s.spawn(|| {
            while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(std::time::Duration::from_secs(10))
            {
                let g =
                    |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
                say(json!({ "message_type": "status", "volume": identity,
                    "files_restored": g(&progress.files), "bytes_restored": g(&progress.bytes),
                    "seconds": started.elapsed().as_secs_f64() }));
            }
        });
        let r = volume::run(&repo, &opts, &progress, ctx.cx());
        drop(stop);
        r
    });
    let g = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    let outcome = match outcome {
        // The volume is too small: one summary and one error, not an error per file; the
        // marker stays in progress.
        Err(VolumeError::Restore(RestoreError::TargetFull {
            target,
            not_restored,
            error,
        })) => {
            say(
                json!({ "message_type": "summary", "outcome": "target-full", "volume": identity,
                "files_restored": g(&progress.files), "dirs_restored": g(&progress.dirs),
                "bytes_restored": g(&progress.bytes), "not_restored": not_restored,
                "errors": g(&progress.errors), "seconds": started.elapsed().as_secs_f64() }),
            );
            bail!(super::advice::volume_full(&target, &error, not_restored));
        }
        r => r?,
    };
    let devices = g(&progress.devices_skipped);
    if devices > 0 {
        say(json!({ "message_type": "warning",
            "message": format!("{devices} device nodes in the snapshot were not created: restore-init never creates devices") }));
    }
    let refused = g(&progress.owners_not_kept);
    if refused > 0 {
        // SMB (Azure Files) and other file systems that cannot keep owners.
        say(json!({ "message_type": "warning",
            "message": format!("the volume's file system refused the recorded owners of {refused} entries (SMB/Azure Files cannot keep them): they keep the owner it gave them") }));
    }
    match outcome {
        VolumeOutcome::Restored { id, errors } => {
            say(
                json!({ "message_type": "summary", "outcome": "restored", "volume": identity,
                "snapshot_id": id, "files_restored": g(&progress.files), "dirs_restored": g(&progress.dirs),
                "bytes_restored": g(&progress.bytes), "errors": errors,
                "seconds": started.elapsed().as_secs_f64() }),
            );
            if errors > 0 {
                bail!(
                    "{errors} errors while restoring {identity} (listed above); the next start finishes the restore"
                );
            }
        }
        VolumeOutcome::AlreadyRestored { snapshot } => say(json!({ "message_type": "summary",
            "outcome": "already-restored", "volume": identity, "snapshot_id": snapshot,
            "message": "a complete restore marker is there: nothing touched" })),
        VolumeOutcome::NoSnapshot => {
            say(json!({ "message_type": "summary", "outcome": "no-snapshot",
            "volume": identity, "message": "no snapshot of this volume: the app starts on the empty volume" }))
        }
        VolumeOutcome::NotEmpty => say(json!({ "message_type": "summary", "outcome": "not-empty",
            "volume": identity, "message": "the volume holds data and no restore marker: left alone (--if-not-empty skip)" })),
    }
    Ok(Outcome::Success)
}
