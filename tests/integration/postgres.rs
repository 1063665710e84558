//! PostgreSQL sources against a real server: Debian's PostgreSQL started by the test (`initdb` and
//! `pg_ctl` on a loopback port in the fixture, as nobody when the tests run as root), loaded with
//! pgbench data, snapshotted through `pg_dump`, dropped, and restored into a new database with
//! `vault restore --source db --to-stdout | psql`; and a drill that restores the dump into a
//! scratch database there and runs check queries and a health command.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::common::*;

/// A PostgreSQL server for one test; stopped when dropped.
struct PgServer {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    as_nobody: bool,
}

impl PgServer {
    fn start(f: &Fixture) -> PgServer {
        let bin = fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|d| {
                d.flatten()
                    .map(|e| e.path().join("bin"))
                    .filter(|b| b.join("initdb").exists())
                    .max()
            })
            .unwrap_or_else(|| {
                panic!(
                    "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb); \
                     scripts/test.sh installs Debian's `postgresql`"
                )
            });
        let base = f.path("pg");
        let data = base.join("data");
        fs::create_dir_all(&base).unwrap();
        let as_nobody = is_root();
        if as_nobody {
            // The server refuses to run as root: it runs as nobody, who needs to reach its files.
            chmod(f.root(), 0o755);
            std::os::unix::fs::chown(&base, Some(65534), Some(65534)).unwrap();
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = PgServer {
            bin,
            data,
            port,
            as_nobody,
        };
        server.admin(&[
            "initdb",
            "-D",
            &server.data.to_string_lossy(),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]);
        let opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            base.display()
        );
        server.admin(&[
            "pg_ctl",
            "-D",
            &server.data.to_string_lossy(),
            "-l",
            &base.join("log").to_string_lossy(),
            "-o",
            &opts,
            "-w",
            "start",
        ]);
        server
    }

    /// Runs a server program (as nobody when root).
    fn admin(&self, args: &[&str]) {
        let program = self.bin.join(args[0]);
        let mut cmd = if self.as_nobody {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let out = cmd.args(&args[1..]).env("LC_ALL", "C").output().unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
    }

    /// A client program against this server, as user postgres over TCP.
    fn client(&self, program: &str) -> Command {
        let mut c = Command::new(self.bin.join(program));
        c.env("PGHOST", "127.0.0.1")
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", "postgres");
        c
    }

    fn sql(&self, db: &str, query: &str) -> String {
        let out = self
            .client("psql")
            .args([
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                db,
                "-c",
                query,
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{query}: {out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// Creates database `bench` holding pgbench's tables at scale 1 (100,000 accounts).
    fn load_pgbench(&self) {
        self.sql("postgres", "CREATE DATABASE bench");
        let init = self
            .client("pgbench")
            .args(["-i", "-s", "1", "-q", "bench"])
            .stdout(Stdio::null())
            .output()
            .unwrap();
        assert!(init.status.success(), "{init:?}");
    }

    fn stop(&self) {
        self.admin(&[
            "pg_ctl",
            "-D",
            &self.data.to_string_lossy(),
            "-m",
            "immediate",
            "-w",
            "stop",
        ]);
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let program = self.bin.join("pg_ctl");
        let data = self.data.to_string_lossy().into_owned();
        let args = ["-D", data.as_str(), "-m", "immediate", "-w", "stop"];
        let _ = if self.as_nobody {
            Command::new("setpriv")
                .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(&program)
                .args(args)
                .output()
        } else {
            Command::new(&program).args(args).output()
        };
    }
}

/// Row counts and an order-independent checksum of every pgbench table.
const CHECKSUM: &str = "SELECT string_agg(t || ':' || n || ':' || h, ' ' ORDER BY t) FROM (\
     SELECT 'accounts' t, count(*) n, sum(hashtext(a::text)) h FROM pgbench_accounts a UNION ALL \
     SELECT 'branches', count(*), sum(hashtext(b::text)) FROM pgbench_branches b UNION ALL \
     SELECT 'tellers', count(*), sum(hashtext(x::text)) FROM pgbench_tellers x UNION ALL \
     SELECT 'history', count(*), coalesce(sum(hashtext(y::text)), 0) FROM pgbench_history y) s";

fn config(f: &Fixture, pg: &PgServer) {
    let text = format!(
        "vault = \"{}\"\n\n[[source]]\nname = \"db\"\nkind = \"postgres\"\nhost = \"127.0.0.1\"\n\
         port = {}\nuser = \"postgres\"\ndbname = \"bench\"\n",
        f.vault().display(),
        pg.port
    );
    fs::write(f.path("vault.toml"), text).unwrap();
}

/// A `pg_dump` that drops the end of the real one's output and still exits 0.
fn truncating_pg_dump(f: &Fixture, pg: &PgServer) -> PathBuf {
    let dir = f.path("fake-bin");
    fs::create_dir_all(&dir).unwrap();
    let script = dir.join("pg_dump");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\n\"{}\" \"$@\" | head -c -300\n",
            pg.bin.join("pg_dump").display()
        ),
    )
    .unwrap();
    chmod(&script, 0o755);
    dir
}

fn path_with(dir: &Path, pg: &PgServer) -> String {
    format!(
        "{}:{}:{}",
        dir.display(),
        pg.bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

#[test]
fn pgbench_data_round_trips_through_a_dump_and_bad_dumps_are_rejected() {
    let f = Fixture::with_vault();
    let pg = PgServer::start(&f);
    pg.load_pgbench();
    let before = pg.sql("bench", CHECKSUM);
    assert!(before.contains("accounts:100000:"), "{before}");
    config(&f, &pg);

    let empty = f.path("empty-bin");
    fs::create_dir_all(&empty).unwrap();
    let snap = f
        .cmd_in(f.root())
        .env("PATH", path_with(&empty, &pg))
        .args(["snapshot", "--json"])
        .run()
        .success()
        .json();
    assert_eq!(snap["promoted"], true, "{snap:#}");
    let good = snap["id"].as_str().unwrap().to_string();
    let m = manifest_json(&f, &good);
    assert_eq!(m["streams"][0]["kind"], "postgres-plain", "{m:#}");
    assert_eq!(m["streams"][0]["path"], "db/bench.sql");

    // Drop it, restore into a new database through psql, compare.
    pg.sql("postgres", "DROP DATABASE bench");
    pg.sql("postgres", "CREATE DATABASE restored");
    let dump = f
        .cmd_in(f.root())
        .args(["restore", "--lkg", "--source", "db", "--to-stdout"])
        .run()
        .success()
        .stdout;
    assert!(dump.contains("PostgreSQL database dump complete"));
    let mut psql = pg
        .client("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", "restored"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(psql.stdin.as_mut().unwrap(), dump.as_bytes()).unwrap();
    drop(psql.stdin.take());
    assert!(psql.wait().unwrap().success());
    assert_eq!(pg.sql("restored", CHECKSUM), before);

    // --into does the same in one command, and reports.
    pg.sql("postgres", "CREATE DATABASE restored2");
    let url = format!("postgresql://postgres@127.0.0.1:{}/restored2", pg.port);
    f.cmd_in(f.root())
        .env("PATH", path_with(&empty, &pg))
        .args(["restore", "--lkg", "--source", "db", "--into", &url])
        .run()
        .success()
        .stderr_has("loaded db/bench.sql");
    assert_eq!(pg.sql("restored2", CHECKSUM), before);
    // Loading the same dump again fails (the tables exist): reported, exit 1.
    f.cmd_in(f.root())
        .env("PATH", path_with(&empty, &pg))
        .args(["restore", "--lkg", "--source", "db", "--into", &url])
        .run()
        .code(1)
        .stderr_has("psql failed");

    // Custom format (-Z0) goes back through pg_restore.
    pg.sql("postgres", "CREATE DATABASE restored3");
    let custom = format!(
        "vault = \"{}\"\n\n[[source]]\nname = \"dbc\"\nkind = \"postgres\"\nhost = \"127.0.0.1\"\n\
         port = {}\nuser = \"postgres\"\ndbname = \"restored\"\nformat = \"custom\"\n",
        f.vault().display(),
        pg.port
    );
    fs::write(f.path("custom.toml"), custom).unwrap();
    let snap = f
        .cmd_in(f.root())
        .env("PATH", path_with(&empty, &pg))
        .args([
            "--config",
            "custom.toml",
            "snapshot",
            "--json",
            "--no-promote",
        ])
        .run()
        .success()
        .json();
    let m = manifest_json(&f, snap["id"].as_str().unwrap());
    assert_eq!(m["streams"][0]["kind"], "postgres-custom", "{m:#}");
    let url3 = format!("postgresql://postgres@127.0.0.1:{}/restored3", pg.port);
    f.cmd_in(f.root())
        .env("PATH", path_with(&empty, &pg))
        .args([
            "--config",
            "custom.toml",
            "restore",
            "latest",
            "--source",
            "dbc",
            "--into",
            &url3,
        ])
        .run()
        .success()
        .stderr_has("pg_restore");
    assert_eq!(pg.sql("restored3", CHECKSUM), before);

    // A dump cut short that still exits 0: the trailer check rejects it.
    pg.sql("postgres", "ALTER DATABASE restored RENAME TO bench");
    let fake = truncating_pg_dump(&f, &pg);
    f.cmd_in(f.root())
        .env("PATH", path_with(&fake, &pg))
        .arg("snapshot")
        .run()
        .code(5)
        .stdout_has("completion trailer");
    assert_eq!(lkg(&f).as_deref(), Some(good.as_str()));

    // The server is down: pg_dump fails, the snapshot is rejected, the LKG stays.
    pg.stop();
    f.cmd_in(f.root())
        .env("PATH", path_with(&empty, &pg))
        .arg("snapshot")
        .run()
        .code(5)
        .stderr_has("source db failed");
    assert_eq!(lkg(&f).as_deref(), Some(good.as_str()));
}

#[test]
fn drill_restores_the_dump_into_a_scratch_database_and_runs_the_checks() {
    let f = Fixture::with_vault();
    let pg = PgServer::start(&f);
    pg.load_pgbench();
    let scratch = format!("postgresql://postgres@127.0.0.1:{}/postgres", pg.port);
    let drill_config = |checks: &str| {
        let text = format!(
            "vault = \"{}\"\n\n[[source]]\nname = \"db\"\nkind = \"postgres\"\nhost = \"127.0.0.1\"\n\
             port = {}\nuser = \"postgres\"\ndbname = \"bench\"\n\n[drill]\npg_scratch = \"{scratch}\"\n\
             health_command = [\"sh\", \"-c\", \"test -s db/bench.sql && psql -X -At -d \\\"$VAULT_DRILL_PG_DB\\\" -c 'SELECT count(*) FROM pgbench_branches'\"]\n\n\
             [drill.checks]\ndb = [{checks}]\n",
            f.vault().display(),
            pg.port
        );
        fs::write(f.path("vault.toml"), text).unwrap();
    };
    drill_config("\"SELECT count(*) = 100000 FROM pgbench_accounts\", \"SELECT count(*) FROM pgbench_tellers\"");
    let empty = f.path("empty-bin");
    fs::create_dir_all(&empty).unwrap();
    let path = path_with(&empty, &pg);
    f.cmd_in(f.root())
        .env("PATH", &path)
        .args(["snapshot", "--json"])
        .run()
        .success();

    let r = f
        .cmd_in(f.root())
        .env("PATH", &path)
        .args(["--json", "drill"])
        .run()
        .success()
        .json();
    let report = &r["report"];
    assert_eq!(report["ok"], true, "{report:#}");
    let db = &report["databases"][0];
    assert_eq!(db["source"], "db");
    assert_eq!(db["restored"], true, "{db:#}");
    assert_eq!(db["checks"].as_array().unwrap().len(), 2);
    assert!(
        db["checks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["passed"] == true),
        "{db:#}"
    );
    assert_eq!(db["checks"][1]["result"], "10", "{db:#}");
    assert_eq!(report["health"]["passed"], true, "{report:#}");
    assert_eq!(report["health"]["output"], "1", "{report:#}");
    // The scratch database is gone, the source database untouched.
    assert_eq!(
        pg.sql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'atlasvault_drill%'"
        ),
        "0"
    );
    let md = fs::read_to_string(r["path"].as_str().unwrap().replace(".json", ".md")).unwrap();
    assert!(
        md.contains("database `db`") && md.contains("2/2 checks passed"),
        "{md}"
    );

    // A check that does not hold fails the drill, and says which.
    drill_config("\"SELECT count(*) = 5 FROM pgbench_accounts\"");
    let bad = f.cmd_in(f.root()).env("PATH", &path).arg("drill").run();
    assert_ne!(bad.code, Some(0), "{bad:?}");
    assert!(
        bad.stdout
            .contains("check failed: SELECT count(*) = 5 FROM pgbench_accounts gave \"f\""),
        "{}",
        bad.stdout
    );
    // A scratch URL with a password is refused before anything runs.
    f.cmd_in(f.root())
        .env("PATH", &path)
        .args([
            "drill",
            "--pg-scratch",
            &format!(
                "postgresql://postgres:secret@127.0.0.1:{}/postgres",
                pg.port
            ),
        ])
        .run()
        .one_line_error(2);
}
