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
        let reasons = match &input.manifest_bytes {
            Err(why) => vec![format!("manifest of snapshot {}: {why}", input.id)],
            Ok(bytes) => match Manifest::parse(bytes) {
                Err(e) => vec![e],
                Ok((id, _)) if id != input.id => {
                    vec![format!("manifest is snapshot {id}, not {}", input.id)]
                }
                Ok(_) => Vec::new(),
            },
        };
        GateResult::from_reasons(self.name(), reasons)
    }
}
