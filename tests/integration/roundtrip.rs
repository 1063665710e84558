//! Snapshot then restore: every file kind comes back byte-identical with its metadata; ignore
//! rules leave out what they name; `--include` and `--overwrite` do what they say.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::Path;

use crate::common::*;

const NON_UTF8_NAME: &[u8] = b"caf\xe9-\xff.txt";

/// Builds the tree with every kind of entry the vault must keep. Returns the FIFO's name.
fn build_every_kind(data: &Path) -> &'static str {
    fs::create_dir_all(data.join("nested/deeper/deepest")).unwrap();
    fs::create_dir(data.join("empty-dir")).unwrap();
    fs::write(data.join("hello.txt"), b"hello, vault\n").unwrap();
    fs::write(data.join("empty-file"), b"").unwrap();
    fs::write(data.join("nested/deeper/deepest/leaf.txt"), b"leaf").unwrap();
    fs::write(data.join("nested/mid.txt"), text_bytes(10_000)).unwrap();
    fs::write(data.join("exec-751"), b"#!/bin/sh\necho hi\n").unwrap();
    chmod(&data.join("exec-751"), 0o751);
    fs::write(data.join("private-600"), b"secret-ish").unwrap();
    chmod(&data.join("private-600"), 0o600);
    fs::write(data.join(OsStr::from_bytes(NON_UTF8_NAME)), b"latin-1 name").unwrap();
    // Multi-chunk: 5 MiB random then 3 MiB of repetitive text.
    let mut big = random_bytes(1, 5 * MIB);
    big.extend_from_slice(&text_bytes(3 * MIB));
    fs::write(data.join("nested/big.bin"), &big).unwrap();
    fs::hard_link(
        data.join("hello.txt"),
        data.join("nested/hard-link-to-hello"),
    )
    .unwrap();
    symlink("hello.txt", data.join("link-rel")).unwrap();
    symlink("/etc/passwd", data.join("link-abs")).unwrap();
    symlink("does/not/exist", data.join("link-dangling")).unwrap();
    // A link to a directory must be stored as a link, not walked.
    symlink("nested", data.join("link-to-dir")).unwrap();
    fs::create_dir(data.join("mode-750-dir")).unwrap();
    fs::write(data.join("mode-750-dir/inside"), b"x").unwrap();
    chmod(&data.join("mode-750-dir"), 0o750);
    if is_root() {
        std::os::unix::fs::lchown(data.join("private-600"), Some(65534), Some(65534)).unwrap();
    }
    let fifo = "a-fifo";
    let c = std::ffi::CString::new(data.join(fifo).as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo");

    // Distinct past mtimes, so a restore that forgot them cannot match by accident. Directories
    // last and deepest first, since creating entries changes a directory's mtime.
    let mut t = 1_000_000_000;
    for rel in [
        "hello.txt",
        "empty-file",
        "nested/deeper/deepest/leaf.txt",
        "nested/mid.txt",
        "nested/big.bin",
        "exec-751",
        "private-600",
        "mode-750-dir/inside",
        "link-rel",
        "link-abs",
        "link-dangling",
        "link-to-dir",
    ] {
        set_mtime(&data.join(rel), t);
        t += 86_400 + 7;
    }
    set_mtime(&data.join(OsStr::from_bytes(NON_UTF8_NAME)), t + 1);
    for rel in [
        "nested/deeper/deepest",
        "nested/deeper",
        "nested",
        "empty-dir",
        "mode-750-dir",
        ".",
    ] {
        t += 3_600;
        set_mtime(&data.join(rel), t);
    }
    fifo
}

#[test]
fn every_file_kind_round_trips_byte_identical() {
    let f = Fixture::with_vault();
    let data = f.path("data");
    let fifo = build_every_kind(&data);

    let run = f
        .cmd()
        .args(["snapshot", "--json"])
        .arg(&data)
        .run()
        .success()
        .stderr_has("FIFO")
        .stderr_has(&data.join(fifo).display().to_string());
    let s = run.json();
    assert_eq!(s["partial"], false);
    assert_eq!(num(&s, "files"), 10, "{s:#}");
    assert_eq!(num(&s, "dirs"), 6, "{s:#}");
    let warnings = s["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{s:#}");
    assert!(warnings[0].as_str().unwrap().contains(fifo), "{s:#}");

    // The listing shows links as links (nothing below link-to-dir) and no FIFO.
    let ls = f
        .cmd()
        .args(["ls", "latest", "--json"])
        .run()
        .success()
        .json();
    let ls = ls.as_array().unwrap();
    let find = |p: &str| {
        ls.iter()
            .find(|e| e["path"] == p)
            .unwrap_or_else(|| panic!("{p} not listed: {ls:#?}"))
    };
    assert_eq!(find("data/link-to-dir")["type"], "symlink");
    assert_eq!(find("data/link-to-dir")["target"], "nested");
    assert_eq!(find("data/link-dangling")["target"], "does/not/exist");
    assert_eq!(find("data/empty-dir")["type"], "dir");
    assert_eq!(find("data/nested/big.bin")["size"], 8 * MIB as u64);
    assert!(
        !ls.iter()
            .any(|e| e["path"].as_str().unwrap().starts_with("data/link-to-dir/")),
        "a symlinked directory was followed"
    );
    assert!(!ls.iter().any(|e| e["path"] == "data/a-fifo"));

    let chunks = file_chunks(&f.vault(), "latest", "data/nested/big.bin");
    assert!(chunks.len() >= 4, "8 MiB in {} chunk(s)", chunks.len());
    assert!(file_chunks(&f.vault(), "latest", "data/empty-file").is_empty());

    let target = f.path("restored");
    f.restore("latest", &target);
    assert_same_tree(&data, &target.join("data"), &[OsStr::new(fifo)]);
    assert!(!target.join("data").join(fifo).exists());
    // Belt and braces on the facts the issue names.
    let m = |p: &str| fs::symlink_metadata(target.join("data").join(p)).unwrap();
    assert_eq!(m("exec-751").mode() & 0o7777, 0o751);
    assert_eq!(m("private-600").mode() & 0o7777, 0o600);
    assert_eq!(m("mode-750-dir").mode() & 0o7777, 0o750);
    assert!(m("link-dangling").file_type().is_symlink());
    assert!(m("link-to-dir").file_type().is_symlink());
    assert_eq!(m("empty-file").len(), 0);
    assert_eq!(m("hello.txt").mtime(), 1_000_000_000);
    assert!(target
        .join("data")
        .join(OsStr::from_bytes(NON_UTF8_NAME))
        .is_file());
}

#[test]
fn single_file_snapshot_restores_under_its_name() {
    let f = Fixture::with_vault();
    let file = f.path("lonely.txt");
    fs::write(&file, b"just me").unwrap();
    set_mtime(&file, 1_200_000_000);
    f.snapshot(&file);
    let target = f.path("out");
    f.restore("latest", &target);
    assert_same_tree(&file, &target.join("lonely.txt"), &[]);
}

/// Paths a snapshot listing holds, below the root entry `data/`.
fn listed_paths(f: &Fixture) -> Vec<String> {
    let ls = f
        .cmd()
        .args(["ls", "latest", "--json"])
        .run()
        .success()
        .json();
    ls.as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn ignore_files_and_exclude_globs_leave_out_what_they_name() {
    let f = Fixture::with_vault();
    let data = f.path("data");
    fs::create_dir_all(data.join("cache")).unwrap();
    fs::create_dir_all(data.join("sub/build")).unwrap();
    for p in [
        "keep.txt",
        "app.log",
        "cache/blob",
        "secret.key",
        "notes.tmp",
        "sub/keep.rs",
        "sub/debug.log",
        "sub/build/out.o",
        "sub/local.ignored",
    ] {
        fs::write(data.join(p), p).unwrap();
    }
    fs::write(data.join(".gitignore"), "*.log\n").unwrap();
    fs::write(data.join(".ignore"), "cache/\n").unwrap();
    fs::write(data.join(".vaultignore"), "secret.key\n").unwrap();
    fs::write(data.join("sub/.vaultignore"), "build/\n*.ignored\n").unwrap();

    f.cmd()
        .args(["snapshot", "--exclude", "*.tmp"])
        .arg(&data)
        .run()
        .success();
    let listed = listed_paths(&f);
    for gone in [
        "data/app.log",
        "data/sub/debug.log",
        "data/cache",
        "data/cache/blob",
        "data/secret.key",
        "data/notes.tmp",
        "data/sub/build",
        "data/sub/build/out.o",
        "data/sub/local.ignored",
    ] {
        assert!(
            !listed.iter().any(|p| p == gone),
            "{gone} should be excluded: {listed:#?}"
        );
    }
    for kept in [
        "data/keep.txt",
        "data/sub/keep.rs",
        "data/.gitignore",
        "data/.ignore",
        "data/.vaultignore",
        "data/sub/.vaultignore",
    ] {
        assert!(
            listed.iter().any(|p| p == kept),
            "{kept} should be kept: {listed:#?}"
        );
    }

    // Each rule alone: without --exclude the .tmp file is back, the ignore files still apply.
    f.cmd().arg("snapshot").arg(&data).run().success();
    let listed = listed_paths(&f);
    assert!(listed.iter().any(|p| p == "data/notes.tmp"), "{listed:#?}");
    assert!(!listed.iter().any(|p| p == "data/app.log"), "{listed:#?}");

    // Several --exclude globs, including a directory.
    f.cmd()
        .args(["snapshot", "--exclude", "*.tmp", "--exclude", "sub/"])
        .arg(&data)
        .run()
        .success();
    let listed = listed_paths(&f);
    assert!(
        !listed.iter().any(|p| p.starts_with("data/sub")),
        "{listed:#?}"
    );
    assert!(!listed.iter().any(|p| p == "data/notes.tmp"), "{listed:#?}");
    assert!(listed.iter().any(|p| p == "data/keep.txt"), "{listed:#?}");
}

#[test]
fn include_restores_only_the_named_subtree() {
    let f = Fixture::with_vault();
    let data = f.path("data");
    fs::create_dir_all(data.join("keep/inner")).unwrap();
    fs::create_dir_all(data.join("other")).unwrap();
    fs::write(data.join("keep/inner/a.txt"), b"a").unwrap();
    fs::write(data.join("keep/b.txt"), b"b").unwrap();
    fs::write(data.join("other/c.txt"), b"c").unwrap();
    fs::write(data.join("top.txt"), b"top").unwrap();
    fs::write(
        data.join("keepsake.txt"),
        b"prefix but not a path component",
    )
    .unwrap();
    f.snapshot(&data);

    let target = f.path("t1");
    f.cmd()
        .args(["restore", "latest", "--include", "data/keep", "--target"])
        .arg(&target)
        .run()
        .success();
    assert_eq!(
        list_all(&target),
        [
            "data",
            "data/keep",
            "data/keep/b.txt",
            "data/keep/inner",
            "data/keep/inner/a.txt"
        ]
        .iter()
        .map(std::path::PathBuf::from)
        .collect::<Vec<_>>()
    );
    assert_same_tree(&data.join("keep"), &target.join("data/keep"), &[]);

    // Two includes, one of them a single file.
    let target = f.path("t2");
    f.cmd()
        .args([
            "restore",
            "latest",
            "--include",
            "data/other/c.txt",
            "--include",
            "data/top.txt",
            "--target",
        ])
        .arg(&target)
        .run()
        .success();
    assert_eq!(
        list_all(&target),
        ["data", "data/other", "data/other/c.txt", "data/top.txt"]
            .iter()
            .map(std::path::PathBuf::from)
            .collect::<Vec<_>>()
    );
    assert_eq!(fs::read(target.join("data/top.txt")).unwrap(), b"top");

    // An include that names nothing is an error, not a silent empty restore.
    f.cmd()
        .args(["restore", "latest", "--include", "data/nope", "--target"])
        .arg(f.path("t3"))
        .run()
        .one_line_error(1)
        .stderr_has("data/nope");
}

#[test]
fn non_empty_target_is_refused_unless_overwrite() {
    let f = Fixture::with_vault();
    let data = f.path("data");
    fs::create_dir_all(data.join("d")).unwrap();
    fs::write(data.join("a.txt"), b"original a").unwrap();
    fs::write(data.join("d/b.txt"), b"original b").unwrap();
    set_mtime(&data.join("a.txt"), 1_100_000_000);
    f.snapshot(&data);

    let target = f.path("target");
    fs::create_dir(&target).unwrap();
    fs::write(target.join("precious.txt"), b"do not touch").unwrap();
    f.cmd()
        .args(["restore", "latest", "--target"])
        .arg(&target)
        .run()
        .one_line_error(1)
        .stderr_has("not empty")
        .stderr_has("--overwrite");
    assert_eq!(
        list_all(&target),
        vec![std::path::PathBuf::from("precious.txt")]
    );

    // A stale copy in the target is replaced with --overwrite; unrelated files stay.
    fs::create_dir_all(target.join("data/d")).unwrap();
    fs::write(
        target.join("data/a.txt"),
        b"stale and longer than the original",
    )
    .unwrap();
    fs::write(target.join("data/d/b.txt"), b"stale").unwrap();
    f.cmd()
        .args(["restore", "latest", "--overwrite", "--target"])
        .arg(&target)
        .run()
        .success();
    assert_eq!(
        fs::read(target.join("precious.txt")).unwrap(),
        b"do not touch"
    );
    assert_same_tree(&data, &target.join("data"), &[]);

    // A target that is a file is refused.
    let file_target = f.path("a-file");
    fs::write(&file_target, b"x").unwrap();
    f.cmd()
        .args(["restore", "latest", "--target"])
        .arg(&file_target)
        .run()
        .one_line_error(1)
        .stderr_has("not a directory");
}

#[test]
fn init_with_a_relative_vault_path() {
    // `vault --vault NAME init` run from the directory that will hold NAME.
    let f = Fixture::new();
    f.cmd_in(f.root())
        .args(["--vault", "rel-vault", "init"])
        .run()
        .success();
    assert!(f.path("rel-vault/config.json").is_file());
    let data = f.path("data");
    fs::create_dir(&data).unwrap();
    fs::write(data.join("x"), b"x").unwrap();
    f.cmd_in(f.root())
        .args(["--vault", "rel-vault", "snapshot", "data"])
        .run()
        .success();
    f.cmd_in(f.root())
        .args([
            "--vault",
            "rel-vault",
            "restore",
            "latest",
            "--target",
            "out",
        ])
        .run()
        .success();
    assert_eq!(fs::read(f.path("out/data/x")).unwrap(), b"x");
}

#[test]
fn vault_inside_the_snapshotted_tree_is_left_out() {
    let f = Fixture::new();
    let data = f.path("data");
    fs::create_dir(&data).unwrap();
    fs::write(data.join("mine.txt"), b"mine").unwrap();
    let vault = data.join("the-vault");
    let cmd = || f.cmd_in(f.root()).vault_dir(&vault);
    cmd().arg("init").run().success();
    cmd().arg("snapshot").arg(&data).run().success();
    // Again through a path spelled differently (a symlinked parent), so the vault is not found
    // by plain string comparison.
    symlink(f.root(), f.path("alias")).unwrap();
    cmd()
        .arg("snapshot")
        .arg(f.path("alias/data"))
        .run()
        .success();
    let ids = f.snapshot_ids_in(&vault);
    assert_eq!(ids.len(), 2);
    for snap in &ids {
        let ls = cmd().args(["ls", snap, "--json"]).run().success().json();
        let paths: Vec<&str> = ls
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["path"].as_str().unwrap())
            .collect();
        assert!(paths.contains(&"data/mine.txt"), "{paths:?}");
        assert!(
            !paths.iter().any(|p| p.contains("the-vault")),
            "snapshot {snap}: the vault was snapshotted into itself: {paths:?}"
        );
    }
}

#[test]
fn root_entries_are_named_after_the_last_path_component() {
    let f = Fixture::with_vault();
    for d in ["one/data", "two/data", "three/other"] {
        fs::create_dir_all(f.path(d)).unwrap();
        fs::write(f.path(d).join("file"), d).unwrap();
    }
    // Relative, with a trailing slash and with `.` / `..`: all name the entry by the real dir.
    f.cmd_in(&f.path("three/other"))
        .vault_dir(&f.vault())
        .args(["snapshot", "../../one/data/", "../../two/./data", "."])
        .run()
        .success();
    let target = f.path("out");
    f.restore("latest", &target);
    let mut names: Vec<String> = fs::read_dir(&target)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["data", "data~2", "other"]);
    assert_eq!(fs::read(target.join("data/file")).unwrap(), b"one/data");
    assert_eq!(fs::read(target.join("data~2/file")).unwrap(), b"two/data");
    assert_eq!(fs::read(target.join("other/file")).unwrap(), b"three/other");
}

#[test]
fn a_symlink_given_as_the_snapshot_path_is_stored_as_a_link() {
    let f = Fixture::with_vault();
    let real = f.path("real");
    fs::create_dir(&real).unwrap();
    fs::write(real.join("inside"), b"not to be followed").unwrap();
    let link = f.path("link");
    symlink(&real, &link).unwrap();
    let s = f.snapshot(&link);
    assert_eq!(num(&s, "files"), 0, "{s:#}");
    let target = f.path("out");
    f.restore("latest", &target);
    assert_eq!(fs::read_link(target.join("link")).unwrap(), real);
}

#[test]
fn vault_dir_env_var_selects_the_vault() {
    let f = Fixture::with_vault();
    let data = f.path("data");
    fs::create_dir(&data).unwrap();
    fs::write(data.join("x"), b"x").unwrap();
    f.cmd_in(f.root())
        .env("VAULT_DIR", f.vault())
        .arg("snapshot")
        .arg(&data)
        .run()
        .success();
    assert_eq!(f.snapshot_ids().len(), 1);
}

#[test]
fn a_directory_of_thousands_of_files_big_and_small_round_trips() {
    // Restore hands a directory's small files to one worker in batches (of at most 1,024 files
    // or 8 MiB) and big files one by one: every kind of hand-off must land every file, with the
    // metadata, including a directory's files on both sides of a subdirectory.
    let f = Fixture::with_vault();
    let data = f.path("data");
    fs::create_dir_all(data.join("m/sub")).unwrap();
    for i in 0..5_000u32 {
        let body = if i % 7 == 0 {
            Vec::new()
        } else {
            format!("file {i}\n").into_bytes()
        };
        fs::write(data.join(format!("m/f{i:05}")), body).unwrap();
    }
    for i in 0..3u64 {
        write_random_file(&data.join(format!("m/big{i}")), i, 2 * MIB + 1);
        write_random_file(&data.join(format!("m/mid{i}")), 10 + i, 900 * 1024);
    }
    fs::write(data.join("m/sub/inner"), b"inner").unwrap();
    set_mtime(&data.join("m/f00042"), 1_000_000_000);
    let s = f.snapshot(&data);
    assert_eq!(num(&s, "files"), 5_007);
    let target = f.path("out");
    f.restore("latest", &target);
    assert_same_tree(&data, &target.join("data"), &[]);
}
