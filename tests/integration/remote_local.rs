//! Directory remotes on the local file system, and the remote commands' handling of bad input:
//! `remote add` editing the config, push ordering and refusal of damaged packs, and clear errors
//! for empty or foreign remotes and bad URLs.

use std::fs;
use std::path::{Path, PathBuf};

use crate::common::*;

/// A small tree, snapshotted (it becomes the LKG).
fn snapshotted_tree(f: &Fixture) -> PathBuf {
    let data = f.path("data");
    fs::create_dir_all(data.join("sub")).unwrap();
    for i in 0..20 {
        write_random_file(
            &data.join(format!("sub/f{i}")),
            50 + i,
            3000 + i as usize * 100,
        );
    }
    fs::write(data.join("readme.md"), "# notes\n").unwrap();
    f.snapshot(&data);
    data
}

/// A config file with a comment, naming the fixture's vault.
fn config(f: &Fixture) -> PathBuf {
    let cfg = f.path("vault.toml");
    fs::write(
        &cfg,
        format!(
            "# my vault, hand-written\nvault = \"{}\"\n",
            f.vault().display()
        ),
    )
    .unwrap();
    cfg
}

fn with_config(f: &Fixture, cfg: &Path) -> VaultCmd {
    f.cmd().arg("--config").arg(cfg)
}

#[test]
fn remote_add_keeps_comments_checks_the_result_and_push_list_restore_work() {
    let f = Fixture::with_vault();
    let data = snapshotted_tree(&f);
    let cfg = config(&f);
    let remote = f.path("usb/AtlasVault");
    with_config(&f, &cfg)
        .args(["remote", "add", "usb"])
        .arg(format!("file://{}", remote.display()))
        .arg("--append-only")
        .run()
        .success()
        .stdout_has("added remote usb");
    let text = fs::read_to_string(&cfg).unwrap();
    assert!(text.starts_with("# my vault, hand-written"), "{text}");
    assert!(
        text.contains("[[remote]]") && text.contains("append_only = true"),
        "{text}"
    );
    // A second remote of the same name, an S3 key on a path, a bad URL: refused, file unchanged.
    for bad in [
        vec!["remote", "add", "usb", "/mnt/other"],
        vec!["remote", "add", "x", "/mnt/x", "--region", "eu"],
        vec!["remote", "add", "y", "ftp://host/dir"],
        vec!["remote", "add", "z", "relative/dir"],
    ] {
        with_config(&f, &cfg).args(&bad).run().one_line_error(1);
        assert_eq!(fs::read_to_string(&cfg).unwrap(), text, "{bad:?}");
    }
    with_config(&f, &cfg)
        .args(["remote", "list"])
        .run()
        .success()
        .stdout_has("lacks 1 snapshot(s), including the last-known-good");
    let first = with_config(&f, &cfg).args(["push"]).run().success();
    assert!(
        first.stderr.contains("keeps no file permissions"),
        "the first push to a directory warns once: {}",
        first.stderr
    );
    let again = with_config(&f, &cfg).args(["push"]).run().success();
    assert!(!again.stderr.contains("permissions"), "only once");
    with_config(&f, &cfg)
        .args(["remote", "list"])
        .run()
        .success()
        .stdout_has("up to date");
    assert_eq!(
        fs::read_dir(remote.join("refs/history")).unwrap().count(),
        1,
        "an append-only remote keeps the ref's history"
    );
    let out = f.path("out");
    f.cmd_in(f.root())
        .args(["restore", "--lkg", "--from"])
        .arg(format!("file://{}", remote.display()))
        .arg("--target")
        .arg(&out)
        .run()
        .success();
    assert_same_tree(&data, &out.join("data"), &[]);
    // A --cache-dir pointing at something that matters (here, the vault itself) only ever
    // gets a mirror subdirectory: the vault is untouched.
    let before = f.snapshot_ids();
    f.cmd_in(f.root())
        .args(["restore", "--lkg", "--from"])
        .arg(&remote)
        .arg("--target")
        .arg(f.path("out-cache"))
        .arg("--cache-dir")
        .arg(f.vault())
        .run()
        .success();
    assert_eq!(f.snapshot_ids(), before);
    f.cmd().args(["verify", "--read-data"]).run().success();
    // Restoring from a remote over a non-empty target is refused: there is no local vault to
    // keep a safety snapshot in.
    f.cmd_in(f.root())
        .args(["restore", "--lkg", "--overwrite", "--from"])
        .arg(&remote)
        .arg("--target")
        .arg(&out)
        .run()
        .one_line_error(1)
        .stderr_has("is not empty");
    // The audit log records the pushes and the remote restore.
    let audit = fs::read_to_string(f.vault().join("audit.log")).unwrap();
    assert_eq!(audit.matches("\"push\"").count(), 2, "{audit}");
}

#[test]
fn a_damaged_local_pack_is_not_pushed() {
    let f = Fixture::with_vault();
    snapshotted_tree(&f);
    let cfg = config(&f);
    let remote = f.path("remote");
    with_config(&f, &cfg)
        .args(["remote", "add", "usb"])
        .arg(&remote)
        .run()
        .success();
    let pack = pack_files(&f.vault()).into_iter().next().unwrap();
    let len = fs::metadata(&pack).unwrap().len();
    flip_byte(&pack, len / 2);
    with_config(&f, &cfg)
        .arg("push")
        .run()
        .one_line_error(4)
        .stderr_has("do not match its id");
    assert!(
        !remote.join("refs/last-known-good.json").exists() && !remote.join("snapshots").exists(),
        "nothing that needs the damaged pack went up"
    );
}

#[test]
fn remotes_that_are_empty_foreign_or_misnamed_get_clear_errors() {
    let f = Fixture::with_vault();
    snapshotted_tree(&f);
    // No remote configured.
    f.cmd()
        .arg("push")
        .run()
        .one_line_error(2)
        .stderr_has("vault remote add");
    let cfg = config(&f);
    with_config(&f, &cfg)
        .args(["push", "--remote", "nope"])
        .run()
        .one_line_error(2)
        .stderr_has("no remote \"nope\"");
    // A directory remote whose drive is not mounted: the push fails and creates nothing.
    let mount = f.path("mnt-usb");
    fs::create_dir(&mount).unwrap();
    let unmounted = mount.join("AtlasVault");
    fs::write(
        &cfg,
        format!(
            "vault = \"{}\"\n[[remote]]\nname = \"usb\"\nurl = \"{}\"\n",
            f.vault().display(),
            unmounted.display()
        ),
    )
    .unwrap();
    with_config(&f, &cfg)
        .arg("push")
        .run()
        .one_line_error(13)
        .stderr_has("is the drive mounted");
    assert!(!unmounted.exists(), "the mount point stays empty");
    // The remote is the mount point itself, which exists (empty) while the drive is away.
    fs::write(
        &cfg,
        format!(
            "vault = \"{}\"\n[[remote]]\nname = \"usb\"\nurl = \"{}\"\n",
            f.vault().display(),
            mount.display()
        ),
    )
    .unwrap();
    with_config(&f, &cfg)
        .arg("push")
        .run()
        .one_line_error(13)
        .stderr_has("is the drive mounted");
    assert_eq!(fs::read_dir(&mount).unwrap().count(), 0, "nothing written");
    fs::write(&cfg, format!("vault = \"{}\"\n", f.vault().display())).unwrap();
    // Nothing pushed there yet.
    let empty = f.path("empty");
    fs::create_dir(&empty).unwrap();
    f.cmd_in(f.root())
        .args(["restore", "--lkg", "--from"])
        .arg(&empty)
        .arg("--target")
        .arg(f.path("t"))
        .run()
        .one_line_error(10)
        .stderr_has("nothing has been pushed there");
    // A remote holding another vault is refused before anything is written.
    let g = Fixture::with_vault();
    snapshotted_tree(&g);
    let other_remote = f.path("other");
    let gcfg = config(&g);
    with_config(&g, &gcfg)
        .args(["remote", "add", "r"])
        .arg(&other_remote)
        .run()
        .success();
    with_config(&g, &gcfg).arg("push").run().success();
    let before = list_all(&other_remote);
    with_config(&f, &cfg)
        .args(["remote", "add", "r"])
        .arg(&other_remote)
        .run()
        .success();
    with_config(&f, &cfg)
        .arg("push")
        .run()
        .one_line_error(1)
        .stderr_has("holds another vault");
    assert_eq!(list_all(&other_remote), before);
    // Credentials in a URL, unknown parameters, unknown schemes.
    for url in [
        "s3://bucket/p?secret_access_key=abc",
        "s3://bucket/p?colour=blue",
        "gs://bucket/p",
    ] {
        let r = f
            .cmd_in(f.root())
            .args(["restore", "--lkg", "--from", url, "--target"])
            .arg(f.path("t"))
            .run()
            .one_line_error(2);
        assert!(
            !r.stderr.contains("abc"),
            "the secret is not echoed: {}",
            r.stderr
        );
    }
    // A wrong password for the remote vault: exit 12, as locally.
    let wrong = f.path("wrong");
    fs::write(&wrong, "not the password\n").unwrap();
    f.cmd_in(f.root())
        .env("VAULT_PASSWORD_FILE", &wrong)
        .args(["verify", "--from"])
        .arg(&other_remote)
        .run()
        .one_line_error(12);
}

#[test]
fn a_push_killed_mid_way_resumes_without_sending_again_what_arrived() {
    let f = Fixture::with_vault();
    let data = f.path("data");
    fs::create_dir_all(&data).unwrap();
    // About four 32 MiB packs, pushed one at a time.
    for i in 0..5 {
        write_random_file(&data.join(format!("r{i}")), 700 + i, 24 * MIB);
    }
    f.snapshot(&data);
    let cfg = config(&f);
    let remote = f.path("remote");
    with_config(&f, &cfg)
        .args(["remote", "add", "usb"])
        .arg(&remote)
        .run()
        .success();
    let total = pack_files(&f.vault()).len();
    assert!(total >= 3, "{total} packs");
    let mut child = with_config(&f, &cfg)
        .args(["push", "--threads", "1"])
        .spawn();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let arrived_packs = || {
        list_all(&remote.join("packs"))
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "pack"))
            .count()
    };
    while arrived_packs() == 0 {
        assert!(std::time::Instant::now() < deadline, "no pack arrived");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), None, "killed before it finished");
    let arrived = arrived_packs();
    assert!(
        arrived < total,
        "the push was cut short ({arrived} of {total} packs)"
    );
    assert!(
        !remote.join("refs/last-known-good.json").exists(),
        "the ref goes last"
    );
    let r = with_config(&f, &cfg)
        .args(["--json", "push"])
        .run()
        .success()
        .json();
    let report = &r["pushes"][0]["report"];
    assert_eq!(
        report["packs_uploaded"].as_u64().unwrap() as usize,
        total - arrived,
        "only what was missing went up: {report}"
    );
    with_config(&f, &cfg)
        .args(["verify", "--remote", "usb", "--read-data"])
        .run()
        .success()
        .stdout_has("vault is clean");
}
