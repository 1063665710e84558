//! The key-file format: [`KeyFile`] wraps the master key for one secret, [`unlock`] finds the
//! key file a secret opens, and the wrapping crypto (argon2id, blake3, XChaCha20-Poly1305) lives
//! here. Where the secret comes from is `secret.rs`'s business, not this file's.

use argon2::{Algorithm, Argon2, Block, Params, Version};
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Key, Tag, XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{
    decode_hex_lower, random_bytes, KdfParams, KeyError, KeyId, KeyKind, MasterKey, Secret,
    AAD_PREFIX, KDF_ALGORITHM, KDF_VERSION, KEY_FILE_MAX_BYTES, KEY_FILE_VERSION,
    KEY_FILE_WRAP_CONTEXT, MASTER_KEY_BYTES, META_MAX_BYTES, NONCE_BYTES, REASON_MAX_CHARS,
    SALT_BYTES, WRAPPED_BYTES,
};

/// How the wrapping key is derived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Wrapping {
    Password {
        params: KdfParams,
        salt: [u8; SALT_BYTES],
    },
    KeyFile,
}

/// One key file: the master key wrapped for one secret. Holds no secret itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFile {
    pub(super) id: KeyId,
    created: String,
    host: String,
    user: String,
    pub(super) wrapping: Wrapping,
    pub(super) nonce: [u8; NONCE_BYTES],
    pub(super) wrapped: [u8; WRAPPED_BYTES],
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
    pub(super) static KDF_RUNS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
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
