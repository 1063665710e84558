//! The mass-change check of the `sanity` gate: the ransomware and runaway-script signal.
//!
//! Each source tree is compared with the same tree in a *baseline* snapshot: the nearest ancestor
//! (through `parent` links) whose recorded gates all passed. Comparing with the plain parent would
//! let the second snapshot after an attack pass, since nothing changed since the first, rejected
//! one. The check fails, naming counts and examples, when
//! - more than `mass_change_percent` of the baseline's files changed content and more than
//!   `high_entropy_percent` of them (judged on a sample of up to [`ENTROPY_SAMPLE`] files) went
//!   from low to high entropy, i.e. look encrypted now;
//! - the tree lost more than `mass_loss_percent` of its files or of its bytes;
//! - a previously non-empty file matching `depended_on` is now 0 bytes.
//!
//! The two share checks skip trees with fewer than `min_files` files in the baseline. Identical
//! subtrees (same tree id) are counted once and not compared entry by entry. A tree with a blob
//! that cannot be read is not compared: the `checksums` gate fails the snapshot for its own
//! damage, and `vault verify` reports the baseline's.

use std::collections::HashMap;
use std::path::Path;

use globset::{GlobSet, GlobSetBuilder};

use crate::config::SanitySettings;
use crate::gates::{self, GateInput};
use crate::id::{BlobId, SnapshotId};
use crate::manifest::Manifest;
use crate::stored::{self, is_high_entropy};
use crate::tree::{Entry, Node, Tree};
use crate::util::{display_name, os_str};

/// Changed files whose entropy is measured, at most.
const ENTROPY_SAMPLE: usize = 256;
/// Bytes of a file's first chunk that its entropy is measured on.
const ENTROPY_BYTES: usize = 64 * 1024;
/// Examples named per finding.
const EXAMPLES: usize = 5;
/// Parent links followed looking for a baseline.
const BASELINE_DEPTH_MAX: usize = 10_000;

/// Runs the check, appending reasons.
pub fn check(
    input: &GateInput<'_>,
    manifest: &Manifest,
    settings: &SanitySettings,
    reasons: &mut Vec<String>,
) {
    let Some((base_id, base)) = baseline(input, manifest) else {
        return; // the first snapshot of these paths, or its ancestors are gone
    };
    let depended = match depended_on(&settings.depended_on) {
        Ok(d) => d,
        Err(e) => {
            reasons.push(e);
            return;
        }
    };
    let (Ok(base_top), Ok(now_top)) = (
        input.reader.tree(&base.tree),
        input.reader.tree(&manifest.tree),
    ) else {
        return; // as below: unreadable trees are the checksums gate's and verify's findings
    };
    for now in &now_top.entries {
        let Some(before) = base_top.get(&now.name) else {
            continue;
        };
        let mut diff = Diff {
            reader: input.reader,
            depended: &depended,
            counts: HashMap::new(),
            d: Default::default(),
        };
        let root = display_name(&now.name);
        let rel: &[u8] = match now.node {
            Node::File { .. } => &now.name,
            _ => b"",
        };
        if diff.entries(&root, rel, before, now).is_err() {
            // A blob that cannot be read: the current snapshot's fail the checksums gate, the
            // baseline's are verify's business. Either way this tree cannot be compared.
            continue;
        }
        judge(input, &root, &base_id, &diff.d, settings, reasons);
    }
}

/// The nearest ancestor whose recorded gates all passed, or that is the last-known-good (a
/// snapshot from before the gates, with none recorded, counts as passed). Safety snapshots are
/// never baselines.
fn baseline(input: &GateInput<'_>, manifest: &Manifest) -> Option<(SnapshotId, Manifest)> {
    // A snapshot promoted later (`vault promote` after a threshold was raised) passed too,
    // though its recorded results say otherwise: the current last-known-good counts.
    let lkg = crate::lkg::read(input.vault)
        .ok()
        .flatten()
        .map(|r| r.snapshot);
    let mut next = manifest.parent;
    for _ in 0..BASELINE_DEPTH_MAX {
        let id = next?;
        let m = input.vault.manifest(&id).ok()?;
        let passed = m.gates.as_ref().is_none_or(|g| gates::all_passed(g)) || lkg == Some(id);
        if passed && !m.safety {
            return Some((id, m));
        }
        next = m.parent;
    }
    None
}

fn depended_on(globs: &[String]) -> Result<GlobSet, String> {
    let mut b = GlobSetBuilder::new();
    for g in globs {
        let mut add = |pattern: &str| -> Result<(), String> {
            b.add(
                globset::GlobBuilder::new(pattern)
                    .literal_separator(true)
                    .build()
                    .map_err(|e| format!("depended_on glob {g:?}: {e}"))?,
            );
            Ok(())
        };
        if g.contains('/') {
            add(g)?;
            add(&format!("**/{g}"))?;
        } else {
            add(&format!("**/{g}"))?;
            add(g)?;
        }
    }
    b.build().map_err(|e| format!("depended_on globs: {e}"))
}

/// What changed in one source tree.
#[derive(Default)]
struct Delta {
    base_files: u64,
    base_bytes: u64,
    now_files: u64,
    now_bytes: u64,
    lost_files: u64,
    lost_examples: Vec<String>,
    /// (path, first chunk before, first chunk now) of every file whose content changed.
    changed: Vec<(String, Option<BlobId>, Option<BlobId>)>,
    /// (path, size before) of depended-on files now empty.
    truncated: Vec<(String, u64)>,
}

struct Diff<'a> {
    reader: &'a crate::vault::BlobReader,
    depended: &'a GlobSet,
    /// (files, bytes) per tree id, for subtrees counted whole.
    counts: HashMap<BlobId, (u64, u64)>,
    d: Delta,
}

impl Diff<'_> {
    /// Compares one entry with its baseline (`rel` is its path below the source root).
    fn entries(
        &mut self,
        shown: &str,
        rel: &[u8],
        before: &Entry,
        now: &Entry,
    ) -> crate::error::Result<()> {
        match (&before.node, &now.node) {
            (Node::Dir { subtree: a }, Node::Dir { subtree: b }) if a == b => {
                let (f, n) = self.count(a)?;
                self.d.base_files += f;
                self.d.now_files += f;
                self.d.base_bytes += n;
                self.d.now_bytes += n;
            }
            (Node::Dir { subtree: a }, Node::Dir { subtree: b }) => {
                let (ta, tb) = (self.reader.tree(a)?, self.reader.tree(b)?);
                self.trees(shown, rel, &ta, &tb)?;
            }
            (Node::File { chunks: a }, Node::File { chunks: b }) => {
                self.d.base_files += 1;
                self.d.now_files += 1;
                self.d.base_bytes += before.size;
                self.d.now_bytes += now.size;
                if a != b {
                    self.d.changed.push((
                        shown.to_string(),
                        a.first().copied(),
                        b.first().copied(),
                    ));
                }
                if before.size > 0
                    && now.size == 0
                    && self.depended.is_match(Path::new(os_str(rel)))
                {
                    self.d.truncated.push((shown.to_string(), before.size));
                }
            }
            _ => {
                self.gone(shown, before)?;
                self.added(now)?;
            }
        }
        Ok(())
    }

    fn trees(&mut self, shown: &str, rel: &[u8], a: &Tree, b: &Tree) -> crate::error::Result<()> {
        let (mut i, mut j) = (0, 0);
        while i < a.entries.len() || j < b.entries.len() {
            let ea = a.entries.get(i);
            let eb = b.entries.get(j);
            match (ea, eb) {
                (Some(x), Some(y)) if x.name == y.name => {
                    let shown = format!("{shown}/{}", display_name(&x.name));
                    let rel = stored::join(rel, &x.name);
                    self.entries(&shown, &rel, x, y)?;
                    i += 1;
                    j += 1;
                }
                (Some(x), Some(y)) if x.name < y.name => {
                    self.gone(&format!("{shown}/{}", display_name(&x.name)), x)?;
                    i += 1;
                }
                (Some(x), None) => {
                    self.gone(&format!("{shown}/{}", display_name(&x.name)), x)?;
                    i += 1;
                }
                (_, Some(y)) => {
                    self.added(y)?;
                    j += 1;
                }
                (None, None) => break,
            }
        }
        Ok(())
    }

    /// An entry of the baseline that is no longer there.
    fn gone(&mut self, shown: &str, e: &Entry) -> crate::error::Result<()> {
        let (f, n) = self.size_of(e)?;
        self.d.base_files += f;
        self.d.base_bytes += n;
        self.d.lost_files += f;
        if f > 0 && self.d.lost_examples.len() < EXAMPLES {
            self.d.lost_examples.push(shown.to_string());
        }
        Ok(())
    }

    fn added(&mut self, e: &Entry) -> crate::error::Result<()> {
        let (f, n) = self.size_of(e)?;
        self.d.now_files += f;
        self.d.now_bytes += n;
        Ok(())
    }

    fn size_of(&mut self, e: &Entry) -> crate::error::Result<(u64, u64)> {
        match &e.node {
            Node::File { .. } => Ok((1, e.size)),
            Node::Dir { subtree } => self.count(subtree),
            Node::Symlink { .. } => Ok((0, 0)),
        }
    }

    /// Files and bytes below a tree, counted once per tree id.
    fn count(&mut self, id: &BlobId) -> crate::error::Result<(u64, u64)> {
        if let Some(c) = self.counts.get(id) {
            return Ok(*c);
        }
        let tree = self.reader.tree(id)?;
        let mut total = (0, 0);
        for e in &tree.entries {
            let (f, n) = self.size_of(e)?;
            total.0 += f;
            total.1 += n;
        }
        self.counts.insert(*id, total);
        Ok(total)
    }
}

fn judge(
    input: &GateInput<'_>,
    root: &str,
    base_id: &SnapshotId,
    d: &Delta,
    s: &SanitySettings,
    reasons: &mut Vec<String>,
) {
    let base = base_id.short();
    let over = |part: u64, whole: u64, percent: u8| part * 100 > whole * u64::from(percent);
    for (path, was) in &d.truncated {
        reasons.push(format!(
            "{path}: truncated to 0 bytes (was {was} bytes in {base}), and other files depend on it"
        ));
    }
    if d.base_files < s.min_files {
        return;
    }
    if over(d.lost_files, d.base_files, s.mass_loss_percent) {
        reasons.push(format!(
            "{root}: mass deletion: {} of {} files are gone since {base} ({}%), e.g. {}",
            d.lost_files,
            d.base_files,
            d.lost_files * 100 / d.base_files,
            d.lost_examples.join(", ")
        ));
    }
    let lost_bytes = d.base_bytes.saturating_sub(d.now_bytes);
    if d.base_bytes > 0 && over(lost_bytes, d.base_bytes, s.mass_loss_percent) {
        reasons.push(format!(
            "{root}: mass loss: {} of {} bytes are gone since {base} ({}%)",
            lost_bytes,
            d.base_bytes,
            lost_bytes * 100 / d.base_bytes
        ));
    }
    let changed = d.changed.len() as u64;
    if !over(changed, d.base_files, s.mass_change_percent) {
        return;
    }
    // An even sample of the changed files: did they go from low to high entropy?
    let step = d.changed.len().div_ceil(ENTROPY_SAMPLE).max(1);
    let first = |id: &Option<BlobId>| -> Option<bool> {
        match id {
            None => Some(false),
            Some(id) => input.reader.read(id).ok().map(|data| {
                let sample = &data[..data.len().min(ENTROPY_BYTES)];
                is_high_entropy(sample)
            }),
        }
    };
    let (mut judged, mut became, mut examples) = (0u64, 0u64, Vec::new());
    for (path, before, now) in d.changed.iter().step_by(step) {
        let (Some(was_high), Some(is_high)) = (first(before), first(now)) else {
            continue;
        };
        judged += 1;
        if is_high && !was_high {
            became += 1;
            if examples.len() < EXAMPLES {
                examples.push(path.as_str());
            }
        }
    }
    if judged > 0 && over(became, judged, s.high_entropy_percent) {
        reasons.push(format!(
            "{root}: mass change: {changed} of {} files changed since {base} ({}%), and {became} of \
             {judged} sampled went from low to high entropy (encrypted?), e.g. {}",
            d.base_files,
            changed * 100 / d.base_files,
            examples.join(", ")
        ));
    }
}
