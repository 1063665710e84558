//! `vault restore`: restore a snapshot (or the last-known-good) into a directory. Overwriting a
//! non-empty target first takes a safety snapshot of it, so that the restore can be undone. The
//! restoring itself is [`crate::restore`]'s.

use std::path::Path;

use serde_json::json;

use super::{exit, say, Ctx, RestoreArgs};
use crate::audit::AuditRecord;
use crate::error::{Error, Result};
use crate::lkg;
use crate::lock::LockMode;
use crate::progress::Progress;
use crate::restore::RestoreOptions;
use crate::snapshot::SnapshotOptions;
use crate::util::human_bytes;

/// `vault restore (SNAPSHOT | --lkg) --target DIR`.
pub(super) fn run(ctx: &mut Ctx, a: RestoreArgs) -> Result<i32> {
    // Overwriting a non-empty target first takes a safety snapshot of it, which needs the
    // vault's writer lock.
    let needs_safety = a.overwrite && non_empty_dir(&a.target)?;
    let mode = if needs_safety {
        LockMode::Exclusive
    } else {
        LockMode::Shared
    };
    let mut vault = ctx.open(mode)?;
    let reference = match (&a.snapshot, a.lkg) {
        (Some(s), _) => s.clone(),
        (None, _) => lkg::read(&vault)?
            .map(|r| r.snapshot.to_hex())
            .ok_or_else(|| {
                Error::Invalid("no snapshot has been promoted to last-known-good yet".into())
            })?,
    };
    let (id, m) = vault.resolve(&reference)?;
    let safety = if needs_safety {
        eprintln!(
            "taking a safety snapshot of {} before overwriting it",
            a.target.display()
        );
        let opts = SnapshotOptions {
            paths: vec![a.target.clone()],
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
            a.target.display(),
            done.id,
            a.target.display()
        );
        Some(done.id)
    } else {
        None
    };
    let reader = vault.blob_reader()?;
    let opts = RestoreOptions {
        target: a.target.clone(),
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
            a.target.display(),
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
