//! Git repository sanity check, read straight out of the vault.
//!
//! The sanity gate calls [`check_repo`] for every git repository inside a snapshotted tree. The
//! repository's git directory is read through [`GitDir`], so the bytes judged are the bytes the
//! vault holds, not whatever is on disk now. The question answered is narrow: does `HEAD` lead
//! to a commit, and that commit to a root tree, that a restored repository can actually read?
//!
//! Checked:
//! - `HEAD`: symbolic (`ref: refs/heads/main`, resolved through the loose ref file, then
//!   `packed-refs`, following symbolic refs up to 5 levels) or detached (a bare id). An unborn
//!   branch in a repository that holds no objects at all (a fresh `git init`) is sane;
//! - the object format: sha1, or sha256 when `config` says `[extensions] objectformat = sha256`;
//! - the object `HEAD` names, found loose (`objects/xx/…`) or through any version 2
//!   `objects/pack/pack-*.idx` (64-bit offsets included) and the entry at that offset of its
//!   `.pack`. It is inflated with bounded output, its deltas (`OFS_DELTA`, `REF_DELTA`, chains of
//!   up to 64) are applied with bounds checks, its declared size and its hash are verified.
//!   Annotated tags are peeled (up to 5 levels); what remains must be a commit;
//! - the commit's root tree, read and verified the same way.
//!
//! Not checked: anything else reachable (parents, subtrees, blobs: that is `git fsck`), other
//! branches and tags, the index, the working tree, trailing pack and idx checksums, the
//! multi-pack-index, commit-graph and `.rev` files. Reported as problems rather than guessed at:
//! the reftable ref backend, pack indexes other than version 2, objects that only exist in an
//! alternate store (`objects/info/alternates` points outside the snapshot). A linked worktree's
//! own git dir (`.git/worktrees/<name>`, with a `commondir` file) holds its `HEAD` but no objects
//! or branches, so it is not checked alone: check the common git dir it points to.
//!
//! When an object has several copies (packed and loose), any copy that verifies will do, as for
//! git; when none does, the first failure is reported.
//!
//! Every byte read is untrusted. Sizes are checked before allocating and no object may exceed
//! 256 MiB, every loop is bounded, packs are only ever read in windows through
//! [`GitDir::read_range`] (they can be gigabytes), and hostile input yields a problem string,
//! never a panic.

mod objects;
mod refs;

#[cfg(test)]
mod disk;
#[cfg(test)]
mod fixture;
#[cfg(test)]
mod tests;

use std::fmt;

use sha2::Digest;

#[cfg(test)]
use disk::DiskGitDir;
use objects::Repo;
use refs::{header_id, resolve_head, Head};

const MIB: usize = 1024 * 1024;
/// No object (and no delta) larger than this is inflated or built.
const MAX_OBJECT_BYTES: usize = 256 * MIB;
/// A loose object file is deflated; incompressible content grows slightly.
const MAX_LOOSE_FILE_BYTES: u64 = (MAX_OBJECT_BYTES + MIB) as u64;
/// `HEAD` and loose ref files hold one line.
const MAX_REF_FILE_BYTES: u64 = 64 * 1024;
const MAX_CONFIG_BYTES: u64 = MIB as u64;
const MAX_PACKED_REFS_BYTES: u64 = MAX_OBJECT_BYTES as u64;
const MAX_PACKS: usize = 10_000;
const MAX_SYMREF_DEPTH: usize = 5;
const MAX_TAG_DEPTH: usize = 5;
const MAX_DELTA_DEPTH: usize = 64;
/// `commit 268435456\0` and friends fit with room to spare.
const LOOSE_HEADER_MAX_BYTES: usize = 32;
/// Type/size varint (at most 10 bytes for our cap) plus an OFS_DELTA varint or a REF_DELTA id.
const ENTRY_HEADER_MAX_BYTES: usize = 64;
/// First read of a pack entry's zlib data; each further read doubles, up to the max.
const PACK_WINDOW_BYTES: usize = 64 * 1024;
const MAX_PACK_WINDOW_BYTES: usize = 8 * MIB;
/// Smallest growth step of an inflate buffer, so tiny objects do not realloc byte by byte.
const INFLATE_STEP_BYTES: usize = 4096;
/// The part of an idx bucket read in one go; larger buckets are first narrowed by probes.
const IDX_BUCKET_READ_BYTES: usize = MIB;
/// Pack header (`PACK`, version, count).
const PACK_HEADER_BYTES: u64 = 12;
/// Idx magic, version and the 256-entry fanout table.
const IDX_HEADER_BYTES: u64 = 8 + 256 * 4;

/// Read access to one repository's git directory (paths relative to it, '/'-separated).
///
/// Implementations may be called for paths that do not exist (that is the normal way to probe
/// for a loose object or ref) and must answer `Ok(None)` / an empty list then, keeping `Err` for
/// a store that cannot be read. [`check_repo`] never writes and asks for each object only a few
/// times, so implementations need not cache. Paths come from untrusted bytes only after
/// validation: they never hold `..`, empty components or a leading `/`.
pub trait GitDir {
    /// The whole file, or Ok(None) when there is no such file.
    fn read(&self, rel: &str) -> Result<Option<Vec<u8>>, String>;
    /// Up to `len` bytes from `offset` (fewer at end of file), or Ok(None) when there is no such file.
    fn read_range(&self, rel: &str, offset: u64, len: usize) -> Result<Option<Vec<u8>>, String>;
    /// The file's size, or None when absent.
    fn size(&self, rel: &str) -> Result<Option<u64>, String>;
    /// Entry names in a directory (e.g. "objects/pack"); empty when absent.
    fn list(&self, rel: &str) -> Result<Vec<String>, String>;
}

/// Checks one repository; returns the problems found (empty = sane). Never panics on hostile input.
///
/// Each problem is one line naming the ref and the object id involved, e.g.
/// `HEAD (refs/heads/main) -> 3f2a…: object is corrupt: zlib stream ends early (objects/3f/2a…)`.
pub fn check_repo(git: &dyn GitDir) -> Vec<String> {
    match check(git) {
        Ok(()) => Vec::new(),
        Err(problem) => vec![problem],
    }
}

fn check(git: &dyn GitDir) -> Result<(), String> {
    let format = read_config(git)?;
    let repo = Repo::open(git, format)?;
    let (label, head) = match resolve_head(git, format)? {
        Head::Detached(id) => ("HEAD (detached)".to_owned(), id),
        Head::Symbolic(name, id) => (format!("HEAD ({name})"), id),
        Head::Unborn(name) => {
            return if repo.has_any_objects()? {
                Err(format!("HEAD names {name}, which does not exist"))
            } else {
                Ok(())
            };
        }
    };

    // `HEAD (ref) -> tag -> … -> commit`, so a problem shows how the check got there.
    let mut id = head;
    let mut trail = format!("{label} -> {id}");
    let mut peeled = None;
    for _ in 0..=MAX_TAG_DEPTH {
        let object = repo.read_object(&id).map_err(|e| format!("{trail}: {e}"))?;
        match object.kind {
            Kind::Commit => {
                peeled = Some(object);
                break;
            }
            Kind::Tag => {
                id = header_id(&object.data, "object", format)
                    .map_err(|why| format!("{trail}: tag is malformed: {why}"))?;
                trail = format!("{trail} -> {id}");
            }
            other => return Err(format!("{trail}: is a {other}, not a commit")),
        }
    }
    let commit = peeled.ok_or_else(|| {
        format!("{trail}: annotated tags nest deeper than {MAX_TAG_DEPTH} levels")
    })?;

    let tree = header_id(&commit.data, "tree", format)
        .map_err(|why| format!("{trail}: commit is malformed: {why}"))?;
    match repo.read_object(&tree) {
        Ok(object) if object.kind == Kind::Tree => Ok(()),
        Ok(object) => Err(format!(
            "{trail}: tree {tree} is a {}, not a tree",
            object.kind
        )),
        Err(e) => Err(format!("{trail}: tree {tree}: {e}")),
    }
}

/// The hash function a repository names its objects with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Sha1,
    Sha256,
}

impl Format {
    fn raw_len(self) -> usize {
        match self {
            Format::Sha1 => 20,
            Format::Sha256 => 32,
        }
    }

    fn hash(self, kind: Kind, data: &[u8]) -> ObjectId {
        let header = format!("{kind} {}\0", data.len());
        let raw = match self {
            Format::Sha1 => {
                let mut h = sha1::Sha1::new();
                h.update(header.as_bytes());
                h.update(data);
                h.finalize().to_vec()
            }
            Format::Sha256 => {
                let mut h = sha2::Sha256::new();
                h.update(header.as_bytes());
                h.update(data);
                h.finalize().to_vec()
            }
        };
        ObjectId(raw)
    }
}

/// A git object id, as raw bytes (20 for sha1, 32 for sha256).
#[derive(Clone, Debug, PartialEq, Eq)]
struct ObjectId(Vec<u8>);

impl ObjectId {
    fn from_hex(hex_id: &[u8], format: Format) -> Option<Self> {
        if hex_id.len() != 2 * format.raw_len() {
            return None;
        }
        hex::decode(hex_id).ok().map(ObjectId)
    }

    fn loose_path(&self) -> String {
        let hex_id = hex::encode(&self.0);
        format!("objects/{}/{}", &hex_id[..2], &hex_id[2..])
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(&self.0))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Commit,
    Tree,
    Blob,
    Tag,
}

impl Kind {
    fn from_pack_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Kind::Commit),
            2 => Some(Kind::Tree),
            3 => Some(Kind::Blob),
            4 => Some(Kind::Tag),
            _ => None,
        }
    }

    fn from_name(name: &[u8]) -> Option<Self> {
        match name {
            b"commit" => Some(Kind::Commit),
            b"tree" => Some(Kind::Tree),
            b"blob" => Some(Kind::Blob),
            b"tag" => Some(Kind::Tag),
            _ => None,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Commit => "commit",
            Kind::Tree => "tree",
            Kind::Blob => "blob",
            Kind::Tag => "tag",
        })
    }
}

/// A verified object: its kind and its content (without the `<kind> <size>\0` header).
#[derive(Debug)]
struct Object {
    kind: Kind,
    data: Vec<u8>,
}

/// Why one object could not be read.
#[derive(Debug)]
enum ObjError {
    /// The vault itself failed to answer.
    Io(String),
    /// The bytes are there but wrong; `at` names the file (and pack offset).
    Corrupt {
        at: String,
        why: String,
    },
    Missing,
    /// Missing here, and the repository borrows objects from elsewhere.
    InAlternate,
}

impl ObjError {
    fn corrupt(at: &str, why: impl Into<String>) -> Self {
        ObjError::Corrupt {
            at: at.to_owned(),
            why: why.into(),
        }
    }
}

impl fmt::Display for ObjError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ObjError::Io(e) => write!(f, "cannot read the snapshot: {e}"),
            ObjError::Corrupt { at, why } => write!(f, "object is corrupt: {why} ({at})"),
            ObjError::Missing => f.write_str("object is missing"),
            ObjError::InAlternate => f.write_str(
                "object is not in the snapshot: it lives in an alternate object store \
                 outside it (objects/info/alternates)",
            ),
        }
    }
}

/// Reads a small file whole, refusing one larger than `cap` before reading it.
fn read_small(git: &dyn GitDir, rel: &str, cap: u64) -> Result<Option<Vec<u8>>, String> {
    let too_big = |n: u64| format!("{rel} is {n} bytes, more than the {cap} this check reads");
    match git
        .size(rel)
        .map_err(|e| format!("cannot read {rel}: {e}"))?
    {
        None => return Ok(None),
        Some(n) if n > cap => return Err(too_big(n)),
        Some(_) => {}
    }
    match git
        .read(rel)
        .map_err(|e| format!("cannot read {rel}: {e}"))?
    {
        Some(bytes) if bytes.len() as u64 > cap => Err(too_big(bytes.len() as u64)),
        other => Ok(other),
    }
}

/// Up to 60 bytes of `raw`, escaped so a hostile file cannot break the one-line message.
fn snippet(raw: &[u8]) -> String {
    raw[..raw.len().min(60)].escape_ascii().to_string()
}

/// The object format from `config`; sha1 when there is no config or no extension.
fn read_config(git: &dyn GitDir) -> Result<Format, String> {
    let Some(raw) = read_small(git, "config", MAX_CONFIG_BYTES)? else {
        return Ok(Format::Sha1);
    };
    let mut format = Format::Sha1;
    let mut section = String::new();
    for line in String::from_utf8_lossy(&raw).lines() {
        let mut line = line.trim();
        if let Some(header) = line.strip_prefix('[') {
            let Some((name, rest)) = header.split_once(']') else {
                continue;
            };
            // `[name "subsection"]`: only the name matters here. A key may follow on the line.
            let name = name.split([' ', '\t', '"']).next().unwrap_or_default();
            section = name.to_ascii_lowercase();
            line = rest.trim();
        }
        if section != "extensions" {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.split(['#', ';']).next().unwrap_or_default();
        let value = value.trim().trim_matches('"').to_ascii_lowercase();
        match key.trim().to_ascii_lowercase().as_str() {
            "objectformat" => {
                format = match value.as_str() {
                    "sha1" => Format::Sha1,
                    "sha256" => Format::Sha256,
                    _ => return Err(format!("config: unknown extensions.objectformat {value:?}")),
                }
            }
            "refstorage" if value != "files" => {
                return Err(format!(
                    "config: extensions.refstorage = {value:?} is not supported by this check"
                ));
            }
            _ => {}
        }
    }
    Ok(format)
}
