//! `vault verify`: proves the vault is intact, or names exactly what is not.
//!
//! Structure (always): every manifest parses and matches its sha256 and its name; every tree and
//! chunk a snapshot references is in the index, in a pack that exists with the recorded size; every
//! tree decodes. Data (`--read-data`, or a sampled share of packs): each pack's trailer must
//! parse, every blob must decompress and hash to its id, and the pack, read from start to end in
//! parts of about 8 MiB and hashed on the way, must hash to its name. Damage is then traced back
//! through the snapshots' trees to the file paths it breaks.

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
use crate::tree::{check_name, Node, StoredNode, Tree};
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
    // Damaged packs whose every blob was read and found whole.
    let mut blobs_intact: HashSet<PackId> = HashSet::new();
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
                if reason == NO_BLOB_AFFECTED {
                    blobs_intact.insert(id);
                }
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
        .filter(|p| !blobs_intact.contains(p) && !bad_blobs.values().any(|q| q == p))
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

/// The reason given for a pack whose blobs all check out but whose bytes do not hash to its id:
/// damage outside every blob (its header, or bytes between blobs).
const NO_BLOB_AFFECTED: &str = "pack bytes do not match the pack id (no blob is affected)";

/// Raw bytes of blobs checked per work item: small enough that two threads share a pack.
const BATCH_RAW_BYTES: u64 = 8 << 20;

/// Stored bytes brought in by one read of a pack: one or more whole batches (a single batch may
/// be larger). Remote reads are range requests, so they bring in more at once.
const SEGMENT_BYTES_LOCAL: u64 = 8 << 20;
const SEGMENT_BYTES_REMOTE: u64 = 16 << 20;

/// Bytes of segments held at once (read, with batches not yet checked): most of verify's memory.
/// The next segment is read only while this leaves room for it, or when nothing is held.
const SEGMENTS_HELD_MAX: u64 = 24 << 20;

/// Bytes hashed per read where no blob lies (the header, gaps, the trailer and footer).
const GAP_READ_BYTES: u64 = 8 << 20;

/// One pack being checked: read from start to end by one thread at a time, hashed on the way,
/// its batches checked by any.
struct PackWork {
    id: PackId,
    /// The trailer's entries in the trailer's order (the row digest takes the first of each id).
    entries: Vec<PackEntry>,
    hash_ok: AtomicBool,
    /// Why the pack could not be read to its end.
    failed: Mutex<Option<String>>,
    bad: Mutex<Vec<BlobId>>,
    /// Batches not yet checked, plus one for the hash; whoever finishes the last records the
    /// outcome.
    left: AtomicUsize,
}

/// Bytes of one pack read at once, shared by the batches whose blobs lie in them.
struct Segment {
    work: Arc<PackWork>,
    /// The pack offset of `bytes[0]`.
    base: u64,
    bytes: Vec<u8>,
    /// Batches not yet checked; the last one gives the segment's memory back.
    left: AtomicUsize,
}

/// Blobs to check: a run of a pack's entries in offset order.
struct Batch {
    segment: Arc<Segment>,
    entries: Vec<PackEntry>,
}

/// The pack being read. Its bytes are hashed in order as they arrive, and each read is compared
/// with what the trailer's reads saw, so the entries checked are those of the bytes hashed.
struct Stream {
    work: Arc<PackWork>,
    len: u64,
    /// Runs of entries in offset order with the bytes each needs; `next` is the first unread.
    batches: Vec<(Range<u64>, Vec<PackEntry>)>,
    next: usize,
    /// Bytes before `pos` are hashed.
    pos: u64,
    hasher: blake3::Hasher,
    /// The header, footer and trailer as first read: (offset, bytes).
    seen: Vec<(u64, Vec<u8>)>,
    /// Bytes of `seen` met again in the stream; `changed` when any differed.
    matched: usize,
    changed: bool,
}

impl Stream {
    /// Reads a pack's trailer (header, footer and trailer: three small reads).
    fn open(reader: &BlobReader, id: PackId, len: u64) -> std::result::Result<Self, String> {
        let seen = std::cell::RefCell::new(Vec::new());
        let entries = pack::read_trailer_with(reader.crypto(), len, "pack", |offset, n| {
            let bytes = reader.read_pack_range(&id, offset, n)?;
            seen.borrow_mut().push((offset, bytes.clone()));
            Ok(bytes)
        })
        .map_err(|e| match e {
            Error::Corrupt { reason, .. } => reason,
            e => format!("cannot read: {}", e.full()),
        })?;
        let mut sorted = entries.clone();
        sorted.sort_by_key(|e| e.offset);
        let batches = batches(&sorted)
            .into_iter()
            .map(|r| {
                let run = sorted[r].to_vec();
                let start = run[0].offset;
                let end = run
                    .iter()
                    .map(|e| e.offset + u64::from(e.stored_len))
                    .max()
                    .unwrap_or(start);
                (start..end, run)
            })
            .collect::<Vec<_>>();
        let work = Arc::new(PackWork {
            id,
            entries,
            hash_ok: AtomicBool::new(false),
            failed: Mutex::new(None),
            bad: Mutex::new(Vec::new()),
            left: AtomicUsize::new(batches.len() + 1),
        });
        Ok(Stream {
            work,
            len,
            batches,
            next: 0,
            pos: 0,
            hasher: blake3::Hasher::new(),
            seen: seen.into_inner(),
            matched: 0,
            changed: false,
        })
    }

    /// Batches not yet handed out, plus the hash: what a failed read leaves undone.
    fn undone(&self) -> usize {
        self.batches.len() - self.next + 1
    }

    /// Reads the next segment (batches whose bytes span at most `target`, at least one), hashing
    /// whatever lies before it, and hands out its batches' entries. After the last one, hashes
    /// the rest of the pack and records whether the pack's bytes match its id: then `done` is
    /// true. Nothing is handed out unless the whole step succeeds.
    #[allow(clippy::type_complexity)]
    fn step(
        &mut self,
        reader: &BlobReader,
        target: u64,
    ) -> std::result::Result<(Option<(Segment, Vec<Vec<PackEntry>>)>, bool), String> {
        let first = self.next;
        let mut last = first;
        let mut read = None;
        if let Some((r, _)) = self.batches.get(first) {
            let (start, mut end) = (r.start, r.end);
            last += 1;
            while let Some((r, _)) = self.batches.get(last) {
                let grown = end.max(r.end);
                if grown - start > target {
                    break;
                }
                (end, last) = (grown, last + 1);
            }
            self.hash_through(reader, start)?;
            let (start, end) = (start.min(self.pos), end.max(self.pos));
            let bytes = self.read(reader, start, end - start)?;
            self.absorb(start, &bytes);
            read = Some((start, bytes));
        }
        let done = last == self.batches.len();
        if done {
            self.hash_through(reader, self.len)?;
            let seen: usize = self.seen.iter().map(|(_, b)| b.len()).sum();
            if self.changed || self.matched != seen {
                return Err("the pack changed while it was read".into());
            }
            let ok = self.hasher.finalize().as_bytes() == &self.work.id.0;
            self.work.hash_ok.store(ok, Ordering::Release);
        }
        self.next = last;
        let segment = read.map(|(base, bytes)| {
            let runs: Vec<Vec<PackEntry>> = self.batches[first..last]
                .iter_mut()
                .map(|(_, run)| std::mem::take(run))
                .collect();
            let segment = Segment {
                work: self.work.clone(),
                base,
                bytes,
                left: AtomicUsize::new(runs.len()),
            };
            (segment, runs)
        });
        Ok((segment, done))
    }

    fn read(
        &self,
        reader: &BlobReader,
        offset: u64,
        n: u64,
    ) -> std::result::Result<Vec<u8>, String> {
        reader
            .read_pack_range(&self.work.id, offset, n as usize)
            .map_err(|e| format!("cannot read: {}", e.full()))
    }

    /// Hashes the bytes up to `end`, in reads of at most [`GAP_READ_BYTES`].
    fn hash_through(&mut self, reader: &BlobReader, end: u64) -> std::result::Result<(), String> {
        while self.pos < end {
            let n = (end - self.pos).min(GAP_READ_BYTES);
            let bytes = self.read(reader, self.pos, n)?;
            self.absorb(self.pos, &bytes);
        }
        Ok(())
    }

    /// Hashes the part of `bytes` (read from `start`) beyond `pos`, and compares it with the
    /// trailer's reads where they overlap.
    fn absorb(&mut self, start: u64, bytes: &[u8]) {
        let skip = (self.pos - start) as usize;
        let Some(new) = bytes.get(skip..).filter(|b| !b.is_empty()) else {
            return;
        };
        self.hasher.update(new);
        let (at, end) = (self.pos, self.pos + new.len() as u64);
        for (offset, old) in &self.seen {
            let from = at.max(*offset);
            let to = end.min(offset + old.len() as u64);
            if from < to {
                let a = &new[(from - at) as usize..(to - at) as usize];
                let b = &old[(from - offset) as usize..(to - offset) as usize];
                self.changed |= a != b;
                self.matched += a.len();
            }
        }
        self.pos = end;
    }
}

/// What a thread does next.
enum Job {
    Open(PackId),
    Read(Box<Stream>),
    Check(Batch),
}

#[derive(Default)]
struct Queue {
    next_pack: usize,
    /// The pack being read, unless a thread holds it to read it.
    stream: Option<Box<Stream>>,
    reading: bool,
    /// Bytes of segments in memory.
    held: u64,
    batches: VecDeque<Batch>,
    finished: usize,
}

/// Checks every pack in `ids` on `threads` threads. The packs are read one after the other, in
/// segments, by whichever thread is free while less than [`SEGMENTS_HELD_MAX`] is held, and
/// hashed as they are read; the blobs are checked in batches of [`BATCH_RAW_BYTES`] by any
/// thread. So the next pack is read while the last one's blobs are checked, and no thread idles
/// on a read or on the last batch of a pack.
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
    let target = if reader.is_remote() {
        SEGMENT_BYTES_REMOTE
    } else {
        SEGMENT_BYTES_LOCAL
    };
    let queue = Mutex::new(Queue::default());
    let wake = Condvar::new();
    let out = Mutex::new(Vec::with_capacity(ids.len()));
    let size = |id: &PackId| sizes.get(id).copied().unwrap_or(0);
    let record = |id: PackId, outcome: PackOutcome| {
        progress.inc(size(&id));
        out.lock()
            .expect("invariant: result lock")
            .push((id, outcome));
        queue.lock().expect("invariant: queue lock").finished += 1;
        wake.notify_all();
    };
    // Only on failure: which blobs the index places in this pack.
    let indexed = |id: &PackId| -> Vec<BlobId> {
        reader
            .locations()
            .iter()
            .filter(|l| l.pack == *id)
            .map(|l| l.entry.id)
            .collect()
    };
    let done = |work: &PackWork, n: usize| {
        if work.left.fetch_sub(n, Ordering::AcqRel) == n {
            let failed = work.failed.lock().expect("invariant: failed lock").take();
            let outcome = match failed {
                Some(reason) => Err((reason, indexed(&work.id))),
                None => pack_outcome(work, rows.get(&work.id)),
            };
            record(work.id, outcome);
        }
    };
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let job = {
                    let mut q = queue.lock().expect("invariant: queue lock");
                    loop {
                        let more = q.stream.is_some() || q.next_pack < ids.len();
                        if !q.reading
                            && more
                            && (q.held == 0 || q.held + target <= SEGMENTS_HELD_MAX)
                        {
                            q.reading = true;
                            break Some(match q.stream.take() {
                                Some(s) => Job::Read(s),
                                None => {
                                    q.next_pack += 1;
                                    Job::Open(ids[q.next_pack - 1])
                                }
                            });
                        }
                        if let Some(b) = q.batches.pop_front() {
                            break Some(Job::Check(b));
                        }
                        if q.finished == ids.len() {
                            break None;
                        }
                        q = wake.wait(q).expect("invariant: queue lock");
                    }
                };
                match job {
                    None => break,
                    Some(Job::Open(id)) => match Stream::open(reader, id, size(&id)) {
                        Ok(stream) => {
                            let mut q = queue.lock().expect("invariant: queue lock");
                            (q.stream, q.reading) = (Some(Box::new(stream)), false);
                            drop(q);
                            wake.notify_all();
                        }
                        Err(reason) => {
                            queue.lock().expect("invariant: queue lock").reading = false;
                            record(id, Err((reason, indexed(&id))));
                        }
                    },
                    Some(Job::Read(mut stream)) => match stream.step(reader, target) {
                        Ok((segment, finished)) => {
                            let work = stream.work.clone();
                            let mut q = queue.lock().expect("invariant: queue lock");
                            if let Some((segment, runs)) = segment {
                                q.held += segment.bytes.len() as u64;
                                let segment = Arc::new(segment);
                                for entries in runs {
                                    q.batches.push_back(Batch {
                                        segment: segment.clone(),
                                        entries,
                                    });
                                }
                            }
                            q.reading = false;
                            if !finished {
                                q.stream = Some(stream);
                            }
                            drop(q);
                            wake.notify_all();
                            if finished {
                                done(&work, 1);
                            }
                        }
                        Err(reason) => {
                            let work = stream.work.clone();
                            *work.failed.lock().expect("invariant: failed lock") = Some(reason);
                            queue.lock().expect("invariant: queue lock").reading = false;
                            wake.notify_all();
                            done(&work, stream.undone());
                        }
                    },
                    Some(Job::Check(batch)) => {
                        let segment = &batch.segment;
                        let bad = check_blobs(reader, &segment.bytes, segment.base, &batch.entries);
                        if !bad.is_empty() {
                            let mut all = segment.work.bad.lock().expect("invariant: bad lock");
                            all.extend(bad);
                        }
                        if segment.left.fetch_sub(1, Ordering::AcqRel) == 1 {
                            queue.lock().expect("invariant: queue lock").held -=
                                segment.bytes.len() as u64;
                            wake.notify_all();
                        }
                        done(&segment.work, 1);
                    }
                }
            });
        }
    });
    out.into_inner().expect("invariant: result lock")
}

/// Splits entries (in offset order) into runs of about [`BATCH_RAW_BYTES`] of plaintext, or of
/// stored bytes where those are more.
fn batches(entries: &[PackEntry]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0u64);
    for (i, e) in entries.iter().enumerate() {
        bytes += u64::from(e.raw_len.max(e.stored_len));
        if bytes >= BATCH_RAW_BYTES {
            out.push(start..i + 1);
            (start, bytes) = (i + 1, 0);
        }
    }
    if start < entries.len() {
        out.push(start..entries.len());
    }
    out
}

/// The blobs among `entries` that do not open to their ids; `bytes` hold the pack from `base`. A data blob larger than any chunk is
/// refused unopened, as readers refuse it ([`blob::MAX_DATA_BLOB_RAW_BYTES`]).
fn check_blobs(reader: &BlobReader, bytes: &[u8], base: u64, entries: &[PackEntry]) -> Vec<BlobId> {
    let mut bad = Vec::new();
    for e in entries {
        let start = (e.offset - base) as usize;
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
        (false, true) => Err((NO_BLOB_AFFECTED.into(), Vec::new())),
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

    /// Tree `id` (at `path`) with its files' chunk lists resolved, and the names of the files
    /// whose list blob is missing or damaged. Each of those is charged to its list blob (to the
    /// damaged pack that holds it, or as a problem) and left out, so that the rest of the
    /// directory is still walked and its own damage traced.
    fn resolve(&mut self, id: &BlobId, snap: &str, path: &str) -> Result<(Tree, HashSet<Vec<u8>>)> {
        let mut stored = self.reader.stored_tree(id)?;
        let mut lost = HashSet::new();
        for e in &mut stored.entries {
            if let StoredNode::Listed(list) = &e.node {
                let file = format!("{path}/{}", display_name(&e.name));
                if !self.blob_ok(list.blob(), snap, file.trim_start_matches('/')) {
                    lost.insert(e.name.clone());
                    e.node = StoredNode::File { chunks: Vec::new() };
                }
            }
        }
        let (tree, _) = self.reader.resolve_tree(id, stored)?;
        Ok((tree, lost))
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
        let (tree, lost) = match self.resolve(id, snap, path) {
            Ok(t) => t,
            Err(e) => {
                self.problems
                    .push(format!("snapshot {snap}: {shown}: {}", e.full()));
                return false;
            }
        };
        let mut clean = lost.is_empty();
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
                // Charged to its list blob's pack already.
                Node::File { .. } if lost.contains(&e.name) => {}
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
