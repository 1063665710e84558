//! Packs read back from disk: `pack::parse_pack` on arbitrary bytes, then `blob::open` on the
//! stored bytes of every entry it accepts. Neither may panic, and every accepted entry must lie in
//! the blob area (after the header, before the trailer).
//!
//! The trailer is guarded by a blake3 checksum that no mutation forges, so each input is parsed a
//! second time with the footer's checksum recomputed over whatever trailer the footer claims: that
//! copy gets past the checksum to the entry checks and the blob decoder. Every input is read as a
//! plain vault's pack and as an encrypted one's (a fixed key: mutation cannot forge the AEAD, so
//! that side exercises the header, footer and sealed-trailer bounds).

#![no_main]

use libfuzzer_sys::fuzz_target;

use atlasvault::blob;
use atlasvault::crypto::Crypto;
use atlasvault::pack::{parse_pack, FOOTER_BYTES, HEADER_BYTES};

fuzz_target!(|data: &[u8]| {
    for crypto in [Crypto::plain(), Crypto::from_master(&[7; 32])] {
        check(&crypto, data);
        if let Some(fixed) = with_trailer_checksum(data) {
            check(&crypto, &fixed);
        }
    }
});

fn check(crypto: &Crypto, pack: &[u8]) {
    let Ok(entries) = parse_pack(crypto, pack) else {
        return;
    };
    let footer_at = pack.len() - FOOTER_BYTES as usize;
    let trailer_len = u32::from_le_bytes(pack[footer_at..footer_at + 4].try_into().unwrap());
    let blobs_end = footer_at as u64 - u64::from(trailer_len);
    for e in entries {
        let inside = e
            .offset
            .checked_add(u64::from(e.stored_len))
            .filter(|end| e.offset >= HEADER_BYTES && *end <= blobs_end);
        let Some(end) = inside else {
            panic!(
                "parse_pack accepted blob {} at offset {} (+{} bytes), outside the blob area \
                 {HEADER_BYTES}..{blobs_end}",
                e.id, e.offset, e.stored_len
            );
        };
        let stored = &pack[e.offset as usize..end as usize];
        if let Ok(raw) = blob::open(crypto, &e.id, e.compression, e.raw_len, stored) {
            assert_eq!(raw.len(), e.raw_len as usize);
            assert_eq!(crypto.blob_id(&raw), e.id);
        }
    }
}

/// A copy of `data` whose footer checksum matches the trailer the footer claims, or `None` when
/// there is no such trailer or the checksum already matches.
fn with_trailer_checksum(data: &[u8]) -> Option<Vec<u8>> {
    let len = data.len();
    let footer_at = len.checked_sub(FOOTER_BYTES as usize)?;
    if footer_at < HEADER_BYTES as usize {
        return None;
    }
    let trailer_len = u32::from_le_bytes(data[footer_at..footer_at + 4].try_into().ok()?) as usize;
    let trailer_at = footer_at.checked_sub(trailer_len)?;
    let sum = blake3::hash(&data[trailer_at..footer_at]);
    if &data[footer_at + 4..footer_at + 36] == sum.as_bytes() {
        return None;
    }
    let mut fixed = data.to_vec();
    fixed[footer_at + 4..footer_at + 36].copy_from_slice(sum.as_bytes());
    Some(fixed)
}
