//! Hostile clients of the agent's HTTP endpoint: malformed request lines, unknown methods, huge
//! heads and bodies, pipelined floods, slowloris and idle connections, and a bounded load test.
//! After each, the real `vault agent` is still up, answers `/health`, keeps its memory bounded
//! (`/proc/PID/status`), and keeps snapshotting on its 1-second interval.

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use crate::agent::{free_port, start_agent};
use crate::common::*;

/// Resident memory the agent must stay under, whatever it is sent.
const RSS_LIMIT_KIB: u64 = 150 * 1024;
/// What the agent serves at once (`atlasvault::agent::http::MAX_CONNECTIONS`).
const SERVED_AT_ONCE: usize = atlasvault::agent::http::MAX_CONNECTIONS;
/// Far above the agent's header timeout: a connection it has not closed by then never will be.
const CLOSE_WITHIN: Duration = Duration::from_secs(20);

/// A running `vault agent` on a free loopback port, over a small tree, snapshotting every second.
struct Agent {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
}

impl Agent {
    fn start(f: &Fixture) -> Agent {
        let data = f.path("data");
        fs::create_dir_all(&data).unwrap();
        for i in 0..10 {
            fs::write(data.join(format!("page{i}.html")), text_bytes(1000 + i * 7)).unwrap();
        }
        let port = free_port();
        let cfg = f.path("vault.toml");
        fs::write(
            &cfg,
            format!(
                "vault = \"{vault}\"\n\n[[source]]\nname = \"www\"\nkind = \"tree\"\npath = \"{data}\"\n\n\
                 [agent]\ninterval = \"1s\"\nrpo = \"1h\"\ngrace = \"1h\"\nlisten = \"127.0.0.1:{port}\"\n",
                vault = f.vault().display(),
                data = data.display(),
            ),
        )
        .unwrap();
        let log = f.path("agent.log");
        let child = start_agent(f, &cfg, &log, &[]);
        let mut agent = Agent { child, port, log };
        // Serving, with a last-known-good.
        let deadline = Instant::now() + Duration::from_secs(30);
        while get(port, "/health").map(|(s, _)| s) != Some(200) {
            agent.assert_alive();
            assert!(Instant::now() < deadline, "the agent never became healthy");
            std::thread::sleep(Duration::from_millis(100));
        }
        agent
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn assert_alive(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!(
                "the agent exited ({status}):\n{}",
                fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }

    /// `(VmRSS, VmHWM)` in KiB.
    fn memory_kib(&self) -> (u64, u64) {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let field = |name: &str| -> u64 {
            let line = status
                .lines()
                .find(|l| l.starts_with(name))
                .unwrap_or_else(|| panic!("no {name} in /proc/PID/status"));
            line.split_whitespace().nth(1).unwrap().parse().unwrap()
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    fn open_fds(&self) -> usize {
        fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap()
            .count()
    }

    fn snapshots_total(&self) -> f64 {
        let (status, text) = get(self.port, "/metrics").expect("/metrics answers");
        assert_eq!(status, 200, "{text}");
        text.lines()
            .find_map(|l| l.strip_prefix("atlasvault_snapshots_total "))
            .unwrap_or_else(|| panic!("no atlasvault_snapshots_total in:\n{text}"))
            .parse()
            .unwrap()
    }

    /// Still up, healthy, within its memory bound, not holding the abusers' sockets, and still
    /// taking snapshots: more than `before` (from /metrics) and more in the vault's own list.
    fn assert_recovered(&mut self, f: &Fixture, metrics_before: f64, listed_before: usize) {
        self.assert_alive();
        let (status, body) = get(self.port, "/health").expect("/health answers after the abuse");
        assert_eq!(status, 200, "{body}");
        let h: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(h["status"], "ok", "{h}");
        let (rss, hwm) = self.memory_kib();
        assert!(
            rss < RSS_LIMIT_KIB && hwm < RSS_LIMIT_KIB,
            "VmRSS {rss} KiB, VmHWM {hwm} KiB: over {RSS_LIMIT_KIB} KiB"
        );
        let fds = self.open_fds();
        assert!(
            fds < 64,
            "{fds} descriptors still open after the clients left"
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.snapshots_total() <= metrics_before {
            self.assert_alive();
            assert!(Instant::now() < deadline, "the agent stopped snapshotting");
            std::thread::sleep(Duration::from_millis(200));
        }
        let listed = f
            .cmd()
            .args(["--wait", "30s", "--json", "snapshots"])
            .run()
            .success()
            .json()
            .as_array()
            .map_or(0, |a| a.len());
        assert!(
            listed > listed_before,
            "{listed} snapshots, {listed_before} before"
        );
    }

    /// SIGTERM; the exit status.
    fn stop(mut self) -> ExitStatus {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "the agent ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // Only when a test failed before `stop`: do not leave the agent behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn listed(f: &Fixture) -> usize {
    f.cmd()
        .args(["--wait", "30s", "--json", "snapshots"])
        .run()
        .success()
        .json()
        .as_array()
        .map_or(0, |a| a.len())
}

/// `GET path` with `Connection: close`: (status, body).
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    // Not listening yet is `None`, not a failure.
    TcpStream::connect(("127.0.0.1", port)).ok()?;
    let resp = exchange(port, req.as_bytes());
    let text = String::from_utf8_lossy(&resp).into_owned();
    let status = status_of(&text)?;
    Some((status, text.split_once("\r\n\r\n")?.1.to_string()))
}

fn status_of(response: &str) -> Option<u16> {
    response.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// Sends `request` (stopping quietly if the agent closes first) and reads until the agent closes
/// the connection; what it answered, possibly nothing.
fn exchange(port: u16, request: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the agent");
    s.set_read_timeout(Some(CLOSE_WITHIN)).unwrap();
    s.set_write_timeout(Some(CLOSE_WITHIN)).unwrap();
    let _ = s.write_all(request);
    read_until_closed(&mut s)
}

/// Reads until EOF or a reset; panics if the agent keeps the connection open past the timeout.
fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("the agent kept a connection open for {CLOSE_WITHIN:?}")
            }
            // Reset after an error answer the client did not wait for: that is a close too.
            Err(_) => return out,
        }
    }
}

#[test]
fn malformed_and_oversized_requests_are_refused_and_the_agent_serves_on() {
    let f = Fixture::with_vault();
    let mut agent = Agent::start(&f);
    let (metrics_before, listed_before) = (agent.snapshots_total(), listed(&f));

    let mut big_header = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    big_header.extend(std::iter::repeat_n(b'a', 1024 * 1024));
    big_header.extend_from_slice(b"\r\n\r\n");
    let mut many_headers = b"GET /health HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..10_000 {
        many_headers.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
    }
    many_headers.extend_from_slice(b"\r\n");
    let mut long_path = b"GET /".to_vec();
    long_path.extend(std::iter::repeat_n(b'a', 1024 * 1024));
    long_path.extend_from_slice(b" HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut long_method = vec![b'G'; 100_000];
    long_method.extend_from_slice(b" /health HTTP/1.1\r\nHost: x\r\n\r\n");

    // (what, request, acceptable statuses). None may be answered 2xx but the absolute-form GET,
    // none may hang.
    let cases: Vec<(&str, Vec<u8>, &[u16])> = vec![
        ("garbage line", b"GARBAGE\r\n\r\n".to_vec(), &[400]),
        ("method only", b"GET\r\n\r\n".to_vec(), &[400]),
        (
            "binary junk",
            b"\x00\x01\x02\xff\xfe\x80junk\r\n\r\n".to_vec(),
            &[400],
        ),
        (
            "control bytes in the path",
            b"GET /he\x01alth HTTP/1.1\r\n\r\n".to_vec(),
            &[400],
        ),
        (
            "HTTP/9.9",
            b"GET /health HTTP/9.9\r\nHost: x\r\n\r\n".to_vec(),
            &[400, 505],
        ),
        (
            "HTTP/2 preface",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
            &[400, 505],
        ),
        (
            "header without a colon",
            b"GET /health HTTP/1.1\r\nJunk\r\n\r\n".to_vec(),
            &[400],
        ),
        (
            "negative content-length",
            b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n".to_vec(),
            &[400],
        ),
        (
            "conflicting content-lengths",
            b"POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"
                .to_vec(),
            &[400],
        ),
        ("1 MiB header", big_header, &[431]),
        ("10,000 header lines", many_headers, &[431]),
        ("1 MiB path", long_path, &[414, 431, 400]),
        ("100 kB method", long_method, &[400, 431, 405]),
        (
            "unknown method",
            b"FROB /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
            &[405],
        ),
        (
            "lowercase method",
            b"get /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
            &[405],
        ),
        (
            "DELETE",
            b"DELETE /manifest HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
            &[405],
        ),
        (
            "CONNECT",
            b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
            &[405, 400],
        ),
        (
            "TRACE",
            b"TRACE /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
            &[405],
        ),
        (
            "path traversal",
            b"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
            &[404, 400],
        ),
        (
            "absolute URI elsewhere",
            b"GET http://example.invalid/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                .to_vec(),
            &[200, 404],
        ),
    ];
    let may_close = [
        "HTTP/2 preface",
        "1 MiB header",
        "10,000 header lines",
        "1 MiB path",
        "100 kB method",
    ];
    for (what, request, want) in &cases {
        let started = Instant::now();
        let resp = exchange(agent.port, request);
        let text = String::from_utf8_lossy(&resp);
        match status_of(&text) {
            Some(s) => assert!(
                want.contains(&s),
                "{what}: answered {s}, expected one of {want:?}:\n{text}"
            ),
            // Closing without an answer is fine where the agent stops reading mid-request (the
            // reset of the unread rest can swallow its answer) or does not speak the protocol.
            None => assert!(
                resp.is_empty() && may_close.contains(what),
                "{what}: not an HTTP answer: {text:?}"
            ),
        }
        if let Some(s) = status_of(&text).filter(|s| *s == 200) {
            // Only the absolute-form request may succeed, and then it is /health's own answer.
            assert_eq!(*what, "absolute URI elsewhere", "{what}: {s}");
        }
        assert!(
            !text.contains("etc/passwd") && !text.contains("root:"),
            "{what}: nothing is echoed back:\n{text}"
        );
        assert!(started.elapsed() < CLOSE_WITHIN, "{what}");
        agent.assert_alive();
    }

    // Bodies are never read: a declared gigabyte, and 8 MiB actually sent, plain and chunked.
    for head in [
        "POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n",
        "PUT /manifest HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        "GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n",
    ] {
        let mut s = TcpStream::connect(("127.0.0.1", agent.port)).unwrap();
        s.set_read_timeout(Some(CLOSE_WITHIN)).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(head.as_bytes()).unwrap();
        let chunked = head.contains("chunked");
        let block = vec![b'z'; 64 * 1024];
        let mut sent = 0usize;
        while sent < 8 * MIB {
            let wrote = if chunked {
                s.write_all(format!("{:x}\r\n", block.len()).as_bytes())
                    .and_then(|_| s.write_all(&block))
                    .and_then(|_| s.write_all(b"\r\n"))
            } else {
                s.write_all(&block)
            };
            match wrote {
                Ok(()) => sent += block.len(),
                // The agent answered and closed without reading: what it should do.
                Err(_) => break,
            }
        }
        let _ = s.shutdown(Shutdown::Write);
        let text = String::from_utf8_lossy(&read_until_closed(&mut s)).into_owned();
        let want: &[u16] = if head.starts_with("GET") {
            &[200]
        } else {
            &[405]
        };
        // A reset can swallow the answer of a request whose body was not read; never a hang.
        if let Some(status) = status_of(&text) {
            assert!(want.contains(&status), "{head:?}: {text}");
        }
        agent.assert_alive();
    }

    // 500 pipelined requests in one write: every one answered, in order.
    let mut pipelined = Vec::new();
    for i in 0..500 {
        let path = ["/health", "/metrics", "/manifest", "/nope"][i % 4];
        pipelined.extend_from_slice(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    }
    pipelined.extend_from_slice(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let text = String::from_utf8_lossy(&exchange(agent.port, &pipelined)).into_owned();
    assert_eq!(
        text.matches("HTTP/1.1 200 OK").count(),
        376,
        "375 + the last"
    );
    assert_eq!(text.matches("HTTP/1.1 404 Not Found").count(), 125);

    agent.assert_recovered(&f, metrics_before, listed_before);
    let status = agent.stop();
    assert_eq!(status.code(), Some(0));
}

/// One keep-alive connection sending `n` requests, each read fully; the statuses.
fn keep_alive_client(port: u16, n: usize, seed: usize) -> Vec<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(CLOSE_WITHIN)).unwrap();
    let mut statuses = Vec::with_capacity(n);
    let mut pending = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    for i in 0..n {
        let path = ["/health", "/metrics", "/manifest", "/nope"][(seed + i) % 4];
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .expect("the agent keeps a served connection open");
        // One whole response: head, then content-length bytes.
        loop {
            if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&pending[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .expect("responses carry a content-length")
                    .trim()
                    .parse()
                    .unwrap();
                if pending.len() >= end + 4 + len {
                    statuses.push(status_of(&head.to_ascii_uppercase()).expect("a status line"));
                    pending.drain(..end + 4 + len);
                    break;
                }
            }
            let got = s.read(&mut buf).expect("a response");
            assert!(got > 0, "the agent closed a served connection mid-way");
            pending.extend_from_slice(&buf[..got]);
        }
    }
    statuses
}

/// Whether the agent has closed `s`, waiting at most `wait` for more bytes (an answer that
/// arrives meanwhile is read and skipped).
fn closed_by_agent(s: &mut TcpStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => return !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        }
    }
}

#[test]
fn a_load_test_slow_clients_and_idle_connections_do_not_starve_it() {
    let f = Fixture::with_vault();
    let mut agent = Agent::start(&f);
    let (metrics_before, listed_before) = (agent.snapshots_total(), listed(&f));
    let port = agent.port;

    // 2,000 requests from 50 keep-alive connections at once: every one answered.
    let started = Instant::now();
    let clients: Vec<_> = (0..50)
        .map(|c| std::thread::spawn(move || keep_alive_client(port, 40, c)))
        .collect();
    let statuses: Vec<u16> = clients
        .into_iter()
        .flat_map(|c| c.join().expect("a load client failed"))
        .collect();
    assert_eq!(statuses.len(), 2000);
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1500);
    assert_eq!(statuses.iter().filter(|s| **s == 404).count(), 500);
    eprintln!("2,000 requests on 50 connections: {:?}", started.elapsed());
    agent.assert_alive();

    // A slowloris: one header byte every 100 ms, never finishing. The agent closes it.
    let slowloris = std::thread::spawn(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .unwrap();
        let started = Instant::now();
        while started.elapsed() < CLOSE_WITHIN {
            if s.write_all(b"a").is_err() || closed_by_agent(&mut s, Duration::from_millis(100)) {
                return Some(started.elapsed());
            }
        }
        None
    });

    // Idle connections, far more than it serves at once, some after one request each.
    let mut idle: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    for s in idle.iter_mut().take(10) {
        let _ = s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    }
    std::thread::sleep(Duration::from_millis(500));
    // Those past the limit are closed at once; at most the limit stay open.
    let held: Vec<TcpStream> = idle
        .into_iter()
        .filter_map(|mut s| (!closed_by_agent(&mut s, Duration::from_millis(5))).then_some(s))
        .collect();
    assert!(
        held.len() <= SERVED_AT_ONCE,
        "{} idle connections held open, the limit is {SERVED_AT_ONCE}",
        held.len()
    );
    // The agent's descriptors stay bounded while they are held.
    assert!(
        agent.open_fds() < SERVED_AT_ONCE + 40,
        "{} fds",
        agent.open_fds()
    );
    // Every held one is closed by the agent, within its header timeout.
    let deadline = Instant::now() + CLOSE_WITHIN;
    for mut s in held {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            closed_by_agent(&mut s, left.max(Duration::from_millis(1))),
            "an idle connection was held past {CLOSE_WITHIN:?}"
        );
    }
    let took = slowloris.join().unwrap();
    assert!(
        took.is_some(),
        "the slowloris connection was held past {CLOSE_WITHIN:?}"
    );
    agent.assert_recovered(&f, metrics_before, listed_before);
    let status = agent.stop();
    assert_eq!(status.code(), Some(0));
}
