use std::ffi::OsString;

use super::file::{Wrapping, KDF_RUNS};
use super::secret::new_secret_from;
use super::*;

const VAULT: &str = "3f1c0a7e9b2d4c6e8f0a1b3c5d7e9f1a2b4c6d8e0f1a3b5c7d9e1f2a4b6c8d0e";
const FAST: KdfParams = KdfParams {
    memory_kib: 64,
    iterations: 1,
    parallelism: 1,
};

fn password(p: &str) -> Secret {
    Secret::Password(p.as_bytes().to_vec())
}

fn raw_key(fill: u8) -> Secret {
    Secret::KeyFile(vec![fill; 32])
}

fn make(master: &MasterKey, secret: &Secret) -> KeyFile {
    KeyFile::create(
        master,
        secret,
        &FAST,
        VAULT,
        "host1",
        "alice",
        "2026-11-02T10:00:00Z",
    )
    .unwrap()
}

fn kdf_runs() -> usize {
    KDF_RUNS.with(|c| c.get())
}

fn json(kf: &KeyFile) -> serde_json::Value {
    serde_json::from_slice(&kf.to_bytes()).unwrap()
}

fn parse_value(v: &serde_json::Value) -> Result<KeyFile, KeyError> {
    KeyFile::parse(&serde_json::to_vec(v).unwrap())
}

fn assert_corrupt(r: Result<KeyFile, KeyError>, needle: &str) {
    match r {
        Err(KeyError::Corrupt { reason, .. }) => {
            assert!(reason.contains(needle), "{reason:?} lacks {needle:?}")
        }
        other => panic!("expected Corrupt({needle}), got {other:?}"),
    }
}

#[test]
fn password_key_file_round_trips() {
    let master = MasterKey::generate().unwrap();
    let kf = make(&master, &password("correct horse"));
    let back = KeyFile::parse(&kf.to_bytes()).unwrap();
    assert_eq!(back, kf);
    assert_eq!(back.kind(), KeyKind::Password);
    assert_eq!(back.kdf(), Some(&FAST));
    assert_eq!(
        (back.created(), back.host(), back.user()),
        ("2026-11-02T10:00:00Z", "host1", "alice")
    );
    let opened = back.unwrap_key(&password("correct horse"), VAULT).unwrap();
    assert_eq!(opened.as_bytes(), master.as_bytes());

    let v = json(&kf);
    assert_eq!(v["version"], 1);
    assert_eq!(v["kind"], "password");
    assert_eq!(v["kdf"]["algorithm"], "argon2id");
    assert_eq!(v["kdf"]["version"], 19);
    assert_eq!(v["kdf"]["salt"].as_str().unwrap().len(), 64);
    assert_eq!(v["nonce"].as_str().unwrap().len(), 48);
    assert_eq!(v["wrapped"].as_str().unwrap().len(), 96);
    assert_eq!(v["id"].as_str().unwrap(), kf.id().to_hex());
    assert!(kf.to_bytes().ends_with(b"}\n"));
}

#[test]
fn raw_key_file_round_trips_without_kdf() {
    let master = MasterKey::generate().unwrap();
    let kf = make(&master, &raw_key(7));
    let back = KeyFile::parse(&kf.to_bytes()).unwrap();
    assert_eq!(back.kind(), KeyKind::KeyFile);
    assert!(json(&kf).get("kdf").is_none());
    let opened = back.unwrap_key(&raw_key(7), VAULT).unwrap();
    assert_eq!(opened.as_bytes(), master.as_bytes());
}

#[test]
fn fresh_ids_salts_and_nonces_differ() {
    let master = MasterKey::generate().unwrap();
    let a = make(&master, &password("pw"));
    let b = make(&master, &password("pw"));
    assert_ne!(a.id(), b.id());
    assert_ne!(json(&a)["kdf"]["salt"], json(&b)["kdf"]["salt"]);
    assert_ne!(json(&a)["nonce"], json(&b)["nonce"]);
    assert_ne!(MasterKey::generate().unwrap().as_bytes(), master.as_bytes());
}

#[test]
fn wrong_secret_is_wrong_secret() {
    let master = MasterKey::generate().unwrap();
    let pw = make(&master, &password("right"));
    let raw = make(&master, &raw_key(1));
    assert!(matches!(
        pw.unwrap_key(&password("wrong"), VAULT),
        Err(KeyError::WrongSecret)
    ));
    assert!(matches!(
        raw.unwrap_key(&raw_key(2), VAULT),
        Err(KeyError::WrongSecret)
    ));
    // The other kind of secret is refused before any KDF runs.
    let before = kdf_runs();
    assert!(matches!(
        pw.unwrap_key(&raw_key(1), VAULT),
        Err(KeyError::WrongSecret)
    ));
    assert!(matches!(
        raw.unwrap_key(&password("right"), VAULT),
        Err(KeyError::WrongSecret)
    ));
    assert_eq!(kdf_runs(), before);
}

#[test]
fn key_file_of_another_vault_or_renamed_does_not_open() {
    let master = MasterKey::generate().unwrap();
    let kf = make(&master, &password("pw"));
    assert!(matches!(
        kf.unwrap_key(&password("pw"), "another-vault"),
        Err(KeyError::WrongSecret)
    ));
    let mut renamed = kf.clone();
    renamed.id = KeyId([0xaa; KEY_ID_BYTES]);
    assert!(matches!(
        renamed.unwrap_key(&password("pw"), VAULT),
        Err(KeyError::WrongSecret)
    ));
}

#[test]
fn flipped_bits_in_wrapped_nonce_or_salt_do_not_open() {
    let master = MasterKey::generate().unwrap();
    let kf = make(&master, &password("pw"));
    for i in 0..WRAPPED_BYTES {
        let mut bad = kf.clone();
        bad.wrapped[i] ^= 0x01;
        assert!(matches!(
            bad.unwrap_key(&password("pw"), VAULT),
            Err(KeyError::WrongSecret)
        ));
    }
    for i in 0..NONCE_BYTES {
        let mut bad = kf.clone();
        bad.nonce[i] ^= 0x80;
        assert!(matches!(
            bad.unwrap_key(&password("pw"), VAULT),
            Err(KeyError::WrongSecret)
        ));
    }
    let mut bad = kf.clone();
    if let Wrapping::Password { salt, .. } = &mut bad.wrapping {
        salt[5] ^= 0x01;
    }
    assert!(matches!(
        bad.unwrap_key(&password("pw"), VAULT),
        Err(KeyError::WrongSecret)
    ));
}

/// Any one-bit change in the stored text either fails cleanly or, when it only touched
/// unauthenticated metadata, still yields the same master key; never another key.
#[test]
fn every_bit_flip_in_the_text_fails_cleanly_or_yields_the_same_key() {
    let master = MasterKey::generate().unwrap();
    for secret in [password("pw"), raw_key(9)] {
        let bytes = make(&master, &secret).to_bytes();
        for i in 0..bytes.len() {
            for bit in [0x01u8, 0x20, 0x80] {
                let mut bad = bytes.clone();
                bad[i] ^= bit;
                match KeyFile::parse(&bad) {
                    Err(KeyError::Corrupt { .. }) => {}
                    Err(e) => panic!("byte {i}: unexpected {e:?}"),
                    Ok(kf) => match kf.unwrap_key(&secret, VAULT) {
                        Ok(k) => assert_eq!(k.as_bytes(), master.as_bytes(), "byte {i}"),
                        Err(KeyError::WrongSecret) => {}
                        Err(e) => panic!("byte {i}: unexpected {e:?}"),
                    },
                }
            }
        }
    }
}

#[test]
fn parse_rejects_unknown_fields() {
    let kf = make(&MasterKey::generate().unwrap(), &password("pw"));
    let mut v = json(&kf);
    v["extra"] = 1.into();
    assert_corrupt(parse_value(&v), "unknown field");
    let mut v = json(&kf);
    v["kdf"]["pepper"] = "x".into();
    assert_corrupt(parse_value(&v), "unknown field");
}

#[test]
fn parse_rejects_bad_hex() {
    let kf = make(&MasterKey::generate().unwrap(), &password("pw"));
    let cases: [(&[&str], &str, &str); 7] = [
        (&["id"], "zz", "id"),
        (&["id"], &"A".repeat(32), "id"),
        (&["nonce"], &"0".repeat(46), "nonce"),
        (&["nonce"], &"g".repeat(48), "nonce"),
        (&["wrapped"], &"0".repeat(98), "wrapped"),
        (&["kdf", "salt"], &"0".repeat(62), "salt"),
        (&["kdf", "salt"], &"0".repeat(63), "salt"),
    ];
    for (path, value, needle) in cases {
        let mut v = json(&kf);
        let mut slot = &mut v;
        for key in path {
            slot = &mut slot[*key];
        }
        *slot = value.into();
        assert_corrupt(parse_value(&v), needle);
    }
}

#[test]
fn parse_rejects_absurd_or_foreign_kdf() {
    let kf = make(&MasterKey::generate().unwrap(), &password("pw"));
    let cases: [(&str, serde_json::Value, &str); 7] = [
        ("memory_kib", (100u64 * 1024 * 1024).into(), "memory"),
        ("memory_kib", 4.into(), "memory"),
        ("iterations", 0.into(), "iterations"),
        ("iterations", 1_000_000.into(), "iterations"),
        ("parallelism", 17.into(), "parallelism"),
        ("algorithm", "argon2i".into(), "argon2id"),
        ("version", 16.into(), "version"),
    ];
    for (field, value, needle) in cases {
        let mut v = json(&kf);
        v["kdf"][field] = value;
        assert_corrupt(parse_value(&v), needle);
    }
    // memory_kib beyond u32 is a type error, still Corrupt.
    let mut v = json(&kf);
    v["kdf"]["memory_kib"] = (1u64 << 40).into();
    assert_corrupt(parse_value(&v), "");
}

#[test]
fn parse_rejects_oversize_versions_and_mismatched_kinds() {
    let mut big = b"{\"version\":1,\"host\":\"".to_vec();
    big.resize(KEY_FILE_MAX_BYTES + 1, b'a');
    assert_corrupt(KeyFile::parse(&big), "limit");

    let master = MasterKey::generate().unwrap();
    let mut v = json(&make(&master, &password("pw")));
    v["version"] = 2.into();
    v["future"] = true.into();
    assert_corrupt(parse_value(&v), "unsupported version 2");

    let mut v = json(&make(&master, &password("pw")));
    v["kind"] = "keyfile".into();
    assert_corrupt(parse_value(&v), "with a kdf");

    let mut v = json(&make(&master, &raw_key(1)));
    v["kind"] = "password".into();
    assert_corrupt(parse_value(&v), "without kdf");

    assert_corrupt(KeyFile::parse(b""), "");
    assert_corrupt(KeyFile::parse(b"\xff\xfe"), "");
    assert_corrupt(KeyFile::parse(b"[1,2]"), "");
}

#[test]
fn parse_errors_are_one_printable_line() {
    let kf = make(&MasterKey::generate().unwrap(), &password("pw"));
    let mut v = json(&kf);
    v["\u{1b}[31mevil\nfield"] = 1.into();
    let err = parse_value(&v).unwrap_err().to_string();
    assert!(!err.chars().any(char::is_control), "{err:?}");

    let mut v = json(&kf);
    v["host"] = "evil\u{1b}[2J".into();
    assert_corrupt(parse_value(&v), "control characters");
}

#[test]
fn create_cleans_metadata_and_refuses_weak_secrets() {
    let master = MasterKey::generate().unwrap();
    let long = "h".repeat(1000);
    let kf = KeyFile::create(
        &master,
        &password("pw"),
        &FAST,
        VAULT,
        &long,
        "bob\u{7}",
        "now",
    )
    .unwrap();
    assert_eq!(kf.host().len(), META_MAX_BYTES);
    assert_eq!(kf.user(), "bob?");
    assert_eq!(KeyFile::parse(&kf.to_bytes()).unwrap(), kf);

    let create = |s: &Secret, kdf: &KdfParams| {
        KeyFile::create(&master, s, kdf, VAULT, "h", "u", "now").map(|_| ())
    };
    assert!(matches!(
        create(&password(""), &FAST),
        Err(KeyError::Invalid(_))
    ));
    assert!(matches!(
        create(&Secret::KeyFile(vec![1; 31]), &FAST),
        Err(KeyError::Invalid(_))
    ));
    let absurd = KdfParams {
        memory_kib: u32::MAX,
        ..FAST
    };
    assert!(matches!(
        create(&password("pw"), &absurd),
        Err(KeyError::Invalid(_))
    ));
}

#[test]
fn kdf_params_bounds() {
    KdfParams::default().validate().unwrap();
    assert_eq!(KdfParams::default().memory_kib, 65536);
    FAST.validate().unwrap();
    let ok = |m, t, p| {
        KdfParams {
            memory_kib: m,
            iterations: t,
            parallelism: p,
        }
        .validate()
        .is_ok()
    };
    assert!(ok(8, 1, 1));
    assert!(ok(128, 100, 16));
    assert!(ok(4 * 1024 * 1024, 1, 1));
    assert!(!ok(7, 1, 1));
    assert!(!ok(127, 1, 16));
    assert!(!ok(4 * 1024 * 1024 + 1, 1, 1));
    assert!(!ok(64, 0, 1));
    assert!(!ok(64, 101, 1));
    assert!(!ok(64, 1, 0));
    assert!(!ok(256, 1, 17));
}

#[test]
fn unlock_picks_the_matching_file_and_skips_the_other_kind() {
    let master = MasterKey::generate().unwrap();
    let files = vec![
        make(&master, &raw_key(1)),
        make(&master, &password("alice")),
        make(&master, &raw_key(2)),
        make(&master, &password("bob")),
    ];

    let before = kdf_runs();
    let (i, key) = unlock(&files, &password("bob"), VAULT).unwrap();
    assert_eq!(i, 3);
    assert_eq!(key.as_bytes(), master.as_bytes());
    assert_eq!(
        kdf_runs() - before,
        2,
        "argon2 ran only for the password files"
    );

    let before = kdf_runs();
    let (i, _) = unlock(&files, &raw_key(2), VAULT).unwrap();
    assert_eq!(i, 2);
    assert_eq!(kdf_runs(), before, "a raw key file never runs argon2");

    let before = kdf_runs();
    assert!(matches!(
        unlock(&files, &password("mallory"), VAULT),
        Err(KeyError::WrongSecret)
    ));
    assert_eq!(kdf_runs() - before, 2);
    assert!(matches!(
        unlock(&files, &password("bob"), "other-vault"),
        Err(KeyError::WrongSecret)
    ));
    assert!(matches!(
        unlock(&files[..1], &password("bob"), VAULT),
        Err(KeyError::WrongSecret)
    ));
    assert!(matches!(
        unlock(&[], &password("bob"), VAULT),
        Err(KeyError::Corrupt { .. })
    ));
}

#[test]
fn password_files_lose_exactly_one_trailing_newline() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&[u8], Option<&[u8]>); 8] = [
        (b"pw\n", Some(b"pw")),
        (b"pw\r\n", Some(b"pw")),
        (b"pw", Some(b"pw")),
        (b"pw\n\n", Some(b"pw\n")),
        (b" pw \n", Some(b" pw ")),
        (b"pw\r", Some(b"pw\r")),
        (b"\n", None),
        (b"", None),
    ];
    for (i, (content, want)) in cases.into_iter().enumerate() {
        let path = dir.path().join(format!("pw{i}"));
        std::fs::write(&path, content).unwrap();
        let source = SecretSource {
            password_file: Some(path),
            ..SecretSource::default()
        };
        match (source.secret("vault password"), want) {
            (Ok(Secret::Password(ref got)), Some(want)) => assert_eq!(got, want),
            (Err(KeyError::Invalid(msg)), None) => assert!(msg.contains("empty")),
            (got, want) => panic!("{content:?}: got {got:?}, want {want:?}"),
        }
    }
    let missing = SecretSource {
        password_file: Some(dir.path().join("nope")),
        ..SecretSource::default()
    };
    assert!(matches!(
        missing.secret("vault password"),
        Err(KeyError::Io { .. })
    ));
}

#[test]
fn raw_key_files_are_taken_whole_and_must_be_long_enough() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.key");
    let mut content = vec![0x42u8; 32];
    content.push(b'\n');
    std::fs::write(&good, &content).unwrap();
    let source = SecretSource {
        key_file: Some(good),
        ..SecretSource::default()
    };
    match source.secret("vault key") {
        Ok(Secret::KeyFile(ref got)) => assert_eq!(*got, content),
        other => panic!("{other:?}"),
    }
    let short = dir.path().join("short.key");
    std::fs::write(&short, [1u8; 31]).unwrap();
    let source = SecretSource {
        key_file: Some(short),
        ..SecretSource::default()
    };
    assert!(matches!(
        source.secret("vault key"),
        Err(KeyError::Invalid(_))
    ));
}

#[test]
fn password_command_success_failure_and_empty_output() {
    let cmd = |c: &str| {
        SecretSource {
            env_password_command: Some(c.into()),
            ..SecretSource::default()
        }
        .secret("vault password")
    };
    match cmd("printf 'hunter2\\n'") {
        Ok(Secret::Password(ref p)) => assert_eq!(p, b"hunter2"),
        other => panic!("{other:?}"),
    }
    match cmd("echo leaked-secret; exit 1") {
        Err(KeyError::Command(msg)) => {
            assert!(msg.contains("code 1"), "{msg}");
            assert!(!msg.contains("leaked-secret"), "{msg}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(cmd("true"), Err(KeyError::Command(m)) if m.contains("no password")));
    assert!(matches!(cmd("echo"), Err(KeyError::Command(_))));
    assert!(
        matches!(cmd("head -c 70000 /dev/zero"), Err(KeyError::Command(m)) if m.contains("more than"))
    );
}

#[test]
fn flags_beat_environment_and_nothing_set_names_the_variables() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("flag");
    let env = dir.path().join("env");
    let key = dir.path().join("key");
    std::fs::write(&flag, "from-flag\n").unwrap();
    std::fs::write(&env, "from-env\n").unwrap();
    std::fs::write(&key, [3u8; 32]).unwrap();
    let base = SecretSource {
        env_password_file: Some(env.clone()),
        env_password_command: Some("echo from-command".into()),
        env_key_file: Some(key.clone()),
        ..SecretSource::default()
    };
    let get = |s: &SecretSource| match s.secret("vault password") {
        Ok(Secret::Password(ref p)) => String::from_utf8(p.clone()).unwrap(),
        Ok(Secret::KeyFile(_)) => "raw key file".into(),
        Err(e) => format!("error: {e}"),
    };
    let with = |f: &dyn Fn(&mut SecretSource)| {
        let mut s = base.clone();
        f(&mut s);
        get(&s)
    };
    assert_eq!(with(&|s| s.password_file = Some(flag.clone())), "from-flag");
    assert_eq!(with(&|s| s.key_file = Some(key.clone())), "raw key file");
    assert_eq!(with(&|_| {}), "from-env");
    assert_eq!(with(&|s| s.env_password_file = None), "from-command");
    assert_eq!(
        with(&|s| {
            s.env_password_file = None;
            s.env_password_command = None;
        }),
        "raw key file"
    );
    assert!(with(&|s| {
        s.password_file = Some(flag.clone());
        s.key_file = Some(key.clone());
    })
    .contains("not both"));

    match SecretSource::default().secret("vault password") {
        Err(KeyError::NoSecret(msg)) => {
            for var in [ENV_PASSWORD_FILE, ENV_PASSWORD_COMMAND, ENV_KEY_FILE] {
                assert!(msg.contains(var), "{msg}");
            }
        }
        other => panic!("{other:?}"),
    }
}

/// Through `from_lookup`: `std::env::set_var` in a multi-threaded test binary races with
/// every `getenv` made from C (sqlite, libc), so no test touches the real environment.
#[test]
fn environment_variables_are_read_and_empty_ones_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "env-password\n").unwrap();
    let env = |file: &str| {
        let vars = [
            (ENV_PASSWORD_FILE, OsString::from(file)),
            (ENV_PASSWORD_COMMAND, "printf from-command".into()),
            (ENV_KEY_FILE, "".into()),
        ];
        move |name: &str| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.clone())
        }
    };
    let s = SecretSource::from_lookup(None, None, false, env(pw.to_str().unwrap()));
    assert!(
        matches!(s.secret("vault password"), Ok(Secret::Password(ref p)) if p == b"env-password")
    );
    assert_eq!(s.env_key_file, None);

    let s = SecretSource::from_lookup(None, None, false, env(""));
    assert!(
        matches!(s.secret("vault password"), Ok(Secret::Password(ref p)) if p == b"from-command")
    );
    let debug = format!("{s:?}");
    assert!(!debug.contains("printf"), "{debug}");

    // The real environment is only read, never written.
    let s = SecretSource::from_env_and(Some(pw.clone()), None);
    assert_eq!(s.password_file, Some(pw));
}

#[test]
fn new_secret_reads_one_source_or_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("new");
    std::fs::write(&pw, "new-password\r\n").unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, [5u8; 64]).unwrap();
    assert!(matches!(
        new_secret_from(Some(&pw), None, false),
        Ok(Secret::Password(ref p)) if p == b"new-password"
    ));
    assert!(matches!(
        new_secret_from(None, Some(&key), false),
        Ok(Secret::KeyFile(ref k)) if k.len() == 64
    ));
    assert!(matches!(
        new_secret_from(Some(&pw), Some(&key), false),
        Err(KeyError::Invalid(_))
    ));
    assert!(matches!(
        new_secret_from(None, None, false),
        Err(KeyError::NoSecret(m)) if m.contains("--new-password-file")
    ));
}

#[test]
fn debug_never_shows_secret_bytes() {
    let master = MasterKey([0xab; 32]);
    assert_eq!(format!("{master:?}"), "MasterKey(..)");
    for s in [password("hunter2"), Secret::KeyFile(b"hunter2".repeat(5))] {
        let d = format!("{s:?}");
        assert!(!d.contains("hunter2") && !d.contains("104"), "{d}");
    }
    let kf = make(&master, &password("hunter2"));
    let d = format!("{kf:?}");
    assert!(
        !d.contains("hunter2") && !d.contains("171, 171, 171"),
        "{d}"
    );
}

#[test]
fn key_id_parses_its_own_display() {
    let id = KeyId([0x1f; KEY_ID_BYTES]);
    assert_eq!(id.to_hex().parse::<KeyId>().unwrap(), id);
    assert_eq!(KeyId::from_hex(&id.to_hex().to_uppercase()).unwrap(), id);
    assert!(KeyId::from_hex("1f1f").is_err());
    assert_eq!(format!("{id:?}"), "KeyId(1f1f1f1f)");
}
