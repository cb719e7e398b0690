//! `cairn agent` as a real process against the fake API server (`cairn_e2e::fakekube`) and a
//! kubelet directory tree laid out as the kubelet lays it out (a CSI volume is a real bind
//! mount when the tests run as root, as CI does). What a cluster operator relies on:
//! annotated volumes of this node's pods are backed up under their identity, and nothing
//! else; bad annotations get Warning Events; a dropped or compacted watch loses no pod and
//! backs up none twice; a rescheduled pod backs up incrementally; hooks run around the backup;
//! SIGTERM stops cleanly.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cairn_e2e::azurite::Azurite;
use cairn_e2e::fakekube::{ExecCall, FakeKube};
use cairn_e2e::*;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(120);

/// A fake cluster: API server, kubelet root, repository.
struct Cluster {
    fake: FakeKube,
    base: tempfile::TempDir,
    root: PathBuf,
    repo: Repo,
    mounts: Vec<PathBuf>,
}

impl Cluster {
    fn new() -> Cluster {
        let base = tempdir();
        let root = base.path().join("kubelet");
        std::fs::create_dir_all(root.join("pods")).unwrap();
        let repo = Repo::init(&base.path().join("repo"), &[]);
        Cluster {
            fake: FakeKube::start(),
            base,
            root,
            repo,
            mounts: Vec::new(),
        }
    }

    /// `cairn agent` for `node`, with `extra` flags, on the local repository.
    fn agent(&self, node: &str, extra: &[&str]) -> Agent {
        let repo = self.repo.path.to_str().unwrap().to_string();
        self.agent_on(node, extra, &repo, &[])
    }

    /// `cairn agent` for `node` on repository `location`, with `env` added.
    fn agent_on(
        &self,
        node: &str,
        extra: &[&str],
        location: &str,
        env: &[(String, String)],
    ) -> Agent {
        let log = self.base.path().join(format!("agent-{node}.log"));
        let mut cmd = Command::new(cairn_bin());
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        cmd.args(["agent", "--node-name", node, "--cluster", "c1"]);
        if !extra.contains(&"--kubelet-root") {
            cmd.arg("--kubelet-root").arg(&self.root);
        }
        let child = cmd
            .args(["--schedule", "@every 1h", "--max-concurrent", "1"])
            .args(extra)
            .arg("-r")
            .arg(location)
            .env_remove("CAIRN_PASSWORD_FILE")
            .env("CAIRN_PASSWORD", &self.repo.password)
            .env("KUBECONFIG", self.fake.kubeconfig(self.base.path()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start cairn agent");
        Agent {
            child: Some(child),
            log,
        }
    }

    /// A volume directory of pod `uid`: `plugin/dir` under its `volumes/`.
    fn volume_dir(&self, uid: &str, rel: &str) -> PathBuf {
        let p = self.root.join("pods").join(uid).join("volumes").join(rel);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    /// A CSI volume of pod `uid` for PV `pv`, whose `mount/` is `disk` bind-mounted (as
    /// root); returns the `mount/` path.
    fn csi_volume(&mut self, uid: &str, pv: &str, disk: &Path) -> PathBuf {
        let dir = self.volume_dir(uid, &format!("kubernetes.io~csi/{pv}"));
        std::fs::write(
            dir.join("vol_data.json"),
            json!({"specVolID": pv, "driverName": "disk.csi.azure.com", "volumeLifecycleMode": "Persistent"}).to_string(),
        )
        .unwrap();
        let mount = dir.join("mount");
        std::fs::create_dir_all(&mount).unwrap();
        if is_root() {
            let ok = Command::new("mount")
                .arg("--bind")
                .arg(disk)
                .arg(&mount)
                .status()
                .unwrap()
                .success();
            assert!(ok, "bind mount {}", mount.display());
            self.mounts.push(mount.clone());
        }
        mount
    }

    fn unmount(&mut self, mount: &Path) {
        if self.mounts.iter().any(|m| m == mount) {
            let _ = Command::new("umount").arg(mount).status();
            self.mounts.retain(|m| m != mount);
        }
    }

    /// Snapshots whose path is `path`, oldest first.
    fn snapshots_of(&self, path: &str) -> Vec<Value> {
        self.repo
            .snapshots()
            .into_iter()
            .filter(|s| s["paths"][0] == path)
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in self.mounts.iter().rev() {
            let _ = Command::new("umount").arg(m).status();
        }
    }
}

/// The agent process; SIGTERMed and reaped on drop.
struct Agent {
    child: Option<Child>,
    log: PathBuf,
}

impl Agent {
    /// Sends SIGTERM and waits for the exit code.
    fn stop(&mut self) -> i32 {
        let mut child = self.child.take().expect("running");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let status = child.wait().expect("wait");
        use std::os::unix::process::ExitStatusExt;
        status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
        if std::thread::panicking() {
            eprintln!("--- agent log\n{}", self.log());
        }
    }
}

/// A running pod with `volumes` (JSON volume sources) mounted by its one container.
fn pod(
    ns: &str,
    name: &str,
    node: &str,
    uid: &str,
    annotations: &[(&str, &str)],
    volumes: Value,
    owner: Option<(&str, &str)>,
) -> Pod {
    let mounts: Vec<Value> = volumes
        .as_array()
        .unwrap()
        .iter()
        .map(|v| json!({ "name": v["name"], "mountPath": format!("/{}", v["name"].as_str().unwrap()) }))
        .collect();
    let annotations: serde_json::Map<String, Value> = annotations
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let owners = match owner {
        Some((kind, n)) => {
            json!([{ "apiVersion": "apps/v1", "kind": kind, "name": n, "uid": "owner-uid", "controller": true }])
        }
        None => json!([]),
    };
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "namespace": ns, "name": name, "uid": uid, "annotations": annotations, "ownerReferences": owners },
        "spec": {
            "nodeName": node,
            "containers": [{ "name": "app", "image": "app", "volumeMounts": mounts }],
            "volumes": volumes
        },
        "status": { "phase": "Running" }
    }))
    .expect("pod json")
}

fn pvc(ns: &str, name: &str, pv: &str) -> PersistentVolumeClaim {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": { "namespace": ns, "name": name },
        "spec": { "volumeName": pv, "accessModes": ["ReadWriteOnce"] },
        "status": { "phase": "Bound" }
    }))
    .expect("pvc json")
}

fn is_event(e: &Value, pod: &str, reason: &str) -> bool {
    e["regarding"]["name"] == pod && e["reason"] == reason
}

fn count(events: &[Value], pod: &str, reason: &str) -> usize {
    events.iter().filter(|e| is_event(e, pod, reason)).count()
}

fn write_files(dir: &Path, n: u64, seed: u64) {
    for i in 0..n {
        let path = dir.join(format!("d{}/f{i}", i % 3));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        write_random_file(&path, 20_000, seed + i);
    }
}

#[test]
fn the_agent_backs_up_annotated_volumes_of_its_node_under_their_identity() {
    let mut c = Cluster::new();
    // pg-0: a StatefulSet pod with a PVC on a CSI disk and an emptyDir, both annotated.
    let disk = c.base.path().join("disk-1");
    write_files(&disk, 12, 1);
    let mount = c.csi_volume("uid-a", "pv-data", &disk);
    let cache = c.volume_dir("uid-a", "kubernetes.io~empty-dir/cache");
    write_files(&cache, 5, 100);
    c.fake.put_pvc(pvc("db", "data-pg-0", "pv-data"));
    let volumes = json!([
        { "name": "data", "persistentVolumeClaim": { "claimName": "data-pg-0" } },
        { "name": "cache", "emptyDir": {} },
        { "name": "kube-api-access-x", "projected": { "sources": [] } }
    ]);
    c.fake.put_pod(pod(
        "db",
        "pg-0",
        "node-1",
        "uid-a",
        &[
            ("backup.velero.io/backup-volumes", "data,cache"),
            ("backup.cairn.io/backup-now", "1"),
        ],
        volumes.clone(),
        Some(("StatefulSet", "pg")),
    ));
    // A pod on another node, annotated the same way: never this agent's business.
    c.fake.put_pod(pod(
        "db",
        "pg-1",
        "node-2",
        "uid-b",
        &[
            ("backup.cairn.io/volumes", "cache"),
            ("backup.cairn.io/backup-now", "1"),
        ],
        volumes.clone(),
        Some(("StatefulSet", "pg")),
    ));
    // Bad annotations get Warning Events and stop nothing else.
    c.fake.put_pod(pod(
        "web",
        "typo",
        "node-1",
        "uid-t",
        &[
            ("backup.cairn.io/volumes", "nope"),
            ("backup.cairn.io/schedule", "every day"),
        ],
        json!([{ "name": "cache", "emptyDir": {} }]),
        None,
    ));

    // A second pod on this node, so that --max-concurrent 1 has two pods to keep apart.
    let redis = c.volume_dir("uid-r", "kubernetes.io~empty-dir/data");
    write_files(&redis, 4, 300);
    c.fake.put_pod(pod(
        "db",
        "redis-0",
        "node-1",
        "uid-r",
        &[
            ("backup.cairn.io/volumes", "data"),
            ("backup.cairn.io/backup-now", "1"),
        ],
        json!([{ "name": "data", "emptyDir": {} }]),
        Some(("StatefulSet", "redis")),
    ));

    let agent = c.agent("node-1", &[]);
    let data_done = if is_root() { 2 } else { 1 };
    c.fake.wait_events(WAIT, "pg-0's backups", |ev| {
        count(ev, "pg-0", "BackupCompleted") == data_done
            && count(ev, "redis-0", "BackupCompleted") == 1
            && count(ev, "typo", "UnknownVolume") == 1
            && count(ev, "typo", "BadSchedule") == 1
    });
    let events = c.fake.events();
    assert!(
        events.iter().all(|e| e["regarding"]["name"] != "pg-1"),
        "the agent touched another node's pod: {events:?}"
    );
    assert!(
        c.fake
            .requests()
            .iter()
            .any(|r| r.starts_with("GET /api/v1/pods")
                && r.contains("fieldSelector=spec.nodeName%3Dnode-1")),
        "the node filter is the API server's field selector: {:?}",
        c.fake.requests()
    );
    let unknown = events
        .iter()
        .find(|e| is_event(e, "typo", "UnknownVolume"))
        .unwrap();
    assert_eq!(unknown["type"], "Warning");
    assert!(
        unknown["note"].as_str().unwrap().contains("\"nope\""),
        "{unknown}"
    );

    // The emptyDir goes by workload: a StatefulSet's emptyDir by pod name.
    let cache_snaps = c.snapshots_of("/db/pg-0/cache");
    assert_eq!(cache_snaps.len(), 1, "{:?}", c.repo.snapshots());
    let s = &cache_snaps[0];
    assert_eq!(s["hostname"], "c1");
    assert_eq!(s["labels"]["namespace"], "db");
    assert_eq!(s["labels"]["workload"], "pg-0");
    assert_eq!(s["labels"]["node"], "node-1");
    assert_eq!(s["labels"]["trigger"], "1");
    if is_root() {
        let data = c.snapshots_of("/db/data-pg-0");
        assert_eq!(data.len(), 1);
        assert_eq!(data[0]["labels"]["pvc"], "data-pg-0");
        assert_eq!(data[0]["labels"]["pod"], "pg-0");
        // --max-concurrent 1: no two backups, of one pod or of two, overlapped.
        let span = |s: &Value| {
            let t = |k: &str| {
                chrono::DateTime::parse_from_rfc3339(s["summary"][k].as_str().unwrap()).unwrap()
            };
            (t("backup_start"), t("backup_end"))
        };
        let redis = c.snapshots_of("/db/redis-0/data");
        let spans = [span(&data[0]), span(&cache_snaps[0]), span(&redis[0])];
        for (i, a) in spans.iter().enumerate() {
            for b in &spans[i + 1..] {
                assert!(a.1 <= b.0 || b.1 <= a.0, "backups overlapped: {a:?} {b:?}");
            }
        }
        let target = c.base.path().join("restored");
        c.repo
            .restore(data[0]["id"].as_str().unwrap(), &target, &[])
            .success();
        assert_eq!(read_tree_files(&disk), read_tree_files(&target));
    } else {
        // Without root there is no bind mount: the unmounted CSI directory is never
        // backed up as an empty volume.
        assert_eq!(count(&events, "pg-0", "VolumeNotFound"), 1, "{events:?}");
        assert!(c.snapshots_of("/db/data-pg-0").is_empty());
    }

    // The pod is rescheduled: a new UID on the same node, the disk mounted under the new
    // pod's directory. Its next backup reads no unchanged file.
    drop(agent);
    if !is_root() {
        return;
    }
    c.unmount(&mount);
    c.fake.delete_pod("db", "pg-0");
    c.csi_volume("uid-c", "pv-data", &disk);
    c.volume_dir("uid-c", "kubernetes.io~empty-dir/cache");
    c.fake.put_pod(pod(
        "db",
        "pg-0",
        "node-1",
        "uid-c",
        &[
            ("backup.cairn.io/volumes", "data"),
            ("backup.cairn.io/backup-now", "2"),
        ],
        volumes,
        Some(("StatefulSet", "pg")),
    ));
    let _agent = c.agent("node-1", &[]);
    c.fake
        .wait_events(WAIT, "the rescheduled pod's backup", |ev| {
            count(ev, "pg-0", "BackupCompleted") == data_done + 1
        });
    let data = c.snapshots_of("/db/data-pg-0");
    assert_eq!(data.len(), 2);
    let second = &data[1];
    assert_eq!(second["labels"]["trigger"], "2");
    assert_eq!(second["summary"]["files_new"], 0, "{second}");
    assert_eq!(second["summary"]["files_changed"], 0, "{second}");
    assert_eq!(second["summary"]["files_unmodified"], 12, "{second}");
    assert_eq!(second["parent"], data[0]["id"]);
}

#[test]
fn a_dropped_or_compacted_watch_misses_no_pod_and_repeats_no_backup() {
    let c = Cluster::new();
    let first = c.volume_dir("uid-1", "kubernetes.io~empty-dir/data");
    write_files(&first, 3, 1);
    let annotated = |uid: &str, name: &str| {
        pod(
            "ns",
            name,
            "node-1",
            uid,
            &[
                ("backup.cairn.io/volumes", "data"),
                ("backup.cairn.io/backup-now", "once"),
            ],
            json!([{ "name": "data", "emptyDir": {} }]),
            None,
        )
    };
    c.fake.put_pod(annotated("uid-1", "first"));
    let agent = c.agent("node-1", &[]);
    c.fake.wait_events(WAIT, "the first pod's backup", |ev| {
        count(ev, "first", "BackupCompleted") == 1
    });

    // The watch breaks, history is compacted (the reconnect gets 410 Gone), and a pod is
    // added meanwhile: the agent lists again and finds it.
    c.fake.compact();
    c.fake.break_watches();
    let second = c.volume_dir("uid-2", "kubernetes.io~empty-dir/data");
    write_files(&second, 3, 50);
    c.fake.put_pod(annotated("uid-2", "second"));
    c.fake
        .wait_events(WAIT, "the pod added while the watch was down", |ev| {
            count(ev, "second", "BackupCompleted") == 1
        });
    // Once more, without compaction: a plain reconnect.
    c.fake.break_watches();
    let third = c.volume_dir("uid-3", "kubernetes.io~empty-dir/data");
    write_files(&third, 3, 90);
    c.fake.put_pod(annotated("uid-3", "third"));
    c.fake.wait_events(WAIT, "the third pod's backup", |ev| {
        count(ev, "third", "BackupCompleted") == 1
    });
    let requests = c.fake.requests();
    let lists = requests
        .iter()
        .filter(|r| r.starts_with("GET /api/v1/pods") && !r.contains("watch=true"))
        .count();
    assert!(
        lists >= 2,
        "the 410 made the agent list again: {requests:?}"
    );
    drop(agent);
    // Each pod's trigger ran once, relists notwithstanding.
    for w in ["first", "second", "third"] {
        assert_eq!(
            c.snapshots_of(&format!("/ns/{w}/data")).len(),
            1,
            "{w}: {:?}",
            c.repo.snapshots()
        );
    }
    // A restarted agent does not run a trigger it already handled. It plans pods in name
    // order with one backup at a time, so had it run "first" again, that backup would end
    // before "fourth"'s.
    let mut again = c.agent("node-1", &[]);
    let fourth = c.volume_dir("uid-4", "kubernetes.io~empty-dir/data");
    write_files(&fourth, 3, 130);
    c.fake.put_pod(annotated("uid-4", "fourth"));
    c.fake
        .wait_events(WAIT, "the restarted agent's backup of a new pod", |ev| {
            count(ev, "fourth", "BackupCompleted") == 1
        });
    assert_eq!(again.stop(), 143);
    assert_eq!(c.snapshots_of("/ns/first/data").len(), 1);
    assert_eq!(count(&c.fake.events(), "first", "BackupCompleted"), 1);
}

#[test]
fn hooks_run_around_the_backup_and_a_failing_pre_hook_writes_no_snapshot() {
    let c = Cluster::new();
    let good = c.volume_dir("uid-g", "kubernetes.io~empty-dir/data");
    write_files(&good, 2, 1);
    let bad = c.volume_dir("uid-f", "kubernetes.io~empty-dir/data");
    write_files(&bad, 2, 7);
    let marker = good.join("checkpoint.txt");
    let hung = c.volume_dir("uid-h", "kubernetes.io~empty-dir/data");
    write_files(&hung, 2, 11);
    // A hook that hangs until the test ends (the sender is dropped first).
    let (release, hang) = std::sync::mpsc::channel::<()>();
    let hang = std::sync::Mutex::new(hang);
    {
        let marker = marker.clone();
        c.fake.on_exec(
            move |call: &ExecCall| match call.command.first().map(String::as_str) {
                Some("hang") => {
                    let _ = hang.lock().unwrap().recv_timeout(WAIT);
                    (0, String::new())
                }
                // The pre-hook writes into the volume, as a database checkpoint would.
                Some("checkpoint") => {
                    std::fs::write(&marker, b"consistent").unwrap();
                    (0, String::new())
                }
                Some("fail") => (3, "cannot freeze".into()),
                _ => (0, String::new()),
            },
        );
    }
    let hooks = |pre: &'static str| {
        vec![
            ("backup.cairn.io/volumes", "data"),
            ("backup.cairn.io/backup-now", "1"),
            ("backup.cairn.io/pre-hook", pre),
            ("backup.cairn.io/post-hook", r#"["thaw"]"#),
        ]
    };
    c.fake.put_pod(pod(
        "ns",
        "good",
        "node-1",
        "uid-g",
        &hooks(r#"["checkpoint","--fast"]"#),
        json!([{ "name": "data", "emptyDir": {} }]),
        None,
    ));
    c.fake.put_pod(pod(
        "ns",
        "failing",
        "node-1",
        "uid-f",
        &hooks(r#"["fail"]"#),
        json!([{ "name": "data", "emptyDir": {} }]),
        None,
    ));
    // Velero's spellings, with a timeout the hook overruns.
    c.fake.put_pod(pod(
        "ns",
        "hung",
        "node-1",
        "uid-h",
        &[
            ("backup.velero.io/backup-volumes", "data"),
            ("backup.cairn.io/backup-now", "1"),
            ("pre.hook.backup.velero.io/command", r#"["hang"]"#),
            ("pre.hook.backup.velero.io/timeout", "1s"),
            ("pre.hook.backup.velero.io/container", "app"),
            ("post.hook.backup.velero.io/command", "thaw"),
        ],
        json!([{ "name": "data", "emptyDir": {} }]),
        None,
    ));
    let _agent = c.agent("node-1", &[]);
    c.fake.wait_events(WAIT, "the three pods' outcomes", |ev| {
        count(ev, "good", "BackupCompleted") == 1
            && count(ev, "failing", "PreHookFailed") == 1
            && count(ev, "hung", "PreHookFailed") == 1
    });
    let timed_out = c
        .fake
        .events()
        .into_iter()
        .find(|e| is_event(e, "hung", "PreHookFailed"))
        .unwrap();
    assert!(
        timed_out["note"]
            .as_str()
            .unwrap()
            .contains("did not finish within 1s"),
        "{timed_out}"
    );
    assert!(c.snapshots_of("/ns/hung/data").is_empty());
    let events = c.fake.events();
    let failed = events
        .iter()
        .find(|e| is_event(e, "failing", "PreHookFailed"))
        .unwrap();
    assert_eq!(failed["type"], "Warning");
    assert!(
        failed["note"].as_str().unwrap().contains("cannot freeze"),
        "{failed}"
    );
    assert!(
        failed["note"].as_str().unwrap().contains("exit code 3"),
        "{failed}"
    );

    // The good pod's snapshot holds what the pre-hook wrote.
    let snaps = c.snapshots_of("/ns/good/data");
    assert_eq!(snaps.len(), 1);
    let names: Vec<String> = c
        .repo
        .ls(snaps[0]["id"].as_str().unwrap(), None)
        .iter()
        .map(|n| n["path"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        names.iter().any(|n| n.ends_with("checkpoint.txt")),
        "{names:?}"
    );
    // No snapshot for the failing pod, and its post-hook still ran.
    assert!(c.snapshots_of("/ns/failing/data").is_empty());
    let execs = c.fake.execs();
    for p in ["good", "failing", "hung"] {
        let cmds: Vec<&str> = execs
            .iter()
            .filter(|e| e.pod == p)
            .map(|e| e.command[0].as_str())
            .collect();
        assert_eq!(cmds.last(), Some(&"thaw"), "{p}: {cmds:?}");
        assert!(
            execs
                .iter()
                .filter(|e| e.pod == p)
                .all(|e| e.container == "app")
        );
    }
    drop(release);
}

#[test]
fn sigterm_mid_backup_cancels_it_runs_the_post_hook_and_leaves_a_valid_repository() {
    let c = Cluster::new();
    let data = c.volume_dir("uid-s", "kubernetes.io~empty-dir/data");
    for i in 0..4 {
        write_random_file(&data.join(format!("big{i}")), 64 << 20, 10 + i);
    }
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let tx = std::sync::Mutex::new(tx);
    c.fake.on_exec(move |call: &ExecCall| {
        if call.command[0] == "pre" {
            let _ = tx.lock().unwrap().send(());
        }
        (0, String::new())
    });
    c.fake.put_pod(pod(
        "ns",
        "big",
        "node-1",
        "uid-s",
        &[
            ("backup.cairn.io/volumes", "data"),
            ("backup.cairn.io/backup-now", "1"),
            ("backup.cairn.io/pre-hook", r#"["pre"]"#),
            ("backup.cairn.io/post-hook", r#"["post"]"#),
        ],
        json!([{ "name": "data", "emptyDir": {} }]),
        None,
    ));
    let mut agent = c.agent("node-1", &[]);
    rx.recv_timeout(WAIT).expect("the pre-hook ran");
    let code = agent.stop();
    assert_eq!(code, 143, "{}", agent.log());
    let log = agent.log();
    assert!(log.contains("stopping"), "{log}");
    // The post-hook ran although the backup was cancelled.
    assert!(
        c.fake.execs().iter().any(|e| e.command[0] == "post"),
        "{:?}",
        c.fake.execs()
    );
    // Valid repository, no lock left, no snapshot from the cancelled run.
    let check = c.repo.run(&["check"]);
    check.success();
    assert!(
        std::fs::read_dir(c.repo.path.join("locks"))
            .unwrap()
            .next()
            .is_none()
    );
    assert!(c.snapshots_of("/ns/big/data").is_empty());
    assert!(log.contains("BackupCancelled"), "{log}");

    // The next agent runs the trigger the cancelled one did not finish.
    let _again = c.agent("node-1", &[]);
    c.fake.wait_events(WAIT, "the retried backup", |ev| {
        count(ev, "big", "BackupCompleted") == 1
    });
    assert_eq!(c.snapshots_of("/ns/big/data").len(), 1);
}

/// `GET http://addr/path`: the status code and body.
fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the metrics address");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status code");
    (code, body.to_string())
}

#[test]
fn metrics_and_health_endpoints_serve_what_prometheus_reads() {
    let c = Cluster::new();
    let data = c.volume_dir("uid-m", "kubernetes.io~empty-dir/data");
    write_files(&data, 4, 3);
    c.fake.put_pod(pod(
        "shop",
        "web-0",
        "node-1",
        "uid-m",
        &[
            ("backup.cairn.io/volumes", "data"),
            ("backup.cairn.io/backup-now", "1"),
        ],
        json!([{ "name": "data", "emptyDir": {} }]),
        Some(("StatefulSet", "web")),
    ));
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let _agent = c.agent("node-1", &["--metrics-listen", &addr]);
    c.fake.wait_events(WAIT, "the backup", |ev| {
        count(ev, "web-0", "BackupCompleted") == 1
    });
    assert_eq!(http_get(&addr, "/healthz").0, 200);
    assert_eq!(http_get(&addr, "/readyz").0, 200);
    let (code, text) = http_get(&addr, "/metrics");
    assert_eq!(code, 200);
    assert!(
        text.contains(
            "cairn_backups_total{namespace=\"shop\",pvc=\"web-0/data\",result=\"success\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains("cairn_backup_last_success_timestamp_seconds{namespace=\"shop\""),
        "{text}"
    );
    assert!(
        text.contains("cairn_backup_files{namespace=\"shop\",pvc=\"web-0/data\"} 4"),
        "{text}"
    );
    // Prometheus's own linter reads it (Debian's prometheus package; scripts/test-services.sh
    // installs it).
    let mut lint = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is missing: run scripts/test-services.sh (it installs Debian's prometheus package)");
    use std::io::Write;
    lint.stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = lint.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_wrong_kubelet_root_keeps_the_agent_unready_and_says_why() {
    let c = Cluster::new();
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let wrong = c.base.path().join("no-kubelet-here");
    let mut agent = c.agent(
        "node-1",
        &[
            "--metrics-listen",
            &addr,
            "--kubelet-root",
            wrong.to_str().unwrap(),
        ],
    );
    // The agent logs its start once it has read the repository, then serves.
    c.fake.put_pod(pod(
        "ns",
        "p",
        "node-1",
        "uid-p",
        &[("backup.cairn.io/volumes", "nope")],
        json!([]),
        None,
    ));
    c.fake
        .wait_events(WAIT, "the agent's first event", |ev| !ev.is_empty());
    let (code, body) = http_get(&addr, "/readyz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("no pods/ directory"), "{body}");
    assert!(body.contains("--kubelet-root"), "{body}");
    assert_eq!(http_get(&addr, "/healthz").0, 200);
    agent.stop();
    assert!(
        agent.log().contains("no pods/ directory"),
        "{}",
        agent.log()
    );
}

#[test]
fn pending_pods_wait_block_volumes_are_refused_and_excludes_apply() {
    let c = Cluster::new();
    // A pod that is not running yet: nothing happens until it runs.
    let pending_dir = c.volume_dir("uid-p", "kubernetes.io~empty-dir/data");
    write_files(&pending_dir, 2, 1);
    let mut pending = pod(
        "ns",
        "pending",
        "node-1",
        "uid-p",
        &[
            ("backup.cairn.io/volumes", "data"),
            ("backup.cairn.io/backup-now", "1"),
        ],
        json!([{ "name": "data", "emptyDir": {} }]),
        None,
    );
    pending.status.as_mut().unwrap().phase = Some("Pending".into());
    c.fake.put_pod(pending.clone());
    // A block-mode PVC: refused with why.
    std::fs::create_dir_all(
        c.root
            .join("pods/uid-b/volumeDevices/kubernetes.io~csi/pv-raw"),
    )
    .unwrap();
    let mut raw = pvc("ns", "raw", "pv-raw");
    raw.spec.as_mut().unwrap().volume_mode = Some("Block".into());
    c.fake.put_pvc(raw);
    c.fake.put_pod(pod(
        "ns",
        "blocky",
        "node-1",
        "uid-b",
        &[
            ("backup.cairn.io/volumes", "raw"),
            ("backup.cairn.io/backup-now", "1"),
        ],
        json!([{ "name": "raw", "persistentVolumeClaim": { "claimName": "raw" } }]),
        None,
    ));
    // File excludes from the pod's annotation; the result recorded on the pod.
    let excl = c.volume_dir("uid-e", "kubernetes.io~empty-dir/data");
    write_file(&excl.join("keep.txt"), b"keep");
    write_file(&excl.join("scratch.tmp"), b"no");
    write_file(&excl.join("cache/blob"), b"no");
    c.fake.put_pod(pod(
        "ns",
        "excl",
        "node-1",
        "uid-e",
        &[
            ("backup.cairn.io/volumes", "data"),
            ("backup.cairn.io/backup-now", "1"),
            ("backup.cairn.io/exclude", "*.tmp, cache/"),
        ],
        json!([{ "name": "data", "emptyDir": {} }]),
        None,
    ));
    let _agent = c.agent("node-1", &["--annotate-pods"]);
    c.fake.wait_events(
        WAIT,
        "the block volume's refusal and the excludes' backup",
        |ev| {
            count(ev, "blocky", "VolumeNotBackedUp") == 1
                && count(ev, "excl", "BackupCompleted") == 1
        },
    );
    let events = c.fake.events();
    let refused = events
        .iter()
        .find(|e| is_event(e, "blocky", "VolumeNotBackedUp"))
        .unwrap();
    assert!(
        refused["note"].as_str().unwrap().contains("block device"),
        "{refused}"
    );
    assert_eq!(count(&events, "pending", "BackupCompleted"), 0);
    assert!(c.snapshots_of("/ns/pending/data").is_empty());

    let snap = &c.snapshots_of("/ns/excl/data")[0];
    let names: Vec<String> = c
        .repo
        .ls(snap["id"].as_str().unwrap(), None)
        .iter()
        .map(|n| n["path"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(names.iter().any(|n| n.ends_with("keep.txt")), "{names:?}");
    assert!(
        !names
            .iter()
            .any(|n| n.contains("scratch.tmp") || n.contains("cache")),
        "{names:?}"
    );
    let annotated = c.fake.pod("ns", "excl").unwrap();
    let last = &annotated.metadata.annotations.as_ref().unwrap()["backup.cairn.io/last-backup"];
    assert!(last.contains("BackupCompleted"), "{last}");

    // Once it runs, the pending pod's backup goes ahead.
    pending.status.as_mut().unwrap().phase = Some("Running".into());
    c.fake.put_pod(pending);
    c.fake
        .wait_events(WAIT, "the pod that started running", |ev| {
            count(ev, "pending", "BackupCompleted") == 1
        });
}

/// One process builds the Kubernetes client and the Azure backend (one rustls crypto
/// provider for kube, object_store and reqwest) and backs up into Azure Blob.
#[test]
fn the_agent_backs_up_into_azure_blob() {
    let az = Azurite::start();
    let c = Cluster::new();
    let url = "azure://agent-backups/cluster-a";
    let mut init = vec!["-r", url, "init"];
    init.extend(FAST_KDF);
    run_cairn_with_env(&init, Some(PASSWORD), RunAs::Me, &az.env()).success();
    let data = c.volume_dir("uid-z", "kubernetes.io~empty-dir/data");
    write_files(&data, 6, 40);
    c.fake.put_pod(pod(
        "shop",
        "cart-0",
        "node-1",
        "uid-z",
        &[
            ("backup.cairn.io/volumes", "data"),
            ("backup.cairn.io/backup-now", "1"),
        ],
        json!([{ "name": "data", "emptyDir": {} }]),
        Some(("StatefulSet", "cart")),
    ));
    let _agent = c.agent_on("node-1", &[], url, &az.env());
    c.fake
        .wait_events(WAIT, "the backup into Azure Blob", |ev| {
            count(ev, "cart-0", "BackupCompleted") == 1
        });
    let out = run_cairn_with_env(
        &["-r", url, "snapshots", "--json"],
        Some(PASSWORD),
        RunAs::Me,
        &az.env(),
    );
    out.success();
    let snaps: Vec<Value> = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0]["paths"][0], "/shop/cart-0/data");
    let target = c.base.path().join("from-azure");
    run_cairn_with_env(
        &[
            "-r",
            url,
            "restore",
            "latest",
            "--target",
            target.to_str().unwrap(),
        ],
        Some(PASSWORD),
        RunAs::Me,
        &az.env(),
    )
    .success();
    assert_eq!(read_tree_files(&data), read_tree_files(&target));
}

#[test]
fn a_volume_that_turned_empty_gets_no_snapshot_and_a_deleted_pods_backup_is_cancelled() {
    let c = Cluster::new();
    let data = c.volume_dir("uid-v", "kubernetes.io~empty-dir/data");
    write_files(&data, 3, 5);
    let at = |trigger: &str| {
        pod(
            "ns",
            "vanish",
            "node-1",
            "uid-v",
            &[
                ("backup.cairn.io/volumes", "data"),
                ("backup.cairn.io/backup-now", trigger),
            ],
            json!([{ "name": "data", "emptyDir": {} }]),
            None,
        )
    };
    c.fake.put_pod(at("1"));
    // A big volume whose backup the test deletes the pod under.
    let big = c.volume_dir("uid-d", "kubernetes.io~empty-dir/data");
    for i in 0..4 {
        write_random_file(&big.join(format!("big{i}")), 64 << 20, 70 + i);
    }
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let tx = std::sync::Mutex::new(tx);
    c.fake.on_exec(move |_: &ExecCall| {
        let _ = tx.lock().unwrap().send(());
        (0, String::new())
    });
    let agent = c.agent("node-1", &[]);
    c.fake.wait_events(WAIT, "the first backup", |ev| {
        count(ev, "vanish", "BackupCompleted") == 1
    });

    // The volume is emptied (as an unmounted volume looks): no snapshot, a warning.
    std::fs::remove_dir_all(&data).unwrap();
    std::fs::create_dir_all(&data).unwrap();
    c.fake.put_pod(at("2"));
    c.fake
        .wait_events(WAIT, "the empty volume's warning", |ev| {
            count(ev, "vanish", "VolumeEmpty") == 1
        });
    assert_eq!(c.snapshots_of("/ns/vanish/data").len(), 1);

    // A pod deleted mid-backup: the backup is cancelled, the agent carries on.
    c.fake.put_pod(pod(
        "ns",
        "doomed",
        "node-1",
        "uid-d",
        &[
            ("backup.cairn.io/volumes", "data"),
            ("backup.cairn.io/backup-now", "1"),
            ("backup.cairn.io/pre-hook", r#"["sync"]"#),
        ],
        json!([{ "name": "data", "emptyDir": {} }]),
        None,
    ));
    rx.recv_timeout(WAIT).expect("the pre-hook ran");
    c.fake.delete_pod("ns", "doomed");
    write_files(&data, 2, 9);
    c.fake.put_pod(at("3"));
    c.fake
        .wait_events(WAIT, "the next backup after the deletion", |ev| {
            count(ev, "vanish", "BackupCompleted") == 2
        });
    drop(agent);
    assert!(c.snapshots_of("/ns/doomed/data").is_empty());
    let log = std::fs::read_to_string(c.base.path().join("agent-node-1.log")).unwrap();
    assert!(log.contains("BackupCancelled"), "{log}");
    c.repo.run(&["check"]).success();
}

#[test]
fn schedules_run_on_time_and_a_time_missed_while_down_runs_once_at_start() {
    let c = Cluster::new();
    // "missed": its last snapshot is from January, its schedule daily: one backup at start.
    let missed = c.volume_dir("uid-m", "kubernetes.io~empty-dir/data");
    write_files(&missed, 2, 1);
    c.repo.backup(
        &[&missed],
        &[
            "--host",
            "c1",
            "--as-path",
            "/ns/missed/data",
            "--time",
            "2026-01-01T00:00:00Z",
        ],
    );
    c.fake.put_pod(pod(
        "ns",
        "missed",
        "node-1",
        "uid-m",
        &[
            ("backup.cairn.io/volumes", "data"),
            ("backup.cairn.io/schedule", "@daily"),
        ],
        json!([{ "name": "data", "emptyDir": {} }]),
        None,
    ));
    // "often": every 2 seconds.
    let often = c.volume_dir("uid-o", "kubernetes.io~empty-dir/data");
    write_files(&often, 2, 5);
    c.fake.put_pod(pod(
        "ns",
        "often",
        "node-1",
        "uid-o",
        &[
            ("backup.cairn.io/volumes", "data"),
            ("backup.cairn.io/schedule", "@every 2s"),
        ],
        json!([{ "name": "data", "emptyDir": {} }]),
        None,
    ));
    let _agent = c.agent("node-1", &[]);
    c.fake
        .wait_events(WAIT, "the missed backup and two scheduled ones", |ev| {
            count(ev, "missed", "BackupCompleted") == 1
                && count(ev, "often", "BackupCompleted") >= 2
        });
    let often = c.snapshots_of("/ns/often/data");
    let t = |s: &Value| chrono::DateTime::parse_from_rfc3339(s["time"].as_str().unwrap()).unwrap();
    assert!(
        t(&often[1]) - t(&often[0]) >= chrono::Duration::milliseconds(1900),
        "{often:?}"
    );
    // The missed time ran once: two more scheduled backups of the other pod came after it,
    // and no second one of its own.
    c.fake
        .wait_events(WAIT, "two more scheduled backups", |ev| {
            count(ev, "often", "BackupCompleted") >= 4
        });
    assert_eq!(c.snapshots_of("/ns/missed/data").len(), 2);
    assert_eq!(count(&c.fake.events(), "missed", "BackupCompleted"), 1);
}

/// The seed's story: a database pod's PVC is backed up by the agent, the pod and its disk are
/// lost, a new pod's init container restores the data from the same environment the
/// manifest sets, the agent's next backup adds almost nothing, and a second cluster restores
/// the PVC from a read-only copy of the repository.
#[test]
fn the_seed_story_backup_loss_restore_init_and_a_second_cluster() {
    let mut c = Cluster::new();
    let disk = c.base.path().join("disk-a");
    for i in 0..10 {
        let p = disk.join(format!("pgdata/base/{i}"));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        write_random_file(&p, 200_000 + i * 777, 900 + i);
    }
    write_file(&disk.join("pgdata/PG_VERSION"), b"16\n");
    if is_root() {
        for e in files_below(&disk) {
            std::os::unix::fs::chown(&e, Some(999), Some(999)).unwrap();
        }
    }
    let volumes =
        json!([{ "name": "data", "persistentVolumeClaim": { "claimName": "data-postgresql-0" } }]);
    let annotations = |now: &'static str| {
        vec![
            ("backup.cairn.io/volumes", "data"),
            ("backup.cairn.io/backup-now", now),
        ]
    };
    c.fake.put_pvc(pvc("db", "data-postgresql-0", "pv-a"));
    let mount_a = c.csi_volume("uid-1", "pv-a", &disk);
    // Without root there is no bind mount, so the CSI volume is an emptyDir-like directory.
    let (volumes, source) = if is_root() {
        (volumes, disk.clone())
    } else {
        for (p, data) in read_tree_files(&disk) {
            write_file(
                &c.volume_dir("uid-1", "kubernetes.io~empty-dir/data")
                    .join(p),
                &data,
            );
        }
        (
            json!([{ "name": "data", "emptyDir": {} }]),
            c.root
                .join("pods/uid-1/volumes/kubernetes.io~empty-dir/data"),
        )
    };
    let owner = Some(("StatefulSet", "postgresql"));
    c.fake.put_pod(pod(
        "db",
        "postgresql-0",
        "node-1",
        "uid-1",
        &annotations("1"),
        volumes.clone(),
        owner,
    ));
    let agent = c.agent("node-1", &[]);
    c.fake.wait_events(WAIT, "the first backup", |ev| {
        count(ev, "postgresql-0", "BackupCompleted") == 1
    });
    // What the snapshot recorded, before anything here reads the files (reads move atimes).
    let expected = manifest(&source);
    drop(agent);
    let path = if is_root() {
        "/db/data-postgresql-0"
    } else {
        "/db/postgresql-0/data"
    };
    assert_eq!(c.snapshots_of(path).len(), 1);

    // The pod and its disk are lost. A new pod gets a new UID and a fresh disk with only
    // lost+found; its init container restores into it.
    c.fake.delete_pod("db", "postgresql-0");
    c.unmount(&mount_a);
    let new_disk = c.base.path().join("disk-b");
    std::fs::create_dir_all(new_disk.join("lost+found")).unwrap();
    let restore_env = |target: &Path, repo: &Path| {
        let pvc_env = if is_root() {
            ("CAIRN_CLAIM_TEMPLATE", "data")
        } else {
            ("CAIRN_PVC", "postgresql-0/data")
        };
        let mut env = vec![
            ("CAIRN_TARGET".to_string(), target.display().to_string()),
            ("CAIRN_NAMESPACE".to_string(), "db".to_string()),
            (pvc_env.0.to_string(), pvc_env.1.to_string()),
            ("CAIRN_REPOSITORY".to_string(), repo.display().to_string()),
        ];
        if is_root() {
            env.push(("CAIRN_POD_NAME".to_string(), "postgresql-0".to_string()));
        }
        env
    };
    run_cairn_with_env(
        &["restore-init"],
        Some(PASSWORD),
        RunAs::Me,
        &restore_env(&new_disk, &c.repo.path),
    )
    .success();
    let restored_manifest = manifest(&new_disk);
    let restored: std::collections::BTreeMap<_, _> = read_tree_files(&new_disk)
        .into_iter()
        .filter(|(p, _)| !p.starts_with(".cairn"))
        .collect();
    assert_eq!(restored, read_tree_files(&source));
    let diffs: Vec<String> = diff_manifests(&expected, &restored_manifest)
        .into_iter()
        .filter(|d| !d.contains("unexpected extra entry"))
        .collect();
    assert!(diffs.is_empty(), "owners and modes: {diffs:?}");

    // The new pod runs on the restored disk; the agent's next backup adds almost nothing.
    if is_root() {
        c.csi_volume("uid-2", "pv-b", &new_disk);
        c.fake.put_pvc(pvc("db", "data-postgresql-0", "pv-b"));
        c.fake.put_pod(pod(
            "db",
            "postgresql-0",
            "node-1",
            "uid-2",
            &annotations("2"),
            volumes,
            owner,
        ));
        let _agent = c.agent("node-1", &[]);
        c.fake
            .wait_events(WAIT, "the backup after the restore", |ev| {
                count(ev, "postgresql-0", "BackupCompleted") == 2
            });
        let snaps = c.snapshots_of(path);
        assert_eq!(snaps.len(), 2);
        let added = snaps[1]["summary"]["data_added"].as_u64().unwrap();
        assert!(
            added < 64 << 10,
            "the backup after the restore added {added} bytes"
        );
    }

    // A second cluster restores the PVC from a read-only copy of the repository.
    let copy = c.base.path().join("repo-copy");
    let status = Command::new("cp")
        .arg("-a")
        .arg(&c.repo.path)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(status.success());
    let ro_mounted = is_root()
        && Command::new("mount")
            .args(["--bind"])
            .arg(&copy)
            .arg(&copy)
            .status()
            .unwrap()
            .success()
        && Command::new("mount")
            .args(["-o", "remount,bind,ro"])
            .arg(&copy)
            .status()
            .unwrap()
            .success();
    if is_root() {
        assert!(ro_mounted, "read-only bind mount of the copy");
        c.mounts.push(copy.clone());
    } else {
        Command::new("chmod")
            .args(["-R", "a-w"])
            .arg(&copy)
            .status()
            .unwrap();
    }
    assert!(
        std::fs::write(copy.join("probe"), b"x").is_err(),
        "the copy is read-only"
    );
    // What the second cluster may do with read access only, writing no lock.
    let ro = Repo {
        path: copy.clone(),
        password: PASSWORD.into(),
        who: RunAs::Me,
    };
    assert_eq!(ro.snapshots().len(), c.snapshots_of(path).len());
    ro.run(&["ls", "latest"]).success();
    let dumped = ro.run(&["dump", "latest", "/pgdata/PG_VERSION"]);
    dumped.success();
    assert_eq!(dumped.stdout, "16\n");
    ro.run(&["check"]).success();
    assert!(
        std::fs::read_dir(copy.join("locks"))
            .unwrap()
            .next()
            .is_none()
    );
    let other = c.base.path().join("disk-other-cluster");
    std::fs::create_dir_all(&other).unwrap();
    run_cairn_with_env(
        &["restore-init"],
        Some(PASSWORD),
        RunAs::Me,
        &restore_env(&other, &copy),
    )
    .success();
    let restored: std::collections::BTreeMap<_, _> = read_tree_files(&other)
        .into_iter()
        .filter(|(p, _)| !p.starts_with(".cairn"))
        .collect();
    assert_eq!(restored, read_tree_files(&source));
}
