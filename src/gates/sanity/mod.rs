//! Gate 4, `sanity`: the snapshot holds working repositories and lockfiles, and does not look like
//! ransomware or a runaway script went through it.
//!
//! - **git**: every `.git` directory in a tree has a HEAD that resolves to a commit whose object
//!   (and root tree object) exists and reads ([`git`]).
//! - **lockfiles**: every lockfile parses as its format ([`lockfile`]). Lockfiles below
//!   `node_modules` belong to dependencies and are not checked.
//! - **dump sources**: every stream's source succeeded (a command's exit status, SQLite's
//!   `integrity_check` on the backup copy), as the manifest records.
//! - **mass change**, against a baseline snapshot of the same paths (`mass.rs`).
//!
//! Everything is read from the vault, so `vault gate` gives the same verdict later.
//!
//! A lockfile check depends on nothing but the lockfile's bytes, so a pass is remembered in the
//! index under a key of the check's version and the file's chunk ids ([`lockfile_pass_key`]):
//! an unchanged lockfile is parsed once, not on every snapshot and again at its promotion
//! (332 `Cargo.lock` files, 4.6 MB of TOML, were a third of an unchanged re-snapshot's CPU).
//! Failures are never remembered: a broken lockfile is reported each time with its reason.

pub mod git;
pub mod lockfile;
mod mass;

use std::cell::RefCell;
use std::collections::HashMap;

use super::{manifest_of, Gate, GateInput, GateResult};
use crate::id::BlobId;
use crate::stored::{self, Visit};
use crate::tree::{Entry, Node, Tree};
use crate::util::display_name;
use crate::vault::BlobReader;

/// Largest lockfile read; a bigger one is reported rather than read.
const LOCKFILE_MAX_BYTES: u64 = 256 * 1024 * 1024;

/// See the module doc.
pub struct SanityGate;

impl Gate for SanityGate {
    fn name(&self) -> &'static str {
        "sanity"
    }

    fn check(&self, input: &GateInput<'_>) -> GateResult {
        let manifest = match manifest_of(input) {
            Ok(m) => m,
            Err(reason) => return GateResult::from_reasons(self.name(), vec![reason]),
        };
        let settings = &input.settings.sanity;
        let mut reasons = Vec::new();
        let index = input.vault.index();
        let mut passed = Vec::new();
        if settings.git || settings.lockfiles {
            let walked = stored::walk(input.reader, &manifest.tree, |path, e| {
                match &e.node {
                    Node::Dir { subtree } if e.name == b".git" => {
                        if settings.git {
                            let repo = StoredGitDir::new(input.reader, *subtree);
                            for p in git::check_repo(&repo) {
                                reasons.push(format!("{}: {p}", display_name(path)));
                            }
                        }
                        return Ok(Visit::Skip);
                    }
                    Node::Dir { .. } if e.name == b"node_modules" => return Ok(Visit::Skip),
                    Node::File { chunks } if settings.lockfiles => {
                        if let Some(kind) = lockfile::kind_of(&e.name) {
                            let key = lockfile_pass_key(kind, chunks);
                            if index.has_passed(&key) {
                                return Ok(Visit::Descend);
                            }
                            let checked =
                                stored::read_file(input.reader, chunks, LOCKFILE_MAX_BYTES)
                                    .map_err(|err| err.full())
                                    .and_then(|bytes| lockfile::check(kind, &bytes));
                            match checked {
                                Ok(()) => passed.push(key),
                                Err(why) => reasons.push(format!(
                                    "{}: broken lockfile: {why}",
                                    display_name(path)
                                )),
                            }
                        }
                    }
                    _ => {}
                }
                Ok(Visit::Descend)
            });
            if let Err(e) = walked {
                reasons.push(format!("cannot walk the snapshot: {}", e.full()));
            }
        }
        // Only a cache: a failure to record costs a re-check next time, not the verdict.
        let _ = index.record_passes(&passed);
        // A dump source that failed (non-zero exit, failed integrity_check) makes its stream
        // untrustworthy, however well it was stored.
        for st in manifest.streams.iter().filter(|st| !st.ok) {
            reasons.push(format!(
                "source {} ({}) failed: {}",
                st.source,
                st.kind,
                st.problems.join("; ")
            ));
        }
        // A plain pg_dump that exited 0 but lacks its completion trailer was cut short; so was
        // one piped in (`pg_dump | vault snapshot --stdin`), whose exit status is unknown.
        for st in manifest.streams.iter().filter(|st| st.ok) {
            if let Err(why) = pg_trailer(input, &manifest, &st.path, st.kind == "postgres-plain") {
                reasons.push(format!("source {}: {why}", st.source));
            }
        }
        mass::check(input, &manifest, settings, &mut reasons);
        GateResult::from_reasons(self.name(), reasons)
    }
}

/// The index key under which a pass of [`lockfile::check`] on a file of `kind` made of `chunks`
/// is remembered. Chunk ids are hashes of the content (keyed per vault), so the same key means
/// the same bytes; the check's version is in the key, so a stricter check never trusts an older
/// pass.
pub fn lockfile_pass_key(kind: lockfile::LockKind, chunks: &[BlobId]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key("atlasvault 2026-11 lockfile check passed");
    h.update(&lockfile::CHECK_VERSION.to_le_bytes());
    h.update(env!("CARGO_PKG_VERSION").as_bytes());
    h.update(kind.file_name().as_bytes());
    h.update(&(chunks.len() as u64).to_le_bytes());
    for c in chunks {
        h.update(&c.0);
    }
    *h.finalize().as_bytes()
}

/// A repository's `.git` directory as stored in the snapshot.
struct StoredGitDir<'a> {
    reader: &'a BlobReader,
    root: BlobId,
    trees: RefCell<HashMap<BlobId, Tree>>,
}

impl<'a> StoredGitDir<'a> {
    fn new(reader: &'a BlobReader, root: BlobId) -> Self {
        StoredGitDir {
            reader,
            root,
            trees: RefCell::new(HashMap::new()),
        }
    }

    fn tree(&self, id: &BlobId) -> crate::error::Result<Tree> {
        if let Some(t) = self.trees.borrow().get(id) {
            return Ok(t.clone());
        }
        let t = self.reader.tree(id)?;
        self.trees.borrow_mut().insert(*id, t.clone());
        Ok(t)
    }

    /// The entry at `rel` (`/`-separated), or `None`.
    fn entry(&self, rel: &str) -> Result<Option<Entry>, String> {
        stored::lookup_with(&self.root, rel, |id| self.tree(id)).map_err(|e| e.full())
    }

    fn chunks(&self, rel: &str) -> Result<Option<Vec<BlobId>>, String> {
        Ok(match self.entry(rel)? {
            Some(Entry {
                node: Node::File { chunks },
                ..
            }) => Some(chunks),
            _ => None,
        })
    }
}

impl git::GitDir for StoredGitDir<'_> {
    fn read(&self, rel: &str) -> Result<Option<Vec<u8>>, String> {
        match self.chunks(rel)? {
            None => Ok(None),
            Some(c) => stored::read_file(self.reader, &c, LOCKFILE_MAX_BYTES)
                .map(Some)
                .map_err(|e| e.full()),
        }
    }

    fn read_range(&self, rel: &str, offset: u64, len: usize) -> Result<Option<Vec<u8>>, String> {
        match self.chunks(rel)? {
            None => Ok(None),
            Some(c) => stored::read_range(self.reader, &c, offset, len)
                .map(Some)
                .map_err(|e| e.full()),
        }
    }

    fn size(&self, rel: &str) -> Result<Option<u64>, String> {
        match self.chunks(rel)? {
            None => Ok(None),
            Some(c) => stored::file_len(self.reader, &c)
                .map(Some)
                .map_err(|e| e.full()),
        }
    }

    fn list(&self, rel: &str) -> Result<Vec<String>, String> {
        let dir = if rel.split('/').all(|p| p.is_empty()) {
            Some(self.root)
        } else {
            match self.entry(rel)? {
                Some(Entry {
                    node: Node::Dir { subtree },
                    ..
                }) => Some(subtree),
                _ => None,
            }
        };
        Ok(match dir {
            None => Vec::new(),
            Some(id) => self
                .tree(&id)
                .map_err(|e| e.full())?
                .entries
                .iter()
                .map(|e| display_name(&e.name))
                .collect(),
        })
    }
}

/// Checks that a stored plain dump ends with pg_dump's completion trailer. A stream not known to
/// be one is checked only when it starts like one.
fn pg_trailer(
    input: &GateInput<'_>,
    manifest: &crate::manifest::Manifest,
    path: &str,
    known_plain_dump: bool,
) -> Result<(), String> {
    const TAIL: u64 = 256;
    const HEAD: usize = 64;
    let entry = stored::lookup(input.reader, &manifest.tree, path).map_err(|e| e.full())?;
    let Some(Entry {
        node: Node::File { chunks },
        ..
    }) = entry
    else {
        return Err(format!("{path} is missing from the snapshot"));
    };
    if !known_plain_dump {
        let head = stored::read_range(input.reader, &chunks, 0, HEAD).map_err(|e| e.full())?;
        if !String::from_utf8_lossy(&head).contains("-- PostgreSQL database dump") {
            return Ok(());
        }
    }
    let len = stored::file_len(input.reader, &chunks).map_err(|e| e.full())?;
    let tail = stored::read_range(
        input.reader,
        &chunks,
        len.saturating_sub(TAIL),
        TAIL as usize,
    )
    .map_err(|e| e.full())?;
    let text = String::from_utf8_lossy(&tail);
    if text.contains(crate::stream::PG_DUMP_TRAILER) {
        Ok(())
    } else {
        Err(format!(
            "{path} lacks pg_dump's completion trailer (\"{}\"): the dump was cut short",
            crate::stream::PG_DUMP_TRAILER
        ))
    }
}
