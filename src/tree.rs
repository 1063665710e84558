//! Tree blobs: one per directory, listing its entries by raw name.
//!
//! A tree is a format byte followed by the postcard encoding of its entries, sorted by name. Names
//! are raw bytes (Unix names need not be UTF-8). Each entry records what change detection needs
//! (size, mtime, ctime, inode, device) and what restore needs (mode, times, chunk ids, subtree id or
//! link target). Unchanged directories encode to the same bytes and therefore the same blob id, so
//! an unchanged tree costs nothing to store again.
//!
//! A file of many chunks (a database dump) keeps its chunk list out of the tree, in a *list blob*
//! of its own ([`ListRef::Whole`]), and a later version of it is stored as edits to that list
//! ([`ListRef::Patch`]): a dump with a few changed rows costs the changed chunks and a few bytes
//! per change, not its whole chunk list again (32 bytes a chunk, 0.5 MB for a 540 MB dump). A
//! tree with such a file is format 2; readers get the resolved list in [`Node::File`] either way
//! ([`StoredTree::resolve`]).
//!
//! Decoding is permissive about names; [`check_name`] is the gate restore and verify apply before
//! a name touches the file system.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::BlobId;

const TREE_FORMAT: u8 = 1;
/// A tree with at least one file whose chunk list is a list blob, whole or patched.
const TREE_FORMAT_LISTS: u8 = 2;
/// A list blob: this byte, then the chunk ids, 32 bytes each.
const LIST_FORMAT: u8 = 1;

/// A file of at least this many chunks (8 KiB of ids) keeps its list in a list blob.
pub const LIST_MIN_CHUNKS: usize = 256;

/// The most chunk ids the files of one tree may get from list blobs: as many as the largest tree
/// blob could hold inline (256 MiB), so a tree of small entries that all name one big list blob
/// cannot make a reader hold more than a tree with the lists inline would.
/// A writer refuses a tree past it ([`Tree::listed_ids`]), as it refused a tree blob over 256 MiB
/// before list blobs, so that no snapshot holds a tree its readers refuse.
pub const MAX_LISTED_IDS: usize = crate::blob::MAX_BLOB_RAW_BYTES as usize / 32;

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

/// A node as stored in a tree blob: [`Node`]'s variants (encoded the same, so format 1 trees
/// decode as this too) and a file whose chunk list is kept apart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoredNode {
    File {
        chunks: Vec<BlobId>,
    },
    Dir {
        subtree: BlobId,
    },
    Symlink {
        #[serde(with = "serde_bytes")]
        target: Vec<u8>,
    },
    /// A regular file whose chunk list is stored as `list`.
    Listed(ListRef),
}

/// Where a file's chunk list is, when it is not in the tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ListRef {
    /// The list blob `list` holds the whole list.
    Whole(BlobId),
    /// The list blob `base` edited by `ops`, in order.
    Patch { base: BlobId, ops: Vec<ListOp> },
}

impl ListRef {
    /// The list blob this refers to.
    pub fn blob(&self) -> &BlobId {
        match self {
            ListRef::Whole(id) | ListRef::Patch { base: id, .. } => id,
        }
    }
}

/// One step of a patch: copy a run of the base list, or add ids the base does not have there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ListOp {
    Copy { from: u32, len: u32 },
    New(Vec<BlobId>),
}

/// One directory entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry<N = Node> {
    #[serde(with = "serde_bytes")]
    pub name: Vec<u8>,
    pub node: N,
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

impl<N> Entry<N> {
    fn with_node<M>(self, node: M) -> Entry<M> {
        Entry {
            name: self.name,
            node,
            mode: self.mode,
            uid: self.uid,
            gid: self.gid,
            mtime_ns: self.mtime_ns,
            ctime_ns: self.ctime_ns,
            size: self.size,
            inode: self.inode,
            dev: self.dev,
        }
    }
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

/// How the files of one tree that keep their chunk lists apart store them, by entry name.
pub type Lists = BTreeMap<Vec<u8>, ListRef>;

/// The listing of one directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    pub entries: Vec<Entry>,
}

impl Tree {
    /// Encodes the tree with every chunk list inline (format 1; entries are sorted by name
    /// first, so equal trees give equal bytes).
    pub fn encode(&mut self) -> Vec<u8> {
        self.encode_with(&Lists::new())
    }

    /// Encodes the tree, storing the chunk list of each file named in `lists` as given there
    /// (format 2 when there is one, format 1 otherwise). The caller vouches that each such
    /// list resolves to the file's chunks.
    pub fn encode_with(&mut self, lists: &Lists) -> Vec<u8> {
        self.entries.sort_by(|a, b| a.name.cmp(&b.name));
        let mut out = Vec::new();
        let listed = |e: &Entry| match e.node {
            Node::File { .. } => lists.get(&e.name),
            _ => None,
        };
        if !self.entries.iter().any(|e| listed(e).is_some()) {
            out.push(TREE_FORMAT);
            postcard::to_io(self, &mut out).expect("invariant: writing to a Vec cannot fail");
            return out;
        }
        let stored = StoredTree {
            entries: self
                .entries
                .iter()
                .map(|e| {
                    let node = match (&e.node, listed(e)) {
                        (_, Some(r)) => StoredNode::Listed(r.clone()),
                        (Node::File { chunks }, None) => StoredNode::File {
                            chunks: chunks.clone(),
                        },
                        (Node::Dir { subtree }, None) => StoredNode::Dir { subtree: *subtree },
                        (Node::Symlink { target }, None) => StoredNode::Symlink {
                            target: target.clone(),
                        },
                    };
                    e.clone().with_node(node)
                })
                .collect(),
        };
        out.push(TREE_FORMAT_LISTS);
        postcard::to_io(&stored, &mut out).expect("invariant: writing to a Vec cannot fail");
        out
    }

    /// Decodes untrusted bytes of a tree that keeps every chunk list inline (a tree with a list
    /// blob needs [`StoredTree::resolve`]). Allocation is bounded by the input length.
    pub fn decode(bytes: &[u8]) -> std::result::Result<Tree, String> {
        let (tree, _) = StoredTree::decode(bytes)?.resolve(|id| {
            Err(format!(
                "its chunk list is in list blob {id}, which this reader cannot load"
            ))
        })?;
        Ok(tree)
    }

    /// How many chunk ids the files named in `lists` hold: what a reader gets from list blobs
    /// ([`MAX_LISTED_IDS`] at most).
    pub fn listed_ids(&self, lists: &Lists) -> usize {
        self.entries
            .iter()
            .filter(|e| lists.contains_key(&e.name))
            .map(|e| match &e.node {
                Node::File { chunks } => chunks.len(),
                _ => 0,
            })
            .sum()
    }

    /// Finds an entry by name.
    pub fn get(&self, name: &[u8]) -> Option<&Entry> {
        self.entries
            .binary_search_by(|e| e.name.as_slice().cmp(name))
            .ok()
            .map(|i| &self.entries[i])
    }
}

/// A tree as stored, before its list blobs are read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredTree {
    pub entries: Vec<Entry<StoredNode>>,
}

impl StoredTree {
    /// Decodes untrusted bytes. Allocation is bounded by the input length.
    pub fn decode(bytes: &[u8]) -> std::result::Result<StoredTree, String> {
        let decoded: StoredTree = match bytes.split_first() {
            Some((&(TREE_FORMAT | TREE_FORMAT_LISTS), rest)) => {
                postcard::from_bytes(rest).map_err(|e| format!("tree does not decode: {e}"))?
            }
            Some((v, _)) => return Err(format!("unknown tree format {v}")),
            None => return Err("empty tree blob".into()),
        };
        let lists = decoded
            .entries
            .iter()
            .any(|e| matches!(e.node, StoredNode::Listed(_)));
        if lists != (bytes[0] == TREE_FORMAT_LISTS) {
            return Err(format!(
                "a format {} tree {} a file with a list blob",
                bytes[0],
                if lists { "has" } else { "lacks" }
            ));
        }
        Ok(decoded)
    }

    /// The tree with every file's chunk list in its [`Node::File`], and how the files that keep
    /// their lists apart store them. `load` returns the ids of a list blob; a patch must stay
    /// within its base list, copy no more ids than the base holds, and give a file no more
    /// chunks than it has bytes.
    pub fn resolve<L>(self, load: L) -> std::result::Result<(Tree, Lists), String>
    where
        L: FnMut(&BlobId) -> std::result::Result<Vec<BlobId>, String>,
    {
        self.resolve_at_most(MAX_LISTED_IDS, load)
    }

    fn resolve_at_most<L>(
        self,
        max_listed: usize,
        mut load: L,
    ) -> std::result::Result<(Tree, Lists), String>
    where
        L: FnMut(&BlobId) -> std::result::Result<Vec<BlobId>, String>,
    {
        let mut listed = 0usize;
        let mut lists = Lists::new();
        let mut entries = Vec::with_capacity(self.entries.len());
        for mut e in self.entries {
            // Moved out, not copied: every tree a reader opens comes through here.
            let stored = std::mem::replace(&mut e.node, StoredNode::File { chunks: Vec::new() });
            let node = match stored {
                StoredNode::File { chunks } => Node::File { chunks },
                StoredNode::Dir { subtree } => Node::Dir { subtree },
                StoredNode::Symlink { target } => Node::Symlink { target },
                StoredNode::Listed(r) => {
                    let whose = || crate::util::display_name(&e.name);
                    let base =
                        load(r.blob()).map_err(|why| format!("file {:?}: {why}", whose()))?;
                    let chunks = match &r {
                        ListRef::Whole(_) => base,
                        ListRef::Patch { ops, .. } => apply_patch(&base, ops).map_err(|why| {
                            format!("file {:?}: list blob {}: {why}", whose(), r.blob())
                        })?,
                    };
                    if chunks.len() as u64 > e.size {
                        return Err(format!(
                            "file {:?}: {} chunks for {} bytes",
                            whose(),
                            chunks.len(),
                            e.size
                        ));
                    }
                    listed += chunks.len();
                    if listed > max_listed {
                        return Err(format!(
                            "its files' list blobs name more than {max_listed} chunks"
                        ));
                    }
                    lists.insert(e.name.clone(), r);
                    Node::File { chunks }
                }
            };
            entries.push(e.with_node(node));
        }
        Ok((Tree { entries }, lists))
    }
}

/// The bytes of a list blob holding `ids`.
pub fn encode_list(ids: &[BlobId]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 32 * ids.len());
    out.push(LIST_FORMAT);
    for id in ids {
        out.extend_from_slice(&id.0);
    }
    out
}

/// The ids of a list blob (untrusted bytes).
pub fn decode_list(bytes: &[u8]) -> std::result::Result<Vec<BlobId>, String> {
    match bytes.split_first() {
        Some((&LIST_FORMAT, rest)) if rest.len() % 32 == 0 => Ok(rest
            .chunks_exact(32)
            .map(|c| BlobId(c.try_into().expect("invariant: chunks_exact(32)")))
            .collect()),
        Some((&LIST_FORMAT, rest)) => Err(format!(
            "a list blob of {} bytes is not a whole number of ids",
            rest.len()
        )),
        Some((v, _)) => Err(format!("unknown list format {v}")),
        None => Err("empty list blob".into()),
    }
}

/// Edits that turn `base` into `new`: runs found in `base` are copied, the rest is listed.
/// `None` when the patch would copy more ids than `base` holds (a file that repeats itself),
/// which [`apply_patch`] refuses.
pub fn diff_lists(base: &[BlobId], new: &[BlobId]) -> Option<Vec<ListOp>> {
    let mut first: HashMap<&BlobId, u32> = HashMap::with_capacity(base.len());
    for (i, id) in base.iter().enumerate() {
        first.entry(id).or_insert(i as u32);
    }
    let mut ops = Vec::new();
    let mut fresh = Vec::new();
    let mut copied = 0usize;
    // Where the last copied run ended: the likeliest place for the next one to start.
    let mut next = 0usize;
    let mut i = 0;
    while i < new.len() {
        let start = if base.get(next) == Some(&new[i]) {
            Some(next)
        } else {
            first.get(&new[i]).map(|&j| j as usize)
        };
        let Some(from) = start else {
            fresh.push(new[i]);
            i += 1;
            continue;
        };
        let len = new[i..]
            .iter()
            .zip(&base[from..])
            .take_while(|(a, b)| a == b)
            .count();
        if !fresh.is_empty() {
            ops.push(ListOp::New(std::mem::take(&mut fresh)));
        }
        ops.push(ListOp::Copy {
            from: from as u32,
            len: len as u32,
        });
        copied += len;
        next = from + len;
        i += len;
    }
    if !fresh.is_empty() {
        ops.push(ListOp::New(fresh));
    }
    (copied <= base.len()).then_some(ops)
}

/// About how many bytes `ops` take in a tree.
pub fn patch_bytes(ops: &[ListOp]) -> usize {
    ops.iter()
        .map(|op| match op {
            ListOp::Copy { .. } => 7,
            ListOp::New(ids) => 3 + 32 * ids.len(),
        })
        .sum()
}

/// The list `ops` make of `base` (untrusted ops: every run must lie within `base`, and the runs
/// together copy at most `base.len()` ids, so a patch cannot make a list much longer than the
/// bytes it is stored in).
pub fn apply_patch(base: &[BlobId], ops: &[ListOp]) -> std::result::Result<Vec<BlobId>, String> {
    let mut copied = 0usize;
    let mut total = 0usize;
    for op in ops {
        match op {
            ListOp::Copy { from, len } => {
                let (from, len) = (*from as usize, *len as usize);
                if from.checked_add(len).is_none_or(|end| end > base.len()) {
                    return Err(format!(
                        "a patch copies ids {from}..{} of a list of {}",
                        from.saturating_add(len),
                        base.len()
                    ));
                }
                copied += len;
                total += len;
            }
            ListOp::New(ids) => total += ids.len(),
        }
    }
    if copied > base.len() {
        return Err(format!(
            "a patch copies {copied} ids from a list of {}",
            base.len()
        ));
    }
    let mut out = Vec::with_capacity(total);
    for op in ops {
        match op {
            ListOp::Copy { from, len } => {
                let from = *from as usize;
                out.extend_from_slice(&base[from..from + *len as usize]);
            }
            ListOp::New(ids) => out.extend_from_slice(ids),
        }
    }
    Ok(out)
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

    fn ids(seeds: &[u8]) -> Vec<BlobId> {
        seeds.iter().map(|s| BlobId::of(&[*s])).collect()
    }

    proptest! {
        #[test]
        fn a_patch_gives_back_the_list_it_was_made_for(
            base in proptest::collection::vec(0u8..40, 0..300),
            new in proptest::collection::vec(0u8..40, 0..300),
        ) {
            let (base, new) = (ids(&base), ids(&new));
            if let Some(ops) = diff_lists(&base, &new) {
                prop_assert_eq!(apply_patch(&base, &ops).unwrap(), new);
            }
        }

        #[test]
        fn a_patch_of_an_edited_list_gives_it_back(
            len in 256usize..2000,
            edits in proptest::collection::vec((any::<u16>(), 0u8..3), 0..40),
        ) {
            // Distinct ids, edited by replacing, inserting and deleting at random places.
            let base: Vec<BlobId> = (0..len as u32).map(|i| BlobId::of(&i.to_le_bytes())).collect();
            let mut new = base.clone();
            for (k, (at, what)) in edits.iter().enumerate() {
                let at = *at as usize % (new.len() + 1);
                let fresh = BlobId::of(format!("new {k}").as_bytes());
                match what {
                    0 if at < new.len() => new[at] = fresh,
                    1 => new.insert(at, fresh),
                    _ if at < new.len() => { new.remove(at); }
                    _ => {}
                }
            }
            let ops = diff_lists(&base, &new).expect("distinct ids never over-copy");
            prop_assert_eq!(apply_patch(&base, &ops).unwrap(), new);
            // Each edit costs at most two runs and one new id, never the whole list again.
            prop_assert!(patch_bytes(&ops) <= 7 + edits.len() * (2 * 7 + 3 + 32), "{}", patch_bytes(&ops));
        }
    }

    #[test]
    fn scattered_changes_make_a_patch_of_a_few_bytes_each() {
        let base: Vec<BlobId> = (0..10_000u32)
            .map(|i| BlobId::of(&i.to_le_bytes()))
            .collect();
        let mut new = base.clone();
        for k in 0..100 {
            new[k * 97 + 5] = BlobId::of(format!("changed {k}").as_bytes());
        }
        new.extend(ids(b"appended"));
        let ops = diff_lists(&base, &new).unwrap();
        assert_eq!(apply_patch(&base, &ops).unwrap(), new);
        let fresh: usize = ops
            .iter()
            .map(|op| match op {
                ListOp::New(v) => v.len(),
                ListOp::Copy { .. } => 0,
            })
            .sum();
        assert_eq!(fresh, 100 + 8);
        // 108 new ids and 101 runs: under 5 KB against 320 KB for the whole list.
        assert!(patch_bytes(&ops) < 5_000, "{}", patch_bytes(&ops));
        let mut stored = Vec::new();
        postcard::to_io(&ops, &mut stored).unwrap();
        assert!(stored.len() <= patch_bytes(&ops), "{} bytes", stored.len());
    }

    #[test]
    fn a_list_that_repeats_itself_is_not_patched() {
        let base = ids(b"abcdef");
        let twice = ids(b"abcdefabcdef");
        assert_eq!(diff_lists(&base, &twice), None);
        assert_eq!(
            diff_lists(&base, &ids(b"abcxyzdef")).map(|o| o.len()),
            Some(3)
        );
    }

    #[test]
    fn hostile_patches_are_refused() {
        let base = ids(b"abcd");
        for (ops, why) in [
            (
                vec![ListOp::Copy { from: 2, len: 3 }],
                "copies ids 2..5 of a list of 4",
            ),
            (
                vec![ListOp::Copy {
                    from: u32::MAX,
                    len: u32::MAX,
                }],
                "of a list of 4",
            ),
            (
                vec![
                    ListOp::Copy { from: 0, len: 4 },
                    ListOp::Copy { from: 0, len: 1 },
                ],
                "copies 5 ids from a list of 4",
            ),
        ] {
            let err = apply_patch(&base, &ops).unwrap_err();
            assert!(err.contains(why), "{err}");
        }
    }

    fn listed_tree() -> (Tree, Lists, HashMap<BlobId, Vec<BlobId>>) {
        let whole = ids(b"0123456789");
        let patched = ids(b"0123X56789Y");
        let base_id = BlobId::of(&encode_list(&whole));
        let ops = diff_lists(&whole, &patched).unwrap();
        let mut lists = Lists::new();
        lists.insert(b"dump.sql".to_vec(), ListRef::Patch { base: base_id, ops });
        lists.insert(b"old.sql".to_vec(), ListRef::Whole(base_id));
        let file = |name: &[u8], chunks: Vec<BlobId>| {
            let mut e = entry(name.to_vec(), Node::File { chunks });
            e.size = 100;
            e
        };
        let tree = Tree {
            entries: vec![
                file(b"old.sql", whole.clone()),
                file(b"dump.sql", patched),
                file(b"small", ids(b"s")),
                entry(
                    b"d".to_vec(),
                    Node::Dir {
                        subtree: BlobId::of(b"t"),
                    },
                ),
            ],
        };
        (tree, lists, HashMap::from([(base_id, whole)]))
    }

    /// The entries of `tree` that `lists` does not name.
    fn unlisted(tree: &Tree, lists: &Lists) -> Tree {
        Tree {
            entries: tree
                .entries
                .iter()
                .filter(|e| !lists.contains_key(&e.name))
                .cloned()
                .collect(),
        }
    }

    #[test]
    fn a_tree_with_list_blobs_round_trips_through_its_lists() {
        let (mut tree, lists, blobs) = listed_tree();
        let bytes = tree.encode_with(&lists);
        assert_eq!(bytes[0], TREE_FORMAT_LISTS);
        let stored = StoredTree::decode(&bytes).unwrap();
        let mut loads = 0;
        let (back, back_lists) = stored
            .clone()
            .resolve(|id| {
                loads += 1;
                blobs
                    .get(id)
                    .cloned()
                    .ok_or_else(|| format!("no blob {id}"))
            })
            .unwrap();
        assert_eq!((back, back_lists), (tree.clone(), lists.clone()));
        assert_eq!(loads, 2);
        // Stored canonically: the same tree and lists give the same bytes.
        let mut again = tree.clone();
        assert_eq!(again.encode_with(&lists), bytes);
        // Without its list blobs the tree does not resolve, and says which one it needs.
        let err = Tree::decode(&bytes).unwrap_err();
        assert!(
            err.contains("dump.sql") && err.contains("list blob"),
            "{err}"
        );
        // Lists of names that are not files are not used, and a tree without any is format 1.
        let mut plain = unlisted(&tree, &lists);
        let mut with_dir = lists.clone();
        with_dir.insert(b"d".to_vec(), ListRef::Whole(BlobId::of(b"l")));
        assert_eq!(plain.encode_with(&with_dir), plain.encode());
        assert_eq!(plain.encode()[0], TREE_FORMAT);
        assert_eq!(
            decode_list(&encode_list(&blobs[lists[&b"old.sql".to_vec()].blob()]))
                .unwrap()
                .len(),
            10
        );
    }

    #[test]
    fn a_list_blob_tree_that_lies_is_refused() {
        let (mut tree, lists, blobs) = listed_tree();
        let bytes = tree.encode_with(&lists);
        let mut as_one = bytes.clone();
        as_one[0] = TREE_FORMAT;
        let err = StoredTree::decode(&as_one).unwrap_err();
        assert!(
            err.contains("format 1 tree has a file with a list blob"),
            "{err}"
        );
        let mut plain = unlisted(&tree, &lists);
        let mut as_two = plain.encode();
        as_two[0] = TREE_FORMAT_LISTS;
        let err = StoredTree::decode(&as_two).unwrap_err();
        assert!(err.contains("format 2 tree lacks"), "{err}");
        // More chunks than bytes: a list that cannot be this file's.
        let mut small = tree.clone();
        small.entries.iter_mut().for_each(|e| e.size = 3);
        let err = StoredTree::decode(&small.encode_with(&lists))
            .unwrap()
            .resolve(|id| Ok(blobs[id].clone()))
            .unwrap_err();
        assert!(err.contains("chunks for 3 bytes"), "{err}");
        for bad in [&b""[..], &[2u8][..], &[LIST_FORMAT, 1, 2, 3][..]] {
            assert!(decode_list(bad).is_err(), "{bad:?}");
        }
        // Many small entries naming one big list: bounded by the ids they add up to, not by the
        // tree's own bytes (here 10 + 11 ids against a bound of 20).
        let stored = StoredTree::decode(&tree.encode_with(&lists)).unwrap();
        assert_eq!(tree.listed_ids(&lists), 21);
        assert!(stored
            .clone()
            .resolve_at_most(21, |id| Ok(blobs[id].clone()))
            .is_ok());
        let err = stored
            .resolve_at_most(20, |id| Ok(blobs[id].clone()))
            .unwrap_err();
        assert!(err.contains("more than 20 chunks"), "{err}");
    }

    #[test]
    fn hostile_names_are_rejected() {
        for bad in [&b""[..], b".", b"..", b"a/b", b"/etc", b"a\0b"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        check_name(b"ok \xff name").unwrap();
    }
}
