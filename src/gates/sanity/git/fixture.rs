//! Test fixtures for the git sanity check: scratch repositories driven by the real `git`, an
//! in-memory [`GitDir`] for hostile bytes, and a recording one to pin how packs are read.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{check_repo, DiskGitDir, GitDir};

/// A scratch repository driven by the real `git`, isolated from any user or system config.
pub(super) struct Fixture {
    _tmp: tempfile::TempDir,
    pub(super) home: PathBuf,
    pub(super) work: PathBuf,
}

/// One object line of `git verify-pack -v`.
pub(super) struct PackLine {
    pub(super) id: String,
    pub(super) kind: String,
    pub(super) size_in_pack: u64,
    pub(super) offset: u64,
    pub(super) depth: u32,
}

impl Fixture {
    pub(super) fn new(init: &[&str]) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let home = tmp.path().join("home");
        fs::create_dir(&home).expect("mkdir home");
        let work = tmp.path().join("work");
        let fixture = Fixture {
            home,
            work: work.clone(),
            _tmp: tmp,
        };
        let mut args = vec!["init", "-q"];
        args.extend_from_slice(init);
        args.push(work.to_str().expect("utf-8 temp path"));
        fixture.run_in(fixture.home.as_path(), &args);
        fixture
    }

    pub(super) fn run_in(&self, dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .current_dir(dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", &self.home)
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("GIT_DIR")
            .env("GIT_AUTHOR_DATE", "2024-01-01T00:00:00Z")
            .env("GIT_COMMITTER_DATE", "2024-01-01T00:00:00Z")
            .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
            .args(["-c", "init.defaultBranch=main", "-c", "gc.auto=0"])
            .args(args)
            .output()
            .expect("run git");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    pub(super) fn git(&self, args: &[&str]) -> String {
        self.run_in(&self.work, args)
    }

    pub(super) fn dot_git(&self) -> PathBuf {
        self.work.join(".git")
    }

    pub(super) fn check(&self) -> Vec<String> {
        check_repo(&DiskGitDir(self.dot_git()))
    }

    pub(super) fn commit(&self, file: &str, content: &str, message: &str) {
        fs::write(self.work.join(file), content).expect("write work file");
        self.git(&["add", file]);
        self.git(&["commit", "-q", "-m", message]);
    }

    pub(super) fn with_commits(init: &[&str], n: usize) -> Self {
        let fixture = Fixture::new(init);
        for i in 0..n {
            fixture.commit("f.txt", &format!("version {i}\n"), &format!("commit {i}"));
        }
        fixture
    }

    pub(super) fn rev(&self, what: &str) -> String {
        self.git(&["rev-parse", what])
    }

    pub(super) fn loose(&self, id: &str) -> PathBuf {
        self.dot_git().join("objects").join(&id[..2]).join(&id[2..])
    }

    /// The single pack's base path (no extension), after a gc or repack.
    pub(super) fn only_pack(&self) -> PathBuf {
        let dir = self.dot_git().join("objects/pack");
        let idx: Vec<PathBuf> = fs::read_dir(&dir)
            .expect("list packs")
            .map(|e| e.expect("dir entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "idx"))
            .collect();
        assert_eq!(idx.len(), 1, "expected one pack in {}", dir.display());
        idx[0].with_extension("")
    }

    pub(super) fn verify_pack(&self) -> Vec<PackLine> {
        let idx = self.only_pack().with_extension("idx");
        let out = self.git(&["verify-pack", "-v", idx.to_str().expect("utf-8")]);
        out.lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                let kinds = ["commit", "tree", "blob", "tag"];
                if f.len() < 5 || !kinds.contains(&f[1]) {
                    return None;
                }
                Some(PackLine {
                    id: f[0].to_owned(),
                    kind: f[1].to_owned(),
                    size_in_pack: f[3].parse().expect("size in pack"),
                    offset: f[4].parse().expect("offset"),
                    depth: f.get(5).map_or(0, |d| d.parse().expect("depth")),
                })
            })
            .collect()
    }

    pub(super) fn set_head(&self, content: &str) {
        overwrite(&self.dot_git().join("HEAD"), content.as_bytes());
    }
}

/// Git makes object files read-only; replace rather than write through.
pub(super) fn overwrite(path: &Path, bytes: &[u8]) {
    let _ = fs::remove_file(path);
    fs::write(path, bytes).expect("overwrite");
}

/// An in-memory git dir, so hostile bytes can be tried thousands of times quickly.
#[derive(Clone, Default)]
pub(super) struct MemGitDir(pub(super) BTreeMap<String, Vec<u8>>);

impl MemGitDir {
    pub(super) fn load(root: &Path) -> Self {
        fn walk(root: &Path, dir: &Path, into: &mut BTreeMap<String, Vec<u8>>) {
            for entry in fs::read_dir(dir).expect("read_dir") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    walk(root, &path, into);
                } else {
                    let rel = path.strip_prefix(root).expect("under root");
                    let rel = rel.to_str().expect("utf-8").to_owned();
                    into.insert(rel, fs::read(&path).expect("read"));
                }
            }
        }
        let mut files = BTreeMap::new();
        walk(root, root, &mut files);
        MemGitDir(files)
    }
}

impl GitDir for MemGitDir {
    fn read(&self, rel: &str) -> Result<Option<Vec<u8>>, String> {
        Ok(self.0.get(rel).cloned())
    }

    fn read_range(&self, rel: &str, offset: u64, len: usize) -> Result<Option<Vec<u8>>, String> {
        Ok(self.0.get(rel).map(|bytes| {
            let start = usize::try_from(offset)
                .unwrap_or(usize::MAX)
                .min(bytes.len());
            let end = start.saturating_add(len).min(bytes.len());
            bytes[start..end].to_vec()
        }))
    }

    fn size(&self, rel: &str) -> Result<Option<u64>, String> {
        Ok(self.0.get(rel).map(|bytes| bytes.len() as u64))
    }

    fn list(&self, rel: &str) -> Result<Vec<String>, String> {
        let prefix = format!("{rel}/");
        let mut names: Vec<String> = self
            .0
            .keys()
            .filter_map(|key| key.strip_prefix(&prefix))
            .map(|rest| rest.split('/').next().unwrap_or_default().to_owned())
            .collect();
        names.dedup();
        Ok(names)
    }
}

/// Records how a check reads, to pin that packs are only read by bounded ranges.
pub(super) struct Recording<'g> {
    pub(super) inner: &'g dyn GitDir,
    pub(super) whole_reads: RefCell<Vec<String>>,
    pub(super) largest_range: Cell<usize>,
}

impl GitDir for Recording<'_> {
    fn read(&self, rel: &str) -> Result<Option<Vec<u8>>, String> {
        self.whole_reads.borrow_mut().push(rel.to_owned());
        self.inner.read(rel)
    }

    fn read_range(&self, rel: &str, offset: u64, len: usize) -> Result<Option<Vec<u8>>, String> {
        self.largest_range.set(self.largest_range.get().max(len));
        self.inner.read_range(rel, offset, len)
    }

    fn size(&self, rel: &str) -> Result<Option<u64>, String> {
        self.inner.size(rel)
    }

    fn list(&self, rel: &str) -> Result<Vec<String>, String> {
        self.inner.list(rel)
    }
}
