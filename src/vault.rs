//! The vault on disk: its layout, opening and locking it, and reading its objects.
//!
//! ```text
//! config.json  packs/<2 hex>/<id>.pack  snapshots/<id>.json  refs/  index.sqlite  audit.log  lock
//! ```
//! A `Vault` holds the lock for as long as it lives. Writers (exclusive lock) reconcile the index
//! with the packs on disk when they open, so a pack published by a run that was killed before it
//! could index it is reused rather than written again.

use std::collections::HashMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::audit::{self, AuditRecord};
use crate::blob;
use crate::config::{ChunkerParams, VaultConfig};
use crate::error::{Error, IoContext, Result};
use crate::fsutil;
use crate::id::{BlobId, PackId, SnapshotId};
use crate::index::{Index, Location};
use crate::lock::{LockMode, VaultLock};
use crate::manifest::Manifest;
use crate::pack;
use crate::tree::Tree;

const CONFIG_FILE: &str = "config.json";
const INDEX_FILE: &str = "index.sqlite";
const AUDIT_FILE: &str = "audit.log";
/// Open pack files kept for reading before the cache is emptied (stays well under fd limits).
const OPEN_PACKS_MAX: usize = 256;

/// A snapshot's id with its manifest.
pub type Snapshot = (SnapshotId, Manifest);

/// An open, locked vault.
pub struct Vault {
    root: PathBuf,
    pub config: VaultConfig,
    index: Index,
    mode: LockMode,
    _lock: VaultLock,
}

/// What [`Vault::reconcile`] changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reconciled {
    pub packs_added: usize,
    pub packs_dropped: usize,
    pub temp_removed: usize,
}

impl Vault {
    /// Creates a new vault in `root` (which may exist but must be empty).
    pub fn init(root: &Path, chunker: ChunkerParams) -> Result<VaultConfig> {
        if root.join(CONFIG_FILE).exists() {
            return Err(Error::Invalid(format!(
                "{} is already a vault",
                root.display()
            )));
        }
        if root.exists() {
            if !root.is_dir() {
                return Err(Error::NotEmpty { path: root.into() });
            }
            if fs::read_dir(root).at(root)?.next().is_some() {
                return Err(Error::NotEmpty { path: root.into() });
            }
        }
        fsutil::create_dir_durable(root)?;
        let config = VaultConfig::new(chunker)?;
        for d in ["packs", "snapshots", "refs"] {
            fsutil::create_dir_durable(&root.join(d))?;
        }
        Index::open(&root.join(INDEX_FILE))?;
        audit::append(
            &root.join(AUDIT_FILE),
            &AuditRecord::new("init", None, "ok")
                .with_detail(serde_json::json!({"vault_id": config.id})),
        )?;
        // config.json last: a directory without it is not a vault, so a crash mid-init is retried.
        fsutil::atomic_write(&root.join(CONFIG_FILE), &config.to_bytes())?;
        Ok(config)
    }

    /// Opens an existing vault, taking the lock in `mode`.
    pub fn open(root: &Path, mode: LockMode, wait: Option<Duration>) -> Result<Vault> {
        Self::open_inner(root, mode, wait, false)
    }

    /// Opens a vault exclusively with a new, empty index (for `reindex`: the old one may be
    /// unreadable).
    pub fn open_with_new_index(root: &Path, wait: Option<Duration>) -> Result<Vault> {
        Self::open_inner(root, LockMode::Exclusive, wait, true)
    }

    fn open_inner(
        root: &Path,
        mode: LockMode,
        wait: Option<Duration>,
        new_index: bool,
    ) -> Result<Vault> {
        if !root.join(CONFIG_FILE).exists() {
            return Err(Error::NoVault { path: root.into() });
        }
        let config = VaultConfig::load(&root.join(CONFIG_FILE))?;
        let lock = VaultLock::acquire(root, mode, wait)?;
        if new_index {
            for suffix in ["", "-wal", "-shm", "-journal"] {
                let p = root.join(format!("{INDEX_FILE}{suffix}"));
                match fs::remove_file(&p) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(Error::io(p, e))
                    }
                    _ => {}
                }
            }
        }
        let index_missing = !root.join(INDEX_FILE).exists();
        let index = Index::open(&root.join(INDEX_FILE))?;
        let mut v = Vault {
            root: root.into(),
            config,
            index,
            mode,
            _lock: lock,
        };
        if mode == LockMode::Exclusive || index_missing {
            v.reconcile()?;
        }
        Ok(v)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn packs_dir(&self) -> PathBuf {
        self.root.join("packs")
    }
    pub fn snapshots_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }
    pub fn audit_path(&self) -> PathBuf {
        self.root.join(AUDIT_FILE)
    }
    pub fn index(&self) -> &Index {
        &self.index
    }
    pub fn index_mut(&mut self) -> &mut Index {
        &mut self.index
    }

    /// Appends an audit record.
    pub fn audit(&self, record: &AuditRecord) -> Result<()> {
        audit::append(&self.audit_path(), record)
    }

    /// Every pack file on disk with its size.
    pub fn pack_files(&self) -> Result<HashMap<PackId, u64>> {
        let dir = self.packs_dir();
        let mut out = HashMap::new();
        for sub in fs::read_dir(&dir).at(&dir)? {
            let sub = sub.at(&dir)?;
            if !sub.file_type().at(sub.path())?.is_dir() {
                continue;
            }
            for f in fs::read_dir(sub.path()).at(sub.path())? {
                let f = f.at(sub.path())?;
                if let Some(id) = f.file_name().to_str().and_then(pack::parse_pack_name) {
                    out.insert(id, f.metadata().at(f.path())?.len());
                }
            }
        }
        Ok(out)
    }

    /// Brings the index in line with `packs/`: indexes packs it lacks (from their trailers) and
    /// forgets packs that are gone. Writers call this on open; readers only when the index is new.
    pub fn reconcile(&mut self) -> Result<Reconciled> {
        let mut r = Reconciled::default();
        if self.mode == LockMode::Exclusive {
            r.temp_removed = fsutil::sweep_temp_files(&self.packs_dir())?
                + fsutil::sweep_temp_files(&self.snapshots_dir())?
                + fsutil::sweep_temp_files(&self.root)?;
        }
        let on_disk = self.pack_files()?;
        let indexed = self.index.packs()?;
        for (id, size) in &on_disk {
            if indexed.get(id) != Some(size) {
                let path = pack::pack_path(&self.packs_dir(), id);
                // A pack whose trailer does not parse is left for `verify` to report.
                if let Ok(entries) = pack::read_trailer(&path) {
                    self.index.add_pack(id, *size, &entries)?;
                    r.packs_added += 1;
                }
            }
        }
        for id in indexed.keys() {
            if !on_disk.contains_key(id) {
                self.index.remove_pack(id)?;
                r.packs_dropped += 1;
            }
        }
        Ok(r)
    }

    /// Rebuilds the index from pack trailers alone.
    pub fn reindex(&mut self) -> Result<(usize, usize, Vec<String>)> {
        self.index.clear()?;
        let mut packs = 0;
        let mut blobs = 0;
        let mut problems = Vec::new();
        for (id, size) in self.pack_files()? {
            let path = pack::pack_path(&self.packs_dir(), &id);
            match pack::read_trailer(&path) {
                Ok(entries) => {
                    self.index.add_pack(&id, size, &entries)?;
                    packs += 1;
                    blobs += entries.len();
                }
                Err(e) => problems.push(e.full()),
            }
        }
        Ok((packs, blobs, problems))
    }

    /// Ids of the manifests in `snapshots/`, unordered.
    pub fn snapshot_ids(&self) -> Result<Vec<SnapshotId>> {
        let dir = self.snapshots_dir();
        let mut out = Vec::new();
        for f in fs::read_dir(&dir).at(&dir)? {
            let f = f.at(&dir)?;
            let name = f.file_name();
            if let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|h| SnapshotId::from_hex(h).ok())
            {
                out.push(id);
            }
        }
        Ok(out)
    }

    fn manifest_path(&self, id: &SnapshotId) -> PathBuf {
        self.snapshots_dir().join(format!("{id}.json"))
    }

    /// Loads one manifest, checking it against its id.
    pub fn manifest(&self, id: &SnapshotId) -> Result<Manifest> {
        Manifest::load(&self.manifest_path(id), id)
    }

    /// Every valid snapshot, oldest first, and the errors of those that did not load.
    pub fn snapshots(&self) -> Result<(Vec<Snapshot>, Vec<Error>)> {
        let mut ok = Vec::new();
        let mut bad = Vec::new();
        for id in self.snapshot_ids()? {
            match self.manifest(&id) {
                Ok(m) => ok.push((id, m)),
                Err(e) => bad.push(e),
            }
        }
        ok.sort_by(|a, b| {
            (a.1.system_time(), &a.1.time, a.0).cmp(&(b.1.system_time(), &b.1.time, b.0))
        });
        Ok((ok, bad))
    }

    /// Resolves `latest`, a full id, or a unique id prefix.
    pub fn resolve(&self, reference: &str) -> Result<(SnapshotId, Manifest)> {
        let fail = |reason: &str| Error::SnapshotRef {
            reference: reference.into(),
            reason: reason.into(),
        };
        if reference == "latest" {
            let (snaps, _) = self.snapshots()?;
            return snaps
                .into_iter()
                .last()
                .ok_or_else(|| fail("the vault has no snapshots"));
        }
        if reference.is_empty() || !reference.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(fail("not an id, a hex prefix or `latest`"));
        }
        let lower = reference.to_ascii_lowercase();
        let matches: Vec<SnapshotId> = self
            .snapshot_ids()?
            .into_iter()
            .filter(|id| id.to_hex().starts_with(&lower))
            .collect();
        match matches.as_slice() {
            [id] => Ok((*id, self.manifest(id)?)),
            [] => Err(fail("no such snapshot")),
            _ => Err(fail(&format!(
                "prefix matches {} snapshots; give more digits",
                matches.len()
            ))),
        }
    }

    /// Writes a manifest durably and returns its id.
    pub fn write_manifest(&self, m: &mut Manifest) -> Result<SnapshotId> {
        let (id, bytes) = m.seal();
        fsutil::atomic_write(&self.manifest_path(&id), &bytes)?;
        Ok(id)
    }

    /// A reader of blobs backed by the full location map (one query, then no SQLite).
    pub fn blob_reader(&self) -> Result<BlobReader> {
        Ok(BlobReader {
            packs_dir: self.packs_dir(),
            locations: self.index.locations()?,
            files: Mutex::new(HashMap::new()),
        })
    }
}

/// Reads and checks blobs from packs; safe to share between threads.
pub struct BlobReader {
    packs_dir: PathBuf,
    locations: HashMap<BlobId, Location>,
    files: Mutex<HashMap<PackId, Arc<File>>>,
}

impl BlobReader {
    /// Where a blob is, if the index knows it.
    pub fn location(&self, id: &BlobId) -> Option<&Location> {
        self.locations.get(id)
    }

    /// All known locations.
    pub fn locations(&self) -> &HashMap<BlobId, Location> {
        &self.locations
    }

    /// The path of a pack.
    pub fn pack_path(&self, id: &PackId) -> PathBuf {
        pack::pack_path(&self.packs_dir, id)
    }

    fn file(&self, id: &PackId) -> Result<Arc<File>> {
        let mut files = self
            .files
            .lock()
            .expect("invariant: pack file cache lock is not poisoned");
        if let Some(f) = files.get(id) {
            return Ok(f.clone());
        }
        if files.len() >= OPEN_PACKS_MAX {
            files.clear();
        }
        let path = self.pack_path(id);
        let f = Arc::new(File::open(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::Missing {
                object: format!("pack {id}"),
            },
            _ => Error::io(&path, e),
        })?);
        files.insert(*id, f.clone());
        Ok(f)
    }

    /// Reads, decompresses and hash-checks one blob.
    pub fn read(&self, id: &BlobId) -> Result<Vec<u8>> {
        let loc = self.locations.get(id).ok_or_else(|| Error::Missing {
            object: format!("blob {id} (not in the index)"),
        })?;
        let f = self.file(&loc.pack)?;
        let stored = pack::read_stored(&f, &self.pack_path(&loc.pack), &loc.entry)?;
        blob::open(id, loc.entry.compression, loc.entry.raw_len, &stored).map_err(|e| match e {
            Error::Corrupt { reason, .. } => {
                Error::corrupt(format!("blob {id} in pack {}", loc.pack), reason)
            }
            other => other,
        })
    }

    /// Reads and decodes a tree blob.
    pub fn tree(&self, id: &BlobId) -> Result<Tree> {
        let bytes = self.read(id)?;
        Tree::decode(&bytes).map_err(|r| Error::corrupt(format!("tree {id}"), r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::Progress;
    use crate::snapshot::{snapshot, SnapshotOptions};

    #[test]
    fn reconcile_indexes_published_but_unindexed_packs_and_sweeps_temp_files() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        fs::create_dir(&data).unwrap();
        fs::write(data.join("f"), b"some bytes worth keeping".repeat(100)).unwrap();
        let root = tmp.path().join("v");
        Vault::init(&root, ChunkerParams::default()).unwrap();
        {
            let mut v = Vault::open(&root, LockMode::Exclusive, None).unwrap();
            let opts = SnapshotOptions {
                paths: vec![data.clone()],
                ..Default::default()
            };
            snapshot(&mut v, &opts, &Progress::hidden()).unwrap();
            // As if killed after publishing the pack but before indexing it.
            v.index_mut().clear().unwrap();
        }
        fs::write(root.join("packs").join(".tmp-leftover"), b"half a pack").unwrap();
        let mut v = Vault::open(&root, LockMode::Exclusive, None).unwrap();
        assert_eq!(v.index().packs().unwrap().len(), 1);
        assert!(!root.join("packs").join(".tmp-leftover").exists());
        let opts = SnapshotOptions {
            paths: vec![data],
            no_parent: true,
            ..Default::default()
        };
        let again = snapshot(&mut v, &opts, &Progress::hidden()).unwrap();
        assert_eq!(
            again.manifest.stats.bytes_stored, 0,
            "data already in a pack is reused"
        );
    }

    #[test]
    fn resolve_latest_prefix_and_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("v");
        Vault::init(&root, ChunkerParams::default()).unwrap();
        let mut v = Vault::open(&root, LockMode::Exclusive, None).unwrap();
        assert!(matches!(
            v.resolve("latest"),
            Err(Error::SnapshotRef { .. })
        ));
        let opts = SnapshotOptions {
            paths: vec![tmp.path().join("v/config.json")],
            ..Default::default()
        };
        let s = snapshot(&mut v, &opts, &Progress::hidden()).unwrap();
        assert_eq!(v.resolve("latest").unwrap().0, s.id);
        assert_eq!(v.resolve(&s.id.to_hex()[..6]).unwrap().0, s.id);
        assert!(v.resolve("zz").is_err());
        assert!(Vault::init(&root, ChunkerParams::default()).is_err());
    }
}
