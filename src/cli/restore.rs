//! `vault restore`: restore a snapshot (or the last-known-good) into a directory. Overwriting a
//! non-empty target first takes a safety snapshot of it, so that the restore can be undone. The
//! restoring itself is [`crate::restore`]'s. A source's dump stream can instead go to stdout, to a
//! file, or into a PostgreSQL database, each only after its sha256 matched the manifest.

use std::io::Write;
use std::path::Path;

use serde_json::json;
use sha2::{Digest, Sha256};

use super::{exit, say, Ctx, RestoreArgs};
use crate::audit::AuditRecord;
use crate::backend::RemoteSpec;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::id::{BlobId, SnapshotId};
use crate::lkg;
use crate::lock::LockMode;
use crate::manifest::{Manifest, StreamRecord};
use crate::progress::Progress;
use crate::restore::RestoreOptions;
use crate::snapshot::SnapshotOptions;
use crate::stored;
use crate::tree::Node;
use crate::util::human_bytes;
use crate::vault::{BlobReader, Vault};

/// Files restored at once from a remote.
const REMOTE_RESTORE_THREADS: usize = 8;

/// The snapshot a restore concerns: the one named, or the last-known-good.
fn resolve(vault: &Vault, a: &RestoreArgs) -> Result<(SnapshotId, Manifest)> {
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

/// A source's stream in a snapshot, its sha256 checked against the manifest.
struct VerifiedStream {
    id: SnapshotId,
    record: StreamRecord,
    chunks: Vec<BlobId>,
    reader: BlobReader,
}

impl VerifiedStream {
    /// Reads the stream once to check its sha256, so that nothing unverified is handed on.
    fn open(vault: &Vault, a: &RestoreArgs, name: &str) -> Result<Self> {
        let (id, m) = resolve(vault, a)?;
        let record = m.streams.iter().find(|s| s.source == name).cloned();
        let record = record.ok_or_else(|| {
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
        // From a remote: fetch the stream in few, large requests (best effort).
        let _ = reader.prefetch(&chunks);
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
        Ok(VerifiedStream {
            id,
            record,
            chunks,
            reader,
        })
    }

    /// Writes the stream, chunk by chunk (each chunk is re-checked as it is read).
    fn write_to(&self, out: &mut dyn Write) -> Result<()> {
        for c in &self.chunks {
            out.write_all(&self.reader.read(c)?)
                .map_err(|e| Error::io("output", e))?;
        }
        out.flush().map_err(|e| Error::io("output", e))
    }
}

/// `vault restore (SNAPSHOT | --lkg) --source NAME (--to-stdout | --to FILE | --into URL)`.
fn restore_stream(ctx: &mut Ctx, a: &RestoreArgs) -> Result<i32> {
    let name = a.source.as_deref().unwrap_or_default();
    let vault = open_for_restore(ctx, a, LockMode::Shared)?;
    let s = VerifiedStream::open(&vault, a, name)?;
    let (to, outcome) = if let Some(path) = &a.to {
        if path.exists() && !a.force {
            return Err(Error::Invalid(format!(
                "{} exists; pass --force to replace it",
                path.display()
            )));
        }
        // SQLite would replay a stale journal or WAL onto the restored file on its next open.
        for suffix in ["-wal", "-shm", "-journal"] {
            let side = std::path::PathBuf::from(format!("{}{suffix}", path.display()));
            if side.exists() {
                return Err(Error::Invalid(format!(
                    "{} exists beside {}: stop what uses the database and remove it first, or \
                     restore to another path",
                    side.display(),
                    path.display()
                )));
            }
        }
        // Temp file beside the destination, fsync, rename: a crash leaves no half a database.
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => std::path::PathBuf::from("."),
        };
        let mut tmp = tempfile::Builder::new()
            .prefix(fsutil::TEMP_PREFIX)
            .tempfile_in(&dir)
            .map_err(|e| Error::io(&dir, e))?;
        s.write_to(&mut std::io::BufWriter::new(tmp.as_file_mut()))?;
        tmp.as_file().sync_all().map_err(|e| Error::io(path, e))?;
        tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
        fsutil::sync_dir(&dir)?;
        if !ctx.json {
            eprintln!(
                "restored {} ({}) to {}",
                s.record.path,
                human_bytes(s.record.bytes),
                path.display()
            );
        }
        (path.display().to_string(), "ok")
    } else if let Some(url) = &a.into {
        let ok = load_into_postgres(&s, url)?;
        ("postgres".to_string(), if ok { "ok" } else { "failed" })
    } else {
        s.write_to(&mut ctx.out.raw_writer())?;
        ("stdout".to_string(), "ok")
    };
    vault.audit(
        &AuditRecord::new("restore", Some(s.id.to_hex()), outcome)
            .with_detail(json!({"source": name, "to": to, "sha256": s.record.sha256})),
    )?;
    if a.into.is_some() && ctx.json {
        ctx.out
            .json(json!({"snapshot": s.id, "source": name, "loaded": outcome == "ok"}))?;
    }
    Ok(if outcome == "ok" {
        exit::OK
    } else {
        exit::ERROR
    })
}

/// Pipes a postgres stream into `psql` (plain) or `pg_restore` (custom) against `url`; the
/// tool's own messages go to stderr. Returns whether it succeeded.
fn load_into_postgres(s: &VerifiedStream, url: &str) -> Result<bool> {
    let Some(mut cmd) = crate::stream::pg_load_command(&s.record.kind, url) else {
        return Err(Error::Invalid(format!(
            "--into loads postgres sources; {} is a {} stream (use --to FILE)",
            s.record.source, s.record.kind
        )));
    };
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .map_err(|e| Error::Invalid(format!("cannot run {program}: {e}")))?;
    let mut stdin = child.stdin.take().expect("invariant: stdin is piped");
    let written = s.write_to(&mut stdin);
    drop(stdin);
    let status = child.wait().map_err(|e| Error::io(&program, e))?;
    // A consumer that quit early shows as a broken pipe; its exit status tells the story.
    if let Err(e) = written {
        if status.success() {
            return Err(e);
        }
    }
    if status.success() {
        eprintln!(
            "loaded {} ({}) into the database with {program}",
            s.record.path,
            human_bytes(s.record.bytes)
        );
    } else {
        eprintln!("{program} failed ({status}); the database may hold part of the dump");
    }
    Ok(status.success())
}

/// `vault restore (SNAPSHOT | --lkg) --target DIR`.
pub(super) fn run(ctx: &mut Ctx, a: RestoreArgs) -> Result<i32> {
    if a.source.is_some() {
        return restore_stream(ctx, &a);
    }
    let target = a
        .target
        .clone()
        .ok_or_else(|| Error::Usage("restore needs --target DIR (or --to-stdout)".into()))?;
    // Overwriting a non-empty target first takes a safety snapshot of it, which needs the
    // vault's writer lock. From a remote there is no vault to take it into, so a non-empty
    // target is refused with or without --overwrite (the library's refusal would suggest the
    // flag). What an interrupted restore fetched stays in the mirror, so a rerun into an empty
    // target fetches only the rest.
    let non_empty = non_empty_dir(&target)?;
    if non_empty && (a.from.is_some() || a.remote.is_some()) {
        return Err(Error::Invalid(format!(
            "{} is not empty: a restore from a remote goes into an empty directory (it has no \
             local vault to take a safety snapshot into); remove what is there (a rerun fetches \
             nothing twice) or restore elsewhere",
            target.display()
        )));
    }
    let needs_safety = a.overwrite && non_empty;
    let mode = if needs_safety {
        LockMode::Append
    } else {
        LockMode::Shared
    };
    let mut vault = open_for_restore(ctx, &a, mode)?;
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
        // From a remote each chunk is a request: more of them in flight hide the latency.
        threads: if a.from.is_some() || a.remote.is_some() {
            REMOTE_RESTORE_THREADS
        } else {
            0
        },
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
    let record = AuditRecord::new("restore", Some(id.to_hex()), outcome).with_detail(
        json!({"target": a.target, "safety_snapshot": safety, "from": a.from, "remote": a.remote}),
    );
    vault.audit(&record)?;
    if a.from.is_some() || a.remote.is_some() {
        ctx.audit_local(&record)?;
    }
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

/// The vault a restore reads: the local one, or a remote's mirror (`--from URL`,
/// `--remote NAME`).
fn open_for_restore(ctx: &Ctx, a: &RestoreArgs, mode: LockMode) -> Result<Vault> {
    match (&a.from, &a.remote) {
        (Some(url), _) => ctx.open_remote(&RemoteSpec::from_url(url).map_err(Error::Usage)?),
        (None, Some(name)) => ctx.open_remote(&ctx.remote_spec(name)?),
        (None, None) => ctx.open(mode),
    }
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
