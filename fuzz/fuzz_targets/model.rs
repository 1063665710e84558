//! The model-based target, after redb's `fuzz_redb`: each input is a sequence of snapshot,
//! forget, prune, push, restore, and forget/prune on a remote, run against a real vault and a
//! directory remote while the local vault's writes or the remote's calls fail after N operations.
//! After every failure both verify with `--read-data` and every snapshot the model holds restores
//! byte for byte. The harness is `tests/integration/model.rs`, which `cargo test` also runs on
//! seeded sequences and on this target's seeds and regressions.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../tests/integration/model.rs"]
mod model;

fuzz_target!(|data: &[u8]| {
    model::run(data);
});
