//! A malicious vault: snapshots, trees, blobs, packs and index rows crafted to make `restore`,
//! `verify` and `ls` escape the target, allocate without bound, loop or crash. Every run must end
//! with an exit code (no panic, no signal), stay under [`RSS_LIMIT_BYTES`] of peak memory (read
//! from the child's `rusage`), and leave everything outside the vault and the restore target as
//! it was. `traversal.rs` covers `..`, slashes, NUL bytes and a symlink and a directory of the same
//! name; this file covers the rest.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use atlasvault::blob::{BlobKind, Compression, MAX_BLOB_RAW_BYTES};
use atlasvault::id::BlobId;
use atlasvault::pack::PackEntry;
use atlasvault::tree::{Entry, Node};

use crate::common::*;
use crate::craft::{entry, Crafter, RawPack};

/// Peak resident memory any run may reach.
const RSS_LIMIT_BYTES: u64 = 200 * 1024 * 1024;
/// Address space each run gets (`ulimit -v`): an allocation sized by a hostile length field fails
/// here even where the kernel would hand out untouched pages lazily.
const ADDRESS_SPACE_LIMIT_KIB: u64 = 2 * 1024 * 1024;
/// A run still going after this long is taken to loop forever: it is killed and the test fails.
const RUN_DEADLINE: Duration = Duration::from_secs(60);

/// A fixture with a directory outside the vault that nothing may touch.
struct Scene {
    f: Fixture,
    outside: PathBuf,
    before: Vec<(PathBuf, Option<Vec<u8>>)>,
    targets: usize,
}

impl Scene {
    fn new() -> Scene {
        let f = Fixture::with_vault();
        let outside = f.path("outside");
        fs::create_dir_all(outside.join("sub")).unwrap();
        fs::write(outside.join("victim.txt"), b"untouched").unwrap();
        fs::write(outside.join("sub/victim.txt"), b"untouched too").unwrap();
        fs::create_dir_all(f.path("work")).unwrap();
        let mut s = Scene {
            f,
            outside,
            before: Vec::new(),
            targets: 0,
        };
        s.before = s.outside_state();
        s
    }

    fn crafter(&self) -> Crafter {
        Crafter::open(&self.f)
    }

    /// Everything under the fixture except the vault, the restore targets and XDG dirs.
    fn outside_state(&self) -> Vec<(PathBuf, Option<Vec<u8>>)> {
        list_all(self.f.root())
            .into_iter()
            .filter(|p| !p.starts_with("vault") && !p.starts_with("work") && !p.starts_with("xdg-"))
            .map(|p| {
                let full = self.f.root().join(&p);
                let m = fs::symlink_metadata(&full).unwrap();
                let content = m.is_file().then(|| fs::read(&full).unwrap());
                (p, content)
            })
            .collect()
    }

    /// A fresh restore target under `work/`.
    fn target(&mut self) -> PathBuf {
        self.targets += 1;
        self.f.path(format!("work/target{}", self.targets))
    }

    /// Runs `vault ARGS`, checking it ended by itself with an exit code, within the memory
    /// limit, without touching anything outside.
    fn run(&self, args: &[&std::ffi::OsStr]) -> Run {
        let limit = format!("ulimit -v {ADDRESS_SPACE_LIMIT_KIB} && exec \"$0\" \"$@\"");
        let cmd = VaultCmd::with_program(
            "sh",
            &["-c".into(), limit.into(), VAULT_BIN.into()],
            self.f.root(),
        )
        .env("VAULT_PASSWORD_FILE", self.f.password_file())
        .vault_dir(&self.f.vault())
        .args(args);
        let (run, peak) = run_measured(cmd);
        assert!(
            peak < RSS_LIMIT_BYTES,
            "{} peaked at {} MiB of memory\n{run:#?}",
            run.shown,
            peak >> 20
        );
        assert_eq!(
            self.outside_state(),
            self.before,
            "{} wrote outside the vault and the target\n{run:#?}",
            run.shown
        );
        run
    }

    /// `vault restore ID --target <fresh> EXTRA...`; returns the run and the target.
    fn restore(&mut self, id: &str, extra: &[&str]) -> (Run, PathBuf) {
        let target = self.target();
        let mut args: Vec<&std::ffi::OsStr> = vec!["restore".as_ref(), id.as_ref()];
        args.push("--target".as_ref());
        args.push(target.as_os_str());
        args.extend(extra.iter().map(|a| std::ffi::OsStr::new(*a)));
        (self.run(&args), target)
    }

    fn verify(&self, read_data: bool) -> Run {
        let mut args: Vec<&std::ffi::OsStr> = vec!["verify".as_ref()];
        if read_data {
            args.push("--read-data".as_ref());
        }
        self.run(&args)
    }

    /// `restore` and `verify` (with and without `--read-data`) all fail with `codes`, and say
    /// one of `needles`; `ls` does not crash.
    fn all_refuse(&mut self, id: &str, restore_codes: &[i32], needles: &[&str]) {
        let (run, _) = self.restore(id, &[]);
        expect(&run, restore_codes, needles);
        for read_data in [false, true] {
            expect(&self.verify(read_data), &[4], needles);
        }
        self.run(&["ls".as_ref(), id.as_ref()]);
    }
}

/// Asserts `run` exited with one of `codes` and its output holds one of `needles`.
fn expect(run: &Run, codes: &[i32], needles: &[&str]) {
    assert!(
        run.code.is_some_and(|c| codes.contains(&c)),
        "expected exit {codes:?}\n{run:#?}"
    );
    let out = format!("{}{}", run.stdout, run.stderr);
    assert!(
        needles.iter().any(|n| out.contains(n)),
        "output names none of {needles:?}\n{run:#?}"
    );
}

/// Runs `cmd` to its end, returning the run and the child's peak resident memory in bytes
/// (its VmHWM, sampled every 5 ms while it runs). Fails on a panic, on death by a signal (a stack overflow aborts),
/// and on a run that outlives [`RUN_DEADLINE`].
#[allow(
    clippy::zombie_processes,
    reason = "the child is reaped by wait4, for its rusage"
)]
fn run_measured(cmd: VaultCmd) -> (Run, u64) {
    let shown = cmd.shown();
    let mut child = cmd.spawn_capturing();
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            String::from_utf8_lossy(&v).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("stdout is piped")));
    let err = drain(Box::new(child.stderr.take().expect("stderr is piped")));
    let pid = child.id() as libc::pid_t;
    let started = Instant::now();
    let mut status = 0;
    // SAFETY: rusage is plain data; all-zero is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let mut killed = false;
    let mut peak = 0u64;
    loop {
        peak = peak.max(vault_hwm(pid));
        // SAFETY: `pid` is our own child, not yet reaped; the pointers are valid for the call.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if r == pid {
            break;
        }
        assert_eq!(r, 0, "wait4 failed: {}", std::io::Error::last_os_error());
        if !killed && started.elapsed() > RUN_DEADLINE {
            // SAFETY: signalling our own unreaped child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            killed = true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    let run = Run {
        shown,
        code,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    };
    assert!(!killed, "still running after {RUN_DEADLINE:?}: {run:#?}");
    run.assert_no_panic();
    assert!(
        code.is_some(),
        "killed by signal {}\n{run:#?}",
        libc::WTERMSIG(status)
    );
    // ru_maxrss would be the better figure, but exec carries the spawning process's high-water
    // mark into it: with other tests holding big buffers in this process, every child would
    // "peak" at their size. The sampled VmHWM belongs to the child's own address space.
    let _ = usage;
    (run, peak)
}

/// The high-water mark of resident memory of `pid` once it runs the vault binary (before its
/// exec it is the shell, or shares this process's memory), in bytes; 0 when not known.
fn vault_hwm(pid: libc::pid_t) -> u64 {
    let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else {
        return 0;
    };
    if !status
        .lines()
        .any(|l| l.starts_with("Name:") && l.ends_with("vault"))
    {
        return 0;
    }
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

fn bytes(p: &Path) -> &[u8] {
    p.as_os_str().as_bytes()
}

/// A file entry made of `chunks`, declaring `size`.
fn file_of(name: &[u8], chunks: Vec<BlobId>, size: u64) -> Entry {
    entry(name, Node::File { chunks }, 0o100644, size)
}

#[test]
fn absolute_names_are_refused() {
    for variant in 0..3 {
        let mut s = Scene::new();
        let mut c = s.crafter();
        let victim = s.outside.join("victim.txt");
        let (roots, shown) = match variant {
            // A file inside the snapshot named by an absolute path to a file outside.
            0 => {
                let evil = c.file(bytes(&victim), b"overwritten");
                (vec![c.dir(b"data", vec![evil])], victim.clone())
            }
            // A top-level directory named by an absolute path, holding a new file.
            1 => {
                let pwned = c.file(b"pwned.txt", b"planted");
                (
                    vec![c.dir(bytes(&s.outside), vec![pwned])],
                    s.outside.clone(),
                )
            }
            // A symlink named by an absolute path.
            _ => {
                let at = s.outside.join("link");
                (vec![Crafter::symlink(bytes(&at), b"/")], at)
            }
        };
        let id = c.finish(roots);
        let shown = shown.display().to_string();
        s.all_refuse(&id, &[1, 4], &[&shown]);
    }
}

#[test]
fn an_entry_under_a_symlink_out_of_the_target_is_refused() {
    // `link -> /abs/outside` (or `../../../outside`, which from `work/targetN/data` is the same
    // directory) followed by an entry that goes through it.
    for (link_target, through) in [
        (None, &b"link/victim.txt"[..]),
        (Some(&b"../../../outside"[..]), &b"link/sub/victim.txt"[..]),
    ] {
        let mut s = Scene::new();
        let mut c = s.crafter();
        let target = link_target.map_or_else(|| bytes(&s.outside).to_vec(), <[u8]>::to_vec);
        let link = Crafter::symlink(b"link", &target);
        let evil = c.file(through, b"overwritten through the link");
        let pwned = c.file(b"link/pwned.txt", b"planted through the link");
        let id = finish_data(c, vec![link, evil, pwned]);
        let shown = String::from_utf8_lossy(through).into_owned();
        s.all_refuse(&id, &[1, 4], &[&shown, "link/pwned.txt"]);
        // Restoring only the path behind the link is refused the same way.
        let (run, _) = s.restore(&id, &["--include", "data/link/victim.txt"]);
        expect(&run, &[1, 4], &["unsafe"]);
    }
}

/// Publishes a snapshot whose root holds one directory, `data`, of `entries`.
fn finish_data(mut c: Crafter, entries: Vec<Entry>) -> String {
    let data = c.dir(b"data", entries);
    c.finish(vec![data])
}

#[test]
fn a_planted_symlink_is_not_written_through_by_a_later_restore() {
    // One snapshot plants symlinks out of the target (restoring them is legitimate); the next,
    // restored over it with --overwrite, has directories and files at the same paths.
    let mut s = Scene::new();
    let c = s.crafter();
    let plant = vec![
        Crafter::symlink(b"abs", bytes(&s.outside)),
        Crafter::symlink(b"rel", b"../../../outside"),
        Crafter::symlink(b"victim.txt", bytes(&s.outside.join("victim.txt"))),
    ];
    let plant = finish_data(c, plant);
    let mut c = s.crafter();
    let v1 = c.file(b"victim.txt", b"overwritten through abs");
    let p1 = c.file(b"pwned.txt", b"planted through abs");
    let abs = c.dir(b"abs", vec![p1, v1]);
    let v2 = c.file(b"victim.txt", b"overwritten through rel");
    let sub = c.dir(b"sub", vec![v2]);
    let rel = c.dir(b"rel", vec![sub]);
    let through_dirs = finish_data(c, vec![abs, rel]);
    let mut c = s.crafter();
    let f1 = c.file(b"abs", b"a file now");
    let f2 = c.file(b"victim.txt", b"overwritten through the file link");
    let over_files = finish_data(c, vec![f1, f2]);

    let target = s.target();
    let restore = |id: &str, overwrite: bool| {
        let mut args: Vec<&std::ffi::OsStr> = vec!["restore".as_ref(), id.as_ref()];
        args.extend(["--target".as_ref(), target.as_os_str()]);
        if overwrite {
            args.push("--overwrite".as_ref());
        }
        s.run(&args)
    };
    restore(&plant, false).success();
    assert!(fs::symlink_metadata(target.join("data/rel"))
        .unwrap()
        .file_type()
        .is_symlink());
    let run = restore(&through_dirs, true);
    expect(&run, &[1, 4], &["symlink"]);
    // Files replace the links (never written through them).
    restore(&over_files, true).success();
    assert_eq!(
        fs::read(target.join("data/victim.txt")).unwrap(),
        b"overwritten through the file link"
    );
    assert!(fs::symlink_metadata(target.join("data/abs"))
        .unwrap()
        .is_file());
    // Every snapshot here is well-formed: verify has nothing to say.
    s.verify(true).success();
}

#[test]
fn hard_links_do_not_exist_in_the_format() {
    // The tree format has files, directories and symlinks only; inode and device numbers are
    // recorded for change detection and never used to link. Entries sharing an inode, or naming
    // the inode of a file outside, are restored as separate, fresh files.
    let mut s = Scene::new();
    let victim = fs::metadata(s.outside.join("victim.txt")).unwrap();
    let mut c = s.crafter();
    let mut a = c.file(b"a", b"same inode");
    let mut b = c.file(b"b", b"same inode");
    let mut v = c.file(b"v", b"the victim's inode");
    (a.inode, a.dev, b.inode, b.dev) = (42, 7, 42, 7);
    (v.inode, v.dev) = (victim.ino(), victim.dev());
    let id = finish_data(c, vec![a, b, v]);
    let (run, target) = s.restore(&id, &[]);
    run.success();
    for name in ["a", "b", "v"] {
        let m = fs::metadata(target.join("data").join(name)).unwrap();
        assert_eq!(m.nlink(), 1, "{name} was linked");
        assert_ne!(m.ino(), victim.ino(), "{name} is the victim's inode");
    }
    fs::write(target.join("data/a"), b"changed").unwrap();
    assert_eq!(fs::read(target.join("data/b")).unwrap(), b"same inode");
    s.verify(true).success();
}

#[test]
fn declared_sizes_that_lie_are_refused() {
    let mut s = Scene::new();
    let mut c = s.crafter();
    let five = c.put(BlobKind::Data, b"12345");
    let ok = c.file(b"ok.txt", b"fine");
    let huge = file_of(b"huge", vec![five], 1 << 60);
    let short = file_of(b"short", vec![five, five], 3);
    let long = file_of(b"long", vec![five, five], 11);
    let id = finish_data(c, vec![huge, long, ok, short]);
    let (run, target) = s.restore(&id, &[]);
    expect(&run, &[4], &["manifest says"]);
    for name in ["huge", "short", "long"] {
        assert!(run.stderr.contains(&format!("data/{name}")), "{run:#?}");
        assert!(
            fs::symlink_metadata(target.join("data").join(name)).is_err(),
            "{name} was left in the target"
        );
    }
    assert_eq!(fs::read(target.join("data/ok.txt")).unwrap(), b"fine");
    // `verify` adds up each file's chunks against its recorded size.
    for read_data in [false, true] {
        let run = s.verify(read_data);
        expect(&run, &[4], &["data/huge"]);
        assert!(
            run.stdout.contains("data/short") || run.stderr.contains("data/short"),
            "{run:#?}"
        );
    }
}

/// postcard's unsigned varint.
fn varint(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

#[test]
fn huge_declared_counts_in_a_tree_are_refused_without_allocating() {
    // Tree blobs whose length prefixes claim 2^62 entries, or one file of 2^62 chunks.
    let mut entries_claim = vec![1u8];
    varint(1 << 62, &mut entries_claim);
    entries_claim.extend_from_slice(b"\x01a");
    let mut chunks_claim = vec![1u8];
    varint(1, &mut chunks_claim);
    chunks_claim.extend_from_slice(b"\x01f\x00");
    varint(1 << 62, &mut chunks_claim);
    chunks_claim.extend_from_slice(&[7; 40]);
    for raw in [entries_claim, chunks_claim] {
        let mut s = Scene::new();
        let mut c = s.crafter();
        let bad = c.put(BlobKind::Tree, &raw);
        let dir = entry(b"data", Node::Dir { subtree: bad }, 0o40755, 0);
        let id = c.finish(vec![dir]);
        s.all_refuse(&id, &[4], &["does not decode"]);
    }
}

#[test]
fn a_file_of_many_chunk_references_restores_in_bounded_memory() {
    // An honest but extreme chunk list: 100,000 references to one 1-byte chunk.
    const N: usize = 100_000;
    let mut s = Scene::new();
    let mut c = s.crafter();
    let one = c.put(BlobKind::Data, b"x");
    let many = file_of(b"many", vec![one; N], N as u64);
    let id = finish_data(c, vec![many]);
    let (run, target) = s.restore(&id, &[]);
    run.success();
    assert_eq!(fs::read(target.join("data/many")).unwrap(), vec![b'x'; N]);
    s.verify(true).success();
}

/// A zstd frame of `n` zero bytes, streamed (never held whole), recording its size or not.
fn zstd_zeros(n: u64, record_size: bool) -> Vec<u8> {
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
    enc.include_contentsize(record_size).unwrap();
    if record_size {
        enc.set_pledged_src_size(Some(n)).unwrap();
    }
    let block = vec![0u8; 1 << 20];
    let mut left = n;
    while left > 0 {
        let k = left.min(block.len() as u64) as usize;
        enc.write_all(&block[..k]).unwrap();
        left -= k as u64;
    }
    enc.finish().unwrap()
}

/// Rewrites the frame-content-size field of a zstd frame whose field is 4 bytes long.
fn forge_frame_size(frame: &mut [u8], size: u32) {
    let fhd = frame[4];
    assert_eq!(fhd >> 6, 2, "expected a 4-byte frame content size");
    let single_segment = fhd & 0x20 != 0;
    assert_eq!(fhd & 0x03, 0, "no dictionary id");
    let at = if single_segment { 5 } else { 6 };
    frame[at..at + 4].copy_from_slice(&size.to_le_bytes());
}

#[test]
fn zstd_bombs_are_refused_before_they_inflate() {
    const GIB: u64 = 1 << 30;
    let mut s = Scene::new();
    let mut c = s.crafter();
    let mut files = Vec::new();
    // (name, stored bytes, declared raw length): each claims to be 1 KiB of plaintext.
    let mut forged = zstd_zeros(GIB, true);
    forge_frame_size(&mut forged, 1024);
    let bombs = [
        (&b"frame-says-1gib"[..], zstd_zeros(GIB, true)),
        (b"no-frame-size", zstd_zeros(GIB, false)),
        (b"frame-size-forged", forged),
    ];
    for (i, (name, stored)) in bombs.iter().enumerate() {
        let id = c
            .crypto()
            .blob_id(format!("claimed content {i}").as_bytes());
        c.put_stored(BlobKind::Data, id, Compression::Zstd, 1024, stored);
        files.push(file_of(name, vec![id], 1024));
    }
    // The same for a tree: a directory whose listing is a bomb.
    let tree_id = c.crypto().blob_id(b"claimed tree");
    c.put_stored(
        BlobKind::Tree,
        tree_id,
        Compression::Zstd,
        1024,
        &zstd_zeros(GIB, false),
    );
    files.push(entry(
        b"bomb-dir",
        Node::Dir { subtree: tree_id },
        0o40755,
        0,
    ));
    let id = finish_data(c, files);
    let (run, target) = s.restore(&id, &[]);
    expect(&run, &[4], &["zstd"]);
    for (name, _) in &bombs {
        let name = String::from_utf8_lossy(name);
        assert!(run.stderr.contains(&*name), "{name} not reported\n{run:#?}");
        assert!(fs::symlink_metadata(target.join("data").join(&*name)).is_err());
    }
    expect(&s.verify(false), &[4], &["bomb-dir"]);
    expect(
        &s.verify(true),
        &[4],
        &["bomb-dir", "fail their hash check"],
    );
}

#[test]
fn data_blobs_larger_than_any_chunk_are_refused_before_they_inflate() {
    // Frames that honestly hold the most a blob may (256 MiB), under ids they do not hash to: no
    // chunker makes a data blob over 16 MiB, so restore refuses them unread; two of them, one
    // per restore thread, would otherwise hold 512 MiB at once.
    let mut s = Scene::new();
    let mut c = s.crafter();
    let frame = zstd_zeros(u64::from(MAX_BLOB_RAW_BYTES), true);
    let mut files = Vec::new();
    for name in [&b"bomb-1"[..], b"bomb-2"] {
        let id = c.crypto().blob_id(name);
        c.put_stored(
            BlobKind::Data,
            id,
            Compression::Zstd,
            MAX_BLOB_RAW_BYTES,
            &frame,
        );
        files.push(file_of(name, vec![id], u64::from(MAX_BLOB_RAW_BYTES)));
    }
    let id = finish_data(c, files);
    let (run, _) = s.restore(&id, &[]);
    expect(&run, &[4], &["bomb-1"]);
    assert!(run.stderr.contains("bomb-2"), "{run:#?}");
    // `verify --read-data` refuses them unopened too, within the runner's memory bound.
    expect(&s.verify(true), &[4], &["fail their hash check"]);
}

/// A scene whose `data/ok.txt` is sound and whose `data/bad.bin` is in a pack crafted by
/// `hostile(raw pack with bad.bin's blob)`; the index is removed so every command indexes the
/// packs from their trailers, as on a vault handed over without one.
fn pack_scene(hostile: impl FnOnce(&RawPack) -> Vec<u8>) -> (Scene, String) {
    let s = Scene::new();
    let mut c = s.crafter();
    let mut raw = RawPack::new(c.crypto());
    let bad = raw.add(BlobKind::Data, b"the bad file's content");
    raw.add(BlobKind::Data, b"another blob in the same pack");
    c.write_pack_file(&hostile(&raw));
    let ok = c.file(b"ok.txt", b"fine");
    let bad = file_of(b"bad.bin", vec![bad.id], u64::from(bad.raw_len));
    let id = finish_data(c, vec![bad, ok]);
    for suffix in ["", "-wal", "-shm"] {
        let _ = fs::remove_file(s.f.vault().join(format!("index.sqlite{suffix}")));
    }
    (s, id)
}

#[test]
fn packs_whose_trailer_lies_are_refused() {
    type Lie = fn(&RawPack) -> Vec<u8>;
    let lies: [(Lie, &str); 4] = [
        // The footer's trailer length is larger than the whole file.
        (
            |p| p.finish(&p.entries, Some(p.bytes.len() as u32 + 4096)),
            "trailer length",
        ),
        // A blob placed past the end of the file.
        (
            |p| {
                let mut e = p.entries.clone();
                e[0].offset = p.bytes.len() as u64 + 1000;
                p.finish(&e, None)
            },
            "outside the pack",
        ),
        // Offset + length overflows u64.
        (
            |p| {
                let mut e = p.entries.clone();
                e[0].offset = u64::MAX - 10;
                p.finish(&e, None)
            },
            "outside the pack",
        ),
        // The footer's trailer length is not whole entries.
        (
            |p| {
                let true_len = p.finish(&p.entries, None).len() - p.bytes.len() - 44;
                p.finish(&p.entries, Some(true_len as u32 - 1))
            },
            "trailer length",
        ),
    ];
    for (lie, why) in lies {
        let (mut s, id) = pack_scene(lie);
        let (run, target) = s.restore(&id, &[]);
        expect(&run, &[4], &["bad.bin"]);
        assert_eq!(fs::read(target.join("data/ok.txt")).unwrap(), b"fine");
        expect(&s.verify(false), &[4], &["bad.bin"]);
        expect(&s.verify(true), &[4], &[why]);
    }
}

#[test]
fn overlapping_pack_entries_are_caught_by_the_blob_checks() {
    // The first blob's entry starts one byte into the second's bytes: the trailer parses, the
    // blob does not open.
    let (mut s, id) = pack_scene(|p| {
        let mut e = p.entries.clone();
        e[0].offset = e[1].offset + 1;
        e[0].stored_len = e[1].stored_len - 1;
        p.finish(&e, None)
    });
    let (run, target) = s.restore(&id, &[]);
    expect(&run, &[4], &["bad.bin"]);
    assert_eq!(fs::read(target.join("data/ok.txt")).unwrap(), b"fine");
    assert!(fs::symlink_metadata(target.join("data/bad.bin")).is_err());
    expect(&s.verify(true), &[4], &["fail their hash check"]);
}

#[test]
fn index_rows_that_lie_are_refused_before_allocating() {
    // The pack is sound; the index places the file's blob at an absurd offset with a 4 GiB
    // stored length (a vault's index.sqlite is as untrusted as its packs).
    for offset in [i64::MAX as u64 - 10, 1 << 40] {
        let mut s = Scene::new();
        let mut c = s.crafter();
        let mut raw = RawPack::new(c.crypto());
        let blob = raw.add(BlobKind::Data, b"content");
        let bytes = raw.finish(&raw.entries, None);
        let pack = c.write_pack_file(&bytes);
        let lie = PackEntry {
            offset,
            stored_len: u32::MAX,
            ..blob
        };
        c.index_pack(&pack, bytes.len() as u64, &[lie]);
        let ok = c.file(b"ok.txt", b"fine");
        let f = file_of(b"lied.bin", vec![blob.id], 7);
        let id = finish_data(c, vec![f, ok]);
        let (run, target) = s.restore(&id, &[]);
        expect(&run, &[4], &["lied.bin"]);
        assert_eq!(fs::read(target.join("data/ok.txt")).unwrap(), b"fine");
        // `verify` bounds every index row by its pack's size.
        expect(&s.verify(false), &[4], &["index row"]);
        expect(&s.verify(true), &[4], &["index row"]);
    }
}

#[test]
fn a_tree_cycle_through_the_index_is_caught_by_the_id_check() {
    // A tree cannot name itself (its id is the keyed hash of its bytes), so the cycle is made in
    // the index: `data/loop` names a subtree id the index places at `data`'s own tree.
    let mut s = Scene::new();
    let mut c = s.crafter();
    let fake = c.crypto().blob_id(b"the loop's subtree");
    let lp = entry(b"loop", Node::Dir { subtree: fake }, 0o40755, 0);
    let ok = c.file(b"ok.txt", b"fine");
    let data = c.dir(b"data", vec![lp, ok]);
    let Node::Dir { subtree: data_tree } = data.node else {
        unreachable!()
    };
    c.alias(fake, data_tree);
    let id = c.finish(vec![data]);
    s.all_refuse(&id, &[4], &["data/loop"]);
}

#[test]
fn ten_thousand_nested_directories_end_cleanly() {
    const DEPTH: usize = 10_000;
    let mut s = Scene::new();
    let mut c = s.crafter();
    let leaf = c.file(b"leaf", b"at the bottom");
    let mut cur = c.dir(b"d", vec![leaf]);
    for _ in 1..DEPTH {
        cur = c.dir(b"d", vec![cur]);
    }
    let id = c.finish(vec![cur]);
    // Deeper than PATH_MAX allows: restore stops with an error, having written only inside.
    let (run, target) = s.restore(&id, &[]);
    expect(&run, &[1, 4], &["too long"]);
    assert!(target.join("d/d/d").is_dir());
    // `verify` stops at its depth limit, within the runner's memory bound. (Not run here: `ls`
    // prints every full path, 100 MB of output at this depth.)
    expect(&s.verify(false), &[4], &["nested deeper than"]);
}
