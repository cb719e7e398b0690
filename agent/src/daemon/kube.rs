//! The agent's only contact with the Kubernetes API, kept thin so that the rest of the daemon
//! works on plain values: this node's pods as a watch stream (field selector
//! `spec.nodeName`, listed again after a dropped watch or a 410, with backoff), the bound
//! PV of a PVC, Events on pods (`events.k8s.io/v1`, repeated ones patched as a series), and
//! hooks run in a container through the exec API (a WebSocket).

use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolumeClaim, Pod};
use kube::api::{Api, AttachParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};

/// The API handles the agent uses.
#[derive(Clone)]
pub struct Kube {
    client: Client,
    recorder: Recorder,
    node: String,
}

/// Where a PVC's data lives.
pub struct Claim {
    /// The bound PV's name (`spec.volumeName`), which names the volume's directory.
    pub volume_name: Option<String>,
    /// `volumeMode: Block`.
    pub block: bool,
}

/// How a hook ended, when it did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// The command ran and failed.
    #[error("exited with {status}{}", if .stderr.is_empty() { String::new() } else { format!(": {}", .stderr.trim()) })]
    Failed {
        /// The status the API server reported.
        status: String,
        /// What it wrote to stderr (the last 1 KiB).
        stderr: String,
    },
    /// It did not finish in time.
    #[error("did not finish within {0:?}")]
    Timeout(Duration),
    /// It could not be started.
    #[error("could not be started: {0}")]
    Api(#[from] kube::Error),
}

impl Kube {
    /// A client from the in-cluster configuration, else `KUBECONFIG` (an `http://` server
    /// works too), with Events reported as `cairn-agent` on `node`.
    pub async fn connect(node: &str) -> Result<Kube, kube::Error> {
        let config = kube::Config::infer()
            .await
            .map_err(kube::Error::InferConfig)?;
        let client = Client::try_from(config)?;
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "cairn-agent".into(),
                instance: Some(node.to_string()),
            },
        );
        Ok(Kube {
            client,
            recorder,
            node: node.to_string(),
        })
    }

    /// This node's pods: a reflector store and the stream of changes that feeds it. The
    /// stream never ends; errors in it are watch failures that it recovers from.
    pub fn pods(
        &self,
        node: &str,
    ) -> (
        Store<Pod>,
        impl Stream<Item = Result<watcher::Event<Pod>, watcher::Error>> + Send + use<>,
    ) {
        let api: Api<Pod> = Api::all(self.client.clone());
        let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
        let (store, writer) = reflector::store();
        let stream = reflector::reflector(writer, watcher(api, config).default_backoff()).boxed();
        (store, stream)
    }

    /// The PVC `name` in `namespace`.
    pub async fn claim(&self, namespace: &str, name: &str) -> Result<Claim, kube::Error> {
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), namespace);
        let pvc = api.get(name).await?;
        let spec = pvc.spec.unwrap_or_default();
        Ok(Claim {
            volume_name: spec.volume_name,
            block: spec.volume_mode.as_deref() == Some("Block"),
        })
    }

    /// Publishes an Event on `pod`, about one of its volumes if `volume` names one (as the
    /// related object `spec.volumes{NAME}`, so that each volume's events are their own
    /// series); a failure is returned for the caller to log.
    pub async fn event(
        &self,
        pod: &ObjectReference,
        volume: Option<&str>,
        warning: bool,
        reason: &str,
        note: String,
    ) -> Result<(), kube::Error> {
        // The API server refuses notes over 1 KiB.
        let mut note = note;
        if note.len() > 1024 {
            let mut cut = 1020;
            while !note.is_char_boundary(cut) {
                cut -= 1;
            }
            note.truncate(cut);
            note.push_str(" ...");
        }
        let related = volume.map(|v| ObjectReference {
            field_path: Some(format!("spec.volumes{{{v}}}")),
            ..pod.clone()
        });
        if !warning {
            // Each success is its own Event naming its snapshot: a series would keep the
            // first one's note.
            return self.create_event(pod, related, reason, note).await;
        }
        let ev = Event {
            type_: EventType::Warning,
            reason: reason.into(),
            note: Some(note),
            action: "Backup".into(),
            secondary: related,
        };
        self.recorder.publish(&ev, pod).await
    }

    /// Creates a new Normal Event (never merged into a series).
    async fn create_event(
        &self,
        pod: &ObjectReference,
        related: Option<ObjectReference>,
        reason: &str,
        note: String,
    ) -> Result<(), kube::Error> {
        use k8s_openapi::api::events::v1::Event as K8sEvent;
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
        let now = k8s_openapi::jiff::Timestamp::now();
        let namespace = pod.namespace.clone().unwrap_or_else(|| "default".into());
        let name = format!(
            "{}.{:x}",
            pod.name.as_deref().unwrap_or("pod"),
            now.as_nanosecond()
        );
        let ev = K8sEvent {
            metadata: ObjectMeta {
                name: Some(name),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            event_time: Some(MicroTime(now)),
            action: Some("Backup".into()),
            reason: Some(reason.into()),
            note: Some(note),
            type_: Some("Normal".into()),
            regarding: Some(pod.clone()),
            related,
            reporting_controller: Some("cairn-agent".into()),
            reporting_instance: Some(self.node.clone()),
            ..Default::default()
        };
        Api::<K8sEvent>::namespaced(self.client.clone(), &namespace)
            .create(&kube::api::PostParams::default(), &ev)
            .await
            .map(|_| ())
    }

    /// Sets an annotation on a pod (`--annotate-pods`).
    pub async fn annotate(
        &self,
        namespace: &str,
        pod: &str,
        key: &str,
        value: &str,
    ) -> Result<(), kube::Error> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let patch = serde_json::json!({ "metadata": { "annotations": { key: value } } });
        api.patch(pod, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
    }

    /// Runs `command` in `container` of a pod and waits at most `timeout` for it.
    pub async fn exec(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        command: &[String],
        timeout: Duration,
    ) -> Result<(), HookError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let params = AttachParams::default()
            .container(container)
            .stdin(false)
            .stdout(true)
            .stderr(true);
        let run = async {
            let mut process = api.exec(pod, command.to_vec(), &params).await?;
            let status = process.take_status();
            let mut stderr = process.stderr();
            let mut stdout = process.stdout();
            // Drain both streams (a full pipe would stall the command), keeping stderr's tail.
            let drain_out = async {
                if let Some(out) = stdout.as_mut() {
                    let mut sink = tokio::io::sink();
                    let _ = tokio::io::copy(out, &mut sink).await;
                }
            };
            let drain_err = async {
                let mut tail = Vec::new();
                if let Some(err) = stderr.as_mut() {
                    use tokio::io::AsyncReadExt;
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = err.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        tail.extend_from_slice(&buf[..n]);
                        if tail.len() > 1024 {
                            tail.drain(..tail.len() - 1024);
                        }
                    }
                }
                tail
            };
            let ((), tail, status) = tokio::join!(drain_out, drain_err, async {
                match status {
                    Some(s) => s.await,
                    None => None,
                }
            });
            drop((stdout, stderr));
            let _ = process.join().await;
            let stderr = String::from_utf8_lossy(&tail).into_owned();
            match status {
                Some(s) if s.status.as_deref() == Some("Success") => Ok(()),
                Some(s) => Err(HookError::Failed {
                    status: exit_status(&s),
                    stderr,
                }),
                None => Err(HookError::Failed {
                    status: "no status from the API server".into(),
                    stderr,
                }),
            }
        };
        match tokio::time::timeout(timeout, run).await {
            Ok(r) => r,
            Err(_) => Err(HookError::Timeout(timeout)),
        }
    }
}

/// "exit code N" from an exec Status, else its message.
fn exit_status(s: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Status) -> String {
    let code = s
        .details
        .as_ref()
        .and_then(|d| d.causes.as_ref())
        .and_then(|c| c.iter().find(|c| c.reason.as_deref() == Some("ExitCode")))
        .and_then(|c| c.message.clone());
    match code {
        Some(code) => format!("exit code {code}"),
        None => s.message.clone().unwrap_or_else(|| "failure".to_string()),
    }
}

/// The reference Events on `pod` point at.
pub fn reference(namespace: &str, name: &str, uid: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some(Pod::api_version(&()).into_owned()),
        kind: Some(Pod::kind(&()).into_owned()),
        namespace: Some(namespace.into()),
        name: Some(name.into()),
        uid: Some(uid.into()),
        ..Default::default()
    }
}
