//! `vault verify`: proves the vault is intact, or names exactly what is not.
//!
//! Structure (always): every manifest parses and matches its sha256 and its name; every tree and
//! chunk a snapshot references is in the index, in a pack that exists with the recorded size; every
//! tree decodes. Data (`--read-data`, or a sampled share of packs): each pack is read whole, its
//! blake3 must equal its name, its trailer must parse, and every blob must decompress and hash to
//! its id. Damage is then traced back through the snapshots' trees to the file paths it breaks.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use serde::Serialize;

use crate::blob::{self, BlobKind};
use crate::error::{Error, Result};
use crate::id::{BlobId, IdSet, PackId, SnapshotId};
use crate::manifest::Manifest;
use crate::pack::{self, PackEntry};
use crate::progress::Progress;
use crate::tree::{check_name, Node, Tree};
use crate::util::display_name;
use crate::vault::{BlobReader, Vault};

/// Paths listed per damaged pack before the report says "and N more".
const PATHS_SHOWN_MAX: usize = 50;

/// Deepest directory nesting walked: restore cannot create paths beyond PATH_MAX (4,096 bytes,
/// so about 2,048 levels) anyway, and the walk recurses.
const TREE_DEPTH_MAX: usize = 2048;

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
    // Every index row must lie inside its pack as recorded; --read-data also matches the rows
    // against the trailers (through a digest per pack, 16 bytes whatever the vault's size). A row
    // that lies sends readers to the wrong bytes.
    let mut rows: HashMap<PackId, RowDigest> = HashMap::new();
    let mut outside: BTreeMap<PackId, usize> = BTreeMap::new();
    vault.index().for_each_row(|pack, e| {
        rows.entry(pack).or_default().add(&e);
        let size = indexed.get(&pack).copied().unwrap_or(0);
        if e.offset
            .checked_add(u64::from(e.stored_len))
            .is_none_or(|end| end > size)
        {
            *outside.entry(pack).or_default() += 1;
        }
    })?;
    for (pack, n) in outside {
        let size = indexed.get(&pack).copied().unwrap_or(0);
        damaged.insert(
            pack,
            format!("{n} index row(s) point past the pack's {size} bytes (run `vault reindex`)"),
        );
    }
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

    // Data. The trees are walked meanwhile on another thread, as if nothing were damaged: the
    // common outcome. Only when the data turns out damaged are they walked again, to trace the
    // damage to paths (the trees are cached by then).
    let no_damage = HashMap::new();
    let mut bad_blobs: HashMap<BlobId, PackId> = HashMap::new();
    let mut optimistic = None;
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
        let results = std::thread::scope(|s| {
            let tracing = s.spawn(|| trace(&reader, &manifests, &no_damage));
            let results = read_packs(&reader, &ids, &on_disk, &rows, opts.threads, progress);
            optimistic = Some(
                tracing
                    .join()
                    .expect("invariant: the tracer does not panic"),
            );
            results
        });
        report.packs_read = ids.len();
        report.bytes_read = total;
        let mut mismatched: HashMap<PackId, HashSet<PackEntry>> = HashMap::new();
        for (id, outcome) in results {
            if let Err((reason, blobs)) = outcome {
                if reason == ROWS_MISMATCH {
                    // Which rows lie: the trailer again, and one more pass over the index,
                    // only for the packs whose digests disagreed.
                    mismatched.insert(
                        id,
                        vault.read_trailer(&id, on_disk[&id])?.into_iter().collect(),
                    );
                }
                damaged.insert(id, reason);
                for b in blobs {
                    bad_blobs.insert(b, id);
                }
            }
        }
        if !mismatched.is_empty() {
            vault.index().for_each_row(|pack, e| {
                if mismatched.get(&pack).is_some_and(|t| !t.contains(&e)) {
                    bad_blobs.insert(e.id, pack);
                }
            })?;
        }
    }
    // Every blob the index places in a damaged pack without a finer verdict is presumed lost.
    let whole_pack_lost: HashSet<PackId> = damaged
        .keys()
        .copied()
        .filter(|p| !bad_blobs.values().any(|q| q == p))
        .collect();
    for loc in reader.locations().iter() {
        if whole_pack_lost.contains(&loc.pack) {
            bad_blobs.insert(loc.entry.id, loc.pack);
        }
    }

    // Walk every snapshot's trees, tracing damage to paths.
    let tracer = match optimistic.filter(|_| bad_blobs.is_empty()) {
        Some(t) => t,
        None => trace(&reader, &manifests, &bad_blobs),
    };
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

/// Why a pack failed, and the blobs it takes with it.
type PackFailure = (String, Vec<BlobId>);
type PackOutcome = std::result::Result<(), PackFailure>;

/// The reason given for a pack whose index rows disagree with its trailer.
const ROWS_MISMATCH: &str = "the index rows do not match the pack's trailer (run `vault reindex`)";

/// Raw bytes of blobs checked per work item: small enough that two threads share the last pack.
const BATCH_RAW_BYTES: u64 = 8 << 20;

/// One pack being checked: read and parsed by one thread, its blobs checked by any.
struct PackWork {
    id: PackId,
    bytes: Vec<u8>,
    entries: Vec<PackEntry>,
    hash_ok: AtomicBool,
    bad: Mutex<Vec<BlobId>>,
    /// Work items not yet done; whoever finishes the last one records the outcome.
    left: AtomicUsize,
}

enum Item {
    Hash(Arc<PackWork>),
    Blobs(Arc<PackWork>, Range<usize>),
}

#[derive(Default)]
struct Queue {
    next_pack: usize,
    /// Packs read but with items still running: at most `in_flight_max`, which bounds memory.
    in_flight: usize,
    items: VecDeque<Item>,
}

/// Checks every pack in `ids` on `threads` threads. A thread takes a queued item first, else
/// reads the next pack (when fewer than half as many packs as threads are in memory) and queues
/// its items: the
/// pack hash and batches of [`BATCH_RAW_BYTES`] of blobs, so no thread idles on the last pack.
fn read_packs(
    reader: &BlobReader,
    ids: &[PackId],
    sizes: &HashMap<PackId, u64>,
    rows: &HashMap<PackId, RowDigest>,
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
    // Packs in memory at once: half the threads (one on two cores), since every thread works on
    // any pack's items; a pack is up to 32 MiB, so this is most of verify's memory.
    let in_flight_max = threads.div_ceil(2);
    let queue = Mutex::new(Queue::default());
    let wake = Condvar::new();
    let out = Mutex::new(Vec::with_capacity(ids.len()));
    let finish = |work: &PackWork| {
        let outcome = pack_outcome(work, rows.get(&work.id));
        progress.inc(sizes.get(&work.id).copied().unwrap_or(0));
        out.lock()
            .expect("invariant: result lock")
            .push((work.id, outcome));
        queue.lock().expect("invariant: queue lock").in_flight -= 1;
        wake.notify_all();
    };
    let done_one = |work: &Arc<PackWork>| {
        if work.left.fetch_sub(1, Ordering::AcqRel) == 1 {
            finish(work);
        }
    };
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                enum Next {
                    Item(Item),
                    Pack(PackId),
                }
                let next = {
                    let mut q = queue.lock().expect("invariant: queue lock");
                    loop {
                        if let Some(item) = q.items.pop_front() {
                            break Some(Next::Item(item));
                        }
                        if q.next_pack < ids.len() && q.in_flight < in_flight_max {
                            q.next_pack += 1;
                            q.in_flight += 1;
                            break Some(Next::Pack(ids[q.next_pack - 1]));
                        }
                        if q.next_pack >= ids.len() && q.in_flight == 0 {
                            break None;
                        }
                        q = wake.wait(q).expect("invariant: queue lock");
                    }
                };
                match next {
                    None => break,
                    Some(Next::Item(Item::Hash(work))) => {
                        let ok = blake3::hash(&work.bytes).as_bytes() == &work.id.0;
                        work.hash_ok.store(ok, Ordering::Release);
                        done_one(&work);
                    }
                    Some(Next::Item(Item::Blobs(work, range))) => {
                        let bad = check_blobs(reader, &work.bytes, &work.entries[range]);
                        if !bad.is_empty() {
                            work.bad.lock().expect("invariant: bad lock").extend(bad);
                        }
                        done_one(&work);
                    }
                    Some(Next::Pack(id)) => match open_pack(reader, &id) {
                        Err(failed) => {
                            progress.inc(sizes.get(&id).copied().unwrap_or(0));
                            out.lock()
                                .expect("invariant: result lock")
                                .push((id, Err(failed)));
                            queue.lock().expect("invariant: queue lock").in_flight -= 1;
                            wake.notify_all();
                        }
                        Ok((bytes, entries)) => {
                            let batches = batches(&entries);
                            let work = Arc::new(PackWork {
                                id,
                                bytes,
                                entries,
                                hash_ok: AtomicBool::new(false),
                                bad: Mutex::new(Vec::new()),
                                left: AtomicUsize::new(batches.len() + 1),
                            });
                            let mut q = queue.lock().expect("invariant: queue lock");
                            q.items.push_back(Item::Hash(work.clone()));
                            for b in batches {
                                q.items.push_back(Item::Blobs(work.clone(), b));
                            }
                            drop(q);
                            wake.notify_all();
                        }
                    },
                }
            });
        }
    });
    out.into_inner().expect("invariant: result lock")
}

/// Splits a pack's entries into runs of about [`BATCH_RAW_BYTES`] of plaintext.
fn batches(entries: &[PackEntry]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut raw) = (0, 0u64);
    for (i, e) in entries.iter().enumerate() {
        raw += u64::from(e.raw_len);
        if raw >= BATCH_RAW_BYTES {
            out.push(start..i + 1);
            (start, raw) = (i + 1, 0);
        }
    }
    if start < entries.len() {
        out.push(start..entries.len());
    }
    out
}

/// Reads a pack whole and parses its trailer.
fn open_pack(
    reader: &BlobReader,
    id: &PackId,
) -> std::result::Result<(Vec<u8>, Vec<PackEntry>), PackFailure> {
    // Only on failure: which blobs the index places in this pack.
    let indexed = || -> Vec<BlobId> {
        reader
            .locations()
            .iter()
            .filter(|l| l.pack == *id)
            .map(|l| l.entry.id)
            .collect()
    };
    let bytes = reader
        .read_pack(id)
        .map_err(|e| (format!("cannot read: {}", e.full()), indexed()))?;
    match pack::parse_pack(reader.crypto(), &bytes) {
        Ok(entries) => Ok((bytes, entries)),
        Err(reason) => Err((reason, indexed())),
    }
}

/// The blobs among `entries` that do not open to their ids. A data blob larger than any chunk is
/// refused unopened, as readers refuse it ([`blob::MAX_DATA_BLOB_RAW_BYTES`]).
fn check_blobs(reader: &BlobReader, bytes: &[u8], entries: &[PackEntry]) -> Vec<BlobId> {
    let mut bad = Vec::new();
    for e in entries {
        let start = e.offset as usize;
        let stored = &bytes[start..start + e.stored_len as usize];
        let too_big = e.kind == BlobKind::Data && e.raw_len > blob::MAX_DATA_BLOB_RAW_BYTES;
        if too_big || blob::open(reader.crypto(), &e.id, e.compression, e.raw_len, stored).is_err()
        {
            bad.push(e.id);
        }
    }
    bad
}

/// An order-free digest of a pack's index rows: their count and the wrapping sum of a hash of
/// each. The index holds exactly a trailer's entries (one row per blob id, the first), so the
/// digests of the rows and of the trailer agree unless a row lies.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct RowDigest {
    count: u64,
    sum: u64,
}

impl RowDigest {
    fn add(&mut self, e: &PackEntry) {
        let mut h = blake3::Hasher::new();
        h.update(&e.id.0);
        h.update(&[e.kind as u8, e.compression as u8]);
        h.update(&e.offset.to_le_bytes());
        h.update(&e.stored_len.to_le_bytes());
        h.update(&e.raw_len.to_le_bytes());
        let word = u64::from_le_bytes(h.finalize().as_bytes()[..8].try_into().expect("8 bytes"));
        self.count += 1;
        self.sum = self.sum.wrapping_add(word);
    }

    /// The digest the index would hold for this trailer.
    fn of_trailer(entries: &[PackEntry]) -> Self {
        let mut seen = HashSet::new();
        let mut d = RowDigest::default();
        for e in entries.iter().filter(|e| seen.insert(e.id)) {
            d.add(e);
        }
        d
    }
}

/// The verdict on a pack whose items are all done. The index's rows for this pack, when it has
/// any (a pack a concurrent writer has not indexed yet has none), must be the entries of its
/// trailer: a row that is not would send readers to the wrong bytes.
fn pack_outcome(work: &PackWork, rows: Option<&RowDigest>) -> PackOutcome {
    let bad = std::mem::take(&mut *work.bad.lock().expect("invariant: bad lock"));
    if rows.is_some_and(|r| *r != RowDigest::of_trailer(&work.entries)) {
        return Err((ROWS_MISMATCH.into(), bad));
    }
    match (work.hash_ok.load(Ordering::Acquire), bad.is_empty()) {
        (true, true) => Ok(()),
        (_, false) => Err((format!("{} blob(s) fail their hash check", bad.len()), bad)),
        (false, true) => Err((
            "pack bytes do not match the pack id (no blob is affected)".into(),
            Vec::new(),
        )),
    }
}

/// Walks every snapshot's trees, checking each reference and tracing `bad_blobs` to paths.
fn trace<'a>(
    reader: &'a BlobReader,
    manifests: &[(SnapshotId, Manifest)],
    bad_blobs: &'a HashMap<BlobId, PackId>,
) -> Tracer<'a> {
    let mut tracer = Tracer {
        reader,
        bad_blobs,
        clean_trees: HashSet::new(),
        seen_blobs: IdSet::default(),
        trees: 0,
        hits: BTreeMap::new(),
        problems: Vec::new(),
    };
    for (id, m) in manifests {
        tracer.tree(&m.tree, &id.short(), "", 0);
    }
    tracer
}

struct Tracer<'a> {
    reader: &'a BlobReader,
    bad_blobs: &'a HashMap<BlobId, PackId>,
    /// Trees known to reference nothing damaged: not walked again.
    clean_trees: HashSet<BlobId>,
    seen_blobs: IdSet,
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

    /// Walks a tree `depth` levels down; returns true when everything under it is intact.
    fn tree(&mut self, id: &BlobId, snap: &str, path: &str, depth: usize) -> bool {
        if self.clean_trees.contains(id) {
            return true;
        }
        let shown = if path.is_empty() {
            "/".to_string()
        } else {
            path.to_string()
        };
        if depth > TREE_DEPTH_MAX {
            self.problems.push(format!(
                "snapshot {snap}: {shown}: directories nested deeper than {TREE_DEPTH_MAX} levels"
            ));
            return false;
        }
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
                Node::Dir { subtree } => clean &= self.tree(subtree, snap, &child, depth + 1),
                Node::File { chunks } => {
                    let mut ok = true;
                    let mut held = 0u64;
                    for c in chunks {
                        // Report each broken file once, on its first bad chunk.
                        if ok && !self.blob_ok(c, snap, &child) {
                            ok = false;
                        } else {
                            self.seen_blobs.insert(*c);
                        }
                        held += self
                            .reader
                            .location(c)
                            .map_or(0, |l| u64::from(l.entry.raw_len));
                    }
                    if ok && held != e.size {
                        self.problems.push(format!(
                            "snapshot {snap}: {child}: the file is recorded as {} bytes but its \
                             chunks hold {held}",
                            e.size
                        ));
                        ok = false;
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
