//! `index.sqlite` is a cache: losing or breaking it loses nothing.

use std::fs;
use std::path::{Path, PathBuf};

use crate::common::*;

fn populated(f: &Fixture) -> PathBuf {
    let data = f.path("data");
    fs::create_dir_all(data.join("sub")).unwrap();
    write_random_file(&data.join("big.bin"), 3, 3 * MIB);
    fs::write(data.join("sub/text.sql"), text_bytes(MIB)).unwrap();
    fs::write(data.join("sub/small"), b"small").unwrap();
    set_mtime(&data.join("sub/small"), 1_234_567_890);
    f.snapshot(&data);
    fs::write(data.join("added-later"), b"second snapshot").unwrap();
    f.snapshot(&data);
    data
}

fn remove_index(vault: &Path) {
    fs::remove_file(vault.join("index.sqlite")).unwrap();
    for extra in ["index.sqlite-wal", "index.sqlite-shm"] {
        let _ = fs::remove_file(vault.join(extra));
    }
}

#[test]
fn reindex_after_deleting_the_index_restores_byte_identical() {
    let f = Fixture::with_vault();
    let data = populated(&f);
    let packs = pack_files(&f.vault()).len() as u64;
    remove_index(&f.vault());

    let r = f.cmd().args(["reindex", "--json"]).run().success().json();
    assert_eq!(num(&r, "packs"), packs, "{r:#}");
    assert!(num(&r, "blobs") > 0, "{r:#}");
    assert!(r["problems"].as_array().unwrap().is_empty(), "{r:#}");
    assert!(f.vault().join("index.sqlite").is_file());

    f.cmd().args(["verify", "--read-data"]).run().success();
    let target = f.path("out");
    f.restore("latest", &target);
    assert_same_tree(&data, &target.join("data"), &[]);

    // The rebuilt index serves deduplication too: an unchanged snapshot stores nothing.
    let s = f.snapshot(&data);
    assert_eq!(num(&s, "files_unchanged"), num(&s, "files"), "{s:#}");
    assert_eq!(num(&s, "bytes_new"), 0, "{s:#}");
}

#[test]
fn restore_without_an_index_still_works() {
    let f = Fixture::with_vault();
    let data = populated(&f);
    remove_index(&f.vault());
    let target = f.path("out");
    f.restore("latest", &target);
    assert_same_tree(&data, &target.join("data"), &[]);
    // verify and ls without an index as well.
    remove_index(&f.vault());
    f.cmd().args(["verify", "--read-data"]).run().success();
    remove_index(&f.vault());
    f.cmd()
        .args(["ls", "latest", "data/sub"])
        .run()
        .success()
        .stdout_has("data/sub/text.sql");
}

#[test]
fn reindex_rebuilds_an_index_that_is_garbage() {
    let f = Fixture::with_vault();
    let data = populated(&f);
    remove_index(&f.vault());
    fs::write(f.vault().join("index.sqlite"), random_bytes(9, 64 * 1024)).unwrap();
    // A reader meets the broken index with one clear line, not a crash.
    f.cmd()
        .args(["restore", "latest", "--target"])
        .arg(f.path("out-broken"))
        .run()
        .one_line_error(1)
        .stderr_has("index");
    // The index is a cache: reindex must rebuild it from the packs whatever state it is in.
    f.cmd().arg("reindex").run().success();
    let target = f.path("out");
    f.restore("latest", &target);
    assert_same_tree(&data, &target.join("data"), &[]);
}

#[test]
fn snapshot_after_losing_the_index_reuses_packs() {
    let f = Fixture::with_vault();
    let data = populated(&f);
    let before = dir_size(&f.vault().join("packs"));
    remove_index(&f.vault());
    // A writer reconciles the index with packs/ on open, so nothing is stored twice.
    let s = f
        .cmd()
        .args(["snapshot", "--json", "--no-parent"])
        .arg(&data)
        .run()
        .success()
        .json();
    assert_eq!(num(&s, "bytes_new"), 0, "{s:#}");
    assert_eq!(dir_size(&f.vault().join("packs")), before);
}
