//! `audit.log`: append-only JSON lines, one per decision.
//!
//! Every snapshot, restore and verify appends one record: time, host, user, action, snapshot and
//! outcome. A record is written with a single `write` on an `O_APPEND` descriptor and fsynced, so
//! concurrent appenders never interleave and a crash can at worst cut the last line short; the
//! reader skips such a line and says so.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{IoContext, Result};

/// Largest audit log the reader will load (it is a local, human-scale file).
const AUDIT_MAX_BYTES: u64 = 512 * 1024 * 1024;

/// One audit record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub time: String,
    pub host: String,
    pub user: String,
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
}

impl AuditRecord {
    /// A record stamped with now, this host and this user.
    pub fn new(action: &str, snapshot: Option<String>, outcome: &str) -> Self {
        AuditRecord {
            time: crate::util::now_rfc3339(),
            host: crate::util::hostname(),
            user: crate::util::username(),
            action: action.into(),
            snapshot,
            outcome: outcome.into(),
            detail: None,
        }
    }

    /// Adds structured detail.
    pub fn with_detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = Some(detail);
        self
    }
}

/// Appends one record durably.
pub fn append(path: &Path, record: &AuditRecord) -> Result<()> {
    let mut line = serde_json::to_vec(record).expect("invariant: audit record serializes");
    line.push(b'\n');
    let mut f = OpenOptions::new()
        .read(true)
        .create(true)
        .append(true)
        .open(path)
        .at(path)?;
    // After a torn last write, start on a fresh line so this record stays readable.
    let len = f.metadata().at(path)?.len();
    if len > 0 {
        let mut last = [0u8; 1];
        f.read_exact_at(&mut last, len - 1).at(path)?;
        if last[0] != b'\n' {
            line.insert(0, b'\n');
        }
    }
    crate::crashpoint::io_fault(path).at(path)?;
    f.write_all(&line).at(path)?;
    f.sync_data().at(path)
}

/// Reads every record; returns them and the number of lines that did not parse.
pub fn read(path: &Path) -> Result<(Vec<AuditRecord>, usize)> {
    let len = std::fs::metadata(path).at(path)?.len();
    if len > AUDIT_MAX_BYTES {
        return Err(crate::Error::Invalid(format!(
            "{}: {len} bytes is larger than the reader accepts",
            path.display()
        )));
    }
    let bytes = std::fs::read(path).at(path)?;
    Ok(parse(&bytes))
}

/// Parses audit-log bytes; bad lines are counted, never fatal.
pub fn parse(bytes: &[u8]) -> (Vec<AuditRecord>, usize) {
    let mut out = Vec::new();
    let mut bad = 0;
    for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        match serde_json::from_slice(line) {
            Ok(r) => out.push(r),
            Err(_) => bad += 1,
        }
    }
    (out, bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_read_and_skip_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("audit.log");
        append(&p, &AuditRecord::new("snapshot", Some("ab".into()), "ok")).unwrap();
        append(&p, &AuditRecord::new("verify", None, "failed")).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(b"{\"time\":")
            .unwrap();
        append(&p, &AuditRecord::new("restore", None, "ok")).unwrap();
        let (recs, bad) = read(&p).unwrap();
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[2].action, "restore");
        assert_eq!(recs[1].action, "verify");
        assert_eq!(bad, 1);
    }
}
