//! `refs/last-known-good.json`: `lkg::parse_ref` on arbitrary bytes must not panic, in a plain
//! and in an encrypted vault, and a ref it accepts must seal and parse back unchanged.
//!
//! The AEAD is unforgeable by mutation, so any input that decodes as a plain ref is also sealed
//! with the fuzz key and opened again: that pins the round trip behind the seal.

#![no_main]

use libfuzzer_sys::fuzz_target;

use atlasvault::crypto::Crypto;
use atlasvault::lkg::{parse_ref, seal_ref};

fuzz_target!(|data: &[u8]| {
    let plain = Crypto::default();
    let sealed = Crypto::from_master(&[7u8; 32]);
    let _ = parse_ref(&sealed, data);
    if let Ok(r) = parse_ref(&plain, data) {
        for crypto in [&plain, &sealed] {
            let back = parse_ref(crypto, &seal_ref(crypto, &r)).expect("a sealed ref parses");
            assert_eq!(back, r);
        }
    }
});
