//! Tests of `vault.toml` parsing: the example, every refusal with its position, the defaults and
//! where the file is looked for.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

mod refusals;

const MIN: Duration = Duration::from_secs(60);

fn parse(text: &str) -> Result<VaultFile, ConfigError> {
    VaultFile::parse(text, Path::new("vault.toml"))
}

/// The error's line, column and message; panics when the text parses.
fn fails(text: &str) -> (usize, usize, String) {
    let err = parse(text).expect_err("the text should be refused");
    let line = err.line().unwrap_or_else(|| panic!("no line in {err}"));
    let column = err.column().unwrap_or_else(|| panic!("no column in {err}"));
    (line, column, err.to_string())
}

/// A minimal valid file followed by `rest`.
fn with(rest: &str) -> String {
    format!("vault = \"/var/lib/atlasvault\"\n{rest}")
}

/// A file whose values differ from every default, with every kind of source and remote.
fn fully_populated() -> VaultFile {
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    VaultFile {
        vault: "/vault".into(),
        template_only: strings(&["*.secret"]),
        sources: vec![
            Source {
                name: "www".into(),
                kind: SourceKind::Tree {
                    path: "/srv/www".into(),
                    excludes: strings(&["node_modules"]),
                    template_only: strings(&["conf/*.yaml"]),
                },
            },
            Source {
                name: "erp-db".into(),
                kind: SourceKind::Postgres {
                    connection: PgConnection::Params {
                        host: Some("localhost".into()),
                        port: Some(5433),
                        user: Some("backup".into()),
                        dbname: "erp".into(),
                    },
                    format: PgFormat::Custom,
                },
            },
            Source {
                name: "gw".into(),
                kind: SourceKind::Postgres {
                    connection: PgConnection::Url {
                        url: "postgres://u@h/db".into(),
                    },
                    format: PgFormat::Plain,
                },
            },
            Source {
                name: "flows".into(),
                kind: SourceKind::Sqlite {
                    path: "/srv/flows.db".into(),
                },
            },
            Source {
                name: "mysql".into(),
                kind: SourceKind::Command {
                    command: strings(&["mysqldump", "--all-databases"]),
                    stream_name: Some("all.sql".into()),
                },
            },
        ],
        gates: Gates {
            sanity: SanitySettings {
                git: false,
                lockfiles: false,
                mass_change_percent: 1,
                high_entropy_percent: 2,
                mass_loss_percent: 3,
                min_files: 4,
                depended_on: strings(&["x.lock"]),
            },
        },
        remotes: vec![
            Remote {
                name: "usb".into(),
                url: RemoteUrl::Path("/mnt/d/AtlasVault".into()),
                endpoint: None,
                region: None,
                path_style: false,
                append_only: false,
            },
            Remote {
                name: "s3".into(),
                url: RemoteUrl::S3 {
                    bucket: "bucket".into(),
                    prefix: "a/b".into(),
                },
                endpoint: Some("http://127.0.0.1:9000".into()),
                region: Some("garage".into()),
                path_style: true,
                append_only: true,
            },
        ],
        agent: Agent {
            interval: 5 * MIN,
            rpo: 10 * MIN,
            grace: MIN,
            listen: "0.0.0.0:9999".parse().unwrap(),
            allow_remote_listen: true,
        },
        retention: Retention {
            keep_last: Keep::Count(1),
            keep_within: Duration::from_secs(3600),
            keep_quarter_hourly: Keep::Count(2),
            keep_hourly: Keep::Count(3),
            keep_daily: Keep::Count(4),
            keep_weekly: Keep::Count(5),
            keep_monthly: Keep::Count(6),
            keep_yearly: Keep::Unlimited,
        },
        retention_set: true,
        drill: Drill {
            pg_scratch: Some("postgresql://pg@127.0.0.1:5433/postgres".into()),
            checks: [("erp-db".to_string(), strings(&["SELECT 1"]))].into(),
            health_command: Some(strings(&["curl", "-f", "localhost:8080/health"])),
            health_timeout: 2 * MIN,
        },
    }
}

/// Every table key in a TOML value, as `table.key` paths without array indices.
fn key_paths(value: &toml::Value, prefix: &str, out: &mut BTreeSet<String>) {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                out.insert(path.clone());
                key_paths(v, &path, out);
            }
        }
        toml::Value::Array(items) => items.iter().for_each(|v| key_paths(v, prefix, out)),
        _ => {}
    }
}

#[test]
fn example_parses_and_shows_the_defaults() {
    let file = parse(example()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(file.agent, Agent::default());
    assert_eq!(file.retention, Retention::default());
    assert_eq!(file.gates, Gates::default());
    let kinds: BTreeSet<&str> = file
        .sources
        .iter()
        .map(|s| match s.kind {
            SourceKind::Tree { .. } => "tree",
            SourceKind::Postgres { .. } => "postgres",
            SourceKind::Sqlite { .. } => "sqlite",
            SourceKind::Command { .. } => "command",
        })
        .collect();
    assert_eq!(kinds.len(), 4, "the example shows every source kind");
    assert!(file
        .remotes
        .iter()
        .any(|r| matches!(r.url, RemoteUrl::S3 { .. })));
}

#[test]
fn example_covers_every_key_of_every_table() {
    let full = toml::Value::try_from(fully_populated()).unwrap();
    let mut wanted = BTreeSet::new();
    key_paths(&full, "", &mut wanted);
    let shown: toml::Value = toml::from_str(example()).unwrap();
    let mut live = BTreeSet::new();
    key_paths(&shown, "", &mut live);
    let missing: Vec<_> = wanted.difference(&live).collect();
    assert!(
        missing.is_empty(),
        "keys missing from example.toml: {missing:?}"
    );
    for value in [
        "tree", "postgres", "sqlite", "command", "plain", "custom", "file://", "-1",
    ] {
        assert!(
            example().contains(value),
            "example.toml does not show {value:?}"
        );
    }
}

#[test]
fn serialized_config_parses_back_to_itself() {
    let full = fully_populated();
    let text = toml::to_string(&full).unwrap();
    assert_eq!(parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}")), full);
    let example = parse(example()).unwrap();
    assert_eq!(parse(&toml::to_string(&example).unwrap()).unwrap(), example);
}

#[test]
fn absent_sections_take_the_defaults() {
    let file = parse("vault = \"/v\"\n").unwrap();
    assert!(file.sources.is_empty() && file.remotes.is_empty() && file.template_only.is_empty());
    assert_eq!(file.agent.interval, 15 * MIN);
    assert_eq!(file.agent.rpo, 15 * MIN);
    assert_eq!(file.agent.grace, 5 * MIN);
    assert_eq!(
        file.agent.listen,
        "127.0.0.1:28789".parse::<SocketAddr>().unwrap()
    );
    assert!(!file.agent.allow_remote_listen);
    let r = file.retention;
    assert_eq!(r.keep_quarter_hourly, Keep::Count(96));
    assert_eq!(r.keep_hourly, Keep::Count(168));
    assert_eq!(r.keep_daily, Keep::Count(7));
    assert_eq!(r.keep_weekly, Keep::Count(4));
    assert_eq!(r.keep_monthly, Keep::Unlimited);
    assert_eq!(r.keep_monthly.limit(), None);
    assert_eq!(
        (r.keep_last, r.keep_yearly, r.keep_within),
        (Keep::NONE, Keep::NONE, Duration::ZERO)
    );
    assert_eq!(file.gates.sanity.mass_change_percent, 30);
    assert_eq!(
        file.gates.sanity.depended_on.len(),
        DEFAULT_DEPENDED_ON.len()
    );
}

#[test]
fn partial_tables_default_per_key_except_retention() {
    let file = parse(&with(
        "[agent]\nrpo = \"1h\"\n[gates.sanity]\ngit = false\n",
    ))
    .unwrap();
    assert_eq!((file.agent.interval, file.agent.rpo), (15 * MIN, 60 * MIN));
    assert!(!file.gates.sanity.git && file.gates.sanity.lockfiles);
    let file = parse(&with("[retention]\nkeep_daily = 30\n")).unwrap();
    assert_eq!(file.retention.keep_daily, Keep::Count(30));
    assert_eq!(
        file.retention.keep_hourly,
        Keep::NONE,
        "a present table is the whole policy"
    );
    let (line, _, msg) = fails(&with("[retention]\nkeep_daily = 0\n"));
    assert!(msg.contains("keeps no snapshot"), "{msg}");
    assert!(line == 2 || line == 3, "{msg}");
    let (_, _, msg) = fails(&with("[retention]\nkeep_daily = -2\n"));
    assert!(msg.contains("-1 for unlimited"), "{msg}");
}

#[test]
fn template_only_for_merges_global_and_own() {
    let file = parse(example()).unwrap();
    let www = file.source("workspace").unwrap();
    assert_eq!(
        file.template_only_for(www),
        vec!["*.secrets.json", "config/*.yaml"]
    );
    assert!(file
        .template_only_for(file.source("flows").unwrap())
        .is_empty());
}

#[test]
fn locate_prefers_flag_then_env_then_cwd() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let flag = Path::new("flag.toml");
    let env = std::ffi::OsStr::new("/etc/env.toml");
    assert_eq!(
        VaultFile::locate(Some(flag), Some(env), cwd),
        Some(cwd.join("flag.toml"))
    );
    assert_eq!(
        VaultFile::locate(None, Some(env), cwd),
        Some(PathBuf::from("/etc/env.toml"))
    );
    assert_eq!(
        VaultFile::locate(None, None, cwd),
        None,
        "no ./vault.toml yet"
    );
    assert_eq!(
        VaultFile::locate(None, Some(std::ffi::OsStr::new("")), cwd),
        None
    );
    std::fs::write(cwd.join("vault.toml"), "vault = \"/v\"\n").unwrap();
    assert_eq!(
        VaultFile::locate(None, None, cwd),
        Some(cwd.join("vault.toml"))
    );
    assert_eq!(
        VaultFile::locate(None, Some(env), cwd),
        Some(PathBuf::from("/etc/env.toml"))
    );
}

#[test]
fn load_reads_caps_and_reports_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vault.toml");
    std::fs::write(&path, example()).unwrap();
    assert_eq!(VaultFile::load(&path).unwrap(), parse(example()).unwrap());

    let missing = dir.path().join("missing.toml");
    let err = VaultFile::load(&missing).unwrap_err();
    assert!(
        matches!(err, ConfigError::Io { .. }) && err.path() == missing,
        "{err}"
    );

    std::fs::write(&path, vec![b'#'; CONFIG_MAX_BYTES as usize + 1]).unwrap();
    let err = VaultFile::load(&path).unwrap_err();
    assert!(err.to_string().contains("larger than 1024 KiB"), "{err}");

    std::fs::write(&path, b"vault = \"/v\"\n# caf\xe9\n").unwrap();
    let err = VaultFile::load(&path).unwrap_err();
    assert_eq!((err.line(), err.column()), (Some(2), Some(6)), "{err}");

    std::fs::write(&path, "vault = \"/v\"\n\n[agent]\nrpo = 5\n").unwrap();
    let err = VaultFile::load(&path).unwrap_err();
    assert_eq!(err.path(), path);
    assert!(
        err.to_string()
            .starts_with(&format!("{}:4:7: ", path.display())),
        "{err}"
    );
}
