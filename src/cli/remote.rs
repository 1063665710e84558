//! `vault push`, `vault remote add` and `vault remote list`. Pushing is [`crate::push`]'s; the
//! backends are [`crate::backend`]'s; this picks the remotes, reports, and audits.

use std::path::{Path, PathBuf};

use serde_json::json;

use super::{exit, say, Ctx, PushArgs, RemoteAddArgs};
use crate::audit::AuditRecord;
use crate::backend::{self, RemoteSpec};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::lock::LockMode;
use crate::progress::Progress;
use crate::push::{self, PushOptions};
use crate::util::human_bytes;
use crate::vaultfile::{RemoteUrl, VaultFile, CONFIG_FILE_NAME};

/// Said once, on the first push to a directory remote.
const NO_PERMISSIONS_WARNING: &str = "warning: a directory remote keeps no file permissions or \
     ownership (NTFS cannot): protect the directory itself (on Windows, an ACL; see README.md, \
     \"Append-only remotes\")";

/// The remotes a command concerns: those named, or all of the config file.
fn chosen(ctx: &Ctx, names: &[String]) -> Result<Vec<RemoteSpec>> {
    if !names.is_empty() {
        return names.iter().map(|n| ctx.remote_spec(n)).collect();
    }
    let all: Vec<RemoteSpec> = ctx
        .config
        .as_ref()
        .map(|f| f.remotes.iter().map(RemoteSpec::from).collect())
        .unwrap_or_default();
    if all.is_empty() {
        return Err(Error::Usage(
            "no remote to push to: add one with `vault remote add NAME URL` (it goes into the \
             config file)"
                .into(),
        ));
    }
    Ok(all)
}

/// `vault push [--remote NAME]...`: every chosen remote in turn; one failing does not stop the
/// others, and the exit code says that one failed.
pub(super) fn push(ctx: &mut Ctx, a: &PushArgs) -> Result<i32> {
    let specs = chosen(ctx, &a.remote)?;
    let vault = ctx.open(LockMode::Shared)?;
    let mut code = exit::OK;
    let mut reports = Vec::new();
    for spec in &specs {
        let progress = if ctx.json {
            Progress::hidden()
        } else {
            Progress::bytes_bar(&format!("push {}", spec.name))
        };
        let opts = PushOptions {
            threads: a.threads,
            append_only: spec.append_only,
        };
        let result = backend::open(spec).and_then(|b| push::push(&vault, &*b, &opts, &progress));
        progress.finish();
        match result {
            Ok(r) => {
                vault.audit(
                    &AuditRecord::new("push", r.ref_updated.clone(), "ok").with_detail(json!({
                        "remote": spec.name, "objects_uploaded": r.objects_uploaded,
                        "bytes_uploaded": r.bytes_uploaded, "packs_uploaded": r.packs_uploaded,
                        "snapshots_uploaded": r.snapshots_uploaded,
                    })),
                )?;
                if r.first_push && matches!(spec.url, RemoteUrl::Path(_)) {
                    eprintln!("{NO_PERMISSIONS_WARNING}");
                }
                if !ctx.json {
                    say!(
                        ctx.out,
                        "pushed to {} ({}): {} objects, {} ({} packs, {} snapshots); {} already there{}",
                        spec.name,
                        r.remote,
                        r.objects_uploaded,
                        human_bytes(r.bytes_uploaded),
                        r.packs_uploaded,
                        r.snapshots_uploaded,
                        r.objects_present,
                        match &r.ref_updated {
                            Some(s) => format!("; last-known-good is now {}", &s[..12]),
                            None => String::new(),
                        }
                    );
                }
                reports.push(json!({"remote": spec.name, "ok": true, "report": r}));
            }
            Err(e) => {
                vault.audit(
                    &AuditRecord::new("push", None, "failed")
                        .with_detail(json!({"remote": spec.name, "error": e.to_string()})),
                )?;
                eprintln!("error: push to {}: {e}", spec.name);
                code = code.max(super::exit_code(&e)).max(exit::ERROR);
                reports.push(json!({"remote": spec.name, "ok": false, "error": e.to_string()}));
            }
        }
    }
    if ctx.json {
        ctx.out.json(json!({ "pushes": reports }))?;
    }
    Ok(code)
}

/// `vault remote list`: each remote with what it lacks (one listing of its `snapshots/`).
pub(super) fn list(ctx: &mut Ctx) -> Result<i32> {
    let specs: Vec<RemoteSpec> = ctx
        .config
        .as_ref()
        .map(|f| f.remotes.iter().map(RemoteSpec::from).collect())
        .unwrap_or_default();
    let vault = ctx.open(LockMode::Shared)?;
    let local: Vec<String> = vault
        .snapshot_ids()?
        .into_iter()
        .map(|id| format!("snapshots/{id}.json"))
        .collect();
    let lkg = crate::lkg::read(&vault)?.map(|r| r.snapshot);
    let mut rows = Vec::new();
    for spec in &specs {
        let lag = remote_lag(spec, &local, lkg);
        let row = match &lag {
            Ok((lacking, lkg_there)) => json!({
                "name": spec.name, "url": spec.url.to_string(), "append_only": spec.append_only,
                "snapshots_lacking": lacking, "has_lkg": lkg_there,
            }),
            Err(e) => json!({
                "name": spec.name, "url": spec.url.to_string(), "append_only": spec.append_only,
                "error": e.to_string(),
            }),
        };
        if !ctx.json {
            let state = match &lag {
                Ok((0, _)) => "up to date".to_string(),
                Ok((n, has)) => format!(
                    "lacks {n} snapshot(s){}",
                    if *has {
                        ""
                    } else {
                        ", including the last-known-good"
                    }
                ),
                Err(e) => format!("UNREACHABLE: {e}"),
            };
            say!(
                ctx.out,
                "{:<12} {:<40} {}{}",
                spec.name,
                spec.url.to_string(),
                state,
                if spec.append_only {
                    " [append-only]"
                } else {
                    ""
                }
            );
        }
        rows.push(row);
    }
    if ctx.json {
        ctx.out.json(json!({ "remotes": rows }))?;
    } else if specs.is_empty() {
        say!(
            ctx.out,
            "no remotes; add one with `vault remote add NAME URL`"
        );
    }
    Ok(exit::OK)
}

/// How many of `local` (manifest object names) a remote lacks, and whether it holds `lkg`.
pub(super) fn remote_lag(
    spec: &RemoteSpec,
    local: &[String],
    lkg: Option<crate::id::SnapshotId>,
) -> Result<(usize, bool)> {
    // A status query: one retry at most, so an unreachable remote answers in seconds.
    let b = backend::open_with(spec, crate::backend::retry::RetryPolicy::fast(2))?;
    let there: std::collections::HashSet<String> =
        b.list("snapshots/")?.into_iter().map(|o| o.name).collect();
    let lacking = local.iter().filter(|n| !there.contains(*n)).count();
    let lkg_there = lkg.is_some_and(|id| there.contains(&format!("snapshots/{id}.json")));
    Ok((lacking, lkg_there))
}

/// `vault remote add NAME URL [options]`: appends a `[[remote]]` table to the config file,
/// keeping its comments, and checks the result before writing it. Without a config file, one is
/// created (at --config, or ./vault.toml) naming the current vault.
pub(super) fn add(
    ctx: &mut Ctx,
    a: &RemoteAddArgs,
    found: Option<&Path>,
    flag: Option<&Path>,
) -> Result<i32> {
    let cwd = std::env::current_dir().map_err(|e| Error::io(".", e))?;
    let path: PathBuf = found
        .map(Path::to_path_buf)
        .or_else(|| flag.map(|f| cwd.join(f)))
        .unwrap_or_else(|| cwd.join(CONFIG_FILE_NAME));
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let root = if ctx.root.is_absolute() {
                ctx.root.clone()
            } else {
                cwd.join(&ctx.root)
            };
            let mut doc = toml_edit::DocumentMut::new();
            doc["vault"] = toml_edit::value(root.to_string_lossy().as_ref());
            doc.to_string()
        }
        Err(e) => return Err(Error::io(&path, e)),
    };
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
    let mut t = toml_edit::Table::new();
    t["name"] = toml_edit::value(a.name.as_str());
    t["url"] = toml_edit::value(a.url.as_str());
    if let Some(e) = &a.endpoint {
        t["endpoint"] = toml_edit::value(e.as_str());
    }
    if let Some(r) = &a.region {
        t["region"] = toml_edit::value(r.as_str());
    }
    if a.path_style {
        t["path_style"] = toml_edit::value(true);
    }
    if a.append_only {
        t["append_only"] = toml_edit::value(true);
    }
    match doc
        .entry("remote")
        .or_insert_with(|| toml_edit::Item::ArrayOfTables(Default::default()))
    {
        toml_edit::Item::ArrayOfTables(arr) => arr.push(t),
        _ => {
            return Err(Error::Invalid(format!(
                "{}: `remote` is not a list of [[remote]] tables",
                path.display()
            )))
        }
    }
    let new_text = doc.to_string();
    // The same checks as every command's: a bad URL, a duplicate name, an S3 key on a path.
    let checked = VaultFile::parse(&new_text, &path)?;
    let remote = checked
        .remote(&a.name)
        .expect("invariant: the remote just added is in the checked file");
    // A directory remote is created now, while the drive is there: pushes never create it, so
    // that an unmounted drive fails loudly instead of filling its mount point.
    if let RemoteUrl::Path(dir) = &remote.url {
        crate::backend::local::LocalBackend::create(dir)?;
    }
    fsutil::atomic_write(&path, new_text.as_bytes())?;
    if ctx.json {
        ctx.out.json(json!({"config": path, "remote": remote}))?;
    } else {
        say!(
            ctx.out,
            "added remote {} ({}) to {}; push with `vault push --remote {}`",
            remote.name,
            remote.url,
            path.display(),
            remote.name
        );
    }
    Ok(exit::OK)
}
