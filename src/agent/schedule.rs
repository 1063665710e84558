//! When cycles run: one at start, then one per interval, never two at once.
//!
//! Ticks fall at `start + k × interval`. A tick that comes while a cycle is still running is
//! skipped, never queued: after a cycle longer than the interval the next one starts at the next
//! tick of the original schedule (not at once, and never as a burst of catch-up cycles), so the
//! cycles stay aligned to the schedule whatever happens. A cycle longer than the interval is counted (and logged by the caller). On shutdown,
//! a running cycle gets `shutdown_grace` to finish; after that it is abandoned, which is safe:
//! every write to the vault is atomic, so the process may exit at any point.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// What the schedule did, for tests and the final log line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScheduleStats {
    /// Cycles started.
    pub cycles: u64,
    /// Cycles that took longer than the interval.
    pub overruns: u64,
    /// A cycle was still running when shutdown came and did not finish within the grace.
    pub abandoned: bool,
}

/// Runs `cycle` at start and then every `interval` until `shutdown` turns true. `on_overrun`
/// is told how long an over-long cycle took.
pub async fn run<F, Fut>(
    interval: Duration,
    shutdown_grace: Duration,
    mut shutdown: watch::Receiver<bool>,
    mut cycle: F,
    mut on_overrun: impl FnMut(Duration),
) -> ScheduleStats
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut stats = ScheduleStats::default();
    let start = Instant::now();
    let mut due = start;
    loop {
        if *shutdown.borrow() {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(due) => {}
            _ = shutdown.changed() => break,
        }
        let started = Instant::now();
        stats.cycles += 1;
        let running = cycle();
        tokio::pin!(running);
        tokio::select! {
            _ = &mut running => {}
            _ = shutdown.changed() => {
                if tokio::time::timeout(shutdown_grace, &mut running).await.is_err() {
                    stats.abandoned = true;
                }
                break;
            }
        }
        let took = started.elapsed();
        if took > interval {
            stats.overruns += 1;
            on_overrun(took);
        }
        due = next_due(start, interval, due, Instant::now());
    }
    stats
}

/// The first tick after `previous` that is not in the past: `start + k × interval`.
pub fn next_due(start: Instant, interval: Duration, previous: Instant, now: Instant) -> Instant {
    let step = interval.as_nanos().max(1);
    let elapsed = now.saturating_duration_since(start).as_nanos();
    let k = elapsed.div_ceil(step);
    let at = start + Duration::from_nanos((k * step).min(u128::from(u64::MAX)) as u64);
    at.max(previous + interval)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    /// Runs the schedule with cycles lasting `durations[i]` (the last one repeats), for `total`
    /// of virtual time; returns the start times (minutes since start) and the stats.
    async fn simulate(
        interval: Duration,
        durations: Vec<Duration>,
        total: Duration,
    ) -> (Vec<u64>, ScheduleStats) {
        let (tx, rx) = watch::channel(false);
        let t0 = Instant::now();
        let starts = Arc::new(Mutex::new(Vec::new()));
        let running = Arc::new(Mutex::new(false));
        let s = starts.clone();
        let task = tokio::spawn(run(
            interval,
            MIN,
            rx,
            move || {
                let n = {
                    let mut s = s.lock().unwrap();
                    s.push(t0.elapsed().as_secs() / 60);
                    s.len()
                };
                let d = durations[(n - 1).min(durations.len() - 1)];
                let running = running.clone();
                async move {
                    assert!(
                        !std::mem::replace(&mut *running.lock().unwrap(), true),
                        "overlap"
                    );
                    tokio::time::sleep(d).await;
                    *running.lock().unwrap() = false;
                }
            },
            |_| {},
        ));
        tokio::time::sleep(total).await;
        tx.send(true).unwrap();
        let stats = task.await.unwrap();
        let starts = starts.lock().unwrap().clone();
        (starts, stats)
    }

    #[tokio::test(start_paused = true)]
    async fn ticks_every_fifteen_minutes_starting_at_once() {
        let (starts, stats) = simulate(15 * MIN, vec![MIN], 61 * MIN).await;
        assert_eq!(starts, vec![0, 15, 30, 45, 60]);
        assert_eq!(stats.overruns, 0);
        assert!(!stats.abandoned);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_cycle_skips_the_missed_ticks_instead_of_queueing_them() {
        // The first cycle takes 40 minutes: the ticks at 15 and 30 are skipped; the next cycle
        // starts at 45, on the original schedule, not at 40 and not three times in a row.
        let (starts, stats) = simulate(15 * MIN, vec![40 * MIN, MIN], 76 * MIN).await;
        assert_eq!(starts, vec![0, 45, 60, 75]);
        assert_eq!(stats.cycles, 4);
        assert_eq!(stats.overruns, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn catch_up_after_a_long_stall_runs_one_cycle_not_a_burst() {
        // A cycle that hangs for 3 hours (a dump stuck on a lock) is followed by exactly one
        // cycle at the next tick.
        let (starts, stats) = simulate(15 * MIN, vec![185 * MIN, MIN], 200 * MIN).await;
        assert_eq!(starts[..2], [0, 195]);
        assert_eq!(stats.overruns, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_mid_cycle_waits_for_it_within_the_grace_or_abandons_it() {
        // Shutdown at minute 5 of a 15-minute cycle: a grace of 1 minute is not enough for the
        // 10 minutes left, so the cycle is abandoned (safe: every vault write is atomic).
        let (starts, stats) = simulate(15 * MIN, vec![15 * MIN], 5 * MIN).await;
        assert_eq!(starts, vec![0]);
        assert!(stats.abandoned);
        // A cycle that ends within the grace is waited for.
        let (starts, stats) =
            simulate(15 * MIN, vec![5 * MIN + Duration::from_secs(30)], 5 * MIN).await;
        assert_eq!(starts, vec![0]);
        assert!(!stats.abandoned);
    }
}
