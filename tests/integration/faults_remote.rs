//! Remotes that fail in the middle of an operation (issue 10): the S3 server is killed during a
//! restore and started again; the NTFS drive is unmounted during a push and mounted again. Each
//! fault must end the operation with one clear line, leave the local side as it was, and the
//! same command, run again once the remote is back, must finish the job byte-exact.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Output};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::remote_ntfs::{self, NtfsMount};
use crate::remote_s3;
use crate::s3server::S3Server;

/// Longest wait for a fault's trigger (blobs in the restore's cache, a pack on the drive).
const TRIGGER_TIMEOUT: Duration = Duration::from_secs(60);
/// Blob bytes a restore must have cached before the server is killed: past the trees, well into
/// the files' chunks (of about 120 MiB).
const KILL_AFTER_CACHED_BYTES: u64 = 8 * MIB as u64;

/// About four 32 MiB packs of incompressible data and a small text: big enough that a fault lands
/// mid-operation, moved piece by piece.
fn big_tree(f: &Fixture, seed: u64) -> PathBuf {
    let data = f.path("data");
    fs::create_dir_all(data.join("docs")).unwrap();
    for i in 0..5 {
        write_random_file(&data.join(format!("r{i}.bin")), seed + i, 24 * MIB);
    }
    fs::write(data.join("docs/notes.txt"), text_bytes(200_000)).unwrap();
    data
}

/// Polls `ready` every 2 ms until it holds. Fails the test after [`TRIGGER_TIMEOUT`], or when
/// `child` exits first: then the operation beat the fault and the data is too small.
fn wait_for(child: &mut Child, what: &str, ready: impl Fn() -> bool) {
    let deadline = Instant::now() + TRIGGER_TIMEOUT;
    while !ready() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "the command ended ({status}) before {what}: the data is too small for the fault \
                 to land mid-operation"
            );
        }
        assert!(
            Instant::now() < deadline,
            "no {what} within {TRIGGER_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The one non-empty line of a finished child's stderr, after checking its exit code; `why`
/// explains an unexpected code.
fn one_line_failure(out: &Output, code: i32, why: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{why}\nstderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one clear line on stderr: {stderr}");
    lines[0].to_string()
}

/// Every regular file below `dir`, by relative path, with its blake3.
fn hashes_below(dir: &Path) -> BTreeMap<PathBuf, blake3::Hash> {
    list_all(dir)
        .into_iter()
        .filter(|rel| dir.join(rel).is_file())
        .map(|rel| {
            let h = file_hash(&dir.join(&rel));
            (rel, h)
        })
        .collect()
}

/// The s3s-fs this suite starts, which these tests kill and restart; `None`, with a note, when
/// the suite runs against an external server (or none).
fn restartable_s3(f: &Fixture, name: &str) -> Option<S3Server> {
    let s3 = S3Server::start(f, name)?;
    if !s3.is_local() {
        eprintln!(
            "note: {name} restarts the s3s-fs this suite starts; not run against an external \
             server"
        );
        return None;
    }
    Some(s3)
}

/// Pushes the fixture's vault to `s3`, then loses the machine: only the remote and the password
/// remain (no vault, no config).
fn push_and_lose_the_machine(f: &Fixture, s3: &S3Server) {
    let cfg = remote_s3::config(f, s3, false);
    remote_s3::cmd(f, s3, &cfg).arg("push").run().success();
    fs::remove_dir_all(f.vault()).unwrap();
    fs::remove_file(&cfg).unwrap();
}

/// Checks that every file a failed restore left below `restored` equals its source below
/// `data` (none is half-written); returns the sources' hashes.
fn assert_restored_files_whole(data: &Path, restored: &Path) -> BTreeMap<PathBuf, blake3::Hash> {
    let source = hashes_below(data);
    for (rel, hash) in hashes_below(restored) {
        assert_eq!(
            source.get(&rel),
            Some(&hash),
            "{} is partial",
            rel.display()
        );
    }
    source
}

/// Blob bytes in the mirror(s) under a restore's `--cache-dir`.
fn cached_blob_bytes(cache: &Path) -> u64 {
    list_all(cache)
        .iter()
        .filter(|rel| rel.components().any(|c| c.as_os_str() == "blobs"))
        .filter_map(|rel| fs::metadata(cache.join(rel)).ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

/// `vault restore --lkg --from URL --target T --cache-dir C` on a machine that has nothing but
/// the password and the server's credentials: no vault, no config, no vault.toml in the cwd.
/// Two attempts per request, so that a dead server is given up on in a second.
fn restore_from_s3(f: &Fixture, s3: &S3Server, target: &Path, cache: &Path) -> VaultCmd {
    assert!(!f.path("vault.toml").exists() && !f.vault().exists());
    s3.creds(f.cmd_in(f.root()))
        .env("VAULT_REMOTE_RETRIES", "2")
        .args(["restore", "--lkg", "--from", &s3.url(), "--target"])
        .arg(target)
        .arg("--cache-dir")
        .arg(cache)
}

#[test]
fn s3_server_killed_mid_restore_fails_it_in_one_line_and_the_rerun_restores_every_byte() {
    let f = Fixture::with_vault();
    let Some(mut s3) = restartable_s3(&f, "killed-restore") else {
        return;
    };
    let data = big_tree(&f, 300);
    f.snapshot(&data);
    push_and_lose_the_machine(&f, &s3);

    let target = f.path("restored");
    let cache = f.path("cache");
    let ours = [
        target.clone(),
        cache.clone(),
        f.path("s3-data"),
        f.path("s3.log"),
    ];
    // Everything in the fixture but the target, the cache and the server's own files.
    let outside = || -> BTreeMap<PathBuf, blake3::Hash> {
        hashes_below(f.root())
            .into_iter()
            .filter(|(rel, _)| !ours.iter().any(|d| f.root().join(rel).starts_with(d)))
            .collect()
    };
    let before = outside();
    let mut child = restore_from_s3(&f, &s3, &target, &cache).spawn_capturing();
    wait_for(&mut child, "8 MiB of blobs in the restore's cache", || {
        cached_blob_bytes(&cache) > KILL_AFTER_CACHED_BYTES
    });
    s3.kill();
    let out = child.wait_with_output().unwrap();
    let line = one_line_failure(
        &out,
        13,
        "the restore fails with the remote's exit code once the server is gone (exit 0: it \
         finished first, the data is too small)",
    );
    assert!(
        line.starts_with(&format!(
            "vault: remote s3://{}/{}: read packs/",
            s3.bucket, s3.prefix
        )),
        "the line names the remote and what it was reading: {line}"
    );
    assert!(line.contains("after 2 attempts"), "{line}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains("restored snapshot"),
        "a failed restore claims nothing: {stdout}"
    );
    for secret in [&s3.access_key, &s3.secret_key] {
        assert!(!line.contains(secret.as_str()) && !stdout.contains(secret.as_str()));
    }
    assert_eq!(outside(), before, "the restore wrote outside its target");
    assert!(
        !f.vault().exists(),
        "a restore from a remote creates no vault"
    );
    // What did get restored is whole: no file is left half-written.
    let source = assert_restored_files_whole(&data, &target.join("data"));

    s3.restart();
    // The same command again: refused, in one line that says what to do.
    let refused = restore_from_s3(&f, &s3, &target, &cache)
        .run()
        .one_line_error(1)
        .stderr_has("is not empty")
        .stderr_has("remove what is there");
    assert!(
        !refused.stderr.contains("--overwrite"),
        "{}",
        refused.stderr
    );
    // --overwrite is no way around it: there is no vault to take a safety snapshot into.
    restore_from_s3(&f, &s3, &target, &cache)
        .arg("--overwrite")
        .run()
        .one_line_error(1)
        .stderr_has("is not empty");
    // As told: remove the partial restore and run the same command.
    let cached = remote_ntfs::blob_cache(&cache);
    assert!(!cached.is_empty());
    fs::remove_dir_all(&target).unwrap();
    restore_from_s3(&f, &s3, &target, &cache)
        .run()
        .success()
        .stdout_has("restored snapshot");
    assert_eq!(hashes_below(&target.join("data")), source);
    assert_same_tree(&data, &target.join("data"), &[]);
    assert_eq!(outside(), before, "the rerun wrote outside its target");
    // What the killed restore fetched was not fetched again.
    let after = remote_ntfs::blob_cache(&cache);
    for (blob, stamp) in &cached {
        assert_eq!(
            after.get(blob),
            Some(stamp),
            "{} was fetched again",
            blob.display()
        );
    }
    assert!(after.len() > cached.len(), "the rerun fetched the rest");
    s3.creds(f.cmd_in(f.root()))
        .args(["verify", "--read-data", "--from", &s3.url(), "--cache-dir"])
        .arg(f.path("verify-cache"))
        .run()
        .success()
        .stdout_has("vault is clean");
}

#[test]
fn s3_keys_revoked_mid_restore_end_it_in_one_line_not_one_error_per_file() {
    let f = Fixture::with_vault();
    let Some(mut s3) = restartable_s3(&f, "revoked-restore") else {
        return;
    };
    // Many files, so that a restore that went on file by file would report many errors.
    let data = big_tree(&f, 400);
    fs::create_dir_all(data.join("many")).unwrap();
    for i in 0..300 {
        write_random_file(
            &data.join(format!("many/f{i:03}.bin")),
            9_000 + i,
            64 * 1024,
        );
    }
    f.snapshot(&data);
    push_and_lose_the_machine(&f, &s3);

    let target = f.path("restored");
    let cache = f.path("cache");
    let mut child = restore_from_s3(&f, &s3, &target, &cache).spawn_capturing();
    wait_for(&mut child, "8 MiB of blobs in the restore's cache", || {
        cached_blob_bytes(&cache) > KILL_AFTER_CACHED_BYTES
    });
    let (access_key, secret_key) = s3.restart_revoking_keys();
    let out = child.wait_with_output().unwrap();
    let line = one_line_failure(
        &out,
        13,
        "a refused remote ends the restore with the remote's exit code (exit 0: it finished \
         first, the data is too small; exit 1 with many lines: it went on file by file)",
    );
    assert!(
        line.starts_with(&format!(
            "vault: remote s3://{}/{}: read ",
            s3.bucket, s3.prefix
        )),
        "the line names the remote and what it was reading: {line}"
    );
    assert!(
        !line.contains("after 2 attempts"),
        "a refusal is not retried: {line}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("restored snapshot"), "{stdout}");
    for secret in [&access_key, &secret_key] {
        assert!(!line.contains(secret.as_str()) && !stdout.contains(secret.as_str()));
    }
    // What did get restored is whole.
    let source = assert_restored_files_whole(&data, &target.join("data"));
    // The keys are valid again: the same command, into an empty target, restores every byte.
    s3.restart();
    fs::remove_dir_all(&target).unwrap();
    restore_from_s3(&f, &s3, &target, &cache)
        .run()
        .success()
        .stdout_has("restored snapshot");
    assert_eq!(hashes_below(&target.join("data")), source);
}

#[test]
fn ntfs_drive_unmounted_mid_push_fails_it_in_one_line_and_the_push_resumes_after_remount() {
    let f = Fixture::with_vault();
    let Some(ntfs) = NtfsMount::new(
        &f,
        "ntfs_drive_unmounted_mid_push_fails_it_in_one_line_and_the_push_resumes_after_remount",
    ) else {
        return;
    };
    let data = big_tree(&f, 400);
    f.snapshot(&data);
    let local_packs = pack_files(&f.vault()).len();
    assert!(local_packs >= 3, "{local_packs} packs");
    let cfg = f.path("remotes.toml");
    remote_ntfs::add_remote(&f, &cfg, &ntfs.url());
    let push = || remote_ntfs::cmd(&f, &cfg, &f.path("cache")).args(["push", "--threads", "1"]);
    let on_drive = |pick: fn(&Path) -> bool| {
        list_all(&ntfs.dir().join("packs"))
            .iter()
            .filter(|p| pick(p))
            .count()
    };
    let is_pack = |p: &Path| p.extension().is_some_and(|e| e == "pack");
    let is_temp = |p: &Path| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(".tmp-"))
    };

    let mut child = push().spawn_capturing();
    // Pulled while the next pack is being written: its temporary file is open on the drive.
    wait_for(
        &mut child,
        "pack on the drive and the next one half-written",
        || on_drive(is_pack) >= 1 && on_drive(is_temp) >= 1,
    );
    ntfs.unmount_lazily();
    let out = child.wait_with_output().unwrap();
    let line = one_line_failure(
        &out,
        13,
        "the push fails with the remote's exit code once the drive is gone (exit 0: it finished \
         first, the data is too small)",
    );
    assert!(line.starts_with("error: push to ntfs: remote "), "{line}");
    assert!(
        line.contains("is the drive mounted?") || line.contains("was the drive unmounted?"),
        "the line says what happened: {line}"
    );
    // The trap: the bare mount point is an ordinary directory on the local disk.
    assert_eq!(
        list_all(ntfs.mountpoint()),
        Vec::<PathBuf>::new(),
        "the push wrote into the bare mount point"
    );
    f.cmd()
        .args(["verify", "--read-data"])
        .run()
        .success()
        .stdout_has("vault is clean");
    // The next push (the agent's next cycle, say) while the drive is still out: refused, and
    // still nothing lands on the local disk.
    push()
        .run()
        .one_line_error(13)
        .stderr_has("is the drive mounted?");
    assert_eq!(list_all(ntfs.mountpoint()), Vec::<PathBuf>::new());

    ntfs.remount();
    let kept = on_drive(is_pack);
    assert!(
        (1..local_packs).contains(&kept),
        "the packs written before the unmount survive it: {kept} of {local_packs}"
    );
    let (_, report) = remote_ntfs::push(&f, &cfg);
    assert_eq!(report["first_push"], false, "{report:#}");
    assert_eq!(
        num(&report, "packs_uploaded"),
        (local_packs - kept) as u64,
        "only the packs the drive lacks go up: {report:#}"
    );
    // config.json, the key and the packs already there.
    assert!(
        num(&report, "objects_present") >= kept as u64 + 2,
        "{report:#}"
    );
    // The interrupted pack's temporary file may remain (a live push elsewhere could own it for
    // an hour); anything else must be exactly the vault's objects.
    for rel in list_all(&ntfs.dir()) {
        let name = rel.file_name().unwrap().to_string_lossy();
        if name.starts_with(".tmp-") {
            fs::remove_file(ntfs.dir().join(&rel)).unwrap();
        }
    }
    remote_ntfs::assert_remote_mirrors(&f.vault(), &ntfs.dir());
    let v = remote_ntfs::verify_remote(&f, &cfg, &f.path("verify-cache"), 0);
    assert_eq!(v["clean"], true, "{v:#}");
    assert_eq!(num(&v["report"], "packs_read"), local_packs as u64, "{v:#}");

    // The machine is lost: the drive alone restores the tree.
    fs::remove_dir_all(f.vault()).unwrap();
    fs::remove_file(&cfg).unwrap();
    let out = f.path("restored");
    remote_ntfs::restore_from_remote(&f, &ntfs.url(), &out, &f.path("restore-cache"));
    assert_eq!(hashes_below(&out.join("data")), hashes_below(&data));
    assert_same_tree(&data, &out.join("data"), &[]);
}

/// Pushes the fixture's vault to a `file://` remote (a mounted drive); returns its directory.
fn push_to_a_directory(f: &Fixture) -> PathBuf {
    let remote = f.path("usb/AtlasVault");
    let cfg = f.path("vault.toml");
    fs::write(&cfg, format!("vault = \"{}\"\n", f.vault().display())).unwrap();
    let with_config = || f.cmd().arg("--config").arg(&cfg);
    with_config()
        .args(["remote", "add", "usb"])
        .arg(format!("file://{}", remote.display()))
        .run()
        .success();
    with_config().arg("push").run().success();
    remote
}

/// A remote that refuses one pack (an unreadable file on a mounted drive, a policy on one
/// object) is not a remote that refuses us: the restore reports the files that pack breaks and
/// restores the rest. Refused as a whole (the vault's config refused too), it ends at once.
#[test]
fn one_refused_pack_breaks_its_files_only_and_a_wholly_refusing_remote_ends_the_restore() {
    use atlasvault::backend::fault::{Faults, Faulty};
    use atlasvault::backend::local::LocalBackend;
    use atlasvault::backend::{BackendErrorKind, DynBackend};
    use atlasvault::keys::SecretSource;
    use atlasvault::progress::Progress;
    use atlasvault::restore::{restore, RestoreOptions};
    use std::sync::Arc;

    let f = Fixture::with_vault();
    let data = f.path("data");
    fs::create_dir(&data).unwrap();
    fs::write(data.join("a.bin"), random_bytes(20, 300_000)).unwrap();
    f.snapshot(&data);
    // b.bin is larger than a pack, so its first pack holds its data alone (no trees).
    write_random_file(&data.join("b.bin"), 21, 40 * MIB);
    f.snapshot(&data);
    let b = first_chunk(&f.vault(), "latest", "data/b.bin");
    let a = first_chunk(&f.vault(), "latest", "data/a.bin");
    assert_ne!(a.pack, b.pack, "test setup: a.bin and b.bin share a pack");
    let remote = push_to_a_directory(&f);
    let b_object = format!("packs/{}/{}.pack", &b.pack_hex[..2], b.pack_hex);
    assert!(remote.join(&b_object).is_file(), "{b_object} on the remote");

    let secrets = SecretSource::from_env_and(Some(f.password_file()), None);
    let open = |faults: Faults, cache: &str| {
        let local = LocalBackend::create(&remote).unwrap();
        let backend: DynBackend = Arc::new(Faulty::new(local, faults));
        atlasvault::remote::open(backend, &f.path(cache), None, &secrets)
    };
    let restore_latest = |vault: &atlasvault::Vault, name: &str| {
        let (_, manifest) = vault.resolve("latest").unwrap();
        let reader = vault.blob_reader().unwrap();
        let target = f.path(format!("out-{name}"));
        let opts = RestoreOptions {
            target: target.clone(),
            threads: 2,
            ..RestoreOptions::default()
        };
        (
            restore(&reader, &manifest, &opts, &Progress::hidden()),
            target,
        )
    };
    let attempt = |faults: Faults, name: &str| {
        // The mirror is opened first without faults: opening reads every new pack's trailer.
        let cache = format!("cache-{name}");
        open(Faults::default(), &cache).unwrap();
        restore_latest(&open(faults, &cache).unwrap(), name)
    };
    let b_refused = || Faults {
        denied: [b_object.clone()].into(),
        ..Faults::default()
    };
    let assert_only_b_broken = |report: &atlasvault::restore::RestoreReport, target: &Path| {
        assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
        assert!(
            report.errors[0].starts_with("data/b.bin: "),
            "{:?}",
            report.errors
        );
        assert!(!target.join("data/b.bin").exists(), "no partial b.bin");
        assert_eq!(
            file_hash(&target.join("data/a.bin")),
            file_hash(&data.join("a.bin"))
        );
    };

    let (report, target) = attempt(b_refused(), "one");
    let report = report.expect("one refused pack does not end the restore");
    assert_only_b_broken(&report, &target);
    assert!(report.errors[0].contains("refus"), "{:?}", report.errors);

    // A new mirror whose first open meets the refusal: the other packs are indexed, the refused
    // one is named and left out, and the restore brings back what the others hold.
    let vault = open(b_refused(), "cache-first")
        .expect("one refused pack does not fail the mirror's first open");
    assert_eq!(vault.unread_packs().len(), 1, "{:?}", vault.unread_packs());
    assert!(
        vault.unread_packs()[0].contains(&b.pack_hex),
        "{:?}",
        vault.unread_packs()
    );
    let (report, target) = restore_latest(&vault, "first");
    assert_only_b_broken(&report.expect("the restore runs"), &target);
    drop(vault);
    // The next open, with the pack served again, reads it, and b.bin restores.
    let vault = open(Faults::default(), "cache-first").unwrap();
    assert!(
        vault.unread_packs().is_empty(),
        "{:?}",
        vault.unread_packs()
    );
    let (report, target) = restore_latest(&vault, "first-again");
    assert!(report.unwrap().errors.is_empty());
    assert_same_tree(&data, &target.join("data"), &[]);

    // The same pack refused, and the vault's config too once the mirror is open: the remote
    // refuses us as a whole. How many calls opening an up-to-date mirror makes is counted first.
    let calls_to_open = {
        let cache = f.path("cache-count");
        let plain: DynBackend = Arc::new(LocalBackend::create(&remote).unwrap());
        atlasvault::remote::open(plain, &cache, None, &secrets).unwrap();
        let counting = Arc::new(Faulty::new(
            LocalBackend::create(&remote).unwrap(),
            Faults::default(),
        ));
        let backend: DynBackend = counting.clone();
        atlasvault::remote::open(backend, &cache, None, &secrets).unwrap();
        counting.calls()
    };
    let all = Faults {
        denied: [b_object, "config.json".to_string()].into(),
        denied_after: calls_to_open,
        ..Faults::default()
    };
    let err = attempt(all, "all").0;
    let err = match err {
        Err(e) => e,
        Ok(r) => panic!("a wholly refusing remote ended the restore without an error: {r:?}"),
    };
    assert!(
        matches!(&err, atlasvault::Error::Backend(b) if b.kind == BackendErrorKind::Denied),
        "{err}"
    );
}

/// A pack refused while the remote still serves the vault's config is remembered: the files it
/// breaks do not each ask the remote again whether it refuses us as a whole.
#[test]
fn a_refused_pack_is_checked_against_the_config_once_not_once_per_file() {
    use atlasvault::backend::fault::{Faults, Faulty};
    use atlasvault::backend::local::LocalBackend;
    use atlasvault::backend::DynBackend;
    use atlasvault::keys::SecretSource;
    use atlasvault::progress::Progress;
    use atlasvault::restore::{restore, RestoreOptions};
    use std::sync::Arc;

    let f = Fixture::with_vault();
    let data = f.path("data");
    fs::create_dir(&data).unwrap();
    // Five 8 MiB files: the first pack holds the first four files' data and no trees.
    for i in 0..5 {
        write_random_file(&data.join(format!("f{i}.bin")), 30 + i, 8 * MIB);
    }
    f.snapshot(&data);
    let first = first_chunk(&f.vault(), "latest", "data/f0.bin");
    let remote = push_to_a_directory(&f);
    let object = format!("packs/{}/{}.pack", &first.pack_hex[..2], first.pack_hex);

    let secrets = SecretSource::from_env_and(Some(f.password_file()), None);
    let cache = f.path("cache");
    let plain: DynBackend = Arc::new(LocalBackend::create(&remote).unwrap());
    atlasvault::remote::open(plain, &cache, None, &secrets).unwrap();
    let faults = Faults {
        denied: [object].into(),
        ..Faults::default()
    };
    let faulty = Arc::new(Faulty::new(LocalBackend::create(&remote).unwrap(), faults));
    let backend: DynBackend = faulty.clone();
    let vault = atlasvault::remote::open(backend, &cache, None, &secrets).unwrap();
    let (_, manifest) = vault.resolve("latest").unwrap();
    let reader = vault.blob_reader().unwrap();
    let opts = RestoreOptions {
        target: f.path("out"),
        threads: 2,
        ..RestoreOptions::default()
    };
    let asked_before = faulty.calls_to("config.json");
    let report = restore(&reader, &manifest, &opts, &Progress::hidden())
        .expect("one refused pack does not end the restore");
    assert!(report.errors.len() >= 4, "{:?}", report.errors);
    assert!(
        report.errors.iter().all(|e| e.contains("refus")),
        "{:?}",
        report.errors
    );
    assert_eq!(
        faulty.calls_to("config.json") - asked_before,
        1,
        "the config is asked about once for one refused pack"
    );
}

/// `prune --remote` on a remote that will not serve one pack stops before it marks anything,
/// names the pack and exits 13: that pack may hold the only copy of what a kept snapshot needs.
/// Served again, the same prune runs.
#[test]
fn prune_of_a_remote_that_refuses_one_pack_stops_and_names_it() {
    use atlasvault::backend::fault::{Faults, Faulty};
    use atlasvault::backend::local::LocalBackend;
    use atlasvault::backend::DynBackend;
    use atlasvault::keys::SecretSource;
    use atlasvault::lock::LockMode;
    use atlasvault::progress::Progress;
    use atlasvault::prune::{prune_remote, PruneOptions};
    use std::sync::Arc;

    let f = Fixture::with_vault();
    let data = f.path("data");
    fs::create_dir(&data).unwrap();
    write_random_file(&data.join("b.bin"), 22, 40 * MIB);
    fs::write(data.join("a.txt"), b"kept").unwrap();
    f.snapshot(&data);
    let b = first_chunk(&f.vault(), "latest", "data/b.bin");
    let remote = push_to_a_directory(&f);
    let b_object = format!("packs/{}/{}.pack", &b.pack_hex[..2], b.pack_hex);
    let secrets = SecretSource::from_env_and(Some(f.password_file()), None);
    let backend = |faults: Faults| -> DynBackend {
        Arc::new(Faulty::new(LocalBackend::create(&remote).unwrap(), faults))
    };
    let refused = Faults {
        denied: [b_object.clone()].into(),
        ..Faults::default()
    };
    let mut local = f.open_vault(LockMode::Shared);
    let opts = PruneOptions::default();
    let err = prune_remote(
        &mut local,
        backend(refused),
        &f.path("cache"),
        &secrets,
        &opts,
        &Progress::hidden(),
    )
    .expect_err("a prune with a pack it cannot read");
    let msg = err.to_string();
    assert!(
        matches!(err, atlasvault::Error::Backend(_)),
        "a remote error (exit 13): {msg}"
    );
    assert!(msg.contains(&b.pack_hex), "names the pack: {msg}");
    assert!(remote.join(&b_object).is_file(), "nothing deleted");
    drop(local);

    // Served again, the same prune runs (and keeps every pack: all are in use).
    let mut local = f.open_vault(LockMode::Shared);
    let report = prune_remote(
        &mut local,
        backend(Faults::default()),
        &f.path("cache"),
        &secrets,
        &opts,
        &Progress::hidden(),
    )
    .expect("the prune runs once every pack is served");
    assert_eq!(report.packs_deleted, 0, "{report:?}");
    assert!(remote.join(&b_object).is_file());
}
