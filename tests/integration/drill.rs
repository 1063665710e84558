//! `vault drill` and `vault drills` on the real binary: a rehearsal that passes, one from a
//! remote alone, and one that must fail because a pack was damaged.

use std::fs;

use crate::common::*;

fn tree(f: &Fixture) -> std::path::PathBuf {
    let data = f.path("data");
    fs::create_dir_all(data.join("deep/er")).unwrap();
    for i in 0..40 {
        write_random_file(
            &data.join(format!("deep/f{i}")),
            900 + i,
            500 + i as usize * 997,
        );
    }
    fs::write(data.join("deep/er/readme.md"), text_bytes(300_000)).unwrap();
    std::os::unix::fs::symlink("deep/er/readme.md", data.join("link")).unwrap();
    data
}

#[test]
fn a_drill_restores_checks_and_reports_rto_and_rpo() {
    let f = Fixture::with_vault();
    let data = tree(&f);
    f.snapshot(&data);
    let scratch = f.path("scratch");
    let r = f
        .cmd()
        .args(["--json", "drill", "--keep", "--scratch"])
        .arg(&scratch)
        .run()
        .success()
        .json();
    let report = &r["report"];
    assert_eq!(report["ok"], true, "{r}");
    assert_eq!(report["files"], 41);
    assert_eq!(report["symlinks"], 1);
    assert_eq!(report["gates_passed"], true);
    assert!(report["rto_ms"].as_u64().is_some());
    assert!(report["rpo_seconds"].as_u64().unwrap() < 600);
    assert_eq!(report["snapshot"].as_str(), lkg(&f).as_deref());
    // The kept tree is the snapshot, byte for byte.
    assert_same_tree(&data, &scratch.join("data"), &[]);
    // The report is in the vault, as JSON and Markdown, and in the audit log.
    let json = std::path::PathBuf::from(r["path"].as_str().unwrap());
    assert!(json.starts_with(f.vault().join("drills")));
    let md = fs::read_to_string(json.with_extension("md")).unwrap();
    assert!(md.contains("PASSED") && md.contains("RTO"), "{md}");
    assert!(!json.file_name().unwrap().to_string_lossy().contains(':'));
    let audit = fs::read_to_string(f.vault().join("audit.log")).unwrap();
    assert!(audit.contains("\"drill\""));
    // Without --keep the scratch directory is removed.
    let scratch2 = f.path("scratch2");
    f.cmd()
        .args(["drill", "--scratch"])
        .arg(&scratch2)
        .run()
        .success()
        .stdout_has("drill PASSED");
    assert!(!scratch2.exists());
    let listed = f.cmd().args(["drills"]).run().success();
    assert_eq!(
        listed.stdout.matches("PASSED").count(),
        2,
        "{}",
        listed.stdout
    );
    // From a remote alone.
    let remote = f.path("remote");
    let cfg = f.path("vault.toml");
    fs::write(&cfg, format!("vault = \"{}\"\n", f.vault().display())).unwrap();
    f.cmd()
        .arg("--config")
        .arg(&cfg)
        .args(["remote", "add", "usb"])
        .arg(&remote)
        .run()
        .success();
    f.cmd()
        .arg("--config")
        .arg(&cfg)
        .arg("push")
        .run()
        .success();
    f.cmd()
        .args(["drill", "--from"])
        .arg(format!("file://{}", remote.display()))
        .run()
        .success()
        .stdout_has("drill PASSED");
}

#[test]
fn a_drill_over_a_damaged_pack_fails_and_says_so() {
    let f = Fixture::with_vault();
    let data = tree(&f);
    f.snapshot(&data);
    for pack in pack_files(&f.vault()) {
        let len = fs::metadata(&pack).unwrap().len();
        flip_byte(&pack, len / 3);
    }
    let r = f.cmd().args(["drill"]).run().code(4);
    assert!(r.stdout.contains("drill FAILED"), "{}", r.stdout);
    let list = f.cmd().args(["--json", "drills"]).run().success().json();
    assert_eq!(list[0]["ok"], false);
}
