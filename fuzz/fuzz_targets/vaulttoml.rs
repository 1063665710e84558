//! `vault.toml`: `VaultFile::parse` on arbitrary text must not panic (a hostile or mistyped
//! config is one clear error), and the error it gives must never quote a refused secret back.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

use atlasvault::vaultfile::VaultFile;

/// A value the fuzzer can place in a secret-bearing key; errors must not echo it.
const SECRET: &str = "s3cr3t-Fuzz-Value-9f2c";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = VaultFile::parse(text, Path::new("vault.toml")) {
        let shown = e.to_string();
        for key in ["password", "password_command", "password_file", "secret_access_key"] {
            if text.contains(&format!("{key} = \"{SECRET}\"")) {
                assert!(!shown.contains(SECRET), "error quotes a secret: {shown}");
            }
        }
    }
});
