//! Hostile `vault.toml`: unknown keys at every level, values of the wrong type, absurd values,
//! files that are not configs, and a command source whose argv is full of shell
//! metacharacters. Every refusal is one line naming the key and its line and column, exit 1,
//! through `vault config check` and every other command that loads the file; no secret is
//! echoed; and a command source is run without a shell unless the file names one itself.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::common::*;

/// A secret-looking value planted in hostile files: no error may repeat it.
const SECRET: &str = "hunter2-s3cr3t";

/// A valid config (one tree source over `data/`) with `extra` right after the top-level `vault`
/// key, so that a top-level key in it stays top-level.
fn config_text(f: &Fixture, extra: &str) -> String {
    format!(
        "vault = \"{vault}\"\n{extra}\n\n[[source]]\nname = \"data\"\nkind = \"tree\"\npath = \"{data}\"\n",
        vault = f.vault().display(),
        data = f.path("data").display(),
    )
}

fn write_config(f: &Fixture, text: &str) -> PathBuf {
    fs::create_dir_all(f.path("data")).unwrap();
    fs::write(f.path("data/file.txt"), "hello\n").unwrap();
    let path = f.path("vault.toml");
    fs::write(&path, text).unwrap();
    path
}

/// 1-based line and column (in characters) of the first `needle` in `text` past its first line
/// (which holds a random temp path), or on the first line when only there.
fn position(text: &str, needle: &str) -> (usize, usize) {
    let first_line = text.find('\n').map_or(text.len(), |n| n + 1);
    let at = text[first_line..]
        .find(needle)
        .map(|at| at + first_line)
        .or_else(|| text.find(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in the config:\n{text}"));
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap().chars().count() + 1;
    (line, column)
}

/// `vault config check` on `text` fails with one line that names the place of `at` and holds
/// `says`, and repeats no secret.
fn refused(f: &Fixture, text: &str, at: &str, says: &str) -> Run {
    write_config(f, text);
    let (line, column) = position(text, at);
    let run = f
        .cmd_in(f.root())
        .args(["config", "check"])
        .run()
        .one_line_error(1)
        .stderr_has(&format!("vault.toml:{line}:{column}:"))
        .stderr_has(says);
    assert!(
        !run.stderr.contains(SECRET),
        "a secret was echoed\n{run:#?}"
    );
    assert!(run.stdout.is_empty(), "nothing on stdout\n{run:#?}");
    run
}

#[test]
fn unknown_keys_at_every_level_are_named_with_line_and_column() {
    let f = Fixture::new();
    let cases: &[(&str, &str)] = &[
        ("sorce = \"x\"\n", "sorce"),
        (&format!("pasword = \"{SECRET}\"\n"), "pasword"),
        (
            "[[source]]\nname = \"db\"\nkind = \"sqlite\"\npath = \"/db\"\nptah = \"/x\"\n",
            "ptah",
        ),
        ("[agent]\nintervall = \"5m\"\n", "intervall"),
        ("[agent.tls]\ncert = \"/c\"\n", "tls"),
        (
            "[[remote]]\nname = \"usb\"\nurl = \"/mnt/usb\"\nregoin = \"x\"\n",
            "regoin",
        ),
        (
            &format!(
                "[[remote]]\nname = \"usb\"\nurl = \"/mnt/usb\"\nsecret_acess_key = \"{SECRET}\"\n"
            ),
            "secret_acess_key",
        ),
        ("[retention]\nkeep_dayly = 3\n", "keep_dayly"),
        ("[gates.sanity]\nmin_file = 3\n", "min_file"),
        ("[gates.sanitty]\ngit = true\n", "sanitty"),
        ("[gates]\nentropy = 3\n", "entropy"),
        ("[drill]\npg_scrach = \"postgresql://h/db\"\n", "pg_scrach"),
    ];
    for (extra, key) in cases {
        let text = config_text(&f, extra);
        refused(&f, &text, key, &format!("unknown field `{key}`"));
    }
    // A near miss gets a suggestion.
    let text = config_text(&f, "[agent]\nintervall = \"5m\"\n");
    refused(&f, &text, "intervall", "did you mean `interval`?");
    // A key of another kind of source is named too, not silently ignored.
    let text = config_text(
        &f,
        "[[source]]\nname = \"c\"\nkind = \"command\"\ncommand = [\"true\"]\ndbname = \"x\"\n",
    );
    refused(
        &f,
        &text,
        "\"x\"",
        "`dbname` does not apply to kind \"command\"",
    );
}

#[test]
fn every_command_that_loads_the_config_refuses_it_the_same_way() {
    let f = Fixture::with_vault();
    let text = config_text(&f, "[agent]\nintervall = \"5m\"\n");
    let path = write_config(&f, &text);
    let (line, column) = position(&text, "intervall");
    let commands: &[&[&str]] = &[
        &["config", "check"],
        &["snapshot"],
        &["snapshots"],
        &["status"],
        &["ls", "latest"],
        &["restore", "latest", "--target", "out"],
        &["verify"],
        &["gate", "latest"],
        &["promote", "latest"],
        &["audit"],
        &["reindex"],
        &["forget", "--keep-last", "1"],
        &["prune"],
        &["push"],
        &["drill"],
        &["drills"],
        &["cycle"],
        &["agent"],
        &["remote", "list"],
    ];
    for args in commands {
        // Both ways of naming the file: ./vault.toml and --config.
        for explicit in [false, true] {
            let mut cmd = f.cmd_in(f.root());
            if explicit {
                cmd = cmd.arg("--config").arg(&path);
            }
            cmd.args(*args)
                .run()
                .one_line_error(1)
                .stderr_has(&format!("vault.toml:{line}:{column}:"))
                .stderr_has("unknown field `intervall`");
        }
    }
    assert!(!f.path("out").exists(), "restore did nothing");
    // The one command that does not read it still works.
    f.cmd_in(f.root())
        .args(["config", "example"])
        .run()
        .success();
}

#[test]
fn values_of_the_wrong_type_name_the_value() {
    let f = Fixture::new();
    let source = |rest: &str| format!("[[source]]\nname = \"x\"\n{rest}");
    let cases: Vec<(String, &str, &str)> = vec![
        ("[agent]\ninterval = 900\n".into(), "900", "agent.interval: invalid type"),
        (
            "[agent]\nallow_remote_listen = \"yes\"\n".into(),
            "\"yes\"",
            "agent.allow_remote_listen: invalid type",
        ),
        ("[agent]\nlisten = 28789\n".into(), "28789", "agent.listen: invalid type"),
        // Arrays where a table belongs, even ones whose elements would fill every key in order.
        ("agent = [1, 2]\n".into(), "[1, 2]", "agent: invalid type: sequence, expected the [agent] table"),
        (
            "agent = [\"1m\", \"1h\", \"5m\", \"127.0.0.1:1\", false]\n".into(),
            "[\"1m\"",
            "expected the [agent] table",
        ),
        (
            "gates = { sanity = [true, true, 10, 10, 10, 1, []] }\n".into(),
            "[true",
            "expected the [gates.sanity] table",
        ),
        ("retention = [3]\n".into(), "[3]", "expected the [retention] table"),
        ("drill = []\n".into(), "[]", "expected the [drill] table"),
        ("template_only = \"*.env\"\n".into(), "\"*.env\"", "template_only: invalid type"),
        (
            "[gates.sanity]\nmin_files = -1\n".into(),
            "-1",
            "gates.sanity.min_files: invalid value",
        ),
        ("[gates.sanity]\ngit = 1\n".into(), "1\n", "gates.sanity.git: invalid type"),
        (
            "[gates.sanity]\nmass_loss_percent = 5.5\n".into(),
            "5.5",
            "gates.sanity.mass_loss_percent: invalid type",
        ),
        ("[retention]\nkeep_last = \"3\"\n".into(), "\"3\"", "retention.keep_last: invalid type"),
        (
            source("kind = \"command\"\ncommand = \"rm -rf /\"\n"),
            "\"rm -rf /\"",
            "source.command: invalid type",
        ),
        (
            source("kind = \"command\"\ncommand = [\"echo\", 7]\n"),
            "7]",
            "source.command: invalid type: integer `7`, expected a string",
        ),
        (
            source("kind = \"postgres\"\ndbname = \"app\"\nport = \"5432\"\n"),
            "\"5432\"",
            "source.port: invalid type",
        ),
        (
            source("kind = \"postgres\"\ndbname = \"app\"\nport = 70000\n"),
            "70000",
            "source.port: invalid value",
        ),
        (
            source("kind = \"tree\"\npath = \"/srv\"\nexcludes = \"*.tmp\"\n"),
            "\"*.tmp\"",
            "source.excludes: invalid type",
        ),
        ("[[source]]\nname = 7\nkind = \"tree\"\npath = \"/srv\"\n".into(), "7", "source.name: invalid type"),
        (
            "[[remote]]\nname = \"usb\"\nurl = \"/mnt/usb\"\nappend_only = \"true\"\n".into(),
            "\"true\"",
            "remote.append_only: invalid type",
        ),
        (
            "[drill]\nhealth_command = \"curl -f localhost\"\n".into(),
            "\"curl -f localhost\"",
            "drill.health_command: invalid type",
        ),
        (
            format!("[[remote]]\nname = \"s3\"\nurl = \"s3://bkt\"\nsecret_access_key = [\"{SECRET}\"]\n"),
            "[\"",
            "`secret_access_key` is not allowed",
        ),
        (
            format!("password = {{ value = \"{SECRET}\" }}\n"),
            "{ value",
            "`password` is not allowed",
        ),
    ];
    for (extra, at, says) in &cases {
        let text = config_text(&f, extra);
        refused(&f, &text, at, says);
    }
    // Arrays of arrays where arrays of tables belong (alone: `[[source]]` tables would clash).
    let text = "vault = \"/v\"\nsource = [[\"www\", \"tree\", \"/srv\"]]\n";
    refused(&f, text, "[\"www\"", "expected a [[source]] table");
    let text = "vault = \"/v\"\nremote = [[\"usb\", \"/mnt/usb\"]]\n";
    refused(&f, text, "[\"usb\"", "expected a [[remote]] table");
    // The top-level key of the wrong type, on line 1.
    let text = "vault = 5\n";
    refused(&f, text, "5", "vault: invalid type");
}

#[test]
fn absurd_values_are_refused_where_they_are_written() {
    let f = Fixture::new();
    let src = |rest: &str| format!("[[source]]\nname = \"x\"\n{rest}");
    let cases: Vec<(String, &str, &str)> = vec![
        // Zero, negative and enormous durations.
        (
            "[agent]\ninterval = \"0s\"\n".into(),
            "\"0s\"",
            "agent.interval must be longer than zero",
        ),
        (
            "[agent]\nrpo = \"0ms\"\n".into(),
            "\"0ms\"",
            "agent.rpo must be longer than zero",
        ),
        (
            "[agent]\ninterval = \"-5m\"\n".into(),
            "\"-5m\"",
            "agent.interval \"-5m\" is not a duration",
        ),
        (
            "[agent]\ngrace = \"-1s\"\n".into(),
            "\"-1s\"",
            "agent.grace \"-1s\" is not a duration",
        ),
        (
            "[agent]\ngrace = \"99999999999999999999999s\"\n".into(),
            "\"9999",
            "agent.grace",
        ),
        (
            "[agent]\ninterval = \"500000000000years\"\nrpo = \"500000000000years\"\n".into(),
            "\"500000000000years\"",
            "agent.interval",
        ),
        (
            "[agent]\nrpo = \"1h\"\ngrace = \"10000years\"\n".into(),
            "\"10000years\"",
            "agent.grace",
        ),
        (
            "[drill]\nhealth_timeout = \"10000years\"\n".into(),
            "\"10000years\"",
            "drill.health_timeout",
        ),
        (
            "[drill]\nhealth_timeout = \"0s\"\n".into(),
            "\"0s\"",
            "longer than zero",
        ),
        (
            "[retention]\nkeep_within = \"10000years\"\n".into(),
            "\"10000years\"",
            "retention.keep_within",
        ),
        // Counts out of range.
        (
            "[retention]\nkeep_last = -2\n".into(),
            "-2",
            "retention.keep_last -2",
        ),
        (
            "[retention]\nkeep_daily = 9223372036854775807\n".into(),
            "9223372036854775807",
            "retention.keep_daily",
        ),
        (
            "[gates.sanity]\nmin_files = 18446744073709551616\n".into(),
            "18446744073709551616",
            "",
        ),
        (
            "[gates.sanity]\nmass_loss_percent = 1000\n".into(),
            "1000",
            "from 0 to 100",
        ),
        (
            src("kind = \"postgres\"\ndbname = \"app\"\nport = 0\n"),
            "0\n",
            "port 0 is not a port",
        ),
        // Addresses.
        (
            "[agent]\nlisten = \"127.0.0.1:0\"\n".into(),
            "\"127.0.0.1:0\"",
            "agent.listen",
        ),
        (
            "[agent]\nlisten = \"127.0.0.1:99999\"\n".into(),
            "\"127",
            "not an address:port",
        ),
        (
            "[agent]\nlisten = \"127.0.0.1\"\n".into(),
            "\"127",
            "not an address:port",
        ),
        // Paths: empty, relative, with a NUL byte.
        (
            src("kind = \"tree\"\npath = \"\"\n"),
            "\"\"",
            "must be an absolute path",
        ),
        (
            src("kind = \"sqlite\"\npath = \"../db.sqlite\"\n"),
            "\"../db.sqlite\"",
            "must be an absolute path",
        ),
        (
            src("kind = \"tree\"\npath = \"/srv/a\\u0000b\"\n"),
            "\"/srv/a",
            "NUL",
        ),
        (
            src("kind = \"command\"\ncommand = [\"\", \"x\"]\n"),
            "[\"\"",
            "must start with the program",
        ),
        (
            src("kind = \"command\"\ncommand = [\"echo\", \"a\\u0000b\"]\n"),
            "[\"echo\"",
            "NUL",
        ),
        (
            src("kind = \"command\"\ncommand = [\"echo\"]\nstream_name = \"../../etc/passwd\"\n"),
            "\"../../etc",
            "stream_name",
        ),
    ];
    for (extra, at, says) in &cases {
        let text = config_text(&f, extra);
        refused(&f, &text, at, says);
    }
    let text = "vault = \"\"\n";
    refused(&f, text, "\"\"", "must be an absolute path");
    let text = "vault = \"/srv/v\\u0000ault\"\n";
    refused(&f, text, "\"/srv", "NUL");
}

#[test]
fn a_listen_address_beyond_loopback_needs_allow_remote_listen() {
    let f = Fixture::with_vault();
    for addr in [
        "0.0.0.0:28789",
        "[::]:28789",
        "192.0.2.7:28789",
        "10.0.0.1:80",
        "[::ffff:0.0.0.0]:28789",
        "[fe80::1]:28789",
    ] {
        let text = config_text(&f, &format!("[agent]\nlisten = \"{addr}\"\n"));
        refused(
            &f,
            &text,
            &format!("\"{addr}\""),
            "set allow_remote_listen = true",
        );
        // The agent refuses it before it binds anything.
        f.cmd_in(f.root())
            .arg("agent")
            .run()
            .one_line_error(1)
            .stderr_has("agent.listen");
        // Allowed explicitly, the file is valid (the agent is not started: tests bind loopback
        // only).
        let text = config_text(
            &f,
            &format!("[agent]\nlisten = \"{addr}\"\nallow_remote_listen = true\n"),
        );
        write_config(&f, &text);
        f.cmd_in(f.root())
            .args(["--json", "config", "check"])
            .run()
            .success();
    }
    // Loopback in both families needs nothing.
    for addr in ["127.0.0.1:28789", "127.8.9.10:1", "[::1]:28789"] {
        let text = config_text(&f, &format!("[agent]\nlisten = \"{addr}\"\n"));
        write_config(&f, &text);
        let v = f
            .cmd_in(f.root())
            .args(["--json", "config", "check"])
            .run()
            .success()
            .json();
        assert_eq!(v["file"]["agent"]["allow_remote_listen"], false, "{v}");
    }
}

#[test]
fn files_that_are_not_configs_fail_cleanly() {
    let f = Fixture::new();
    // Not UTF-8: the place of the first bad byte.
    let mut bytes =
        b"vault = \"/v\"\n[[source]]\nname = \"x\"\nkind = \"tree\"\npath = \"/srv/caf".to_vec();
    bytes.extend_from_slice(b"\xe9\"\n");
    fs::write(f.path("vault.toml"), &bytes).unwrap();
    f.cmd_in(f.root())
        .args(["config", "check"])
        .run()
        .one_line_error(1)
        .stderr_has("vault.toml:5:17: not UTF-8");

    // Nesting deep enough to overflow a recursive parser's stack.
    for (name, text) in [
        (
            "arrays",
            format!("x = {}{}\n", "[".repeat(100_000), "]".repeat(100_000)),
        ),
        (
            "inline tables",
            format!("x = {}1{}\n", "{a = ".repeat(50_000), "}".repeat(50_000)),
        ),
        (
            "dotted keys",
            format!("{} = 1\n", vec!["a"; 100_000].join(".")),
        ),
        (
            "table headers",
            format!("[{}]\n", vec!["a"; 100_000].join(".")),
        ),
    ] {
        let path = f.path(format!("deep-{}.toml", name.replace(' ', "-")));
        fs::write(&path, format!("vault = \"/v\"\n{text}")).unwrap();
        let run = f
            .cmd_in(f.root())
            .arg("--config")
            .arg(&path)
            .args(["config", "check"])
            .run();
        assert_eq!(
            run.code,
            Some(1),
            "{name}: a clean error, not a crash\n{run:#?}"
        );
        assert_eq!(run.stderr.lines().count(), 1, "{name}\n{run:#?}");
        assert!(
            run.stderr.len() < 2000,
            "{name}: the error is short\n{run:#?}"
        );
    }

    // A directory, a device that never ends, a file over the cap, a missing file, a dangling
    // link.
    let huge = f.path("huge.toml");
    let mut text = config_text(&f, "");
    while text.len() <= 1024 * 1024 {
        text.push_str("# padding padding padding padding padding padding padding padding\n");
    }
    fs::write(&huge, text).unwrap();
    fs::create_dir(f.path("dir.toml")).unwrap();
    std::os::unix::fs::symlink(f.path("nowhere"), f.path("dangling.toml")).unwrap();
    for (path, says) in [
        (f.path("dir.toml"), "dir.toml"),
        (PathBuf::from("/dev/zero"), "not a config file"),
        (huge, "not a config file"),
        (f.path("missing.toml"), "missing.toml"),
        (f.path("dangling.toml"), "dangling.toml"),
    ] {
        f.cmd_in(f.root())
            .arg("--config")
            .arg(&path)
            .args(["config", "check"])
            .run()
            .one_line_error(1)
            .stderr_has(says);
    }
    // A config path that is not UTF-8 itself is reported, not mangled into a panic.
    let odd = f.path(std::ffi::OsStr::from_bytes(b"odd-\xff.toml"));
    fs::write(&odd, config_text(&f, "[agent]\nintervall = \"1m\"\n")).unwrap();
    f.cmd_in(f.root())
        .arg("--config")
        .arg(&odd)
        .args(["config", "check"])
        .run()
        .one_line_error(1)
        .stderr_has("unknown field `intervall`");
}

/// The argv of a command source: every element a shell would act on, each aimed at a marker
/// file in `markers` that only a shell could create.
fn hostile_argv(markers: &Path) -> Vec<String> {
    let m = markers.display();
    vec![
        "echo".into(),
        format!("; touch {m}/semicolon"),
        format!("$(touch {m}/dollar)"),
        format!("`touch {m}/backtick`"),
        format!("| touch {m}/pipe"),
        format!("> {m}/redirect"),
        format!("&& touch {m}/and"),
        format!("\ntouch {m}/newline"),
        format!("; rm -rf {m}"),
        "$HOME".into(),
        "*".into(),
        "~".into(),
    ]
}

fn toml_array(argv: &[String]) -> String {
    let items: Vec<String> = argv
        .iter()
        .map(|a| serde_json::to_string(a).unwrap())
        .collect();
    format!("[{}]", items.join(", "))
}

#[test]
fn a_command_source_runs_without_a_shell_unless_the_config_names_one() {
    let f = Fixture::with_vault();
    let markers = f.path("markers");
    fs::create_dir(&markers).unwrap();
    fs::write(markers.join("keep"), "a shell's rm -rf would delete this\n").unwrap();
    let argv = hostile_argv(&markers);
    let program_line = format!("touch {}/program; echo", markers.display());
    let explicit = format!("touch {}/explicit; echo from-a-shell", markers.display());
    let extra = format!(
        "[[source]]\nname = \"dump\"\nkind = \"command\"\ncommand = {}\nstream_name = \"dump.txt\"\n\n\
         [[source]]\nname = \"line\"\nkind = \"command\"\ncommand = {}\n",
        toml_array(&argv),
        toml_array(&[program_line]),
    );
    write_config(&f, &config_text(&f, &extra));
    let only_keep = || {
        let mut names: Vec<String> = fs::read_dir(&markers)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };

    // The argv reaches the program verbatim: the stream is echo's output of exactly it.
    let snap = f
        .cmd_in(f.root())
        .args(["snapshot", "--json", "--source", "dump"])
        .run()
        .success()
        .json();
    assert_eq!(snap["promoted"], true, "{snap:#}");
    assert_eq!(only_keep(), ["keep"], "no shell ran any of the argv");
    f.restore("latest", &f.path("restored"));
    let dumped = fs::read_to_string(f.path("restored/dump/dump.txt"))
        .or_else(|_| fs::read_to_string(f.path("restored/dump.txt")))
        .unwrap_or_else(|e| {
            panic!(
                "no restored stream ({e}): {:?}",
                list_all(&f.path("restored"))
            )
        });
    assert_eq!(dumped, format!("{}\n", argv[1..].join(" ")));

    // A whole shell line as the program is a program name that does not exist: the source fails.
    f.cmd_in(f.root())
        .args(["snapshot", "--source", "line"])
        .run()
        .code(5)
        .stderr_has("source line failed");
    assert_eq!(only_keep(), ["keep"]);

    // The agent's path (`vault cycle`) runs sources the same way.
    f.cmd_in(f.root()).args(["cycle"]).run().code(5);
    assert_eq!(only_keep(), ["keep"]);

    // A shell runs only when the file asks for one: then the marker does appear, which shows
    // the checks above could have failed.
    let shell = format!(
        "{extra}\n[[source]]\nname = \"shell\"\nkind = \"command\"\ncommand = {}\n",
        toml_array(&["sh".into(), "-c".into(), explicit]),
    );
    write_config(&f, &config_text(&f, &shell));
    f.cmd_in(f.root())
        .args(["snapshot", "--source", "shell"])
        .run()
        .success();
    assert_eq!(only_keep(), ["explicit", "keep"]);
}
