//! Key files: how the vault's master key is stored, wrapped and unlocked, and where the secrets
//! that unlock it come from.
//!
//! This module owns the key-file format, the wrapping of the master key and the reading of
//! passwords and raw key files (files, `VAULT_PASSWORD_COMMAND`, the terminal). It does not own
//! vault I/O: the caller lists `keys/`, writes key files atomically and seals data with the
//! [`MasterKey`] it gets back.
//!
//! # Format
//!
//! A random 32-byte master key lives only in key files `keys/<id>.json`, each wrapping it for one
//! secret. Every key file of a vault wraps the same master key, so any one of them opens the
//! vault.
//!
//! ```json
//! {
//!   "version": 1,
//!   "id": "<32 hex: 16 random bytes, also the file name>",
//!   "created": "2026-11-02T10:00:00Z",
//!   "host": "backup01",
//!   "user": "root",
//!   "kind": "password",
//!   "kdf": {
//!     "algorithm": "argon2id", "version": 19,
//!     "memory_kib": 65536, "iterations": 3, "parallelism": 1,
//!     "salt": "<64 hex: 32 random bytes>"
//!   },
//!   "nonce": "<48 hex: 24 random bytes>",
//!   "wrapped": "<96 hex: 32 bytes of encrypted master key, then the 16-byte tag>"
//! }
//! ```
//!
//! The wrapping key is argon2id (v0x13) of the password with the recorded salt and cost for
//! `"kind": "password"`, and `blake3::derive_key("atlasvault 2026-11 key file wrapping v1", raw
//! key file)` for `"kind": "keyfile"` (which has no `kdf`). The master key is sealed with
//! XChaCha20-Poly1305 under that key and the random nonce, with associated data
//! `"atlasvault key v1\0" || vault id || "\0" || key id`: a key file copied into another vault,
//! or given another id, does not open. `host`, `user` and `created` are informational and not
//! authenticated.
//!
//! # Threat model
//!
//! Someone holding the key files but no secret can only guess: every password guess costs one
//! argon2id run with the file's parameters (64 MiB and three passes by default, a fraction of a
//! second on one core and 64 MiB of memory per guess in flight), which slows offline guessing on
//! GPUs and ASICs but does not stop it against a weak password. Raw key files get no slowing, and
//! need none as long as they hold at least 128 bits of randomness (`head -c 32 /dev/urandom`); we
//! only check that they are at least 32 bytes long. Removing a key file or changing a password
//! does not revoke anything: a copy of the old key file still opens with the old secret, and only
//! a new master key (re-encrypting the vault) cuts it off. Someone who can write `keys/` can
//! delete key files (denial of service), edit the unauthenticated fields, or add a key file
//! wrapping a master key of their own, which the caller must detect by checking the unlocked key
//! against something sealed with the real one. A root user or debugger on a machine holding the
//! vault open sees the master key; zeroizing secrets on drop is best effort.
//!
//! Key files are untrusted input: [`KeyFile::parse`] caps their size at 64 KiB and refuses argon2
//! costs above 4 GiB of memory, 100 passes or 16 lanes, so a hostile key file cannot make
//! `unlock` allocate without bound.

mod file;
mod secret;
#[cfg(test)]
mod tests;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

pub use file::{unlock, KeyFile};
pub use secret::{new_secret, SecretSource};

/// The only key-file format version this code reads and writes.
pub const KEY_FILE_VERSION: u32 = 1;

/// Larger key files are refused before parsing.
pub const KEY_FILE_MAX_BYTES: usize = 64 * 1024;

/// Environment variable naming a file whose content is the password.
pub const ENV_PASSWORD_FILE: &str = "VAULT_PASSWORD_FILE";
/// Environment variable holding a shell command that prints the password.
pub const ENV_PASSWORD_COMMAND: &str = "VAULT_PASSWORD_COMMAND";
/// Environment variable naming a raw key file.
pub const ENV_KEY_FILE: &str = "VAULT_KEY_FILE";

const MASTER_KEY_BYTES: usize = 32;
const KEY_ID_BYTES: usize = 16;
const SALT_BYTES: usize = 32;
const NONCE_BYTES: usize = 24;
const TAG_BYTES: usize = 16;
const WRAPPED_BYTES: usize = MASTER_KEY_BYTES + TAG_BYTES;

const KDF_ALGORITHM: &str = "argon2id";
/// Argon2 version 0x13, as recorded in the key file.
const KDF_VERSION: u32 = 19;
const KDF_MAX_MEMORY_KIB: u32 = 4 * 1024 * 1024;
const KDF_MAX_ITERATIONS: u32 = 100;
const KDF_MAX_PARALLELISM: u32 = 16;

const KEY_FILE_WRAP_CONTEXT: &str = "atlasvault 2026-11 key file wrapping v1";
const AAD_PREFIX: &[u8] = b"atlasvault key v1\0";

/// A raw key file shorter than this cannot hold a 256-bit key.
const RAW_KEY_FILE_MIN_BYTES: usize = 32;
/// Raw key files are read whole; a bound keeps a mistaken `/dev/zero` from eating memory.
const RAW_KEY_FILE_MAX_BYTES: usize = 1024 * 1024;
/// Bound on a password file or a password command's output.
const PASSWORD_MAX_BYTES: usize = 64 * 1024;
/// Bound on `host`, `user` and `created`, which `vault key list` prints.
const META_MAX_BYTES: usize = 256;
/// Bound on text from a parser error quoted in a `Corrupt` reason.
const REASON_MAX_CHARS: usize = 200;

/// Everything that can go wrong with keys and secrets. No message contains a secret or the
/// content of a password file or command.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// No key file opens with the given secret. The CLI maps this to its own exit code.
    #[error("wrong password or key file for this vault")]
    WrongSecret,

    /// No source of a secret was configured and there is no terminal to ask on.
    #[error("{0}")]
    NoSecret(String),

    /// A key file is malformed, of an unknown version, or asks for absurd costs.
    #[error("corrupt {what}: {reason}")]
    Corrupt { what: String, reason: String },

    /// An operating-system I/O error on a named path.
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// `VAULT_PASSWORD_COMMAND` could not be run, failed, or printed nothing.
    #[error("{0}")]
    Command(String),

    /// A secret or parameter that cannot be used as given (empty password, short key file...).
    #[error("{0}")]
    Invalid(String),

    /// The random number generator or the key derivation failed (e.g. out of memory).
    #[error("{0}")]
    Crypto(String),
}

impl KeyError {
    fn corrupt(reason: impl Into<String>) -> Self {
        KeyError::Corrupt {
            what: "key file".into(),
            reason: reason.into(),
        }
    }

    fn io(path: &Path, source: io::Error) -> Self {
        KeyError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

fn random_bytes<const N: usize>() -> Result<[u8; N], KeyError> {
    let mut out = [0u8; N];
    getrandom::fill(&mut out)
        .map_err(|e| KeyError::Crypto(format!("random number generator failed: {e}")))?;
    Ok(out)
}

/// The vault's master key. Never printed, zeroized on drop.
pub struct MasterKey([u8; MASTER_KEY_BYTES]);

impl MasterKey {
    /// A fresh random key, for `vault init`.
    pub fn generate() -> Result<Self, KeyError> {
        random_bytes().map(MasterKey)
    }

    /// The key bytes, for deriving the sealing keys.
    pub fn as_bytes(&self) -> &[u8; MASTER_KEY_BYTES] {
        &self.0
    }
}

impl Drop for MasterKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

/// Which kind of secret a key file is wrapped for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    /// A passphrase, stretched with argon2id.
    Password,
    /// The bytes of a raw key file.
    KeyFile,
}

impl KeyKind {
    /// `password` or `keyfile`, as in the key file.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Password => "password",
            KeyKind::KeyFile => "keyfile",
        }
    }
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What unlocks a key file. Never printed, zeroized on drop.
pub enum Secret {
    /// A passphrase (any bytes; no trailing newline).
    Password(Vec<u8>),
    /// The whole content of a raw key file.
    KeyFile(Vec<u8>),
}

impl Secret {
    /// The kind of key file this secret can open.
    pub fn kind(&self) -> KeyKind {
        match self {
            Secret::Password(_) => KeyKind::Password,
            Secret::KeyFile(_) => KeyKind::KeyFile,
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Secret::Password(b) | Secret::KeyFile(b) => b,
        }
    }

    /// Refuses secrets that would make a weak key file.
    fn check(&self) -> Result<(), KeyError> {
        match self {
            Secret::Password(p) if p.is_empty() => {
                Err(KeyError::Invalid("the password is empty".into()))
            }
            Secret::KeyFile(k) if k.len() < RAW_KEY_FILE_MIN_BYTES => Err(KeyError::Invalid(
                format!("a raw key file needs at least {RAW_KEY_FILE_MIN_BYTES} bytes"),
            )),
            _ => Ok(()),
        }
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        match self {
            Secret::Password(b) | Secret::KeyFile(b) => b.zeroize(),
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Password(_) => f.write_str("Secret::Password(..)"),
            Secret::KeyFile(_) => f.write_str("Secret::KeyFile(..)"),
        }
    }
}

/// Argon2id cost of a password key file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory per guess, KiB.
    pub memory_kib: u32,
    /// Passes over the memory.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Default for KdfParams {
    /// 64 MiB, 3 passes, 1 lane.
    fn default() -> Self {
        KdfParams {
            memory_kib: 64 * 1024,
            iterations: 3,
            parallelism: 1,
        }
    }
}

impl KdfParams {
    /// Checks the bounds: 1..=16 lanes, 8 KiB per lane up to 4 GiB, 1..=100 passes.
    pub fn validate(&self) -> Result<(), KeyError> {
        let p = self.parallelism;
        if !(1..=KDF_MAX_PARALLELISM).contains(&p) {
            return Err(KeyError::Invalid(format!(
                "argon2id parallelism {p} is outside 1..={KDF_MAX_PARALLELISM}"
            )));
        }
        if !(1..=KDF_MAX_ITERATIONS).contains(&self.iterations) {
            return Err(KeyError::Invalid(format!(
                "argon2id iterations {} are outside 1..={KDF_MAX_ITERATIONS}",
                self.iterations
            )));
        }
        if !(8 * p..=KDF_MAX_MEMORY_KIB).contains(&self.memory_kib) {
            return Err(KeyError::Invalid(format!(
                "argon2id memory {} KiB is outside {}..={KDF_MAX_MEMORY_KIB} KiB",
                self.memory_kib,
                8 * p
            )));
        }
        Ok(())
    }
}

/// A key file's id: 16 random bytes, 32 hex digits, also its file name `keys/<id>.json`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId([u8; KEY_ID_BYTES]);

impl KeyId {
    /// Lowercase hex, as in the file name.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 8 hex digits, for humans.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }

    /// Parses 32 hex digits (either case).
    pub fn from_hex(s: &str) -> Result<Self, KeyError> {
        decode_hex_lower(&s.to_ascii_lowercase())
            .map(KeyId)
            .ok_or_else(|| KeyError::Invalid(format!("{s:?} is not a key id (32 hex digits)")))
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.short())
    }
}

impl FromStr for KeyId {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        Self::from_hex(s)
    }
}

/// Decodes exactly `2 * N` lowercase hex digits; what we write is lowercase, anything else is
/// not ours.
fn decode_hex_lower<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || s.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}
