//! Big files (past 16 MiB) are restored in 8 MiB pieces by several workers at once: pieces that
//! start inside a chunk, holes, the metadata set once at the end, `--overwrite`, and a damaged
//! chunk in one piece failing that file alone, reported once and not left half written.

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;

use crate::common::*;

/// A 41 MiB file: random data, 9 MiB of zeros, text, random data, and a tail that ends off
/// any block.
fn big_file(path: &std::path::Path) -> u64 {
    let mut f = fs::File::create(path).unwrap();
    f.write_all(&random_bytes(1, 20 * MIB)).unwrap();
    f.write_all(&vec![0u8; 9 * MIB]).unwrap();
    f.write_all(&text_bytes(4 * MIB)).unwrap();
    f.write_all(&random_bytes(2, 8 * MIB + 17)).unwrap();
    f.sync_all().unwrap();
    (41 * MIB + 17) as u64
}

#[test]
fn a_big_file_restores_byte_exact_sparse_and_with_its_metadata_also_over_an_old_copy() {
    let f = Fixture::with_vault();
    let data = f.path("data");
    fs::create_dir_all(&data).unwrap();
    let big = data.join("big.bin");
    let size = big_file(&big);
    chmod(&big, 0o640);
    set_mtime(&big, 1_600_000_000);
    fs::write(data.join("small.txt"), b"small").unwrap();
    f.snapshot(&data);

    let out = f.path("out");
    f.restore("latest", &out);
    assert_same_tree(&data, &out.join("data"), &[]);
    let got = out.join("data/big.bin");
    let on_disk = fs::metadata(&got).unwrap().blocks() * 512;
    assert!(
        on_disk < size - 8 * MIB as u64,
        "the 9 MiB of zeros were written: {on_disk} bytes on disk for {size}"
    );

    // Over a bigger, different file of the same name: nothing of it is left.
    fs::remove_file(&got).unwrap();
    write_random_file(&got, 9, 60 * MIB);
    f.cmd()
        .args(["restore", "latest", "--overwrite", "--target"])
        .arg(&out)
        .run()
        .success();
    assert_same_tree(&data, &out.join("data"), &[]);
}

#[test]
fn a_damaged_chunk_in_one_piece_fails_that_file_once_and_leaves_nothing_of_it() {
    let f = Fixture::with_vault();
    let data = f.path("data");
    fs::create_dir_all(&data).unwrap();
    write_random_file(&data.join("big.bin"), 3, 40 * MIB);
    fs::write(data.join("small.txt"), b"small").unwrap();
    f.snapshot(&data);
    let chunks = file_chunks(&f.vault(), "latest", "data/big.bin");
    assert!(chunks.len() > 4, "test setup: {} chunks", chunks.len());
    let c = &chunks[chunks.len() / 2];
    flip_byte(&c.pack, c.offset + u64::from(c.stored_len) / 2);

    let out = f.path("out");
    let run = f
        .cmd()
        .args(["restore", "latest", "--target"])
        .arg(&out)
        .run()
        .code(4)
        .stderr_has("data/big.bin");
    assert_eq!(
        run.stderr.matches("data/big.bin").count(),
        1,
        "the file's error is reported once\n{}",
        run.stderr
    );
    assert!(
        !out.join("data/big.bin").exists(),
        "a half-restored big.bin was left in the target"
    );
    assert_eq!(fs::read(out.join("data/small.txt")).unwrap(), b"small");
}
