//! A remote in a local directory: a USB disk, a NAS mount, or an NTFS drive under WSL
//! (`/mnt/d/AtlasVault`).
//!
//! It follows the Windows rules so that the same directory works from both sides: every name is
//! checked against NTFS's (no reserved characters or device names, no trailing dot or space,
//! components of at most 255 bytes); nothing relies on chmod or ownership, which NTFS does not
//! keep; a rename over an existing file is retried while another process holds it open (a sharing
//! violation, seen from Linux as `EACCES`, `EPERM` or `EBUSY`); and a directory that cannot be
//! fsynced (drvfs) is tolerated. Writes are temp file + fsync + rename, as in the vault itself.
//! A drive unmounted mid-write must not send the object to the bare mount point on the local
//! disk: a write never creates the root, and renames its temporary file into place only while the
//! root is still the directory (file system and inode) it checked before writing.
//! OpenDAL's `fs` service was not used: it neither fsyncs the directory after the rename nor
//! retries sharing violations, and those two are the whole point of this file.

use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Backend, BackendError, BackendErrorKind, BackendResult, ObjectInfo};
use crate::fsutil::TEMP_PREFIX;

/// How often a rename blocked by another process is retried, and the pause before the first retry
/// (it grows linearly).
const RENAME_ATTEMPTS: u32 = 8;
const RENAME_PAUSE: Duration = Duration::from_millis(50);
/// The file `vault remote add` leaves in a new directory remote; writes need it (or a pushed
/// vault). Names starting with a dot are never objects: `list` skips them.
pub const REMOTE_MARKER: &str = ".atlasvault-remote";
/// Age past which a temporary file is a dead writer's leftover: no live push leaves a file
/// untouched this long between creating it and renaming it into place.
const STALE_TEMP_AGE: Duration = Duration::from_secs(3600);
/// Longest name component NTFS accepts, in bytes (255 UTF-16 units; our names are ASCII).
const NTFS_COMPONENT_MAX_BYTES: usize = 255;

/// A directory's identity: its file system (`st_dev`) and inode.
type DirId = (u64, u64);

/// A directory used as a remote.
#[derive(Debug)]
pub struct LocalBackend {
    root: PathBuf,
    /// Runs between a write's checks and the write itself: the tests pull the root away there.
    #[cfg(test)]
    after_check: Option<fn(&Path)>,
}

impl LocalBackend {
    /// Opens (creating when needed) the directory at `root`, which must be absolute.
    pub fn open(root: &Path) -> crate::Result<Self> {
        if !root.is_absolute() {
            return Err(crate::Error::Invalid(format!(
                "remote directory {} must be an absolute path",
                root.display()
            )));
        }
        Ok(LocalBackend {
            root: root.into(),
            #[cfg(test)]
            after_check: None,
        })
    }

    /// Creates the directory (and parents) and marks it as a remote (`vault remote add`).
    pub fn create(root: &Path) -> crate::Result<Self> {
        let b = Self::open(root)?;
        fs::create_dir_all(root).map_err(|e| crate::Error::io(root, e))?;
        let marker = root.join(REMOTE_MARKER);
        if !marker.exists() {
            crate::fsutil::atomic_write(
                &marker,
                b"This directory is an AtlasVault remote (created by `vault remote add`).\n",
            )?;
        }
        Ok(b)
    }

    /// Writes need a directory that is visibly ours: one that holds a pushed vault
    /// (`config.json`) or the marker `vault remote add` leaves. An empty directory is far more
    /// often the mount point of an unplugged drive than a new remote, and the backup must not
    /// land on the wrong disk. Returns the root's identity, which the write checks again before
    /// its rename.
    fn check_writable(&self, op: &'static str, name: &str) -> BackendResult<DirId> {
        let id = self.check_root(op, name)?;
        if self.root.join("config.json").exists() || self.root.join(REMOTE_MARKER).exists() {
            return Ok(id);
        }
        Err(BackendError::new(
            self.location(),
            op,
            name,
            BackendErrorKind::Permanent,
            format!(
                "{} holds no vault and is not marked as a remote: is the drive mounted? (to use \
                 a new directory, run `vault remote add`, or create the file {REMOTE_MARKER} in it)",
                self.root.display()
            ),
        ))
    }

    /// The root must exist: a missing one is far more often an unmounted drive (whose empty
    /// mount point would otherwise silently receive the backup) than a new remote, which
    /// `vault remote add` creates. Returns the root's identity.
    fn check_root(&self, op: &'static str, name: &str) -> BackendResult<DirId> {
        match fs::metadata(&self.root) {
            Ok(m) if m.is_dir() => return Ok((m.dev(), m.ino())),
            _ => {}
        }
        Err(BackendError::new(
            self.location(),
            op,
            name,
            BackendErrorKind::Permanent,
            format!(
                "the remote directory {} does not exist: is the drive mounted? (create it, or \
                 run `vault remote add`, to use a new one)",
                self.root.display()
            ),
        ))
    }

    fn err(&self, op: &'static str, name: &str, e: std::io::Error) -> BackendError {
        let kind = match e.kind() {
            ErrorKind::NotFound => BackendErrorKind::NotFound,
            ErrorKind::PermissionDenied => BackendErrorKind::Denied,
            ErrorKind::Interrupted | ErrorKind::TimedOut | ErrorKind::WouldBlock => {
                BackendErrorKind::Transient
            }
            _ => BackendErrorKind::Permanent,
        };
        BackendError::new(self.location(), op, name, kind, e.to_string())
    }

    /// The path of an object, after checking its name against the NTFS rules.
    fn path(&self, op: &'static str, name: &str) -> BackendResult<PathBuf> {
        self.check_root(op, name)?;
        check_name(name).map_err(|reason| {
            BackendError::new(
                self.location(),
                op,
                name,
                BackendErrorKind::Permanent,
                reason,
            )
        })?;
        Ok(self.root.join(name))
    }

    /// An I/O error of a write; when the root has gone meanwhile (an unmounted drive: the
    /// temporary file's directory vanished, or FUSE lost its server), that is the error to show.
    fn write_err(&self, op: &'static str, name: &str, e: std::io::Error) -> BackendError {
        match self.check_root(op, name) {
            Err(gone) => gone,
            Ok(_) => self.err(op, name, e),
        }
    }

    /// Refuses to rename a written temporary file into place unless the root is still the
    /// directory `checked` and the file lies on its file system: otherwise the drive went away
    /// after the checks, and the path now leads to the bare mount point on the local disk.
    fn check_same_root(
        &self,
        op: &'static str,
        name: &str,
        checked: DirId,
        tmp: &File,
    ) -> BackendResult<()> {
        let now = self.check_root(op, name)?;
        let tmp_dev = tmp
            .metadata()
            .map_err(|e| self.write_err(op, name, e))?
            .dev();
        if now == checked && tmp_dev == checked.0 {
            return Ok(());
        }
        Err(BackendError::new(
            self.location(),
            op,
            name,
            BackendErrorKind::Permanent,
            format!(
                "the remote directory {} changed while the object was written (was the drive \
                 unmounted?); it was not written",
                self.root.display()
            ),
        ))
    }

    fn write(&self, op: &'static str, name: &str, data: &[u8]) -> BackendResult<()> {
        let checked = self.check_writable(op, name)?;
        #[cfg(test)]
        if let Some(hook) = self.after_check {
            hook(&self.root);
        }
        let path = self.path(op, name)?;
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        let io = |e| self.write_err(op, name, e);
        if !dir.is_dir() {
            create_dirs_below(&self.root, &dir).map_err(io)?;
            // Make the new directories durable up to the root.
            let mut d = dir.as_path();
            while let Some(parent) = d.parent() {
                sync_dir(parent).map_err(io)?;
                if parent == self.root || !parent.starts_with(&self.root) {
                    break;
                }
                d = parent;
            }
        }
        sweep_stale_temps(&dir);
        let mut tmp = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempfile_in(&dir)
            .map_err(io)?;
        tmp.write_all(data).map_err(io)?;
        tmp.as_file().sync_all().map_err(io)?;
        self.check_same_root(op, name, checked, tmp.as_file())?;
        crate::crashpoint::at("remote-put-before-rename");
        let mut attempt = 0;
        loop {
            match tmp.persist(&path) {
                Ok(_) => break,
                Err(e) if attempt + 1 < RENAME_ATTEMPTS && is_sharing_violation(&e.error) => {
                    attempt += 1;
                    tmp = e.file;
                    std::thread::sleep(RENAME_PAUSE * attempt);
                }
                Err(e) => return Err(io(e.error)),
            }
        }
        sync_dir(&dir).map_err(io)
    }
}

/// Creates `dir` and its missing parents below `root`, never `root` itself nor anything above:
/// a root that vanished (an unmounted drive's remote directory) fails the write instead of
/// reappearing on the local disk.
fn create_dirs_below(root: &Path, dir: &Path) -> std::io::Result<()> {
    let rel = dir.strip_prefix(root).map_err(|_| {
        std::io::Error::new(
            ErrorKind::InvalidInput,
            format!("{} is not below {}", dir.display(), root.display()),
        )
    })?;
    let mut d = root.to_path_buf();
    for part in rel.components() {
        d.push(part);
        match fs::create_dir(&d) {
            Err(e) if e.kind() == ErrorKind::AlreadyExists && d.is_dir() => {}
            other => other?,
        }
    }
    Ok(())
}

/// Errors a rename gets while another process (an antivirus, an indexer, a Windows program) holds
/// the target open.
fn is_sharing_violation(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::PermissionDenied | ErrorKind::ResourceBusy
    ) || e.raw_os_error() == Some(libc::EBUSY)
        || e.raw_os_error() == Some(libc::ETXTBSY)
}

/// Removes the temporary files in `dir` left by writers that died before their rename (a push
/// killed mid-pack leaves a pack-sized one that nothing else would ever remove). Only files
/// untouched for [`STALE_TEMP_AGE`] go: a live writer, on this machine or another, is still
/// writing or renaming its own. Best effort: a remote that refuses deletes keeps them.
fn sweep_stale_temps(dir: &Path) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for entry in rd.flatten() {
        if !entry
            .file_name()
            .as_encoded_bytes()
            .starts_with(TEMP_PREFIX.as_bytes())
        {
            continue;
        }
        let stale = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > STALE_TEMP_AGE));
        if stale {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Fsyncs a directory; file systems that cannot (drvfs, some FUSE mounts) answer EINVAL, which is
/// accepted: there the rename is as durable as the file system makes it.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    match File::open(dir).and_then(|d| d.sync_all()) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(()),
        other => other,
    }
}

/// Checks a relative object name against the rules of NTFS (and of every other target).
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.starts_with('/') || name.ends_with('/') {
        return Err("object names are relative and name a file".into());
    }
    for part in name.split('/') {
        let bad = |why: &str| Err(format!("name component {part:?} {why}"));
        if part.is_empty() || part == "." || part == ".." {
            return bad("is empty, . or ..");
        }
        if part.len() > NTFS_COMPONENT_MAX_BYTES {
            return bad("is longer than NTFS allows");
        }
        if part
            .chars()
            .any(|c| c.is_control() || "<>:\"\\|?*".contains(c))
        {
            return bad("holds a character Windows forbids");
        }
        if part.ends_with('.') || part.ends_with(' ') {
            return bad("ends with a dot or space, which Windows strips");
        }
        let stem = part.split('.').next().unwrap_or(part).to_ascii_uppercase();
        let reserved = ["CON", "PRN", "AUX", "NUL"].contains(&stem.as_str())
            || ((stem.starts_with("COM") || stem.starts_with("LPT"))
                && stem.len() == 4
                && stem.as_bytes()[3].is_ascii_digit());
        if reserved {
            return bad("is a Windows device name");
        }
    }
    Ok(())
}

impl Backend for LocalBackend {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn list(&self, prefix: &str) -> BackendResult<Vec<ObjectInfo>> {
        self.check_root("list", prefix)?;
        let mut out = Vec::new();
        // Walk from the deepest directory the prefix names.
        let dir_part = prefix.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        let start = self.root.join(dir_part);
        let mut stack = vec![start];
        while let Some(dir) = stack.pop() {
            let rd = match fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(self.err("list", prefix, e)),
            };
            for entry in rd {
                let entry = entry.map_err(|e| self.err("list", prefix, e))?;
                let file_name = entry.file_name();
                let Some(file_name) = file_name.to_str() else {
                    continue;
                };
                // Temporary files and the marker; no object name starts with a dot.
                if file_name.starts_with('.') {
                    continue;
                }
                let path = entry.path();
                let ft = entry.file_type().map_err(|e| self.err("list", prefix, e))?;
                let Ok(rel) = path.strip_prefix(&self.root) else {
                    continue;
                };
                let Some(rel) = rel.to_str() else { continue };
                if ft.is_dir() {
                    // Only descend where names under the prefix can be.
                    let as_dir = format!("{rel}/");
                    if as_dir.starts_with(prefix) || prefix.starts_with(&as_dir) {
                        stack.push(path);
                    }
                } else if ft.is_file() && rel.starts_with(prefix) {
                    let size = entry
                        .metadata()
                        .map_err(|e| self.err("list", prefix, e))?
                        .len();
                    out.push(ObjectInfo {
                        name: rel.to_string(),
                        size,
                    });
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn stat(&self, name: &str) -> BackendResult<Option<u64>> {
        let path = self.path("stat", name)?;
        match fs::metadata(&path) {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err("stat", name, e)),
        }
    }

    fn read(&self, name: &str) -> BackendResult<Vec<u8>> {
        let path = self.path("read", name)?;
        fs::read(&path).map_err(|e| self.err("read", name, e))
    }

    fn read_range(&self, name: &str, offset: u64, len: u64) -> BackendResult<Vec<u8>> {
        let path = self.path("read", name)?;
        let f = File::open(&path).map_err(|e| self.err("read", name, e))?;
        let size = f.metadata().map_err(|e| self.err("read", name, e))?.len();
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(BackendError::new(
                self.location(),
                "read",
                name,
                BackendErrorKind::Permanent,
                format!("range {offset}+{len} lies past the end ({size} bytes)"),
            ));
        }
        let mut buf = vec![0u8; len as usize];
        f.read_exact_at(&mut buf, offset)
            .map_err(|e| self.err("read", name, e))?;
        Ok(buf)
    }

    fn put(&self, name: &str, data: &[u8]) -> BackendResult<()> {
        self.write("put", name, data)
    }

    fn replace(&self, name: &str, data: &[u8]) -> BackendResult<()> {
        self.write("replace", name, data)
    }

    fn delete(&self, name: &str) -> BackendResult<()> {
        self.check_writable("delete", name)?;
        let path = self.path("delete", name)?;
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.err("delete", name, e)),
        }
        sync_dir(path.parent().unwrap_or(&self.root)).map_err(|e| self.err("delete", name, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ntfs_name_rules() {
        for ok in [
            "config.json",
            "packs/ab/abcdef.pack",
            "refs/history/00ff.json",
        ] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/abs",
            "a/../b",
            "a//b",
            "dir/",
            "a:b",
            "what?",
            "con.json",
            "COM1",
            "lpt9.txt",
            "trailing.",
            "space ",
            "tab\tname",
            &"x".repeat(256),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn put_list_read_range_replace_delete() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("remote");
        let b = LocalBackend::open(&root).unwrap();
        let e = b.list("").unwrap_err();
        assert!(e.message.contains("is the drive mounted"), "{e}");
        assert!(
            b.put("config.json", b"{}").is_err(),
            "a missing root is never created"
        );
        assert!(!root.exists());
        fs::create_dir(&root).unwrap();
        assert_eq!(b.list("").unwrap(), vec![]);
        let e = b.put("config.json", b"{}").unwrap_err();
        assert!(e.message.contains("not marked as a remote"), "{e}");
        let b = LocalBackend::create(&root).unwrap();
        assert_eq!(b.list("").unwrap(), vec![], "the marker is not an object");
        b.put("packs/ab/ab01.pack", b"0123456789").unwrap();
        b.put("snapshots/ff.json", b"{}").unwrap();
        b.replace("refs/last-known-good.json", b"one").unwrap();
        b.replace("refs/last-known-good.json", b"two").unwrap();
        fs::write(root.join("packs/ab/.tmp-half"), b"partial").unwrap();
        let names: Vec<String> = b.list("").unwrap().into_iter().map(|o| o.name).collect();
        assert_eq!(
            names,
            [
                "packs/ab/ab01.pack",
                "refs/last-known-good.json",
                "snapshots/ff.json"
            ]
        );
        assert_eq!(
            b.list("packs/").unwrap(),
            vec![ObjectInfo {
                name: "packs/ab/ab01.pack".into(),
                size: 10
            }]
        );
        assert_eq!(b.read_range("packs/ab/ab01.pack", 3, 4).unwrap(), b"3456");
        assert!(b.read_range("packs/ab/ab01.pack", 8, 4).is_err());
        assert_eq!(b.read("refs/last-known-good.json").unwrap(), b"two");
        assert_eq!(b.stat("snapshots/ff.json").unwrap(), Some(2));
        assert_eq!(b.stat("snapshots/00.json").unwrap(), None);
        assert!(b.read("snapshots/00.json").unwrap_err().is_not_found());
        b.delete("snapshots/ff.json").unwrap();
        b.delete("snapshots/ff.json").unwrap();
        assert_eq!(b.stat("snapshots/ff.json").unwrap(), None);
        assert!(b.put("bad:name", b"x").is_err());
    }

    /// Every regular file below `dir`.
    fn files(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.path().is_dir() {
                    stack.push(e.path());
                } else {
                    out.push(e.path());
                }
            }
        }
        out
    }

    /// Issue 10: a drive unmounted between a write's checks and the write sent the object to the
    /// bare mount point on the local disk (`create_dir_all` made the vanished root again), and
    /// the push could report success with the ref written there.
    #[test]
    fn a_root_pulled_away_mid_write_receives_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("mnt/AtlasVault");
        let mut b = LocalBackend::create(&root).unwrap();
        b.put("config.json", b"{}").unwrap();

        // The remote directory lived on the drive: after the unmount it does not exist at all.
        b.after_check = Some(|root| fs::remove_dir_all(root).unwrap());
        for name in ["packs/ab/ab01.pack", "config.json"] {
            let e = b.put(name, b"data").unwrap_err();
            assert!(e.message.contains("is the drive mounted?"), "{name}: {e}");
            assert!(!root.exists(), "{name} made the vanished root again");
            LocalBackend::create(&root).unwrap();
        }

        // The remote is the mount point itself: after the unmount it is an empty directory on
        // another file system (here: another directory), with or without the object's subdir.
        b.after_check = Some(|root| {
            fs::rename(root, root.with_extension("drive")).unwrap();
            fs::create_dir(root).unwrap();
        });
        for name in [
            "config.json",
            "refs/last-known-good.json",
            "packs/cd/cd01.pack",
        ] {
            let e = b.replace(name, b"data").unwrap_err();
            assert!(
                e.message.contains("was the drive unmounted?"),
                "{name}: {e}"
            );
            assert_eq!(
                files(&root),
                Vec::<PathBuf>::new(),
                "{name} landed in the bare root"
            );
            // Put the drive back for the next name.
            fs::remove_dir_all(&root).unwrap();
            fs::rename(root.with_extension("drive"), &root).unwrap();
        }
        b.after_check = None;
        b.put("packs/cd/cd01.pack", b"data").unwrap();
        assert_eq!(b.read("packs/cd/cd01.pack").unwrap(), b"data");
    }

    #[test]
    fn long_paths_work() {
        let tmp = tempfile::tempdir().unwrap();
        // Well past Windows' historical 260-character MAX_PATH.
        let mut root = tmp.path().to_path_buf();
        for i in 0..12 {
            root.push(format!("a-rather-long-directory-name-{i:02}"));
        }
        assert!(root.as_os_str().len() > 300);
        let b = LocalBackend::create(&root).unwrap();
        let name = format!("packs/ab/{}.pack", "ab".repeat(32));
        b.put(&name, b"data").unwrap();
        assert_eq!(b.read(&name).unwrap(), b"data");
    }
}
