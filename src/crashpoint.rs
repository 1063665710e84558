//! Named points where a test kills the process as `kill -9` would, to prove that a crash there
//! leaves a vault that verifies. Inert unless `VAULT_CRASH_AT` names the point.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Dies by SIGKILL (no destructors, no flushing) when `VAULT_CRASH_AT` is `name`.
pub fn at(name: &str) {
    if std::env::var_os("VAULT_CRASH_AT").is_some_and(|v| v == name) {
        // SAFETY: raising a signal on our own pid has no memory-safety preconditions.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}

/// Test hook: when `VAULT_PAUSE_AT` is `name`, creates `$VAULT_PAUSE_DIR/<name>.reached` and
/// waits (up to two minutes) for `$VAULT_PAUSE_DIR/<name>.go`, so that a test can act while the
/// process stands at this point (say, snapshot while a prune holds its marks).
pub fn pause(name: &str) {
    if std::env::var_os("VAULT_PAUSE_AT").is_none_or(|v| v != name) {
        return;
    }
    let Some(dir) = std::env::var_os("VAULT_PAUSE_DIR").map(std::path::PathBuf::from) else {
        return;
    };
    let _ = std::fs::write(dir.join(format!("{name}.reached")), b"");
    let go = dir.join(format!("{name}.go"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !go.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// In-process I/O faults, for the model test (`tests/integration/model.rs`): once armed with
/// [`fail_io_after`] for a directory, every write or delete into that directory passes through
/// [`io_fault`], which lets `n` through and fails every one after. Only paths under an armed
/// directory fail, so tests running beside it in the same process are untouched. Disarmed, it
/// costs one atomic load.
static IO_ARMED: AtomicUsize = AtomicUsize::new(0);
static IO_FAULTS: Mutex<Vec<IoFaults>> = Mutex::new(Vec::new());

struct IoFaults {
    root: PathBuf,
    left: u64,
    failed: u64,
}

/// Arms (`Some(n)`: `n` more writes under `root` succeed, then all fail) or disarms (`None`)
/// faults for `root`. Returns how many writes under `root` failed since it was last armed.
pub fn fail_io_after(root: &Path, n: Option<u64>) -> u64 {
    let mut armed = IO_FAULTS.lock().unwrap_or_else(|e| e.into_inner());
    let failed = armed
        .iter()
        .find(|f| f.root == root)
        .map_or(0, |f| f.failed);
    armed.retain(|f| f.root != root);
    if let Some(left) = n {
        armed.push(IoFaults {
            root: root.to_path_buf(),
            left,
            failed: 0,
        });
    }
    IO_ARMED.store(armed.len(), Ordering::SeqCst);
    failed
}

/// A write or delete of `path` is about to happen: fails it when faults are armed for a
/// directory above `path` and its budget is spent.
pub fn io_fault(path: &Path) -> std::io::Result<()> {
    if IO_ARMED.load(Ordering::Relaxed) == 0 {
        return Ok(());
    }
    let mut armed = IO_FAULTS.lock().unwrap_or_else(|e| e.into_inner());
    match armed.iter_mut().find(|f| path.starts_with(&f.root)) {
        Some(f) if f.left == 0 => {
            f.failed += 1;
            Err(std::io::Error::other("injected I/O fault"))
        }
        Some(f) => {
            f.left -= 1;
            Ok(())
        }
        None => Ok(()),
    }
}
