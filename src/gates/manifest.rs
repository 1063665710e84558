//! Gate 1, `manifest`: the manifest exists, is valid JSON, parses into the schema, has a known
//! format version, and is the snapshot it claims to be.

use super::{Gate, GateInput, GateResult};
use crate::manifest::Manifest;

/// See the module doc.
pub struct ManifestGate;

impl Gate for ManifestGate {
    fn name(&self) -> &'static str {
        "manifest"
    }

    fn check(&self, input: &GateInput<'_>) -> GateResult {
        check_bytes(
            &input.id,
            input.manifest_bytes.as_deref().map_err(Clone::clone),
        )
    }
}

/// The gate on a manifest's bytes alone (it needs nothing else of the vault).
pub fn check_bytes(
    want: &crate::id::SnapshotId,
    manifest_bytes: Result<&[u8], String>,
) -> GateResult {
    let reasons = match manifest_bytes {
        Err(why) => vec![format!("manifest of snapshot {want}: {why}")],
        Ok(bytes) => match Manifest::parse(bytes) {
            Err(e) => vec![e],
            Ok((id, _)) if id != *want => vec![format!("manifest is snapshot {id}, not {want}")],
            Ok(_) => Vec::new(),
        },
    };
    GateResult::from_reasons(ManifestGate.name(), reasons)
}
