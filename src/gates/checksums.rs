//! Gate 2, `checksums`: the manifest's sha256 matches its id (checked by parsing it), and every
//! tree and chunk it references is in the index, inside a pack that exists with the recorded size.
//! With `deep`, every referenced blob is read back and re-hashed.
//!
//! Memory: the walk remembers the trees it has checked (one per directory) and the blobs found
//! bad, not every chunk: checking a chunk again is two map lookups, and a set of every chunk
//! id was the largest thing a snapshot of a million small files held (about 90 bytes a chunk).
//! Only `deep`, which would otherwise read a shared chunk once per reference, remembers them all,
//! in an [`IdSet`] (32–45 bytes an id).

use std::collections::HashSet;

use super::{Gate, GateInput, GateResult};
use crate::id::{BlobId, IdSet};
use crate::tree::Node;

/// See the module doc.
pub struct ChecksumsGate;

impl Gate for ChecksumsGate {
    fn name(&self) -> &'static str {
        "checksums"
    }

    fn check(&self, input: &GateInput<'_>) -> GateResult {
        let manifest = match super::manifest_of(input) {
            Ok(m) => m,
            Err(reason) => return GateResult::from_reasons(self.name(), vec![reason]),
        };
        let mut walk = Walk {
            input,
            trees: HashSet::new(),
            read: IdSet::default(),
            bad: HashSet::new(),
            reasons: Vec::new(),
        };
        walk.tree(&manifest.tree, "");
        GateResult::from_reasons(self.name(), walk.reasons)
    }
}

struct Walk<'a, 'b> {
    input: &'a GateInput<'b>,
    /// Trees checked (and walked, or found bad).
    trees: HashSet<BlobId>,
    /// Blobs read back and found good (`deep` only).
    read: IdSet,
    /// Blobs found bad, reported once.
    bad: HashSet<BlobId>,
    reasons: Vec<String>,
}

impl Walk<'_, '_> {
    /// Checks one blob reference; false when it is newly found not safely stored.
    /// A blob already found bad is not reported again and does not stop the caller either: a
    /// file's later chunks are still checked, as when every checked blob was remembered.
    fn blob(&mut self, id: &BlobId, path: &str) -> bool {
        if self.bad.contains(id) {
            return true;
        }
        if self.read.contains(id) {
            return true;
        }
        let good = self.check(id, path);
        if !good {
            self.bad.insert(*id);
        } else if self.input.deep {
            self.read.insert(*id);
        }
        good
    }

    fn check(&mut self, id: &BlobId, path: &str) -> bool {
        let shown = if path.is_empty() { "/" } else { path };
        let Some(loc) = self.input.reader.location(id) else {
            self.reasons
                .push(format!("{shown}: blob {id} is not in the index"));
            return false;
        };
        match (
            self.input.packs_on_disk.get(&loc.pack),
            self.input.packs_indexed.get(&loc.pack),
        ) {
            (None, _) => {
                self.reasons.push(format!(
                    "{shown}: pack {} of blob {id} is missing",
                    loc.pack
                ));
                return false;
            }
            (Some(disk), Some(recorded)) if disk != recorded => {
                self.reasons.push(format!(
                    "{shown}: pack {} is {disk} bytes, recorded {recorded}",
                    loc.pack
                ));
                return false;
            }
            _ => {}
        }
        if self.input.deep {
            if let Err(e) = self.input.reader.read(id) {
                self.reasons.push(format!("{shown}: {}", e.full()));
                return false;
            }
        }
        true
    }

    fn tree(&mut self, id: &BlobId, path: &str) {
        if !self.trees.insert(*id) || !self.blob(id, path) {
            return;
        }
        let tree = match self.input.reader.tree_lists(id) {
            Ok((t, lists)) => {
                for (name, list) in &lists {
                    let file = format!("{path}/{}", crate::util::display_name(name));
                    self.blob(list.blob(), file.trim_start_matches('/'));
                }
                t
            }
            Err(e) => {
                self.reasons.push(format!(
                    "{}: {}",
                    if path.is_empty() { "/" } else { path },
                    e.full()
                ));
                return;
            }
        };
        for e in &tree.entries {
            let child = format!("{path}/{}", crate::util::display_name(&e.name));
            let child = child.trim_start_matches('/');
            match &e.node {
                Node::Dir { subtree } => self.tree(subtree, child),
                Node::File { chunks } => {
                    for c in chunks {
                        if !self.blob(c, child) {
                            break;
                        }
                    }
                }
                Node::Symlink { .. } => {}
            }
        }
    }
}
