//! Tests of the git sanity check: real repositories made by the `git` binary, then damaged,
//! and hand-made hostile bytes.

use std::cell::{Cell, RefCell};
use std::fs;
use std::io::Write;

use flate2::write::ZlibEncoder;
use flate2::Compression;

use super::fixture::{overwrite, Fixture, MemGitDir, PackLine, Recording};
use super::objects::apply_delta;
use super::*;

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
    let packed = fs::read_to_string(fixture.dot_git().join("packed-refs")).expect("packed-refs");
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
    let rel = "objects/pack/".to_owned() + pack.file_name().and_then(|n| n.to_str()).expect("name");
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
