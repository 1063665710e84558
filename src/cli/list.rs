//! The read-only views: `vault status`, `vault snapshots` and `vault ls`. Each takes a shared lock
//! and prints what the library reports; none changes the vault.

use std::time::{Duration, SystemTime};

use serde_json::json;

use super::{exit, say, Ctx, ForgetArgs, PruneArgs, StatusArgs, UNENCRYPTED_WARNING};
use crate::backend::RemoteSpec;
use crate::error::Error;
use crate::error::Result;
use crate::gates;
use crate::lkg;
use crate::lock::LockMode;
use crate::manifest::Manifest;
use crate::progress::Progress;
use crate::util::human_bytes;
use crate::vaultfile::{Keep, Retention};

/// How long `vault status` waits for a writer (a cycle's snapshot) by default.
const STATUS_LOCK_WAIT: Duration = Duration::from_secs(120);

/// What a remote lacks (snapshots missing, whether it holds the LKG), or why it is unreachable.
type RemoteLag = std::result::Result<(usize, bool), String>;

/// `vault status [--coverage WINDOW] [--offline]`.
pub(super) fn status(ctx: &mut Ctx, a: &StatusArgs) -> Result<i32> {
    // Monitoring runs this while the agent may be mid-snapshot (holding the writer's lock):
    // wait for it rather than fail, unless --wait says otherwise.
    if ctx.wait.is_none() {
        ctx.wait = Some(STATUS_LOCK_WAIT);
    }
    let vault = ctx.open(LockMode::Shared)?;
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
    let now = SystemTime::now();
    // The RPO bounds the age of the data: the LKG snapshot's own time, not its promotion's.
    let lkg_time = lkg
        .as_ref()
        .and_then(|r| snaps.iter().find(|(id, _)| *id == r.snapshot))
        .and_then(|(_, m)| m.system_time());
    let lkg_age = lkg_time.map(|t| now.duration_since(t).unwrap_or_default());
    let agent = ctx
        .config
        .as_ref()
        .map(|f| f.agent.clone())
        .unwrap_or_default();
    let limit = agent.rpo + agent.grace;
    let breached = lkg_age.is_none_or(|age| age > limit);
    let state = crate::agent::persisted::Persisted::load(vault.root());
    let local: Vec<String> = snaps
        .iter()
        .map(|(id, _)| format!("snapshots/{id}.json"))
        .collect();
    let remotes: Vec<(RemoteSpec, RemoteLag)> = if a.offline {
        Vec::new()
    } else {
        ctx.config
            .as_ref()
            .map(|f| f.remotes.iter().map(RemoteSpec::from).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .map(|spec| {
                let lag =
                    super::remote::remote_lag(&spec, &local, lkg.as_ref().map(|r| r.snapshot))
                        .map_err(|e| e.to_string());
                (spec, lag)
            })
            .collect()
    };
    let coverage = a.coverage.map(|window| {
        let times: Vec<SystemTime> = snaps
            .iter()
            .filter(|(_, m)| !m.safety && m.gates.as_ref().is_some_and(|g| gates::all_passed(g)))
            .filter_map(|(_, m)| m.system_time())
            .collect();
        crate::coverage::coverage(&times, now, window, agent.rpo)
    });
    let encrypted = vault.config.is_encrypted();
    let rfc = |t: SystemTime| humantime::format_rfc3339_seconds(t).to_string();
    let out = &mut ctx.out;
    if ctx.json {
        out.json(json!({
            "vault": vault.root(), "id": vault.config.id, "format": vault.config.version,
            "encryption": vault.config.encryption, "encrypted": encrypted,
            "key": vault.key_id(), "keys": keys,
            "snapshots": snaps.len(), "rejected": rejected, "safety": safety,
            "unreadable": bad.len(), "packs": packs.len(), "pack_bytes": pack_bytes,
            "lkg": lkg.as_ref().map(|r| r.snapshot),
            "lkg_promoted_at": lkg.as_ref().map(|r| r.promoted_at.clone()),
            "lkg_time": lkg_time.map(rfc),
            "lkg_age_seconds": lkg_age.map(|d| d.as_secs()),
            "rpo_seconds": agent.rpo.as_secs(), "grace_seconds": agent.grace.as_secs(),
            "rpo_breached": breached,
            "agent": state,
            "remotes": remotes.iter().map(|(spec, lag)| match lag {
                Ok((lacking, has)) => json!({"name": spec.name, "snapshots_lacking": lacking, "has_lkg": has}),
                Err(e) => json!({"name": spec.name, "error": e}),
            }).collect::<Vec<_>>(),
            "coverage": coverage,
        }))?;
    } else {
        say!(out, "vault       {}", vault.root().display());
        say!(out, "id          {}", &vault.config.id[..16]);
        say!(out, "format      {}", vault.config.version);
        if encrypted {
            say!(
                out,
                "encryption  {} (opened with key {}, {keys} key file(s))",
                vault.config.encryption,
                vault.key_id().map_or("-", |k| &k[..8])
            );
        } else {
            say!(out, "encryption  NONE");
            say!(out, "{UNENCRYPTED_WARNING}");
        }
        say!(
            out,
            "snapshots   {} ({rejected} rejected by a gate, {safety} safety){}",
            snaps.len(),
            if bad.is_empty() {
                String::new()
            } else {
                format!(", {} UNREADABLE", bad.len())
            }
        );
        say!(
            out,
            "packs       {} ({})",
            packs.len(),
            human_bytes(pack_bytes)
        );
        let rpo = humantime::format_duration(agent.rpo);
        match (&lkg, lkg_age) {
            (Some(r), Some(age)) => say!(
                out,
                "last-known-good  {} taken {} ago (RPO {rpo}, +{} grace): {}",
                r.snapshot.short(),
                humantime::format_duration(Duration::from_secs(age.as_secs())),
                humantime::format_duration(agent.grace),
                if breached {
                    "RPO BREACHED"
                } else {
                    "within RPO"
                }
            ),
            (Some(r), None) => say!(
                out,
                "last-known-good  {} promoted {}",
                r.snapshot.short(),
                r.promoted_at
            ),
            (None, _) => say!(out, "last-known-good  none yet: RPO BREACHED"),
        }
        match &state {
            Some(s) => {
                say!(
                    out,
                    "agent       last cycle {}: {}",
                    s.last_cycle_at.map(rfc).unwrap_or_else(|| "-".into()),
                    s.last_cycle_summary.as_deref().unwrap_or("none yet")
                );
                if let Some(next) = s.next_cycle_at {
                    say!(out, "            next cycle due {}", rfc(next));
                }
            }
            None => say!(out, "agent       has not run on this vault"),
        }
        for (spec, lag) in &remotes {
            match lag {
                Ok((0, _)) => say!(out, "remote      {}: up to date", spec.name),
                Ok((n, has)) => say!(
                    out,
                    "remote      {}: lacks {n} snapshot(s){}",
                    spec.name,
                    if *has {
                        ""
                    } else {
                        ", including the last-known-good"
                    }
                ),
                Err(e) => say!(out, "remote      {}: UNREACHABLE: {e}", spec.name),
            }
        }
        if let Some(c) = &coverage {
            say!(out, "coverage    {}", c.summary());
        }
    }
    Ok(if !bad.is_empty() {
        exit::DAMAGED
    } else if breached {
        exit::RPO_BREACHED
    } else {
        exit::OK
    })
}

/// The gates column: `-` when never gated, else `passed` or `rejected:` and the failed gates.
fn gate_status(m: &Manifest) -> String {
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
}

/// `vault snapshots`.
pub(super) fn snapshots(ctx: &mut Ctx) -> Result<i32> {
    let vault = ctx.open(LockMode::Shared)?;
    let (snaps, bad) = vault.snapshots()?;
    for e in &bad {
        eprintln!("warning: {}", e.full());
    }
    if !vault.config.is_encrypted() {
        eprintln!("{UNENCRYPTED_WARNING}");
    }
    let lkg_id = lkg::read(&vault)?.map(|r| r.snapshot);
    let out = &mut ctx.out;
    if ctx.json {
        let list: Vec<_> = snaps
            .iter()
            .map(|(id, m)| {
                json!({"id": id, "time": m.time, "host": m.host, "paths": m.paths.iter().map(|p| &p.path).collect::<Vec<_>>(),
                       "files": m.stats.files, "bytes": m.stats.bytes, "bytes_added": m.stats.bytes_stored,
                       "partial": m.partial, "safety": m.safety, "parent": m.parent, "gates": gate_status(m),
                       "lkg": lkg_id == Some(*id)})
            })
            .collect();
        out.json(json!(list))?;
    } else {
        say!(
            out,
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
                out,
                "{:<10} {:<20} {:>9} {:>10} {:>10}  {:<18} {}{}{}{}",
                id.short(),
                m.time.get(..19).unwrap_or(&m.time).replace('T', " "),
                m.stats.files,
                human_bytes(m.stats.bytes),
                human_bytes(m.stats.bytes_stored),
                gate_status(m),
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
        say!(out, "{} snapshot(s)", snaps.len());
    }
    Ok(if bad.is_empty() {
        exit::OK
    } else {
        exit::DAMAGED
    })
}

/// `vault ls SNAPSHOT [PATH]`.
pub(super) fn ls(ctx: &mut Ctx, snapshot: &str, path: Option<&str>) -> Result<i32> {
    let vault = ctx.open(LockMode::Shared)?;
    let (_, m) = vault.resolve(snapshot)?;
    let reader = vault.blob_reader()?;
    let list = crate::ls::list(&reader, &m, path)?;
    if ctx.json {
        ctx.out.json(json!(list))?;
    } else {
        for l in &list {
            let link = l
                .target
                .as_ref()
                .map(|t| format!(" -> {t}"))
                .unwrap_or_default();
            say!(
                ctx.out,
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

/// The policy of `vault forget`: the flags when any is given (they are the whole policy, as in
/// restic), else the config file's `[retention]`, else the default.
fn forget_policy(ctx: &Ctx, a: &ForgetArgs) -> Result<Retention> {
    let counts = [
        ("--keep-last", a.keep_last),
        ("--keep-quarter-hourly", a.keep_quarter_hourly),
        ("--keep-hourly", a.keep_hourly),
        ("--keep-daily", a.keep_daily),
        ("--keep-weekly", a.keep_weekly),
        ("--keep-monthly", a.keep_monthly),
        ("--keep-yearly", a.keep_yearly),
    ];
    if counts.iter().all(|(_, v)| v.is_none()) && a.keep_within.is_none() {
        return Ok(ctx
            .config
            .as_ref()
            .map(|f| f.retention.clone())
            .unwrap_or_default());
    }
    let keep = |flag: &str, v: Option<i64>| -> Result<Keep> {
        match v {
            None => Ok(Keep::NONE),
            Some(-1) => Ok(Keep::Unlimited),
            Some(n) => u32::try_from(n).map(Keep::Count).map_err(|_| {
                Error::Usage(format!("{flag} {n}: use a count from 0, or -1 for all"))
            }),
        }
    };
    let [last, quarter, hourly, daily, weekly, monthly, yearly] =
        counts.map(|(flag, v)| keep(flag, v));
    let policy = Retention {
        keep_last: last?,
        keep_within: a.keep_within.unwrap_or_default(),
        keep_quarter_hourly: quarter?,
        keep_hourly: hourly?,
        keep_daily: daily?,
        keep_weekly: weekly?,
        keep_monthly: monthly?,
        keep_yearly: yearly?,
    };
    if !policy.keeps_any() {
        return Err(Error::Usage(
            "this policy keeps nothing (only the last-known-good would survive); give a \
             --keep-* count above 0"
                .into(),
        ));
    }
    Ok(policy)
}

/// `vault forget [--keep-* ...] [--dry-run]`.
pub(super) fn forget(ctx: &mut Ctx, a: &ForgetArgs) -> Result<i32> {
    let policy = forget_policy(ctx, a)?;
    let mode = if a.dry_run {
        LockMode::Shared
    } else {
        LockMode::Append
    };
    let r = match &a.remote {
        Some(name) => {
            let backend = deleting_backend(ctx, name, a.admin)?;
            let local = ctx.open(LockMode::Shared)?;
            let mirror = ctx.open_remote_backend(backend.clone())?;
            same_vault(&local, &mirror, &backend)?;
            crate::retention::forget_remote(&local, &mirror, &backend, &policy, a.dry_run)?
        }
        None => {
            let vault = ctx.open(mode)?;
            crate::retention::forget(&vault, &policy, a.dry_run)?
        }
    };
    let out = &mut ctx.out;
    if ctx.json {
        out.json(json!(r))?;
        return Ok(exit::OK);
    }
    for d in &r.decisions {
        let when = humantime::format_rfc3339_seconds(d.time);
        if d.kept() {
            let why: Vec<&str> = d.keep.iter().map(|x| x.label()).collect();
            say!(out, "keep    {}  {when}  {}", d.id.short(), why.join(", "));
        } else {
            say!(
                out,
                "{}  {}  {when}",
                if a.dry_run { "would forget" } else { "forget" },
                d.id.short()
            );
        }
    }
    say!(
        out,
        "{} {} of {} snapshots; the space comes back with `vault prune`",
        if a.dry_run { "would forget" } else { "forgot" },
        r.forgotten,
        r.snapshots
    );
    Ok(exit::OK)
}

/// `vault prune [--repack-threshold PCT] [--dry-run] [--remote NAME]`.
pub(super) fn prune(ctx: &mut Ctx, a: &PruneArgs) -> Result<i32> {
    let opts = crate::prune::PruneOptions {
        repack_threshold: a.repack_threshold,
        dry_run: a.dry_run,
        delete_wait: ctx.wait.unwrap_or(crate::prune::DEFAULT_DELETE_WAIT),
    };
    let progress = Progress::hidden();
    let r = match &a.remote {
        Some(name) => {
            let backend = deleting_backend(ctx, name, a.admin)?;
            let cache = ctx
                .cache_dir
                .clone()
                .unwrap_or_else(crate::remote::default_cache_base);
            let mut vault = ctx.open(LockMode::Shared)?;
            crate::prune::prune_remote(&mut vault, backend, &cache, &ctx.secrets, &opts, &progress)?
        }
        None => {
            let mut vault = ctx.open(LockMode::Shared)?;
            crate::prune::prune(&mut vault, &opts, &progress)?
        }
    };
    let out = &mut ctx.out;
    if ctx.json {
        out.json(json!(r))?;
        return Ok(exit::OK);
    }
    let verb = if r.dry_run { "would " } else { "" };
    say!(
        out,
        "{} snapshots reference {} blobs in {} packs ({})",
        r.snapshots,
        r.blobs_referenced,
        r.packs_before,
        human_bytes(r.bytes_before)
    );
    say!(
        out,
        "{verb}delete {} unused packs and repack {} mostly unused ones",
        r.packs_unused,
        r.packs_repacked
    );
    if !r.dry_run {
        say!(
            out,
            "deleted {} packs ({}), wrote {} ({}); {} snapshots written meanwhile re-checked, {} packs spared; exclusive lock held {} ms",
            r.packs_deleted,
            human_bytes(r.bytes_deleted),
            r.packs_written,
            human_bytes(r.bytes_written),
            r.snapshots_rechecked,
            r.packs_spared,
            r.exclusive_ms
        );
    }
    say!(
        out,
        "{}reclaim {}; {} unused left in packs under the {}% threshold",
        if r.dry_run { "would " } else { "" },
        human_bytes(r.bytes_reclaimed),
        human_bytes(r.bytes_unused_left),
        a.repack_threshold
    );
    Ok(exit::OK)
}

/// The backend of remote `name` for a command that deletes from it: an append-only remote only
/// with `--admin` (and then without the guard that refuses deletes).
fn deleting_backend(ctx: &Ctx, name: &str, admin: bool) -> Result<crate::backend::DynBackend> {
    let mut spec = ctx.remote_spec(name)?;
    if spec.append_only {
        if !admin {
            return Err(Error::Usage(format!(
                "remote {name:?} is append-only: AtlasVault never deletes from it. To forget or \
                 prune there, run with credentials the storage lets delete and pass --admin"
            )));
        }
        spec.append_only = false;
    }
    crate::backend::open(&spec)
}

/// Refuses to judge a remote that holds another vault.
fn same_vault(
    local: &crate::Vault,
    remote: &crate::Vault,
    backend: &crate::backend::DynBackend,
) -> Result<()> {
    if local.config.id == remote.config.id {
        return Ok(());
    }
    Err(Error::Invalid(format!(
        "{} holds another vault ({}), not this one ({})",
        backend.location(),
        remote.config.id,
        local.config.id
    )))
}
