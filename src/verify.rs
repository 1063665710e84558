//! `vault verify`: proves the vault is intact, or names exactly what is not.
//!
//! Structure (always): every manifest parses and matches its sha256 and its name; every tree and
//! chunk a snapshot references is in the index, in a pack that exists with the recorded size; every
//! tree decodes. Data (`--read-data`, or a sampled share of packs): each pack is read whole, its
//! blake3 must equal its name, its trailer must parse, and every blob must decompress and hash to
//! its id. Damage is then traced back through the snapshots' trees to the file paths it breaks.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use serde::Serialize;

use crate::blob;
use crate::error::{Error, Result};
use crate::id::{BlobId, PackId, SnapshotId};
use crate::manifest::Manifest;
use crate::pack;
use crate::progress::Progress;
use crate::tree::{check_name, Node, Tree};
use crate::util::display_name;
use crate::vault::{BlobReader, Vault};

/// Paths listed per damaged pack before the report says "and N more".
const PATHS_SHOWN_MAX: usize = 50;

/// How much to check.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Read every pack (or `subset_percent` of them) and re-hash every blob.
    pub read_data: bool,
    /// Share of packs to read, 0 < p <= 100.
    pub subset_percent: Option<f64>,
    pub threads: usize,
}

/// A pack that is missing or damaged, with what it breaks.
#[derive(Debug, Clone, Serialize)]
pub struct DamagedPack {
    pub pack: String,
    pub reason: String,
    /// Blobs in it that are unreadable.
    pub blobs: Vec<String>,
    pub snapshots: Vec<String>,
    /// Files (snapshot-relative paths) that can no longer be restored whole.
    pub paths: Vec<String>,
    pub more_paths: usize,
}

/// The outcome of a verify run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    pub snapshots: usize,
    pub trees: usize,
    pub blobs_referenced: usize,
    pub packs: usize,
    pub packs_read: usize,
    pub bytes_read: u64,
    /// Problems that are not tied to one pack (bad manifests, blobs missing from the index).
    pub problems: Vec<String>,
    pub damaged_packs: Vec<DamagedPack>,
}

impl VerifyReport {
    /// True when nothing is wrong.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty() && self.damaged_packs.is_empty()
    }
}

/// Checks `vault`.
pub fn verify(vault: &Vault, opts: &VerifyOptions, progress: &Progress) -> Result<VerifyReport> {
    let mut report = VerifyReport::default();

    // Manifests first, the index after: a snapshot written meanwhile (verify runs beside an
    // appending writer) indexes its packs before its manifest appears, so every listed manifest's
    // blobs are in the index read below. A manifest forgotten meanwhile is skipped.
    let mut manifests: Vec<(SnapshotId, Manifest)> = Vec::new();
    for id in vault.snapshot_ids()? {
        match vault.manifest_if_present(&id) {
            Ok(Some(m)) => manifests.push((id, m)),
            Ok(None) => {}
            Err(e) => report.problems.push(e.full()),
        }
    }
    report.snapshots = manifests.len();
    let reader = vault.blob_reader()?;

    // Packs: index against disk.
    // The index before the listing: a writer renames a pack into place before indexing it.
    let indexed = vault.index().packs()?;
    let on_disk = vault.pack_files()?;
    report.packs = on_disk.len();
    let mut damaged: BTreeMap<PackId, String> = BTreeMap::new();
    for (id, size) in &indexed {
        match on_disk.get(id) {
            None => {
                damaged.insert(*id, "pack file is missing".into());
            }
            Some(s) if s != size => {
                damaged.insert(*id, format!("pack is {s} bytes, the index recorded {size}"));
            }
            _ => {}
        }
    }

    // Data.
    let mut bad_blobs: HashMap<BlobId, PackId> = HashMap::new();
    if opts.read_data {
        let mut ids: Vec<PackId> = on_disk
            .keys()
            .copied()
            .filter(|id| !damaged.contains_key(id))
            .collect();
        ids.sort();
        if let Some(p) = opts.subset_percent {
            ids = sample(ids, p)?;
        }
        let total: u64 = ids.iter().map(|id| on_disk[id]).sum();
        progress.inc_total(total);
        let results = read_packs(&reader, &ids, &on_disk, opts.threads, progress);
        report.packs_read = ids.len();
        report.bytes_read = total;
        for (id, outcome) in results {
            if let Err((reason, blobs)) = outcome {
                damaged.insert(id, reason);
                for b in blobs {
                    bad_blobs.insert(b, id);
                }
            }
        }
    }
    // Every blob the index places in a damaged pack without a finer verdict is presumed lost.
    let whole_pack_lost: HashSet<PackId> = damaged
        .keys()
        .copied()
        .filter(|p| !bad_blobs.values().any(|q| q == p))
        .collect();
    for (id, loc) in reader.locations() {
        if whole_pack_lost.contains(&loc.pack) {
            bad_blobs.insert(*id, loc.pack);
        }
    }

    // Walk every snapshot's trees, tracing damage to paths.
    let mut tracer = Tracer {
        reader: &reader,
        bad_blobs: &bad_blobs,
        clean_trees: HashSet::new(),
        seen_blobs: HashSet::new(),
        trees: 0,
        hits: BTreeMap::new(),
        problems: Vec::new(),
    };
    for (id, m) in &manifests {
        let snap = id.short();
        tracer.tree(&m.tree, &snap, "");
    }
    report.trees = tracer.trees;
    report.blobs_referenced = tracer.seen_blobs.len();
    report.problems.extend(tracer.problems);
    let hits = tracer.hits;

    for (pack, reason) in damaged {
        let blobs: BTreeSet<String> = bad_blobs
            .iter()
            .filter(|(_, p)| **p == pack)
            .map(|(b, _)| b.to_hex())
            .collect();
        let mut snapshots = BTreeSet::new();
        let mut paths = Vec::new();
        let mut more = 0;
        if let Some(list) = hits.get(&pack) {
            for (snap, path) in list {
                snapshots.insert(snap.clone());
                if paths.len() < PATHS_SHOWN_MAX {
                    paths.push(format!("{snap}:{path}"));
                } else {
                    more += 1;
                }
            }
        }
        report.damaged_packs.push(DamagedPack {
            pack: pack.to_hex(),
            reason,
            blobs: blobs.into_iter().collect(),
            snapshots: snapshots.into_iter().collect(),
            paths,
            more_paths: more,
        });
    }
    Ok(report)
}

/// Picks `percent` of the packs at random (at least one when there are any).
fn sample(mut ids: Vec<PackId>, percent: f64) -> Result<Vec<PackId>> {
    if !(percent > 0.0 && percent <= 100.0) {
        return Err(Error::Invalid(format!(
            "--read-data-subset {percent}% must be in (0, 100]"
        )));
    }
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| Error::Invalid(format!("no randomness: {e}")))?;
    let key = |id: &PackId| blake3::keyed_hash(&seed, &id.0);
    ids.sort_by_key(|id| *key(id).as_bytes());
    let n = ((ids.len() as f64) * percent / 100.0).ceil() as usize;
    ids.truncate(n.max(usize::from(!ids.is_empty())));
    Ok(ids)
}

type PackOutcome = std::result::Result<(), (String, Vec<BlobId>)>;

fn read_packs(
    reader: &BlobReader,
    ids: &[PackId],
    sizes: &HashMap<PackId, u64>,
    threads: usize,
    progress: &Progress,
) -> Vec<(PackId, PackOutcome)> {
    let threads = if threads == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    } else {
        threads
    };
    let next = AtomicUsize::new(0);
    let out = Mutex::new(Vec::with_capacity(ids.len()));
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(id) = ids.get(i) else { break };
                let r = check_pack(reader, id);
                progress.inc(sizes.get(id).copied().unwrap_or(0));
                out.lock().expect("invariant: result lock").push((*id, r));
            });
        }
    });
    out.into_inner().expect("invariant: result lock")
}

/// Reads one pack whole and checks its id, trailer and every blob.
fn check_pack(reader: &BlobReader, id: &PackId) -> PackOutcome {
    // Only on failure: which blobs the index places in this pack.
    let indexed = || -> Vec<BlobId> {
        reader
            .locations()
            .iter()
            .filter(|(_, l)| l.pack == *id)
            .map(|(b, _)| *b)
            .collect()
    };
    let bytes = reader
        .read_pack(id)
        .map_err(|e| (format!("cannot read: {}", e.full()), indexed()))?;
    let entries = match pack::parse_pack(reader.crypto(), &bytes) {
        Ok(e) => e,
        Err(reason) => return Err((reason, indexed())),
    };
    let mut bad = Vec::new();
    for e in &entries {
        let start = e.offset as usize;
        let stored = &bytes[start..start + e.stored_len as usize];
        if blob::open(reader.crypto(), &e.id, e.compression, e.raw_len, stored).is_err() {
            bad.push(e.id);
        }
    }
    let hash_ok = blake3::hash(&bytes).as_bytes() == &id.0;
    match (hash_ok, bad.is_empty()) {
        (true, true) => Ok(()),
        (_, false) => Err((format!("{} blob(s) fail their hash check", bad.len()), bad)),
        (false, true) => Err((
            "pack bytes do not match the pack id (no blob is affected)".into(),
            Vec::new(),
        )),
    }
}

struct Tracer<'a> {
    reader: &'a BlobReader,
    bad_blobs: &'a HashMap<BlobId, PackId>,
    /// Trees known to reference nothing damaged: not walked again.
    clean_trees: HashSet<BlobId>,
    seen_blobs: HashSet<BlobId>,
    trees: usize,
    /// Per damaged pack: (snapshot, path) pairs it breaks.
    hits: BTreeMap<PackId, Vec<(String, String)>>,
    problems: Vec<String>,
}

impl Tracer<'_> {
    /// Checks one blob reference; returns false when it is missing or damaged.
    fn blob_ok(&mut self, id: &BlobId, snap: &str, path: &str) -> bool {
        self.seen_blobs.insert(*id);
        if let Some(pack) = self.bad_blobs.get(id) {
            self.hits
                .entry(*pack)
                .or_default()
                .push((snap.to_string(), path.to_string()));
            return false;
        }
        if self.reader.location(id).is_none() {
            self.problems.push(format!(
                "snapshot {snap}: {path}: blob {id} is not in any pack"
            ));
            return false;
        }
        true
    }

    /// Walks a tree; returns true when everything under it is intact.
    fn tree(&mut self, id: &BlobId, snap: &str, path: &str) -> bool {
        if self.clean_trees.contains(id) {
            return true;
        }
        let shown = if path.is_empty() {
            "/".to_string()
        } else {
            path.to_string()
        };
        if !self.blob_ok(id, snap, &shown) {
            return false;
        }
        self.trees += 1;
        let tree: Tree = match self.reader.tree(id) {
            Ok(t) => t,
            Err(e) => {
                self.problems
                    .push(format!("snapshot {snap}: {shown}: {}", e.full()));
                return false;
            }
        };
        let mut clean = true;
        if let Some(w) = tree.entries.windows(2).find(|w| w[0].name >= w[1].name) {
            self.problems.push(format!(
                "snapshot {snap}: {shown}: tree has a duplicate or unsorted name {:?}",
                display_name(&w[1].name)
            ));
            clean = false;
        }
        for e in &tree.entries {
            let child = format!("{path}/{}", display_name(&e.name));
            let child = child.trim_start_matches('/').to_string();
            if let Err(err) = check_name(&e.name) {
                self.problems
                    .push(format!("snapshot {snap}: {shown}: {err}"));
                clean = false;
            }
            match &e.node {
                Node::Dir { subtree } => clean &= self.tree(subtree, snap, &child),
                Node::File { chunks } => {
                    let mut ok = true;
                    for c in chunks {
                        // Report each broken file once, on its first bad chunk.
                        if ok && !self.blob_ok(c, snap, &child) {
                            ok = false;
                        } else {
                            self.seen_blobs.insert(*c);
                        }
                    }
                    clean &= ok;
                }
                Node::Symlink { .. } => {}
            }
        }
        if clean {
            self.clean_trees.insert(*id);
        }
        clean
    }
}
