//! The parts of a drill past the files: each PostgreSQL dump restored into a fresh database on a
//! scratch server (`psql` for plain dumps, `pg_restore` for custom ones) with the user's check
//! queries run there, and a health command run in the restored tree.
//!
//! Every program runs without a shell, with `--no-password` (the password, if any, comes from
//! `PGPASSWORD` or `PGPASSFILE` as for `pg_dump`), and only the end of its stderr is kept.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::manifest::StreamRecord;

/// Characters of a program's output kept in a report.
const OUTPUT_TAIL_CHARS: usize = 800;

/// One postgres dump rehearsed in a scratch database.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DbRehearsal {
    pub source: String,
    /// The scratch database it was restored into (dropped afterwards unless kept).
    pub database: String,
    pub restored: bool,
    pub restore_ms: u64,
    pub checks: Vec<CheckResult>,
    /// Why it did not restore (the tool's stderr, last lines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub ok: bool,
}

/// One check query.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckResult {
    pub query: String,
    /// Its first value, or the error.
    pub result: String,
    pub passed: bool,
}

/// The health command's outcome.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HealthResult {
    pub command: Vec<String>,
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    pub duration_ms: u64,
    /// The end of what it printed (stdout and stderr).
    pub output: String,
    pub passed: bool,
}

/// Where and what to rehearse.
pub struct Rehearsal<'a> {
    /// The scratch server's maintenance database URL.
    pub pg_scratch: Option<&'a str>,
    pub checks: &'a BTreeMap<String, Vec<String>>,
    /// A suffix that makes the database names unique to this drill.
    pub stamp: &'a str,
    /// Keep the scratch databases.
    pub keep: bool,
}

/// Restores each postgres stream of the snapshot (restored under `scratch`) into its own
/// database and runs its checks. Returns the outcomes and the databases' URLs by source, for the
/// health command; databases are dropped by [`drop_databases`].
pub fn databases(
    r: &Rehearsal<'_>,
    streams: &[StreamRecord],
    scratch: &Path,
) -> Vec<(DbRehearsal, String)> {
    let mut out = Vec::new();
    for s in streams.iter().filter(|s| s.kind.starts_with("postgres-")) {
        // PostgreSQL cuts identifiers at 63 bytes: keep the stamp, shorten the source.
        let source: String = s.source.replace('-', "_").chars().take(30).collect();
        let database = format!("atlasvault_drill_{source}_{}", r.stamp);
        let mut d = DbRehearsal {
            source: s.source.clone(),
            database: database.clone(),
            restored: false,
            restore_ms: 0,
            checks: Vec::new(),
            error: None,
            ok: false,
        };
        let Some(server) = r.pg_scratch else {
            // Not rehearsed; a failure only when the user asked for checks on it.
            d.ok = !r.checks.contains_key(&s.source);
            d.error =
                Some("not restored: no scratch server (--pg-scratch or drill.pg_scratch)".into());
            out.push((d, String::new()));
            continue;
        };
        let url = with_database(server, &database);
        if !s.ok {
            d.error = Some("the dump failed when the snapshot was taken".into());
            out.push((d, url));
            continue;
        }
        let t = Instant::now();
        let file = scratch.join(&s.path);
        let created = psql(server, &["-c", &format!("CREATE DATABASE \"{database}\"")]);
        let restored = created.and_then(|_| {
            let mut cmd = crate::stream::pg_load_command(&s.kind, &url)
                .ok_or_else(|| format!("{} is not a postgres stream", s.kind))?;
            let dump =
                File::open(&file).map_err(|e| format!("cannot open the restored dump: {e}"))?;
            run_tool(cmd.stdin(dump))
        });
        d.restore_ms = t.elapsed().as_millis() as u64;
        match restored {
            Ok(_) => d.restored = true,
            Err(e) => d.error = Some(e),
        }
        if d.restored {
            for q in r.checks.get(&s.source).into_iter().flatten() {
                let (result, passed) = match psql(&url, &["-A", "-t", "-c", q]) {
                    Ok(v) => {
                        let first = v.lines().next().unwrap_or("").trim().to_string();
                        let passed = truthy(&first);
                        (first, passed)
                    }
                    Err(e) => (e, false),
                };
                d.checks.push(CheckResult {
                    query: q.clone(),
                    result,
                    passed,
                });
            }
        }
        d.ok = d.restored && d.checks.iter().all(|c| c.passed);
        out.push((d, url));
    }
    out
}

/// Drops the scratch databases made by [`databases`] (unless kept); a failure is noted in the
/// rehearsal, not fatal.
pub fn drop_databases(r: &Rehearsal<'_>, dbs: &mut [(DbRehearsal, String)]) {
    let (Some(server), false) = (r.pg_scratch, r.keep) else {
        return;
    };
    for (d, _) in dbs.iter_mut() {
        if d.error
            .as_deref()
            .is_some_and(|e| e.starts_with("not restored"))
        {
            continue;
        }
        let sql = format!("DROP DATABASE IF EXISTS \"{}\"", d.database);
        if let Err(e) = psql(server, &["-c", &sql]) {
            d.error
                .get_or_insert(format!("could not drop the scratch database: {e}"));
        }
    }
}

/// Runs the health command in `scratch` with `VAULT_DRILL_DIR` and one `VAULT_DRILL_PG_<SOURCE>`
/// per restored database in its environment.
pub fn health(
    argv: &[String],
    timeout: Duration,
    scratch: &Path,
    dbs: &[(DbRehearsal, String)],
) -> HealthResult {
    let t = Instant::now();
    let mut res = HealthResult {
        command: argv.to_vec(),
        exit_code: None,
        timed_out: false,
        duration_ms: 0,
        output: String::new(),
        passed: false,
    };
    let log = match tempfile::tempfile() {
        Ok(f) => f,
        Err(e) => {
            res.output = format!("cannot make a log file: {e}");
            return res;
        }
    };
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .current_dir(scratch)
        .env("VAULT_DRILL_DIR", scratch)
        .stdin(Stdio::null());
    for (d, url) in dbs.iter().filter(|(d, _)| d.restored) {
        let var = format!(
            "VAULT_DRILL_PG_{}",
            d.source.to_ascii_uppercase().replace('-', "_")
        );
        cmd.env(var, url);
    }
    let spawned = log
        .try_clone()
        .and_then(|out| Ok((out, log.try_clone()?)))
        .and_then(|(out, err)| cmd.stdout(out).stderr(err).spawn());
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            res.output = format!("cannot start {}: {e}", argv[0]);
            return res;
        }
    };
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                res.timed_out = true;
                break None;
            }
        }
    };
    res.duration_ms = t.elapsed().as_millis() as u64;
    res.output = tail_of(log);
    res.exit_code = status.and_then(|s| s.code());
    res.passed = status.is_some_and(|s| s.success());
    res
}

/// A first value that means "yes": true, a non-zero number, or other non-empty text.
fn truthy(v: &str) -> bool {
    match v.to_ascii_lowercase().as_str() {
        "" | "f" | "false" => false,
        "t" | "true" => true,
        other => !matches!(other.parse::<f64>(), Ok(n) if n == 0.0),
    }
}

/// `server` (a `postgresql://` URL) naming `database` instead of its own.
fn with_database(server: &str, database: &str) -> String {
    let (scheme, rest) = server.split_once("://").unwrap_or(("postgresql", server));
    let (before_query, query) = match rest.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (rest, None),
    };
    let authority = before_query.split('/').next().unwrap_or_default();
    let mut url = format!("{scheme}://{authority}/{database}");
    if let Some(q) = query {
        url.push('?');
        url.push_str(q);
    }
    url
}

/// Runs `psql` on `url` with `args`, stopping at the first error; returns its stdout.
fn psql(url: &str, args: &[&str]) -> std::result::Result<String, String> {
    run_tool(
        Command::new("psql")
            .args(["-X", "--no-password", "-v", "ON_ERROR_STOP=1"])
            .arg(format!("--dbname={url}"))
            .args(args)
            .stdin(Stdio::null()),
    )
}

fn run_tool(cmd: &mut Command) -> std::result::Result<String, String> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{program} failed ({}): {}",
            out.status,
            tail(&String::from_utf8_lossy(&out.stderr))
        ))
    }
}

fn tail_of(mut f: File) -> String {
    use std::io::Seek;
    let mut s = String::new();
    let _ = f.rewind();
    let mut bytes = Vec::new();
    let _ = f.read_to_end(&mut bytes);
    s.push_str(&String::from_utf8_lossy(&bytes));
    tail(&s)
}

fn tail(s: &str) -> String {
    let s = s.trim();
    let n = s.chars().count();
    if n <= OUTPUT_TAIL_CHARS {
        return s.to_string();
    }
    let skip = n - OUTPUT_TAIL_CHARS;
    format!("...{}", s.chars().skip(skip).collect::<String>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_replaces_the_path_and_keeps_the_query() {
        assert_eq!(
            with_database(
                "postgresql://pg@127.0.0.1:5433/postgres?sslmode=disable",
                "x"
            ),
            "postgresql://pg@127.0.0.1:5433/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
        assert_eq!(
            with_database("postgresql://h?a=b", "x"),
            "postgresql://h/x?a=b"
        );
    }

    #[test]
    fn truthy_values() {
        for yes in ["t", "true", "1", "42", "2.5", "ok"] {
            assert!(truthy(yes), "{yes}");
        }
        for no in ["", "f", "FALSE", "0", "0.0"] {
            assert!(!truthy(no), "{no}");
        }
    }

    #[test]
    fn health_command_passes_fails_and_times_out() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("marker"), "x").unwrap();
        let sh = |s: &str| vec!["sh".to_string(), "-c".to_string(), s.to_string()];
        let ok = health(
            &sh("test -f marker && echo fine"),
            Duration::from_secs(10),
            dir.path(),
            &[],
        );
        assert!(ok.passed && ok.output == "fine", "{ok:?}");
        let bad = health(
            &sh("echo broken >&2; exit 3"),
            Duration::from_secs(10),
            dir.path(),
            &[],
        );
        assert!(
            !bad.passed && bad.exit_code == Some(3) && bad.output == "broken",
            "{bad:?}"
        );
        let slow = health(&sh("sleep 5"), Duration::from_millis(200), dir.path(), &[]);
        assert!(!slow.passed && slow.timed_out, "{slow:?}");
        let missing = health(
            &["/no/such/program".to_string()],
            Duration::from_secs(1),
            dir.path(),
            &[],
        );
        assert!(
            !missing.passed && missing.output.contains("cannot start"),
            "{missing:?}"
        );
    }
}
