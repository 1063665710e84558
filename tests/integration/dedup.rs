//! Deduplication and change detection: data the vault already holds is not stored again.

use std::fs;

use crate::common::*;

/// Slack for tree blobs and pack headers when "nothing new" is expected.
const TREE_SLACK_BYTES: u64 = 64 * 1024;

fn big_data(f: &Fixture) -> std::path::PathBuf {
    let data = f.path("data");
    fs::create_dir_all(data.join("sub")).unwrap();
    write_random_file(&data.join("big.bin"), 7, 8 * MIB);
    fs::write(data.join("sub/text.sql"), text_bytes(2 * MIB)).unwrap();
    fs::write(data.join("small.txt"), b"small").unwrap();
    data
}

#[test]
fn second_snapshot_of_same_data_adds_almost_nothing() {
    let f = Fixture::with_vault();
    let data = big_data(&f);
    let first = f.snapshot(&data);
    assert_eq!(num(&first, "files"), 3);
    assert_eq!(num(&first, "files_unchanged"), 0);
    assert!(num(&first, "bytes_stored") >= 8 * MIB as u64, "{first:#}");
    let packs_after_first = dir_size(&f.vault().join("packs"));

    let second = f.snapshot(&data);
    assert_eq!(second["parent"], first["id"], "{second:#}");
    assert_eq!(num(&second, "files"), 3);
    assert_eq!(
        num(&second, "files_unchanged"),
        num(&second, "files"),
        "{second:#}"
    );
    assert_eq!(num(&second, "bytes_read"), 0, "{second:#}");
    assert_eq!(num(&second, "bytes"), num(&first, "bytes"));
    assert!(
        num(&second, "bytes_stored") <= TREE_SLACK_BYTES,
        "{second:#}"
    );
    let grown = dir_size(&f.vault().join("packs")) - packs_after_first;
    assert!(grown <= TREE_SLACK_BYTES, "packs/ grew by {grown} bytes");

    // --no-parent reads everything again, and still stores nothing new.
    let third = f
        .cmd()
        .args(["snapshot", "--json", "--no-parent"])
        .arg(&data)
        .run()
        .success()
        .json();
    // The parent is still recorded (the mass-change gate compares against it); it is only not
    // trusted for change detection.
    assert_eq!(third["parent"], second["id"], "{third:#}");
    assert_eq!(num(&third, "files_unchanged"), 0, "{third:#}");
    assert_eq!(num(&third, "bytes_read"), num(&third, "bytes"), "{third:#}");
    assert!(num(&third, "bytes_stored") <= TREE_SLACK_BYTES, "{third:#}");
    let grown = dir_size(&f.vault().join("packs")) - packs_after_first;
    assert!(
        grown <= 2 * TREE_SLACK_BYTES,
        "packs/ grew by {grown} bytes"
    );
    assert_eq!(f.snapshot_ids().len(), 3);
}

#[test]
fn copy_of_a_big_file_under_another_name_adds_almost_nothing() {
    let f = Fixture::with_vault();
    let data = big_data(&f);
    f.snapshot(&data);
    let before = dir_size(&f.vault().join("packs"));
    fs::copy(data.join("big.bin"), data.join("sub/copy-of-big.bin")).unwrap();
    let s = f.snapshot(&data);
    assert_eq!(num(&s, "files"), 4);
    assert_eq!(num(&s, "files_unchanged"), 3, "{s:#}");
    assert_eq!(
        num(&s, "bytes_read"),
        8 * MIB as u64,
        "only the copy is read: {s:#}"
    );
    assert!(num(&s, "bytes_new") <= TREE_SLACK_BYTES, "{s:#}");
    assert!(num(&s, "bytes_stored") <= TREE_SLACK_BYTES, "{s:#}");
    let grown = dir_size(&f.vault().join("packs")) - before;
    assert!(grown <= TREE_SLACK_BYTES, "packs/ grew by {grown} bytes");

    // Two copies of new data in one run are stored once.
    write_random_file(&data.join("fresh-1.bin"), 99, 4 * MIB);
    fs::copy(data.join("fresh-1.bin"), data.join("fresh-2.bin")).unwrap();
    let s = f.snapshot(&data);
    let stored = num(&s, "bytes_stored");
    assert!(
        stored >= 4 * MIB as u64 && stored <= 4 * MIB as u64 + TREE_SLACK_BYTES,
        "two identical new files should cost one: {s:#}"
    );

    let target = f.path("out");
    f.restore("latest", &target);
    assert_same_tree(&data, &target.join("data"), &[]);
}

#[test]
fn change_detection_reads_only_changed_files() {
    let f = Fixture::with_vault();
    let data = big_data(&f);
    f.snapshot(&data);

    // Edit one small file (new size, new mtime).
    fs::write(data.join("small.txt"), b"small, edited").unwrap();
    let s = f.snapshot(&data);
    assert_eq!(num(&s, "files"), 3);
    assert_eq!(num(&s, "files_unchanged"), 2, "{s:#}");
    assert_eq!(num(&s, "bytes_read"), 13, "{s:#}");

    // Same size, only the mtime differs: read again, stored as nothing new.
    set_mtime(&data.join("sub/text.sql"), 1_300_000_000);
    let s = f.snapshot(&data);
    assert_eq!(num(&s, "files_unchanged"), 2, "{s:#}");
    assert_eq!(num(&s, "bytes_read"), 2 * MIB as u64, "{s:#}");
    assert!(num(&s, "bytes_stored") <= TREE_SLACK_BYTES, "{s:#}");
}

#[test]
fn insert_at_start_of_big_file_stores_only_nearby_chunks() {
    // Content-defined chunking: shifting the data by a few bytes must not make every chunk new.
    let f = Fixture::with_vault();
    let data = f.path("data");
    fs::create_dir(&data).unwrap();
    let body = random_bytes(5, 16 * MIB);
    fs::write(data.join("db.bin"), &body).unwrap();
    f.snapshot(&data);
    let mut shifted = b"a few new bytes at the front".to_vec();
    shifted.extend_from_slice(&body);
    fs::write(data.join("db.bin"), &shifted).unwrap();
    let s = f.snapshot(&data);
    assert_eq!(num(&s, "bytes_read"), shifted.len() as u64);
    let new = num(&s, "bytes_new");
    assert!(
        new < 3 * MIB as u64,
        "a 28-byte insert made {new} of {} bytes new",
        shifted.len()
    );
    let target = f.path("out");
    f.restore("latest", &target);
    assert_eq!(fs::read(target.join("data/db.bin")).unwrap(), shifted);
}

#[test]
fn a_sparse_file_and_a_dense_copy_of_it_share_every_chunk() {
    use std::os::unix::fs::{FileExt, MetadataExt};
    let f = Fixture::with_vault();
    let data = f.path("data");
    fs::create_dir_all(&data).unwrap();
    // Holes of megabytes between data, one at the end; the data regions at odd offsets and
    // lengths, so the holes' edges fall inside chunks.
    let sparse = fs::File::create(data.join("sparse.img")).unwrap();
    sparse.set_len(48 * MIB as u64).unwrap();
    sparse.write_all_at(&random_bytes(1, MIB + 3), 0).unwrap();
    sparse
        .write_all_at(&random_bytes(2, 3 * MIB + 7), 20 * MIB as u64 + 4097)
        .unwrap();
    sparse.sync_all().unwrap();
    let meta = sparse.metadata().unwrap();
    assert!(
        meta.blocks() * 512 < meta.len(),
        "the test file system kept no holes"
    );
    drop(sparse);
    let bytes = fs::read(data.join("sparse.img")).unwrap();
    fs::write(data.join("dense.img"), &bytes).unwrap();
    let s = f.snapshot(&data);
    assert_eq!(num(&s, "bytes_read"), 2 * bytes.len() as u64, "{s:#}");

    let spots = |name: &str| -> Vec<(String, u64)> {
        file_chunks(&f.vault(), "latest", &format!("data/{name}"))
            .into_iter()
            .map(|c| (c.pack_hex, c.offset))
            .collect()
    };
    let (sparse_chunks, dense_chunks) = (spots("sparse.img"), spots("dense.img"));
    assert!(sparse_chunks.len() > 3);
    assert_eq!(
        sparse_chunks, dense_chunks,
        "the holes were cut or hashed differently"
    );

    let target = f.path("out");
    f.restore("latest", &target);
    assert_same_tree(&data, &target.join("data"), &[]);
}
