//! Durable file-system primitives: every write into a vault goes through here.
//!
//! The one rule: a vault file is either absent or complete. New content goes to a temporary file
//! in the destination directory, is fsynced, renamed over the final name, and the directory is
//! fsynced so the rename itself survives a power cut.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use crate::error::{IoContext, Result};

/// Prefix of every temporary file; readers skip such names and writers sweep them.
pub const TEMP_PREFIX: &str = ".tmp-";

/// The directory holding `path` (`.` for a bare relative name).
fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Writes `data` to `path` atomically and durably.
pub fn atomic_write(path: &Path, data: &[u8]) -> Result<()> {
    let dir = parent_of(path);
    let mut tmp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempfile_in(dir)
        .at(dir)?;
    tmp.write_all(data).at(tmp.path())?;
    tmp.as_file().sync_all().at(tmp.path())?;
    crate::crashpoint::io_fault(path).at(path)?;
    tmp.persist(path).map_err(|e| e.error).at(path)?;
    sync_dir(dir)
}

/// Fsyncs a directory so that entries created or renamed in it are durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

/// Creates a directory (and parents) and fsyncs its parent when it was new.
pub fn create_dir_durable(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).at(dir)?;
    sync_dir(parent_of(dir))
}

/// Removes leftover temporary files from a killed writer. Only call under the exclusive lock.
pub fn sweep_temp_files(dir: &Path) -> Result<usize> {
    let mut removed = 0;
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(crate::Error::io(dir, e)),
    };
    for entry in rd {
        let entry = entry.at(dir)?;
        if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            // Gone already: renamed into place by a writer that does not hold the vault lock
            // (the agent's state file), or removed by another sweep.
            match fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(crate::Error::io(entry.path(), e)),
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.json");
        atomic_write(&p, b"one").unwrap();
        atomic_write(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        File::create(dir.path().join(".tmp-x")).unwrap();
        assert_eq!(sweep_temp_files(dir.path()).unwrap(), 1);
    }
}
