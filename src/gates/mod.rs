//! Anti-corruption gates: the checks a snapshot must pass before it may become last-known-good.
//!
//! A gate is one small named check behind [`Gate`]; adding one is adding a file here and a line in
//! [`default_gates`]. Gates read the manifest as stored (its bytes) and the vault through a
//! [`BlobReader`]; they write nothing but the sanity gate's cache of lockfiles that passed (in the
//! index, keyed by content). Their results are recorded in the manifest at snapshot time, in the
//! audit log, and in `refs/last-known-good.json` when the snapshot is promoted (see
//! [`crate::lkg`]).

mod checksums;
pub mod manifest;
pub mod sanity;
mod template_only;

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::config::GateSettings;
use crate::id::{PackId, SnapshotId};
use crate::manifest::Manifest;
use crate::vault::{BlobReader, Vault};

pub use checksums::ChecksumsGate;
pub use manifest::ManifestGate;
pub use sanity::SanityGate;
pub use template_only::TemplateOnlyGate;

/// Reasons kept per failed gate; the rest are counted.
const REASONS_MAX: usize = 20;

/// What a gate looks at.
pub struct GateInput<'a> {
    /// The snapshot the manifest claims to be.
    pub id: SnapshotId,
    /// The manifest's JSON as stored (opened, in an encrypted vault), or why there is none: it is
    /// missing, or it does not open.
    pub manifest_bytes: Result<&'a [u8], String>,
    pub reader: &'a BlobReader,
    /// Every pack file on disk with its size.
    pub packs_on_disk: &'a HashMap<PackId, u64>,
    /// Every indexed pack with its recorded size.
    pub packs_indexed: &'a HashMap<PackId, u64>,
    /// Re-read and re-hash every blob.
    pub deep: bool,
    /// The vault (for the manifests of earlier snapshots).
    pub vault: &'a Vault,
    pub settings: &'a GateSettings,
}

/// The manifest a gate judges, parsed and checked against the id; the reason when it cannot be.
///
/// Gates after `manifest` call this and fail with the reason, so every gate fails on a manifest
/// that is missing or wrong rather than passing vacuously.
pub fn manifest_of(input: &GateInput<'_>) -> Result<Manifest, String> {
    match input.manifest_bytes.as_ref().map(|b| Manifest::parse(b)) {
        Err(why) => Err(format!("no manifest to check: {why}")),
        Ok(Err(e)) => Err(format!("manifest does not parse: {e}")),
        Ok(Ok((id, _))) if id != input.id => Err(format!("manifest is snapshot {id}")),
        Ok(Ok((_, m))) => Ok(m),
    }
}

/// One gate's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateResult {
    pub gate: String,
    pub passed: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
}

impl GateResult {
    /// A verdict from a list of reasons: passed when there are none.
    pub fn from_reasons(gate: &str, mut reasons: Vec<String>) -> Self {
        if reasons.len() > REASONS_MAX {
            let more = reasons.len() - REASONS_MAX;
            reasons.truncate(REASONS_MAX);
            reasons.push(format!("... and {more} more"));
        }
        GateResult {
            gate: gate.into(),
            passed: reasons.is_empty(),
            reasons,
        }
    }
}

/// A check a snapshot must pass before promotion.
///
/// Contract: `check` only reads; it reports every problem it finds as a reason rather than
/// stopping at the first, and it never panics on a damaged vault (damage is a failed gate).
pub trait Gate: Send + Sync {
    /// Stable name, used in manifests, refs and the audit log.
    fn name(&self) -> &'static str;
    /// Runs the check.
    fn check(&self, input: &GateInput<'_>) -> GateResult;
}

/// The gates every snapshot runs, in order.
pub fn default_gates() -> Vec<Box<dyn Gate>> {
    vec![
        Box::new(ManifestGate),
        Box::new(ChecksumsGate),
        Box::new(TemplateOnlyGate),
        Box::new(SanityGate),
    ]
}

/// Runs every gate.
pub fn run_all(input: &GateInput<'_>) -> Vec<GateResult> {
    default_gates().iter().map(|g| g.check(input)).collect()
}

/// True when every result passed (and there is at least one).
pub fn all_passed(results: &[GateResult]) -> bool {
    !results.is_empty() && results.iter().all(|r| r.passed)
}
