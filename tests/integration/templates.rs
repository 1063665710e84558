//! The `template_only` policy and gate: secret-bearing config is stored only as a template, a
//! planted secret appears nowhere in the vault, and a file that holds a secret as stored, or that
//! could not be templated, fails the gate and leaves the last-known-good where it was.

use std::fs;
use std::path::Path;

use atlasvault::blob;
use atlasvault::pack::parse_pack;

use crate::common::*;
use crate::craft::Crafter;

/// Every secret planted below; none may appear in any byte of the vault.
const PLANTED: &[&str] = &[
    "sk-proj-PLANTEDa1b2c3d4e5f6g7h8i9j0KLMNOPQRSTuv",
    "correct-horse-PLANTED-battery-staple",
    "ghp_PLANTEDx9y8z7w6v5u4t3s2r1q0p9o8n7m6l5",
    "PLANTEDyamlSecretValue123",
    "PLANTED-toml-db-password-77",
];

fn plant(ws: &Path) {
    fs::create_dir_all(ws.join("conf")).unwrap();
    fs::write(
        ws.join(".env"),
        format!(
            "# gateway settings\nOPENAI_API_KEY={}\nDB_PASSWORD={}\nPORT=8080\n",
            PLANTED[0], PLANTED[1]
        ),
    )
    .unwrap();
    fs::write(
        ws.join("openclaw.json"),
        format!(
            "{{\n  \"gateway\": {{\"auth\": {{\"token\": \"{}\"}}, \"port\": 18789}},\n  \"model\": \"gpt-5\"\n}}\n",
            PLANTED[2]
        ),
    )
    .unwrap();
    fs::write(
        ws.join("conf/app.yaml"),
        format!("service:\n  name: bot\n  api_key: {}\n", PLANTED[3]),
    )
    .unwrap();
    fs::write(
        ws.join("conf/db.toml"),
        format!(
            "[db]\nhost = \"127.0.0.1\"\npassword = \"{}\"\n",
            PLANTED[4]
        ),
    )
    .unwrap();
    fs::write(ws.join("README.md"), "an ordinary file\n").unwrap();
}

/// Every blob of every pack, opened and decompressed, plus every other file of the vault as it is.
fn vault_plaintexts(f: &Fixture) -> Vec<(String, Vec<u8>)> {
    let crypto = f
        .open_vault(atlasvault::lock::LockMode::Shared)
        .crypto()
        .clone();
    let vault = f.vault();
    let vault = vault.as_path();
    let mut out = Vec::new();
    for rel in list_all(vault) {
        let path = vault.join(&rel);
        if !path.is_file() {
            continue;
        }
        let bytes = fs::read(&path).unwrap();
        if rel.starts_with("packs") {
            let entries = parse_pack(&crypto, &bytes).expect("pack parses");
            for e in entries {
                let stored = &bytes[e.offset as usize..e.offset as usize + e.stored_len as usize];
                let raw = blob::open(&crypto, &e.id, e.compression, e.raw_len, stored)
                    .expect("blob opens");
                out.push((format!("blob {} in {}", e.id, rel.display()), raw));
            }
        }
        out.push((rel.display().to_string(), bytes));
    }
    out
}

fn assert_no_planted_secret(f: &Fixture) {
    let all = vault_plaintexts(f);
    assert!(all.iter().any(|(n, _)| n.starts_with("blob")), "no blobs?");
    for (name, bytes) in &all {
        for secret in PLANTED {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{secret} found in {name}"
            );
        }
        assert!(
            !bytes.windows(7).any(|w| w == b"PLANTED"),
            "a planted marker found in {name}"
        );
    }
}

#[test]
fn planted_secrets_appear_in_no_byte_of_the_vault_and_restore_gives_templates() {
    let f = Fixture::with_vault();
    let ws = f.path("ws");
    plant(&ws);
    let snap = f
        .cmd()
        .args(["snapshot", "--json", "--template-only", "*.yaml"])
        .args(["--template-only", "conf/*.toml"])
        .arg(&ws)
        .run()
        .success()
        .json();
    assert_eq!(snap["promoted"], true, "{snap:#}");
    let id = snap["id"].as_str().unwrap();
    let manifest = manifest_json(&f, id);
    assert_eq!(manifest["template_only"]["templated"], 4, "{manifest:#}");
    // The audit log, the index and the manifests are plaintext on disk: the scan covers them too.
    assert_no_planted_secret(&f);

    let out = f.path("out");
    f.cmd()
        .args(["restore", "--lkg", "--target"])
        .arg(&out)
        .run()
        .success();
    let env = fs::read_to_string(out.join("ws/.env")).unwrap();
    assert!(env.starts_with("# gateway settings\n"), "{env}");
    // .env placeholders are single-quoted, so that a shell sourcing the template reads them as text.
    assert!(env.contains("OPENAI_API_KEY='<redacted:sha256:"), "{env}");
    assert!(env.contains("DB_PASSWORD='<redacted:sha256:"), "{env}");
    assert!(env.contains("PORT=8080"), "{env}");
    let json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(out.join("ws/openclaw.json")).unwrap()).unwrap();
    assert_eq!(json["gateway"]["port"], 18789);
    assert_eq!(json["model"], "gpt-5");
    let token = json["gateway"]["auth"]["token"].as_str().unwrap();
    assert!(token.starts_with("<redacted:sha256:"), "{token}");
    let yaml = fs::read_to_string(out.join("ws/conf/app.yaml")).unwrap();
    assert!(
        yaml.contains("name: bot") && yaml.contains("<redacted:sha256:"),
        "{yaml}"
    );
    let toml = fs::read_to_string(out.join("ws/conf/db.toml")).unwrap();
    assert!(
        toml.contains("host = \"127.0.0.1\"") && toml.contains("<redacted:sha256:"),
        "{toml}"
    );
    assert_eq!(
        fs::read(out.join("ws/README.md")).unwrap(),
        b"an ordinary file\n"
    );

    // A changed secret gives a different placeholder: the template shows that it changed.
    let before = env.clone();
    fs::write(
        ws.join(".env"),
        "# gateway settings\nOPENAI_API_KEY=sk-proj-rotated0000000000000000000000000\nDB_PASSWORD=correct-horse-PLANTED-battery-staple\nPORT=8080\n",
    )
    .unwrap();
    f.snapshot(&ws);
    let out2 = f.path("out2");
    f.cmd()
        .args(["restore", "latest", "--target"])
        .arg(&out2)
        .run()
        .success();
    let after = fs::read_to_string(out2.join("ws/.env")).unwrap();
    let line = |text: &str, key: &str| {
        text.lines()
            .find(|l| l.starts_with(key))
            .unwrap()
            .to_string()
    };
    assert_ne!(
        line(&before, "OPENAI_API_KEY"),
        line(&after, "OPENAI_API_KEY")
    );
    assert_eq!(line(&before, "DB_PASSWORD"), line(&after, "DB_PASSWORD"));
}

#[test]
fn config_that_cannot_be_templated_is_not_stored_and_fails_the_gate() {
    let f = Fixture::with_vault();
    let ws = f.path("ws");
    fs::create_dir_all(&ws).unwrap();
    fs::write(ws.join("openclaw.json"), "{\"port\": 1}\n").unwrap();
    fs::write(ws.join("notes.txt"), "keep me\n").unwrap();
    let good = f.snapshot(&ws);
    assert_eq!(good["promoted"], true, "{good:#}");
    let good = good["id"].as_str().unwrap().to_string();

    // Half-written by an editor: not valid JSON, with a secret inside.
    fs::write(
        ws.join("openclaw.json"),
        format!("{{\"token\": \"{}\", \"port\": ", PLANTED[2]),
    )
    .unwrap();
    let run = f
        .cmd()
        .args(["snapshot", "--json"])
        .arg(&ws)
        .run()
        .code(5)
        .stderr_has("openclaw.json");
    let v = run.json();
    let gate = gate_result(&v, "template_only");
    assert_eq!(gate["passed"], false, "{v:#}");
    let reasons = gate["reasons"].to_string();
    assert!(
        reasons.contains("openclaw.json") && reasons.contains("not valid JSON"),
        "{reasons}"
    );
    assert_eq!(lkg(&f).as_deref(), Some(good.as_str()));
    let rejected = v["id"].as_str().unwrap();
    let listed = f.cmd().args(["ls", rejected]).run().success();
    assert!(
        !listed.stdout.contains("openclaw.json") && listed.stdout.contains("notes.txt"),
        "{}",
        listed.stdout
    );
    assert_no_planted_secret(&f);
}

#[test]
fn a_raw_secret_in_a_stored_config_fails_the_gate_without_showing_it() {
    let f = Fixture::with_vault();
    let mut c = Crafter::open(&f);
    let env = c.file(
        b".env",
        b"API_KEY=sk-live-0123456789abcdefghijklmnopqrstuv\nPORT=1\n",
    );
    let dir = c.dir(b"data", vec![env]);
    let id = c.finish(vec![dir]);
    let run = f
        .cmd()
        .args(["promote", &id])
        .run()
        .code(5)
        .stdout_has("gate template_only FAILED")
        .stdout_has("data/.env: secret-looking value at API_KEY");
    assert!(!run.stdout.contains("sk-live"), "{}", run.stdout);
    assert_eq!(lkg(&f), None);
}

#[test]
fn a_bad_template_only_glob_is_a_clear_error() {
    let f = Fixture::with_vault();
    let ws = f.path("ws");
    fs::create_dir_all(&ws).unwrap();
    f.cmd()
        .args(["snapshot", "--template-only", "a[b"])
        .arg(&ws)
        .run()
        .one_line_error(1)
        .stderr_has("a[b");
    assert!(f.snapshot_ids().is_empty());
}
