//! The vault lock: one writer at a time, readers beside a snapshot, an exclusive holder (reindex,
//! prune's delete phase) excludes everyone, `--wait` waits, the loser is told who holds the lock.

use std::fs;
use std::os::unix::io::AsRawFd;
use std::time::{Duration, Instant};

use atlasvault::lock::LockMode;

use crate::common::*;

fn small_data(f: &Fixture) -> std::path::PathBuf {
    let data = f.path("data");
    fs::create_dir(&data).unwrap();
    fs::write(data.join("a.txt"), b"a").unwrap();
    data
}

#[test]
fn snapshot_while_a_writer_holds_the_lock_exits_11_naming_it() {
    let f = Fixture::with_vault();
    let data = small_data(&f);
    let held = f.open_vault(LockMode::Exclusive);
    f.cmd()
        .arg("snapshot")
        .arg(&data)
        .run()
        .one_line_error(11)
        .stderr_has("locked by")
        .stderr_has(&format!("pid {}", std::process::id()));
    // Readers are shut out by a writer too.
    f.cmd()
        .arg("snapshots")
        .run()
        .one_line_error(11)
        .stderr_has("locked by");
    f.cmd()
        .args(["restore", "latest", "--target"])
        .arg(f.path("out"))
        .run()
        .code(11);
    drop(held);
    f.cmd().arg("snapshot").arg(&data).run().success();
    assert_eq!(f.snapshot_ids().len(), 1);
}

#[test]
fn readers_run_beside_a_snapshot_but_not_beside_an_exclusive_holder() {
    let f = Fixture::with_vault();
    let data = small_data(&f);
    f.snapshot(&data);
    // A reader does not hold off a snapshot, only what takes objects away (reindex).
    let reader = f.open_vault(LockMode::Shared);
    f.cmd().arg("snapshots").run().success();
    f.cmd().arg("verify").run().success();
    f.cmd().arg("snapshot").arg(&data).run().success();
    f.cmd()
        .arg("reindex")
        .run()
        .one_line_error(11)
        .stderr_has("locked by");
    drop(reader);
    // A writer in flight: readers go on, a second writer is told who writes.
    let writer = f.open_vault(LockMode::Append);
    f.cmd().arg("snapshots").run().success();
    f.cmd().arg("verify").run().success();
    f.cmd()
        .arg("snapshot")
        .arg(&data)
        .run()
        .one_line_error(11)
        .stderr_has(&format!("pid {}", std::process::id()));
    drop(writer);
    f.cmd().arg("reindex").run().success();
    assert_eq!(f.snapshot_ids().len(), 2);
}

#[test]
fn wait_succeeds_when_the_lock_is_released_in_time() {
    let f = Fixture::with_vault();
    let data = small_data(&f);
    // A plain flock, as any other process would hold it.
    let lock = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(f.vault().join("lock"))
        .unwrap();
    // SAFETY: a valid open descriptor.
    assert_eq!(
        unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
        0
    );
    f.cmd()
        .arg("snapshot")
        .arg(&data)
        .run()
        .code(11)
        .stderr_has("locked by");

    let release_after = Duration::from_millis(1200);
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(release_after);
        drop(lock);
    });
    let started = Instant::now();
    f.cmd()
        .args(["--wait", "3s", "snapshot"])
        .arg(&data)
        .run()
        .success();
    let took = started.elapsed();
    releaser.join().unwrap();
    assert!(
        took >= Duration::from_millis(1000),
        "--wait returned after {took:?}, before the lock was released"
    );
    assert!(took < Duration::from_secs(3), "waited {took:?}");
    assert_eq!(f.snapshot_ids().len(), 1);
}

#[test]
fn wait_gives_up_after_the_duration() {
    let f = Fixture::with_vault();
    let data = small_data(&f);
    let held = f.open_vault(LockMode::Exclusive);
    let started = Instant::now();
    f.cmd()
        .args(["--wait", "1s", "snapshot"])
        .arg(&data)
        .run()
        .one_line_error(11)
        .stderr_has("locked by");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "gave up after {took:?}"
    );
    drop(held);
    assert!(f.snapshot_ids().is_empty());
}

#[test]
fn lock_held_by_a_running_snapshot_process() {
    // A real `vault snapshot` holds the lock while it prints its warnings. With enough FIFOs
    // (each one a warning) and nobody reading its stderr, it blocks on a full pipe while holding
    // the lock, so the contender below meets a live holder every time.
    let f = Fixture::with_vault();
    let data = f.path("data");
    fs::create_dir(&data).unwrap();
    fs::write(data.join("a.txt"), b"a").unwrap();
    let fifos = 1500;
    for i in 0..fifos {
        let p = data.join(format!("fifo-{i:05}-{}", "x".repeat(60)));
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    }
    let mut child = f.cmd().arg("snapshot").arg(&data).spawn();
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let holder = fs::read_to_string(f.vault().join("writer.lock")).unwrap_or_default();
        if holder.contains(&format!("\"pid\":{pid}")) {
            break;
        }
        assert!(Instant::now() < deadline, "child never took the lock");
        assert!(
            child.try_wait().unwrap().is_none(),
            "child exited before it was seen holding the lock"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    f.cmd()
        .arg("snapshot")
        .arg(&data)
        .run()
        .one_line_error(11)
        .stderr_has("locked by")
        .stderr_has(&format!("pid {pid}"));
    // Readers are not held off by the running snapshot.
    f.cmd().arg("snapshots").run().success();

    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    let done = child.wait().unwrap();
    assert!(done.success(), "the holder failed: {done:?}\n{stderr}");
    assert_eq!(
        stderr
            .lines()
            .filter(|l| l.contains("skipped FIFO"))
            .count(),
        fifos,
        "one warning per FIFO"
    );
    // Once the holder is gone, the lock is free again.
    f.cmd().arg("snapshot").arg(&data).run().success();
    assert_eq!(f.snapshot_ids().len(), 2);
}
