//! Bad input gets one clear line on stderr and the documented exit code, never a panic (every
//! run is checked for "panicked" by the runner in `common`). Also: a partial snapshot of a tree
//! with unreadable entries, and a vault on a full disk.

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

#[test]
fn missing_vault_exits_10_for_every_command() {
    let f = Fixture::new();
    let nowhere = f.path("no-such-vault");
    let data = f.path("data");
    fs::create_dir(&data).unwrap();
    let cases: Vec<Vec<OsString>> = vec![
        vec!["snapshot".into(), data.clone().into()],
        vec!["snapshots".into()],
        vec!["ls".into(), "latest".into()],
        vec![
            "restore".into(),
            "latest".into(),
            "--target".into(),
            f.path("out").into(),
        ],
        vec!["verify".into()],
        vec!["verify".into(), "--read-data".into()],
        vec!["reindex".into()],
        vec!["audit".into()],
    ];
    for args in cases {
        f.cmd_in(f.root())
            .vault_dir(&nowhere)
            .args(&args)
            .run()
            .one_line_error(10)
            .stderr_has("no vault")
            .stderr_has(&nowhere.display().to_string());
    }
    assert!(!nowhere.exists(), "a command created the missing vault");
    assert!(!f.path("out").exists(), "restore created its target");
    // Through the environment variable too, and an existing but empty directory.
    fs::create_dir(f.path("empty")).unwrap();
    f.cmd_in(f.root())
        .env("VAULT_DIR", f.path("empty"))
        .arg("snapshots")
        .run()
        .one_line_error(10);
}

#[test]
fn snapshot_of_a_missing_path_fails_naming_it() {
    let f = Fixture::with_vault();
    let missing = f.path("not-there");
    f.cmd()
        .arg("snapshot")
        .arg(&missing)
        .run()
        .one_line_error(1)
        .stderr_has(&missing.display().to_string());
    // Also when it is one of several paths: nothing is snapshotted.
    let data = f.path("data");
    fs::create_dir(&data).unwrap();
    f.cmd()
        .arg("snapshot")
        .arg(&data)
        .arg(&missing)
        .run()
        .one_line_error(1)
        .stderr_has("not-there");
    assert!(f.snapshot_ids().is_empty());
}

#[test]
fn invalid_exclude_glob_is_one_clear_error() {
    let f = Fixture::with_vault();
    let data = f.path("data");
    fs::create_dir(&data).unwrap();
    f.cmd()
        .args(["snapshot", "--exclude", "a{b"])
        .arg(&data)
        .run()
        .one_line_error(1)
        .stderr_has("a{b");
    assert!(f.snapshot_ids().is_empty());
}

#[test]
fn corrupt_config_json_is_one_clear_error() {
    let f = Fixture::with_vault();
    let cfg = f.vault().join("config.json");
    for bad in [
        &b"{ this is not json"[..],
        b"",
        b"[]",
        b"{\"version\": 99}",
        &[0xff, 0xfe, 0x00, 0x12][..],
    ] {
        fs::write(&cfg, bad).unwrap();
        for args in [
            &["snapshots"][..],
            &["verify"],
            &["snapshot", "/nonexistent"],
        ] {
            f.cmd()
                .args(args)
                .run()
                .one_line_error(1)
                .stderr_has("config.json");
        }
    }
    // A config that parses but holds impossible values.
    let good = Fixture::with_vault();
    let text = fs::read_to_string(good.vault().join("config.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["chunker"]["max_size"] = serde_json::json!(1u64 << 40);
    fs::write(&cfg, serde_json::to_vec(&v).unwrap()).unwrap();
    f.cmd()
        .arg("snapshots")
        .run()
        .one_line_error(1)
        .stderr_has("config.json");
}

#[test]
fn truncated_pack_makes_verify_exit_4() {
    let f = Fixture::with_vault();
    let data = f.path("data");
    fs::create_dir(&data).unwrap();
    write_random_file(&data.join("r.bin"), 4, 2 * MIB);
    f.snapshot(&data);
    let packs = pack_files(&f.vault());
    assert_eq!(packs.len(), 1);
    let pack = &packs[0];
    let id = pack.file_stem().unwrap().to_string_lossy().into_owned();
    let len = fs::metadata(pack).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(pack)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    // The pack also held the snapshot's trees, so verify can only say the snapshot is broken.
    f.cmd()
        .arg("verify")
        .run()
        .code(4)
        .stdout_has(&id)
        .stdout_has("breaks snapshot");
    f.cmd()
        .args(["verify", "--read-data"])
        .run()
        .code(4)
        .stdout_has(&id);
    let run = f
        .cmd()
        .args(["restore", "latest", "--target"])
        .arg(f.path("out"))
        .run();
    assert!(matches!(run.code, Some(1) | Some(4)), "{run:#?}");
    assert!(
        !f.path("out/data/r.bin").exists(),
        "a cut-short file was left"
    );
    // reindex says which pack it could not read.
    f.cmd().arg("reindex").run().code(4).stderr_has(&id);
}

#[test]
fn init_refuses_a_non_empty_directory_and_an_existing_vault() {
    let f = Fixture::new();
    let dir = f.path("stuff");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("important.txt"), b"mine").unwrap();
    f.cmd_in(f.root())
        .vault_dir(&dir)
        .arg("init")
        .run()
        .one_line_error(1)
        .stderr_has("not empty");
    assert_eq!(list_all(&dir), vec![PathBuf::from("important.txt")]);

    let file = f.path("a-file");
    fs::write(&file, b"x").unwrap();
    f.cmd_in(f.root())
        .vault_dir(&file)
        .arg("init")
        .run()
        .one_line_error(1);
    assert_eq!(fs::read(&file).unwrap(), b"x");

    let v = Fixture::with_vault();
    let cfg = fs::read(v.vault().join("config.json")).unwrap();
    v.cmd()
        .arg("init")
        .run()
        .one_line_error(1)
        .stderr_has("already a vault");
    assert_eq!(fs::read(v.vault().join("config.json")).unwrap(), cfg);
}

#[test]
fn unknown_invalid_and_ambiguous_snapshot_references() {
    let f = Fixture::with_vault();
    // An empty vault has no latest.
    f.cmd()
        .args(["ls", "latest"])
        .run()
        .one_line_error(1)
        .stderr_has("no snapshots");
    let data = f.path("data");
    fs::create_dir(&data).unwrap();
    fs::write(data.join("f"), b"f").unwrap();
    // 17 snapshots: two of them must share a first hex digit.
    let mut ids = Vec::new();
    for _ in 0..17 {
        ids.push(f.snapshot(&data)["id"].as_str().unwrap().to_string());
    }
    let unknown = (0..=0xffu8)
        .map(|b| format!("{b:02x}"))
        .find(|p| !ids.iter().any(|id| id.starts_with(p.as_str())))
        .unwrap();
    for args in [
        vec!["ls", unknown.as_str()],
        vec!["restore", unknown.as_str(), "--target", "out"],
    ] {
        f.cmd()
            .args(args)
            .run()
            .one_line_error(1)
            .stderr_has("no such snapshot")
            .stderr_has(&unknown);
    }
    let full_unknown = "0".repeat(63) + "1";
    if !ids.contains(&full_unknown) {
        f.cmd()
            .args(["ls", &full_unknown])
            .run()
            .one_line_error(1)
            .stderr_has("no such snapshot");
    }
    for bad in ["not-hex!", "../../etc", "lat", ""] {
        f.cmd().args(["ls", bad]).run().one_line_error(1);
    }

    let ambiguous = ids
        .iter()
        .map(|id| &id[..1])
        .find(|p| ids.iter().filter(|id| id.starts_with(*p)).count() > 1)
        .expect("pigeonhole")
        .to_string();
    for args in [
        vec!["ls", ambiguous.as_str()],
        vec!["restore", ambiguous.as_str(), "--target", "out2"],
    ] {
        f.cmd()
            .args(args)
            .run()
            .one_line_error(1)
            .stderr_has("prefix matches");
    }
    assert!(!f.path("out").exists() && !f.path("out2").exists());
    // A unique prefix works, in either case.
    let id = &ids[0];
    let unique = (1..=64)
        .map(|n| &id[..n])
        .find(|p| ids.iter().filter(|i| i.starts_with(*p)).count() == 1)
        .unwrap();
    f.cmd().args(["ls", unique]).run().success();
    f.cmd()
        .args(["ls", &unique.to_ascii_uppercase()])
        .run()
        .success();
}

#[test]
fn usage_errors_exit_2() {
    let f = Fixture::with_vault();
    for args in [
        vec!["frobnicate"],
        vec!["snapshot"],
        vec!["restore", "latest"],
        vec!["verify", "--read-data-subset", "0%"],
        vec!["verify", "--read-data-subset", "150%"],
        vec!["verify", "--read-data-subset", "lots"],
        vec!["verify", "--read-data", "--read-data-subset", "10%"],
        vec!["--wait", "soon", "snapshots"],
        vec!["snapshots", "--bogus"],
    ] {
        f.cmd().args(args).run().code(2);
    }
    f.cmd().arg("--help").run().success().stdout_has("snapshot");
}

#[test]
fn verify_read_data_subset_reads_a_share() {
    let f = Fixture::with_vault();
    let data = f.path("data");
    fs::create_dir(&data).unwrap();
    fs::write(data.join("a"), b"a").unwrap();
    f.snapshot(&data);
    fs::write(data.join("b"), b"b").unwrap();
    f.snapshot(&data);
    let r = f
        .cmd()
        .args(["verify", "--read-data-subset", "50%", "--json"])
        .run()
        .success()
        .json();
    assert_eq!(r["report"]["packs"], 2, "{r:#}");
    assert_eq!(r["report"]["packs_read"], 1, "{r:#}");
}

/// Runs the vault binary as `nobody` when we are root, so that permission bits bite.
pub(crate) struct Unprivileged {
    prefix: Vec<OsString>,
    program: OsString,
}

impl Unprivileged {
    pub(crate) fn new(f: &Fixture) -> Option<Self> {
        if !is_root() {
            return Some(Unprivileged {
                prefix: vec![],
                program: VAULT_BIN.into(),
            });
        }
        // Our copy of the binary, readable by nobody wherever the build tree is.
        let bin = f.path("bin/vault");
        fs::create_dir_all(f.path("bin")).unwrap();
        fs::copy(VAULT_BIN, &bin).unwrap();
        fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
        let drop_to_nobody = [
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--reset-env",
        ];
        let ok = Command::new("setpriv")
            .args(drop_to_nobody)
            .arg("true")
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            return None;
        }
        let mut prefix: Vec<OsString> = drop_to_nobody.iter().map(OsString::from).collect();
        prefix.push(bin.into());
        Some(Unprivileged {
            prefix,
            program: "setpriv".into(),
        })
    }

    /// `setpriv --reset-env` drops VAULT_PASSWORD_FILE, so the password comes by flag.
    pub(crate) fn cmd(&self, f: &Fixture) -> VaultCmd {
        VaultCmd::with_program(&self.program, &self.prefix, f.root())
            .vault_dir(&f.vault())
            .arg("--password-file")
            .arg(f.password_file())
    }
}

/// Gives everything below `dir` to nobody (only when root).
pub(crate) fn chown_tree(dir: &Path) {
    if !is_root() {
        return;
    }
    std::os::unix::fs::lchown(dir, Some(65534), Some(65534)).unwrap();
    for p in list_all(dir) {
        std::os::unix::fs::lchown(dir.join(p), Some(65534), Some(65534)).unwrap();
    }
}

#[test]
fn unreadable_file_gives_a_partial_snapshot_with_exit_3() {
    let f = Fixture::new();
    let Some(user) = Unprivileged::new(&f) else {
        panic!(
            "running as root but `setpriv --reuid=65534` does not work here, so chmod 000 \
             cannot deny a read; install util-linux's setpriv"
        );
    };
    let data = f.path("data");
    fs::create_dir_all(data.join("locked-dir")).unwrap();
    fs::create_dir_all(data.join("open-dir")).unwrap();
    fs::write(data.join("readable.txt"), b"fine").unwrap();
    fs::write(data.join("secret.txt"), b"you cannot read me").unwrap();
    fs::write(data.join("locked-dir/hidden.txt"), b"nor me").unwrap();
    fs::write(data.join("open-dir/also-fine.txt"), b"also fine").unwrap();
    chmod(f.root(), 0o755);
    chown_tree(f.root());
    user.cmd(&f).arg("init").run().success();
    chmod(&data.join("secret.txt"), 0o000);
    chmod(&data.join("locked-dir"), 0o000);

    let run = user
        .cmd(&f)
        .args(["snapshot", "--json"])
        .arg(&data)
        .run()
        .code(3)
        .stderr_has("secret.txt")
        .stderr_has("locked-dir")
        .stderr_has("ermission denied");
    let s = run.json();
    assert_eq!(s["partial"], true, "{s:#}");
    assert_eq!(num(&s, "files"), 2, "{s:#}");
    let warnings = s["warnings"].as_array().unwrap();
    assert!(
        warnings.iter().any(|w| w
            .as_str()
            .unwrap()
            .contains(&data.join("secret.txt").display().to_string())),
        "{s:#}"
    );

    let listed = user
        .cmd(&f)
        .args(["snapshots", "--json"])
        .run()
        .success()
        .json();
    assert_eq!(listed[0]["partial"], true, "{listed:#}");
    let target = f.path("out");
    user.cmd(&f)
        .args(["restore", "latest", "--target"])
        .arg(&target)
        .run()
        .success();
    assert_eq!(fs::read(target.join("data/readable.txt")).unwrap(), b"fine");
    assert_eq!(
        fs::read(target.join("data/open-dir/also-fine.txt")).unwrap(),
        b"also fine"
    );
    assert!(!target.join("data/secret.txt").exists());
    assert!(!target.join("data/locked-dir/hidden.txt").exists());
    let audit = user
        .cmd(&f)
        .args(["audit", "--json"])
        .run()
        .success()
        .json_lines();
    let snap = audit
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["action"] == "snapshot")
        .unwrap();
    assert_eq!(snap["outcome"], "partial", "{audit:#}");
    // Let the temp dir be removed when we are not root.
    chmod(&data.join("locked-dir"), 0o755);
}

/// Unmounts on drop, so a failing test does not leave a mount behind.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn full_disk_fails_cleanly_and_leaves_a_valid_vault() {
    let f = Fixture::new();
    let mnt = f.path("small-disk");
    fs::create_dir(&mnt).unwrap();
    let mounted = is_root()
        && Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
            .arg(&mnt)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
    if !mounted {
        let msg =
            "full-disk test NOT RUN: cannot mount an 8 MiB tmpfs (needs root and mount rights)";
        if std::env::var_os("CI").is_some() {
            panic!("{msg}");
        }
        eprintln!("\n!!!!!!!!!!\n{msg}\n!!!!!!!!!!\n");
        return;
    }
    let _mount = Mount(mnt.clone());
    let vault = mnt.join("vault");
    let cmd = || f.cmd_in(f.root()).vault_dir(&vault);
    cmd().arg("init").run().success();

    let data = f.path("data");
    fs::create_dir(&data).unwrap();
    write_random_file(&data.join("big.bin"), 8, 20 * MIB);
    cmd()
        .arg("snapshot")
        .arg(&data)
        .run()
        .one_line_error(1)
        .stderr_has("No space left");
    fs::remove_dir_all(&data).unwrap();

    cmd()
        .args(["verify", "--read-data"])
        .run()
        .success()
        .stdout_has("vault is clean");
    let listed = cmd().args(["snapshots", "--json"]).run().success().json();
    assert!(listed.as_array().unwrap().is_empty(), "{listed:#}");

    // The vault is still usable for something that fits.
    let small = f.path("small");
    fs::create_dir(&small).unwrap();
    fs::write(small.join("s.txt"), b"fits").unwrap();
    cmd().arg("snapshot").arg(&small).run().success();
    cmd()
        .args(["restore", "latest", "--target"])
        .arg(f.path("out"))
        .run()
        .success();
    assert_eq!(fs::read(f.path("out/small/s.txt")).unwrap(), b"fits");
}
