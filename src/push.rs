//! `vault push`: copies to a remote what it lacks, in an order that keeps it restorable.
//!
//! One listing of the remote is diffed against the local vault; only missing objects (or ones
//! whose size differs, i.e. damaged) are uploaded, several packs at a time. The order is what
//! makes the remote consistent at every instant, and an interrupted push resumable:
//!
//! 1. the remote's `config.json` is checked: a remote that holds another vault is refused before
//!    anything is written;
//! 2. `keys/`, then `config.json` when the remote had none (a remote is a vault once its config
//!    is there, and then it can be opened), and, unless append-only, remote key files removed
//!    locally are removed, so a revoked password stops opening the remote too;
//! 3. `packs/`, all of them;
//! 4. `snapshots/`: a manifest only once every pack is there;
//! 5. the LKG ref last, once its manifest is there. An append-only remote first keeps the
//!    ref's old and new values under `refs/history/<sha256>.json`.
//!
//! The local vault is only read (shared lock). Deleting from a remote (forget/prune) is not done
//! here.

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::backend::{Backend, BackendError, ObjectInfo, LKG_REF, REF_HISTORY_DIR};
use crate::config::VaultConfig;
use crate::error::{Error, IoContext, Result};
use crate::pack;
use crate::progress::Progress;
use crate::remote::pack_name;
use crate::vault::Vault;

/// Packs uploaded at once by default: enough to fill a link to S3, few enough that memory stays
/// at a handful of packs.
pub const DEFAULT_PUSH_THREADS: usize = 2;

/// How to push.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// Packs in flight at once (0: [`DEFAULT_PUSH_THREADS`]).
    pub threads: usize,
    /// The remote is append-only: never delete, keep the ref's history.
    pub append_only: bool,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            threads: DEFAULT_PUSH_THREADS,
            append_only: false,
        }
    }
}

/// What a push did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PushReport {
    pub remote: String,
    /// The remote held nothing before this push.
    pub first_push: bool,
    pub packs_uploaded: usize,
    pub snapshots_uploaded: usize,
    pub keys_uploaded: usize,
    pub keys_removed: usize,
    pub objects_uploaded: usize,
    pub bytes_uploaded: u64,
    /// Objects that were already there.
    pub objects_present: usize,
    /// The snapshot the remote's LKG ref now names, when it moved.
    pub ref_updated: Option<String>,
}

/// Pushes `vault` to `backend`.
pub fn push(
    vault: &Vault,
    backend: &dyn Backend,
    opts: &PushOptions,
    progress: &Progress,
) -> Result<PushReport> {
    let root = vault.root();
    let mut report = PushReport {
        remote: backend.location(),
        ..Default::default()
    };
    let remote: HashMap<String, u64> = backend
        .list("")?
        .into_iter()
        .map(|ObjectInfo { name, size }| (name, size))
        .collect();
    report.first_push = remote.is_empty();

    // 1. config.json
    let config_path = root.join("config.json");
    let config_bytes = fs::read(&config_path).at(&config_path)?;
    if remote.contains_key("config.json") {
        let theirs = backend.read("config.json")?;
        let theirs = VaultConfig::parse(&theirs)
            .map_err(|r| Error::corrupt(format!("config.json on remote {}", report.remote), r))?;
        if theirs.id != vault.config.id {
            return Err(Error::Invalid(format!(
                "remote {} holds another vault (id {}), not this one (id {}); push to an empty \
                 location instead",
                report.remote, theirs.id, vault.config.id
            )));
        }
        report.objects_present += 1;
    }

    // Everything else local, by object name.
    let mut keys = local_objects(root, "keys", |n| n.ends_with(".json"))?;
    keys.sort();
    let mut snapshots: Vec<String> = vault
        .snapshot_ids()?
        .into_iter()
        .map(|id| format!("snapshots/{id}.json"))
        .collect();
    snapshots.sort();
    let mut packs: Vec<(String, u64)> = vault
        .pack_files()?
        .into_iter()
        .map(|(id, size)| (pack_name(&id), size))
        .collect();
    packs.sort();
    let missing = |name: &str, size: u64| remote.get(name) != Some(&size);

    // 2. keys/
    for name in &keys {
        let bytes = fs::read(root.join(name)).at(root.join(name))?;
        if missing(name, bytes.len() as u64) {
            backend.put(name, &bytes)?;
            report.keys_uploaded += 1;
            report.objects_uploaded += 1;
            report.bytes_uploaded += bytes.len() as u64;
        } else {
            report.objects_present += 1;
        }
    }
    // A new remote becomes a vault when its config.json lands, so that goes after the keys: a
    // first push cut short here leaves no vault that cannot be opened (as `init` writes its
    // config last).
    if !remote.contains_key("config.json") {
        backend.put("config.json", &config_bytes)?;
        report.objects_uploaded += 1;
        report.bytes_uploaded += config_bytes.len() as u64;
    }
    if !opts.append_only {
        for name in remote.keys().filter(|n| n.starts_with("keys/")) {
            if !keys.contains(name) {
                backend.delete(name)?;
                report.keys_removed += 1;
            }
        }
    }

    // 3. packs/, several at a time.
    let todo: Vec<&(String, u64)> = packs.iter().filter(|(n, s)| missing(n, *s)).collect();
    report.objects_present += packs.len() - todo.len();
    progress.inc_total(todo.iter().map(|(_, s)| s).sum());
    let uploaded = upload_packs(vault, backend, &todo, opts.threads, progress)?;
    report.packs_uploaded = todo.len();
    report.objects_uploaded += todo.len();
    report.bytes_uploaded += uploaded;

    // 4. snapshots/, now that every pack is there.
    crate::crashpoint::at("push-before-snapshots");
    for name in &snapshots {
        let path = root.join(name);
        let bytes = fs::read(&path).at(&path)?;
        if missing(name, bytes.len() as u64) {
            backend.put(name, &bytes)?;
            report.snapshots_uploaded += 1;
            report.objects_uploaded += 1;
            report.bytes_uploaded += bytes.len() as u64;
            progress.inc_file();
        } else {
            report.objects_present += 1;
        }
    }

    // 5. The LKG ref, last.
    crate::crashpoint::at("push-before-ref");
    let ref_path = crate::lkg::ref_path(root);
    match fs::read(&ref_path) {
        Ok(ours) => {
            let theirs = match remote.contains_key(LKG_REF) {
                true => Some(backend.read(LKG_REF)?),
                false => None,
            };
            if theirs.as_deref() != Some(ours.as_slice()) {
                if opts.append_only {
                    for value in theirs.iter().chain(std::iter::once(&ours)) {
                        let name = history_name(value);
                        if !remote.contains_key(&name) {
                            backend.put(&name, value)?;
                        }
                    }
                }
                backend.replace(LKG_REF, &ours)?;
                report.objects_uploaded += 1;
                report.bytes_uploaded += ours.len() as u64;
                report.ref_updated = crate::lkg::read(vault)?.map(|r| r.snapshot.to_hex());
            } else {
                report.objects_present += 1;
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(ref_path, e)),
    }
    Ok(report)
}

/// Where an append-only remote keeps one value of the ref.
pub fn history_name(value: &[u8]) -> String {
    format!(
        "{REF_HISTORY_DIR}{}.json",
        hex::encode(Sha256::digest(value))
    )
}

/// Names of the files in `root/dir` that `keep` accepts, as `dir/name`.
fn local_objects(root: &Path, dir: &str, keep: impl Fn(&str) -> bool) -> Result<Vec<String>> {
    let path = root.join(dir);
    let rd = match fs::read_dir(&path) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(path, e)),
    };
    let mut out = Vec::new();
    for f in rd {
        let f = f.at(&path)?;
        if let Some(name) = f.file_name().to_str() {
            if !name.starts_with(crate::fsutil::TEMP_PREFIX) && keep(name) {
                out.push(format!("{dir}/{name}"));
            }
        }
    }
    Ok(out)
}

/// Uploads packs on `threads` threads; the first error stops the others from taking new work.
fn upload_packs(
    vault: &Vault,
    backend: &dyn Backend,
    todo: &[&(String, u64)],
    threads: usize,
    progress: &Progress,
) -> Result<u64> {
    let threads = if threads == 0 {
        DEFAULT_PUSH_THREADS
    } else {
        threads
    }
    .min(todo.len().max(1));
    let next = AtomicUsize::new(0);
    let bytes = AtomicU64::new(0);
    let failed: Mutex<Option<Error>> = Mutex::new(None);
    let packs_dir = vault.packs_dir();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                if failed.lock().expect("invariant: error lock").is_some() {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((name, _)) = todo.get(i) else { break };
                let r = upload_one(&packs_dir, backend, name);
                match r {
                    Ok(n) => {
                        bytes.fetch_add(n, Ordering::Relaxed);
                        progress.inc(n);
                        progress.inc_file();
                    }
                    Err(e) => {
                        failed
                            .lock()
                            .expect("invariant: error lock")
                            .get_or_insert(e);
                        break;
                    }
                }
            });
        }
    });
    match failed.into_inner().expect("invariant: error lock") {
        Some(e) => Err(e),
        None => Ok(bytes.into_inner()),
    }
}

/// Reads one pack from `packs/` and puts it; returns its size.
fn upload_one(packs_dir: &Path, backend: &dyn Backend, name: &str) -> Result<u64> {
    let id =
        crate::remote::parse_pack_object(name).expect("invariant: pack names come from pack_name");
    let path = pack::pack_path(packs_dir, &id);
    let bytes = fs::read(&path).at(&path)?;
    // A pack is named by the blake3 of its bytes: checking costs a fraction of the upload and
    // keeps local bit rot from spreading to the only other copy.
    if blake3::hash(&bytes).as_bytes() != &id.0 {
        return Err(Error::corrupt(
            format!("pack {}", path.display()),
            "its bytes do not match its id; not pushed (run `vault verify --read-data`)",
        ));
    }
    backend
        .put(name, &bytes)
        .map_err(|e: BackendError| Error::Backend(e))?;
    crate::crashpoint::at("push-after-pack");
    Ok(bytes.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::fault::{Faults, Faulty};
    use crate::backend::local::LocalBackend;
    use crate::backend::BackendResult;
    use crate::config::ChunkerParams;
    use crate::keys::SecretSource;
    use crate::lock::LockMode;
    use crate::snapshot::{snapshot, SnapshotOptions};

    /// Records the order of writes.
    struct Order<'a> {
        inner: &'a dyn Backend,
        writes: Mutex<Vec<String>>,
    }

    impl Backend for Order<'_> {
        fn location(&self) -> String {
            self.inner.location()
        }
        fn list(&self, prefix: &str) -> BackendResult<Vec<ObjectInfo>> {
            self.inner.list(prefix)
        }
        fn stat(&self, name: &str) -> BackendResult<Option<u64>> {
            self.inner.stat(name)
        }
        fn read(&self, name: &str) -> BackendResult<Vec<u8>> {
            self.inner.read(name)
        }
        fn read_range(&self, name: &str, offset: u64, len: u64) -> BackendResult<Vec<u8>> {
            self.inner.read_range(name, offset, len)
        }
        fn put(&self, name: &str, data: &[u8]) -> BackendResult<()> {
            self.writes.lock().unwrap().push(name.to_string());
            self.inner.put(name, data)
        }
        fn replace(&self, name: &str, data: &[u8]) -> BackendResult<()> {
            self.writes.lock().unwrap().push(name.to_string());
            self.inner.replace(name, data)
        }
        fn delete(&self, name: &str) -> BackendResult<()> {
            self.inner.delete(name)
        }
    }

    /// A plain vault with two snapshots of a tree big enough for several packs.
    fn vault_with_snapshots(tmp: &Path) -> Vault {
        let data = tmp.join("data");
        fs::create_dir_all(&data).unwrap();
        let root = tmp.join("vault");
        Vault::init(&root, ChunkerParams::default(), None).unwrap();
        let mut v =
            Vault::open(&root, LockMode::Exclusive, None, &SecretSource::default()).unwrap();
        v.config.pack_target_size = 1024 * 1024;
        for round in 0..2u8 {
            for i in 0..6u8 {
                let mut bytes = vec![0u8; 700_000];
                blake3::Hasher::new()
                    .update(&[round, i])
                    .finalize_xof()
                    .fill(&mut bytes);
                fs::write(data.join(format!("f{round}{i}")), bytes).unwrap();
            }
            let opts = SnapshotOptions {
                paths: vec![data.clone()],
                ..Default::default()
            };
            let done = snapshot(&mut v, &opts, &Progress::hidden()).unwrap();
            crate::lkg::promote(&v, &done.id).unwrap();
        }
        v
    }

    #[test]
    fn packs_go_before_manifests_and_the_ref_goes_last_and_a_killed_push_resumes() {
        let tmp = tempfile::tempdir().unwrap();
        let vault = vault_with_snapshots(tmp.path());
        let remote = LocalBackend::create(&tmp.path().join("remote")).unwrap();
        // A push that dies after 5 calls leaves a consistent, partial remote.
        let dying = Faulty::new(&remote, Faults::after(5));
        let opts = PushOptions {
            threads: 1,
            ..Default::default()
        };
        assert!(push(&vault, &dying, &opts, &Progress::hidden()).is_err());
        assert_eq!(remote.stat(LKG_REF).unwrap(), None);
        assert!(remote.list("snapshots/").unwrap().is_empty());
        let partial = remote.list("packs/").unwrap().len();
        assert!(partial >= 1);

        let order = Order {
            inner: &remote,
            writes: Mutex::default(),
        };
        let opts = PushOptions::default();
        let r = push(&vault, &order, &opts, &Progress::hidden()).unwrap();
        let writes = order.writes.into_inner().unwrap();
        let packs_total = vault.pack_files().unwrap().len();
        assert!(packs_total >= 4, "several packs: {packs_total}");
        assert_eq!(
            r.packs_uploaded,
            packs_total - partial,
            "nothing sent twice"
        );
        let last_pack = writes
            .iter()
            .rposition(|w| w.starts_with("packs/"))
            .unwrap();
        let first_manifest = writes
            .iter()
            .position(|w| w.starts_with("snapshots/"))
            .unwrap();
        assert!(last_pack < first_manifest, "{writes:?}");
        assert_eq!(
            writes.last().map(String::as_str),
            Some(LKG_REF),
            "{writes:?}"
        );
        assert_eq!(r.snapshots_uploaded, 2);
        // Pushed again: nothing to do.
        let r = push(&vault, &remote, &opts, &Progress::hidden()).unwrap();
        assert_eq!((r.objects_uploaded, r.bytes_uploaded), (0, 0));
    }
}
