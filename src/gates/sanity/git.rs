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

use std::fmt;
#[cfg(test)]
use std::fs;
#[cfg(test)]
use std::io::{self, Read, Seek, SeekFrom};
#[cfg(test)]
use std::path::{Component, Path, PathBuf};

use flate2::{Decompress, FlushDecompress, Status};
use sha2::Digest;

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

/// [`GitDir`] over a git directory on the local filesystem (the `.git` folder itself).
#[cfg(test)]
#[derive(Debug, Clone)]
pub struct DiskGitDir(pub PathBuf);

#[cfg(test)]
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
#[cfg(test)]
fn is_absent(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory | io::ErrorKind::IsADirectory
    )
}

#[cfg(test)]
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

/// Where `HEAD` leads.
#[derive(Debug)]
enum Head {
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

fn resolve_head(git: &dyn GitDir, format: Format) -> Result<Head, String> {
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
fn header_id(data: &[u8], name: &str, format: Format) -> Result<ObjectId, String> {
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

/// Names git itself gives pack files: nothing that could step outside `objects/pack`.
fn is_pack_name(name: &str) -> bool {
    name.starts_with("pack-")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// A delta entry's base, as its pack header names it.
#[derive(Debug)]
enum BaseRef {
    Offset(u64),
    Id(ObjectId),
}

/// A parsed pack entry header.
#[derive(Debug)]
struct Entry {
    pack: usize,
    offset: u64,
    /// The pack type code (1–4 whole objects, 6 and 7 deltas).
    code: u8,
    /// Inflated size of the entry's data (the object, or the delta).
    size: usize,
    /// Where the zlib stream starts.
    data_at: u64,
    base: Option<BaseRef>,
}

/// The object store of one repository, as [`check_repo`] sees it.
struct Repo<'a> {
    git: &'a dyn GitDir,
    format: Format,
    /// `objects/pack/pack-…` without extension, one per `.idx`.
    packs: Vec<String>,
}

impl<'a> Repo<'a> {
    fn open(git: &'a dyn GitDir, format: Format) -> Result<Self, String> {
        let names = git
            .list("objects/pack")
            .map_err(|e| format!("cannot list objects/pack: {e}"))?;
        let mut packs: Vec<String> = names
            .iter()
            .filter_map(|name| name.strip_suffix(".idx"))
            .filter(|base| is_pack_name(base))
            .map(|base| format!("objects/pack/{base}"))
            .collect();
        packs.sort();
        packs.dedup();
        if packs.len() > MAX_PACKS {
            return Err(format!(
                "objects/pack holds {} pack indexes, more than the {MAX_PACKS} this check reads",
                packs.len()
            ));
        }
        Ok(Repo { git, format, packs })
    }

    fn has_any_objects(&self) -> Result<bool, String> {
        if !self.packs.is_empty() {
            return Ok(true);
        }
        let dirs = self
            .git
            .list("objects")
            .map_err(|e| format!("cannot list objects: {e}"))?;
        let fanout = dirs
            .iter()
            .filter(|d| d.len() == 2 && d.bytes().all(|b| b.is_ascii_hexdigit()))
            .take(256);
        for dir in fanout {
            let rel = format!("objects/{dir}");
            let entries = self
                .git
                .list(&rel)
                .map_err(|e| format!("cannot list {rel}: {e}"))?;
            if !entries.is_empty() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The object `id`, verified. Any good copy (packed, then loose, as git looks) will do;
    /// when none is good, the first failure is reported.
    fn read_object(&self, id: &ObjectId) -> Result<Object, ObjError> {
        self.read_object_nested(id, 0)
    }

    fn read_object_nested(&self, id: &ObjectId, depth: usize) -> Result<Object, ObjError> {
        let (copies, mut first_err) = self.packed_copies(id);
        for (pack, offset) in copies {
            let got = self
                .read_packed(pack, offset, depth)
                .and_then(|object| self.verify(object, id, &self.pack_at(pack, offset)));
            match got {
                Ok(object) => return Ok(object),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match self.read_loose(id) {
            Ok(Some(object)) => return Ok(object),
            Ok(None) => {}
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        match self.git.size("objects/info/alternates") {
            Ok(Some(_)) => Err(ObjError::InAlternate),
            Ok(None) => Err(ObjError::Missing),
            Err(e) => Err(ObjError::Io(e)),
        }
    }

    fn verify(&self, object: Object, id: &ObjectId, at: &str) -> Result<Object, ObjError> {
        let actual = self.format.hash(object.kind, &object.data);
        if actual == *id {
            Ok(object)
        } else {
            Err(ObjError::corrupt(at, format!("content hashes to {actual}")))
        }
    }

    fn pack_at(&self, pack: usize, offset: u64) -> String {
        format!("{}.pack at offset {offset}", self.packs[pack])
    }

    fn read_loose(&self, id: &ObjectId) -> Result<Option<Object>, ObjError> {
        let path = id.loose_path();
        let Some(size) = self.git.size(&path).map_err(ObjError::Io)? else {
            return Ok(None);
        };
        if size > MAX_LOOSE_FILE_BYTES {
            return Err(ObjError::corrupt(
                &path,
                format!("file is {size} bytes, over the cap"),
            ));
        }
        let Some(raw) = self.git.read(&path).map_err(ObjError::Io)? else {
            return Ok(None);
        };
        let mut once = Some(raw);
        let mut z = Inflater::new(&path, move || Ok(once.take()));
        let mut out = Vec::new();
        z.fill(&mut out, LOOSE_HEADER_MAX_BYTES)?;
        let nul = out
            .iter()
            .take(LOOSE_HEADER_MAX_BYTES)
            .position(|&b| b == 0)
            .ok_or_else(|| ObjError::corrupt(&path, "header is garbled"))?;
        let (kind, declared) = parse_loose_header(&out[..nul]).ok_or_else(|| {
            ObjError::corrupt(
                &path,
                format!("header is garbled: \"{}\"", snippet(&out[..nul])),
            )
        })?;
        out.drain(..=nul);
        // One byte past the declared size tells an overlong stream from an exact one.
        let ended = z.fill(&mut out, declared + 1)?;
        check_inflated(&path, out.len(), declared, ended)?;
        self.verify(Object { kind, data: out }, id, &path).map(Some)
    }

    /// Every packed copy of `id`, with the first index error met while looking.
    fn packed_copies(&self, id: &ObjectId) -> (Vec<(usize, u64)>, Option<ObjError>) {
        let mut copies = Vec::new();
        let mut first_err = None;
        for pack in 0..self.packs.len() {
            match self.find_in_idx(pack, id) {
                Ok(Some(offset)) => copies.push((pack, offset)),
                Ok(None) => {}
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        (copies, first_err)
    }

    /// Reads exactly `len` bytes at `offset`, or says the file is truncated.
    fn read_exact(&self, rel: &str, offset: u64, len: usize) -> Result<Vec<u8>, ObjError> {
        let mut bytes = self
            .git
            .read_range(rel, offset, len)
            .map_err(ObjError::Io)?
            .ok_or_else(|| ObjError::corrupt(rel, "file vanished"))?;
        if bytes.len() < len {
            return Err(ObjError::corrupt(
                rel,
                format!("file is truncated before byte {}", offset + len as u64),
            ));
        }
        bytes.truncate(len);
        Ok(bytes)
    }

    /// The offset of `id` in pack `pack`, from its version 2 index.
    fn find_in_idx(&self, pack: usize, id: &ObjectId) -> Result<Option<u64>, ObjError> {
        let path = format!("{}.idx", self.packs[pack]);
        let hash_len = self.format.raw_len();
        let Some(idx_size) = self.git.size(&path).map_err(ObjError::Io)? else {
            return Ok(None);
        };
        let head = self.read_exact(&path, 0, IDX_HEADER_BYTES as usize)?;
        if head[..4] != *b"\xfftOc" || be32(&head[4..8]) != 2 {
            return Err(ObjError::corrupt(&path, "not a version 2 pack index"));
        }
        let fanout = |i: usize| u64::from(be32(&head[8 + 4 * i..]));
        let first = usize::from(id.0[0]);
        let mut lo = if first == 0 { 0 } else { fanout(first - 1) };
        let mut hi = fanout(first);
        let count = fanout(255);
        let min_size = IDX_HEADER_BYTES + count * (hash_len as u64 + 8) + 2 * hash_len as u64;
        if lo > hi || hi > count || idx_size < min_size {
            return Err(ObjError::corrupt(
                &path,
                "fanout table does not fit the file",
            ));
        }
        let id_at = |i: u64| IDX_HEADER_BYTES + i * hash_len as u64;

        // Huge buckets: narrow by single probes first, so no read grows with the repository.
        while (hi - lo) as usize * hash_len > IDX_BUCKET_READ_BYTES {
            let mid = lo + (hi - lo) / 2;
            let probe = self.read_exact(&path, id_at(mid), hash_len)?;
            match probe.as_slice().cmp(&id.0) {
                std::cmp::Ordering::Equal => {
                    return self.idx_offset(&path, count, mid, idx_size).map(Some)
                }
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
            }
        }
        let bucket = self.read_exact(&path, id_at(lo), (hi - lo) as usize * hash_len)?;
        let ids: Vec<&[u8]> = bucket.chunks_exact(hash_len).collect();
        match ids.binary_search(&id.0.as_slice()) {
            Ok(i) => self
                .idx_offset(&path, count, lo + i as u64, idx_size)
                .map(Some),
            Err(_) => Ok(None),
        }
    }

    /// The pack offset of entry `i` of an index with `count` entries.
    fn idx_offset(&self, path: &str, count: u64, i: u64, idx_size: u64) -> Result<u64, ObjError> {
        let hash_len = self.format.raw_len() as u64;
        let small_at = IDX_HEADER_BYTES + count * (hash_len + 4) + i * 4;
        let small = be32(&self.read_exact(path, small_at, 4)?);
        if small & 0x8000_0000 == 0 {
            return Ok(u64::from(small));
        }
        let large_at =
            IDX_HEADER_BYTES + count * (hash_len + 8) + u64::from(small & 0x7fff_ffff) * 8;
        if large_at + 8 > idx_size.saturating_sub(2 * hash_len) {
            return Err(ObjError::corrupt(
                path,
                "64-bit offset lies outside the index",
            ));
        }
        Ok(be64(&self.read_exact(path, large_at, 8)?))
    }

    /// The entry at `offset` of pack `pack`, with its deltas resolved. Bases are found first
    /// (headers only) and deltas inflated one at a time, so memory stays at base + delta + result.
    fn read_packed(&self, pack: usize, offset: u64, depth: usize) -> Result<Object, ObjError> {
        let mut chain: Vec<Entry> = Vec::new();
        let mut at = (pack, offset);
        let base = loop {
            if depth + chain.len() > MAX_DELTA_DEPTH {
                return Err(ObjError::corrupt(
                    &self.pack_at(at.0, at.1),
                    format!("delta chain is longer than {MAX_DELTA_DEPTH}"),
                ));
            }
            let entry = self.entry_header(at.0, at.1)?;
            match &entry.base {
                None => {
                    let kind = Kind::from_pack_code(entry.code).ok_or_else(|| {
                        ObjError::corrupt(&self.pack_at(at.0, at.1), "bad entry type")
                    })?;
                    let data = self.inflate_entry(&entry)?;
                    break Object { kind, data };
                }
                Some(BaseRef::Offset(base_at)) => at = (at.0, *base_at),
                Some(BaseRef::Id(base_id)) => {
                    let base_id = base_id.clone();
                    let (copies, _) = self.packed_copies(&base_id);
                    if let Some(&first) = copies.first() {
                        at = first;
                    } else {
                        let here = self.pack_at(at.0, at.1);
                        chain.push(entry);
                        match self.read_object_nested(&base_id, depth + chain.len()) {
                            Ok(object) => break object,
                            Err(e) => {
                                return Err(ObjError::corrupt(
                                    &here,
                                    format!("delta base {base_id}: {e}"),
                                ))
                            }
                        }
                    }
                }
            }
            chain.push(entry);
        };
        let mut object = base;
        for entry in chain.iter().rev() {
            let delta = self.inflate_entry(entry)?;
            object.data = apply_delta(&object.data, &delta)
                .map_err(|why| ObjError::corrupt(&self.pack_at(entry.pack, entry.offset), why))?;
        }
        Ok(object)
    }

    fn entry_header(&self, pack: usize, offset: u64) -> Result<Entry, ObjError> {
        let path = format!("{}.pack", self.packs[pack]);
        let here = self.pack_at(pack, offset);
        let pack_size = self
            .git
            .size(&path)
            .map_err(ObjError::Io)?
            .ok_or_else(|| ObjError::corrupt(&path, "pack file is missing"))?;
        let magic = self.read_exact(&path, 0, PACK_HEADER_BYTES as usize)?;
        if magic[..4] != *b"PACK" || !matches!(be32(&magic[4..8]), 2 | 3) {
            return Err(ObjError::corrupt(&path, "not a version 2 or 3 pack"));
        }
        let trailer = self.format.raw_len() as u64;
        if offset < PACK_HEADER_BYTES || offset.saturating_add(trailer) >= pack_size {
            return Err(ObjError::corrupt(
                &here,
                "entry offset lies outside the pack",
            ));
        }
        let head = self
            .git
            .read_range(&path, offset, ENTRY_HEADER_MAX_BYTES)
            .map_err(ObjError::Io)?
            .unwrap_or_default();
        let truncated = || ObjError::corrupt(&here, "entry header is truncated");
        let mut cur = Cursor::new(&head);
        let mut byte = cur.byte().ok_or_else(truncated)?;
        let code = (byte >> 4) & 7;
        let mut size = u64::from(byte & 0x0f);
        let mut shift = 4;
        while byte & 0x80 != 0 {
            if shift > 56 {
                return Err(ObjError::corrupt(&here, "entry size is garbled"));
            }
            byte = cur.byte().ok_or_else(truncated)?;
            size |= u64::from(byte & 0x7f) << shift;
            shift += 7;
        }
        if size > MAX_OBJECT_BYTES as u64 {
            return Err(ObjError::corrupt(
                &here,
                format!("entry declares over {MAX_OBJECT_BYTES} bytes"),
            ));
        }
        let base = match code {
            1..=4 => None,
            6 => {
                // Git's offset encoding: big-endian 7-bit groups, each continuation adding one.
                let mut byte = cur.byte().ok_or_else(truncated)?;
                let mut back = u64::from(byte & 0x7f);
                while byte & 0x80 != 0 {
                    byte = cur.byte().ok_or_else(truncated)?;
                    back = back
                        .checked_add(1)
                        .and_then(|b| b.checked_mul(128))
                        .map(|b| b | u64::from(byte & 0x7f))
                        .ok_or_else(|| ObjError::corrupt(&here, "delta base offset overflows"))?;
                }
                if back == 0 || back > offset - PACK_HEADER_BYTES {
                    return Err(ObjError::corrupt(
                        &here,
                        "delta base offset points outside the pack",
                    ));
                }
                Some(BaseRef::Offset(offset - back))
            }
            7 => {
                let raw = cur.take(self.format.raw_len()).ok_or_else(truncated)?;
                Some(BaseRef::Id(ObjectId(raw.to_vec())))
            }
            other => {
                return Err(ObjError::corrupt(
                    &here,
                    format!("unknown entry type {other}"),
                ))
            }
        };
        Ok(Entry {
            pack,
            offset,
            code,
            size: size as usize,
            data_at: offset + cur.pos as u64,
            base,
        })
    }

    /// Inflates an entry's zlib data, reading the pack in growing windows.
    fn inflate_entry(&self, entry: &Entry) -> Result<Vec<u8>, ObjError> {
        let path = format!("{}.pack", self.packs[entry.pack]);
        let here = self.pack_at(entry.pack, entry.offset);
        let git = self.git;
        let mut next_at = entry.data_at;
        let mut window = PACK_WINDOW_BYTES;
        let source = || {
            let chunk = git
                .read_range(&path, next_at, window)
                .map_err(ObjError::Io)?;
            if let Some(chunk) = &chunk {
                next_at += chunk.len() as u64;
                window = (window * 2).min(MAX_PACK_WINDOW_BYTES);
            }
            Ok(chunk)
        };
        let mut z = Inflater::new(&here, source);
        let mut out = Vec::new();
        let ended = z.fill(&mut out, entry.size + 1)?;
        check_inflated(&here, out.len(), entry.size, ended)?;
        Ok(out)
    }
}

fn be32(b: &[u8]) -> u32 {
    let mut word = [0; 4];
    word.copy_from_slice(&b[..4]);
    u32::from_be_bytes(word)
}

fn be64(b: &[u8]) -> u64 {
    let mut word = [0; 8];
    word.copy_from_slice(&b[..8]);
    u64::from_be_bytes(word)
}

/// `<kind> <decimal size>` of a loose object.
fn parse_loose_header(header: &[u8]) -> Option<(Kind, usize)> {
    let space = header.iter().position(|&b| b == b' ')?;
    let kind = Kind::from_name(&header[..space])?;
    let digits = &header[space + 1..];
    if digits.is_empty() || digits.len() > 10 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let size: usize = std::str::from_utf8(digits).ok()?.parse().ok()?;
    (size <= MAX_OBJECT_BYTES).then_some((kind, size))
}

/// After inflating with room for `declared + 1` bytes: exactly `declared`, and the stream over.
fn check_inflated(at: &str, got: usize, declared: usize, ended: bool) -> Result<(), ObjError> {
    if got > declared {
        Err(ObjError::corrupt(
            at,
            format!("inflates past its declared {declared} bytes"),
        ))
    } else if !ended || got < declared {
        Err(ObjError::corrupt(
            at,
            format!("inflates to {got} bytes, {declared} declared"),
        ))
    } else {
        Ok(())
    }
}

/// A bounds-checked reader over a byte slice.
struct Cursor<'b> {
    buf: &'b [u8],
    pos: usize,
}

impl<'b> Cursor<'b> {
    fn new(buf: &'b [u8]) -> Self {
        Cursor { buf, pos: 0 }
    }

    fn byte(&mut self) -> Option<u8> {
        let b = *self.buf.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    fn take(&mut self, n: usize) -> Option<&'b [u8]> {
        let bytes = self.buf.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(bytes)
    }

    /// A delta header size: little-endian 7-bit groups.
    fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }
}

/// Appends `bytes`, never letting the output (or its allocation) pass `limit`.
fn push_bounded(out: &mut Vec<u8>, bytes: &[u8], limit: usize) -> Result<(), String> {
    if bytes.len() > limit - out.len() {
        return Err(format!("delta builds more than its declared {limit} bytes"));
    }
    if bytes.len() > out.capacity() - out.len() {
        let grow = out.capacity().max(bytes.len()).min(limit - out.len());
        out.reserve_exact(grow);
    }
    out.extend_from_slice(bytes);
    Ok(())
}

/// Applies a git delta (`src size`, `dst size`, then copy/insert instructions) to `base`.
fn apply_delta(base: &[u8], delta: &[u8]) -> Result<Vec<u8>, String> {
    let mut d = Cursor::new(delta);
    let src_len = d.varint().ok_or("delta header is truncated")?;
    let dst_len = d.varint().ok_or("delta header is truncated")?;
    if src_len != base.len() as u64 {
        return Err(format!(
            "delta expects a {src_len}-byte base, the base has {}",
            base.len()
        ));
    }
    if dst_len > MAX_OBJECT_BYTES as u64 {
        return Err(format!("delta declares {dst_len} bytes, over the cap"));
    }
    let dst_len = dst_len as usize;
    let mut out = Vec::with_capacity(dst_len.min(INFLATE_STEP_BYTES));
    // Each instruction consumes at least one byte, so the loop is bounded by the delta's length.
    while let Some(op) = d.byte() {
        if op & 0x80 != 0 {
            let mut offset = 0usize;
            for i in 0..4 {
                if op & (1 << i) != 0 {
                    let b = d.byte().ok_or("delta copy instruction is truncated")?;
                    offset |= usize::from(b) << (8 * i);
                }
            }
            let mut size = 0usize;
            for i in 0..3 {
                if op & (0x10 << i) != 0 {
                    let b = d.byte().ok_or("delta copy instruction is truncated")?;
                    size |= usize::from(b) << (8 * i);
                }
            }
            if size == 0 {
                size = 0x10000;
            }
            let chunk = offset
                .checked_add(size)
                .and_then(|end| base.get(offset..end))
                .ok_or("delta copies from outside its base")?;
            push_bounded(&mut out, chunk, dst_len)?;
        } else if op != 0 {
            let chunk = d
                .take(usize::from(op))
                .ok_or("delta insert runs past its end")?;
            push_bounded(&mut out, chunk, dst_len)?;
        } else {
            return Err("delta uses the reserved opcode 0".to_owned());
        }
    }
    if out.len() != dst_len {
        return Err(format!(
            "delta builds {} bytes, {dst_len} declared",
            out.len()
        ));
    }
    Ok(out)
}

/// One zlib stream whose input arrives in chunks; output only grows as far as asked for.
struct Inflater<'p, F> {
    at: &'p str,
    z: Decompress,
    input: Vec<u8>,
    pos: usize,
    next_chunk: F,
    /// `next_chunk` has nothing more to give.
    source_done: bool,
    ended: bool,
}

impl<'p, F> Inflater<'p, F>
where
    F: FnMut() -> Result<Option<Vec<u8>>, ObjError>,
{
    fn new(at: &'p str, next_chunk: F) -> Self {
        Inflater {
            at,
            z: Decompress::new(true),
            input: Vec::new(),
            pos: 0,
            next_chunk,
            source_done: false,
            ended: false,
        }
    }

    /// Inflates into `out` until it holds at least `want` bytes or the stream ends (the
    /// allocation never exceeds `want`); returns whether the stream ended.
    fn fill(&mut self, out: &mut Vec<u8>, want: usize) -> Result<bool, ObjError> {
        let mut idle_rounds = 0;
        while !self.ended && out.len() < want {
            if self.pos == self.input.len() && !self.source_done {
                match (self.next_chunk)()? {
                    Some(chunk) if !chunk.is_empty() => {
                        self.input = chunk;
                        self.pos = 0;
                    }
                    // zlib may still hold output for the input it has taken: drain it first.
                    _ => self.source_done = true,
                }
            }
            if out.len() == out.capacity() {
                let grow = out.capacity().max(INFLATE_STEP_BYTES).min(want - out.len());
                out.reserve_exact(grow);
            }
            let (in_before, out_before) = (self.z.total_in(), self.z.total_out());
            let status = self
                .z
                .decompress_vec(&self.input[self.pos..], out, FlushDecompress::None)
                .map_err(|e| ObjError::corrupt(self.at, format!("zlib stream is invalid: {e}")))?;
            let consumed = (self.z.total_in() - in_before) as usize;
            self.pos = (self.pos + consumed).min(self.input.len());
            if status == Status::StreamEnd {
                self.ended = true;
            } else if consumed == 0 && self.z.total_out() == out_before {
                if self.source_done && self.pos == self.input.len() {
                    return Err(ObjError::corrupt(self.at, "zlib stream ends early"));
                }
                idle_rounds += 1;
                if idle_rounds > 3 {
                    return Err(ObjError::corrupt(self.at, "zlib stream makes no progress"));
                }
            } else {
                idle_rounds = 0;
            }
        }
        Ok(self.ended)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};
    use std::collections::BTreeMap;
    use std::io::Write;
    use std::process::Command;

    use flate2::write::ZlibEncoder;
    use flate2::Compression;

    use super::*;

    /// A scratch repository driven by the real `git`, isolated from any user or system config.
    struct Fixture {
        _tmp: tempfile::TempDir,
        home: PathBuf,
        work: PathBuf,
    }

    /// One object line of `git verify-pack -v`.
    struct PackLine {
        id: String,
        kind: String,
        size_in_pack: u64,
        offset: u64,
        depth: u32,
    }

    impl Fixture {
        fn new(init: &[&str]) -> Self {
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

        fn run_in(&self, dir: &Path, args: &[&str]) -> String {
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

        fn git(&self, args: &[&str]) -> String {
            self.run_in(&self.work, args)
        }

        fn dot_git(&self) -> PathBuf {
            self.work.join(".git")
        }

        fn check(&self) -> Vec<String> {
            check_repo(&DiskGitDir(self.dot_git()))
        }

        fn commit(&self, file: &str, content: &str, message: &str) {
            fs::write(self.work.join(file), content).expect("write work file");
            self.git(&["add", file]);
            self.git(&["commit", "-q", "-m", message]);
        }

        fn with_commits(init: &[&str], n: usize) -> Self {
            let fixture = Fixture::new(init);
            for i in 0..n {
                fixture.commit("f.txt", &format!("version {i}\n"), &format!("commit {i}"));
            }
            fixture
        }

        fn rev(&self, what: &str) -> String {
            self.git(&["rev-parse", what])
        }

        fn loose(&self, id: &str) -> PathBuf {
            self.dot_git().join("objects").join(&id[..2]).join(&id[2..])
        }

        /// The single pack's base path (no extension), after a gc or repack.
        fn only_pack(&self) -> PathBuf {
            let dir = self.dot_git().join("objects/pack");
            let idx: Vec<PathBuf> = fs::read_dir(&dir)
                .expect("list packs")
                .map(|e| e.expect("dir entry").path())
                .filter(|p| p.extension().is_some_and(|e| e == "idx"))
                .collect();
            assert_eq!(idx.len(), 1, "expected one pack in {}", dir.display());
            idx[0].with_extension("")
        }

        fn verify_pack(&self) -> Vec<PackLine> {
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

        fn set_head(&self, content: &str) {
            overwrite(&self.dot_git().join("HEAD"), content.as_bytes());
        }
    }

    /// Git makes object files read-only; replace rather than write through.
    fn overwrite(path: &Path, bytes: &[u8]) {
        let _ = fs::remove_file(path);
        fs::write(path, bytes).expect("overwrite");
    }

    fn single_problem(problems: &[String], needles: &[&str]) {
        assert_eq!(problems.len(), 1, "{problems:?}");
        for needle in needles {
            assert!(
                problems[0].contains(needle),
                "{needle:?} not in {problems:?}"
            );
        }
    }

    fn zlib(bytes: &[u8]) -> Vec<u8> {
        let mut z = ZlibEncoder::new(Vec::new(), Compression::default());
        z.write_all(bytes).expect("deflate");
        z.finish().expect("deflate")
    }

    /// An in-memory git dir, so hostile bytes can be tried thousands of times quickly.
    #[derive(Clone, Default)]
    struct MemGitDir(BTreeMap<String, Vec<u8>>);

    impl MemGitDir {
        fn load(root: &Path) -> Self {
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

        fn read_range(
            &self,
            rel: &str,
            offset: u64,
            len: usize,
        ) -> Result<Option<Vec<u8>>, String> {
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
    struct Recording<'g> {
        inner: &'g dyn GitDir,
        whole_reads: RefCell<Vec<String>>,
        largest_range: Cell<usize>,
    }

    impl GitDir for Recording<'_> {
        fn read(&self, rel: &str) -> Result<Option<Vec<u8>>, String> {
            self.whole_reads.borrow_mut().push(rel.to_owned());
            self.inner.read(rel)
        }

        fn read_range(
            &self,
            rel: &str,
            offset: u64,
            len: usize,
        ) -> Result<Option<Vec<u8>>, String> {
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

    fn read_all_pack_objects(fixture: &Fixture, lines: &[PackLine]) {
        let git = DiskGitDir(fixture.dot_git());
        let format = read_config(&git).expect("config");
        let repo = Repo::open(&git, format).expect("open");
        for line in lines {
            let id = ObjectId::from_hex(line.id.as_bytes(), format).expect("id");
            let object = repo
                .read_object(&id)
                .unwrap_or_else(|e| panic!("{} {}: {e}", line.kind, line.id));
            assert_eq!(object.kind.to_string(), line.kind);
        }
    }

    /// Many near-identical commits with long messages, so git deltifies commits too.
    fn deltified_fixture(extra: &[&str]) -> Fixture {
        let fixture = Fixture::new(&[]);
        let body: String = (0..300).map(|i| format!("{i} ")).collect();
        for i in 0..30 {
            let content: String = (0..200).map(|l| format!("line {l}\n")).collect();
            fixture.commit(
                "f.txt",
                &format!("{content}{i}\n"),
                &format!("{body}\ncommit {i}"),
            );
        }
        let mut args = extra.to_vec();
        args.extend_from_slice(&["repack", "-adfq", "--depth=50", "--window=250"]);
        fixture.git(&args);
        fixture
    }

    /// Points HEAD at the deepest deltified commit and returns the pack codes seen on its way.
    fn check_deepest_delta_commit(fixture: &Fixture) -> u8 {
        let lines = fixture.verify_pack();
        let deepest = lines
            .iter()
            .filter(|l| l.kind == "commit")
            .max_by_key(|l| l.depth)
            .expect("commits in pack");
        assert!(deepest.depth > 0, "no deltified commit in the pack");
        fixture.set_head(&format!("{}\n", deepest.id));
        assert_eq!(fixture.check(), Vec::<String>::new());
        read_all_pack_objects(fixture, &lines);

        let git = DiskGitDir(fixture.dot_git());
        let repo = Repo::open(&git, Format::Sha1).expect("open");
        repo.entry_header(0, deepest.offset)
            .expect("entry header")
            .code
    }

    #[test]
    fn fresh_init_is_sane() {
        let fixture = Fixture::new(&[]);
        assert_eq!(fixture.check(), Vec::<String>::new());
    }

    #[test]
    fn loose_commits_are_sane() {
        let fixture = Fixture::with_commits(&[], 3);
        assert!(fixture.loose(&fixture.rev("HEAD")).is_file());
        assert_eq!(fixture.check(), Vec::<String>::new());
    }

    #[test]
    fn detached_head_is_sane() {
        let fixture = Fixture::with_commits(&[], 3);
        fixture.git(&["checkout", "-q", "--detach", "HEAD~1"]);
        let head = fs::read_to_string(fixture.dot_git().join("HEAD")).expect("HEAD");
        assert!(!head.starts_with("ref:"), "{head}");
        assert_eq!(fixture.check(), Vec::<String>::new());
    }

    #[test]
    fn head_through_packed_refs_is_sane() {
        let fixture = Fixture::with_commits(&[], 2);
        fixture.git(&[
            "tag",
            "-a",
            "v1",
            "-m",
            "annotated, so packed-refs gets a ^ line",
        ]);
        fixture.git(&["pack-refs", "--all"]);
        assert!(!fixture.dot_git().join("refs/heads/main").exists());
        let packed =
            fs::read_to_string(fixture.dot_git().join("packed-refs")).expect("packed-refs");
        assert!(packed.lines().any(|l| l.starts_with('^')), "{packed}");
        assert_eq!(fixture.check(), Vec::<String>::new());
    }

    #[test]
    fn nested_symbolic_refs_are_sane() {
        let fixture = Fixture::with_commits(&[], 1);
        fixture.git(&["symbolic-ref", "refs/heads/alias", "refs/heads/main"]);
        fixture.git(&["symbolic-ref", "HEAD", "refs/heads/alias"]);
        assert_eq!(fixture.check(), Vec::<String>::new());
    }

    #[test]
    fn annotated_tag_at_head_is_peeled() {
        let fixture = Fixture::with_commits(&[], 1);
        fixture.git(&["tag", "-a", "v1", "-m", "one"]);
        fixture.git(&["tag", "-a", "v2", "-m", "tag of a tag", "v1"]);
        let tag = fixture.rev("refs/tags/v2");
        assert_ne!(tag, fixture.rev("HEAD"));
        fixture.set_head(&format!("{tag}\n"));
        assert_eq!(fixture.check(), Vec::<String>::new());

        let tree = fixture.rev("HEAD^{tree}");
        fixture.git(&["tag", "-a", "t", "-m", "a tag of a tree", &tree]);
        let tag = fixture.rev("refs/tags/t");
        fixture.set_head(&format!("{tag}\n"));
        let trail = format!("HEAD (detached) -> {tag} -> {tree}: is a tree, not a commit");
        assert_eq!(fixture.check(), vec![trail]);
    }

    #[test]
    fn gc_aggressive_pack_is_sane() {
        let fixture = Fixture::with_commits(&[], 5);
        let head = fixture.rev("HEAD");
        fixture.git(&["gc", "-q", "--aggressive"]);
        assert!(!fixture.loose(&head).exists(), "gc left the commit loose");
        assert_eq!(fixture.check(), Vec::<String>::new());
    }

    #[test]
    fn deltified_commit_resolves_through_ofs_deltas() {
        let fixture = deltified_fixture(&[]);
        assert_eq!(check_deepest_delta_commit(&fixture), 6);
    }

    #[test]
    fn deltified_commit_resolves_through_ref_deltas() {
        let fixture = deltified_fixture(&["-c", "repack.useDeltaBaseOffset=false"]);
        assert_eq!(check_deepest_delta_commit(&fixture), 7);
    }

    #[test]
    fn index_with_64_bit_offsets_is_read() {
        let fixture = Fixture::with_commits(&[], 3);
        fixture.git(&["gc", "-q"]);
        let base = fixture.only_pack();
        let (idx, pack) = (base.with_extension("idx"), base.with_extension("pack"));
        let small = fs::metadata(&idx).expect("idx").len();
        let large = fixture.work.join("large.idx");
        // Offsets above 12 (every entry but the first) go to the 64-bit table; git itself
        // rejects an index where all of them do.
        let args = ["index-pack", "--index-version=2,12", "-o"];
        fixture.git(
            &[
                &args[..],
                &[
                    large.to_str().expect("utf-8"),
                    pack.to_str().expect("utf-8"),
                ],
            ]
            .concat(),
        );
        overwrite(&idx, &fs::read(&large).expect("large idx"));
        let objects = fixture.verify_pack();
        let large_entries = objects.len() as u64 - 1;
        assert_eq!(
            fs::metadata(&idx).expect("idx").len(),
            small + 8 * large_entries
        );
        assert_eq!(fixture.check(), Vec::<String>::new());
        read_all_pack_objects(&fixture, &objects);
    }

    #[test]
    fn sha256_repo_is_sane_loose_and_packed() {
        let fixture = Fixture::with_commits(&["--object-format=sha256"], 3);
        let head = fixture.rev("HEAD");
        assert_eq!(head.len(), 64);
        assert_eq!(fixture.check(), Vec::<String>::new());
        fixture.git(&["gc", "-q", "--aggressive"]);
        assert!(!fixture.loose(&head).exists());
        assert_eq!(fixture.check(), Vec::<String>::new());
        read_all_pack_objects(&fixture, &fixture.verify_pack());
    }

    #[test]
    fn sha256_damaged_commit_is_a_problem() {
        let fixture = Fixture::with_commits(&["--object-format=sha256"], 2);
        let head = fixture.rev("HEAD");
        let tree = fixture.rev("HEAD^{tree}");
        overwrite(
            &fixture.loose(&head),
            &fs::read(fixture.loose(&tree)).expect("tree"),
        );
        single_problem(
            &fixture.check(),
            &[&head, &format!("content hashes to {tree}")],
        );
    }

    #[test]
    fn garbage_loose_commit_is_a_problem() {
        let fixture = Fixture::with_commits(&[], 2);
        let head = fixture.rev("HEAD");
        overwrite(&fixture.loose(&head), b"this is not zlib at all");
        single_problem(
            &fixture.check(),
            &[&format!(
                "HEAD (refs/heads/main) -> {head}: object is corrupt"
            )],
        );
    }

    #[test]
    fn truncated_loose_commit_is_a_problem() {
        let fixture = Fixture::with_commits(&[], 2);
        let head = fixture.rev("HEAD");
        let path = fixture.loose(&head);
        let bytes = fs::read(&path).expect("commit");
        overwrite(&path, &bytes[..bytes.len() / 2]);
        single_problem(&fixture.check(), &[&head, "zlib stream ends early"]);
    }

    #[test]
    fn loose_object_with_another_objects_content_is_a_problem() {
        let fixture = Fixture::with_commits(&[], 2);
        let head = fixture.rev("HEAD");
        let parent = fixture.rev("HEAD~1");
        overwrite(
            &fixture.loose(&head),
            &fs::read(fixture.loose(&parent)).expect("parent"),
        );
        single_problem(
            &fixture.check(),
            &[&head, &format!("content hashes to {parent}")],
        );
    }

    #[test]
    fn missing_tree_is_a_problem() {
        let fixture = Fixture::with_commits(&[], 2);
        let head = fixture.rev("HEAD");
        let tree = fixture.rev("HEAD^{tree}");
        fs::remove_file(fixture.loose(&tree)).expect("rm tree");
        single_problem(
            &fixture.check(),
            &[&format!("{head}: tree {tree}: object is missing")],
        );
    }

    #[test]
    fn missing_commit_is_a_problem() {
        let fixture = Fixture::with_commits(&[], 2);
        let head = fixture.rev("HEAD");
        fs::remove_file(fixture.loose(&head)).expect("rm commit");
        single_problem(&fixture.check(), &[&format!("{head}: object is missing")]);
    }

    #[test]
    fn head_at_a_tree_is_a_problem() {
        let fixture = Fixture::with_commits(&[], 1);
        let tree = fixture.rev("HEAD^{tree}");
        fixture.set_head(&format!("{tree}\n"));
        single_problem(
            &fixture.check(),
            &["HEAD (detached)", "is a tree, not a commit"],
        );
    }

    #[test]
    fn head_naming_a_missing_ref_in_a_repo_with_objects_is_a_problem() {
        let fixture = Fixture::with_commits(&[], 1);
        fixture.git(&["symbolic-ref", "HEAD", "refs/heads/gone"]);
        assert_eq!(
            fixture.check(),
            vec!["HEAD names refs/heads/gone, which does not exist".to_owned()]
        );
    }

    #[test]
    fn garbage_head_is_a_problem() {
        let fixture = Fixture::with_commits(&[], 1);
        overwrite(&fixture.dot_git().join("HEAD"), b"\x00\xffnot a ref\n");
        single_problem(&fixture.check(), &["HEAD is garbled"]);
        fixture.set_head("ref: refs/heads/../../../etc/passwd\n");
        single_problem(&fixture.check(), &["an invalid ref"]);
        fs::remove_file(fixture.dot_git().join("HEAD")).expect("rm HEAD");
        assert_eq!(fixture.check(), vec!["HEAD is missing".to_owned()]);
    }

    #[test]
    fn symbolic_ref_loop_is_a_problem() {
        let fixture = Fixture::with_commits(&[], 1);
        let heads = fixture.dot_git().join("refs/heads");
        fs::write(heads.join("a"), "ref: refs/heads/b\n").expect("a");
        fs::write(heads.join("b"), "ref: refs/heads/a\n").expect("b");
        fixture.set_head("ref: refs/heads/a\n");
        single_problem(&fixture.check(), &["nest deeper than 5"]);
    }

    #[test]
    fn object_only_in_an_alternate_is_a_problem() {
        let source = Fixture::with_commits(&[], 2);
        let shared = source.home.join("shared");
        let args = [
            "clone",
            "-q",
            "--shared",
            source.work.to_str().expect("utf-8"),
        ];
        source.run_in(
            &source.home,
            &[&args[..], &[shared.to_str().expect("utf-8")]].concat(),
        );
        let problems = check_repo(&DiskGitDir(shared.join(".git")));
        single_problem(&problems, &[&source.rev("HEAD"), "alternate object store"]);
    }

    #[test]
    fn unknown_config_extensions_are_problems() {
        let fixture = Fixture::with_commits(&[], 1);
        let config = fixture.dot_git().join("config");
        overwrite(
            &config,
            b"[core]\n\trepositoryformatversion = 1\n[extensions] objectFormat = sha3\n",
        );
        single_problem(
            &fixture.check(),
            &["unknown extensions.objectformat \"sha3\""],
        );
        overwrite(&config, b"[extensions]\n\trefStorage = reftable\n");
        single_problem(&fixture.check(), &["refstorage", "not supported"]);
    }

    #[test]
    fn flipping_any_byte_of_the_commits_pack_entry_is_a_problem() {
        let fixture = Fixture::with_commits(&[], 2);
        fixture.git(&["gc", "-q"]);
        let head = fixture.rev("HEAD");
        let entry = fixture
            .verify_pack()
            .into_iter()
            .find(|l| l.id == head)
            .expect("commit in pack");
        let pack = fixture.only_pack().with_extension("pack");
        let pristine = fs::read(&pack).expect("pack");
        let mem = MemGitDir::load(&fixture.dot_git());
        let rel =
            "objects/pack/".to_owned() + pack.file_name().and_then(|n| n.to_str()).expect("name");
        let end = entry.offset + entry.size_in_pack;
        // The last deflate byte (before the 4-byte adler32) may end in padding bits that zlib,
        // and so git, ignores: a flip there can leave the object intact.
        let padding = end - 5;
        for at in (entry.offset..end).filter(|&at| at != padding) {
            let mut damaged = mem.clone();
            let mut bytes = pristine.clone();
            bytes[at as usize] ^= 0x04;
            damaged.0.insert(rel.clone(), bytes);
            let problems = check_repo(&damaged);
            assert_eq!(problems.len(), 1, "flip at {at} went unnoticed");
            assert!(problems[0].contains(&head), "{problems:?}");
        }
        // And once through the disk implementation.
        let mut bytes = pristine;
        bytes[(entry.offset + entry.size_in_pack / 2) as usize] ^= 0x10;
        overwrite(&pack, &bytes);
        single_problem(&fixture.check(), &[&head, "object is corrupt"]);
    }

    #[test]
    fn hostile_pack_and_index_bytes_never_panic() {
        let fixture = Fixture::with_commits(&[], 2);
        fixture.git(&["gc", "-q"]);
        let base = fixture.only_pack();
        let name = base
            .file_name()
            .and_then(|n| n.to_str())
            .expect("name")
            .to_owned();
        let mem = MemGitDir::load(&fixture.dot_git());
        assert_eq!(check_repo(&mem), Vec::<String>::new());
        let needed = [fixture.rev("HEAD"), fixture.rev("HEAD^{tree}")];
        let needed_end = fixture
            .verify_pack()
            .iter()
            .filter(|l| needed.contains(&l.id))
            .map(|l| l.offset + l.size_in_pack)
            .max()
            .expect("commit and tree in pack");
        for ext in ["pack", "idx"] {
            let rel = format!("objects/pack/{name}.{ext}");
            let pristine = mem.0[&rel].clone();
            for at in 0..pristine.len() {
                for flip in [0x01, 0x80, 0xff] {
                    let mut damaged = mem.clone();
                    damaged.0.get_mut(&rel).expect("file")[at] ^= flip;
                    let _ = check_repo(&damaged);
                }
            }
            for len in 0..pristine.len() {
                let mut damaged = mem.clone();
                damaged.0.get_mut(&rel).expect("file").truncate(len);
                let problems = check_repo(&damaged);
                // An idx shorter than its entries need is refused; a pack only when it loses
                // part of an entry the check reads (trailing checksums are not verified).
                if ext == "idx" || (len as u64) < needed_end {
                    assert_eq!(problems.len(), 1, "{ext} truncated to {len} went unnoticed");
                }
            }
        }
    }

    #[test]
    fn good_loose_copy_outweighs_a_bad_packed_one() {
        let fixture = Fixture::with_commits(&[], 2);
        let head = fixture.rev("HEAD");
        let loose = fs::read(fixture.loose(&head)).expect("loose commit");
        fixture.git(&["gc", "-q"]);
        let entry = fixture
            .verify_pack()
            .into_iter()
            .find(|l| l.id == head)
            .expect("packed");
        let pack = fixture.only_pack().with_extension("pack");
        let mut bytes = fs::read(&pack).expect("pack");
        bytes[(entry.offset + 3) as usize] ^= 0xff;
        overwrite(&pack, &bytes);
        single_problem(&fixture.check(), &[&head]);
        fs::create_dir_all(fixture.loose(&head).parent().expect("fanout dir")).expect("mkdir");
        fs::write(fixture.loose(&head), loose).expect("restore loose");
        assert_eq!(fixture.check(), Vec::<String>::new());
    }

    #[test]
    fn bare_repo_is_sane() {
        let source = Fixture::with_commits(&[], 2);
        let bare = source.home.join("bare.git");
        let args = [
            "clone",
            "-q",
            "--bare",
            source.work.to_str().expect("utf-8"),
        ];
        source.run_in(
            &source.home,
            &[&args[..], &[bare.to_str().expect("utf-8")]].concat(),
        );
        assert_eq!(check_repo(&DiskGitDir(bare)), Vec::<String>::new());
    }

    /// A one-entry pack (and its index) holding `entry` at offset 12 under the id `id`.
    fn one_entry_pack(id: &str, entry: &[u8]) -> MemGitDir {
        let raw = hex::decode(id).expect("hex id");
        let mut pack = b"PACK\0\0\0\x02\0\0\0\x01".to_vec();
        pack.extend_from_slice(entry);
        pack.extend_from_slice(&[0; 20]);
        let mut idx = b"\xfftOc\0\0\0\x02".to_vec();
        for bucket in 0..256 {
            idx.extend_from_slice(&u32::from(bucket >= raw[0] as usize).to_be_bytes());
        }
        idx.extend_from_slice(&raw);
        idx.extend_from_slice(&[0; 4]); // crc32, never checked
        idx.extend_from_slice(&12u32.to_be_bytes());
        idx.extend_from_slice(&[0; 40]);
        let mut repo = MemGitDir::default();
        repo.0.insert("HEAD".into(), format!("{id}\n").into_bytes());
        repo.0.insert("objects/pack/pack-1.pack".into(), pack);
        repo.0.insert("objects/pack/pack-1.idx".into(), idx);
        repo
    }

    #[test]
    fn hand_made_pack_entries_are_read_and_hostile_ones_refused() {
        let commit = b"tree 4b825dc642cb6eb9a060e54bf8d69288fbbe0000\n\nx\n";
        let id = Format::Sha1.hash(Kind::Commit, commit).to_string();
        let mut entry = vec![
            0x90 | (commit.len() as u8 & 0x0f),
            (commit.len() >> 4) as u8,
        ];
        entry.extend_from_slice(&zlib(commit));
        // The commit reads; its (made-up) tree is then missing.
        single_problem(
            &check_repo(&one_entry_pack(&id, &entry)),
            &[&id, "tree 4b825dc6"],
        );

        // Entry sizes are inflated sizes: 4 here, which fits the first header byte.
        let raw_delta = delta(1, 1, &[1, b'x']);
        let delta_bytes = zlib(&raw_delta);
        // A REF_DELTA whose base is itself: the chain is cut at 64.
        let mut entry = vec![0x70 | raw_delta.len() as u8];
        entry.extend_from_slice(&hex::decode(&id).expect("hex"));
        entry.extend_from_slice(&delta_bytes);
        let problems = check_repo(&one_entry_pack(&id, &entry));
        single_problem(&problems, &[&id, "delta chain is longer than 64"]);

        // An OFS_DELTA reaching back before the pack header.
        let mut entry = vec![0x60 | raw_delta.len() as u8, 0x7f];
        entry.extend_from_slice(&delta_bytes);
        let problems = check_repo(&one_entry_pack(&id, &entry));
        single_problem(
            &problems,
            &[&id, "delta base offset points outside the pack"],
        );

        // An endless size varint, and an unknown type.
        let problems = check_repo(&one_entry_pack(&id, &[0xff; 40]));
        single_problem(&problems, &[&id, "entry size is garbled"]);
        let problems = check_repo(&one_entry_pack(&id, &[0x53, 0, 0, 0]));
        single_problem(&problems, &[&id, "unknown entry type 5"]);
    }

    #[test]
    fn hostile_loose_objects_are_problems() {
        let id = "0123456789abcdef0123456789abcdef01234567";
        let loose = format!("objects/{}/{}", &id[..2], &id[2..]);
        let mut repo = MemGitDir::default();
        repo.0.insert("HEAD".into(), format!("{id}\n").into_bytes());
        let cases: [(&[u8], &str); 8] = [
            (b"commit 3\0abc", "content hashes to"),
            (b"commit 2\0abc", "inflates past its declared 2 bytes"),
            (
                b"commit 200000000\0abc",
                "inflates to 3 bytes, 200000000 declared",
            ),
            (b"commit 268435457\0abc", "header is garbled"),
            (b"commit 99999999999999999999\0", "header is garbled"),
            (b"commit -1\0", "header is garbled"),
            (b"sock 3\0abc", "header is garbled"),
            (
                b"commit 3 no nul at all, just text that goes on",
                "header is garbled",
            ),
        ];
        for (plain, expect) in cases {
            repo.0.insert(loose.clone(), zlib(plain));
            single_problem(&check_repo(&repo), &[id, expect]);
        }
        // A stream with junk after a valid start, and an empty file.
        let mut junk = zlib(b"commit 3\0abc");
        junk.truncate(junk.len() - 6);
        junk.extend_from_slice(&[0xff; 6]);
        repo.0.insert(loose.clone(), junk);
        single_problem(&check_repo(&repo), &[id, "object is corrupt"]);
        repo.0.insert(loose.clone(), Vec::new());
        single_problem(&check_repo(&repo), &[id, "zlib stream ends early"]);

        // Every single-byte flip and truncation of a real loose commit: a problem or a pass,
        // never a panic.
        let fixture = Fixture::with_commits(&[], 1);
        let head = fixture.rev("HEAD");
        let mem = MemGitDir::load(&fixture.dot_git());
        let rel = format!("objects/{}/{}", &head[..2], &head[2..]);
        let pristine = mem.0[&rel].clone();
        for at in 0..pristine.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut damaged = mem.clone();
                damaged.0.get_mut(&rel).expect("object")[at] ^= flip;
                let _ = check_repo(&damaged);
            }
            let mut damaged = mem.clone();
            damaged.0.get_mut(&rel).expect("object").truncate(at);
            single_problem(&check_repo(&damaged), &[&head]);
        }
    }

    #[test]
    fn packs_are_read_by_bounded_ranges_only() {
        let fixture = deltified_fixture(&[]);
        let disk = DiskGitDir(fixture.dot_git());
        let recording = Recording {
            inner: &disk,
            whole_reads: RefCell::new(Vec::new()),
            largest_range: Cell::new(0),
        };
        assert_eq!(check_repo(&recording), Vec::<String>::new());
        let whole = recording.whole_reads.borrow();
        assert!(
            whole
                .iter()
                .all(|rel| !rel.ends_with(".pack") && !rel.ends_with(".idx")),
            "{whole:?}"
        );
        assert!(recording.largest_range.get() <= MAX_PACK_WINDOW_BYTES);
    }

    #[test]
    fn disk_git_dir_refuses_paths_that_escape() {
        let fixture = Fixture::new(&[]);
        let git = DiskGitDir(fixture.dot_git());
        assert!(git.read("../HEAD").is_err());
        assert!(git.size("/etc/passwd").is_err());
        assert_eq!(git.read("no/such/file"), Ok(None));
        assert_eq!(git.read_range("HEAD/x", 0, 10), Ok(None));
        assert_eq!(git.list("no/such/dir"), Ok(Vec::new()));
        assert_eq!(git.size("objects"), Ok(None));
        assert_eq!(
            git.read_range("HEAD", 5, 1000),
            Ok(Some(b"refs/heads/main\n".to_vec()))
        );
    }

    /// A delta: source and target sizes, then raw instruction bytes.
    fn delta(src: usize, dst: usize, ops: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for mut n in [src, dst] {
            loop {
                let low = (n & 0x7f) as u8;
                n >>= 7;
                if n == 0 {
                    out.push(low);
                    break;
                }
                out.push(low | 0x80);
            }
        }
        out.extend_from_slice(ops);
        out
    }

    #[test]
    fn delta_copies_and_inserts() {
        let base = b"hello world";
        // copy offset 6 size 5, insert ", ", copy offset 0 size 5.
        let ops = [0x91, 6, 5, 2, b',', b' ', 0x90, 5];
        assert_eq!(
            apply_delta(base, &delta(11, 12, &ops)),
            Ok(b"world, hello".to_vec())
        );
    }

    #[test]
    fn delta_copy_of_size_zero_means_64_kib_and_offsets_use_four_bytes() {
        let base: Vec<u8> = (0..0x20000u32).map(|i| (i % 251) as u8).collect();
        let whole = apply_delta(&base, &delta(base.len(), 0x10000, &[0x80])).expect("copy");
        assert_eq!(whole, base[..0x10000]);
        // offset 0x010203 spelled with bytes 0..2, size 4.
        let ops = [0x97, 0x03, 0x02, 0x01, 4];
        let got = apply_delta(&base, &delta(base.len(), 4, &ops)).expect("copy");
        assert_eq!(got, base[0x010203..0x010207]);
    }

    #[test]
    fn delta_rejects_hostile_instructions() {
        let base = b"0123456789";
        let cases: [(Vec<u8>, &str); 9] = [
            (delta(9, 1, &[1, b'x']), "expects a 9-byte base"),
            (delta(10, 4, &[0x91, 8, 4]), "copies from outside its base"),
            (delta(10, 3, &[5, b'a']), "insert runs past its end"),
            (delta(10, 1, &[0]), "reserved opcode 0"),
            (
                delta(10, 1, &[2, b'a', b'b']),
                "more than its declared 1 bytes",
            ),
            (delta(10, 3, &[1, b'a']), "builds 1 bytes, 3 declared"),
            (delta(10, 2, &[0x91, 2]), "copy instruction is truncated"),
            (vec![0x80, 0x80], "header is truncated"),
            (delta(10, MAX_OBJECT_BYTES + 1, &[]), "over the cap"),
        ];
        for (bytes, expect) in cases {
            let err = apply_delta(base, &bytes).expect_err(expect);
            assert!(err.contains(expect), "{expect:?} not in {err:?}");
        }
        let endless = [0xffu8; 20];
        assert!(apply_delta(base, &endless).is_err());
    }
}
