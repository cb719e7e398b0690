//! `deploy/` checked offline, as CI can: every manifest validates against the Kubernetes
//! schemas (`kubernetes-validate --strict`, from PyPI via scripts/test-services.sh) and none
//! is of a kind it has no schema for; the kustomizations' references resolve and name every
//! manifest but the examples; the environment variables and flags the manifests give `cairn`
//! are ones that `cairn <command> --help` lists; the DaemonSet and the server keep their
//! security shape; no client holds storage credentials, and each holds a token of the role
//! it needs (traced from its env through its volumes to the example Secrets and the example
//! tokens file); the server, started with its Deployment's own flags and the example
//! tokens, answers its probes on the ports the manifests name, gives each client's token
//! its role, and serves the maintenance job's and restore-init's commands run with their
//! manifests' own arguments and variables; the alert rules pass `promtool`'s check and their
//! unit tests, and the dashboard queries metrics the agent exports.
//!
//! The manifests are read as data: the test-services Python (which kubernetes-validate
//! needs anyway) turns each YAML file into JSON.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cairn_e2e::cairn_bin;
use cairn_e2e::server::TestPki;
use serde_json::Value;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("deploy/") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            out.extend(yaml_files(&p));
        } else if p.extension().is_some_and(|x| x == "yaml") {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// The manifests: every YAML file but the kustomizations and the Prometheus files.
fn manifests() -> Vec<PathBuf> {
    yaml_files(&workspace().join("deploy"))
        .into_iter()
        .filter(|p| {
            !p.ends_with("kustomization.yaml")
                && !p.components().any(|c| c.as_os_str() == "monitoring")
        })
        .collect()
}

fn is_example(p: &Path) -> bool {
    p.to_string_lossy().ends_with(".example.yaml")
}

fn python() -> PathBuf {
    let p = workspace().join(".test-services/python/bin/python3");
    assert!(
        p.exists(),
        "{} is missing: run scripts/test-services.sh (it installs kubernetes-validate and PyYAML)",
        p.display()
    );
    p
}

fn validator() -> PathBuf {
    let v = workspace().join(".test-services/python/bin/kubernetes-validate");
    assert!(
        v.exists(),
        "{} is missing: run scripts/test-services.sh (it installs kubernetes-validate from PyPI)",
        v.display()
    );
    v
}

fn validate(files: &[PathBuf]) -> std::process::Output {
    Command::new(validator())
        .args(["--strict", "--quiet"])
        .args(files)
        .output()
        .expect("run kubernetes-validate")
}

/// One YAML document and the file it is in.
#[derive(Debug)]
struct Doc {
    file: PathBuf,
    v: Value,
}

/// The documents of these YAML files, as JSON (anchors resolved, comments gone).
fn load(files: &[PathBuf]) -> Vec<Doc> {
    const SCRIPT: &str = "import json, sys, yaml\n\
        print(json.dumps([[f, d] for f in sys.argv[1:] for d in yaml.safe_load_all(open(f)) if d is not None]))";
    let out = Command::new(python())
        .args(["-c", SCRIPT])
        .args(files)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "YAML does not parse: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all: Vec<(PathBuf, Value)> = serde_json::from_slice(&out.stdout).expect("JSON");
    all.into_iter().map(|(file, v)| Doc { file, v }).collect()
}

fn arr(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

fn kind(v: &Value) -> &str {
    s(&v["kind"])
}

fn name(v: &Value) -> &str {
    s(&v["metadata"]["name"])
}

fn namespace(v: &Value) -> &str {
    s(&v["metadata"]["namespace"])
}

/// The one document of this kind and name outside the `*.example.yaml` files.
fn find<'a>(docs: &'a [Doc], k: &str, n: &str) -> &'a Value {
    let found: Vec<&Doc> = docs
        .iter()
        .filter(|d| kind(&d.v) == k && name(&d.v) == n && !is_example(&d.file))
        .collect();
    assert_eq!(found.len(), 1, "{k} {n}: {found:?}");
    &found[0].v
}

/// The pod spec of a workload.
fn pod_spec(v: &Value) -> Option<&Value> {
    match kind(v) {
        "Deployment" | "DaemonSet" | "StatefulSet" | "Job" | "ReplicaSet" => {
            Some(&v["spec"]["template"]["spec"])
        }
        "CronJob" => Some(&v["spec"]["jobTemplate"]["spec"]["template"]["spec"]),
        "Pod" => Some(&v["spec"]),
        _ => None,
    }
}

/// Init containers, then containers.
fn containers(spec: &Value) -> Vec<&Value> {
    arr(&spec["initContainers"])
        .iter()
        .chain(arr(&spec["containers"]))
        .collect()
}

fn container<'a>(spec: &'a Value, n: &str) -> &'a Value {
    containers(spec)
        .into_iter()
        .find(|c| s(&c["name"]) == n)
        .unwrap_or_else(|| panic!("no container {n}"))
}

fn is_cairn(c: &Value) -> bool {
    s(&c["image"]).starts_with("ghcr.io/cairn-backup/cairn")
}

fn args(c: &Value) -> Vec<String> {
    arr(&c["args"]).iter().map(|a| s(a).to_string()).collect()
}

/// The value of `--flag=VALUE` or `--flag VALUE` in a container's arguments.
fn flag(c: &Value, f: &str) -> Option<String> {
    let a = args(c);
    a.iter().enumerate().find_map(|(i, x)| {
        if let Some(v) = x.strip_prefix(&format!("{f}=")) {
            Some(v.to_string())
        } else if x == f {
            a.get(i + 1).cloned()
        } else {
            None
        }
    })
}

fn port_of(addr: &str) -> u64 {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{addr:?} has no port"))
}

/// A container's port number by name (or the number itself).
fn container_port(c: &Value, port: &Value) -> u64 {
    if let Some(n) = port.as_u64() {
        return n;
    }
    arr(&c["ports"])
        .iter()
        .find(|p| s(&p["name"]) == s(port))
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("no container port named {port}"))
}

/// Whether a label selector's `matchLabels` all hold in `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let want = selector["matchLabels"].as_object().expect("matchLabels");
    !want.is_empty() && want.iter().all(|(k, v)| labels[k] == *v)
}

/// Where an environment variable's value comes from.
#[derive(Debug, Clone, PartialEq)]
enum Source {
    Value(String),
    Secret { name: String, key: String },
    Field(String),
}

fn env_source(c: &Value, var: &str) -> Option<Source> {
    let e = arr(&c["env"]).iter().find(|e| s(&e["name"]) == var)?;
    if let Some(v) = e["value"].as_str() {
        return Some(Source::Value(v.to_string()));
    }
    let from = &e["valueFrom"];
    if from["secretKeyRef"].is_object() {
        return Some(Source::Secret {
            name: s(&from["secretKeyRef"]["name"]).into(),
            key: s(&from["secretKeyRef"]["key"]).into(),
        });
    }
    if from["fieldRef"].is_object() {
        return Some(Source::Field(s(&from["fieldRef"]["fieldPath"]).into()));
    }
    panic!("{var}: unexpected source {e}")
}

/// The Secrets (name, key ↦ file name) a secret or projected volume holds.
fn volume_secrets(vol: &Value) -> Vec<(String, BTreeMap<String, String>)> {
    let mut sources = Vec::new();
    if vol["secret"].is_object() {
        sources.push((s(&vol["secret"]["secretName"]), &vol["secret"]));
    }
    for p in arr(&vol["projected"]["sources"]) {
        if p["secret"].is_object() {
            sources.push((s(&p["secret"]["name"]), &p["secret"]));
        }
    }
    sources
        .into_iter()
        .map(|(n, sec)| {
            let items = arr(&sec["items"])
                .iter()
                .map(|i| (s(&i["key"]).to_string(), s(&i["path"]).to_string()))
                .collect();
            (n.to_string(), items)
        })
        .collect()
}

/// The volume mount holding `path`, and the path relative to it.
fn mount_of<'a>(c: &'a Value, path: &str) -> Option<(&'a Value, String)> {
    arr(&c["volumeMounts"])
        .iter()
        .filter_map(|m| {
            let mp = s(&m["mountPath"]).trim_end_matches('/');
            path.strip_prefix(mp)
                .filter(|rest| rest.is_empty() || rest.starts_with('/'))
                .map(|rest| (m, rest.trim_start_matches('/').to_string(), mp.len()))
        })
        .max_by_key(|x| x.2)
        .map(|(m, rest, _)| (m, rest))
}

/// The Secret and key a file that a container reads comes from.
fn file_secret(spec: &Value, c: &Value, path: &str) -> (String, String) {
    let (m, rel) = mount_of(c, path).unwrap_or_else(|| panic!("nothing is mounted at {path}"));
    let vol = arr(&spec["volumes"])
        .iter()
        .find(|v| v["name"] == m["name"])
        .unwrap_or_else(|| panic!("no volume {}", m["name"]));
    for (secret, items) in volume_secrets(vol) {
        if let Some((key, _)) = items.iter().find(|(_, p)| **p == rel) {
            return (secret, key.clone());
        }
    }
    panic!("{path} is in no Secret item of volume {}", m["name"])
}

/// The Secret and key of a container's server token: the file of CAIRN_SERVER_TOKEN_FILE,
/// else CAIRN_SERVER_TOKEN.
fn token_secret(spec: &Value, c: &Value) -> (String, String) {
    match env_source(c, "CAIRN_SERVER_TOKEN_FILE") {
        Some(Source::Value(path)) => file_secret(spec, c, &path),
        None => match env_source(c, "CAIRN_SERVER_TOKEN") {
            Some(Source::Secret { name, key }) => (name, key),
            other => panic!("{}: no token from a Secret: {other:?}", c["name"]),
        },
        other => panic!("{}: CAIRN_SERVER_TOKEN_FILE {other:?}", c["name"]),
    }
}

/// A key of an example Secret (`*.example.yaml`), in these files.
fn example_value(
    docs: &[Doc],
    files: &dyn Fn(&Path) -> bool,
    ns: &str,
    n: &str,
    key: &str,
) -> Option<String> {
    let found: Vec<&Doc> = docs
        .iter()
        .filter(|d| {
            is_example(&d.file)
                && files(&d.file)
                && kind(&d.v) == "Secret"
                && name(&d.v) == n
                && namespace(&d.v) == ns
        })
        .collect();
    assert!(found.len() <= 1, "Secret {ns}/{n} is in several examples");
    let d = found.first()?;
    d.v["stringData"][key].as_str().map(str::to_string)
}

/// The clients' examples: every one but the second cluster's, which has the same Secret
/// names in that other cluster.
fn this_cluster(p: &Path) -> bool {
    !p.ends_with("second-cluster.example.yaml")
}

fn second_cluster(p: &Path) -> bool {
    p.ends_with("second-cluster.example.yaml")
}

/// `TOKEN ROLE [PREFIX]` lines of the example tokens file: token ↦ (role, prefix).
fn example_tokens(docs: &[Doc]) -> BTreeMap<String, (String, String)> {
    let text = example_value(docs, &|_| true, "cairn-system", "cairn-server", "tokens")
        .expect("server/secret.example.yaml holds the tokens file");
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.is_empty() {
            continue;
        }
        assert!((2..=3).contains(&f.len()), "tokens line {line:?}");
        let prefix = f.get(2).unwrap_or(&"").trim_matches('/').to_string();
        assert!(
            out.insert(f[0].to_string(), (f[1].to_string(), prefix))
                .is_none(),
            "token {} twice",
            f[0]
        );
    }
    out
}

/// `rest:https://HOST:PORT/PREFIX` → (`https://HOST:PORT`, PREFIX).
fn split_rest(url: &str) -> (String, String) {
    let rest = url
        .strip_prefix("rest:https://")
        .unwrap_or_else(|| panic!("{url:?} is not a rest:https:// location"));
    let (hostport, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    (
        format!("https://{hostport}"),
        prefix.trim_matches('/').to_string(),
    )
}

/// Whether a token's prefix reaches a repository's (at segment boundaries).
fn reaches(token_prefix: &str, repo_prefix: &str) -> bool {
    let t: Vec<&str> = token_prefix.split('/').filter(|x| !x.is_empty()).collect();
    let r: Vec<&str> = repo_prefix.split('/').filter(|x| !x.is_empty()).collect();
    r.starts_with(&t)
}

/// The clients in this cluster: (kind, name, container) and the role each needs.
const CLIENTS: &[(&str, &str, &str, &str)] = &[
    ("DaemonSet", "cairn-agent", "agent", "append"),
    ("CronJob", "cairn-maintenance", "forget", "admin"),
    ("CronJob", "cairn-maintenance", "check", "admin"),
    ("StatefulSet", "postgresql", "restore", "read"),
    ("CronJob", "pg-dump", "dump", "append"),
];

/// The server as the manifests deploy it.
const SERVER: (&str, &str, &str) = ("Deployment", "cairn-server", "server");

#[test]
fn every_manifest_validates_strictly_against_the_kubernetes_schemas() {
    let files = manifests();
    assert!(files.len() >= 16, "{files:?}");
    let out = validate(&files);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    // A kind or apiVersion it has no schema for is only a warning: refuse it, so that a
    // misspelled one does not pass unchecked.
    assert!(!text.contains("Couldn't find schema"), "{text}");
    // The validator does catch a misspelled field (strict mode works offline).
    let dir = tempfile::tempdir().unwrap();
    for (file, good, bad) in [
        (
            "deploy/daemonset.yaml",
            "mountPropagation:",
            "mountPropagaton:",
        ),
        ("deploy/server/deployment.yaml", "sizeLimit:", "sizeLimt:"),
    ] {
        let path = dir.path().join("bad.yaml");
        let text = std::fs::read_to_string(workspace().join(file)).unwrap();
        assert!(text.contains(good));
        std::fs::write(&path, text.replace(good, bad)).unwrap();
        assert!(
            !validate(&[path]).status.success(),
            "a misspelled field passed in {file}"
        );
    }
}

/// The files a kustomization names, following directories into their own kustomizations.
fn kustomized(dir: &Path, namespaces: &mut BTreeSet<String>) -> Vec<PathBuf> {
    let k = dir.join("kustomization.yaml");
    assert!(k.is_file(), "{} is missing", k.display());
    let doc = load(std::slice::from_ref(&k)).remove(0).v;
    assert_eq!(kind(&doc), "Kustomization", "{}", k.display());
    namespaces.insert(s(&doc["namespace"]).to_string());
    assert!(
        arr(&doc["images"])
            .iter()
            .any(|i| s(&i["name"]) == "ghcr.io/cairn-backup/cairn"),
        "{} does not set the cairn image's tag",
        k.display()
    );
    let mut out = Vec::new();
    for r in arr(&doc["resources"]) {
        let p = dir.join(s(r));
        if p.is_dir() {
            out.extend(kustomized(&p, namespaces));
        } else {
            assert!(
                p.is_file(),
                "{} names {}, which is missing",
                k.display(),
                s(r)
            );
            out.push(p);
        }
    }
    out
}

#[test]
fn the_kustomizations_name_every_manifest_but_the_examples() {
    let deploy = workspace().join("deploy");
    let mut namespaces = BTreeSet::new();
    let named = kustomized(&deploy, &mut namespaces);
    assert_eq!(
        namespaces,
        BTreeSet::from(["cairn-system".to_string()]),
        "every kustomization puts its resources in cairn-system"
    );
    let named_set: BTreeSet<&PathBuf> = named.iter().collect();
    assert_eq!(
        named.len(),
        named_set.len(),
        "a file is named twice: {named:?}"
    );
    // Everything but the examples and the Secret templates, and nothing else.
    let expected: BTreeSet<PathBuf> = manifests()
        .into_iter()
        .filter(|p| !is_example(p) && !p.starts_with(deploy.join("examples")))
        .collect();
    assert_eq!(
        named_set,
        expected.iter().collect(),
        "the kustomizations should name exactly the manifests outside examples/ and *.example.yaml"
    );
    for f in [
        "daemonset.yaml",
        "server/deployment.yaml",
        "server/service.yaml",
        "server/networkpolicy.yaml",
        "server/poddisruptionbudget.yaml",
    ] {
        assert!(named_set.contains(&deploy.join(f)), "{f} is not applied");
    }
    // The server's kustomization applies on its own too.
    let mut ns = BTreeSet::new();
    assert_eq!(kustomized(&deploy.join("server"), &mut ns).len(), 5);
    for d in load(&named) {
        if kind(&d.v) != "Namespace" && !kind(&d.v).starts_with("Cluster") {
            assert_eq!(namespace(&d.v), "cairn-system", "{}", d.file.display());
        }
        if let Some(spec) = pod_spec(&d.v) {
            for c in containers(spec) {
                assert!(
                    s(&c["image"]).starts_with("ghcr.io/cairn-backup/cairn:"),
                    "{}: {}",
                    d.file.display(),
                    c["image"]
                );
            }
        }
    }
}

/// The variables cairn reads by name: its flags' `env = "..."`, and the few it reads
/// itself (the server token, the passwords).
fn variables_cairn_reads() -> BTreeSet<String> {
    let mut known = BTreeSet::new();
    let mut scan = |file: &str, marker: &str| {
        let text = std::fs::read_to_string(workspace().join(file)).unwrap();
        for (i, _) in text.match_indices(marker) {
            let var: String = text[i + marker.len()..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || *c == '_')
                .collect();
            known.insert(var);
        }
    };
    scan("agent/src/cli/args.rs", "env = \"");
    scan("repo-format/src/backend/rest.rs", "TOKEN_ENV: &str = \"");
    scan("agent/src/cli/mod.rs", "password_env: \"");
    known
}

#[test]
fn manifests_set_only_variables_cairn_reads_and_keep_their_security_shape() {
    let known = variables_cairn_reads();
    for v in [
        "CAIRN_REPOSITORY",
        "CAIRN_SERVER_TOKEN",
        "CAIRN_SERVER_TOKEN_FILE",
        "CAIRN_CACERT",
        "CAIRN_PASSWORD",
        "CAIRN_PASSWORD_FILE",
    ] {
        assert!(known.contains(v), "{v} not found among {known:?}");
    }
    // In comments too: the documented alternatives must be right as well.
    for f in manifests() {
        let text = std::fs::read_to_string(&f).unwrap();
        for (i, _) in text.match_indices("name: CAIRN_") {
            let var: String = text[i + 6..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || *c == '_')
                .collect();
            assert!(
                known.contains(&var),
                "{} sets {var}, which cairn does not read",
                f.display()
            );
        }
    }
    let ds = std::fs::read_to_string(workspace().join("deploy/daemonset.yaml")).unwrap();
    for needle in [
        "mountPropagation: HostToContainer",
        "readOnly: true",
        "readOnlyRootFilesystem: true",
        "allowPrivilegeEscalation: false",
        "drop: [\"ALL\"]",
        "add: [\"DAC_READ_SEARCH\"]",
        "path: /healthz",
        "path: /readyz",
        "fieldPath: spec.nodeName",
        "kubernetes.io/os: linux",
        "- operator: Exists",
        "limits:",
    ] {
        assert!(ds.contains(needle), "daemonset.yaml lacks {needle:?}");
    }
    assert!(!ds.contains("privileged: true"));

    // The server: not root, nothing to escalate to, read-only, bounded, spread.
    let docs = load(&manifests());
    let dep = find(&docs, SERVER.0, SERVER.1);
    let spec = pod_spec(dep).unwrap();
    let c = container(spec, SERVER.2);
    assert!(dep["spec"]["replicas"].as_u64().unwrap_or(1) >= 2);
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
    assert_ne!(spec["securityContext"]["runAsUser"].as_u64(), Some(0));
    assert_eq!(
        spec["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(spec["automountServiceAccountToken"], false);
    let sc = &c["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert!(sc["capabilities"]["add"].is_null() && sc["privileged"] != true);
    assert!(c["resources"]["requests"]["cpu"].is_string());
    assert!(c["resources"]["requests"]["memory"].is_string());
    assert!(c["resources"]["limits"]["memory"].is_string());
    // Mounted whole, so that Secret updates reach the files the server reloads.
    for m in arr(&c["volumeMounts"]) {
        assert!(m["subPath"].is_null(), "{m}");
    }
    // The pod gets its preStop sleep and the server's shutdown grace before SIGKILL.
    let grace: u64 = flag(c, "--shutdown-grace").map_or(25, |g| g.parse().unwrap());
    let sleep = c["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .unwrap_or(0);
    let period = spec["terminationGracePeriodSeconds"].as_u64().unwrap_or(30);
    assert!(
        period > sleep + grace,
        "terminationGracePeriodSeconds {period} leaves no room for preStop {sleep} s + --shutdown-grace {grace} s"
    );
    // The PDB, the Services and the NetworkPolicy are about these pods and their ports.
    let labels = &dep["spec"]["template"]["metadata"]["labels"];
    assert!(selects(&dep["spec"]["selector"], labels));
    let pdb = find(&docs, "PodDisruptionBudget", "cairn-server");
    assert!(selects(&pdb["spec"]["selector"], labels));
    assert!(
        pdb["spec"]["minAvailable"].as_u64().unwrap() < dep["spec"]["replicas"].as_u64().unwrap(),
        "the PDB would block every drain"
    );
    let np = find(&docs, "NetworkPolicy", "cairn-server");
    assert!(selects(&np["spec"]["podSelector"], labels));
    let ports: BTreeSet<u64> = arr(&c["ports"])
        .iter()
        .map(|p| p["containerPort"].as_u64().unwrap())
        .collect();
    for rule in arr(&np["spec"]["ingress"]) {
        assert!(
            !arr(&rule["from"]).is_empty(),
            "a rule open to everyone: {rule}"
        );
        for p in arr(&rule["ports"]) {
            assert!(ports.contains(&container_port(c, &p["port"])));
        }
    }
    for svc in ["cairn-server", "cairn-server-metrics"] {
        let svc = find(&docs, "Service", svc);
        let sel = serde_json::json!({ "matchLabels": svc["spec"]["selector"] });
        assert!(selects(&sel, labels));
    }
}

#[test]
fn cairn_accepts_every_flag_and_variable_the_manifests_give_it() {
    let docs = load(&manifests());
    let mut seen = BTreeSet::new();
    for d in &docs {
        let Some(spec) = pod_spec(&d.v) else { continue };
        for c in containers(spec).into_iter().filter(|c| is_cairn(c)) {
            let a = args(c);
            let sub = a
                .first()
                .unwrap_or_else(|| panic!("{}: no command", c["name"]));
            seen.insert(sub.clone());
            let help = Command::new(cairn_bin())
                .args([sub.as_str(), "--help"])
                .output()
                .unwrap();
            assert!(help.status.success(), "cairn {sub} --help");
            let help = String::from_utf8_lossy(&help.stdout).to_string();
            let ours: Vec<&String> = a.iter().take_while(|x| *x != "--").collect();
            for x in &ours[1..] {
                if let Some(f) = x.strip_prefix("--") {
                    let f = format!("--{}", f.split('=').next().unwrap());
                    assert!(
                        help.contains(&format!("{f} ")) || help.contains(&format!("{f}\n")),
                        "{}: `cairn {sub} --help` does not list {f}",
                        d.file.display()
                    );
                }
            }
            // And the binary takes them as given (flags and their fixed choices).
            let mut probe: Vec<&str> = ours.iter().map(|x| x.as_str()).collect();
            probe.push("--help");
            let out = Command::new(cairn_bin()).args(&probe).output().unwrap();
            assert!(
                out.status.success(),
                "{}: cairn {probe:?}: {}",
                d.file.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            // Every CAIRN_ variable it sets is one this command reads: one of its flags'
            // `[env: ...]`, or named in its help (CAIRN_SERVER_TOKEN, CAIRN_PASSWORD).
            for e in arr(&c["env"]) {
                let var = s(&e["name"]);
                if !var.starts_with("CAIRN_") {
                    continue;
                }
                let named = help.match_indices(var).any(|(i, _)| {
                    !help[i + var.len()..]
                        .starts_with(|ch: char| ch.is_ascii_uppercase() || ch == '_')
                });
                assert!(
                    help.contains(&format!("[env: {var}=")) || named,
                    "{}: {var} is set for `cairn {sub}`, which does not read it",
                    d.file.display()
                );
            }
        }
    }
    for sub in [
        "agent",
        "server",
        "restore-init",
        "forget",
        "check",
        "backup",
    ] {
        assert!(seen.contains(sub), "no manifest runs cairn {sub}: {seen:?}");
    }
}

#[test]
fn clients_hold_no_storage_credentials_and_tokens_of_their_role() {
    let docs = load(&manifests());
    let tokens = example_tokens(&docs);
    let roles: BTreeSet<&str> = tokens.values().map(|(r, _)| r.as_str()).collect();
    assert_eq!(roles, BTreeSet::from(["read", "append", "admin"]));
    let server_secrets = ["cairn-server", "cairn-server-storage", "cairn-server-tls"];

    // Only the server holds storage credentials or the server's Secrets.
    let mut clients = BTreeSet::new();
    for d in &docs {
        let Some(spec) = pod_spec(&d.v) else { continue };
        let is_server = kind(&d.v) == SERVER.0 && name(&d.v) == SERVER.1;
        for c in containers(spec) {
            let id = format!("{} {} {}", kind(&d.v), name(&d.v), s(&c["name"]));
            for e in arr(&c["env"]) {
                let var = s(&e["name"]);
                let storage = ["AZURE_", "AWS_", "GOOGLE_"]
                    .iter()
                    .any(|p| var.starts_with(p));
                assert!(is_server || !storage, "{id} gets {var}");
                let secret = s(&e["valueFrom"]["secretKeyRef"]["name"]);
                assert!(
                    is_server || !server_secrets.contains(&secret),
                    "{id} reads the server's Secret {secret}"
                );
            }
            assert!(c["envFrom"].is_null(), "{id}: envFrom hides what it gets");
            if is_cairn(c) && !is_server && env_source(c, "CAIRN_REPOSITORY").is_some() {
                clients.insert((
                    kind(&d.v).to_string(),
                    name(&d.v).to_string(),
                    s(&c["name"]).to_string(),
                ));
            }
        }
        for v in arr(&spec["volumes"]) {
            for (secret, _) in volume_secrets(v) {
                assert!(
                    is_server || !server_secrets.contains(&secret.as_str()),
                    "{} {} mounts the server's Secret {secret}",
                    kind(&d.v),
                    name(&d.v)
                );
            }
        }
    }
    // Every client is one whose role is checked here.
    let checked: BTreeSet<(String, String, String)> = CLIENTS
        .iter()
        .map(|(k, n, c, _)| (k.to_string(), n.to_string(), c.to_string()))
        .collect();
    assert_eq!(clients, checked);

    let svc = find(&docs, "Service", "cairn-server");
    let in_cluster = format!(
        "https://{}.{}.svc:{}",
        name(svc),
        namespace(svc),
        arr(&svc["spec"]["ports"])[0]["port"]
    );
    for (k, n, cn, role) in CLIENTS {
        let w = find(&docs, k, n);
        let spec = pod_spec(w).unwrap();
        let c = container(spec, cn);
        let ns = namespace(w);
        let id = format!("{k} {n} {cn}");
        let (secret, key) = token_secret(spec, c);
        let token = example_value(&docs, &this_cluster, ns, &secret, &key)
            .unwrap_or_else(|| panic!("{id}: no example of Secret {ns}/{secret} key {key}"));
        let (have, prefix) = tokens
            .get(&token)
            .unwrap_or_else(|| panic!("{id}: its token {token:?} is not in the tokens file"));
        assert_eq!(have, role, "{id} holds a {have} token, needs {role}");
        let Some(Source::Secret { name: rs, key: rk }) = env_source(c, "CAIRN_REPOSITORY") else {
            panic!("{id}: CAIRN_REPOSITORY not from a Secret");
        };
        let url = example_value(&docs, &this_cluster, ns, &rs, &rk).unwrap();
        let (base, repo) = split_rest(&url);
        assert_eq!(base, in_cluster, "{id}: {url}");
        assert!(
            reaches(prefix, &repo),
            "{id}: token for {prefix:?}, repository {url}"
        );
        // The CA and the password come from example Secret keys too.
        for var in ["CAIRN_CACERT", "CAIRN_PASSWORD_FILE"] {
            let Some(Source::Value(path)) = env_source(c, var) else {
                panic!("{id}: {var}");
            };
            let (sn, sk) = file_secret(spec, c, &path);
            assert!(
                example_value(&docs, &this_cluster, ns, &sn, &sk).is_some(),
                "{id}: {var} from {sn}/{sk}, which no example holds"
            );
        }
    }

    // The second cluster: the restore-init example's Secret, with a read token, for the
    // same repository, reached from outside.
    let (k, n, cn, _) = CLIENTS[3];
    let w = find(&docs, k, n);
    let spec = pod_spec(w).unwrap();
    let c = container(spec, cn);
    let Some(Source::Value(token_file)) = env_source(c, "CAIRN_SERVER_TOKEN_FILE") else {
        panic!("{k} {n} {cn}: no CAIRN_SERVER_TOKEN_FILE");
    };
    let vol = arr(&spec["volumes"])
        .iter()
        .find(|v| v["name"] == mount_of(c, &token_file).unwrap().0["name"])
        .unwrap();
    let ns = namespace(w);
    for (secret, items) in volume_secrets(vol) {
        for key in items.keys().chain(["repository".to_string()].iter()) {
            assert!(
                example_value(&docs, &second_cluster, ns, &secret, key).is_some(),
                "second-cluster.example.yaml lacks {secret}/{key}, which postgresql.yaml reads"
            );
        }
        let token = example_value(&docs, &second_cluster, ns, &secret, "token").unwrap();
        let (role, prefix) = &tokens[&token];
        assert_eq!(role, "read");
        let url = example_value(&docs, &second_cluster, ns, &secret, "repository").unwrap();
        let (base, repo) = split_rest(&url);
        assert_ne!(
            base, in_cluster,
            "the second cluster cannot use the Service's name"
        );
        assert!(reaches(prefix, &repo));
        let here = example_value(&docs, &this_cluster, ns, &secret, "repository").unwrap();
        assert_eq!(
            split_rest(&here).1,
            repo,
            "the second cluster restores prod's repository"
        );
    }
}

/// A `cairn server` started with the Deployment's flags.
struct Running {
    child: Child,
    listen: SocketAddr,
    metrics: SocketAddr,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Running {
    fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How a container's files, addresses and variables become local ones.
struct Local<'a> {
    docs: &'a [Doc],
    dir: PathBuf,
    pki: &'a TestPki,
    /// `https://cairn-server.cairn-system.svc:8443` (and the second cluster's) ↦ the
    /// running server.
    bases: Vec<(String, String)>,
}

impl Local<'_> {
    /// The container's volumes as local directories (Secret items from the examples, the
    /// certificates from the test PKI), its args and its environment.
    fn container(
        &self,
        w: &Value,
        c: &Value,
        files: &dyn Fn(&Path) -> bool,
    ) -> (Vec<String>, Vec<(String, String)>) {
        let spec = pod_spec(w).unwrap();
        let root = self.dir.join(format!("{}-{}", name(w), s(&c["name"])));
        let mut mounts: Vec<(String, PathBuf)> = Vec::new();
        for m in arr(&c["volumeMounts"]) {
            let dir = root.join(s(&m["name"]));
            std::fs::create_dir_all(&dir).unwrap();
            if let Some(vol) = arr(&spec["volumes"])
                .iter()
                .find(|v| v["name"] == m["name"])
            {
                for (secret, items) in volume_secrets(vol) {
                    for (key, path) in items {
                        let value = match key.as_str() {
                            "ca.crt" => self.pki.ca_pem.clone(),
                            "tls.crt" => self.pki.cert_pem.clone(),
                            "tls.key" => self.pki.key_pem.clone(),
                            _ => example_value(self.docs, files, namespace(w), &secret, &key)
                                .unwrap_or_else(|| panic!("no example of {secret}/{key}")),
                        };
                        std::fs::write(dir.join(path), value).unwrap();
                    }
                }
            }
            mounts.push((s(&m["mountPath"]).to_string(), dir));
        }
        mounts.sort_by_key(|(m, _)| std::cmp::Reverse(m.len()));
        let local = |v: &str| -> String {
            if let Some(port) = v.strip_prefix("0.0.0.0:") {
                let _: u16 = port.parse().unwrap();
                return "127.0.0.1:0".into();
            }
            for (mp, dir) in &mounts {
                if let Some(rest) = v.strip_prefix(mp.as_str())
                    && (rest.is_empty() || rest.starts_with('/'))
                {
                    return format!("{}{rest}", dir.display());
                }
            }
            v.to_string()
        };
        let args = args(c)
            .iter()
            .map(|a| match a.split_once('=') {
                Some((f, v)) if f.starts_with("--") => format!("{f}={}", local(v)),
                _ => local(a),
            })
            .collect();
        let mut env = Vec::new();
        for e in arr(&c["env"]) {
            let var = s(&e["name"]).to_string();
            let value = match env_source(c, &var).unwrap() {
                Source::Value(v) => local(&v),
                Source::Field(f) => match f.as_str() {
                    "metadata.namespace" => namespace(w).to_string(),
                    "metadata.name" => format!("{}-0", name(w)),
                    "spec.nodeName" => "node-1".to_string(),
                    other => panic!("fieldRef {other}"),
                },
                Source::Secret { name: sn, key } => {
                    let Some(mut v) = example_value(self.docs, files, namespace(w), &sn, &key)
                    else {
                        continue;
                    };
                    for (from, to) in &self.bases {
                        v = v.replace(from, to);
                    }
                    v
                }
            };
            env.push((var, value));
        }
        (args, env)
    }
}

fn cairn(args: &[String], env: &[(String, String)]) -> std::process::Output {
    Command::new(cairn_bin())
        .args(args)
        .env_clear()
        .envs(env.iter().cloned())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn must(out: std::process::Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// GET over HTTP or HTTPS (trusting the test CA), with an optional bearer token.
fn get(ca_pem: &str, url: &str, token: Option<&str>) -> (u16, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .tls_certs_only(reqwest::Certificate::from_pem_bundle(ca_pem.as_bytes()).unwrap())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let mut r = client.get(url);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        match r.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                (status, resp.text().await.unwrap_or_default())
            }
            Err(_) => (0, String::new()),
        }
    })
}

#[test]
fn the_server_runs_as_deployed_and_serves_the_clients_as_their_manifests_say() {
    let docs = load(&manifests());
    let tokens = example_tokens(&docs);
    let dep = find(&docs, SERVER.0, SERVER.1);
    let spec = pod_spec(dep).unwrap();
    let c = container(spec, SERVER.2);
    let listen = flag(c, "--listen").expect("--listen");
    let metrics = flag(c, "--metrics-listen").expect("--metrics-listen");
    assert!(flag(c, "--tls-cert").is_some() && flag(c, "--tls-key").is_some());

    // The Services and annotations name the ports the flags open.
    let api_port = port_of(&listen);
    let metrics_port = port_of(&metrics);
    let svc = find(&docs, "Service", "cairn-server");
    for p in arr(&svc["spec"]["ports"]) {
        assert_eq!(container_port(c, &p["targetPort"]), api_port);
    }
    let msvc = find(&docs, "Service", "cairn-server-metrics");
    for p in arr(&msvc["spec"]["ports"]) {
        assert_eq!(container_port(c, &p["targetPort"]), metrics_port);
    }
    assert_eq!(
        s(&msvc["metadata"]["annotations"]["prometheus.io/port"]),
        metrics_port.to_string()
    );

    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("storage");
    std::fs::create_dir(&storage).unwrap();
    let pki = TestPki::new("cairn deploy test CA");
    let mut local = Local {
        docs: &docs,
        dir: dir.path().to_path_buf(),
        pki: &pki,
        bases: Vec::new(),
    };
    let (args, mut env) = local.container(dep, c, &|_| true);
    // The storage: a local directory instead of the example's Azure container.
    env.retain(|(k, _)| k.starts_with("CAIRN_") && k != "CAIRN_REPOSITORY");
    env.push(("CAIRN_REPOSITORY".into(), storage.display().to_string()));
    let mut child = Command::new(cairn_bin())
        .args(&args)
        .env_clear()
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let log = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("cairn server started") {
                    let _ = tx.send(line.clone());
                }
                log.lock().unwrap().push(line);
            }
        });
    }
    let started = rx.recv_timeout(Duration::from_secs(60));
    let mut server = Running {
        child,
        listen: "0.0.0.0:0".parse().unwrap(),
        metrics: "0.0.0.0:0".parse().unwrap(),
        log,
    };
    let started: Value = serde_json::from_str(
        &started.unwrap_or_else(|_| panic!("the server did not start:\n{}", server.log())),
    )
    .unwrap();
    server.listen = s(&started["fields"]["listen"]).parse().unwrap();
    server.metrics = s(&started["fields"]["metrics"]).parse().unwrap();
    let base = format!("https://127.0.0.1:{}", server.listen.port());

    // The probes: each on a port the server serves, with the scheme it speaks there.
    let deadline = Instant::now() + Duration::from_secs(30);
    for probe in ["readinessProbe", "livenessProbe"] {
        let h = &c[probe]["httpGet"];
        let port = container_port(c, &h["port"]);
        let url = if port == metrics_port {
            assert_ne!(
                s(&h["scheme"]),
                "HTTPS",
                "{probe}: the metrics port is plain HTTP"
            );
            format!("http://{}{}", server.metrics, s(&h["path"]))
        } else {
            assert_eq!(
                port, api_port,
                "{probe} probes a port the server does not open"
            );
            assert_eq!(s(&h["scheme"]), "HTTPS", "{probe}: the API port speaks TLS");
            format!("{base}{}", s(&h["path"]))
        };
        loop {
            let (status, _) = get(&pki.ca_pem, &url, None);
            if status == 200 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{probe} {url}: {status}\n{}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    // Every client's token has its role at its repository, through the running server.
    let svc_base = format!(
        "https://{}.{}.svc:{}",
        name(svc),
        namespace(svc),
        arr(&svc["spec"]["ports"])[0]["port"]
    );
    local.bases.push((svc_base, base.clone()));
    for (k, n, cn, role) in CLIENTS {
        let w = find(&docs, k, n);
        let wspec = pod_spec(w).unwrap();
        let wc = container(wspec, cn);
        let (sn, sk) = token_secret(wspec, wc);
        let token = example_value(&docs, &this_cluster, namespace(w), &sn, &sk).unwrap();
        let (_, prefix) = &tokens[&token];
        let (status, body) = get(&pki.ca_pem, &format!("{base}/{prefix}/"), Some(&token));
        assert_eq!(status, 200, "{k} {n} {cn}: {body}");
        let answer: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(answer["role"], *role, "{k} {n} {cn}");
    }
    let second = docs
        .iter()
        .find(|d| second_cluster(&d.file) && kind(&d.v) == "Secret")
        .expect("second-cluster.example.yaml");
    let (second_base, second_repo) = split_rest(s(&second.v["stringData"]["repository"]));
    let token = s(&second.v["stringData"]["token"]);
    let (status, body) = get(&pki.ca_pem, &format!("{base}/{second_repo}/"), Some(token));
    assert_eq!((status, body.contains("\"read\"")), (200, true), "{body}");
    local.bases.push((second_base, base.clone()));

    // The clients, run with their manifests' own arguments and variables. The repository is
    // created with the maintenance job's admin token, as README.md says.
    let cron = find(&docs, "CronJob", "cairn-maintenance");
    let forget = container(pod_spec(cron).unwrap(), "forget");
    let (forget_args, admin_env) = local.container(cron, forget, &this_cluster);
    let mut init: Vec<String> = vec!["init".into()];
    init.extend(cairn_e2e::FAST_KDF.iter().map(|x| x.to_string()));
    must(cairn(&init, &admin_env), "init with the admin token");
    // What the agent does, with the agent's Secret: back up a volume under its identity.
    let ds = find(&docs, "DaemonSet", "cairn-agent");
    let (_, agent_env) =
        local.container(ds, container(pod_spec(ds).unwrap(), "agent"), &this_cluster);
    let data = dir.path().join("pgdata");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("PG_VERSION"), "16\n").unwrap();
    let backup: Vec<String> = [
        "backup",
        "--host",
        "prod",
        "--as-path",
        "/db/data-postgresql-0",
    ]
    .iter()
    .map(|x| x.to_string())
    .chain([data.display().to_string()])
    .collect();
    must(cairn(&backup, &agent_env), "backup with the agents' token");
    let refused = cairn(&["forget".into(), "--keep-last=1".into()], &agent_env);
    assert!(
        !refused.status.success()
            && String::from_utf8_lossy(&refused.stderr).contains("needs the admin role"),
        "the agents' token may delete: {}",
        String::from_utf8_lossy(&refused.stderr)
    );
    // The maintenance job's two steps, as they are.
    must(
        cairn(&forget_args, &admin_env),
        "the maintenance forget --prune",
    );
    let check = container(pod_spec(cron).unwrap(), "check");
    let (check_args, check_env) = local.container(cron, check, &this_cluster);
    must(cairn(&check_args, &check_env), "the maintenance check");
    // restore-init in the StatefulSet, with its read token, into its empty volume.
    let sts = find(&docs, "StatefulSet", "postgresql");
    let restore = container(pod_spec(sts).unwrap(), "restore");
    let (restore_args, restore_env) = local.container(sts, restore, &this_cluster);
    let target = restore_env
        .iter()
        .find(|(k, _)| k == "CAIRN_TARGET")
        .map(|(_, v)| PathBuf::from(v))
        .unwrap();
    assert!(
        target.starts_with(dir.path()),
        "CAIRN_TARGET is not its data volume"
    );
    must(cairn(&restore_args, &restore_env), "restore-init");
    assert_eq!(
        std::fs::read_to_string(target.join("PG_VERSION")).unwrap(),
        "16\n"
    );

    // SIGTERM: the server finishes within its shutdown grace, well inside the pod's.
    let pid = nix::unistd::Pid::from_raw(server.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let stop = Instant::now();
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status:?}\n{}", server.log());
    assert!(stop.elapsed() < Duration::from_secs(25));
}

#[test]
fn alert_rules_pass_promtool_and_their_unit_tests() {
    let dir = workspace().join("deploy/monitoring");
    for args in [
        vec!["check", "rules", "alerts.yaml"],
        vec!["test", "rules", "alerts_test.yaml"],
    ] {
        let out = Command::new("promtool")
            .args(&args)
            .current_dir(&dir)
            .output()
            .expect(
                "promtool is missing: run scripts/test-services.sh (Debian's prometheus package)",
            );
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_dashboard_and_alerts_query_metrics_the_agent_exports() {
    let exported =
        std::fs::read_to_string(workspace().join("agent/src/daemon/metrics.rs")).unwrap();
    let dashboard =
        std::fs::read_to_string(workspace().join("deploy/monitoring/dashboard.json")).unwrap();
    let parsed: serde_json::Value =
        serde_json::from_str(&dashboard).expect("dashboard.json is JSON");
    assert!(parsed["panels"].as_array().is_some_and(|p| p.len() >= 4));
    let alerts =
        std::fs::read_to_string(workspace().join("deploy/monitoring/alerts.yaml")).unwrap();
    for text in [&dashboard, &alerts] {
        for (i, _) in text.match_indices("cairn_") {
            let name: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            let family = name
                .trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count");
            if family == "cairn_" || !family.contains('_') {
                continue;
            }
            assert!(
                exported.contains(&format!("\"{family}\"")),
                "{name} is queried but the agent does not export {family}"
            );
        }
    }
}
