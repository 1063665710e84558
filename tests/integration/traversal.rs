//! Hostile snapshots: trees crafted with the library API whose names try to escape the restore
//! target. Restore must refuse them, name the entry, and write nothing outside the target.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use atlasvault::tree::Entry;

use crate::common::*;
use crate::craft::Crafter;

/// Everything under the fixture except the vault and the restore target.
fn outside_state(f: &Fixture) -> Vec<(PathBuf, Option<Vec<u8>>)> {
    list_all(f.root())
        .into_iter()
        .filter(|p| !p.starts_with("vault") && !p.starts_with("work/target"))
        .map(|p| {
            let full = f.root().join(&p);
            let content = fs::symlink_metadata(&full)
                .ok()
                .filter(|m| m.is_file())
                .map(|_| fs::read(&full).unwrap());
            (p, content)
        })
        .collect()
}

/// Crafts a snapshot with `build`, restores it, and checks it was refused without escaping.
/// Returns the fixture, for [`assert_verify_flags`].
fn assert_refused(
    build: impl FnOnce(&mut Crafter, &Path) -> Vec<Entry>,
    names_entry: &[&str],
) -> Fixture {
    let f = Fixture::with_vault();
    let outside = f.path("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("victim.txt"), b"untouched").unwrap();
    fs::create_dir_all(f.path("work")).unwrap();
    let mut c = Crafter::open(&f);
    let roots = build(&mut c, &outside);
    let id = c.finish(roots);

    let before = outside_state(&f);
    let target = f.path("work/target");
    let run = f
        .cmd()
        .args(["restore", &id, "--target"])
        .arg(&target)
        .run();
    assert!(
        matches!(run.code, Some(1) | Some(4)),
        "a hostile snapshot was restored without error: {run:#?}"
    );
    assert!(
        names_entry.iter().any(|n| run.stderr.contains(n)),
        "stderr does not name the entry (any of {names_entry:?}): {run:#?}"
    );
    assert!(
        run.stderr.contains("unsafe"),
        "stderr does not call the entry unsafe: {run:#?}"
    );
    assert_eq!(
        outside_state(&f),
        before,
        "restore wrote outside the target directory"
    );
    // Listing the hostile snapshot must not crash either (exit code is the listing's business).
    f.cmd().args(["ls", &id]).run();
    f
}

/// `vault verify` must call a snapshot that restore refuses damaged, and say where.
fn assert_verify_flags(f: &Fixture, names_entry: &[&str]) {
    let run = f.cmd().arg("verify").run();
    assert_eq!(
        run.code,
        Some(4),
        "verify calls a snapshot restore refuses clean: {run:#?}"
    );
    assert!(
        names_entry.iter().any(|n| run.stdout.contains(n)),
        "verify does not name the entry (any of {names_entry:?}): {run:#?}"
    );
}

/// Restore refuses the snapshot, and verify flags it.
fn check(build: impl FnOnce(&mut Crafter, &Path) -> Vec<Entry>, names_entry: &[&str]) {
    let f = assert_refused(build, names_entry);
    assert_verify_flags(&f, names_entry);
}

#[test]
fn dot_dot_directory_at_the_root_is_refused() {
    check(
        |c, _| {
            let pwned = c.file(b"pwned.txt", b"escaped!");
            let inner = c.dir(b"..", vec![pwned]);
            vec![c.dir(b"..", vec![inner])]
        },
        &["\"..\""],
    );
}

#[test]
fn dot_dot_directory_nested_is_refused() {
    check(
        |c, _| {
            let pwned = c.file(b"pwned.txt", b"escaped!");
            let up2 = c.dir(b"..", vec![pwned]);
            let up1 = c.dir(b"..", vec![up2]);
            let ok = c.file(b"fine.txt", b"fine");
            vec![c.dir(b"data", vec![ok, up1])]
        },
        &["data/..", "\"..\""],
    );
}

#[test]
fn name_with_a_slash_is_refused() {
    check(
        |c, _| {
            let ab = c.file(b"a/b", b"slash");
            let real_a = c.dir(b"a", vec![]);
            vec![c.dir(b"data", vec![real_a, ab])]
        },
        &["a/b"],
    );
}

#[test]
fn name_climbing_out_with_slashes_is_refused() {
    check(
        |c, _| {
            let esc = c.file(b"../../outside/victim.txt", b"overwritten!");
            vec![c.dir(b"data", vec![esc])]
        },
        &["../../outside/victim.txt"],
    );
}

#[test]
fn name_with_a_nul_byte_is_refused() {
    check(
        |c, _| {
            let nul = c.file(b"x\0y", b"nul");
            vec![c.dir(b"data", vec![nul])]
        },
        // Debug-escaped or raw.
        &["x\\0y", "x\0y", "x\\u{0}y"],
    );
}

#[test]
fn symlink_and_directory_with_the_same_name_are_refused() {
    // Both orders are refused by restore first; verify is checked after.
    let mut fixtures = Vec::new();
    for link_first in [true, false] {
        fixtures.push(assert_refused(
            |c, outside| {
                let link = Crafter::symlink(b"link", outside.as_os_str().as_bytes());
                let pwned = c.file(b"pwned.txt", b"through the link");
                let victim = c.file(b"victim.txt", b"overwritten through the link");
                let dir = c.dir(b"link", vec![pwned, victim]);
                let entries = if link_first {
                    vec![link, dir]
                } else {
                    vec![dir, link]
                };
                vec![c.dir(b"data", entries)]
            },
            &["link"],
        ));
    }
    for f in &fixtures {
        assert_verify_flags(f, &["link"]);
    }
}

#[test]
fn existing_symlink_in_target_is_not_followed_with_overwrite() {
    let f = Fixture::with_vault();
    let data = f.path("data");
    fs::create_dir_all(data.join("sub")).unwrap();
    fs::write(data.join("sub/file.txt"), b"from the snapshot").unwrap();
    fs::write(data.join("top.txt"), b"top from the snapshot").unwrap();
    f.snapshot(&data);

    let outside = f.path("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("top.txt"), b"victim").unwrap();
    fs::write(outside.join("file.txt"), b"victim").unwrap();

    // The target's data/sub is a symlink to a directory outside.
    let target = f.path("work/target");
    fs::create_dir_all(target.join("data")).unwrap();
    symlink(&outside, target.join("data/sub")).unwrap();
    let run = f
        .cmd()
        .args(["restore", "latest", "--overwrite", "--target"])
        .arg(&target)
        .run();
    assert_ne!(run.code, Some(0), "{run:#?}");
    assert!(run.stderr.contains("data/sub"), "{run:#?}");
    assert_eq!(fs::read(outside.join("file.txt")).unwrap(), b"victim");
    assert_eq!(list_all(&outside).len(), 2, "files appeared outside");

    // The target's data/top.txt is a symlink to a file outside.
    let target = f.path("work/target2");
    fs::create_dir_all(target.join("data")).unwrap();
    symlink(outside.join("top.txt"), target.join("data/top.txt")).unwrap();
    f.cmd()
        .args(["restore", "latest", "--overwrite", "--target"])
        .arg(&target)
        .run();
    assert_eq!(
        fs::read(outside.join("top.txt")).unwrap(),
        b"victim",
        "restore wrote through a symlink in the target"
    );
}

#[test]
fn overwrite_replaces_a_symlink_at_a_file_path_without_following_it() {
    let f = Fixture::with_vault();
    let data = f.path("data");
    fs::create_dir(&data).unwrap();
    fs::write(data.join("top.txt"), b"top from the snapshot").unwrap();
    set_mtime(&data.join("top.txt"), 1_400_000_000);
    f.snapshot(&data);
    let outside = f.path("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("victim.txt"), b"victim").unwrap();

    let target = f.path("target");
    fs::create_dir_all(target.join("data")).unwrap();
    symlink(outside.join("victim.txt"), target.join("data/top.txt")).unwrap();
    let run = f
        .cmd()
        .args(["restore", "latest", "--overwrite", "--target"])
        .arg(&target)
        .run();
    assert_eq!(fs::read(outside.join("victim.txt")).unwrap(), b"victim");
    // --overwrite replaces what is in the way: the link goes, the snapshot's file takes its place.
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_same_tree(&data.join("top.txt"), &target.join("data/top.txt"), &[]);
}
