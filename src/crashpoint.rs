//! Named points where a test kills the process as `kill -9` would, to prove that a crash there
//! leaves a vault that verifies. Inert unless `VAULT_CRASH_AT` names the point.

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
