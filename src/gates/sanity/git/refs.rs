//! `HEAD` and ref resolution: from `HEAD`, through symbolic refs, loose ref files and
//! `packed-refs`, to the object id it names. Reading that object is not done here.

use super::{
    read_small, snippet, Format, GitDir, ObjectId, MAX_PACKED_REFS_BYTES, MAX_REF_FILE_BYTES,
    MAX_SYMREF_DEPTH,
};

/// Where `HEAD` leads.
#[derive(Debug)]
pub(super) enum Head {
    Detached(ObjectId),
    /// The last ref of the symbolic chain and the id it holds.
    Symbolic(String, ObjectId),
    /// The ref HEAD names exists nowhere.
    Unborn(String),
}

/// The content of `HEAD` or a loose ref file.
enum RefValue {
    Id(ObjectId),
    Symbolic(String),
}

fn parse_ref_file(raw: &[u8], format: Format) -> Option<RefValue> {
    let text = std::str::from_utf8(raw).ok()?.trim_end();
    if let Some(target) = text.strip_prefix("ref:") {
        return Some(RefValue::Symbolic(target.trim_start().to_owned()));
    }
    ObjectId::from_hex(text.as_bytes(), format).map(RefValue::Id)
}

/// Git's own ref-name rules, as far as they keep a name a safe relative path under `refs/`.
fn check_refname(name: &str) -> Result<(), &'static str> {
    if !name.starts_with("refs/") {
        return Err("it is not under refs/");
    }
    if name.len() > 1024 {
        return Err("it is too long");
    }
    if name.contains("..") || name.contains("@{") || name.ends_with(".lock") {
        return Err("it contains a forbidden sequence");
    }
    let bad_char = |c: char| c.is_ascii_control() || " ~^:?*[\\".contains(c);
    if name.chars().any(bad_char) {
        return Err("it contains a forbidden character");
    }
    if name
        .split('/')
        .any(|part| part.is_empty() || part.starts_with('.'))
    {
        return Err("it has an empty or hidden component");
    }
    Ok(())
}

pub(super) fn resolve_head(git: &dyn GitDir, format: Format) -> Result<Head, String> {
    let raw = read_small(git, "HEAD", MAX_REF_FILE_BYTES)?.ok_or("HEAD is missing")?;
    let mut name = match parse_ref_file(&raw, format) {
        Some(RefValue::Id(id)) => return Ok(Head::Detached(id)),
        Some(RefValue::Symbolic(name)) => name,
        None => return Err(format!("HEAD is garbled: \"{}\"", snippet(&raw))),
    };
    let mut packed: Option<Vec<u8>> = None;
    for _ in 0..MAX_SYMREF_DEPTH {
        if let Err(why) = check_refname(&name) {
            let name = snippet(name.as_bytes());
            return Err(format!("HEAD names \"{name}\", an invalid ref: {why}"));
        }
        let value = match read_small(git, &name, MAX_REF_FILE_BYTES)? {
            Some(raw) => parse_ref_file(&raw, format).ok_or_else(|| {
                format!("HEAD ({name}): ref file is garbled: \"{}\"", snippet(&raw))
            })?,
            None => {
                if packed.is_none() {
                    let raw = read_small(git, "packed-refs", MAX_PACKED_REFS_BYTES)?;
                    packed = Some(raw.unwrap_or_default());
                }
                let raw = packed.as_deref().unwrap_or_default();
                match packed_ref(raw, &name, format)? {
                    Some(id) => RefValue::Id(id),
                    None => return Ok(Head::Unborn(name)),
                }
            }
        };
        match value {
            RefValue::Id(id) => return Ok(Head::Symbolic(name, id)),
            RefValue::Symbolic(next) => name = next,
        }
    }
    Err(format!(
        "HEAD: symbolic refs nest deeper than {MAX_SYMREF_DEPTH} levels (at \"{}\")",
        snippet(name.as_bytes())
    ))
}

/// The id `packed-refs` records for `name`, skipping comments and `^` peel lines.
fn packed_ref(raw: &[u8], name: &str, format: Format) -> Result<Option<ObjectId>, String> {
    for line in raw.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.starts_with(b"#") || line.starts_with(b"^") {
            continue;
        }
        let Some(space) = line.iter().position(|&b| b == b' ') else {
            continue;
        };
        if &line[space + 1..] == name.as_bytes() {
            return ObjectId::from_hex(&line[..space], format)
                .map(Some)
                .ok_or_else(|| format!("HEAD ({name}): packed-refs entry is garbled"));
        }
    }
    Ok(None)
}

/// The id on header line `<name> <hex>` of a commit or tag (headers end at the first blank line).
pub(super) fn header_id(data: &[u8], name: &str, format: Format) -> Result<ObjectId, String> {
    for line in data.split(|&b| b == b'\n') {
        if line.is_empty() {
            break;
        }
        let value = line
            .strip_prefix(name.as_bytes())
            .and_then(|rest| rest.strip_prefix(b" "));
        if let Some(value) = value {
            return ObjectId::from_hex(value, format)
                .ok_or_else(|| format!("its {name} line is garbled"));
        }
    }
    Err(format!("it has no {name} line"))
}
