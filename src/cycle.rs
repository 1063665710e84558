//! One protection cycle: snapshot every configured source → gates → promote → push to every
//! remote → retention (`forget` with the `[retention]` policy, when the config file has one;
//! reclaiming space is `vault prune`'s, run on its own). `vault cycle` runs one; `vault agent` runs one per interval.
//!
//! A failing step is reported in the [`CycleReport`] and the later steps still run where they
//! make sense: a snapshot that a gate rejects leaves the LKG where it was but is still pushed
//! (so the remote holds the evidence), and one unreachable remote does not stop the others.
//! Remote errors are retried with backoff inside the push (the backend's retry wrapper). This
//! module also turns the config file's `[[source]]` tables into snapshot options, which
//! `vault snapshot` shares.

use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::audit::AuditRecord;
use crate::backend::{self, RemoteSpec};
use crate::error::{Error, Result};
use crate::gates::GateResult;
use crate::keys::SecretSource;
use crate::lkg;
use crate::lock::LockMode;
use crate::progress::Progress;
use crate::push::{self, PushOptions, PushReport};
use crate::snapshot::{NamedSource, SnapshotOptions};
use crate::stream::{StreamKind, StreamSource};
use crate::vault::Vault;
use crate::vaultfile::{PgConnection, PgFormat, SourceKind, VaultFile};

/// How long a cycle waits for the vault lock held by someone else (a manual `vault snapshot`).
pub const CYCLE_LOCK_WAIT: Duration = Duration::from_secs(60);

/// What a config file's sources become: tree roots, dump streams, and the extra
/// `template_only` globs of the tree sources.
#[derive(Debug, Default)]
pub struct ConfigSources {
    pub trees: Vec<NamedSource>,
    pub streams: Vec<StreamSource>,
    pub template_only: Vec<String>,
}

/// The config file's sources to snapshot: all, or those `wanted` names.
pub fn config_sources(file: &VaultFile, wanted: &[String]) -> Result<ConfigSources> {
    for name in wanted {
        if file.source(name).is_none() {
            let known: Vec<&str> = file.sources.iter().map(|s| s.name.as_str()).collect();
            return Err(Error::Invalid(format!(
                "--source {name}: no such source in the config (it has: {})",
                known.join(", ")
            )));
        }
    }
    let mut out = ConfigSources::default();
    for src in &file.sources {
        if !wanted.is_empty() && !wanted.contains(&src.name) {
            continue;
        }
        match &src.kind {
            SourceKind::Tree { path, excludes, .. } => {
                for g in file.template_only_for(src) {
                    if !out.template_only.contains(&g) {
                        out.template_only.push(g);
                    }
                }
                out.trees.push(NamedSource {
                    name: src.name.clone(),
                    path: path.clone(),
                    excludes: excludes.clone(),
                });
            }
            SourceKind::Command {
                command,
                stream_name,
            } => out.streams.push(StreamSource {
                name: src.name.clone(),
                file_name: stream_name.clone().unwrap_or_else(|| "stdout".into()),
                kind: StreamKind::Command(command.clone()),
            }),
            SourceKind::Sqlite { path } => out.streams.push(StreamSource {
                name: src.name.clone(),
                file_name: path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "database.sqlite".into()),
                kind: StreamKind::Sqlite(path.clone()),
            }),
            SourceKind::Postgres { connection, format } => {
                let plain = *format == PgFormat::Plain;
                let db = match connection {
                    PgConnection::Params { dbname, .. } => dbname.clone(),
                    PgConnection::Url { .. } => src.name.clone(),
                };
                out.streams.push(StreamSource {
                    name: src.name.clone(),
                    file_name: format!("{db}.{}", if plain { "sql" } else { "dump" }),
                    kind: StreamKind::Postgres {
                        argv: crate::stream::pg_dump_argv(connection, plain),
                        plain,
                    },
                });
            }
        }
    }
    if out.trees.is_empty() && out.streams.is_empty() {
        return Err(Error::Invalid(
            "the config file has no sources to snapshot".into(),
        ));
    }
    Ok(out)
}

/// The snapshot step of a cycle.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SnapshotStep {
    pub id: String,
    pub files: u64,
    pub bytes: u64,
    pub bytes_read: u64,
    pub bytes_new: u64,
    pub bytes_stored: u64,
    pub partial: bool,
    pub warnings: Vec<String>,
}

/// One remote's push in a cycle.
#[derive(Debug, Clone, Serialize)]
pub struct PushStep {
    pub remote: String,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<PushReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What one cycle did.
#[derive(Debug, Clone, Serialize)]
pub struct CycleReport {
    /// RFC 3339.
    pub started_at: String,
    #[serde(skip)]
    pub started: Option<SystemTime>,
    pub duration_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotStep>,
    /// Why there is no snapshot (the vault could not be opened, no source could be read, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_error: Option<String>,
    pub gates: Vec<GateResult>,
    pub promoted: bool,
    pub pushes: Vec<PushStep>,
    /// What retention did (`not configured` without a `[retention]` table).
    pub retention: String,
    /// Every step succeeded: a snapshot was taken and promoted, and every remote took it.
    pub ok: bool,
}

impl CycleReport {
    fn new() -> Self {
        let now = SystemTime::now();
        CycleReport {
            started_at: humantime::format_rfc3339_seconds(now).to_string(),
            started: Some(now),
            duration_ms: 0,
            snapshot: None,
            snapshot_error: None,
            gates: Vec::new(),
            promoted: false,
            pushes: Vec::new(),
            retention: "not configured".into(),
            ok: false,
        }
    }

    /// A one-line summary for logs.
    pub fn summary(&self) -> String {
        let snap = match (&self.snapshot, &self.snapshot_error) {
            (Some(s), _) => format!(
                "snapshot {} ({}{})",
                &s.id[..s.id.len().min(12)],
                if self.promoted {
                    "promoted"
                } else {
                    "NOT promoted"
                },
                if s.partial { ", partial" } else { "" }
            ),
            (None, Some(e)) => format!("snapshot FAILED: {e}"),
            (None, None) => "no snapshot".into(),
        };
        let failed: Vec<&str> = self
            .gates
            .iter()
            .filter(|g| !g.passed)
            .map(|g| g.gate.as_str())
            .collect();
        let gates = if failed.is_empty() {
            String::new()
        } else {
            format!("; gates failed: {}", failed.join(", "))
        };
        let pushes: Vec<String> = self
            .pushes
            .iter()
            .map(|p| format!("{} {}", p.remote, if p.ok { "ok" } else { "FAILED" }))
            .collect();
        format!(
            "{snap}{gates}; push: {}; retention: {}; {:.1}s",
            if pushes.is_empty() {
                "no remotes".to_string()
            } else {
                pushes.join(", ")
            },
            self.retention,
            self.duration_ms as f64 / 1000.0
        )
    }
}

/// Where the cycle runs and with what.
pub struct CycleContext<'a> {
    pub file: &'a VaultFile,
    pub secrets: &'a SecretSource,
    /// How long to wait for the vault's lock.
    pub wait: Duration,
}

/// Runs one cycle. Never returns early on a failed step: the report says what failed.
pub fn run(ctx: &CycleContext<'_>) -> CycleReport {
    let t = Instant::now();
    let mut report = CycleReport::new();
    let snapshot = snapshot_and_promote(ctx, &mut report);
    if let Err(e) = snapshot {
        report.snapshot_error = Some(e.to_string());
    }
    push_all(ctx, &mut report);
    if ctx.file.retention_set {
        report.retention = match open(ctx, LockMode::Append)
            .and_then(|v| crate::retention::forget(&v, &ctx.file.retention, false))
        {
            Ok(r) => format!("forgot {} of {} snapshots", r.forgotten, r.snapshots),
            Err(e) => format!("failed: {e}"),
        };
    }
    report.duration_ms = t.elapsed().as_millis() as u64;
    report.ok = report.snapshot.as_ref().is_some_and(|s| !s.partial)
        && report.promoted
        && report.pushes.iter().all(|p| p.ok)
        && !report.retention.starts_with("failed");
    report
}

/// Snapshot → gates → promote, under the writer lock (readers may run beside it).
fn snapshot_and_promote(ctx: &CycleContext<'_>, report: &mut CycleReport) -> Result<()> {
    let sources = config_sources(ctx.file, &[])?;
    let mut vault = open(ctx, LockMode::Append)?;
    let opts = SnapshotOptions {
        template_only: sources.template_only,
        sources: sources.trees,
        streams: sources.streams,
        ..Default::default()
    };
    let done = crate::snapshot::snapshot(&mut vault, &opts, &Progress::hidden())?;
    let m = &done.manifest;
    report.snapshot = Some(SnapshotStep {
        id: done.id.to_hex(),
        files: m.stats.files,
        bytes: m.stats.bytes,
        bytes_read: m.stats.bytes_read,
        bytes_new: m.stats.bytes_new,
        bytes_stored: m.stats.bytes_stored,
        partial: m.partial,
        warnings: m.warnings.clone(),
    });
    let checked = done.manifest.gates.as_deref().unwrap_or_default();
    let p = lkg::promote_checked(&vault, &done.id, checked)?;
    report.gates = p.gates;
    report.promoted = p.promoted;
    Ok(())
}

/// Pushes to every remote of the config, each reported on its own.
fn push_all(ctx: &CycleContext<'_>, report: &mut CycleReport) {
    if ctx.file.remotes.is_empty() {
        return;
    }
    let vault = match open(ctx, LockMode::Shared) {
        Ok(v) => v,
        Err(e) => {
            for r in &ctx.file.remotes {
                report.pushes.push(PushStep {
                    remote: r.name.clone(),
                    ok: false,
                    report: None,
                    error: Some(format!("cannot open the vault: {e}")),
                });
            }
            return;
        }
    };
    for remote in &ctx.file.remotes {
        let spec = RemoteSpec::from(remote);
        let opts = PushOptions {
            append_only: spec.append_only,
            ..Default::default()
        };
        let result =
            backend::open(&spec).and_then(|b| push::push(&vault, &*b, &opts, &Progress::hidden()));
        let record = match &result {
            Ok(r) => AuditRecord::new("push", r.ref_updated.clone(), "ok").with_detail(
                serde_json::json!({"remote": spec.name, "objects_uploaded": r.objects_uploaded,
                                   "bytes_uploaded": r.bytes_uploaded, "agent": true}),
            ),
            Err(e) => AuditRecord::new("push", None, "failed").with_detail(
                serde_json::json!({"remote": spec.name, "error": e.to_string(), "agent": true}),
            ),
        };
        // The audit log is best effort here: the push's outcome is in the report either way.
        let _ = vault.audit(&record);
        report.pushes.push(match result {
            Ok(r) => PushStep {
                remote: spec.name,
                ok: true,
                report: Some(r),
                error: None,
            },
            Err(e) => PushStep {
                remote: spec.name,
                ok: false,
                report: None,
                error: Some(e.to_string()),
            },
        });
    }
}

fn open(ctx: &CycleContext<'_>, mode: LockMode) -> Result<Vault> {
    let mut vault = Vault::open(&ctx.file.vault, mode, Some(ctx.wait), ctx.secrets)?;
    if ctx.file.gates != crate::config::GateSettings::default() {
        vault.config.gates = ctx.file.gates.clone();
    }
    Ok(vault)
}
