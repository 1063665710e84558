//! `audit.log`: one record per decision, with who, where, when, what and how it ended.

use std::fs;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::common::*;

fn records(f: &Fixture) -> Vec<Value> {
    f.cmd()
        .args(["audit", "--json"])
        .run()
        .success()
        .json_lines()
        .as_array()
        .expect("audit --json is JSON lines")
        .clone()
}

fn host() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn every_action_leaves_one_complete_record() {
    let f = Fixture::new();
    let started = SystemTime::now() - Duration::from_secs(2);
    let cmd = || f.cmd().env("USER", "auditor");
    cmd().arg("init").run().success();
    let data = f.path("data");
    fs::create_dir(&data).unwrap();
    fs::write(data.join("a.txt"), b"a").unwrap();
    let snap = cmd()
        .args(["snapshot", "--json"])
        .arg(&data)
        .run()
        .success()
        .json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    cmd()
        .args(["restore", &snap[..10], "--target"])
        .arg(f.path("out"))
        .run()
        .success();
    cmd().args(["verify", "--read-data"]).run().success();

    let recs = records(&f);
    let actions: Vec<&str> = recs.iter().map(|r| r["action"].as_str().unwrap()).collect();
    assert_eq!(
        actions,
        ["init", "snapshot", "promote", "restore", "verify"],
        "{recs:#?}"
    );
    for r in &recs {
        assert_eq!(r["host"], host().as_str(), "{r:#}");
        assert_eq!(r["outcome"], "ok", "{r:#}");
        let t = humantime::parse_rfc3339(r["time"].as_str().unwrap())
            .unwrap_or_else(|e| panic!("time is not RFC 3339 ({e}): {r:#}"));
        assert!(
            t >= started && t <= SystemTime::now() + Duration::from_secs(2),
            "time out of range: {r:#}"
        );
    }
    for r in &recs[1..] {
        assert_eq!(r["user"], "auditor", "{r:#}");
    }
    // Snapshot, promote and restore name the full snapshot id; verify concerns the whole vault.
    assert_eq!(recs[1]["snapshot"], snap.as_str());
    assert_eq!(recs[2]["snapshot"], snap.as_str());
    assert_eq!(recs[3]["snapshot"], snap.as_str());
    assert!(
        recs[4].get("snapshot").is_none_or(Value::is_null),
        "{:#}",
        recs[4]
    );

    // Read-only listings are not decisions and add no records.
    f.cmd().arg("snapshots").run().success();
    f.cmd().args(["ls", "latest"]).run().success();
    assert_eq!(records(&f).len(), 5);
}

#[test]
fn failures_are_recorded_with_their_outcome() {
    let f = Fixture::with_vault();
    let data = f.path("data");
    fs::create_dir(&data).unwrap();
    fs::write(data.join("a.txt"), b"a").unwrap();
    fs::write(data.join("b.bin"), random_bytes(1, 200_000)).unwrap();
    let snap = f.snapshot(&data)["id"].as_str().unwrap().to_string();

    // A restore refused because the target is not empty.
    let target = f.path("busy");
    fs::create_dir(&target).unwrap();
    fs::write(target.join("x"), b"x").unwrap();
    f.cmd()
        .args(["restore", "latest", "--target"])
        .arg(&target)
        .run()
        .code(1);

    // Damage every pack, then verify and restore.
    for p in pack_files(&f.vault()) {
        let mut bytes = fs::read(&p).unwrap();
        bytes[100] ^= 0xff;
        fs::write(&p, bytes).unwrap();
    }
    f.cmd().args(["verify", "--read-data"]).run().code(4);

    let recs = records(&f);
    let outcome = |i: usize| recs[i]["outcome"].as_str().unwrap();
    let actions: Vec<&str> = recs.iter().map(|r| r["action"].as_str().unwrap()).collect();
    assert_eq!(
        actions,
        ["init", "snapshot", "promote", "restore", "verify"],
        "{recs:#?}"
    );
    assert_eq!(recs[3]["snapshot"], snap.as_str());
    assert_ne!(outcome(3), "ok", "a refused restore recorded as ok");
    assert_eq!(outcome(4), "damaged");
}

#[test]
fn a_torn_last_line_is_skipped_with_a_warning() {
    let f = Fixture::with_vault();
    let mut log = fs::OpenOptions::new()
        .append(true)
        .open(f.vault().join("audit.log"))
        .unwrap();
    std::io::Write::write_all(&mut log, b"{\"time\":\"2026-").unwrap();
    drop(log);
    let run = f
        .cmd()
        .args(["audit", "--json"])
        .run()
        .success()
        .stderr_has("did not parse");
    assert_eq!(run.json_lines().as_array().unwrap().len(), 1);
    // The next record still lands on a line of its own and parses.
    f.cmd().arg("verify").run().success();
    let recs = f
        .cmd()
        .args(["audit", "--json"])
        .run()
        .success()
        .json_lines();
    let actions: Vec<&str> = recs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["init", "verify"], "{recs:#}");
}
