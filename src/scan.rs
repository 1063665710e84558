//! The file-system half of a snapshot's walk: which roots, what the ignore rules leave out, and
//! a [`Scan`] thread that walks them (ignore files, `--exclude`, `lstat` of every entry) ahead of
//! the snapshot, which compares what it finds with the parent snapshot and builds the trees.
//!
//! The scan needs neither the key nor the index, so `vault snapshot` starts it before it opens
//! the vault: the walk of an unchanged tree then runs beside the password's key derivation. Its
//! queue is bounded ([`SCAN_QUEUE`] batches of [`SCAN_BATCH`] entries), so memory stays flat
//! however large the tree, and a scan older than [`SCAN_MAX_AGE`] when the snapshot begins (a
//! password prompt, a wait for the lock) is dropped and walked again, so that no entry's metadata
//! is older than the snapshot's start by more than that.

use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver};

use crate::error::{Error, IoContext, Result};
use crate::progress::Progress;
use crate::snapshot::{NamedSource, SnapshotOptions};

/// Entries per message from the scan thread.
pub const SCAN_BATCH: usize = 256;
/// Batches queued ahead of the snapshot (8,192 entries, about 3 MiB): enough to run beside the
/// key derivation on a tree of tens of thousands of files, little beside the pipeline's buffers.
pub const SCAN_QUEUE: usize = 32;
/// A scan started longer ago than this is walked again when the snapshot begins.
pub const SCAN_MAX_AGE: Duration = Duration::from_secs(1);

/// One thing the scan found, in the walk's sorted depth-first order.
#[allow(clippy::large_enum_variant)] // nearly every item is an `Entry`; boxing would cost an allocation each
pub(crate) enum Scanned {
    Entry {
        depth: usize,
        /// The entry's name is its last component.
        path: PathBuf,
        meta: std::result::Result<Metadata, String>,
    },
    /// A directory could not be listed (or an ignore file read); the walk goes on without it.
    Error(String),
    /// The directory root in progress is done; the next entries belong to the next one.
    RootDone,
}

/// A walk of a snapshot's roots running on its own thread. Dropping it stops the thread at its
/// next batch.
pub struct Scan {
    pub(crate) roots: Vec<Root>,
    pub(crate) rules: WalkRules,
    rx: Receiver<Vec<Scanned>>,
    batch: std::vec::IntoIter<Scanned>,
    started: Instant,
    /// The options it was started for: a snapshot of other options walks again.
    paths: Vec<PathBuf>,
    sources: Vec<NamedSource>,
    excludes: Vec<String>,
}

impl Scan {
    /// Resolves the roots of `opts` (a missing path or a bad `--exclude` glob fails here) and
    /// starts walking them. `vault_root` is left out of the walk wherever it appears.
    pub fn start(opts: &SnapshotOptions, vault_root: &Path) -> Result<Scan> {
        let roots = if !opts.sources.is_empty() {
            named_roots(&opts.sources)?
        } else if opts.paths.is_empty() && !opts.streams.is_empty() {
            Vec::new()
        } else {
            resolve_roots(&opts.paths)?
        };
        let rules = WalkRules {
            excludes: opts.excludes.clone(),
            vault: std::fs::metadata(vault_root)
                .map(|m| (m.dev(), m.ino()))
                .at(vault_root)?,
        };
        let mut walks = Vec::new();
        for r in roots.iter().filter(|r| r.meta.is_dir()) {
            walks.push(build_walk(r, &rules)?); // bad globs fail here, before any work
        }
        let (tx, rx) = bounded::<Vec<Scanned>>(SCAN_QUEUE);
        std::thread::Builder::new()
            .name("vault-scan".into())
            .spawn(move || {
                for walk in walks {
                    let mut batch = Vec::with_capacity(SCAN_BATCH);
                    for item in walk {
                        if matches!(&item, Ok(d) if d.depth() == 0) {
                            continue; // the root itself: the caller has its metadata
                        }
                        batch.push(scanned(item));
                        if batch.len() == SCAN_BATCH {
                            let full =
                                std::mem::replace(&mut batch, Vec::with_capacity(SCAN_BATCH));
                            if tx.send(full).is_err() {
                                return;
                            }
                        }
                    }
                    batch.push(Scanned::RootDone);
                    if tx.send(batch).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| Error::io("scan thread", e))?;
        Ok(Scan {
            roots,
            rules,
            rx,
            batch: Vec::new().into_iter(),
            started: Instant::now(),
            paths: opts.paths.clone(),
            sources: opts.sources.clone(),
            excludes: opts.excludes.clone(),
        })
    }

    /// True when this scan may serve a snapshot of `opts` starting now.
    pub(crate) fn serves(&self, opts: &SnapshotOptions) -> bool {
        self.started.elapsed() <= SCAN_MAX_AGE
            && self.paths == opts.paths
            && self.excludes == opts.excludes
            && self.sources == opts.sources
    }

    /// The next entry, `None` when the scan thread stopped before finishing.
    pub(crate) fn next(&mut self) -> Option<Scanned> {
        loop {
            if let Some(s) = self.batch.next() {
                return Some(s);
            }
            self.batch = self.rx.recv().ok()?.into_iter();
        }
    }
}

fn scanned(item: std::result::Result<ignore::DirEntry, ignore::Error>) -> Scanned {
    match item {
        Err(e) => Scanned::Error(e.to_string()),
        Ok(dent) => {
            let path = dent.path().to_path_buf();
            let meta =
                std::fs::symlink_metadata(&path).map_err(|e| format!("{}: {e}", path.display()));
            Scanned::Entry {
                depth: dent.depth(),
                path,
                meta,
            }
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Root {
    pub(crate) path: PathBuf,
    pub(crate) name: Vec<u8>,
    pub(crate) meta: Metadata,
    /// Excludes of this root only (a config source's), besides `--exclude`.
    pub(crate) excludes: Vec<String>,
}

/// The roots of named sources: each must exist; its entry is named after the source.
fn named_roots(sources: &[NamedSource]) -> Result<Vec<Root>> {
    let mut roots: Vec<Root> = Vec::new();
    for src in sources {
        let abs = normalize(&std::path::absolute(&src.path).at(&src.path)?);
        let meta = std::fs::symlink_metadata(&abs).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::Invalid(format!(
                "source {}: {}: no such file or directory",
                src.name,
                src.path.display()
            )),
            _ => Error::io(&abs, e),
        })?;
        if roots.iter().any(|r| r.name == src.name.as_bytes()) {
            return Err(Error::Invalid(format!("source {} named twice", src.name)));
        }
        roots.push(Root {
            path: abs,
            name: src.name.as_bytes().to_vec(),
            meta,
            excludes: src.excludes.clone(),
        });
    }
    Ok(roots)
}

/// Makes every path absolute (without following a final symlink) and names its root entry.
fn resolve_roots(paths: &[PathBuf]) -> Result<Vec<Root>> {
    if paths.is_empty() {
        return Err(Error::Invalid(
            "nothing to snapshot: give at least one PATH".into(),
        ));
    }
    let mut roots: Vec<Root> = Vec::new();
    for p in paths {
        let abs = std::path::absolute(p).at(p)?;
        let meta = std::fs::symlink_metadata(&abs).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                Error::Invalid(format!("{}: no such file or directory", p.display()))
            }
            _ => Error::io(&abs, e),
        })?;
        let abs = normalize(&abs);
        let base = abs
            .file_name()
            .map(|n| n.as_bytes().to_vec())
            .unwrap_or_else(|| b"root".to_vec());
        let mut name = base.clone();
        let mut n = 2;
        while roots.iter().any(|r| r.name == name) {
            name = [base.as_slice(), format!("~{n}").as_bytes()].concat();
            n += 1;
        }
        if roots.iter().any(|r| r.path == abs) {
            continue;
        }
        roots.push(Root {
            path: abs,
            name,
            meta,
            excludes: Vec::new(),
        });
    }
    Ok(roots)
}

/// Removes `.` and `..` components lexically (`std::path::absolute` keeps `..`).
fn normalize(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// What the walk leaves out besides ignore files: `--exclude` globs and the vault itself.
#[derive(Clone)]
pub(crate) struct WalkRules {
    pub(crate) excludes: Vec<String>,
    /// The vault's own directory (device, inode), never snapshotted into itself, whatever path
    /// (symlinked or not) leads to it.
    pub(crate) vault: (u64, u64),
}

fn build_walk(root: &Root, rules: &WalkRules) -> Result<ignore::Walk> {
    let mut overrides = ignore::overrides::OverrideBuilder::new(&root.path);
    for glob in rules.excludes.iter().chain(&root.excludes) {
        overrides
            .add(&format!("!{glob}"))
            .map_err(|e| Error::Invalid(format!("--exclude {glob:?}: {e}")))?;
    }
    let overrides = overrides
        .build()
        .map_err(|e| Error::Invalid(format!("--exclude: {e}")))?;
    Ok(ignore::WalkBuilder::new(&root.path)
        .hidden(false)
        .parents(false)
        .ignore(true)
        .git_ignore(true)
        .git_global(false)
        .git_exclude(false)
        .require_git(false)
        .follow_links(false)
        .add_custom_ignore_filename(".vaultignore")
        .overrides(overrides)
        .sort_by_file_name(|a, b| a.as_bytes().cmp(b.as_bytes()))
        .filter_entry({
            let (dev, ino) = rules.vault;
            // The inode comes from readdir for free; stat only on a match.
            move |e| e.ino() != Some(ino) || e.metadata().map(|m| m.dev() != dev).unwrap_or(true)
        })
        .build())
}

/// Sums file sizes on the side so the progress bar can show an ETA.
pub(crate) fn estimate_total(roots: &[Root], rules: &WalkRules, progress: &Progress) {
    for r in roots {
        if !r.meta.is_dir() {
            progress.inc_total(r.meta.len());
            continue;
        }
        let Ok(walk) = build_walk(r, rules) else {
            return;
        };
        for d in walk.flatten() {
            if let Some(m) = d.metadata().ok().filter(|m| m.is_file()) {
                progress.inc_total(m.len());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ChunkerParams;
    use crate::keys::SecretSource;
    use crate::lock::LockMode;
    use crate::tree::Node;
    use crate::vault::Vault;

    fn opts(paths: Vec<PathBuf>) -> SnapshotOptions {
        SnapshotOptions {
            paths,
            ..Default::default()
        }
    }

    /// Waits until the scan thread has queued `n` batches (a small tree is one batch).
    fn wait_queued(scan: &Scan, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while scan.rx.len() < n {
            assert!(Instant::now() < deadline, "the scan never queued its batch");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_scan_walks_sorted_depth_first_leaves_out_the_vault_and_ends_each_root() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        std::fs::create_dir_all(data.join("b")).unwrap();
        std::fs::create_dir_all(data.join("vault")).unwrap();
        for f in ["c", "a", "b/x"] {
            std::fs::write(data.join(f), f).unwrap();
        }
        let other = tmp.path().join("other");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(other.join("y"), b"y").unwrap();
        let mut scan = Scan::start(&opts(vec![data.clone(), other]), &data.join("vault")).unwrap();
        let mut seen = Vec::new();
        while let Some(item) = scan.next() {
            seen.push(match item {
                Scanned::Entry { depth, path, meta } => {
                    assert!(meta.is_ok());
                    format!("{depth}:{}", path.file_name().unwrap().to_str().unwrap())
                }
                Scanned::Error(e) => panic!("{e}"),
                Scanned::RootDone => "end".into(),
            });
        }
        assert_eq!(
            seen,
            ["1:a", "1:b", "2:x", "1:c", "end", "1:y", "end"],
            "sorted, depth-first, no vault, one end per root"
        );
    }

    #[test]
    fn a_scan_serves_only_the_options_it_was_started_for_and_only_while_fresh() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let o = opts(vec![data.clone()]);
        let mut scan = Scan::start(&o, tmp.path()).unwrap();
        assert!(scan.serves(&o));
        assert!(!scan.serves(&opts(vec![data.clone(), tmp.path().into()])));
        assert!(!scan.serves(&SnapshotOptions {
            excludes: vec!["*.log".into()],
            ..o.clone()
        }));
        // Named sources: the same, or one whose own excludes differ.
        let source = NamedSource {
            name: "app".into(),
            path: data.clone(),
            excludes: vec![],
        };
        let named = SnapshotOptions {
            sources: vec![source.clone()],
            ..Default::default()
        };
        let by_name = Scan::start(&named, tmp.path()).unwrap();
        assert!(by_name.serves(&named));
        assert!(!by_name.serves(&SnapshotOptions {
            sources: vec![NamedSource {
                excludes: vec!["*.tmp".into()],
                ..source
            }],
            ..Default::default()
        }));
        scan.started -= SCAN_MAX_AGE + Duration::from_millis(1);
        assert!(!scan.serves(&o), "too old");
        // A bad glob or a missing path fails at the start.
        assert!(Scan::start(
            &SnapshotOptions {
                excludes: vec!["a[".into()],
                ..o.clone()
            },
            tmp.path()
        )
        .is_err());
        assert!(Scan::start(&opts(vec![tmp.path().join("nope")]), tmp.path()).is_err());
    }

    #[test]
    fn a_stale_scan_is_walked_again_so_the_snapshot_sees_what_changed_since() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("a.txt"), b"a").unwrap();
        let root = tmp.path().join("vault");
        Vault::init(&root, ChunkerParams::default(), None).unwrap();
        let o = opts(vec![data.clone()]);
        let mut v = Vault::open(&root, LockMode::Append, None, &SecretSource::default()).unwrap();
        let mut file_names = |fresh: bool, new_file: &str| {
            let mut scan = Scan::start(&o, &root).unwrap();
            wait_queued(&scan, 1); // the scan saw the tree as it was
            std::fs::write(data.join(new_file), b"new").unwrap();
            scan.started = if fresh {
                Instant::now() // however slow the machine
            } else {
                Instant::now() - SCAN_MAX_AGE - Duration::from_millis(1)
            };
            let done = crate::snapshot::snapshot_scanned(
                &mut v,
                &o,
                Some(scan),
                &crate::progress::Progress::hidden(),
            )
            .unwrap();
            let reader = v.blob_reader().unwrap();
            let top = reader.tree(&done.manifest.tree).unwrap();
            let Node::Dir { subtree } = &top.get(b"data").unwrap().node else {
                panic!("data is not a directory");
            };
            reader
                .tree(subtree)
                .unwrap()
                .entries
                .iter()
                .map(|e| String::from_utf8(e.name.clone()).unwrap())
                .collect::<Vec<_>>()
        };
        // A fresh scan is used as it is: the file written after it is not in this snapshot.
        assert_eq!(file_names(true, "b.txt"), ["a.txt"]);
        // A stale one is walked again.
        assert_eq!(file_names(false, "c.txt"), ["a.txt", "b.txt", "c.txt"]);
    }
}
