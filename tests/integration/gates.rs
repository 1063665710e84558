//! Gates and last-known-good: a snapshot that fails a gate is kept but never promoted, and the
//! LKG pointer does not move; a passing snapshot after a rejected one is promoted and
//! `restore --lkg` gives back exactly that one.

use std::fs;

use serde_json::Value;

use crate::common::*;

/// `vault snapshot --json --no-promote DATA`'s report.
fn snapshot_unpromoted(f: &Fixture, data: &std::path::Path) -> Value {
    f.cmd()
        .args(["snapshot", "--json", "--no-promote"])
        .arg(data)
        .run()
        .success()
        .json()
}

/// A vault with a promoted snapshot A and a second, unpromoted snapshot B of new data.
fn two_snapshots(f: &Fixture) -> (String, String) {
    let data = f.path("data");
    fs::create_dir_all(&data).unwrap();
    fs::write(data.join("a.txt"), b"first").unwrap();
    let a = f.snapshot(&data);
    assert_eq!(a["promoted"], true, "{a:#}");
    let a = a["id"].as_str().unwrap().to_string();
    assert_eq!(lkg(f).as_deref(), Some(a.as_str()));
    write_random_file(&data.join("b.bin"), 5, 2 * MIB);
    let b = snapshot_unpromoted(f, &data);
    assert_eq!(b["promoted"], Value::Null);
    assert_eq!(
        lkg(f).as_deref(),
        Some(a.as_str()),
        "--no-promote moved the LKG"
    );
    (a, b["id"].as_str().unwrap().to_string())
}

#[test]
fn corrupt_manifest_is_rejected_and_the_lkg_stays() {
    let f = Fixture::with_vault();
    let (a, b) = two_snapshots(&f);
    tamper_manifest(&f, &b);
    let run = f.cmd().args(["promote", &b]).run().code(5);
    assert!(
        run.stdout.contains("gate manifest") && run.stdout.contains("FAILED"),
        "{run:#?}"
    );
    assert_eq!(lkg(&f).as_deref(), Some(a.as_str()));
    f.cmd().args(["gate", &b]).run().code(5);
}

#[test]
fn missing_manifest_is_rejected_and_the_lkg_stays() {
    let f = Fixture::with_vault();
    let (a, b) = two_snapshots(&f);
    fs::remove_file(f.vault().join(format!("snapshots/{b}.json"))).unwrap();
    let run = f.cmd().args(["promote", &b]).run().code(5);
    assert!(run.stdout.contains("missing"), "{run:#?}");
    assert_eq!(lkg(&f).as_deref(), Some(a.as_str()));
}

#[test]
fn missing_chunk_is_rejected_then_a_good_snapshot_is_promoted_and_restored_by_lkg() {
    let f = Fixture::with_vault();
    let (a, b) = two_snapshots(&f);
    // B's new data went into a pack of its own: remove it.
    let chunk = first_chunk(&f.vault(), &b, "data/b.bin");
    fs::remove_file(&chunk.pack).unwrap();
    let run = f.cmd().args(["gate", &b, "--json"]).run().code(5);
    let failed: Vec<String> = run.json()["gates"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["passed"] == false)
        .map(|g| g["gate"].as_str().unwrap().to_string())
        .collect();
    // The pack also held B's new trees, so the gates that read the tree cannot pass either.
    assert_eq!(failed[0], "checksums", "{failed:?}");
    f.cmd().args(["promote", &b]).run().code(5);
    assert_eq!(lkg(&f).as_deref(), Some(a.as_str()));
    let listed = f.cmd().args(["snapshots", "--json"]).run().success().json();
    let row = |id: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(row(&a)["lkg"], true);
    assert_eq!(row(&b)["lkg"], false);

    // A passing snapshot after the rejected one is promoted, and --lkg restores exactly it.
    let data = f.path("data");
    fs::write(data.join("c.txt"), b"third").unwrap();
    let c = f.snapshot(&data);
    assert_eq!(c["promoted"], true, "{c:#}");
    let c = c["id"].as_str().unwrap().to_string();
    assert_eq!(lkg(&f).as_deref(), Some(c.as_str()));
    let target = f.path("out");
    f.cmd()
        .args(["restore", "--lkg", "--target"])
        .arg(&target)
        .run()
        .success();
    assert_same_tree(&data, &target.join("data"), &[]);
    let audit = f
        .cmd()
        .args(["audit", "--json", "--action", "promote"])
        .run()
        .success()
        .json_lines();
    let outcomes: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["ok", "rejected", "ok"]);
}

#[test]
fn restore_lkg_without_a_promotion_is_one_clear_error() {
    let f = Fixture::with_vault();
    let data = f.path("data");
    fs::create_dir_all(&data).unwrap();
    fs::write(data.join("a"), b"a").unwrap();
    f.cmd()
        .args(["snapshot", "--no-promote"])
        .arg(&data)
        .run()
        .success();
    f.cmd()
        .args(["restore", "--lkg", "--target"])
        .arg(f.path("out"))
        .run()
        .one_line_error(1)
        .stderr_has("last-known-good");
}

#[test]
fn a_chunk_two_files_share_is_reported_once_and_the_second_file_is_still_checked_past_it() {
    let f = Fixture::with_vault();
    let data = f.path("data");
    fs::create_dir_all(&data).unwrap();
    // two.bin is one.bin and then 1 MiB more: its first chunks are one.bin's, its last its own.
    write_random_file(&data.join("one.bin"), 7, 2 * MIB);
    write_random_file(&f.path("tail.bin"), 8, MIB);
    let mut two = fs::read(data.join("one.bin")).unwrap();
    two.extend(fs::read(f.path("tail.bin")).unwrap());
    fs::write(data.join("two.bin"), two).unwrap();
    let s = snapshot_unpromoted(&f, &data)["id"]
        .as_str()
        .unwrap()
        .to_string();
    let shared = first_chunk(&f.vault(), &s, "data/one.bin");
    let own = file_chunks(&f.vault(), &s, "data/two.bin").pop().unwrap();
    let conn = rusqlite::Connection::open(f.vault().join("index.sqlite")).unwrap();
    for chunk in [&shared, &own] {
        let gone = conn
            .execute(
                "DELETE FROM blobs WHERE offset = ?1 \
                 AND pack = (SELECT seq FROM packs WHERE id = ?2)",
                rusqlite::params![chunk.offset as i64, hex::decode(&chunk.pack_hex).unwrap()],
            )
            .unwrap();
        assert_eq!(gone, 1);
    }
    drop(conn);
    let run = f.cmd().args(["gate", &s, "--json"]).run().code(5);
    let gates = run.json()["gates"].as_array().unwrap().clone();
    let checksums = gates.iter().find(|g| g["gate"] == "checksums").unwrap();
    assert_eq!(checksums["passed"], false, "{checksums:#}");
    let reasons: Vec<&str> = checksums["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    // The walk remembers the bad blobs, not every chunk: two.bin's reference to the shared chunk
    // adds no second reason, and does not stop the check of two.bin's own last chunk.
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    for (r, file) in reasons.iter().zip(["data/one.bin", "data/two.bin"]) {
        assert!(
            r.starts_with(&format!("{file}: blob ")) && r.ends_with("is not in the index"),
            "{reasons:?}"
        );
    }
}
