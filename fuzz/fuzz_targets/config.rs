//! `config.json`: `VaultConfig::parse` on arbitrary bytes must not panic, and a config it accepts
//! must write out and parse back unchanged.

#![no_main]

use libfuzzer_sys::fuzz_target;

use atlasvault::config::VaultConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(cfg) = VaultConfig::parse(data) else {
        return;
    };
    let back = VaultConfig::parse(&cfg.to_bytes()).expect("a written config parses");
    assert_eq!(back, cfg);
});
