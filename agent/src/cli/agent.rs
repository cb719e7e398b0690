//! `cairn agent`: validates the flags into the daemon's settings and runs it until SIGTERM.

use anyhow::{Context, Result, bail};
use cairn_engine::PasswordSource;

use super::args::AgentArgs;
use super::{Ctx, Outcome};
use crate::daemon::{self, schedule::Schedule};

pub fn run(ctx: &Ctx, a: AgentArgs) -> Result<Outcome> {
    let settings = settings(ctx, a)?;
    daemon::run(settings, ctx.cx().cancel.clone())?;
    Ok(Outcome::Success)
}

fn settings(ctx: &Ctx, a: AgentArgs) -> Result<daemon::Settings> {
    let repo = ctx.settings()?;
    if matches!(repo.password, PasswordSource::Prompt(_)) {
        bail!(
            "the agent reads its password from a file or the environment: set CAIRN_PASSWORD_FILE (a mounted Secret) or CAIRN_PASSWORD"
        );
    }
    if a.node_name.trim().is_empty() {
        bail!(
            "--node-name (CAIRN_NODE_NAME) is empty: set it from the downward API (spec.nodeName)"
        );
    }
    if a.cluster.trim().is_empty() || a.cluster.contains('/') {
        bail!(
            "--cluster (CAIRN_CLUSTER) {:?} must be a non-empty name without '/': it is every snapshot's host",
            a.cluster
        );
    }
    if a.max_concurrent == 0 {
        bail!("--max-concurrent must be at least 1");
    }
    let schedule: Schedule = a
        .schedule
        .parse()
        .with_context(|| "--schedule (CAIRN_SCHEDULE)".to_string())?;
    let metrics_listen = a
        .metrics_listen
        .as_deref()
        .map(|s| {
            s.parse().with_context(|| {
                format!("--metrics-listen {s:?} is not an address like 0.0.0.0:9090")
            })
        })
        .transpose()?;
    Ok(daemon::Settings {
        node: a.node_name,
        cluster: a.cluster,
        kubelet_root: a.kubelet_root,
        schedule,
        max_concurrent: a.max_concurrent,
        metrics_listen,
        default_volumes: a.default_volumes,
        annotate_pods: a.annotate_pods,
        workers: a.workers,
        repo,
    })
}
