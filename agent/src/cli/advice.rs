//! What to do about an error. The engine's errors state facts (which object, what happened);
//! the command line knows its own commands, so the advice that names one lives here and is
//! printed under the error as a `hint:` line.

use std::error::Error;

use cairn_engine::OpenError;
use cairn_engine::backup::BackupError;
use cairn_engine::check::CheckError;
use cairn_engine::copy::CopyError;
use cairn_engine::location::LocationError;
use cairn_engine::lock::LockError;
use cairn_engine::prune::PruneError;
use cairn_engine::repair::RepairError;
use cairn_engine::restore::RestoreError;
use cairn_engine::select::SelectError;
use cairn_repo_format::RepoError;
use cairn_repo_format::repository::KeyRemoveError;

/// Every error in `e`'s chain, with the errors that transparent variants wrap (whose
/// `source()` skips them) put back in.
pub fn causes<'a>(e: &'a anyhow::Error) -> Vec<&'a (dyn Error + 'static)> {
    let mut out = Vec::new();
    for cause in e.chain() {
        unwrap_into(cause, &mut out);
    }
    out
}

fn unwrap_into<'a>(e: &'a (dyn Error + 'static), out: &mut Vec<&'a (dyn Error + 'static)>) {
    out.push(e);
    let inner: Option<&'a (dyn Error + 'static)> = if let Some(e) = e.downcast_ref::<OpenError>() {
        match e {
            OpenError::Location(l) => Some(l),
            OpenError::Repo(r) => Some(r),
            _ => None,
        }
    } else if let Some(e) = e.downcast_ref::<BackupError>() {
        match e {
            BackupError::Repo(r) => Some(r),
            BackupError::Lock(l) => Some(l),
            _ => None,
        }
    } else if let Some(RestoreError::Repo(r)) = e.downcast_ref::<RestoreError>() {
        Some(r)
    } else if let Some(CheckError::Repo(r)) = e.downcast_ref::<CheckError>() {
        Some(r)
    } else if let Some(LockError::Repo(r)) = e.downcast_ref::<LockError>() {
        Some(r)
    } else if let Some(SelectError::Repo(r)) = e.downcast_ref::<SelectError>() {
        Some(r)
    } else if let Some(e) = e.downcast_ref::<RepairError>() {
        match e {
            RepairError::Lock(l) => Some(l),
            RepairError::Repo(r) => Some(r),
        }
    } else if let Some(e) = e.downcast_ref::<CopyError>() {
        match e {
            CopyError::Lock(l) => Some(l),
            CopyError::Repo(r) => Some(r),
            _ => None,
        }
    } else if let Some(e) = e.downcast_ref::<PruneError>() {
        match e {
            PruneError::Lock(l) => Some(l),
            PruneError::Repo(r) => Some(r),
            _ => None,
        }
    } else {
        None
    };
    if let Some(inner) = inner {
        unwrap_into(inner, out);
    }
}

/// The line `cairn restore` ends with when the target ran out of space or quota
/// ([`RestoreError::TargetFull`]): what happened, how much was left out, and what to do.
pub fn restore_stopped(
    target: &std::path::Path,
    error: &std::io::Error,
    not_restored: u64,
) -> String {
    format!(
        "restore to {t} stopped: {error}; {not_restored} files not restored; make room on {t} or restore to another target",
        t = target.display()
    )
}

/// The same for `cairn restore-init`, whose target is a volume that the next start of the pod
/// restores into again.
pub fn volume_full(target: &std::path::Path, error: &std::io::Error, not_restored: u64) -> String {
    format!(
        "restore to {t} stopped: {error}; {not_restored} files not restored; the volume is too small for the snapshot: make room on it or give it more space; the restore stays in progress and the next start restores again",
        t = target.display()
    )
}

/// The first piece of advice any error in `e`'s chain calls for.
pub fn advice(e: &anyhow::Error) -> Option<&'static str> {
    causes(e).into_iter().find_map(advice_for)
}

fn advice_for(e: &(dyn Error + 'static)) -> Option<&'static str> {
    if let Some(e) = e.downcast_ref::<RepoError>() {
        return match e {
            RepoError::NotFound { .. } => {
                Some("run `cairn init` to create a repository there, or check -r/--repo")
            }
            RepoError::Corrupt { .. } => Some("run `cairn check` to see what else is damaged"),
            RepoError::NoUsableKey { .. } => Some(
                "remove the key files named above, or restore a good one; `cairn key list` (with a working password) shows the keys",
            ),
            _ => None,
        };
    }
    if let Some(LocationError::NoContainer { .. }) = e.downcast_ref::<LocationError>() {
        return Some(
            "create it with `cairn init`, or check the name and AZURE_STORAGE_ACCOUNT_NAME",
        );
    }
    if let Some(LockError::PruneRunning { .. }) = e.downcast_ref::<LockError>() {
        return Some("wait for it, or run `cairn unlock` if that process is gone");
    }
    if let Some(PruneError::Damaged(_)) = e.downcast_ref::<PruneError>() {
        return Some("run `cairn check`, then `cairn repair index` or `cairn repair snapshots`");
    }
    if let Some(RestoreError::NoSuchPath(_)) = e.downcast_ref::<RestoreError>() {
        return Some("`cairn ls SNAPSHOT` lists what the snapshot holds");
    }
    if let Some(SelectError::Invalid(_)) = e.downcast_ref::<SelectError>() {
        return Some("use `latest` or an id (prefix) from `cairn snapshots`");
    }
    if let Some(e) = e.downcast_ref::<KeyRemoveError>() {
        return match e {
            KeyRemoveError::InUse(_) => Some("or change its password with `cairn key passwd`"),
            KeyRemoveError::NoSuchKey(_) => Some("`cairn key list` lists the keys"),
            _ => None,
        };
    }
    None
}
