//! Encryption at rest: the keys derived from the vault's master key, and the sealing and opening
//! of every stored object.
//!
//! An encrypted vault seals every blob (file chunks and trees), every pack trailer, every manifest
//! and the last-known-good ref with XChaCha20-Poly1305 under a key derived from the master key,
//! with a fresh random 24-byte nonce per object:
//!
//! ```text
//! sealed := nonce[24] ciphertext tag[16]
//! ```
//!
//! The associated data binds each object to what it claims to be (a blob to its id, a manifest to
//! its snapshot id), so a sealed object moved elsewhere does not open. Blob ids become keyed
//! blake3, and the chunker's gear table is seeded from the key, so neither the stored ids nor the
//! chunk boundaries let someone without the key test for known content. A plain vault (`none`)
//! uses the same code with every operation the identity and unkeyed blake3.
//!
//! What stays readable without the key: object names and sizes, `config.json`, the key files
//! (wrapped), the local `index.sqlite` (keyed ids and offsets) and the local `audit.log`.

use std::sync::Arc;

use chacha20poly1305::aead::{Aead, AeadInPlace, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};

use crate::id::BlobId;

/// Nonce plus tag: what sealing adds to an object.
pub const SEAL_OVERHEAD: usize = NONCE_BYTES + TAG_BYTES;
const NONCE_BYTES: usize = 24;
const TAG_BYTES: usize = 16;

/// The value of `encryption` in `config.json` for an encrypted vault.
pub const XCHACHA20_POLY1305: &str = "xchacha20-poly1305";

/// What a sealed object is, mixed into its associated data.
#[derive(Debug, Clone, Copy)]
pub enum Domain {
    Blob,
    Trailer,
    Manifest,
    Ref,
}

impl Domain {
    fn tag(self) -> &'static [u8] {
        match self {
            Domain::Blob => b"atlasvault blob v1\0",
            Domain::Trailer => b"atlasvault trailer v1\0",
            Domain::Manifest => b"atlasvault manifest v1\0",
            Domain::Ref => b"atlasvault ref v1\0",
        }
    }
}

struct Keys {
    id_key: [u8; 32],
    aead: XChaCha20Poly1305,
    chunker_seed: u64,
}

/// The vault's crypto: keyed ids and AEAD sealing, or the identity for a plain vault. Cheap to
/// clone and share between threads.
#[derive(Clone, Default)]
pub struct Crypto(Option<Arc<Keys>>);

impl std::fmt::Debug for Crypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_encrypted() {
            "Crypto(encrypted)"
        } else {
            "Crypto(plain)"
        })
    }
}

impl Crypto {
    /// No encryption: unkeyed ids, objects stored as they are.
    pub fn plain() -> Self {
        Crypto(None)
    }

    /// The subkeys of a master key, each derived with its own blake3 context.
    pub fn from_master(master: &[u8; 32]) -> Self {
        let id_key = blake3::derive_key("atlasvault 2026-11 blob id key", master);
        let data_key = blake3::derive_key("atlasvault 2026-11 data sealing key", master);
        let seed = blake3::derive_key("atlasvault 2026-11 chunker seed", master);
        let mut chunker_seed = u64::from_le_bytes(seed[..8].try_into().expect("8 bytes"));
        if chunker_seed == 0 {
            chunker_seed = 1; // fastcdc treats 0 as "no seed"
        }
        Crypto(Some(Arc::new(Keys {
            id_key,
            aead: XChaCha20Poly1305::new((&data_key).into()),
            chunker_seed,
        })))
    }

    pub fn is_encrypted(&self) -> bool {
        self.0.is_some()
    }

    /// The id of a blob's plaintext: keyed blake3 in an encrypted vault.
    pub fn blob_id(&self, data: &[u8]) -> BlobId {
        match &self.0 {
            Some(k) => BlobId(*blake3::keyed_hash(&k.id_key, data).as_bytes()),
            None => BlobId::of(data),
        }
    }

    /// The FastCDC gear-table seed (0, the published table, in a plain vault).
    pub fn chunker_seed(&self) -> u64 {
        self.0.as_ref().map_or(0, |k| k.chunker_seed)
    }

    /// Seals `plaintext` (returned as is in a plain vault).
    pub fn seal(&self, domain: Domain, context: &[u8], plaintext: Vec<u8>) -> Vec<u8> {
        let Some(k) = &self.0 else {
            return plaintext;
        };
        let mut nonce = [0u8; NONCE_BYTES];
        getrandom::fill(&mut nonce).expect("invariant: the OS random source works");
        let aad = [domain.tag(), context].concat();
        // One copy of the plaintext, encrypted where it lies: `nonce ciphertext tag`.
        let mut out = Vec::with_capacity(SEAL_OVERHEAD + plaintext.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&plaintext);
        drop(plaintext);
        let tag = k
            .aead
            .encrypt_in_place_detached(XNonce::from_slice(&nonce), &aad, &mut out[NONCE_BYTES..])
            .expect("invariant: XChaCha20-Poly1305 encrypts any length we store");
        out.extend_from_slice(&tag);
        out
    }

    /// Opens a sealed object; the error says why (it never carries plaintext).
    pub fn open(&self, domain: Domain, context: &[u8], sealed: &[u8]) -> Result<Vec<u8>, String> {
        let Some(k) = &self.0 else {
            return Ok(sealed.to_vec());
        };
        if sealed.len() < SEAL_OVERHEAD {
            return Err(format!(
                "{} bytes is too short for a sealed object",
                sealed.len()
            ));
        }
        let (nonce, ct) = sealed.split_at(NONCE_BYTES);
        let aad = [domain.tag(), context].concat();
        k.aead
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad: &aad })
            .map_err(|_| "authentication failed (tampered, or sealed under another key)".into())
    }

    /// A small JSON object as stored: the JSON itself in a plain vault, else an envelope
    /// `{"sealed": "<hex>"}` so that the file stays JSON.
    pub fn seal_json(&self, domain: Domain, context: &[u8], json: Vec<u8>) -> Vec<u8> {
        if !self.is_encrypted() {
            return json;
        }
        let envelope = Envelope {
            sealed: hex::encode(self.seal(domain, context, json)),
        };
        let mut out = serde_json::to_vec(&envelope).expect("invariant: envelope serializes");
        out.push(b'\n');
        out
    }

    /// The JSON inside what [`Crypto::seal_json`] stored.
    pub fn open_json(
        &self,
        domain: Domain,
        context: &[u8],
        stored: &[u8],
    ) -> Result<Vec<u8>, String> {
        if !self.is_encrypted() {
            return Ok(stored.to_vec());
        }
        let envelope: Envelope = serde_json::from_slice(stored).map_err(|e| {
            format!("not a sealed object ({e}); was it written without encryption?")
        })?;
        let sealed = hex::decode(envelope.sealed).map_err(|e| format!("sealed object: {e}"))?;
        self.open(domain, context, &sealed)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    sealed: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealing_round_trips_binds_context_and_detects_every_flip() {
        let c = Crypto::from_master(&[7u8; 32]);
        let sealed = c.seal(Domain::Blob, b"id-1", b"secret payload".to_vec());
        assert_eq!(sealed.len(), 14 + SEAL_OVERHEAD);
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(
            c.open(Domain::Blob, b"id-1", &sealed).unwrap(),
            b"secret payload"
        );
        assert!(c.open(Domain::Blob, b"id-2", &sealed).is_err());
        assert!(c.open(Domain::Trailer, b"id-1", &sealed).is_err());
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert!(c.open(Domain::Blob, b"id-1", &bad).is_err(), "flip at {i}");
        }
        assert!(c.open(Domain::Blob, b"id-1", &sealed[..10]).is_err());
        let other = Crypto::from_master(&[8u8; 32]);
        assert!(other.open(Domain::Blob, b"id-1", &sealed).is_err());
        // Fresh nonces: the same plaintext seals differently.
        assert_ne!(
            sealed,
            c.seal(Domain::Blob, b"id-1", b"secret payload".to_vec())
        );
    }

    #[test]
    fn keyed_ids_differ_per_key_and_plain_is_identity() {
        let a = Crypto::from_master(&[1u8; 32]);
        let b = Crypto::from_master(&[2u8; 32]);
        assert_ne!(a.blob_id(b"x"), b.blob_id(b"x"));
        assert_ne!(a.blob_id(b"x"), BlobId::of(b"x"));
        assert_ne!(a.chunker_seed(), 0);
        let p = Crypto::plain();
        assert_eq!(p.blob_id(b"x"), BlobId::of(b"x"));
        assert_eq!(p.seal(Domain::Ref, b"", b"abc".to_vec()), b"abc");
        let j = a.seal_json(Domain::Manifest, b"m", b"{\"a\":1}".to_vec());
        assert!(serde_json::from_slice::<serde_json::Value>(&j).is_ok());
        assert_eq!(
            a.open_json(Domain::Manifest, b"m", &j).unwrap(),
            b"{\"a\":1}"
        );
        assert!(a.open_json(Domain::Manifest, b"m", b"{\"a\":1}").is_err());
    }
}
