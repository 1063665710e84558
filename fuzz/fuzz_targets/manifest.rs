//! Snapshot manifests: `Manifest::parse` on arbitrary bytes must not panic, and a manifest that
//! parses must seal to the same id and parse back unchanged.
//!
//! The sha256 gate is unforgeable by mutation, so any input that decodes as manifest JSON is also
//! sealed afresh and parsed: that reaches the checks behind the gate and pins the round trip for
//! every manifest the JSON can describe.

#![no_main]

use libfuzzer_sys::fuzz_target;

use atlasvault::manifest::{Manifest, MANIFEST_FORMAT};

fuzz_target!(|data: &[u8]| {
    if let Ok((id, mut m)) = Manifest::parse(data) {
        let _ = m.system_time();
        let (sealed_id, bytes) = m.seal();
        assert_eq!(sealed_id, id, "sealing a parsed manifest changed its id");
        let (back_id, back) = Manifest::parse(&bytes).expect("a sealed manifest parses");
        assert_eq!((back_id, back), (id, m));
    }
    if let Ok(mut m) = serde_json::from_slice::<Manifest>(data) {
        let (id, bytes) = m.seal();
        match Manifest::parse(&bytes) {
            Ok((back_id, back)) => {
                assert_eq!(back_id, id);
                assert_eq!(back, m);
            }
            Err(e) => assert_ne!(m.format, MANIFEST_FORMAT, "sealed manifest rejected: {e}"),
        }
    }
});
