//! `vault drill`: a disaster-recovery rehearsal, done by the tool.
//!
//! It restores the last-known-good (or a chosen snapshot, locally or from a remote) into a
//! scratch directory, then proves the restore: every restored file is read back from disk and
//! re-chunked along the stored chunk boundaries, and each piece must hash to the chunk id the
//! snapshot's tree records (symlinks must point where the tree says). It re-runs the gates, and
//! measures RTO (start to verified restore) and RPO (the restored data's age at the start). The
//! report goes to `VAULT/drills/` as JSON and Markdown, and into the audit log. With a scratch
//! PostgreSQL server it restores each postgres dump into a fresh database there and runs the
//! check queries of `[drill.checks]`; with `[drill] health_command` it runs that command in the
//! restored tree (see [`rehearse`]). RTO runs until all of that has passed.

mod rehearse;

pub use rehearse::{CheckResult, DbRehearsal, HealthResult};

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::audit::AuditRecord;
use crate::error::{Error, IoContext, Result};
use crate::fsutil;
use crate::gates::{self, GateResult};
use crate::id::SnapshotId;
use crate::progress::Progress;
use crate::restore::RestoreOptions;
use crate::stored::{self, Visit};
use crate::tree::Node;
use crate::vault::Vault;

/// Where reports are kept, in the vault directory.
pub const DRILLS_DIR: &str = "drills";
/// Mismatches listed in a report before "and N more".
const MISMATCHES_SHOWN: usize = 50;

/// How to drill.
#[derive(Debug, Clone)]
pub struct DrillOptions {
    /// The snapshot (id, prefix or `latest`); `None`: the last-known-good.
    pub snapshot: Option<String>,
    /// Restore here (must be absent or empty); `None`: a temporary directory.
    pub scratch: Option<PathBuf>,
    /// Keep the restored tree instead of removing it.
    pub keep: bool,
    /// Where the vault was read from, for the report (`local` or a remote URL).
    pub source: String,
    /// A PostgreSQL server to restore postgres dumps into (maintenance database URL).
    pub pg_scratch: Option<String>,
    /// Check queries per postgres source.
    pub checks: BTreeMap<String, Vec<String>>,
    /// Run in the restored tree once everything is restored.
    pub health_command: Option<Vec<String>>,
    pub health_timeout: Duration,
}

/// What a drill found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DrillReport {
    pub started_at: String,
    pub source: String,
    pub snapshot: String,
    pub snapshot_time: String,
    /// Start to verified restore.
    pub rto_ms: u64,
    /// Age of the restored data when the drill started.
    pub rpo_seconds: u64,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
    pub gates: Vec<GateResult>,
    pub gates_passed: bool,
    /// Files that did not restore.
    pub restore_errors: Vec<String>,
    /// Restored files whose bytes on disk do not match the snapshot.
    pub mismatches: Vec<String>,
    pub more_mismatches: usize,
    /// The restored tree, when kept.
    pub scratch: Option<String>,
    /// Postgres dumps restored into scratch databases, with their checks.
    #[serde(default)]
    pub databases: Vec<DbRehearsal>,
    /// The health command, when configured.
    #[serde(default)]
    pub health: Option<HealthResult>,
    pub ok: bool,
}

impl Default for DrillOptions {
    fn default() -> Self {
        DrillOptions {
            snapshot: None,
            scratch: None,
            keep: false,
            source: "local".into(),
            pg_scratch: None,
            checks: BTreeMap::new(),
            health_command: None,
            health_timeout: crate::vaultfile::DEFAULT_HEALTH_TIMEOUT,
        }
    }
}

impl DrillReport {
    /// The report as Markdown, for people.
    pub fn markdown(&self) -> String {
        let mut s = format!(
            "# DR drill {}\n\n**{}**\n\n| | |\n|---|---|\n",
            self.started_at,
            if self.ok { "PASSED" } else { "FAILED" }
        );
        let rows = [
            ("snapshot", self.snapshot.clone()),
            ("snapshot taken", self.snapshot_time.clone()),
            ("read from", self.source.clone()),
            (
                "RTO (start to verified restore)",
                format!("{:.1} s", self.rto_ms as f64 / 1000.0),
            ),
            ("RPO (data age at start)", format!("{} s", self.rpo_seconds)),
            (
                "restored",
                format!(
                    "{} files, {} dirs, {} symlinks, {} bytes",
                    self.files, self.dirs, self.symlinks, self.bytes
                ),
            ),
            (
                "gates",
                if self.gates_passed {
                    "all passed".to_string()
                } else {
                    let failed: Vec<&str> = self
                        .gates
                        .iter()
                        .filter(|g| !g.passed)
                        .map(|g| g.gate.as_str())
                        .collect();
                    format!("FAILED: {}", failed.join(", "))
                },
            ),
            (
                "files not matching the snapshot",
                (self.mismatches.len() + self.more_mismatches).to_string(),
            ),
            ("files not restored", self.restore_errors.len().to_string()),
        ];
        for (k, v) in rows {
            s.push_str(&format!("| {k} | {v} |\n"));
        }
        for d in &self.databases {
            let checks = d.checks.iter().filter(|c| c.passed).count();
            s.push_str(&format!(
                "| database `{}` | {} |\n",
                d.source,
                match &d.error {
                    Some(e) if !d.restored =>
                        format!("{}: {e}", if d.ok { "skipped" } else { "FAILED" }),
                    _ => format!(
                        "restored in {:.1} s into `{}`, {checks}/{} checks passed",
                        d.restore_ms as f64 / 1000.0,
                        d.database,
                        d.checks.len()
                    ),
                }
            ));
        }
        if let Some(h) = &self.health {
            s.push_str(&format!(
                "| health command `{}` | {} |\n",
                h.command.join(" "),
                if h.passed {
                    "passed".to_string()
                } else if h.timed_out {
                    "FAILED: timed out".to_string()
                } else {
                    format!("FAILED: exit {:?}", h.exit_code)
                }
            ));
        }
        for d in &self.databases {
            for c in d.checks.iter().filter(|c| !c.passed) {
                s.push_str(&format!(
                    "\n- check on `{}` failed: `{}` gave `{}`\n",
                    d.source, c.query, c.result
                ));
            }
        }
        for (title, list) in [
            ("Not restored", &self.restore_errors),
            ("Not matching", &self.mismatches),
        ] {
            if !list.is_empty() {
                s.push_str(&format!("\n## {title}\n\n"));
                for l in list {
                    s.push_str(&format!("- `{l}`\n"));
                }
            }
        }
        s
    }
}

/// Runs a drill on `vault` and records it (report files and audit line).
pub fn drill(vault: &Vault, opts: &DrillOptions) -> Result<(DrillReport, PathBuf)> {
    let t0 = Instant::now();
    let started = SystemTime::now();
    let reference = match &opts.snapshot {
        Some(s) => s.clone(),
        None => crate::lkg::read(vault)?
            .map(|r| r.snapshot.to_hex())
            .ok_or_else(|| {
                Error::Invalid("no snapshot has been promoted to last-known-good yet".into())
            })?,
    };
    let (id, manifest) = vault.resolve(&reference)?;
    let taken = manifest.system_time().unwrap_or(started);
    let gates = crate::lkg::evaluate(vault, &id, false)?;
    // A temporary directory is removed when `tmp` drops, unless kept.
    let tmp = match &opts.scratch {
        Some(_) => None,
        None => Some(
            tempfile::Builder::new()
                .prefix("atlasvault-drill-")
                .tempdir()
                .at(std::env::temp_dir())?,
        ),
    };
    let scratch = match (&opts.scratch, &tmp) {
        (Some(p), _) => p.clone(),
        (None, Some(t)) => t.path().to_path_buf(),
        (None, None) => unreachable!("invariant: a temporary directory exists without --scratch"),
    };
    let reader = vault.blob_reader()?;
    let restored = crate::restore::restore(
        &reader,
        &manifest,
        &RestoreOptions {
            target: scratch.clone(),
            ..Default::default()
        },
        &Progress::hidden(),
    )?;
    let (mismatches, more) = compare(vault, &manifest.tree, &scratch)?;
    let stamp = started
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        .to_string();
    let rehearsal = rehearse::Rehearsal {
        pg_scratch: opts.pg_scratch.as_deref(),
        checks: &opts.checks,
        stamp: &stamp,
        keep: opts.keep,
    };
    let mut dbs = rehearse::databases(&rehearsal, &manifest.streams, &scratch);
    let health = opts
        .health_command
        .as_ref()
        .map(|argv| rehearse::health(argv, opts.health_timeout, &scratch, &dbs));
    let rto = t0.elapsed();
    rehearse::drop_databases(&rehearsal, &mut dbs);
    let databases: Vec<DbRehearsal> = dbs.into_iter().map(|(d, _)| d).collect();
    let gates_passed = gates::all_passed(&gates);
    let ok = gates_passed
        && mismatches.is_empty()
        && restored.errors.is_empty()
        && databases.iter().all(|d| d.ok)
        && health.as_ref().is_none_or(|h| h.passed);
    let kept = opts.keep.then(|| scratch.display().to_string());
    match (opts.keep, tmp) {
        (true, Some(t)) => {
            let _ = t.keep();
        }
        (false, None) => fs::remove_dir_all(&scratch).at(&scratch)?,
        // A temporary directory not kept goes when `t` drops here.
        _ => {}
    }
    let report = DrillReport {
        started_at: humantime::format_rfc3339_seconds(started).to_string(),
        source: opts.source.clone(),
        snapshot: id.to_hex(),
        snapshot_time: manifest.time.clone(),
        rto_ms: rto.as_millis() as u64,
        rpo_seconds: started.duration_since(taken).unwrap_or_default().as_secs(),
        files: restored.files,
        dirs: restored.dirs,
        symlinks: restored.symlinks,
        bytes: restored.bytes,
        gates,
        gates_passed,
        restore_errors: restored.errors,
        mismatches,
        more_mismatches: more,
        scratch: kept,
        databases,
        health,
        ok,
    };
    let path = write_report(vault, &id, started, &report)?;
    vault.audit(
        &AuditRecord::new("drill", Some(id.to_hex()), if ok { "ok" } else { "failed" })
            .with_detail(serde_json::json!({
                "rto_ms": report.rto_ms, "rpo_seconds": report.rpo_seconds,
                "files": report.files, "bytes": report.bytes, "source": report.source,
                "report": path,
            })),
    )?;
    Ok((report, path))
}

/// Reads every restored file back and checks it against the tree: length, and each piece cut
/// at the stored chunk boundaries hashing to its chunk id. Returns the mismatching paths.
fn compare(vault: &Vault, root: &crate::id::BlobId, target: &Path) -> Result<(Vec<String>, usize)> {
    let reader = vault.blob_reader()?;
    let crypto = vault.crypto();
    let mut bad = Vec::new();
    let mut more = 0;
    let mut note = |path: &[u8], why: &str| {
        if bad.len() < MISMATCHES_SHOWN {
            bad.push(format!("{}: {why}", String::from_utf8_lossy(path)));
        } else {
            more += 1;
        }
    };
    stored::walk(&reader, root, |path, entry| {
        let on_disk = target.join(std::ffi::OsStr::from_bytes(path));
        match &entry.node {
            Node::File { chunks } => {
                let mut f = match File::open(&on_disk) {
                    Ok(f) => f,
                    Err(e) => {
                        note(path, &format!("cannot open: {e}"));
                        return Ok(Visit::Descend);
                    }
                };
                let mut total = 0u64;
                for c in chunks {
                    let Some(loc) = reader.location(c) else {
                        note(path, "a chunk is not in the index");
                        return Ok(Visit::Descend);
                    };
                    let mut buf = vec![0u8; loc.entry.raw_len as usize];
                    if f.read_exact(&mut buf).is_err() || crypto.blob_id(&buf) != *c {
                        note(path, &format!("differs from the snapshot at byte {total}"));
                        return Ok(Visit::Descend);
                    }
                    total += buf.len() as u64;
                }
                let mut extra = [0u8; 1];
                if !matches!(f.read(&mut extra), Ok(0)) {
                    note(path, "longer than in the snapshot");
                }
            }
            Node::Symlink { target: t } => match fs::read_link(&on_disk) {
                Ok(l) if l.as_os_str().as_bytes() == t.as_slice() => {}
                _ => note(path, "symlink target differs"),
            },
            Node::Dir { .. } => {
                if !on_disk.is_dir() {
                    note(path, "directory missing");
                    return Ok(Visit::Skip);
                }
            }
        }
        Ok(Visit::Descend)
    })?;
    Ok((bad, more))
}

/// Writes `drills/<time>-<snapshot>.json` and `.md`; returns the JSON's path.
fn write_report(
    vault: &Vault,
    id: &SnapshotId,
    started: SystemTime,
    r: &DrillReport,
) -> Result<PathBuf> {
    let dir = vault.root().join(DRILLS_DIR);
    fsutil::create_dir_durable(&dir)?;
    // Sorts by time, unique per drill, and NTFS-safe (no colons).
    let stamp: String = humantime::format_rfc3339_nanos(started)
        .to_string()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    let base = format!("{stamp}-{}", id.short());
    let json = dir.join(format!("{base}.json"));
    let mut bytes = serde_json::to_vec_pretty(r).expect("invariant: report serializes");
    bytes.push(b'\n');
    fsutil::atomic_write(&json, &bytes)?;
    fsutil::atomic_write(&dir.join(format!("{base}.md")), r.markdown().as_bytes())?;
    Ok(json)
}

/// Past drills, oldest first (reports that do not parse are skipped).
pub fn list(vault_root: &Path) -> Result<Vec<DrillReport>> {
    let dir = vault_root.join(DRILLS_DIR);
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    let mut names: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    names.sort();
    Ok(names
        .iter()
        .filter_map(|p| fs::read(p).ok())
        .filter_map(|b| serde_json::from_slice(&b).ok())
        .collect())
}
