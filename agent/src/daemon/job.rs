//! One volume's backup, from the pod to the snapshot:
//!
//! ```text
//!  PVC → bound PV (API)  →  volumes::locate (node)  →  empty-volume guard
//!    → pre-hook (exec)  →  engine backup (identity as host, path, labels)  →  post-hook
//! ```
//!
//! The post-hook runs whenever the pre-hook was attempted: after a failure, a cancel or a
//! SIGTERM too. The result is one [`Outcome`], which the daemon turns into an Event, metrics
//! and history.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use cairn_engine::backup::{self, BackupError, BackupOptions, ParentChoice, Progress};
use cairn_engine::filter::Patterns;
use cairn_engine::{Cancel, Context, Event, Events, Severity};
use cairn_repo_format::snapshot::Snapshot;
use cairn_repo_format::{Id, Opened, Repository};

use super::annotations::PodPlan;
use super::history::TRIGGER_LABEL;
use super::identity::Identity;
use super::kube::Kube;
use super::pod::{PodInfo, PodVolume};
use super::volumes::{self, Mounts};

/// What a job needs from the daemon.
pub struct Env {
    /// The API.
    pub kube: Kube,
    /// The repository, opened once.
    pub repo: Repository<Opened>,
    /// `--kubelet-root`.
    pub kubelet_root: std::path::PathBuf,
    /// File threads per backup.
    pub workers: usize,
}

/// One volume to back up.
pub struct Job {
    /// Its pod.
    pub pod: PodInfo,
    /// The volume.
    pub volume: PodVolume,
    /// Its identity.
    pub identity: Identity,
    /// The pod's plan (excludes, hooks).
    pub plan: PodPlan,
    /// The `backup-now` value this backup runs for, if any.
    pub trigger: Option<String>,
    /// Files in the identity's last snapshot (0: none, or empty).
    pub last_files: u64,
    /// Cancelled when the pod goes away or the agent stops.
    pub cancel: Cancel,
}

/// How a job ended.
pub enum Outcome {
    /// A snapshot was written.
    Done {
        /// Its id.
        id: Id,
        /// It.
        snapshot: Box<Snapshot>,
        /// Bytes read from the volume.
        bytes_read: u64,
        /// Files that could not be read (the snapshot lacks them).
        unreadable: u64,
        /// Wall time.
        seconds: f64,
    },
    /// Nothing was backed up, on purpose (a Warning Event says why).
    Skipped {
        /// Event reason.
        reason: &'static str,
        /// Why.
        message: String,
    },
    /// The backup failed, or was cancelled.
    Failed {
        /// Event reason.
        reason: &'static str,
        /// Why.
        message: String,
        /// Wall time until it failed.
        seconds: f64,
    },
}

fn skipped(reason: &'static str, message: String) -> Outcome {
    Outcome::Skipped { reason, message }
}

fn failed(reason: &'static str, message: String) -> Outcome {
    Outcome::Failed {
        reason,
        message,
        seconds: 0.0,
    }
}

/// Runs `job` to its end.
pub async fn run(env: Arc<Env>, job: Job) -> Outcome {
    let pod = &job.pod;
    // Where the data is.
    let pv = match job.volume.source.claim() {
        Some(claim) => match env.kube.claim(&pod.namespace, claim).await {
            Ok(c) if c.block => {
                return skipped(
                    "VolumeNotBackedUp",
                    format!(
                        "volume {:?} (PVC {claim}) is a block device (volumeMode: Block), not a file system",
                        job.volume.name
                    ),
                );
            }
            Ok(c) => match c.volume_name {
                Some(v) => Some(v),
                None => {
                    return skipped(
                        "VolumeNotBound",
                        format!(
                            "PVC {claim} of volume {:?} is not bound to a volume yet",
                            job.volume.name
                        ),
                    );
                }
            },
            Err(e) => {
                return failed(
                    "BackupFailed",
                    format!(
                        "PVC {claim} of volume {:?} could not be read: {e}",
                        job.volume.name
                    ),
                );
            }
        },
        None => None,
    };
    let mounts = match Mounts::read() {
        Ok(m) => m,
        Err(e) => return failed("BackupFailed", format!("/proc/self/mountinfo: {e}")),
    };
    let dir = match volumes::locate(
        &env.kubelet_root,
        &pod.uid,
        &job.volume,
        pv.as_deref(),
        &mounts,
    ) {
        Ok(d) => d,
        Err(e) => return skipped("VolumeNotFound", e.to_string()),
    };
    if job.last_files > 0 && is_empty(&dir) {
        return skipped(
            "VolumeEmpty",
            format!(
                "volume {:?} at {} is empty while its last snapshot held {} files: no snapshot written (a volume that was not mounted in time looks like this); back it up by hand if it really is empty now",
                job.volume.name,
                dir.display(),
                job.last_files
            ),
        );
    }
    let excludes = match Patterns::new(&job.plan.excludes) {
        Ok(p) => p,
        Err(e) => return failed("BadExclude", format!("backup.cairn.io/exclude: {e}")),
    };

    // Hooks around the backup.
    let hooks = &job.plan.hooks;
    let container = hooks
        .container
        .clone()
        .or_else(|| {
            pod.annotations
                .get("kubectl.kubernetes.io/default-container")
                .cloned()
        })
        .or_else(|| pod.containers.first().cloned())
        .unwrap_or_default();
    let mut hook_failure = None;
    if let Some(pre) = &hooks.pre
        && let Err(e) = env
            .kube
            .exec(&pod.namespace, &pod.name, &container, pre, hooks.timeout)
            .await
    {
        let message = format!("pre-hook {pre:?} in container {container:?} {e}");
        if !hooks.continue_on_error {
            post_hook(&env, &job, &container).await;
            return failed("PreHookFailed", message);
        }
        hook_failure = Some(message);
    }

    let mut labels = job.identity.labels(pod, &job.volume.name);
    if let Some(t) = &job.trigger {
        labels.insert(TRIGGER_LABEL.into(), t.clone());
    }
    let opts = BackupOptions {
        paths: vec![dir.clone()],
        hostname: job.identity.host().to_string(),
        labels,
        excludes,
        one_file_system: true,
        parent: ParentChoice::Latest,
        workers: env.workers,
        as_path: Some(job.identity.path()),
        ..Default::default()
    };
    let unreadable = Arc::new(AtomicU64::new(0));
    let cx = Context {
        events: {
            let unreadable = unreadable.clone();
            let volume = job.identity.path();
            Events::new(move |e: Event| {
                if e.severity() == Severity::Error {
                    unreadable.fetch_add(1, Ordering::Relaxed);
                }
                tracing::warn!(volume = %volume, "{e}");
            })
        },
        cancel: job.cancel.clone(),
    };
    let started = Instant::now();
    let progress = Arc::new(Progress::default());
    let result = {
        let (repo, progress) = (env.repo.clone(), progress.clone());
        cairn_engine::blocking::run("cairn-backup", move || {
            backup::run(&repo, &opts, &progress, &cx)
        })
        .await
    };
    if hooks.pre.is_some() {
        post_hook(&env, &job, &container).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    match result {
        Ok(Ok(done)) => {
            if let Some(m) = hook_failure {
                tracing::warn!(volume = %job.identity.path(), "{m} (hook-on-error: Continue)");
            }
            Outcome::Done {
                id: done.id,
                snapshot: Box::new(done.snapshot),
                bytes_read: progress.bytes_read.load(Ordering::Relaxed),
                unreadable: unreadable.load(Ordering::Relaxed),
                seconds,
            }
        }
        Ok(Err(BackupError::Cancelled)) => Outcome::Failed {
            reason: "BackupCancelled",
            message: format!(
                "backup of volume {:?} cancelled (pod deleted or agent stopping); what was uploaded is reused next time",
                job.volume.name
            ),
            seconds,
        },
        Ok(Err(e)) => Outcome::Failed {
            reason: "BackupFailed",
            message: format!("volume {:?}: {e}", job.volume.name),
            seconds,
        },
        Err(p) => Outcome::Failed {
            reason: "BackupFailed",
            message: format!("volume {:?}: {p}", job.volume.name),
            seconds,
        },
    }
}

/// Runs the post-hook, if any; its failure is logged and evented, never fatal.
async fn post_hook(env: &Env, job: &Job, container: &str) {
    let hooks = &job.plan.hooks;
    let Some(post) = &hooks.post else { return };
    let pod = &job.pod;
    if let Err(e) = env
        .kube
        .exec(&pod.namespace, &pod.name, container, post, hooks.timeout)
        .await
    {
        let message = format!("post-hook {post:?} in container {container:?} {e}");
        tracing::warn!(pod = %pod.name, namespace = %pod.namespace, "{message}");
        let r = super::kube::reference(&pod.namespace, &pod.name, &pod.uid);
        let volume = Some(job.volume.name.as_str());
        let _ = env
            .kube
            .event(&r, volume, true, "PostHookFailed", message)
            .await;
    }
}

/// No entries at all (a fresh ext4 disk's `lost+found` counts as an entry).
fn is_empty(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_none())
}
