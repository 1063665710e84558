//! Blobs: the one place where plaintext becomes stored bytes and back.
//!
//! Sealing compresses with zstd (or keeps the bytes raw when compression does not shrink them, or
//! when samples of a large data blob show that it would not: [`looks_incompressible`]),
//! decompresses the result again and re-hashes it before it may go into a pack (a flipped RAM bit
//! or a codec bug cannot put a blob into the vault that does not read back to its id), and then,
//! in an encrypted vault, seals it with the AEAD bound to the blob's id ([`crate::crypto`]).
//! Opening authenticates and decrypts, caps the output size before allocating, and checks the
//! (keyed) blake3 id of what it produced.

use std::borrow::Cow;
use std::cell::RefCell;

use crate::crypto::{Crypto, Domain};
use crate::error::{Error, Result};
use crate::id::BlobId;

/// Largest plaintext blob accepted from disk (a tree of a huge directory is the biggest case).
pub const MAX_BLOB_RAW_BYTES: u32 = 256 * 1024 * 1024;

/// Largest data blob: the largest chunk any chunker setting makes (a rendered template, stored
/// whole, is held to 4 MiB by its gate). Readers refuse a larger one before inflating it.
pub const MAX_DATA_BLOB_RAW_BYTES: u32 = fastcdc::v2020::MAXIMUM_MAX;

/// What a blob holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum BlobKind {
    Data = 0,
    Tree = 1,
}

impl BlobKind {
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(BlobKind::Data),
            1 => Some(BlobKind::Tree),
            _ => None,
        }
    }
}

/// How a blob's bytes are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Compression {
    None = 0,
    /// A zstd frame (blobs written before `ZstdBare`).
    Zstd = 1,
    /// A zstd frame without its 4-byte magic number, which is the same in every frame: what a
    /// writer stores now (4 bytes less a blob).
    ZstdBare = 2,
}

impl Compression {
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Compression::None),
            1 => Some(Compression::Zstd),
            2 => Some(Compression::ZstdBare),
            _ => None,
        }
    }
}

/// The magic number that opens every zstd frame.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

/// A blob ready to be appended to a pack.
#[derive(Debug)]
pub struct SealedBlob {
    pub id: BlobId,
    pub kind: BlobKind,
    pub compression: Compression,
    pub raw_len: u32,
    pub bytes: Vec<u8>,
}

/// Data blobs at least this large are sampled before zstd runs on them whole.
const SAMPLED_MIN_BYTES: usize = 128 * 1024;
/// Samples taken, evenly spread, and the size of each.
const SAMPLES: usize = 8;
const SAMPLE_BYTES: usize = 4096;
/// Samples that zstd level 1 cannot bring under this share (percent) of their size mark the blob
/// as incompressible: it is stored raw without a whole-blob attempt.
const SAMPLE_KEEP_PERCENT: usize = 97;

/// The zstd level the samples are compressed at.
const SAMPLE_LEVEL: i32 = 1;

thread_local! {
    /// One compressor per level used on this thread (the vault's level and [`SAMPLE_LEVEL`]).
    static COMPRESSORS: RefCell<Vec<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(Vec::new()) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

fn compress(raw: &[u8], level: i32) -> Result<Vec<u8>> {
    COMPRESSORS.with(|c| {
        let mut c = c.borrow_mut();
        let i = match c.iter().position(|(l, _)| *l == level) {
            Some(i) => i,
            None => {
                let comp = zstd::bulk::Compressor::new(level)
                    .map_err(|e| Error::Invalid(format!("zstd level {level}: {e}")))?;
                c.push((level, comp));
                c.len() - 1
            }
        };
        c[i].1
            .compress(raw)
            .map_err(|e| Error::Invalid(format!("zstd compression failed: {e}")))
    })
}

/// Whether `raw` looks incompressible (already compressed, encrypted or random: media, archives,
/// a filestore's attachments) from samples spread over it: zstd on a whole 1 MiB chunk of such
/// data costs several times what the samples do, only to be thrown away.
fn looks_incompressible(raw: &[u8]) -> Result<bool> {
    if raw.len() < SAMPLED_MIN_BYTES {
        return Ok(false);
    }
    let step = raw.len() / SAMPLES;
    let mut sample = Vec::with_capacity(SAMPLES * SAMPLE_BYTES);
    for i in 0..SAMPLES {
        sample.extend_from_slice(&raw[i * step..i * step + SAMPLE_BYTES]);
    }
    let packed = compress(&sample, SAMPLE_LEVEL)?;
    Ok(packed.len() * 100 >= sample.len() * SAMPLE_KEEP_PERCENT)
}

fn decompress(stored: &[u8], raw_len: usize) -> std::io::Result<Vec<u8>> {
    DECOMPRESSOR.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(zstd::bulk::Decompressor::new()?);
        }
        d.as_mut()
            .expect("invariant: decompressor just set")
            .decompress(stored, raw_len)
    })
}

/// Compresses `raw`, checks the result reads back to `id`, seals it, and returns the stored form.
pub fn seal(
    crypto: &Crypto,
    id: BlobId,
    kind: BlobKind,
    raw: &[u8],
    level: i32,
) -> Result<SealedBlob> {
    seal_cow(crypto, id, kind, Cow::Borrowed(raw), level)
}

/// [`seal`] taking the plaintext's buffer, which becomes the stored bytes when compression does
/// not shrink them (incompressible data is then copied only by the sealing, if at all).
pub fn seal_owned(
    crypto: &Crypto,
    id: BlobId,
    kind: BlobKind,
    raw: Vec<u8>,
    level: i32,
) -> Result<SealedBlob> {
    seal_cow(crypto, id, kind, Cow::Owned(raw), level)
}

fn seal_cow(
    crypto: &Crypto,
    id: BlobId,
    kind: BlobKind,
    raw: Cow<'_, [u8]>,
    level: i32,
) -> Result<SealedBlob> {
    let raw_len = u32::try_from(raw.len())
        .ok()
        .filter(|n| *n <= MAX_BLOB_RAW_BYTES)
        .ok_or_else(|| Error::Invalid(format!("blob {id} of {} bytes is too large", raw.len())))?;
    let compressed = if kind == BlobKind::Data && looks_incompressible(&raw)? {
        None
    } else {
        Some(compress(&raw, level)?)
    };
    let (compression, bytes) = match compressed {
        Some(mut c)
            if c.len().saturating_sub(ZSTD_MAGIC.len()) < raw.len()
                && c.starts_with(&ZSTD_MAGIC) =>
        {
            c.drain(..ZSTD_MAGIC.len());
            (Compression::ZstdBare, c)
        }
        _ => (Compression::None, raw.into_owned()),
    };
    // Verify before write: what goes into the pack must open to the same id. The AEAD is not
    // re-opened: its tag already covers every byte from here on.
    let verified = match compression {
        Compression::None => check_raw(crypto, &id, raw_len, &bytes),
        Compression::Zstd | Compression::ZstdBare => {
            unpack(crypto, &id, compression, raw_len, Cow::Borrowed(&bytes)).map(drop)
        }
    };
    verified.map_err(|e| {
        Error::Invalid(format!(
            "blob {id} failed its verify-before-write check ({e}); refusing to store it"
        ))
    })?;
    Ok(SealedBlob {
        id,
        kind,
        compression,
        raw_len,
        bytes: crypto.seal(Domain::Blob, &id.0, bytes),
    })
}

/// Turns stored bytes back into plaintext and checks the plaintext hashes to `id`.
pub fn open(
    crypto: &Crypto,
    id: &BlobId,
    compression: Compression,
    raw_len: u32,
    stored: &[u8],
) -> Result<Vec<u8>> {
    if raw_len > MAX_BLOB_RAW_BYTES {
        return Err(Error::corrupt(
            format!("blob {id}"),
            format!("raw length {raw_len} too large"),
        ));
    }
    if crypto.is_encrypted() {
        let opened = crypto
            .open(Domain::Blob, &id.0, stored)
            .map_err(|r| Error::corrupt(format!("blob {id}"), r))?;
        unpack(crypto, id, compression, raw_len, Cow::Owned(opened))
    } else {
        unpack(crypto, id, compression, raw_len, Cow::Borrowed(stored))
    }
}

/// Decompresses (when compressed) and checks length and id. Bytes stored raw are returned as
/// they are, without a copy when they are owned.
fn unpack(
    crypto: &Crypto,
    id: &BlobId,
    compression: Compression,
    raw_len: u32,
    stored: Cow<'_, [u8]>,
) -> Result<Vec<u8>> {
    let stored = match compression {
        Compression::ZstdBare => {
            let mut framed = Vec::with_capacity(ZSTD_MAGIC.len() + stored.len());
            framed.extend_from_slice(&ZSTD_MAGIC);
            framed.extend_from_slice(&stored);
            Cow::Owned(framed)
        }
        _ => stored,
    };
    let raw = match compression {
        Compression::None => stored.into_owned(),
        Compression::Zstd | Compression::ZstdBare => {
            // Our frames always record their size: one that disagrees is refused before the
            // output buffer is allocated.
            let framed = zstd::zstd_safe::get_frame_content_size(&stored)
                .ok()
                .flatten();
            if framed != Some(u64::from(raw_len)) {
                return Err(Error::corrupt(
                    format!("blob {id}"),
                    format!("zstd frame size {framed:?} does not match length {raw_len}"),
                ));
            }
            decompress(&stored, raw_len as usize)
                .map_err(|e| Error::corrupt(format!("blob {id}"), format!("zstd: {e}")))?
        }
    };
    check_raw(crypto, id, raw_len, &raw)?;
    Ok(raw)
}

/// Checks that plaintext `raw` has the recorded length and hashes to `id`.
fn check_raw(crypto: &Crypto, id: &BlobId, raw_len: u32, raw: &[u8]) -> Result<()> {
    if raw.len() != raw_len as usize {
        return Err(Error::corrupt(
            format!("blob {id}"),
            format!("length {} instead of {raw_len}", raw.len()),
        ));
    }
    if crypto.blob_id(raw) != *id {
        return Err(Error::corrupt(
            format!("blob {id}"),
            "content does not match its id",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn seal_open_round_trip(data in proptest::collection::vec(any::<u8>(), 0..5000), rep in 0usize..4) {
            let raw: Vec<u8> = data.iter().cycle().take(data.len() * (rep + 1)).copied().collect();
            for c in [Crypto::plain(), Crypto::from_master(&[3; 32])] {
                let id = c.blob_id(&raw);
                let sealed = seal(&c, id, BlobKind::Data, &raw, 3).unwrap();
                let overhead = if c.is_encrypted() { crate::crypto::SEAL_OVERHEAD } else { 0 };
                prop_assert!(sealed.bytes.len() <= raw.len() + overhead);
                let back = open(&c, &id, sealed.compression, sealed.raw_len, &sealed.bytes).unwrap();
                prop_assert_eq!(&back, &raw);
                // Handing over the buffer stores the same: same compression, opens to the same.
                let owned = seal_owned(&c, id, BlobKind::Data, raw.clone(), 3).unwrap();
                prop_assert_eq!(owned.compression, sealed.compression);
                prop_assert_eq!(owned.bytes.len(), sealed.bytes.len());
                let back = open(&c, &id, owned.compression, owned.raw_len, &owned.bytes).unwrap();
                prop_assert_eq!(&back, &raw);
            }
        }
    }

    #[test]
    fn a_blob_whose_plaintext_does_not_hash_to_its_id_is_refused_before_it_is_stored() {
        let mut raw = vec![0u8; 4096];
        blake3::Hasher::new().finalize_xof().fill(&mut raw);
        // Large enough to be sampled and stored raw without a zstd attempt.
        let mut sampled = vec![0u8; 2 * SAMPLED_MIN_BYTES];
        blake3::Hasher::new_derive_key("t")
            .finalize_xof()
            .fill(&mut sampled);
        let text = b"INSERT INTO t VALUES (1, 'abc');\n".repeat(100);
        for c in [Crypto::plain(), Crypto::from_master(&[3; 32])] {
            // Stored raw (incompressible) and compressed: all are checked against the id.
            for data in [&raw, &sampled, &text] {
                let wrong = c.blob_id(b"something else");
                let err = seal_owned(&c, wrong, BlobKind::Data, data.clone(), 3).unwrap_err();
                assert!(err.to_string().contains("verify-before-write"), "{err}");
                assert!(seal(&c, wrong, BlobKind::Data, data, 3).is_err());
            }
        }
    }

    #[test]
    fn samples_tell_incompressible_blobs_from_those_worth_compressing() {
        let mut random = vec![0u8; 1 << 20];
        blake3::Hasher::new().finalize_xof().fill(&mut random);
        assert!(looks_incompressible(&random).unwrap());
        // Too small to sample: zstd decides alone.
        assert!(!looks_incompressible(&random[..SAMPLED_MIN_BYTES - 1]).unwrap());
        let text = b"INSERT INTO t VALUES (1, 'abc');\n".repeat(40_000);
        assert!(!looks_incompressible(&text).unwrap());
        // Half random, half text: compressed.
        let mut mixed = random[..1 << 19].to_vec();
        mixed.extend_from_slice(&text[..1 << 19]);
        assert!(!looks_incompressible(&mixed).unwrap());
        let c = Crypto::from_master(&[3; 32]);
        for (data, want) in [
            (&random, Compression::None),
            (&mixed, Compression::ZstdBare),
            (&text, Compression::ZstdBare),
        ] {
            let id = c.blob_id(data);
            let s = seal(&c, id, BlobKind::Data, data, 3).unwrap();
            assert_eq!(s.compression, want);
            assert_eq!(
                &open(&c, &id, s.compression, s.raw_len, &s.bytes).unwrap(),
                data
            );
        }
    }

    #[test]
    fn frames_are_stored_without_their_magic_and_whole_frames_still_open() {
        for c in [Crypto::plain(), Crypto::from_master(&[3; 32])] {
            let text = b"INSERT INTO t VALUES (1, 'abc');\n".repeat(100);
            let id = c.blob_id(&text);
            let frame = zstd::bulk::compress(&text, 3).unwrap();
            let s = seal(&c, id, BlobKind::Data, &text, 3).unwrap();
            assert_eq!(s.compression, Compression::ZstdBare);
            assert_eq!(
                s.bytes.len(),
                c.seal(Domain::Blob, &id.0, frame.clone()).len() - 4
            );
            assert_eq!(
                open(&c, &id, s.compression, s.raw_len, &s.bytes).unwrap(),
                text
            );
            // A bare frame is not a whole one, nor the other way round.
            assert!(open(&c, &id, Compression::Zstd, s.raw_len, &s.bytes).is_err());
            let whole = c.seal(Domain::Blob, &id.0, frame);
            assert_eq!(
                open(&c, &id, Compression::Zstd, s.raw_len, &whole).unwrap(),
                text
            );
            assert!(open(&c, &id, Compression::ZstdBare, s.raw_len, &whole).is_err());
            assert_eq!(Compression::from_u8(2), Some(Compression::ZstdBare));
            assert_eq!(Compression::from_u8(3), None);
        }
    }

    #[test]
    fn incompressible_is_stored_raw_and_tamper_is_detected() {
        let mut raw = vec![0u8; 4096];
        blake3::Hasher::new().finalize_xof().fill(&mut raw);
        for c in [Crypto::plain(), Crypto::from_master(&[3; 32])] {
            let id = c.blob_id(&raw);
            let sealed = seal(&c, id, BlobKind::Data, &raw, 3).unwrap();
            assert_eq!(sealed.compression, Compression::None);
            let mut bad = sealed.bytes.clone();
            bad[7] ^= 1;
            assert!(matches!(
                open(&c, &id, sealed.compression, sealed.raw_len, &bad),
                Err(Error::Corrupt { .. })
            ));
            let text = b"INSERT INTO t VALUES (1, 'abc');\n".repeat(100);
            let tid = c.blob_id(&text);
            let s = seal(&c, tid, BlobKind::Data, &text, 3).unwrap();
            assert_eq!(s.compression, Compression::ZstdBare);
            assert!(open(&c, &tid, s.compression, s.raw_len + 1, &s.bytes).is_err());
            // Sealed under one id, it does not open as another.
            assert!(open(&c, &id, s.compression, s.raw_len, &s.bytes).is_err());
        }
    }
}
