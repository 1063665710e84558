//! Git repositories as stored in a snapshot: `git::check_repo` over a hostile `.git` directory
//! must not panic, loop or allocate without bound (the sanity gate runs it on every repository of
//! every snapshot).
//!
//! The input is a tiny archive: repeated `[name length][name][content length: u16 LE][content]`
//! records, each one file of the git directory (`HEAD`, `refs/heads/main`, `objects/ab/cdef...`,
//! `objects/pack/pack-X.idx`, ...).

#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;

use atlasvault::gates::sanity::git::{check_repo, GitDir};

struct MemGitDir(BTreeMap<String, Vec<u8>>);

impl GitDir for MemGitDir {
    fn read(&self, rel: &str) -> Result<Option<Vec<u8>>, String> {
        Ok(self.0.get(rel).cloned())
    }

    fn read_range(&self, rel: &str, offset: u64, len: usize) -> Result<Option<Vec<u8>>, String> {
        Ok(self.0.get(rel).map(|b| {
            let start = (offset.min(b.len() as u64)) as usize;
            let end = start.saturating_add(len).min(b.len());
            b[start..end].to_vec()
        }))
    }

    fn size(&self, rel: &str) -> Result<Option<u64>, String> {
        Ok(self.0.get(rel).map(|b| b.len() as u64))
    }

    fn list(&self, rel: &str) -> Result<Vec<String>, String> {
        let prefix = format!("{}/", rel.trim_end_matches('/'));
        let mut names: Vec<String> = self
            .0
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix))
            .map(|rest| rest.split('/').next().unwrap_or(rest).to_string())
            .collect();
        names.dedup();
        Ok(names)
    }
}

fn unpack(mut data: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    while let Some((&n, rest)) = data.split_first() {
        let n = n as usize;
        if rest.len() < n + 2 {
            break;
        }
        let name = String::from_utf8_lossy(&rest[..n]).into_owned();
        let len = u16::from_le_bytes([rest[n], rest[n + 1]]) as usize;
        let body = &rest[n + 2..];
        let len = len.min(body.len());
        files.insert(name, body[..len].to_vec());
        data = &body[len..];
    }
    files
}

fuzz_target!(|data: &[u8]| {
    let repo = MemGitDir(unpack(data));
    for problem in check_repo(&repo) {
        assert!(!problem.contains('\n'), "multi-line problem: {problem:?}");
    }
});
