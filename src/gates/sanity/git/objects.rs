//! The object store: loose objects, version 2 pack indexes and pack entries, inflated with
//! bounded output and with their deltas applied. Which objects to read, and what they must be,
//! is decided by the caller.

use flate2::{Decompress, FlushDecompress, Status};

use super::{
    snippet, Format, GitDir, Kind, ObjError, Object, ObjectId, ENTRY_HEADER_MAX_BYTES,
    IDX_BUCKET_READ_BYTES, IDX_HEADER_BYTES, INFLATE_STEP_BYTES, LOOSE_HEADER_MAX_BYTES,
    MAX_DELTA_DEPTH, MAX_LOOSE_FILE_BYTES, MAX_OBJECT_BYTES, MAX_PACKS, MAX_PACK_WINDOW_BYTES,
    PACK_HEADER_BYTES, PACK_WINDOW_BYTES,
};

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
pub(super) struct Entry {
    pack: usize,
    offset: u64,
    /// The pack type code (1–4 whole objects, 6 and 7 deltas).
    pub(super) code: u8,
    /// Inflated size of the entry's data (the object, or the delta).
    size: usize,
    /// Where the zlib stream starts.
    data_at: u64,
    base: Option<BaseRef>,
}

/// The object store of one repository, as [`check_repo`](super::check_repo) sees it.
pub(super) struct Repo<'a> {
    git: &'a dyn GitDir,
    format: Format,
    /// `objects/pack/pack-…` without extension, one per `.idx`.
    packs: Vec<String>,
}

impl<'a> Repo<'a> {
    pub(super) fn open(git: &'a dyn GitDir, format: Format) -> Result<Self, String> {
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

    pub(super) fn has_any_objects(&self) -> Result<bool, String> {
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
    pub(super) fn read_object(&self, id: &ObjectId) -> Result<Object, ObjError> {
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

    pub(super) fn entry_header(&self, pack: usize, offset: u64) -> Result<Entry, ObjError> {
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
pub(super) fn apply_delta(base: &[u8], delta: &[u8]) -> Result<Vec<u8>, String> {
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
