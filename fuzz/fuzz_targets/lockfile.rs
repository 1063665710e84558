//! Lockfiles: `lockfile::check` on arbitrary bytes must not panic (the sanity gate reads every
//! lockfile of every snapshot), and its one-line error never quotes much of the input.
//!
//! The first byte picks the lockfile kind.

#![no_main]

use libfuzzer_sys::fuzz_target;

use atlasvault::gates::sanity::lockfile::{check, LockKind};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, content)) = data.split_first() else {
        return;
    };
    let kind = LockKind::ALL[pick as usize % LockKind::ALL.len()];
    if let Err(e) = check(kind, content) {
        assert!(!e.contains('\n'), "multi-line error: {e:?}");
        assert!(e.len() < 400, "long error ({} bytes)", e.len());
    }
});
