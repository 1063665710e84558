//! `kill -9` in the middle of a snapshot leaves a consistent vault: nothing half-written is
//! listed or trusted, the lock is free, and the next run reuses the packs already published.

use std::fs;
use std::time::{Duration, Instant};

use crate::common::*;

const FILES: u64 = 10;
const FILE_BYTES: usize = 32 * MIB;

#[test]
fn sigkill_mid_snapshot_leaves_a_consistent_reusable_vault() {
    let f = Fixture::with_vault();
    let data = f.path("data");
    fs::create_dir_all(data.join("sparse")).unwrap();
    for i in 0..FILES {
        write_random_file(&data.join(format!("r{i:02}.bin")), 1000 + i, FILE_BYTES);
    }
    // A sparse file: mostly holes, a little data at each end.
    let sparse = fs::File::create(data.join("sparse/holes.img")).unwrap();
    sparse.set_len(64 * MIB as u64).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&sparse, &random_bytes(77, 4096), 0).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&sparse, &random_bytes(78, 4096), 40 * MIB as u64)
        .unwrap();
    drop(sparse);
    let incompressible = FILES * FILE_BYTES as u64;
    let total = incompressible + 64 * MIB as u64;

    // Kill it as soon as at least one pack has been published.
    let mut child = f.cmd().arg("snapshot").arg(&data).spawn();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if !pack_files(&f.vault()).is_empty() {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "snapshot finished before a pack was seen; the input is too small to test a kill"
        );
        assert!(Instant::now() < deadline, "no pack was published in time");
        std::thread::sleep(Duration::from_millis(2));
    }
    // SAFETY: the pid is our own child, still unreaped.
    assert_eq!(
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) },
        0
    );
    let status = child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL),
        "the snapshot was not killed: {status:?}"
    );
    let packs_before = pack_files(&f.vault());
    let reusable: u64 = packs_before
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum();
    assert!(!packs_before.is_empty());

    // Nothing is listed, and what is there reads back clean.
    assert!(f.snapshot_ids().is_empty(), "a killed snapshot is listed");
    f.cmd()
        .args(["verify", "--read-data"])
        .run()
        .success()
        .stdout_has("vault is clean");

    // The next snapshot succeeds (the lock died with the process) and reuses the packs.
    let s = f.snapshot(&data);
    assert_eq!(num(&s, "bytes"), total);
    let stored = num(&s, "bytes_stored");
    // Without reuse the random files alone would cost `incompressible` bytes (the sparse file's
    // holes dedup and compress to almost nothing).
    assert!(
        stored + reusable * 9 / 10 <= incompressible + MIB as u64,
        "stored {stored} bytes of {incompressible} random bytes although {reusable} bytes of packs \
         were already there"
    );
    // Every pack written before the kill is still in use (none rewritten or dropped).
    let packs_after = pack_files(&f.vault());
    for p in &packs_before {
        assert!(packs_after.contains(p), "{} disappeared", p.display());
    }
    // The killed run's temporary files were swept by the next writer.
    let leftovers: Vec<_> = fs::read_dir(f.vault().join("packs"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
        .map(|e| e.path())
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    assert_eq!(f.snapshot_ids().len(), 1);
    let report = f
        .cmd()
        .args(["verify", "--read-data", "--json"])
        .run()
        .success()
        .json();
    assert_eq!(report["clean"], true);
    assert_eq!(
        report["report"]["packs"].as_u64().unwrap(),
        packs_after.len() as u64
    );

    // And the data is really there.
    let target = f.path("out");
    f.restore("latest", &target);
    for i in 0..FILES {
        let name = format!("r{i:02}.bin");
        assert_eq!(
            file_hash(&target.join("data").join(&name)),
            file_hash(&data.join(&name)),
            "{name} differs"
        );
    }
    assert_eq!(
        file_hash(&target.join("data/sparse/holes.img")),
        file_hash(&data.join("sparse/holes.img"))
    );
}
