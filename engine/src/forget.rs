//! Retention: which snapshots a `forget` policy keeps, and why. Pure: no I/O, so the rules
//! are tested on synthetic histories.
//!
//! The rules are restic's. Snapshots are grouped (by host and paths by default; also tags or
//! labels, so that one repository can keep a policy per volume). Inside a group, newest
//! first, a snapshot is kept when any rule wants it:
//! * `last N`: the N newest;
//! * `hourly/daily/weekly/monthly/yearly N`: the newest snapshot of each of the N most recent
//!   periods that have one (weeks are ISO weeks, periods are in the given time zone);
//! * `within D`: every snapshot less than D older than the group's newest;
//! * `within-hourly/... D`: the newest of each period less than D older than the group's newest;
//! * `tag`: every snapshot carrying all tags of any one of the listed tag sets.
//!
//! A count of -1 means unlimited.
//!
//! Two rules guard against writers that lie about time (a node holding an append token can
//! store snapshots with any `time`, `docs/design.md` §16.5). [`judge`] replaces a snapshot's
//! claimed time by the storage's own time of its object when the two differ by more than
//! [`TIME_TRUST`], so backdated or future-dated snapshots cannot push real ones out of the
//! periods. And the `within` rules measure from the group's newest snapshot or from now,
//! whichever is earlier: a snapshot dated in the future cannot move that point, and every
//! snapshot younger than D by the clock is kept (the floor).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use cairn_repo_format::Id;
use cairn_repo_format::snapshot::Snapshot;
use chrono::{DateTime, Datelike, Months, TimeZone, Timelike, Utc};

/// A calendar span as restic writes it: `1y6m`, `14d`, `36h` (years, months, days, hours).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    /// Years.
    pub years: u32,
    /// Months.
    pub months: u32,
    /// Days.
    pub days: u32,
    /// Hours.
    pub hours: u32,
}

/// A span that does not parse.
#[derive(Debug, thiserror::Error)]
#[error(
    "invalid duration {0:?}: use numbers with y (years), m (months), d (days), h (hours), like 1y6m or 36h"
)]
pub struct SpanError(String);

impl std::str::FromStr for Span {
    type Err = SpanError;
    fn from_str(s: &str) -> Result<Span, SpanError> {
        let bad = || SpanError(s.to_string());
        let mut span = Span::default();
        let mut num = String::new();
        let mut any = false;
        for c in s.trim().chars() {
            if c.is_ascii_digit() {
                num.push(c);
                continue;
            }
            let n: u32 = num.parse().map_err(|_| bad())?;
            num.clear();
            match c {
                'y' => span.years += n,
                'm' => span.months += n,
                'd' => span.days += n,
                'h' => span.hours += n,
                _ => return Err(bad()),
            }
            any = true;
        }
        if !num.is_empty() || !any {
            return Err(bad());
        }
        Ok(span)
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, u) in [
            (self.years, 'y'),
            (self.months, 'm'),
            (self.days, 'd'),
            (self.hours, 'h'),
        ] {
            if n > 0 {
                write!(f, "{n}{u}")?;
            }
        }
        Ok(())
    }
}

impl Span {
    /// `t` minus this span (calendar arithmetic; clamps at the start of time).
    pub fn before(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        t.checked_sub_months(Months::new(self.years * 12 + self.months))
            .and_then(|t| t.checked_sub_days(chrono::Days::new(self.days as u64)))
            .map(|t| t - chrono::Duration::hours(self.hours as i64))
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }
}

/// The period rules, in the order reasons are listed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Period {
    /// Each snapshot is its own period (`last`).
    Last,
    /// Hour.
    Hourly,
    /// Day.
    Daily,
    /// ISO week.
    Weekly,
    /// Month.
    Monthly,
    /// Year.
    Yearly,
}

impl Period {
    const ALL: [Period; 6] = [
        Period::Last,
        Period::Hourly,
        Period::Daily,
        Period::Weekly,
        Period::Monthly,
        Period::Yearly,
    ];

    fn name(self) -> &'static str {
        match self {
            Period::Last => "last",
            Period::Hourly => "hourly",
            Period::Daily => "daily",
            Period::Weekly => "weekly",
            Period::Monthly => "monthly",
            Period::Yearly => "yearly",
        }
    }

    fn bucket<Tz: TimeZone>(self, t: DateTime<Utc>, nr: usize, tz: &Tz) -> i64 {
        let t = t.with_timezone(tz);
        let (y, m, d, h) = (t.year() as i64, t.month() as i64, t.day() as i64, t.hour());
        match self {
            Period::Last => nr as i64,
            Period::Hourly => ((y * 100 + m) * 100 + d) * 100 + h as i64,
            Period::Daily => (y * 100 + m) * 100 + d,
            Period::Weekly => {
                let w = t.iso_week();
                w.year() as i64 * 100 + w.week() as i64
            }
            Period::Monthly => y * 100 + m,
            Period::Yearly => y,
        }
    }
}

/// A retention policy. Counts: `None` unset, `Some(-1)` unlimited.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// `--keep-last`, `--keep-hourly`, … indexed like [`Period::ALL`].
    pub counts: [Option<i64>; 6],
    /// `--keep-within`.
    pub within: Option<Span>,
    /// `--keep-within-hourly`, … indexed like [`Period::ALL`] (`Last` unused).
    pub within_periods: [Option<Span>; 6],
    /// `--keep-tag`: each entry is a set of tags that must all be present.
    pub tags: Vec<Vec<String>>,
}

impl Policy {
    /// Whether the policy keeps anything at all (an empty policy would remove everything).
    pub fn is_empty(&self) -> bool {
        self.counts.iter().all(Option::is_none)
            && self.within.is_none()
            && self.within_periods.iter().all(Option::is_none)
            && self.tags.is_empty()
    }

    /// Sets the count for `p`.
    pub fn keep(mut self, p: Period, n: i64) -> Policy {
        self.counts[p as usize] = Some(n);
        self
    }
}

/// What the policy decided for one snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Kept or removed.
    pub keep: bool,
    /// Why it is kept (empty when removed).
    pub reasons: Vec<String>,
}

/// How far a snapshot's claimed time may differ from the storage's time of its object
/// before retention judges it by the storage's time.
pub const TIME_TRUST: chrono::Duration = chrono::Duration::days(1);

/// A snapshot whose claimed time the storage contradicts (see [`judge`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dispute {
    /// The snapshot.
    pub id: Id,
    /// The time it claims.
    pub claimed: DateTime<Utc>,
    /// The storage's time of its object, which retention uses instead.
    pub stored: DateTime<Utc>,
}

/// The time retention judges a snapshot by: the one it `claimed`, unless the storage's time
/// of its object (`stored`) differs from it by more than [`TIME_TRUST`].
pub fn judged_time(claimed: DateTime<Utc>, stored: Option<DateTime<Utc>>) -> DateTime<Utc> {
    match stored {
        Some(at) if (claimed - at).abs() > TIME_TRUST => at,
        _ => claimed,
    }
}

/// Sets each snapshot's `time` to the one retention judges it by: its own, unless `stored`
/// (the storage's time of each snapshot object, where the storage has one) differs from it by
/// more than [`TIME_TRUST`]; then the stored time, and the snapshot is listed in the disputes.
pub fn judge(
    snapshots: &mut [(Id, Snapshot)],
    stored: &HashMap<Id, DateTime<Utc>>,
) -> Vec<Dispute> {
    let mut disputes = Vec::new();
    for (id, s) in snapshots.iter_mut() {
        let Some(&at) = stored.get(id) else { continue };
        if judged_time(s.time, Some(at)) != s.time {
            disputes.push(Dispute {
                id: *id,
                claimed: s.time,
                stored: at,
            });
            s.time = at;
        }
    }
    disputes
}

/// Applies `policy` to one group at time `now`. `group` must be sorted newest first; the
/// result is parallel to it.
pub fn apply<Tz: TimeZone>(
    group: &[(Id, Snapshot)],
    policy: &Policy,
    tz: &Tz,
    now: DateTime<Utc>,
) -> Vec<Decision> {
    let Some((_, newest)) = group.first() else {
        return Vec::new();
    };
    // The `within` rules count back from here: never from a time in the future.
    let newest = newest.time.min(now);
    let mut counts = policy.counts;
    let mut last: [Option<i64>; 6] = [None; 6];
    let mut last_within: [Option<i64>; 6] = [None; 6];
    group
        .iter()
        .enumerate()
        .map(|(nr, (_, s))| {
            let mut reasons = Vec::new();
            for set in &policy.tags {
                if set.iter().all(|t| s.tags.contains(t)) {
                    reasons.push(format!("tags {}", set.join(",")));
                }
            }
            if let Some(w) = policy.within
                && s.time > w.before(newest)
            {
                reasons.push(format!("within {w}"));
            }
            for p in Period::ALL {
                let i = p as usize;
                let b = p.bucket(s.time, nr, tz);
                if let Some(n) = counts[i]
                    && n != 0
                    && last[i] != Some(b)
                {
                    last[i] = Some(b);
                    if n > 0 {
                        counts[i] = Some(n - 1);
                    }
                    reasons.push(p.name().to_string());
                }
                if let Some(w) = policy.within_periods[i]
                    && s.time > w.before(newest)
                    && last_within[i] != Some(b)
                {
                    last_within[i] = Some(b);
                    reasons.push(format!("{} within {w}", p.name()));
                }
            }
            Decision {
                keep: !reasons.is_empty(),
                reasons,
            }
        })
        .collect()
}

/// Which snapshot fields form a group.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroupBy {
    /// Host name.
    pub host: bool,
    /// The set of backed-up paths.
    pub paths: bool,
    /// The set of tags.
    pub tags: bool,
    /// All labels.
    pub labels: bool,
}

/// A `--group-by` value that does not parse.
#[derive(Debug, thiserror::Error)]
#[error(
    "invalid --group-by {0:?}: use a comma-separated list of host, paths, tags, labels (or '')"
)]
pub struct GroupByError(String);

impl std::str::FromStr for GroupBy {
    type Err = GroupByError;
    fn from_str(s: &str) -> Result<GroupBy, GroupByError> {
        let mut g = GroupBy::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "host" => g.host = true,
                "paths" => g.paths = true,
                "tags" => g.tags = true,
                "labels" => g.labels = true,
                _ => return Err(GroupByError(s.to_string())),
            }
        }
        Ok(g)
    }
}

impl GroupBy {
    /// The group key of a snapshot, readable.
    pub fn key(&self, s: &Snapshot) -> String {
        let mut parts = Vec::new();
        if self.host {
            parts.push(format!("host {}", s.hostname));
        }
        if self.paths {
            let mut p = s.paths.clone();
            p.sort();
            parts.push(format!("paths [{}]", p.join(", ")));
        }
        if self.tags {
            let mut t = s.tags.clone();
            t.sort();
            parts.push(format!("tags [{}]", t.join(", ")));
        }
        if self.labels {
            let l: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            parts.push(format!("labels [{}]", l.join(", ")));
        }
        parts.join(", ")
    }
}

/// One group's outcome.
pub struct GroupResult {
    /// The group key.
    pub key: String,
    /// Snapshots newest first, with decisions.
    pub snapshots: Vec<(Id, Snapshot, Decision)>,
}

/// Groups `snapshots` and applies `policy` to each group at time `now`.
pub fn plan<Tz: TimeZone>(
    snapshots: Vec<(Id, Snapshot)>,
    group_by: GroupBy,
    policy: &Policy,
    tz: &Tz,
    now: DateTime<Utc>,
) -> Vec<GroupResult> {
    let mut groups: BTreeMap<String, Vec<(Id, Snapshot)>> = BTreeMap::new();
    for (id, s) in snapshots {
        groups.entry(group_by.key(&s)).or_default().push((id, s));
    }
    groups
        .into_iter()
        .map(|(key, mut group)| {
            group.sort_by_key(|(id, s)| std::cmp::Reverse((s.time, *id)));
            let decisions = apply(&group, policy, tz, now);
            GroupResult {
                key,
                snapshots: group
                    .into_iter()
                    .zip(decisions)
                    .map(|((id, s), d)| (id, s, d))
                    .collect(),
            }
        })
        .collect()
}

/// The groups (their keys) of which removing `remove` would leave no snapshot: forgetting a
/// whole group takes the user's explicit word (`cairn forget --force`).
pub fn emptied_groups(
    snapshots: &[(Id, Snapshot)],
    group_by: GroupBy,
    remove: &HashSet<Id>,
) -> Vec<String> {
    let mut left: BTreeMap<String, usize> = BTreeMap::new();
    for (id, s) in snapshots {
        let n = left.entry(group_by.key(s)).or_default();
        if !remove.contains(id) {
            *n += 1;
        }
    }
    left.into_iter()
        .filter(|(_, n)| *n == 0)
        .map(|(key, _)| key)
        .collect()
}

/// Removes a snapshot file (its data stays until `prune`).
pub fn remove<S>(
    repo: &cairn_repo_format::Repository<S>,
    id: &Id,
) -> Result<(), cairn_repo_format::RepoError> {
    use cairn_repo_format::{BackendError, FileKind};
    match repo.backend().delete(&FileKind::Snapshot.path(id)) {
        Ok(()) | Err(BackendError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
