//! Retention policies on a synthetic two-year history with known timestamps: one snapshot
//! every 6 hours (00, 06, 12, 18 UTC) from 2024-01-01 to 2025-12-31, every 100th tagged
//! `keep`. Each expected set below is written out from the calendar, not computed by the
//! code under test.

use std::collections::BTreeSet;

use std::collections::{HashMap, HashSet};

use cairn_engine::forget::{
    Dispute, GroupBy, Period, Policy, Span, TIME_TRUST, apply, emptied_groups, judge, plan,
};
use cairn_repo_format::Id;
use cairn_repo_format::snapshot::Snapshot;
use chrono::{DateTime, TimeZone, Utc};

fn at(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap()
}

fn snap(time: DateTime<Utc>, tags: &[&str], host: &str) -> Snapshot {
    serde_json::from_value(serde_json::json!({
        "time": time, "hostname": host, "paths": ["/data"], "tags": tags,
        "tree": Id([0; 32]), "program_version": "test",
    }))
    .unwrap()
}

/// The history, newest first (as `apply` wants it).
fn history() -> Vec<(Id, Snapshot)> {
    let mut out = Vec::new();
    let mut t = at(2024, 1, 1, 0);
    let mut n: u32 = 0;
    while t <= at(2025, 12, 31, 18) {
        let tags: &[&str] = if n.is_multiple_of(100) {
            &["keep"]
        } else {
            &[]
        };
        let mut id = [0u8; 32];
        id[..4].copy_from_slice(&n.to_be_bytes());
        out.push((Id(id), snap(t, tags, "node-a")));
        t += chrono::Duration::hours(6);
        n += 1;
    }
    out.reverse();
    out
}

fn kept(policy: &Policy) -> BTreeSet<DateTime<Utc>> {
    let h = history();
    apply(&h, policy, &Utc, now())
        .iter()
        .zip(&h)
        .filter(|(d, _)| d.keep)
        .map(|(_, (_, s))| s.time)
        .collect()
}

/// "Now" for the policies: a week after the history ends.
fn now() -> DateTime<Utc> {
    at(2026, 1, 8, 0)
}

fn set(times: impl IntoIterator<Item = DateTime<Utc>>) -> BTreeSet<DateTime<Utc>> {
    times.into_iter().collect()
}

#[test]
fn history_has_the_expected_shape() {
    // 2024 is a leap year: 366 + 365 days, 4 snapshots a day.
    assert_eq!(history().len(), (366 + 365) * 4);
}

#[test]
fn keep_last() {
    let p = Policy::default().keep(Period::Last, 5);
    assert_eq!(
        kept(&p),
        set([
            at(2025, 12, 31, 18),
            at(2025, 12, 31, 12),
            at(2025, 12, 31, 6),
            at(2025, 12, 31, 0),
            at(2025, 12, 30, 18)
        ])
    );
}

#[test]
fn keep_hourly_takes_one_per_hour_that_has_one() {
    let p = Policy::default().keep(Period::Hourly, 3);
    assert_eq!(
        kept(&p),
        set([
            at(2025, 12, 31, 18),
            at(2025, 12, 31, 12),
            at(2025, 12, 31, 6)
        ])
    );
}

#[test]
fn keep_daily_takes_the_newest_of_each_day() {
    let p = Policy::default().keep(Period::Daily, 7);
    assert_eq!(kept(&p), set((25..=31).map(|d| at(2025, 12, d, 18))));
}

#[test]
fn keep_weekly_uses_iso_weeks() {
    // 2025-12-29 is a Monday: Dec 29–31 belong to ISO week 2026-W01, whose newest snapshot is
    // Dec 31; the weeks before end on Sundays Dec 28, 21 and 14.
    let p = Policy::default().keep(Period::Weekly, 4);
    assert_eq!(
        kept(&p),
        set([
            at(2025, 12, 31, 18),
            at(2025, 12, 28, 18),
            at(2025, 12, 21, 18),
            at(2025, 12, 14, 18)
        ])
    );
}

#[test]
fn keep_monthly_and_yearly() {
    let p = Policy::default().keep(Period::Monthly, 12);
    assert_eq!(
        kept(&p),
        set((1..=12).map(|m| at(2025, m, last_day(2025, m), 18)))
    );
    let p = Policy::default().keep(Period::Yearly, 5);
    assert_eq!(
        kept(&p),
        set([at(2025, 12, 31, 18), at(2024, 12, 31, 18)]),
        "only two years have snapshots"
    );
}

fn last_day(y: i32, m: u32) -> u32 {
    match m {
        2 if y % 4 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[test]
fn combined_policy_is_the_union() {
    let p = Policy::default()
        .keep(Period::Daily, 7)
        .keep(Period::Weekly, 4)
        .keep(Period::Monthly, 3);
    let mut expected = set((25..=31).map(|d| at(2025, 12, d, 18)));
    expected.extend([at(2025, 12, 21, 18), at(2025, 12, 14, 18)]);
    expected.extend([at(2025, 11, 30, 18), at(2025, 10, 31, 18)]);
    assert_eq!(kept(&p), expected);
}

#[test]
fn unlimited_daily_keeps_one_per_day_of_the_whole_history() {
    let p = Policy::default().keep(Period::Daily, -1);
    assert_eq!(kept(&p).len(), 366 + 365);
}

#[test]
fn keep_within_counts_back_from_the_newest_snapshot() {
    let p = Policy {
        within: Some("2d".parse::<Span>().unwrap()),
        ..Default::default()
    };
    // Newer than 2025-12-29 18:00 (exclusive).
    let expected = set([
        at(2025, 12, 30, 0),
        at(2025, 12, 30, 6),
        at(2025, 12, 30, 12),
        at(2025, 12, 30, 18),
        at(2025, 12, 31, 0),
        at(2025, 12, 31, 6),
        at(2025, 12, 31, 12),
        at(2025, 12, 31, 18),
    ]);
    assert_eq!(kept(&p), expected);

    let mut p = Policy::default();
    p.within_periods[Period::Daily as usize] = Some("7d".parse().unwrap());
    assert_eq!(kept(&p), set((25..=31).map(|d| at(2025, 12, d, 18))));

    let mut p = Policy::default();
    p.within_periods[Period::Monthly as usize] = Some("1y".parse().unwrap());
    // Newer than 2024-12-31 18:00: the newest of each month of 2025.
    assert_eq!(
        kept(&p),
        set((1..=12).map(|m| at(2025, m, last_day(2025, m), 18)))
    );
}

#[test]
fn keep_tag_keeps_every_tagged_snapshot() {
    let p = Policy {
        tags: vec![vec!["keep".into()]],
        ..Default::default()
    };
    let all = history();
    let expected: BTreeSet<_> = all
        .iter()
        .filter(|(_, s)| s.tags.contains(&"keep".to_string()))
        .map(|(_, s)| s.time)
        .collect();
    assert_eq!(expected.len(), all.len().div_ceil(100));
    assert_eq!(kept(&p), expected);
}

#[test]
fn reasons_say_which_rule_kept_a_snapshot() {
    let h = history();
    let p = Policy::default()
        .keep(Period::Last, 1)
        .keep(Period::Daily, 2);
    let d = apply(&h, &p, &Utc, now());
    assert_eq!(d[0].reasons, vec!["last", "daily"]);
    assert!(!d[1].keep, "same day as the newest, and last 1 is used up");
    assert_eq!(d[4].reasons, vec!["daily"], "Dec 30 18:00");
}

#[test]
fn groups_apply_the_policy_separately() {
    let mut all = history();
    all.truncate(8);
    let other: Vec<_> = all
        .iter()
        .map(|(id, s)| {
            let mut s = s.clone();
            s.hostname = "node-b".into();
            let mut id = *id;
            id.0[31] = 1;
            (id, s)
        })
        .collect();
    all.extend(other);
    let by_host: GroupBy = "host".parse().unwrap();
    let groups = plan(
        all.clone(),
        by_host,
        &Policy::default().keep(Period::Last, 2),
        &Utc,
        now(),
    );
    assert_eq!(groups.len(), 2);
    for g in &groups {
        assert_eq!(
            g.snapshots.iter().filter(|s| s.2.keep).count(),
            2,
            "{}",
            g.key
        );
    }
    let one: GroupBy = "".parse().unwrap();
    let groups = plan(
        all,
        one,
        &Policy::default().keep(Period::Last, 2),
        &Utc,
        now(),
    );
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].snapshots.iter().filter(|s| s.2.keep).count(), 2);
}

#[test]
fn bad_policy_values_are_refused_with_the_format() {
    for bad in ["", "3", "3x", "d", "1.5d"] {
        let err = bad.parse::<Span>().unwrap_err().to_string();
        assert!(err.contains("1y6m"), "{bad:?}: {err}");
    }
    assert!("host,color".parse::<GroupBy>().is_err());
    assert_eq!("1y6m2d3h".parse::<Span>().unwrap().to_string(), "1y6m2d3h");
}

/// The ids of the kept snapshots.
fn kept_ids(group: &[(Id, Snapshot)], policy: &Policy, now: DateTime<Utc>) -> BTreeSet<Id> {
    apply(group, policy, &Utc, now)
        .iter()
        .zip(group)
        .filter(|(d, _)| d.keep)
        .map(|(_, (id, _))| *id)
        .collect()
}

fn id(n: u8) -> Id {
    Id([n; 32])
}

#[test]
fn claimed_times_the_storage_contradicts_are_judged_by_the_storage() {
    // Three real daily snapshots, stored when they say; then a writer with an append token
    // stores ten snapshots on one day, claiming the ten days after them (the future), and two
    // claiming the days before (the past).
    let real: Vec<(Id, Snapshot)> = (1..=3u8)
        .map(|d| (id(d), snap(at(2025, 12, 28 + d as u32, 12), &[], "n")))
        .collect();
    let mut stored: HashMap<Id, DateTime<Utc>> = real.iter().map(|(id, s)| (*id, s.time)).collect();
    let mut all = real.clone();
    for k in 0..12u8 {
        let claimed = if k < 10 {
            at(2026, 1, 2 + k as u32, 12)
        } else {
            at(2025, 6, 1 + k as u32, 12)
        };
        let fake = id(100 + k);
        all.push((fake, snap(claimed, &[], "n")));
        stored.insert(
            fake,
            at(2025, 12, 31, 13) + chrono::Duration::minutes(k as i64),
        );
    }
    // Trusting the claims, --keep-daily 3 keeps only forged snapshots.
    let mut trusting = all.clone();
    trusting.sort_by_key(|(id, s)| std::cmp::Reverse((s.time, *id)));
    let policy = Policy::default().keep(Period::Daily, 3);
    assert!(
        kept_ids(&trusting, &policy, now())
            .iter()
            .all(|i| i.0[0] >= 100)
    );

    let disputes = judge(&mut all, &stored);
    assert_eq!(disputes.len(), 12, "every forged snapshot is named");
    assert!(disputes.contains(&Dispute {
        id: id(100),
        claimed: at(2026, 1, 2, 12),
        stored: at(2025, 12, 31, 13),
    }));
    all.sort_by_key(|(id, s)| std::cmp::Reverse((s.time, *id)));
    let kept = kept_ids(&all, &policy, now());
    // Judged by the storage, the forgeries all fall on 2025-12-31 and keep one slot.
    assert!(kept.contains(&id(1)) && kept.contains(&id(2)), "{kept:?}");
    assert_eq!(kept.iter().filter(|i| i.0[0] >= 100).count(), 1);

    // Within a day the claim stands (a clock a little off, or a slow upload).
    let mut near = vec![(id(9), snap(at(2025, 12, 31, 0), &[], "n"))];
    let stored_near = HashMap::from([(id(9), at(2025, 12, 31, 0) + TIME_TRUST)]);
    assert!(judge(&mut near, &stored_near).is_empty());
    assert_eq!(near[0].1.time, at(2025, 12, 31, 0));
}

#[test]
fn keep_within_counts_from_now_when_the_newest_claims_the_future() {
    let h = history();
    let within = Policy {
        within: Some("2d".parse().unwrap()),
        ..Policy::default()
    };
    // A snapshot dated a year ahead, unchallenged (the storage gave no time).
    let mut forged = vec![(id(200), snap(at(2027, 1, 1, 0), &[], "node-a"))];
    forged.extend(h.iter().cloned());
    // Now is the history's last snapshot plus 6 hours: the last two days are kept.
    let now = at(2026, 1, 1, 0);
    let kept = kept_ids(&forged, &within, now);
    let expect: BTreeSet<Id> = forged
        .iter()
        .filter(|(_, s)| s.time > at(2025, 12, 30, 0))
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(kept, expect);
    assert_eq!(
        kept.len(),
        1 + 7,
        "the forgery and the seven snapshots of the last two days"
    );
}

#[test]
fn removing_every_snapshot_of_a_group_is_detected() {
    let a1 = (id(1), snap(at(2025, 1, 1, 0), &[], "node-a"));
    let a2 = (id(2), snap(at(2025, 1, 2, 0), &[], "node-a"));
    let b1 = (id(3), snap(at(2025, 1, 1, 0), &[], "node-b"));
    let all = vec![a1, a2, b1];
    let by_host: GroupBy = "host".parse().unwrap();
    let none: HashSet<Id> = HashSet::new();
    assert!(emptied_groups(&all, by_host, &none).is_empty());
    let one_of_a = HashSet::from([id(1)]);
    assert!(emptied_groups(&all, by_host, &one_of_a).is_empty());
    let all_of_a = HashSet::from([id(1), id(2)]);
    assert_eq!(emptied_groups(&all, by_host, &all_of_a), ["host node-a"]);
    let everything = HashSet::from([id(1), id(2), id(3)]);
    assert_eq!(emptied_groups(&all, by_host, &everything).len(), 2);
}
