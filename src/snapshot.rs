//! Taking a snapshot: walk, chunk, hash, deduplicate, compress, pack, and write the manifest.
//!
//! ```text
//! main thread: walk (ignore rules) ─► file jobs ─► [workers: read + FastCDC + blake3 + dedup]
//!                 │                                      │ new chunks
//!                 └─ tree blobs (bottom-up) ─────────────┴─► [compressors: zstd + verify] ─► [writer: packs + index]
//! ```
//! Every channel is bounded, so memory is a few buffers per thread whatever the input. The main
//! thread walks the tree in sorted depth-first order and keeps only the directories on the current
//! path open; a directory's tree blob is built once its files are done. Files whose size, mtime,
//! ctime and inode match the parent snapshot reuse the parent's chunk list without being read.
//!
//! Deduplication consults one in-memory set of blob ids: the index's ids, loaded in one query,
//! plus every id claimed during this run. Whoever inserts an id first writes that blob, so the
//! same chunk met twice (in two files at once) is stored once. The manifest is written only after
//! the writer has fsynced and indexed every pack.
//!
//! Files matching a `template_only` glob never reach a worker: the walker reads them itself,
//! renders the template (secrets replaced by placeholders, see [`crate::template`]) and stores
//! only that. One that cannot be templated is not stored at all and is listed in the manifest.

use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crossbeam_channel::{bounded, Receiver, Sender};

use crate::audit::AuditRecord;
use crate::blob::{self, BlobKind, SealedBlob};
use crate::chunk::Chunker;
use crate::config::{Chunking, CompressionConfig};
use crate::crypto::Crypto;
use crate::error::{Error, Result};
use crate::id::{BlobId, IdSet, SnapshotId};
use crate::index::{Index, LocationMap};
use crate::manifest::{Manifest, SourcePath, Stats, TemplateReport, MANIFEST_FORMAT};
use crate::pack::PackWriter;
use crate::progress::Progress;
use crate::scan::{estimate_total, Root, Scan, Scanned};
use crate::sparse::SparseReader;
use crate::stream::{self, StreamSource};
use crate::template::{self, TemplatePolicy, DEFAULT_TEMPLATE_ONLY_GLOBS, TEMPLATE_MAX_BYTES};
use crate::tree::{self, Entry, ListRef, Lists, Node, Tree, LIST_MIN_CHUNKS};
use crate::vault::{BlobReader, Vault};

/// File jobs queued ahead of the workers.
const JOB_QUEUE: usize = 256;
/// Raw chunks queued for compression, per compressor thread.
const COMPRESS_QUEUE_PER_THREAD: usize = 2;
/// Sealed blobs queued for the pack writer.
const WRITE_QUEUE: usize = 4;

/// What to snapshot and how.
#[derive(Debug, Clone, Default)]
pub struct SnapshotOptions {
    pub paths: Vec<PathBuf>,
    /// Extra gitignore-style globs to leave out.
    pub excludes: Vec<String>,
    /// Do not use a parent snapshot for change detection.
    pub no_parent: bool,
    /// Worker threads per stage; 0 means one per core.
    pub threads: usize,
    /// `template_only` globs in addition to the defaults (see [`crate::template`]).
    pub template_only: Vec<String>,
    /// Mark the snapshot as a safety snapshot (taken before a restore overwrites a target).
    pub safety: bool,
    /// Named sources (from `vault.toml`), snapshotted as root entries of those names, instead of
    /// `paths`.
    pub sources: Vec<NamedSource>,
    /// Dump streams, each stored as `NAME/FILE` (see [`crate::stream`]).
    pub streams: Vec<StreamSource>,
}

/// A tree source of the config file: its root entry is `name`, not the path's last component.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamedSource {
    pub name: String,
    pub path: PathBuf,
    /// gitignore-style globs left out of this source only.
    pub excludes: Vec<String>,
}

/// The result of a snapshot run.
#[derive(Debug)]
pub struct SnapshotOutcome {
    pub id: SnapshotId,
    pub manifest: Manifest,
}

/// Blob ids known to the vault (its location map, shared with the reader) or claimed by this
/// run (a set of the new ones only).
struct Known {
    vault: Arc<LocationMap>,
    new: Mutex<IdSet>,
}

impl Known {
    /// True when the caller is the first to see `id` and must store it.
    fn claim(&self, id: BlobId) -> bool {
        !self.vault.contains(&id)
            && self
                .new
                .lock()
                .expect("invariant: known-set lock is not poisoned")
                .insert(id)
    }

    fn contains(&self, id: &BlobId) -> bool {
        self.contains_all(std::slice::from_ref(id))
    }

    fn contains_all(&self, ids: &[BlobId]) -> bool {
        let new = self
            .new
            .lock()
            .expect("invariant: known-set lock is not poisoned");
        ids.iter()
            .all(|id| self.vault.contains(id) || new.contains(id))
    }
}

#[derive(Default)]
struct Counters {
    bytes_read: AtomicU64,
    bytes_new: AtomicU64,
    bytes_stored: AtomicU64,
    blobs_new: AtomicU64,
}

struct RawBlob {
    id: BlobId,
    kind: BlobKind,
    data: Vec<u8>,
}

/// A thread stopped: `None` when only because the stage after it went away.
type Stop = Option<Error>;

struct FileJob {
    path: PathBuf,
    reply: Sender<FileResult>,
}

enum FileResult {
    Done(FileRead),
    /// The file could not be read; the snapshot goes on without it.
    Unreadable(String),
    /// The pipeline stopped.
    Aborted,
}

struct FileRead {
    chunks: Vec<BlobId>,
    size: u64,
    meta: Metadata,
    changed: bool,
}

/// Sends new blobs onward; shared by workers and the walker.
#[derive(Clone)]
struct BlobSink {
    crypto: Crypto,
    known: Arc<Known>,
    tx: Sender<RawBlob>,
    counters: Arc<Counters>,
}

impl BlobSink {
    /// Stores `data` under `id` unless the vault or this run already has it.
    fn put(&self, id: BlobId, kind: BlobKind, data: &[u8]) -> std::result::Result<(), Stop> {
        if self.known.claim(id) {
            self.counters
                .bytes_new
                .fetch_add(data.len() as u64, Ordering::Relaxed);
            self.counters.blobs_new.fetch_add(1, Ordering::Relaxed);
            self.tx
                .send(RawBlob {
                    id,
                    kind,
                    data: data.to_vec(),
                })
                .map_err(|_| None)?;
        }
        Ok(())
    }

    /// Ids, counts and stores one chunk of a file or stream, `zero` when it is all zero bytes
    /// ([`Chunker::run_marked`]): such a chunk as long as the last one in `zero_id` takes its id
    /// without hashing, so a sparse file's holes are hashed once. Returns the chunk's id.
    fn put_chunk(
        &self,
        zero_id: &mut Option<(usize, BlobId)>,
        data: &[u8],
        zero: bool,
    ) -> std::result::Result<BlobId, ReadStop> {
        let id = match *zero_id {
            Some((len, id)) if zero && len == data.len() => id,
            _ => {
                let id = self.crypto.blob_id(data);
                if zero {
                    *zero_id = Some((data.len(), id));
                }
                id
            }
        };
        self.counters
            .bytes_read
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        self.put(id, BlobKind::Data, data)
            .map_err(|_| ReadStop::Pipeline)?;
        Ok(id)
    }
}

/// Takes a snapshot of `opts.paths` into `vault`.
pub fn snapshot(
    vault: &mut Vault,
    opts: &SnapshotOptions,
    progress: &Progress,
) -> Result<SnapshotOutcome> {
    snapshot_scanned(vault, opts, None, progress)
}

/// [`snapshot`] with the file-system walk perhaps started ahead ([`Scan::start`], before the vault
/// was opened); a scan that does not serve `opts`, or is too old, is dropped and walked again.
pub fn snapshot_scanned(
    vault: &mut Vault,
    opts: &SnapshotOptions,
    scan: Option<Scan>,
    progress: &Progress,
) -> Result<SnapshotOutcome> {
    let started = Instant::now();
    let mut scan = match scan {
        Some(s) if s.serves(opts) => s,
        _ => Scan::start(opts, vault.root())?,
    };
    let roots = scan.roots.clone();
    let rules = scan.rules.clone();
    for st in &opts.streams {
        crate::tree::check_name(st.name.as_bytes())
            .and(crate::tree::check_name(st.file_name.as_bytes()))
            .map_err(|e| Error::Invalid(format!("stream source {}: {e}", st.name)))?;
        if roots.iter().any(|r| r.name == st.name.as_bytes()) {
            return Err(Error::Invalid(format!("source {} named twice", st.name)));
        }
    }
    let mut globs: Vec<String> = DEFAULT_TEMPLATE_ONLY_GLOBS
        .iter()
        .map(|g| g.to_string())
        .collect();
    for g in &opts.template_only {
        if !globs.contains(g) {
            globs.push(g.clone());
        }
    }
    let policy = TemplatePolicy::new(&globs)?;
    // Streams are listed as `KIND:WHAT` (see `StreamSource::describe`), so that a snapshot of the
    // same sources finds the last one as its parent.
    let sources: Vec<SourcePath> = roots
        .iter()
        .map(|r| SourcePath {
            path: r.path.to_string_lossy().into_owned(),
            name: crate::util::display_name(&r.name),
        })
        .chain(opts.streams.iter().map(|st| SourcePath {
            path: st.describe(),
            name: st.name.clone(),
        }))
        .collect();
    let path_strings: Vec<String> = sources.iter().map(|p| p.path.clone()).collect();
    // The parent is recorded even with --no-parent (the mass-change gate finds its baseline
    // through it); --no-parent only stops change detection from trusting it.
    let parent = find_parent(vault, &path_strings)?;
    let reader = vault.blob_reader()?;
    let parent_root = match &parent {
        Some((_, m)) if !opts.no_parent => reader.tree_lists(&m.tree).ok(),
        _ => None,
    };

    let threads = if opts.threads == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    } else {
        opts.threads
    };
    let known = Arc::new(Known {
        vault: reader.location_map(),
        new: Mutex::new(IdSet::default()),
    });
    let counters = Arc::new(Counters::default());
    let (job_tx, job_rx) = bounded::<FileJob>(JOB_QUEUE);
    let (raw_tx, raw_rx) = bounded::<RawBlob>(COMPRESS_QUEUE_PER_THREAD * threads);
    let (sealed_tx, sealed_rx) = bounded::<SealedBlob>(WRITE_QUEUE);
    let crypto = vault.crypto().clone();
    let sink = BlobSink {
        crypto: crypto.clone(),
        known: known.clone(),
        tx: raw_tx,
        counters: counters.clone(),
    };

    let params = vault.config.chunking();
    let compression = vault.config.compression.clone();
    let packs_dir = vault.packs_dir();
    let index_path = vault.root().join("index.sqlite");
    let target = vault.config.pack_target_size;

    let (walk_result, stops) = std::thread::scope(|s| {
        let writer = {
            let crypto = crypto.clone();
            s.spawn(move || write_packs(sealed_rx, &packs_dir, &index_path, target, &crypto))
        };
        let compressors: Vec<_> = (0..threads)
            .map(|_| {
                let rx = raw_rx.clone();
                let tx = sealed_tx.clone();
                let counters = counters.clone();
                let crypto = crypto.clone();
                let compression = compression.clone();
                s.spawn(move || compress_blobs(rx, tx, &compression, &counters, &crypto))
            })
            .collect();
        drop(raw_rx);
        drop(sealed_tx);
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let rx = job_rx.clone();
                let sink = sink.clone();
                let progress = progress.clone();
                let params = params.clone();
                s.spawn(move || read_files(rx, sink, params, &progress))
            })
            .collect();
        drop(job_rx);

        if progress.is_visible() {
            let roots = roots.clone();
            let rules = rules.clone();
            let progress = progress.clone();
            s.spawn(move || estimate_total(&roots, &rules, &progress));
        }

        let mut walker = Walker {
            scan: &mut scan,
            jobs: job_tx,
            sink,
            reader: &reader,
            policy: &policy,
            root: PathBuf::new(),
            templates: TemplateReport {
                globs: globs.clone(),
                ..Default::default()
            },
            stats: Stats::default(),
            warnings: Vec::new(),
            partial: false,
            params: params.clone(),
            streams: Vec::new(),
        };
        let result = walker.snapshot_roots(&roots, &opts.streams, parent_root.as_ref());
        let Walker {
            stats,
            warnings,
            partial,
            templates,
            streams,
            jobs,
            sink,
            ..
        } = walker;
        // Closing the senders lets each stage drain and stop.
        drop(jobs);
        drop(sink);
        let mut stops: Vec<Stop> = Vec::new();
        for w in workers {
            stops.push(
                w.join()
                    .expect("invariant: worker threads do not panic")
                    .err()
                    .flatten(),
            );
        }
        for c in compressors {
            stops.push(
                c.join()
                    .expect("invariant: compressor threads do not panic")
                    .err()
                    .flatten(),
            );
        }
        stops.push(
            writer
                .join()
                .expect("invariant: writer thread does not panic")
                .err()
                .flatten(),
        );
        (
            result.map(|tree| (tree, stats, warnings, partial, templates, streams)),
            stops,
        )
    });
    progress.finish();
    // The run's id set and the reader's location map are done with: the gates below load the map
    // again (with this run's packs), and two maps of a large vault need not coexist.
    drop(known);
    drop(reader);
    drop(parent_root);

    // A real error from a stage explains an aborted walk better than the walk's own error.
    if let Some(e) = stops.into_iter().flatten().next() {
        return Err(e);
    }
    let (tree, mut stats, warnings, partial, templates, streams) = match walk_result {
        Ok(v) => v,
        Err(None) => {
            return Err(Error::Invalid(
                "snapshot pipeline stopped unexpectedly".into(),
            ))
        }
        Err(Some(e)) => return Err(e),
    };
    stats.bytes_read = counters.bytes_read.load(Ordering::Relaxed);
    stats.bytes_new = counters.bytes_new.load(Ordering::Relaxed);
    stats.bytes_stored = counters.bytes_stored.load(Ordering::Relaxed);
    stats.blobs_new = counters.blobs_new.load(Ordering::Relaxed);
    stats.duration_ms = started.elapsed().as_millis() as u64;

    let mut manifest = Manifest {
        format: MANIFEST_FORMAT,
        time: crate::util::now_rfc3339_nanos(),
        host: crate::util::hostname(),
        user: crate::util::username(),
        parent: parent.map(|(id, _)| id),
        paths: sources,
        tree,
        stats,
        warnings,
        partial,
        template_only: Some(templates),
        safety: opts.safety,
        streams,
        gates: None,
        sha256: None,
    };
    // Gates run on the sealed bytes before the manifest is written, so their results travel in it
    // (outside the hashed part); promotion runs them again on the file as stored.
    let (id, sealed) = manifest.clone().seal();
    let results = crate::lkg::evaluate_bytes(vault, &id, Ok(&sealed), false)?;
    manifest.gates = Some(results);
    let id = vault.write_manifest(&mut manifest)?;
    vault.audit(
        &AuditRecord::new(
            "snapshot",
            Some(id.to_hex()),
            if partial { "partial" } else { "ok" },
        )
        .with_detail(serde_json::json!({
            "paths": path_strings,
            "files": manifest.stats.files,
            "bytes_new": manifest.stats.bytes_new,
            "bytes_stored": manifest.stats.bytes_stored,
            "warnings": manifest.warnings.len(),
            "templated": manifest.template_only.as_ref().map_or(0, |t| t.templated),
            "safety": manifest.safety,
        })),
    )?;
    Ok(SnapshotOutcome { id, manifest })
}

/// The latest snapshot of exactly the same paths.
fn find_parent(vault: &Vault, paths: &[String]) -> Result<Option<(SnapshotId, Manifest)>> {
    let mut want: Vec<&String> = paths.iter().collect();
    want.sort();
    let (snaps, _) = vault.snapshots()?;
    Ok(snaps.into_iter().rev().find(|(_, m)| {
        let mut have: Vec<&String> = m.paths.iter().map(|p| &p.path).collect();
        have.sort();
        have == want
    }))
}

fn entry_from(name: Vec<u8>, meta: &Metadata, node: Node) -> Entry {
    Entry {
        name,
        node,
        mode: meta.mode(),
        uid: meta.uid(),
        gid: meta.gid(),
        mtime_ns: meta
            .mtime()
            .saturating_mul(1_000_000_000)
            .saturating_add(meta.mtime_nsec()),
        ctime_ns: meta
            .ctime()
            .saturating_mul(1_000_000_000)
            .saturating_add(meta.ctime_nsec()),
        size: meta.len(),
        inode: meta.ino(),
        dev: meta.dev(),
    }
}

/// Unchanged means same size, mtime, ctime and inode as in the parent.
fn unchanged(parent: &Entry, now: &Entry) -> bool {
    matches!(parent.node, Node::File { .. })
        && parent.size == now.size
        && parent.mtime_ns == now.mtime_ns
        && parent.ctime_ns == now.ctime_ns
        && parent.inode == now.inode
}

enum Pending {
    Ready(Entry),
    File {
        entry: Entry,
        path: PathBuf,
        reply: Receiver<FileResult>,
    },
}

struct OpenDir {
    depth: usize,
    entry: Entry,
    parent: Option<(Tree, Lists)>,
    entries: Vec<Pending>,
}

struct Walker<'a> {
    scan: &'a mut Scan,
    jobs: Sender<FileJob>,
    sink: BlobSink,
    reader: &'a BlobReader,
    policy: &'a TemplatePolicy,
    /// The source root being walked (template globs with `/` match below it).
    root: PathBuf,
    templates: TemplateReport,
    stats: Stats,
    warnings: Vec<String>,
    partial: bool,
    params: Chunking,
    streams: Vec<crate::manifest::StreamRecord>,
}

impl Walker<'_> {
    fn snapshot_roots(
        &mut self,
        roots: &[Root],
        streams: &[StreamSource],
        parent_root: Option<&(Tree, Lists)>,
    ) -> std::result::Result<BlobId, Stop> {
        let mut top = Vec::new();
        for root in roots {
            self.root = root.path.clone();
            let parent_entry = parent_root.and_then(|(t, _)| t.get(&root.name));
            if root.meta.is_dir() {
                let parent_tree = self.parent_subtree(parent_entry);
                let subtree = self.walk_dir(root, parent_tree)?;
                top.push(Pending::Ready(subtree));
            } else if let Some(p) =
                self.classify(&root.path, root.name.clone(), &root.meta, parent_entry)?
            {
                top.push(p);
            }
        }
        for st in streams {
            let parent = parent_root.and_then(|(t, _)| t.get(st.name.as_bytes()));
            let parent = self.parent_subtree(parent);
            let entry = self.snapshot_stream(st, parent.as_ref())?;
            top.push(Pending::Ready(entry));
        }
        let mut tree = self.finish_entries(top)?;
        self.put_tree(&mut tree, parent_root)
    }

    /// Reads one dump stream through a chunker of its own (on this thread: the compressors and
    /// the writer still run in parallel) and returns its root entry, `NAME/FILE`.
    fn snapshot_stream(
        &mut self,
        st: &StreamSource,
        parent: Option<&(Tree, Lists)>,
    ) -> std::result::Result<Entry, Stop> {
        let path = format!("{}/{}", st.name, st.file_name);
        let mut chunks = Vec::new();
        let record = match stream::open(&st.kind) {
            Err(why) => stream::failed(st, path, why),
            Ok(mut opened) => {
                let mut chunker =
                    Chunker::with_profiles(self.params.clone(), self.sink.crypto.chunker_seed());
                let sink = self.sink.clone();
                let mut zero_id = None;
                let run = chunker.run_marked(
                    &mut opened.reader,
                    |data: &[u8], zero| -> std::result::Result<(), ReadStop> {
                        chunks.push(sink.put_chunk(&mut zero_id, data, zero)?);
                        Ok(())
                    },
                );
                match run {
                    Ok(_) => opened.finish(st, path, None),
                    Err(ReadStop::Io(e)) => opened.finish(st, path, Some(format!("read: {e}"))),
                    Err(ReadStop::Pipeline) => {
                        opened.abandon();
                        return Err(None);
                    }
                }
            }
        };
        if !record.ok {
            self.warnings.push(format!(
                "source {} failed: {}",
                st.name,
                record.problems.join("; ")
            ));
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        // SAFETY: getuid/getgid have no preconditions and cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let file = Entry {
            name: st.file_name.as_bytes().to_vec(),
            node: Node::File { chunks },
            mode: 0o100600,
            uid,
            gid,
            mtime_ns: now,
            ctime_ns: 0,
            size: record.bytes,
            inode: 0,
            dev: 0,
        };
        self.stats.files += 1;
        self.stats.dirs += 1;
        self.stats.bytes += record.bytes;
        self.streams.push(record);
        let mut tree = Tree {
            entries: vec![file],
        };
        let subtree = self.put_tree(&mut tree, parent)?;
        Ok(Entry {
            name: st.name.as_bytes().to_vec(),
            node: Node::Dir { subtree },
            mode: 0o40700,
            size: 0,
            // Owner and times as the stream file's.
            ..tree.entries.swap_remove(0)
        })
    }

    fn parent_subtree(&mut self, parent: Option<&Entry>) -> Option<(Tree, Lists)> {
        match parent.map(|e| &e.node) {
            Some(Node::Dir { subtree }) => self.reader.tree_lists(subtree).ok(),
            _ => None,
        }
    }

    /// Walks one directory tree and returns its entry (with the subtree id filled in).
    fn walk_dir(
        &mut self,
        root: &Root,
        parent: Option<(Tree, Lists)>,
    ) -> std::result::Result<Entry, Stop> {
        let mut stack: Vec<OpenDir> = vec![OpenDir {
            depth: 0,
            entry: entry_from(
                root.name.clone(),
                &root.meta,
                Node::Dir {
                    subtree: BlobId([0; 32]),
                },
            ),
            parent,
            entries: Vec::new(),
        }];
        self.stats.dirs += 1;
        loop {
            let (depth, path, name, meta) = match self.scan.next() {
                Some(Scanned::RootDone) => break,
                Some(Scanned::Error(msg)) => {
                    self.warn_unreadable(msg);
                    continue;
                }
                Some(Scanned::Entry { depth, path, meta }) => {
                    let name = path.file_name().unwrap_or_default().as_bytes().to_vec();
                    (depth, path, name, meta)
                }
                None => {
                    return Err(Some(Error::Invalid(format!(
                        "the walk of {} stopped unexpectedly",
                        root.path.display()
                    ))))
                }
            };
            while stack.last().is_some_and(|d| d.depth >= depth) {
                self.close_dir(&mut stack)?;
            }
            let meta = match meta {
                Ok(m) => m,
                Err(msg) => {
                    self.warn_unreadable(msg);
                    continue;
                }
            };
            let top = stack
                .last_mut()
                .expect("invariant: the root stays on the stack");
            let parent_entry = top.parent.as_ref().and_then(|(t, _)| t.get(&name)).cloned();
            if meta.is_dir() {
                let parent_tree = self.parent_subtree(parent_entry.as_ref());
                self.stats.dirs += 1;
                stack.push(OpenDir {
                    depth,
                    entry: entry_from(
                        name,
                        &meta,
                        Node::Dir {
                            subtree: BlobId([0; 32]),
                        },
                    ),
                    parent: parent_tree,
                    entries: Vec::new(),
                });
            } else if let Some(p) = self.classify(&path, name, &meta, parent_entry.as_ref())? {
                stack
                    .last_mut()
                    .expect("invariant: non-empty stack")
                    .entries
                    .push(p);
            }
        }
        while stack.len() > 1 {
            self.close_dir(&mut stack)?;
        }
        let root = stack.pop().expect("invariant: root dir on the stack");
        self.finish_dir(root)
    }

    fn close_dir(&mut self, stack: &mut Vec<OpenDir>) -> std::result::Result<(), Stop> {
        let dir = stack
            .pop()
            .expect("invariant: close_dir on a non-empty stack");
        let entry = self.finish_dir(dir)?;
        stack
            .last_mut()
            .expect("invariant: closed dir has a parent")
            .entries
            .push(Pending::Ready(entry));
        Ok(())
    }

    fn finish_dir(&mut self, dir: OpenDir) -> std::result::Result<Entry, Stop> {
        let mut tree = self.finish_entries(dir.entries)?;
        let id = self.put_tree(&mut tree, dir.parent.as_ref())?;
        let mut entry = dir.entry;
        entry.node = Node::Dir { subtree: id };
        Ok(entry)
    }

    /// Decides what a non-directory becomes: a file job, a reused file, a link, or a skip.
    fn classify(
        &mut self,
        path: &Path,
        name: Vec<u8>,
        meta: &Metadata,
        parent: Option<&Entry>,
    ) -> std::result::Result<Option<Pending>, Stop> {
        let ft = meta.file_type();
        if ft.is_symlink() {
            let target = match std::fs::read_link(path) {
                Ok(t) => t.as_os_str().as_bytes().to_vec(),
                Err(e) => {
                    self.warn_unreadable(format!("{}: {e}", path.display()));
                    return Ok(None);
                }
            };
            self.stats.symlinks += 1;
            return Ok(Some(Pending::Ready(entry_from(
                name,
                meta,
                Node::Symlink { target },
            ))));
        }
        if !ft.is_file() {
            let kind = if ft.is_socket() {
                "socket"
            } else if ft.is_fifo() {
                "FIFO"
            } else if ft.is_block_device() || ft.is_char_device() {
                "device"
            } else {
                "special file"
            };
            self.stats.skipped += 1;
            self.warnings
                .push(format!("skipped {kind} {}", path.display()));
            return Ok(None);
        }
        let relative = match path.strip_prefix(&self.root) {
            Ok(r) if !r.as_os_str().is_empty() => r,
            _ => Path::new(crate::util::os_str(&name)),
        };
        if self.policy.matches(relative) {
            return self.template_file(path, name, meta);
        }
        let entry = entry_from(name, meta, Node::File { chunks: Vec::new() });
        if let Some(Entry {
            node: Node::File { chunks },
            ..
        }) = parent.filter(|p| unchanged(p, &entry))
        {
            if self.sink.known.contains_all(chunks) {
                self.stats.files += 1;
                self.stats.files_unchanged += 1;
                self.stats.bytes += entry.size;
                let chunks = chunks.clone();
                return Ok(Some(Pending::Ready(Entry {
                    node: Node::File { chunks },
                    ..entry
                })));
            }
        }
        let (reply_tx, reply_rx) = bounded(1);
        self.jobs
            .send(FileJob {
                path: path.to_path_buf(),
                reply: reply_tx,
            })
            .map_err(|_| None)?;
        Ok(Some(Pending::File {
            entry,
            path: path.to_path_buf(),
            reply: reply_rx,
        }))
    }

    /// Waits for a directory's file jobs and returns its tree.
    fn finish_entries(&mut self, pending: Vec<Pending>) -> std::result::Result<Tree, Stop> {
        let mut tree = Tree {
            entries: Vec::with_capacity(pending.len()),
        };
        for p in pending {
            match p {
                Pending::Ready(e) => tree.entries.push(e),
                Pending::File {
                    mut entry,
                    path,
                    reply,
                } => match reply.recv().unwrap_or(FileResult::Aborted) {
                    FileResult::Done(read) => {
                        let fresh = entry_from(
                            entry.name.clone(),
                            &read.meta,
                            Node::File {
                                chunks: read.chunks,
                            },
                        );
                        entry = fresh;
                        entry.size = read.size;
                        if read.changed {
                            // A zero ctime (never restored) makes the next snapshot read it again.
                            entry.ctime_ns = 0;
                            self.warnings
                                .push(format!("{}: changed while it was read", path.display()));
                        }
                        self.stats.files += 1;
                        self.stats.bytes += read.size;
                        tree.entries.push(entry);
                    }
                    FileResult::Unreadable(msg) => self.warn_unreadable(msg),
                    FileResult::Aborted => return Err(None),
                },
            }
        }
        Ok(tree)
    }

    /// Stores a `template_only` file as its template; a file that cannot be templated is not
    /// stored at all and is listed as refused (the `template_only` gate then fails).
    fn template_file(
        &mut self,
        path: &Path,
        name: Vec<u8>,
        meta: &Metadata,
    ) -> std::result::Result<Option<Pending>, Stop> {
        let bytes = match read_small(path, TEMPLATE_MAX_BYTES) {
            Ok(Some(b)) => b,
            Ok(None) => {
                self.refuse(format!(
                    "{}: larger than {} bytes",
                    path.display(),
                    TEMPLATE_MAX_BYTES
                ));
                return Ok(None);
            }
            Err(e) => {
                self.warn_unreadable(format!("{}: {e}", path.display()));
                return Ok(None);
            }
        };
        self.sink
            .counters
            .bytes_read
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        let t = match template::render(path, &bytes) {
            Ok(t) => t,
            Err(e) => {
                self.refuse(e.to_string());
                return Ok(None);
            }
        };
        let mut chunks = Vec::new();
        if !t.bytes.is_empty() {
            let id = self.sink.crypto.blob_id(&t.bytes);
            self.sink.put(id, BlobKind::Data, &t.bytes)?;
            chunks.push(id);
        }
        let mut entry = entry_from(name, meta, Node::File { chunks });
        entry.size = t.bytes.len() as u64;
        self.stats.files += 1;
        self.stats.bytes += entry.size;
        self.templates.templated += 1;
        Ok(Some(Pending::Ready(entry)))
    }

    fn refuse(&mut self, reason: String) {
        self.stats.skipped += 1;
        self.warnings.push(format!(
            "not stored (template_only, cannot template): {reason}"
        ));
        self.templates.refused.push(reason);
    }

    /// Stores a directory's tree; `parent` is the same directory in the parent snapshot.
    fn put_tree(
        &mut self,
        tree: &mut Tree,
        parent: Option<&(Tree, Lists)>,
    ) -> std::result::Result<BlobId, Stop> {
        let lists = self.store_lists(tree, parent)?;
        let listed = tree.listed_ids(&lists);
        if listed > tree::MAX_LISTED_IDS {
            return Err(Some(Error::Invalid(format!(
                "the files of one directory have {listed} chunks, more than a tree may list ({})",
                tree::MAX_LISTED_IDS
            ))));
        }
        let bytes = tree.encode_with(&lists);
        self.put_blob(BlobKind::Tree, &bytes)
    }

    fn put_blob(&mut self, kind: BlobKind, bytes: &[u8]) -> std::result::Result<BlobId, Stop> {
        let id = self.sink.crypto.blob_id(bytes);
        self.sink.put(id, kind, bytes)?;
        Ok(id)
    }

    /// Decides how each file of at least [`LIST_MIN_CHUNKS`] chunks keeps its chunk list: as the
    /// parent's did when the list is the same; as a patch to the parent's list blob when that
    /// takes at most a quarter of the whole list's bytes; otherwise in a new list blob. So a
    /// dump that changes a little at each snapshot writes a patch that grows with the changes
    /// since its base, and a new base once a quarter of it has changed.
    fn store_lists(
        &mut self,
        tree: &Tree,
        parent: Option<&(Tree, Lists)>,
    ) -> std::result::Result<Lists, Stop> {
        let mut lists = Lists::new();
        for e in &tree.entries {
            let Node::File { chunks } = &e.node else {
                continue;
            };
            if chunks.len() < LIST_MIN_CHUNKS {
                continue;
            }
            let before = parent.and_then(|(t, l)| Some((t.get(&e.name)?, l.get(&e.name)?)));
            let kept = match before {
                Some((
                    Entry {
                        node: Node::File { chunks: old },
                        ..
                    },
                    r,
                )) if self.sink.known.contains(r.blob()) => {
                    if old == chunks {
                        Some(r.clone())
                    } else {
                        self.patch(r, old, chunks)
                    }
                }
                _ => None,
            };
            let r = match kept {
                Some(r) => r,
                None => ListRef::Whole(self.put_blob(BlobKind::Tree, &tree::encode_list(chunks))?),
            };
            lists.insert(e.name.clone(), r);
        }
        Ok(lists)
    }

    /// `new` as a patch to the base of `parent`, a list that resolved to `old`; `None` when the
    /// patch would not be small.
    fn patch(&self, parent: &ListRef, old: &[BlobId], new: &[BlobId]) -> Option<ListRef> {
        let read;
        let base = match parent {
            ListRef::Whole(_) => old,
            ListRef::Patch { base, .. } => {
                read = self.reader.list(base).ok()?;
                &read
            }
        };
        let ops = tree::diff_lists(base, new)?;
        (tree::patch_bytes(&ops) * 4 <= new.len() * 32).then(|| ListRef::Patch {
            base: *parent.blob(),
            ops,
        })
    }

    fn warn_unreadable(&mut self, msg: String) {
        self.partial = true;
        self.stats.skipped += 1;
        self.warnings.push(format!("unreadable: {msg}"));
    }
}

/// Worker: reads files, cuts and hashes chunks, passes new ones on.
fn read_files(
    jobs: Receiver<FileJob>,
    sink: BlobSink,
    params: Chunking,
    progress: &Progress,
) -> std::result::Result<(), Stop> {
    let mut chunker = Chunker::with_profiles(params, sink.crypto.chunker_seed());
    for job in jobs {
        let result = read_one(&job.path, &mut chunker, &sink, progress);
        let aborted = matches!(result, FileResult::Aborted);
        let _ = job.reply.send(result);
        if aborted {
            return Err(None);
        }
    }
    Ok(())
}

enum ReadStop {
    Io(std::io::Error),
    Pipeline,
}

impl From<std::io::Error> for ReadStop {
    fn from(e: std::io::Error) -> Self {
        ReadStop::Io(e)
    }
}

fn read_one(
    path: &Path,
    chunker: &mut Chunker,
    sink: &BlobSink,
    progress: &Progress,
) -> FileResult {
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) => return FileResult::Unreadable(format!("{}: {e}", path.display())),
    };
    let before = match file.metadata() {
        Ok(m) if m.is_file() => m,
        Ok(_) => {
            return FileResult::Unreadable(format!("{}: no longer a regular file", path.display()))
        }
        Err(e) => return FileResult::Unreadable(format!("{}: {e}", path.display())),
    };
    let expected_chunks = before.len() / u64::from(chunker.params().avg_size) + 1;
    let mut chunks = Vec::with_capacity(expected_chunks.min(1 << 16) as usize);
    let mut zero_id = None;
    let run = chunker.run_holes(SparseReader::new(&file, &before), |data: &[u8], zero| {
        chunks.push(sink.put_chunk(&mut zero_id, data, zero)?);
        progress.inc(data.len() as u64);
        Ok::<(), ReadStop>(())
    });
    let size = match run {
        Ok(n) => n,
        Err(ReadStop::Pipeline) => return FileResult::Aborted,
        Err(ReadStop::Io(e)) => return FileResult::Unreadable(format!("{}: {e}", path.display())),
    };
    let changed = match file.metadata() {
        Ok(after) => {
            after.len() != before.len()
                || after.mtime() != before.mtime()
                || after.mtime_nsec() != before.mtime_nsec()
                || size != before.len()
        }
        Err(_) => true,
    };
    FileResult::Done(FileRead {
        chunks,
        size,
        meta: before,
        changed,
    })
}

/// A regular file's content when it is at most `max` bytes, `None` when larger. Opened without
/// following a symlink or blocking on a FIFO swapped in after the walk.
fn read_small(path: &Path, max: u64) -> std::io::Result<Option<Vec<u8>>> {
    use std::io::Read;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("no longer a regular file"));
    }
    let mut bytes = Vec::new();
    file.take(max + 1).read_to_end(&mut bytes)?;
    Ok((bytes.len() as u64 <= max).then_some(bytes))
}

/// Compressor: seals raw blobs (compress + verify-before-write).
fn compress_blobs(
    rx: Receiver<RawBlob>,
    tx: Sender<SealedBlob>,
    compression: &CompressionConfig,
    counters: &Counters,
    crypto: &Crypto,
) -> std::result::Result<(), Stop> {
    for raw in rx {
        let level = compression.level_for(raw.kind, &raw.data);
        let sealed = blob::seal_owned(crypto, raw.id, raw.kind, raw.data, level).map_err(Some)?;
        counters
            .bytes_stored
            .fetch_add(sealed.bytes.len() as u64, Ordering::Relaxed);
        tx.send(sealed).map_err(|_| None)?;
    }
    Ok(())
}

/// Writer: appends sealed blobs to packs, publishes each pack and indexes it.
fn write_packs(
    rx: Receiver<SealedBlob>,
    packs_dir: &Path,
    index_path: &Path,
    target: u64,
    crypto: &Crypto,
) -> std::result::Result<(), Stop> {
    let mut index = Index::open(index_path).map_err(Some)?;
    let mut current: Option<PackWriter> = None;
    for blob in rx {
        let w = match current.as_mut() {
            Some(w) => w,
            None => current.insert(PackWriter::new(packs_dir, crypto).map_err(Some)?),
        };
        w.add(&blob).map_err(Some)?;
        if w.is_full(target) {
            let done = current
                .take()
                .expect("invariant: current pack exists")
                .finish()
                .map_err(Some)?;
            index
                .add_pack(&done.id, done.size, &done.entries)
                .map_err(Some)?;
        }
    }
    if let Some(w) = current.filter(|w| !w.is_empty()) {
        let done = w.finish().map_err(Some)?;
        index
            .add_pack(&done.id, done.size, &done.entries)
            .map_err(Some)?;
    }
    Ok(())
}
