//! Helpers shared by the integration tests: a temp-dir fixture, a runner for the real `vault`
//! binary that fails any test whose run panicked, deterministic data, and a tree comparer.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

/// Path of the binary under test.
pub const VAULT_BIN: &str = env!("CARGO_BIN_EXE_vault");

pub const MIB: usize = 1024 * 1024;

/// The test vaults' password.
pub const PASSWORD: &str = "correct horse battery staple";

/// `vault init` flags for a fast argon2id.
pub const CHEAP_KDF: [&str; 4] = ["--argon2-memory-kib", "64", "--argon2-iterations", "1"];

/// One test's private directory: `vault/` for the vault, anything else for data and targets.
pub struct Fixture {
    pub tmp: tempfile::TempDir,
}

impl Fixture {
    /// A fresh temp dir without a vault, with the vault password in `password` (every command
    /// gets it through `VAULT_PASSWORD_FILE`).
    pub fn new() -> Self {
        let f = Fixture {
            tmp: tempfile::Builder::new()
                .prefix("atlasvault-it-")
                .tempdir()
                .expect("create temp dir"),
        };
        fs::write(f.password_file(), format!("{PASSWORD}\n")).expect("write password file");
        f
    }

    /// A fresh temp dir with an initialised, encrypted vault at `vault/` (argon2 made cheap:
    /// the tests are about the vault, not about password guessing).
    pub fn with_vault() -> Self {
        let f = Fixture::new();
        f.cmd().args(["init"]).args(CHEAP_KDF).run().success();
        f
    }

    /// The file holding the test vault password.
    pub fn password_file(&self) -> PathBuf {
        self.path("password")
    }

    /// Opens this fixture's vault through the library.
    pub fn open_vault(&self, mode: atlasvault::lock::LockMode) -> atlasvault::Vault {
        let secrets =
            atlasvault::keys::SecretSource::from_env_and(Some(self.password_file()), None);
        atlasvault::Vault::open(&self.vault(), mode, None, &secrets).expect("open vault")
    }

    pub fn root(&self) -> &Path {
        self.tmp.path()
    }

    /// `root/rel`.
    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.tmp.path().join(rel)
    }

    /// The vault directory.
    pub fn vault(&self) -> PathBuf {
        self.path("vault")
    }

    /// A `vault --vault <this fixture's vault>` command.
    pub fn cmd(&self) -> VaultCmd {
        self.cmd_in(self.root()).vault_dir(&self.vault())
    }

    /// A `vault` command run in `cwd`, with this fixture's password but no `--vault`.
    pub fn cmd_in(&self, cwd: &Path) -> VaultCmd {
        VaultCmd::new(cwd).env("VAULT_PASSWORD_FILE", self.password_file())
    }

    /// Runs `vault snapshot --json PATH` expecting exit 0; returns the parsed JSON.
    pub fn snapshot(&self, path: &Path) -> Value {
        self.cmd()
            .args(["snapshot", "--json"])
            .arg(path)
            .run()
            .success()
            .json()
    }

    /// Runs `vault restore SNAP --target TARGET` expecting exit 0.
    pub fn restore(&self, snap: &str, target: &Path) -> Run {
        self.cmd()
            .args(["restore", snap, "--target"])
            .arg(target)
            .run()
            .success()
    }

    /// Ids of the listed snapshots (`vault snapshots --json`), oldest first.
    pub fn snapshot_ids(&self) -> Vec<String> {
        self.snapshot_ids_in(&self.vault())
    }

    /// Ids of the snapshots of the vault at `vault`, oldest first.
    pub fn snapshot_ids_in(&self, vault: &Path) -> Vec<String> {
        let v = self
            .cmd_in(self.root())
            .vault_dir(vault)
            .args(["snapshots", "--json"])
            .run()
            .success()
            .json();
        v.as_array()
            .expect("snapshots --json is an array")
            .iter()
            .map(|s| s["id"].as_str().expect("id is a string").to_string())
            .collect()
    }
}

/// True when a missing real component (S3 server, NTFS mount) must fail a test rather than skip
/// it: in CI (`.ci/run` sets `VAULT_TEST_REQUIRE_REAL=1`).
pub fn real_components_required() -> bool {
    ["VAULT_TEST_REQUIRE_REAL", "CI"].iter().any(|k| {
        std::env::var(k)
            .is_ok_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
    })
}

/// A command line for the binary under test.
pub struct VaultCmd {
    cmd: Command,
    shown: Vec<OsString>,
}

impl VaultCmd {
    /// `vault` run in `cwd` with a scrubbed environment (no VAULT_DIR, XDG_DATA_HOME inside `cwd`).
    pub fn new(cwd: &Path) -> Self {
        Self::with_program(VAULT_BIN, &[], cwd)
    }

    /// `program prefix... vault-args...`, for running the binary through setpriv and the like.
    pub fn with_program(program: impl AsRef<OsStr>, prefix: &[OsString], cwd: &Path) -> Self {
        let mut cmd = Command::new(program.as_ref());
        cmd.args(prefix)
            .current_dir(cwd)
            .env_remove("VAULT_DIR")
            .env_remove("VAULT_PASSWORD_COMMAND")
            .env_remove("VAULT_KEY_FILE")
            .env_remove("VAULT_PASSWORD_FILE")
            .env_remove("VAULT_CONFIG")
            .env_remove("VAULT_CACHE_DIR")
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE")
            .env("XDG_DATA_HOME", cwd.join("xdg-data-home"))
            .env("XDG_CACHE_HOME", cwd.join("xdg-cache-home"))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        let mut shown = vec![program.as_ref().to_os_string()];
        shown.extend(prefix.iter().cloned());
        VaultCmd { cmd, shown }
    }

    pub fn vault_dir(self, dir: &Path) -> Self {
        self.arg("--vault").arg(dir)
    }

    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Self {
        self.shown.push(a.as_ref().to_os_string());
        self.cmd.arg(a);
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        for a in args {
            self = self.arg(a);
        }
        self
    }

    pub fn env(mut self, k: &str, v: impl AsRef<OsStr>) -> Self {
        self.cmd.env(k, v);
        self
    }

    pub fn env_remove(mut self, k: &str) -> Self {
        self.cmd.env_remove(k);
        self
    }

    /// A human-readable form of the command line for assertion messages.
    pub fn shown(&self) -> String {
        self.shown
            .iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Runs to completion. Fails the test if the binary panicked.
    pub fn run(mut self) -> Run {
        let shown = self.shown();
        let out = self
            .cmd
            .output()
            .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
        Run::finished(shown, out)
    }

    /// Runs to completion with `input` on its standard input.
    pub fn run_with_stdin(mut self, input: &[u8]) -> Run {
        let shown = self.shown();
        let mut child = self
            .cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {shown}: {e}"));
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let input = input.to_vec();
        let feeder = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let out = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
        feeder.join().expect("stdin feeder");
        Run::finished(shown, out)
    }

    /// Starts the command with stdout and stderr discarded (for kill and lock tests).
    /// Starts the binary in the background with stdout captured (for `wait_with_output`).
    pub fn spawn_capturing(mut self) -> Child {
        let shown = self.shown();
        self.cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {shown}: {e}"))
    }

    pub fn spawn(mut self) -> Child {
        let shown = self.shown();
        self.cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {shown}: {e}"))
    }
}

/// The outcome of one run of the binary.
#[derive(Debug)]
pub struct Run {
    pub shown: String,
    /// `None` when killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The outcome of a finished process; fails the test if the binary panicked.
    fn finished(shown: String, out: std::process::Output) -> Run {
        let run = Run {
            shown,
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        run.assert_no_panic();
        run
    }

    fn context(&self) -> String {
        format!(
            "command: {}\nexit: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.shown, self.code, self.stdout, self.stderr
        )
    }

    pub fn assert_no_panic(&self) {
        assert!(
            !self.stderr.contains("panicked") && !self.stderr.contains("stack backtrace"),
            "the binary panicked\n{}",
            self.context()
        );
        assert_ne!(
            self.code,
            Some(101),
            "exit 101 is Rust's panic code\n{}",
            self.context()
        );
    }

    /// Asserts the exit code.
    pub fn code(self, want: i32) -> Self {
        assert_eq!(
            self.code,
            Some(want),
            "unexpected exit code\n{}",
            self.context()
        );
        self
    }

    pub fn success(self) -> Self {
        self.code(0)
    }

    /// Asserts a clean failure: the given exit code and exactly one non-empty line on stderr.
    pub fn one_line_error(self, want: i32) -> Self {
        let s = self.code(want);
        let lines: Vec<&str> = s.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(
            lines.len(),
            1,
            "expected exactly one line on stderr\n{}",
            s.context()
        );
        s
    }

    pub fn stderr_has(self, needle: &str) -> Self {
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}\n{}",
            self.context()
        );
        self
    }

    pub fn stderr_or_stdout_has(self, needle: &str) -> Self {
        assert!(
            self.stdout.contains(needle) || self.stderr.contains(needle),
            "output lacks {needle:?}\n{}",
            self.context()
        );
        self
    }

    pub fn stdout_has(self, needle: &str) -> Self {
        assert!(
            self.stdout.contains(needle),
            "stdout lacks {needle:?}\n{}",
            self.context()
        );
        self
    }

    /// Parses JSON lines (one value per line) into an array.
    pub fn json_lines(&self) -> Value {
        Value::Array(
            self.stdout
                .lines()
                .map(|l| {
                    serde_json::from_str(l).unwrap_or_else(|e| {
                        panic!("line {l:?} is not JSON ({e})\n{}", self.context())
                    })
                })
                .collect(),
        )
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e})\n{}", self.context()))
    }
}

/// The result of gate `name` in a snapshot's or a gate run's JSON.
pub fn gate_result<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["gates"]
        .as_array()
        .unwrap_or_else(|| panic!("no gates in {v:#}"))
        .iter()
        .find(|g| g["gate"] == name)
        .unwrap_or_else(|| panic!("no gate {name} in {v:#}"))
}

/// The last-known-good snapshot id, from `vault status --json` (the ref itself is sealed).
pub fn lkg(f: &Fixture) -> Option<String> {
    // Exit 4 (an unreadable manifest) still reports the ref.
    let status = f.cmd().args(["status", "--json"]).run().json();
    status["lkg"].as_str().map(str::to_string)
}

/// A snapshot's manifest as JSON, read (and opened) through the library.
pub fn manifest_json(f: &Fixture, id: &str) -> Value {
    let v = f.open_vault(atlasvault::lock::LockMode::Shared);
    let id = atlasvault::id::SnapshotId::from_hex(id).expect("snapshot id");
    serde_json::to_value(v.manifest(&id).expect("manifest")).expect("manifest as JSON")
}

/// Changes one byte in the middle of a manifest as stored (its sealed envelope's hex, in an
/// encrypted vault), the way a bit rot or an attacker would.
pub fn tamper_manifest(f: &Fixture, id: &str) {
    let path = f.vault().join("snapshots").join(format!("{id}.json"));
    let mut bytes = fs::read(&path).expect("read manifest");
    let mid = bytes.len() / 2;
    let i = (mid..bytes.len())
        .find(|&i| bytes[i].is_ascii_hexdigit())
        .expect("a hex digit to change");
    bytes[i] = if bytes[i] == b'0' { b'1' } else { b'0' };
    fs::write(&path, bytes).expect("write manifest");
}

/// Reads a `u64` field from snapshot JSON.
pub fn num(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing or not a number in {v:#}"))
}

/// Deterministic pseudo-random bytes (blake3 XOF keyed by `seed`).
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(&seed.to_le_bytes())
        .finalize_xof()
        .fill(&mut out);
    out
}

/// Writes `len` pseudo-random bytes to `path` without holding them all in memory.
pub fn write_random_file(path: &Path, seed: u64, len: usize) {
    let mut xof = blake3::Hasher::new()
        .update(&seed.to_le_bytes())
        .finalize_xof();
    let mut f = std::io::BufWriter::new(fs::File::create(path).expect("create random file"));
    let mut buf = vec![0u8; MIB];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len());
        xof.fill(&mut buf[..n]);
        f.write_all(&buf[..n]).expect("write random file");
        left -= n;
    }
    f.flush().expect("flush random file");
}

/// Repetitive, compressible text of about `len` bytes.
pub fn text_bytes(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 64);
    let mut i = 0u64;
    while out.len() < len {
        out.extend_from_slice(
            format!("INSERT INTO t VALUES ({i}, 'row {}');\n", i % 97).as_bytes(),
        );
        i += 1;
    }
    out.truncate(len);
    out
}

/// blake3 of a file's content.
pub fn file_hash(path: &Path) -> blake3::Hash {
    let mut h = blake3::Hasher::new();
    h.update_reader(fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .expect("hash file");
    h.finalize()
}

/// Total size of the regular files below `dir`.
pub fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            let m = e.metadata().expect("metadata");
            if m.is_dir() {
                total += dir_size(&e.path());
            } else {
                total += m.len();
            }
        }
    }
    total
}

/// Every published pack file below `vault/packs` (temporary files are not packs).
pub fn pack_files(vault: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for sub in fs::read_dir(vault.join("packs"))
        .expect("read packs/")
        .flatten()
    {
        if sub.path().is_dir() {
            for f in fs::read_dir(sub.path())
                .expect("read pack subdir")
                .flatten()
            {
                if f.file_name().to_string_lossy().ends_with(".pack") {
                    out.push(f.path());
                }
            }
        }
    }
    out.sort();
    out
}

/// Every path below `dir`, relative to it, sorted (`dir` itself excluded).
pub fn list_all(dir: &Path) -> Vec<PathBuf> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            out.push(p.strip_prefix(base).expect("below base").to_path_buf());
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                walk(base, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Sets mode bits exactly (independent of the umask).
pub fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// Sets a file's, directory's or symlink's own mtime (and atime) to `secs` since the epoch.
pub fn set_mtime(path: &Path, secs: i64) {
    let t = filetime::FileTime::from_unix_time(secs, 123_000_000);
    filetime::set_symlink_file_times(path, t, t)
        .unwrap_or_else(|e| panic!("set times {}: {e}", path.display()));
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Asserts that `dst` is a faithful restore of `src`: same names, kinds, bytes, permission bits,
/// mtimes (to the second), symlink targets, and (when root) owners. Names in `skip` are ignored
/// on the source side (they must be absent from `dst`).
pub fn assert_same_tree(src: &Path, dst: &Path, skip: &[&OsStr]) {
    compare_entry(src, dst, Path::new("."), skip);
}

fn compare_entry(src: &Path, dst: &Path, rel: &Path, skip: &[&OsStr]) {
    let sm = fs::symlink_metadata(src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    let dm = fs::symlink_metadata(dst)
        .unwrap_or_else(|e| panic!("restored {} is missing: {e}", rel.display()));
    let (st, dt) = (sm.file_type(), dm.file_type());
    assert_eq!(
        (st.is_file(), st.is_dir(), st.is_symlink()),
        (dt.is_file(), dt.is_dir(), dt.is_symlink()),
        "{}: kind differs",
        rel.display()
    );
    assert_eq!(
        sm.mtime(),
        dm.mtime(),
        "{}: mtime differs (source {}, restored {})",
        rel.display(),
        sm.mtime(),
        dm.mtime()
    );
    if is_root() {
        assert_eq!(
            (sm.uid(), sm.gid()),
            (dm.uid(), dm.gid()),
            "{}: owner differs",
            rel.display()
        );
    }
    if st.is_symlink() {
        assert_eq!(
            fs::read_link(src).expect("readlink source"),
            fs::read_link(dst).expect("readlink restored"),
            "{}: symlink target differs",
            rel.display()
        );
        return;
    }
    assert_eq!(
        sm.mode() & 0o7777,
        dm.mode() & 0o7777,
        "{}: mode differs ({:o} vs {:o})",
        rel.display(),
        sm.mode() & 0o7777,
        dm.mode() & 0o7777
    );
    if st.is_file() {
        assert_eq!(sm.len(), dm.len(), "{}: size differs", rel.display());
        assert!(
            fs::read(src).expect("read source") == fs::read(dst).expect("read restored"),
            "{}: content differs",
            rel.display()
        );
        return;
    }
    let names = |d: &Path, skip: &[&OsStr]| -> Vec<OsString> {
        let mut v: Vec<OsString> = fs::read_dir(d)
            .unwrap_or_else(|e| panic!("{}: {e}", d.display()))
            .map(|e| e.expect("dir entry").file_name())
            .filter(|n| !skip.contains(&n.as_os_str()))
            .collect();
        v.sort();
        v
    };
    let sn = names(src, skip);
    let dn = names(dst, &[]);
    assert_eq!(sn, dn, "{}: directory listing differs", rel.display());
    for n in &sn {
        compare_entry(&src.join(n), &dst.join(n), &rel.join(n), skip);
    }
}

/// XORs the byte at `at` in a file with 0x5a, in place.
pub fn flip_byte(path: &Path, at: u64) {
    use std::os::unix::fs::FileExt;
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    file.read_exact_at(&mut b, at).unwrap();
    b[0] ^= 0x5a;
    file.write_all_at(&b, at).unwrap();
    file.sync_all().unwrap();
}

/// Where one chunk of a file is stored.
#[derive(Debug, Clone)]
pub struct ChunkSpot {
    pub pack: PathBuf,
    pub pack_hex: String,
    pub offset: u64,
    pub stored_len: u32,
}

/// Where each chunk of `path` (snapshot-relative, `/`-separated) is, found through the library.
pub fn file_chunks(vault: &Path, snapshot: &str, path: &str) -> Vec<ChunkSpot> {
    use atlasvault::lock::LockMode;
    use atlasvault::tree::Node;

    // Fixture layout: the password file sits beside the vault.
    let password = vault.parent().expect("vault has a parent").join("password");
    let secrets = atlasvault::keys::SecretSource::from_env_and(Some(password), None);
    let v = atlasvault::Vault::open(vault, LockMode::Shared, None, &secrets).expect("open vault");
    let (_, m) = v.resolve(snapshot).expect("resolve snapshot");
    let r = v.blob_reader().expect("blob reader");
    let mut tree = r.tree(&m.tree).expect("root tree");
    let parts: Vec<&str> = path.split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        let e = tree
            .get(part.as_bytes())
            .unwrap_or_else(|| panic!("{part} not in tree"))
            .clone();
        match e.node {
            Node::Dir { subtree } => tree = r.tree(&subtree).expect("subtree"),
            Node::File { chunks } if i + 1 == parts.len() => {
                return chunks
                    .iter()
                    .map(|c| {
                        let loc = r.location(c).expect("chunk is indexed");
                        ChunkSpot {
                            pack: PathBuf::from(r.pack_label(&loc.pack)),
                            pack_hex: loc.pack.to_hex(),
                            offset: loc.entry.offset,
                            stored_len: loc.entry.stored_len,
                        }
                    })
                    .collect();
            }
            other => panic!("{part}: unexpected node {other:?}"),
        }
    }
    panic!("{path} is a directory")
}

/// Where the first chunk of `path` is.
pub fn first_chunk(vault: &Path, snapshot: &str, path: &str) -> ChunkSpot {
    file_chunks(vault, snapshot, path)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("{path} has no chunks"))
}
