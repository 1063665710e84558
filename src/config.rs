//! `config.json`: the vault's format version and the parameters every writer must share.
//!
//! The chunker parameters live here rather than in code so that a vault keeps deduplicating
//! against its own history even after the defaults change. The file is written once by
//! `vault init` and validated on every open; a value this version cannot use is an error, not a
//! panic deeper down.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Repository format version written by this build: 2 added encryption (sealed blobs, trailers,
/// manifests and refs, keyed ids, key files). Version 1 vaults (never encrypted) still open.
pub const FORMAT_VERSION: u32 = 2;
/// Oldest format version this build reads.
pub const FORMAT_VERSION_MIN: u32 = 1;

const KIB: u32 = 1024;
const MIB: u64 = 1024 * 1024;

/// Upper bound on `config.json` size; anything larger is not ours.
const CONFIG_MAX_BYTES: u64 = 64 * 1024;

/// Content-defined chunking parameters (FastCDC 2020, normalisation level 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkerParams {
    pub algorithm: String,
    pub min_size: u32,
    pub avg_size: u32,
    pub max_size: u32,
    /// A stream of at most this many bytes is one chunk, whatever the algorithm would cut (0 or
    /// absent: off). The text profile's default: see README.md's "Chunk size".
    #[serde(default, skip_serializing_if = "is_zero")]
    pub whole_max_size: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Default chunker parameters; README.md's "Chunk size" section gives the measurements behind them.
pub const DEFAULT_CHUNK_MIN_BYTES: u32 = 16 * KIB;
pub const DEFAULT_CHUNK_AVG_BYTES: u32 = 64 * KIB;
pub const DEFAULT_CHUNK_MAX_BYTES: u32 = 256 * KIB;

/// The FastCDC (2020) chunker.
pub const FASTCDC: &str = "fastcdc-2020";
/// The line-aligned text chunker ([`crate::chunk::line_cut`]).
pub const LINES: &str = "lines-2026";

/// Defaults of the text profile (`chunker_text`): see README.md's "Chunk size".
pub const DEFAULT_TEXT_MIN_BYTES: u32 = 16 * KIB;
pub const DEFAULT_TEXT_AVG_BYTES: u32 = 24 * KIB;
pub const DEFAULT_TEXT_MAX_BYTES: u32 = 96 * KIB;
/// A text stream of at most this size is one chunk (`whole_max_size` of `chunker_text`).
pub const DEFAULT_TEXT_WHOLE_MAX_BYTES: u32 = 128 * KIB;

/// Defaults of the binary profile (`chunker_binary`).
pub const DEFAULT_BINARY_MIN_BYTES: u32 = 256 * KIB;
pub const DEFAULT_BINARY_AVG_BYTES: u32 = MIB as u32;
pub const DEFAULT_BINARY_MAX_BYTES: u32 = 4 * MIB as u32;

/// Largest chunk any profile may ask for.
const MAX_CHUNK_BYTES: u32 = 16 * MIB as u32;

/// Default zstd level: zstd's own default; README.md's benchmarks give its speed here.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;
/// Default zstd level of text blobs in a new vault (`compression.text_level`): see README.md's
/// "Compression level".
pub const DEFAULT_ZSTD_TEXT_LEVEL: i32 = 5;

/// Packs are closed once they reach this size.
pub const DEFAULT_PACK_TARGET_BYTES: u64 = 32 * MIB;

/// Everything in `config.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultConfig {
    pub version: u32,
    /// Random 32-byte vault id, hex.
    pub id: String,
    pub created: String,
    pub chunker: ChunkerConfig,
    /// Text streams' chunker (profiles, see [`Chunking`]); absent in vaults made before profiles
    /// or with `--chunk-*` sizes, which cut everything with `chunker`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunker_text: Option<ChunkerParams>,
    /// Binary streams' chunker, other than SQLite databases (which keep `chunker`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunker_binary: Option<ChunkerParams>,
    pub compression: CompressionConfig,
    pub pack_target_size: u64,
    /// `xchacha20-poly1305` (the default) or `none`: the one switch readers must honour.
    pub encryption: String,
    /// Gate settings; absent in vaults made before the sanity gate, which get the defaults.
    #[serde(default)]
    pub gates: GateSettings,
}

/// The `gates` section of `config.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GateSettings {
    pub sanity: SanitySettings,
}

/// Settings of the `sanity` gate; README.md's "Gates" section explains each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SanitySettings {
    /// Check that every git repository's HEAD resolves to a readable commit.
    pub git: bool,
    /// Check that every lockfile parses as its format.
    pub lockfiles: bool,
    /// Mass change: more than this percent of a tree's files changed since the baseline...
    pub mass_change_percent: u8,
    /// ...and more than this percent of the changed files became high-entropy.
    pub high_entropy_percent: u8,
    /// Mass loss: a tree lost more than this percent of its files or of its bytes.
    pub mass_loss_percent: u8,
    /// Trees with fewer files than this in the baseline are exempt from the two share checks.
    pub min_files: u64,
    /// Globs (base name, or relative path when they hold `/`) of files others depend on: one
    /// truncated to 0 bytes fails the gate.
    pub depended_on: Vec<String>,
}

/// Files others depend on, by default: build manifests, lockfiles, git's own files, databases.
pub const DEFAULT_DEPENDED_ON: &[&str] = &[
    "Cargo.toml",
    "Cargo.lock",
    "package.json",
    "package-lock.json",
    "npm-shrinkwrap.json",
    "yarn.lock",
    "pnpm-lock.yaml",
    "pyproject.toml",
    "poetry.lock",
    "Pipfile",
    "Pipfile.lock",
    "requirements*.txt",
    "setup.py",
    "setup.cfg",
    "go.mod",
    "go.sum",
    "Gemfile",
    "Gemfile.lock",
    "composer.json",
    "composer.lock",
    "Makefile",
    "Dockerfile",
    "docker-compose.y*ml",
    "compose.y*ml",
    ".gitmodules",
    ".git/HEAD",
    ".git/config",
    ".git/packed-refs",
    ".git/index",
    "*.sqlite",
    "*.sqlite3",
    "*.db",
    "openclaw.json",
    ".env",
];

impl Default for SanitySettings {
    fn default() -> Self {
        SanitySettings {
            git: true,
            lockfiles: true,
            mass_change_percent: 30,
            high_entropy_percent: 50,
            mass_loss_percent: 50,
            min_files: 10,
            depended_on: DEFAULT_DEPENDED_ON.iter().map(|s| s.to_string()).collect(),
        }
    }
}

impl SanitySettings {
    fn validate(&self) -> std::result::Result<(), String> {
        for (name, v) in [
            ("mass_change_percent", self.mass_change_percent),
            ("high_entropy_percent", self.high_entropy_percent),
            ("mass_loss_percent", self.mass_loss_percent),
        ] {
            if v > 100 {
                return Err(format!("gates.sanity.{name} {v} is over 100"));
            }
        }
        for g in &self.depended_on {
            globset::Glob::new(g)
                .map_err(|e| format!("gates.sanity.depended_on glob {g:?}: {e}"))?;
        }
        Ok(())
    }
}

/// Serialized form of [`ChunkerParams`] (kept separate so the field order in JSON is stable).
pub type ChunkerConfig = ChunkerParams;

/// Compression settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompressionConfig {
    pub algorithm: String,
    pub level: i32,
    /// The zstd level of data blobs that look like text (no NUL byte in their first 8 KiB:
    /// source files, dumps, logs, CSV); `level` when absent (vaults made before it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_level: Option<i32>,
}

impl CompressionConfig {
    /// The zstd level for a blob of `kind` holding `raw`.
    pub fn level_for(&self, kind: crate::blob::BlobKind, raw: &[u8]) -> i32 {
        match self.text_level {
            Some(level)
                if kind == crate::blob::BlobKind::Data && crate::chunk::looks_like_text(raw) =>
            {
                level
            }
            _ => self.level,
        }
    }
}

impl Default for ChunkerParams {
    fn default() -> Self {
        ChunkerParams {
            algorithm: FASTCDC.into(),
            min_size: DEFAULT_CHUNK_MIN_BYTES,
            avg_size: DEFAULT_CHUNK_AVG_BYTES,
            max_size: DEFAULT_CHUNK_MAX_BYTES,
            whole_max_size: 0,
        }
    }
}

impl ChunkerParams {
    /// Checks the parameters against what the algorithm accepts (FastCDC asserts otherwise).
    pub fn validate(&self) -> std::result::Result<(), String> {
        use fastcdc::v2020 as f;
        let ordered = self.min_size <= self.avg_size && self.avg_size <= self.max_size;
        let ok = match self.algorithm.as_str() {
            FASTCDC => {
                (f::MINIMUM_MIN..=f::MINIMUM_MAX).contains(&self.min_size)
                    && (f::AVERAGE_MIN..=f::AVERAGE_MAX).contains(&self.avg_size)
                    && (f::MAXIMUM_MIN..=f::MAXIMUM_MAX).contains(&self.max_size)
                    && ordered
            }
            LINES => {
                self.min_size >= 64
                    && self.min_size < self.avg_size
                    && ordered
                    && self.max_size <= MAX_CHUNK_BYTES
            }
            other => return Err(format!("unknown chunker {other:?}")),
        };
        if self.whole_max_size > MAX_CHUNK_BYTES {
            return Err(format!(
                "whole_max_size={} is larger than the largest chunk, {MAX_CHUNK_BYTES}",
                self.whole_max_size
            ));
        }
        if ok {
            Ok(())
        } else {
            Err(format!(
                "chunker sizes min={} avg={} max={} are out of range",
                self.min_size, self.avg_size, self.max_size
            ))
        }
    }
}

impl ChunkerParams {
    /// The text profile's defaults.
    pub fn text_default() -> Self {
        ChunkerParams {
            algorithm: LINES.into(),
            min_size: DEFAULT_TEXT_MIN_BYTES,
            avg_size: DEFAULT_TEXT_AVG_BYTES,
            max_size: DEFAULT_TEXT_MAX_BYTES,
            whole_max_size: DEFAULT_TEXT_WHOLE_MAX_BYTES,
        }
    }

    /// The binary profile's defaults.
    pub fn binary_default() -> Self {
        ChunkerParams {
            algorithm: FASTCDC.into(),
            min_size: DEFAULT_BINARY_MIN_BYTES,
            avg_size: DEFAULT_BINARY_AVG_BYTES,
            max_size: DEFAULT_BINARY_MAX_BYTES,
            whole_max_size: 0,
        }
    }
}

/// A vault's chunkers: the base one, and when profiles are on, one for text and one for binary
/// data (see [`crate::chunk`]). `Chunking::default()` has profiles; a bare [`ChunkerParams`]
/// converts to a chunking without them (`vault init --chunk-*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunking {
    pub base: ChunkerParams,
    pub text: Option<ChunkerParams>,
    pub binary: Option<ChunkerParams>,
}

impl Default for Chunking {
    fn default() -> Self {
        Chunking {
            base: ChunkerParams::default(),
            text: Some(ChunkerParams::text_default()),
            binary: Some(ChunkerParams::binary_default()),
        }
    }
}

impl From<ChunkerParams> for Chunking {
    fn from(base: ChunkerParams) -> Self {
        Chunking {
            base,
            text: None,
            binary: None,
        }
    }
}

impl VaultConfig {
    /// This vault's chunkers.
    pub fn chunking(&self) -> Chunking {
        Chunking {
            base: self.chunker.clone(),
            text: self.chunker_text.clone(),
            binary: self.chunker_binary.clone(),
        }
    }

    /// A fresh config with a random id, the given chunkers, encrypted or not.
    pub fn new(chunking: impl Into<Chunking>, encrypted: bool) -> Result<Self> {
        let chunking = chunking.into();
        let mut id = [0u8; 32];
        getrandom::fill(&mut id)
            .map_err(|e| Error::Invalid(format!("no randomness available: {e}")))?;
        let cfg = VaultConfig {
            version: FORMAT_VERSION,
            id: hex::encode(id),
            created: crate::util::now_rfc3339(),
            chunker: chunking.base,
            chunker_text: chunking.text,
            chunker_binary: chunking.binary,
            compression: CompressionConfig {
                algorithm: "zstd".into(),
                level: DEFAULT_ZSTD_LEVEL,
                text_level: Some(DEFAULT_ZSTD_TEXT_LEVEL),
            },
            pack_target_size: DEFAULT_PACK_TARGET_BYTES,
            encryption: if encrypted {
                crate::crypto::XCHACHA20_POLY1305.into()
            } else {
                "none".into()
            },
            gates: GateSettings::default(),
        };
        cfg.validate().map_err(Error::Invalid)?;
        Ok(cfg)
    }

    /// Parses and validates untrusted bytes.
    pub fn parse(bytes: &[u8]) -> std::result::Result<Self, String> {
        let cfg: VaultConfig = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        if !(FORMAT_VERSION_MIN..=FORMAT_VERSION).contains(&self.version) {
            return Err(format!(
                "format version {} is not supported by this build (supports {FORMAT_VERSION_MIN} to \
                 {FORMAT_VERSION})",
                self.version
            ));
        }
        self.chunker.validate()?;
        if self.chunker.algorithm != FASTCDC {
            return Err("the base chunker must be fastcdc-2020".into());
        }
        for (name, p) in [
            ("chunker_text", &self.chunker_text),
            ("chunker_binary", &self.chunker_binary),
        ] {
            if let Some(p) = p {
                p.validate().map_err(|e| format!("{name}: {e}"))?;
            }
        }
        if self.compression.algorithm != "zstd" || !(1..=22).contains(&self.compression.level) {
            return Err(format!(
                "unsupported compression {} level {}",
                self.compression.algorithm, self.compression.level
            ));
        }
        if let Some(level) = self
            .compression
            .text_level
            .filter(|l| !(1..=22).contains(l))
        {
            return Err(format!("unsupported compression text_level {level}"));
        }
        if !(MIB..=1024 * MIB).contains(&self.pack_target_size) {
            return Err(format!(
                "pack_target_size {} out of range",
                self.pack_target_size
            ));
        }
        let known = self.encryption == "none"
            || (self.version >= 2 && self.encryption == crate::crypto::XCHACHA20_POLY1305);
        if !known {
            return Err(format!(
                "encryption {:?} is not supported by this build",
                self.encryption
            ));
        }
        self.gates.sanity.validate()
    }

    /// Reads `config.json` from a vault directory.
    pub fn load(path: &Path) -> Result<Self> {
        let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::NoVault {
                path: path.parent().unwrap_or(path).to_path_buf(),
            },
            _ => Error::io(path, e),
        })?;
        if meta.len() > CONFIG_MAX_BYTES {
            return Err(Error::Config {
                path: path.into(),
                reason: format!("{} bytes is too large", meta.len()),
            });
        }
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&bytes).map_err(|reason| Error::Config {
            path: path.into(),
            reason,
        })
    }

    /// True when the vault seals its objects.
    pub fn is_encrypted(&self) -> bool {
        self.encryption != "none"
    }

    /// Canonical bytes for `config.json`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("invariant: config serializes");
        v.push(b'\n');
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_blobs_get_the_text_level_and_older_configs_one_level() {
        use crate::blob::BlobKind;
        let cfg = VaultConfig::new(Chunking::default(), true).unwrap();
        let c = &cfg.compression;
        assert_eq!(c.text_level, Some(DEFAULT_ZSTD_TEXT_LEVEL));
        let text = b"CREATE TABLE t (id int);\nINSERT INTO t VALUES (1);\n".repeat(100);
        let mut binary = text.clone();
        binary[4000] = 0;
        assert_eq!(c.level_for(BlobKind::Data, &text), DEFAULT_ZSTD_TEXT_LEVEL);
        assert_eq!(c.level_for(BlobKind::Data, &binary), DEFAULT_ZSTD_LEVEL);
        // A NUL past the first 8 KiB does not make a blob binary; trees keep the base level.
        let mut late = text.repeat(4);
        late[10_000] = 0;
        assert_eq!(c.level_for(BlobKind::Data, &late), DEFAULT_ZSTD_TEXT_LEVEL);
        assert_eq!(c.level_for(BlobKind::Tree, &text), DEFAULT_ZSTD_LEVEL);
        // A config written before `text_level` has one level for everything, and keeps its bytes.
        let json = String::from_utf8(cfg.to_bytes()).unwrap();
        let old = json.replace(
            &format!(",\n    \"text_level\": {DEFAULT_ZSTD_TEXT_LEVEL}"),
            "",
        );
        assert!(!old.contains("text_level"), "{old}");
        let parsed = VaultConfig::parse(old.as_bytes()).unwrap();
        assert_eq!(parsed.compression.text_level, None);
        assert_eq!(
            parsed.compression.level_for(BlobKind::Data, &text),
            DEFAULT_ZSTD_LEVEL
        );
        assert_eq!(String::from_utf8(parsed.to_bytes()).unwrap(), old);
        for bad in [0, 23] {
            let mut c = cfg.clone();
            c.compression.text_level = Some(bad);
            let err = VaultConfig::parse(&c.to_bytes()).unwrap_err();
            assert!(err.contains("text_level"), "{err}");
        }
    }

    #[test]
    fn config_round_trips_and_rejects_bad_values() {
        let cfg = VaultConfig::new(ChunkerParams::default(), true).unwrap();
        assert!(cfg.is_encrypted());
        assert_eq!(VaultConfig::parse(&cfg.to_bytes()).unwrap(), cfg);
        let mut bad = cfg.clone();
        bad.chunker.max_size = 1 << 30;
        assert!(VaultConfig::parse(&bad.to_bytes()).is_err());
        assert!(VaultConfig::parse(b"{not json").is_err());
        let mut v2 = cfg;
        v2.version = 99;
        assert!(VaultConfig::parse(&v2.to_bytes())
            .unwrap_err()
            .contains("version 99"));
    }

    #[test]
    fn whole_max_size_is_on_for_new_text_profiles_absent_elsewhere_and_bounded() {
        let cfg = VaultConfig::new(Chunking::default(), true).unwrap();
        let text = cfg.chunker_text.clone().unwrap();
        assert_eq!(text.whole_max_size, DEFAULT_TEXT_WHOLE_MAX_BYTES);
        let json = String::from_utf8(cfg.to_bytes()).unwrap();
        // Written for the text profile only: a zero is left out, so older configs keep their bytes.
        assert_eq!(json.matches("whole_max_size").count(), 1, "{json}");
        let mut old: serde_json::Value = serde_json::from_str(&json).unwrap();
        old["chunker_text"]
            .as_object_mut()
            .unwrap()
            .remove("whole_max_size")
            .unwrap();
        let old = serde_json::to_vec(&old).unwrap();
        let parsed = VaultConfig::parse(&old).unwrap();
        assert_eq!(parsed.chunker_text.unwrap().whole_max_size, 0);
        let mut big = cfg;
        big.chunker_text.as_mut().unwrap().whole_max_size = MAX_CHUNK_BYTES + 1;
        assert!(VaultConfig::parse(&big.to_bytes())
            .unwrap_err()
            .contains("whole_max_size"));
    }
}
