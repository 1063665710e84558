//! Tree blobs: one per directory, listing its entries by raw name.
//!
//! A tree is a format byte followed by the postcard encoding of its entries, sorted by name. Names
//! are raw bytes (Unix names need not be UTF-8). Each entry records what change detection needs
//! (size, mtime, ctime, inode, device) and what restore needs (mode, times, chunk ids, subtree id or
//! link target). Unchanged directories encode to the same bytes and therefore the same blob id, so
//! an unchanged tree costs nothing to store again.
//!
//! Decoding is permissive about names; [`check_name`] is the gate restore and verify apply before
//! a name touches the file system.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::BlobId;

const TREE_FORMAT: u8 = 1;

/// What an entry is, with what it points to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Node {
    /// A regular file made of these chunks, in order.
    File { chunks: Vec<BlobId> },
    /// A directory whose listing is the tree blob `subtree`.
    Dir { subtree: BlobId },
    /// A symbolic link, stored as its target and never followed.
    Symlink {
        #[serde(with = "serde_bytes")]
        target: Vec<u8>,
    },
}

/// One directory entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    #[serde(with = "serde_bytes")]
    pub name: Vec<u8>,
    pub node: Node,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub size: u64,
    pub inode: u64,
    pub dev: u64,
}

impl Entry {
    /// The kind as a short word, for listings.
    pub fn kind_str(&self) -> &'static str {
        match self.node {
            Node::File { .. } => "file",
            Node::Dir { .. } => "dir",
            Node::Symlink { .. } => "symlink",
        }
    }
}

/// The listing of one directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    pub entries: Vec<Entry>,
}

impl Tree {
    /// Encodes the tree (entries are sorted by name first, so equal trees give equal bytes).
    pub fn encode(&mut self) -> Vec<u8> {
        self.entries.sort_by(|a, b| a.name.cmp(&b.name));
        let mut out = vec![TREE_FORMAT];
        postcard::to_io(self, &mut out).expect("invariant: writing to a Vec cannot fail");
        out
    }

    /// Decodes untrusted bytes. Allocation is bounded by the input length.
    pub fn decode(bytes: &[u8]) -> std::result::Result<Tree, String> {
        match bytes.split_first() {
            Some((&TREE_FORMAT, rest)) => {
                postcard::from_bytes(rest).map_err(|e| format!("tree does not decode: {e}"))
            }
            Some((v, _)) => Err(format!("unknown tree format {v}")),
            None => Err("empty tree blob".into()),
        }
    }

    /// Finds an entry by name.
    pub fn get(&self, name: &[u8]) -> Option<&Entry> {
        self.entries
            .binary_search_by(|e| e.name.as_slice().cmp(name))
            .ok()
            .map(|i| &self.entries[i])
    }
}

/// Rejects a name that could escape the directory it is restored into.
pub fn check_name(name: &[u8]) -> Result<()> {
    let reason = if name.is_empty() {
        Some("empty name")
    } else if name == b"." || name == b".." {
        Some("name is . or ..")
    } else if name.contains(&b'/') {
        Some("name contains /")
    } else if name.contains(&0) {
        Some("name contains a NUL byte")
    } else {
        None
    };
    match reason {
        Some(r) => Err(Error::UnsafeEntry {
            entry: crate::util::display_name(name),
            reason: r.into(),
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(name: Vec<u8>, node: Node) -> Entry {
        Entry {
            name,
            node,
            mode: 0o644,
            uid: 1,
            gid: 2,
            mtime_ns: -5,
            ctime_ns: 7,
            size: 3,
            inode: 9,
            dev: 1,
        }
    }

    proptest! {
        #[test]
        fn tree_round_trip(names in proptest::collection::btree_set(proptest::collection::vec(1u8..=255, 1..20), 0..30)) {
            let mut t = Tree { entries: names.into_iter().enumerate().map(|(i, n)| {
                let node = match i % 3 {
                    0 => Node::File { chunks: vec![BlobId::of(&n)] },
                    1 => Node::Dir { subtree: BlobId::of(b"x") },
                    _ => Node::Symlink { target: n.clone() },
                };
                entry(n, node)
            }).collect() };
            let bytes = t.encode();
            prop_assert_eq!(Tree::decode(&bytes).unwrap(), t);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Tree::decode(&bytes);
        }
    }

    #[test]
    fn hostile_names_are_rejected() {
        for bad in [&b""[..], b".", b"..", b"a/b", b"/etc", b"a\0b"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        check_name(b"ok \xff name").unwrap();
    }
}
