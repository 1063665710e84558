//! Dump streams: sources whose artefact is a byte stream rather than a tree — a command's stdout
//! (`mysqldump`, `redis-cli --rdb -`, a secrets store's snapshot), standard input, and a SQLite
//! database copied through the online backup API.
//!
//! A stream is stored as one file, `SOURCE/FILE`, in the snapshot, chunked as it arrives (no temp
//! file, except for SQLite, whose backup API writes a copy). The manifest records each stream's
//! size, its sha256 (so an operator can check a restored dump with `sha256sum`), and whether the
//! source succeeded: a command's exit status, SQLite's `integrity_check` on the copy. A failed
//! source keeps the snapshot from being promoted (the `sanity` gate reads the record).

use std::io::{self, Read};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use crate::manifest::StreamRecord;

/// Bytes of a failing command's stderr kept in the manifest (the end of it).
const STDERR_TAIL_BYTES: usize = 2048;

/// One stream source of a snapshot run.
#[derive(Debug, Clone)]
pub struct StreamSource {
    /// The source's name: the root entry of the snapshot that holds the stream.
    pub name: String,
    /// The stream's file name inside that root entry.
    pub file_name: String,
    pub kind: StreamKind,
}

impl StreamSource {
    /// `KIND:WHAT`, how the manifest lists this source among its paths. A command shows only its
    /// program: its arguments could hold a secret the user put there.
    pub fn describe(&self) -> String {
        match &self.kind {
            StreamKind::Command(argv) => {
                format!("command:{}", argv.first().map_or("", String::as_str))
            }
            StreamKind::Stdin => "stdin:".into(),
            StreamKind::Sqlite(path) => format!("sqlite:{}", path.display()),
            // Not the argv: a URL in it is the user's to keep out of listings.
            StreamKind::Postgres { .. } => format!("postgres:{}", self.file_name),
        }
    }
}

/// Where a stream's bytes come from.
#[derive(Debug, Clone)]
pub enum StreamKind {
    /// A command (argv, no shell) whose stdout is the artefact.
    Command(Vec<String>),
    /// This process's standard input (`vault snapshot --stdin --name NAME`).
    Stdin,
    /// A SQLite database, copied with the online backup API while others keep writing to it.
    Sqlite(PathBuf),
    /// `pg_dump` (argv built by [`pg_dump_argv`]); the password comes from the environment
    /// (`PGPASSWORD`, `PGPASSFILE`), never from argv. `plain` says whether it writes plain SQL.
    Postgres { argv: Vec<String>, plain: bool },
}

/// The `pg_dump` command line for a connection: plain SQL, or custom format without compression
/// (`-Z0`: the vault compresses, so that consecutive dumps deduplicate).
pub fn pg_dump_argv(conn: &crate::vaultfile::PgConnection, plain: bool) -> Vec<String> {
    use crate::vaultfile::PgConnection;
    let mut argv: Vec<String> = vec!["pg_dump".into(), "--no-password".into()];
    if plain {
        argv.push("--format=plain".into());
    } else {
        argv.extend(["--format=custom".into(), "--compress=0".into()]);
    }
    match conn {
        PgConnection::Url { url } => argv.push(format!("--dbname={url}")),
        PgConnection::Params {
            host,
            port,
            user,
            dbname,
        } => {
            if let Some(h) = host {
                argv.push(format!("--host={h}"));
            }
            if let Some(p) = port {
                argv.push(format!("--port={p}"));
            }
            if let Some(u) = user {
                argv.push(format!("--username={u}"));
            }
            argv.push(format!("--dbname={dbname}"));
        }
    }
    argv
}

/// The command that loads a postgres stream of kind `kind` (`postgres-plain` or
/// `postgres-custom`) from its stdin into the database at `url`, in one transaction that stops at
/// the first error: `psql` or `pg_restore`. `None` for other kinds.
pub fn pg_load_command(kind: &str, url: &str) -> Option<std::process::Command> {
    let (program, args): (&str, &[&str]) = match kind {
        "postgres-plain" => ("psql", &["--no-psqlrc", "--quiet", "--set=ON_ERROR_STOP=1"]),
        "postgres-custom" => ("pg_restore", &["--no-owner", "--exit-on-error"]),
        _ => return None,
    };
    let mut cmd = std::process::Command::new(program);
    cmd.arg("--no-password")
        .args(args)
        .arg("--single-transaction")
        .arg(format!("--dbname={url}"));
    Some(cmd)
}

/// The line a complete plain `pg_dump` ends with; a dump without it was cut short.
pub const PG_DUMP_TRAILER: &str = "-- PostgreSQL database dump complete";

impl StreamKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            StreamKind::Command(_) => "command",
            StreamKind::Stdin => "stdin",
            StreamKind::Sqlite(_) => "sqlite",
            StreamKind::Postgres { plain: true, .. } => "postgres-plain",
            StreamKind::Postgres { plain: false, .. } => "postgres-custom",
        }
    }
}

/// An open stream: the reader, and what finishing it needs.
pub struct Opened {
    pub reader: HashingReader<Box<dyn Read + Send>>,
    finish: Finish,
}

enum Finish {
    Nothing,
    Command {
        child: Child,
        stderr: Arc<Mutex<Vec<u8>>>,
        stderr_thread: std::thread::JoinHandle<()>,
    },
    /// The backup copy, deleted when dropped, and what `integrity_check` said.
    Sqlite {
        _copy: tempfile::TempPath,
        problems: Vec<String>,
    },
}

/// Starts a stream. An error here is the source failing to start (recorded, not fatal).
pub fn open(kind: &StreamKind) -> Result<Opened, String> {
    match kind {
        StreamKind::Command(argv) | StreamKind::Postgres { argv, .. } => {
            let (program, args) = argv
                .split_first()
                .ok_or_else(|| "empty command".to_string())?;
            let mut child = Command::new(program)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| format!("cannot run {program}: {e}"))?;
            let stdout: ChildStdout = child.stdout.take().expect("invariant: stdout is piped");
            let mut stderr_pipe = child.stderr.take().expect("invariant: stderr is piped");
            let stderr = Arc::new(Mutex::new(Vec::new()));
            let sink = stderr.clone();
            // Drained on its own thread so a chatty command cannot block on a full pipe.
            let stderr_thread = std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                loop {
                    let n = match stderr_pipe.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(_) => break,
                    };
                    let mut tail = sink.lock().expect("invariant: stderr lock");
                    tail.extend_from_slice(&buf[..n]);
                    let excess = tail.len().saturating_sub(STDERR_TAIL_BYTES);
                    tail.drain(..excess);
                }
            });
            Ok(Opened {
                reader: HashingReader::new(Box::new(stdout)),
                finish: Finish::Command {
                    child,
                    stderr,
                    stderr_thread,
                },
            })
        }
        StreamKind::Stdin => Ok(Opened {
            reader: HashingReader::new(Box::new(io::stdin())),
            finish: Finish::Nothing,
        }),
        StreamKind::Sqlite(path) => {
            let copy = tempfile::Builder::new()
                .prefix("atlasvault-sqlite-")
                .tempfile()
                .map_err(|e| format!("cannot make a temporary copy: {e}"))?
                .into_temp_path();
            sqlite_backup(path, &copy)?;
            let problems = sqlite_integrity(&copy)?;
            let file = std::fs::File::open(&copy).map_err(|e| format!("backup copy: {e}"))?;
            Ok(Opened {
                reader: HashingReader::new(Box::new(file)),
                finish: Finish::Sqlite {
                    _copy: copy,
                    problems,
                },
            })
        }
    }
}

impl Opened {
    /// Ends the stream and builds its record. `read_error` is why reading stopped early, if it
    /// did.
    pub fn finish(
        self,
        source: &StreamSource,
        path: String,
        read_error: Option<String>,
    ) -> StreamRecord {
        let Opened { reader, finish } = self;
        let (bytes, sha256) = reader.finish();
        let mut problems: Vec<String> = read_error.into_iter().collect();
        let mut exit_code = None;
        match finish {
            // Standard input has no exit status to check; an empty one is a producer that
            // failed before writing anything.
            Finish::Nothing if bytes == 0 => problems.push("the stream was empty".into()),
            Finish::Nothing => {}
            Finish::Sqlite { problems: p, .. } => problems.extend(p),
            Finish::Command {
                mut child,
                stderr,
                stderr_thread,
            } => {
                match child.wait() {
                    Ok(status) => {
                        exit_code = status.code();
                        if !status.success() {
                            problems.push(format!("command failed ({status})"));
                        }
                    }
                    Err(e) => problems.push(format!("cannot wait for the command: {e}")),
                }
                let _ = stderr_thread.join();
                let tail = stderr.lock().expect("invariant: stderr lock");
                if !problems.is_empty() && !tail.is_empty() {
                    problems.push(format!("stderr: {}", String::from_utf8_lossy(&tail).trim()));
                }
            }
        }
        StreamRecord {
            source: source.name.clone(),
            kind: source.kind.as_str().into(),
            path,
            bytes,
            sha256: hex::encode(sha256),
            ok: problems.is_empty(),
            exit_code,
            problems,
        }
    }

    /// Stops a stream that will not be read to its end (the snapshot is aborting).
    pub fn abandon(self) {
        if let Finish::Command { mut child, .. } = self.finish {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The failure record of a source that could not even start.
pub fn failed(source: &StreamSource, path: String, why: String) -> StreamRecord {
    StreamRecord {
        source: source.name.clone(),
        kind: source.kind.as_str().into(),
        path,
        bytes: 0,
        sha256: hex::encode(Sha256::digest(b"")),
        ok: false,
        exit_code: None,
        problems: vec![why],
    }
}

/// Copies a live database with SQLite's online backup API.
fn sqlite_backup(src: &std::path::Path, dst: &std::path::Path) -> Result<(), String> {
    use rusqlite::{Connection, OpenFlags};
    let from = Connection::open_with_flags(
        src,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("cannot open {}: {e}", src.display()))?;
    let mut to = Connection::open(dst).map_err(|e| format!("backup copy: {e}"))?;
    let backup = rusqlite::backup::Backup::new(&from, &mut to)
        .map_err(|e| format!("cannot start the backup of {}: {e}", src.display()))?;
    // Pages in steps, pausing between them so that writers get the lock; a writer's change
    // restarts the copy, which SQLite handles.
    backup
        .run_to_completion(256, std::time::Duration::from_millis(5), None)
        .map_err(|e| format!("backup of {} failed: {e}", src.display()))
}

/// `PRAGMA integrity_check` on the copy: its complaints, empty when it says `ok`.
fn sqlite_integrity(copy: &std::path::Path) -> Result<Vec<String>, String> {
    let conn = rusqlite::Connection::open(copy).map_err(|e| format!("backup copy: {e}"))?;
    let mut stmt = conn
        .prepare("PRAGMA integrity_check")
        .map_err(|e| format!("integrity_check: {e}"))?;
    let rows: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .map_err(|e| format!("integrity_check: {e}"))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("integrity_check: {e}"))?;
    Ok(if rows == ["ok"] {
        Vec::new()
    } else {
        rows.into_iter()
            .take(10)
            .map(|r| format!("integrity_check: {r}"))
            .collect()
    })
}

/// Counts and sha256-hashes what passes through.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> HashingReader<R> {
    fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    fn finish(self) -> (u64, [u8; 32]) {
        (self.bytes, self.hasher.finalize().into())
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}
