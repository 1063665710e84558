//! Gate 3, `template_only`: no file the `template_only` policy covers holds a secret-looking
//! value as stored, and none was left out because it could not be templated.
//!
//! The snapshot pipeline stores matching files only as templates (see [`crate::template`]); this
//! gate checks the result independently, on the bytes in the vault, with the globs the manifest
//! records. It fails on a file whose stored content still has a secret-looking value (named by key
//! path, never by value), on one that is stored but does not parse as its format, and on every
//! matching file the snapshot refused to store because it could not be templated.

use std::path::Path;

use super::{manifest_of, Gate, GateInput, GateResult};
use crate::stored::{self, Visit};
use crate::template::{self, TemplatePolicy, DEFAULT_TEMPLATE_ONLY_GLOBS, TEMPLATE_MAX_BYTES};
use crate::tree::Node;
use crate::util::{display_name, os_str};

/// See the module doc.
pub struct TemplateOnlyGate;

impl Gate for TemplateOnlyGate {
    fn name(&self) -> &'static str {
        "template_only"
    }

    fn check(&self, input: &GateInput<'_>) -> GateResult {
        let manifest = match manifest_of(input) {
            Ok(m) => m,
            Err(reason) => return GateResult::from_reasons(self.name(), vec![reason]),
        };
        let globs: Vec<String> = match &manifest.template_only {
            Some(r) => r.globs.clone(),
            None => DEFAULT_TEMPLATE_ONLY_GLOBS
                .iter()
                .map(|s| s.to_string())
                .collect(),
        };
        let mut reasons: Vec<String> = manifest
            .template_only
            .iter()
            .flat_map(|r| &r.refused)
            .map(|r| format!("not stored, could not be templated: {r}"))
            .collect();
        let policy = match TemplatePolicy::new(&globs) {
            Ok(p) => p,
            Err(e) => return GateResult::from_reasons(self.name(), vec![e.to_string()]),
        };
        let walked = stored::walk(input.reader, &manifest.tree, |path, e| {
            let Node::File { chunks } = &e.node else {
                return Ok(Visit::Descend);
            };
            // Globs with `/` match below the source root, the first component of the path.
            let relative = match path.iter().position(|&b| b == b'/') {
                Some(i) => &path[i + 1..],
                None => path,
            };
            if !policy.matches(Path::new(os_str(relative))) {
                return Ok(Visit::Descend);
            }
            let shown = display_name(path);
            match stored::read_file(input.reader, chunks, TEMPLATE_MAX_BYTES) {
                Ok(bytes) => {
                    for key in template::find_secrets(Path::new(os_str(&e.name)), &bytes) {
                        reasons.push(if key.starts_with("<not valid") {
                            format!("{shown}: stored raw, {}", &key[1..key.len() - 1])
                        } else {
                            format!("{shown}: secret-looking value at {key}")
                        });
                    }
                }
                Err(err) => reasons.push(format!("{shown}: cannot be checked: {err}")),
            }
            Ok(Visit::Descend)
        });
        if let Err(e) = walked {
            reasons.push(format!("cannot walk the snapshot: {}", e.full()));
        }
        GateResult::from_reasons(self.name(), reasons)
    }
}
