//! Reading a snapshot as stored: walking its trees and reading its files back, whole or by range.
//!
//! The gates judge what the vault holds, not what is on disk now, so they read through here. A
//! file is its chunk list; the index records each chunk's plaintext length, so a range read
//! (a git pack entry in a multi-gigabyte pack) decompresses only the chunks it touches.

use crate::error::{Error, Result};
use crate::id::BlobId;
use crate::tree::{Entry, Node, Tree};
use crate::vault::BlobReader;

/// What a walk visitor wants next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visit {
    /// Go on (and into the entry when it is a directory).
    Descend,
    /// Go on, but not into this directory.
    Skip,
}

/// Visits every entry below tree `root` with its `/`-joined raw path, parents before children.
///
/// Directories are visited depth-first; the order among siblings is the tree's (by name). A tree
/// that cannot be read ends the walk with its error.
pub fn walk(
    reader: &BlobReader,
    root: &BlobId,
    mut visit: impl FnMut(&[u8], &Entry) -> Result<Visit>,
) -> Result<()> {
    let mut stack: Vec<(Vec<u8>, BlobId)> = vec![(Vec::new(), *root)];
    while let Some((prefix, id)) = stack.pop() {
        let tree = reader.tree(&id)?;
        let mut below = Vec::new();
        for e in &tree.entries {
            let path = join(&prefix, &e.name);
            let next = visit(&path, e)?;
            if let (Visit::Descend, Node::Dir { subtree }) = (next, &e.node) {
                below.push((path, *subtree));
            }
        }
        stack.extend(below.into_iter().rev());
    }
    Ok(())
}

/// The entry at `path` (`/`-separated, from the snapshot's root tree), or `None`.
pub fn lookup(reader: &BlobReader, root: &BlobId, path: &str) -> Result<Option<Entry>> {
    lookup_with(root, path, |id| reader.tree(id))
}

/// [`lookup`] with the trees fetched by `tree` (a caller that looks up many paths caches them).
pub fn lookup_with(
    root: &BlobId,
    path: &str,
    mut tree: impl FnMut(&BlobId) -> Result<Tree>,
) -> Result<Option<Entry>> {
    let mut dir = *root;
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    for (i, part) in parts.iter().enumerate() {
        let listing = tree(&dir)?;
        let Some(e) = listing.get(part.as_bytes()) else {
            return Ok(None);
        };
        if i + 1 == parts.len() {
            return Ok(Some(e.clone()));
        }
        match &e.node {
            Node::Dir { subtree } => dir = *subtree,
            _ => return Ok(None),
        }
    }
    Ok(None)
}

/// `prefix/name`, or `name` at the top.
pub fn join(prefix: &[u8], name: &[u8]) -> Vec<u8> {
    if prefix.is_empty() {
        name.to_vec()
    } else {
        [prefix, b"/", name].concat()
    }
}

/// The plaintext length of a file's chunks, from the index (no blob is read).
pub fn file_len(reader: &BlobReader, chunks: &[BlobId]) -> Result<u64> {
    chunks.iter().map(|id| chunk_len(reader, id)).sum()
}

fn chunk_len(reader: &BlobReader, id: &BlobId) -> Result<u64> {
    reader
        .location(id)
        .map(|l| u64::from(l.entry.raw_len))
        .ok_or_else(|| Error::Missing {
            object: format!("blob {id} (not in the index)"),
        })
}

/// A whole file, refused when it is larger than `max` bytes.
pub fn read_file(reader: &BlobReader, chunks: &[BlobId], max: u64) -> Result<Vec<u8>> {
    let len = file_len(reader, chunks)?;
    if len > max {
        return Err(Error::Invalid(format!(
            "{len} bytes is more than the {max} this check reads"
        )));
    }
    let mut out = Vec::with_capacity(len as usize);
    for id in chunks {
        out.extend_from_slice(&reader.read(id)?);
    }
    Ok(out)
}

/// Up to `len` bytes from `offset` (fewer at the end of the file); reads only the chunks the range
/// touches.
pub fn read_range(
    reader: &BlobReader,
    chunks: &[BlobId],
    offset: u64,
    len: usize,
) -> Result<Vec<u8>> {
    let end = offset.saturating_add(len as u64);
    let mut out = Vec::with_capacity(len.min(16 << 20));
    let mut at = 0u64;
    for id in chunks {
        if at >= end {
            break;
        }
        let n = chunk_len(reader, id)?;
        if at + n > offset {
            let data = reader.read(id)?;
            let from = offset.saturating_sub(at) as usize;
            let to = ((end - at) as usize).min(data.len());
            out.extend_from_slice(data.get(from..to).unwrap_or_default());
        }
        at += n;
    }
    Ok(out)
}

/// Shannon entropy of `data` in bits per byte.
pub fn entropy(data: &[u8]) -> f64 {
    if data.is_empty() {
        return 0.0;
    }
    let mut counts = [0u64; 256];
    for &b in data {
        counts[b as usize] += 1;
    }
    let n = data.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum()
}

/// Whether a sample of a file's content looks encrypted or random.
///
/// Random bytes score close to 8 bits per byte once there are a few kilobytes of them, but a
/// short sample cannot: `n` distinct-ish bytes top out near log2(n). So the bar is 7.2 bits, or
/// 85% of log2(n) for samples under 4 KiB; below 64 bytes nothing is judged. Text scores 4–5.5,
/// base64 about 6.
pub fn is_high_entropy(sample: &[u8]) -> bool {
    if sample.len() < 64 {
        return false;
    }
    let bar = (0.85 * (sample.len() as f64).log2()).min(7.2);
    entropy(sample) >= bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entropy_separates_text_from_random() {
        let text =
            b"The quick brown fox jumps over the lazy dog; SELECT * FROM orders;\n".repeat(60);
        assert!(!is_high_entropy(&text));
        let mut random = vec![0u8; 4096];
        getrandom::fill(&mut random).unwrap();
        assert!(is_high_entropy(&random));
        assert!(is_high_entropy(&random[..200]));
        assert!(!is_high_entropy(&random[..40]), "too short to judge");
        let b64 = hex::encode(&random);
        assert!(
            !is_high_entropy(b64.as_bytes()),
            "hex text is not ciphertext"
        );
        assert_eq!(entropy(&[7u8; 100]), 0.0);
    }
}
