//! Restoring a snapshot into a target directory.
//!
//! Restore walks the snapshot's trees from the root, creates directories itself, and hands files
//! to worker threads (a directory's small files in batches, big files one by one, the biggest in
//! pieces that several workers write at once: [`split`]) that read each
//! chunk from its pack, decompress it, check its blake3 id and write it through a [`sink::Sink`]
//! (blocks of zeros left as holes, big files past the page cache). Nothing is written
//! outside the target: every name is checked ([`check_name`]) and duplicates are refused before
//! anything is created, the walk only descends into directories it has just created or found to
//! be real directories, and files are opened with `O_NOFOLLOW`. A file that cannot be restored
//! (a corrupt chunk, say) is reported and removed, and the others are still restored. A remote
//! that stops answering (its retries spent) or refuses this client as a whole ends the restore at
//! once with that one error: every later read would fail the same way, each file after its own
//! round of retries. Directory modes and times are applied last, deepest first.

mod sink;
mod split;

use std::fs::{self, OpenOptions};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crossbeam_channel::bounded;
use filetime::FileTime;

use crate::backend::BackendErrorKind;
use crate::error::{Error, IoContext, Result};
use crate::manifest::Manifest;
use crate::progress::Progress;
use crate::tree::{check_name, Entry, Node, Tree};
use crate::util::{display_name, os_str};
use crate::vault::BlobReader;

/// What to restore and where.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    pub target: PathBuf,
    /// Paths inside the snapshot (`name/sub/file`); empty means everything.
    pub includes: Vec<String>,
    pub overwrite: bool,
    /// Worker threads; 0 means two per core.
    pub threads: usize,
}

/// What a restore did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RestoreReport {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
    /// Entries that could not be restored, with the reason.
    pub errors: Vec<String>,
}

struct FileJob {
    path: PathBuf,
    shown: String,
    entry: Entry,
}

/// What a file broken by a remote that has gone is reported with; the restore itself ends with
/// the remote's own error.
const REMOTE_GONE: &str = "the remote stopped serving the vault";

/// What the walk hands the workers.
enum Work {
    Files(Vec<FileJob>),
    Piece(split::Piece),
}

/// Files larger than this are handed to the workers one by one (in pieces past
/// [`split::SPLIT_MIN_BYTES`]); smaller ones go in batches of
/// one directory's files (see [`FileBatch`]).
const BATCH_FILE_BYTES_MAX: u64 = 1 << 20;
/// A batch is sent once it holds this many bytes or files.
const BATCH_BYTES: u64 = 8 << 20;
const BATCH_FILES: usize = 1024;

/// Files of one directory that one worker restores in turn. Two workers creating files in the
/// same directory at once take turns on its inode lock (and spin on it): `perf` put 17% of a
/// restore's CPU in `rwsem_spin_on_owner`. Batched, the workers mostly fill different
/// directories.
#[derive(Default)]
struct FileBatch {
    jobs: Vec<FileJob>,
    bytes: u64,
}

/// Restores `manifest`'s tree into `opts.target`.
pub fn restore(
    reader: &BlobReader,
    manifest: &Manifest,
    opts: &RestoreOptions,
    progress: &Progress,
) -> Result<RestoreReport> {
    prepare_target(&opts.target, opts.overwrite)?;
    if reader.is_remote() && opts.includes.is_empty() {
        // Best effort: what the prefetch could not fetch is read blob by blob below, where a
        // failure is reported against the file it breaks.
        let _ = prefetch_snapshot(reader, &manifest.tree);
    }
    let includes: Vec<Vec<Vec<u8>>> = opts
        .includes
        .iter()
        .map(|p| {
            p.split('/')
                .filter(|c| !c.is_empty() && *c != ".")
                .map(|c| c.as_bytes().to_vec())
                .collect()
        })
        .collect();
    // Two workers a core: a worker waits on the disk while a big file's direct write lands and
    // while the file system creates a file, and the other can decompress meanwhile. Measured on
    // the anchors corpus, 2 cores: 2.20–2.71 s with 4 workers, 2.36–2.83 s with 2.
    let threads = if opts.threads == 0 {
        2 * std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    } else {
        opts.threads
    };
    let bytes = AtomicU64::new(0);
    let errors = Mutex::new(Vec::new());
    let gone: Mutex<Option<Error>> = Mutex::new(None);
    let refused = Refused::default();
    let (tx, rx) = bounded::<Work>(2 * threads);
    let mut walk = RestoreWalk {
        reader,
        includes: &includes,
        overwrite: opts.overwrite,
        gone: &gone,
        refused: &refused,
        tx,
        report: RestoreReport::default(),
        dirs: Vec::new(),
        matched: vec![false; includes.len()],
    };
    let walked = std::thread::scope(|s| {
        for _ in 0..threads {
            let rx = rx.clone();
            let (bytes, errors, gone, refused) = (&bytes, &errors, &gone, &refused);
            s.spawn(move || {
                let mut stage = sink::Stage::default();
                let is_gone = || gone.lock().expect("invariant: remote error lock").is_some();
                // An error the remote ended the restore with is kept whole for the caller; the
                // file it broke gets a note instead.
                let note_gone = |e: Error| -> Error {
                    if refused.gone(reader, &e) {
                        gone.lock()
                            .expect("invariant: remote error lock")
                            .get_or_insert(e);
                        Error::Invalid(REMOTE_GONE.into())
                    } else {
                        e
                    }
                };
                let record = |shown: &str, r: Result<u64>| match r {
                    Ok(n) => {
                        bytes.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(e) => errors
                        .lock()
                        .expect("invariant: error list lock")
                        .push(format!("{shown}: {}", e.full())),
                };
                for work in rx.iter() {
                    match work {
                        Work::Files(jobs) => {
                            for job in jobs {
                                // Drain what the walk queued before it saw the remote go.
                                if is_gone() {
                                    continue;
                                }
                                let r = restore_file(
                                    reader,
                                    &job,
                                    opts.overwrite,
                                    &mut stage,
                                    progress,
                                );
                                record(&job.shown, r.map_err(note_gone));
                            }
                        }
                        Work::Piece(piece) => {
                            let r = if is_gone() {
                                Err(Error::Invalid(REMOTE_GONE.into()))
                            } else {
                                piece.run(reader, &mut stage, progress).map_err(note_gone)
                            };
                            if let Some(r) = piece.end(r, progress) {
                                record(piece.shown(), r);
                            }
                        }
                    }
                }
            });
        }
        drop(rx);
        let root = reader.tree(&manifest.tree);
        let r = root.and_then(|t| walk.dir(&t, &opts.target, &[], ""));
        drop(std::mem::replace(&mut walk.tx, bounded(0).0));
        r
    });
    progress.finish();
    if let Some(e) = gone.lock().expect("invariant: remote error lock").take() {
        return Err(e);
    }
    walked?;
    for (i, inc) in opts.includes.iter().enumerate() {
        if !walk.matched[i] {
            return Err(Error::Invalid(format!(
                "--include {inc}: no such path in the snapshot"
            )));
        }
    }
    // Deepest directories first, so a read-only parent is set after its children.
    for (path, entry) in walk.dirs.iter().rev() {
        apply_meta(path, entry, false).ok();
    }
    let mut report = walk.report;
    report.bytes = bytes.into_inner();
    report
        .errors
        .extend(errors.into_inner().expect("invariant: error list lock"));
    Ok(report)
}

/// Objects the remote refused while it still served the vault's config: damage to the files
/// they break, not a reason to ask the remote again for each of those files.
#[derive(Default)]
struct Refused(Mutex<std::collections::HashSet<String>>);

impl Refused {
    /// True for an error after which no read from the remote is likely to succeed: it stopped
    /// answering and the backend's retries are spent, or it refuses this client as a whole
    /// (credentials expired or revoked, a policy changed), which no retry and no other pack will
    /// change. A refusal of one object (an unreadable pack file on a mounted drive) is checked
    /// once against the vault's config before it ends anything. A missing, short or unreadable
    /// pack is damage instead, reported against the files it breaks.
    fn gone(&self, reader: &BlobReader, e: &Error) -> bool {
        let Error::Backend(b) = e else {
            return false;
        };
        match b.kind {
            BackendErrorKind::Transient => true,
            BackendErrorKind::Denied => {
                let mut known = self.0.lock().expect("invariant: refused-objects lock");
                if known.contains(&b.object) {
                    return false;
                }
                let whole = reader.remote_refuses_us();
                if !whole {
                    known.insert(b.object.clone());
                }
                whole
            }
            _ => false,
        }
    }
}

/// Chunk ids gathered before they are prefetched in one go (~32 MiB of chunk ids at most).
const PREFETCH_BATCH_CHUNKS: usize = 1 << 20;

/// Fetches a snapshot from a remote in large requests: its trees level by level, then its
/// files' chunks in batches.
fn prefetch_snapshot(reader: &BlobReader, root: &crate::id::BlobId) -> Result<()> {
    let mut level = vec![*root];
    let mut seen = std::collections::HashSet::new();
    let mut chunks = Vec::new();
    while !level.is_empty() {
        reader.prefetch(&level)?;
        let mut next = Vec::new();
        for id in level {
            for e in reader.tree(&id)?.entries {
                match e.node {
                    Node::Dir { subtree } if seen.insert(subtree) => next.push(subtree),
                    Node::File { chunks: c } => chunks.extend(c),
                    _ => {}
                }
            }
            if chunks.len() >= PREFETCH_BATCH_CHUNKS {
                reader.prefetch(&chunks)?;
                chunks.clear();
            }
        }
        level = next;
    }
    reader.prefetch(&chunks)
}

fn prepare_target(target: &Path, overwrite: bool) -> Result<()> {
    match fs::symlink_metadata(target) {
        Ok(m) if !m.is_dir() => Err(Error::Invalid(format!(
            "target {} exists and is not a directory",
            target.display()
        ))),
        Ok(_) => {
            let empty = fs::read_dir(target).at(target)?.next().is_none();
            if !empty && !overwrite {
                Err(Error::Invalid(format!(
                    "target {} is not empty; pass --overwrite to restore into it",
                    target.display()
                )))
            } else {
                Ok(())
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => fs::create_dir_all(target).at(target),
        Err(e) => Err(Error::io(target, e)),
    }
}

struct RestoreWalk<'a> {
    reader: &'a BlobReader,
    includes: &'a [Vec<Vec<u8>>],
    overwrite: bool,
    /// The remote's last error, once it has gone (see [`Refused::gone`]): the walk stops.
    gone: &'a Mutex<Option<Error>>,
    refused: &'a Refused,
    tx: crossbeam_channel::Sender<Work>,
    report: RestoreReport,
    dirs: Vec<(PathBuf, Entry)>,
    matched: Vec<bool>,
}

enum Want {
    No,
    /// On the way to an included path: create the directory, look inside.
    Ancestor,
    All,
}

impl RestoreWalk<'_> {
    fn want(&mut self, rel: &[Vec<u8>]) -> Want {
        if self.includes.is_empty() {
            return Want::All;
        }
        let mut want = Want::No;
        for (i, inc) in self.includes.iter().enumerate() {
            if rel.len() >= inc.len() && rel[..inc.len()] == inc[..] {
                self.matched[i] = true;
                return Want::All;
            }
            if inc.len() > rel.len() && inc[..rel.len()] == rel[..] {
                want = Want::Ancestor;
            }
        }
        want
    }

    fn dir(&mut self, tree: &Tree, dir: &Path, rel: &[Vec<u8>], shown: &str) -> Result<()> {
        for (i, e) in tree.entries.iter().enumerate() {
            check_name(&e.name)?;
            if i > 0 && tree.entries[i - 1].name >= e.name {
                return Err(Error::UnsafeEntry {
                    entry: format!("{shown}{}", display_name(&e.name)),
                    reason: "duplicate or unsorted name in tree".into(),
                });
            }
        }
        let mut batch = FileBatch::default();
        for e in &tree.entries {
            if self
                .gone
                .lock()
                .expect("invariant: remote error lock")
                .is_some()
            {
                return Ok(());
            }
            let mut rel_e = rel.to_vec();
            rel_e.push(e.name.clone());
            let want = self.want(&rel_e);
            if matches!(want, Want::No) {
                continue;
            }
            let path = dir.join(os_str(&e.name));
            let shown_e = format!("{shown}{}", display_name(&e.name));
            match &e.node {
                Node::Dir { subtree } => {
                    self.make_dir(&path, &shown_e)?;
                    let sub = self.reader.tree(subtree);
                    match sub {
                        Ok(t) => self.dir(&t, &path, &rel_e, &format!("{shown_e}/"))?,
                        Err(err @ Error::UnsafeEntry { .. }) => return Err(err),
                        Err(err) if self.refused.gone(self.reader, &err) => return Err(err),
                        Err(err) => self
                            .report
                            .errors
                            .push(format!("{shown_e}/: {}", err.full())),
                    }
                    self.report.dirs += 1;
                    self.dirs.push((path, e.clone()));
                }
                _ if matches!(want, Want::Ancestor) => {}
                Node::File { .. } => {
                    self.report.files += 1;
                    let job = FileJob {
                        path,
                        shown: shown_e,
                        entry: e.clone(),
                    };
                    if e.size > split::SPLIT_MIN_BYTES {
                        self.split(job)?;
                        continue;
                    }
                    if e.size > BATCH_FILE_BYTES_MAX {
                        self.send(Work::Files(vec![job]))?;
                        continue;
                    }
                    batch.bytes += e.size;
                    batch.jobs.push(job);
                    if batch.bytes >= BATCH_BYTES || batch.jobs.len() >= BATCH_FILES {
                        self.send(Work::Files(std::mem::take(&mut batch).jobs))?;
                    }
                }
                Node::Symlink { target } => {
                    if let Err(err) = self.make_symlink(&path, target, e) {
                        self.report
                            .errors
                            .push(format!("{shown_e}: {}", err.full()));
                    } else {
                        self.report.symlinks += 1;
                    }
                }
            }
        }
        if !batch.jobs.is_empty() {
            self.send(Work::Files(batch.jobs))?;
        }
        Ok(())
    }

    /// Hands a big file to the workers in pieces. It is created here, so that no piece waits
    /// for another to create it; a file whose chunk lengths the index cannot vouch for goes
    /// whole, and its restore reports why.
    fn split(&mut self, job: FileJob) -> Result<()> {
        let Node::File { chunks } = &job.entry.node else {
            return Err(Error::Invalid("not a file".into()));
        };
        let Some(starts) = split::chunk_starts(self.reader, chunks, job.entry.size) else {
            return self.send(Work::Files(vec![job]));
        };
        match create_file(&job.path, self.overwrite) {
            Ok(f) => {
                for piece in split::SplitFile::pieces(job, f, starts) {
                    self.send(Work::Piece(piece))?;
                }
                Ok(())
            }
            Err(err) => {
                self.report
                    .errors
                    .push(format!("{}: {}", job.shown, err.full()));
                Ok(())
            }
        }
    }

    fn send(&self, work: Work) -> Result<()> {
        self.tx
            .send(work)
            .map_err(|_| Error::Invalid("restore workers stopped".into()))
    }

    /// Creates a directory, or accepts an existing real one; never a symlink to one.
    fn make_dir(&self, path: &Path, shown: &str) -> Result<()> {
        match fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(m) if m.file_type().is_symlink() => Err(Error::UnsafeEntry {
                entry: shown.into(),
                reason: "the path would pass through a symlink in the target".into(),
            }),
            Ok(_) if self.overwrite => {
                fs::remove_file(path).at(path)?;
                fs::create_dir(path).at(path)
            }
            Ok(_) => Err(Error::Invalid(format!(
                "{}: exists and is not a directory",
                path.display()
            ))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => fs::create_dir(path).at(path),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    fn make_symlink(&self, path: &Path, target: &[u8], e: &Entry) -> Result<()> {
        if self.overwrite {
            clear_way(path)?;
        }
        std::os::unix::fs::symlink(os_str(target), path).at(path)?;
        apply_meta(path, e, true)
    }
}

fn restore_file(
    reader: &BlobReader,
    job: &FileJob,
    overwrite: bool,
    stage: &mut sink::Stage,
    progress: &Progress,
) -> Result<u64> {
    let Node::File { chunks } = &job.entry.node else {
        return Err(Error::Invalid("not a file".into()));
    };
    let f = create_file(&job.path, overwrite)?;
    // Only a file this run created is removed when its content cannot be restored.
    write_content(reader, job, chunks, &f, stage, progress).inspect_err(|_| {
        let _ = fs::remove_file(&job.path);
    })
}

fn write_content(
    reader: &BlobReader,
    job: &FileJob,
    chunks: &[crate::id::BlobId],
    f: &fs::File,
    stage: &mut sink::Stage,
    progress: &Progress,
) -> Result<u64> {
    let mut out = sink::Sink::new(f, stage, job.entry.size);
    // A chunk of zeros is not written: the sink skips blocks of zeros, so a sparse file comes
    // back sparse. The holes' chunks all share one id, so a repeat is skipped without reading it
    // again.
    let mut zeros: Option<(crate::id::BlobId, u64)> = None;
    for id in chunks {
        let len = match zeros {
            Some((z, len)) if z == *id => {
                out.zeros(len).at(&job.path)?;
                len
            }
            _ => {
                let data = reader.read(id)?;
                let len = data.len() as u64;
                if crate::chunk::all_zero(&data) {
                    zeros = Some((*id, len));
                    out.zeros(len).at(&job.path)?;
                } else {
                    out.write(&data).at(&job.path)?;
                }
                len
            }
        };
        progress.inc(len);
    }
    let written = out.finish().at(&job.path)?;
    if written != job.entry.size {
        return Err(Error::corrupt(
            format!("file {}", job.shown),
            format!("{written} bytes restored, manifest says {}", job.entry.size),
        ));
    }
    apply_file_meta(f, &job.path, &job.entry)?;
    progress.inc_file();
    Ok(written)
}

/// Creates the new, empty file a restored file's content goes into (under `--overwrite`, after
/// removing what stands in its way); never through a symlink.
fn create_file(path: &Path, overwrite: bool) -> Result<fs::File> {
    if overwrite {
        clear_way(path)?;
    }
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .at(path)
}

/// Under `--overwrite`: removes a file or symlink standing at `path` (never following it); a
/// directory in the way is an error.
fn clear_way(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Err(Error::Invalid(format!(
            "{}: a directory is in the way",
            path.display()
        ))),
        Ok(_) => fs::remove_file(path).at(path),
        Err(_) => Ok(()),
    }
}

/// Applies ownership (when root), mode and mtime through the open descriptor: no path lookups.
fn apply_file_meta(f: &fs::File, path: &Path, e: &Entry) -> Result<()> {
    if is_root() {
        let _ = std::os::unix::fs::fchown(f, Some(e.uid), Some(e.gid));
    }
    f.set_permissions(fs::Permissions::from_mode(e.mode & 0o7777))
        .at(path)?;
    let t = system_time(e.mtime_ns);
    f.set_times(fs::FileTimes::new().set_accessed(t).set_modified(t))
        .at(path)
}

fn system_time(ns: i64) -> std::time::SystemTime {
    let d = std::time::Duration::from_nanos(ns.unsigned_abs());
    if ns >= 0 {
        std::time::UNIX_EPOCH + d
    } else {
        std::time::UNIX_EPOCH - d
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Applies mode, ownership (when root) and times by path (directories and symlinks).
fn apply_meta(path: &Path, e: &Entry, is_link: bool) -> Result<()> {
    if is_root() {
        let _ = std::os::unix::fs::lchown(path, Some(e.uid), Some(e.gid));
    }
    if !is_link {
        fs::set_permissions(path, fs::Permissions::from_mode(e.mode & 0o7777)).at(path)?;
    }
    let mtime = FileTime::from_unix_time(
        e.mtime_ns.div_euclid(1_000_000_000),
        e.mtime_ns.rem_euclid(1_000_000_000) as u32,
    );
    filetime::set_symlink_file_times(path, mtime, mtime).at(path)
}
