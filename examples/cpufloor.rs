//! The CPU floor of issue 9's steps on a corpus: what one core spends on the work itself, stage
//! by stage, with no pipeline, threads, files or index around it.
//!
//! `cargo run --release --example cpufloor -- [--tsv] [--cores N] PATH...` reads every file
//! under the paths (from the page cache: run it on a warm corpus), cuts them with the default
//! chunkers of a new encrypted vault, and times, on this thread:
//!
//! - `read`: the reads the chunker makes (the kernel's copy; in no floor);
//! - `chunk`: FastCDC with the default text and binary profiles (the chunker's run, less its
//!   reads and the per-chunk work below);
//! - `hash`: keyed blake3 of every chunk (the blob ids), and `hash-new` the part of it spent on
//!   chunks met for the first time (restore and verify hash each stored blob once);
//! - `zstd-3`: compressing each new chunk at level 3, what issue 9 counts (borg's level);
//! - `zstd-vault`: compressing each new chunk at a new vault's levels (text 5, binary 3), with
//!   the sampled skip of incompressible chunks left out (the corpus has none to speak of);
//! - `unzstd`: decompressing what `zstd-vault` made;
//! - `seal` / `open`: XChaCha20-Poly1305 over the compressed bytes, as a vault stores them;
//! - `hash-stored`: blake3 of the stored bytes (verify's whole-pack hash).
//!
//! and prints each stage's seconds, then each step's floor: its stages' CPU seconds, and that
//! divided by the cores (`--cores`, default: this machine's), the wall time of a perfect
//! pipeline. Work any implementation must do for the step counts; checks a tool adds of its own
//! choice (AtlasVault's verify-before-write) do not. With `--tsv`, one `stage<TAB>seconds` line
//! each, for scripts (`scripts/bench-vs-anchors.sh`).
use std::collections::HashSet;
use std::io::Read;
use std::time::{Duration, Instant};

use atlasvault::blob::BlobKind;
use atlasvault::chunk::Chunker;
use atlasvault::config::{
    Chunking, CompressionConfig, DEFAULT_ZSTD_LEVEL, DEFAULT_ZSTD_TEXT_LEVEL,
};
use atlasvault::crypto::{Crypto, Domain};

#[derive(Default)]
struct Stages {
    read: Duration,
    chunk: Duration,
    hash: Duration,
    /// The part of `hash` spent on chunks met for the first time: restore and verify need to
    /// hash each stored blob once, not each repeat of it.
    hash_new: Duration,
    zstd3: Duration,
    zstd_vault: Duration,
    unzstd: Duration,
    seal: Duration,
    open: Duration,
    hash_stored: Duration,
    bytes: u64,
    files: u64,
    chunks: u64,
    new_chunks: u64,
    stored: u64,
}

fn timed<T>(acc: &mut Duration, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let out = f();
    *acc += t.elapsed();
    out
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let tsv = take_flag(&mut args, "--tsv");
    let cores = take_value(&mut args, "--cores").map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get()),
        |v| v.parse().expect("--cores takes a number"),
    );
    assert!(
        !args.is_empty(),
        "usage: cpufloor [--tsv] [--cores N] PATH..."
    );

    let crypto = Crypto::from_master(&[7u8; 32]);
    let levels = CompressionConfig {
        algorithm: "zstd".into(),
        level: DEFAULT_ZSTD_LEVEL,
        text_level: Some(DEFAULT_ZSTD_TEXT_LEVEL),
    };
    let mut z3 = zstd::bulk::Compressor::new(3).expect("zstd level 3");
    let mut zv: Vec<(i32, zstd::bulk::Compressor<'static>)> = Vec::new();
    let mut unz = zstd::bulk::Decompressor::new().expect("zstd decompressor");
    let mut seen = HashSet::new();
    let mut s = Stages::default();
    let mut chunker = Chunker::with_profiles(Chunking::default(), crypto.chunker_seed());

    for root in &args {
        let walk = ignore::WalkBuilder::new(root)
            .standard_filters(false)
            .build();
        for entry in walk {
            let entry = entry.expect("walk");
            if !entry.file_type().is_some_and(|t| t.is_file()) {
                continue;
            }
            s.files += 1;
            let mut reader = TimedRead {
                inner: std::fs::File::open(entry.path()).expect("open"),
                spent: Duration::ZERO,
            };
            // The chunker's own time is the run's less the reads and the per-chunk work.
            let mut per_chunk = Duration::ZERO;
            let run = Instant::now();
            let n = chunker
                .run::<_, std::io::Error>(&mut reader, |raw| {
                    let t = Instant::now();
                    s.chunks += 1;
                    let mut this = Duration::ZERO;
                    let id = timed(&mut this, || crypto.blob_id(raw));
                    s.hash += this;
                    if seen.insert(id) {
                        s.hash_new += this;
                        s.new_chunks += 1;
                        timed(&mut s.zstd3, || z3.compress(raw).expect("zstd"));
                        let level = levels.level_for(BlobKind::Data, raw);
                        let i = match zv.iter().position(|(l, _)| *l == level) {
                            Some(i) => i,
                            None => {
                                zv.push((level, zstd::bulk::Compressor::new(level).expect("zstd")));
                                zv.len() - 1
                            }
                        };
                        let packed =
                            timed(&mut s.zstd_vault, || zv[i].1.compress(raw).expect("zstd"));
                        let back = timed(&mut s.unzstd, || {
                            unz.decompress(&packed, raw.len()).expect("unzstd")
                        });
                        assert_eq!(back, raw, "zstd round trip");
                        let sealed =
                            timed(&mut s.seal, || crypto.seal(Domain::Blob, &id.0, packed));
                        s.stored += sealed.len() as u64;
                        timed(&mut s.hash_stored, || blake3::hash(&sealed));
                        timed(&mut s.open, || {
                            crypto
                                .open(Domain::Blob, &id.0, &sealed)
                                .expect("open what was just sealed")
                        });
                    }
                    per_chunk += t.elapsed();
                    Ok(())
                })
                .expect("chunk");
            s.chunk += run.elapsed().saturating_sub(reader.spent + per_chunk);
            s.read += reader.spent;
            s.bytes += n;
        }
    }

    let secs = |d: Duration| d.as_secs_f64();
    let stages = [
        ("read", s.read),
        ("chunk", s.chunk),
        ("hash", s.hash),
        ("hash-new", s.hash_new),
        ("zstd-3", s.zstd3),
        ("zstd-vault", s.zstd_vault),
        ("unzstd", s.unzstd),
        ("seal", s.seal),
        ("open", s.open),
        ("hash-stored", s.hash_stored),
    ];
    // Each step's floor: the stages any tool doing that step must run once per byte. Reading
    // the files is left out (it is the kernel's, and this VM's page cache makes it vary), so
    // each floor is a lower bound.
    let floors = [
        ("initial (zstd 3)", s.chunk + s.hash + s.zstd3 + s.seal),
        (
            "initial (vault levels)",
            s.chunk + s.hash + s.zstd_vault + s.seal,
        ),
        ("restore", s.open + s.unzstd + s.hash_new),
        ("verify", s.hash_stored + s.open + s.unzstd + s.hash_new),
    ];
    if tsv {
        for (name, d) in stages.iter().chain(floors.iter()) {
            println!("{name}\t{:.3}", secs(*d));
        }
        println!("cores\t{cores}");
        return;
    }
    println!(
        "{} files, {:.1} MiB, {} chunks ({} new), {:.1} MiB stored",
        s.files,
        s.bytes as f64 / 1048576.0,
        s.chunks,
        s.new_chunks,
        s.stored as f64 / 1048576.0
    );
    for (name, d) in stages {
        println!(
            "{name:>12}: {:6.3} s  {:7.0} MiB/s",
            secs(d),
            s.bytes as f64 / 1048576.0 / secs(d).max(1e-9)
        );
    }
    for (name, d) in floors {
        println!(
            "floor of {name}: {:.2} CPU-s, {:.2} s on {cores} cores",
            secs(d),
            secs(d) / cores as f64
        );
    }
}

fn take_flag(args: &mut Vec<String>, flag: &str) -> bool {
    let before = args.len();
    args.retain(|a| a != flag);
    args.len() != before
}

fn take_value(args: &mut Vec<String>, flag: &str) -> Option<String> {
    let i = args.iter().position(|a| a == flag)?;
    let value = args.get(i + 1).cloned().expect("a flag's value");
    args.drain(i..=i + 1);
    Some(value)
}

/// A reader that counts the time spent in its reads.
struct TimedRead<R> {
    inner: R,
    spent: Duration,
}

impl<R: Read> Read for TimedRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let t = Instant::now();
        let n = self.inner.read(buf);
        self.spent += t.elapsed();
        n
    }
}
