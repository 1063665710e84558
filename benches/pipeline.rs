//! Throughput of the snapshot hot path, stage by stage and whole.
//!
//! Each stage runs over two 64 MiB inputs that bracket what the vault stores: a synthetic SQL dump
//! (pg_dump `COPY` blocks and mysqldump-style `INSERT`s with ids, names, timestamps and amounts,
//! which zstd shrinks) and blake3 XOF output (incompressible, so sealing keeps it raw). Both are
//! generated from fixed seeds, so figures compare across runs and machines.
//!
//! Groups: `chunk` (FastCDC with the default parameters), `hash` (blob ids of those chunks),
//! `seal` (zstd level 3 plus the verify-before-write check), `pipeline` (the three chained on one
//! thread) and `snapshot` (the library's `snapshot` of one 64 MiB file into a fresh vault, with its
//! worker threads, packs, fsyncs and index). Stage groups run single-threaded; only `snapshot`
//! uses every core. `hash`, `seal`, `pipeline` and `snapshot` each run `plain/` and `encrypted/`
//! (keyed blake3 ids, a seeded chunker and XChaCha20-Poly1305 sealing): the cost of encryption is
//! the ratio of the two.
//!
//! `cargo bench --bench pipeline` measures for about a minute and a half on 2 cores (after the
//! release build); under `cargo test --all-targets` each benchmark runs once, in about 4 s.

use std::hint::black_box;
use std::ops::Range;
use std::sync::LazyLock;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BatchSize, BenchmarkGroup, Criterion, SamplingMode, Throughput,
};

use atlasvault::blob::{seal, BlobKind};
use atlasvault::chunk::Chunker;
use atlasvault::config::{ChunkerParams, DEFAULT_ZSTD_LEVEL};
use atlasvault::crypto::Crypto;
use atlasvault::keys::{KdfParams, Secret, SecretSource};
use atlasvault::lock::LockMode;
use atlasvault::progress::Progress;
use atlasvault::snapshot::{snapshot, SnapshotOptions};
use atlasvault::{BlobId, Vault};

const INPUT_BYTES: usize = 64 * 1024 * 1024;
/// Rows written per table before the dump moves on to the next one, as a real dump's tables are
/// contiguous runs of similar lines.
const ROWS_PER_BLOCK: u64 = 20_000;

/// One benchmark input with its FastCDC cut points.
struct Input {
    name: &'static str,
    data: Vec<u8>,
    chunks: Vec<Range<usize>>,
}

impl Input {
    fn new(name: &'static str, data: Vec<u8>) -> Self {
        let chunks = chunk_ranges(&data);
        Input { name, data, chunks }
    }

    fn bytes(&self) -> Throughput {
        Throughput::Bytes(self.data.len() as u64)
    }
}

/// Built on first use, so a filtered run (`cargo bench --bench pipeline -- chunk`) pays for
/// nothing it does not measure twice.
static INPUTS: LazyLock<[Input; 2]> = LazyLock::new(|| {
    [
        Input::new("sql", sql_dump(INPUT_BYTES)),
        Input::new("random", incompressible(INPUT_BYTES)),
    ]
});

/// splitmix64: tiny, fast even unoptimised, and the same everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, words: &[&'a str]) -> &'a str {
        words[self.below(words.len() as u64) as usize]
    }
}

const FIRST_NAMES: &[&str] = &[
    "Anna",
    "Bartosz",
    "Chen",
    "Daniela",
    "Emeka",
    "Fatima",
    "Giulia",
    "Hiroshi",
    "Ingrid",
    "Jamal",
    "Katarzyna",
    "Liam",
    "Mei",
    "Nikolai",
    "Olga",
    "Pedro",
    "Quentin",
    "Rosa",
    "Sanjay",
    "Tomasz",
    "Ursula",
    "Valentina",
    "Wei",
    "Ximena",
    "Yusuf",
    "Zofia",
];
const LAST_NAMES: &[&str] = &[
    "Kowalski",
    "Nguyen",
    "Garcia",
    "Okafor",
    "Rossi",
    "Tanaka",
    "Johansson",
    "Haddad",
    "Müller",
    "Silva",
    "Dubois",
    "Novak",
    "Patel",
    "Kim",
    "Ivanova",
    "Smith",
    "O'Brien",
    "Fernández",
    "Andersen",
    "Yilmaz",
];
const DOMAINS: &[&str] = &[
    "example.com",
    "mail.test",
    "corp.example",
    "shop.example.org",
];
const COUNTRIES: &[&str] = &[
    "PL", "DE", "FR", "US", "GB", "JP", "BR", "NG", "IN", "SE", "IT",
];
const STATUSES: &[&str] = &[
    "pending",
    "paid",
    "shipped",
    "delivered",
    "refunded",
    "cancelled",
];
const CURRENCIES: &[&str] = &["EUR", "USD", "PLN", "GBP", "JPY"];
const EVENT_KINDS: &[&str] = &["page_view", "add_to_cart", "checkout", "login", "search"];
const PAGES: &[&str] = &[
    "/",
    "/products",
    "/cart",
    "/account",
    "/search",
    "/checkout",
];
const NOTES: &[&str] = &[
    "\\N",
    "leave at the door",
    "gift wrap, no invoice in the box",
    "call before delivery",
    "customer asked for a new delivery date",
    "replacement for damaged item",
];

/// Appends decimal digits without going through `fmt` (cheap in the unoptimised test build).
fn push_u64(out: &mut Vec<u8>, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Appends `v` zero-padded to `width` digits.
fn push_padded(out: &mut Vec<u8>, v: u64, width: usize) {
    let start = out.len();
    push_u64(out, v);
    let len = out.len() - start;
    if len < width {
        out.splice(start..start, std::iter::repeat_n(b'0', width - len));
    }
}

/// Appends `cents` as `123.45`.
fn push_amount(out: &mut Vec<u8>, cents: u64) {
    push_u64(out, cents / 100);
    out.push(b'.');
    push_padded(out, cents % 100, 2);
}

/// Appends a timestamp `secs` seconds after 2024-01-01 (months of 28 days keep it simple and
/// still plausible).
fn push_timestamp(out: &mut Vec<u8>, secs: u64, micros: u64) {
    let days = secs / 86_400;
    let month = (days / 28) % 12 + 1;
    let year = 2024 + days / (28 * 12);
    let s = secs % 86_400;
    push_u64(out, year);
    out.push(b'-');
    push_padded(out, month, 2);
    out.push(b'-');
    push_padded(out, days % 28 + 1, 2);
    out.push(b' ');
    push_padded(out, s / 3600, 2);
    out.push(b':');
    push_padded(out, s / 60 % 60, 2);
    out.push(b':');
    push_padded(out, s % 60, 2);
    out.push(b'.');
    push_padded(out, micros, 6);
    out.extend_from_slice(b"+00");
}

fn push_email(out: &mut Vec<u8>, rng: &mut Rng, first: &str, last: &str) {
    out.extend(first.bytes().map(|b| b.to_ascii_lowercase()));
    out.push(b'.');
    out.extend(
        last.bytes()
            .filter(u8::is_ascii_alphabetic)
            .map(|b| b.to_ascii_lowercase()),
    );
    push_u64(out, rng.below(1000));
    out.push(b'@');
    out.extend_from_slice(rng.pick(DOMAINS).as_bytes());
}

/// A deterministic pg_dump-like text of exactly `len` bytes.
fn sql_dump(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 4096);
    out.extend_from_slice(
        b"--\n-- PostgreSQL database dump\n--\n\nSET statement_timeout = 0;\n\
          SET client_encoding = 'UTF8';\nSET standard_conforming_strings = on;\n\n\
          CREATE TABLE public.customers (\n    id bigint NOT NULL,\n    email text NOT NULL,\n\
          \x20   first_name text,\n    last_name text,\n    country character(2),\n\
          \x20   created_at timestamp with time zone NOT NULL,\n    balance numeric(12,2),\n\
          \x20   active boolean DEFAULT true\n);\n\n",
    );
    let mut rng = Rng(0x5eed_a71a_5a17);
    let (mut customer, mut order, mut event) = (0u64, 0u64, 0u64);
    let mut clock = 0u64; // seconds since 2024-01-01, creeping forward like real inserts
    let mut block = 0u64;
    while out.len() < len {
        match block % 3 {
            0 => {
                out.extend_from_slice(
                    b"COPY public.customers (id, email, first_name, last_name, country, \
                      created_at, balance, active) FROM stdin;\n",
                );
                for _ in 0..ROWS_PER_BLOCK {
                    customer += 1;
                    clock += rng.below(90);
                    let (first, last) = (rng.pick(FIRST_NAMES), rng.pick(LAST_NAMES));
                    push_u64(&mut out, customer);
                    out.push(b'\t');
                    push_email(&mut out, &mut rng, first, last);
                    out.push(b'\t');
                    out.extend_from_slice(first.as_bytes());
                    out.push(b'\t');
                    out.extend_from_slice(last.as_bytes());
                    out.push(b'\t');
                    out.extend_from_slice(rng.pick(COUNTRIES).as_bytes());
                    out.push(b'\t');
                    push_timestamp(&mut out, clock, rng.below(1_000_000));
                    out.push(b'\t');
                    push_amount(&mut out, rng.below(5_000_000));
                    out.extend_from_slice(if rng.below(10) == 0 {
                        b"\tf\n"
                    } else {
                        b"\tt\n"
                    });
                }
                out.extend_from_slice(b"\\.\n\n");
            }
            1 => {
                out.extend_from_slice(
                    b"COPY public.orders (id, customer_id, status, total, currency, placed_at, \
                      shipped_at, note) FROM stdin;\n",
                );
                for _ in 0..ROWS_PER_BLOCK {
                    order += 1;
                    clock += rng.below(30);
                    push_u64(&mut out, order);
                    out.push(b'\t');
                    push_u64(&mut out, 1 + rng.below(customer.max(1)));
                    out.push(b'\t');
                    out.extend_from_slice(rng.pick(STATUSES).as_bytes());
                    out.push(b'\t');
                    push_amount(&mut out, 100 + rng.below(250_000));
                    out.push(b'\t');
                    out.extend_from_slice(rng.pick(CURRENCIES).as_bytes());
                    out.push(b'\t');
                    push_timestamp(&mut out, clock, rng.below(1_000_000));
                    out.push(b'\t');
                    if rng.below(3) == 0 {
                        out.extend_from_slice(b"\\N");
                    } else {
                        push_timestamp(&mut out, clock + rng.below(400_000), rng.below(1_000_000));
                    }
                    out.push(b'\t');
                    out.extend_from_slice(rng.pick(NOTES).as_bytes());
                    out.push(b'\n');
                }
                out.extend_from_slice(b"\\.\n\n");
            }
            _ => {
                // mysqldump style: one INSERT per row, with a small JSON payload.
                for _ in 0..ROWS_PER_BLOCK {
                    event += 1;
                    clock += rng.below(5);
                    out.extend_from_slice(
                        b"INSERT INTO public.events (id, customer_id, kind, ip, payload, \
                          created_at) VALUES (",
                    );
                    push_u64(&mut out, event);
                    out.extend_from_slice(b", ");
                    push_u64(&mut out, 1 + rng.below(customer.max(1)));
                    out.extend_from_slice(b", '");
                    out.extend_from_slice(rng.pick(EVENT_KINDS).as_bytes());
                    out.extend_from_slice(b"', '10.");
                    push_u64(&mut out, rng.below(256));
                    out.push(b'.');
                    push_u64(&mut out, rng.below(256));
                    out.push(b'.');
                    push_u64(&mut out, rng.below(256));
                    out.extend_from_slice(b"', '{\"page\": \"");
                    out.extend_from_slice(rng.pick(PAGES).as_bytes());
                    out.push(b'/');
                    push_u64(&mut out, rng.below(100_000));
                    out.extend_from_slice(b"\", \"ms\": ");
                    push_u64(&mut out, rng.below(3000));
                    out.extend_from_slice(b"}', '");
                    push_timestamp(&mut out, clock, rng.below(1_000_000));
                    out.extend_from_slice(b"');\n");
                }
                out.push(b'\n');
            }
        }
        block += 1;
    }
    out.truncate(len);
    out
}

/// `len` bytes of blake3 XOF output: no compressor shrinks it and no chunk repeats.
fn incompressible(len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(b"atlasvault pipeline bench: incompressible input")
        .finalize_xof()
        .fill(&mut out);
    out
}

/// Where FastCDC cuts `data` with the default parameters.
fn chunk_ranges(data: &[u8]) -> Vec<Range<usize>> {
    let mut chunker = Chunker::new(ChunkerParams::default(), 0);
    let mut ranges = Vec::new();
    let mut at = 0;
    chunker
        .run::<_, std::io::Error>(data, |c| {
            ranges.push(at..at + c.len());
            at += c.len();
            Ok(())
        })
        .expect("invariant: reading from memory cannot fail");
    ranges
}

/// A group with few, flat samples: every iteration is tens of milliseconds or more, so ten
/// samples of one or a few iterations are plenty and keep the whole run short.
fn group<'a>(c: &'a mut Criterion, name: &str, measure_secs: u64) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(measure_secs));
    g
}

fn bench_chunk(c: &mut Criterion) {
    let mut g = group(c, "chunk", 3);
    let mut chunker = Chunker::new(ChunkerParams::default(), 0);
    for input in INPUTS.iter() {
        g.throughput(input.bytes());
        g.bench_function(input.name, |b| {
            b.iter(|| {
                let mut count = 0usize;
                chunker
                    .run::<_, std::io::Error>(input.data.as_slice(), |c| {
                        black_box(c);
                        count += 1;
                        Ok(())
                    })
                    .expect("invariant: reading from memory cannot fail");
                count
            })
        });
    }
    g.finish();
}

/// The two ways a vault runs: unencrypted, and encrypted (keyed ids, seeded chunker, AEAD).
fn modes() -> [(&'static str, Crypto); 2] {
    [
        ("plain", Crypto::plain()),
        ("encrypted", Crypto::from_master(&[0x5a; 32])),
    ]
}

fn bench_hash(c: &mut Criterion) {
    let mut g = group(c, "hash", 3);
    for (mode, crypto) in modes() {
        for input in INPUTS.iter() {
            g.throughput(input.bytes());
            g.bench_function(format!("{mode}/{}", input.name), |b| {
                b.iter(|| {
                    for r in &input.chunks {
                        black_box(crypto.blob_id(&input.data[r.clone()]));
                    }
                })
            });
        }
    }
    g.finish();
}

fn bench_seal(c: &mut Criterion) {
    let mut g = group(c, "seal", 6);
    for (mode, crypto) in modes() {
        for input in INPUTS.iter() {
            let ids: Vec<BlobId> = input
                .chunks
                .iter()
                .map(|r| crypto.blob_id(&input.data[r.clone()]))
                .collect();
            g.throughput(input.bytes());
            g.bench_function(format!("{mode}/{}", input.name), |b| {
                b.iter(|| {
                    for (r, id) in input.chunks.iter().zip(&ids) {
                        let sealed = seal(
                            &crypto,
                            *id,
                            BlobKind::Data,
                            &input.data[r.clone()],
                            DEFAULT_ZSTD_LEVEL,
                        )
                        .expect("sealing a bench chunk");
                        black_box(sealed);
                    }
                })
            });
        }
    }
    g.finish();
}

/// Chunk, hash and seal on one core: the CPU work of a snapshot without the file system.
fn bench_pipeline(c: &mut Criterion) {
    let mut g = group(c, "pipeline", 8);
    for (mode, crypto) in modes() {
        let mut chunker = Chunker::new(ChunkerParams::default(), crypto.chunker_seed());
        for input in INPUTS.iter() {
            g.throughput(input.bytes());
            g.bench_function(format!("{mode}/{}", input.name), |b| {
                b.iter(|| {
                    chunker
                        .run::<_, Box<dyn std::error::Error>>(input.data.as_slice(), |c| {
                            let id = crypto.blob_id(c);
                            let sealed = seal(&crypto, id, BlobKind::Data, c, DEFAULT_ZSTD_LEVEL)?;
                            black_box(sealed);
                            Ok(())
                        })
                        .expect("chunk, hash and seal a bench input")
                })
            });
        }
    }
    g.finish();
}

/// A new, empty vault in its own temporary directory (argon2 made cheap: it is not timed, but
/// it runs once per iteration).
fn fresh_vault(encrypted: bool) -> (tempfile::TempDir, Vault) {
    let dir = tempfile::tempdir().expect("a temporary directory for the vault");
    let root = dir.path().join("vault");
    let password = dir.path().join("password");
    std::fs::write(&password, "bench password").expect("password file");
    let secret = Secret::Password(b"bench password".to_vec());
    let kdf = KdfParams {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };
    let key = encrypted.then_some((&secret, &kdf));
    Vault::init(&root, ChunkerParams::default(), key).expect("vault init");
    let secrets = SecretSource::from_env_and(Some(password), None);
    let vault = Vault::open(&root, LockMode::Exclusive, None, &secrets).expect("vault open");
    (dir, vault)
}

fn bench_snapshot(c: &mut Criterion) {
    let mut g = group(c, "snapshot", 15);
    // Local rather than static: statics are never dropped, and this holds 128 MiB on disk.
    let inputs_dir = tempfile::tempdir().expect("a temporary directory for the bench inputs");
    for input in INPUTS.iter() {
        let path = inputs_dir.path().join(format!("{}.input", input.name));
        std::fs::write(&path, &input.data).expect("writing a bench input");
        let opts = SnapshotOptions {
            paths: vec![path],
            no_parent: true,
            ..Default::default()
        };
        for (mode, encrypted) in [("plain", false), ("encrypted", true)] {
            let mut last = None;
            g.throughput(input.bytes());
            g.bench_function(format!("{mode}/{}", input.name), |b| {
                b.iter_batched(
                    || fresh_vault(encrypted),
                    // The vault goes back out so that deleting it is not timed.
                    |(dir, mut vault)| {
                        let done = snapshot(&mut vault, &opts, &Progress::hidden())
                            .expect("snapshot into a fresh vault");
                        last = Some(done.manifest.stats.clone());
                        (dir, vault, done)
                    },
                    BatchSize::PerIteration,
                )
            });
            if let Some(s) = last {
                report_stats(&format!("{mode}/{}", input.name), &s);
            }
        }
    }
    g.finish();
}

/// What one snapshot stored, to read the throughput figures against.
fn report_stats(name: &str, s: &atlasvault::manifest::Stats) {
    eprintln!(
        "snapshot/{name}: {} bytes in {} new blobs, {} bytes stored ({:.2}x)",
        s.bytes_new,
        s.blobs_new,
        s.bytes_stored,
        s.bytes_new as f64 / s.bytes_stored.max(1) as f64,
    );
}

criterion_group!(
    benches,
    bench_chunk,
    bench_hash,
    bench_seal,
    bench_pipeline,
    bench_snapshot
);
criterion_main!(benches);
