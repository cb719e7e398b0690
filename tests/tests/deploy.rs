//! `deploy/` checked offline, as CI can: every manifest validates against the Kubernetes
//! schemas (`kubernetes-validate --strict`, from PyPI via scripts/test-services.sh), the
//! kustomization's references resolve, the environment variables the manifests set are ones
//! `cairn` reads, the DaemonSet keeps its security shape, the alert rules pass `promtool`'s
//! check and their unit tests, and the dashboard queries metrics the agent exports.

use std::path::{Path, PathBuf};
use std::process::Command;

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

/// The manifests: every YAML file but the kustomization and the Prometheus files.
fn manifests() -> Vec<PathBuf> {
    yaml_files(&workspace().join("deploy"))
        .into_iter()
        .filter(|p| {
            !p.ends_with("kustomization.yaml")
                && !p.components().any(|c| c.as_os_str() == "monitoring")
        })
        .collect()
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

#[test]
fn every_manifest_validates_strictly_against_the_kubernetes_schemas() {
    let files = manifests();
    assert!(files.len() >= 8, "{files:?}");
    let out = validate(&files);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The validator does catch a misspelled field (strict mode works offline).
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    let text = std::fs::read_to_string(workspace().join("deploy/daemonset.yaml"))
        .unwrap()
        .replace("mountPropagation:", "mountPropagaton:");
    std::fs::write(&bad, text).unwrap();
    assert!(
        !validate(&[bad]).status.success(),
        "a misspelled field passed"
    );
}

#[test]
fn the_kustomization_names_files_that_exist() {
    let deploy = workspace().join("deploy");
    let text = std::fs::read_to_string(deploy.join("kustomization.yaml")).unwrap();
    let mut in_resources = false;
    let mut named = 0;
    for line in text.lines() {
        if !line.starts_with(' ') {
            in_resources = line.starts_with("resources:");
            continue;
        }
        if let Some(f) = line.trim().strip_prefix("- ").filter(|_| in_resources) {
            assert!(
                deploy.join(f).is_file() || deploy.join(f).join("kustomization.yaml").is_file(),
                "kustomization.yaml names {f}, which is missing"
            );
            named += 1;
        }
    }
    assert_eq!(named, 5, "{text}");
    let ds = std::fs::read_to_string(deploy.join("daemonset.yaml")).unwrap();
    assert!(
        text.contains("name: ghcr.io/cairn-backup/cairn")
            && ds.contains("image: ghcr.io/cairn-backup/cairn:")
    );
}

#[test]
fn manifests_set_only_variables_cairn_reads_and_the_daemonset_keeps_its_security_shape() {
    let args = std::fs::read_to_string(workspace().join("agent/src/cli/args.rs")).unwrap();
    for f in manifests() {
        let text = std::fs::read_to_string(&f).unwrap();
        for (i, _) in text.match_indices("name: CAIRN_") {
            let var: String = text[i + 6..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || *c == '_')
                .collect();
            assert!(
                args.contains(&format!("env = \"{var}\"")),
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
