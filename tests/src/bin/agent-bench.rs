//! Measures `cairn agent` against the fake API server (`cairn_e2e::fakekube`), for the
//! figures in `docs/benchmarks.md`:
//!
//! ```text
//! agent-bench CAIRN WORKDIR idle [PODS]         idle RSS with PODS pods on the node (500)
//! agent-bench CAIRN WORKDIR smallfiles [FILES]  peak RSS backing up FILES small files (1 000 000),
//!                                               and `cairn backup` of the same directory
//! agent-bench CAIRN WORKDIR latency [ROUNDS]    backup-now → snapshot, less the backup's own time
//! ```
//!
//! CAIRN is the binary to measure (a release build); WORKDIR holds the kubelet tree and the
//! repositories (tmpfs keeps disk speed out of the figures).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cairn_e2e::fakekube::FakeKube;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

const PASSWORD: &str = "bench";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: agent-bench CAIRN WORKDIR idle|smallfiles|latency [N]");
        std::process::exit(2);
    }
    let cairn = PathBuf::from(&args[1]);
    let work = PathBuf::from(&args[2]);
    let n: Option<u64> = args.get(4).and_then(|s| s.parse().ok());
    std::fs::create_dir_all(&work).expect("workdir");
    match args[3].as_str() {
        "idle" => idle(&cairn, &work, n.unwrap_or(500)),
        "smallfiles" => smallfiles(&cairn, &work, n.unwrap_or(1_000_000)),
        "latency" => latency(&cairn, &work, n.unwrap_or(10)),
        other => panic!("unknown measurement {other}"),
    }
}

fn init_repo(cairn: &Path, repo: &Path) {
    let _ = std::fs::remove_dir_all(repo);
    let ok = Command::new(cairn)
        .args(["-q", "-r"])
        .arg(repo)
        .arg("init")
        .env("CAIRN_PASSWORD", PASSWORD)
        .status()
        .expect("cairn init")
        .success();
    assert!(ok, "cairn init");
}

fn agent(cairn: &Path, work: &Path, fake: &FakeKube, metrics: &str) -> Child {
    Command::new(cairn)
        .args(["agent", "--node-name", "node-1", "--cluster", "bench"])
        .arg("--kubelet-root")
        .arg(work.join("kubelet"))
        .args(["--schedule", "@every 24h", "--metrics-listen", metrics])
        .arg("-r")
        .arg(work.join("repo"))
        .env("CAIRN_PASSWORD", PASSWORD)
        .env("KUBECONFIG", fake.kubeconfig(work))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(work.join("agent.log")).expect("log"))
        .spawn()
        .expect("cairn agent")
}

fn pod(name: &str, uid: &str, annotations: Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "namespace": "bench", "name": name, "uid": uid, "annotations": annotations,
            "labels": { "app": "bench" } },
        "spec": { "nodeName": "node-1",
            "containers": [{ "name": "app", "image": "app", "volumeMounts": [{ "name": "data", "mountPath": "/data" }] }],
            "volumes": [{ "name": "data", "emptyDir": {} }] },
        "status": { "phase": "Running" }
    }))
    .expect("pod")
}

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").to_string()
}

fn get(addr: &str, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut t = String::new();
    s.read_to_string(&mut t).ok()?;
    t.split(' ').nth(1)?.parse().ok()
}

fn wait_ready(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while get(addr, "/readyz") != Some(200) {
        assert!(Instant::now() < deadline, "agent not ready");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// (VmRSS, VmHWM) in KiB.
fn rss(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn stop(mut child: Child) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();
}

fn idle(cairn: &Path, work: &Path, pods: u64) {
    let fake = FakeKube::start();
    init_repo(cairn, &work.join("repo"));
    std::fs::create_dir_all(work.join("kubelet/pods")).expect("kubelet");
    for i in 0..pods {
        fake.put_pod(pod(
            &format!("web-{i}"),
            &format!("uid-{i}"),
            json!({ "backup.cairn.io/volumes": "data", "backup.cairn.io/schedule": "@every 24h" }),
        ));
    }
    let addr = free_addr();
    let child = agent(cairn, work, &fake, &addr);
    wait_ready(&addr);
    // Let the first pass over every pod settle, then read.
    std::thread::sleep(Duration::from_secs(3));
    let (rss_kib, hwm_kib) = rss(child.id());
    println!(
        "idle: {pods} pods on the node: RSS {:.1} MiB, peak {:.1} MiB",
        rss_kib as f64 / 1024.0,
        hwm_kib as f64 / 1024.0
    );
    stop(child);
}

fn volume(work: &Path, uid: &str) -> PathBuf {
    work.join("kubelet/pods")
        .join(uid)
        .join("volumes/kubernetes.io~empty-dir/data")
}

fn wait_snapshot(fake: &FakeKube, n: usize) {
    fake.wait_events(Duration::from_secs(3600), "the backup", |ev| {
        ev.iter()
            .filter(|e| e["reason"] == "BackupCompleted")
            .count()
            + ev.iter()
                .filter(|e| e["reason"] == "BackupCompleted")
                .map(|e| e["series"]["count"].as_u64().unwrap_or(1) as usize - 1)
                .sum::<usize>()
            >= n
    });
}

fn smallfiles(cairn: &Path, work: &Path, files: u64) {
    let dir = volume(work, "uid-small");
    let marker = work.join(format!("smallfiles-{files}.done"));
    if !marker.exists() {
        let _ = std::fs::remove_dir_all(&dir);
        for i in 0..files {
            let d = dir.join(format!("{:04}", i / 1000));
            if i % 1000 == 0 {
                std::fs::create_dir_all(&d).expect("dir");
            }
            let body = format!("file {i} {}\n", "x".repeat((i % 400) as usize));
            std::fs::write(d.join(format!("f{i}.txt")), body).expect("file");
        }
        std::fs::write(&marker, b"").expect("marker");
    }
    let fake = FakeKube::start();
    init_repo(cairn, &work.join("repo"));
    fake.put_pod(pod(
        "small",
        "uid-small",
        json!({ "backup.cairn.io/volumes": "data", "backup.cairn.io/backup-now": "1" }),
    ));
    let addr = free_addr();
    let started = Instant::now();
    let child = agent(cairn, work, &fake, &addr);
    wait_snapshot(&fake, 1);
    let took = started.elapsed();
    let (_, hwm) = rss(child.id());
    stop(child);
    println!(
        "agent: backup of {files} small files: peak RSS {:.1} MiB ({:.1} s from start)",
        hwm as f64 / 1024.0,
        took.as_secs_f64()
    );
    // The same directory with `cairn backup`, same worker count.
    let repo2 = work.join("repo-cli");
    init_repo(cairn, &repo2);
    let out = Command::new("/usr/bin/time")
        .arg("-v")
        .arg(cairn)
        .args(["-q", "-r"])
        .arg(&repo2)
        .args(["backup", "--workers", "2"])
        .arg(&dir)
        .env("CAIRN_PASSWORD", PASSWORD)
        .output()
        .expect("time cairn backup");
    let text = String::from_utf8_lossy(&out.stderr);
    let kib: u64 = text
        .lines()
        .find(|l| l.contains("Maximum resident set size"))
        .and_then(|l| l.rsplit(':').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    println!(
        "cairn backup: {files} small files: peak RSS {:.1} MiB",
        kib as f64 / 1024.0
    );
}

fn latency(cairn: &Path, work: &Path, rounds: u64) {
    let fake = FakeKube::start();
    init_repo(cairn, &work.join("repo"));
    let dir = volume(work, "uid-lat");
    std::fs::create_dir_all(&dir).expect("volume");
    for i in 0..10 {
        std::fs::write(dir.join(format!("f{i}")), format!("{i}")).expect("file");
    }
    fake.put_pod(pod(
        "lat",
        "uid-lat",
        json!({ "backup.cairn.io/volumes": "data" }),
    ));
    let addr = free_addr();
    let child = agent(cairn, work, &fake, &addr);
    wait_ready(&addr);
    let mut overhead = Vec::new();
    for r in 1..=rounds {
        let t0 = Instant::now();
        fake.put_pod(pod(
            "lat",
            "uid-lat",
            json!({ "backup.cairn.io/volumes": "data", "backup.cairn.io/backup-now": r.to_string() }),
        ));
        wait_snapshot(&fake, r as usize);
        let total = t0.elapsed().as_secs_f64();
        // The backup's own time, as the snapshot records it.
        let out = Command::new(cairn)
            .args(["-r"])
            .arg(work.join("repo"))
            .args(["snapshots", "--json", "--label", &format!("trigger={r}")])
            .env("CAIRN_PASSWORD", PASSWORD)
            .output()
            .expect("snapshots");
        let v: Value = serde_json::from_slice(&out.stdout).expect("json");
        let own = v[0]["summary"]["duration"].as_f64().unwrap_or(0.0);
        overhead.push((total - own) * 1000.0);
    }
    stop(child);
    overhead.sort_by(|a, b| a.total_cmp(b));
    println!(
        "latency: backup-now change to snapshot, less the backup's own time, {rounds} rounds: median {:.1} ms (min {:.1}, max {:.1})",
        overhead[overhead.len() / 2],
        overhead[0],
        overhead[overhead.len() - 1]
    );
}
