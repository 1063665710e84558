//! RPO coverage: over a window, which slots (of the RPO's length) hold a restorable snapshot.
//!
//! Slots are aligned to multiples of their length since the Unix epoch (15-minute slots start at
//! :00, :15, :30 and :45), and only whole slots that have ended count: the slot in progress is
//! not judged yet. A slot is covered when a snapshot that passed every gate (and is not a safety
//! snapshot) was taken in it. Times come from the manifests, so a clock that went backwards
//! places a snapshot in the slot its own clock said, never twice.

use std::time::{Duration, SystemTime};

use serde::Serialize;

/// The verdict over a window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Coverage {
    pub slots: u64,
    pub covered: u64,
    /// Uncovered runs of slots, as (start, end) in RFC 3339, oldest first.
    pub gaps: Vec<(String, String)>,
    #[serde(skip)]
    pub gap_times: Vec<(SystemTime, SystemTime)>,
}

impl Coverage {
    /// `94/96 slots covered, gaps: 02:15–02:45, ...`.
    pub fn summary(&self) -> String {
        let mut s = format!("{}/{} slots covered", self.covered, self.slots);
        if !self.gaps.is_empty() {
            let shown: Vec<String> = self
                .gaps
                .iter()
                .take(10)
                .map(|(a, b)| format!("{a} to {b}"))
                .collect();
            s.push_str(&format!(", gaps: {}", shown.join(", ")));
            if self.gaps.len() > 10 {
                s.push_str(&format!(" and {} more", self.gaps.len() - 10));
            }
        }
        s
    }
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

/// Coverage of the `window` ending at `now` by snapshots taken at `times`, in slots of `slot`.
pub fn coverage(
    times: &[SystemTime],
    now: SystemTime,
    window: Duration,
    slot: Duration,
) -> Coverage {
    let len = slot.as_secs().max(1);
    let end = secs(now) / len * len;
    let n = (window.as_secs() / len).max(1);
    let start = end.saturating_sub(n * len);
    let mut covered = vec![false; n as usize];
    for t in times {
        let s = secs(*t);
        if s >= start && s < end {
            covered[((s - start) / len) as usize] = true;
        }
    }
    let mut gap_times = Vec::new();
    let mut i = 0;
    while i < covered.len() {
        if covered[i] {
            i += 1;
            continue;
        }
        let first = i;
        while i < covered.len() && !covered[i] {
            i += 1;
        }
        gap_times.push((at(start + first as u64 * len), at(start + i as u64 * len)));
    }
    let fmt = |t: SystemTime| humantime::format_rfc3339_seconds(t).to_string();
    Coverage {
        slots: n,
        covered: covered.iter().filter(|c| **c).count() as u64,
        gaps: gap_times.iter().map(|(a, b)| (fmt(*a), fmt(*b))).collect(),
        gap_times,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60;

    #[test]
    fn a_day_of_quarter_hours_with_two_gaps() {
        // now = day 10, 00:07; the last whole slot ends at 00:00.
        let day = 10 * 86_400;
        let now = at(day + 7 * MIN);
        let mut times: Vec<SystemTime> = (0..96)
            .map(|i| at(day - 86_400 + i * 15 * MIN + 3 * MIN))
            .collect();
        // Lose 02:15 and 02:30 (slots 9 and 10), and 23:45 (the last).
        times.retain(|t| {
            let s = secs(*t) - (day - 86_400);
            !(9 * 15 * MIN..11 * 15 * MIN).contains(&s) && s < 95 * 15 * MIN
        });
        // A snapshot in the slot in progress and one older than the window do not count.
        times.push(at(day + 2 * MIN));
        times.push(at(day - 2 * 86_400));
        let c = coverage(
            &times,
            now,
            Duration::from_secs(86_400),
            Duration::from_secs(900),
        );
        assert_eq!((c.covered, c.slots), (93, 96));
        assert_eq!(c.gap_times.len(), 2);
        assert_eq!(
            c.gap_times[0],
            (at(day - 86_400 + 135 * MIN), at(day - 86_400 + 165 * MIN))
        );
        assert_eq!(c.gap_times[1], (at(day - 15 * MIN), at(day)));
        assert!(c.summary().starts_with("93/96 slots covered, gaps: "));
    }

    #[test]
    fn a_clock_that_went_backwards_counts_each_snapshot_once() {
        let now = at(100 * 900);
        // Taken in order but stamped out of order.
        let times = [at(99 * 900 + 10), at(97 * 900 + 10), at(98 * 900 + 10)];
        let c = coverage(
            &times,
            now,
            Duration::from_secs(4 * 900),
            Duration::from_secs(900),
        );
        assert_eq!((c.covered, c.slots), (3, 4));
        assert_eq!(c.gap_times, vec![(at(96 * 900), at(97 * 900))]);
    }
}
