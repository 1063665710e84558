//! What the agent knows between cycles, and how it shows it: the `/health` verdict, the
//! Prometheus metrics, and `agent-state.json` in the vault (read by `vault status`).
//!
//! The state is updated once per cycle (from the cycle's report and the vault's LKG) and read by
//! every request, so requests never touch the vault.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;

pub use super::persisted::{LkgInfo, Persisted, RemoteState, STATE_FILE};
use crate::cycle::CycleReport;
use crate::error::Result;
use crate::fsutil;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GateLabel {
    gate: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RemoteLabel {
    remote: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

/// The agent's metrics, registered once.
struct Metrics {
    registry: Registry,
    last_success: Gauge<f64, AtomicU64>,
    lkg_age: Gauge<f64, AtomicU64>,
    cycle_duration: Gauge<f64, AtomicU64>,
    bytes_read: Counter,
    bytes_new: Counter,
    bytes_stored: Counter,
    dedup_ratio: Gauge<f64, AtomicU64>,
    gate_failures: Family<GateLabel, Counter>,
    push_failures: Family<RemoteLabel, Counter>,
    snapshots: Counter,
    cycles: Family<OutcomeLabel, Counter>,
    up: Gauge,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("atlasvault");
        let m = Metrics {
            registry: Registry::default(),
            last_success: Gauge::default(),
            lkg_age: Gauge::default(),
            cycle_duration: Gauge::default(),
            bytes_read: Counter::default(),
            bytes_new: Counter::default(),
            bytes_stored: Counter::default(),
            dedup_ratio: Gauge::default(),
            gate_failures: Family::default(),
            push_failures: Family::default(),
            snapshots: Counter::default(),
            cycles: Family::default(),
            up: Gauge::default(),
        };
        registry.register(
            "last_success_timestamp_seconds",
            "Unix time of the last cycle whose every step succeeded",
            m.last_success.clone(),
        );
        registry.register(
            "lkg_age_seconds",
            "Age of the last-known-good snapshot's data (-1: none yet)",
            m.lkg_age.clone(),
        );
        registry.register(
            "cycle_duration_seconds",
            "Duration of the last cycle",
            m.cycle_duration.clone(),
        );
        registry.register(
            "bytes_read",
            "Bytes read from sources by snapshots",
            m.bytes_read.clone(),
        );
        registry.register(
            "bytes_new",
            "Bytes of new (not deduplicated) data found by snapshots",
            m.bytes_new.clone(),
        );
        registry.register(
            "bytes_stored",
            "Bytes written to packs (compressed, sealed) by snapshots",
            m.bytes_stored.clone(),
        );
        registry.register(
            "dedup_ratio",
            "Share of the last snapshot's bytes read that were already stored",
            m.dedup_ratio.clone(),
        );
        registry.register(
            "gate_failures",
            "Snapshots rejected, by gate",
            m.gate_failures.clone(),
        );
        registry.register(
            "push_failures",
            "Failed pushes, by remote",
            m.push_failures.clone(),
        );
        registry.register("snapshots", "Snapshots taken", m.snapshots.clone());
        registry.register("cycles", "Cycles run, by outcome", m.cycles.clone());
        registry.register("up", "1 while the agent runs", m.up.clone());
        m.up.set(1);
        m.lkg_age.set(-1.0);
        Metrics { registry, ..m }
    }
}

/// The verdict of `/health`.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    /// `ok` or `stale`.
    pub status: &'static str,
    #[serde(skip)]
    pub healthy: bool,
    pub reason: Option<String>,
    pub lkg: Option<String>,
    pub lkg_age_seconds: Option<u64>,
    pub rpo_seconds: u64,
    pub grace_seconds: u64,
    pub last_cycle_at: Option<String>,
    pub last_cycle_ok: Option<bool>,
    pub last_cycle: Option<String>,
    pub next_cycle_at: Option<String>,
    /// Seconds since each remote last took a push (`null`: never).
    pub remote_lag_seconds: BTreeMap<String, Option<u64>>,
}

struct Inner {
    lkg: Option<LkgInfo>,
    /// The LKG manifest's JSON, for `/manifest`.
    manifest: Option<Vec<u8>>,
    persisted: Persisted,
}

/// Shared between the scheduler and the HTTP tasks.
pub struct AgentState {
    rpo: Duration,
    grace: Duration,
    vault_root: PathBuf,
    metrics: Metrics,
    inner: Mutex<Inner>,
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn unix_secs(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl AgentState {
    pub fn new(vault_root: &Path, rpo: Duration, grace: Duration, interval: Duration) -> Self {
        let persisted = Persisted {
            pid: std::process::id(),
            started_at: Some(SystemTime::now()),
            interval_secs: interval.as_secs(),
            ..Persisted::default()
        };
        AgentState {
            rpo,
            grace,
            vault_root: vault_root.into(),
            metrics: Metrics::new(),
            inner: Mutex::new(Inner {
                lkg: None,
                manifest: None,
                persisted,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("invariant: agent state lock")
    }

    /// Records the LKG (at start and after each cycle).
    pub fn set_lkg(&self, lkg: Option<LkgInfo>, manifest: Option<Vec<u8>>) {
        let mut i = self.lock();
        i.lkg = lkg;
        i.manifest = manifest;
    }

    /// Records a finished cycle and when the next one is due; writes `agent-state.json`.
    pub fn record_cycle(&self, r: &CycleReport, next: Option<SystemTime>) -> Result<()> {
        let m = &self.metrics;
        m.cycle_duration.set(r.duration_ms as f64 / 1000.0);
        m.cycles
            .get_or_create(&OutcomeLabel {
                outcome: if r.ok { "ok" } else { "failed" }.into(),
            })
            .inc();
        if let Some(s) = &r.snapshot {
            m.snapshots.inc();
            m.bytes_read.inc_by(s.bytes_read);
            m.bytes_new.inc_by(s.bytes_new);
            m.bytes_stored.inc_by(s.bytes_stored);
            let dedup = if s.bytes_read == 0 {
                1.0
            } else {
                1.0 - s.bytes_new.min(s.bytes_read) as f64 / s.bytes_read as f64
            };
            m.dedup_ratio.set(dedup);
        }
        for g in r.gates.iter().filter(|g| !g.passed) {
            m.gate_failures
                .get_or_create(&GateLabel {
                    gate: g.gate.clone(),
                })
                .inc();
        }
        let finished = r.started.map(|s| s + Duration::from_millis(r.duration_ms));
        if r.ok {
            if let Some(t) = finished {
                m.last_success.set(unix_secs(t));
            }
        }
        let snapshot = {
            let mut i = self.lock();
            let p = &mut i.persisted;
            p.cycles += 1;
            p.last_cycle_at = r.started;
            p.last_cycle_ok = Some(r.ok);
            p.last_cycle_summary = Some(r.summary());
            p.next_cycle_at = next;
            for push in &r.pushes {
                let e = p.remotes.entry(push.remote.clone()).or_default();
                if push.ok {
                    e.last_success = finished;
                    e.last_error = None;
                } else {
                    e.last_error = push.error.clone();
                    m.push_failures
                        .get_or_create(&RemoteLabel {
                            remote: push.remote.clone(),
                        })
                        .inc();
                }
            }
            p.clone()
        };
        let mut bytes = serde_json::to_vec_pretty(&snapshot).expect("invariant: state serializes");
        bytes.push(b'\n');
        fsutil::atomic_write(&self.vault_root.join(STATE_FILE), &bytes)
    }

    /// Sets when the next cycle is due (before the first cycle ends).
    pub fn set_next(&self, next: Option<SystemTime>) {
        self.lock().persisted.next_cycle_at = next;
    }

    /// `/health`: ok while the LKG's data is younger than RPO + grace.
    pub fn health(&self, now: SystemTime) -> Health {
        let i = self.lock();
        let age = i
            .lkg
            .as_ref()
            .map(|l| now.duration_since(l.time).unwrap_or_default());
        // The config bounds both, but an overflow here would panic in a request handler.
        let limit = self.rpo.saturating_add(self.grace);
        let (healthy, reason) = match age {
            None => (
                false,
                Some("no snapshot has been promoted to last-known-good yet".into()),
            ),
            Some(a) if a > limit => (
                false,
                Some(format!(
                    "the last-known-good is {}s old, past the RPO of {}s plus {}s of grace{}",
                    a.as_secs(),
                    self.rpo.as_secs(),
                    self.grace.as_secs(),
                    match (&i.persisted.last_cycle_ok, &i.persisted.last_cycle_summary) {
                        (Some(false), Some(s)) => format!("; last cycle: {s}"),
                        _ => String::new(),
                    }
                )),
            ),
            Some(_) => (true, None),
        };
        let p = &i.persisted;
        Health {
            status: if healthy { "ok" } else { "stale" },
            healthy,
            reason,
            lkg: i.lkg.as_ref().map(|l| l.snapshot.clone()),
            lkg_age_seconds: age.map(|a| a.as_secs()),
            rpo_seconds: self.rpo.as_secs(),
            grace_seconds: self.grace.as_secs(),
            last_cycle_at: p.last_cycle_at.map(rfc3339),
            last_cycle_ok: p.last_cycle_ok,
            last_cycle: p.last_cycle_summary.clone(),
            next_cycle_at: p.next_cycle_at.map(rfc3339),
            remote_lag_seconds: p
                .remotes
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.last_success
                            .map(|t| now.duration_since(t).unwrap_or_default().as_secs()),
                    )
                })
                .collect(),
        }
    }

    /// `/metrics`, in the OpenMetrics text format (which Prometheus scrapes).
    pub fn metrics_text(&self, now: SystemTime) -> String {
        let age = self
            .lock()
            .lkg
            .as_ref()
            .map(|l| now.duration_since(l.time).unwrap_or_default().as_secs_f64());
        self.metrics.lkg_age.set(age.unwrap_or(-1.0));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.metrics.registry)
            .expect("invariant: writing to a String cannot fail");
        out
    }

    /// `/manifest`: the LKG manifest's JSON.
    pub fn manifest(&self) -> Option<Vec<u8>> {
        self.lock().manifest.clone()
    }
}
