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

use std::ffi::OsString;
use std::fmt;
use std::io::{self, IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;

use argon2::{Algorithm, Argon2, Block, Params, Version};
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Key, Tag, XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

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

/// How the wrapping key is derived.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Wrapping {
    Password {
        params: KdfParams,
        salt: [u8; SALT_BYTES],
    },
    KeyFile,
}

/// One key file: the master key wrapped for one secret. Holds no secret itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFile {
    id: KeyId,
    created: String,
    host: String,
    user: String,
    wrapping: Wrapping,
    nonce: [u8; NONCE_BYTES],
    wrapped: [u8; WRAPPED_BYTES],
}

/// The JSON on disk.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFileJson {
    version: u32,
    id: String,
    created: String,
    host: String,
    user: String,
    kind: KeyKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kdf: Option<KdfJson>,
    nonce: String,
    wrapped: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KdfJson {
    algorithm: String,
    version: u32,
    memory_kib: u32,
    iterations: u32,
    parallelism: u32,
    salt: String,
}

/// Read first, so that a newer format gets "unsupported version" rather than "unknown field".
#[derive(Deserialize)]
struct VersionProbe {
    version: u32,
}

impl KeyFile {
    /// Wraps `master` for `secret` under a fresh random id, salt and nonce. `kdf` is used only
    /// for a password; `host`, `user` and `created` are recorded for `vault key list` (control
    /// characters become `?`, and each is cut to 256 bytes).
    pub fn create(
        master: &MasterKey,
        secret: &Secret,
        kdf: &KdfParams,
        vault_id: &str,
        host: &str,
        user: &str,
        created: &str,
    ) -> Result<KeyFile, KeyError> {
        secret.check()?;
        let wrapping = match secret {
            Secret::Password(_) => {
                kdf.validate()?;
                Wrapping::Password {
                    params: *kdf,
                    salt: random_bytes()?,
                }
            }
            Secret::KeyFile(_) => Wrapping::KeyFile,
        };
        let id = KeyId(random_bytes()?);
        let nonce: [u8; NONCE_BYTES] = random_bytes()?;
        let wrapping_key = wrapping_key(&wrapping, secret)?;
        let mut buf = Zeroizing::new(*master.as_bytes());
        let tag = XChaCha20Poly1305::new(Key::from_slice(&wrapping_key[..]))
            .encrypt_in_place_detached(
                XNonce::from_slice(&nonce),
                &aad(vault_id, &id),
                &mut buf[..],
            )
            .map_err(|_| KeyError::Crypto("sealing the master key failed".into()))?;
        let mut wrapped = [0u8; WRAPPED_BYTES];
        wrapped[..MASTER_KEY_BYTES].copy_from_slice(&buf[..]);
        wrapped[MASTER_KEY_BYTES..].copy_from_slice(&tag);
        Ok(KeyFile {
            id,
            created: clean_meta(created),
            host: clean_meta(host),
            user: clean_meta(user),
            wrapping,
            nonce,
            wrapped,
        })
    }

    /// Opens the master key. `WrongSecret` when the secret is of the other kind (without running
    /// the KDF) or when the seal does not open: wrong password, wrong raw key file, another
    /// vault's key file, or a damaged one.
    pub fn unwrap_key(&self, secret: &Secret, vault_id: &str) -> Result<MasterKey, KeyError> {
        if secret.kind() != self.kind() {
            return Err(KeyError::WrongSecret);
        }
        let wrapping_key = wrapping_key(&self.wrapping, secret)?;
        let mut buf = Zeroizing::new([0u8; MASTER_KEY_BYTES]);
        buf.copy_from_slice(&self.wrapped[..MASTER_KEY_BYTES]);
        XChaCha20Poly1305::new(Key::from_slice(&wrapping_key[..]))
            .decrypt_in_place_detached(
                XNonce::from_slice(&self.nonce),
                &aad(vault_id, &self.id),
                &mut buf[..],
                Tag::from_slice(&self.wrapped[MASTER_KEY_BYTES..]),
            )
            .map_err(|_| KeyError::WrongSecret)?;
        Ok(MasterKey(*buf))
    }

    /// Parses an untrusted key file: at most 64 KiB, version 1, no unknown fields, exact hex
    /// lengths, argon2id costs within [`KdfParams::validate`]. Errors are `Corrupt` with
    /// `what = "key file"`; the caller knows the path.
    pub fn parse(bytes: &[u8]) -> Result<KeyFile, KeyError> {
        if bytes.len() > KEY_FILE_MAX_BYTES {
            return Err(KeyError::corrupt(format!(
                "{} bytes, more than the {KEY_FILE_MAX_BYTES}-byte limit",
                bytes.len()
            )));
        }
        let probe: VersionProbe = serde_json::from_slice(bytes).map_err(json_error)?;
        if probe.version != KEY_FILE_VERSION {
            return Err(KeyError::corrupt(format!(
                "unsupported version {} (this build reads version {KEY_FILE_VERSION})",
                probe.version
            )));
        }
        let j: KeyFileJson = serde_json::from_slice(bytes).map_err(json_error)?;
        let id = decode_hex_lower(&j.id)
            .map(KeyId)
            .ok_or_else(|| KeyError::corrupt("id is not 32 lowercase hex digits"))?;
        for (name, value) in [
            ("created", &j.created),
            ("host", &j.host),
            ("user", &j.user),
        ] {
            if value.len() > META_MAX_BYTES || value.chars().any(char::is_control) {
                return Err(KeyError::corrupt(format!(
                    "{name} is longer than {META_MAX_BYTES} bytes or holds control characters"
                )));
            }
        }
        let wrapping = match (j.kind, j.kdf) {
            (KeyKind::Password, Some(k)) => {
                if k.algorithm != KDF_ALGORITHM || k.version != KDF_VERSION {
                    return Err(KeyError::corrupt(format!(
                        "kdf {:?} version {} is not {KDF_ALGORITHM} version {KDF_VERSION}",
                        k.algorithm, k.version
                    )));
                }
                let params = KdfParams {
                    memory_kib: k.memory_kib,
                    iterations: k.iterations,
                    parallelism: k.parallelism,
                };
                params
                    .validate()
                    .map_err(|e| KeyError::corrupt(e.to_string()))?;
                let salt = decode_hex_lower(&k.salt)
                    .ok_or_else(|| KeyError::corrupt("kdf salt is not 64 lowercase hex digits"))?;
                Wrapping::Password { params, salt }
            }
            (KeyKind::Password, None) => {
                return Err(KeyError::corrupt("kind password without kdf"));
            }
            (KeyKind::KeyFile, None) => Wrapping::KeyFile,
            (KeyKind::KeyFile, Some(_)) => {
                return Err(KeyError::corrupt("kind keyfile with a kdf"));
            }
        };
        let nonce = decode_hex_lower(&j.nonce)
            .ok_or_else(|| KeyError::corrupt("nonce is not 48 lowercase hex digits"))?;
        let wrapped = decode_hex_lower(&j.wrapped)
            .ok_or_else(|| KeyError::corrupt("wrapped is not 96 lowercase hex digits"))?;
        Ok(KeyFile {
            id,
            created: j.created,
            host: j.host,
            user: j.user,
            wrapping,
            nonce,
            wrapped,
        })
    }

    /// Pretty JSON and a newline, for `keys/<id>.json`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let kdf = match &self.wrapping {
            Wrapping::Password { params, salt } => Some(KdfJson {
                algorithm: KDF_ALGORITHM.into(),
                version: KDF_VERSION,
                memory_kib: params.memory_kib,
                iterations: params.iterations,
                parallelism: params.parallelism,
                salt: hex::encode(salt),
            }),
            Wrapping::KeyFile => None,
        };
        let j = KeyFileJson {
            version: KEY_FILE_VERSION,
            id: self.id.to_hex(),
            created: self.created.clone(),
            host: self.host.clone(),
            user: self.user.clone(),
            kind: self.kind(),
            kdf,
            nonce: hex::encode(self.nonce),
            wrapped: hex::encode(self.wrapped),
        };
        let mut out =
            serde_json::to_vec_pretty(&j).expect("invariant: a key file always serialises");
        out.push(b'\n');
        out
    }

    /// The id, also the file name `keys/<id>.json`.
    pub fn id(&self) -> &KeyId {
        &self.id
    }

    /// Password or raw key file.
    pub fn kind(&self) -> KeyKind {
        match self.wrapping {
            Wrapping::Password { .. } => KeyKind::Password,
            Wrapping::KeyFile => KeyKind::KeyFile,
        }
    }

    /// When it was made, RFC 3339 (unauthenticated).
    pub fn created(&self) -> &str {
        &self.created
    }

    /// Where it was made (unauthenticated).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Who made it (unauthenticated).
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The argon2id cost, for a password key file.
    pub fn kdf(&self) -> Option<&KdfParams> {
        match &self.wrapping {
            Wrapping::Password { params, .. } => Some(params),
            Wrapping::KeyFile => None,
        }
    }
}

/// Tries the key files of the secret's kind in order and returns the index and master key of the
/// first that opens; files of the other kind are skipped without running argon2.
///
/// `WrongSecret` when none opens. An error other than `WrongSecret` on one file (say, argon2 out
/// of memory on a hostile one) does not stop the search, but is returned instead of
/// `WrongSecret` if no file opens, since the secret may have been right. No key files at all is
/// `Corrupt`: such a vault can never be opened.
pub fn unlock(
    files: &[KeyFile],
    secret: &Secret,
    vault_id: &str,
) -> Result<(usize, MasterKey), KeyError> {
    if files.is_empty() {
        return Err(KeyError::Corrupt {
            what: "keys/".into(),
            reason: "the vault has no key file".into(),
        });
    }
    let mut first_error = None;
    for (i, file) in files.iter().enumerate() {
        if file.kind() != secret.kind() {
            continue;
        }
        match file.unwrap_key(secret, vault_id) {
            Ok(master) => return Ok((i, master)),
            Err(KeyError::WrongSecret) => {}
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error.unwrap_or(KeyError::WrongSecret))
}

/// Associated data binding a wrapped key to its vault and its key id.
fn aad(vault_id: &str, id: &KeyId) -> Vec<u8> {
    let id = id.to_hex();
    let mut aad = Vec::with_capacity(AAD_PREFIX.len() + vault_id.len() + 1 + id.len());
    aad.extend_from_slice(AAD_PREFIX);
    aad.extend_from_slice(vault_id.as_bytes());
    aad.push(0);
    aad.extend_from_slice(id.as_bytes());
    aad
}

fn wrapping_key(
    wrapping: &Wrapping,
    secret: &Secret,
) -> Result<Zeroizing<[u8; MASTER_KEY_BYTES]>, KeyError> {
    match wrapping {
        Wrapping::Password { params, salt } => argon2id(secret.bytes(), salt, params),
        Wrapping::KeyFile => Ok(Zeroizing::new(blake3::derive_key(
            KEY_FILE_WRAP_CONTEXT,
            secret.bytes(),
        ))),
    }
}

#[cfg(test)]
thread_local! {
    /// Argon2 runs on this thread, so tests can see which key files were tried.
    static KDF_RUNS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn argon2id(
    password: &[u8],
    salt: &[u8; SALT_BYTES],
    kdf: &KdfParams,
) -> Result<Zeroizing<[u8; MASTER_KEY_BYTES]>, KeyError> {
    #[cfg(test)]
    KDF_RUNS.with(|c| c.set(c.get() + 1));
    kdf.validate()?;
    let params = Params::new(
        kdf.memory_kib,
        kdf.iterations,
        kdf.parallelism,
        Some(MASTER_KEY_BYTES),
    )
    .map_err(|e| KeyError::Crypto(format!("argon2id parameters: {e}")))?;
    // Our own buffer, so that running out of memory is an error rather than an abort, and so
    // that the password-derived blocks are wiped afterwards.
    let blocks_len = kdf.memory_kib as usize;
    let mut blocks: Zeroizing<Vec<Block>> = Zeroizing::new(Vec::new());
    blocks.try_reserve_exact(blocks_len).map_err(|_| {
        KeyError::Crypto(format!(
            "cannot allocate {} MiB for argon2id",
            kdf.memory_kib / 1024
        ))
    })?;
    blocks.resize(blocks_len, Block::default());
    let mut out = Zeroizing::new([0u8; MASTER_KEY_BYTES]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into_with_memory(password, salt, &mut out[..], &mut blocks[..])
        .map_err(|e| KeyError::Crypto(format!("argon2id failed: {e}")))?;
    Ok(out)
}

/// Makes metadata safe to print and to parse back.
fn clean_meta(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(META_MAX_BYTES));
    for c in s.chars() {
        let c = if c.is_control() { '?' } else { c };
        if out.len() + c.len_utf8() > META_MAX_BYTES {
            break;
        }
        out.push(c);
    }
    out
}

/// A parser error as one printable line of bounded length (key files are hostile input).
fn json_error(e: serde_json::Error) -> KeyError {
    let text = e.to_string();
    let mut reason = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == REASON_MAX_CHARS {
            reason.push_str("...");
            break;
        }
        if c.is_control() {
            reason.extend(c.escape_default());
        } else {
            reason.push(c);
        }
    }
    KeyError::corrupt(reason)
}

/// Where the secret that opens a vault comes from; see [`SecretSource::secret`] for the order.
///
/// The environment is read once, by [`SecretSource::from_env_and`].
#[derive(Clone, Default)]
pub struct SecretSource {
    /// `--password-file`.
    pub password_file: Option<PathBuf>,
    /// `--key-file`.
    pub key_file: Option<PathBuf>,
    env_password_file: Option<PathBuf>,
    env_password_command: Option<String>,
    env_key_file: Option<PathBuf>,
    interactive: bool,
}

impl fmt::Debug for SecretSource {
    // The command may embed a secret (`echo hunter2`); show only whether it is set.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretSource")
            .field("password_file", &self.password_file)
            .field("key_file", &self.key_file)
            .field("env_password_file", &self.env_password_file)
            .field(
                "env_password_command",
                &self.env_password_command.as_ref().map(|_| ".."),
            )
            .field("env_key_file", &self.env_key_file)
            .field("interactive", &self.interactive)
            .finish()
    }
}

impl SecretSource {
    /// The CLI's `--password-file` / `--key-file` plus `VAULT_PASSWORD_FILE`,
    /// `VAULT_PASSWORD_COMMAND` and `VAULT_KEY_FILE` (empty values count as unset), and whether
    /// stdin is a terminal.
    pub fn from_env_and(password_file: Option<PathBuf>, key_file: Option<PathBuf>) -> Self {
        Self::from_lookup(password_file, key_file, io::stdin().is_terminal(), |name| {
            std::env::var_os(name)
        })
    }

    /// `from_env_and` with the environment passed in, so tests need not mutate the process's.
    fn from_lookup(
        password_file: Option<PathBuf>,
        key_file: Option<PathBuf>,
        interactive: bool,
        lookup: impl Fn(&str) -> Option<OsString>,
    ) -> Self {
        let var = |name: &str| lookup(name).filter(|v| !v.is_empty());
        SecretSource {
            password_file,
            key_file,
            env_password_file: var(ENV_PASSWORD_FILE).map(PathBuf::from),
            env_password_command: var(ENV_PASSWORD_COMMAND)
                .map(|c| c.to_string_lossy().into_owned()),
            env_key_file: var(ENV_KEY_FILE).map(PathBuf::from),
            interactive,
        }
    }

    /// Whether a flag or the environment names a secret (no prompt needed).
    pub fn is_configured(&self) -> bool {
        self.password_file.is_some()
            || self.key_file.is_some()
            || self.env_password_file.is_some()
            || self.env_password_command.is_some()
            || self.env_key_file.is_some()
    }

    /// Reads the secret from the first source set, in this order: `--password-file`,
    /// `--key-file` (both at once is an error), `VAULT_PASSWORD_FILE`, `VAULT_PASSWORD_COMMAND`,
    /// `VAULT_KEY_FILE`, then a prompt `"{Purpose}: "` on the terminal when stdin is one; else
    /// `NoSecret`. Flags come before the environment so that a flag always wins.
    pub fn secret(&self, purpose: &str) -> Result<Secret, KeyError> {
        match (&self.password_file, &self.key_file) {
            (Some(_), Some(_)) => Err(KeyError::Invalid(
                "give either --password-file or --key-file, not both".into(),
            )),
            (Some(p), None) => read_password_file(p),
            (None, Some(p)) => read_raw_key_file(p),
            (None, None) => {
                if let Some(p) = &self.env_password_file {
                    read_password_file(p)
                } else if let Some(c) = &self.env_password_command {
                    run_password_command(c)
                } else if let Some(p) = &self.env_key_file {
                    read_raw_key_file(p)
                } else if self.interactive {
                    let mut chars = purpose.chars();
                    let prompt: String = match chars.next() {
                        Some(c) => c.to_uppercase().chain(chars).collect(),
                        None => "Password".into(),
                    };
                    prompt_password(&format!("{prompt}: ")).map(Secret::Password)
                } else {
                    Err(KeyError::NoSecret(format!(
                        "no {purpose}: set {ENV_PASSWORD_FILE}=FILE or \
                         {ENV_PASSWORD_COMMAND}=COMMAND (or {ENV_KEY_FILE}=FILE for a raw key \
                         file), or run on a terminal to be asked"
                    )))
                }
            }
        }
    }
}

/// Reads a new secret for `vault init`, `key add` and `key passwd`: from `--new-password-file`,
/// from `--new-key-file`, or by asking twice on the terminal (the answers must match).
pub fn new_secret(
    password_file: Option<&Path>,
    key_file: Option<&Path>,
) -> Result<Secret, KeyError> {
    new_secret_from(password_file, key_file, io::stdin().is_terminal())
}

fn new_secret_from(
    password_file: Option<&Path>,
    key_file: Option<&Path>,
    interactive: bool,
) -> Result<Secret, KeyError> {
    match (password_file, key_file) {
        (Some(_), Some(_)) => Err(KeyError::Invalid(
            "give either --new-password-file or --new-key-file, not both".into(),
        )),
        (Some(p), None) => read_password_file(p),
        (None, Some(p)) => read_raw_key_file(p),
        (None, None) if interactive => {
            let first = prompt_password("New vault password: ")?;
            let again = Zeroizing::new(prompt_password("Repeat the new vault password: ")?);
            if first != *again {
                return Err(KeyError::Invalid("the two passwords differ".into()));
            }
            Ok(Secret::Password(first))
        }
        (None, None) => Err(KeyError::NoSecret(
            "no new password: pass --new-password-file FILE or --new-key-file FILE, or run on a \
             terminal to be asked"
                .into(),
        )),
    }
}

/// Reads at most `max` bytes of `path`; a longer file is an error.
fn read_capped(path: &Path, max: usize, what: &str) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let file = std::fs::File::open(path).map_err(|e| KeyError::io(path, e))?;
    // Sized up front so that growing the buffer leaves no copies of the secret behind.
    let hint = file
        .metadata()
        .map(|m| usize::try_from(m.len()).unwrap_or(usize::MAX))
        .unwrap_or(0);
    let mut buf = Zeroizing::new(Vec::with_capacity(hint.min(max) + 1));
    file.take(max as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| KeyError::io(path, e))?;
    if buf.len() > max {
        return Err(KeyError::Invalid(format!(
            "{what} {} is larger than {max} bytes",
            path.display()
        )));
    }
    Ok(buf)
}

/// Drops one trailing `\n` or `\r\n`, as editors and `echo` add.
fn strip_one_newline(buf: &mut Vec<u8>) {
    if buf.ends_with(b"\r\n") {
        buf.truncate(buf.len() - 2);
    } else if buf.ends_with(b"\n") {
        buf.truncate(buf.len() - 1);
    }
}

fn read_password_file(path: &Path) -> Result<Secret, KeyError> {
    let mut buf = read_capped(path, PASSWORD_MAX_BYTES, "password file")?;
    strip_one_newline(&mut buf);
    if buf.is_empty() {
        return Err(KeyError::Invalid(format!(
            "password file {} is empty",
            path.display()
        )));
    }
    Ok(Secret::Password(std::mem::take(&mut *buf)))
}

fn read_raw_key_file(path: &Path) -> Result<Secret, KeyError> {
    let mut buf = read_capped(path, RAW_KEY_FILE_MAX_BYTES, "key file")?;
    if buf.len() < RAW_KEY_FILE_MIN_BYTES {
        return Err(KeyError::Invalid(format!(
            "key file {} holds {} bytes; a raw key file needs at least {RAW_KEY_FILE_MIN_BYTES} \
             (make one with `head -c 32 /dev/urandom > FILE`)",
            path.display(),
            buf.len()
        )));
    }
    Ok(Secret::KeyFile(std::mem::take(&mut *buf)))
}

/// Runs `sh -c command` with stdin and stderr inherited (a pinentry may need them) and takes its
/// stdout as the password. Errors never show the command or its output: either may hold the
/// password.
fn run_password_command(command: &str) -> Result<Secret, KeyError> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::inherit())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| KeyError::Command(format!("cannot run {ENV_PASSWORD_COMMAND}: {e}")))?;
    let stdout = child
        .stdout
        .take()
        .expect("invariant: stdout was set to piped");
    let mut out = Zeroizing::new(Vec::with_capacity(1024));
    let read = stdout
        .take(PASSWORD_MAX_BYTES as u64 + 1)
        .read_to_end(&mut out);
    if read.is_err() || out.len() > PASSWORD_MAX_BYTES {
        // Best effort: the command is abandoned either way.
        let _ = child.kill();
        let _ = child.wait();
        let why = match read {
            Err(e) => format!("reading its output failed: {e}"),
            Ok(_) => format!("it printed more than {PASSWORD_MAX_BYTES} bytes"),
        };
        return Err(KeyError::Command(format!("{ENV_PASSWORD_COMMAND}: {why}")));
    }
    let status = child
        .wait()
        .map_err(|e| KeyError::Command(format!("{ENV_PASSWORD_COMMAND}: {e}")))?;
    if !status.success() {
        let how = match status.code() {
            Some(code) => format!("exited with code {code}"),
            None => "was killed by a signal".into(),
        };
        return Err(KeyError::Command(format!(
            "{ENV_PASSWORD_COMMAND} {how}; its output is not shown"
        )));
    }
    strip_one_newline(&mut out);
    if out.is_empty() {
        return Err(KeyError::Command(format!(
            "{ENV_PASSWORD_COMMAND} printed no password"
        )));
    }
    Ok(Secret::Password(std::mem::take(&mut *out)))
}

/// Asks on the terminal (rpassword reads `/dev/tty` with echo off).
fn prompt_password(prompt: &str) -> Result<Vec<u8>, KeyError> {
    let answer = Zeroizing::new(
        rpassword::prompt_password(prompt).map_err(|e| KeyError::io(Path::new("/dev/tty"), e))?,
    );
    if answer.is_empty() {
        return Err(KeyError::Invalid("the password is empty".into()));
    }
    Ok(answer.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    const VAULT: &str = "3f1c0a7e9b2d4c6e8f0a1b3c5d7e9f1a2b4c6d8e0f1a3b5c7d9e1f2a4b6c8d0e";
    const FAST: KdfParams = KdfParams {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };

    fn password(p: &str) -> Secret {
        Secret::Password(p.as_bytes().to_vec())
    }

    fn raw_key(fill: u8) -> Secret {
        Secret::KeyFile(vec![fill; 32])
    }

    fn make(master: &MasterKey, secret: &Secret) -> KeyFile {
        KeyFile::create(
            master,
            secret,
            &FAST,
            VAULT,
            "host1",
            "alice",
            "2026-11-02T10:00:00Z",
        )
        .unwrap()
    }

    fn kdf_runs() -> usize {
        KDF_RUNS.with(|c| c.get())
    }

    fn json(kf: &KeyFile) -> serde_json::Value {
        serde_json::from_slice(&kf.to_bytes()).unwrap()
    }

    fn parse_value(v: &serde_json::Value) -> Result<KeyFile, KeyError> {
        KeyFile::parse(&serde_json::to_vec(v).unwrap())
    }

    fn assert_corrupt(r: Result<KeyFile, KeyError>, needle: &str) {
        match r {
            Err(KeyError::Corrupt { reason, .. }) => {
                assert!(reason.contains(needle), "{reason:?} lacks {needle:?}")
            }
            other => panic!("expected Corrupt({needle}), got {other:?}"),
        }
    }

    #[test]
    fn password_key_file_round_trips() {
        let master = MasterKey::generate().unwrap();
        let kf = make(&master, &password("correct horse"));
        let back = KeyFile::parse(&kf.to_bytes()).unwrap();
        assert_eq!(back, kf);
        assert_eq!(back.kind(), KeyKind::Password);
        assert_eq!(back.kdf(), Some(&FAST));
        assert_eq!(
            (back.created(), back.host(), back.user()),
            ("2026-11-02T10:00:00Z", "host1", "alice")
        );
        let opened = back.unwrap_key(&password("correct horse"), VAULT).unwrap();
        assert_eq!(opened.as_bytes(), master.as_bytes());

        let v = json(&kf);
        assert_eq!(v["version"], 1);
        assert_eq!(v["kind"], "password");
        assert_eq!(v["kdf"]["algorithm"], "argon2id");
        assert_eq!(v["kdf"]["version"], 19);
        assert_eq!(v["kdf"]["salt"].as_str().unwrap().len(), 64);
        assert_eq!(v["nonce"].as_str().unwrap().len(), 48);
        assert_eq!(v["wrapped"].as_str().unwrap().len(), 96);
        assert_eq!(v["id"].as_str().unwrap(), kf.id().to_hex());
        assert!(kf.to_bytes().ends_with(b"}\n"));
    }

    #[test]
    fn raw_key_file_round_trips_without_kdf() {
        let master = MasterKey::generate().unwrap();
        let kf = make(&master, &raw_key(7));
        let back = KeyFile::parse(&kf.to_bytes()).unwrap();
        assert_eq!(back.kind(), KeyKind::KeyFile);
        assert!(json(&kf).get("kdf").is_none());
        let opened = back.unwrap_key(&raw_key(7), VAULT).unwrap();
        assert_eq!(opened.as_bytes(), master.as_bytes());
    }

    #[test]
    fn fresh_ids_salts_and_nonces_differ() {
        let master = MasterKey::generate().unwrap();
        let a = make(&master, &password("pw"));
        let b = make(&master, &password("pw"));
        assert_ne!(a.id(), b.id());
        assert_ne!(json(&a)["kdf"]["salt"], json(&b)["kdf"]["salt"]);
        assert_ne!(json(&a)["nonce"], json(&b)["nonce"]);
        assert_ne!(MasterKey::generate().unwrap().as_bytes(), master.as_bytes());
    }

    #[test]
    fn wrong_secret_is_wrong_secret() {
        let master = MasterKey::generate().unwrap();
        let pw = make(&master, &password("right"));
        let raw = make(&master, &raw_key(1));
        assert!(matches!(
            pw.unwrap_key(&password("wrong"), VAULT),
            Err(KeyError::WrongSecret)
        ));
        assert!(matches!(
            raw.unwrap_key(&raw_key(2), VAULT),
            Err(KeyError::WrongSecret)
        ));
        // The other kind of secret is refused before any KDF runs.
        let before = kdf_runs();
        assert!(matches!(
            pw.unwrap_key(&raw_key(1), VAULT),
            Err(KeyError::WrongSecret)
        ));
        assert!(matches!(
            raw.unwrap_key(&password("right"), VAULT),
            Err(KeyError::WrongSecret)
        ));
        assert_eq!(kdf_runs(), before);
    }

    #[test]
    fn key_file_of_another_vault_or_renamed_does_not_open() {
        let master = MasterKey::generate().unwrap();
        let kf = make(&master, &password("pw"));
        assert!(matches!(
            kf.unwrap_key(&password("pw"), "another-vault"),
            Err(KeyError::WrongSecret)
        ));
        let mut renamed = kf.clone();
        renamed.id = KeyId([0xaa; KEY_ID_BYTES]);
        assert!(matches!(
            renamed.unwrap_key(&password("pw"), VAULT),
            Err(KeyError::WrongSecret)
        ));
    }

    #[test]
    fn flipped_bits_in_wrapped_nonce_or_salt_do_not_open() {
        let master = MasterKey::generate().unwrap();
        let kf = make(&master, &password("pw"));
        for i in 0..WRAPPED_BYTES {
            let mut bad = kf.clone();
            bad.wrapped[i] ^= 0x01;
            assert!(matches!(
                bad.unwrap_key(&password("pw"), VAULT),
                Err(KeyError::WrongSecret)
            ));
        }
        for i in 0..NONCE_BYTES {
            let mut bad = kf.clone();
            bad.nonce[i] ^= 0x80;
            assert!(matches!(
                bad.unwrap_key(&password("pw"), VAULT),
                Err(KeyError::WrongSecret)
            ));
        }
        let mut bad = kf.clone();
        if let Wrapping::Password { salt, .. } = &mut bad.wrapping {
            salt[5] ^= 0x01;
        }
        assert!(matches!(
            bad.unwrap_key(&password("pw"), VAULT),
            Err(KeyError::WrongSecret)
        ));
    }

    /// Any one-bit change in the stored text either fails cleanly or, when it only touched
    /// unauthenticated metadata, still yields the same master key; never another key.
    #[test]
    fn every_bit_flip_in_the_text_fails_cleanly_or_yields_the_same_key() {
        let master = MasterKey::generate().unwrap();
        for secret in [password("pw"), raw_key(9)] {
            let bytes = make(&master, &secret).to_bytes();
            for i in 0..bytes.len() {
                for bit in [0x01u8, 0x20, 0x80] {
                    let mut bad = bytes.clone();
                    bad[i] ^= bit;
                    match KeyFile::parse(&bad) {
                        Err(KeyError::Corrupt { .. }) => {}
                        Err(e) => panic!("byte {i}: unexpected {e:?}"),
                        Ok(kf) => match kf.unwrap_key(&secret, VAULT) {
                            Ok(k) => assert_eq!(k.as_bytes(), master.as_bytes(), "byte {i}"),
                            Err(KeyError::WrongSecret) => {}
                            Err(e) => panic!("byte {i}: unexpected {e:?}"),
                        },
                    }
                }
            }
        }
    }

    #[test]
    fn parse_rejects_unknown_fields() {
        let kf = make(&MasterKey::generate().unwrap(), &password("pw"));
        let mut v = json(&kf);
        v["extra"] = 1.into();
        assert_corrupt(parse_value(&v), "unknown field");
        let mut v = json(&kf);
        v["kdf"]["pepper"] = "x".into();
        assert_corrupt(parse_value(&v), "unknown field");
    }

    #[test]
    fn parse_rejects_bad_hex() {
        let kf = make(&MasterKey::generate().unwrap(), &password("pw"));
        let cases: [(&[&str], &str, &str); 7] = [
            (&["id"], "zz", "id"),
            (&["id"], &"A".repeat(32), "id"),
            (&["nonce"], &"0".repeat(46), "nonce"),
            (&["nonce"], &"g".repeat(48), "nonce"),
            (&["wrapped"], &"0".repeat(98), "wrapped"),
            (&["kdf", "salt"], &"0".repeat(62), "salt"),
            (&["kdf", "salt"], &"0".repeat(63), "salt"),
        ];
        for (path, value, needle) in cases {
            let mut v = json(&kf);
            let mut slot = &mut v;
            for key in path {
                slot = &mut slot[*key];
            }
            *slot = value.into();
            assert_corrupt(parse_value(&v), needle);
        }
    }

    #[test]
    fn parse_rejects_absurd_or_foreign_kdf() {
        let kf = make(&MasterKey::generate().unwrap(), &password("pw"));
        let cases: [(&str, serde_json::Value, &str); 7] = [
            ("memory_kib", (100u64 * 1024 * 1024).into(), "memory"),
            ("memory_kib", 4.into(), "memory"),
            ("iterations", 0.into(), "iterations"),
            ("iterations", 1_000_000.into(), "iterations"),
            ("parallelism", 17.into(), "parallelism"),
            ("algorithm", "argon2i".into(), "argon2id"),
            ("version", 16.into(), "version"),
        ];
        for (field, value, needle) in cases {
            let mut v = json(&kf);
            v["kdf"][field] = value;
            assert_corrupt(parse_value(&v), needle);
        }
        // memory_kib beyond u32 is a type error, still Corrupt.
        let mut v = json(&kf);
        v["kdf"]["memory_kib"] = (1u64 << 40).into();
        assert_corrupt(parse_value(&v), "");
    }

    #[test]
    fn parse_rejects_oversize_versions_and_mismatched_kinds() {
        let mut big = b"{\"version\":1,\"host\":\"".to_vec();
        big.resize(KEY_FILE_MAX_BYTES + 1, b'a');
        assert_corrupt(KeyFile::parse(&big), "limit");

        let master = MasterKey::generate().unwrap();
        let mut v = json(&make(&master, &password("pw")));
        v["version"] = 2.into();
        v["future"] = true.into();
        assert_corrupt(parse_value(&v), "unsupported version 2");

        let mut v = json(&make(&master, &password("pw")));
        v["kind"] = "keyfile".into();
        assert_corrupt(parse_value(&v), "with a kdf");

        let mut v = json(&make(&master, &raw_key(1)));
        v["kind"] = "password".into();
        assert_corrupt(parse_value(&v), "without kdf");

        assert_corrupt(KeyFile::parse(b""), "");
        assert_corrupt(KeyFile::parse(b"\xff\xfe"), "");
        assert_corrupt(KeyFile::parse(b"[1,2]"), "");
    }

    #[test]
    fn parse_errors_are_one_printable_line() {
        let kf = make(&MasterKey::generate().unwrap(), &password("pw"));
        let mut v = json(&kf);
        v["\u{1b}[31mevil\nfield"] = 1.into();
        let err = parse_value(&v).unwrap_err().to_string();
        assert!(!err.chars().any(char::is_control), "{err:?}");

        let mut v = json(&kf);
        v["host"] = "evil\u{1b}[2J".into();
        assert_corrupt(parse_value(&v), "control characters");
    }

    #[test]
    fn create_cleans_metadata_and_refuses_weak_secrets() {
        let master = MasterKey::generate().unwrap();
        let long = "h".repeat(1000);
        let kf = KeyFile::create(
            &master,
            &password("pw"),
            &FAST,
            VAULT,
            &long,
            "bob\u{7}",
            "now",
        )
        .unwrap();
        assert_eq!(kf.host().len(), META_MAX_BYTES);
        assert_eq!(kf.user(), "bob?");
        assert_eq!(KeyFile::parse(&kf.to_bytes()).unwrap(), kf);

        let create = |s: &Secret, kdf: &KdfParams| {
            KeyFile::create(&master, s, kdf, VAULT, "h", "u", "now").map(|_| ())
        };
        assert!(matches!(
            create(&password(""), &FAST),
            Err(KeyError::Invalid(_))
        ));
        assert!(matches!(
            create(&Secret::KeyFile(vec![1; 31]), &FAST),
            Err(KeyError::Invalid(_))
        ));
        let absurd = KdfParams {
            memory_kib: u32::MAX,
            ..FAST
        };
        assert!(matches!(
            create(&password("pw"), &absurd),
            Err(KeyError::Invalid(_))
        ));
    }

    #[test]
    fn kdf_params_bounds() {
        KdfParams::default().validate().unwrap();
        assert_eq!(KdfParams::default().memory_kib, 65536);
        FAST.validate().unwrap();
        let ok = |m, t, p| {
            KdfParams {
                memory_kib: m,
                iterations: t,
                parallelism: p,
            }
            .validate()
            .is_ok()
        };
        assert!(ok(8, 1, 1));
        assert!(ok(128, 100, 16));
        assert!(ok(4 * 1024 * 1024, 1, 1));
        assert!(!ok(7, 1, 1));
        assert!(!ok(127, 1, 16));
        assert!(!ok(4 * 1024 * 1024 + 1, 1, 1));
        assert!(!ok(64, 0, 1));
        assert!(!ok(64, 101, 1));
        assert!(!ok(64, 1, 0));
        assert!(!ok(256, 1, 17));
    }

    #[test]
    fn unlock_picks_the_matching_file_and_skips_the_other_kind() {
        let master = MasterKey::generate().unwrap();
        let files = vec![
            make(&master, &raw_key(1)),
            make(&master, &password("alice")),
            make(&master, &raw_key(2)),
            make(&master, &password("bob")),
        ];

        let before = kdf_runs();
        let (i, key) = unlock(&files, &password("bob"), VAULT).unwrap();
        assert_eq!(i, 3);
        assert_eq!(key.as_bytes(), master.as_bytes());
        assert_eq!(
            kdf_runs() - before,
            2,
            "argon2 ran only for the password files"
        );

        let before = kdf_runs();
        let (i, _) = unlock(&files, &raw_key(2), VAULT).unwrap();
        assert_eq!(i, 2);
        assert_eq!(kdf_runs(), before, "a raw key file never runs argon2");

        let before = kdf_runs();
        assert!(matches!(
            unlock(&files, &password("mallory"), VAULT),
            Err(KeyError::WrongSecret)
        ));
        assert_eq!(kdf_runs() - before, 2);
        assert!(matches!(
            unlock(&files, &password("bob"), "other-vault"),
            Err(KeyError::WrongSecret)
        ));
        assert!(matches!(
            unlock(&files[..1], &password("bob"), VAULT),
            Err(KeyError::WrongSecret)
        ));
        assert!(matches!(
            unlock(&[], &password("bob"), VAULT),
            Err(KeyError::Corrupt { .. })
        ));
    }

    #[test]
    fn password_files_lose_exactly_one_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let cases: [(&[u8], Option<&[u8]>); 8] = [
            (b"pw\n", Some(b"pw")),
            (b"pw\r\n", Some(b"pw")),
            (b"pw", Some(b"pw")),
            (b"pw\n\n", Some(b"pw\n")),
            (b" pw \n", Some(b" pw ")),
            (b"pw\r", Some(b"pw\r")),
            (b"\n", None),
            (b"", None),
        ];
        for (i, (content, want)) in cases.into_iter().enumerate() {
            let path = dir.path().join(format!("pw{i}"));
            std::fs::write(&path, content).unwrap();
            let source = SecretSource {
                password_file: Some(path),
                ..SecretSource::default()
            };
            match (source.secret("vault password"), want) {
                (Ok(Secret::Password(ref got)), Some(want)) => assert_eq!(got, want),
                (Err(KeyError::Invalid(msg)), None) => assert!(msg.contains("empty")),
                (got, want) => panic!("{content:?}: got {got:?}, want {want:?}"),
            }
        }
        let missing = SecretSource {
            password_file: Some(dir.path().join("nope")),
            ..SecretSource::default()
        };
        assert!(matches!(
            missing.secret("vault password"),
            Err(KeyError::Io { .. })
        ));
    }

    #[test]
    fn raw_key_files_are_taken_whole_and_must_be_long_enough() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.key");
        let mut content = vec![0x42u8; 32];
        content.push(b'\n');
        std::fs::write(&good, &content).unwrap();
        let source = SecretSource {
            key_file: Some(good),
            ..SecretSource::default()
        };
        match source.secret("vault key") {
            Ok(Secret::KeyFile(ref got)) => assert_eq!(*got, content),
            other => panic!("{other:?}"),
        }
        let short = dir.path().join("short.key");
        std::fs::write(&short, [1u8; 31]).unwrap();
        let source = SecretSource {
            key_file: Some(short),
            ..SecretSource::default()
        };
        assert!(matches!(
            source.secret("vault key"),
            Err(KeyError::Invalid(_))
        ));
    }

    #[test]
    fn password_command_success_failure_and_empty_output() {
        let cmd = |c: &str| {
            SecretSource {
                env_password_command: Some(c.into()),
                ..SecretSource::default()
            }
            .secret("vault password")
        };
        match cmd("printf 'hunter2\\n'") {
            Ok(Secret::Password(ref p)) => assert_eq!(p, b"hunter2"),
            other => panic!("{other:?}"),
        }
        match cmd("echo leaked-secret; exit 1") {
            Err(KeyError::Command(msg)) => {
                assert!(msg.contains("code 1"), "{msg}");
                assert!(!msg.contains("leaked-secret"), "{msg}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(cmd("true"), Err(KeyError::Command(m)) if m.contains("no password")));
        assert!(matches!(cmd("echo"), Err(KeyError::Command(_))));
        assert!(
            matches!(cmd("head -c 70000 /dev/zero"), Err(KeyError::Command(m)) if m.contains("more than"))
        );
    }

    #[test]
    fn flags_beat_environment_and_nothing_set_names_the_variables() {
        let dir = tempfile::tempdir().unwrap();
        let flag = dir.path().join("flag");
        let env = dir.path().join("env");
        let key = dir.path().join("key");
        std::fs::write(&flag, "from-flag\n").unwrap();
        std::fs::write(&env, "from-env\n").unwrap();
        std::fs::write(&key, [3u8; 32]).unwrap();
        let base = SecretSource {
            env_password_file: Some(env.clone()),
            env_password_command: Some("echo from-command".into()),
            env_key_file: Some(key.clone()),
            ..SecretSource::default()
        };
        let get = |s: &SecretSource| match s.secret("vault password") {
            Ok(Secret::Password(ref p)) => String::from_utf8(p.clone()).unwrap(),
            Ok(Secret::KeyFile(_)) => "raw key file".into(),
            Err(e) => format!("error: {e}"),
        };
        let with = |f: &dyn Fn(&mut SecretSource)| {
            let mut s = base.clone();
            f(&mut s);
            get(&s)
        };
        assert_eq!(with(&|s| s.password_file = Some(flag.clone())), "from-flag");
        assert_eq!(with(&|s| s.key_file = Some(key.clone())), "raw key file");
        assert_eq!(with(&|_| {}), "from-env");
        assert_eq!(with(&|s| s.env_password_file = None), "from-command");
        assert_eq!(
            with(&|s| {
                s.env_password_file = None;
                s.env_password_command = None;
            }),
            "raw key file"
        );
        assert!(with(&|s| {
            s.password_file = Some(flag.clone());
            s.key_file = Some(key.clone());
        })
        .contains("not both"));

        match SecretSource::default().secret("vault password") {
            Err(KeyError::NoSecret(msg)) => {
                for var in [ENV_PASSWORD_FILE, ENV_PASSWORD_COMMAND, ENV_KEY_FILE] {
                    assert!(msg.contains(var), "{msg}");
                }
            }
            other => panic!("{other:?}"),
        }
    }

    /// Through `from_lookup`: `std::env::set_var` in a multi-threaded test binary races with
    /// every `getenv` made from C (sqlite, libc), so no test touches the real environment.
    #[test]
    fn environment_variables_are_read_and_empty_ones_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "env-password\n").unwrap();
        let env = |file: &str| {
            let vars = [
                (ENV_PASSWORD_FILE, OsString::from(file)),
                (ENV_PASSWORD_COMMAND, "printf from-command".into()),
                (ENV_KEY_FILE, "".into()),
            ];
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.clone())
            }
        };
        let s = SecretSource::from_lookup(None, None, false, env(pw.to_str().unwrap()));
        assert!(
            matches!(s.secret("vault password"), Ok(Secret::Password(ref p)) if p == b"env-password")
        );
        assert_eq!(s.env_key_file, None);

        let s = SecretSource::from_lookup(None, None, false, env(""));
        assert!(
            matches!(s.secret("vault password"), Ok(Secret::Password(ref p)) if p == b"from-command")
        );
        let debug = format!("{s:?}");
        assert!(!debug.contains("printf"), "{debug}");

        // The real environment is only read, never written.
        let s = SecretSource::from_env_and(Some(pw.clone()), None);
        assert_eq!(s.password_file, Some(pw));
    }

    #[test]
    fn new_secret_reads_one_source_or_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("new");
        std::fs::write(&pw, "new-password\r\n").unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, [5u8; 64]).unwrap();
        assert!(matches!(
            new_secret_from(Some(&pw), None, false),
            Ok(Secret::Password(ref p)) if p == b"new-password"
        ));
        assert!(matches!(
            new_secret_from(None, Some(&key), false),
            Ok(Secret::KeyFile(ref k)) if k.len() == 64
        ));
        assert!(matches!(
            new_secret_from(Some(&pw), Some(&key), false),
            Err(KeyError::Invalid(_))
        ));
        assert!(matches!(
            new_secret_from(None, None, false),
            Err(KeyError::NoSecret(m)) if m.contains("--new-password-file")
        ));
    }

    #[test]
    fn debug_never_shows_secret_bytes() {
        let master = MasterKey([0xab; 32]);
        assert_eq!(format!("{master:?}"), "MasterKey(..)");
        for s in [password("hunter2"), Secret::KeyFile(b"hunter2".repeat(5))] {
            let d = format!("{s:?}");
            assert!(!d.contains("hunter2") && !d.contains("104"), "{d}");
        }
        let kf = make(&master, &password("hunter2"));
        let d = format!("{kf:?}");
        assert!(
            !d.contains("hunter2") && !d.contains("171, 171, 171"),
            "{d}"
        );
    }

    #[test]
    fn key_id_parses_its_own_display() {
        let id = KeyId([0x1f; KEY_ID_BYTES]);
        assert_eq!(id.to_hex().parse::<KeyId>().unwrap(), id);
        assert_eq!(KeyId::from_hex(&id.to_hex().to_uppercase()).unwrap(), id);
        assert!(KeyId::from_hex("1f1f").is_err());
        assert_eq!(format!("{id:?}"), "KeyId(1f1f1f1f)");
    }
}
