//! `vault prune` on the real binary: space comes back after a forget and every remaining
//! snapshot still restores byte for byte; `kill -9` at each step of a prune leaves a vault that
//! verifies; a snapshot taken while a prune holds its marks is honoured (the prune runs beside
//! the writer and spares what the new snapshot uses).

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::s3server::S3Server;

/// Three snapshots: s1 = {a, b}, s2 = {b, c}, s3 = {b, c, d}. Forgetting s1 leaves a's bytes
/// unused, in the pack that also holds b.
struct Timeline {
    data: std::path::PathBuf,
    ids: Vec<String>,
    /// A copy of the source as each kept snapshot saw it.
    copies: Vec<(String, std::path::PathBuf)>,
}

fn timeline(f: &Fixture) -> Timeline {
    timeline_pushing(f, None)
}

/// [`timeline`], pushing all three snapshots with `push` before the local forget.
fn timeline_pushing(f: &Fixture, push: Option<&dyn Fn()>) -> Timeline {
    let data = f.path("data");
    fs::create_dir_all(&data).unwrap();
    write_random_file(&data.join("a.bin"), 1, 3 << 20);
    write_random_file(&data.join("b.bin"), 2, 1 << 20);
    f.snapshot(&data);
    fs::remove_file(data.join("a.bin")).unwrap();
    write_random_file(&data.join("c.bin"), 3, 1 << 20);
    f.snapshot(&data);
    let mut copies = Vec::new();
    let copy = f.path("copy-s2");
    copy_tree(&data, &copy);
    write_random_file(&data.join("d.bin"), 4, 512 << 10);
    f.snapshot(&data);
    let copy3 = f.path("copy-s3");
    copy_tree(&data, &copy3);
    let ids = f.snapshot_ids();
    assert_eq!(ids.len(), 3);
    copies.push((ids[1].clone(), copy));
    copies.push((ids[2].clone(), copy3));
    if let Some(push) = push {
        push();
    }
    let r = f
        .cmd()
        .args(["--json", "forget", "--keep-last", "2"])
        .run()
        .success()
        .json();
    assert_eq!(r["forgotten"], 1);
    Timeline { data, ids, copies }
}

fn copy_tree(src: &Path, dst: &Path) {
    fs::create_dir_all(dst).unwrap();
    for e in fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
}

/// Every kept snapshot restores to exactly the bytes it was taken of.
fn assert_restores(f: &Fixture, t: &Timeline, tag: &str) {
    for (id, copy) in &t.copies {
        let out = f.path(format!("restore-{tag}-{}", &id[..8]));
        f.restore(id, &out).success();
        assert_same_bytes(copy, &out.join("data"));
    }
}

/// The same file names with the same bytes (the copies' mtimes are the copy's, not the
/// source's).
fn assert_same_bytes(want: &Path, got: &Path) {
    let names = |d: &Path| {
        let mut v: Vec<_> = fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(want), names(got), "{}", got.display());
    for n in names(want) {
        assert_eq!(
            file_hash(&want.join(&n)),
            file_hash(&got.join(&n)),
            "{}",
            got.join(&n).display()
        );
    }
}

#[test]
fn prune_after_forget_reclaims_space_and_every_snapshot_still_restores() {
    let f = Fixture::with_vault();
    let t = timeline(&f);
    let packs_before = pack_files(&f.vault());
    let size_before = dir_size(&f.vault().join("packs"));

    // A dry run reports and changes nothing.
    let dry = f
        .cmd()
        .args(["--json", "prune", "--dry-run"])
        .run()
        .success()
        .json();
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["snapshots"], 2);
    assert!(
        num(&dry, "packs_repacked") + num(&dry, "packs_unused") >= 1,
        "{dry}"
    );
    assert!(num(&dry, "bytes_reclaimed") >= 3 << 20, "{dry}");
    assert_eq!(pack_files(&f.vault()), packs_before);

    let r = f.cmd().args(["--json", "prune"]).run().success().json();
    assert!(num(&r, "packs_deleted") >= 1, "{r}");
    assert!(
        num(&r, "packs_written") >= 1,
        "the half-used pack was repacked: {r}"
    );
    assert!(num(&r, "bytes_reclaimed") >= 3 << 20, "{r}");
    assert_eq!(r["packs_spared"], 0);
    let size_after = dir_size(&f.vault().join("packs"));
    assert!(
        size_after + (3 << 20) <= size_before,
        "packs went from {size_before} to {size_after} bytes"
    );
    f.cmd().args(["verify", "--read-data"]).run().success();
    assert_restores(&f, &t, "after");

    // Nothing left to do: a second prune deletes nothing, and does not even wait for readers.
    let reader = f.open_vault(atlasvault::lock::LockMode::Shared);
    let again = f.cmd().args(["--json", "prune"]).run().success().json();
    drop(reader);
    assert_eq!(again["packs_deleted"], 0, "{again}");
    assert_eq!(again["packs_written"], 0, "{again}");
    assert_eq!(again["exclusive_ms"], 0, "{again}");
    // The forgotten snapshot's unique file is gone from the vault: a fresh snapshot of it
    // stores its bytes again.
    write_random_file(&t.data.join("a.bin"), 1, 3 << 20);
    let s = f.snapshot(&t.data);
    assert!(num(&s, "bytes_new") >= 3 << 20, "{s}");
    let audit = fs::read_to_string(f.vault().join("audit.log")).unwrap();
    assert!(audit.contains("\"prune\""), "{audit}");
    assert_eq!(t.ids.len(), 3);

    // A threshold outside (0, 100] is a usage error.
    f.cmd()
        .args(["prune", "--repack-threshold", "0"])
        .run()
        .one_line_error(2);
}

#[test]
fn kill_9_at_each_step_of_a_prune_leaves_a_vault_that_verifies() {
    for point in [
        "prune-before-indexing-new-pack",
        "prune-after-repack",
        "prune-mid-delete",
        "prune-after-index-update",
    ] {
        let f = Fixture::with_vault();
        let t = timeline(&f);
        let run = f.cmd().arg("prune").env("VAULT_CRASH_AT", point).run();
        assert_eq!(run.code, None, "{point}: prune was not killed: {run:?}");
        f.cmd().args(["verify", "--read-data"]).run().success();
        assert_restores(&f, &t, point);
        // The next prune finishes the job, and the vault still verifies.
        let r = f.cmd().args(["--json", "prune"]).run().success().json();
        assert_eq!(r["packs_spared"], 0, "{point}: {r}");
        f.cmd().args(["verify", "--read-data"]).run().success();
        assert_restores(&f, &t, &format!("{point}-again"));
        let left = dir_size(&f.vault().join("packs"));
        assert!(
            left < (3 << 20) + (3 << 20),
            "{point}: {left} bytes of packs left, the forgotten file's bytes were not reclaimed"
        );
        assert!(
            !f.vault().join("packs/.prune.tmp").exists(),
            "{point}: prune.tmp left behind"
        );
    }
}

#[test]
fn a_snapshot_taken_while_prune_marks_is_honoured() {
    let f = Fixture::with_vault();
    let t = timeline(&f);
    let pause = f.path("pause");
    fs::create_dir_all(&pause).unwrap();
    let mut prune = f
        .cmd()
        .args(["--json", "prune"])
        .env("VAULT_PAUSE_AT", "prune-before-delete")
        .env("VAULT_PAUSE_DIR", &pause)
        .spawn_capturing();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !pause.join("prune-before-delete.reached").exists() {
        assert!(
            Instant::now() < deadline,
            "prune never reached its delete phase"
        );
        assert!(prune.try_wait().unwrap().is_none(), "prune exited early");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The prune has marked and repacked, holding only a shared lock: the writer is not blocked.
    // The forgotten file comes back: its chunks dedup against the pack the prune means to delete.
    write_random_file(&t.data.join("a.bin"), 1, 3 << 20);
    let s = f.snapshot(&t.data);
    assert!(
        num(&s, "bytes_new") < 1 << 20,
        "a.bin deduplicated against the doomed pack: {s}"
    );
    let copy = f.path("copy-s4");
    copy_tree(&t.data, &copy);
    // Readers too.
    f.cmd().arg("snapshots").run().success();
    fs::write(pause.join("prune-before-delete.go"), b"").unwrap();
    let out = prune.wait_with_output().unwrap();
    assert!(out.status.success(), "prune failed: {out:?}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["snapshots_rechecked"], 1, "{r}");
    assert!(num(&r, "packs_spared") >= 1, "{r}");
    f.cmd().args(["verify", "--read-data"]).run().success();
    let ids = f.snapshot_ids();
    let newest = ids.last().unwrap();
    let target = f.path("restore-s4");
    f.restore(newest, &target).success();
    assert_same_bytes(&copy, &target.join("data"));
    assert_restores(&f, &t, "beside");
}

#[test]
fn two_prunes_do_not_run_at_once() {
    let f = Fixture::with_vault();
    timeline(&f);
    let pause = f.path("pause");
    fs::create_dir_all(&pause).unwrap();
    let mut first = f
        .cmd()
        .arg("prune")
        .env("VAULT_PAUSE_AT", "prune-before-delete")
        .env("VAULT_PAUSE_DIR", &pause)
        .spawn();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !pause.join("prune-before-delete.reached").exists() {
        assert!(
            Instant::now() < deadline,
            "prune never reached its delete phase"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    f.cmd()
        .arg("prune")
        .run()
        .one_line_error(11)
        .stderr_has("another `vault prune`");
    fs::write(pause.join("prune-before-delete.go"), b"").unwrap();
    assert!(first.wait().unwrap().success());
    f.cmd().args(["verify", "--read-data"]).run().success();
}

/// Forget and prune on a remote (`--remote NAME`), then a fresh machine restores every kept
/// snapshot from the remote alone and the remote verifies; an append-only remote needs --admin.
fn remote_forget_and_prune(
    f: &Fixture,
    cmd: &dyn Fn() -> VaultCmd,
    url: &str,
    size: &dyn Fn() -> u64,
) {
    let t = timeline_pushing(
        f,
        Some(&|| {
            cmd().arg("push").run().success();
        }),
    );
    // Local first: prune, and push the repacked pack.
    f.cmd().arg("prune").run().success();
    cmd().arg("push").run().success();
    let before = size();
    let dry = cmd()
        .args([
            "--json",
            "forget",
            "--remote",
            "r",
            "--keep-last",
            "2",
            "--dry-run",
        ])
        .run()
        .success()
        .json();
    assert_eq!(dry["forgotten"], 1, "{dry}");
    let r = cmd()
        .args(["--json", "forget", "--remote", "r", "--keep-last", "2"])
        .run()
        .success()
        .json();
    assert_eq!(
        (r["snapshots"].clone(), r["forgotten"].clone()),
        (3.into(), 1.into()),
        "{r}"
    );
    let p = cmd()
        .args(["--json", "prune", "--remote", "r"])
        .run()
        .success()
        .json();
    assert!(num(&p, "packs_deleted") >= 1, "{p}");
    assert!(num(&p, "bytes_reclaimed") >= 3 << 20, "{p}");
    let after = size();
    assert!(
        after + (3 << 20) <= before,
        "the remote went from {before} to {after} bytes"
    );
    // A fresh machine: nothing but the remote's address.
    let cache = f.path("fresh-cache");
    cmd()
        .args(["verify", "--read-data", "--from", url, "--cache-dir"])
        .arg(&cache)
        .run()
        .success();
    for (id, copy) in &t.copies {
        let out = f.path(format!("from-remote-{}", &id[..8]));
        cmd()
            .args(["restore", id, "--from", url, "--cache-dir"])
            .arg(&cache)
            .arg("--target")
            .arg(&out)
            .run()
            .success();
        assert_same_bytes(copy, &out.join("data"));
    }
    // Pushing again re-uploads nothing that prune took away from both.
    let again = cmd().args(["--json", "push"]).run().success().json();
    assert_eq!(again["pushes"][0]["report"]["packs_uploaded"], 0, "{again}");
    let audit = fs::read_to_string(f.vault().join("audit.log")).unwrap();
    assert!(
        audit.contains("\"prune\"") && audit.contains(url),
        "{audit}"
    );
}

#[test]
fn forget_and_prune_on_a_directory_remote() {
    let f = Fixture::with_vault();
    let remote = f.path("usb/AtlasVault");
    let url = format!("file://{}", remote.display());
    let cfg = f.path("vault.toml");
    fs::write(&cfg, format!("vault = \"{}\"\n", f.vault().display())).unwrap();
    let cmd = || f.cmd().arg("--config").arg(&cfg);
    cmd().args(["remote", "add", "r", &url]).run().success();
    remote_forget_and_prune(&f, &cmd, &url, &|| dir_size(&remote));

    // An append-only remote is pruned only with --admin.
    let guarded = f.path("guarded");
    cmd()
        .args(["remote", "add", "g"])
        .arg(format!("file://{}", guarded.display()))
        .arg("--append-only")
        .run()
        .success();
    cmd().arg("push").run().success();
    cmd()
        .args(["prune", "--remote", "g"])
        .run()
        .one_line_error(2)
        .stderr_has("--admin");
    cmd()
        .args(["forget", "--remote", "g", "--keep-last", "1"])
        .run()
        .one_line_error(2)
        .stderr_has("append-only");
    cmd()
        .args(["prune", "--remote", "g", "--admin"])
        .run()
        .success();
}

#[test]
fn forget_and_prune_on_an_s3_remote() {
    let f = Fixture::with_vault();
    let Some(s3) = S3Server::start(&f, "prune") else {
        return;
    };
    let cfg = f.path("vault.toml");
    fs::write(
        &cfg,
        format!(
            "vault = \"{}\"\n\n{}",
            f.vault().display(),
            s3.remote_table("r", false)
        ),
    )
    .unwrap();
    let cmd = || s3.creds(f.cmd().arg("--config").arg(&cfg));
    let backend = s3.backend();
    let size = || {
        backend
            .list("")
            .unwrap()
            .iter()
            .map(|o| o.size)
            .sum::<u64>()
    };
    remote_forget_and_prune(&f, &cmd, &s3.url(), &size);
}
