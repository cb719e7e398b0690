//! A volume's backup identity: the cluster, the namespace and the PVC (or, for a volume that
//! is not a PVC, the workload and the volume). Never the pod UID or the node: a pod that is
//! rescheduled, or recreated with a new UID, keeps its identity, so its next backup finds its
//! parent snapshot and reads no unchanged file. The identity is recorded as the snapshot's
//! host (the cluster) and path (`/<namespace>/<pvc>` or `/<namespace>/<workload>/<volume>`),
//! which is what parent lookup, `forget`'s groups and `restore-init` go by.

use cairn_repo_format::tree::Labels;

use super::pod::{PodInfo, PodVolume, Source};

/// Who a snapshot belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    /// `--cluster`.
    pub cluster: String,
    /// The pod's namespace.
    pub namespace: String,
    /// The PVC, or the workload and volume.
    pub subject: Subject,
}

/// What in the namespace a snapshot belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Subject {
    /// A PersistentVolumeClaim (a generic ephemeral volume's too).
    Pvc(String),
    /// A volume that is not a PVC, of a workload.
    Workload {
        /// The owning StatefulSet, Deployment, ...; a StatefulSet's emptyDir uses the pod's
        /// name, since each replica has its own.
        workload: String,
        /// The volume's name in the pod spec.
        volume: String,
    },
}

impl Identity {
    /// The identity of `volume` of `pod` in `cluster`.
    pub fn of(cluster: &str, pod: &PodInfo, volume: &PodVolume) -> Identity {
        let subject = match volume.source.claim() {
            Some(claim) => Subject::Pvc(claim.to_string()),
            None => Subject::Workload {
                workload: workload(pod, &volume.source),
                volume: volume.name.clone(),
            },
        };
        Identity {
            cluster: cluster.to_string(),
            namespace: pod.namespace.clone(),
            subject,
        }
    }

    /// The snapshot's host.
    pub fn host(&self) -> &str {
        &self.cluster
    }

    /// The snapshot's path.
    pub fn path(&self) -> String {
        match &self.subject {
            Subject::Pvc(pvc) => format!("/{}/{pvc}", self.namespace),
            Subject::Workload { workload, volume } => {
                format!("/{}/{workload}/{volume}", self.namespace)
            }
        }
    }

    /// The snapshot's labels: the identity's parts, and where it was read this time.
    pub fn labels(&self, pod: &PodInfo, volume: &str) -> Labels {
        let mut l = Labels::new();
        l.insert("cluster".into(), self.cluster.clone());
        l.insert("namespace".into(), self.namespace.clone());
        match &self.subject {
            Subject::Pvc(pvc) => {
                l.insert("pvc".into(), pvc.clone());
            }
            Subject::Workload { workload, .. } => {
                l.insert("workload".into(), workload.clone());
            }
        }
        l.insert("volume".into(), volume.to_string());
        l.insert("pod".into(), pod.name.clone());
        l.insert("node".into(), pod.node.clone());
        l
    }
}

/// The workload a pod belongs to: a StatefulSet (its emptyDirs go by pod name, one per
/// replica), the Deployment behind a ReplicaSet (the ReplicaSet's name less its
/// `pod-template-hash`), a DaemonSet per node, any other owner by name, else the pod itself.
fn workload(pod: &PodInfo, source: &Source) -> String {
    match &pod.owner {
        Some((kind, _)) if kind == "StatefulSet" && *source == Source::EmptyDir => pod.name.clone(),
        Some((kind, name)) if kind == "ReplicaSet" => {
            let suffix = pod.template_hash.as_ref().map(|h| format!("-{h}"));
            match suffix.as_deref().and_then(|s| name.strip_suffix(s)) {
                Some(deployment) => deployment.to_string(),
                None => match name.rsplit_once('-') {
                    Some((deployment, _)) if !deployment.is_empty() => deployment.to_string(),
                    _ => name.clone(),
                },
            }
        }
        Some((kind, name)) if kind == "DaemonSet" => format!("{name}@{}", pod.node),
        Some((_, name)) => name.clone(),
        None => pod.name.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(owner: Option<(&str, &str)>, hash: Option<&str>) -> PodInfo {
        PodInfo {
            namespace: "wp".into(),
            name: "web-7d9f8c6b5-abcde".into(),
            uid: "u".into(),
            node: "node-1".into(),
            owner: owner.map(|(k, n)| (k.into(), n.into())),
            template_hash: hash.map(str::to_string),
            ..Default::default()
        }
    }

    fn vol(name: &str, source: Source) -> PodVolume {
        PodVolume {
            name: name.into(),
            source,
            mounted: true,
        }
    }

    #[test]
    fn a_pvc_is_its_own_identity_whatever_the_pod() {
        let mut a = pod(Some(("StatefulSet", "postgresql")), None);
        a.name = "postgresql-0".into();
        let data = vol("data", Source::Claim("data-postgresql-0".into()));
        let id = Identity::of("prod", &a, &data);
        assert_eq!(id.host(), "prod");
        assert_eq!(id.path(), "/wp/data-postgresql-0");
        // Rescheduled: new UID, other node. Same identity.
        let mut b = a.clone();
        b.uid = "other".into();
        b.node = "node-9".into();
        assert_eq!(Identity::of("prod", &b, &data), id);
        let labels = id.labels(&b, "data");
        assert_eq!(labels["pvc"], "data-postgresql-0");
        assert_eq!(labels["node"], "node-9");
        assert_eq!(labels["pod"], "postgresql-0");
        assert_eq!(labels["namespace"], "wp");
        assert_eq!(labels["cluster"], "prod");
        assert_eq!(labels["volume"], "data");
    }

    #[test]
    fn other_volumes_go_by_workload() {
        let empty = vol("cache", Source::EmptyDir);
        // A Deployment's pods share one identity across ReplicaSets.
        let p = pod(Some(("ReplicaSet", "web-7d9f8c6b5")), Some("7d9f8c6b5"));
        assert_eq!(Identity::of("c", &p, &empty).path(), "/wp/web/cache");
        let p = pod(Some(("ReplicaSet", "web-5c4b3a")), None);
        assert_eq!(Identity::of("c", &p, &empty).path(), "/wp/web/cache");
        // A StatefulSet's emptyDir is per replica.
        let mut p = pod(Some(("StatefulSet", "pg")), None);
        p.name = "pg-1".into();
        assert_eq!(Identity::of("c", &p, &empty).path(), "/wp/pg-1/cache");
        let inline = vol("share", Source::InTree("azureFile"));
        assert_eq!(Identity::of("c", &p, &inline).path(), "/wp/pg/share");
        // A bare pod is its own workload.
        let p = pod(None, None);
        assert_eq!(
            Identity::of("c", &p, &empty).path(),
            "/wp/web-7d9f8c6b5-abcde/cache"
        );
        let labels = Identity::of("c", &p, &empty).labels(&p, "cache");
        assert_eq!(labels["workload"], "web-7d9f8c6b5-abcde");
        assert!(!labels.contains_key("pvc"));
    }
}
