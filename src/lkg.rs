//! Last-known-good: `refs/last-known-good.json`, the vault's only mutable object.
//!
//! A snapshot is promoted only when every gate passes on the manifest as stored; the ref is then
//! replaced atomically with the snapshot id, the time and the gate results. A snapshot that fails
//! a gate is kept (and listed as rejected) but never promoted, and the previous LKG stays. There
//! is no way to promote without running the gates: [`promote`] runs them all, and
//! [`promote_checked`], for a snapshot the same process has just taken and gated under the same
//! writer lock, runs the manifest gate again on the stored file and keeps the others' results.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::audit::AuditRecord;
use crate::crypto::{Crypto, Domain};
use crate::error::{Error, IoContext, Result};
use crate::fsutil;
use crate::gates::{self, GateInput, GateResult};
use crate::id::SnapshotId;
use crate::vault::Vault;

/// Largest ref file accepted.
const REF_MAX_BYTES: u64 = 1024 * 1024;

/// The content of `refs/last-known-good.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LkgRef {
    pub snapshot: SnapshotId,
    pub promoted_at: String,
    pub gates: Vec<GateResult>,
}

/// Where the ref lives.
pub fn ref_path(vault_root: &Path) -> PathBuf {
    vault_root.join("refs").join("last-known-good.json")
}

/// What the ref's seal is bound to.
const REF_CONTEXT: &[u8] = b"refs/last-known-good.json";

/// Reads the ref; `None` when nothing has been promoted yet.
pub fn read(vault: &Vault) -> Result<Option<LkgRef>> {
    let path = ref_path(vault.root());
    let len = match std::fs::metadata(&path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, e)),
    };
    if len > REF_MAX_BYTES {
        return Err(Error::corrupt(
            format!("ref {}", path.display()),
            "too large",
        ));
    }
    let stored = std::fs::read(&path).at(&path)?;
    parse_ref(vault.crypto(), &stored)
        .map(Some)
        .map_err(|r| Error::corrupt(format!("ref {}", path.display()), r))
}

/// Decodes a ref file's stored bytes (opened first, in an encrypted vault): the decoder of
/// untrusted bytes behind [`read`], also fuzzed (`fuzz/fuzz_targets/lkgref.rs`).
pub fn parse_ref(crypto: &Crypto, stored: &[u8]) -> std::result::Result<LkgRef, String> {
    let bytes = crypto.open_json(Domain::Ref, REF_CONTEXT, stored)?;
    serde_json::from_slice(&bytes).map_err(|e| e.to_string())
}

/// What [`parse_ref`] reads back: the ref's stored bytes.
pub fn seal_ref(crypto: &Crypto, lkg: &LkgRef) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(lkg).expect("invariant: a ref serializes");
    bytes.push(b'\n');
    crypto.seal_json(Domain::Ref, REF_CONTEXT, bytes)
}

/// Runs every gate on a snapshot as it is stored now.
pub fn evaluate(vault: &Vault, id: &SnapshotId, deep: bool) -> Result<Vec<GateResult>> {
    let bytes = stored_manifest(vault, id)?;
    evaluate_bytes(vault, id, bytes.as_deref().map_err(Clone::clone), deep)
}

/// A manifest's stored bytes, or why a gate cannot have them (missing, or it does not open).
fn stored_manifest(vault: &Vault, id: &SnapshotId) -> Result<std::result::Result<Vec<u8>, String>> {
    Ok(match vault.manifest_bytes(id) {
        Ok(Some(b)) => Ok(b),
        Ok(None) => Err("missing".to_string()),
        Err(e @ (Error::Corrupt { .. } | Error::Missing { .. })) => Err(e.full()),
        Err(e) => return Err(e),
    })
}

/// Runs every gate on manifest bytes (before or after they are written).
pub fn evaluate_bytes(
    vault: &Vault,
    id: &SnapshotId,
    bytes: std::result::Result<&[u8], String>,
    deep: bool,
) -> Result<Vec<GateResult>> {
    let reader = vault.blob_reader()?;
    let packs_on_disk = vault.pack_files()?;
    let packs_indexed = vault.index().packs()?;
    Ok(gates::run_all(&GateInput {
        id: *id,
        manifest_bytes: bytes,
        reader: &reader,
        packs_on_disk: &packs_on_disk,
        packs_indexed: &packs_indexed,
        deep,
        vault,
        settings: &vault.config.gates,
    }))
}

/// The outcome of a promotion attempt.
#[derive(Debug, Clone, Serialize)]
pub struct Promotion {
    pub snapshot: SnapshotId,
    pub promoted: bool,
    pub gates: Vec<GateResult>,
    /// The LKG before this attempt.
    pub previous: Option<SnapshotId>,
}

/// Re-runs the gates on `id` and moves the LKG to it only if all pass. Needs a writer lock.
pub fn promote(vault: &Vault, id: &SnapshotId) -> Result<Promotion> {
    refuse_safety(vault, id)?;
    let results = evaluate(vault, id, false)?;
    promote_with(vault, id, results)
}

/// Promotes a snapshot this process has just taken, still under the writer lock it was taken
/// with: `checked` are the gate results [`crate::snapshot::snapshot`] computed on its sealed
/// manifest a moment before writing it. Only the `manifest` gate runs again, on the file as
/// stored; when it passes, the stored manifest is the one checked (its sha256 is its id), so the
/// other gates would walk the same trees and blobs, indexed and packed as they were under the
/// same lock, and their results stand. Results that are not one per gate, in order, fall back
/// to [`promote`].
pub fn promote_checked(
    vault: &Vault,
    id: &SnapshotId,
    checked: &[GateResult],
) -> Result<Promotion> {
    let names: Vec<&str> = gates::default_gates().iter().map(|g| g.name()).collect();
    let complete =
        checked.len() == names.len() && checked.iter().zip(&names).all(|(r, n)| r.gate == *n);
    if !complete {
        return promote(vault, id);
    }
    refuse_safety(vault, id)?;
    let bytes = stored_manifest(vault, id)?;
    let fresh = gates::manifest::check_bytes(id, bytes.as_deref().map_err(Clone::clone));
    let results = checked
        .iter()
        .map(|r| if r.gate == fresh.gate { &fresh } else { r }.clone())
        .collect();
    promote_with(vault, id, results)
}

fn refuse_safety(vault: &Vault, id: &SnapshotId) -> Result<()> {
    if vault.manifest(id).is_ok_and(|m| m.safety) {
        return Err(Error::Invalid(format!(
            "snapshot {id} is a safety snapshot (taken before a restore overwrote its target); \
             safety snapshots are never promoted"
        )));
    }
    Ok(())
}

/// Moves the LKG to `id` when every one of `results` passed, and audits the decision.
fn promote_with(vault: &Vault, id: &SnapshotId, results: Vec<GateResult>) -> Result<Promotion> {
    let previous = read(vault)?.map(|r| r.snapshot);
    let promoted = gates::all_passed(&results);
    if promoted {
        let r = LkgRef {
            snapshot: *id,
            promoted_at: crate::util::now_rfc3339(),
            gates: results.clone(),
        };
        let stored = seal_ref(vault.crypto(), &r);
        fsutil::create_dir_durable(&vault.root().join("refs"))?;
        fsutil::atomic_write(&ref_path(vault.root()), &stored)?;
    }
    let failed: Vec<&str> = results
        .iter()
        .filter(|r| !r.passed)
        .map(|r| r.gate.as_str())
        .collect();
    vault.audit(
        &AuditRecord::new(
            "promote",
            Some(id.to_hex()),
            if promoted { "ok" } else { "rejected" },
        )
        .with_detail(serde_json::json!({"gates": results, "failed": failed, "previous": previous})),
    )?;
    Ok(Promotion {
        snapshot: *id,
        promoted,
        gates: results,
        previous,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ChunkerParams;
    use crate::keys::SecretSource;
    use crate::lock::LockMode;
    use crate::progress::Progress;
    use crate::snapshot::{snapshot, SnapshotOptions};

    /// A plain vault and a fresh snapshot of a small tree, not promoted.
    fn snapshotted(tmp: &Path) -> (Vault, crate::snapshot::SnapshotOutcome) {
        let data = tmp.join("data");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("a.txt"), b"hello\n").unwrap();
        let root = tmp.join("vault");
        Vault::init(&root, ChunkerParams::default(), None).unwrap();
        let mut v = Vault::open(&root, LockMode::Append, None, &SecretSource::default()).unwrap();
        let opts = SnapshotOptions {
            paths: vec![data],
            ..Default::default()
        };
        let done = snapshot(&mut v, &opts, &Progress::hidden()).unwrap();
        (v, done)
    }

    #[test]
    fn promote_checked_reuses_the_snapshots_results_but_rechecks_the_stored_manifest() {
        let tmp = tempfile::tempdir().unwrap();
        let (v, done) = snapshotted(tmp.path());
        let checked = done.manifest.gates.clone().unwrap();
        assert!(gates::all_passed(&checked));
        assert_eq!(checked, evaluate(&v, &done.id, false).unwrap());

        // A result the snapshot saw failing is not run again: the snapshot is not promoted.
        let mut failed = checked.clone();
        failed[2] = GateResult::from_reasons(&failed[2].gate, vec!["planted".into()]);
        let p = promote_checked(&v, &done.id, &failed).unwrap();
        assert!(!p.promoted && p.gates == failed, "{p:?}");
        assert_eq!(read(&v).unwrap(), None);

        // Results that are not one per gate fall back to running every gate.
        let p = promote_checked(&v, &done.id, &checked[..2]).unwrap();
        assert!(p.promoted && p.gates == checked, "{p:?}");

        // The stored manifest is checked afresh: damaged on disk, it fails the manifest gate.
        let path = v.snapshots_dir().join(format!("{}.json", done.id));
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let p = promote_checked(&v, &done.id, &checked).unwrap();
        assert!(!p.promoted, "{p:?}");
        assert!(!p.gates[0].passed && p.gates[0].gate == "manifest", "{p:?}");
        assert_eq!(
            read(&v).unwrap().unwrap().snapshot,
            done.id,
            "the LKG stays"
        );
    }
}
