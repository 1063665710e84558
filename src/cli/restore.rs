//! `vault restore`: restore a snapshot (or the last-known-good) into a directory. Overwriting a
//! non-empty target first takes a safety snapshot of it, so that the restore can be undone. The
//! restoring itself is [`crate::restore`]'s.

use std::path::Path;

use serde_json::json;
use sha2::{Digest, Sha256};

use super::{exit, say, Ctx, RestoreArgs};
use crate::audit::AuditRecord;
use crate::error::{Error, Result};
use crate::id::SnapshotId;
use crate::lkg;
use crate::lock::LockMode;
use crate::manifest::Manifest;
use crate::progress::Progress;
use crate::restore::RestoreOptions;
use crate::snapshot::SnapshotOptions;
use crate::stored;
use crate::tree::Node;
use crate::util::human_bytes;

/// The snapshot a restore concerns: the one named, or the last-known-good.
fn resolve(vault: &crate::vault::Vault, a: &RestoreArgs) -> Result<(SnapshotId, Manifest)> {
    let reference = match (&a.snapshot, a.lkg) {
        (Some(s), _) => s.clone(),
        (None, _) => lkg::read(vault)?
            .map(|r| r.snapshot.to_hex())
            .ok_or_else(|| {
                Error::Invalid("no snapshot has been promoted to last-known-good yet".into())
            })?,
    };
    vault.resolve(&reference)
}

/// `vault restore (SNAPSHOT | --lkg) --source NAME --to-stdout`: the stream is read twice, once
/// to check its sha256 against the manifest, then to write it, so that nothing unverified
/// reaches the consumer (`psql`, `pg_restore`).
fn stream_to_stdout(ctx: &mut Ctx, a: &RestoreArgs) -> Result<i32> {
    let name = a.source.as_deref().unwrap_or_default();
    let vault = ctx.open(LockMode::Shared)?;
    let (id, m) = resolve(&vault, a)?;
    let record = m.streams.iter().find(|s| s.source == name).ok_or_else(|| {
        let have: Vec<&str> = m.streams.iter().map(|s| s.source.as_str()).collect();
        Error::Invalid(format!(
            "snapshot {} has no stream of source {name:?} (it has: {})",
            id.short(),
            if have.is_empty() {
                "none".to_string()
            } else {
                have.join(", ")
            }
        ))
    })?;
    let reader = vault.blob_reader()?;
    let chunks = match stored::lookup(&reader, &m.tree, &record.path)?.map(|e| e.node) {
        Some(Node::File { chunks }) => chunks,
        _ => {
            return Err(Error::Missing {
                object: format!("stream {} in snapshot {}", record.path, id.short()),
            })
        }
    };
    let mut hasher = Sha256::new();
    for c in &chunks {
        hasher.update(reader.read(c)?);
    }
    let actual = hex::encode(hasher.finalize());
    if actual != record.sha256 {
        return Err(Error::corrupt(
            format!("stream {} of snapshot {}", record.path, id.short()),
            format!("sha256 {actual}, manifest says {}", record.sha256),
        ));
    }
    if !record.ok {
        eprintln!(
            "warning: source {name} failed when this snapshot was taken: {}",
            record.problems.join("; ")
        );
    }
    for c in &chunks {
        ctx.out.raw(&reader.read(c)?)?;
    }
    vault.audit(
        &AuditRecord::new("restore", Some(id.to_hex()), "ok")
            .with_detail(json!({"source": name, "to": "stdout", "sha256": actual})),
    )?;
    Ok(exit::OK)
}

/// `vault restore (SNAPSHOT | --lkg) --target DIR`.
pub(super) fn run(ctx: &mut Ctx, a: RestoreArgs) -> Result<i32> {
    if a.to_stdout {
        return stream_to_stdout(ctx, &a);
    }
    let target = a
        .target
        .clone()
        .ok_or_else(|| Error::Usage("restore needs --target DIR (or --to-stdout)".into()))?;
    // Overwriting a non-empty target first takes a safety snapshot of it, which needs the
    // vault's writer lock.
    let needs_safety = a.overwrite && non_empty_dir(&target)?;
    let mode = if needs_safety {
        LockMode::Exclusive
    } else {
        LockMode::Shared
    };
    let mut vault = ctx.open(mode)?;
    let (id, m) = resolve(&vault, &a)?;
    let safety = if needs_safety {
        eprintln!(
            "taking a safety snapshot of {} before overwriting it",
            target.display()
        );
        let opts = SnapshotOptions {
            paths: vec![target.clone()],
            safety: true,
            ..Default::default()
        };
        let done = crate::snapshot::snapshot(&mut vault, &opts, &Progress::hidden())?;
        for w in &done.manifest.warnings {
            eprintln!("warning: safety snapshot: {w}");
        }
        eprintln!(
            "safety snapshot {} holds what was in {} (never promoted); undo this restore \
             with: vault restore {} --target {} --overwrite",
            done.id.short(),
            target.display(),
            done.id,
            target.display()
        );
        Some(done.id)
    } else {
        None
    };
    let reader = vault.blob_reader()?;
    let opts = RestoreOptions {
        target: target.clone(),
        includes: a.include,
        overwrite: a.overwrite,
        threads: 0,
    };
    let progress = if ctx.json {
        Progress::hidden()
    } else {
        Progress::bytes_bar("restore")
    };
    progress.inc_total(m.stats.bytes);
    let result = crate::restore::restore(&reader, &m, &opts, &progress);
    let outcome = match &result {
        Ok(r) if r.errors.is_empty() => "ok",
        Ok(_) => "incomplete",
        Err(_) => "failed",
    };
    vault.audit(
        &AuditRecord::new("restore", Some(id.to_hex()), outcome)
            .with_detail(json!({"target": a.target, "safety_snapshot": safety})),
    )?;
    let r = result?;
    for e in &r.errors {
        eprintln!("error: {e}");
    }
    if ctx.json {
        ctx.out.json(
            json!({"snapshot": id, "target": a.target, "safety_snapshot": safety, "report": r}),
        )?;
    } else {
        say!(
            ctx.out,
            "restored snapshot {} to {}: {} files, {} dirs, {} symlinks, {}{}",
            id.short(),
            target.display(),
            r.files - r.errors.len().min(r.files as usize) as u64,
            r.dirs,
            r.symlinks,
            human_bytes(r.bytes),
            if r.errors.is_empty() {
                String::new()
            } else {
                format!("; {} entries FAILED", r.errors.len())
            }
        );
    }
    Ok(if r.errors.is_empty() {
        exit::OK
    } else {
        exit::DAMAGED
    })
}

/// True when `path` is a directory with at least one entry (or any other existing non-directory).
fn non_empty_dir(path: &Path) -> Result<bool> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(path, e)),
        Ok(m) if m.is_dir() => Ok(std::fs::read_dir(path)
            .map_err(|e| Error::io(path, e))?
            .next()
            .is_some()),
        Ok(_) => Ok(true),
    }
}
