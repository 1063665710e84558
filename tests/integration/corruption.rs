//! Damaged packs: `verify` names the pack and the files it breaks; `restore` restores what it
//! can, leaves no corrupt file behind and exits 4.

use std::fs;
use std::path::PathBuf;

use serde_json::Value;

use crate::common::*;

/// Two snapshots of `data/`: the first holds a.bin and notes.txt, the second adds b.bin and
/// c.txt, whose data therefore lands in a pack of its own. Returns (data dir, first id, second id).
fn two_snapshots(f: &Fixture) -> (PathBuf, String, String) {
    let data = f.path("data");
    fs::create_dir(&data).unwrap();
    fs::write(data.join("a.bin"), random_bytes(10, 300_000)).unwrap();
    fs::write(data.join("notes.txt"), text_bytes(5_000)).unwrap();
    let first = f.snapshot(&data)["id"].as_str().unwrap().to_string();
    fs::write(data.join("b.bin"), random_bytes(11, 600_000)).unwrap();
    fs::write(data.join("c.txt"), text_bytes(7_000)).unwrap();
    let second = f.snapshot(&data)["id"].as_str().unwrap().to_string();
    (data, first, second)
}

/// Runs `verify --read-data --json`, which must find the vault damaged (exit 4) in exactly the
/// pack `pack_hex`; returns that pack's report.
fn the_damaged_pack(f: &Fixture, pack_hex: &str) -> Value {
    let report = f
        .cmd()
        .args(["verify", "--read-data", "--json"])
        .run()
        .code(4)
        .json();
    assert_eq!(report["clean"], false);
    let damaged = report["report"]["damaged_packs"].as_array().unwrap();
    assert_eq!(damaged.len(), 1, "{report:#}");
    assert_eq!(damaged[0]["pack"], pack_hex, "{report:#}");
    damaged[0].clone()
}

#[test]
fn flipped_byte_is_found_by_verify_and_restore_keeps_the_rest() {
    let f = Fixture::with_vault();
    let (data, first, second) = two_snapshots(&f);
    let b = first_chunk(&f.vault(), "latest", "data/b.bin");
    let a = first_chunk(&f.vault(), "latest", "data/a.bin");
    assert_ne!(a.pack, b.pack, "test setup: a.bin and b.bin share a pack");

    f.cmd().args(["verify", "--read-data"]).run().success();
    flip_byte(&b.pack, b.offset + u64::from(b.stored_len) / 2);

    let run = f
        .cmd()
        .args(["verify", "--read-data"])
        .run()
        .code(4)
        .stdout_has(&b.pack_hex)
        .stdout_has("data/b.bin")
        .stdout_has("VAULT IS DAMAGED");
    assert!(
        !run.stdout.contains("a.bin"),
        "a.bin is intact\n{}",
        run.stdout
    );

    let damaged = the_damaged_pack(&f, &b.pack_hex);
    let paths: Vec<&str> = damaged["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [format!("{}:data/b.bin", &second[..8])],
        "{damaged:#}"
    );

    // Restore the damaged snapshot: everything but b.bin comes back, b.bin is not left behind.
    let target = f.path("out");
    f.cmd()
        .args(["restore", "latest", "--target"])
        .arg(&target)
        .run()
        .code(4)
        .stderr_has("data/b.bin");
    assert!(
        !target.join("data/b.bin").exists(),
        "a corrupt b.bin was left in the target"
    );
    for name in ["a.bin", "notes.txt", "c.txt"] {
        assert_eq!(
            fs::read(target.join("data").join(name)).unwrap(),
            fs::read(data.join(name)).unwrap(),
            "{name} differs"
        );
    }

    // The older snapshot does not use the damaged blob and restores cleanly.
    let target = f.path("out-first");
    f.restore(&first[..12], &target);
    for name in ["a.bin", "notes.txt"] {
        assert_same_tree(&data.join(name), &target.join("data").join(name), &[]);
    }
    assert!(!target.join("data/b.bin").exists());
}

#[test]
fn deleted_pack_is_named_by_structural_verify() {
    let f = Fixture::with_vault();
    let (data, first, second) = two_snapshots(&f);
    // The pack of the first run: a.bin, notes.txt and the first snapshot's trees. The second
    // snapshot's trees live in the second pack, so its paths can still be traced.
    let a = first_chunk(&f.vault(), "latest", "data/a.bin");
    fs::remove_file(&a.pack).unwrap();

    let run = f
        .cmd()
        .arg("verify")
        .run()
        .code(4)
        .stdout_has(&a.pack_hex)
        .stdout_has("missing")
        .stdout_has("data/a.bin")
        .stdout_has("data/notes.txt");
    assert!(!run.stdout.contains("b.bin"), "{}", run.stdout);
    let v = f.cmd().args(["verify", "--json"]).run().code(4).json();
    let damaged: &Vec<Value> = v["report"]["damaged_packs"].as_array().unwrap();
    assert_eq!(damaged.len(), 1, "{v:#}");
    assert_eq!(damaged[0]["pack"], a.pack_hex.as_str(), "{v:#}");
    let snaps: Vec<&str> = damaged[0]["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(snaps, {
        let mut s = vec![&first[..8], &second[..8]];
        s.sort();
        s
    });

    // The second snapshot restores what it still can and says what it could not.
    let target = f.path("out");
    f.cmd()
        .args(["restore", &second, "--target"])
        .arg(&target)
        .run()
        .code(4)
        .stderr_has("data/a.bin")
        .stderr_has("data/notes.txt");
    assert!(!target.join("data/a.bin").exists());
    assert!(!target.join("data/notes.txt").exists());
    for name in ["b.bin", "c.txt"] {
        assert_eq!(
            fs::read(target.join("data").join(name)).unwrap(),
            fs::read(data.join(name)).unwrap(),
            "{name} differs"
        );
    }

    // The first snapshot's root tree is gone: nothing can be restored, one clear line, exit 4.
    f.cmd()
        .args(["restore", &first, "--target"])
        .arg(f.path("out-first"))
        .run()
        .one_line_error(4)
        .stderr_has("missing")
        .stderr_has(&a.pack_hex);
}

#[test]
fn tampered_manifest_is_reported_not_trusted() {
    let f = Fixture::with_vault();
    let (_, first, second) = two_snapshots(&f);
    tamper_manifest(&f, &first);

    let run = f
        .cmd()
        .args(["snapshots", "--json"])
        .run()
        .code(4)
        .stderr_has(&first);
    let listed: Vec<String> = run
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, [second]);
    f.cmd()
        .arg("verify")
        .run()
        .code(4)
        .stdout_has(&first)
        .stdout_has("authentication failed");
    let run = f
        .cmd()
        .args(["restore", &first, "--target"])
        .arg(f.path("out"))
        .run();
    assert!(matches!(run.code, Some(1) | Some(4)), "{run:#?}");
    assert!(run.stderr.contains(&first), "{run:#?}");
    assert!(!f.path("out/data").exists());
    // `latest` skips the bad manifest rather than failing.
    f.restore("latest", &f.path("out-latest"));
}

/// `verify --read-data` reads a pack in parts of about 8 MiB and hashes them as they come: damage
/// in a blob of the last part is pinned to that blob, and damage outside every blob (a header
/// byte no reader looks at) is caught by the pack's hash alone, with no blob blamed.
#[test]
fn damage_anywhere_in_a_pack_read_in_parts_is_found() {
    let f = Fixture::with_vault();
    let data = f.path("data");
    fs::create_dir(&data).unwrap();
    write_random_file(&data.join("big.bin"), 12, 24 << 20);
    f.snapshot(&data);
    let chunks = file_chunks(&f.vault(), "latest", "data/big.bin");
    let pack = chunks[0].pack.clone();
    assert!(
        chunks.iter().all(|c| c.pack == pack),
        "test setup: big.bin spans packs"
    );
    let last = chunks.last().unwrap().clone();
    assert!(
        last.offset > 16 << 20,
        "test setup: the last chunk is not in the third part"
    );
    f.cmd().args(["verify", "--read-data"]).run().success();
    let verdict = |f: &Fixture| the_damaged_pack(f, &chunks[0].pack_hex);

    let at = last.offset + u64::from(last.stored_len) / 2;
    flip_byte(&pack, at);
    let d = verdict(&f);
    assert!(
        d["reason"].as_str().unwrap().contains("1 blob(s) fail"),
        "{d:#}"
    );
    assert_eq!(d["blobs"].as_array().unwrap().len(), 1, "{d:#}");
    flip_byte(&pack, at);
    f.cmd().args(["verify", "--read-data"]).run().success();

    flip_byte(&pack, 6);
    let d = verdict(&f);
    assert!(
        d["reason"]
            .as_str()
            .unwrap()
            .contains("do not match the pack id"),
        "{d:#}"
    );
    assert!(d["blobs"].as_array().unwrap().is_empty(), "{d:#}");
    // No blob is affected: the file restores whole.
    let target = f.path("out");
    f.restore("latest", &target);
    assert_same_tree(&data, &target.join("data"), &[]);
}
