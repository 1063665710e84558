//! Directory remotes on a real NTFS file system: a 512 MiB image formatted by `mkntfs` and mounted
//! by `ntfs-3g -o windows_names` (which refuses the names Windows refuses), as a USB drive or a
//! Windows disk would be. `vault push` copies the vault there byte for byte and resumes where the
//! remote lacks or holds a short object; `vault verify --remote` reads it back and names damage;
//! `vault restore --lkg --from` rebuilds the last-known-good tree from the drive alone after the
//! local vault and config are gone, the second time out of its cache.
//!
//! Mounting needs root, `/dev/fuse` and Debian's `ntfs-3g`. Without them the tests say SKIPPED
//! on stderr and pass, unless `VAULT_TEST_REQUIRE_REAL` or `CI` is set: then they fail.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::common::*;

/// The NTFS image's size (sparse: only what NTFS writes takes disk space).
const IMAGE_BYTES: u64 = 512 * 1024 * 1024;
/// The remote's name in the tests' config file.
pub(crate) const REMOTE: &str = "ntfs";
/// `statfs`'s `f_type` of a FUSE mount (ntfs-3g is a FUSE file system).
const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;

/// An NTFS file system in an image file inside a fixture, mounted by ntfs-3g with
/// `windows_names`; unmounted when dropped.
pub(crate) struct NtfsMount {
    image: PathBuf,
    mountpoint: PathBuf,
}

impl NtfsMount {
    /// Mounts a fresh NTFS file system under `f`'s directory. When that is impossible: panics if
    /// a real mount is required, else says SKIPPED on stderr and returns `None`.
    pub(crate) fn new(f: &Fixture, test: &str) -> Option<NtfsMount> {
        match NtfsMount::try_mount(f) {
            Ok(m) => Some(m),
            Err(reason) if real_components_required() => panic!(
                "{test}: the NTFS test needs {reason}; VAULT_TEST_REQUIRE_REAL or CI is set, so \
                 this is a failure, not a skip"
            ),
            Err(reason) => {
                eprintln!(
                    "\n**********\nSKIPPED: {test}: this NTFS test needs {reason}. It proved \
                     NOTHING. Run it as root with Debian's ntfs-3g installed; set \
                     VAULT_TEST_REQUIRE_REAL=1 to make this a failure.\n**********\n"
                );
                None
            }
        }
    }

    /// The mount, or what it lacks (phrased to follow "needs").
    fn try_mount(f: &Fixture) -> Result<NtfsMount, String> {
        if !is_root() {
            return Err("root (it mounts a file system)".into());
        }
        if !Path::new("/dev/fuse").exists() {
            return Err("/dev/fuse (ntfs-3g is a FUSE file system)".into());
        }
        let mkntfs = find_tool("mkntfs")?;
        let ntfs_3g = find_tool("ntfs-3g")?;
        let image = f.path("ntfs.img");
        let mountpoint = f.path("ntfs-mount");
        fs::create_dir(&mountpoint).map_err(|e| format!("a mount point ({e})"))?;
        fs::File::create(&image)
            .and_then(|file| file.set_len(IMAGE_BYTES))
            .map_err(|e| format!("a 512 MiB sparse image file ({e})"))?;
        run_tool(Command::new(&mkntfs).args(["-F", "-Q"]).arg(&image))?;
        // From here on, dropping `m` unmounts whatever got mounted.
        let m = NtfsMount { image, mountpoint };
        m.mount(&ntfs_3g)?;
        Ok(m)
    }

    /// Mounts the image on the mount point.
    fn mount(&self, ntfs_3g: &Path) -> Result<(), String> {
        run_tool(
            Command::new(ntfs_3g)
                .args(["-o", "windows_names"])
                .arg(&self.image)
                .arg(&self.mountpoint),
        )?;
        if self.mount_entry().is_none() {
            return Err(format!(
                "a working mount: ntfs-3g exited 0 but {} is not in /proc/self/mountinfo",
                self.mountpoint.display()
            ));
        }
        Ok(())
    }

    /// Pulls the drive out from under whatever uses it: a lazy unmount detaches the file system
    /// at once (open files keep working; new lookups land on the bare mount point), as an
    /// unplugged USB disk or a stopped WSL mount would.
    pub(crate) fn unmount_lazily(&self) {
        for (program, flags) in [("umount", ["-l"]), ("fusermount", ["-uz"])] {
            if self.mount_entry().is_none() {
                break;
            }
            let _ = Command::new(program)
                .args(flags)
                .arg(&self.mountpoint)
                .output();
        }
        assert!(
            self.mount_entry().is_none(),
            "{} is still mounted",
            self.mountpoint.display()
        );
    }

    /// Mounts the same image again after [`NtfsMount::unmount_lazily`]. ntfs-3g lets go of the
    /// image only once the last file open on the detached mount is closed, so a refusal is
    /// retried for a few seconds.
    pub(crate) fn remount(&self) {
        let ntfs_3g = find_tool("ntfs-3g").expect("ntfs-3g mounted this image before");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match self.mount(&ntfs_3g) {
                Ok(()) => return,
                Err(e) if std::time::Instant::now() > deadline => panic!("remount: {e}"),
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(100)),
            }
        }
    }

    /// The mount point, which is an ordinary directory while the image is not mounted.
    pub(crate) fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// The remote's directory on the drive.
    pub(crate) fn dir(&self) -> PathBuf {
        self.mountpoint.join("AtlasVault")
    }

    /// The remote's URL.
    pub(crate) fn url(&self) -> String {
        format!("file://{}", self.dir().display())
    }

    /// This mount's line of /proc/self/mountinfo, split into fields.
    fn mount_entry(&self) -> Option<Vec<String>> {
        let want = mountinfo_escape(&self.mountpoint);
        let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
        info.lines()
            .map(|l| l.split(' ').map(str::to_string).collect::<Vec<_>>())
            .rfind(|fields| fields.get(4) == Some(&want))
    }
}

impl Drop for NtfsMount {
    fn drop(&mut self) {
        let attempts: [(&str, &[&str]); 4] = [
            ("umount", &[]),
            ("fusermount", &["-u"]),
            ("fusermount3", &["-u"]),
            ("umount", &["-l"]),
        ];
        for (program, flags) in attempts {
            if self.mount_entry().is_none() {
                return;
            }
            let _ = Command::new(program)
                .args(flags)
                .arg(&self.mountpoint)
                .output();
        }
        if self.mount_entry().is_some() {
            eprintln!(
                "warning: could not unmount {}; unmount it by hand",
                self.mountpoint.display()
            );
        }
    }
}

/// A path as /proc/self/mountinfo writes it (space, tab, newline and backslash octal-escaped).
fn mountinfo_escape(path: &Path) -> String {
    let mut out = String::new();
    for &b in path.as_os_str().as_bytes() {
        match b {
            b' ' | b'\t' | b'\n' | b'\\' => out.push_str(&format!("\\{b:03o}")),
            _ => out.push(b as char),
        }
    }
    out
}

/// An ntfs-3g program from the usual places or PATH.
fn find_tool(name: &str) -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .map(PathBuf::from)
        .chain(std::env::split_paths(&path))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| format!("{name} (Debian package ntfs-3g)"))
}

fn run_tool(cmd: &mut Command) -> Result<(), String> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .map_err(|e| format!("a working {shown} (cannot start it: {e})"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "a working mount: {shown} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A tree of about three hundred files: random ones from 1 KiB to 1.8 MiB, distinct small texts,
/// nested directories, an empty file and directory, and names with spaces and accents.
fn build_tree(data: &Path) {
    for dir in [
        "docs/drafts",
        "media/photos/2024",
        "src/deep/deeper",
        "empty dir",
    ] {
        fs::create_dir_all(data.join(dir)).unwrap();
    }
    for i in 0..20u64 {
        let dir = ["media", "media/photos/2024", "src/deep/deeper", "."][i as usize % 4];
        let len = 1024 * (1 + 5 * i * i) as usize;
        write_random_file(&data.join(dir).join(format!("blob-{i:02}.bin")), i, len);
    }
    for i in 0..280usize {
        let dir = ["docs", "docs/drafts", "src", "src/deep"][i % 4];
        let mut text = format!("file {i}: notes that only this file holds\n").into_bytes();
        text.extend_from_slice(&text_bytes(200 + (i * 977) % 20_000));
        fs::write(data.join(dir).join(format!("note-{i:03}.txt")), text).unwrap();
    }
    fs::write(data.join("café notes.txt"), "crème brûlée, naïve façade\n").unwrap();
    fs::write(data.join("docs/Résumé – final draft.md"), text_bytes(3000)).unwrap();
    fs::write(data.join("empty"), b"").unwrap();
}

/// Regular files below `root`, by `/`-separated relative name, with their content hash.
fn files_below(root: &Path) -> BTreeMap<String, blake3::Hash> {
    list_all(root)
        .into_iter()
        .filter(|rel| root.join(rel).is_file())
        .map(|rel| {
            (
                rel.to_string_lossy().into_owned(),
                file_hash(&root.join(rel)),
            )
        })
        .collect()
}

/// What a push must put on a remote: the vault's config, keys, packs, snapshots and LKG ref.
fn pushable(vault: &Path) -> BTreeMap<String, blake3::Hash> {
    files_below(vault)
        .into_iter()
        .filter(|(name, _)| {
            name == "config.json"
                || name == "refs/last-known-good.json"
                || ["keys/", "packs/", "snapshots/"]
                    .iter()
                    .any(|p| name.starts_with(p))
        })
        .collect()
}

/// Asserts that the remote directory holds exactly the vault's pushable objects, byte for byte
/// (so no stray or temporary file either).
pub(crate) fn assert_remote_mirrors(vault: &Path, remote: &Path) {
    let want = pushable(vault);
    let mut have = files_below(remote);
    // The marker `vault remote add` leaves is not an object.
    assert!(
        have.remove(atlasvault::backend::local::REMOTE_MARKER)
            .is_some(),
        "the remote carries its marker"
    );
    let names = |m: &BTreeMap<String, blake3::Hash>| m.keys().cloned().collect::<BTreeSet<_>>();
    assert_eq!(
        names(&have),
        names(&want),
        "the remote's objects differ from the vault's"
    );
    for (name, hash) in &want {
        assert_eq!(&have[name], hash, "{name} differs on the remote");
    }
}

/// `vault --config CFG --cache-dir CACHE ...` on the fixture's vault.
pub(crate) fn cmd(f: &Fixture, cfg: &Path, cache: &Path) -> VaultCmd {
    f.cmd()
        .env_remove("VAULT_CONFIG")
        .env_remove("VAULT_CACHE_DIR")
        .arg("--config")
        .arg(cfg)
        .arg("--cache-dir")
        .arg(cache)
}

/// `vault remote add ntfs URL` into the config file `cfg` (which it creates).
pub(crate) fn add_remote(f: &Fixture, cfg: &Path, url: &str) {
    assert!(!cfg.exists());
    cmd(f, cfg, &f.path("cache"))
        .args(["remote", "add", REMOTE, url])
        .run()
        .success();
    let text = fs::read_to_string(cfg).unwrap();
    for want in [
        "[[remote]]".to_string(),
        format!("name = \"{REMOTE}\""),
        format!("url = \"{url}\""),
        format!("vault = \"{}\"", f.vault().display()),
    ] {
        assert!(text.contains(&want), "{want} not in the config:\n{text}");
    }
    assert!(
        !f.path("vault.toml").exists(),
        "remote add wrote ./vault.toml despite --config"
    );
}

/// `vault --json push` expecting exit 0; returns the run and its one report.
pub(crate) fn push(f: &Fixture, cfg: &Path) -> (Run, Value) {
    let run = cmd(f, cfg, &f.path("cache"))
        .args(["--json", "push"])
        .run()
        .success();
    let v = run.json();
    let pushes = v["pushes"].as_array().expect("pushes is an array");
    assert_eq!(pushes.len(), 1, "{v:#}");
    assert_eq!(pushes[0]["remote"], REMOTE, "{v:#}");
    assert_eq!(pushes[0]["ok"], true, "{v:#}");
    let report = pushes[0]["report"].clone();
    (run, report)
}

/// `vault --json verify --remote ntfs --read-data` with the mirror in `cache`; exit `code`.
pub(crate) fn verify_remote(f: &Fixture, cfg: &Path, cache: &Path, code: i32) -> Value {
    cmd(f, cfg, cache)
        .args(["--json", "verify", "--remote", REMOTE, "--read-data"])
        .run()
        .code(code)
        .json()
}

/// The pack files on the remote, as `packs/xx/<id>.pack`, sorted.
fn remote_packs(m: &NtfsMount) -> Vec<PathBuf> {
    pack_files(&m.dir())
}

/// A pack file's id (its name without `.pack`).
fn pack_hex(path: &Path) -> String {
    path.file_stem().unwrap().to_string_lossy().into_owned()
}

/// Files of the blob cache of the one mirror under `cache` (`--cache-dir`), with size and
/// mtime: a refetched blob is rewritten.
pub(crate) fn blob_cache(cache: &Path) -> BTreeMap<PathBuf, (u64, i64, i64)> {
    let mirrors: Vec<PathBuf> = fs::read_dir(cache)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(mirrors.len() <= 1, "one remote, one mirror: {mirrors:?}");
    let Some(mirror) = mirrors.first() else {
        return BTreeMap::new();
    };
    let dir = mirror.join("blobs");
    list_all(&dir)
        .into_iter()
        .filter_map(|rel| {
            let m = fs::metadata(dir.join(&rel)).ok()?;
            m.is_file()
                .then(|| (rel, (m.len(), m.mtime(), m.mtime_nsec())))
        })
        .collect()
}

/// `vault --json restore --lkg --from URL --target TARGET --cache-dir CACHE`, with nothing but
/// the password: no --vault, no config file, run in a directory without a vault.toml.
pub(crate) fn restore_from_remote(f: &Fixture, url: &str, target: &Path, cache: &Path) -> Value {
    assert!(!f.path("vault.toml").exists());
    f.cmd_in(f.root())
        .env_remove("VAULT_CONFIG")
        .env_remove("VAULT_CACHE_DIR")
        .args(["--json", "restore", "--lkg", "--from", url, "--target"])
        .arg(target)
        .arg("--cache-dir")
        .arg(cache)
        .run()
        .success()
        .json()
}

#[test]
fn push_verify_and_restore_from_ntfs_after_losing_the_local_vault() {
    let f = Fixture::with_vault();
    let Some(ntfs) = NtfsMount::new(
        &f,
        "push_verify_and_restore_from_ntfs_after_losing_the_local_vault",
    ) else {
        return;
    };
    let data = f.path("data");
    build_tree(&data);
    let snap = f.snapshot(&data);
    assert_eq!(snap["promoted"], true, "{snap:#}");
    let id = snap["id"].as_str().unwrap().to_string();
    assert_eq!(lkg(&f).as_deref(), Some(id.as_str()));

    let cfg = f.path("remotes.toml");
    add_remote(&f, &cfg, &ntfs.url());
    let local_packs = pack_files(&f.vault()).len();
    assert!(local_packs >= 1);
    let (_, report) = push(&f, &cfg);
    assert_eq!(report["first_push"], true, "{report:#}");
    assert_eq!(
        num(&report, "packs_uploaded"),
        local_packs as u64,
        "{report:#}"
    );
    assert_eq!(num(&report, "snapshots_uploaded"), 1, "{report:#}");
    assert_eq!(report["ref_updated"], id.as_str(), "{report:#}");

    let remote = ntfs.dir();
    for file in [
        "config.json".to_string(),
        format!("snapshots/{id}.json"),
        "refs/last-known-good.json".to_string(),
    ] {
        assert!(remote.join(&file).is_file(), "{file} is not on the drive");
    }
    assert!(remote.join("packs").is_dir());
    assert!(remote.join("keys").is_dir());
    assert_eq!(remote_packs(&ntfs).len(), local_packs);
    assert_remote_mirrors(&f.vault(), &remote);

    let v = verify_remote(&f, &cfg, &f.path("verify-cache"), 0);
    assert_eq!(v["clean"], true, "{v:#}");
    assert_eq!(num(&v["report"], "snapshots"), 1, "{v:#}");
    assert_eq!(num(&v["report"], "packs"), local_packs as u64, "{v:#}");
    assert_eq!(num(&v["report"], "packs_read"), local_packs as u64, "{v:#}");

    // The machine dies: vault and config gone. The drive and the password are all there is.
    fs::remove_dir_all(f.vault()).unwrap();
    fs::remove_file(&cfg).unwrap();
    let cache = f.path("restore-cache");
    let out = f.path("out-1");
    let r = restore_from_remote(&f, &ntfs.url(), &out, &cache);
    assert_eq!(r["snapshot"], id.as_str(), "{r:#}");
    assert_same_tree(&data, &out.join("data"), &[]);
    assert!(!f.vault().exists(), "the restore made a local vault");
    let cached = blob_cache(&cache);
    assert!(!cached.is_empty(), "the restore cached no blob");

    // Again, from the cache: the same tree, and nothing fetched (or rewritten) anew.
    let out = f.path("out-2");
    let r = restore_from_remote(&f, &ntfs.url(), &out, &cache);
    assert_eq!(r["snapshot"], id.as_str(), "{r:#}");
    assert_same_tree(&data, &out.join("data"), &[]);
    assert_eq!(
        blob_cache(&cache),
        cached,
        "the second restore changed the blob cache instead of reading it"
    );
}

#[test]
fn push_resumes_and_is_idempotent_on_ntfs() {
    let f = Fixture::with_vault();
    let Some(ntfs) = NtfsMount::new(&f, "push_resumes_and_is_idempotent_on_ntfs") else {
        return;
    };
    let data = f.path("data");
    build_tree(&data);
    let first = f.snapshot(&data);
    assert_eq!(first["promoted"], true, "{first:#}");
    let cfg = f.path("remotes.toml");
    add_remote(&f, &cfg, &ntfs.url());

    let (run, one) = push(&f, &cfg);
    assert_eq!(one["first_push"], true, "{one:#}");
    assert!(num(&one, "objects_uploaded") >= 5, "{one:#}");
    run.stderr_has("keeps no file permissions");
    assert_remote_mirrors(&f.vault(), &ntfs.dir());

    // Nothing new: nothing goes up, and the drive is unchanged.
    let before = files_below(&ntfs.dir());
    let (run, two) = push(&f, &cfg);
    assert_eq!(two["first_push"], false, "{two:#}");
    for key in [
        "objects_uploaded",
        "bytes_uploaded",
        "packs_uploaded",
        "snapshots_uploaded",
    ] {
        assert_eq!(num(&two, key), 0, "{key}: {two:#}");
    }
    assert_eq!(
        num(&two, "objects_present"),
        num(&one, "objects_uploaded"),
        "{two:#}"
    );
    assert!(two["ref_updated"].is_null(), "{two:#}");
    assert!(
        !run.stderr.contains("keeps no file permissions"),
        "{}",
        run.stderr
    );
    assert_eq!(files_below(&ntfs.dir()), before);

    // A changed tree: only the new packs, the snapshot and the ref go up.
    fs::write(data.join("café notes.txt"), "crème brûlée, revised\n").unwrap();
    write_random_file(&data.join("media/new-video.bin"), 1000, 1_500_000);
    for i in 0..5 {
        fs::write(
            data.join(format!("docs/added-{i}.txt")),
            format!("added later, number {i}\n"),
        )
        .unwrap();
    }
    let packs_before: BTreeSet<PathBuf> = pack_files(&f.vault()).into_iter().collect();
    let second = f.snapshot(&data);
    assert_eq!(second["promoted"], true, "{second:#}");
    let second_id = second["id"].as_str().unwrap();
    let new_packs = pack_files(&f.vault())
        .into_iter()
        .filter(|p| !packs_before.contains(p))
        .count();
    assert!(new_packs >= 1);
    let (_, three) = push(&f, &cfg);
    assert_eq!(num(&three, "packs_uploaded"), new_packs as u64, "{three:#}");
    assert_eq!(num(&three, "snapshots_uploaded"), 1, "{three:#}");
    assert_eq!(
        num(&three, "objects_uploaded"),
        new_packs as u64 + 2,
        "new packs, one snapshot, the ref: {three:#}"
    );
    assert_eq!(three["ref_updated"], second_id, "{three:#}");
    assert_remote_mirrors(&f.vault(), &ntfs.dir());
    let cache = f.path("verify-cache");
    let v = verify_remote(&f, &cfg, &cache, 0);
    assert_eq!(v["clean"], true, "{v:#}");
    assert_eq!(num(&v["report"], "snapshots"), 2, "{v:#}");

    // An interrupted copy: one pack gone, one cut short, a temporary file left behind.
    let packs = remote_packs(&ntfs);
    assert!(packs.len() >= 2, "{packs:?}");
    let (gone, short) = (&packs[0], &packs[packs.len() - 1]);
    fs::remove_file(gone).unwrap();
    let len = fs::metadata(short).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(short)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    fs::write(
        short.parent().unwrap().join(".tmp-interrupted"),
        b"half a pack",
    )
    .unwrap();
    let v = verify_remote(&f, &cfg, &cache, 4);
    assert_eq!(v["clean"], false, "{v:#}");
    let damaged: BTreeMap<String, String> = v["report"]["damaged_packs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["pack"].as_str().unwrap().to_string(),
                d["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        damaged
            .get(&pack_hex(short))
            .is_some_and(|r| r.contains("bytes")),
        "the short pack is not named with its size: {v:#}"
    );
    // The lost pack: named when the mirror still indexes it, else (a mirror drops the packs the
    // remote no longer lists) its blobs are reported as in no pack.
    let problems = v["report"]["problems"].as_array().unwrap();
    assert!(
        damaged.contains_key(&pack_hex(gone))
            || problems
                .iter()
                .any(|p| p.as_str().unwrap().contains("is not in any pack")),
        "the lost pack went unnoticed: {v:#}"
    );
    assert!(
        damaged
            .keys()
            .all(|p| *p == pack_hex(gone) || *p == pack_hex(short)),
        "{v:#}"
    );

    // The next push puts back exactly those two.
    let (_, four) = push(&f, &cfg);
    assert_eq!(num(&four, "packs_uploaded"), 2, "{four:#}");
    assert_eq!(num(&four, "objects_uploaded"), 2, "{four:#}");
    fs::remove_file(short.parent().unwrap().join(".tmp-interrupted")).unwrap();
    assert_remote_mirrors(&f.vault(), &ntfs.dir());
    let v = verify_remote(&f, &cfg, &cache, 0);
    assert_eq!(v["clean"], true, "{v:#}");
    let (_, five) = push(&f, &cfg);
    assert_eq!(num(&five, "objects_uploaded"), 0, "{five:#}");
}

#[test]
fn windows_names_are_enforced_by_the_mount() {
    let f = Fixture::new();
    let Some(ntfs) = NtfsMount::new(&f, "windows_names_are_enforced_by_the_mount") else {
        return;
    };
    let entry = ntfs.mount_entry().expect("mounted");
    // Fields after " - ": file system type, then source.
    let dash = entry
        .iter()
        .position(|x| x == "-")
        .expect("mountinfo separator");
    assert!(
        entry[dash + 1].starts_with("fuse"),
        "not a FUSE mount: {entry:?}"
    );
    assert_eq!(
        entry[dash + 2],
        mountinfo_escape(&ntfs.image),
        "not our image: {entry:?}"
    );
    let c = std::ffi::CString::new(ntfs.mountpoint.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path and a zeroed statfs to fill.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statfs(c.as_ptr(), &mut st) }, 0, "statfs");
    assert_eq!(st.f_type as i64, FUSE_SUPER_MAGIC, "not FUSE");

    let root = &ntfs.mountpoint;
    for bad in ["a:b", "what?", "CON", "aux.json", "trailing.", "trailing "] {
        let err = fs::write(root.join(bad), b"x").expect_err(bad);
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{bad:?}: {err}");
        assert!(!root.join(bad).exists(), "{bad:?}");
    }
    for good in ["café notes.txt", "config.json", "Mixed Case"] {
        fs::write(root.join(good), good).unwrap();
        assert_eq!(fs::read_to_string(root.join(good)).unwrap(), good);
    }
    // NTFS keeps no Unix permissions: a chmod does not stick (the backend must not need it).
    chmod(&root.join("config.json"), 0o600);
    let mode = fs::metadata(root.join("config.json")).unwrap().mode() & 0o777;
    assert_ne!(mode, 0o600, "chmod stuck: this is not ntfs-3g's NTFS");
}

#[test]
fn damaged_pack_on_ntfs_is_reported_by_verify() {
    let f = Fixture::with_vault();
    let Some(ntfs) = NtfsMount::new(&f, "damaged_pack_on_ntfs_is_reported_by_verify") else {
        return;
    };
    let data = f.path("data");
    build_tree(&data);
    f.snapshot(&data);
    let cfg = f.path("remotes.toml");
    add_remote(&f, &cfg, &ntfs.url());
    push(&f, &cfg);
    let v = verify_remote(&f, &cfg, &f.path("verify-cache"), 0);
    assert_eq!(v["clean"], true, "{v:#}");

    // Bit rot in the middle of the largest pack (file data, not its trailer).
    let pack = remote_packs(&ntfs)
        .into_iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    let hex = pack_hex(&pack);
    flip_byte(&pack, fs::metadata(&pack).unwrap().len() / 2);

    let v = verify_remote(&f, &cfg, &f.path("verify-cache"), 4);
    assert_eq!(v["clean"], false, "{v:#}");
    let damaged = v["report"]["damaged_packs"].as_array().unwrap();
    assert_eq!(damaged.len(), 1, "{v:#}");
    assert_eq!(damaged[0]["pack"], hex.as_str(), "{v:#}");
    assert!(
        !damaged[0]["paths"].as_array().unwrap().is_empty(),
        "no damaged file named: {v:#}"
    );
    // The human report names the pack too, and a fresh mirror finds the same.
    cmd(&f, &cfg, &f.path("fresh-cache"))
        .args(["verify", "--remote", REMOTE, "--read-data"])
        .run()
        .code(4)
        .stdout_has(&format!("damaged pack {hex}"))
        .stdout_has("VAULT IS DAMAGED");
    // The local vault is untouched.
    f.cmd().args(["verify", "--read-data"]).run().success();
}
