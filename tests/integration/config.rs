//! `vault.toml`: found by `--config`, `VAULT_CONFIG` or `./vault.toml`; `vault config check` names
//! the line and column of every mistake; `vault config example` is itself a valid config; and
//! `vault snapshot` with no paths takes every tree source as a named root.

use std::fs;
use std::path::{Path, PathBuf};

use crate::common::*;

/// A config with two tree sources and the fixture's vault; returns its path.
fn write_config(f: &Fixture, extra: &str) -> PathBuf {
    fs::create_dir_all(f.path("ws/app")).unwrap();
    fs::write(f.path("ws/app/main.py"), "print('hi')\n").unwrap();
    fs::write(
        f.path("ws/.env"),
        "API_KEY=sk-abcdefghijklmnopqrstuvwxyz012345\n",
    )
    .unwrap();
    fs::create_dir_all(f.path("files")).unwrap();
    fs::write(f.path("files/invoice.pdf"), random_bytes(3, 10_000)).unwrap();
    fs::write(f.path("files/scratch.tmp"), "temporary\n").unwrap();
    let text = format!(
        "vault = \"{vault}\"\n\n[[source]]\nname = \"workspace\"\nkind = \"tree\"\npath = \"{ws}\"\n\n\
         [[source]]\nname = \"filestore\"\nkind = \"tree\"\npath = \"{files}\"\nexcludes = [\"*.tmp\"]\n{extra}",
        vault = f.vault().display(),
        ws = f.path("ws").display(),
        files = f.path("files").display(),
    );
    let path = f.path("vault.toml");
    fs::write(&path, text).unwrap();
    path
}

/// `vault` in `dir` without `--vault`: the config says where the vault is.
fn in_dir(f: &Fixture, dir: &Path) -> VaultCmd {
    f.cmd_in(dir)
}

#[test]
fn snapshot_without_paths_takes_every_source_as_a_named_root() {
    let f = Fixture::new();
    write_config(&f, "");
    in_dir(&f, f.root())
        .arg("init")
        .args(CHEAP_KDF)
        .run()
        .success();
    assert!(
        f.vault().join("config.json").exists(),
        "init used the config's vault path"
    );
    let snap = in_dir(&f, f.root())
        .args(["snapshot", "--json"])
        .run()
        .success()
        .json();
    assert_eq!(snap["promoted"], true, "{snap:#}");
    let listed = f.cmd().args(["ls", "latest"]).run().success().stdout;
    for want in [
        "workspace/app/main.py",
        "workspace/.env",
        "filestore/invoice.pdf",
    ] {
        assert!(listed.contains(want), "{want} missing:\n{listed}");
    }
    assert!(
        !listed.contains("scratch.tmp"),
        "the source's excludes apply:\n{listed}"
    );
    // .env was stored as a template, as in a PATH snapshot.
    assert_eq!(snap["template_only"]["templated"], 1, "{snap:#}");

    // --source limits the run; an unknown one is an error naming the known ones.
    let only = in_dir(&f, f.root())
        .args(["snapshot", "--json", "--source", "filestore"])
        .run()
        .success()
        .json();
    let m = manifest_json(&f, only["id"].as_str().unwrap());
    let names: Vec<&str> = m["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["filestore"]);
    in_dir(&f, f.root())
        .args(["snapshot", "--source", "nope"])
        .run()
        .one_line_error(1)
        .stderr_has("workspace, filestore");
}

#[test]
fn config_check_names_line_and_column_and_refuses_secrets() {
    let f = Fixture::new();
    let path = write_config(&f, "");
    let ok = f.cmd_in(f.root()).args(["config", "check"]).run().success();
    assert!(
        ok.stdout.contains("valid") && ok.stdout.contains("filestore"),
        "{ok:#?}"
    );

    let text = fs::read_to_string(&path).unwrap();
    fs::write(&path, text.replacen("excludes", "exclude", 1)).unwrap();
    f.cmd_in(f.root())
        .args(["config", "check"])
        .run()
        .one_line_error(1)
        .stderr_has("vault.toml:12:1")
        .stderr_has("unknown field `exclude`");
    // A typo must not quietly drop a source from a snapshot either.
    f.cmd()
        .arg("--config")
        .arg(&path)
        .arg("snapshot")
        .run()
        .one_line_error(1)
        .stderr_has("exclude");

    write_config(
        &f,
        "\n[[source]]\nname = \"db\"\nkind = \"postgres\"\ndbname = \"app\"\npassword = \"hunter2\"\n",
    );
    let run = f
        .cmd_in(f.root())
        .args(["config", "check"])
        .run()
        .one_line_error(1)
        .stderr_has("PGPASSFILE");
    assert!(!run.stderr.contains("hunter2"), "{run:#?}");

    // A password smuggled in as a connection string in dbname, or past a `?` in a URL.
    for sneaky in [
        "dbname = \"host=db user=u password=hunter2 dbname=app\"",
        "url = \"postgresql://u:pa?ss@127.0.0.1/app\"",
        "url = \"postgresql://u@127.0.0.1/app?%70assword=hunter2\"",
    ] {
        write_config(
            &f,
            &format!("\n[[source]]\nname = \"db\"\nkind = \"postgres\"\n{sneaky}\n"),
        );
        let run = f
            .cmd_in(f.root())
            .args(["config", "check"])
            .run()
            .one_line_error(1);
        assert!(!run.stderr.contains("hunter2"), "{run:#?}");
    }

    // Found through VAULT_CONFIG too, from anywhere.
    fs::create_dir_all(f.path("elsewhere")).unwrap();
    f.cmd_in(&f.path("elsewhere"))
        .env("VAULT_CONFIG", &path)
        .args(["config", "check"])
        .run()
        .one_line_error(1);
    f.cmd_in(&f.path("elsewhere"))
        .args(["config", "check"])
        .run()
        .one_line_error(1)
        .stderr_has("config example");
}

#[test]
fn the_printed_example_is_a_valid_config() {
    let f = Fixture::new();
    let example = f
        .cmd_in(f.root())
        .args(["config", "example"])
        .run()
        .success()
        .stdout;
    assert!(example.contains("[agent]") && example.contains("[retention]"));
    let path = f.path("example.toml");
    fs::write(&path, &example).unwrap();
    f.cmd_in(f.root())
        .arg("--config")
        .arg(&path)
        .args(["config", "check"])
        .run()
        .success();
}

#[test]
fn a_source_that_cannot_be_dumped_fails_the_snapshot_rather_than_being_skipped() {
    let f = Fixture::with_vault();
    write_config(
        &f,
        "\n[[source]]\nname = \"db\"\nkind = \"postgres\"\nhost = \"127.0.0.1\"\nport = 1\ndbname = \"app\"\n",
    );
    let run = in_dir(&f, f.root())
        .args(["snapshot", "--json"])
        .run()
        .code(5)
        .stderr_has("source db failed");
    assert_eq!(run.json()["promoted"], false);
    assert_eq!(lkg(&f), None);
    // The other sources can still be taken by name.
    in_dir(&f, f.root())
        .args(["snapshot", "--source", "workspace"])
        .run()
        .success();
}
