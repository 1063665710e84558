//! Hostile snapshots: trees crafted with the library API whose names try to escape the restore
//! target. Restore must refuse them, name the entry, and write nothing outside the target.

use std::collections::HashSet;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use atlasvault::blob::{self, BlobKind};
use atlasvault::id::BlobId;
use atlasvault::lock::LockMode;
use atlasvault::manifest::{Manifest, SourcePath, Stats, MANIFEST_FORMAT};
use atlasvault::pack::PackWriter;
use atlasvault::tree::{Entry, Node, Tree};
use atlasvault::Vault;

use crate::common::*;

/// Writes blobs into one pack and publishes a manifest for a hand-made root tree.
struct Crafter {
    vault: Vault,
    pack: PackWriter,
    added: HashSet<BlobId>,
}

impl Crafter {
    fn open(root: &Path) -> Self {
        let vault = Vault::open(root, LockMode::Exclusive, None).expect("open vault");
        let pack = PackWriter::new(&vault.packs_dir()).expect("pack writer");
        Crafter {
            vault,
            pack,
            added: HashSet::new(),
        }
    }

    fn put(&mut self, kind: BlobKind, bytes: &[u8]) -> BlobId {
        let id = BlobId::of(bytes);
        if self.added.insert(id) {
            let sealed = blob::seal(id, kind, bytes, 3).expect("seal");
            self.pack.add(&sealed).expect("add blob");
        }
        id
    }

    fn file(&mut self, name: &[u8], content: &[u8]) -> Entry {
        let chunk = self.put(BlobKind::Data, content);
        entry(
            name,
            Node::File {
                chunks: vec![chunk],
            },
            0o100644,
            content.len() as u64,
        )
    }

    /// A directory entry; `entries` are kept in the order given (duplicates included).
    fn dir(&mut self, name: &[u8], entries: Vec<Entry>) -> Entry {
        let mut tree = Tree { entries };
        let bytes = tree.encode();
        let subtree = self.put(BlobKind::Tree, &bytes);
        entry(name, Node::Dir { subtree }, 0o40755, 0)
    }

    fn symlink(name: &[u8], target: &[u8]) -> Entry {
        entry(
            name,
            Node::Symlink {
                target: target.to_vec(),
            },
            0o120777,
            target.len() as u64,
        )
    }

    /// Publishes the pack and a manifest whose root tree holds `roots`; returns the snapshot id.
    fn finish(self, roots: Vec<Entry>) -> String {
        let mut me = self;
        let mut tree = Tree { entries: roots };
        let bytes = tree.encode();
        let root = me.put(BlobKind::Tree, &bytes);
        let done = me.pack.finish().expect("finish pack");
        me.vault
            .index_mut()
            .add_pack(&done.id, done.size, &done.entries)
            .expect("index pack");
        let mut m = Manifest {
            format: MANIFEST_FORMAT,
            time: humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string(),
            host: "attacker".into(),
            user: "mallory".into(),
            parent: None,
            paths: vec![SourcePath {
                path: "/evil".into(),
                name: "data".into(),
            }],
            tree: root,
            stats: Stats::default(),
            warnings: vec![],
            partial: false,
            gates: None,
            sha256: None,
        };
        me.vault
            .write_manifest(&mut m)
            .expect("write manifest")
            .to_hex()
    }
}

fn entry(name: &[u8], node: Node, mode: u32, size: u64) -> Entry {
    Entry {
        name: name.to_vec(),
        node,
        mode,
        uid: 0,
        gid: 0,
        mtime_ns: 1_500_000_000_000_000_000,
        ctime_ns: 1_500_000_000_000_000_000,
        size,
        inode: 1,
        dev: 1,
    }
}

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
    let mut c = Crafter::open(&f.vault());
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
