//! Snapshots crafted with the library API, for tests that need content the real pipeline would
//! never store (hostile names, raw secrets).

use std::collections::HashSet;

use atlasvault::blob::{self, BlobKind, Compression, SealedBlob};
use atlasvault::crypto::{Crypto, Domain};
use atlasvault::id::{BlobId, PackId};
use atlasvault::lock::LockMode;
use atlasvault::manifest::{Manifest, SourcePath, Stats, MANIFEST_FORMAT};
use atlasvault::pack::{self, PackEntry, PackWriter};
use atlasvault::tree::{Entry, Node, Tree};
use atlasvault::Vault;

use crate::common::Fixture;

/// Writes blobs into one pack and publishes a manifest for a hand-made root tree.
pub struct Crafter {
    vault: Vault,
    pack: PackWriter,
    added: HashSet<BlobId>,
    /// (alias, original): index entries that place `alias` where `original` is.
    aliases: Vec<(BlobId, BlobId)>,
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
            aliases: Vec::new(),
        }
    }

    /// The vault's crypto (ids are keyed, blobs and trailers sealed with it).
    pub fn crypto(&self) -> &Crypto {
        self.vault.crypto()
    }

    /// Adds a blob whose stored form the caller chose: `stored` is sealed as it is (never
    /// compressed here), under `id`, with `compression` and `raw_len` declared as given.
    pub fn put_stored(
        &mut self,
        kind: BlobKind,
        id: BlobId,
        compression: Compression,
        raw_len: u32,
        stored: &[u8],
    ) -> BlobId {
        let bytes = self
            .vault
            .crypto()
            .seal(Domain::Blob, &id.0, stored.to_vec());
        let sealed = SealedBlob {
            id,
            kind,
            compression,
            raw_len,
            bytes,
        };
        self.pack.add(&sealed).expect("add crafted blob");
        self.added.insert(id);
        id
    }

    /// Makes the index place `alias` where `original` is stored (applied by [`Crafter::finish`]).
    pub fn alias(&mut self, alias: BlobId, original: BlobId) {
        self.aliases.push((alias, original));
    }

    /// Writes `bytes` into `packs/` under the name of their hash, without indexing them.
    pub fn write_pack_file(&self, bytes: &[u8]) -> PackId {
        let id = PackId(*blake3::hash(bytes).as_bytes());
        let path = pack::pack_path(&self.vault.packs_dir(), &id);
        std::fs::create_dir_all(path.parent().expect("pack dir")).expect("create pack dir");
        std::fs::write(&path, bytes).expect("write crafted pack");
        id
    }

    /// Records `entries` for pack `id` in the index, whatever they say.
    pub fn index_pack(&mut self, id: &PackId, size: u64, entries: &[PackEntry]) {
        self.vault
            .index_mut()
            .add_pack(id, size, entries)
            .expect("index crafted pack");
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
        let aliased: Vec<PackEntry> = me
            .aliases
            .iter()
            .map(|(alias, original)| {
                let e = done
                    .entries
                    .iter()
                    .find(|e| e.id == *original)
                    .expect("aliased blob is in the pack");
                PackEntry { id: *alias, ..*e }
            })
            .collect();
        if !aliased.is_empty() {
            me.vault
                .index_mut()
                .add_pack(&done.id, done.size, &aliased)
                .expect("index aliases");
        }
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

/// A pack assembled byte by byte (the layout documented in `src/pack.rs`), so that its trailer
/// and footer can say anything.
pub struct RawPack {
    crypto: Crypto,
    pub bytes: Vec<u8>,
    pub entries: Vec<PackEntry>,
}

impl RawPack {
    pub fn new(crypto: &Crypto) -> Self {
        let version = if crypto.is_encrypted() { 2 } else { 1 };
        RawPack {
            crypto: crypto.clone(),
            bytes: [&b"AVPK"[..], &[version, 0, 0, 0]].concat(),
            entries: Vec::new(),
        }
    }

    /// Appends `raw` as an honest, uncompressed blob; returns its entry.
    pub fn add(&mut self, kind: BlobKind, raw: &[u8]) -> PackEntry {
        let id = self.crypto.blob_id(raw);
        let stored = self.crypto.seal(Domain::Blob, &id.0, raw.to_vec());
        let e = PackEntry {
            id,
            kind,
            compression: Compression::None,
            offset: self.bytes.len() as u64,
            stored_len: stored.len() as u32,
            raw_len: raw.len() as u32,
        };
        self.bytes.extend_from_slice(&stored);
        self.entries.push(e);
        e
    }

    /// The pack with `entries` as its trailer and `trailer_len` in its footer (the true length
    /// when `None`).
    pub fn finish(&self, entries: &[PackEntry], trailer_len: Option<u32>) -> Vec<u8> {
        let mut plain = Vec::new();
        for e in entries {
            plain.extend_from_slice(&e.id.0);
            plain.extend_from_slice(&[e.kind as u8, e.compression as u8, 0, 0]);
            plain.extend_from_slice(&e.offset.to_le_bytes());
            plain.extend_from_slice(&e.stored_len.to_le_bytes());
            plain.extend_from_slice(&e.raw_len.to_le_bytes());
        }
        let trailer = self.crypto.seal(Domain::Trailer, b"", plain);
        let mut out = self.bytes.clone();
        out.extend_from_slice(&trailer);
        let tlen = trailer_len.unwrap_or(trailer.len() as u32);
        out.extend_from_slice(&tlen.to_le_bytes());
        out.extend_from_slice(blake3::hash(&trailer).as_bytes());
        out.extend_from_slice(b"AVPKEND1");
        out
    }
}
