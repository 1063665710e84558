//! The vault lock: one writer, or any number of readers.
//!
//! The lock is an `flock` on `<vault>/lock` (crate `fs2`). The kernel drops it when its holder
//! exits, however it exits, so a lock whose holder is dead never blocks the next run: a `kill -9`
//! leaves nothing to clean up. The exclusive holder writes its pid, host and start time into the
//! file so that a loser can say who holds it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fs2::FileExt;
use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};

const LOCK_FILE: &str = "lock";
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Shared for readers, exclusive for writers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    Shared,
    Exclusive,
}

#[derive(Serialize, Deserialize)]
struct Holder {
    pid: u32,
    host: String,
    since: String,
}

/// A held lock; released on drop.
#[derive(Debug)]
pub struct VaultLock {
    file: File,
    path: PathBuf,
}

impl VaultLock {
    /// Takes the lock, polling until `wait` runs out (no wait: fail at once).
    pub fn acquire(vault: &Path, mode: LockMode, wait: Option<Duration>) -> Result<VaultLock> {
        let path = vault.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .at(&path)?;
        let deadline = wait.map(|w| Instant::now() + w);
        loop {
            let got = match mode {
                LockMode::Shared => FileExt::try_lock_shared(&file),
                LockMode::Exclusive => FileExt::try_lock_exclusive(&file),
            };
            match got {
                Ok(()) => break,
                Err(e) if e.raw_os_error() == fs2::lock_contended_error().raw_os_error() => {
                    if deadline.is_some_and(|d| Instant::now() < d) {
                        std::thread::sleep(POLL_INTERVAL);
                        continue;
                    }
                    return Err(Error::Locked {
                        holder: describe_holder(&path),
                    });
                }
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
        let mut lock = VaultLock { file, path };
        if mode == LockMode::Exclusive {
            lock.write_holder()?;
        }
        Ok(lock)
    }

    fn write_holder(&mut self) -> Result<()> {
        let h = Holder {
            pid: std::process::id(),
            host: crate::util::hostname(),
            since: crate::util::now_rfc3339(),
        };
        let bytes = serde_json::to_vec(&h).expect("invariant: holder serializes");
        self.file.set_len(0).at(&self.path)?;
        self.file.seek(SeekFrom::Start(0)).at(&self.path)?;
        self.file.write_all(&bytes).at(&self.path)
    }
}

impl Drop for VaultLock {
    fn drop(&mut self) {
        let _ = FileExt::unlock(&self.file);
    }
}

fn describe_holder(path: &Path) -> String {
    let mut s = String::new();
    let parsed = File::open(path)
        .and_then(|f| f.take(4096).read_to_string(&mut s))
        .ok()
        .and_then(|_| serde_json::from_str::<Holder>(&s).ok());
    match parsed {
        Some(h) if pid_alive(h.pid) => format!("pid {} on {} since {}", h.pid, h.host, h.since),
        _ => "another process (a reader or a writer that is starting)".into(),
    }
}

fn pid_alive(pid: u32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence.
    pid != 0 && unsafe { libc::kill(pid as libc::pid_t, 0) } == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusive_excludes_and_names_holder() {
        let dir = tempfile::tempdir().unwrap();
        let w = VaultLock::acquire(dir.path(), LockMode::Exclusive, None).unwrap();
        // flock locks are per open file description, so a second open in this process contends.
        let err = VaultLock::acquire(dir.path(), LockMode::Shared, None).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        drop(w);
        let r1 = VaultLock::acquire(dir.path(), LockMode::Shared, None).unwrap();
        let _r2 = VaultLock::acquire(dir.path(), LockMode::Shared, None).unwrap();
        assert!(VaultLock::acquire(
            dir.path(),
            LockMode::Exclusive,
            Some(Duration::from_millis(250))
        )
        .is_err());
        drop(r1);
    }
}
