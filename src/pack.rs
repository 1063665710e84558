//! Packs: immutable files of many blobs with a self-describing trailer.
//!
//! ```text
//! pack    := header blob* trailer footer
//! header  := "AVPK" version:u8 0 0 0                       (8 bytes)
//! trailer := entry*                  (version 1: plain, ENTRY_BYTES each)
//!          | seal(entry*)            (version 2: nonce, ciphertext, tag; see crate::crypto)
//!          | zstd(entry*)            (version 3: plain, one zstd frame)
//!          | seal(zstd(entry*))      (version 4)
//! entry   := id[32] kind:u8 compression:u8 0 0 offset:u64 stored_len:u32 raw_len:u32
//! footer  := trailer_len:u32 blake3(trailer as stored)[32] "AVPKEND1" (FOOTER_BYTES)
//! ```
//! All integers are little-endian. A pack's id is the blake3 of all its bytes, and it is stored as
//! `packs/<first 2 hex>/<id>.pack`. In an encrypted vault the blobs are sealed one by one and the
//! trailer as a whole; the footer's checksum covers the sealed trailer, so damage is found without
//! the key. The trailer alone is enough to rebuild the index (with the key), so losing
//! `index.sqlite` loses nothing. This module owns the byte format; where packs live and how they
//! are found is `index` and `vault`'s business.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::blob::{BlobKind, Compression, SealedBlob, MAX_BLOB_RAW_BYTES};
use crate::crypto::{Crypto, Domain, SEAL_OVERHEAD};
use crate::error::{Error, IoContext, Result};
use crate::fsutil;
use crate::id::{BlobId, PackId};

const MAGIC: &[u8; 4] = b"AVPK";
const END_MAGIC: &[u8; 8] = b"AVPKEND1";
/// Header version of a pack with a plain trailer.
const PACK_VERSION_PLAIN: u8 = 1;
/// Header version of a pack with a sealed trailer (encrypted vaults).
const PACK_VERSION_SEALED: u8 = 2;
/// Header version of a pack with a zstd-compressed plain trailer (what a writer makes now).
const PACK_VERSION_PLAIN_ZSTD: u8 = 3;
/// Header version of a pack with a zstd-compressed, then sealed trailer (what a writer makes now).
const PACK_VERSION_SEALED_ZSTD: u8 = 4;
/// The zstd level of trailers: their entries' ids do not compress, the rest (kinds, offsets,
/// lengths) does, at any level.
const TRAILER_ZSTD_LEVEL: i32 = 3;
/// Size of the pack header.
pub const HEADER_BYTES: u64 = 8;
/// Size of one trailer entry.
pub const ENTRY_BYTES: usize = 52;
/// Size of the footer.
pub const FOOTER_BYTES: u64 = 44;
/// A trailer larger than this is refused before allocating (a 1 GiB pack of 64 KiB blobs needs
/// under 1 MiB).
const MAX_TRAILER_BYTES: u32 = 64 * 1024 * 1024;
const WRITE_BUFFER_BYTES: usize = 1024 * 1024;
/// Blobs a writer puts in one pack before it finishes it, whatever the pack's size: a pack of a
/// million tiny files' blobs would otherwise hold its entries and its trailer (52 bytes a blob,
/// copied while it is sealed) in memory at once, about 50 MB for 200,000 blobs. At 65,536 the
/// trailer is 3.4 MB.
pub const MAX_BLOBS_PER_PACK: usize = 1 << 16;

/// Where one blob sits in a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PackEntry {
    pub id: BlobId,
    pub kind: BlobKind,
    pub compression: Compression,
    pub offset: u64,
    pub stored_len: u32,
    pub raw_len: u32,
}

impl PackEntry {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.id.0);
        out.push(self.kind as u8);
        out.push(self.compression as u8);
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.stored_len.to_le_bytes());
        out.extend_from_slice(&self.raw_len.to_le_bytes());
    }

    fn decode(b: &[u8]) -> std::result::Result<Self, String> {
        let id = BlobId::from_slice(&b[..32]).expect("invariant: entry slice is ENTRY_BYTES long");
        let kind =
            BlobKind::from_u8(b[32]).ok_or_else(|| format!("blob {id}: unknown kind {}", b[32]))?;
        let compression = Compression::from_u8(b[33])
            .ok_or_else(|| format!("blob {id}: unknown compression {}", b[33]))?;
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        Ok(PackEntry {
            id,
            kind,
            compression,
            offset: u64_at(36),
            stored_len: u32_at(44),
            raw_len: u32_at(48),
        })
    }
}

/// The path of a pack inside `packs/`.
pub fn pack_path(packs_dir: &Path, id: &PackId) -> PathBuf {
    let hex = id.to_hex();
    packs_dir.join(&hex[..2]).join(format!("{hex}.pack"))
}

/// Parses a pack name (`<64 hex>.pack`) back into its id.
pub fn parse_pack_name(name: &str) -> Option<PackId> {
    name.strip_suffix(".pack")
        .and_then(|h| PackId::from_hex(h).ok())
}

/// Reads the footer: returns the trailer's length and checksum after bounds checks.
fn parse_footer(
    footer: &[u8],
    pack_len: u64,
    layout: Layout,
) -> std::result::Result<(u32, [u8; 32]), String> {
    if pack_len < HEADER_BYTES + FOOTER_BYTES || footer.len() != FOOTER_BYTES as usize {
        return Err(format!("{pack_len} bytes is too short for a pack"));
    }
    if &footer[36..44] != END_MAGIC {
        return Err("footer magic missing (truncated pack?)".into());
    }
    let trailer_len = u32::from_le_bytes(footer[..4].try_into().expect("4 bytes"));
    let overhead = if layout.sealed { SEAL_OVERHEAD } else { 0 };
    if trailer_len > MAX_TRAILER_BYTES
        || (trailer_len as usize) < overhead
        || (!layout.compressed && !(trailer_len as usize - overhead).is_multiple_of(ENTRY_BYTES))
        || u64::from(trailer_len) > pack_len - HEADER_BYTES - FOOTER_BYTES
    {
        return Err(format!("trailer length {trailer_len} is impossible"));
    }
    let sum: [u8; 32] = footer[4..36].try_into().expect("32 bytes");
    Ok((trailer_len, sum))
}

/// Checks the trailer's checksum, opens it, and decodes its entries, bounding each to the blob
/// area.
fn parse_trailer(
    crypto: &Crypto,
    layout: Layout,
    stored: &[u8],
    sum: &[u8; 32],
    pack_len: u64,
) -> std::result::Result<Vec<PackEntry>, String> {
    if blake3::hash(stored).as_bytes() != sum {
        return Err("trailer checksum mismatch".into());
    }
    let blobs_end = pack_len - FOOTER_BYTES - stored.len() as u64;
    let mut trailer = crypto
        .open(Domain::Trailer, b"", stored)
        .map_err(|r| format!("trailer: {r}"))?;
    if layout.compressed {
        // No writer puts more entries in a pack; a frame that claims more is refused unread.
        trailer = zstd::bulk::decompress(&trailer, MAX_BLOBS_PER_PACK * ENTRY_BYTES)
            .map_err(|e| format!("trailer: zstd: {e}"))?;
    }
    if trailer.len() % ENTRY_BYTES != 0 {
        return Err(format!(
            "trailer of {} bytes is not whole entries",
            trailer.len()
        ));
    }
    let mut entries = Vec::with_capacity(trailer.len() / ENTRY_BYTES);
    for raw in trailer.chunks_exact(ENTRY_BYTES) {
        let e = PackEntry::decode(raw)?;
        let end = e.offset.checked_add(u64::from(e.stored_len));
        if e.offset < HEADER_BYTES || end.is_none_or(|end| end > blobs_end) {
            return Err(format!("blob {} lies outside the pack", e.id));
        }
        if e.raw_len > MAX_BLOB_RAW_BYTES {
            return Err(format!("blob {} claims {} bytes", e.id, e.raw_len));
        }
        entries.push(e);
    }
    Ok(entries)
}

/// Parses a whole pack held in memory and checks its header (not its id; see [`PackId`]).
pub fn parse_pack(crypto: &Crypto, bytes: &[u8]) -> std::result::Result<Vec<PackEntry>, String> {
    let len = bytes.len() as u64;
    if len < HEADER_BYTES + FOOTER_BYTES {
        return Err(format!("{len} bytes is too short for a pack"));
    }
    let layout = check_header(crypto, &bytes[..HEADER_BYTES as usize])?;
    let footer = &bytes[(len - FOOTER_BYTES) as usize..];
    let (tlen, sum) = parse_footer(footer, len, layout)?;
    let tstart = (len - FOOTER_BYTES - u64::from(tlen)) as usize;
    parse_trailer(
        crypto,
        layout,
        &bytes[tstart..(len - FOOTER_BYTES) as usize],
        &sum,
        len,
    )
}

/// How a pack's trailer is stored, from its header's version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    sealed: bool,
    compressed: bool,
}

/// Checks magic and version against the vault's encryption; returns how the trailer is stored.
fn check_header(crypto: &Crypto, h: &[u8]) -> std::result::Result<Layout, String> {
    if &h[..4] != MAGIC {
        return Err("not a pack (bad magic)".into());
    }
    let (sealed, compressed) = match h[4] {
        PACK_VERSION_PLAIN => (false, false),
        PACK_VERSION_SEALED => (true, false),
        PACK_VERSION_PLAIN_ZSTD => (false, true),
        PACK_VERSION_SEALED_ZSTD => (true, true),
        v => return Err(format!("pack version {v} is not supported")),
    };
    match (sealed, crypto.is_encrypted()) {
        (false, true) => Err("unencrypted pack in an encrypted vault".into()),
        (true, false) => Err("encrypted pack in an unencrypted vault".into()),
        _ => Ok(Layout { sealed, compressed }),
    }
}

/// Reads only a pack's header, footer and trailer from disk.
pub fn read_trailer(crypto: &Crypto, path: &Path) -> Result<Vec<PackEntry>> {
    let file = File::open(path).at(path)?;
    let len = file.metadata().at(path)?.len();
    read_trailer_with(
        crypto,
        len,
        &format!("pack {}", path.display()),
        |offset, n| {
            let mut buf = vec![0u8; n];
            file.read_exact_at(&mut buf, offset).at(path)?;
            Ok(buf)
        },
    )
}

/// Reads a pack's trailer through `read_at(offset, len)` (a file, or range requests to a remote):
/// the header, then the footer, then the trailer the footer points to. `len` is the pack's size;
/// `object` names it in errors.
pub fn read_trailer_with(
    crypto: &Crypto,
    len: u64,
    object: &str,
    read_at: impl Fn(u64, usize) -> Result<Vec<u8>>,
) -> Result<Vec<PackEntry>> {
    let corrupt = |r: String| Error::corrupt(object, r);
    if len < HEADER_BYTES + FOOTER_BYTES {
        return Err(corrupt(format!("{len} bytes is too short for a pack")));
    }
    let header = read_at(0, HEADER_BYTES as usize)?;
    let layout = check_header(crypto, &header).map_err(corrupt)?;
    let footer = read_at(len - FOOTER_BYTES, FOOTER_BYTES as usize)?;
    let (tlen, sum) = parse_footer(&footer, len, layout).map_err(corrupt)?;
    let trailer = read_at(len - FOOTER_BYTES - u64::from(tlen), tlen as usize)?;
    parse_trailer(crypto, layout, &trailer, &sum, len).map_err(corrupt)
}

/// A pack that has been written, fsynced and renamed into place.
#[derive(Debug)]
pub struct FinishedPack {
    pub id: PackId,
    pub size: u64,
    pub entries: Vec<PackEntry>,
}

/// Appends sealed blobs to a temporary file and publishes it atomically as a pack.
pub struct PackWriter {
    packs_dir: PathBuf,
    crypto: Crypto,
    out: BufWriter<tempfile::NamedTempFile>,
    hasher: blake3::Hasher,
    entries: Vec<PackEntry>,
    len: u64,
}

impl PackWriter {
    /// Starts a pack in `packs_dir` (the temporary file lives there too, so the rename is atomic).
    pub fn new(packs_dir: &Path, crypto: &Crypto) -> Result<Self> {
        Self::with_temp_dir(packs_dir, packs_dir, crypto)
    }

    /// Starts a pack for `packs_dir` whose temporary file lives in `temp_dir` (same file system):
    /// prune's, which a writer's sweep of `packs/` must not remove under it.
    pub fn with_temp_dir(packs_dir: &Path, temp_dir: &Path, crypto: &Crypto) -> Result<Self> {
        let tmp = tempfile::Builder::new()
            .prefix(fsutil::TEMP_PREFIX)
            .tempfile_in(temp_dir)
            .at(temp_dir)?;
        let mut w = PackWriter {
            packs_dir: packs_dir.to_path_buf(),
            crypto: crypto.clone(),
            out: BufWriter::with_capacity(WRITE_BUFFER_BYTES, tmp),
            hasher: blake3::Hasher::new(),
            entries: Vec::new(),
            len: 0,
        };
        let mut header = Vec::with_capacity(HEADER_BYTES as usize);
        header.extend_from_slice(MAGIC);
        let version = if crypto.is_encrypted() {
            PACK_VERSION_SEALED_ZSTD
        } else {
            PACK_VERSION_PLAIN_ZSTD
        };
        header.extend_from_slice(&[version, 0, 0, 0]);
        w.write(&header)?;
        Ok(w)
    }

    fn write(&mut self, b: &[u8]) -> Result<()> {
        self.hasher.update(b);
        self.len += b.len() as u64;
        let path = self.out.get_ref().path().to_path_buf();
        self.out.write_all(b).at(path)
    }

    /// Appends one blob.
    pub fn add(&mut self, blob: &SealedBlob) -> Result<()> {
        let stored_len = u32::try_from(blob.bytes.len())
            .map_err(|_| Error::Invalid(format!("blob {} too large for a pack", blob.id)))?;
        self.entries.push(PackEntry {
            id: blob.id,
            kind: blob.kind,
            compression: blob.compression,
            offset: self.len,
            stored_len,
            raw_len: blob.raw_len,
        });
        self.write(&blob.bytes)
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True once the pack should be finished: `target` bytes written, or
    /// [`MAX_BLOBS_PER_PACK`] blobs.
    pub fn is_full(&self, target: u64) -> bool {
        self.len >= target || self.entries.len() >= MAX_BLOBS_PER_PACK
    }

    /// True while no blob has been added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Writes the trailer, fsyncs, and renames the pack to its content address.
    pub fn finish(mut self) -> Result<FinishedPack> {
        let mut trailer = Vec::with_capacity(self.entries.len() * ENTRY_BYTES);
        for e in &self.entries {
            e.encode(&mut trailer);
        }
        let trailer = zstd::bulk::compress(&trailer, TRAILER_ZSTD_LEVEL)
            .map_err(|e| Error::Invalid(format!("zstd compression of a trailer failed: {e}")))?;
        let trailer = self.crypto.seal(Domain::Trailer, b"", trailer);
        let tlen = u32::try_from(trailer.len())
            .map_err(|_| Error::Invalid("pack trailer too large".into()))?;
        let mut footer = Vec::with_capacity(FOOTER_BYTES as usize);
        footer.extend_from_slice(&tlen.to_le_bytes());
        footer.extend_from_slice(blake3::hash(&trailer).as_bytes());
        footer.extend_from_slice(END_MAGIC);
        self.write(&trailer)?;
        self.write(&footer)?;
        let id = PackId(*self.hasher.finalize().as_bytes());
        let tmp = self.out.into_inner().map_err(|e| {
            let (err, w) = e.into_parts();
            Error::io(w.get_ref().path(), err)
        })?;
        tmp.as_file().sync_all().at(tmp.path())?;
        let dest = pack_path(&self.packs_dir, &id);
        let sub = dest.parent().expect("invariant: pack path has a parent");
        fsutil::create_dir_durable(sub)?;
        crate::crashpoint::io_fault(&dest).at(&dest)?;
        tmp.persist(&dest).map_err(|e| e.error).at(&dest)?;
        fsutil::sync_dir(sub)?;
        Ok(FinishedPack {
            id,
            size: self.len,
            entries: self.entries,
        })
    }
}

/// Reads a blob's stored bytes from an open pack file of `file_len` bytes (packs are immutable, so
/// the length taken when the file was opened holds). The entry comes from the index, which is as
/// untrusted as the pack: it is bounded by the file's length before anything is allocated.
pub fn read_stored(file: &File, file_len: u64, path: &Path, e: &PackEntry) -> Result<Vec<u8>> {
    let cut_short = || {
        Error::corrupt(
            format!("pack {}", path.display()),
            format!("blob {} is cut short", e.id),
        )
    };
    if e.offset
        .checked_add(u64::from(e.stored_len))
        .is_none_or(|end| end > file_len)
    {
        return Err(cut_short());
    }
    let mut buf = vec![0u8; e.stored_len as usize];
    file.read_exact_at(&mut buf, e.offset).map_err(|err| {
        if err.kind() == std::io::ErrorKind::UnexpectedEof {
            cut_short()
        } else {
            Error::io(path, err)
        }
    })?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob;

    #[test]
    fn a_pack_is_full_at_its_target_size_or_at_the_blob_cap() {
        let c = Crypto::plain();
        let dir = tempfile::tempdir().unwrap();
        let mut w = PackWriter::new(dir.path(), &c).unwrap();
        let tiny = |i: usize| {
            let b = i.to_le_bytes();
            blob::seal(&c, c.blob_id(&b), BlobKind::Data, &b, 3).unwrap()
        };
        for i in 0..MAX_BLOBS_PER_PACK - 1 {
            w.add(&tiny(i)).unwrap();
        }
        assert!(!w.is_full(u64::MAX), "one blob under the cap");
        assert!(w.is_full(w.len()), "at its target size");
        w.add(&tiny(MAX_BLOBS_PER_PACK)).unwrap();
        assert!(w.is_full(u64::MAX), "at the cap, whatever the size");
        let fin = w.finish().unwrap();
        assert_eq!(fin.entries.len(), MAX_BLOBS_PER_PACK);
        let path = pack_path(dir.path(), &fin.id);
        assert_eq!(read_trailer(&c, &path).unwrap().len(), MAX_BLOBS_PER_PACK);
    }

    #[test]
    fn write_then_parse_pack() {
        write_then_parse(&Crypto::plain());
        write_then_parse(&Crypto::from_master(&[9; 32]));
    }

    fn write_then_parse(c: &Crypto) {
        let dir = tempfile::tempdir().unwrap();
        let mut w = PackWriter::new(dir.path(), c).unwrap();
        let blobs: Vec<Vec<u8>> = (0..10)
            .map(|i| format!("blob number {i} ").repeat(i * 50).into_bytes())
            .collect();
        for b in &blobs {
            let s = blob::seal(c, c.blob_id(b), BlobKind::Data, b, 3).unwrap();
            w.add(&s).unwrap();
        }
        let fin = w.finish().unwrap();
        let path = pack_path(dir.path(), &fin.id);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(PackId(*blake3::hash(&bytes).as_bytes()), fin.id);
        assert_eq!(parse_pack(c, &bytes).unwrap(), fin.entries);
        assert_eq!(read_trailer(c, &path).unwrap(), fin.entries);
        // A pack of one kind does not read in a vault of the other.
        let other = if c.is_encrypted() {
            Crypto::plain()
        } else {
            Crypto::from_master(&[9; 32])
        };
        assert!(parse_pack(&other, &bytes).is_err());
        let f = File::open(&path).unwrap();
        let len = f.metadata().unwrap().len();
        for (e, b) in fin.entries.iter().zip(&blobs) {
            let stored = read_stored(&f, len, &path, e).unwrap();
            assert_eq!(
                &blob::open(c, &e.id, e.compression, e.raw_len, &stored).unwrap(),
                b
            );
        }
        // Truncation and bit flips in the trailer are reported, never panics.
        for cut in [0, 1, 8, 40, bytes.len() - 1] {
            assert!(parse_pack(c, &bytes[..cut]).is_err());
        }
        let mut flipped = bytes.clone();
        let n = flipped.len();
        flipped[n - 50] ^= 0x10;
        assert!(parse_pack(c, &flipped).is_err());
    }

    /// `bytes` with its trailer replaced by `plain` (compressed or not, as the caller made it),
    /// sealed as the vault seals and with the footer to match.
    fn with_trailer(c: &Crypto, bytes: &[u8], version: u8, plain: Vec<u8>) -> Vec<u8> {
        let n = bytes.len();
        let tlen = u32::from_le_bytes(bytes[n - 44..n - 40].try_into().unwrap()) as usize;
        let mut out = bytes[..n - 44 - tlen].to_vec();
        out[4] = version;
        let trailer = c.seal(Domain::Trailer, b"", plain);
        out.extend_from_slice(&trailer);
        out.extend_from_slice(&(trailer.len() as u32).to_le_bytes());
        out.extend_from_slice(blake3::hash(&trailer).as_bytes());
        out.extend_from_slice(END_MAGIC);
        out
    }

    #[test]
    fn trailers_are_compressed_and_packs_of_every_version_read() {
        for c in [Crypto::plain(), Crypto::from_master(&[9; 32])] {
            let dir = tempfile::tempdir().unwrap();
            let mut w = PackWriter::new(dir.path(), &c).unwrap();
            for i in 0..500u32 {
                let b = format!("blob {i} ").repeat(20).into_bytes();
                w.add(&blob::seal(&c, c.blob_id(&b), BlobKind::Data, &b, 3).unwrap())
                    .unwrap();
            }
            let fin = w.finish().unwrap();
            let bytes = std::fs::read(pack_path(dir.path(), &fin.id)).unwrap();
            let (plain_v, zstd_v) = if c.is_encrypted() { (2, 4) } else { (1, 3) };
            assert_eq!(bytes[4], zstd_v);
            let n = bytes.len();
            let tlen = u32::from_le_bytes(bytes[n - 44..n - 40].try_into().unwrap()) as usize;
            // The ids do not compress; the rest of each 52-byte entry nearly vanishes.
            assert!(tlen < 500 * 44, "{tlen} bytes of trailer for 500 entries");
            let mut entries = Vec::new();
            for e in &fin.entries {
                e.encode(&mut entries);
            }
            // The same entries, uncompressed, in a pack of the version before.
            let old = with_trailer(&c, &bytes, plain_v, entries.clone());
            assert_eq!(parse_pack(&c, &old).unwrap(), fin.entries);
            // A compressed trailer that is not zstd, and one that inflates past what a pack
            // may hold, are refused.
            let junk = with_trailer(&c, &bytes, zstd_v, entries.clone());
            let err = parse_pack(&c, &junk).unwrap_err();
            assert!(err.contains("zstd"), "{err}");
            let huge =
                zstd::bulk::compress(&vec![0u8; MAX_BLOBS_PER_PACK * ENTRY_BYTES + 1], 3).unwrap();
            let err = parse_pack(&c, &with_trailer(&c, &bytes, zstd_v, huge)).unwrap_err();
            assert!(err.contains("zstd"), "{err}");
            // Not whole entries once inflated.
            let ragged = zstd::bulk::compress(&entries[..entries.len() - 1], 3).unwrap();
            let err = parse_pack(&c, &with_trailer(&c, &bytes, zstd_v, ragged)).unwrap_err();
            assert!(err.contains("not whole entries"), "{err}");
        }
    }
}
