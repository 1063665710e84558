//! Compression levels: data blobs that look like text are compressed at `compression.text_level`
//! of `config.json`, everything else at `compression.level`.

use std::fs;
use std::path::Path;

use crate::common::*;

/// A vault whose `config.json` has these levels.
fn vault_with_levels(f: &Fixture, level: i32, text_level: i32) {
    f.cmd().args(["init"]).args(CHEAP_KDF).run().success();
    let path = f.vault().join("config.json");
    let mut cfg: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    cfg["compression"]["level"] = level.into();
    cfg["compression"]["text_level"] = text_level.into();
    fs::write(&path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
}

/// This crate's own sources: real text, about 190 KB of it.
fn source_text() -> Vec<u8> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    [
        "snapshot.rs",
        "vault.rs",
        "verify.rs",
        "restore/mod.rs",
        "prune.rs",
        "tree.rs",
    ]
    .iter()
    .flat_map(|name| fs::read(src.join(name)).unwrap())
    .collect()
}

/// Bytes stored by a snapshot of `dir` into a fresh vault with these levels.
fn stored(level: i32, text_level: i32, dir: &Path) -> u64 {
    let f = Fixture::new();
    vault_with_levels(&f, level, text_level);
    num(&f.snapshot(dir), "bytes_stored")
}

#[test]
fn text_is_compressed_at_the_text_level_and_the_rest_at_the_base_level() {
    let f = Fixture::new();
    let text = f.path("text");
    let binary = f.path("binary");
    fs::create_dir_all(&text).unwrap();
    fs::create_dir_all(&binary).unwrap();
    let source = source_text();
    assert!(source.len() > 150_000, "{} bytes of source", source.len());
    fs::write(text.join("code.rs"), &source).unwrap();
    // The same text with a NUL at every line end: binary, and as compressible.
    let nul: Vec<u8> = source
        .iter()
        .map(|&b| if b == b'\n' { 0 } else { b })
        .collect();
    fs::write(binary.join("code.bin"), &nul).unwrap();

    let (fast, best) = (stored(1, 1, &text), stored(1, 19, &text));
    assert!(
        best * 10 < fast * 9,
        "text at level 19 stored {best} bytes, at level 1 {fast}"
    );
    // The text level leaves binary data alone; the base level does not.
    assert_eq!(stored(1, 1, &binary), stored(1, 19, &binary));
    assert!(stored(19, 1, &binary) * 10 < stored(1, 1, &binary) * 9);
}
