//! `vault snapshot`: take a snapshot, run the gates, and promote it to last-known-good unless
//! told not to. The snapshot itself is [`crate::snapshot`]'s; promotion is [`crate::lkg`]'s.

use serde_json::json;

use super::check::print_gates;
use super::{exit, say, Ctx, SnapshotArgs};
use crate::error::{Error, Result};
use crate::lkg;
use crate::lock::LockMode;
use crate::progress::Progress;
use crate::snapshot::{NamedSource, SnapshotOptions};
use crate::stream::{StreamKind, StreamSource};
use crate::util::human_bytes;

/// `vault snapshot PATH...`, or `vault snapshot [--source NAME]...` from the config file.
pub(super) fn run(ctx: &mut Ctx, a: SnapshotArgs) -> Result<i32> {
    let mut template_only = a.template_only;
    let (sources, streams) = match &a.name {
        Some(name) if a.stdin => (
            Vec::new(),
            vec![StreamSource {
                name: name.clone(),
                file_name: "stdin".into(),
                kind: StreamKind::Stdin,
            }],
        ),
        _ if a.paths.is_empty() => config_sources(ctx, &a.source, &mut template_only)?,
        _ => (Vec::new(), Vec::new()),
    };
    let opts = SnapshotOptions {
        paths: a.paths,
        excludes: a.exclude,
        no_parent: a.no_parent,
        threads: 0,
        template_only,
        safety: false,
        sources,
        streams,
    };
    // The walk needs neither key nor index: it runs while the password's key is derived. If it
    // cannot start (a missing path, no vault), the snapshot starts it again after opening and
    // reports the error in the usual order.
    let scan = crate::scan::Scan::start(&opts, &ctx.root).ok();
    let mut vault = ctx.open(LockMode::Append)?;
    let progress = if ctx.json {
        Progress::hidden()
    } else {
        Progress::bytes_bar("snapshot")
    };
    let done = crate::snapshot::snapshot_scanned(&mut vault, &opts, scan, &progress)?;
    let m = &done.manifest;
    let s = &m.stats;
    for w in &m.warnings {
        eprintln!("warning: {w}");
    }
    let dedup = if s.bytes_read == 0 {
        0.0
    } else {
        1.0 - s.bytes_new.min(s.bytes_read) as f64 / s.bytes_read as f64
    };
    let promotion = if a.no_promote {
        None
    } else {
        let checked = m.gates.as_deref().unwrap_or_default();
        Some(lkg::promote_checked(&vault, &done.id, checked)?)
    };
    let gates = promotion.as_ref().map(|p| &p.gates).or(m.gates.as_ref());
    let out = &mut ctx.out;
    if ctx.json {
        out.json(json!({
            "id": done.id, "time": m.time, "parent": m.parent, "partial": m.partial,
            "files": s.files, "dirs": s.dirs, "bytes": s.bytes, "bytes_read": s.bytes_read,
            "bytes_new": s.bytes_new, "bytes_stored": s.bytes_stored,
            "files_unchanged": s.files_unchanged,
            "dedup_ratio": dedup, "duration_ms": s.duration_ms, "warnings": m.warnings,
            "gates": gates, "promoted": promotion.as_ref().map(|p| p.promoted),
            "template_only": m.template_only,
        }))?;
    } else {
        say!(
            out,
            "snapshot {} saved: {} files, {} dirs, {} total; read {}, new {} ({} stored) in {:.1}s{}",
            done.id.short(),
            s.files,
            s.dirs,
            human_bytes(s.bytes),
            human_bytes(s.bytes_read),
            human_bytes(s.bytes_new),
            human_bytes(s.bytes_stored),
            s.duration_ms as f64 / 1000.0,
            if m.partial { " (PARTIAL: some files could not be read)" } else { "" }
        );
        if let Some(t) = m.template_only.as_ref().filter(|t| t.templated > 0) {
            say!(
                out,
                "{} file(s) stored as templates, secrets redacted (template_only)",
                t.templated
            );
        }
        print_gates(out, gates.map(Vec::as_slice).unwrap_or_default())?;
        match &promotion {
            Some(p) if p.promoted => {
                say!(out, "promoted {} to last-known-good", done.id.short())
            }
            Some(_) => say!(
                out,
                "REJECTED: {} is kept but not promoted; the last-known-good did not move",
                done.id.short()
            ),
            None => say!(out, "not promoted (--no-promote)"),
        }
    }
    Ok(match promotion {
        Some(p) if !p.promoted => exit::REJECTED,
        _ if m.partial => exit::PARTIAL,
        _ => exit::OK,
    })
}

/// The config file's sources to snapshot (all, or those `--source` names), as named roots; their
/// `template_only` globs are added to `template_only`.
fn config_sources(
    ctx: &Ctx,
    wanted: &[String],
    template_only: &mut Vec<String>,
) -> Result<(Vec<NamedSource>, Vec<StreamSource>)> {
    let Some(file) = &ctx.config else {
        return Err(Error::Usage(
            "nothing to snapshot: give PATHs, or sources in a config file (--config FILE, \
             VAULT_CONFIG, or ./vault.toml)"
                .into(),
        ));
    };
    let s = crate::cycle::config_sources(file, wanted)?;
    for g in s.template_only {
        if !template_only.contains(&g) {
            template_only.push(g);
        }
    }
    Ok((s.trees, s.streams))
}
