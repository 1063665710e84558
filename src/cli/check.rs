//! The integrity commands: `vault verify`, `reindex`, `gate`, `promote` and `audit`. The checks
//! themselves live in [`crate::verify`], [`crate::gates`] and [`crate::lkg`]; this reports them
//! and maps their verdicts to exit codes.

use serde_json::json;

use super::{exit, say, AuditArgs, Ctx, DrillArgs, Out, VerifyArgs};
use crate::audit::{self, AuditRecord};
use crate::backend::RemoteSpec;
use crate::error::{Error, Result};
use crate::gates::{self, GateResult};
use crate::id::SnapshotId;
use crate::lkg;
use crate::lock::LockMode;
use crate::progress::Progress;
use crate::util::human_bytes;
use crate::vault::Vault;
use crate::verify::VerifyOptions;

/// Blob ids printed per damaged pack in the human report.
const BLOBS_SHOWN: usize = 10;

/// `vault verify`.
pub(super) fn verify(ctx: &mut Ctx, a: &VerifyArgs) -> Result<i32> {
    let remote = match (&a.remote, &a.from) {
        (Some(name), _) => Some(ctx.remote_spec(name)?),
        (None, Some(url)) => Some(RemoteSpec::from_url(url).map_err(Error::Usage)?),
        (None, None) => None,
    };
    let vault = match &remote {
        Some(spec) => ctx.open_remote(spec)?,
        None => ctx.open(LockMode::Shared)?,
    };
    let opts = VerifyOptions {
        read_data: a.read_data || a.read_data_subset.is_some(),
        subset_percent: a.read_data_subset,
        threads: 0,
    };
    let progress = if ctx.json || !opts.read_data {
        Progress::hidden()
    } else {
        Progress::bytes_bar("verify")
    };
    let r = crate::verify::verify(&vault, &opts, &progress)?;
    let outcome = if r.is_clean() { "ok" } else { "damaged" };
    let record = AuditRecord::new("verify", None, outcome).with_detail(json!({
        "read_data": opts.read_data, "subset_percent": opts.subset_percent,
        "problems": r.problems.len(), "damaged_packs": r.damaged_packs.len(),
        "remote": remote.as_ref().map(|s| s.url.to_string()),
    }));
    vault.audit(&record)?;
    if remote.is_some() {
        ctx.audit_local(&record)?;
    }
    let out = &mut ctx.out;
    if ctx.json {
        out.json(json!({"clean": r.is_clean(), "report": r}))?;
    } else {
        for p in &r.problems {
            say!(out, "problem: {p}");
        }
        for d in &r.damaged_packs {
            say!(out, "damaged pack {}: {}", d.pack, d.reason);
            for b in d.blobs.iter().take(BLOBS_SHOWN) {
                say!(out, "  blob {b}");
            }
            if d.blobs.len() > BLOBS_SHOWN {
                say!(
                    out,
                    "  ... and {} more blobs (--json lists all)",
                    d.blobs.len() - BLOBS_SHOWN
                );
            }
            for s in &d.snapshots {
                say!(out, "  breaks snapshot {s}");
            }
            for p in &d.paths {
                say!(out, "  breaks file {p}");
            }
            if d.more_paths > 0 {
                say!(out, "  ... and {} more files", d.more_paths);
            }
        }
        say!(
            out,
            "{}: {} snapshots, {} trees, {} blobs referenced, {} packs{}",
            if r.is_clean() {
                "vault is clean"
            } else {
                "VAULT IS DAMAGED"
            },
            r.snapshots,
            r.trees,
            r.blobs_referenced,
            r.packs,
            if opts.read_data {
                format!(
                    ", {} packs read ({})",
                    r.packs_read,
                    human_bytes(r.bytes_read)
                )
            } else {
                String::new()
            }
        );
    }
    Ok(if r.is_clean() {
        exit::OK
    } else {
        exit::DAMAGED
    })
}

/// `vault reindex`.
pub(super) fn reindex(ctx: &mut Ctx) -> Result<i32> {
    let mut vault = Vault::open_with_new_index(&ctx.root, ctx.wait, &ctx.secrets)?;
    let (packs, blobs, problems) = vault.reindex()?;
    vault.audit(
        &AuditRecord::new(
            "reindex",
            None,
            if problems.is_empty() { "ok" } else { "damaged" },
        )
        .with_detail(json!({"packs": packs, "blobs": blobs, "problems": problems})),
    )?;
    for p in &problems {
        eprintln!("problem: {p}");
    }
    if ctx.json {
        ctx.out
            .json(json!({"packs": packs, "blobs": blobs, "problems": problems}))?;
    } else {
        say!(ctx.out, "index rebuilt: {packs} packs, {blobs} blobs");
    }
    Ok(if problems.is_empty() {
        exit::OK
    } else {
        exit::DAMAGED
    })
}

/// `vault audit`: reads the log directly, without opening (or unlocking) the vault.
pub(super) fn audit(ctx: &mut Ctx, a: &AuditArgs) -> Result<i32> {
    let root = &ctx.root;
    if !root.join("config.json").exists() {
        return Err(Error::NoVault { path: root.clone() });
    }
    let (mut records, bad) = audit::read(&root.join("audit.log"))?;
    records.retain(|r| {
        a.action.as_ref().is_none_or(|want| &r.action == want)
            && a.since.is_none_or(|since| {
                humantime::parse_rfc3339_weak(&r.time).is_ok_and(|t| t >= since)
            })
    });
    if bad > 0 {
        eprintln!("warning: {bad} audit line(s) did not parse (a torn last write?)");
    }
    let out = &mut ctx.out;
    if ctx.json {
        // JSON lines: one record per line, as stored.
        for r in &records {
            say!(
                out,
                "{}",
                serde_json::to_string(r).expect("invariant: audit record serializes")
            );
        }
    } else {
        for r in &records {
            say!(
                out,
                "{} {:<9} {:<10} {:<10} {}@{}",
                r.time,
                r.action,
                r.outcome,
                r.snapshot
                    .as_deref()
                    .map(|s| &s[..s.len().min(8)])
                    .unwrap_or("-"),
                r.user,
                r.host
            );
        }
    }
    Ok(exit::OK)
}

/// `vault gate SNAPSHOT [--deep]`.
pub(super) fn gate(ctx: &mut Ctx, snapshot: &str, deep: bool) -> Result<i32> {
    let vault = ctx.open(LockMode::Shared)?;
    let id = gate_target(&vault, snapshot)?;
    let results = lkg::evaluate(&vault, &id, deep)?;
    let passed = gates::all_passed(&results);
    vault.audit(
        &AuditRecord::new(
            "gate",
            Some(id.to_hex()),
            if passed { "ok" } else { "rejected" },
        )
        .with_detail(json!({"deep": deep, "gates": results})),
    )?;
    let out = &mut ctx.out;
    if ctx.json {
        out.json(json!({"snapshot": id, "passed": passed, "gates": results}))?;
    } else {
        print_gates(out, &results)?;
        say!(
            out,
            "snapshot {}: {}",
            id.short(),
            if passed {
                "every gate passed"
            } else {
                "REJECTED"
            }
        );
    }
    Ok(if passed { exit::OK } else { exit::REJECTED })
}

/// `vault promote SNAPSHOT`.
pub(super) fn promote(ctx: &mut Ctx, snapshot: &str) -> Result<i32> {
    let vault = ctx.open(LockMode::Append)?;
    let id = gate_target(&vault, snapshot)?;
    let p = lkg::promote(&vault, &id)?;
    let out = &mut ctx.out;
    if ctx.json {
        out.json(json!(p))?;
    } else {
        print_gates(out, &p.gates)?;
        if p.promoted {
            say!(out, "promoted {} to last-known-good", id.short());
        } else {
            say!(
                out,
                "REJECTED: {} not promoted; the last-known-good did not move",
                id.short()
            );
        }
    }
    Ok(if p.promoted { exit::OK } else { exit::REJECTED })
}

/// The snapshot a gate run concerns. A full id is taken as given, so that a missing manifest is
/// the manifest gate's verdict rather than a lookup error.
fn gate_target(vault: &Vault, reference: &str) -> Result<SnapshotId> {
    match SnapshotId::from_hex(reference) {
        Ok(id) => Ok(id),
        Err(_) => Ok(vault.resolve(reference)?.0),
    }
}

/// One line per gate, then its reasons indented; shared with `vault snapshot`.
pub(super) fn print_gates(out: &mut Out, results: &[GateResult]) -> Result<()> {
    for g in results {
        say!(
            out,
            "gate {:<13} {}",
            g.gate,
            if g.passed { "passed" } else { "FAILED" }
        );
        for r in &g.reasons {
            say!(out, "  {r}");
        }
    }
    Ok(())
}

/// `vault drill [--snapshot ID] [--from URL] [--scratch DIR] [--keep]`.
pub(super) fn drill(ctx: &mut Ctx, a: &DrillArgs) -> Result<i32> {
    let vault = match &a.from {
        Some(url) => ctx.open_remote(&RemoteSpec::from_url(url).map_err(Error::Usage)?)?,
        None => ctx.open(LockMode::Shared)?,
    };
    let file_drill = ctx
        .config
        .as_ref()
        .map(|f| f.drill.clone())
        .unwrap_or_default();
    let pg_scratch = a.pg_scratch.clone().or(file_drill.pg_scratch);
    if let Some(url) = &pg_scratch {
        check_scratch_url(url)?;
    }
    let opts = crate::drill::DrillOptions {
        snapshot: a.snapshot.clone(),
        scratch: a.scratch.clone(),
        keep: a.keep,
        source: a.from.clone().unwrap_or_else(|| "local".into()),
        pg_scratch,
        checks: file_drill.checks,
        health_command: file_drill.health_command,
        health_timeout: file_drill.health_timeout,
    };
    let (r, path) = crate::drill::drill(&vault, &opts)?;
    if a.from.is_some() {
        ctx.audit_local(
            &AuditRecord::new(
                "drill",
                Some(r.snapshot.clone()),
                if r.ok { "ok" } else { "failed" },
            )
            .with_detail(
                json!({"rto_ms": r.rto_ms, "rpo_seconds": r.rpo_seconds, "source": r.source}),
            ),
        )?;
    }
    if ctx.json {
        ctx.out.json(json!({"report": r, "path": path}))?;
    } else {
        let out = &mut ctx.out;
        say!(
            out,
            "drill {}: snapshot {} from {}: RTO {:.1} s, RPO {} s, {} files, {}",
            if r.ok { "PASSED" } else { "FAILED" },
            &r.snapshot[..12],
            r.source,
            r.rto_ms as f64 / 1000.0,
            r.rpo_seconds,
            r.files,
            human_bytes(r.bytes)
        );
        for g in r.gates.iter().filter(|g| !g.passed) {
            say!(out, "  gate {} failed: {}", g.gate, g.reasons.join("; "));
        }
        for e in r.restore_errors.iter().chain(&r.mismatches) {
            say!(out, "  {e}");
        }
        for d in &r.databases {
            match &d.error {
                Some(e) if !d.restored => say!(out, "  database {}: {e}", d.source),
                _ => say!(
                    out,
                    "  database {}: restored in {:.1} s, {}/{} checks passed",
                    d.source,
                    d.restore_ms as f64 / 1000.0,
                    d.checks.iter().filter(|c| c.passed).count(),
                    d.checks.len()
                ),
            }
            for c in d.checks.iter().filter(|c| !c.passed) {
                say!(out, "    check failed: {} gave {:?}", c.query, c.result);
            }
        }
        if let Some(h) = &r.health {
            say!(
                out,
                "  health command {}: {}",
                h.command.join(" "),
                if h.passed {
                    "passed".to_string()
                } else if h.timed_out {
                    "timed out".to_string()
                } else {
                    format!("failed (exit {:?}): {}", h.exit_code, h.output)
                }
            );
        }
        if r.more_mismatches > 0 {
            say!(out, "  ... and {} more", r.more_mismatches);
        }
        say!(out, "report: {}", path.display());
    }
    Ok(if r.ok {
        exit::OK
    } else if !r.mismatches.is_empty() || !r.restore_errors.is_empty() {
        exit::DAMAGED
    } else {
        exit::REJECTED
    })
}

/// `vault drills`: past drills, oldest first.
pub(super) fn drills(ctx: &mut Ctx) -> Result<i32> {
    let vault = ctx.open(LockMode::Shared)?;
    let list = crate::drill::list(vault.root())?;
    if ctx.json {
        ctx.out.json(json!(list))?;
        return Ok(exit::OK);
    }
    if list.is_empty() {
        say!(ctx.out, "no drills yet; run `vault drill`");
    }
    for r in &list {
        say!(
            ctx.out,
            "{}  {}  snapshot {}  RTO {:>7.1} s  RPO {:>7} s  {} files  {}",
            r.started_at,
            if r.ok { "PASSED" } else { "FAILED" },
            &r.snapshot[..12],
            r.rto_ms as f64 / 1000.0,
            r.rpo_seconds,
            r.files,
            r.source
        );
    }
    Ok(exit::OK)
}

/// A `--pg-scratch` URL: libpq's form, and no password (a flag is visible to every user in `ps`).
fn check_scratch_url(url: &str) -> Result<()> {
    use crate::vaultfile::PgUrlProblem;
    match crate::vaultfile::pg_url_problem(url) {
        Some(PgUrlProblem::NotPg) => Err(Error::Usage(
            "--pg-scratch must be a postgresql:// URL".into(),
        )),
        Some(PgUrlProblem::Password) => Err(Error::Usage(
            "--pg-scratch holds a password; give it in PGPASSWORD or PGPASSFILE instead".into(),
        )),
        None => Ok(()),
    }
}
