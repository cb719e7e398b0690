//! `cairn agent`: the DaemonSet that backs up annotated pod volumes on its node.
//!
//! ```text
//!  watcher (this node's pods, field selector spec.nodeName) ──▶ reflector store
//!        │ each pod changed
//!        ▼
//!  annotations::plan ── problems ──▶ Warning Events
//!        │ volumes, schedule, trigger, hooks
//!        ▼
//!  scheduler: due (schedule after the identity's last snapshot, or a new backup-now value)
//!        │ at most --max-concurrent at once
//!        ▼
//!  run: volumes::locate → pre-hook → engine backup (identity as host/path/labels) → post-hook
//!        │
//!        ▼
//!  Event on the pod, metrics
//! ```
//!
//! Each file is one step: [`pod`] reads the API object, [`annotations`] the opt-in,
//! [`schedule`] when, [`volumes`] where on the node, [`identity`] under which name.

pub mod annotations;
pub mod history;
pub mod identity;
pub mod job;
pub mod kube;
pub mod metrics;
pub mod pod;
pub mod schedule;
pub mod volumes;

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ::kube::runtime::watcher;
use anyhow::{Context as _, Result, anyhow};
use cairn_engine::{Cancel, RepoSettings};
use chrono::{DateTime, Utc};
use futures::StreamExt;

use annotations::{PodPlan, Problem};
use history::History;
use identity::Identity;
use job::{Env, Job, Outcome};
use pod::PodInfo;
use schedule::Schedule;

/// The agent's validated settings.
pub struct Settings {
    /// `--node-name`.
    pub node: String,
    /// `--cluster`.
    pub cluster: String,
    /// `--kubelet-root`.
    pub kubelet_root: PathBuf,
    /// `--schedule`.
    pub schedule: Schedule,
    /// `--max-concurrent`.
    pub max_concurrent: usize,
    /// `--metrics-listen`.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// `--default-volumes`.
    pub default_volumes: bool,
    /// `--annotate-pods`.
    pub annotate_pods: bool,
    /// File threads per backup.
    pub workers: usize,
    /// The repository.
    pub repo: RepoSettings,
}

/// Runs the agent until `cancel` is set (SIGTERM): then running backups are cancelled, their
/// post-hooks run, and it returns.
pub fn run(settings: Settings, cancel: Cancel) -> Result<()> {
    // The rustls crypto provider is installed in `main`, before any client exists.
    tracing_subscriber::fmt()
        .json()
        .with_writer(std::io::stderr)
        .with_current_span(false)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("cairn-agent")
        .enable_all()
        .build()
        .context("starting the agent's runtime")?;
    rt.block_on(serve(settings, cancel))
}

/// What the agent knows of one pod.
struct Tracked {
    info: PodInfo,
    plan: PodPlan,
    /// Problems already reported as Events (each once per pod).
    reported: HashSet<String>,
}

/// Per identity: what the agent did since it started.
#[derive(Default)]
struct Attempts {
    /// When the identity was first seen (the base of its schedule before any snapshot).
    first_seen: HashMap<String, DateTime<Utc>>,
    /// The last attempt's start, so a failure waits for the next scheduled time.
    last: HashMap<String, DateTime<Utc>>,
    /// `backup-now` values already attempted.
    triggers: HashMap<String, String>,
}

/// A backup that is queued or running.
struct Pending {
    pod_uid: String,
    volume: String,
    trigger: Option<String>,
}

async fn serve(s: Settings, cancel: Cancel) -> Result<()> {
    let settings = Arc::new(s);
    let s = &settings;
    let metrics = Arc::new(metrics::Metrics::default());
    if let Some(addr) = s.metrics_listen {
        metrics::serve(addr, metrics.clone())
            .await
            .with_context(|| format!("--metrics-listen {addr}"))?;
    }
    let root_ok = match check_root(&s.kubelet_root) {
        Ok(()) => true,
        Err(why) => {
            tracing::error!("not ready: {why}");
            metrics.set_not_ready(why);
            false
        }
    };
    if root_ok {
        metrics.set_not_ready("the pod watch has not listed yet".into());
    }
    let repo_settings = s.repo.clone();
    let repo = cairn_engine::blocking::run("cairn-open", move || repo_settings.open())
        .await
        .map_err(|p| anyhow!("{p}"))?
        .context("opening the repository")?;
    let cluster = s.cluster.clone();
    let r = repo.clone();
    let mut history = cairn_engine::blocking::run("cairn-history", move || {
        History::load(&r, &cluster, &mut |m| tracing::warn!("skipped: {m}"))
    })
    .await
    .map_err(|p| anyhow!("{p}"))?
    .context("reading the repository's snapshots")?;
    tracing::info!(
        node = %s.node,
        cluster = %s.cluster,
        identities = history.len(),
        "agent started"
    );
    let kube = kube::Kube::connect(&s.node)
        .await
        .context("connecting to the Kubernetes API (in-cluster, or KUBECONFIG)")?;
    let env = Arc::new(Env {
        kube: kube.clone(),
        repo,
        kubelet_root: s.kubelet_root.clone(),
        workers: s.workers,
    });
    let (_store, pods) = kube.pods(&s.node);
    let mut pods = std::pin::pin!(pods);
    let mut tracked: HashMap<String, Tracked> = HashMap::new();
    let mut attempts = Attempts::default();
    let mut queue: VecDeque<(String, Pending)> = VecDeque::new();
    let mut running: HashMap<String, (Pending, Cancel)> = HashMap::new();
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<(String, Outcome)>();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Plans are made again only when something changed (a pod, a finished backup) or the
    // earliest scheduled time has come, so an idle agent with many pods does no work per tick.
    let mut dirty = true;
    let mut next_due: Option<DateTime<Utc>> = None;

    loop {
        tokio::select! {
            ev = pods.next() => match ev {
                Some(Ok(ev)) => {
                    dirty = true;
                    if matches!(ev, watcher::Event::InitDone) && root_ok {
                        metrics.set_ready();
                    }
                    on_watch(ev, s, &env, &mut tracked, &mut running).await
                }
                Some(Err(e)) => tracing::warn!("watching pods: {e}; listing again"),
                None => return Err(anyhow!("the pod watch ended")),
            },
            Some((key, outcome)) = done_rx.recv() => {
                dirty = true;
                if let Some((p, _)) = running.remove(&key) {
                    record(&metrics, &key, &outcome);
                    finish(&env, s, &tracked, &mut history, &key, &p, outcome).await;
                }
            }
            _ = tick.tick() => {}
        }
        if cancel.is_cancelled() {
            break;
        }
        let now = Utc::now();
        if dirty || next_due.is_some_and(|d| d <= now) {
            dirty = false;
            next_due = plan_due(
                s,
                &tracked,
                &history,
                &mut attempts,
                &running,
                &mut queue,
                now,
            );
            publish_schedules(s, &tracked, &history, &metrics, now);
        }
        while running.len() < s.max_concurrent.max(1) {
            let Some((key, p)) = queue.pop_front() else {
                break;
            };
            let Some(job) = make_job(s, &tracked, &history, &key, &p) else {
                continue;
            };
            attempts.last.insert(key.clone(), now);
            if let Some(t) = &p.trigger {
                attempts.triggers.insert(key.clone(), t.clone());
            }
            tracing::info!(volume = %key, pod = %job.pod.name, trigger = ?p.trigger, "backup started");
            running.insert(key.clone(), (p, job.cancel.clone()));
            metrics.started();
            let (env, tx) = (env.clone(), done_tx.clone());
            tokio::spawn(async move {
                let outcome = job::run(env, job).await;
                let _ = tx.send((key, outcome));
            });
        }
    }

    // Shutdown: cancel what runs, let each end (post-hooks included), then return.
    tracing::info!(running = running.len(), "stopping");
    for (_, c) in running.values() {
        c.cancel();
    }
    while !running.is_empty() {
        match done_rx.recv().await {
            Some((key, outcome)) => {
                if let Some((p, _)) = running.remove(&key) {
                    record(&metrics, &key, &outcome);
                    finish(&env, s, &tracked, &mut history, &key, &p, outcome).await;
                }
            }
            None => break,
        }
    }
    Ok(())
}

/// The metric labels of an identity's path: its namespace, and the rest (the PVC, or
/// `<workload>/<volume>`).
fn metric_labels(key: &str) -> (&str, &str) {
    let rest = key.trim_start_matches('/');
    rest.split_once('/').unwrap_or((rest, ""))
}

/// Tells the metrics each backed-up volume's schedule interval and last snapshot, for the
/// "no backup within twice its schedule" alert.
fn publish_schedules(
    s: &Settings,
    tracked: &HashMap<String, Tracked>,
    history: &History,
    m: &metrics::Metrics,
    now: DateTime<Utc>,
) {
    for t in tracked.values().filter(|t| t.info.running) {
        let schedule = t.plan.schedule.as_ref().unwrap_or(&s.schedule);
        let Some(next) = schedule.next_after(now) else {
            continue;
        };
        let Some(after) = schedule.next_after(next) else {
            continue;
        };
        let interval = (after - next).num_milliseconds() as f64 / 1000.0;
        for name in &t.plan.volumes {
            let Some(v) = t.info.volumes.iter().find(|v| &v.name == name) else {
                continue;
            };
            let key = Identity::of(&s.cluster, &t.info, v).path();
            let (namespace, pvc) = metric_labels(&key);
            let last = history
                .get(&key)
                .last
                .map(|t| t.timestamp_millis() as f64 / 1000.0);
            m.scheduled(namespace, pvc, interval, last);
        }
    }
}

/// Adds a finished job to the metrics, labelled by its identity's path
/// (`/<namespace>/<pvc>` or `/<namespace>/<workload>/<volume>`).
fn record(m: &metrics::Metrics, key: &str, outcome: &Outcome) {
    let (namespace, pvc) = metric_labels(key);
    let (seconds, result) = match outcome {
        Outcome::Done {
            snapshot,
            bytes_read,
            seconds,
            ..
        } => {
            let m = &snapshot.summary;
            (
                *seconds,
                metrics::Result::Success {
                    bytes_read: *bytes_read,
                    bytes_added: m.data_added,
                    files: m.files_new + m.files_changed + m.files_unmodified,
                },
            )
        }
        Outcome::Skipped { .. } => (0.0, metrics::Result::Skipped),
        Outcome::Failed { seconds, .. } => (*seconds, metrics::Result::Failure),
    };
    m.finished(namespace, pvc, seconds, result);
}

/// The kubelet root must hold `pods/`, and this process must be able to read any file.
fn check_root(root: &std::path::Path) -> Result<(), String> {
    if !root.join("pods").is_dir() {
        return Err(format!(
            "{} holds no pods/ directory: set --kubelet-root (CAIRN_KUBELET_ROOT) to the kubelet's root as mounted in this container",
            root.display()
        ));
    }
    if !crate::caps::root_or(crate::caps::DAC_READ_SEARCH) {
        return Err(
            "cannot read every volume: run the agent as uid 0, or with CAP_DAC_READ_SEARCH".into(),
        );
    }
    Ok(())
}

/// Takes in one watch event: pods added, changed or gone.
async fn on_watch(
    ev: watcher::Event<k8s_openapi::api::core::v1::Pod>,
    s: &Settings,
    env: &Env,
    tracked: &mut HashMap<String, Tracked>,
    running: &mut HashMap<String, (Pending, Cancel)>,
) {
    match ev {
        watcher::Event::Apply(p) | watcher::Event::InitApply(p) => {
            let Some(info) = PodInfo::from_pod(&p) else {
                return;
            };
            if info.node != s.node {
                return;
            }
            if info.deleting || !info.running {
                cancel_pod(&info.uid, running);
            }
            let (plan, problems) = annotations::plan(&info, s.default_volumes);
            let uid = info.uid.clone();
            let t = tracked.entry(uid).or_insert_with(|| Tracked {
                info: info.clone(),
                plan: PodPlan::default(),
                reported: HashSet::new(),
            });
            t.info = info;
            t.plan = plan;
            report_problems(env, t, &problems).await;
        }
        watcher::Event::Delete(p) => {
            if let Some(uid) = p.metadata.uid.as_deref() {
                cancel_pod(uid, running);
                tracked.remove(uid);
            }
        }
        watcher::Event::Init | watcher::Event::InitDone => {}
    }
}

fn cancel_pod(uid: &str, running: &HashMap<String, (Pending, Cancel)>) {
    for (p, c) in running.values() {
        if p.pod_uid == uid {
            c.cancel();
        }
    }
}

async fn report_problems(env: &Env, t: &mut Tracked, problems: &[Problem]) {
    for p in problems {
        if !t.reported.insert(p.message.clone()) {
            continue;
        }
        tracing::warn!(pod = %t.info.name, namespace = %t.info.namespace, reason = p.reason, "{}", p.message);
        let r = kube::reference(&t.info.namespace, &t.info.name, &t.info.uid);
        if let Err(e) = env
            .kube
            .event(&r, None, true, p.reason, p.message.clone())
            .await
        {
            tracing::warn!("event on {}/{}: {e}", t.info.namespace, t.info.name);
        }
    }
}

/// Queues every volume whose backup is due: a new `backup-now` value, or its schedule.
fn plan_due(
    s: &Settings,
    tracked: &HashMap<String, Tracked>,
    history: &History,
    attempts: &mut Attempts,
    running: &HashMap<String, (Pending, Cancel)>,
    queue: &mut VecDeque<(String, Pending)>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let mut earliest: Option<DateTime<Utc>> = None;
    let mut pods: Vec<&Tracked> = tracked.values().collect();
    pods.sort_by(|a, b| (&a.info.namespace, &a.info.name).cmp(&(&b.info.namespace, &b.info.name)));
    for t in pods {
        if !t.info.running {
            continue;
        }
        for name in &t.plan.volumes {
            let Some(v) = t.info.volumes.iter().find(|v| &v.name == name) else {
                continue;
            };
            let key = Identity::of(&s.cluster, &t.info, v).path();
            if running.contains_key(&key) || queue.iter().any(|(k, _)| *k == key) {
                continue;
            }
            let first_seen = *attempts.first_seen.entry(key.clone()).or_insert(now);
            let h = history.get(&key);
            let trigger = t.plan.trigger.as_ref().filter(|v| {
                h.trigger.as_ref().is_none_or(|(_, done)| done != *v)
                    && attempts.triggers.get(&key) != Some(*v)
            });
            let schedule = t.plan.schedule.as_ref().unwrap_or(&s.schedule);
            let base = [h.last, attempts.last.get(&key).copied()]
                .into_iter()
                .flatten()
                .max()
                .unwrap_or(first_seen);
            let due = schedule.next_after(base);
            let scheduled = due.is_some_and(|due| due <= now);
            if let Some(due) = due.filter(|d| *d > now) {
                earliest = Some(earliest.map_or(due, |e| e.min(due)));
            }
            if trigger.is_some() || scheduled {
                queue.push_back((
                    key,
                    Pending {
                        pod_uid: t.info.uid.clone(),
                        volume: name.clone(),
                        trigger: trigger.cloned(),
                    },
                ));
            }
        }
    }
    earliest
}

fn make_job(
    s: &Settings,
    tracked: &HashMap<String, Tracked>,
    history: &History,
    key: &str,
    p: &Pending,
) -> Option<Job> {
    let t = tracked.get(&p.pod_uid)?;
    if !t.info.running {
        return None;
    }
    let volume = t.info.volumes.iter().find(|v| v.name == p.volume)?.clone();
    Some(Job {
        identity: Identity::of(&s.cluster, &t.info, &volume),
        pod: t.info.clone(),
        volume,
        plan: t.plan.clone(),
        trigger: p.trigger.clone(),
        last_files: history.get(key).files,
        cancel: Cancel::new(),
    })
}

/// Reports a finished job: an Event on its pod, the log, history.
async fn finish(
    env: &Env,
    s: &Settings,
    tracked: &HashMap<String, Tracked>,
    history: &mut History,
    key: &str,
    p: &Pending,
    outcome: Outcome,
) {
    let pod = tracked.get(&p.pod_uid).map(|t| &t.info);
    let (warning, reason, note) = match &outcome {
        Outcome::Done {
            id,
            snapshot,
            bytes_read,
            unreadable,
            seconds,
        } => {
            history.record(snapshot);
            let m = &snapshot.summary;
            let files = m.files_new + m.files_changed + m.files_unmodified;
            tracing::info!(
                volume = %key,
                snapshot = %id,
                files,
                files_new = m.files_new,
                files_changed = m.files_changed,
                bytes_read,
                bytes_added = m.data_added,
                seconds,
                "backup done"
            );
            let mut note = format!(
                "snapshot {} of volume {:?} ({key}): {files} files, {} added, in {:.1} s",
                id.short(),
                p.volume,
                cairn_engine::human_bytes(m.data_added),
                seconds
            );
            if *unreadable > 0 {
                note.push_str(&format!(
                    "; {unreadable} files could not be read (see the agent's log)"
                ));
            }
            (
                *unreadable > 0,
                if *unreadable > 0 {
                    "BackupPartial"
                } else {
                    "BackupCompleted"
                },
                note,
            )
        }
        Outcome::Skipped { reason, message }
        | Outcome::Failed {
            reason, message, ..
        } => {
            tracing::warn!(volume = %key, reason, "{message}");
            (true, *reason, message.clone())
        }
    };
    let Some(pod) = pod else { return };
    let r = kube::reference(&pod.namespace, &pod.name, &pod.uid);
    if let Err(e) = env
        .kube
        .event(&r, Some(&p.volume), warning, reason, note.clone())
        .await
    {
        tracing::warn!("event on {}/{}: {e}", pod.namespace, pod.name);
    }
    if s.annotate_pods {
        let value = serde_json::json!({ "reason": reason, "message": note, "time": Utc::now().to_rfc3339() });
        if let Err(e) = env
            .kube
            .annotate(
                &pod.namespace,
                &pod.name,
                annotations::LAST_BACKUP,
                &value.to_string(),
            )
            .await
        {
            tracing::warn!("annotating {}/{}: {e}", pod.namespace, pod.name);
        }
    }
}
