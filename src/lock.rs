//! The vault lock: one writer at a time, readers beside an appending writer, and an exclusive
//! mode for the few operations that take objects away from readers.
//!
//! Two `flock`s (crate `fs2`): `<vault>/writer.lock`, held by every writer, and `<vault>/lock`,
//! shared by readers and appending writers and held exclusively by the rest. So a 15-minute
//! snapshot runs while a restore or a verify reads, and prune's long mark phase (a reader) runs
//! while the agent snapshots; only prune's short delete phase, `reindex` and key changes wait for
//! every reader. The kernel drops a lock when its holder exits, however it exits, so a lock whose
//! holder is dead never blocks the next run: a `kill -9` leaves nothing to clean up. A writer puts
//! its pid, host and start time into `writer.lock` so that a loser can say who holds it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fs2::FileExt;
use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};

const LOCK_FILE: &str = "lock";
const WRITER_LOCK_FILE: &str = "writer.lock";
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// How a process uses the vault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Reads: any number at once, beside one `Append` writer.
    Shared,
    /// Adds objects and removes none that a reader may be using (snapshot, promote, forget):
    /// one writer at a time, readers welcome.
    Append,
    /// Takes objects away (prune's delete phase, reindex, key changes): alone.
    Exclusive,
}

impl LockMode {
    /// True for the modes that write (and so tidy up after crashed writers).
    pub fn writes(self) -> bool {
        self != LockMode::Shared
    }
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
    /// `writer.lock`, held by writers.
    _writer: Option<Held>,
    /// `lock`.
    _readers: Held,
}

#[derive(Debug)]
struct Held {
    file: File,
    path: PathBuf,
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = FileExt::unlock(&self.file);
    }
}

impl VaultLock {
    /// Takes the lock, polling until `wait` runs out (no wait: fail at once). Writers take
    /// `writer.lock` first, so two writers never deadlock on the second file.
    pub fn acquire(vault: &Path, mode: LockMode, wait: Option<Duration>) -> Result<VaultLock> {
        let deadline = wait.map(|w| Instant::now() + w);
        let holder_path = vault.join(WRITER_LOCK_FILE);
        let readers_path = vault.join(LOCK_FILE);
        match mode {
            LockMode::Shared => Ok(VaultLock {
                _writer: None,
                _readers: take(&readers_path, false, deadline, &holder_path)?,
            }),
            LockMode::Append => {
                let mut writer = take(&holder_path, true, deadline, &holder_path)?;
                writer.write_holder()?;
                let readers = take(&readers_path, false, deadline, &holder_path)?;
                Ok(VaultLock {
                    _writer: Some(writer),
                    _readers: readers,
                })
            }
            // Both at once or neither: holding `writer.lock` while waiting for readers to leave
            // would stop every snapshot for as long as a restore runs.
            LockMode::Exclusive => loop {
                let writer = take(&holder_path, true, None, &holder_path);
                let readers = writer
                    .as_ref()
                    .ok()
                    .map(|_| take(&readers_path, true, None, &holder_path));
                let contended = match (writer, readers) {
                    (Ok(mut writer), Some(Ok(readers))) => {
                        writer.write_holder()?;
                        return Ok(VaultLock {
                            _writer: Some(writer),
                            _readers: readers,
                        });
                    }
                    // `writer.lock`, if we got it, is released here, before the sleep.
                    (Err(e @ Error::Locked { .. }), _)
                    | (_, Some(Err(e @ Error::Locked { .. }))) => e,
                    (Err(e), _) | (_, Some(Err(e))) => return Err(e),
                    (Ok(_), None) => {
                        unreachable!("invariant: readers is tried once writer is held")
                    }
                };
                if deadline.is_none_or(|d| Instant::now() >= d) {
                    return Err(contended);
                }
                std::thread::sleep(POLL_INTERVAL);
            },
        }
    }
}

/// Locks `path` (exclusively or shared) by the deadline; a loser names the writer in
/// `holder_path`.
fn take(
    path: &Path,
    exclusive: bool,
    deadline: Option<Instant>,
    holder_path: &Path,
) -> Result<Held> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .at(path)?;
    loop {
        let got = if exclusive {
            FileExt::try_lock_exclusive(&file)
        } else {
            FileExt::try_lock_shared(&file)
        };
        match got {
            Ok(()) => {
                return Ok(Held {
                    file,
                    path: path.into(),
                })
            }
            Err(e) if e.raw_os_error() == fs2::lock_contended_error().raw_os_error() => {
                if deadline.is_some_and(|d| Instant::now() < d) {
                    std::thread::sleep(POLL_INTERVAL);
                    continue;
                }
                return Err(Error::Locked {
                    holder: describe_holder(holder_path),
                });
            }
            Err(e) => return Err(Error::io(path, e)),
        }
    }
}

impl Held {
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

fn describe_holder(path: &Path) -> String {
    let mut s = String::new();
    let parsed = File::open(path)
        .and_then(|f| f.take(4096).read_to_string(&mut s))
        .ok()
        .and_then(|_| serde_json::from_str::<Holder>(&s).ok());
    match parsed {
        Some(h) if pid_alive(h.pid) => format!("pid {} on {} since {}", h.pid, h.host, h.since),
        _ => "another process (a reader, or a writer that is starting)".into(),
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

    #[test]
    fn readers_run_beside_an_appending_writer() {
        let dir = tempfile::tempdir().unwrap();
        let a = VaultLock::acquire(dir.path(), LockMode::Append, None).unwrap();
        let _r = VaultLock::acquire(dir.path(), LockMode::Shared, None).unwrap();
        // One writer at a time, and the loser is told who writes.
        let err = VaultLock::acquire(dir.path(), LockMode::Append, None).unwrap_err();
        assert!(err
            .to_string()
            .contains(&format!("pid {}", std::process::id())));
        assert!(VaultLock::acquire(dir.path(), LockMode::Exclusive, None).is_err());
        drop(a);
        // A reader still holds `lock`: an exclusive locker waits for it, an appender does not.
        assert!(VaultLock::acquire(dir.path(), LockMode::Exclusive, None).is_err());
        let _a2 = VaultLock::acquire(dir.path(), LockMode::Append, None).unwrap();
    }

    #[test]
    fn an_exclusive_waiting_for_readers_does_not_hold_off_writers() {
        let dir = tempfile::tempdir().unwrap();
        let reader = VaultLock::acquire(dir.path(), LockMode::Shared, None).unwrap();
        let path = dir.path().to_path_buf();
        let waiting = std::thread::spawn(move || {
            VaultLock::acquire(&path, LockMode::Exclusive, Some(Duration::from_secs(10))).map(drop)
        });
        std::thread::sleep(Duration::from_millis(300));
        // The exclusive is still waiting for the reader, yet a snapshot gets the writer lock.
        let w = VaultLock::acquire(dir.path(), LockMode::Append, Some(Duration::from_secs(2)));
        assert!(w.is_ok(), "{w:?}");
        drop(w);
        drop(reader);
        waiting.join().unwrap().unwrap();
    }
}
