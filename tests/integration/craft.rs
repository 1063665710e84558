//! Snapshots crafted with the library API, for tests that need content the real pipeline would
//! never store (hostile names, raw secrets).

use std::collections::HashSet;

use atlasvault::blob::{self, BlobKind};
use atlasvault::id::BlobId;
use atlasvault::lock::LockMode;
use atlasvault::manifest::{Manifest, SourcePath, Stats, MANIFEST_FORMAT};
use atlasvault::pack::PackWriter;
use atlasvault::tree::{Entry, Node, Tree};
use atlasvault::Vault;

use crate::common::Fixture;

/// Writes blobs into one pack and publishes a manifest for a hand-made root tree.
pub struct Crafter {
    vault: Vault,
    pack: PackWriter,
    added: HashSet<BlobId>,
}

impl Crafter {
    /// Crafts into the vault of `f`.
    pub fn open(f: &Fixture) -> Self {
        let vault = f.open_vault(LockMode::Exclusive);
        let pack = PackWriter::new(&vault.packs_dir(), vault.crypto()).expect("pack writer");
        Crafter {
            vault,
            pack,
            added: HashSet::new(),
        }
    }

    pub fn put(&mut self, kind: BlobKind, bytes: &[u8]) -> BlobId {
        let id = self.vault.crypto().blob_id(bytes);
        if self.added.insert(id) {
            let sealed = blob::seal(self.vault.crypto(), id, kind, bytes, 3).expect("seal");
            self.pack.add(&sealed).expect("add blob");
        }
        id
    }

    pub fn file(&mut self, name: &[u8], content: &[u8]) -> Entry {
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
    pub fn dir(&mut self, name: &[u8], entries: Vec<Entry>) -> Entry {
        let mut tree = Tree { entries };
        let bytes = tree.encode();
        let subtree = self.put(BlobKind::Tree, &bytes);
        entry(name, Node::Dir { subtree }, 0o40755, 0)
    }

    pub fn symlink(name: &[u8], target: &[u8]) -> Entry {
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
    pub fn finish(self, roots: Vec<Entry>) -> String {
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
            template_only: None,
            safety: false,
            streams: vec![],
            gates: None,
            sha256: None,
        };
        me.vault
            .write_manifest(&mut m)
            .expect("write manifest")
            .to_hex()
    }
}

pub fn entry(name: &[u8], node: Node, mode: u32, size: u64) -> Entry {
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
