//! Reading a vault back from a remote, on a machine that may have nothing else.
//!
//! A remote vault is opened through a local *mirror*: a cache directory (by default
//! `~/.cache/atlasvault/remotes/<hash of the location>/`; `--cache-dir` replaces the part before
//! the hash) that holds copies of the remote's small
//! objects (`config.json`, `keys/`, `snapshots/`, the LKG ref) and an `index.sqlite` built from
//! the packs' trailers (two or three range requests per pack, once). The packs stay on the remote:
//! [`RemotePacks`] range-reads only the blobs a command needs and keeps each one it fetched under
//! `blobs/` (sealed, as stored), so a second restore or an interrupted one fetches nothing twice.
//! The mirror then opens as an ordinary [`Vault`], and restore, verify, gates and `ls` work on it
//! unchanged. Everything fetched is untrusted: sizes are checked against the listing before
//! reading, names are parsed as ids before they become paths, and every blob is hash-checked.
//! Writing to a remote is `crate::push`'s business.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::backend::{Backend, BackendErrorKind, DynBackend, ObjectInfo, LKG_REF};
use crate::config::VaultConfig;
use crate::crypto::Crypto;
use crate::error::{Error, IoContext, Result};
use crate::fsutil;
use crate::id::{PackId, SnapshotId};
use crate::keys::SecretSource;
use crate::manifest::MANIFEST_MAX_BYTES;
use crate::pack::{self, PackEntry};
use crate::vault::Vault;

/// Largest `config.json`, key file or ref accepted from a remote.
const SMALL_OBJECT_MAX_BYTES: u64 = 1024 * 1024;
/// Where fetched blobs are kept inside the mirror.
const BLOB_CACHE_DIR: &str = "blobs";
/// Prefetch reads through gaps up to this size between wanted blobs: a few unneeded bytes cost
/// less than another request.
const PREFETCH_GAP_BYTES: u64 = 1024 * 1024;
/// Largest range one prefetch request reads (bounds memory: one such buffer per thread).
const PREFETCH_SPAN_MAX_BYTES: u64 = 8 * 1024 * 1024;
/// Prefetch requests in flight at once.
pub const PREFETCH_THREADS: usize = 4;

/// The name of a pack on a remote: `packs/<2 hex>/<id>.pack`, as in the vault.
pub fn pack_name(id: &PackId) -> String {
    let hex = id.to_hex();
    format!("packs/{}/{hex}.pack", &hex[..2])
}

/// Parses `packs/<2 hex>/<id>.pack`; anything else (a stray file) is `None`.
pub fn parse_pack_object(name: &str) -> Option<PackId> {
    let rest = name.strip_prefix("packs/")?;
    let (dir, file) = rest.split_once('/')?;
    let id = pack::parse_pack_name(file)?;
    (id.to_hex()[..2] == *dir).then_some(id)
}

/// The default directory under which each remote gets its mirror: `$XDG_CACHE_HOME/atlasvault/
/// remotes`, else `~/.cache/atlasvault/remotes`.
pub fn default_cache_base() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("atlasvault").join("remotes")
}

/// The mirror of the remote at `location` under `base`: a subdirectory named by a hash of the
/// location, so that a `--cache-dir` pointing at a directory that matters is never used as the
/// mirror itself.
pub fn mirror_dir(base: &Path, location: &str) -> PathBuf {
    let hash = blake3::hash(location.as_bytes()).to_hex();
    base.join(&hash.as_str()[..16])
}

/// The file that marks a directory as a mirror (only a marked directory is ever emptied).
const MIRROR_MARKER: &str = ".atlasvault-mirror";
/// Held while a mirror is brought in line with its remote.
const MIRROR_SYNC_LOCK: &str = ".sync.lock";

/// A remote's packs, read by range requests through the mirror's blob cache.
pub struct RemotePacks {
    backend: DynBackend,
    cache: PathBuf,
    /// The packs the remote listed when the mirror was opened.
    packs: HashMap<PackId, u64>,
    fetched_bytes: AtomicU64,
    requests: AtomicU64,
}

impl RemotePacks {
    /// Bytes fetched from the remote so far (cache hits excluded).
    pub fn fetched_bytes(&self) -> u64 {
        self.fetched_bytes.load(Ordering::Relaxed)
    }

    /// Read requests sent so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The remote's location, for messages.
    pub fn location(&self) -> String {
        self.backend.location()
    }

    /// The packs on the remote, with their sizes.
    pub fn list(&self) -> Result<HashMap<PackId, u64>> {
        Ok(self.packs.clone())
    }

    /// Whether the remote refuses this client as a whole (credentials revoked or expired, a
    /// policy that now shuts it out) rather than one object: asks about the vault's
    /// `config.json`, which every client that could open the vault may read.
    pub fn refuses_us(&self) -> bool {
        matches!(self.backend.stat("config.json"), Err(e) if e.kind == BackendErrorKind::Denied)
    }

    /// Whether the remote answers a `stat` of the vault's `config.json`: it is reachable and
    /// serves this client, so an object it refused is refused alone.
    pub fn serves_config(&self) -> bool {
        self.backend.stat("config.json").is_ok()
    }

    /// A pack's name for messages.
    pub fn label(&self, id: &PackId) -> String {
        format!("{}/{}", self.backend.location(), pack_name(id))
    }

    /// `len` bytes of a pack from `offset`, in one range request.
    pub fn range(&self, id: &PackId, offset: u64, len: usize) -> Result<Vec<u8>> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let bytes = self
            .backend
            .read_range(&pack_name(id), offset, len as u64)?;
        self.fetched_bytes
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(bytes)
    }

    /// Reads a pack's trailer with range requests.
    pub fn read_trailer(&self, crypto: &Crypto, id: &PackId, size: u64) -> Result<Vec<PackEntry>> {
        pack::read_trailer_with(crypto, size, &format!("pack {}", self.label(id)), |o, n| {
            self.range(id, o, n)
        })
    }

    /// A whole pack.
    pub fn read_pack(&self, id: &PackId) -> Result<Vec<u8>> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let bytes = self.backend.read(&pack_name(id))?;
        self.fetched_bytes
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(bytes)
    }

    fn cache_path(&self, entry: &PackEntry) -> PathBuf {
        let hex = entry.id.to_hex();
        self.cache.join(&hex[..2]).join(hex)
    }

    /// One blob's stored bytes, from the cache or the remote, handed to `open` (which checks the
    /// hash). A cached copy that fails the check is fetched again; a fetched one that passes is
    /// cached.
    pub fn read_blob<T>(
        &self,
        pack: &PackId,
        entry: &PackEntry,
        open: impl Fn(&[u8]) -> Result<T>,
    ) -> Result<T> {
        let cached = self.cache_path(entry);
        if let Ok(bytes) = fs::read(&cached) {
            if bytes.len() == entry.stored_len as usize {
                if let Ok(v) = open(&bytes) {
                    return Ok(v);
                }
            }
        }
        let stored = self.range(pack, entry.offset, entry.stored_len as usize)?;
        let value = open(&stored)?;
        // A cache: no fsync (a torn file fails the hash check and is fetched again), and a cache
        // that cannot be written only costs a refetch.
        let _ = write_cache_file(&cached, &stored);
        Ok(value)
    }
}

impl RemotePacks {
    fn is_cached(&self, entry: &PackEntry) -> bool {
        fs::metadata(self.cache_path(entry)).is_ok_and(|m| m.len() == u64::from(entry.stored_len))
    }

    /// Fetches the blobs at `wanted` that are not cached yet into the cache, reading each
    /// pack's wanted blobs in as few range requests as possible (adjacent blobs, and gaps up to
    /// [`PREFETCH_GAP_BYTES`], go in one request of at most [`PREFETCH_SPAN_MAX_BYTES`]), on
    /// [`PREFETCH_THREADS`] threads. Nothing is checked here: [`RemotePacks::read_blob`] checks
    /// each blob's hash when it is used, and fetches again what does not pass.
    pub fn prefetch(&self, wanted: &[(PackId, PackEntry)]) -> Result<()> {
        let mut seen = HashSet::new();
        let mut todo: Vec<&(PackId, PackEntry)> = wanted
            .iter()
            .filter(|(_, e)| seen.insert(e.id) && !self.is_cached(e))
            .collect();
        todo.sort_by_key(|(p, e)| (*p, e.offset));
        // (pack, start, end, entries)
        let mut spans: Vec<(PackId, u64, u64, Vec<PackEntry>)> = Vec::new();
        for (pack, e) in todo {
            let end = e.offset + u64::from(e.stored_len);
            match spans.last_mut() {
                Some((p, start, last_end, entries))
                    if p == pack
                        && e.offset <= last_end.saturating_add(PREFETCH_GAP_BYTES)
                        && end - *start <= PREFETCH_SPAN_MAX_BYTES =>
                {
                    *last_end = (*last_end).max(end);
                    entries.push(*e);
                }
                _ => spans.push((*pack, e.offset, end, vec![*e])),
            }
        }
        let next = std::sync::atomic::AtomicUsize::new(0);
        let failed: std::sync::Mutex<Option<Error>> = std::sync::Mutex::new(None);
        std::thread::scope(|s| {
            for _ in 0..PREFETCH_THREADS.min(spans.len()) {
                s.spawn(|| loop {
                    if failed.lock().expect("invariant: error lock").is_some() {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((pack, start, end, entries)) = spans.get(i) else {
                        break;
                    };
                    let bytes = match self.range(pack, *start, (end - start) as usize) {
                        Ok(b) => b,
                        Err(e) => {
                            failed
                                .lock()
                                .expect("invariant: error lock")
                                .get_or_insert(e);
                            break;
                        }
                    };
                    for e in entries {
                        let at = (e.offset - start) as usize;
                        let blob = &bytes[at..at + e.stored_len as usize];
                        // A cache: a blob that cannot be kept is fetched again when read.
                        let _ = write_cache_file(&self.cache_path(e), blob);
                    }
                });
            }
        });
        match failed.into_inner().expect("invariant: error lock") {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Writes a cache file through a temporary name, without fsync.
fn write_cache_file(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let tmp = tempfile::Builder::new()
        .prefix(fsutil::TEMP_PREFIX)
        .tempfile_in(dir)?;
    fs::write(tmp.path(), data)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Opens the vault on `backend` through its mirror under `cache_base` (created when needed):
/// brings the mirror's small objects in line with the remote, then opens it, indexing new packs.
pub fn open(
    backend: DynBackend,
    cache_base: &Path,
    wait: Option<Duration>,
    secrets: &SecretSource,
) -> Result<Vault> {
    let location = backend.location();
    let cache = &mirror_dir(cache_base, &location);
    let remote = sync_mirror(&backend, cache)?;
    Vault::open_mirror(cache, remote, wait, secrets)
}

/// Brings the mirror at `cache` in line with the remote, under the mirror's sync lock.
fn sync_mirror(backend: &DynBackend, cache: &Path) -> Result<Arc<RemotePacks>> {
    use fs2::FileExt;

    let location = backend.location();
    let marker = cache.join(MIRROR_MARKER);
    let non_empty = fs::read_dir(cache).is_ok_and(|mut d| d.next().is_some());
    if non_empty && !marker.exists() {
        return Err(Error::Invalid(format!(
            "{} is not empty and is not a remote mirror; refusing to use it as a cache",
            cache.display()
        )));
    }
    fsutil::create_dir_durable(cache)?;
    if !marker.exists() {
        fsutil::atomic_write(
            &marker,
            b"AtlasVault remote mirror: a cache, safe to delete.\n",
        )?;
    }
    let lock_path = cache.join(MIRROR_SYNC_LOCK);
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .at(&lock_path)?;
    lock.lock_exclusive().at(&lock_path)?;
    let listing: HashMap<String, u64> = backend
        .list("")?
        .into_iter()
        .map(|ObjectInfo { name, size }| (name, size))
        .collect();
    let small = |name: &str, max: u64| -> Result<Option<Vec<u8>>> {
        match listing.get(name) {
            None => Ok(None),
            Some(&size) if size > max => Err(Error::corrupt(
                format!("{name} on remote {location}"),
                format!("{size} bytes is too large"),
            )),
            Some(_) => Ok(Some(backend.read(name)?)),
        }
    };
    let config_bytes =
        small("config.json", SMALL_OBJECT_MAX_BYTES)?.ok_or_else(|| Error::NoRemoteVault {
            remote: location.clone(),
        })?;
    let config = VaultConfig::parse(&config_bytes).map_err(|r| Error::Config {
        path: PathBuf::from(format!("{location}/config.json")),
        reason: r,
    })?;

    // A mirror of another vault (the remote was re-initialised) is stale as a whole.
    fsutil::create_dir_durable(cache)?;
    let mirror_config = cache.join("config.json");
    if let Ok(old) = VaultConfig::load(&mirror_config) {
        if old.id != config.id {
            clear_mirror(cache)?;
        }
    }
    for d in ["keys", "snapshots", "refs", "packs", BLOB_CACHE_DIR] {
        fsutil::create_dir_durable(&cache.join(d))?;
    }
    fsutil::atomic_write(&mirror_config, &config_bytes)?;

    // keys/ and snapshots/: the remote's set, exactly.
    let mut wanted: HashSet<PathBuf> = HashSet::new();
    for (name, &size) in &listing {
        let max = if let Some(file) = name.strip_prefix("keys/") {
            let ok = file
                .strip_suffix(".json")
                .is_some_and(|h| h.len() >= 16 && h.bytes().all(|b| b.is_ascii_hexdigit()));
            if !ok {
                continue;
            }
            SMALL_OBJECT_MAX_BYTES
        } else if let Some(file) = name.strip_prefix("snapshots/") {
            let ok = file
                .strip_suffix(".json")
                .is_some_and(|h| SnapshotId::from_hex(h).is_ok());
            if !ok {
                continue;
            }
            MANIFEST_MAX_BYTES
        } else {
            continue;
        };
        let local = cache.join(name);
        wanted.insert(local.clone());
        if fs::metadata(&local).is_ok_and(|m| m.len() == size) {
            continue; // immutable: already fetched
        }
        let bytes = small(name, max)?.unwrap_or_default();
        fsutil::atomic_write(&local, &bytes)?;
    }
    for d in ["keys", "snapshots"] {
        let dir = cache.join(d);
        for f in fs::read_dir(&dir).at(&dir)? {
            let path = f.at(&dir)?.path();
            if !wanted.contains(&path) {
                fs::remove_file(&path).at(&path)?;
            }
        }
    }
    let ref_path = crate::lkg::ref_path(cache);
    match small(LKG_REF, SMALL_OBJECT_MAX_BYTES)? {
        Some(bytes) => fsutil::atomic_write(&ref_path, &bytes)?,
        None => match fs::remove_file(&ref_path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io(ref_path, e))
            }
            _ => {}
        },
    }

    let packs = listing
        .iter()
        .filter_map(|(name, size)| parse_pack_object(name).map(|id| (id, *size)))
        .collect();
    Ok(Arc::new(RemotePacks {
        backend: backend.clone(),
        cache: cache.join(BLOB_CACHE_DIR),
        packs,
        fetched_bytes: AtomicU64::new(0),
        requests: AtomicU64::new(0),
    }))
}

/// Empties a mirror directory (it only ever holds copies).
fn clear_mirror(cache: &Path) -> Result<()> {
    for f in fs::read_dir(cache).at(cache)? {
        let path = f.at(cache)?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name == MIRROR_MARKER || name == MIRROR_SYNC_LOCK {
            continue;
        }
        let r = if path.is_dir() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        r.at(&path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_object_names_round_trip_and_strays_are_ignored() {
        let id = PackId([0xab; 32]);
        let name = pack_name(&id);
        assert!(name.starts_with("packs/ab/abab"));
        assert_eq!(parse_pack_object(&name), Some(id));
        assert_eq!(
            parse_pack_object(&name.replace("packs/ab", "packs/cd")),
            None
        );
        assert_eq!(parse_pack_object("packs/ab/notes.txt"), None);
        assert_eq!(parse_pack_object("snapshots/ab.json"), None);
    }
}
