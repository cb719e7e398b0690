//! The opt-in annotations, read into one plan per pod. Cairn's own keys, and the Velero and Ark
//! keys people already have on their pods:
//!
//! | what | Cairn | also honoured |
//! |---|---|---|
//! | volumes to back up | `backup.cairn.io/volumes` | `backup.velero.io/backup-volumes`, `backup.ark.heptio.com/backup-volumes` |
//! | volumes left out (`--default-volumes`) | `backup.cairn.io/exclude-volumes` | `backup.velero.io/backup-volumes-excludes` |
//! | file patterns left out | `backup.cairn.io/exclude` | |
//! | schedule | `backup.cairn.io/schedule` | |
//! | back up now | `backup.cairn.io/backup-now` (any new value) | |
//! | hooks | `backup.cairn.io/{pre,post}-hook`, `hook-container`, `hook-timeout`, `hook-on-error` | `{pre,post}.hook.backup.velero.io/{command,container,timeout,on-error}` |
//!
//! A bad value never stops the other pods or the other volumes: it becomes a [`Problem`]
//! (a Warning Event on the pod) and the rest of the plan stands.

use std::collections::BTreeMap;
use std::time::Duration;

use super::pod::{PodInfo, Source};
use super::schedule::{Schedule, parse_duration};

/// Cairn's annotation prefix.
pub const PREFIX: &str = "backup.cairn.io/";
/// Annotations naming the volumes to back up.
pub const VOLUMES: [&str; 3] = [
    "backup.cairn.io/volumes",
    "backup.velero.io/backup-volumes",
    "backup.ark.heptio.com/backup-volumes",
];
/// Annotations naming volumes to leave out in `--default-volumes` mode.
pub const EXCLUDE_VOLUMES: [&str; 2] = [
    "backup.cairn.io/exclude-volumes",
    "backup.velero.io/backup-volumes-excludes",
];
/// File exclude patterns.
pub const EXCLUDE: &str = "backup.cairn.io/exclude";
/// Per-pod schedule.
pub const SCHEDULE: &str = "backup.cairn.io/schedule";
/// Backup now, once per new value.
pub const BACKUP_NOW: &str = "backup.cairn.io/backup-now";
/// The result of the last backup (written with `--annotate-pods`).
pub const LAST_BACKUP: &str = "backup.cairn.io/last-backup";

/// How long a hook may run by default.
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(60);

/// What the agent does for one pod.
#[derive(Clone, Debug, Default)]
pub struct PodPlan {
    /// Volumes to back up, in spec order.
    pub volumes: Vec<String>,
    /// File patterns to leave out.
    pub excludes: Vec<String>,
    /// The pod's own schedule (else the agent's).
    pub schedule: Option<Schedule>,
    /// The `backup-now` value, if any.
    pub trigger: Option<String>,
    /// Consistency hooks.
    pub hooks: Hooks,
}

/// Commands run in one of the pod's containers around its backup.
#[derive(Clone, Debug, PartialEq)]
pub struct Hooks {
    /// Before the backup.
    pub pre: Option<Vec<String>>,
    /// After it, whenever `pre` was attempted.
    pub post: Option<Vec<String>>,
    /// The container (default: `kubectl.kubernetes.io/default-container`, else the first).
    pub container: Option<String>,
    /// Per hook.
    pub timeout: Duration,
    /// A failed pre-hook does not fail the backup.
    pub continue_on_error: bool,
}

impl Default for Hooks {
    fn default() -> Self {
        Hooks {
            pre: None,
            post: None,
            container: None,
            timeout: HOOK_TIMEOUT,
            continue_on_error: false,
        }
    }
}

/// A bad or unusable annotation value, reported as a Warning Event on the pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// A short CamelCase reason (the Event's `reason`).
    pub reason: &'static str,
    /// What is wrong and what to do, naming the annotation or volume.
    pub message: String,
}

fn problem(reason: &'static str, message: String) -> Problem {
    Problem { reason, message }
}

/// Comma-separated names, trimmed, empty ones dropped.
fn list(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// Reads `pod`'s annotations. `default_volumes` is the agent's `--default-volumes`: every
/// persistent volume is backed up unless excluded.
pub fn plan(pod: &PodInfo, default_volumes: bool) -> (PodPlan, Vec<Problem>) {
    let a = &pod.annotations;
    let mut problems = Vec::new();
    let mut named: Vec<(&str, &str)> = Vec::new(); // (volume, annotation)
    for key in VOLUMES {
        for v in a.get(key).map(|s| list(s)).into_iter().flatten() {
            if !named.iter().any(|(n, _)| *n == v) {
                named.push((v, key));
            }
        }
    }
    let excluded: Vec<&str> = EXCLUDE_VOLUMES
        .iter()
        .flat_map(|k| a.get(*k).map(|s| list(s)).into_iter().flatten())
        .collect();
    for (name, key) in &named {
        let Some(v) = pod.volumes.iter().find(|v| v.name == *name) else {
            problems.push(problem(
                "UnknownVolume",
                format!(
                    "{key} names volume {name:?}, which pod {}/{} does not have (its volumes: {}); fix the annotation",
                    pod.namespace,
                    pod.name,
                    pod.volumes
                        .iter()
                        .map(|v| v.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
            continue;
        };
        let why = match &v.source {
            Source::Generated(kind) => Some((
                "VolumeNotBackedUp",
                format!(
                    "volume {name:?} is a {kind} volume, generated from the API: it is never backed up"
                ),
            )),
            Source::HostPath => Some((
                "VolumeNotBackedUp",
                format!(
                    "volume {name:?} is a hostPath volume, which lives outside the kubelet's pod directory: back the host path up with `cairn backup` on the node"
                ),
            )),
            Source::Other => Some((
                "VolumeNotBackedUp",
                format!(
                    "volume {name:?} is of a kind the agent does not back up (emptyDir, PVCs, CSI, azureDisk, azureFile, nfs and iscsi are)"
                ),
            )),
            _ if !v.mounted => Some((
                "VolumeNotMounted",
                format!(
                    "volume {name:?} is mounted by no container, so the kubelet has not set it up: nothing to back up"
                ),
            )),
            _ => None,
        };
        if let Some((reason, message)) = why {
            problems.push(problem(reason, message));
        }
    }
    let usable = |name: &str| {
        pod.volumes.iter().any(|v| {
            v.name == name
                && v.mounted
                && !matches!(
                    v.source,
                    Source::Generated(_) | Source::HostPath | Source::Other
                )
        })
    };
    let volumes = pod
        .volumes
        .iter()
        .filter(|v| {
            let named = named.iter().any(|(n, _)| *n == v.name);
            let by_default =
                default_volumes && v.source.is_persistent() && !excluded.contains(&&*v.name);
            (named || by_default) && usable(&v.name)
        })
        .map(|v| v.name.clone())
        .collect();

    let excludes = a
        .get(EXCLUDE)
        .map(|s| list(s).map(str::to_string).collect())
        .unwrap_or_default();
    let schedule = a.get(SCHEDULE).and_then(|s| match s.parse::<Schedule>() {
        Ok(s) => Some(s),
        Err(e) => {
            problems.push(problem(
                "BadSchedule",
                format!("{SCHEDULE}: {e}; the agent's schedule applies until it is fixed"),
            ));
            None
        }
    });
    let trigger = a
        .get(BACKUP_NOW)
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    let hooks = hooks(a, &mut problems);
    (
        PodPlan {
            volumes,
            excludes,
            schedule,
            trigger,
            hooks,
        },
        problems,
    )
}

/// The hook annotations: Cairn's, else Velero's.
fn hooks(a: &BTreeMap<String, String>, problems: &mut Vec<Problem>) -> Hooks {
    let mut h = Hooks::default();
    let velero = |phase: &str, what: &str| a.get(&format!("{phase}.hook.backup.velero.io/{what}"));
    let cairn = |what: &str| a.get(&format!("{PREFIX}{what}"));
    for (phase, slot) in [("pre", &mut h.pre), ("post", &mut h.post)] {
        let key = format!("{PREFIX}{phase}-hook");
        *slot = match (a.get(&key), velero(phase, "command")) {
            (Some(v), _) => command(&key, v, false, problems),
            (None, Some(v)) => command(
                &format!("{phase}.hook.backup.velero.io/command"),
                v,
                true,
                problems,
            ),
            (None, None) => None,
        };
    }
    h.container = cairn("hook-container")
        .or_else(|| velero("pre", "container"))
        .or_else(|| velero("post", "container"))
        .map(|s| s.trim().to_string());
    let timeout = cairn("hook-timeout")
        .map(|v| (format!("{PREFIX}hook-timeout"), v))
        .or_else(|| {
            velero("pre", "timeout").map(|v| ("pre.hook.backup.velero.io/timeout".into(), v))
        });
    if let Some((key, v)) = timeout {
        match parse_duration(v.trim()) {
            Ok(d) if d > Duration::ZERO => h.timeout = d,
            Ok(_) => problems.push(problem(
                "BadHookTimeout",
                format!(
                    "{key}: a timeout of 0 would fail every hook; {}s applies",
                    HOOK_TIMEOUT.as_secs()
                ),
            )),
            Err(e) => problems.push(problem(
                "BadHookTimeout",
                format!("{key}: {e}; {}s applies", HOOK_TIMEOUT.as_secs()),
            )),
        }
    }
    let on_error = cairn("hook-on-error")
        .map(|v| (format!("{PREFIX}hook-on-error"), v))
        .or_else(|| {
            velero("pre", "on-error").map(|v| ("pre.hook.backup.velero.io/on-error".into(), v))
        });
    if let Some((key, v)) = on_error {
        match v.trim().to_ascii_lowercase().as_str() {
            "continue" => h.continue_on_error = true,
            "fail" => h.continue_on_error = false,
            _ => problems.push(problem(
                "BadHookOnError",
                format!("{key}: {v:?} is neither Continue nor Fail; Fail applies"),
            )),
        }
    }
    h
}

/// A hook command: a JSON array of strings; Velero's keys also take one plain string.
fn command(
    key: &str,
    value: &str,
    plain_allowed: bool,
    problems: &mut Vec<Problem>,
) -> Option<Vec<String>> {
    let value = value.trim();
    let parsed = if value.starts_with('[') {
        serde_json::from_str::<Vec<String>>(value).map_err(|e| e.to_string())
    } else if plain_allowed && !value.is_empty() {
        Ok(vec![value.to_string()])
    } else {
        Err("expected a JSON array of strings".to_string())
    };
    match parsed {
        Ok(cmd) if !cmd.is_empty() && !cmd[0].is_empty() => Some(cmd),
        Ok(_) => {
            problems.push(problem(
                "BadHook",
                format!("{key}: the command is empty; write it as a JSON array like [\"psql\",\"-c\",\"CHECKPOINT\"]"),
            ));
            None
        }
        Err(e) => {
            problems.push(problem(
                "BadHook",
                format!("{key}: {value:?} is not a command ({e}); write it as a JSON array like [\"psql\",\"-c\",\"CHECKPOINT\"]"),
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::pod::PodVolume;

    fn pod(annotations: &[(&str, &str)]) -> PodInfo {
        let vol = |name: &str, source: Source| PodVolume {
            name: name.into(),
            source,
            mounted: true,
        };
        PodInfo {
            namespace: "db".into(),
            name: "postgresql-0".into(),
            uid: "u1".into(),
            node: "n1".into(),
            running: true,
            annotations: annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            volumes: vec![
                vol("data", Source::Claim("data-postgresql-0".into())),
                vol("logs", Source::EmptyDir),
                vol("scratch", Source::Ephemeral("postgresql-0-scratch".into())),
                vol("config", Source::Generated("configMap")),
                vol("kube-api-access-x", Source::Generated("projected")),
                vol("host", Source::HostPath),
                PodVolume {
                    name: "spare".into(),
                    source: Source::Claim("spare".into()),
                    mounted: false,
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn every_spelling_of_the_volume_list_opts_volumes_in() {
        for key in VOLUMES {
            let (plan, problems) = plan(&pod(&[(key, " data , logs,")]), false);
            assert_eq!(plan.volumes, ["data", "logs"], "{key}");
            assert!(problems.is_empty(), "{key}: {problems:?}");
        }
        // Spellings add up, without duplicates.
        let (p, _) = plan(
            &pod(&[
                ("backup.cairn.io/volumes", "logs"),
                ("backup.velero.io/backup-volumes", "data,logs"),
            ]),
            false,
        );
        assert_eq!(p.volumes, ["data", "logs"]);
    }

    #[test]
    fn no_annotation_backs_up_nothing_unless_default_volumes() {
        let (p, problems) = plan(&pod(&[]), false);
        assert!(p.volumes.is_empty() && problems.is_empty());
        // Opt-out: persistent, mounted volumes; generated and hostPath ones silently not.
        let (p, problems) = plan(&pod(&[]), true);
        assert_eq!(p.volumes, ["data", "scratch"]);
        assert!(problems.is_empty(), "{problems:?}");
        for key in EXCLUDE_VOLUMES {
            let (p, _) = plan(&pod(&[(key, "scratch")]), true);
            assert_eq!(p.volumes, ["data"], "{key}");
        }
        // A named emptyDir is added to the defaults.
        let (p, _) = plan(&pod(&[("backup.cairn.io/volumes", "logs")]), true);
        assert_eq!(p.volumes, ["data", "logs", "scratch"]);
    }

    #[test]
    fn named_volumes_that_cannot_be_backed_up_get_a_problem_each() {
        let (p, problems) = plan(
            &pod(&[("backup.cairn.io/volumes", "data,nope,config,host,spare")]),
            false,
        );
        assert_eq!(p.volumes, ["data"]);
        let reasons: Vec<_> = problems.iter().map(|p| p.reason).collect();
        assert_eq!(
            reasons,
            [
                "UnknownVolume",
                "VolumeNotBackedUp",
                "VolumeNotBackedUp",
                "VolumeNotMounted"
            ]
        );
        assert!(problems[0].message.contains("\"nope\""), "{problems:?}");
        assert!(problems[1].message.contains("configMap"));
        assert!(problems[2].message.contains("hostPath"));
    }

    #[test]
    fn schedule_trigger_and_excludes() {
        let (p, problems) = plan(
            &pod(&[
                ("backup.cairn.io/volumes", "data"),
                ("backup.cairn.io/schedule", "@every 30s"),
                ("backup.cairn.io/backup-now", " 1700000000 "),
                ("backup.cairn.io/exclude", "*.tmp, cache/"),
            ]),
            false,
        );
        assert!(problems.is_empty());
        assert!(matches!(p.schedule, Some(Schedule::Every(d)) if d == Duration::from_secs(30)));
        assert_eq!(p.trigger.as_deref(), Some("1700000000"));
        assert_eq!(p.excludes, ["*.tmp", "cache/"]);

        let (p, problems) = plan(
            &pod(&[
                ("backup.cairn.io/volumes", "data"),
                ("backup.cairn.io/schedule", "every day"),
            ]),
            false,
        );
        assert!(p.schedule.is_none());
        assert_eq!(p.volumes, ["data"], "a bad schedule keeps the volumes");
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].reason, "BadSchedule");
        assert!(problems[0].message.contains("every day"));
    }

    #[test]
    fn hooks_in_both_spellings() {
        let (p, problems) = plan(
            &pod(&[
                (
                    "backup.cairn.io/pre-hook",
                    r#"["psql","-U","postgres","-c","CHECKPOINT"]"#,
                ),
                ("backup.cairn.io/post-hook", r#"["true"]"#),
                ("backup.cairn.io/hook-container", "db"),
                ("backup.cairn.io/hook-timeout", "2m"),
                ("backup.cairn.io/hook-on-error", "Continue"),
            ]),
            false,
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(p.hooks.pre.as_ref().unwrap()[4], "CHECKPOINT");
        assert_eq!(p.hooks.post.as_deref(), Some(&["true".to_string()][..]));
        assert_eq!(p.hooks.container.as_deref(), Some("db"));
        assert_eq!(p.hooks.timeout, Duration::from_secs(120));
        assert!(p.hooks.continue_on_error);

        let (p, problems) = plan(
            &pod(&[
                ("pre.hook.backup.velero.io/command", "/sbin/fsfreeze-hook"),
                ("pre.hook.backup.velero.io/container", "app"),
                ("pre.hook.backup.velero.io/timeout", "30s"),
                (
                    "post.hook.backup.velero.io/command",
                    r#"["/bin/sh","-c","echo done"]"#,
                ),
            ]),
            false,
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            p.hooks.pre.as_deref(),
            Some(&["/sbin/fsfreeze-hook".to_string()][..])
        );
        assert_eq!(p.hooks.post.as_ref().unwrap().len(), 3);
        assert_eq!(p.hooks.container.as_deref(), Some("app"));
        assert_eq!(p.hooks.timeout, Duration::from_secs(30));
        assert!(!p.hooks.continue_on_error);
    }

    #[test]
    fn bad_hook_values_are_problems_not_crashes() {
        let (p, problems) = plan(
            &pod(&[
                ("backup.cairn.io/pre-hook", "psql -c CHECKPOINT"),
                ("backup.cairn.io/post-hook", "[]"),
                ("backup.cairn.io/hook-timeout", "soon"),
                ("backup.cairn.io/hook-on-error", "Ignore"),
            ]),
            false,
        );
        assert_eq!(p.hooks, Hooks::default());
        let reasons: Vec<_> = problems.iter().map(|p| p.reason).collect();
        assert_eq!(
            reasons,
            ["BadHook", "BadHook", "BadHookTimeout", "BadHookOnError"]
        );
        assert!(problems[0].message.contains("backup.cairn.io/pre-hook"));
    }
}
