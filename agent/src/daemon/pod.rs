//! What the agent needs of a pod, read from the API object without `unwrap()`: its identity
//! fields, its phase, its volumes (with what backs each one and whether a container mounts
//! it) and its annotations. Everything else in the daemon works on this value, so it can be
//! tested without Kubernetes types.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, Volume};

/// One pod, as the agent sees it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodInfo {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID: the directory under `<kubelet root>/pods/`.
    pub uid: String,
    /// The node it is bound to.
    pub node: String,
    /// `status.phase == Running` and no deletion timestamp.
    pub running: bool,
    /// Being deleted.
    pub deleting: bool,
    /// Its annotations.
    pub annotations: BTreeMap<String, String>,
    /// Its volumes, in spec order.
    pub volumes: Vec<PodVolume>,
    /// Its owner, when a controller owns it: (kind, name).
    pub owner: Option<(String, String)>,
    /// The `pod-template-hash` label a Deployment's ReplicaSet sets.
    pub template_hash: Option<String>,
    /// Its containers' names, in spec order (hooks run in one of them).
    pub containers: Vec<String>,
}

/// One volume of a pod.
#[derive(Clone, Debug, PartialEq)]
pub struct PodVolume {
    /// The volume's name in the pod spec.
    pub name: String,
    /// What backs it.
    pub source: Source,
    /// Some container mounts it (`volumeMounts`), or uses it as a device (`volumeDevices`).
    pub mounted: bool,
}

/// What backs a volume, as far as backup cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// `emptyDir` (a plain directory under the pod's directory, or tmpfs).
    EmptyDir,
    /// A PersistentVolumeClaim.
    Claim(String),
    /// A generic ephemeral volume: the claim is `<pod>-<volume>`.
    Ephemeral(String),
    /// A CSI inline volume.
    Csi,
    /// In-tree volumes that hold data: azureDisk, azureFile, nfs, ...; the plugin name.
    InTree(&'static str),
    /// `hostPath`: not under the kubelet root.
    HostPath,
    /// configMap, secret, downwardAPI, projected: generated, never backed up.
    Generated(&'static str),
    /// Anything else.
    Other,
}

impl Source {
    /// The claim behind it, for a PVC or a generic ephemeral volume.
    pub fn claim(&self) -> Option<&str> {
        match self {
            Source::Claim(c) | Source::Ephemeral(c) => Some(c),
            _ => None,
        }
    }

    /// Data that outlives the pod: what `--default-volumes` backs up.
    pub fn is_persistent(&self) -> bool {
        matches!(
            self,
            Source::Claim(_) | Source::Ephemeral(_) | Source::InTree(_)
        )
    }
}

impl PodInfo {
    /// Reads a pod object. `None` when it lacks what every pod the API server returns has
    /// (name, namespace, UID).
    pub fn from_pod(pod: &Pod) -> Option<PodInfo> {
        let meta = &pod.metadata;
        let (namespace, name, uid) = (
            meta.namespace.clone()?,
            meta.name.clone()?,
            meta.uid.clone()?,
        );
        let spec = pod.spec.as_ref();
        let deleting = meta.deletion_timestamp.is_some();
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        let mut mounted = std::collections::HashSet::new();
        let mut containers = Vec::new();
        for c in spec.map(|s| s.containers.as_slice()).unwrap_or_default() {
            containers.push(c.name.clone());
            for m in c.volume_mounts.iter().flatten() {
                mounted.insert(m.name.clone());
            }
            for d in c.volume_devices.iter().flatten() {
                mounted.insert(d.name.clone());
            }
        }
        let volumes = spec
            .and_then(|s| s.volumes.as_ref())
            .map(|vs| {
                vs.iter()
                    .map(|v| PodVolume {
                        name: v.name.clone(),
                        source: source_of(&name, v),
                        mounted: mounted.contains(&v.name),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let owner = meta
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true))
            .map(|o| (o.kind.clone(), o.name.clone()));
        Some(PodInfo {
            namespace,
            uid,
            node: spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
            running: phase == Some("Running") && !deleting,
            deleting,
            annotations: meta.annotations.clone().unwrap_or_default(),
            volumes,
            owner,
            template_hash: meta
                .labels
                .as_ref()
                .and_then(|l| l.get("pod-template-hash").cloned()),
            containers,
            name,
        })
    }
}

fn source_of(pod: &str, v: &Volume) -> Source {
    if v.empty_dir.is_some() {
        Source::EmptyDir
    } else if let Some(c) = &v.persistent_volume_claim {
        Source::Claim(c.claim_name.clone())
    } else if v.ephemeral.is_some() {
        Source::Ephemeral(format!("{pod}-{}", v.name))
    } else if v.csi.is_some() {
        Source::Csi
    } else if v.azure_disk.is_some() {
        Source::InTree("azureDisk")
    } else if v.azure_file.is_some() {
        Source::InTree("azureFile")
    } else if v.nfs.is_some() {
        Source::InTree("nfs")
    } else if v.iscsi.is_some() {
        Source::InTree("iscsi")
    } else if v.host_path.is_some() {
        Source::HostPath
    } else if v.config_map.is_some() {
        Source::Generated("configMap")
    } else if v.secret.is_some() {
        Source::Generated("secret")
    } else if v.downward_api.is_some() {
        Source::Generated("downwardAPI")
    } else if v.projected.is_some() {
        Source::Generated("projected")
    } else {
        Source::Other
    }
}
