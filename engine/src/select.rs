//! Choosing snapshots: the filters shared by `snapshots`, `restore`, `ls` and parent selection
//! (host, tag, label, path), and resolving `latest` or an id prefix to one snapshot.

use cairn_repo_format::snapshot::Snapshot;
use cairn_repo_format::{FileKind, Id, RepoError, Repository};

/// Snapshot filters; an empty list matches everything.
#[derive(Clone, Debug, Default)]
pub struct SnapshotFilter {
    /// Any of these hosts.
    pub hosts: Vec<String>,
    /// Each of these tags.
    pub tags: Vec<String>,
    /// Each of these `key=value` labels.
    pub labels: Vec<(String, String)>,
    /// Exactly these paths (in any order).
    pub paths: Vec<String>,
}

impl SnapshotFilter {
    /// Whether `s` passes.
    pub fn matches(&self, s: &Snapshot) -> bool {
        (self.hosts.is_empty() || self.hosts.contains(&s.hostname))
            && self.tags.iter().all(|t| s.tags.contains(t))
            && self.labels.iter().all(|(k, v)| s.labels.get(k) == Some(v))
            && (self.paths.is_empty() || {
                let mut a = self.paths.clone();
                let mut b = s.paths.clone();
                a.sort();
                b.sort();
                a == b
            })
    }
}

/// Why a snapshot could not be chosen.
#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    /// Nothing matched.
    #[error("no snapshot matches {spec:?}{hint}")]
    NoMatch {
        /// What was asked for.
        spec: String,
        /// Filter hint.
        hint: String,
    },
    /// A prefix matched several.
    #[error("snapshot id prefix {0:?} is ambiguous; give more digits")]
    Ambiguous(String),
    /// Not `latest` and not hex.
    #[error("{0:?} is not a snapshot id (`latest`, or a hexadecimal id or prefix)")]
    Invalid(String),
    /// Repository failure.
    #[error(transparent)]
    Repo(#[from] RepoError),
}

/// Every snapshot passing `filter`, oldest first by the time retention judges it by. A snapshot object that cannot be read or
/// opened (bit rot, a torn upload, a forged file) is left out and handed to `damaged`, so one
/// bad object never hides the others; only a failure to list or reach the storage is an
/// error.
pub fn list_with<S>(
    repo: &Repository<S>,
    filter: &SnapshotFilter,
    damaged: &mut dyn FnMut(Id, RepoError),
) -> Result<Vec<(Id, Snapshot)>, RepoError> {
    let mut out = Vec::new();
    for (id, stored) in repo.listed(FileKind::Snapshot)? {
        match repo.load_snapshot(&id) {
            Ok(snap) if filter.matches(&snap) => {
                out.push((crate::forget::judged_time(snap.time, stored), id, snap))
            }
            Ok(_) => {}
            Err(e @ RepoError::Backend(_)) if !is_not_found(&e) => return Err(e),
            Err(e) => damaged(id, e),
        }
    }
    // In the order retention judges them (`forget::judged_time`): a snapshot claiming a time
    // far from when it was stored cannot make itself `latest` for ever.
    out.sort_by_key(|(judged, id, _)| (*judged, *id));
    Ok(out.into_iter().map(|(_, id, s)| (id, s)).collect())
}

/// A snapshot deleted between the listing and the read (a concurrent `forget`).
fn is_not_found(e: &RepoError) -> bool {
    matches!(
        e,
        RepoError::Backend(cairn_repo_format::BackendError::NotFound { .. })
    )
}

/// [`list_with`], with damaged snapshots left out silently: for choosing among readable
/// snapshots. Listing commands use [`list_with`] and name what they left out.
pub fn list<S>(
    repo: &Repository<S>,
    filter: &SnapshotFilter,
) -> Result<Vec<(Id, Snapshot)>, RepoError> {
    list_with(repo, filter, &mut |_, _| {})
}

/// The newest readable snapshot passing `filter`.
pub fn latest_matching<S>(
    repo: &Repository<S>,
    filter: &SnapshotFilter,
) -> Result<Option<(Id, Snapshot)>, RepoError> {
    Ok(list(repo, filter)?.pop())
}

/// Resolves `latest` (within `filter`) or a unique id prefix. For `latest`, snapshots that
/// cannot be read are handed to `damaged` (a host names them: the newest snapshot may be
/// among them) and the latest readable one is the answer.
pub fn resolve<S>(
    repo: &Repository<S>,
    spec: &str,
    filter: &SnapshotFilter,
    damaged: &mut dyn FnMut(Id, RepoError),
) -> Result<(Id, Snapshot), SelectError> {
    if spec == "latest" {
        let hint = if filter.hosts.is_empty()
            && filter.tags.is_empty()
            && filter.labels.is_empty()
            && filter.paths.is_empty()
        {
            " (the repository has no snapshots)".to_string()
        } else {
            format!(" with filters {filter:?}")
        };
        // The latest readable snapshot; when none is readable, the damage is the answer.
        let mut bad = Vec::new();
        let found = list_with(repo, filter, &mut |id, e| bad.push((id, e)))?.pop();
        let mut bad = bad.into_iter();
        // When nothing is readable, the first damaged snapshot is the error itself.
        let first = match found {
            Some(_) => None,
            None => bad.next(),
        };
        for (id, e) in bad {
            damaged(id, e);
        }
        return match (found, first) {
            (Some(f), _) => Ok(f),
            (None, Some((_, e))) => Err(e.into()),
            (None, None) => Err(SelectError::NoMatch {
                spec: spec.into(),
                hint,
            }),
        };
    }
    let id = resolve_id(repo, spec)?;
    Ok((id, repo.load_snapshot(&id)?))
}

/// Resolves a unique id prefix to a stored snapshot object without reading it, so that one
/// that cannot be read can still be named (and removed by `forget`).
pub fn resolve_id<S>(repo: &Repository<S>, spec: &str) -> Result<Id, SelectError> {
    let lower = spec.to_ascii_lowercase();
    if lower.is_empty() || !lower.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(SelectError::Invalid(spec.into()));
    }
    let matches: Vec<Id> = repo
        .snapshot_ids()?
        .into_iter()
        .filter(|id| id.to_hex().starts_with(&lower))
        .collect();
    match matches.as_slice() {
        [] => Err(SelectError::NoMatch {
            spec: spec.into(),
            hint: String::new(),
        }),
        [id] => Ok(*id),
        _ => Err(SelectError::Ambiguous(spec.into())),
    }
}

/// The snapshots named by `specs` (ids, prefixes or `latest` within `filter`), or every
/// snapshot passing `filter` when none are named.
pub fn pick<S>(
    repo: &Repository<S>,
    specs: &[String],
    filter: &SnapshotFilter,
    damaged: &mut dyn FnMut(Id, RepoError),
) -> Result<Vec<(Id, Snapshot)>, SelectError> {
    if specs.is_empty() {
        return Ok(list_with(repo, filter, damaged)?);
    }
    specs
        .iter()
        .map(|s| resolve(repo, s, filter, &mut *damaged))
        .collect()
}
