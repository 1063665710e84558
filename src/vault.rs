//! The vault on disk: its layout, opening and locking it, and reading its objects.
//!
//! ```text
//! config.json  keys/<id>.json  packs/<2 hex>/<id>.pack  snapshots/<id>.json  refs/  index.sqlite
//! audit.log  lock
//! ```
//! A `Vault` holds the lock for as long as it lives. Opening an encrypted vault unlocks its master
//! key from one of the key files with the secret the caller's [`SecretSource`] provides, and every
//! object is then read and written through the vault's [`Crypto`]. Writers (exclusive lock)
//! reconcile the index with the packs on disk when they open, so a pack published by a run that
//! was killed before it could index it is reused rather than written again.

use std::collections::HashMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::audit::{self, AuditRecord};
use crate::blob::{self, BlobKind};
use crate::config::{Chunking, VaultConfig};
use crate::crypto::{Crypto, Domain};
use crate::error::{Error, IoContext, Result};
use crate::fsutil;
use crate::id::{BlobId, PackId, SnapshotId};
use crate::index::{Index, Location, LocationMap};
use crate::keys::{self, KdfParams, KeyFile, MasterKey, Secret, SecretSource};
use crate::lock::{LockMode, VaultLock};
use crate::manifest::{Manifest, MANIFEST_MAX_BYTES};
use crate::pack;
use crate::remote::RemotePacks;
use crate::tree::{self, Lists, StoredTree, Tree};

const CONFIG_FILE: &str = "config.json";
const INDEX_FILE: &str = "index.sqlite";
const AUDIT_FILE: &str = "audit.log";
const KEYS_DIR: &str = "keys";
/// Largest key file read.
const KEY_FILE_MAX_BYTES: u64 = 64 * 1024;
/// Open pack files kept for reading before the cache is emptied (stays well under fd limits).
const OPEN_PACKS_MAX: usize = 256;
/// Bytes of opened tree blobs kept for the vault's readers (emptied when full). A fixed part of
/// the memory bound: a million small files in a thousand directories have 33 MB of trees.
const TREE_CACHE_BYTES: usize = 16 << 20;

/// Opened tree blobs, shared by every reader of one open vault. Trees are immutable and named by
/// their content, so an entry never goes stale; the gates walk the same trees several times per
/// snapshot (and a snapshot's unchanged directories are its parent's trees), which this saves
/// decrypting and decompressing again.
#[derive(Default)]
struct TreeCache {
    trees: HashMap<BlobId, Arc<Vec<u8>>>,
    bytes: usize,
}

/// A snapshot's id with its manifest.
pub type Snapshot = (SnapshotId, Manifest);

/// An open, locked vault.
pub struct Vault {
    root: PathBuf,
    pub config: VaultConfig,
    crypto: Crypto,
    /// The master key and the id of the key file that unlocked it (encrypted vaults).
    master: Option<(MasterKey, String)>,
    index: Index,
    /// Where the packs are: in `packs/`, or on a remote this directory mirrors.
    packs: PackSource,
    mode: LockMode,
    /// Held while the vault is open (`None` only inside [`Vault::relock`], or after it failed).
    lock: Option<VaultLock>,
    trees: Arc<Mutex<TreeCache>>,
    /// The index's location map with the index version it was read at: the gates run twice per
    /// snapshot and each needs a reader, which would otherwise read every row again.
    locations: Mutex<Option<(IndexVersion, Locations)>>,
    /// Remote packs the last reconcile could not read while the remote still served the vault's
    /// config: left out of the index and tried again at the next open (see [`Vault::reconcile`]).
    unread_packs: Vec<String>,
}

type IndexVersion = (i64, u64);
type Locations = Arc<LocationMap>;

/// Where a vault's packs are read from.
#[derive(Clone)]
pub enum PackSource {
    /// `packs/` under the vault root.
    Local(PathBuf),
    /// A remote, read by range requests through a local cache (see [`crate::remote`]).
    Remote(Arc<RemotePacks>),
}

/// What [`Vault::reconcile`] changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reconciled {
    pub packs_added: usize,
    pub packs_dropped: usize,
    pub temp_removed: usize,
}

impl Vault {
    /// Creates a new vault in `root` (which may exist but must be empty): encrypted with a fresh
    /// master key wrapped for `key` (a secret and its KDF cost), or plain when `key` is `None`.
    /// Returns the config and, when encrypted, the new key file's id.
    pub fn init(
        root: &Path,
        chunking: impl Into<Chunking>,
        key: Option<(&Secret, &KdfParams)>,
    ) -> Result<(VaultConfig, Option<String>)> {
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
        let config = VaultConfig::new(chunking, key.is_some())?;
        for d in ["packs", "snapshots", "refs", KEYS_DIR] {
            fsutil::create_dir_durable(&root.join(d))?;
        }
        let key_id = match key {
            Some((secret, kdf)) => {
                let master = MasterKey::generate()?;
                Some(write_key_file(root, &config, &master, secret, kdf)?)
            }
            None => None,
        };
        Index::open(&root.join(INDEX_FILE))?;
        audit::append(
            &root.join(AUDIT_FILE),
            &AuditRecord::new("init", None, "ok")
                .with_detail(serde_json::json!({"vault_id": config.id})),
        )?;
        // config.json last: a directory without it is not a vault, so a crash mid-init is retried.
        fsutil::atomic_write(&root.join(CONFIG_FILE), &config.to_bytes())?;
        Ok((config, key_id))
    }

    /// Opens an existing vault, taking the lock in `mode`; an encrypted vault asks `secrets` for
    /// its password or key file (a plain one never does).
    pub fn open(
        root: &Path,
        mode: LockMode,
        wait: Option<Duration>,
        secrets: &SecretSource,
    ) -> Result<Vault> {
        Self::open_inner(root, mode, wait, secrets, false, None)
    }

    /// Opens the local mirror of a remote vault (see [`crate::remote::open`]): manifests, keys and
    /// the ref are files in `root`, the packs are read from the remote. Exclusive: opening
    /// indexes the remote's new packs from their trailers.
    pub fn open_mirror(
        root: &Path,
        packs: Arc<RemotePacks>,
        wait: Option<Duration>,
        secrets: &SecretSource,
    ) -> Result<Vault> {
        Self::open_inner(root, LockMode::Exclusive, wait, secrets, false, Some(packs))
    }

    /// Opens a vault exclusively with a new, empty index (for `reindex`: the old one may be
    /// unreadable).
    pub fn open_with_new_index(
        root: &Path,
        wait: Option<Duration>,
        secrets: &SecretSource,
    ) -> Result<Vault> {
        Self::open_inner(root, LockMode::Exclusive, wait, secrets, true, None)
    }

    fn open_inner(
        root: &Path,
        mode: LockMode,
        wait: Option<Duration>,
        secrets: &SecretSource,
        new_index: bool,
        remote: Option<Arc<RemotePacks>>,
    ) -> Result<Vault> {
        if !root.join(CONFIG_FILE).exists() {
            return Err(Error::NoVault { path: root.into() });
        }
        let config = VaultConfig::load(&root.join(CONFIG_FILE))?;
        // Unlock before locking: a prompt must not hold the vault's lock.
        let (crypto, master) = if config.is_encrypted() {
            // A stray or damaged file in keys/ must not lock everyone out: unlock with the key
            // files that parse (`key list` still reports the others).
            let (files, bad) = read_key_files_lenient(root)?;
            if files.is_empty() {
                return Err(match bad.into_iter().next() {
                    Some(e) => e,
                    None => Error::Missing {
                        object: format!("key files in {}", root.join(KEYS_DIR).display()),
                    },
                });
            }
            let secret = secrets.secret("vault password")?;
            let key_files: Vec<KeyFile> = files.into_iter().map(|(_, k)| k).collect();
            let (i, master) = keys::unlock(&key_files, &secret, &config.id)?;
            (
                Crypto::from_master(master.as_bytes()),
                Some((master, key_files[i].id().to_hex())),
            )
        } else {
            (Crypto::plain(), None)
        };
        let lock = VaultLock::acquire(root, mode, wait)?;
        if new_index {
            // The main file last: a WAL left beside a new, empty database would be replayed
            // into it. Without its WAL the old file is still a consistent (older) index.
            for suffix in ["-wal", "-shm", "-journal", ""] {
                let p = root.join(format!("{INDEX_FILE}{suffix}"));
                match fs::remove_file(&p) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(Error::io(p, e))
                    }
                    _ => {}
                }
            }
        }
        let index = Index::open(&root.join(INDEX_FILE))?;
        // Fresh, or emptied by another process's migration that has not refilled it yet.
        let index_missing = index.is_fresh() || index.is_empty()?;
        let mut v = Vault {
            root: root.into(),
            config,
            crypto,
            master,
            index,
            packs: match remote {
                Some(r) => PackSource::Remote(r),
                None => PackSource::Local(root.join("packs")),
            },
            mode,
            lock: Some(lock),
            trees: Arc::default(),
            locations: Mutex::new(None),
            unread_packs: Vec::new(),
        };
        if mode.writes() || index_missing {
            v.reconcile()?;
        }
        Ok(v)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Trades the lock for one in `mode` (prune: shared while it marks, exclusive to delete).
    /// The lock is released in between, so whatever was read under the old one must be checked
    /// again; a writer then reconciles the index with `packs/`.
    pub fn relock(&mut self, mode: LockMode, wait: Option<Duration>) -> Result<()> {
        self.lock = None;
        // Packs may go while unlocked: cached trees must be read (and found) again.
        *self
            .trees
            .lock()
            .expect("invariant: tree cache lock is not poisoned") = TreeCache::default();
        self.lock = Some(VaultLock::acquire(&self.root, mode, wait)?);
        self.mode = mode;
        if mode.writes() {
            self.reconcile()?;
        }
        Ok(())
    }

    /// The mode of the lock held.
    pub fn lock_mode(&self) -> LockMode {
        self.mode
    }
    /// How this vault's objects are sealed and its ids keyed.
    pub fn crypto(&self) -> &Crypto {
        &self.crypto
    }
    /// The id of the key file that unlocked this vault (`None` for a plain vault).
    pub fn key_id(&self) -> Option<&str> {
        self.master.as_ref().map(|(_, id)| id.as_str())
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

    /// Every pack with its size: the files in `packs/`, or the remote's packs.
    pub fn pack_files(&self) -> Result<HashMap<PackId, u64>> {
        match &self.packs {
            PackSource::Local(dir) => local_pack_files(dir),
            PackSource::Remote(r) => r.list(),
        }
    }

    /// Reads a pack's trailer from wherever the packs are.
    /// A pack's trailer entries, read from its end (range reads on a remote).
    pub fn read_trailer(&self, id: &PackId, size: u64) -> Result<Vec<pack::PackEntry>> {
        match &self.packs {
            PackSource::Local(dir) => pack::read_trailer(&self.crypto, &pack::pack_path(dir, id)),
            PackSource::Remote(r) => r.read_trailer(&self.crypto, id, size),
        }
    }

    /// Brings the index in line with `packs/`: indexes packs it lacks (from their trailers) and
    /// forgets packs that are gone. Writers call this on open; readers only when the index is new.
    pub fn reconcile(&mut self) -> Result<Reconciled> {
        let mut r = Reconciled::default();
        if self.mode.writes() {
            r.temp_removed = fsutil::sweep_temp_files(&self.packs_dir())?
                + fsutil::sweep_temp_files(&self.snapshots_dir())?
                + fsutil::sweep_temp_files(&self.root)?;
        }
        // The index before the listing: a writer (or prune's phase 1) renames a pack into place
        // before indexing it, and only prune's delete phase, under the exclusive lock, removes
        // packs. So a pack indexed meanwhile is not taken for one that vanished.
        let indexed = self.index.packs()?;
        let on_disk = self.pack_files()?;
        // Every pack it lacks goes in in one transaction: an index built from nothing (a new or
        // deleted one, `vault reindex`) appears whole or not at all, since readers trust a
        // non-empty index to hold every pack a manifest needs.
        let mut read: Vec<(PackId, u64, Vec<pack::PackEntry>)> = Vec::new();
        self.unread_packs.clear();
        for (id, size) in &on_disk {
            if indexed.get(id) != Some(size) {
                match self.read_trailer(id, *size) {
                    Ok(entries) => read.push((*id, *size, entries)),
                    // A remote that fails (after its retries) is an error, not a damaged pack;
                    // but one object it will not serve, while it still serves the vault's
                    // config, must not keep every other pack from being read: that pack is
                    // left out, named, and tried again at the next open. Readers then find its
                    // blobs missing and report the files they break; prune refuses to run.
                    Err(e @ Error::Backend(_)) => {
                        if !self.remote_serves_config() {
                            return Err(e);
                        }
                        self.unread_packs.push(format!(
                            "pack {} on the remote could not be read, so the files whose data \
                             it holds cannot be restored until a later run reads it: {}",
                            id,
                            e.full()
                        ));
                    }
                    // A pack whose trailer does not parse is left for `verify` to report.
                    Err(_) => {}
                }
                crate::crashpoint::at("reconcile-mid-add");
            }
        }
        let rows: Vec<(PackId, u64, &[pack::PackEntry])> = read
            .iter()
            .map(|(id, size, entries)| (*id, *size, entries.as_slice()))
            .collect();
        self.index.add_packs(&rows)?;
        r.packs_added += rows.len();
        let vanished: Vec<PackId> = indexed
            .keys()
            .filter(|id| !on_disk.contains_key(*id))
            .copied()
            .collect();
        self.index.remove_packs(&vanished)?;
        r.packs_dropped += vanished.len();
        Ok(r)
    }

    /// Packs of the remote that opening this mirror could not read (empty for a local vault),
    /// one message each.
    pub fn unread_packs(&self) -> &[String] {
        &self.unread_packs
    }

    /// Whether the packs are on a remote that still answers for the vault's `config.json`.
    fn remote_serves_config(&self) -> bool {
        match &self.packs {
            PackSource::Remote(r) => r.serves_config(),
            PackSource::Local(_) => false,
        }
    }

    /// Rebuilds the index from pack trailers alone.
    pub fn reindex(&mut self) -> Result<(usize, usize, Vec<String>)> {
        // Every trailer is read first and the rows replaced in one transaction, so a reindex
        // killed midway leaves the old index whole (about 100 bytes of memory per blob).
        let mut read = Vec::new();
        let mut problems = Vec::new();
        for (id, size) in self.pack_files()? {
            match self.read_trailer(&id, size) {
                Ok(entries) => read.push((id, size, entries)),
                Err(e) => problems.push(e.full()),
            }
        }
        let rows: Vec<(PackId, u64, &[crate::pack::PackEntry])> = read
            .iter()
            .map(|(id, size, entries)| (*id, *size, entries.as_slice()))
            .collect();
        self.index.replace_all(&rows)?;
        let blobs = rows.iter().map(|r| r.2.len()).sum();
        Ok((rows.len(), blobs, problems))
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

    /// A manifest's JSON as stored (opened, in an encrypted vault); `None` when there is no such
    /// file. A manifest too large or that does not open is corrupt.
    pub fn manifest_bytes(&self, id: &SnapshotId) -> Result<Option<Vec<u8>>> {
        let path = self.manifest_path(id);
        let object = || format!("manifest {}", path.display());
        let len = match fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&path, e)),
        };
        if len > MANIFEST_MAX_BYTES {
            return Err(Error::corrupt(
                object(),
                format!("{len} bytes is too large"),
            ));
        }
        let stored = fs::read(&path).at(&path)?;
        self.crypto
            .open_json(Domain::Manifest, &id.0, &stored)
            .map(Some)
            .map_err(|r| Error::corrupt(object(), r))
    }

    /// Loads one manifest, checking it against its id.
    pub fn manifest(&self, id: &SnapshotId) -> Result<Manifest> {
        let path = self.manifest_path(id);
        let bytes = self.manifest_bytes(id)?.ok_or_else(|| Error::Missing {
            object: format!("manifest {}", path.display()),
        })?;
        Manifest::from_bytes(&bytes, id)
            .map_err(|r| Error::corrupt(format!("manifest {}", path.display()), r))
    }

    /// Loads one manifest like [`Vault::manifest`], but `None` when it is gone: a `forget` (an
    /// appending writer) may remove a listed manifest while a reader walks the list.
    pub fn manifest_if_present(&self, id: &SnapshotId) -> Result<Option<Manifest>> {
        match self.manifest(id) {
            Ok(m) => Ok(Some(m)),
            Err(Error::Missing { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every valid snapshot, oldest first, and the errors of those that did not load.
    ///
    /// "Oldest" goes by the time retention judges ([`crate::retention`]): a snapshot's stamp, but
    /// never before its parent's. A snapshot taken after the clock went backwards is still the
    /// newest, so `latest` names it and the next snapshot takes it as parent.
    pub fn snapshots(&self) -> Result<(Vec<Snapshot>, Vec<Error>)> {
        let mut ok = Vec::new();
        let mut bad = Vec::new();
        for id in self.snapshot_ids()? {
            match self.manifest_if_present(&id) {
                Ok(Some(m)) => ok.push((id, m)),
                Ok(None) => {}
                Err(e) => bad.push(e),
            }
        }
        let judged = crate::retention::ordered_times(&ok);
        let when = |(id, m): &Snapshot| judged.get(id).copied().or_else(|| m.system_time());
        ok.sort_by(|a, b| (when(a), &a.1.time, a.0).cmp(&(when(b), &b.1.time, b.0)));
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
        let stored = self.crypto.seal_json(Domain::Manifest, &id.0, bytes);
        fsutil::atomic_write(&self.manifest_path(&id), &stored)?;
        Ok(id)
    }

    /// Removes a snapshot's manifest (idempotent; its data stays until a prune).
    pub fn remove_manifest(&self, id: &SnapshotId) -> Result<()> {
        let path = self.manifest_path(id);
        match crate::crashpoint::io_fault(&path).and_then(|()| fs::remove_file(&path)) {
            Ok(()) => fsutil::sync_dir(&self.snapshots_dir()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// The key files in `keys/`, by path.
    pub fn key_files(&self) -> Result<Vec<(PathBuf, KeyFile)>> {
        read_key_files(&self.root)
    }

    /// Wraps the open vault's master key for one more secret; returns the new key file's id.
    pub fn add_key(&self, secret: &Secret, kdf: &KdfParams) -> Result<String> {
        let (master, _) = self
            .master
            .as_ref()
            .ok_or_else(|| Error::Invalid("this vault is not encrypted: it has no keys".into()))?;
        write_key_file(&self.root, &self.config, master, secret, kdf)
    }

    /// Removes a key file by id or unique id prefix; refuses the key in use and the last one.
    /// Returns the full id.
    pub fn remove_key(&self, reference: &str) -> Result<String> {
        let files = self.key_files()?;
        let lower = reference.to_ascii_lowercase();
        let matches: Vec<&(PathBuf, KeyFile)> = files
            .iter()
            .filter(|(_, k)| !lower.is_empty() && k.id().to_hex().starts_with(&lower))
            .collect();
        let (path, key) = match matches.as_slice() {
            [one] => *one,
            [] => {
                return Err(Error::Invalid(format!(
                    "no key {reference:?} in this vault"
                )))
            }
            _ => {
                return Err(Error::Invalid(format!(
                    "key prefix {reference:?} matches {} keys; give more digits",
                    matches.len()
                )))
            }
        };
        let id = key.id().to_hex();
        if self.key_id() == Some(id.as_str()) {
            return Err(Error::Invalid(format!(
                "key {id} is the one that opened the vault now; open it with another key to \
                 remove this one"
            )));
        }
        if files.len() < 2 {
            return Err(Error::Invalid(
                "refusing to remove the vault's last key".into(),
            ));
        }
        fs::remove_file(path).at(path)?;
        fsutil::sync_dir(&self.root.join(KEYS_DIR))?;
        Ok(id)
    }

    /// Removes the key file that opened this vault (after `add_key` made its replacement).
    pub fn remove_current_key(&self) -> Result<String> {
        let id = self
            .key_id()
            .ok_or_else(|| Error::Invalid("this vault is not encrypted: it has no keys".into()))?
            .to_string();
        if self.key_files()?.len() < 2 {
            return Err(Error::Invalid(
                "refusing to remove the vault's last key".into(),
            ));
        }
        let path = self.root.join(KEYS_DIR).join(format!("{id}.json"));
        fs::remove_file(&path).at(&path)?;
        fsutil::sync_dir(&self.root.join(KEYS_DIR))?;
        Ok(id)
    }

    /// The full location map, read again only when the index changed since the last time.
    fn locations(&self) -> Result<Locations> {
        let version = self.index.version()?;
        let mut cached = self
            .locations
            .lock()
            .expect("invariant: location cache lock is not poisoned");
        if let Some((v, map)) = cached.as_ref() {
            if *v == version {
                return Ok(map.clone());
            }
        }
        let map = Arc::new(self.index.locations()?);
        *cached = Some((version, map.clone()));
        Ok(map)
    }

    /// A reader of blobs backed by the full location map (one query, then no SQLite).
    pub fn blob_reader(&self) -> Result<BlobReader> {
        Ok(BlobReader {
            packs: self.packs.clone(),
            crypto: self.crypto.clone(),
            locations: self.locations()?,
            files: Mutex::new(HashMap::new()),
            trees: self.trees.clone(),
        })
    }
}

/// Reads and checks blobs from packs; safe to share between threads.
pub struct BlobReader {
    packs: PackSource,
    crypto: Crypto,
    locations: Locations,
    /// Open pack files with their lengths, taken once at open.
    files: Mutex<HashMap<PackId, Arc<(File, u64)>>>,
    trees: Arc<Mutex<TreeCache>>,
}

impl BlobReader {
    /// The crypto blobs are opened with.
    pub fn crypto(&self) -> &Crypto {
        &self.crypto
    }

    /// Where a blob is, if the index knows it.
    pub fn location(&self, id: &BlobId) -> Option<Location> {
        self.locations.get(id)
    }

    /// The location map, shared.
    pub(crate) fn location_map(&self) -> Locations {
        self.locations.clone()
    }

    /// All known locations.
    pub fn locations(&self) -> &LocationMap {
        &self.locations
    }

    /// A pack's name for messages: its path, or its name on the remote.
    pub fn pack_label(&self, id: &PackId) -> String {
        match &self.packs {
            PackSource::Local(dir) => pack::pack_path(dir, id).display().to_string(),
            PackSource::Remote(r) => r.label(id),
        }
    }

    /// True when the packs are on a remote (each read is a request).
    pub fn is_remote(&self) -> bool {
        matches!(self.packs, PackSource::Remote(_))
    }

    /// True when the packs are on a remote that refuses this client as a whole (see
    /// [`RemotePacks::refuses_us`]); false for local packs.
    pub fn remote_refuses_us(&self) -> bool {
        match &self.packs {
            PackSource::Remote(r) => r.refuses_us(),
            PackSource::Local(_) => false,
        }
    }

    /// Fetches these blobs from a remote in few, large requests ahead of their reads (see
    /// [`RemotePacks::prefetch`]); nothing to do for local packs. Blobs the index does not know
    /// are left for `read` to report.
    pub fn prefetch(&self, ids: &[BlobId]) -> Result<()> {
        let PackSource::Remote(r) = &self.packs else {
            return Ok(());
        };
        let wanted: Vec<(PackId, pack::PackEntry)> = ids
            .iter()
            .filter_map(|id| self.locations.get(id))
            .map(|l| (l.pack, l.entry))
            .collect();
        r.prefetch(&wanted)
    }

    /// A whole pack's bytes (verify's `--read-data`).
    pub fn read_pack(&self, id: &PackId) -> Result<Vec<u8>> {
        match &self.packs {
            PackSource::Local(dir) => {
                let path = pack::pack_path(dir, id);
                fs::read(&path).at(&path)
            }
            PackSource::Remote(r) => r.read_pack(id),
        }
    }

    /// `len` bytes of a pack from `offset`: a read of the file, or a range request to the remote
    /// (verify reads packs in parts).
    pub fn read_pack_range(&self, id: &PackId, offset: u64, len: usize) -> Result<Vec<u8>> {
        match &self.packs {
            PackSource::Local(dir) => {
                use std::os::unix::fs::FileExt;
                let f = self.file(dir, id)?;
                let mut buf = vec![0u8; len];
                f.0.read_exact_at(&mut buf, offset)
                    .at(pack::pack_path(dir, id))?;
                Ok(buf)
            }
            PackSource::Remote(r) => r.range(id, offset, len),
        }
    }

    fn file(&self, dir: &Path, id: &PackId) -> Result<Arc<(File, u64)>> {
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
        let path = pack::pack_path(dir, id);
        let file = File::open(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::Missing {
                object: format!("pack {id}"),
            },
            _ => Error::io(&path, e),
        })?;
        let len = file.metadata().at(&path)?.len();
        let f = Arc::new((file, len));
        files.insert(*id, f.clone());
        Ok(f)
    }

    /// The length a blob has once decompressed, as the index records it; `None` when no pack
    /// holds it. [`BlobReader::read`] checks it against the blob itself.
    pub fn raw_len(&self, id: &BlobId) -> Option<u64> {
        self.locations.get(id).map(|l| u64::from(l.entry.raw_len))
    }

    /// Reads, decompresses and hash-checks one blob.
    pub fn read(&self, id: &BlobId) -> Result<Vec<u8>> {
        let loc = self.locations.get(id).ok_or_else(|| Error::Missing {
            object: format!("blob {id} (not in the index)"),
        })?;
        // A hostile pack or index can declare any length up to the blob limit and back it with
        // a zstd frame of zeros: refuse a data blob no chunker makes before inflating it, so
        // each restore thread holds at most one chunk's worth.
        if loc.entry.kind == BlobKind::Data && loc.entry.raw_len > blob::MAX_DATA_BLOB_RAW_BYTES {
            return Err(Error::corrupt(
                format!("blob {id} in pack {}", loc.pack),
                format!(
                    "a data blob of {} bytes is larger than any chunk ({})",
                    loc.entry.raw_len,
                    blob::MAX_DATA_BLOB_RAW_BYTES
                ),
            ));
        }
        let open = |stored: &[u8]| {
            blob::open(
                &self.crypto,
                id,
                loc.entry.compression,
                loc.entry.raw_len,
                stored,
            )
            .map_err(|e| match e {
                Error::Corrupt { reason, .. } => {
                    Error::corrupt(format!("blob {id} in pack {}", loc.pack), reason)
                }
                other => other,
            })
        };
        match &self.packs {
            PackSource::Local(dir) => {
                let f = self.file(dir, &loc.pack)?;
                let path = pack::pack_path(dir, &loc.pack);
                let stored = pack::read_stored(&f.0, f.1, &path, &loc.entry)?;
                open(&stored)
            }
            PackSource::Remote(r) => r.read_blob(&loc.pack, &loc.entry, open),
        }
    }

    /// Reads and decodes a tree blob, with each file's chunk list resolved.
    pub fn tree(&self, id: &BlobId) -> Result<Tree> {
        Ok(self.tree_lists(id)?.0)
    }

    /// Reads and decodes a tree blob, with each file's chunk list resolved, and how the files
    /// that keep their lists in list blobs store them (the blobs those files need as well).
    pub fn tree_lists(&self, id: &BlobId) -> Result<(Tree, Lists)> {
        self.resolve_tree(id, self.stored_tree(id)?)
    }

    /// Decodes tree blob `id` as stored, its files' list blobs not read.
    pub fn stored_tree(&self, id: &BlobId) -> Result<StoredTree> {
        let bytes = self.cached(id)?;
        StoredTree::decode(&bytes).map_err(|r| Error::corrupt(format!("tree {id}"), r))
    }

    /// Resolves `stored`, tree blob `id` as [`BlobReader::stored_tree`] gave it: each file's
    /// chunk list is read from its list blob.
    pub fn resolve_tree(&self, id: &BlobId, stored: StoredTree) -> Result<(Tree, Lists)> {
        let mut failed = None;
        let resolved = stored.resolve(|list| {
            self.list(list).map_err(|e| {
                let why = e.full();
                failed = Some(e);
                why
            })
        });
        resolved.map_err(|why| match failed {
            // A list blob the storage would not give (a remote that fails, a file that cannot
            // be read) is that error, not a damaged tree; a missing or damaged one is the tree's.
            Some(e @ (Error::Backend(_) | Error::Io { .. })) => e,
            _ => Error::corrupt(format!("tree {id}"), why),
        })
    }

    /// The chunk ids in list blob `id`.
    pub fn list(&self, id: &BlobId) -> Result<Vec<BlobId>> {
        let bytes = self.cached(id)?;
        tree::decode_list(&bytes).map_err(|r| Error::corrupt(format!("list blob {id}"), r))
    }

    /// A tree or list blob's bytes, through the shared cache.
    fn cached(&self, id: &BlobId) -> Result<Arc<Vec<u8>>> {
        let cached = self
            .trees
            .lock()
            .expect("invariant: tree cache lock is not poisoned")
            .trees
            .get(id)
            .cloned();
        if let Some(b) = cached {
            return Ok(b);
        }
        let b = Arc::new(self.read(id)?);
        let mut cache = self
            .trees
            .lock()
            .expect("invariant: tree cache lock is not poisoned");
        if cache.bytes + b.len() > TREE_CACHE_BYTES {
            *cache = TreeCache::default();
        }
        if b.len() <= TREE_CACHE_BYTES {
            cache.bytes += b.len();
            cache.trees.insert(*id, b.clone());
        }
        Ok(b)
    }
}

/// Every `packs/<2 hex>/<id>.pack` with its size.
fn local_pack_files(dir: &Path) -> Result<HashMap<PackId, u64>> {
    let mut out = HashMap::new();
    for sub in fs::read_dir(dir).at(dir)? {
        let sub = sub.at(dir)?;
        // `.prune.tmp` and the like are not pack directories.
        if !sub.file_type().at(sub.path())?.is_dir()
            || sub.file_name().as_encoded_bytes().starts_with(b".")
        {
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

/// Key files with their paths.
type KeyFiles = Vec<(PathBuf, KeyFile)>;

/// Reads every `keys/*.json`; the first file that does not parse or is misnamed is an error.
fn read_key_files(root: &Path) -> Result<Vec<(PathBuf, KeyFile)>> {
    let (files, bad) = read_key_files_lenient(root)?;
    match bad.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(files),
    }
}

/// Every `keys/*.json` that parses and is named after its id, and the errors of the others
/// (none when the directory is absent: a plain vault).
fn read_key_files_lenient(root: &Path) -> Result<(KeyFiles, Vec<Error>)> {
    let dir = root.join(KEYS_DIR);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
        Err(e) => return Err(Error::io(&dir, e)),
    };
    let mut out = Vec::new();
    let mut bad = Vec::new();
    for f in entries {
        let f = f.at(&dir)?;
        let path = f.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let corrupt =
            |reason: String| Error::corrupt(format!("key file {}", path.display()), reason);
        let len = f.metadata().at(&path)?.len();
        if len > KEY_FILE_MAX_BYTES {
            bad.push(corrupt(format!("{len} bytes is too large")));
            continue;
        }
        let bytes = fs::read(&path).at(&path)?;
        let key = match KeyFile::parse(&bytes) {
            Ok(k) => k,
            Err(e) => {
                bad.push(corrupt(e.to_string()));
                continue;
            }
        };
        // The seal binds the id inside the file; the name must agree, or `key remove` would
        // remove a different key than the one listed.
        if path.file_stem().and_then(|s| s.to_str()) != Some(key.id().to_hex().as_str()) {
            bad.push(corrupt(format!("holds key {}", key.id().to_hex())));
            continue;
        }
        out.push((path, key));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok((out, bad))
}

/// Writes a new key file for `master` durably; returns its id.
fn write_key_file(
    root: &Path,
    config: &VaultConfig,
    master: &MasterKey,
    secret: &Secret,
    kdf: &KdfParams,
) -> Result<String> {
    let key = KeyFile::create(
        master,
        secret,
        kdf,
        &config.id,
        &crate::util::hostname(),
        &crate::util::username(),
        &crate::util::now_rfc3339(),
    )?;
    let dir = root.join(KEYS_DIR);
    fsutil::create_dir_durable(&dir)?;
    fsutil::atomic_write(
        &dir.join(format!("{}.json", key.id().to_hex())),
        &key.to_bytes(),
    )?;
    Ok(key.id().to_hex())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ChunkerParams;
    use crate::progress::Progress;
    use crate::snapshot::{snapshot, SnapshotOptions};

    /// Fast argon2 for tests.
    const KDF: KdfParams = KdfParams {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };

    /// An encrypted vault at `root` and the source that opens it.
    fn init_encrypted(root: &Path) -> SecretSource {
        let pw = root.with_extension("password");
        fs::write(&pw, "test password\n").unwrap();
        let secret = Secret::Password(b"test password".to_vec());
        Vault::init(root, ChunkerParams::default(), Some((&secret, &KDF))).unwrap();
        SecretSource::from_env_and(Some(pw), None)
    }

    #[test]
    fn reconcile_indexes_published_but_unindexed_packs_and_sweeps_temp_files() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        fs::create_dir(&data).unwrap();
        fs::write(data.join("f"), b"some bytes worth keeping".repeat(100)).unwrap();
        let root = tmp.path().join("v");
        let secrets = init_encrypted(&root);
        {
            let mut v = Vault::open(&root, LockMode::Exclusive, None, &secrets).unwrap();
            let opts = SnapshotOptions {
                paths: vec![data.clone()],
                ..Default::default()
            };
            snapshot(&mut v, &opts, &Progress::hidden()).unwrap();
            // As if killed after publishing the pack but before indexing it.
            v.index_mut().replace_all(&[]).unwrap();
        }
        fs::write(root.join("packs").join(".tmp-leftover"), b"half a pack").unwrap();
        let mut v = Vault::open(&root, LockMode::Exclusive, None, &secrets).unwrap();
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
    fn trees_are_read_once_per_open_vault_and_again_after_a_relock() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        fs::create_dir_all(data.join("sub")).unwrap();
        fs::write(data.join("sub/f"), b"bytes").unwrap();
        let root = tmp.path().join("v");
        let secrets = init_encrypted(&root);
        let mut v = Vault::open(&root, LockMode::Append, None, &secrets).unwrap();
        let opts = SnapshotOptions {
            paths: vec![data],
            ..Default::default()
        };
        let done = snapshot(&mut v, &opts, &Progress::hidden()).unwrap();
        let root_tree = done.manifest.tree;
        let first = v.blob_reader().unwrap().tree(&root_tree).unwrap();
        // With the packs gone, a new reader of the same open vault still has the tree...
        let packs = root.join("packs");
        let moved = tmp.path().join("packs-away");
        fs::rename(&packs, &moved).unwrap();
        fs::create_dir(&packs).unwrap();
        let again = v.blob_reader().unwrap().tree(&root_tree).unwrap();
        assert_eq!(first.entries.len(), again.entries.len());
        // ...until the lock is traded: then it is read from the packs again, and missed.
        v.relock(LockMode::Shared, None).unwrap();
        assert!(v.blob_reader().unwrap().tree(&root_tree).is_err());
        fs::remove_dir(&packs).unwrap();
        fs::rename(&moved, &packs).unwrap();
    }

    #[test]
    fn resolve_latest_prefix_and_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("v");
        Vault::init(&root, ChunkerParams::default(), None).unwrap();
        let secrets = SecretSource::default();
        let mut v = Vault::open(&root, LockMode::Exclusive, None, &secrets).unwrap();
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
        assert!(Vault::init(&root, ChunkerParams::default(), None).is_err());
    }
}
