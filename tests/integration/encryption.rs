//! Encryption at rest on the real binary: what the vault looks like to someone without the key
//! (no plaintext, unlinkable ids), what a wrong or missing password gets, tamper detection in each
//! kind of sealed object, and key rotation. (Every other integration test runs on an encrypted
//! vault too: `Fixture::with_vault` makes one.)

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use atlasvault::id::BlobId;
use atlasvault::lock::LockMode;
use atlasvault::pack::FOOTER_BYTES;

use crate::common::*;

const MARKER: &[u8] = b"PLAINTEXT-MARKER-7f3a9c";

/// A tree whose files hold the marker among random bytes, as text, and in a file name.
fn marked_data(f: &Fixture) -> PathBuf {
    let data = f.path("data");
    fs::create_dir_all(data.join("sub")).unwrap();
    let mut bin = random_bytes(1, 200_000);
    bin.extend_from_slice(MARKER);
    bin.extend_from_slice(&random_bytes(2, 200_000));
    fs::write(data.join("mixed.bin"), bin).unwrap();
    let text = [MARKER, b" in a text file\n"].concat().repeat(500);
    fs::write(data.join("sub/notes.txt"), text).unwrap();
    fs::write(data.join("PLAINTEXT-MARKER-7f3a9c.name"), b"x").unwrap();
    data
}

/// Paths under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    list_all(dir)
        .into_iter()
        .filter(|p| {
            fs::read(dir.join(p))
                .map(|b| b.windows(needle.len()).any(|w| w == needle))
                .unwrap_or(false)
        })
        .collect()
}

#[test]
fn no_plaintext_of_a_marker_is_under_packs_snapshots_or_refs() {
    let f = Fixture::with_vault();
    let data = marked_data(&f);
    let snap = f.snapshot(&data);
    assert_eq!(snap["promoted"], true, "{snap:#}");
    for dir in ["packs", "snapshots", "refs", "keys"] {
        let found = files_containing(&f.vault().join(dir), MARKER);
        assert!(found.is_empty(), "marker in {dir}: {found:?}");
        // Not in its hex or base form either (a manifest or ref is a hex envelope).
        let hex = hex::encode(MARKER);
        assert!(files_containing(&f.vault().join(dir), hex.as_bytes()).is_empty());
    }
    let out = f.path("out");
    f.restore("latest", &out);
    assert_same_tree(&data, &out.join("data"), &[]);

    // The check can fail: an unencrypted vault holds the same marker in plain sight.
    let plain = f.path("plain-vault");
    f.cmd_in(f.root())
        .vault_dir(&plain)
        .args(["init", "--encryption", "none"])
        .run()
        .success()
        .stdout_has("NOT encrypted");
    f.cmd_in(f.root())
        .vault_dir(&plain)
        .arg("snapshot")
        .arg(&data)
        .run()
        .success();
    assert!(!files_containing(&plain.join("packs"), MARKER).is_empty());
    for cmd in ["snapshots", "status"] {
        f.cmd_in(f.root())
            .vault_dir(&plain)
            .arg(cmd)
            .run()
            .success()
            .stderr_or_stdout_has("NOT encrypted");
    }
}

/// Every blob id a vault's index knows.
fn blob_ids(f: &Fixture, vault: &Path) -> HashSet<BlobId> {
    let secrets = atlasvault::keys::SecretSource::from_env_and(Some(f.password_file()), None);
    let v = atlasvault::Vault::open(vault, LockMode::Shared, None, &secrets).expect("open");
    let r = v.blob_reader().expect("reader");
    r.locations().ids().copied().collect()
}

#[test]
fn keyed_ids_differ_between_two_vaults_for_the_same_data() {
    let f = Fixture::with_vault();
    let data = marked_data(&f);
    f.snapshot(&data);
    let other = f.path("other-vault");
    f.cmd_in(f.root())
        .vault_dir(&other)
        .arg("init")
        .args(CHEAP_KDF)
        .run()
        .success();
    f.cmd_in(f.root())
        .vault_dir(&other)
        .arg("snapshot")
        .arg(&data)
        .run()
        .success();
    let a = blob_ids(&f, &f.vault());
    let b = blob_ids(&f, &other);
    // (The counts can differ too: each vault's chunker is seeded with its own key.)
    assert!(a.len() >= 4 && b.len() >= 4, "{} and {}", a.len(), b.len());
    assert!(
        a.is_disjoint(&b),
        "the same data has the same id in two vaults"
    );
    // Nor is any id the plain blake3 of a file's content.
    let plain = BlobId::of(&fs::read(data.join("PLAINTEXT-MARKER-7f3a9c.name")).unwrap());
    assert!(!a.contains(&plain));
}

#[test]
fn a_wrong_or_missing_password_is_one_line_and_exit_12() {
    let f = Fixture::with_vault();
    let data = marked_data(&f);
    f.snapshot(&data);
    let wrong = f.path("wrong");
    fs::write(&wrong, "not the password\n").unwrap();
    for cmd in [
        vec!["snapshots"],
        vec!["restore", "latest", "--target", "out"],
        vec!["verify"],
    ] {
        f.cmd()
            .env("VAULT_PASSWORD_FILE", &wrong)
            .args(&cmd)
            .run()
            .one_line_error(12)
            .stderr_has("wrong password");
    }
    f.cmd()
        .env_remove("VAULT_PASSWORD_FILE")
        .arg("snapshots")
        .run()
        .one_line_error(12)
        .stderr_has("VAULT_PASSWORD_FILE");
    assert!(!f.path("out").exists());
    // The other sources: a command, and the flag (which wins over the environment).
    f.cmd()
        .env_remove("VAULT_PASSWORD_FILE")
        .env(
            "VAULT_PASSWORD_COMMAND",
            format!("cat {}", f.password_file().display()),
        )
        .arg("snapshots")
        .run()
        .success();
    f.cmd()
        .env("VAULT_PASSWORD_FILE", &wrong)
        .arg("--password-file")
        .arg(f.password_file())
        .arg("snapshots")
        .run()
        .success();
    f.cmd()
        .env_remove("VAULT_PASSWORD_FILE")
        .env("VAULT_PASSWORD_COMMAND", "exit 3")
        .arg("snapshots")
        .run()
        .one_line_error(1);
}

#[test]
fn a_raw_key_file_opens_the_vault_it_was_made_for() {
    let f = Fixture::new();
    let key = f.path("vault.key");
    fs::write(&key, random_bytes(9, 64)).unwrap();
    f.cmd()
        .env_remove("VAULT_PASSWORD_FILE")
        .args(["init", "--new-key-file"])
        .arg(&key)
        .run()
        .success();
    let data = marked_data(&f);
    f.cmd()
        .env_remove("VAULT_PASSWORD_FILE")
        .env("VAULT_KEY_FILE", &key)
        .arg("snapshot")
        .arg(&data)
        .run()
        .success();
    let listed = f
        .cmd()
        .env_remove("VAULT_PASSWORD_FILE")
        .arg("--key-file")
        .arg(&key)
        .args(["key", "list", "--json"])
        .run()
        .success()
        .json();
    assert_eq!(listed[0]["kind"], "keyfile", "{listed:#}");
    // A password does not open a key-file key.
    f.cmd().arg("snapshots").run().one_line_error(12);
}

/// Where blob `id` is stored: (pack path, offset, stored length).
fn blob_spot(f: &Fixture, id: &BlobId) -> (PathBuf, u64, u32) {
    let v = f.open_vault(LockMode::Shared);
    let r = v.blob_reader().expect("reader");
    let loc = r.location(id).expect("blob is indexed");
    (
        PathBuf::from(r.pack_label(&loc.pack)),
        loc.entry.offset,
        loc.entry.stored_len,
    )
}

fn root_tree(f: &Fixture, snap: &str) -> BlobId {
    let v = f.open_vault(LockMode::Shared);
    v.resolve(snap).expect("snapshot").1.tree
}

#[test]
fn a_flipped_byte_in_each_sealed_object_is_reported_as_corruption() {
    let f = Fixture::with_vault();
    let data = marked_data(&f);
    let snap = f.snapshot(&data)["id"].as_str().unwrap().to_string();
    f.cmd().args(["verify", "--read-data"]).run().success();

    // A data blob: restore names the file and writes no garbage; verify names the pack.
    let chunk = first_chunk(&f.vault(), &snap, "data/sub/notes.txt");
    flip_byte(&chunk.pack, chunk.offset + u64::from(chunk.stored_len) / 2);
    let out = f.path("out");
    let run = f
        .cmd()
        .args(["restore", &snap, "--target"])
        .arg(&out)
        .run()
        .code(4);
    assert!(run.stderr.contains("notes.txt"), "{run:#?}");
    assert!(!out.join("data/sub/notes.txt").exists());
    f.cmd()
        .args(["verify", "--read-data"])
        .run()
        .code(4)
        .stdout_has(&chunk.pack_hex);
    flip_byte(&chunk.pack, chunk.offset + u64::from(chunk.stored_len) / 2); // undo
    f.cmd().args(["verify", "--read-data"]).run().success();

    // A tree blob: listing fails with the tree named, not with garbage entries.
    let tree = root_tree(&f, &snap);
    let (pack, offset, len) = blob_spot(&f, &tree);
    flip_byte(&pack, offset + u64::from(len) - 3);
    f.cmd()
        .args(["ls", &snap])
        .run()
        .code(4)
        .stderr_has(&tree.to_hex()[..16])
        .stderr_has("authentication failed");
    flip_byte(&pack, offset + u64::from(len) - 3);

    // A pack trailer, with the footer's checksum recomputed so that only the AEAD can tell.
    let bytes = fs::read(&chunk.pack).unwrap();
    let footer_at = bytes.len() - FOOTER_BYTES as usize;
    let tlen = u32::from_le_bytes(bytes[footer_at..footer_at + 4].try_into().unwrap()) as usize;
    let mut forged = bytes.clone();
    forged[footer_at - tlen / 2] ^= 0x20;
    let sum = blake3::hash(&forged[footer_at - tlen..footer_at]);
    forged[footer_at + 4..footer_at + 36].copy_from_slice(sum.as_bytes());
    fs::write(&chunk.pack, &forged).unwrap();
    let run = f.cmd().arg("reindex").run().code(4);
    assert!(
        run.stderr.contains("trailer") && run.stderr.contains("authentication failed"),
        "{run:#?}"
    );
    fs::write(&chunk.pack, &bytes).unwrap();
    f.cmd().arg("reindex").run().success();

    // A manifest.
    let manifest_path = f.vault().join(format!("snapshots/{snap}.json"));
    let manifest = fs::read(&manifest_path).unwrap();
    tamper_manifest(&f, &snap);
    f.cmd()
        .arg("verify")
        .run()
        .code(4)
        .stdout_has(&snap)
        .stdout_has("authentication failed");
    f.cmd()
        .args(["gate", &snap])
        .run()
        .code(5)
        .stdout_has("authentication failed");
    fs::write(&manifest_path, manifest).unwrap();
    f.cmd().arg("verify").run().success();

    // The last-known-good ref.
    let ref_path = f.vault().join("refs/last-known-good.json");
    let original = fs::read(&ref_path).unwrap();
    let mut bad = original.clone();
    let i = bad.len() / 2;
    bad[i] = if bad[i] == b'0' { b'1' } else { b'0' };
    fs::write(&ref_path, &bad).unwrap();
    f.cmd()
        .args(["restore", "--lkg", "--target"])
        .arg(f.path("out-lkg"))
        .run()
        .one_line_error(4)
        .stderr_has("last-known-good");
    fs::write(&ref_path, &original).unwrap();

    // A key file: its wrapped key no longer opens, which is a wrong password to the user.
    let key_path = list_all(&f.vault().join("keys")).remove(0);
    let key_path = f.vault().join("keys").join(key_path);
    let text = fs::read_to_string(&key_path).unwrap();
    let wrapped_at = text.find("\"wrapped\": \"").unwrap() + 14;
    let mut bytes = text.into_bytes();
    bytes[wrapped_at] = if bytes[wrapped_at] == b'0' {
        b'1'
    } else {
        b'0'
    };
    fs::write(&key_path, bytes).unwrap();
    f.cmd().arg("snapshots").run().one_line_error(12);
}

#[test]
fn key_rotation_keeps_every_snapshot_restorable() {
    let f = Fixture::with_vault();
    let data = marked_data(&f);
    let snap = f.snapshot(&data)["id"].as_str().unwrap().to_string();
    let keys = |f: &Fixture, pw: &Path| {
        f.cmd()
            .env("VAULT_PASSWORD_FILE", pw)
            .args(["key", "list", "--json"])
            .run()
            .success()
            .json()
            .as_array()
            .unwrap()
            .clone()
    };
    let first = keys(&f, &f.password_file());
    assert_eq!(first.len(), 1);
    let old_id = first[0]["id"].as_str().unwrap().to_string();

    let p2 = f.path("password-2");
    fs::write(&p2, "second password\n").unwrap();
    f.cmd()
        .args(["key", "add", "--new-password-file"])
        .arg(&p2)
        .args(["--argon2-memory-kib", "64", "--argon2-iterations", "1"])
        .run()
        .success();
    assert_eq!(keys(&f, &p2).len(), 2);
    // The key in use cannot be removed; with the new password the old one can.
    f.cmd()
        .args(["key", "remove", &old_id[..8]])
        .run()
        .one_line_error(1)
        .stderr_has("opened the vault");
    f.cmd()
        .env("VAULT_PASSWORD_FILE", &p2)
        .args(["key", "remove", &old_id[..8]])
        .run()
        .success();
    f.cmd().arg("snapshots").run().one_line_error(12);
    let out = f.path("out");
    f.cmd()
        .env("VAULT_PASSWORD_FILE", &p2)
        .args(["restore", &snap, "--target"])
        .arg(&out)
        .run()
        .success();
    assert_same_tree(&data, &out.join("data"), &[]);

    // passwd: the new password works, the old one no longer does, and nothing else changed.
    let p3 = f.path("password-3");
    fs::write(&p3, "third password\n").unwrap();
    f.cmd()
        .env("VAULT_PASSWORD_FILE", &p2)
        .args(["key", "passwd", "--new-password-file"])
        .arg(&p3)
        .args(["--argon2-memory-kib", "64", "--argon2-iterations", "1"])
        .run()
        .success();
    f.cmd()
        .env("VAULT_PASSWORD_FILE", &p2)
        .arg("snapshots")
        .run()
        .one_line_error(12);
    let left = keys(&f, &p3);
    assert_eq!(left.len(), 1);
    f.cmd()
        .env("VAULT_PASSWORD_FILE", &p3)
        .args(["key", "remove", left[0]["id"].as_str().unwrap()])
        .run()
        .one_line_error(1);
    f.cmd()
        .env("VAULT_PASSWORD_FILE", &p3)
        .args(["verify", "--read-data"])
        .run()
        .success();
    let audit = f
        .cmd()
        .env("VAULT_PASSWORD_FILE", &p3)
        .args(["audit", "--json"])
        .run()
        .success()
        .json_lines();
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .filter(|a| a.starts_with("key-"))
        .collect();
    assert_eq!(actions, ["key-add", "key-remove", "key-passwd"]);

    // A stray file in keys/ does not lock anyone out; `key list` names it.
    fs::write(f.vault().join("keys/0123.json"), "{}").unwrap();
    f.cmd()
        .env("VAULT_PASSWORD_FILE", &p3)
        .arg("snapshots")
        .run()
        .success();
    f.cmd()
        .env("VAULT_PASSWORD_FILE", &p3)
        .args(["key", "list"])
        .run()
        .one_line_error(4)
        .stderr_has("0123.json");
}
