use super::*;
use proptest::prelude::*;

const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
const SK: &str = "sk-proj-4fG7hK2mQ9xZ1vB8nL3pR6tY0wE5uI7o";
const GHP: &str = "ghp_aB3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF3hJ6";
const ENTROPY: &str = "q8Zx4hTbW2mK9pLr7VnC3sYd";
const PASSWORD: &str = "hunter2-correct-horse";
const DB_PASS: &str = "s3cr3tDbPa55";
const PEM: &str =
    "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n";

/// Values that must never survive a render.
fn secrets() -> Vec<&'static str> {
    vec![
        JWT,
        SK,
        GHP,
        ENTROPY,
        PASSWORD,
        DB_PASS,
        "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC",
    ]
}

/// Values that must survive a render untouched.
const KEPT: &[&str] = &[
    "https://api.example.com/v1/chat",
    "/var/lib/atlasvault/data/backups",
    "anthropic/claude-opus-4-5-20251101",
    "production-database-primary-cluster",
    "gpt-4o-mini-2024-07-18",
    "jane.doe@example.com",
    "${OPENAI_API_KEY}",
];

fn json_fixture(password: &str) -> String {
    let pem = serde_json::Value::String(PEM.to_owned());
    format!(
        r#"{{
  "gateway": {{ "port": 18789, "auth": {{ "mode": "token", "token": "abc" }} }},
  "password": "{password}",
  "maxTokens": 8192,
  "pin_token": 1234,
  "enabled": true,
  "notes": null,
  "models": {{ "session": "{JWT}", "openai": "{SK}", "gh": "{GHP}", "blob": "{ENTROPY}", "key": {pem} }},
  "db": "postgres://app:{DB_PASS}@db.internal:5432/app",
  "kept": ["{}", "{}", "{}", "{}", "{}", "{}", "{}"],
  "emptyPassword": ""
}}
"#,
        KEPT[0], KEPT[1], KEPT[2], KEPT[3], KEPT[4], KEPT[5], KEPT[6]
    )
}

fn toml_fixture(password: &str) -> String {
    format!(
        r#"# top comment
name = "vault"  # trailing comment
[gateway]
port = 18789
password = "{password}"
[models]
session = "{JWT}"
openai = '{SK}'
gh = "{GHP}"
blob = "{ENTROPY}"
key = """
{PEM}"""
db = "postgres://app:{DB_PASS}@db.internal:5432/app"
kept = ["{}", "{}", "{}", "{}", "{}", "{}", "{}"]
[[servers]]
api_key = "{SK}"
host = "a.example.com"
"#,
        KEPT[0], KEPT[1], KEPT[2], KEPT[3], KEPT[4], KEPT[5], KEPT[6]
    )
}

fn yaml_fixture(password: &str) -> String {
    format!(
        r#"# a comment
name: vault
gateway:
  port: 18789
  password: "{password}"
models:
  session: {JWT}
  openai: {SK}
  gh: {GHP}
  blob: {ENTROPY}
  key: |
    -----BEGIN PRIVATE KEY-----
    MIIEvQIBADANBgkqhkiG9w0BAQEFAASC
    -----END PRIVATE KEY-----
  db: postgres://app:{DB_PASS}@db.internal:5432/app
kept: ["{}", "{}", "{}", "{}", "{}", "{}", "{}"]
secrets:
  - api_key: {SK}
"#,
        KEPT[0], KEPT[1], KEPT[2], KEPT[3], KEPT[4], KEPT[5], KEPT[6]
    )
}

fn env_fixture(password: &str) -> String {
    format!(
        "# comment line\n\nexport DB_PASSWORD={password}\nSESSION=\"{JWT}\" # inline comment\n\
             OPENAI='{SK}'\nGH={GHP}\nBLOB={ENTROPY}\nKEY=\"-----BEGIN PRIVATE KEY-----\n\
             MIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\"\n\
             DATABASE_URL=postgres://app:{DB_PASS}@db.internal:5432/app\n\
             URL={}\nDATA_DIR={}\nMODEL={}\nNAME={}\nOTHER_MODEL={}\nEMAIL={}\nREF={}\n\
             EMPTY_TOKEN=\n   \n# trailing comment\n",
        KEPT[0], KEPT[1], KEPT[2], KEPT[3], KEPT[4], KEPT[5], KEPT[6]
    )
}

fn fixtures(password: &str) -> Vec<(&'static str, String)> {
    vec![
        ("openclaw.json", json_fixture(password)),
        ("config.toml", toml_fixture(password)),
        ("compose.yaml", yaml_fixture(password)),
        (".env", env_fixture(password)),
    ]
}

fn text(t: &Template) -> &str {
    std::str::from_utf8(&t.bytes).unwrap()
}

#[test]
fn every_format_redacts_by_key_and_by_shape_and_keeps_the_rest() {
    for (name, input) in fixtures(PASSWORD) {
        let t = render(Path::new(name), input.as_bytes()).unwrap();
        let out = text(&t);
        for s in secrets() {
            assert!(!out.contains(s), "{name}: secret survived:\n{out}");
        }
        for k in KEPT {
            assert!(out.contains(k), "{name}: lost {k}:\n{out}");
        }
        assert!(out.contains("<redacted:sha256:"), "{name}");
        assert!(t.redacted >= 7, "{name}: only {} redacted", t.redacted);
        // The password of a URL goes, the rest of it stays.
        assert!(
            out.contains("postgres://app:<redacted:sha256:"),
            "{name}:\n{out}"
        );
        assert!(out.contains("@db.internal:5432/app"), "{name}");
    }
}

#[test]
fn every_key_is_kept() {
    let json = render(
        Path::new("openclaw.json"),
        json_fixture(PASSWORD).as_bytes(),
    )
    .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json.bytes).unwrap();
    assert_eq!(v["gateway"]["auth"]["mode"], "token");
    assert_eq!(v["gateway"]["port"], 18789);
    assert_eq!(v["maxTokens"], 8192);
    assert_eq!(v["enabled"], true);
    assert!(v["notes"].is_null());
    assert_eq!(v["emptyPassword"], "");
    assert!(is_placeholder(v["pin_token"].as_str().unwrap()));
    assert!(is_placeholder(
        v["gateway"]["auth"]["token"].as_str().unwrap()
    ));
    for key in ["session", "openai", "gh", "blob", "key"] {
        assert!(is_placeholder(v["models"][key].as_str().unwrap()), "{key}");
    }

    let env = render(Path::new(".env"), env_fixture(PASSWORD).as_bytes()).unwrap();
    let out = text(&env);
    for key in [
        "export DB_PASSWORD=",
        "SESSION=",
        "OPENAI=",
        "KEY=",
        "EMPTY_TOKEN=\n",
    ] {
        assert!(out.contains(key), "{key}");
    }
}

#[test]
fn outputs_parse_in_their_own_format_and_keep_comments() {
    let f = fixtures(PASSWORD);
    let json = render(Path::new(f[0].0), f[0].1.as_bytes()).unwrap();
    assert_eq!(json.format, Format::Json);
    serde_json::from_slice::<serde_json::Value>(&json.bytes).unwrap();

    let toml = render(Path::new(f[1].0), f[1].1.as_bytes()).unwrap();
    assert_eq!(toml.format, Format::Toml);
    let doc: toml_edit::DocumentMut = text(&toml).parse().unwrap();
    assert_eq!(doc["gateway"]["port"].as_integer(), Some(18789));
    assert!(text(&toml).contains("# top comment") && text(&toml).contains("# trailing comment"));

    let yaml = render(Path::new(f[2].0), f[2].1.as_bytes()).unwrap();
    assert_eq!(yaml.format, Format::Yaml);
    let docs = YamlLoader::load_from_str(text(&yaml)).unwrap();
    assert_eq!(docs[0]["gateway"]["port"].as_i64(), Some(18789));
    assert_eq!(docs[0]["name"].as_str(), Some("vault"));

    let env = render(Path::new(f[3].0), f[3].1.as_bytes()).unwrap();
    assert_eq!(env.format, Format::Env);
    let out = text(&env);
    assert!(out.starts_with("# comment line\n\n"));
    assert!(out.contains("# inline comment\n"));
    assert!(out.ends_with("EMPTY_TOKEN=\n   \n# trailing comment\n"));
}

#[test]
fn render_is_idempotent() {
    for (name, input) in fixtures(PASSWORD) {
        let once = render(Path::new(name), input.as_bytes()).unwrap();
        let twice = render(Path::new(name), &once.bytes).unwrap();
        assert_eq!(text(&once), text(&twice), "{name}");
        assert_eq!(twice.redacted, 0, "{name}");
    }
}

#[test]
fn placeholder_changes_only_when_the_secret_changes() {
    for ((name, a), ((_, b), (_, c))) in fixtures(PASSWORD).into_iter().zip(
        fixtures("another-pass-word")
            .into_iter()
            .zip(fixtures(PASSWORD)),
    ) {
        let ra = render(Path::new(name), a.as_bytes()).unwrap();
        let rb = render(Path::new(name), b.as_bytes()).unwrap();
        let rc = render(Path::new(name), c.as_bytes()).unwrap();
        assert_ne!(ra.bytes, rb.bytes, "{name}");
        assert_eq!(ra.bytes, rc.bytes, "{name}");
    }
    assert_eq!(placeholder("x"), placeholder("x"));
    assert_ne!(placeholder("x"), placeholder("y"));
    assert!(is_placeholder(&placeholder("x")));
}

#[test]
fn find_secrets_is_empty_on_templates_and_names_keys_on_raw_files() {
    for (name, input) in fixtures(PASSWORD) {
        let raw = find_secrets(Path::new(name), input.as_bytes());
        assert!(raw.len() >= 7, "{name}: {raw:?}");
        for found in &raw {
            for s in secrets() {
                assert!(!found.contains(s), "{name}: {found}");
            }
        }
        let t = render(Path::new(name), input.as_bytes()).unwrap();
        assert_eq!(
            find_secrets(Path::new(name), &t.bytes),
            Vec::<String>::new(),
            "{name}"
        );
    }
    let env = find_secrets(Path::new(".env"), env_fixture(PASSWORD).as_bytes());
    assert!(env.contains(&"DB_PASSWORD".to_owned()), "{env:?}");
    let json = find_secrets(Path::new("a.json"), br#"{"a": [{"b": {"apiKey": "x"}}]}"#);
    assert_eq!(json, vec!["a[0].b.apiKey".to_owned()]);
    assert_eq!(
        find_secrets(Path::new("a.json"), b"{"),
        vec!["<not valid JSON>"]
    );
}

#[test]
fn unknown_extension_tries_json_then_env() {
    let t = render(
        Path::new("settings"),
        format!(r#"{{"token": "{SK}"}}"#).as_bytes(),
    )
    .unwrap();
    assert_eq!(t.format, Format::Json);
    let t = render(Path::new("settings"), format!("TOKEN={SK}\n").as_bytes()).unwrap();
    assert_eq!(t.format, Format::Env);
    assert!(!text(&t).contains(SK));
    let t = render(Path::new("prod.env"), b"A=1\n").unwrap();
    assert_eq!(t.format, Format::Env);
    assert!(render(Path::new("settings"), b"just some words\n").is_err());
}

#[test]
fn unparsable_files_fail_without_echoing_the_secret() {
    let cases = [
        ("openclaw.json", format!(r#"{{"token": "{SK}", oops}}"#)),
        ("a.toml", format!("token = \"{SK}\"\n= {SK} {SK}\n")),
        ("a.yaml", format!("token: \"{SK}\n  - : {SK}: [\n")),
        (".env", format!("TOKEN={SK}\n{SK}\n")),
        (".env", format!("TOKEN=\"{SK}\n")),
        (
            "a.json",
            format!("{{\"token\": \"{SK}\"}}\u{0}").replace('\u{0}', "\u{1}"),
        ),
    ];
    for (name, input) in cases {
        let err = render(Path::new(name), input.as_bytes()).unwrap_err();
        let msg = format!("{err} {err:?}");
        assert!(!msg.contains(SK) && !msg.contains("sk-"), "{name}: {msg}");
        assert!(msg.contains(name), "{msg}");
    }
    let err = render(Path::new("a.json"), &[b'{', 0xff]).unwrap_err();
    assert!(err.to_string().contains("JSON"));
}

#[test]
fn heuristics_flag_credentials_and_spare_ordinary_values() {
    for v in [
        JWT,
        SK,
        GHP,
        ENTROPY,
        "github_pat_11ABCDEFG0123456789_abcdefghijklmnop",
        "xoxb-1234567890-abcdefghij",
        "AKIAIOSFODNN7EXAMPLE",
        "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig",
        "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----",
        "https://api.example.com/v1?api_key=abc123",
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    ] {
        assert!(redact_string(Some("value"), v).is_some(), "missed {v}");
    }
    for v in [
        "task-management-service-for-production",
        "disk-usage-monitoring-dashboard",
        "/home/user/.ssh/id_ed25519",
        "C:\\Users\\someone\\AppData\\Roaming\\config",
        "https://user@example.com/path/to/resource?page=2",
        "This is an ordinary sentence about configuration values.",
        "MyServiceProductionCluster",
        "550e8400-e29b-41d4-a716-446655440000",
        "2024-01-01T00:00:00Z",
    ] {
        assert_eq!(redact_string(Some("value"), v), None, "flagged {v}");
    }
    for v in KEPT {
        assert_eq!(redact_string(Some("value"), v), None, "flagged {v}");
    }
    assert_eq!(
        redact_string(None, "redis://:pw123@cache:6379/0"),
        Some(format!("redis://:{}@cache:6379/0", placeholder("pw123")))
    );
    assert!(redact_string(Some("GitHub-Token"), "short").is_some());
    assert!(redact_string(Some("privateKey"), "x").is_some());
    assert_eq!(redact_string(Some("token"), ""), None);
    assert_eq!(redact_string(Some("token"), "${GATEWAY_TOKEN}"), None);
}

#[test]
fn policy_matches_base_names_at_any_depth() {
    let p = TemplatePolicy::default();
    for yes in [
        "openclaw.json",
        ".env",
        ".env.local",
        "a/b/.env",
        "home/.openclaw/openclaw.json",
    ] {
        assert!(p.matches(Path::new(yes)), "{yes}");
    }
    for no in ["env", "config.json", "a/.envrc", "openclaw.json.bak"] {
        assert!(!p.matches(Path::new(no)), "{no}");
    }
    let p = TemplatePolicy::new(&["*.yaml".to_owned(), "config/*.toml".to_owned()]).unwrap();
    assert!(p.matches(Path::new("deep/dir/x.yaml")));
    assert!(p.matches(Path::new("config/app.toml")));
    assert!(!p.matches(Path::new("other/config/sub/app.toml")));
    assert!(!p.matches(Path::new("app.toml")));
    assert!(TemplatePolicy::new(&["a[".to_owned()]).is_err());
}

proptest! {
    #[test]
    fn planted_secrets_never_survive(
        key in "[A-Za-z_][A-Za-z0-9_]{0,15}",
        tail in "[A-Za-z0-9]{40}",
        filler in "[a-z]{1,10}",
    ) {
        let secret = format!("sk-{tail}");
        let json = format!(r#"{{"name": "{filler}", "{key}": "{secret}", "list": [1, "{secret}"]}}"#);
        let env = format!("# c\nNAME={filler}\n{key}={secret}\nexport {key}_2=\"{secret}\"\n");
        for (name, input) in [("openclaw.json", json), (".env", env)] {
            let t = render(Path::new(name), input.as_bytes()).unwrap();
            let out = String::from_utf8(t.bytes.clone()).unwrap();
            prop_assert!(!out.contains(&secret), "{}: {}", name, out);
            prop_assert!(!out.contains(&tail));
            prop_assert!(out.contains(&filler));
            prop_assert!(find_secrets(Path::new(name), &t.bytes).is_empty());
            prop_assert!(!find_secrets(Path::new(name), input.as_bytes()).is_empty());
        }
    }
}

#[test]
fn deeply_nested_yaml_is_refused_not_a_stack_overflow() {
    let deep = format!("{}x\n", "- ".repeat(100_000));
    let err = render(Path::new("compose.yaml"), deep.as_bytes()).unwrap_err();
    assert!(err.to_string().contains("not valid YAML"), "{err}");
    assert_eq!(
        find_secrets(Path::new("a.yaml"), deep.as_bytes()),
        ["<not valid YAML>"]
    );
}

/// Found by the `template` fuzz target: a vertical tab after an unquoted secret was kept after the
/// quoted placeholder, where it does not parse.
#[test]
fn a_template_of_a_value_followed_by_odd_whitespace_parses_again() {
    let input = b"# c\nAPI_KEY=sk-abcglpatdefghijkxport A=\"b c\"\x0b";
    let t = render(Path::new(".env"), input).unwrap();
    assert!(find_secrets(Path::new(".env"), &t.bytes).is_empty());
    assert_eq!(render(Path::new(".env"), &t.bytes).unwrap().bytes, t.bytes);
}

/// Found by the `template` fuzz target: redacting a URL password inside a long token added enough
/// hex digits to make the token look high-entropy, so the template was not clean.
#[test]
fn a_url_password_redaction_that_looks_like_a_credential_redacts_the_whole_value() {
    let input = "v: \"x://a1:1@]***4?*****:_/::a1_1@]***4abcdefghij?://a1_1@]***4?*****:_\"\n";
    let t = render(Path::new("compose.yaml"), input.as_bytes()).unwrap();
    assert!(find_secrets(Path::new("compose.yaml"), &t.bytes).is_empty());
    assert_eq!(
        render(Path::new("compose.yaml"), &t.bytes).unwrap().bytes,
        t.bytes
    );
    let d = b"v/:\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07:/\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07://a1_1@]***4\"**?://a1:1@]***4\"?*****:_\x03/:://a1_1@]***4\"*/a1_1@]***4\"**?://a1_1@]***4\"?*****:_\x03/:://a1_1@]***4\"**?://a_1$";
    let t = render(Path::new("compose.yaml"), d).unwrap();
    assert!(find_secrets(Path::new("compose.yaml"), &t.bytes).is_empty());
    assert_eq!(
        render(Path::new("compose.yaml"), &t.bytes).unwrap().bytes,
        t.bytes
    );
}

/// Found by the `template` fuzz target: yaml-rust2 writes a key longer than 1,024 characters as an
/// implicit key, which its own parser then rejects. Such a template is refused, never stored.
#[test]
fn a_template_that_does_not_read_back_is_refused() {
    let input = format!("? aq {{:{}\n", "W".repeat(1100));
    let err = render(Path::new("compose.yaml"), input.as_bytes()).unwrap_err();
    assert!(matches!(err, TemplateError::Unstable { .. }), "{err:?}");
    assert!(
        err.to_string().contains("does not read back clean"),
        "{err}"
    );
}
