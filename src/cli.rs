//! The command line: argument structs and the printing of results. No vault logic lives here;
//! each command builds an options struct and calls the library.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde_json::json;

use crate::audit::{self, AuditRecord};
use crate::config::ChunkerParams;
use crate::error::{Error, Result};
use crate::gates::{self, GateResult};
use crate::id::SnapshotId;
use crate::keys::{self, KdfParams, KeyError, Secret, SecretSource};
use crate::lkg;
use crate::lock::LockMode;
use crate::progress::Progress;
use crate::restore::{self, RestoreOptions};
use crate::snapshot::{self, SnapshotOptions};
use crate::util::human_bytes;
use crate::vault::Vault;
use crate::verify::{self, VerifyOptions};

/// Printed wherever an unencrypted vault is shown.
const UNENCRYPTED_WARNING: &str = "WARNING: this vault is NOT encrypted (--encryption none): \
     anyone who can read its files can read every snapshot";

/// Blob ids printed per damaged pack in the human report.
const BLOBS_SHOWN: usize = 10;

/// Exit codes; README.md documents them and scripts rely on them.
pub mod exit {
    pub const OK: i32 = 0;
    pub const ERROR: i32 = 1;
    pub const USAGE: i32 = 2;
    /// The snapshot completed but some files could not be read.
    pub const PARTIAL: i32 = 3;
    /// `verify` found damage, or `restore` could not restore every entry.
    pub const DAMAGED: i32 = 4;
    /// The snapshot was kept but a gate rejected it: the last-known-good did not move.
    pub const REJECTED: i32 = 5;
    pub const NO_VAULT: i32 = 10;
    pub const LOCKED: i32 = 11;
    /// Wrong password or key file, or no password given, for an encrypted vault.
    pub const KEY: i32 = 12;
}

/// AtlasVault: deduplicating, verified snapshots of your stack.
#[derive(Debug, Parser)]
#[command(name = "vault", version, about)]
pub struct Cli {
    /// The vault directory.
    #[arg(long, global = true, env = "VAULT_DIR", value_name = "DIR")]
    pub vault: Option<PathBuf>,
    /// Machine-readable JSON on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// Wait this long for a locked vault (e.g. `30s`, `5m`) instead of failing at once.
    #[arg(long, global = true, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub wait: Option<Duration>,
    /// Read the vault password from this file (else VAULT_PASSWORD_FILE, VAULT_PASSWORD_COMMAND,
    /// VAULT_KEY_FILE, or a prompt on a terminal).
    #[arg(long, global = true, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Open the vault with this raw key file instead of a password.
    #[arg(long, global = true, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new vault (encrypted unless --encryption none).
    Init(InitArgs),
    /// Show the vault: where, format, encryption, keys, snapshots and the last-known-good.
    Status,
    /// Manage the key files that unlock an encrypted vault.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Snapshot one or more paths.
    Snapshot(SnapshotArgs),
    /// List snapshots.
    Snapshots,
    /// List the entries of a snapshot.
    Ls {
        /// Snapshot id, unique id prefix, or `latest`.
        snapshot: String,
        /// Only entries at or below this snapshot path.
        path: Option<String>,
    },
    /// Restore a snapshot into a directory.
    Restore(RestoreArgs),
    /// Check the vault's integrity.
    Verify(VerifyArgs),
    /// Rebuild index.sqlite from the packs.
    Reindex,
    /// Print the audit log.
    Audit(AuditArgs),
    /// Re-run the gates on a snapshot and report.
    Gate {
        /// Snapshot id, unique id prefix, or `latest`.
        snapshot: String,
        /// Also re-read and re-hash every blob the snapshot references.
        #[arg(long)]
        deep: bool,
    },
    /// Re-run the gates and make the snapshot last-known-good only if all pass.
    Promote {
        /// Snapshot id, unique id prefix, or `latest`.
        snapshot: String,
    },
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only records at or after this time (RFC 3339, e.g. 2026-11-23T20:00:00Z).
    #[arg(long, value_name = "TIME", value_parser = humantime::parse_rfc3339_weak)]
    pub since: Option<std::time::SystemTime>,
    /// Only records of this action (snapshot, promote, restore, verify, ...).
    #[arg(long, value_name = "A")]
    pub action: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Add a key file for a new password (or raw key file), wrapping the same master key.
    Add(NewKeyArgs),
    /// List the key files.
    List,
    /// Remove a key file by id or unique id prefix (not the one in use, not the last one).
    Remove {
        /// Key id or unique prefix, as `vault key list` shows it.
        id: String,
    },
    /// Change the password: add a key file for the new one, then remove the one in use.
    Passwd(NewKeyArgs),
}

/// Where a new secret comes from, and its argon2id cost.
#[derive(Debug, Args)]
pub struct NewKeyArgs {
    /// Read the new password from this file (else asked twice on a terminal).
    #[arg(long, value_name = "FILE", conflicts_with = "new_key_file")]
    pub new_password_file: Option<PathBuf>,
    /// Use this raw key file (32 bytes or more of random data) instead of a password.
    #[arg(long, value_name = "FILE")]
    pub new_key_file: Option<PathBuf>,
    /// argon2id memory per password guess, KiB (default 65536: 64 MiB).
    #[arg(long, value_name = "KIB")]
    pub argon2_memory_kib: Option<u32>,
    /// argon2id passes over that memory (default 3).
    #[arg(long, value_name = "N")]
    pub argon2_iterations: Option<u32>,
}

impl NewKeyArgs {
    fn kdf(&self) -> Result<KdfParams> {
        let d = KdfParams::default();
        let kdf = KdfParams {
            memory_kib: self.argon2_memory_kib.unwrap_or(d.memory_kib),
            iterations: self.argon2_iterations.unwrap_or(d.iterations),
            ..d
        };
        kdf.validate()?;
        Ok(kdf)
    }

    /// The new secret: the flags, else (for `init`) the usual sources, else a double prompt.
    fn secret(&self, usual: Option<&SecretSource>) -> Result<Secret> {
        if self.new_password_file.is_some() || self.new_key_file.is_some() {
            return Ok(keys::new_secret(
                self.new_password_file.as_deref(),
                self.new_key_file.as_deref(),
            )?);
        }
        match usual {
            Some(s) if s.is_configured() => Ok(s.secret("password for the new vault")?),
            _ => Ok(keys::new_secret(None, None)?),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EncryptionArg {
    /// XChaCha20-Poly1305 with argon2id-wrapped keys (the default).
    #[value(name = "xchacha20-poly1305")]
    Xchacha20Poly1305,
    /// No encryption: only for a vault that never leaves a disk you trust.
    None,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// How the vault's objects are sealed.
    #[arg(long, value_enum, default_value = "xchacha20-poly1305")]
    pub encryption: EncryptionArg,
    #[command(flatten)]
    pub key: NewKeyArgs,
    /// FastCDC minimum chunk size in bytes.
    #[arg(long, hide = true)]
    pub chunk_min: Option<u32>,
    /// FastCDC average chunk size in bytes.
    #[arg(long, hide = true)]
    pub chunk_avg: Option<u32>,
    /// FastCDC maximum chunk size in bytes.
    #[arg(long, hide = true)]
    pub chunk_max: Option<u32>,
}

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// Files or directories to snapshot.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Leave out paths matching this gitignore-style glob (repeatable).
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Read every file, ignoring the parent snapshot.
    #[arg(long)]
    pub no_parent: bool,
    /// Take the snapshot and run the gates, but leave the last-known-good where it is.
    #[arg(long)]
    pub no_promote: bool,
    /// Store files matching this glob only as templates, secrets redacted (repeatable; adds to
    /// the defaults openclaw.json, .env and .env.*). A glob with `/` matches the path below the
    /// snapshotted directory, one without matches the file name.
    #[arg(long, value_name = "GLOB")]
    pub template_only: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Snapshot id, unique id prefix, or `latest`.
    #[arg(required_unless_present = "lkg", conflicts_with = "lkg")]
    pub snapshot: Option<String>,
    /// Restore the last-known-good snapshot.
    #[arg(long)]
    pub lkg: bool,
    /// Directory to restore into.
    #[arg(long, value_name = "DIR")]
    pub target: PathBuf,
    /// Restore only this snapshot path and what is below it (repeatable).
    #[arg(long, value_name = "PATH")]
    pub include: Vec<String>,
    /// Restore into a non-empty target, replacing files.
    #[arg(long)]
    pub overwrite: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Read and re-hash every blob.
    #[arg(long)]
    pub read_data: bool,
    /// Read and re-hash a random share of the packs, e.g. `10%`.
    #[arg(long, value_name = "N%", value_parser = parse_percent, conflicts_with = "read_data")]
    pub read_data_subset: Option<f64>,
}

fn parse_percent(s: &str) -> std::result::Result<f64, String> {
    let v: f64 = s
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("{s:?} is not a percentage like 10%"))?;
    if v > 0.0 && v <= 100.0 {
        Ok(v)
    } else {
        Err(format!("{s} is outside (0%, 100%]"))
    }
}

/// Maps a library error to its exit code.
pub fn exit_code(e: &Error) -> i32 {
    match e {
        Error::NoVault { .. } => exit::NO_VAULT,
        Error::Locked { .. } => exit::LOCKED,
        Error::Key(KeyError::WrongSecret | KeyError::NoSecret(_)) => exit::KEY,
        Error::Corrupt { .. } | Error::Missing { .. } => exit::DAMAGED,
        _ => exit::ERROR,
    }
}

fn default_vault() -> PathBuf {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("atlasvault")
}

/// Runs a parsed command line; returns the exit code.
pub fn run(cli: Cli) -> Result<i32> {
    let root = cli.vault.clone().unwrap_or_else(default_vault);
    let json = cli.json;
    let secrets = SecretSource::from_env_and(cli.password_file.clone(), cli.key_file.clone());
    let mut out = std::io::stdout().lock();
    let print = |out: &mut std::io::StdoutLock, v: serde_json::Value| -> Result<()> {
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&v).expect("invariant: JSON value serializes")
        )
        .map_err(|e| Error::io("stdout", e))
    };
    macro_rules! say {
        ($($t:tt)*) => { writeln!(out, $($t)*).map_err(|e| Error::io("stdout", e))? };
    }
    match cli.command {
        Command::Init(a) => {
            let d = ChunkerParams::default();
            let params = ChunkerParams {
                min_size: a.chunk_min.unwrap_or(d.min_size),
                avg_size: a.chunk_avg.unwrap_or(d.avg_size),
                max_size: a.chunk_max.unwrap_or(d.max_size),
                ..d
            };
            params.validate().map_err(Error::Invalid)?;
            let (cfg, key_id) = match a.encryption {
                EncryptionArg::None => Vault::init(&root, params, None)?,
                EncryptionArg::Xchacha20Poly1305 => {
                    let kdf = a.key.kdf()?;
                    if root.join("config.json").exists() {
                        // Before asking for a password that would not be used.
                        return Err(Error::Invalid(format!(
                            "{} is already a vault",
                            root.display()
                        )));
                    }
                    let secret = a.key.secret(Some(&secrets))?;
                    Vault::init(&root, params, Some((&secret, &kdf)))?
                }
            };
            if json {
                print(
                    &mut out,
                    json!({"vault": root, "id": cfg.id, "key": key_id, "config": cfg}),
                )?;
            } else {
                say!("created vault {} at {}", &cfg.id[..8], root.display());
                match &key_id {
                    Some(k) => say!(
                        "encrypted ({}); key {} in keys/. Losing every password and key file \
                         loses the data: keep one safe.",
                        cfg.encryption,
                        &k[..8]
                    ),
                    None => say!("{UNENCRYPTED_WARNING}"),
                }
            }
            Ok(exit::OK)
        }
        Command::Status => {
            let vault = Vault::open(&root, LockMode::Shared, cli.wait, &secrets)?;
            let (snaps, bad) = vault.snapshots()?;
            let lkg = lkg::read(&vault)?;
            let rejected = snaps
                .iter()
                .filter(|(_, m)| m.gates.as_ref().is_some_and(|g| !gates::all_passed(g)))
                .count();
            let safety = snaps.iter().filter(|(_, m)| m.safety).count();
            let keys = vault.key_files()?.len();
            let packs = vault.pack_files()?;
            let pack_bytes: u64 = packs.values().sum();
            let lkg_age = lkg.as_ref().and_then(|r| {
                humantime::parse_rfc3339_weak(&r.promoted_at)
                    .ok()
                    .and_then(|t| std::time::SystemTime::now().duration_since(t).ok())
            });
            let encrypted = vault.config.is_encrypted();
            if json {
                print(
                    &mut out,
                    json!({
                        "vault": vault.root(), "id": vault.config.id, "format": vault.config.version,
                        "encryption": vault.config.encryption, "encrypted": encrypted,
                        "key": vault.key_id(), "keys": keys,
                        "snapshots": snaps.len(), "rejected": rejected, "safety": safety,
                        "unreadable": bad.len(), "packs": packs.len(), "pack_bytes": pack_bytes,
                        "lkg": lkg.as_ref().map(|r| r.snapshot),
                        "lkg_promoted_at": lkg.as_ref().map(|r| r.promoted_at.clone()),
                        "lkg_age_seconds": lkg_age.map(|d| d.as_secs()),
                    }),
                )?;
            } else {
                say!("vault       {}", vault.root().display());
                say!("id          {}", &vault.config.id[..16]);
                say!("format      {}", vault.config.version);
                if encrypted {
                    say!(
                        "encryption  {} (opened with key {}, {keys} key file(s))",
                        vault.config.encryption,
                        vault.key_id().map_or("-", |k| &k[..8])
                    );
                } else {
                    say!("encryption  NONE");
                    say!("{UNENCRYPTED_WARNING}");
                }
                say!(
                    "snapshots   {} ({rejected} rejected by a gate, {safety} safety){}",
                    snaps.len(),
                    if bad.is_empty() {
                        String::new()
                    } else {
                        format!(", {} UNREADABLE", bad.len())
                    }
                );
                say!("packs       {} ({})", packs.len(), human_bytes(pack_bytes));
                match (&lkg, lkg_age) {
                    (Some(r), Some(age)) => say!(
                        "last-known-good  {} promoted {} ({} ago)",
                        r.snapshot.short(),
                        r.promoted_at,
                        humantime::format_duration(Duration::from_secs(age.as_secs()))
                    ),
                    (Some(r), None) => say!(
                        "last-known-good  {} promoted {}",
                        r.snapshot.short(),
                        r.promoted_at
                    ),
                    (None, _) => say!("last-known-good  none yet"),
                }
            }
            Ok(if bad.is_empty() {
                exit::OK
            } else {
                exit::DAMAGED
            })
        }
        Command::Key(k) => {
            let mode = match k {
                KeyCommand::List => LockMode::Shared,
                _ => LockMode::Exclusive,
            };
            let vault = Vault::open(&root, mode, cli.wait, &secrets)?;
            if !vault.config.is_encrypted() {
                return Err(Error::Invalid(
                    "this vault is not encrypted (--encryption none): it has no keys".into(),
                ));
            }
            let record = |action: &str, id: &str| {
                vault.audit(&AuditRecord::new(action, None, "ok").with_detail(json!({"key": id})))
            };
            match k {
                KeyCommand::List => {
                    let files = vault.key_files()?;
                    let list: Vec<_> = files
                        .iter()
                        .map(|(_, f)| {
                            json!({"id": f.id().to_hex(), "kind": f.kind().as_str(),
                                   "created": f.created(), "host": f.host(), "user": f.user(),
                                   "current": vault.key_id() == Some(f.id().to_hex().as_str())})
                        })
                        .collect();
                    if json {
                        print(&mut out, json!(list))?;
                    } else {
                        say!(
                            "  {:<32}  {:<8}  {:<20}  user@host",
                            "id",
                            "kind",
                            "created"
                        );
                        for (_, f) in &files {
                            let current = vault.key_id() == Some(f.id().to_hex().as_str());
                            say!(
                                "{} {:<32}  {:<8}  {:<20}  {}@{}",
                                if current { "*" } else { " " },
                                f.id().to_hex(),
                                f.kind().as_str(),
                                f.created(),
                                f.user(),
                                f.host()
                            );
                        }
                    }
                }
                KeyCommand::Add(a) => {
                    let kdf = a.kdf()?;
                    let secret = a.secret(None)?;
                    let id = vault.add_key(&secret, &kdf)?;
                    record("key-add", &id)?;
                    if json {
                        print(&mut out, json!({"added": id}))?;
                    } else {
                        say!("added key {id}");
                    }
                }
                KeyCommand::Remove { id } => {
                    let removed = vault.remove_key(&id)?;
                    record("key-remove", &removed)?;
                    if json {
                        print(&mut out, json!({"removed": removed}))?;
                    } else {
                        say!("removed key {removed}");
                    }
                }
                KeyCommand::Passwd(a) => {
                    let kdf = a.kdf()?;
                    let secret = a.secret(None)?;
                    // The new key is durable before the old one goes: never zero keys.
                    let added = vault.add_key(&secret, &kdf)?;
                    let removed = vault.remove_current_key()?;
                    record("key-passwd", &added)?;
                    if json {
                        print(&mut out, json!({"added": added, "removed": removed}))?;
                    } else {
                        say!("password changed: key {added} replaces key {removed}");
                    }
                }
            }
            Ok(exit::OK)
        }
        Command::Snapshot(a) => {
            let mut vault = Vault::open(&root, LockMode::Exclusive, cli.wait, &secrets)?;
            let opts = SnapshotOptions {
                paths: a.paths,
                excludes: a.exclude,
                no_parent: a.no_parent,
                threads: 0,
                template_only: a.template_only,
                safety: false,
            };
            let progress = if json {
                Progress::hidden()
            } else {
                Progress::bytes_bar("snapshot")
            };
            let done = snapshot::snapshot(&mut vault, &opts, &progress)?;
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
                Some(lkg::promote(&vault, &done.id)?)
            };
            let gates = promotion.as_ref().map(|p| &p.gates).or(m.gates.as_ref());
            if json {
                print(
                    &mut out,
                    json!({
                        "id": done.id, "time": m.time, "parent": m.parent, "partial": m.partial,
                        "files": s.files, "dirs": s.dirs, "bytes": s.bytes, "bytes_read": s.bytes_read,
                        "bytes_new": s.bytes_new, "bytes_stored": s.bytes_stored,
                        "files_unchanged": s.files_unchanged,
                        "dedup_ratio": dedup, "duration_ms": s.duration_ms, "warnings": m.warnings,
                        "gates": gates, "promoted": promotion.as_ref().map(|p| p.promoted),
                        "template_only": m.template_only,
                    }),
                )?;
            } else {
                say!(
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
            }
            if !json {
                if let Some(t) = m.template_only.as_ref().filter(|t| t.templated > 0) {
                    say!(
                        "{} file(s) stored as templates, secrets redacted (template_only)",
                        t.templated
                    );
                }
                print_gates(&mut out, gates.map(Vec::as_slice).unwrap_or_default())?;
                match &promotion {
                    Some(p) if p.promoted => {
                        say!("promoted {} to last-known-good", done.id.short())
                    }
                    Some(_) => say!(
                        "REJECTED: {} is kept but not promoted; the last-known-good did not move",
                        done.id.short()
                    ),
                    None => say!("not promoted (--no-promote)"),
                }
            }
            Ok(match promotion {
                Some(p) if !p.promoted => exit::REJECTED,
                _ if m.partial => exit::PARTIAL,
                _ => exit::OK,
            })
        }
        Command::Snapshots => {
            let vault = Vault::open(&root, LockMode::Shared, cli.wait, &secrets)?;
            let (snaps, bad) = vault.snapshots()?;
            for e in &bad {
                eprintln!("warning: {}", e.full());
            }
            if !vault.config.is_encrypted() {
                eprintln!("{UNENCRYPTED_WARNING}");
            }
            let lkg_id = lkg::read(&vault)?.map(|r| r.snapshot);
            let status = |m: &crate::manifest::Manifest| -> String {
                match &m.gates {
                    None => "-".into(),
                    Some(g) if gates::all_passed(g) => "passed".into(),
                    Some(g) => format!(
                        "rejected:{}",
                        g.iter()
                            .filter(|r| !r.passed)
                            .map(|r| r.gate.as_str())
                            .collect::<Vec<_>>()
                            .join(",")
                    ),
                }
            };
            if json {
                let list: Vec<_> = snaps
                    .iter()
                    .map(|(id, m)| {
                        json!({"id": id, "time": m.time, "host": m.host, "paths": m.paths.iter().map(|p| &p.path).collect::<Vec<_>>(),
                               "files": m.stats.files, "bytes": m.stats.bytes, "bytes_added": m.stats.bytes_stored,
                               "partial": m.partial, "safety": m.safety, "parent": m.parent, "gates": status(m),
                               "lkg": lkg_id == Some(*id)})
                    })
                    .collect();
                print(&mut out, json!(list))?;
            } else {
                say!(
                    "{:<10} {:<20} {:>9} {:>10} {:>10}  {:<18} paths",
                    "id",
                    "time",
                    "files",
                    "size",
                    "added",
                    "gates"
                );
                for (id, m) in &snaps {
                    let paths: Vec<&str> = m.paths.iter().map(|p| p.path.as_str()).collect();
                    say!(
                        "{:<10} {:<20} {:>9} {:>10} {:>10}  {:<18} {}{}{}{}",
                        id.short(),
                        m.time.get(..19).unwrap_or(&m.time).replace('T', " "),
                        m.stats.files,
                        human_bytes(m.stats.bytes),
                        human_bytes(m.stats.bytes_stored),
                        status(m),
                        paths.join(" "),
                        if m.partial { " (partial)" } else { "" },
                        if m.safety { " (safety)" } else { "" },
                        if lkg_id == Some(*id) {
                            "  <- last-known-good"
                        } else {
                            ""
                        }
                    );
                }
                say!("{} snapshot(s)", snaps.len());
            }
            Ok(if bad.is_empty() {
                exit::OK
            } else {
                exit::DAMAGED
            })
        }
        Command::Ls { snapshot, path } => {
            let vault = Vault::open(&root, LockMode::Shared, cli.wait, &secrets)?;
            let (_, m) = vault.resolve(&snapshot)?;
            let reader = vault.blob_reader()?;
            let list = crate::ls::list(&reader, &m, path.as_deref())?;
            if json {
                print(&mut out, json!(list))?;
            } else {
                for l in &list {
                    let link = l
                        .target
                        .as_ref()
                        .map(|t| format!(" -> {t}"))
                        .unwrap_or_default();
                    say!(
                        "{:<7} {:>6o} {:>12}  {}{}",
                        l.kind,
                        l.mode & 0o7777,
                        l.size,
                        l.path,
                        link
                    );
                }
            }
            Ok(exit::OK)
        }
        Command::Restore(a) => {
            // Overwriting a non-empty target first takes a safety snapshot of it, which needs the
            // vault's writer lock.
            let needs_safety = a.overwrite && non_empty_dir(&a.target)?;
            let mode = if needs_safety {
                LockMode::Exclusive
            } else {
                LockMode::Shared
            };
            let mut vault = Vault::open(&root, mode, cli.wait, &secrets)?;
            let reference = match (&a.snapshot, a.lkg) {
                (Some(s), _) => s.clone(),
                (None, _) => lkg::read(&vault)?
                    .map(|r| r.snapshot.to_hex())
                    .ok_or_else(|| {
                        Error::Invalid(
                            "no snapshot has been promoted to last-known-good yet".into(),
                        )
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
                let done = snapshot::snapshot(&mut vault, &opts, &Progress::hidden())?;
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
            let progress = if json {
                Progress::hidden()
            } else {
                Progress::bytes_bar("restore")
            };
            progress.inc_total(m.stats.bytes);
            let result = restore::restore(&reader, &m, &opts, &progress);
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
            if json {
                print(
                    &mut out,
                    json!({"snapshot": id, "target": a.target, "safety_snapshot": safety, "report": r}),
                )?;
            } else {
                say!(
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
        Command::Verify(a) => {
            let vault = Vault::open(&root, LockMode::Shared, cli.wait, &secrets)?;
            let opts = VerifyOptions {
                read_data: a.read_data || a.read_data_subset.is_some(),
                subset_percent: a.read_data_subset,
                threads: 0,
            };
            let progress = if json || !opts.read_data {
                Progress::hidden()
            } else {
                Progress::bytes_bar("verify")
            };
            let r = verify::verify(&vault, &opts, &progress)?;
            let outcome = if r.is_clean() { "ok" } else { "damaged" };
            vault.audit(
                &AuditRecord::new("verify", None, outcome).with_detail(json!({
                    "read_data": opts.read_data, "subset_percent": opts.subset_percent,
                    "problems": r.problems.len(), "damaged_packs": r.damaged_packs.len(),
                })),
            )?;
            if json {
                print(&mut out, json!({"clean": r.is_clean(), "report": r}))?;
            } else {
                for p in &r.problems {
                    say!("problem: {p}");
                }
                for d in &r.damaged_packs {
                    say!("damaged pack {}: {}", d.pack, d.reason);
                    for b in d.blobs.iter().take(BLOBS_SHOWN) {
                        say!("  blob {b}");
                    }
                    if d.blobs.len() > BLOBS_SHOWN {
                        say!(
                            "  ... and {} more blobs (--json lists all)",
                            d.blobs.len() - BLOBS_SHOWN
                        );
                    }
                    for s in &d.snapshots {
                        say!("  breaks snapshot {s}");
                    }
                    for p in &d.paths {
                        say!("  breaks file {p}");
                    }
                    if d.more_paths > 0 {
                        say!("  ... and {} more files", d.more_paths);
                    }
                }
                say!(
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
        Command::Reindex => {
            let mut vault = Vault::open_with_new_index(&root, cli.wait, &secrets)?;
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
            if json {
                print(
                    &mut out,
                    json!({"packs": packs, "blobs": blobs, "problems": problems}),
                )?;
            } else {
                say!("index rebuilt: {packs} packs, {blobs} blobs");
            }
            Ok(if problems.is_empty() {
                exit::OK
            } else {
                exit::DAMAGED
            })
        }
        Command::Audit(a) => {
            if !root.join("config.json").exists() {
                return Err(Error::NoVault { path: root });
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
            if json {
                // JSON lines: one record per line, as stored.
                for r in &records {
                    say!(
                        "{}",
                        serde_json::to_string(r).expect("invariant: audit record serializes")
                    );
                }
            } else {
                for r in &records {
                    say!(
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
        Command::Gate { snapshot, deep } => {
            let vault = Vault::open(&root, LockMode::Shared, cli.wait, &secrets)?;
            let id = gate_target(&vault, &snapshot)?;
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
            if json {
                print(
                    &mut out,
                    json!({"snapshot": id, "passed": passed, "gates": results}),
                )?;
            } else {
                print_gates(&mut out, &results)?;
                say!(
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
        Command::Promote { snapshot } => {
            let vault = Vault::open(&root, LockMode::Exclusive, cli.wait, &secrets)?;
            let id = gate_target(&vault, &snapshot)?;
            let p = lkg::promote(&vault, &id)?;
            if json {
                print(&mut out, json!(p))?;
            } else {
                print_gates(&mut out, &p.gates)?;
                if p.promoted {
                    say!("promoted {} to last-known-good", id.short());
                } else {
                    say!(
                        "REJECTED: {} not promoted; the last-known-good did not move",
                        id.short()
                    );
                }
            }
            Ok(if p.promoted { exit::OK } else { exit::REJECTED })
        }
    }
}

/// True when `path` is a directory with at least one entry (or any other existing non-directory).
fn non_empty_dir(path: &std::path::Path) -> Result<bool> {
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

/// The snapshot a gate run concerns. A full id is taken as given, so that a missing manifest is
/// the manifest gate's verdict rather than a lookup error.
fn gate_target(vault: &Vault, reference: &str) -> Result<SnapshotId> {
    match SnapshotId::from_hex(reference) {
        Ok(id) => Ok(id),
        Err(_) => Ok(vault.resolve(reference)?.0),
    }
}

fn print_gates(out: &mut impl Write, results: &[GateResult]) -> Result<()> {
    for g in results {
        writeln!(
            out,
            "gate {:<13} {}",
            g.gate,
            if g.passed { "passed" } else { "FAILED" }
        )
        .map_err(|e| Error::io("stdout", e))?;
        for r in &g.reasons {
            writeln!(out, "  {r}").map_err(|e| Error::io("stdout", e))?;
        }
    }
    Ok(())
}
