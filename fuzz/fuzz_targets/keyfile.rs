//! Key files: `KeyFile::parse` on arbitrary bytes must not panic, and a key file that parses must
//! write out and parse back to the same thing.
//!
//! Unwrapping is left out on purpose: a parsed key file may ask argon2id for up to 4 GiB, which is
//! the bound, not a bug, and would only trip the fuzzer's memory limit.

#![no_main]

use libfuzzer_sys::fuzz_target;

use atlasvault::keys::KeyFile;

fuzz_target!(|data: &[u8]| {
    if let Ok(k) = KeyFile::parse(data) {
        let bytes = k.to_bytes();
        let back = KeyFile::parse(&bytes).expect("a written key file parses");
        assert_eq!(back.to_bytes(), bytes, "key file round trip changed it");
        assert_eq!(back.id(), k.id());
    }
});
