//! `vault agent` and `vault cycle` as real processes: an agent on a 2-second interval over a real
//! tree and a SQLite database, watched through /health, /metrics and /manifest, broken, stopped
//! with SIGTERM, and the vault verified afterwards.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A tree, a SQLite database, a directory remote and a config with a fast agent.
fn setup(f: &Fixture, port: u16) -> PathBuf {
    let data = f.path("www");
    fs::create_dir_all(data.join("app")).unwrap();
    for i in 0..30 {
        fs::write(
            data.join(format!("app/page{i}.html")),
            text_bytes(2000 + i * 10),
        )
        .unwrap();
    }
    let db = f.path("app.sqlite");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "create table orders(id integer primary key, item text);
         insert into orders(item) values ('a'), ('b'), ('c');",
    )
    .unwrap();
    drop(conn);
    atlasvault::backend::local::LocalBackend::create(&f.path("remote")).unwrap();
    let cfg = f.path("vault.toml");
    fs::write(
        &cfg,
        format!(
            "vault = \"{vault}\"\n\n\
             [[source]]\nname = \"www\"\nkind = \"tree\"\npath = \"{data}\"\n\n\
             [[source]]\nname = \"appdb\"\nkind = \"sqlite\"\npath = \"{db}\"\n\n\
             [[remote]]\nname = \"usb\"\nurl = \"{remote}\"\n\n\
             [agent]\ninterval = \"2s\"\nrpo = \"3s\"\ngrace = \"1s\"\nlisten = \"127.0.0.1:{port}\"\n",
            vault = f.vault().display(),
            data = data.display(),
            db = db.display(),
            remote = f.path("remote").display(),
        ),
    )
    .unwrap();
    cfg
}

/// `GET path` on the agent: (status, body).
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let status = resp.split(' ').nth(1)?.parse().ok()?;
    let body = resp.split_once("\r\n\r\n")?.1.to_string();
    Some((status, body))
}

/// Polls `GET path` until `want` holds, or fails after `limit`.
fn wait_for(port: u16, path: &str, limit: Duration, want: impl Fn(u16, &str) -> bool) -> String {
    let deadline = Instant::now() + limit;
    let mut last = None;
    while Instant::now() < deadline {
        if let Some((status, body)) = get(port, path) {
            if want(status, &body) {
                return body;
            }
            last = Some((status, body));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{path} never met the condition within {limit:?}; last answer: {last:?}");
}

/// Starts `vault --config CFG agent EXTRA...` with the fixture's password, stderr into `log`.
pub fn start_agent(f: &Fixture, cfg: &Path, log: &Path, extra: &[&str]) -> Child {
    Command::new(VAULT_BIN)
        .args(["--config"])
        .arg(cfg)
        .args(["agent"])
        .args(extra)
        .env("VAULT_PASSWORD_FILE", f.password_file())
        .env_remove("VAULT_DIR")
        .env("XDG_CACHE_HOME", f.path("cache"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(log).unwrap())
        .spawn()
        .expect("start vault agent")
}

/// Checks the OpenMetrics text: every sample line is `name{labels} value` with a number.
fn parse_metrics(text: &str) -> Vec<(String, f64)> {
    assert!(
        text.ends_with("# EOF\n"),
        "OpenMetrics text ends with # EOF:\n{text}"
    );
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (name, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("sample line without a value: {line:?}"));
        let v: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("sample value is not a number: {line:?}"));
        let metric = name.split('{').next().unwrap();
        assert!(
            metric
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name {metric:?}"
        );
        out.push((name.to_string(), v));
    }
    out
}

fn metric(samples: &[(String, f64)], name: &str) -> f64 {
    samples
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no sample {name} in {samples:?}"))
        .1
}

#[test]
fn agent_snapshots_on_its_interval_serves_health_and_metrics_and_stops_cleanly() {
    let f = Fixture::with_vault();
    let port = free_port();
    let cfg = setup(&f, port);
    let log = f.path("agent.log");
    let mut agent = start_agent(&f, &cfg, &log, &[]);

    // Healthy once the first cycle promoted a snapshot.
    let health = wait_for(port, "/health", Duration::from_secs(30), |s, _| s == 200);
    let h: serde_json::Value = serde_json::from_str(&health).unwrap();
    assert_eq!(h["status"], "ok");
    assert_eq!(h["rpo_seconds"], 3);
    assert!(h["lkg"].as_str().is_some_and(|s| s.len() == 64), "{h}");
    // Cycles keep coming: several snapshots within a few intervals.
    let deadline = Instant::now() + Duration::from_secs(30);
    // Listing while the agent snapshots: wait for its lock like any reader would.
    let count = || {
        f.cmd()
            .args(["--wait", "30s", "--json", "snapshots"])
            .run()
            .success()
            .json()
            .as_array()
            .map_or(0, |a| a.len())
    };
    while count() < 3 {
        assert!(
            Instant::now() < deadline,
            "the agent did not keep snapshotting"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (status, manifest) = get(port, "/manifest").unwrap();
    assert_eq!(status, 200);
    let m: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    assert!(m["tree"].is_string(), "{m}");
    let (status, text) = get(port, "/metrics").unwrap();
    assert_eq!(status, 200);
    let samples = parse_metrics(&text);
    assert!(metric(&samples, "atlasvault_snapshots_total") >= 1.0);
    assert!(metric(&samples, "atlasvault_cycles_total{outcome=\"ok\"}") >= 1.0);
    assert!(metric(&samples, "atlasvault_bytes_read_total") > 0.0);
    assert!(metric(&samples, "atlasvault_last_success_timestamp_seconds") > 1.7e9);
    let age = metric(&samples, "atlasvault_lkg_age_seconds");
    assert!((0.0..10.0).contains(&age), "{age}");
    for name in [
        "atlasvault_cycle_duration_seconds",
        "atlasvault_bytes_new_total",
        "atlasvault_bytes_stored_total",
        "atlasvault_dedup_ratio",
    ] {
        metric(&samples, name);
    }
    // The pushes reached the remote.
    assert!(f.path("remote/refs/last-known-good.json").exists());

    // A second agent on the same vault is refused, clearly.
    f.cmd()
        .arg("--config")
        .arg(&cfg)
        .arg("agent")
        .run()
        .one_line_error(11)
        .stderr_has("another `vault agent`");

    // Break a source: the database disappears. Snapshots are rejected, the LKG stays, and
    // /health turns 503 once it is older than RPO + grace.
    fs::remove_file(f.path("app.sqlite")).unwrap();
    let body = wait_for(port, "/health", Duration::from_secs(30), |s, _| s == 503);
    let h: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(h["status"], "stale");
    assert!(
        h["reason"].as_str().unwrap().contains("past the RPO"),
        "{h}"
    );
    let text = get(port, "/metrics").unwrap().1;
    let samples = parse_metrics(&text);
    assert!(metric(&samples, "atlasvault_gate_failures_total{gate=\"sanity\"}") >= 1.0);
    // Hostile requests do not take it down.
    assert_eq!(get(port, "/nope").unwrap().0, 404);
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let _ = s.write_all(b"GET /health HTTP/1.1\r\nX-Junk: ");
    let _ = s.write_all(&vec![b'a'; 64 * 1024]);
    drop(s);
    assert_eq!(get(port, "/health").unwrap().0, 503, "still serving");

    // SIGTERM: exit 0, promptly.
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(
        unsafe { libc::kill(agent.id() as libc::pid_t, libc::SIGTERM) },
        0
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = agent.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the agent did not stop within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let logged = fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(0), "{logged}");
    assert!(logged.contains("agent stopped"), "{logged}");
    assert!(logged.contains("cycle done"), "{logged}");
    f.cmd()
        .args(["verify", "--read-data"])
        .run()
        .success()
        .stdout_has("vault is clean");
    // `vault status` reads what the agent left: the RPO is breached now (exit 14).
    let st = f
        .cmd()
        .arg("--config")
        .arg(&cfg)
        .args(["status"])
        .run()
        .code(14);
    assert!(st.stdout.contains("RPO BREACHED"), "{}", st.stdout);
    assert!(st.stdout.contains("last cycle"), "{}", st.stdout);
    assert!(st.stdout.contains("remote      usb"), "{}", st.stdout);
}

#[test]
fn cycle_runs_once_and_its_exit_code_says_which_step_failed() {
    let f = Fixture::with_vault();
    let cfg = setup(&f, free_port());
    let r = f
        .cmd()
        .arg("--config")
        .arg(&cfg)
        .args(["--json", "cycle"])
        .run()
        .success();
    let report = r.json();
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["promoted"], true);
    assert_eq!(report["pushes"][0]["ok"], true);
    assert_eq!(f.snapshot_ids().len(), 1);
    f.cmd()
        .arg("--config")
        .arg(&cfg)
        .args(["status", "--coverage", "1h"])
        .run()
        .success()
        .stdout_has("within RPO")
        .stdout_has("slots covered");
    // A broken source: the snapshot is taken but rejected (exit 5), the LKG stays.
    let lkg_before = lkg(&f);
    fs::remove_file(f.path("app.sqlite")).unwrap();
    f.cmd().arg("--config").arg(&cfg).arg("cycle").run().code(5);
    assert_eq!(lkg(&f), lkg_before);
    // An unreachable remote: exit 13, and the snapshot step still succeeded.
    let conn = rusqlite::Connection::open(f.path("app.sqlite")).unwrap();
    conn.execute_batch("create table t(x); insert into t values (1);")
        .unwrap();
    drop(conn);
    fs::write(f.path("remote-file"), b"not a directory").unwrap();
    let text = fs::read_to_string(&cfg).unwrap().replace(
        &f.path("remote").display().to_string(),
        &f.path("remote-file/sub").display().to_string(),
    );
    fs::write(&cfg, text).unwrap();
    f.cmd()
        .arg("--config")
        .arg(&cfg)
        .arg("cycle")
        .run()
        .code(13)
        .stderr_has("push to usb");
    assert_ne!(
        lkg(&f),
        lkg_before,
        "the snapshot was promoted before the push failed"
    );
    // A wrong password stops the agent at start, not at every cycle.
    let wrong = f.path("wrong-password");
    fs::write(&wrong, "nope\n").unwrap();
    f.cmd()
        .env("VAULT_PASSWORD_FILE", &wrong)
        .arg("--config")
        .arg(&cfg)
        .arg("agent")
        .run()
        .one_line_error(12);
    // Without a config file there is nothing to cycle.
    let elsewhere = f.path("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    f.cmd_in(&elsewhere)
        .vault_dir(&f.vault())
        .arg("cycle")
        .run()
        .one_line_error(2);
}

#[test]
fn sigterm_during_a_cycle_lets_the_write_finish_and_the_vault_verifies() {
    let f = Fixture::with_vault();
    let port = free_port();
    let cfg = setup(&f, port);
    // A dump source that takes a while: the cycle is mid-snapshot when SIGTERM comes.
    let slow = format!(
        "\n[[source]]\nname = \"slow\"\nkind = \"command\"\ncommand = [\"sh\", \"-c\", \"head -c 3000000 /dev/urandom; touch {}; sleep 2; echo done\"]\n",
        f.path("dump-started").display()
    );
    let text = fs::read_to_string(&cfg).unwrap();
    let (head, agent) = text.split_once("[agent]").unwrap();
    fs::write(&cfg, format!("{head}{slow}\n[agent]{agent}")).unwrap();
    let log = f.path("agent.log");
    let mut agent = start_agent(&f, &cfg, &log, &["--log-json"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f.path("dump-started").exists() {
        assert!(Instant::now() < deadline, "the dump never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let signalled = Instant::now();
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(
        unsafe { libc::kill(agent.id() as libc::pid_t, libc::SIGTERM) },
        0
    );
    let status = loop {
        if let Some(s) = agent.try_wait().unwrap() {
            break s;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(30),
            "the agent did not stop within its bound"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let logged = fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(0), "{logged}");
    assert!(
        logged.contains("cycle done"),
        "the cycle in progress finished within the grace: {logged}"
    );
    // --log-json: every line is a JSON object with a level and a message.
    for line in logged.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(v["level"].is_string() && v["message"].is_string(), "{line}");
    }
    assert!(!f.snapshot_ids().is_empty());
    f.cmd()
        .args(["verify", "--read-data"])
        .run()
        .success()
        .stdout_has("vault is clean");
}
