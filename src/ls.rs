//! `vault ls`: the entries of a snapshot, optionally below one path.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::id::BlobId;
use crate::manifest::Manifest;
use crate::tree::{Entry, Node};
use crate::util::display_name;
use crate::vault::BlobReader;

/// One listed entry.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    /// Snapshot-relative path, `/`-separated (non-UTF-8 bytes escaped).
    pub path: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub mode: u32,
    pub size: u64,
    pub mtime_ns: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

impl Listed {
    fn from_entry(path: String, e: &Entry) -> Self {
        Listed {
            path,
            kind: e.kind_str(),
            mode: e.mode,
            size: e.size,
            mtime_ns: e.mtime_ns,
            target: match &e.node {
                Node::Symlink { target } => Some(display_name(target)),
                _ => None,
            },
        }
    }
}

/// Lists every entry of `manifest` at or below `below` (a snapshot-relative path).
pub fn list(reader: &BlobReader, manifest: &Manifest, below: Option<&str>) -> Result<Vec<Listed>> {
    let mut out = Vec::new();
    let parts: Vec<&str> = below
        .unwrap_or("")
        .split('/')
        .filter(|p| !p.is_empty())
        .collect();
    let mut tree_id: BlobId = manifest.tree;
    let mut prefix = String::new();
    for (i, part) in parts.iter().enumerate() {
        let tree = reader.tree(&tree_id)?;
        let e = tree.get(part.as_bytes()).ok_or_else(|| {
            Error::Invalid(format!(
                "{}: no such path in the snapshot",
                parts[..=i].join("/")
            ))
        })?;
        prefix = parts[..=i].join("/");
        match &e.node {
            Node::Dir { subtree } => tree_id = *subtree,
            _ if i + 1 == parts.len() => {
                out.push(Listed::from_entry(prefix, e));
                return Ok(out);
            }
            _ => return Err(Error::Invalid(format!("{prefix}: not a directory"))),
        }
    }
    walk(reader, &tree_id, &prefix, &mut out)?;
    Ok(out)
}

fn walk(reader: &BlobReader, id: &BlobId, prefix: &str, out: &mut Vec<Listed>) -> Result<()> {
    let tree = reader.tree(id)?;
    for e in &tree.entries {
        let path = if prefix.is_empty() {
            display_name(&e.name)
        } else {
            format!("{prefix}/{}", display_name(&e.name))
        };
        out.push(Listed::from_entry(path.clone(), e));
        if let Node::Dir { subtree } = &e.node {
            walk(reader, subtree, &path, out)?;
        }
    }
    Ok(())
}
