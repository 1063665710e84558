//! [`GitDir`] over a git directory on the local filesystem, for the tests: the sanity gate
//! itself only ever reads repositories out of the vault.

use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use super::GitDir;

/// [`GitDir`] over a git directory on the local filesystem (the `.git` folder itself).
#[derive(Debug, Clone)]
pub(super) struct DiskGitDir(pub(super) PathBuf);

impl DiskGitDir {
    fn path(&self, rel: &str) -> Result<PathBuf, String> {
        let plain = Path::new(rel)
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
        if plain {
            Ok(self.0.join(rel))
        } else {
            Err(format!("{rel:?} is not a plain relative path"))
        }
    }
}

/// Kinds of error that mean "nothing there" rather than "cannot read".
fn is_absent(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory | io::ErrorKind::IsADirectory
    )
}

impl GitDir for DiskGitDir {
    fn read(&self, rel: &str) -> Result<Option<Vec<u8>>, String> {
        let path = self.path(rel)?;
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if is_absent(&e) => Ok(None),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    fn read_range(&self, rel: &str, offset: u64, len: usize) -> Result<Option<Vec<u8>>, String> {
        let path = self.path(rel)?;
        let fail = |e: io::Error| format!("{}: {e}", path.display());
        let mut file = match fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if is_absent(&e) => return Ok(None),
            Err(e) => return Err(fail(e)),
        };
        file.seek(SeekFrom::Start(offset)).map_err(fail)?;
        // read_to_end grows with the data actually there, so a large `len` costs nothing.
        let mut bytes = Vec::new();
        match file.take(len as u64).read_to_end(&mut bytes) {
            Ok(_) => Ok(Some(bytes)),
            Err(e) if is_absent(&e) => Ok(None),
            Err(e) => Err(fail(e)),
        }
    }

    fn size(&self, rel: &str) -> Result<Option<u64>, String> {
        let path = self.path(rel)?;
        match fs::metadata(&path) {
            Ok(meta) if meta.is_file() => Ok(Some(meta.len())),
            Ok(_) => Ok(None),
            Err(e) if is_absent(&e) => Ok(None),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    fn list(&self, rel: &str) -> Result<Vec<String>, String> {
        let path = self.path(rel)?;
        let entries = match fs::read_dir(&path) {
            Ok(entries) => entries,
            Err(e) if is_absent(&e) => return Ok(Vec::new()),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| format!("{}: {e}", path.display()))?;
            // Git never names its own files outside ASCII; anything else is not ours to read.
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }
}
