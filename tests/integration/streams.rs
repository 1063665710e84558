//! Dump streams: standard input, a command's stdout and a live SQLite database go into a snapshot
//! as one file each, with their sha256 in the manifest; a failing source leaves the snapshot
//! rejected and the last-known-good where it was.

use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::common::*;

/// A config with the fixture's vault and the given sources.
fn config(f: &Fixture, sources: &str) {
    let text = format!("vault = \"{}\"\n{sources}", f.vault().display());
    fs::write(f.path("vault.toml"), text).unwrap();
}

#[test]
fn stdin_is_stored_as_one_stream_with_its_sha256() {
    let f = Fixture::with_vault();
    let body = [
        &b"--\n-- PostgreSQL database dump\n--\n"[..],
        &text_bytes(300_000),
    ]
    .concat();
    // Cut short (no completion trailer): an exit status we cannot see, but the gate can tell.
    let cut = f
        .cmd()
        .args(["snapshot", "--json", "--stdin", "--name", "pgdump"])
        .run_with_stdin(&body)
        .code(5)
        .stdout_has("completion trailer");
    assert_eq!(cut.json()["promoted"], false);
    // Nothing at all is a failed producer too.
    f.cmd()
        .args(["snapshot", "--stdin", "--name", "pgdump"])
        .run_with_stdin(b"")
        .code(5)
        .stderr_has("the stream was empty");
    let dump = [
        &body[..],
        b"\n--\n-- PostgreSQL database dump complete\n--\n\n",
    ]
    .concat();
    let snap = f
        .cmd()
        .args(["snapshot", "--json", "--stdin", "--name", "pgdump"])
        .run_with_stdin(&dump)
        .success()
        .json();
    assert_eq!(snap["promoted"], true, "{snap:#}");
    let m = manifest_json(&f, snap["id"].as_str().unwrap());
    let st = &m["streams"][0];
    assert_eq!(st["path"], "pgdump/stdin");
    assert_eq!(st["bytes"], dump.len() as u64);
    assert_eq!(st["sha256"], hex::encode(Sha256::digest(&dump)));
    let out = f.path("out");
    f.restore("latest", &out);
    assert_eq!(fs::read(out.join("pgdump/stdin")).unwrap(), dump);
}

#[test]
fn a_failing_dump_command_is_rejected_and_the_lkg_stays() {
    let f = Fixture::with_vault();
    config(
        &f,
        "[[source]]\nname = \"db\"\nkind = \"command\"\ncommand = [\"sh\", \"-c\", \"printf 'INSERT INTO t VALUES (1);\\\\n%.0s' $(seq 1 2000)\"]\nstream_name = \"dump.sql\"\n",
    );
    let good = f
        .cmd_in(f.root())
        .args(["snapshot", "--json"])
        .run()
        .success()
        .json();
    assert_eq!(good["promoted"], true, "{good:#}");
    let good_id = good["id"].as_str().unwrap().to_string();
    let m = manifest_json(&f, &good_id);
    assert_eq!(m["streams"][0]["ok"], true, "{m:#}");
    assert_eq!(m["streams"][0]["exit_code"], 0);
    assert_eq!(m["streams"][0]["bytes"], 2000 * 26);
    // The manifest names the program, not its arguments (they may hold a secret).
    assert_eq!(m["paths"][0]["path"], "command:sh", "{m:#}");

    // Half a dump, then an error: exit 1.
    config(
        &f,
        "[[source]]\nname = \"db\"\nkind = \"command\"\ncommand = [\"sh\", \"-c\", \"echo 'INSERT INTO t VALUES (1);'; echo 'pg_dump: error: connection lost' >&2; exit 1\"]\nstream_name = \"dump.sql\"\n",
    );
    let run = f
        .cmd_in(f.root())
        .args(["snapshot", "--json"])
        .run()
        .code(5)
        .stderr_has("source db failed");
    let v = run.json();
    let sanity = gate_result(&v, "sanity").to_string();
    assert!(
        sanity.contains("exit status: 1") && sanity.contains("connection lost"),
        "{sanity}"
    );
    assert_eq!(lkg(&f).as_deref(), Some(good_id.as_str()));

    // A command that cannot even start is a failed source too.
    config(
        &f,
        "[[source]]\nname = \"db\"\nkind = \"command\"\ncommand = [\"/nonexistent/pg_dump\"]\n",
    );
    f.cmd_in(f.root())
        .arg("snapshot")
        .run()
        .code(5)
        .stderr_has("cannot run /nonexistent/pg_dump");
    assert_eq!(lkg(&f).as_deref(), Some(good_id.as_str()));
}

#[test]
fn a_live_sqlite_database_is_copied_consistently_while_it_is_written() {
    let f = Fixture::with_vault();
    let db = f.path("app.sqlite");
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; CREATE TABLE events(id INTEGER PRIMARY KEY, body TEXT);",
        )
        .unwrap();
        for i in 0..2000 {
            conn.execute(
                "INSERT INTO events(body) VALUES (?1)",
                [format!("event {i} with some payload text")],
            )
            .unwrap();
        }
    }
    let count = |path: &std::path::Path| -> i64 {
        let conn = rusqlite::Connection::open(path).unwrap();
        conn.query_row("SELECT count(*) FROM events", [], |r| r.get(0))
            .unwrap()
    };
    config(
        &f,
        &format!(
            "[[source]]\nname = \"appdb\"\nkind = \"sqlite\"\npath = \"{}\"\n",
            db.display()
        ),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let db = db.clone();
        std::thread::spawn(move || {
            let conn = rusqlite::Connection::open(&db).unwrap();
            conn.busy_timeout(std::time::Duration::from_secs(5))
                .unwrap();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                conn.execute(
                    "INSERT INTO events(body) VALUES (?1)",
                    [format!("live event {i}")],
                )
                .unwrap();
                i += 1;
            }
            i
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(50));
    let before = count(&db);
    let snap = f
        .cmd_in(f.root())
        .args(["snapshot", "--json"])
        .run()
        .success()
        .json();
    let after = count(&db);
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().unwrap();
    assert!(written > 0, "the writer never wrote");
    assert_eq!(snap["promoted"], true, "{snap:#}");

    // A sqlite source restores to a file path.
    let copy = f.path("restored.sqlite");
    f.cmd_in(f.root())
        .args(["restore", "latest", "--source", "appdb", "--to"])
        .arg(&copy)
        .run()
        .success();
    f.cmd_in(f.root())
        .args(["restore", "latest", "--source", "appdb", "--to"])
        .arg(&copy)
        .run()
        .one_line_error(1)
        .stderr_has("--force");
    let conn = rusqlite::Connection::open(&copy).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let n = count(&copy);
    assert!(
        (before..=after).contains(&n),
        "restored {n} rows, live had {before} before and {after} after"
    );
}
