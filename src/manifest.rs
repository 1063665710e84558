//! Snapshot manifests: the small, immutable JSON record of one snapshot.
//!
//! A manifest names the snapshot's root tree, its sources, statistics and warnings. Its id is the
//! sha256 of its canonical bytes (the compact JSON of the manifest without its `sha256` and `gates`
//! fields); the stored file carries that digest in `sha256` and is named `snapshots/<id>.json`, so
//! a manifest
//! checks itself and its name. A manifest is written last, after every pack it needs is durable:
//! a snapshot that was killed half-way is never listed.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::id::{BlobId, SnapshotId};

/// Manifest schema version written by this build.
pub const MANIFEST_FORMAT: u32 = 1;
/// Manifests larger than this are refused before reading.
pub const MANIFEST_MAX_BYTES: u64 = 16 * 1024 * 1024;

/// One snapshotted path and the name of its entry in the root tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourcePath {
    /// Absolute path on the host (lossy UTF-8 where the name is not UTF-8).
    pub path: String,
    /// Name of the entry in the root tree (lossy UTF-8 for display).
    pub name: String,
}

/// Counters of one snapshot run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub skipped: u64,
    /// Total size of the files in the snapshot.
    pub bytes: u64,
    /// Files not read again because change detection matched the parent.
    pub files_unchanged: u64,
    pub bytes_read: u64,
    /// Plaintext bytes of blobs that were new to the vault.
    pub bytes_new: u64,
    /// Stored (compressed) bytes of new blobs, i.e. what the vault grew by.
    pub bytes_stored: u64,
    pub blobs_new: u64,
    pub duration_ms: u64,
}

/// What the `template_only` policy did in one snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateReport {
    /// Every glob in force (the defaults and `--template-only`).
    pub globs: Vec<String>,
    /// Files stored as templates.
    pub templated: u64,
    /// Snapshot paths of matching files that could not be templated, with the reason; their
    /// content was not stored at all (never raw), and the `template_only` gate fails.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<String>,
}

/// One dump stream of a snapshot (see [`crate::stream`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamRecord {
    /// The source's name (the root entry holding the stream).
    pub source: String,
    /// `command`, `stdin`, `sqlite`, `postgres-plain` or `postgres-custom`.
    pub kind: String,
    /// Snapshot path of the stored stream, `SOURCE/FILE`.
    pub path: String,
    pub bytes: u64,
    /// sha256 of the stream as produced, hex.
    pub sha256: String,
    /// False when the source failed: the snapshot is then not promotable.
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Why the source failed (exit status, stderr's end, integrity_check), never data.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

/// The manifest of one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    /// RFC 3339 with nanoseconds, UTC.
    pub time: String,
    pub host: String,
    pub user: String,
    pub parent: Option<SnapshotId>,
    pub paths: Vec<SourcePath>,
    pub tree: BlobId,
    pub stats: Stats,
    pub warnings: Vec<String>,
    /// True when some file could not be read; such a snapshot exits with code 3.
    pub partial: bool,
    /// How the `template_only` policy applied (absent in manifests of builds before it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_only: Option<TemplateReport>,
    /// A safety snapshot, taken of a restore target before `restore --overwrite` replaced it;
    /// never promoted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub safety: bool,
    /// Dump streams (command output, stdin, SQLite backups) and how their sources ended.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub streams: Vec<StreamRecord>,
    /// Gate results at snapshot time; outside the hashed bytes because the gates check them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gates: Option<Vec<crate::gates::GateResult>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

impl Manifest {
    /// The canonical bytes: compact JSON without the `sha256` and `gates` fields.
    fn canonical(&self) -> Vec<u8> {
        let mut m = self.clone();
        m.sha256 = None;
        m.gates = None;
        serde_json::to_vec(&m).expect("invariant: manifest serializes")
    }

    /// The id this manifest has (or will have once sealed).
    pub fn id(&self) -> SnapshotId {
        SnapshotId(Sha256::digest(self.canonical()).into())
    }

    /// Computes the id, fills in `sha256`, and returns the id with the bytes to store.
    pub fn seal(&mut self) -> (SnapshotId, Vec<u8>) {
        let id = self.id();
        self.sha256 = Some(id.to_hex());
        let mut bytes = serde_json::to_vec_pretty(self).expect("invariant: manifest serializes");
        bytes.push(b'\n');
        (id, bytes)
    }

    /// Parses untrusted bytes and checks the manifest's own sha256.
    pub fn parse(bytes: &[u8]) -> std::result::Result<(SnapshotId, Manifest), String> {
        let m: Manifest =
            serde_json::from_slice(bytes).map_err(|e| format!("invalid manifest: {e}"))?;
        if m.format != MANIFEST_FORMAT {
            return Err(format!("manifest format {} is not supported", m.format));
        }
        let claimed = m.sha256.as_deref().ok_or("manifest has no sha256")?;
        let claimed = SnapshotId::from_hex(claimed).map_err(|e| e.to_string())?;
        let actual = SnapshotId(Sha256::digest(m.canonical()).into());
        if claimed != actual {
            return Err(format!(
                "sha256 mismatch: recorded {claimed}, computed {actual}"
            ));
        }
        Ok((actual, m))
    }

    /// Parses a manifest's JSON and checks that it is snapshot `expected`.
    pub fn from_bytes(
        bytes: &[u8],
        expected: &SnapshotId,
    ) -> std::result::Result<Manifest, String> {
        let (id, m) = Manifest::parse(bytes)?;
        if id != *expected {
            return Err(format!("content is snapshot {id}, not {expected}"));
        }
        Ok(m)
    }

    /// The time as a `SystemTime` (for ordering and ages).
    pub fn system_time(&self) -> Option<std::time::SystemTime> {
        humantime::parse_rfc3339(&self.time).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT,
            time: "2026-11-23T20:00:00.000000001Z".into(),
            host: "h".into(),
            user: "u".into(),
            parent: None,
            paths: vec![SourcePath {
                path: "/srv/ws".into(),
                name: "ws".into(),
            }],
            tree: BlobId::of(b"t"),
            stats: Stats::default(),
            warnings: vec![],
            partial: false,
            template_only: None,
            safety: false,
            streams: vec![],
            gates: None,
            sha256: None,
        }
    }

    #[test]
    fn seal_then_parse_and_detect_tamper() {
        let mut m = sample();
        let (id, bytes) = m.seal();
        let (id2, m2) = Manifest::parse(&bytes).unwrap();
        assert_eq!(id, id2);
        assert_eq!(m, m2);
        let tampered = String::from_utf8(bytes).unwrap().replace("\"h\"", "\"x\"");
        assert!(Manifest::parse(tampered.as_bytes())
            .unwrap_err()
            .contains("mismatch"));
        assert!(Manifest::parse(b"[]").is_err());
    }
}
