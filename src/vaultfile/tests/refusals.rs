//! Tests of what `vault.toml` refuses: each case checks the message and where it points.

use super::*;

#[test]
fn a_typo_anywhere_names_the_key_line_and_column() {
    let cases = [
        ("vault = \"/v\"\nsorce = 1\n", 2, 1, "sorce"),
        (
            "vault = \"/v\"\n[[source]]\nname = \"a\"\nkind = \"tree\"\n  pth = \"/a\"\n",
            5,
            3,
            "pth",
        ),
        (
            "vault = \"/v\"\n[agent]\nintervall = \"5m\"\n",
            3,
            1,
            "intervall",
        ),
        (
            "vault = \"/v\"\n[[remote]]\nname = \"r\"\nurl = \"/r\"\nregoin = \"x\"\n",
            5,
            1,
            "regoin",
        ),
        (
            "vault = \"/v\"\n[retention]\nkeep_dayly = 3\n",
            3,
            1,
            "keep_dayly",
        ),
        (
            "vault = \"/v\"\n[gates.sanity]\nmin_file = 3\n",
            3,
            1,
            "min_file",
        ),
        ("vault = \"/v\"\n[gates.sanitty]\n", 2, 8, "sanitty"),
    ];
    for (text, line, column, key) in cases {
        let err = parse(text).unwrap_err();
        assert!(matches!(err, ConfigError::Syntax { .. }), "{err:?}");
        let shown = err.to_string();
        assert!(
            shown.starts_with(&format!(
                "vault.toml:{line}:{column}: unknown field `{key}`"
            )),
            "{shown}"
        );
    }
    let msg = parse("vault = \"/v\"\n[[source]]\nname = \"a\"\nkind = \"tree\"\npth = \"/a\"\n")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("did you mean `path`?"), "{msg}");
    assert!(
        !msg.contains("password"),
        "refused keys are not offered: {msg}"
    );
}

#[test]
fn toml_syntax_errors_have_a_position() {
    let (line, _, msg) = fails("vault = \"/v\"\n[agent\n");
    assert_eq!(line, 2, "{msg}");
    let (line, column, msg) = fails("vault = \"/v\"\n[[source]]\nname = \"a\"\nkind = \"zip\"\n");
    assert_eq!((line, column), (4, 8), "{msg}");
    assert!(msg.contains("unknown variant `zip`"), "{msg}");
    let (_, _, msg) = fails("[agent]\n");
    assert!(msg.contains("missing field `vault`"), "{msg}");
}

#[test]
fn secrets_are_refused_with_where_they_belong() {
    let pg = "vault = \"/v\"\n[[source]]\nname = \"db\"\nkind = \"postgres\"\ndbname = \"x\"\npassword = \"hunter2\"\n";
    let (line, _, msg) = fails(pg);
    assert_eq!(line, 6);
    assert!(
        msg.contains("`password` is not allowed") && msg.contains("PGPASSFILE"),
        "{msg}"
    );
    assert!(
        !msg.contains("hunter2"),
        "the error must not echo the secret: {msg}"
    );
    let (_, _, msg) = fails(&with(
        "[[source]]\nname = \"db\"\nkind = \"postgres\"\nurl = \"postgresql://u:hunter2@h/db\"\n",
    ));
    assert!(msg.contains("url holds a password"), "{msg}");
    let (_, _, msg) = fails(&with(
        "[[source]]\nname = \"db\"\nkind = \"postgres\"\nurl = \"postgres://h/db?password=x\"\n",
    ));
    assert!(msg.contains("url holds a password"), "{msg}");
    for key in ["access_key_id", "secret_access_key", "session_token"] {
        let text = with(&format!(
            "[[remote]]\nname = \"s3\"\nurl = \"s3://bucket\"\n{key} = \"AKIA\"\n"
        ));
        let (line, _, msg) = fails(&text);
        assert_eq!(line, 5);
        assert!(
            msg.contains(&format!("`{key}` is not allowed"))
                && msg.contains("credentials come from the environment or the AWS chain"),
            "{msg}"
        );
    }
    for key in ["password", "password_command", "password_file"] {
        let (line, _, msg) = fails(&with(&format!("{key} = \"x\"\n")));
        assert_eq!(line, 2);
        assert!(
            msg.contains("VAULT_PASSWORD_FILE") && msg.contains("VAULT_PASSWORD_COMMAND"),
            "{msg}"
        );
    }
}

#[test]
fn listen_must_be_loopback_unless_allowed() {
    let (line, column, msg) = fails(&with("[agent]\nlisten = \"0.0.0.0:28789\"\n"));
    assert_eq!((line, column), (3, 10));
    assert!(msg.contains("allow_remote_listen = true"), "{msg}");
    let file = parse(&with(
        "[agent]\nlisten = \"0.0.0.0:28789\"\nallow_remote_listen = true\n",
    ))
    .unwrap();
    assert_eq!(file.agent.listen.port(), 28789);
    assert!(parse(&with("[agent]\nlisten = \"[::1]:1\"\n")).is_ok());
    let (_, _, msg) = fails(&with("[agent]\nlisten = \"localhost:80\"\n"));
    assert!(msg.contains("not an address:port"), "{msg}");
}

#[test]
fn durations_must_parse_and_fit_the_rpo() {
    let (line, column, msg) = fails(&with("[agent]\ngrace = \"5 minutes later\"\n"));
    assert_eq!((line, column), (3, 9));
    assert!(
        msg.contains("agent.grace") && msg.contains("not a duration"),
        "{msg}"
    );
    let (_, _, msg) = fails(&with("[agent]\ninterval = \"15\"\n"));
    assert!(msg.contains("not a duration"), "{msg}");
    let (_, _, msg) = fails(&with("[agent]\ninterval = \"0s\"\n"));
    assert!(msg.contains("longer than zero"), "{msg}");
    let (line, _, msg) = fails(&with("[agent]\ninterval = \"1h\"\n"));
    assert_eq!(line, 3);
    assert!(msg.contains("longer than agent.rpo"), "{msg}");
    let (_, _, msg) = fails(&with("[retention]\nkeep_within = \"2 fortnights\"\n"));
    assert!(msg.contains("retention.keep_within"), "{msg}");
}

#[test]
fn source_names_are_unique_and_plain() {
    let text = with(
        "[[source]]\nname = \"www\"\nkind = \"sqlite\"\npath = \"/a.db\"\n\
         [[source]]\nname = \"www\"\nkind = \"sqlite\"\npath = \"/b.db\"\n",
    );
    let (line, column, msg) = fails(&text);
    assert_eq!((line, column), (7, 8));
    assert!(msg.contains("`www` is already used on line 3"), "{msg}");
    for bad in ["", "WWW", "a b", "a/b", "é"] {
        let text = with(&format!(
            "[[source]]\nname = {bad:?}\nkind = \"sqlite\"\npath = \"/a.db\"\n"
        ));
        let (line, _, msg) = fails(&text);
        assert_eq!(line, 3, "{msg}");
        assert!(msg.contains("lowercase a-z"), "{msg}");
    }
    let long = "a".repeat(65);
    assert!(parse(&with(&format!(
        "[[source]]\nname = \"{long}\"\nkind = \"sqlite\"\npath = \"/a\"\n"
    )))
    .is_err());
    let text =
        with("[[remote]]\nname = \"r\"\nurl = \"/a\"\n[[remote]]\nname = \"r\"\nurl = \"/b\"\n");
    assert!(fails(&text).2.contains("remote name `r` is already used"));
}

#[test]
fn paths_must_be_absolute() {
    let (line, column, msg) = fails(&with(
        "[[source]]\nname = \"www\"\nkind = \"tree\"\npath = \"srv/www\"\n",
    ));
    assert_eq!((line, column), (5, 8));
    assert!(
        msg.contains("tree source `www`") && msg.contains("absolute"),
        "{msg}"
    );
    let (_, _, msg) = fails(&with(
        "[[source]]\nname = \"db\"\nkind = \"sqlite\"\npath = \"db.sqlite\"\n",
    ));
    assert!(
        msg.contains("sqlite source `db`") && msg.contains("absolute"),
        "{msg}"
    );
    let (line, _, msg) = fails("vault = \"vault\"\n");
    assert_eq!(line, 1);
    assert!(
        msg.contains("vault \"vault\" must be an absolute path"),
        "{msg}"
    );
}

#[test]
fn globs_must_compile() {
    let (line, column, msg) = fails(&with(
        "[[source]]\nname = \"www\"\nkind = \"tree\"\npath = \"/srv\"\nexcludes = [\"ok\", \"[bad\"]\n",
    ));
    assert_eq!((line, column), (6, 19));
    assert!(
        msg.contains("tree source `www`: excludes glob \"[bad\""),
        "{msg}"
    );
    let (_, _, msg) = fails("vault = \"/v\"\ntemplate_only = [\"{a,b\"]\n");
    assert!(msg.contains("template_only glob"), "{msg}");
    let (_, _, msg) = fails(&with("[gates.sanity]\ndepended_on = [\"[\"]\n"));
    assert!(msg.contains("gates.sanity.depended_on glob"), "{msg}");
}

#[test]
fn source_kinds_take_only_their_keys() {
    let (line, _, msg) = fails(&with(
        "[[source]]\nname = \"www\"\nkind = \"tree\"\npath = \"/s\"\ndbname = \"x\"\n",
    ));
    assert_eq!(line, 6);
    assert!(
        msg.contains("`dbname` does not apply to kind \"tree\""),
        "{msg}"
    );
    let (line, _, msg) = fails(&with("[[source]]\nname = \"www\"\nkind = \"tree\"\n"));
    assert_eq!(line, 2);
    assert!(msg.contains("tree source `www` needs `path`"), "{msg}");
    let (_, _, msg) = fails(&with(
        "[[source]]\nname = \"db\"\nkind = \"postgres\"\nhost = \"h\"\n",
    ));
    assert!(msg.contains("needs `dbname` or `url`"), "{msg}");
    let (_, _, msg) = fails(&with(
        "[[source]]\nname = \"db\"\nkind = \"postgres\"\nurl = \"postgresql://h/db\"\nport = 5432\n",
    ));
    assert!(msg.contains("either `url` or `port`"), "{msg}");
    let (_, _, msg) = fails(&with(
        "[[source]]\nname = \"db\"\nkind = \"postgres\"\nurl = \"mysql://h/db\"\n",
    ));
    assert!(msg.contains("postgresql://"), "{msg}");
    let (_, _, msg) = fails(&with(
        "[[source]]\nname = \"db\"\nkind = \"postgres\"\ndbname = \"x\"\nformat = \"tar\"\n",
    ));
    assert!(msg.contains("unknown variant `tar`"), "{msg}");
    let (_, _, msg) = fails(&with(
        "[[source]]\nname = \"c\"\nkind = \"command\"\ncommand = []\n",
    ));
    assert!(msg.contains("must start with the program"), "{msg}");
    let (_, _, msg) = fails(&with(
        "[[source]]\nname = \"c\"\nkind = \"command\"\ncommand = [\"x\"]\nstream_name = \"a/b\"\n",
    ));
    assert!(msg.contains("stream_name \"a/b\""), "{msg}");
    let file = parse(&with(
        "[[source]]\nname = \"db\"\nkind = \"postgres\"\ndbname = \"erp\"\n",
    ))
    .unwrap();
    let expected = SourceKind::Postgres {
        connection: PgConnection::Params {
            host: None,
            port: None,
            user: None,
            dbname: "erp".into(),
        },
        format: PgFormat::Plain,
    };
    assert_eq!(file.source("db").map(|s| &s.kind), Some(&expected));
}

#[test]
fn remote_urls_and_s3_keys() {
    let url = |u: &str| RemoteUrl::parse(u);
    assert_eq!(
        url("file:///mnt/d/AtlasVault"),
        Ok(RemoteUrl::Path("/mnt/d/AtlasVault".into()))
    );
    assert_eq!(
        url("file:///mnt/d/My%20Vault"),
        Ok(RemoteUrl::Path("/mnt/d/My Vault".into()))
    );
    assert_eq!(
        url("/mnt/d/AtlasVault"),
        Ok(RemoteUrl::Path("/mnt/d/AtlasVault".into()))
    );
    let s3 = RemoteUrl::S3 {
        bucket: "my-bucket".into(),
        prefix: "vps/1".into(),
    };
    assert_eq!(url("s3://my-bucket/vps/1/"), Ok(s3.clone()));
    assert_eq!(s3.to_string(), "s3://my-bucket/vps/1");
    for bad in [
        "mnt/d",
        "file://host/x",
        "s3://B",
        "s3://ok-bucket/a//b",
        "ftp://x/y",
        "file:///a%zz",
    ] {
        assert!(url(bad).is_err(), "{bad} should be refused");
    }
    let (line, _, msg) = fails(&with(
        "[[remote]]\nname = \"usb\"\nurl = \"/mnt/d\"\npath_style = true\n",
    ));
    assert_eq!(line, 5);
    assert!(
        msg.contains("`path_style` applies only to s3:// remotes"),
        "{msg}"
    );
    let (_, _, msg) = fails(&with(
        "[[remote]]\nname = \"s3\"\nurl = \"s3://bkt\"\nendpoint = \"localhost:9000\"\n",
    ));
    assert!(msg.contains("http:// or https://"), "{msg}");
    let (_, _, msg) = fails("vault = \"/v\"\n[[remote]]\nname = \"self\"\nurl = \"file:///v\"\n");
    assert!(msg.contains("is the vault itself"), "{msg}");
}

#[test]
fn percentages_are_checked() {
    let (line, column, msg) = fails(&with("[gates.sanity]\nmass_loss_percent = 101\n"));
    assert_eq!((line, column), (3, 21));
    assert!(msg.contains("from 0 to 100"), "{msg}");
    assert!(fails(&with("[gates.sanity]\nmass_change_percent = -1\n"))
        .2
        .contains("from 0 to 100"));
}

#[test]
fn shape_errors_name_the_table_not_the_rust_type() {
    let (line, _, msg) = fails(&with("[source]\nname = \"a\"\n"));
    assert_eq!(line, 2);
    assert!(msg.contains("written [[source]], not [source]"), "{msg}");
    let (_, _, msg) = fails(&with("[remote]\nname = \"a\"\n"));
    assert!(msg.contains("written [[remote]], not [remote]"), "{msg}");
    let (line, column, _) = fails(&with("[[source]]\nname = \"a\"\nkind = 3\n"));
    assert_eq!((line, column), (4, 8));
    let (_, _, msg) = fails(&with("[gates]\nsanity = 3\n"));
    assert!(msg.contains("expected the [gates.sanity] table"), "{msg}");
    assert!(!msg.contains("Wire"), "{msg}");
    // Inline arrays of inline tables are the same thing as [[source]] tables.
    let file = parse(&with(
        "source = [{ name = \"a\", kind = \"sqlite\", path = \"/a.db\" }]\n",
    ));
    assert_eq!(file.map(|f| f.sources.len()).ok(), Some(1));
}

#[test]
fn drill_checks_name_postgres_sources_and_urls_hold_no_password() {
    let pg = "[[source]]\nname = \"db\"\nkind = \"postgres\"\ndbname = \"x\"\n";
    let ok = parse(&with(&format!(
        "{pg}[drill]\npg_scratch = \"postgresql://pg@h/postgres\"\n[drill.checks]\ndb = [\"SELECT 1\"]\n"
    )))
    .unwrap();
    assert_eq!(ok.drill.checks["db"], vec!["SELECT 1".to_string()]);
    for (rest, says) in [
        (
            "[drill.checks]\nnope = [\"SELECT 1\"]\n",
            "no postgres source named `nope`",
        ),
        ("[drill.checks]\ndb = [\" \"]\n", "a check query is empty"),
        (
            "[drill]\npg_scratch = \"postgresql://pg:pw@h/postgres\"\n",
            "holds a password",
        ),
        (
            "[drill]\nhealth_command = []\n",
            "must start with the program",
        ),
        ("[drill]\nhealth_timeout = \"0s\"\n", "longer than zero"),
        ("[drill]\nhealth = 1\n", "unknown field"),
    ] {
        let err = parse(&with(&format!("{pg}{rest}")))
            .unwrap_err()
            .to_string();
        assert!(err.contains(says), "{rest}: {err}");
    }
}
