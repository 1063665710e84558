//! `vault forget` on the real binary: keep rules from flags and from the config, `--dry-run`
//! with the reason each survivor is kept, the protections (LKG, newer than it), and the agent's
//! retention step.

use std::fs;

use crate::common::*;

/// Four promoted snapshots of a changing tree, then a rejected one (newer than the LKG).
fn five_snapshots(f: &Fixture) -> Vec<String> {
    let data = f.path("data");
    fs::create_dir_all(&data).unwrap();
    for i in 0..4 {
        fs::write(data.join("notes.txt"), format!("version {i}\n")).unwrap();
        f.snapshot(&data);
    }
    // A lockfile that does not parse: the sanity gate rejects this one.
    fs::write(data.join("Cargo.lock"), "this is [[[ not toml").unwrap();
    f.cmd().arg("snapshot").arg(&data).run().code(5);
    f.snapshot_ids()
}

#[test]
fn forget_keeps_what_the_rules_say_and_never_the_lkg_or_newer() {
    let f = Fixture::with_vault();
    let ids = five_snapshots(&f);
    assert_eq!(ids.len(), 5);
    let lkg_id = lkg(&f).unwrap();
    assert_eq!(lkg_id, ids[3], "the rejected newest did not become the LKG");
    // Dry run: names what would go and why the others stay; changes nothing.
    let dry = f
        .cmd()
        .args(["forget", "--keep-last", "2", "--dry-run"])
        .run()
        .success();
    assert!(
        dry.stdout.contains("would forget 3 of 5 snapshots"),
        "{}",
        dry.stdout
    );
    assert!(dry.stdout.contains("last-known-good"), "{}", dry.stdout);
    assert!(
        dry.stdout.contains("newer than the last-known-good"),
        "{}",
        dry.stdout
    );
    assert_eq!(f.snapshot_ids().len(), 5);
    // keep_last 1: the rejected newest is kept by the rule and as newer than the LKG; the LKG
    // is kept whatever the rule says.
    let r = f
        .cmd()
        .args(["--json", "forget", "--keep-last", "1"])
        .run()
        .success()
        .json();
    assert_eq!(r["forgotten"], 3);
    let left = f.snapshot_ids();
    assert_eq!(left, vec![ids[3].clone(), ids[4].clone()]);
    let out = f.path("out");
    f.cmd()
        .args(["restore", "--lkg", "--target"])
        .arg(&out)
        .run()
        .success();
    assert_eq!(
        fs::read_to_string(out.join("data/notes.txt")).unwrap(),
        "version 3\n"
    );
    f.cmd().args(["verify", "--read-data"]).run().success();
    let audit = fs::read_to_string(f.vault().join("audit.log")).unwrap();
    assert!(audit.contains("\"forget\""), "{audit}");
    // A policy that keeps nothing is refused.
    f.cmd()
        .args(["forget", "--keep-last", "0"])
        .run()
        .one_line_error(2);
    f.cmd()
        .args(["forget", "--keep-daily", "-2"])
        .run()
        .one_line_error(2);
}

#[test]
fn the_config_policy_applies_to_forget_and_to_each_cycle() {
    let f = Fixture::with_vault();
    let data = f.path("data");
    fs::create_dir_all(&data).unwrap();
    fs::write(data.join("a"), "a").unwrap();
    let cfg = f.path("vault.toml");
    fs::write(
        &cfg,
        format!(
            "vault = \"{}\"\n[[source]]\nname = \"data\"\nkind = \"tree\"\npath = \"{}\"\n\
             [retention]\nkeep_last = 2\n",
            f.vault().display(),
            data.display()
        ),
    )
    .unwrap();
    for i in 0..4 {
        fs::write(data.join("a"), format!("{i}")).unwrap();
        let r = f
            .cmd()
            .arg("--config")
            .arg(&cfg)
            .args(["--json", "cycle"])
            .run()
            .success()
            .json();
        let want = if i < 2 { 0 } else { 1 };
        assert_eq!(
            r["retention"],
            format!("forgot {want} of {} snapshots", (i + 1).min(3)),
            "{r}"
        );
    }
    assert_eq!(f.snapshot_ids().len(), 2);
    // Without [retention] the cycle leaves every snapshot alone.
    fs::write(
        &cfg,
        format!(
            "vault = \"{}\"\n[[source]]\nname = \"data\"\nkind = \"tree\"\npath = \"{}\"\n",
            f.vault().display(),
            data.display()
        ),
    )
    .unwrap();
    fs::write(data.join("a"), "again").unwrap();
    let r = f
        .cmd()
        .arg("--config")
        .arg(&cfg)
        .args(["--json", "cycle"])
        .run()
        .success()
        .json();
    assert_eq!(r["retention"], "not configured");
    assert_eq!(f.snapshot_ids().len(), 3);
}
