//! Which snapshots a retention policy keeps (`vault forget`, and the agent's retention step).
//!
//! The rules are restic's: a snapshot is kept when any rule keeps it. `keep_last N` keeps the
//! newest N; `keep_within D` keeps those taken within D of the newest one; each calendar rule
//! (`quarter_hourly`, `hourly`, `daily`, `weekly`, `monthly`, `yearly`) walks the snapshots from
//! the newest and keeps the newest one of each of the last N periods that have one. Periods are
//! in UTC; weeks are ISO weeks (starting on Monday). Snapshots are judged per series: those of the
//! same set of sources. Whatever the rules say, these are never forgotten: the last-known-good,
//! any snapshot newer than it (it may become the next one), and a safety snapshot younger than
//! [`SAFETY_KEEP`] (safety snapshots are not counted by the calendar rules, which are about the
//! regular series). Forgetting only removes manifests; the space comes back with `vault prune`.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::audit::AuditRecord;
use crate::error::Result;
use crate::id::SnapshotId;
use crate::vault::Vault;
use crate::vaultfile::{Keep, Retention};

/// How long a safety snapshot is kept whatever the policy.
pub const SAFETY_KEEP: Duration = Duration::from_secs(7 * 24 * 3600);

/// Why a snapshot is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The last-known-good.
    Lkg,
    /// Newer than the last-known-good.
    NewerThanLkg,
    /// A safety snapshot younger than 7 days.
    RecentSafety,
    Last,
    Within,
    QuarterHourly,
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

impl Reason {
    pub fn label(self) -> &'static str {
        match self {
            Reason::Lkg => "last-known-good",
            Reason::NewerThanLkg => "newer than the last-known-good",
            Reason::RecentSafety => "safety snapshot younger than 7 days",
            Reason::Last => "keep_last",
            Reason::Within => "keep_within",
            Reason::QuarterHourly => "keep_quarter_hourly",
            Reason::Hourly => "keep_hourly",
            Reason::Daily => "keep_daily",
            Reason::Weekly => "keep_weekly",
            Reason::Monthly => "keep_monthly",
            Reason::Yearly => "keep_yearly",
        }
    }
}

/// A snapshot as retention sees it.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub id: SnapshotId,
    pub time: SystemTime,
    /// The series: snapshots with the same key are judged together.
    pub series: String,
    pub safety: bool,
}

/// The verdict on one snapshot: kept for these reasons, or forgotten when there are none.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub id: SnapshotId,
    #[serde(skip)]
    pub time: SystemTime,
    pub keep: Vec<Reason>,
}

impl Decision {
    pub fn kept(&self) -> bool {
        !self.keep.is_empty()
    }
}

fn secs(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64) - 1,
    }
}

/// (year, month) in UTC of a day count since 1970-01-01 (Howard Hinnant's civil_from_days).
fn year_month(days: i64) -> (i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month)
}

/// The period a calendar rule puts a time in.
fn period(rule: Reason, t: SystemTime) -> i64 {
    let s = secs(t);
    let days = s.div_euclid(86_400);
    match rule {
        Reason::QuarterHourly => s.div_euclid(900),
        Reason::Hourly => s.div_euclid(3600),
        Reason::Daily => days,
        // 1970-01-01 was a Thursday: shifting by 3 days makes weeks start on Monday.
        Reason::Weekly => (days + 3).div_euclid(7),
        Reason::Monthly => {
            let (y, m) = year_month(days);
            y * 12 + m
        }
        Reason::Yearly => year_month(days).0,
        _ => unreachable!("invariant: only calendar rules have periods"),
    }
}

/// Applies `policy` to `snaps`; `lkg` is the last-known-good, `now` dates safety snapshots.
/// Returns one decision per snapshot, newest first.
pub fn apply(
    policy: &Retention,
    snaps: &[Candidate],
    lkg: Option<SnapshotId>,
    now: SystemTime,
) -> Vec<Decision> {
    let lkg_time = lkg.and_then(|id| snaps.iter().find(|c| c.id == id).map(|c| c.time));
    let mut order: Vec<&Candidate> = snaps.iter().collect();
    order.sort_by(|a, b| b.time.cmp(&a.time).then(b.id.cmp(&a.id)));
    let mut keep: BTreeMap<SnapshotId, Vec<Reason>> = BTreeMap::new();
    for c in &order {
        let mut r = Vec::new();
        if Some(c.id) == lkg {
            r.push(Reason::Lkg);
        } else if !c.safety && lkg_time.is_some_and(|t| c.time > t) {
            r.push(Reason::NewerThanLkg);
        }
        if c.safety && now.duration_since(c.time).unwrap_or_default() < SAFETY_KEEP {
            r.push(Reason::RecentSafety);
        }
        keep.insert(c.id, r);
    }
    // The policy, series by series, over the regular (non-safety) snapshots.
    let mut series: BTreeMap<&str, Vec<&Candidate>> = BTreeMap::new();
    for c in order.iter().filter(|c| !c.safety) {
        series.entry(c.series.as_str()).or_default().push(c);
    }
    for list in series.values() {
        let newest = list.first().map(|c| c.time);
        for (i, c) in list.iter().enumerate() {
            let r = keep
                .get_mut(&c.id)
                .expect("invariant: every candidate has an entry");
            if policy
                .keep_last
                .limit()
                .is_none_or(|n| (i as u64) < u64::from(n))
            {
                r.push(Reason::Last);
            }
            if !policy.keep_within.is_zero()
                && newest.is_some_and(|n| {
                    n.duration_since(c.time).unwrap_or_default() <= policy.keep_within
                })
            {
                r.push(Reason::Within);
            }
        }
        let rules = [
            (Reason::QuarterHourly, policy.keep_quarter_hourly),
            (Reason::Hourly, policy.keep_hourly),
            (Reason::Daily, policy.keep_daily),
            (Reason::Weekly, policy.keep_weekly),
            (Reason::Monthly, policy.keep_monthly),
            (Reason::Yearly, policy.keep_yearly),
        ];
        for (rule, limit) in rules {
            if limit == Keep::NONE {
                continue;
            }
            let mut used = 0u64;
            let mut last = None;
            for c in list {
                if limit.limit().is_some_and(|n| used >= u64::from(n)) {
                    break;
                }
                let p = period(rule, c.time);
                if last != Some(p) {
                    last = Some(p);
                    used += 1;
                    keep.get_mut(&c.id)
                        .expect("invariant: every candidate has an entry")
                        .push(rule);
                }
            }
        }
    }
    order
        .iter()
        .map(|c| Decision {
            id: c.id,
            time: c.time,
            keep: keep.remove(&c.id).unwrap_or_default(),
        })
        .collect()
}

/// What `forget` did (or, dry, would do).
#[derive(Debug, Clone, Serialize)]
pub struct ForgetReport {
    pub dry_run: bool,
    pub snapshots: usize,
    pub forgotten: usize,
    /// Every snapshot, newest first, with the rules that keep it (none: forgotten).
    pub decisions: Vec<Decision>,
}

/// Each snapshot's time as retention judges it: its manifest's, but never earlier than its
/// parent's. A snapshot is taken after its parent, so one stamped earlier was taken after the
/// wall clock went backwards; judged by its stamp, the newest snapshot would count as old and be
/// forgotten by `keep_last` although it may be the next last-known-good. It is placed just after
/// its parent instead. Snapshots without a readable time are left out.
pub(crate) fn ordered_times(snaps: &[crate::vault::Snapshot]) -> BTreeMap<SnapshotId, SystemTime> {
    let own: BTreeMap<SnapshotId, (SystemTime, Option<SnapshotId>)> = snaps
        .iter()
        .filter_map(|(id, m)| Some((*id, (m.system_time()?, m.parent))))
        .collect();
    let mut out = BTreeMap::new();
    for id in own.keys() {
        // The chain of ancestors still present, nearest first (bounded: ids are hashes, so a
        // cycle needs a forged manifest, and then the walk just stops).
        let mut chain = vec![*id];
        while let Some(p) = own[chain.last().expect("invariant: chain is non-empty")].1 {
            if !own.contains_key(&p) || chain.contains(&p) || out.contains_key(&p) {
                break;
            }
            chain.push(p);
        }
        let mut floor: Option<SystemTime> = own[chain.last().expect("invariant: non-empty")]
            .1
            .and_then(|p| out.get(&p).copied());
        for c in chain.iter().rev() {
            let t = own[c].0;
            let t = match floor {
                Some(f) if t <= f => f + Duration::from_nanos(1),
                _ => t,
            };
            out.insert(*c, t);
            floor = Some(t);
        }
    }
    out
}

/// The series a manifest belongs to: its sources (names and paths), in order.
fn series_of(m: &crate::manifest::Manifest) -> String {
    let mut parts: Vec<String> = m
        .paths
        .iter()
        .map(|p| format!("{}={}", p.name, p.path))
        .collect();
    parts.sort();
    parts.join("\n")
}

/// Applies `policy` to the vault's snapshots and removes the manifests it does not keep (all of
/// them judged first, then removed one by one: each removal is atomic, and a crash leaves a vault
/// with fewer snapshots, never a broken one). Needs a writer lock (`LockMode::Append` or stronger).
pub fn forget(vault: &Vault, policy: &Retention, dry_run: bool) -> Result<ForgetReport> {
    let report = judge_and_remove(vault, policy, dry_run, &|id| vault.remove_manifest(id))?;
    if !dry_run {
        vault.audit(&forget_record(&report, None))?;
    }
    Ok(report)
}

/// Applies `policy` to a remote's snapshots, read through its mirror `mirror` (see
/// [`crate::remote`]): each forgotten manifest is deleted on the remote, then from the mirror.
/// The audit record goes to `local`, the vault that owns the remote.
pub fn forget_remote(
    local: &Vault,
    mirror: &Vault,
    backend: &crate::backend::DynBackend,
    policy: &Retention,
    dry_run: bool,
) -> Result<ForgetReport> {
    let report = judge_and_remove(mirror, policy, dry_run, &|id| {
        backend.delete(&format!("snapshots/{id}.json"))?;
        mirror.remove_manifest(id)
    })?;
    if !dry_run {
        local.audit(&forget_record(&report, Some(&backend.location())))?;
    }
    Ok(report)
}

fn forget_record(report: &ForgetReport, remote: Option<&str>) -> AuditRecord {
    let forgotten: Vec<String> = report
        .decisions
        .iter()
        .filter(|d| !d.kept())
        .map(|d| d.id.to_hex())
        .collect();
    let mut detail = serde_json::json!({
        "forgotten": forgotten,
        "kept": report.snapshots - report.forgotten,
    });
    if let Some(r) = remote {
        detail["remote"] = r.into();
    }
    AuditRecord::new("forget", None, "ok").with_detail(detail)
}

fn judge_and_remove(
    vault: &Vault,
    policy: &Retention,
    dry_run: bool,
    remove: &dyn Fn(&SnapshotId) -> Result<()>,
) -> Result<ForgetReport> {
    let (snaps, _) = vault.snapshots()?;
    let lkg = crate::lkg::read(vault)?.map(|r| r.snapshot);
    let times = ordered_times(&snaps);
    let candidates: Vec<Candidate> = snaps
        .iter()
        .filter_map(|(id, m)| {
            Some(Candidate {
                id: *id,
                time: *times.get(id)?,
                series: series_of(m),
                safety: m.safety,
            })
        })
        .collect();
    // Without the LKG among the candidates, "newer than the LKG" cannot be judged: refuse
    // rather than forget what may be the next restore point.
    if let Some(l) = lkg.filter(|l| !candidates.iter().any(|c| c.id == *l)) {
        return Err(crate::Error::Invalid(format!(
            "the last-known-good {} has no readable manifest with a time; refusing to forget \
             anything (run `vault verify`)",
            l.short()
        )));
    }
    let decisions = apply(policy, &candidates, lkg, SystemTime::now());
    let gone: Vec<SnapshotId> = decisions
        .iter()
        .filter(|d| !d.kept())
        .map(|d| d.id)
        .collect();
    if !dry_run {
        for id in &gone {
            remove(id)?;
            crate::crashpoint::at("forget-mid-remove");
        }
    }
    Ok(ForgetReport {
        dry_run,
        snapshots: decisions.len(),
        forgotten: gone.len(),
        decisions,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    const MIN: u64 = 60;
    const HOUR: u64 = 3600;
    const DAY: u64 = 86_400;

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(s)
    }

    fn id(n: u64) -> SnapshotId {
        let mut b = [0u8; 32];
        b[..8].copy_from_slice(&n.to_be_bytes());
        SnapshotId(b)
    }

    fn none() -> Retention {
        Retention {
            keep_last: Keep::NONE,
            keep_within: Duration::ZERO,
            keep_quarter_hourly: Keep::NONE,
            keep_hourly: Keep::NONE,
            keep_daily: Keep::NONE,
            keep_weekly: Keep::NONE,
            keep_monthly: Keep::NONE,
            keep_yearly: Keep::NONE,
        }
    }

    /// Snapshots every 15 minutes from `start` for `count` slots, ids = time in seconds.
    fn timeline(start: u64, count: u64) -> Vec<Candidate> {
        (0..count)
            .map(|i| {
                let t = start + i * 15 * MIN;
                Candidate {
                    id: id(t),
                    time: at(t),
                    series: "www".into(),
                    safety: false,
                }
            })
            .collect()
    }

    fn kept(d: &[Decision]) -> BTreeSet<u64> {
        d.iter()
            .filter(|d| d.kept())
            .map(|d| secs(d.time) as u64)
            .collect()
    }

    #[test]
    fn calendar_helpers_agree_with_known_dates() {
        // 2026-11-24 is day 20781 since the epoch, a Tuesday.
        assert_eq!(year_month(20_781), (2026, 11));
        assert_eq!(year_month(20_453), (2025, 12)); // 2025-12-31
        assert_eq!(year_month(20_454), (2026, 1));
        assert_eq!(year_month(0), (1970, 1));
        assert_eq!(year_month(11_016), (2000, 2)); // 2000-02-29
        assert_eq!(year_month(11_017), (2000, 3));
        // Monday 2026-11-23 and Sunday 2026-11-29 share a week; Monday 2026-11-30 does not.
        let w = |d: u64| period(Reason::Weekly, at(d * DAY));
        assert_eq!(w(20_780), w(20_786));
        assert_ne!(w(20_786), w(20_787));
        assert_ne!(w(20_779), w(20_780));
    }

    /// A year of 15-minute snapshots under the default policy, against survivors worked out by
    /// hand from the calendar.
    #[test]
    fn a_year_of_quarter_hourly_snapshots_under_the_default_policy() {
        // 2025-01-01T00:00Z is day 20089; the year ends 2025-12-31T23:45Z (a Wednesday).
        let start = 20_089 * DAY;
        let snaps = timeline(start, 365 * 96);
        assert_eq!(snaps.len(), 35_040);
        let end = start + 365 * DAY; // 2026-01-01T00:00Z
        let last = end - 15 * MIN;
        let d = apply(&Retention::default(), &snaps, None, at(end));
        let got = kept(&d);
        let mut want = BTreeSet::new();
        // 96 quarter hours: the last 24 h.
        for i in 0..96 {
            want.insert(last - i * 15 * MIN);
        }
        // 168 hours: the :45 snapshot of each of the last 7 days' hours.
        for h in 0..168 {
            want.insert(end - h * HOUR - 15 * MIN);
        }
        // 7 days: 23:45 of each of the last 7 days (already in the hourly set).
        // 4 ISO weeks: Sunday 23:45 of the three weeks before the current one (which began
        // Monday 2025-12-29 and is covered by the hourly set).
        for sunday in [20_450u64, 20_443, 20_436] {
            // 2025-12-28 (also in the hourly set), 2025-12-21, 2025-12-14
            want.insert((sunday + 1) * DAY - 15 * MIN);
        }
        // Every month: the last snapshot of each month of 2025.
        let month_ends = [31u64, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334, 365];
        for e in month_ends {
            want.insert(start + e * DAY - 15 * MIN);
        }
        assert_eq!(got, want);
        assert_eq!(got.len(), 96 + 168 - 24 + 2 + 11);
        // Reasons: the newest is kept by every calendar rule.
        let newest = &d[0];
        assert_eq!(
            newest.keep,
            vec![
                Reason::QuarterHourly,
                Reason::Hourly,
                Reason::Daily,
                Reason::Weekly,
                Reason::Monthly
            ]
        );
    }

    #[test]
    fn rules_table() {
        let base = 20_000 * DAY;
        let snaps = timeline(base, 96 * 3); // three days
        let last = base + (96 * 3 - 1) * 15 * MIN;
        struct Case {
            name: &'static str,
            policy: Retention,
            want: Vec<u64>,
        }
        let cases = [
            Case {
                name: "keep_last 3",
                policy: Retention {
                    keep_last: Keep::Count(3),
                    ..none()
                },
                want: vec![last, last - 900, last - 1800],
            },
            Case {
                name: "keep_within 30m (relative to the newest)",
                policy: Retention {
                    keep_within: Duration::from_secs(30 * MIN),
                    ..none()
                },
                want: vec![last, last - 900, last - 1800],
            },
            Case {
                name: "keep_daily 2",
                policy: Retention {
                    keep_daily: Keep::Count(2),
                    ..none()
                },
                want: vec![last, last - DAY],
            },
            Case {
                name: "keep_hourly 2 + keep_last 1",
                policy: Retention {
                    keep_hourly: Keep::Count(2),
                    keep_last: Keep::Count(1),
                    ..none()
                },
                want: vec![last, last - HOUR],
            },
            Case {
                name: "keep_daily -1",
                policy: Retention {
                    keep_daily: Keep::Unlimited,
                    ..none()
                },
                want: vec![last, last - DAY, last - 2 * DAY],
            },
        ];
        for c in cases {
            let got = kept(&apply(&c.policy, &snaps, None, at(last)));
            let want: BTreeSet<u64> = c.want.into_iter().collect();
            assert_eq!(got, want, "{}", c.name);
        }
    }

    #[test]
    fn never_forgets_the_lkg_what_is_newer_or_a_recent_safety_snapshot() {
        let base = 20_000 * DAY;
        let mut snaps = timeline(base, 10);
        let lkg = snaps[5].id;
        let safety_recent = Candidate {
            id: id(1),
            time: at(base + 10 * DAY - HOUR),
            series: "restore-target".into(),
            safety: true,
        };
        let safety_old = Candidate {
            id: id(2),
            time: at(base + 2 * HOUR),
            series: "restore-target".into(),
            safety: true,
        };
        snaps.push(safety_recent.clone());
        snaps.push(safety_old.clone());
        let policy = Retention {
            keep_last: Keep::Count(1),
            ..none()
        };
        let d = apply(&policy, &snaps, Some(lkg), at(base + 10 * DAY));
        let by_id = |x: SnapshotId| d.iter().find(|d| d.id == x).unwrap().keep.clone();
        assert_eq!(by_id(lkg), vec![Reason::Lkg]);
        for s in &snaps[6..9] {
            assert_eq!(by_id(s.id), vec![Reason::NewerThanLkg]);
        }
        assert_eq!(by_id(snaps[9].id), vec![Reason::NewerThanLkg, Reason::Last]);
        for s in &snaps[..5] {
            assert!(by_id(s.id).is_empty(), "older than the LKG and not kept");
        }
        assert_eq!(by_id(safety_recent.id), vec![Reason::RecentSafety]);
        assert!(by_id(safety_old.id).is_empty());
    }

    #[test]
    fn a_clock_that_went_backwards_is_judged_by_the_snapshots_own_times() {
        // Three snapshots taken in this order but stamped 10:00, 09:00, 11:00.
        let base = 20_000 * DAY;
        let snaps: Vec<Candidate> = [10u64, 9, 11]
            .iter()
            .map(|h| Candidate {
                id: id(*h),
                time: at(base + h * HOUR),
                series: "www".into(),
                safety: false,
            })
            .collect();
        let policy = Retention {
            keep_last: Keep::Count(2),
            ..none()
        };
        let got = kept(&apply(&policy, &snaps, None, at(base)));
        assert_eq!(
            got,
            [base + 10 * HOUR, base + 11 * HOUR].into_iter().collect()
        );
    }
}
