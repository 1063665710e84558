//! `vault prune`: gives back the space of blobs no snapshot references.
//!
//! Two phases, so that the agent's 15-minute cycle is never blocked for the length of a prune:
//!
//! 1. **Mark and repack, beside the writer** (shared lock, which an appending writer such as a
//!    snapshot does not exclude; `prune.lock` keeps prunes apart). Every manifest's trees are
//!    walked into the set of referenced blobs. Each referenced blob is charged to one of its
//!    copies; a pack none of whose blobs is charged is garbage, and a pack whose unused share
//!    reaches the threshold is repacked: its used blobs are checked (decrypted, decompressed,
//!    hashed) and copied as stored into new packs, which are durable and indexed before anything
//!    is deleted. Nothing is removed in this phase, so a crash in it leaves at worst a duplicate.
//! 2. **Delete, alone** (exclusive lock, typically for seconds). Manifests written during phase
//!    1 are walked (only their new trees), and a pack is deleted only when every referenced blob
//!    in it, old snapshots' or new ones', has a copy in a pack that stays. Then its index rows
//!    go, then its file.
//!
//! Rustic and duplicacy instead mark packs in one run and delete them in a later one, after a
//! grace period, because an object store has no lock that a concurrent backup would honour. A
//! local vault has one: snapshots that started before the delete phase have finished (and their
//! manifests are re-checked) and later ones cannot dedup against a pack that is gone from the
//! index, so no grace period is needed here. Remotes are pruned through [`prune_remote`].

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::audit::AuditRecord;
use crate::backend::DynBackend;
use crate::blob;
use crate::crashpoint;
use crate::error::{Error, IoContext, Result};
use crate::fsutil;
use crate::id::{BlobId, IdSet, PackId, SnapshotId};
use crate::keys::SecretSource;
use crate::lock::LockMode;
use crate::pack::{self, PackEntry, PackWriter};
use crate::progress::Progress;
use crate::remote::pack_name;
use crate::tree::Node;
use crate::vault::{BlobReader, Vault};

/// Default share of unused bytes at which a pack is repacked.
pub const DEFAULT_REPACK_THRESHOLD: f64 = 50.0;
/// How long the delete phase waits for the exclusive lock by default (readers and the writer in
/// flight finish first).
pub const DEFAULT_DELETE_WAIT: Duration = Duration::from_secs(30 * 60);

const PRUNE_LOCK: &str = "prune.lock";
/// In `packs/` (same file system as the packs, so the rename is atomic even when `packs/` is a
/// mount of its own); pack listings skip dot-directories.
const PRUNE_TMP: &str = ".prune.tmp";

/// How to prune.
#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// Repack a pack once this percentage of its bytes is unused (0 < t <= 100; 100 only
    /// removes packs that are wholly unused).
    pub repack_threshold: f64,
    /// Plan and report, change nothing.
    pub dry_run: bool,
    /// How long the delete phase waits for the exclusive lock.
    pub delete_wait: Duration,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            repack_threshold: DEFAULT_REPACK_THRESHOLD,
            dry_run: false,
            delete_wait: DEFAULT_DELETE_WAIT,
        }
    }
}

/// What a prune did (or, dry, would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    pub snapshots: usize,
    pub blobs_referenced: usize,
    pub packs_before: usize,
    pub bytes_before: u64,
    /// Packs with no referenced blob.
    pub packs_unused: usize,
    /// Packs rewritten because most of their bytes were unused.
    pub packs_repacked: usize,
    /// New packs holding the repacked blobs.
    pub packs_written: usize,
    pub bytes_written: u64,
    pub packs_deleted: usize,
    pub bytes_deleted: u64,
    /// Bytes given back: deleted minus written.
    pub bytes_reclaimed: u64,
    /// Packs spared at the last moment because a snapshot written during the prune uses them.
    pub packs_spared: usize,
    /// Snapshots written while the prune marked, checked before anything was deleted.
    pub snapshots_rechecked: usize,
    /// Unused bytes left in packs that stay (not repacked: under the threshold).
    pub bytes_unused_left: u64,
    pub duration_ms: u64,
    /// How long the delete phase held the exclusive lock (the only time a snapshot waits).
    pub exclusive_ms: u64,
}

/// Where the packs being pruned live.
#[derive(Clone, Copy)]
enum Store<'a> {
    /// The vault's own `packs/`.
    Local,
    /// A remote: new packs are staged locally and uploaded, old ones deleted there.
    Remote(&'a DynBackend),
}

/// The plan made while marking.
struct Plan {
    seen: HashSet<SnapshotId>,
    /// Trees and chunks referenced by the snapshots in `seen`.
    referenced: IdSet,
    /// The trees among them (walked).
    trees: HashSet<BlobId>,
    /// Pack → (size, bytes of blobs charged to it).
    packs: HashMap<PackId, (u64, u64)>,
    unused: Vec<PackId>,
    /// Packs to repack with the entries to copy out of each.
    repack: Vec<(PackId, Vec<PackEntry>)>,
}

/// Prunes the local vault `vault`, opened with a shared lock (it is traded for the exclusive
/// lock for the delete phase, and left shared again at the end).
pub fn prune(vault: &mut Vault, opts: &PruneOptions, progress: &Progress) -> Result<PruneReport> {
    check_threshold(opts.repack_threshold)?;
    if vault.lock_mode() != LockMode::Shared {
        return Err(Error::Invalid(
            "prune starts from a shared lock (it takes the exclusive one itself)".into(),
        ));
    }
    let started = Instant::now();
    let _prune_lock = take_prune_lock(vault.root())?;
    let tmp = vault.packs_dir().join(PRUNE_TMP);
    // Packs a crashed writer or prune left unindexed are judged too (indexing is idempotent,
    // so this is safe beside a writer).
    vault.reconcile()?;
    let (plan, mut report, doomed) = phase_one(vault, Store::Local, &tmp, opts, progress)?;
    let Some(doomed) = doomed else {
        report.duration_ms = started.elapsed().as_millis() as u64;
        return Ok(report);
    };
    alone(vault, opts, &mut report, |vault, report| {
        recheck_and_delete(vault, &plan, doomed, Store::Local, report)
    })?;
    finish(report, started, &tmp, vault, None)
}

/// Prunes a remote the way [`prune`] prunes the local vault. The remote is read and written
/// through its mirror under `cache_base`; new packs are staged there and uploaded before anything
/// is deleted. `local` (opened shared) is this machine's vault, the only one that pushes to the
/// remote: its exclusive lock during the delete phase keeps the agent's push out, and the remote
/// is listed again under it, so manifests pushed while the prune marked are re-checked.
///
/// A restore from this remote running on another machine during the delete phase may find a
/// repacked pack gone; it fails cleanly and a rerun reads the new copy. (No grace period: see
/// README, "Prune".)
pub fn prune_remote(
    local: &mut Vault,
    backend: DynBackend,
    cache_base: &Path,
    secrets: &SecretSource,
    opts: &PruneOptions,
    progress: &Progress,
) -> Result<PruneReport> {
    check_threshold(opts.repack_threshold)?;
    let started = Instant::now();
    let location = backend.location();
    let mut remote = crate::remote::open(backend.clone(), cache_base, None, secrets)?;
    refuse_unread(&remote, &location)?;
    if remote.config.id != local.config.id {
        return Err(Error::Invalid(format!(
            "{location} holds another vault ({}), not this one ({})",
            remote.config.id, local.config.id
        )));
    }
    let _prune_lock = take_prune_lock(remote.root())?;
    let tmp = remote.root().join(PRUNE_TMP);
    let store = Store::Remote(&backend);
    let (plan, mut report, doomed) = phase_one(&mut remote, store, &tmp, opts, progress)?;
    drop(remote);
    let Some(doomed) = doomed else {
        report.duration_ms = started.elapsed().as_millis() as u64;
        return Ok(report);
    };
    alone(local, opts, &mut report, |_, report| {
        // Listed again, now that no push of ours runs: new manifests and packs come in.
        let mut fresh =
            crate::remote::open(backend.clone(), cache_base, Some(opts.delete_wait), secrets)?;
        refuse_unread(&fresh, &location)?;
        recheck_and_delete(&mut fresh, &plan, doomed, store, report)
    })?;
    finish(report, started, &tmp, local, Some(&location))
}

/// Prune works from every pack's trailer. A remote that would not serve one (an unreadable file
/// on a mounted drive, a policy on one object) is not pruned: that pack may hold the only copy of
/// what a kept snapshot needs, and the prune could not tell what else it holds.
fn refuse_unread(remote: &Vault, location: &str) -> Result<()> {
    match remote.unread_packs() {
        [] => Ok(()),
        unread => Err(Error::Backend(crate::backend::BackendError::new(
            location,
            "read",
            "packs",
            crate::backend::BackendErrorKind::Denied,
            format!(
                "not pruned: {} of its packs could not be read; run prune again once the remote \
                 serves them ({})",
                unread.len(),
                unread.join("; ")
            ),
        ))),
    }
}

/// Phase 1 on `vault`: marks, then (unless dry, or nothing is to go) copies the used blobs of
/// the packs to repack into new packs, staged in `tmp` (durable and indexed when this returns).
/// Returns the plan, the report so far, and the packs to delete (`None`: the prune ends here).
fn phase_one(
    vault: &mut Vault,
    store: Store<'_>,
    tmp: &Path,
    opts: &PruneOptions,
    progress: &Progress,
) -> Result<(Plan, PruneReport, Option<HashSet<PackId>>)> {
    // Left by a prune that was killed: it is ours alone (prune.lock).
    if tmp.exists() {
        fs::remove_dir_all(tmp).at(tmp)?;
    }
    let plan = mark(vault, opts.repack_threshold, progress)?;
    let mut report = plan.report_base(opts.dry_run);
    if opts.dry_run || plan.is_empty() {
        report.bytes_reclaimed = plan.estimated_reclaim();
        return Ok((plan, report, None));
    }
    fsutil::create_dir_durable(tmp)?;
    let written = repack(vault, &plan, tmp, store, progress)?;
    report.packs_written = written.len();
    report.bytes_written = written.iter().map(|(_, size)| size).sum();
    crashpoint::at("prune-after-repack");
    crashpoint::pause("prune-before-delete");
    let mut doomed: HashSet<PackId> = plan.unused.iter().copied().collect();
    doomed.extend(plan.repack.iter().map(|(id, _)| *id));
    Ok((plan, report, Some(doomed)))
}

/// Phase 2: runs `delete` with `vault` locked exclusively, timing it, and trades the lock back
/// for a shared one whatever happened (the caller holds what it gave).
fn alone(
    vault: &mut Vault,
    opts: &PruneOptions,
    report: &mut PruneReport,
    delete: impl FnOnce(&mut Vault, &mut PruneReport) -> Result<()>,
) -> Result<()> {
    vault.relock(LockMode::Exclusive, Some(opts.delete_wait))?;
    let t = Instant::now();
    let outcome = delete(vault, report);
    report.exclusive_ms = t.elapsed().as_millis() as u64;
    let relocked = vault.relock(LockMode::Shared, Some(opts.delete_wait));
    outcome?;
    relocked
}

/// Removes the staging directory, completes the report and audits it in `audit_to`.
fn finish(
    mut report: PruneReport,
    started: Instant,
    tmp: &Path,
    audit_to: &Vault,
    remote: Option<&str>,
) -> Result<PruneReport> {
    if tmp.exists() {
        fs::remove_dir_all(tmp).at(tmp)?;
    }
    report.bytes_reclaimed = report.bytes_deleted.saturating_sub(report.bytes_written);
    report.duration_ms = started.elapsed().as_millis() as u64;
    let mut detail = serde_json::json!({
        "packs_deleted": report.packs_deleted,
        "packs_written": report.packs_written,
        "packs_spared": report.packs_spared,
        "bytes_reclaimed": report.bytes_reclaimed,
    });
    if let Some(r) = remote {
        detail["remote"] = r.into();
    }
    audit_to.audit(&AuditRecord::new("prune", None, "ok").with_detail(detail))?;
    Ok(report)
}

fn check_threshold(t: f64) -> Result<()> {
    if t > 0.0 && t <= 100.0 {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "--repack-threshold {t} must be a percentage in (0, 100]"
        )))
    }
}

fn take_prune_lock(root: &Path) -> Result<fs::File> {
    use fs2::FileExt;
    let path = root.join(PRUNE_LOCK);
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .at(&path)?;
    f.try_lock_exclusive().map_err(|_| Error::Locked {
        holder: "another `vault prune` on this vault".into(),
    })?;
    Ok(f)
}

/// Phase 1: which blobs are referenced, and what to do with each pack.
fn mark(vault: &Vault, threshold: f64, progress: &Progress) -> Result<Plan> {
    // Manifests before the index: a snapshot's packs are indexed before its manifest appears,
    // so every blob of a listed manifest is in the index read after.
    let mut roots = Vec::new();
    let mut seen = HashSet::new();
    for id in vault.snapshot_ids()? {
        if let Some(m) = vault.manifest_if_present(&id)? {
            roots.push(m.tree);
            seen.insert(id);
        }
    }
    let reader = vault.blob_reader()?;
    let mut referenced = IdSet::default();
    let mut trees = HashSet::new();
    for root in roots {
        walk(&reader, root, &mut referenced, &mut trees)?;
        progress.inc(1);
    }

    // Charge every referenced blob to one copy: the one in the pack with the most referenced
    // bytes, then the smaller pack (after a crash mid-prune, the repacked copy wins). Packs are
    // listed before the rows, so a pack a snapshot indexes meanwhile is not judged at all.
    let sizes = vault.index().packs()?;
    let mut rows: Vec<(PackId, PackEntry)> = Vec::new();
    let mut all_copies: HashMap<PackId, u64> = HashMap::new();
    vault.index().for_each_row(|pack, e| {
        if referenced.contains(&e.id) && sizes.contains_key(&pack) {
            *all_copies.entry(pack).or_default() += u64::from(e.stored_len);
            rows.push((pack, e));
        }
    })?;
    let rank = |p: &PackId| {
        (
            std::cmp::Reverse(all_copies.get(p).copied().unwrap_or(0)),
            sizes.get(p).copied().unwrap_or(u64::MAX),
            *p,
        )
    };
    let mut chosen: HashMap<BlobId, (PackId, PackEntry)> = HashMap::new();
    for (pack, e) in rows {
        match chosen.get(&e.id) {
            Some((p, _)) if rank(p) <= rank(&pack) => {}
            _ => {
                chosen.insert(e.id, (pack, e));
            }
        }
    }
    if let Some(missing) = referenced.iter().find(|b| !chosen.contains_key(b)) {
        return Err(Error::corrupt(
            format!("blob {missing}"),
            "a snapshot references it but no pack holds it; run `vault verify` and repair the \
             vault before pruning (prune deletes nothing while the vault is damaged)",
        ));
    }

    let mut packs: HashMap<PackId, (u64, u64)> =
        sizes.iter().map(|(id, size)| (*id, (*size, 0))).collect();
    let mut keep_entries: HashMap<PackId, Vec<PackEntry>> = HashMap::new();
    for (pack, e) in chosen.values() {
        if let Some(p) = packs.get_mut(pack) {
            p.1 += u64::from(e.stored_len);
        }
        keep_entries.entry(*pack).or_default().push(*e);
    }
    let mut unused = Vec::new();
    let mut repack = Vec::new();
    for (id, (size, used)) in &packs {
        if *used == 0 {
            unused.push(*id);
        } else {
            let unused_pct = 100.0 * (size.saturating_sub(*used)) as f64 / (*size).max(1) as f64;
            if unused_pct >= threshold {
                let mut entries = keep_entries.remove(id).unwrap_or_default();
                entries.sort_by_key(|e| e.offset);
                repack.push((*id, entries));
            }
        }
    }
    unused.sort();
    repack.sort_by_key(|(id, _)| *id);
    Ok(Plan {
        seen,
        referenced,
        trees,
        packs,
        unused,
        repack,
    })
}

/// Adds every blob under tree `root` to `out`, and the trees to `trees`; a tree already in
/// `trees` was walked before. (Trees are kept apart: a data chunk whose bytes happened to equal
/// a tree's would otherwise stop that tree's walk.)
fn walk(
    reader: &BlobReader,
    root: BlobId,
    out: &mut IdSet,
    trees: &mut HashSet<BlobId>,
) -> Result<()> {
    let mut stack = vec![root];
    while let Some(id) = stack.pop() {
        if !trees.insert(id) {
            continue;
        }
        out.insert(id);
        let (tree, lists) = reader.tree_lists(&id)?;
        out.extend(lists.values().map(|r| *r.blob()));
        for e in tree.entries {
            match e.node {
                Node::File { chunks } => out.extend(chunks),
                Node::Dir { subtree } => stack.push(subtree),
                Node::Symlink { .. } => {}
            }
        }
    }
    Ok(())
}

impl Plan {
    /// Nothing to delete or repack: no new packs, no exclusive lock.
    fn is_empty(&self) -> bool {
        self.unused.is_empty() && self.repack.is_empty()
    }

    fn report_base(&self, dry_run: bool) -> PruneReport {
        let doomed: HashSet<&PackId> = self
            .unused
            .iter()
            .chain(self.repack.iter().map(|(id, _)| id))
            .collect();
        PruneReport {
            dry_run,
            snapshots: self.seen.len(),
            blobs_referenced: self.referenced.len(),
            packs_before: self.packs.len(),
            bytes_before: self.packs.values().map(|(s, _)| s).sum(),
            packs_unused: self.unused.len(),
            packs_repacked: self.repack.len(),
            bytes_unused_left: self
                .packs
                .iter()
                .filter(|(id, _)| !doomed.contains(id))
                .map(|(_, (size, used))| size.saturating_sub(*used))
                .sum(),
            ..Default::default()
        }
    }

    /// Deleted bytes minus the bytes repacked (an estimate: new packs add headers).
    fn estimated_reclaim(&self) -> u64 {
        let unused: u64 = self.unused.iter().map(|id| self.packs[id].0).sum();
        let repacked: u64 = self
            .repack
            .iter()
            .map(|(id, _)| {
                let (size, used) = self.packs[id];
                size - used.min(size)
            })
            .sum();
        unused + repacked
    }
}

/// Phase 1b: copies the used blobs of the packs to repack into new packs, checking each blob on
/// the way (prune never spreads damage: a blob that does not open stops the prune). Returns the
/// new packs with their sizes; each is durable and indexed when this returns.
fn repack(
    vault: &mut Vault,
    plan: &Plan,
    tmp: &Path,
    store: Store<'_>,
    progress: &Progress,
) -> Result<Vec<(PackId, u64)>> {
    let reader = vault.blob_reader()?;
    let target = vault.config.pack_target_size;
    let packs_dir = match store {
        Store::Local => vault.packs_dir(),
        Store::Remote(_) => tmp.join("packs"),
    };
    let crypto = vault.crypto().clone();
    let mut written = Vec::new();
    let mut writer: Option<PackWriter> = None;
    for (old, entries) in &plan.repack {
        let bytes = reader.read_pack(old)?;
        for e in entries {
            let stored = stored_slice(&bytes, old, e)?;
            blob::open(&crypto, &e.id, e.compression, e.raw_len, stored).map_err(|err| {
                Error::corrupt(
                    format!("blob {} in pack {old}", e.id),
                    format!(
                        "{}; prune stops (run `vault verify --read-data`)",
                        err.full()
                    ),
                )
            })?;
            let w = match writer.as_mut() {
                Some(w) => w,
                None => writer.insert(PackWriter::with_temp_dir(&packs_dir, tmp, &crypto)?),
            };
            w.add(&blob::SealedBlob {
                id: e.id,
                kind: e.kind,
                compression: e.compression,
                raw_len: e.raw_len,
                bytes: stored.to_vec(),
            })?;
            if w.is_full(target) {
                let w = writer.take().expect("invariant: writer is open");
                written.push(publish(vault, w, &packs_dir, store)?);
            }
        }
        progress.inc(1);
    }
    if let Some(w) = writer.filter(|w| !w.is_empty()) {
        written.push(publish(vault, w, &packs_dir, store)?);
    }
    Ok(written)
}

/// Finishes a new pack, makes it durable where the store keeps packs, and indexes it.
fn publish(
    vault: &mut Vault,
    w: PackWriter,
    packs_dir: &Path,
    store: Store<'_>,
) -> Result<(PackId, u64)> {
    let done = w.finish()?;
    if let Store::Remote(backend) = store {
        let path = pack::pack_path(packs_dir, &done.id);
        let bytes = fs::read(&path).at(&path)?;
        backend.put(&pack_name(&done.id), &bytes)?;
        fs::remove_file(&path).at(&path)?;
    }
    crashpoint::at("prune-before-indexing-new-pack");
    vault
        .index_mut()
        .add_pack(&done.id, done.size, &done.entries)?;
    Ok((done.id, done.size))
}

fn stored_slice<'a>(bytes: &'a [u8], pack: &PackId, e: &PackEntry) -> Result<&'a [u8]> {
    let start = usize::try_from(e.offset).ok();
    let end = start.and_then(|s| s.checked_add(e.stored_len as usize));
    match (start, end) {
        (Some(s), Some(end)) if end <= bytes.len() => Ok(&bytes[s..end]),
        _ => Err(Error::corrupt(
            format!("pack {pack}"),
            format!("blob {} lies past the end of the pack", e.id),
        )),
    }
}

/// Phase 2, under the exclusive lock: spares every doomed pack that holds the only copies of a
/// referenced blob (new snapshots included), then deletes the rest.
fn recheck_and_delete(
    vault: &mut Vault,
    plan: &Plan,
    mut doomed: HashSet<PackId>,
    store: Store<'_>,
    report: &mut PruneReport,
) -> Result<()> {
    // Snapshots written while we marked: their new trees are walked (old subtrees are in
    // `referenced` already and stop the walk).
    let mut referenced = plan.referenced.clone();
    let mut trees = plan.trees.clone();
    let reader = vault.blob_reader()?;
    for id in vault.snapshot_ids()? {
        if plan.seen.contains(&id) {
            continue;
        }
        if let Some(m) = vault.manifest_if_present(&id)? {
            walk(&reader, m.tree, &mut referenced, &mut trees)?;
            report.snapshots_rechecked += 1;
        }
    }
    drop(reader);
    // Which referenced blobs have a copy outside the doomed packs, and which doomed packs hold
    // referenced blobs.
    let mut safe: HashSet<BlobId> = HashSet::new();
    let mut at_risk: Vec<(PackId, BlobId)> = Vec::new();
    let on_disk = vault.pack_files()?;
    vault.index().for_each_row(|pack, e| {
        if !referenced.contains(&e.id) {
            return;
        }
        if doomed.contains(&pack) {
            at_risk.push((pack, e.id));
        } else if on_disk.contains_key(&pack) {
            safe.insert(e.id);
        }
    })?;
    for (pack, blob) in at_risk {
        if !safe.contains(&blob) && doomed.remove(&pack) {
            report.packs_spared += 1;
        }
    }
    let mut doomed: Vec<PackId> = doomed.into_iter().collect();
    doomed.sort();
    // Rows first, files after: the index never points at a deleted pack (a reader would call
    // that damage), and a crash in between leaves unindexed packs that the next writer's
    // reconcile indexes again and the next prune deletes.
    vault.index_mut().remove_packs(&doomed)?;
    vault.index().make_durable()?;
    crashpoint::at("prune-after-index-update");
    let packs_dir = vault.packs_dir();
    let mut dirs: HashSet<PathBuf> = HashSet::new();
    for (i, id) in doomed.iter().enumerate() {
        let path = pack::pack_path(&packs_dir, id);
        match store {
            Store::Local => match crashpoint::io_fault(&path).and_then(|()| fs::remove_file(&path))
            {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&path, e)),
            },
            Store::Remote(backend) => backend.delete(&pack_name(id))?,
        }
        if let Some(size) = on_disk.get(id) {
            report.bytes_deleted += size;
        }
        report.packs_deleted += 1;
        if let (Store::Local, Some(d)) = (store, path.parent()) {
            dirs.insert(d.to_path_buf());
        }
        if i == 0 {
            crashpoint::at("prune-mid-delete");
        }
    }
    for d in &dirs {
        fsutil::sync_dir(d)?;
    }
    Ok(())
}
