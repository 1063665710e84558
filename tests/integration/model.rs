//! Model-based test of the vault's life cycle, after redb's `fuzz_redb`: a byte string is read as
//! a sequence of operations (edit the source tree, snapshot, forget, prune, push, restore, and
//! forget/prune on the remote), run against a real vault and a real directory remote while an
//! in-memory model records what each snapshot holds. Every call to the remote goes through
//! [`Faulty`], and an operation may arm it to fail after N calls (a server that dies).
//!
//! After every failure, and at the end: the local vault and the remote verify with `--read-data`,
//! every snapshot the model says the local vault holds restores byte for byte, every snapshot the
//! model says the remote must hold is there and restores byte for byte, and the remote holds
//! nothing the model does not know.
//!
//! The same file is the cargo-fuzz target `model` (`fuzz/fuzz_targets/model.rs` includes it) and
//! a test here that replays seeded random sequences and the fuzz seeds, so `cargo test` runs it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use atlasvault::backend::fault::{Faults, Faulty};
use atlasvault::backend::local::LocalBackend;
use atlasvault::backend::DynBackend;
use atlasvault::keys::{KdfParams, SecretSource};
use atlasvault::lock::LockMode;
use atlasvault::progress::Progress;
use atlasvault::prune::PruneOptions;
use atlasvault::push::PushOptions;
use atlasvault::restore::RestoreOptions;
use atlasvault::snapshot::SnapshotOptions;
use atlasvault::vaultfile::{Keep, Retention};
use atlasvault::verify::VerifyOptions;
use atlasvault::{SnapshotId, Vault};

/// Operations per input at most: enough for forget/prune/push interleavings, few enough that a
/// fuzz input runs in well under a second.
const MAX_OPS: usize = 24;

/// The source tree's file names; `d/` and `d/g/` always exist.
const NAMES: [&str; 6] = ["a", "b.txt", "d/c", "d/e.sql", "d/g/f", "d/g/h.bin"];

/// File sizes an edit picks from: empty, tiny, a few blocks, and sizes that span several chunks
/// of the text profile (16/24/96 KiB) and more than one of the binary profile's minimum (256 KiB).
const SIZES: [usize; 8] = [0, 1, 100, 4096, 20_000, 70_000, 300_000, 1_100_000];

/// The files of one snapshot's source tree: relative path → bytes.
type Files = BTreeMap<String, Vec<u8>>;

/// Reads an input byte by byte; past the end every byte is 0.
struct Input<'a> {
    data: &'a [u8],
    at: usize,
}

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let b = self.data.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }
    fn done(&self) -> bool {
        self.at >= self.data.len()
    }
}

/// splitmix64, for file contents.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Deterministic content of kind `kind` (text lines, random binary, mostly zeros, or an edited
/// copy of `base`), `len` bytes long, drawn from `seed`.
fn content(kind: u8, seed: u64, len: usize, base: Option<&[u8]>) -> Vec<u8> {
    let mut s = seed;
    let mut next = || {
        s = mix(s);
        s
    };
    match kind % 4 {
        0 => {
            let mut out = Vec::with_capacity(len + 64);
            while out.len() < len {
                let n = next();
                out.extend_from_slice(
                    format!("INSERT INTO t VALUES ({}, 'row {:x}');\n", n % 100_000, n).as_bytes(),
                );
            }
            out.truncate(len);
            out
        }
        1 => {
            let mut out = Vec::with_capacity(len + 8);
            while out.len() < len {
                out.extend_from_slice(&next().to_le_bytes());
            }
            out.truncate(len);
            out
        }
        2 => {
            // Zeros with a few bytes set: sparse files, and chunks that dedup against each other.
            let mut out = vec![0u8; len];
            for _ in 0..4.min(len) {
                let at = (next() % len as u64) as usize;
                out[at] = next() as u8 | 1;
            }
            out
        }
        _ => {
            // An edit of another file: dedup across files and snapshots.
            let mut out = base.map(<[u8]>::to_vec).unwrap_or_default();
            if out.is_empty() {
                return content(0, seed, len, None);
            }
            let at = (next() % out.len() as u64) as usize;
            let insert = format!("edit {:x}\n", next());
            out.splice(at..at, insert.into_bytes());
            out
        }
    }
}

/// Everything one run owns, under one temporary directory.
struct World {
    _tmp: tempfile::TempDir,
    source: PathBuf,
    vault: PathBuf,
    remote: PathBuf,
    cache: PathBuf,
    scratch: PathBuf,
    secrets: SecretSource,
    /// What is in `source` now.
    files: Files,
    /// What every snapshot ever taken holds (ids are never reused).
    content: HashMap<SnapshotId, Files>,
    /// The local vault's snapshots, exactly.
    local: BTreeSet<SnapshotId>,
    /// Snapshots the remote must hold (pushed, not forgotten there).
    remote_must: BTreeSet<SnapshotId>,
    /// Snapshots the remote may hold (a failed push leaves it undecided).
    remote_may: BTreeSet<SnapshotId>,
    /// A forget on the remote failed part way: which of `remote_must` it removed is learnt at the
    /// next check.
    forget_failed: bool,
    restores: usize,
    log: Vec<String>,
    stats: Stats,
}

/// What one run did, so a test can tell that the sequences exercise every operation.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub snapshots: usize,
    pub forgotten: usize,
    pub prunes: usize,
    pub pushes: usize,
    pub remote_forgotten: usize,
    pub remote_prunes: usize,
    pub remote_restores: usize,
    /// Operations that failed on an injected fault (remote calls or local writes).
    pub failures: usize,
    /// Of those, local operations (the local vault's writes failed).
    pub local_failures: usize,
    /// Snapshots restored and compared (in restore operations and checks).
    pub restored: usize,
}

impl std::ops::AddAssign for Stats {
    fn add_assign(&mut self, o: Stats) {
        self.snapshots += o.snapshots;
        self.forgotten += o.forgotten;
        self.prunes += o.prunes;
        self.pushes += o.pushes;
        self.remote_forgotten += o.remote_forgotten;
        self.remote_prunes += o.remote_prunes;
        self.remote_restores += o.remote_restores;
        self.failures += o.failures;
        self.local_failures += o.local_failures;
        self.restored += o.restored;
    }
}

impl World {
    fn new(encrypted: bool) -> World {
        let tmp = tempfile::Builder::new()
            .prefix("vault-model-")
            .tempdir_in(scratch_base())
            .expect("temp dir");
        let p = |n: &str| tmp.path().join(n);
        let source = p("src");
        fs::create_dir_all(source.join("d/g")).unwrap();
        let mut secrets = SecretSource::default();
        let key = if encrypted {
            let pw = p("password");
            fs::write(&pw, "model-password\n").unwrap();
            secrets.password_file = Some(pw.clone());
            Some(atlasvault::keys::new_secret(Some(&pw), None).unwrap())
        } else {
            None
        };
        // The cheapest KDF argon2 allows: the model is about the store, not the key.
        let kdf = KdfParams {
            memory_kib: 8,
            iterations: 1,
            parallelism: 1,
        };
        Vault::init(
            &p("vault"),
            atlasvault::config::Chunking::default(),
            key.as_ref().map(|k| (k, &kdf)),
        )
        .expect("init");
        World {
            source,
            vault: p("vault"),
            remote: p("remote"),
            cache: p("cache"),
            scratch: p("scratch"),
            secrets,
            files: Files::new(),
            content: HashMap::new(),
            local: BTreeSet::new(),
            remote_must: BTreeSet::new(),
            remote_may: BTreeSet::new(),
            forget_failed: false,
            restores: 0,
            log: Vec::new(),
            stats: Stats::default(),
            _tmp: tmp,
        }
    }

    fn open(&self, mode: LockMode) -> Vault {
        self.try_open(mode).expect("open the local vault")
    }

    /// Opening writes too (the index catches up with packs), so it may fail on a fault.
    fn try_open(&self, mode: LockMode) -> atlasvault::Result<Vault> {
        Vault::open(&self.vault, mode, None, &self.secrets)
    }

    /// The remote, failing after `fail_after` calls when set.
    fn backend(&self, fail_after: Option<u64>) -> (DynBackend, Arc<Faulty<Arc<LocalBackend>>>) {
        let local = Arc::new(LocalBackend::create(&self.remote).expect("remote dir"));
        let faults = fail_after.map_or_else(Faults::none, Faults::after);
        let faulty = Arc::new(Faulty::new(local, faults));
        (faulty.clone() as DynBackend, faulty)
    }

    /// A fresh directory under `scratch` to restore into.
    fn target(&mut self) -> PathBuf {
        self.restores += 1;
        let t = self.scratch.join(format!("r{}", self.restores));
        fs::create_dir_all(&self.scratch).unwrap();
        t
    }

    fn edit(&mut self, inp: &mut Input) {
        let name = NAMES[inp.byte() as usize % NAMES.len()];
        let what = inp.byte();
        let path = self.source.join(name);
        if what % 5 == 4 {
            let _ = fs::remove_file(&path);
            self.files.remove(name);
            self.log.push(format!("delete {name}"));
            return;
        }
        let len = SIZES[inp.byte() as usize % SIZES.len()];
        let seed = u64::from(inp.byte()) | u64::from(what) << 8;
        let base_name = NAMES[seed as usize % NAMES.len()];
        let bytes = content(
            what,
            seed,
            len,
            self.files.get(base_name).map(Vec::as_slice),
        );
        fs::write(&path, &bytes).unwrap();
        self.log.push(format!(
            "write {name}: kind {} len {}",
            what % 4,
            bytes.len()
        ));
        self.files.insert(name.to_string(), bytes);
    }

    fn snapshot(&mut self) -> atlasvault::Result<()> {
        let mut vault = self.try_open(LockMode::Append)?;
        let opts = SnapshotOptions {
            paths: vec![self.source.clone()],
            threads: 2,
            ..Default::default()
        };
        let done = atlasvault::snapshot::snapshot(&mut vault, &opts, &Progress::hidden())?;
        self.log.push(format!("snapshot {}", done.id.short()));
        assert!(
            self.content.insert(done.id, self.files.clone()).is_none(),
            "snapshot id {} reused",
            done.id
        );
        self.local.insert(done.id);
        self.stats.snapshots += 1;
        Ok(())
    }

    /// A local operation failed part way: learn from the vault what it did. A snapshot that
    /// failed after writing its manifest holds the source as it was; a forget that failed removed
    /// some of what it judged.
    fn after_local_failure(&mut self) {
        let vault = self.open(LockMode::Shared);
        let ids: BTreeSet<SnapshotId> = vault.snapshot_ids().unwrap().into_iter().collect();
        for id in ids.difference(&self.local) {
            assert!(
                !self.content.contains_key(id),
                "a forgotten snapshot {id} came back\nops:\n{}",
                self.log.join("\n")
            );
            self.content.insert(*id, self.files.clone());
            self.log.push(format!(
                "  (the failed snapshot {} was written)",
                id.short()
            ));
        }
        assert!(
            ids.difference(&self.local).count() <= 1,
            "one failed snapshot added more than one: {ids:?}"
        );
        self.local = ids;
    }

    fn policy(n: u8) -> Retention {
        Retention {
            keep_last: Keep::Count(u32::from(n % 4) + 1),
            keep_within: std::time::Duration::ZERO,
            keep_quarter_hourly: Keep::NONE,
            keep_hourly: Keep::NONE,
            keep_daily: Keep::NONE,
            keep_weekly: Keep::NONE,
            keep_monthly: Keep::NONE,
            keep_yearly: Keep::NONE,
        }
    }

    fn forget(&mut self, n: u8) -> atlasvault::Result<()> {
        let policy = Self::policy(n);
        let vault = self.try_open(LockMode::Append)?;
        let r = atlasvault::retention::forget(&vault, &policy, false)?;
        let keep = policy.keep_last.limit().unwrap() as usize;
        assert_eq!(
            r.snapshots,
            self.local.len(),
            "forget judged every snapshot"
        );
        assert!(
            r.snapshots - r.forgotten >= keep.min(r.snapshots),
            "keep_last {keep} kept {} of {}",
            r.snapshots - r.forgotten,
            r.snapshots
        );
        for d in r.decisions.iter().filter(|d| !d.kept()) {
            assert!(self.local.remove(&d.id), "forgot unknown snapshot {}", d.id);
        }
        let ids: BTreeSet<SnapshotId> = vault.snapshot_ids().unwrap().into_iter().collect();
        assert_eq!(ids, self.local, "the vault holds what forget kept");
        self.log.push(format!(
            "forget keep_last {keep}: {} forgotten",
            r.forgotten
        ));
        self.stats.forgotten += r.forgotten;
        Ok(())
    }

    fn prune(&mut self, n: u8) -> atlasvault::Result<()> {
        let opts = PruneOptions {
            repack_threshold: f64::from(n % 100) + 1.0,
            ..Default::default()
        };
        let mut vault = self.try_open(LockMode::Shared)?;
        let r = atlasvault::prune::prune(&mut vault, &opts, &Progress::hidden())?;
        self.log.push(format!(
            "prune at {}%: {} snapshots",
            opts.repack_threshold, r.snapshots
        ));
        self.stats.prunes += 1;
        Ok(())
    }

    /// Runs a local operation (snapshot, forget or prune) with the local vault's writes failing
    /// after N when the input says so. Returns whether it failed.
    fn local_op(&mut self, inp: &mut Input) -> bool {
        let which = inp.byte() % 4;
        let n = inp.byte();
        let arg = inp.byte();
        let fail_after = (n & 1 == 1).then_some(u64::from(n >> 1) % 12);
        atlasvault::crashpoint::fail_io_after(&self.vault, fail_after);
        let result = match which {
            0 | 1 => self.snapshot(),
            2 => self.forget(arg),
            _ => self.prune(arg),
        };
        let injected = atlasvault::crashpoint::fail_io_after(&self.vault, None);
        let Err(e) = result else {
            return false;
        };
        assert!(
            injected > 0,
            "local op {which} failed with no fault injected: {e}\nops:\n{}",
            self.log.join("\n")
        );
        self.log.push(format!(
            "  local op {which}, fail after {fail_after:?}: failed: {e}"
        ));
        self.after_local_failure();
        self.stats.local_failures += 1;
        true
    }

    /// Runs a remote operation through a backend that dies after N calls (or never). Returns
    /// whether it failed.
    fn remote_op(&mut self, inp: &mut Input) -> bool {
        let which = inp.byte() % 4;
        let n = inp.byte();
        // Half the time no fault; otherwise the backend dies after n calls.
        let fail_after = (n & 1 == 1).then_some(u64::from(n >> 1) % 12);
        let pushed = self.remote.join("config.json").exists();
        if which >= 2 && !pushed {
            return false;
        }
        let (backend, faulty) = self.backend(fail_after);
        let result = match which {
            0 | 1 => self.push(&backend),
            2 => self.forget_remote(&backend, inp.byte()),
            _ => self.prune_remote(&backend, inp.byte()),
        };
        let failed = match result {
            Ok(()) => false,
            Err(e) => {
                assert!(
                    faulty.failures() > 0,
                    "op {which} failed with no fault injected: {e}"
                );
                true
            }
        };
        self.log.push(format!(
            "  remote op {which}, fail after {fail_after:?}: {} ({} calls)",
            if failed { "failed" } else { "ok" },
            faulty.calls()
        ));
        failed
    }

    fn push(&mut self, backend: &DynBackend) -> atlasvault::Result<()> {
        let vault = self.open(LockMode::Shared);
        self.remote_may.extend(self.local.iter().copied());
        let opts = PushOptions {
            threads: 2,
            ..Default::default()
        };
        atlasvault::push::push(&vault, &**backend, &opts, &Progress::hidden())?;
        self.remote_must.extend(self.local.iter().copied());
        self.log.push("push".into());
        self.stats.pushes += 1;
        Ok(())
    }

    fn forget_remote(&mut self, backend: &DynBackend, n: u8) -> atlasvault::Result<()> {
        let policy = Self::policy(n);
        let local = self.open(LockMode::Shared);
        let mirror = atlasvault::remote::open(backend.clone(), &self.cache, None, &self.secrets)?;
        // Until it succeeds, any snapshot may be gone.
        self.forget_failed = true;
        let r = atlasvault::retention::forget_remote(&local, &mirror, backend, &policy, false)?;
        self.forget_failed = false;
        for d in r.decisions.iter().filter(|d| !d.kept()) {
            self.remote_must.remove(&d.id);
            self.remote_may.remove(&d.id);
        }
        self.log
            .push(format!("forget remote: {} forgotten", r.forgotten));
        self.stats.remote_forgotten += r.forgotten;
        Ok(())
    }

    fn prune_remote(&mut self, backend: &DynBackend, n: u8) -> atlasvault::Result<()> {
        let opts = PruneOptions {
            repack_threshold: f64::from(n % 100) + 1.0,
            ..Default::default()
        };
        let mut local = self.open(LockMode::Shared);
        atlasvault::prune::prune_remote(
            &mut local,
            backend.clone(),
            &self.cache,
            &self.secrets,
            &opts,
            &Progress::hidden(),
        )?;
        self.log.push("prune remote".into());
        self.stats.remote_prunes += 1;
        Ok(())
    }

    /// Restores one snapshot from the remote through a backend that may die; a failure must be
    /// an error, never wrong bytes.
    fn restore_remote(&mut self, inp: &mut Input) -> bool {
        let n = inp.byte();
        let pick = inp.byte();
        let fail_after = (n & 1 == 1).then_some(u64::from(n >> 1) % 12);
        let Some(id) = self
            .remote_must
            .iter()
            .nth(pick as usize % self.remote_must.len().max(1))
        else {
            return false;
        };
        let id = *id;
        let target = self.target();
        let (backend, faulty) = self.backend(fail_after);
        let result = atlasvault::remote::open(backend, &self.cache, None, &self.secrets)
            .and_then(|remote| restore_into(&remote, &id, &target));
        let failed = match result {
            Ok(files) => {
                self.assert_same(&id, &files, "restore from the remote");
                self.stats.remote_restores += 1;
                false
            }
            Err(e) => {
                assert!(faulty.failures() > 0, "restore failed with no fault: {e}");
                true
            }
        };
        self.log.push(format!(
            "restore {} from the remote, fail after {fail_after:?}: {}",
            id.short(),
            if failed { "failed" } else { "ok" }
        ));
        failed
    }

    fn restore_local(&mut self, inp: &mut Input) {
        let pick = inp.byte() as usize;
        let Some(id) = self
            .local
            .iter()
            .nth(pick % self.local.len().max(1))
            .copied()
        else {
            return;
        };
        let target = self.target();
        let vault = self.open(LockMode::Shared);
        let files = restore_into(&vault, &id, &target).expect("restore from the local vault");
        self.assert_same(&id, &files, "restore from the local vault");
        self.log.push(format!("restore {}", id.short()));
    }

    fn assert_same(&mut self, id: &SnapshotId, got: &Files, what: &str) {
        self.stats.restored += 1;
        let want = &self.content[id];
        if got != want {
            let names = |f: &Files| {
                f.iter()
                    .map(|(k, v)| format!("{k} ({} B)", v.len()))
                    .collect::<Vec<_>>()
            };
            panic!(
                "{what} of {id}: got {:?}, want {:?}\nops:\n{}",
                names(got),
                names(want),
                self.log.join("\n")
            );
        }
    }

    /// Both stores verify; every snapshot either must hold restores exactly.
    fn check(&mut self) {
        let vault = self.open(LockMode::Shared);
        let ids: BTreeSet<SnapshotId> = vault.snapshot_ids().unwrap().into_iter().collect();
        assert_eq!(
            ids,
            self.local,
            "local snapshots\nops:\n{}",
            self.log.join("\n")
        );
        assert_clean(&vault, "local vault", &self.log);
        for id in self.local.clone() {
            let target = self.target();
            let files = restore_into(&vault, &id, &target).expect("local restore");
            self.assert_same(&id, &files, "restore from the local vault");
        }
        drop(vault);
        if !self.remote.join("config.json").exists() {
            assert!(self.remote_must.is_empty());
            return;
        }
        let (backend, _) = self.backend(None);
        let remote = atlasvault::remote::open(backend, &self.cache, None, &self.secrets)
            .unwrap_or_else(|e| panic!("open the remote: {e}\nops:\n{}", self.log.join("\n")));
        assert_clean(&remote, "remote", &self.log);
        let on_remote: BTreeSet<SnapshotId> = remote.snapshot_ids().unwrap().into_iter().collect();
        if std::mem::take(&mut self.forget_failed) {
            self.remote_must = self.remote_must.intersection(&on_remote).copied().collect();
        }
        let missing: Vec<_> = self.remote_must.difference(&on_remote).collect();
        let unknown: Vec<_> = on_remote.difference(&self.remote_may).collect();
        assert!(
            missing.is_empty() && unknown.is_empty(),
            "remote lacks {missing:?}, holds unknown {unknown:?}\nops:\n{}",
            self.log.join("\n")
        );
        for id in on_remote {
            let target = self.target();
            let files = restore_into(&remote, &id, &target).expect("remote restore");
            self.assert_same(&id, &files, "restore from the remote");
        }
        // Whatever the remote no longer holds needs no place in the "may" set.
        self.remote_may = remote.snapshot_ids().unwrap().into_iter().collect();
    }
}

fn assert_clean(vault: &Vault, what: &str, log: &[String]) {
    let opts = VerifyOptions {
        read_data: true,
        subset_percent: None,
        threads: 2,
    };
    let r = atlasvault::verify::verify(vault, &opts, &Progress::hidden())
        .unwrap_or_else(|e| panic!("verify the {what}: {e}\nops:\n{}", log.join("\n")));
    assert!(
        r.is_clean(),
        "the {what} does not verify: {:?} {:?}\nops:\n{}",
        r.problems,
        r.damaged_packs,
        log.join("\n")
    );
}

/// Restores snapshot `id` of `vault` into `target` and reads back the files of its one root.
fn restore_into(vault: &Vault, id: &SnapshotId, target: &Path) -> atlasvault::Result<Files> {
    let (_, manifest) = vault.resolve(&id.to_hex())?;
    let opts = RestoreOptions {
        target: target.to_path_buf(),
        includes: Vec::new(),
        overwrite: false,
        threads: 2,
    };
    let reader = vault.blob_reader()?;
    let r = atlasvault::restore::restore(&reader, &manifest, &opts, &Progress::hidden())?;
    if !r.errors.is_empty() {
        return Err(atlasvault::Error::Invalid(r.errors.join("; ")));
    }
    let root = target.join("src");
    let mut files = Files::new();
    read_tree(&root, "", &mut files);
    assert!(
        root.join("d/g").is_dir(),
        "the restored tree keeps its directories"
    );
    Ok(files)
}

/// Every regular file below `dir`, by path relative to the tree's root.
fn read_tree(dir: &Path, prefix: &str, files: &mut Files) {
    for e in fs::read_dir(dir).expect("read the restored tree") {
        let e = e.unwrap();
        let name = format!("{prefix}{}", e.file_name().to_string_lossy());
        let kind = e.file_type().unwrap();
        if kind.is_dir() {
            read_tree(&e.path(), &format!("{name}/"), files);
        } else if kind.is_file() {
            files.insert(name, fs::read(e.path()).unwrap());
        }
    }
}

/// Where runs put their files: tmpfs when there is one (fsync is free there), else the temp dir.
fn scratch_base() -> PathBuf {
    if let Some(dir) = std::env::var_os("VAULT_MODEL_TMP") {
        return dir.into();
    }
    let shm = Path::new("/dev/shm");
    if shm.is_dir() && tempfile::tempdir_in(shm).is_ok() {
        return shm.into();
    }
    std::env::temp_dir()
}

/// Runs the operations `data` encodes. Panics when the vault breaks a promise.
pub fn run(data: &[u8]) -> Stats {
    let mut inp = Input { data, at: 0 };
    let mut world = World::new(inp.byte() & 1 == 1);
    let mut ops = 0;
    while !inp.done() && ops < MAX_OPS {
        ops += 1;
        let failed = match inp.byte() % 10 {
            0..=2 => {
                world.edit(&mut inp);
                false
            }
            3..=6 => world.local_op(&mut inp),
            7 | 8 => world.remote_op(&mut inp),
            _ => {
                if inp.byte() & 1 == 0 {
                    world.restore_local(&mut inp);
                    false
                } else {
                    world.restore_remote(&mut inp)
                }
            }
        };
        if failed {
            world.stats.failures += 1;
            world.check();
        }
    }
    world.check();
    if std::env::var_os("VAULT_MODEL_LOG").is_some() {
        eprintln!("{}\n{:?}", world.log.join("\n"), world.stats);
    }
    world.stats
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seeded random sequences: the fuzz target's work in miniature, on every `cargo test`
    /// (12 sequences of up to 24 operations).
    #[test]
    fn random_sequences_keep_every_snapshot_restorable_through_a_dying_remote() {
        // VAULT_MODEL_SEEDS=N runs more (a long soak without the fuzzer's toolchain).
        let seeds = std::env::var("VAULT_MODEL_SEEDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(12u64);
        let mut all = Stats::default();
        for seed in 0..seeds {
            let mut s = seed;
            let data: Vec<u8> = (0..120)
                .map(|_| {
                    s = mix(s);
                    s as u8
                })
                .collect();
            all += run(&data);
        }
        // The sequences must reach every operation, or they prove nothing.
        assert!(
            all.snapshots >= 12 && all.forgotten > 0 && all.prunes > 0,
            "{all:?}"
        );
        assert!(
            all.pushes > 0 && all.remote_forgotten > 0 && all.remote_prunes > 0,
            "{all:?}"
        );
        assert!(
            all.remote_restores > 0 && all.failures >= 6 && all.restored > 30,
            "{all:?}"
        );
        assert!(all.local_failures >= 3, "{all:?}");
    }

    /// The fuzz target's seed corpus (and any input it ever found a bug with) replays here.
    #[test]
    fn fuzz_seeds_and_regressions_replay() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
        let mut n = 0;
        for dir in ["seeds/model", "regressions/model"] {
            let Ok(entries) = fs::read_dir(root.join(dir)) else {
                continue;
            };
            for e in entries {
                run(&fs::read(e.unwrap().path()).unwrap());
                n += 1;
            }
        }
        assert!(n > 0, "fuzz/seeds/model holds the seed inputs");
    }
}
