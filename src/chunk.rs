//! Content-defined chunking of a byte stream: FastCDC (2020) for binary data, and a line-aligned
//! variant for text such as SQL dumps.
//!
//! [`Chunker`] reads through a reusable buffer and hands out each chunk as a slice of it, so
//! chunking allocates nothing per chunk and memory stays at one buffer per worker whatever the
//! file size. A chunk that touches the end of the buffer before the end of the stream is carried
//! over and cut again with more data, so the cut points are exactly those of the algorithm over
//! the whole stream.
//!
//! **Profiles.** A vault may chunk by kind of content ([`Chunking`]): the first buffer of each
//! stream decides, once, which parameters cut it:
//! - *text* (no NUL byte in the first 8 KiB, as git decides): [`LINES`], cut only at line ends, so
//!   one changed row of a dump changes one chunk and the cuts resynchronise on the next line. A
//!   line end is a cut when a keyed hash of the whole line falls under a threshold proportional
//!   to the line's length, so the chance is the same per byte whatever the line lengths, and the
//!   decision depends on the line alone. FastCDC's 64-byte gear window cannot do that on dumps
//!   whose rows end in long runs of padding (pgbench's `filler`): there its hash is the same at
//!   every row, cut points are rare and a fifth of the chunks end at the maximum size, which cuts
//!   at a position rather than at content and spreads one change over the chunks that follow.
//!   A text stream of at most `whole_max_size` bytes (128 KiB by default) is one chunk: a source
//!   file compresses better whole than in 32 KiB pieces, and costs one blob instead of several.
//! - *SQLite databases* (the `SQLite format 3` header) keep the base FastCDC parameters, small
//!   enough that a few changed pages change a few chunks;
//! - *other binary data*: FastCDC with larger chunks, which compress better and cost less
//!   per-chunk overhead; binaries rarely change in place.
//!
//! README.md's "Chunk size" section has the measurements behind each default.

use std::io::{self, Read};

use fastcdc::v2020::{FastCDC, Normalization};

use crate::config::{ChunkerParams, Chunking, FASTCDC, LINES};

/// Read buffer per chunker; at least twice the maximum chunk so a carried chunk always fits.
const READ_BUFFER_BYTES: usize = 8 * 1024 * 1024;

/// How many leading bytes decide whether a stream is text.
const SNIFF_BYTES: usize = 8000;

/// The first bytes of every SQLite 3 database file.
const SQLITE_MAGIC: &[u8] = b"SQLite format 3\0";

/// A reader that may know, without reading, that the bytes ahead are zeros: a sparse file's
/// hole ([`crate::sparse::SparseReader`]). The chunker then cuts the chunks that lie wholly in
/// such a run without having the zeros written into its buffer and scanned.
pub trait HoleRead: Read {
    /// How many of the bytes from the current position on are known to be zeros (0: none known).
    fn zeros_ahead(&mut self) -> io::Result<u64>;
    /// Moves the position past `n` of those zeros, `n <= zeros_ahead()`.
    fn skip_zeros(&mut self, n: u64);
}

/// A reader that knows of no zeros ahead.
struct NoHoles<R>(R);

impl<R: Read> Read for NoHoles<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl<R: Read> HoleRead for NoHoles<R> {
    fn zeros_ahead(&mut self) -> io::Result<u64> {
        Ok(0)
    }
    fn skip_zeros(&mut self, _: u64) {}
}

/// True when `data` looks like text: no NUL byte in its first 8 KiB (as git decides).
pub fn looks_like_text(data: &[u8]) -> bool {
    memchr::memchr(0, &data[..data.len().min(SNIFF_BYTES)]).is_none()
}

/// Which parameters a stream was cut with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The base parameters: every stream of a vault without profiles, SQLite databases otherwise.
    Base,
    Text,
    Binary,
}

/// A chunker with its own read buffer.
pub struct Chunker {
    chunking: Chunking,
    /// Gear-table and line-hash seed (0: FastCDC's published table); keyed in an encrypted vault
    /// so that chunk boundaries do not reveal content.
    seed: u64,
    buf: Vec<u8>,
    kind: Kind,
    /// Per kind, the length of the chunk the algorithm cuts from `max_size` zero bytes.
    zero_cut: [Option<usize>; 3],
    /// Zeros handed out for the chunks cut in a reader's holes (allocated zeroed, so untouched
    /// pages cost no memory).
    zeros: Vec<u8>,
}

impl Chunker {
    /// A chunker cutting everything with `params`, which must have passed
    /// [`ChunkerParams::validate`].
    pub fn new(params: ChunkerParams, seed: u64) -> Self {
        Chunker::with_profiles(Chunking::from(params), seed)
    }

    /// A chunker choosing its parameters per stream by kind of content (see the module docs).
    pub fn with_profiles(chunking: Chunking, seed: u64) -> Self {
        let largest = [
            Some(&chunking.base),
            chunking.text.as_ref(),
            chunking.binary.as_ref(),
        ]
        .into_iter()
        .flatten()
        .map(|p| p.max_size.max(p.whole_max_size) as usize)
        .max()
        .unwrap_or(0);
        Chunker {
            chunking,
            seed,
            buf: vec![0u8; READ_BUFFER_BYTES.max(2 * largest)],
            kind: Kind::Base,
            zero_cut: [None; 3],
            zeros: Vec::new(),
        }
    }

    /// The base parameters.
    pub fn params(&self) -> &ChunkerParams {
        &self.chunking.base
    }

    /// The kind of the last stream run through this chunker.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    fn classify(&self, head: &[u8]) -> Kind {
        let head = &head[..head.len().min(SNIFF_BYTES)];
        if head.starts_with(SQLITE_MAGIC) {
            Kind::Base
        } else if looks_like_text(head) {
            self.chunking
                .text
                .as_ref()
                .map_or(Kind::Base, |_| Kind::Text)
        } else {
            self.chunking
                .binary
                .as_ref()
                .map_or(Kind::Base, |_| Kind::Binary)
        }
    }

    /// The length of the chunk `kind`'s algorithm cuts from `max_size` zero bytes.
    fn zero_cut(&mut self, kind: Kind) -> usize {
        let slot = kind as usize;
        if let Some(n) = self.zero_cut[slot] {
            return n;
        }
        let p = self.params_of(kind);
        let zeros = vec![0u8; p.max_size as usize];
        let n = if p.algorithm == LINES {
            line_cut(&zeros, p, self.seed)
        } else {
            fastcdc(&zeros, p, self.seed).cut(0, zeros.len()).1
        };
        self.zero_cut[slot] = Some(n);
        n
    }

    fn params_of(&self, kind: Kind) -> &ChunkerParams {
        match kind {
            Kind::Text => self.chunking.text.as_ref(),
            Kind::Binary => self.chunking.binary.as_ref(),
            Kind::Base => None,
        }
        .unwrap_or(&self.chunking.base)
    }

    /// Cuts `reader` into chunks and calls `on_chunk` with each, in order. Returns the byte count.
    ///
    /// `on_chunk` errors stop the run and are returned as they are.
    pub fn run<R: Read, E: From<io::Error>>(
        &mut self,
        reader: R,
        mut on_chunk: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<u64, E> {
        self.run_marked(reader, |data, _| on_chunk(data))
    }

    /// [`Chunker::run`], telling `on_chunk` whether the chunk is all zero bytes (a hole in a
    /// sparse file, a zeroed region of a disk image), so that its id can be computed once.
    ///
    /// A chunk that starts `max_size` zero bytes before anything else is cut without running the
    /// algorithm: its cut depends on those bytes alone, so it is the cut the algorithm makes in
    /// `max_size` zeros, found once per kind. A 20 GiB mostly sparse file is then read at the
    /// speed of a scan for non-zero bytes instead of the chunker's and the hash's.
    pub fn run_marked<R: Read, E: From<io::Error>>(
        &mut self,
        reader: R,
        on_chunk: impl FnMut(&[u8], bool) -> Result<(), E>,
    ) -> Result<u64, E> {
        self.run_holes(NoHoles(reader), on_chunk)
    }

    /// [`Chunker::run_marked`] over a reader that may know of runs of zeros ahead: a chunk that
    /// starts `max_size` zeros before anything else (counting those already in the buffer) is
    /// cut as [`Chunker::run_marked`] cuts it, without the zeros being read, filled in or scanned.
    pub fn run_holes<R: HoleRead, E: From<io::Error>>(
        &mut self,
        mut reader: R,
        mut on_chunk: impl FnMut(&[u8], bool) -> Result<(), E>,
    ) -> Result<u64, E> {
        let mut filled = 0usize;
        let mut total = 0u64;
        let mut eof = false;
        let mut first = true;
        loop {
            while !eof && filled < self.buf.len() {
                match reader.read(&mut self.buf[filled..]) {
                    Ok(0) => eof = true,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e.into()),
                }
            }
            if first {
                self.kind = self.classify(&self.buf[..filled]);
                first = false;
            }
            if filled == 0 {
                return Ok(total);
            }
            let p = self.params_of(self.kind).clone();
            if eof && total == 0 && filled <= p.whole_max_size as usize {
                // The whole stream is in view and short enough to be one chunk.
                let data = &self.buf[..filled];
                on_chunk(data, all_zero(data))?;
                return Ok(filled as u64);
            }
            let zero_len = self.zero_cut(self.kind);
            let max = p.max_size as usize;
            let data = &self.buf[..filled];
            let cdc = (p.algorithm != LINES).then(|| {
                debug_assert_eq!(p.algorithm, FASTCDC);
                fastcdc(data, &p, self.seed)
            });
            let mut at = 0usize;
            while at < filled {
                let zero = filled - at >= max && all_zero(&data[at..at + max]);
                let n = if zero {
                    zero_len
                } else if let Some(cdc) = &cdc {
                    cdc.cut(at, filled - at).1 - at
                } else {
                    line_cut(&data[at..], &p, self.seed)
                };
                let end = at + n;
                if end == filled && !eof && n < max {
                    // Cut only because the buffer ended: carry it over. (With `max_size` bytes
                    // in view either algorithm's cut is final: it looks at no more than that.)
                    break;
                }
                on_chunk(&data[at..end], zero || all_zero(&data[at..end]))?;
                at = end;
            }
            let consumed = at;
            total += consumed as u64;
            if eof && consumed == filled {
                return Ok(total);
            }
            self.buf.copy_within(consumed..filled, 0);
            filled -= consumed;
            // The next chunk starts at the carried-over bytes: when they are zeros and the reader
            // knows of enough zeros after them, cut the chunks that lie in zeros here.
            let mut ahead = reader.zeros_ahead()?;
            if ahead == 0 || (filled as u64).saturating_add(ahead) < max as u64 {
                continue;
            }
            if !all_zero(&self.buf[..filled]) {
                continue;
            }
            if self.zeros.len() < zero_len {
                self.zeros = vec![0u8; zero_len];
            }
            while (filled as u64).saturating_add(ahead) >= max as u64 {
                on_chunk(&self.zeros[..zero_len], true)?;
                let from_buf = zero_len.min(filled);
                let from_hole = (zero_len - from_buf) as u64;
                self.buf.copy_within(from_buf..filled, 0);
                filled -= from_buf;
                reader.skip_zeros(from_hole);
                ahead -= from_hole;
                total += zero_len as u64;
            }
        }
    }
}

/// FastCDC (2020, normalisation level 1) over `data` with `p`'s sizes and gear seed `seed`.
fn fastcdc<'d>(data: &'d [u8], p: &ChunkerParams, seed: u64) -> FastCDC<'d> {
    FastCDC::with_level_and_seed(
        data,
        p.min_size,
        p.avg_size,
        p.max_size,
        Normalization::Level1,
        seed,
    )
}

/// Whether `data` is all zero bytes (ORs 64-byte blocks, which the compiler vectorises).
pub fn all_zero(data: &[u8]) -> bool {
    let mut blocks = data.chunks_exact(64);
    blocks.all(|b| b.iter().fold(0u8, |acc, &x| acc | x) == 0)
        && blocks.remainder().iter().all(|&x| x == 0)
}

/// The length of the next chunk of `data` (which starts where the last chunk ended) under the
/// line-aligned algorithm: the first line end past `min_size` whose line hashes under
/// `len(line) / (avg_size - min_size)` of the hash range; at `max_size` without one, the last line
/// end before it, or `max_size` itself in a line that long. Returns `data.len()` when no cut is
/// found in it (the end of the stream, or a carry-over at the end of the buffer).
pub fn line_cut(data: &[u8], p: &ChunkerParams, seed: u64) -> usize {
    let (min, avg, max) = (
        p.min_size as usize,
        p.avg_size as usize,
        p.max_size as usize,
    );
    if data.len() <= min {
        return data.len();
    }
    let limit = data.len().min(max);
    let span = (avg - min).max(1) as u128;
    // The line holding the first candidate end starts at or after the chunk: a line that began
    // in the last chunk (only after a cut at max_size) is hashed from the chunk's start.
    let mut line_start = memchr::memrchr(b'\n', &data[..min]).map_or(0, |i| i + 1);
    let mut last_end = None;
    for i in memchr::memchr_iter(b'\n', &data[min..limit]) {
        let end = min + i + 1;
        let line = &data[line_start..end];
        let h = xxhash_rust::xxh3::xxh3_64_with_seed(line, seed);
        if (u128::from(h) * span) >> 64 < line.len() as u128 {
            return end;
        }
        last_end = Some(end);
        line_start = end;
    }
    if data.len() >= max {
        last_end.unwrap_or(max)
    } else {
        data.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn small() -> ChunkerParams {
        ChunkerParams {
            algorithm: "fastcdc-2020".into(),
            min_size: 64,
            avg_size: 256,
            max_size: 1024,
            whole_max_size: 0,
        }
    }

    /// A reader that returns at most `step` bytes per call, to exercise buffer carry-over.
    struct Trickle<'a>(&'a [u8], usize);
    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.0.len().min(self.1).min(out.len());
            out[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    /// [`Trickle`] that reports the run of zeros ahead of it, or `share`/4 of it (rounded down),
    /// as a sparse file reports its holes.
    struct HoleTrickle<'a>(Trickle<'a>, u64);
    impl Read for HoleTrickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            self.0.read(out)
        }
    }
    impl HoleRead for HoleTrickle<'_> {
        fn zeros_ahead(&mut self) -> io::Result<u64> {
            let run = self.0 .0.iter().take_while(|&&b| b == 0).count() as u64;
            Ok(run * self.1 / 4)
        }
        fn skip_zeros(&mut self, n: u64) {
            assert!(
                self.0 .0[..n as usize].iter().all(|&b| b == 0),
                "skipped data"
            );
            self.0 .0 = &self.0 .0[n as usize..];
        }
    }

    /// Cuts `data` read `step` bytes at a time, reporting `share`/4 of each zero run ahead as a
    /// hole; checks the flags and the bytes, and returns the chunk lengths.
    fn hole_cuts(c: &mut Chunker, data: &[u8], step: usize, share: u64) -> Vec<usize> {
        let mut got = Vec::new();
        let mut joined = Vec::new();
        let n = c
            .run_holes::<_, io::Error>(HoleTrickle(Trickle(data, step), share), |ch, zero| {
                assert_eq!(zero, ch.iter().all(|&b| b == 0), "all-zero flag");
                got.push(ch.len());
                joined.extend_from_slice(ch);
                Ok(())
            })
            .unwrap();
        assert_eq!(n as usize, data.len());
        assert!(joined == data, "the chunks do not join to the input");
        got
    }

    #[test]
    fn a_keyed_gear_table_moves_the_cut_points() {
        let mut x = 12345u64;
        let data: Vec<u8> = (0..200_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let cuts = |seed: u64| {
            let mut c = Chunker::new(small(), seed);
            let mut lens = Vec::new();
            c.run::<_, io::Error>(data.as_slice(), |ch| {
                lens.push(ch.len());
                Ok(())
            })
            .unwrap();
            lens
        };
        assert_eq!(cuts(0), cuts(0));
        assert_ne!(cuts(0), cuts(0x1234_5678_9abc_def0));
        assert_ne!(cuts(7), cuts(8));
    }

    fn lines() -> ChunkerParams {
        ChunkerParams {
            algorithm: LINES.into(),
            min_size: 256,
            avg_size: 2048,
            max_size: 8192,
            whole_max_size: 0,
        }
    }

    /// `rows` lines like a pgbench dump's: a key, two numbers and 84 spaces of padding.
    fn dump(rows: std::ops::Range<u32>, changed: Option<u32>) -> Vec<u8> {
        let mut out = Vec::new();
        for r in rows {
            let balance = if Some(r) == changed { 4242 } else { 0 };
            out.extend_from_slice(format!("{r}\t{}\t{balance}\t{:84}\n", r / 100, "").as_bytes());
        }
        out
    }

    fn cut_all(c: &mut Chunker, data: &[u8]) -> Vec<Vec<u8>> {
        cut_all_by(c, data, data.len().max(1))
    }

    /// [`cut_all`] through a reader that returns at most `step` bytes a call.
    fn cut_all_by(c: &mut Chunker, data: &[u8], step: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        c.run::<_, io::Error>(Trickle(data, step), |ch| {
            out.push(ch.to_vec());
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn the_first_bytes_choose_the_profile() {
        let mut c = Chunker::with_profiles(Chunking::default(), 9);
        cut_all(&mut c, b"CREATE TABLE t (a int);\n");
        assert_eq!(c.kind(), Kind::Text);
        cut_all(&mut c, b"\x7fELF\x02\x01\x01\x00\x00");
        assert_eq!(c.kind(), Kind::Binary);
        cut_all(&mut c, b"SQLite format 3\x00\x10\x00");
        assert_eq!(c.kind(), Kind::Base);
        // A NUL past the sniffed head does not make a text file binary.
        let mut late = vec![b'a'; SNIFF_BYTES];
        late.push(0);
        cut_all(&mut c, &late);
        assert_eq!(c.kind(), Kind::Text);
        // Without profiles everything is cut with the base parameters.
        let mut plain = Chunker::new(ChunkerParams::default(), 9);
        cut_all(&mut plain, b"CREATE TABLE t (a int);\n");
        assert_eq!(plain.kind(), Kind::Base);
    }

    #[test]
    fn a_text_stream_up_to_whole_max_size_is_one_chunk_and_a_longer_one_is_cut() {
        let chunking = Chunking::default();
        let text = chunking.text.clone().unwrap();
        let whole = text.whole_max_size as usize;
        assert!(whole >= 2 * text.min_size as usize);
        let rows = dump(0..100_000, None);
        let cut_at = rows[..whole].iter().rposition(|&b| b == b'\n').unwrap() + 1;
        let mut c = Chunker::with_profiles(chunking, 9);
        // Exactly at the limit, and under it, one chunk; read a little at a time or at once.
        for len in [whole, cut_at, 100] {
            let data = &rows[..len];
            for step in [4096, len] {
                let chunks = cut_all_by(&mut c, data, step);
                assert_eq!(
                    chunks,
                    vec![data.to_vec()],
                    "{len} bytes read {step} at a time"
                );
                assert_eq!(c.kind(), Kind::Text);
            }
        }
        // One byte more and the line chunker cuts it, within its sizes.
        let data = &rows[..whole + 1];
        let chunks = cut_all_by(&mut c, data, 4096);
        assert!(chunks.len() > 1, "{} chunks", chunks.len());
        assert_eq!(chunks.concat(), data);
        assert!(chunks.iter().all(|ch| ch.len() <= text.max_size as usize));
        // Binary data has no such limit by default: FastCDC cuts it as before (small binary
        // sizes here, so that a stream this long is several chunks).
        let binary = ChunkerParams {
            min_size: 4096,
            avg_size: 16384,
            max_size: 65536,
            ..ChunkerParams::binary_default()
        };
        let mut c = Chunker::with_profiles(
            Chunking {
                binary: Some(binary.clone()),
                ..Chunking::default()
            },
            9,
        );
        let mut x = 5u64;
        let mut bytes = noise(&mut x, whole);
        bytes[0] = 0;
        let chunks = cut_all_by(&mut c, &bytes, 4096);
        assert_eq!(c.kind(), Kind::Binary);
        assert!(chunks.len() > 1, "{} chunks", chunks.len());
        let lens: Vec<usize> = chunks.iter().map(Vec::len).collect();
        assert_eq!(lens, fastcdc_cuts(&bytes, &binary, 9));
    }

    #[test]
    fn text_chunks_end_at_line_ends_and_respect_the_sizes() {
        let data = dump(0..20_000, None);
        let p = lines();
        let chunks = cut_all(&mut Chunker::new(p.clone(), 5), &data);
        assert_eq!(chunks.concat(), data);
        for ch in &chunks[..chunks.len() - 1] {
            assert!(ch.ends_with(b"\n"));
            assert!(ch.len() > p.min_size as usize && ch.len() <= p.max_size as usize);
        }
        let avg = data.len() / chunks.len();
        assert!(
            (p.avg_size as usize / 2..p.avg_size as usize * 2).contains(&avg),
            "average chunk {avg} bytes"
        );
    }

    #[test]
    fn one_changed_row_changes_one_or_two_text_chunks() {
        let p = lines();
        let before = cut_all(&mut Chunker::new(p.clone(), 5), &dump(0..20_000, None));
        let after = cut_all(&mut Chunker::new(p, 5), &dump(0..20_000, Some(7_777)));
        let old: std::collections::HashSet<_> = before.iter().collect();
        let new = after.iter().filter(|c| !old.contains(c)).count();
        assert!((1..=2).contains(&new), "{new} new chunks");
        // FastCDC with the same sizes resynchronises later on this padding-heavy input.
        let f = ChunkerParams {
            algorithm: FASTCDC.into(),
            ..lines()
        };
        let before = cut_all(&mut Chunker::new(f.clone(), 5), &dump(0..20_000, None));
        let after = cut_all(&mut Chunker::new(f, 5), &dump(0..20_000, Some(7_777)));
        let old: std::collections::HashSet<_> = before.iter().collect();
        assert!(after.iter().filter(|c| !old.contains(c)).count() >= new);
    }

    #[test]
    fn a_line_longer_than_the_maximum_is_cut_at_the_maximum() {
        let p = lines();
        let mut data = vec![b'x'; 3 * p.max_size as usize];
        data.push(b'\n');
        let chunks = cut_all(&mut Chunker::new(p.clone(), 5), &data);
        assert_eq!(chunks[0].len(), p.max_size as usize);
        assert_eq!(chunks.concat(), data);
    }

    /// Up to three runs of zeros, (start, length), placed by [`punch`] within a generated input.
    fn holes(at: usize, len: usize) -> impl Strategy<Value = Vec<(usize, usize)>> {
        proptest::collection::vec((0..at, 0..len), 0..3)
    }

    /// Zeroes the `holes` of `data` (clipped to its end): the holes of a sparse file.
    fn punch(data: &mut [u8], holes: &[(usize, usize)]) {
        for &(at, len) in holes {
            let end = (at + len).min(data.len());
            data[at.min(end)..end].fill(0);
        }
    }

    /// `n` xorshift bytes from state `x`.
    fn noise(x: &mut u64, n: usize) -> Vec<u8> {
        (0..n)
            .map(|_| {
                *x ^= *x << 13;
                *x ^= *x >> 7;
                *x ^= *x << 17;
                *x as u8
            })
            .collect()
    }

    /// The chunk lengths FastCDC itself cuts `data` into: the oracle.
    fn fastcdc_cuts(data: &[u8], p: &ChunkerParams, seed: u64) -> Vec<usize> {
        FastCDC::with_level_and_seed(
            data,
            p.min_size,
            p.avg_size,
            p.max_size,
            Normalization::Level1,
            seed,
        )
        .map(|c| c.length)
        .collect()
    }

    #[test]
    fn a_run_of_zeros_is_cut_as_the_algorithm_cuts_it_and_marked() {
        // Megabytes of zeros between data, with the default profiles: the fast path must give the
        // cuts of the algorithm run over the whole input (the proptests check small parameters).
        let mut x = 99u64;
        let mut data = noise(&mut x, 100_000);
        data.extend(std::iter::repeat_n(0u8, 20 << 20));
        data.extend(noise(&mut x, 3_000_000));
        data.extend(std::iter::repeat_n(0u8, 9 << 20));
        let chunking = Chunking::default();
        let binary = chunking.binary.clone().unwrap();
        let expected = fastcdc_cuts(&data, &binary, 77);
        let mut c = Chunker::with_profiles(chunking, 77);
        let (mut got, mut zeros) = (Vec::new(), 0);
        c.run_marked::<_, io::Error>(data.as_slice(), |ch, zero| {
            assert_eq!(zero, ch.iter().all(|&b| b == 0));
            zeros += if zero { ch.len() } else { 0 };
            got.push(ch.len());
            Ok(())
        })
        .unwrap();
        assert_eq!(c.kind(), Kind::Binary);
        assert_eq!(got, expected);
        // All of the zeros but the ends of each run that share a chunk with data.
        let max = binary.max_size as usize;
        assert!(
            zeros >= (29 << 20) - 4 * max,
            "{zeros} bytes in zero chunks"
        );
    }

    #[test]
    fn zeros_reported_ahead_are_cut_as_zeros_read_are_at_every_alignment() {
        // Runs of zeros around `max_size` long, at every offset of a small buffer: a run one byte
        // too short for the zero cut must be cut by the algorithm, whatever the reader reports.
        let p = small();
        let max = p.max_size as usize;
        let mut x = 7u64;
        // No zero byte in the data around the run.
        let mut data_bytes =
            |n: usize| -> Vec<u8> { noise(&mut x, n).into_iter().map(|b| b | 1).collect() };
        for prefix in (0..2 * max).step_by(5) {
            for run in [
                max - 2,
                max - 1,
                max,
                max + 1,
                2 * max - 1,
                2 * max,
                3 * max + 7,
            ] {
                let mut data = data_bytes(prefix);
                data.extend(std::iter::repeat_n(0u8, run));
                data.extend(data_bytes(300));
                let expected = fastcdc_cuts(&data, &p, 3);
                for share in [1, 4] {
                    let mut c = Chunker {
                        chunking: Chunking::from(p.clone()),
                        seed: 3,
                        buf: vec![0; 2 * max],
                        kind: Kind::Base,
                        zero_cut: [None; 3],
                        zeros: Vec::new(),
                    };
                    let got = hole_cuts(&mut c, &data, 700, share);
                    assert_eq!(got, expected, "prefix {prefix}, run {run}, share {share}/4");
                }
            }
        }
    }

    proptest! {
        #[test]
        fn streaming_text_cuts_equal_whole_buffer_cuts(seed in any::<u64>(), len in 0usize..40_000, step in 1usize..5000, line in 1u64..400, holes in holes(40_000, 20_000), share in 0u64..=4) {
            let mut x = seed | 1;
            let mut data: Vec<u8> = (0..len).map(|_| { x ^= x << 13; x ^= x >> 7; x ^= x << 17; if x % line == 0 { b'\n' } else { b'a' + (x % 26) as u8 } }).collect();
            punch(&mut data, &holes);
            let p = lines();
            let mut expected = Vec::new();
            let mut at = 0;
            while at < data.len() {
                let n = line_cut(&data[at..], &p, seed);
                expected.push(n);
                at += n;
            }
            let mut c = Chunker { chunking: Chunking::from(p.clone()), seed, buf: vec![0; 2 * p.max_size as usize], kind: Kind::Base, zero_cut: [None; 3], zeros: Vec::new() };
            let mut got = Vec::new();
            let mut joined = Vec::new();
            let mut flags_right = true;
            let n = c.run_marked::<_, io::Error>(Trickle(&data, step), |ch, zero| { flags_right &= zero == ch.iter().all(|&b| b == 0); got.push(ch.len()); joined.extend_from_slice(ch); Ok(()) }).unwrap();
            prop_assert!(flags_right, "a chunk's all-zero flag is wrong");
            prop_assert_eq!(n as usize, data.len());
            prop_assert_eq!(&joined, &data);
            prop_assert_eq!(&got, &expected);
            // The same through a reader that reports its zeros as holes, wholly or in part.
            prop_assert_eq!(hole_cuts(&mut c, &data, step, share), expected);
        }
    }

    proptest! {
        #[test]
        fn streaming_cuts_equal_whole_buffer_cuts(seed in any::<u64>(), gear in prop_oneof![Just(0u64), any::<u64>()], len in 0usize..40_000, step in 1usize..5000, holes in holes(40_000, 5_000), share in 0u64..=4) {
            let mut x = seed | 1;
            let mut data: Vec<u8> = (0..len).map(|_| { x ^= x << 13; x ^= x >> 7; x ^= x << 17; x as u8 }).collect();
            punch(&mut data, &holes);
            let p = small();
            let expected = fastcdc_cuts(&data, &p, gear);
            let mut c = Chunker { chunking: Chunking::from(p.clone()), seed: gear, buf: vec![0; 2048], kind: Kind::Base, zero_cut: [None; 3], zeros: Vec::new() };
            let mut got = Vec::new();
            let mut joined = Vec::new();
            let mut flags_right = true;
            let n = c.run_marked::<_, io::Error>(Trickle(&data, step), |ch, zero| { flags_right &= zero == ch.iter().all(|&b| b == 0); got.push(ch.len()); joined.extend_from_slice(ch); Ok(()) }).unwrap();
            prop_assert!(flags_right, "a chunk's all-zero flag is wrong");
            prop_assert_eq!(n as usize, data.len());
            prop_assert_eq!(&joined, &data);
            prop_assert_eq!(&got, &expected);
            // The same through a reader that reports its zeros as holes, wholly or in part.
            prop_assert_eq!(hole_cuts(&mut c, &data, step, share), expected);
        }
    }
}
